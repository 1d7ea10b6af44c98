"""`onduty serve`: the manager with its HTTP API and web console."""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from onduty.cli.base import ConfigOption, UsageProblem
from onduty.configfile import load_config

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    store: Annotated[
        str | None, typer.Option("--store", "-s", help="The event log (default: the config's).")
    ] = None,
    max_body: Annotated[int, typer.Option(help="Largest request body accepted, in bytes.")] = 1
    << 20,
    max_pending: Annotated[
        int, typer.Option(help="Inputs queued for the core before ingest answers 429.")
    ] = 20_000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    log_format: Annotated[
        str | None,
        typer.Option(
            help="json (one JSON object a line) or console (a line for a person). Default: "
            "server.log_format, else console when stderr is a terminal and json otherwise.",
            show_default=False,
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Serve HTTPS with this certificate (PEM; with --tls-key).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="The certificate's private key (PEM).")
    ] = None,
    sim: Annotated[
        str | None,
        typer.Option(
            help="Run a drill: feed a simulated fleet from this scenario (a file, or `demo`). "
            "People approve, acknowledge and fix it in the console (/drill) or over the API; "
            "when it ends, /drill and GET /api/v1/drill show its scorecard."
        ),
    ] = None,
    speed: Annotated[
        float, typer.Option(help="With --sim: how much faster than real time the scenario runs.")
    ] = 30.0,
    bus: Annotated[
        str | None,
        typer.Option(
            help="How signals reach the managers: memory or nats://HOST:PORT "
            "(default: the config's)."
        ),
    ] = None,
    role: Annotated[
        str,
        typer.Option(
            help="In a fleet (a PostgreSQL store, a NATS bus): ingest (take signals, serve the "
            "console), manager (also run partitions), or all."
        ),
    ] = "all",
    region: Annotated[
        str | None,
        typer.Option(help="In a fleet: the region this node serves (default: fleet.region)."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="In a fleet: this node's name, unique among the managers (default: "
            "host, process id and a random part)."
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            metavar="NAME",
            help="A host name clients reach this server by (repeatable; `*.example.com` for a "
            "domain), besides localhost, IP addresses, --host and server.allowed_hosts. "
            "Requests naming any other host are refused (against DNS rebinding).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the manager with its HTTP API and web console. SIGTERM stops accepting, drains,
    flushes, exits 0.

    Without access tokens in the configuration it only listens on loopback."""
    import math

    import uvicorn
    from pydantic import ValidationError

    from onduty.api import build_app
    from onduty.api.auth import Access, AccessError
    from onduty.api.front import HostNames
    from onduty.api.server import DrainingServer
    from onduty.config import Config, ServerSettings, describe_validation_error
    from onduty.config_fleet import deployment_problems, is_shared_store
    from onduty.logs import LOG_FORMATS, configure_logging, uvicorn_log_config
    from onduty.service import Service, StartupError, logger

    if log_level.lower() not in ("critical", "error", "warning", "info", "debug"):
        raise UsageProblem(f"--log-level {log_level!r}: use debug, info, warning or error")
    if log_format is not None and log_format not in LOG_FORMATS:
        raise UsageProblem(f"--log-format {log_format!r}: use json or console")
    simulation = None
    if sim is not None:
        from onduty.sim.live import LiveSimulation
        from onduty.sim.scenario import load_builtin_config, load_scenario

        scenario = load_scenario(sim)
        settings = load_config(config) if config else load_builtin_config(scenario.name)
        if speed <= 0:
            raise UsageProblem("--speed must be positive")
        simulation = LiveSimulation(settings, scenario, speed)
    else:
        settings = load_config(config) if config else Config()
    try:
        access = Access.from_raw(settings.access)
    except AccessError as error:
        raise UsageProblem("; ".join(error.problems)) from None
    public = host not in LOOPBACK and not host.startswith("127.")
    if public and not access.enabled:
        raise UsageProblem(
            f"refusing to listen on {host}: no access tokens are configured, so onduty only "
            "listens on loopback (127.0.0.1 or ::1)"
        )
    _check_tls(tls_cert, tls_key)
    front = settings.server
    try:
        names = ServerSettings(allowed_hosts=allowed_host or []).allowed_hosts
    except ValidationError as error:
        problems = describe_validation_error(error, aliases={"allowed_hosts": "--allowed-host"})
        raise UsageProblem("; ".join(problems)) from None
    hosts = HostNames([*front.allowed_hosts, *names], bind=host)
    where, carrier = store or settings.store, bus or settings.bus
    problems = deployment_problems(where, carrier)
    if problems:
        raise UsageProblem(problems[0])
    fleet = carrier != "memory" or is_shared_store(where)
    if fleet and simulation is not None:
        raise UsageProblem("--sim runs on one node: use a SQLite store and the memory bus")
    roles = {"all": ("ingest", "manager"), "ingest": ("ingest",), "manager": ("manager",)}
    if role not in roles:
        raise UsageProblem(f"--role {role!r}: use ingest, manager or all")
    if not fleet and (role != "all" or region is not None or name is not None):
        raise UsageProblem(
            "--role, --region and --name are for a fleet: give a postgresql:// store and a "
            "nats:// bus"
        )
    listener = _listen(host, port)
    chosen = log_format or front.log_format
    configure_logging(log_level, "json" if chosen == "json" else "console" if chosen else None)
    options: dict[str, Any] = {
        "max_body": max_body,
        "max_pending": max_pending,
        "config_path": str(config) if config else None,
        "access": access,
        "actuators": simulation.actuators if simulation else None,
        "clock": simulation.clock if simulation else None,
    }
    if fleet:
        from onduty.fleet_service import FleetService

        try:
            service: Service = FleetService(
                settings, where, bus=carrier, roles=roles[role], region=region, name=name,
                **options,
            )  # fmt: skip
        except StartupError as error:
            listener.close()
            raise UsageProblem(str(error)) from None
    else:
        service = Service(settings, where, **options)
    try:
        with _terminate_after() as terminated:
            service.prepare()  # secrets, the store, the actuators, the state: before listening
    except StartupError as error:
        listener.close()
        raise UsageProblem(str(error)) from None
    if terminated.is_set():  # SIGTERM while starting: stop cleanly, as once running
        listener.close()
        service.stop()
        raise typer.Exit(0)
    if simulation is not None:
        _feed_simulation(service, simulation)
        scheme = "https" if tls_cert else "http"
        logger.info("drill %s: open %s://%s:%d/drill", simulation.scenario.name, scheme,
                    host, port)  # fmt: skip
    if access.enabled:
        logger.info("access control on: %s", access.describe())
    for warning in access.warnings:
        logger.warning("%s", warning)
    if public and tls_cert is None:
        logger.warning("listening on %s without TLS: tokens cross the network in clear", host)
    server = DrainingServer(
        on_hangup=service.reload,
        config=uvicorn.Config(
            build_app(service, hosts=hosts, drill=simulation),
            host=host,
            port=port,
            log_level=log_level,
            log_config=uvicorn_log_config(),
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=math.ceil(front.shutdown_timeout.total_seconds()),
            # X-Forwarded-For / -Proto only from the configured proxies (uvicorn would
            # otherwise believe them from any loopback peer)
            proxy_headers=bool(front.trusted_proxies),
            forwarded_allow_ips=list(front.trusted_proxies),
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
        ),
        shutdown_timeout=front.shutdown_timeout.total_seconds(),
    )
    try:
        server.run(sockets=[listener])
    finally:
        listener.close()
        if not server.started:
            service.stop()  # never served: close what start-up opened
    if not server.started:
        raise typer.Exit(1)


@contextmanager
def _terminate_after() -> Iterator[threading.Event]:
    """SIGTERM during start-up is remembered, not obeyed at once: what start-up is doing (folding
    the log, settling an action a crash left open) finishes, and then onduty stops cleanly."""
    import signal

    terminated = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: terminated.set())
    try:
        yield terminated
    finally:
        signal.signal(signal.SIGTERM, previous)


def _listen(host: str, port: int) -> Any:
    """The listening socket, bound before anything else starts, so that a port in use (or an
    address this machine does not have) is one line and exit 2, with nothing recorded yet."""
    import socket

    if not 0 <= port <= 65535:
        raise UsageProblem(f"--port {port}: not a port number (0 to 65535)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        if error.errno == errno.EADDRINUSE:
            reason = "the address is already in use (is another onduty running?)"
        raise UsageProblem(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def _feed_simulation(service: Any, simulation: Any) -> None:
    """Run the simulated fleet beside the server once the service is ready; the drill is scored
    from the events appended after this point."""
    import threading

    log = service.log
    first = log.head()[0]
    simulation.attach(lambda: log.read(after=first))
    service.subscribe(simulation.observe)
    stop = threading.Event()

    def feed() -> None:
        while not service.ready and not stop.wait(0.05):
            pass
        simulation.run(service.loop.offer, stop)

    threading.Thread(target=feed, name="onduty-sim", daemon=True).start()


def _check_tls(cert: Path | None, key: Path | None) -> None:
    """Both or neither; each readable, and a key that belongs to the certificate."""
    import ssl

    if (cert is None) != (key is None):
        raise UsageProblem("give both --tls-cert and --tls-key, or neither")
    if cert is None or key is None:
        return
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as error:
            raise UsageProblem(
                f"{option} {path}: cannot read it ({error.strerror or type(error).__name__})"
            ) from None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as error:
        raise UsageProblem(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its key ({error})"
        ) from None
