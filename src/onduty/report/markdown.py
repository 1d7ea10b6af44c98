"""A report as Markdown (GitHub-flavoured: tables, fenced code), for a post-mortem document or
a pull request's comment.

Every piece of text from the log or a scenario is escaped (`escape`): control and bidi
characters are written as escapes (`textsafe.visible`), what starts an HTML tag or entity
(`<`, `&`) is written as an entity, and the
characters that make emphasis, links, images, code or table cells are backslash-escaped, so a
label cannot inject markup, a link or an image. Longer text (an action's output) goes in a
fenced block whose fence is longer than any run of backticks in it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from onduty.api.console.pages import age, clock, stamp
from onduty.report.charts import MODE_WORD, shown
from onduty.report.model import Report, incident_report, run_report
from onduty.report.timeline import IncidentTimeline, Line
from onduty.textsafe import visible

_MARKUP = re.compile(r"([\\`*_\[\]|~>])")
_FENCE = re.compile(r"`+")


def escape(value: object) -> str:
    """`value` as inert Markdown text on one line."""
    text = visible("" if value is None else str(value))
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return _MARKUP.sub(r"\\\1", text)


def fenced(text: str, indent: str = "") -> list[str]:
    """`text` as a fenced block (controls made visible, line breaks kept)."""
    body = visible(text, single_line=False)
    longest = max((len(run) for run in _FENCE.findall(body)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{indent}{fence}text", *(f"{indent}{line}" for line in body.split("\n")),
            f"{indent}{fence}"]  # fmt: skip


def _table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = [
        "| " + " | ".join(escape(column) for column in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _offset(opened: datetime, moment: datetime) -> str:
    return f"-{age(opened - moment)}" if moment < opened else f"+{age(moment - opened)}"


def _line(line: Line, opened: datetime) -> list[str]:
    by = f" (by {escape(line.by)})" if line.by else ""
    facts = "; ".join(f"{escape(label)}: {escape(value)}" for label, value in line.facts)
    out = [
        f"- `{clock(line.at)}` {_offset(opened, line.at)} **{escape(line.title)}**{by}"
        + (f" — {facts}" if facts else "")
    ]
    if line.signal is not None and line.signal.labels:
        labels = ", ".join(f"{escape(k)}={escape(v)}" for k, v in line.signal.labels)
        out.append(f"  - labels: {labels}")
        out += [f"  - {escape(note.key)}: {escape(note.text)}" for note in line.signal.annotations]
    out += [
        f"  - rule {escape(rule['rule'])}: {escape(rule['word'])} — {escape(rule['reason'])}"
        for rule in line.rules
    ]
    if line.text:
        out += fenced(line.text, "  ")
    return out


def _story(incident: IncidentTimeline) -> list[str]:
    story = []
    for fault in incident.faults:
        fix = (
            f"the right fix: {escape(fault.right_fix)}" if fault.right_fix else "no action fixes it"
        )
        story.append(f"- **Cause (ground truth):** {escape(fault.cause or fault.kind)}; {fix}.")
    story.append(
        f"- **Signals:** {len(incident.signals)} distinct, "
        f"{_count(incident.signal_events, 'signal event')}."
    )
    runbooks = ", ".join(escape(name) for name in incident.runbooks) or "none"
    story.append(f"- **Runbooks matched:** {runbooks}.")
    story += [
        f"- **Guardrails {escape(d.verdict)}** at {clock(d.at)}: {escape(d.reason)}"
        for d in incident.decisions
    ]
    for action in incident.actions:
        said = f"- **{escape(action.action)} on {escape(action.target)}**: {action.outcome}"
        if action.verified is not None:
            said += ", verified" if action.verified else ", verification failed"
        if action.judged:
            said += f" — judged {escape(action.judged)}"
            said += f": {escape(action.judged_reason)}" if action.judged_reason else ""
        story.append(said)
    story += [
        f"- **A person ran {escape(fix.action)} on {escape(fix.target)}** at {clock(fix.at)}"
        + (f" — judged {escape(fix.verdict)}" if fix.verdict else "")
        for fix in incident.human_fixes
    ]
    for answer in incident.approvals:
        role = f" ({escape(answer.role)})" if answer.role else ""
        comment = f": {escape(answer.comment)}" if answer.comment else ""
        story.append(
            f"- **Approval {answer.answer}** by {escape(answer.who)}{role} at "
            f"{clock(answer.at)}{comment}"
        )
    story += [f"- **Escalated** at {clock(at)}: {escape(why)}" for at, why in incident.escalations]
    story += [
        f"- **Acknowledged** by {escape(who)} at {clock(at)}" for at, who in incident.acknowledged
    ]
    if incident.recovered_at is not None:
        story.append(f"- **Recovered** (ground truth) at {clock(incident.recovered_at)}.")
    if incident.resolved_at is not None:
        story.append(
            f"- **Resolved** at {clock(incident.resolved_at)}: {escape(incident.resolution)}."
        )
    else:
        story.append("- **Still open** at the end of the log.")
    return story


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _incident(incident: IncidentTimeline, level: str) -> list[str]:
    meta = [f"**{incident.outcome}**"]
    if incident.service:
        meta.append(f"service {escape(incident.service)}")
    meta.append(f"opened {stamp(incident.opened_at)}")
    if incident.resolved_at is not None:
        meta.append(f"resolved after {age(incident.resolved_at - incident.opened_at)}")
    meta.append(f"id {escape(incident.incident_id)}")
    out = [f"{level} {escape(incident.title)}", "", " · ".join(meta), ""]
    out += [f"{level}# What happened", "", *_story(incident), ""]
    out += [f"{level}# Timeline", ""]
    for line in incident.lines:
        out += _line(line, incident.opened_at)
    return [*out, ""]


def render(report: Report) -> str:
    """The report as Markdown."""
    out = [f"# {escape(report.title)}", ""]
    out += [f"- **{escape(label)}:** {escape(value)}" for label, value in report.facts]
    if report.facts:
        out.append("")
    if report.passed is not None:
        out += [
            "**Every expectation held.**" if report.passed else "**An expectation failed.**",
            "",
        ]
    if report.checks or report.metrics:
        out += ["## Scorecard", ""]
        if report.checks:
            rows = [(c.name, c.bound, c.actual, "ok" if c.ok else "FAILED") for c in report.checks]
            out += _table(("expectation", "bound", "actual", "result"), rows)
        if report.metrics:
            out += _table(("metric", "value"), report.metrics)
    if report.faults:
        columns = ("id", "kind", "target", "injected", "detected", "handled", "recovered",
                   "cause", "right fix")  # fmt: skip
        out += ["## Faults (ground truth)", ""]
        out += _table(columns, [[row[c] for c in columns] for row in report.faults])
    if report.actions:
        judged = ("at", "action", "target", "by", "verdict", "reason")
        out += ["## Actions on the fleet, judged", ""]
        out += _table(judged, [[row[c] for c in judged] for row in report.actions])
    if report.lab is not None:
        runs = f" over {report.lab.runs} runs" if report.lab.runs else ""
        out += [f"## Distributions{runs}", ""]
        for item in report.lab.distributions:
            ratio = (
                f" (policy / baseline, means: {item.ratio:.2f} times)"
                if item.ratio is not None
                else ""
            )
            out += [f"### {escape(item.metric)}{ratio}", ""]
            summary: list[list[Any]] = [
                [MODE_WORD.get(s.mode, s.mode), s.count]
                + [shown(item.metric, s.quantile(f)) for f in (0.5, 0.1, 0.9, 0.0, 1.0)]
                + [s.missing]
                for s in item.summaries
            ]
            out += _table(
                ("mode", "runs", "median", "p10", "p90", "min", "max", "no value"), summary
            )
    if report.kind == "run":
        out += [f"## Incidents ({len(report.incidents)})", ""]
        if not report.incidents:
            out += ["No incident was opened.", ""]
        for incident in report.incidents:
            out += _incident(incident, "###")
    else:
        for incident in report.incidents:
            out += _incident(incident, "##")
    out.append("Made by onduty from its event log. Times are UTC.")
    return "\n".join(out) + "\n"


def render_run(result: Any = None, lab: Any = None, **options: Any) -> str:
    return render(run_report(result, lab, **options))


def render_incidents(
    incidents: Sequence[IncidentTimeline], *, store: str | None = None, title: str | None = None
) -> str:
    return render(incident_report(incidents, store=store, title=title))


def write_markdown(path: str | Path, result: Any = None, lab: Any = None, **options: Any) -> Path:
    """Write a simulation run's report as Markdown to `path`; returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_run(result, lab, **options), encoding="utf-8")
    return target
