"""`onduty policy`: check a policy's guardrails, and run its table tests.

onduty policy check onduty.yaml [--now 2026-01-05T09:00:00Z]
    exit 0: clean or warnings only; 2: errors (or a file that cannot be read)
onduty policy test onduty.yaml --cases cases/
    exit 0: every case passes; 1: a case fails; 2: a bad configuration or case file
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from onduty.config import ConfigError, load_config
from onduty.govern.lint import Problem, check_policy, problems_of_config_error
from onduty.policytest import CaseError, load_cases, run_cases
from onduty.textsafe import markup

policy_app = typer.Typer(
    no_args_is_help=True,
    help="Policies: check and table-test a file; manage the one a server enforces.",
    pretty_exceptions_enable=False,
)

# data is escaped (textsafe.markup) before it meets markup; emoji codes stay text
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

FileArgument = Annotated[Path, typer.Argument(help="An onduty.yaml configuration.")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {markup(message)}")
    return typer.Exit(code)


def _config_problems(error: ConfigError) -> typer.Exit:
    err.print(f"[bold red]invalid configuration[/] {markup(error.source)}:")
    for problem in error.problems:
        err.print(f"  - {markup(problem)}")
    return typer.Exit(2)


def parse_now(text: str | None) -> datetime:
    """--now, or the real current time."""
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise _fail(f"--now: {text!r} is not an ISO time such as 2026-01-05T09:00:00Z") from None
    if value.tzinfo is None:
        raise _fail(f"--now: {text!r} needs a UTC offset, e.g. 2026-01-05T09:00:00Z")
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
    out.print(f"[{colour}]{problem.severity:<7}[/] {markup(where)}: {markup(problem.message)}{at}")
    if problem.expression is not None and problem.position is not None:
        for line in _pointer(problem.expression, problem.position):
            out.print(f"        {markup(line)}")


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
            raise _config_problems(error) from None
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
        out.print(f"[green]clean[/]: {markup(str(file))} — {rules} guardrails, no problems")
        return
    out.print(
        f"{markup(str(file))}: {errors} error{'s' if errors != 1 else ''}, "
        f"{warnings} warning{'s' if warnings != 1 else ''}"
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
        raise _config_problems(error) from None
    try:
        results = run_cases(config, load_cases(cases))
    except CaseError as error:
        err.print("[bold red]invalid cases[/]:")
        for problem in error.problems:
            err.print(f"  - {markup(problem)}")
        raise typer.Exit(2) from None
    failed = 0
    for result in results:
        mark = "[green]PASS[/]" if result.passed else "[red]FAIL[/]"
        out.print(
            f"{mark} {markup(result.file)}: {markup(result.name)} → {markup(result.verdict)}"
            f" ({markup(result.reason)})"
        )
        if result.passed:
            continue
        failed += 1
        for failure in result.failures:
            out.print(f"     {markup(failure)}")
        for outcome in result.rules:
            out.print(f"     · {markup(outcome.rule)} ({outcome.effect}): {markup(outcome.reason)}")
    passed = len(results) - failed
    colour = "red" if failed else "green"
    out.print(f"[{colour}]{passed} passed, {failed} failed[/]")
    if failed:
        raise typer.Exit(1)
