"""The commands that read an event log on disk: `replay`, `incidents`, `similar`, `events tail`
(`audit verify` is in `onduty.cli.audit`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from onduty.cli.base import (
    ConfigOption,
    StoreOption,
    UsageProblem,
    counting,
    existing_log,
    out,
    progress,
)
from onduty.cli.views import differences_table, event_line, incidents_table, similar_table
from onduty.configfile import load_config
from onduty.textsafe import markup, safe_text

events_app = typer.Typer(no_args_is_help=True, help="Read the event log.")


def replay(
    store: StoreOption = "onduty.db",
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option(help="Show at most this many differences.")] = 20,
) -> None:
    """Re-run the core over a log: exit 0 when every decision is reproduced, 1 when any differs.

    With -c, a backtest: the decisions the new configuration would have made differently."""
    from onduty.log.fleet_view import FleetView
    from onduty.replay import ReplayReport
    from onduty.replay import replay as run_replay

    candidate = load_config(config) if config else None
    with existing_log(store) as log:
        if isinstance(log, FleetView):  # each partition is folded by a core of its own
            report = ReplayReport()
            for partition in sorted(log.partitions()):
                part = run_replay(log.read_partition(partition), config=candidate)
                report.inputs += part.inputs
                report.decisions += part.decisions
                report.differences.extend(part.differences)
                report.advice_reused += part.advice_reused
                report.advice_unanswered += part.advice_unanswered
        else:
            total = log.head()[0]
            with progress("replaying", total=total) as advance:
                events = counting(log.read(), advance)
                report = run_replay(events, config=candidate)
    what = f"against {markup(config)}" if config else "with the recorded configuration"
    if report.advice_reused:
        out.print(f"the advisor's {report.advice_reused} recorded answers were judged again")
    if report.advice_unanswered:
        out.print(
            f"[yellow]{len(report.advice_unanswered)} consultations of the advisor have no "
            "recorded answer[/]: no model is asked in a replay, so those incidents went on "
            "without advice"
        )
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


def similar(
    incident_id: Annotated[str, typer.Argument(help="The incident to compare, open or closed.")],
    store: StoreOption = "onduty.db",
    limit: Annotated[int, typer.Option(min=1, max=20, help="Show at most this many.")] = 3,
) -> None:
    """Show the closed incidents most like one, what was done about them and how each action
    ended (BM25 over their labels, annotations and titles)."""
    from onduty.readmodel.similar import (
        SimilarIncidents,
        UnknownIncident,
        document_from_log,
        summarize,
    )

    with existing_log(store) as log:
        model = SimilarIncidents().feed_all(log.read())
        try:
            matches = model.similar_to(incident_id, limit)
        except UnknownIncident:
            document = document_from_log(log, incident_id)
            if document is None:
                raise UsageProblem(f"there is no incident {incident_id!r} in {store}") from None
            matches = model.similar_to_document(document, limit)
    if matches:
        out.print(similar_table(matches))
    out.print(safe_text(summarize(matches)))


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
