"""Reports: the story of each incident told from the event log (`timeline`), a simulation run's
scorecard and Monte Carlo distributions (`model`, `charts`), rendered as one self-contained HTML
page (`html`) or as Markdown (`markdown`); `source` reads a store for a post-incident report
without changing it.

For a simulation: `html.write_html(path, result, lab)` / `markdown.write_markdown(...)`, where
`result` is a `RunResult` (or plain data of the same names) and `lab` a Monte Carlo result as
plain data: `{"metrics": {metric: {mode: [value per run]}}, "runs": N, ...}`."""

from onduty.report.html import render_run, write_html
from onduty.report.markdown import write_markdown
from onduty.report.model import Report, incident_report, run_report
from onduty.report.timeline import IncidentTimeline, incident_timelines

__all__ = [
    "IncidentTimeline",
    "Report",
    "incident_report",
    "incident_timelines",
    "render_run",
    "run_report",
    "write_html",
    "write_markdown",
]
