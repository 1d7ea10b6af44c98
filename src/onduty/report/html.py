"""A report as one self-contained HTML page: the console's stylesheet and the report's own,
inline; the charts as inline SVG; no script, nothing fetched (its content security policy
forbids every fetch, and allows only its own stylesheet by hash). Every piece of text from the
log or a scenario (labels, annotations, outputs, reasons) is escaped by Jinja2's autoescape."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from onduty.api.console.charts import OUTCOME_TONE
from onduty.api.console.pages import age, clock, iso, stamp
from onduty.report.charts import MODE_TONE, MODE_WORD, shown
from onduty.report.model import Report, incident_report, run_report
from onduty.report.timeline import IncidentTimeline
from onduty.textsafe import visible


def _shown(value: Any) -> Any:
    """Every control, bidi and invisible formatting character in text from outside written as
    an escape (as on a terminal: `textsafe.visible`), before autoescape makes it inert HTML."""
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return visible(value, single_line=False)
    return value


@cache
def _environment() -> jinja2.Environment:
    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("onduty.report", "templates"),
        autoescape=True,
        finalize=_shown,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    templates.filters["age"] = lambda moment, later: age(later - moment)
    templates.filters["clock"] = clock
    templates.filters["stamp"] = stamp
    templates.filters["iso"] = iso
    return templates


@cache
def _style() -> str:
    console = (resources.files("onduty.api") / "static" / "console.css").read_text("utf-8")
    own = (resources.files("onduty.report") / "templates" / "report.css").read_text("utf-8")
    return f"{console}\n{own}"


def _offset(opened: datetime, moment: datetime) -> str:
    if moment < opened:
        return f"-{age(opened - moment)}"
    return f"+{age(moment - opened)}"


def render(report: Report) -> str:
    """The report as a page."""
    style = _style()
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    return (
        _environment()
        .get_template("report.html")
        .render(
            report=report,
            style=style,
            style_hash=f"sha256-{digest}",
            modes=[(MODE_WORD.get(mode, mode), tone) for mode, tone in MODE_TONE.items()],
            tones=OUTCOME_TONE,
            shown=shown,
            offset=_offset,
        )
    )


def render_run(result: Any = None, lab: Any = None, **options: Any) -> str:
    """A simulation run's page (`model.run_report`: the run, its Monte Carlo result, or both)."""
    return render(run_report(result, lab, **options))


def render_incidents(
    incidents: Sequence[IncidentTimeline], *, store: str | None = None, title: str | None = None
) -> str:
    """A post-incident report's page."""
    return render(incident_report(incidents, store=store, title=title))


def write_html(path: str | Path, result: Any = None, lab: Any = None, **options: Any) -> Path:
    """Write a simulation run's page to `path` (its folder is made); returns the path."""
    return _write(Path(path), render_run(result, lab, **options))


def write_report(path: str | Path, report: Report) -> Path:
    return _write(Path(path), render(report))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
