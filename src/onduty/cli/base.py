"""What every command shares: the consoles, the common options, the problems a user can fix,
and opening a log that must already exist."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from onduty.config import ConfigError
from onduty.log import EventLog, open_log
from onduty.log.existing import require_existing_log
from onduty.textsafe import markup

# Data never goes through markup or emoji codes: views build Text from it, or escape it (textsafe).
out = Console(highlight=False, emoji=False)
err = Console(stderr=True, highlight=False, emoji=False)

StoreOption = Annotated[
    str, typer.Option("--store", "-s", help="The event log: a SQLite file path or sqlite:///PATH.")
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="An onduty.yaml configuration.")
]

SERVER = "http://127.0.0.1:8765"
"""Where the commands that talk to a server find it, unless told (--url, ONDUTY_URL)."""
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

SelectorOption = Annotated[
    str, typer.Option(help='CEL over signal/incident/service, e.g. service.name == "search"')
]
"""Where a canary (a policy's or a learning model's) is enforced."""


class UsageProblem(Exception):
    """A problem the user can fix; printed as one line, exit 2, never a traceback."""


class ServerRefused(UsageProblem):
    """The server answered with an error status (the message names it and the reason)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def fail(message: str, code: int = 2) -> typer.Exit:
    """A problem with an option's value, as a line on stderr; raise what it returns."""
    err.print(f"[bold red]error:[/] {markup(message)}", soft_wrap=True)
    return typer.Exit(code)


def config_problems(error: ConfigError) -> typer.Exit:
    """Every problem of an invalid configuration, one a line on stderr; raise what it returns
    (exit 2)."""
    err.print(f"[bold red]invalid configuration[/] {markup(error.source)}:", soft_wrap=True)
    for problem in error.problems:
        err.print(f"  - {markup(problem)}", soft_wrap=True)
    return typer.Exit(2)


@contextmanager
def existing_log(url: str) -> Iterator[EventLog]:
    """Open a log that must already exist (read commands never create an empty one)."""
    try:
        require_existing_log(url)
        log = _whole_store(url) or open_log(url)
    except ValueError as error:
        raise UsageProblem(str(error)) from None
    try:
        yield log
    finally:
        log.close()


def _whole_store(url: str) -> EventLog | None:
    """A PostgreSQL store named without a partition is read whole: every partition's events at
    their positions (`FleetView`), each partition's chain verified on its own."""
    if not url.startswith(("postgresql://", "postgres://")):
        return None
    from onduty.log.fleet_view import FleetView
    from onduty.log.pg import parse_store_url

    if "partition" in parse_store_url(url, own=("partition",)).options:
        return None  # one partition, as open_log reads it
    return FleetView(url)


@contextmanager
def progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
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


def counting(events: Iterator[Any], advance: Callable[[int], None]) -> Iterator[Any]:
    for count, event in enumerate(events, start=1):
        if count % 10000 == 0:
            advance(count)
        yield event


def problem_line(message: str) -> None:
    """A problem as exactly one line on stderr: `onduty: <message>` (never wrapped, markup-free)."""
    err.print(f"[bold red]onduty:[/] {markup(' '.join(message.split()))}", soft_wrap=True)
