"""`onduty report INCIDENT_ID`: the post-incident report of one incident, from the event log
(read only: the store is never created or changed), as Markdown on stdout, or to files
(`--markdown FILE`, `--html FILE`: one self-contained page)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onduty.cli.base import UsageProblem, existing_log, out
from onduty.textsafe import markup

StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        "-s",
        help="The event log, read only: a SQLite file path, sqlite:///PATH, or "
        "postgresql://HOST/DB?schema=NAME (every partition).",
    ),
]


def report(
    incident_id: Annotated[str, typer.Argument(help="The incident (its id, inc-…).")],
    store: StoreOption = "onduty.db",
    html: Annotated[
        Path | None, typer.Option("--html", help="Write the report as one HTML page here.")
    ] = None,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="Write the report as Markdown here.")
    ] = None,
) -> None:
    """Write the post-incident report of one incident: its signals, the decisions with their
    reasons, the actions and how they ended, approvals, escalations and recovery (Markdown on
    stdout unless --html or --markdown is given)."""
    from onduty.report import html as as_html
    from onduty.report import markdown as as_markdown
    from onduty.report.source import ReportProblem, check_store, missing_incident
    from onduty.report.timeline import incident_timelines

    try:
        check_store(store)
        with existing_log(store) as log:
            found = incident_timelines(log.read(), only=[incident_id])
            if not found:
                raise missing_incident(incident_id, log.read(), store)
    except ReportProblem as problem:
        raise UsageProblem(str(problem)) from None
    written = []
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(as_html.render_incidents(found, store=store), encoding="utf-8")
        written.append(html)
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(as_markdown.render_incidents(found, store=store), encoding="utf-8")
        written.append(markdown)
    if not written:
        typer.echo(as_markdown.render_incidents(found, store=store), nl=False)
        return
    for path in written:
        out.print(f"wrote {markup(str(path))}")


def trace(
    incident_id: Annotated[str, typer.Argument(help="The incident (its id, inc-…).")],
    store: StoreOption = "onduty.db",
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per span, one per line.")
    ] = False,
) -> None:
    """Show the trace of one incident, rebuilt from the event log (read only): its spans from
    the request that delivered the signal through correlation, decision, verdict, action and
    verification, with the events each span stands for. The ids are those onduty exports over
    OTLP (`telemetry.traces`), so the trace can be found in a tracing backend."""
    import orjson

    from onduty.report.source import ReportProblem, check_store, missing_incident
    from onduty.spans import incident_trace
    from onduty.textsafe import visible

    try:
        check_store(store)
        with existing_log(store) as log:
            spans = incident_trace(log.read(), incident_id)
            if not spans:
                raise missing_incident(incident_id, log.read(), store)
    except ReportProblem as problem:
        raise UsageProblem(str(problem)) from None
    if as_json:
        for span in spans:
            typer.echo(orjson.dumps(span.as_dict()).decode())
        return
    depth: dict[str, int] = {}
    typer.echo(f"trace {spans[0].trace_id}  incident {visible(incident_id)}")
    for span in spans:
        level = depth.get(span.parent_id or "", -1) + 1
        depth[span.span_id] = level
        until = "…" if span.end is None else span.end.strftime("%H:%M:%S.%f")[:-3]
        events = ", ".join(visible(i) for i in span.event_ids)
        typer.echo(
            f"{'  ' * level}{span.name:<10} {span.span_id}  "
            f"{span.start.strftime('%H:%M:%S.%f')[:-3]} → {until}"
            + (f"  [{events}]" if events else "")
        )
