"""The `onduty` command."""

from __future__ import annotations

import errno
import importlib
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from onduty.config import ConfigError, load_config
from onduty.log import EventLog, StoreError, open_log
from onduty.policy_cli import policy_app
from onduty.textsafe import markup, safe_text, visible

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="onduty: an autonomous manager-on-duty. Every fact it acts on is a hash-chained event.",
    pretty_exceptions_enable=False,
)
audit_app = typer.Typer(no_args_is_help=True, help="Check the log's integrity.")
events_app = typer.Typer(no_args_is_help=True, help="Read the event log.")
config_app = typer.Typer(no_args_is_help=True, help="Work with configuration files.")
app.add_typer(audit_app, name="audit")
app.add_typer(events_app, name="events")
app.add_typer(config_app, name="config")

# Data never goes through markup or emoji codes: views build Text from it, or escape it (textsafe).
out = Console(highlight=False, emoji=False)
err = Console(stderr=True, highlight=False, emoji=False)

StoreOption = Annotated[
    str, typer.Option("--store", "-s", help="The event log: a SQLite file path or sqlite:///PATH.")
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="An onduty.yaml configuration.")
]


class UsageProblem(Exception):
    """A problem the user can fix; printed as one line, exit 2, never a traceback."""


class ServerRefused(UsageProblem):
    """The server answered with an error status (the message names it and the reason)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {markup(message)}")
    return typer.Exit(code)


def store_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        rest = url.removeprefix("sqlite:///")
        return None if rest == ":memory:" else Path(rest)
    return None if "://" in url else Path(url)


@contextmanager
def existing_log(url: str) -> Iterator[EventLog]:
    """Open a log that must already exist (read commands never create an empty one)."""
    path = store_path(url)
    if path is not None and not path.exists():
        raise UsageProblem(f"no event log at {path} (run `onduty demo` to make one)")
    try:
        log = open_log(url)
    except ValueError as error:
        raise UsageProblem(str(error)) from None
    try:
        yield log
    finally:
        log.close()


# ---------------------------------------------------------------------------- config


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="The configuration to validate.")],
) -> None:
    """Validate a configuration: exit 0 when valid, 2 with every problem named when not.
    Warnings (exit still 0): secret references that cannot be resolved here and now (the
    machine that runs onduty may well have them), an empty file, actions no actuator provides,
    escalations that reach no channel, templates naming a variable or label that does not
    exist."""
    from onduty.act.sim import SIM_ACTIONS
    from onduty.api.auth import Access, AccessError
    from onduty.configcheck import config_warnings
    from onduty.secrets import unresolved_references

    try:
        config = load_config(file)
    except ConfigError as error:
        err.print(f"[bold red]invalid configuration[/] {markup(error.source)}:", soft_wrap=True)
        for problem in error.problems:
            err.print(f"  - {markup(problem)}", soft_wrap=True)
        raise typer.Exit(2) from None
    sections = {name: getattr(config, name) for name in ("sources", "actuators", "channels")}
    warnings = unresolved_references(sections)
    try:
        Access.from_raw(config.access)  # hashes and ingest secrets named by variable or file
    except AccessError as error:
        warnings += error.problems
    if _is_empty(file):
        warnings.insert(
            0,
            f"{file} is empty: onduty would run on the built-in defaults alone (no services, "
            "no runbooks: it records and pages, and never acts)",
        )
    warnings += config_warnings(config, simulated_actions=SIM_ACTIONS)
    for warning in warnings:
        err.print(f"[yellow]warning[/]: {markup(warning)}", soft_wrap=True)
    out.print(
        f"[green]valid[/]: {markup(file)} — {len(config.services)} services, "
        f"{len(config.runbooks)} runbooks, {len(config.policy.guardrails)} guardrails; "
        f"policy version {config.version}"
    )


def _is_empty(file: Path) -> bool:
    """Whether a configuration file holds no settings at all (nothing, or only comments)."""
    import yaml

    try:
        return yaml.safe_load(file.read_text(encoding="utf-8")) is None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False


# ---------------------------------------------------------------------------- audit


@audit_app.command("verify")
def audit_verify(
    store: StoreOption = "onduty.db",
    deep: Annotated[
        bool,
        typer.Option(
            "--deep",
            help="Also fold the log and check that each stored snapshot is exactly the state "
            "at its seq (catches one forged with a recomputed digest; costs a replay).",
        ),
    ] = False,
) -> None:
    """Check the hash chain and the stored snapshots: exit 0 intact, 1 broken (naming the first
    bad sequence number, or each snapshot that is not bound to the chain and why)."""
    from onduty.log import verify_snapshots

    with existing_log(store) as log:
        seq, _ = log.head()
        with _progress("verifying", total=seq) as advance:
            broken = log.verify(progress=lambda done, total: advance(done))
        snapshots = log.snapshots()
        problems = verify_snapshots(log)
        if deep and broken is None:
            bad = {problem.seq for problem in problems}
            with _progress("folding", total=seq) as advance:
                problems += _unfolded(log, [s for s in snapshots if s.seq not in bad], advance)
    if broken is not None:
        err.print(f"[bold red]chain broken[/] at seq {broken.seq}: {markup(broken.reason)}")
    for problem in sorted(problems, key=lambda problem: -problem.seq):
        err.print(
            f"[bold red]snapshot at seq {problem.seq} is bad[/]: {markup(problem.reason)}; "
            "onduty discards it at start-up and folds the log instead",
            soft_wrap=True,
        )
    if broken is not None or problems:
        raise typer.Exit(1)
    kept = f"; {len(snapshots)} snapshots bound to it" if snapshots else ""
    folded = " and equal to the log folded up to their seq" if snapshots and deep else ""
    out.print(f"[green]chain intact[/]: {seq} events verified{kept}{folded}")


def _unfolded(log: EventLog, snapshots: list[Any], advance: Callable[[int], None]) -> list[Any]:
    """The snapshots whose state is not the state of the core after folding the log up to their
    seq (the state is compared in its stored JSON form)."""
    import orjson

    from onduty.log import SnapshotProblem
    from onduty.manager import Manager

    wanted = {snapshot.seq: snapshot for snapshot in snapshots}
    manager, problems = Manager(), []
    last = max(wanted, default=0)
    for event in _counting(log.read(), advance):
        if event.seq > last:
            break
        manager.apply(event)
        snapshot = wanted.get(event.seq)
        if (
            snapshot is not None
            and orjson.loads(orjson.dumps(manager.snapshot())) != snapshot.state
        ):
            reason = "its state is not the log folded up to its seq (forged or stale)"
            problems.append(SnapshotProblem(event.seq, reason))
    return problems


# ---------------------------------------------------------------------------- replay


@app.command()
def replay(
    store: StoreOption = "onduty.db",
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option(help="Show at most this many differences.")] = 20,
) -> None:
    """Re-run the core over a log: exit 0 when every decision is reproduced, 1 when any differs.

    With -c, a backtest: the decisions the new configuration would have made differently."""
    from onduty.replay import replay as run_replay

    candidate = load_config(config) if config else None
    with existing_log(store) as log:
        total = log.head()[0]
        with _progress("replaying", total=total) as advance:
            events = _counting(log.read(), advance)
            report = run_replay(events, config=candidate)
    what = f"against {markup(config)}" if config else "with the recorded configuration"
    if report.same:
        out.print(
            f"[green]same[/]: {report.inputs} inputs replayed {what}; all "
            f"{report.decisions} recorded decisions reproduced exactly"
        )
        return
    out.print(
        f"[yellow]different[/]: {len(report.differences)} of {report.inputs} inputs lead to "
        f"other decisions {what}"
    )
    out.print(differences_table(report.differences[:limit]))
    raise typer.Exit(1)


def differences_table(differences: list[Any]) -> Table:
    """The inputs a replay or backtest decided differently, with both sets of decisions."""
    table = data_table("seq", "input", "recorded", "replayed", show_lines=True)
    for difference in differences:
        table.add_row(
            str(difference.seq),
            safe_text(difference.input_type),
            _lines(difference.recorded),
            _lines(difference.replayed),
        )
    return table


def _lines(items: Iterable[str]) -> Text:
    """One line per item, each made visible (a newline inside an item shows as `\\n`)."""
    return Text("\n".join(visible(item) for item in items) or "(nothing)")


def data_table(*headers: str, ids: dict[str, Iterable[str]] | None = None, **options: Any) -> Table:
    """A table of data: long values fold onto more lines instead of being cut with an ellipsis,
    and the columns named in `ids` (header -> the IDs it shows) are never wrapped: an ID is
    shown whole, on one line, ready to copy; the other columns give way."""
    table = Table(**options)
    for header in headers:
        shown = (ids or {}).get(header)
        if shown is None:
            table.add_column(header, overflow="fold")
        else:
            widest = max((len(visible(value)) for value in shown), default=len(header))
            table.add_column(header, no_wrap=True, overflow="fold", min_width=widest)
    return table


# ---------------------------------------------------------------------------- read models


@app.command()
def incidents(
    store: StoreOption = "onduty.db",
    status: Annotated[str, typer.Option(help="open, resolved or all")] = "all",
) -> None:
    """List incidents from the log."""
    from onduty.readmodel import IncidentProjection

    if status not in ("open", "resolved", "all"):
        raise UsageProblem(f"--status must be open, resolved or all, not {status!r}")
    with existing_log(store) as log:
        projection = IncidentProjection().feed_all(log.read())
    out.print(incidents_table(projection.ordered(), status))


def incidents_table(views: Iterable[Any], status: str = "all") -> Table:
    """The incidents (read-model views) with the given status, oldest first."""
    chosen = [view for view in views if status in ("all", view.status)]
    table = data_table(
        "incident", "opened", "service", "title", "status", "actions", "escalated",
        ids={"incident": [view.incident_id for view in chosen]},
    )  # fmt: skip
    for view in chosen:
        table.add_row(
            safe_text(view.incident_id),
            view.opened_at.strftime("%Y-%m-%d %H:%M:%S"),
            safe_text(view.service or "-"),
            safe_text(view.title),
            safe_text(view.status + (" (flapping)" if view.flapping else "")),
            Text("\n".join(visible(action) for action in view.actions) or "-"),
            "yes" if view.escalated else "no",
        )
    return table


@events_app.command("tail")
def events_tail(
    store: StoreOption = "onduty.db",
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many events to show.")] = 20,
    type_: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Only events of this type.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
) -> None:
    """Print the newest events of the log."""
    from onduty.events import EVENT_TYPES
    from onduty.replay import describe

    for name in type_ or []:
        if name not in EVENT_TYPES:
            raise UsageProblem(
                f"--type {name!r} is not an event type; known: {', '.join(EVENT_TYPES)}"
            )
    wanted = set(type_ or [])
    with existing_log(store) as log:
        head = log.head()[0]
        matches = [e for e in log.read(after=max(0, head - lines * 50 if wanted else head - lines))]
        shown = [e for e in matches if not wanted or e.type in wanted][-lines:]
        for event in shown:
            _print_event(event, describe)
        last = head
        while follow:
            time.sleep(0.5)
            for event in log.read(after=last):
                last = event.seq
                if not wanted or event.type in wanted:
                    _print_event(event, describe)


def _print_event(event: Any, describe: Callable[[Any], str]) -> None:
    out.print(event_line(event, describe), soft_wrap=True)


def event_line(event: Any, describe: Callable[[Any], str]) -> Text:
    """One event as one line: seq, time, type, stream, actor and its key facts, all as data."""
    actor = f" by {visible(event.actor)}" if event.actor != "onduty" else ""
    return Text.assemble(
        (f"{event.seq:>7}", "dim"),
        f" {event.ts.strftime('%Y-%m-%d %H:%M:%S')} ",
        (visible(event.type), "cyan"),
        " ",
        (visible(event.stream), "dim"),
        actor,
        "  ",
        visible(describe(event).removeprefix(event.type).strip()),
    )


# ---------------------------------------------------------------------------- demo and sim


@app.command()
def demo(
    store: StoreOption = "onduty-demo.db",
    seed: Annotated[int | None, typer.Option(help="Override the scenario's seed.")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted demo in --store instead of starting over.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No live view; just the scorecard.")] = False,
    pace: Annotated[
        float, typer.Option(help="Real seconds the live view spreads the simulated day over.")
    ] = 12.0,
) -> None:
    """Run the built-in scenario on a simulated fleet and print a scorecard."""
    from onduty.sim.driver import run_scenario_command

    code = run_scenario_command(
        "demo",
        None,
        store,
        seed=seed,
        fresh=not resume,
        live=not quiet,
        pace=0.0 if quiet else pace,
        console=out,
    )
    raise typer.Exit(code)


@app.command()
def sim(
    scenario: Annotated[str, typer.Argument(help="A scenario file, or a built-in name (demo).")],
    config: ConfigOption = None,
    store: StoreOption = "onduty-sim.db",
    seed: Annotated[int | None, typer.Option(help="Override the scenario's seed.")] = None,
    fresh: Annotated[
        bool, typer.Option(help="Start over even if --store holds an interrupted run.")
    ] = False,
    live: Annotated[bool, typer.Option(help="Show the live view while it runs.")] = False,
    pace: Annotated[
        float, typer.Option(help="Real seconds to spread the simulated span over (0: flat out).")
    ] = 0.0,
) -> None:
    """Run a scenario in virtual time; exit 1 if one of its expectations fails."""
    from onduty.sim.driver import run_scenario_command

    code = run_scenario_command(
        scenario, config, store, seed=seed, fresh=fresh, live=live, pace=pace, console=out
    )
    raise typer.Exit(code)


# ---------------------------------------------------------------------------- serve

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
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
    tls_cert: Annotated[
        Path | None, typer.Option(help="Serve HTTPS with this certificate (PEM; with --tls-key).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="The certificate's private key (PEM).")
    ] = None,
    sim: Annotated[
        str | None,
        typer.Option(
            help="Feed a simulated fleet from this scenario (a file, or `demo`); approvals are "
            "left to you in the console."
        ),
    ] = None,
    speed: Annotated[
        float, typer.Option(help="With --sim: how much faster than real time the scenario runs.")
    ] = 30.0,
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
    from onduty.obs import configure_logging, uvicorn_log_config
    from onduty.service import Service, StartupError, logger

    if log_level.lower() not in ("critical", "error", "warning", "info", "debug"):
        raise UsageProblem(f"--log-level {log_level!r}: use debug, info, warning or error")
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
    listener = _listen(host, port)
    service = Service(
        settings,
        store or settings.store,
        max_body=max_body,
        max_pending=max_pending,
        config_path=str(config) if config else None,
        access=access,
        actuators=simulation.actuators if simulation else None,
        clock=simulation.clock if simulation else None,
    )
    configure_logging(log_level)
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
    if access.enabled:
        logger.info("access control on: %s", access.describe())
    if public and tls_cert is None:
        logger.warning("listening on %s without TLS: tokens cross the network in clear", host)
    server = DrainingServer(
        on_hangup=service.reload,
        config=uvicorn.Config(
            build_app(service, hosts=hosts),
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
    """Run the simulated fleet beside the server once the service is ready."""
    import threading

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


# ---------------------------------------------------------------------------- talking to serve

silence_app = typer.Typer(
    no_args_is_help=True, help="Silences and maintenance windows on a running onduty."
)
app.add_typer(silence_app, name="silence")
UrlOption = Annotated[
    str, typer.Option("--url", envvar="ONDUTY_URL", help="Where `onduty serve` listens.")
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="ONDUTY_TOKEN",
        help="An access token, sent as a bearer token (better: set ONDUTY_TOKEN).",
        show_default=False,
    ),
]


def _call(method: str, url: str, path: str, body: Any = None, token: str | None = None) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {token.strip()}"} if token and token.strip() else {}
    if method == "POST":
        headers["Content-Type"] = "application/json"  # the API takes no other, body or not
    try:
        response = httpx.request(
            method, url.rstrip("/") + path, json=body, headers=headers, timeout=10
        )
    except httpx.TransportError as error:
        raise UsageProblem(f"cannot reach onduty at {url}: {error}") from None
    if response.status_code >= 400:
        try:
            detail = response.json()
            reason = detail.get("error") or detail.get("detail") or detail
        except ValueError:
            reason = response.text
        if response.status_code == 401:
            sent = "Authorization" in headers
            hint = "the token was not accepted" if sent else "pass --token or set ONDUTY_TOKEN"
            reason = f"{reason} ({hint})"
        elif response.status_code == 429 and "Retry-After" in response.headers:
            reason = f"{reason} (retry after {response.headers['Retry-After']}s)"
        raise ServerRefused(response.status_code, f"{response.status_code}: {reason}")
    return response.json()


def resolve_id(kind: str, typed: str, known: Iterable[str]) -> str:
    """The one ID in `known` that `typed` names: itself, or the only one it is the beginning of
    (as with git commits). None or several: a UsageProblem (exit 2) that names them."""
    candidates = list(dict.fromkeys(known))
    if typed in candidates:
        return typed
    matches = [candidate for candidate in candidates if typed and candidate.startswith(typed)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageProblem(f"no {kind} matches {typed!r}")
    more = f" and {len(matches) - 10} more" if len(matches) > 10 else ""
    shown = ", ".join(matches[:10]) + more
    raise UsageProblem(f"{typed!r} is ambiguous: {len(matches)} {kind}s begin with it: {shown}")


def _call_on_id(
    kind: str,
    typed: str,
    known: Callable[[], Iterable[str]],
    call: Callable[[str], Any],
) -> tuple[str, Any]:
    """`call` with the ID the user typed: a whole ID as it is; when the server knows no such ID,
    `typed` is taken as the beginning of one of `known()` (listed from the server) and `call` is
    made with that whole ID. Returns the ID used and what `call` returned."""
    from urllib.parse import quote

    if not typed.strip():
        raise UsageProblem(f"the {kind} ID is empty")
    try:
        return typed, call(quote(typed, safe=""))
    except ServerRefused as refused:
        if refused.status != 404:
            raise
        try:
            whole = resolve_id(kind, typed, known())
        except UsageProblem as unresolved:
            if str(unresolved).startswith("no "):
                raise UsageProblem(f"{unresolved} ({refused})") from None
            raise
        if whole == typed:
            raise
    return whole, call(quote(whole, safe=""))


@silence_app.command("add")
def silence_add(
    matchers: Annotated[
        list[str],
        typer.Argument(help='Label matchers, e.g. service="checkout" alertname=~"Disk.*"'),
    ],
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why (required).")],
    duration: Annotated[str, typer.Option(help="How long, e.g. 2h.")] = "1h",
    maintenance: Annotated[bool, typer.Option(help="A maintenance window.")] = False,
    by: Annotated[
        str, typer.Option(help="Who creates it (with access control on: the token's name).")
    ] = "cli",
    url: UrlOption = "http://127.0.0.1:8765",
    token: TokenOption = None,
) -> None:
    """Mute matching signals for a while: recorded, never acted on."""
    created = _call(
        "POST",
        url,
        "/api/v1/silences",
        {
            "matchers": matchers,
            "comment": comment,
            "duration": duration,
            "kind": "maintenance" if maintenance else "silence",
            "created_by": by,
        },
        token,
    )
    out.print(
        f"[green]created[/] {markup(created['id'])} until {markup(created['ends_at'])}",
        soft_wrap=True,
    )


@silence_app.command("list")
def silence_list(
    state: Annotated[str, typer.Option(help="active, pending, expired or all")] = "active",
    url: UrlOption = "http://127.0.0.1:8765",
    token: TokenOption = None,
) -> None:
    """List silences."""
    out.print(silences_table(_call("GET", url, f"/api/v1/silences?state={state}", token=token)))


def silences_table(items: list[dict[str, Any]]) -> Table:
    """Silences as the API lists them."""
    table = data_table(
        "silence", "kind", "matchers", "until", "by", "comment", "state",
        ids={"silence": [str(item["id"]) for item in items]},
    )  # fmt: skip
    for item in items:
        table.add_row(
            *(safe_text(item[key]) for key in ("id", "kind")),
            safe_text(", ".join(str(matcher) for matcher in item["matchers"])),
            *(safe_text(item[key]) for key in ("ends_at", "created_by", "comment", "state")),
        )
    return table


@silence_app.command("expire")
def silence_expire(
    silence_id: str, url: UrlOption = "http://127.0.0.1:8765", token: TokenOption = None
) -> None:
    """End a silence now. SILENCE_ID: its ID or enough of its beginning to name one."""

    def current() -> list[str]:
        items = _call("GET", url, "/api/v1/silences?state=all", token=token)
        return [str(item["id"]) for item in items if item.get("state") != "expired"]

    def send(whole: str) -> Any:
        return _call("DELETE", url, f"/api/v1/silences/{whole}", token=token)

    whole, _ = _call_on_id("active or pending silence", silence_id, current, send)
    out.print(f"[green]expired[/] {markup(whole)}", soft_wrap=True)


@app.command()
def approve(
    approval_id: str,
    comment: Annotated[
        str, typer.Option("--comment", "-m", help="Why you approve (recorded with the answer).")
    ] = "",
    url: UrlOption = "http://127.0.0.1:8765",
    token: TokenOption = None,
) -> None:
    """Approve a pending action (ID: the approval's ID or enough of its beginning to name one).
    Where several people must approve (the two-person rule), it says how many have and who:
    "1 of 2: approved by alice, waiting for another approver"."""
    _print_answer("approved", "green", *_answer(approval_id, "approve", comment, url, token))


@app.command()
def deny(
    approval_id: str,
    comment: Annotated[
        str, typer.Option("--comment", "-m", help="Why you deny (recorded with the answer).")
    ] = "",
    url: UrlOption = "http://127.0.0.1:8765",
    token: TokenOption = None,
) -> None:
    """Deny a pending action (the incident goes to a human). ID: the approval's ID or enough
    of its beginning to name one."""
    _print_answer("denied", "yellow", *_answer(approval_id, "deny", comment, url, token))


def _answer(
    typed: str, verdict: str, comment: str, url: str, token: str | None
) -> tuple[str, dict[str, Any]]:
    def pending() -> list[str]:
        return [str(item["id"]) for item in _call("GET", url, "/api/v1/approvals", token=token)]

    def send(approval_id: str) -> Any:
        path = f"/api/v1/approvals/{approval_id}/{verdict}"
        return _call("POST", url, path, {"comment": comment}, token)

    approval_id, result = _call_on_id("pending approval", typed, pending, send)
    return approval_id, result


def _print_answer(verb: str, color: str, approval_id: str, result: dict[str, Any]) -> None:
    """What became of an answer; exit 1 when onduty recorded it but did not count it."""
    if result.get("counted") is False:
        reason = markup(str(result.get("refused") or "your role may not answer approvals"))
        err.print(f"[bold red]not counted[/] {markup(approval_id)}: {reason}", soft_wrap=True)
        raise typer.Exit(1)
    status = f": {markup(str(result['status']))}" if result.get("status") else ""
    out.print(f"[{color}]{verb}[/] {markup(approval_id)}{status}", soft_wrap=True)


@app.command("approvals")
def approvals_list(
    url: UrlOption = "http://127.0.0.1:8765",
    token: TokenOption = None,
) -> None:
    """List the approval requests waiting for an answer, with who has approved so far."""
    out.print(approvals_table(_call("GET", url, "/api/v1/approvals", token=token)))


def approvals_table(items: list[dict[str, Any]]) -> Table:
    """Pending approval requests as the API lists them."""
    table = data_table(
        "approval", "incident", "what", "status", "expires",
        ids={
            "approval": [str(item.get("id", "")) for item in items],
            "incident": [str(item.get("incident_id", "")) for item in items],
        },
    )  # fmt: skip
    for item in items:
        keys = ("id", "incident_id", "summary", "status", "expires_at")
        table.add_row(*(safe_text(item.get(key, "")) for key in keys))
    return table


@app.command()
def ack(
    incident_id: str,
    comment: Annotated[
        str, typer.Option("--comment", "-m", help="A note recorded with the acknowledgement.")
    ] = "",
    url: UrlOption = "http://127.0.0.1:8765",
    token: TokenOption = None,
) -> None:
    """Acknowledge an incident: someone has it, so escalation stops paging further tiers.
    INCIDENT_ID: the incident's ID or enough of its beginning to name one open incident."""

    def open_incidents() -> list[str]:
        path = "/api/v1/incidents?status=open&limit=1000"
        return [str(item["id"]) for item in _call("GET", url, path, token=token)]

    def send(whole: str) -> Any:
        path = f"/api/v1/incidents/{whole}/acknowledge"
        return _call("POST", url, path, {"comment": comment}, token)

    whole, _ = _call_on_id("open incident", incident_id, open_incidents, send)
    out.print(f"[green]acknowledged[/] {markup(whole)}", soft_wrap=True)


AUTONOMY_LEVELS = ("observe", "suggest", "approve", "act")


@app.command()
def autonomy(
    service: str,
    level: Annotated[str, typer.Argument(help="observe, suggest, approve or act")],
    url: UrlOption = "http://127.0.0.1:8765",
    token: TokenOption = None,
) -> None:
    """Change how far onduty may act on SERVICE by itself (recorded; needs the admin role)."""
    if level not in AUTONOMY_LEVELS:
        raise UsageProblem(f"LEVEL must be one of {', '.join(AUTONOMY_LEVELS)}, not {level!r}")
    from urllib.parse import quote

    path = f"/api/v1/services/{quote(service, safe='')}/autonomy"
    result = _call("PUT", url, path, {"level": level}, token)
    if result.get("pending"):  # a raise that needs more admins (the two-person rule)
        out.print(
            f"[yellow]{markup(service)}[/]: raise to {level} requested "
            f"({markup(str(result.get('request_id', '')))}): {markup(str(result['status']))}",
            soft_wrap=True,
        )
    elif result.get("changed"):
        out.print(
            f"[green]{markup(service)}[/]: autonomy {markup(result['previous'])} → "
            f"{markup(result['level'])}",
            soft_wrap=True,
        )
    else:
        out.print(f"{markup(service)}: autonomy is already {markup(result['level'])}")


# ---------------------------------------------------------------------------- tokens

token_app = typer.Typer(no_args_is_help=True, help="Access tokens for `onduty serve`.")
app.add_typer(token_app, name="token")


@token_app.command("hash")
def token_hash(
    new: Annotated[
        bool, typer.Option("--new", help="Generate a new random token and print it too.")
    ] = False,
) -> None:
    """Print the `sha256:<hex>` to put in `access.tokens` for a token read from stdin; with
    --new, make a random token and print both (keep the token, configure the hash)."""
    import getpass
    import secrets

    from onduty.api.auth import hash_token

    if new:
        token = secrets.token_urlsafe(32)
        out.print(f"token: {token}", soft_wrap=True)
        out.print(f"hash:  {hash_token(token)}", soft_wrap=True)
        return
    token = getpass.getpass("token: ") if sys.stdin.isatty() else sys.stdin.read()
    token = token.strip()
    if not token:
        raise UsageProblem("no token on stdin (or use --new to make one)")
    out.print(hash_token(token), soft_wrap=True)


# ---------------------------------------------------------------------------- policy lifecycle

app.add_typer(policy_app, name="policy")


@policy_app.command("status")
def policy_status(url: UrlOption = "http://127.0.0.1:8765", token: TokenOption = None) -> None:
    """The enforced policy version, and any candidate beside it."""
    for line in policy_status_lines(_call("GET", url, "/api/v1/policy", token=token)):
        out.print(line, soft_wrap=True)


def policy_status_lines(status: dict[str, Any]) -> list[Text]:
    """The policy status the API reports, as lines to print."""
    source = visible(status["source"] or "-")
    lines = [Text(f"active: {visible(status['version'])} (from {source})")]
    candidate = status.get("candidate")
    if candidate:
        selector = candidate.get("selector")
        where = f" where `{visible(selector)}`" if selector else ""
        version, mode = visible(candidate["version"]), visible(candidate["mode"])
        lines.append(Text(f"candidate: {version} as {mode}{where}"))
    return lines


@policy_app.command("reload")
def policy_reload(url: UrlOption = "http://127.0.0.1:8765", token: TokenOption = None) -> None:
    """Re-read the running server's configuration file (as SIGHUP does)."""
    result = _call("POST", url, "/api/v1/policy/reload", token=token)
    state = "activated" if result.get("changed") else "unchanged"
    out.print(f"{state}: {markup(result['version'])}", soft_wrap=True)


def _candidate(file: Path, mode: str, selector: str | None, url: str, token: str | None) -> None:
    config = load_config(file)
    result = _call(
        "POST",
        url,
        "/api/v1/policy/candidate",
        {
            "config": config.model_dump(mode="json"),
            "mode": mode,
            "selector": selector,
            "source": str(file),
        },
        token,
    )
    out.print(f"[green]{mode}[/]: {markup(result['version'])} runs beside the active policy")


@policy_app.command("shadow")
def policy_shadow(
    file: Path, url: UrlOption = "http://127.0.0.1:8765", token: TokenOption = None
) -> None:
    """Run FILE's policy beside the active one, recording where it disagrees; never enforced."""
    _candidate(file, "shadow", None, url, token)


@policy_app.command("canary")
def policy_canary(
    file: Path,
    selector: Annotated[
        str, typer.Option(help='CEL over signal/incident/service, e.g. service.name == "search"')
    ],
    url: UrlOption = "http://127.0.0.1:8765",
    token: TokenOption = None,
) -> None:
    """Enforce FILE's policy where SELECTOR holds; the active one everywhere else."""
    _candidate(file, "canary", selector, url, token)


@policy_app.command("promote")
def policy_promote(url: UrlOption = "http://127.0.0.1:8765", token: TokenOption = None) -> None:
    """Make the candidate the active policy."""
    result = _call("POST", url, "/api/v1/policy/promote", token=token)
    out.print(f"[green]promoted[/]: {markup(result['version'])} is active")


@policy_app.command("rollback")
def policy_rollback(url: UrlOption = "http://127.0.0.1:8765", token: TokenOption = None) -> None:
    """Drop the candidate; without one, go back to the previous active policy."""
    result = _call("POST", url, "/api/v1/policy/rollback", token=token)
    out.print(f"[yellow]rolled back[/]: {markup(result['role'])} {markup(result['version'])}")


# ---------------------------------------------------------------------------- bench


@app.command()
def bench(
    quick: Annotated[
        bool, typer.Option(help="Small sizes: a smoke run, not a measurement.")
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option(help="Run only these workloads (module names).")
    ] = None,
) -> None:
    """Run the benchmark workloads and print their figures (record them in BENCHMARKS.md)."""
    from onduty.bench import workloads

    known = workloads()
    for name in only or []:
        if name not in known:
            raise UsageProblem(
                f"no benchmark workload named {name!r}; the workloads are {', '.join(known)}"
            )
    table = Table("workload", "figure", "peer", "ratio")
    for name in only or known:
        module = importlib.import_module(f"onduty.bench.{name}")
        out.print(f"[bold]{name}[/] …")
        for row in module.run(quick=quick):
            table.add_row(row["name"], row["figure"], row.get("peer", "-"), row.get("ratio", "-"))
    out.print(table)


# ---------------------------------------------------------------------------- plumbing


@contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    with Progress(
        TextColumn(f"{label}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=total < 20000,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda done: progress.update(task, completed=done)


def _counting(events: Iterator[Any], advance: Callable[[int], None]) -> Iterator[Any]:
    for count, event in enumerate(events, start=1):
        if count % 10000 == 0:
            advance(count)
        yield event


def problem_line(message: str) -> None:
    """A problem as exactly one line on stderr: `onduty: <message>` (never wrapped, markup-free)."""
    err.print(f"[bold red]onduty:[/] {markup(' '.join(message.split()))}", soft_wrap=True)


def _show_version(value: bool) -> None:
    if value:
        from onduty import __version__

        out.print(f"onduty {__version__}")
        raise typer.Exit()


@app.callback()
def _onduty(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print onduty's version and exit.",
            is_eager=True,
            callback=_show_version,
        ),
    ] = False,
) -> None:
    pass  # the commands do the work; this only takes the options before them  # fmt: skip


def command() -> Any:
    """The `onduty` command as it runs: every option's value named plainly in `--help` (a
    flag takes none, a repeatable option names one value, not `<bool>` or `<list[str]>`)."""
    root = typer.main.get_command(app)
    pending = [root]
    while pending:
        current = pending.pop()
        pending.extend(getattr(current, "commands", {}).values())
        context = typer.Context(current)
        help_option = current.get_help_option(context)
        params: list[Any] = [*current.params, *([help_option] if help_option else [])]
        for param in params:
            if param.metavar is not None:
                continue
            shown = str(param.display_type_rich(context) or "")
            if param.param_type_name != "option":
                if shown.startswith("<list[") and shown.endswith("]>"):  # NAME... says "several"
                    one = "<" + shown.removeprefix("<list[").removesuffix("]>") + ">"
                    param.display_type_rich = lambda ctx, one=one: one
                continue
            if getattr(param, "is_flag", False) or getattr(param, "count", False):
                param.metavar = ""
            elif shown.startswith("<list[") and shown.endswith("]>"):
                param.metavar = "<" + shown.removeprefix("<list[").removesuffix("]>") + ">"
    return root


def main() -> None:
    try:
        command()(prog_name="onduty")
    except ConfigError as error:  # `config check` lists every problem; elsewhere one line
        more = ""
        if len(error.problems) > 1:
            more = f" (and {len(error.problems) - 1} more: `onduty config check {error.source}`)"
        problem_line(f"{error.source}: {error.problems[0]}{more}")
        sys.exit(2)
    except (UsageProblem, StoreError) as error:
        problem_line(str(error))
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
