"""`onduty policy`: check a policy's guardrails, run its table tests, and manage the policy a
running server enforces.

onduty policy check onduty.yaml [--now 2026-01-05T09:00:00Z]
    exit 0: clean or warnings only; 2: errors (or a file that cannot be read)
onduty policy test onduty.yaml --cases cases/
    exit 0: every case passes; 1: a case fails; 2: a bad configuration or case file
onduty policy status|reload|shadow|canary|promote|rollback
    the policy of a running server (see `onduty policy --help`)
onduty policy publish onduty.yaml [--central postgresql://HOST/DB?schema=onduty_central]
onduty policy bundles --central URL | -c onduty.yaml
    the central policy bundle every manager of a fleet activates, in every region (the schema
    is --central, else ONDUTY_CENTRAL, else the file's fleet.central)
    exit 0: published (or already active); 2: an invalid file, URL or unreachable database
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from onduty.cli.base import (
    SERVER,
    SelectorOption,
    TokenOption,
    UrlOption,
    UsageProblem,
    config_problems,
    err,
    fail,
    out,
)
from onduty.cli.client import call
from onduty.cli.views import bundles_lines, policy_status_lines
from onduty.config import Config, ConfigError
from onduty.configfile import load_config
from onduty.govern.lint import Problem, check_policy, problems_of_config_error
from onduty.policytest import CaseError, load_cases, run_cases
from onduty.textsafe import markup

policy_app = typer.Typer(
    no_args_is_help=True,
    help="Policies: check and table-test a file; manage the one a server enforces, and the "
    "central bundle a fleet's managers activate.",
    pretty_exceptions_enable=False,
)

FileArgument = Annotated[Path, typer.Argument(help="An onduty.yaml configuration.")]
CentralOption = Annotated[
    str | None,
    typer.Option(
        "--central",
        envvar="ONDUTY_CENTRAL",
        help="The schema the regions share, postgresql://HOST/DB?schema=NAME (or set "
        "ONDUTY_CENTRAL; default: the configuration's fleet.central).",
        show_default=False,
    ),
]


def parse_now(text: str | None) -> datetime:
    """--now, or the real current time."""
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise fail(f"--now: {text!r} is not an ISO time such as 2026-01-05T09:00:00Z") from None
    if value.tzinfo is None:
        raise fail(f"--now: {text!r} needs a UTC offset, e.g. 2026-01-05T09:00:00Z")
    return value.astimezone(UTC)


def _read_document(path: Path) -> tuple[bool, Any]:
    try:
        return True, yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False, None


def _pointer(expression: str, position: int) -> list[str]:
    """The line of the condition holding `position`, and a caret under it."""
    before = expression[: position - 1]
    line = before.count("\n")
    column = len(before) - (before.rfind("\n") + 1)
    text = expression.split("\n")[line]
    return [f"| {text}", "| " + " " * column + "^"]


def print_problem(problem: Problem) -> None:
    colour = "red" if problem.severity == "error" else "yellow"
    where = f"rule {problem.rule}" if problem.rule else "config"
    at = f" (position {problem.position})" if problem.position is not None else ""
    out.print(
        f"[{colour}]{problem.severity:<7}[/] {markup(where)}: {markup(problem.message)}{at}",
        soft_wrap=True,
    )
    if problem.expression is not None and problem.position is not None:
        for line in _pointer(problem.expression, problem.position):
            out.print(f"        {markup(line)}", soft_wrap=True)


@policy_app.command("check")
def check(
    file: FileArgument,
    now: Annotated[
        str | None,
        typer.Option(
            "--now",
            help="The current time for time-dependent checks (ISO, with an offset); default: now.",
        ),
    ] = None,
) -> None:
    """Lint the guardrails: exit 0 when clean or with warnings only, 2 with errors."""
    moment = parse_now(now)
    try:
        config = load_config(file)
    except ConfigError as error:
        readable, document = _read_document(file)
        if not readable:
            raise config_problems(error) from None
        problems = problems_of_config_error(document, error, now=moment)
        rules = "?"
    else:
        problems = check_policy(config, now=moment)
        rules = str(len(config.policy.guardrails))
    for problem in problems:
        print_problem(problem)
    errors = sum(1 for p in problems if p.severity == "error")
    warnings = len(problems) - errors
    if not problems:
        out.print(
            f"[green]clean[/]: {markup(str(file))} — {rules} guardrails, no problems",
            soft_wrap=True,
        )
        return
    out.print(
        f"{markup(str(file))}: {errors} error{'s' if errors != 1 else ''}, "
        f"{warnings} warning{'s' if warnings != 1 else ''}",
        soft_wrap=True,
    )
    if errors:
        raise typer.Exit(2)


@policy_app.command("test")
def test(
    file: FileArgument,
    cases: Annotated[
        Path,
        typer.Option("--cases", help="A folder of *.yaml case files (table tests)."),
    ],
) -> None:
    """Run table tests: exit 0 when every case passes, 1 when any fails, 2 on bad input."""
    try:
        config = load_config(file)
    except ConfigError as error:
        raise config_problems(error) from None
    try:
        results = run_cases(config, load_cases(cases))
    except CaseError as error:
        err.print("[bold red]invalid cases[/]:", soft_wrap=True)
        for problem in error.problems:
            err.print(f"  - {markup(problem)}", soft_wrap=True)
        raise typer.Exit(2) from None
    failed = 0
    for result in results:
        mark = "[green]PASS[/]" if result.passed else "[red]FAIL[/]"
        out.print(
            f"{mark} {markup(result.file)}: {markup(result.name)} → {markup(result.verdict)}"
            f" ({markup(result.reason)})",
            soft_wrap=True,
        )
        if result.passed:
            continue
        failed += 1
        for failure in result.failures:
            out.print(f"     {markup(failure)}", soft_wrap=True)
        for outcome in result.rules:
            out.print(
                f"     · {markup(outcome.rule)} ({outcome.effect}): {markup(outcome.reason)}",
                soft_wrap=True,
            )
    passed = len(results) - failed
    colour = "red" if failed else "green"
    out.print(f"[{colour}]{passed} passed, {failed} failed[/]", soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@policy_app.command("status")
def policy_status(url: UrlOption = SERVER, token: TokenOption = None) -> None:
    """The enforced policy version, and any candidate beside it."""
    for line in policy_status_lines(call("GET", url, "/api/v1/policy", token=token)):
        out.print(line, soft_wrap=True)


@policy_app.command("reload")
def policy_reload(url: UrlOption = SERVER, token: TokenOption = None) -> None:
    """Re-read the running server's configuration file (as SIGHUP does)."""
    result = call("POST", url, "/api/v1/policy/reload", token=token)
    state = "activated" if result.get("changed") else "unchanged"
    out.print(f"{state}: {markup(result['version'])}", soft_wrap=True)


def _candidate(file: Path, mode: str, selector: str | None, url: str, token: str | None) -> None:
    config = load_config(file)
    result = call(
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
def policy_shadow(file: Path, url: UrlOption = SERVER, token: TokenOption = None) -> None:
    """Run FILE's policy beside the active one, recording where it disagrees; never enforced."""
    _candidate(file, "shadow", None, url, token)


@policy_app.command("canary")
def policy_canary(
    file: Path,
    selector: SelectorOption,
    url: UrlOption = SERVER,
    token: TokenOption = None,
) -> None:
    """Enforce FILE's policy where SELECTOR holds; the active one everywhere else."""
    _candidate(file, "canary", selector, url, token)


@policy_app.command("promote")
def policy_promote(url: UrlOption = SERVER, token: TokenOption = None) -> None:
    """Make the candidate the active policy."""
    result = call("POST", url, "/api/v1/policy/promote", token=token)
    out.print(f"[green]promoted[/]: {markup(result['version'])} is active")


@policy_app.command("rollback")
def policy_rollback(url: UrlOption = SERVER, token: TokenOption = None) -> None:
    """Drop the candidate; without one, go back to the previous active policy."""
    result = call("POST", url, "/api/v1/policy/rollback", token=token)
    out.print(f"[yellow]rolled back[/]: {markup(result['role'])} {markup(result['version'])}")


def _default_publisher() -> str:
    """Who publishes, unless told: the user and the host, as a commit names its author."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@contextmanager
def _central(given: str | None, config: Config | None) -> Iterator[Any]:
    """The central bundles: at `given` (--central), else at the configuration's
    `fleet.central`. A missing or bad URL, or a database out of reach, is one line, exit 2."""
    from onduty.fleet.policies import PolicyBundles
    from onduty.log.pg import DatabaseUnavailable, StoreURLError

    where = "--central" if given else "fleet.central"
    url = given or (config.fleet.central if config is not None else None)
    if not url:
        raise UsageProblem(
            "where is the central schema? Give --central postgresql://HOST/DB?schema=NAME, set "
            "ONDUTY_CENTRAL, or set fleet.central in the configuration"
        )
    try:
        with PolicyBundles(url) as bundles:
            yield bundles
    except (StoreURLError, DatabaseUnavailable) as error:
        raise UsageProblem(f"{where}: {error}") from None


def _read_config(file: Path) -> tuple[Config, str]:
    """A configuration file, validated, and its text; every problem listed (exit 2)."""
    from onduty.config import parse_config_text

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageProblem(f"{file}: cannot read the file: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise UsageProblem(
            f"{file}: cannot read the file: not UTF-8 text (byte {error.start})"
        ) from None
    try:
        return parse_config_text(text, str(file)), text
    except ConfigError as error:
        raise config_problems(error) from None


@policy_app.command("publish")
def policy_publish(
    file: FileArgument,
    central: CentralOption = None,
    by: Annotated[
        str | None,
        typer.Option(
            "--by", help="Who publishes, as recorded (default: your user name @ this host)."
        ),
    ] = None,
) -> None:
    """Publish FILE's policy as the central bundle every manager of every region activates.
    The file is validated and linted first; publishing the active version again changes
    nothing, and an earlier one becomes active again."""
    from onduty.fleet.policies import Change

    config, text = _read_config(file)
    errors = [p for p in check_policy(config, now=parse_now(None)) if p.severity == "error"]
    if errors:
        for problem in errors:
            print_problem(problem)
        count = f"{len(errors)} error{'s' if len(errors) != 1 else ''}"
        raise fail(f"{file}: {count} in the policy: not published (see `onduty policy check`)")
    with _central(central, config) as bundles:
        publication = bundles.publish(config, str(file), by or _default_publisher(), text=text)
    colour = "yellow" if publication.change is Change.UNCHANGED else "green"
    out.print(f"[{colour}]{markup(publication.reason)}[/]", soft_wrap=True)


@policy_app.command("bundles")
def policy_bundles(
    central: CentralOption = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="A configuration whose fleet.central to read."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="How many activations to list, newest first.")
    ] = 20,
) -> None:
    """The central policy bundles as they were activated, newest (the active one) first."""
    config = _read_config(config_file)[0] if config_file is not None and not central else None
    with _central(central, config) as bundles:
        activations = bundles.history(limit)
    if not activations:
        out.print(
            f"no policy bundle was published in {markup(bundles.url.schema)} yet "
            "(`onduty policy publish FILE`)",
            soft_wrap=True,
        )
        return
    for line in bundles_lines(activations):
        out.print(line, soft_wrap=True)
