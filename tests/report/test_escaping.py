"""Untrusted text (labels, annotations, titles, reasons, outputs) stays text in both renderings:
a hostile label cannot add markup, a script, a link or an image to a report."""

from __future__ import annotations

import re
from typing import Any

from onduty.events import Event
from onduty.report import incident_timelines, run_report
from onduty.report import markdown as md
from onduty.report.html import render
from onduty.report.model import incident_report
from tests.report.conftest import DemoRun

HOSTILE = (
    "<script>window.pwned=1</script><img src=http://evil.example/x.png onerror=alert(2)>"
    "](javascript:alert(3)) ![i](http://evil.example/i.png) | `tick` *em* _u_ &amp; "
    "\x1b[2J\u202e"
)
FENCE_BREAK = "line one\n```\n<script>alert(4)</script>\n````\n"
UNESCAPED = re.compile(r"(?<!\\)(?:<[a-z/]|\]\(|!\[)", re.IGNORECASE)
"""What starts an HTML tag, a link's target or an image, not preceded by a backslash."""
FENCED = re.compile(r"^( *)(`{3,})text\n.*?^\1\2$", re.MULTILINE | re.DOTALL)


def prose(text: str) -> str:
    """Markdown without its fenced blocks (where text is shown as it is, never rendered)."""
    return FENCED.sub("", text)


def hostile(events: list[Event]) -> list[Event]:
    """The demo's events with hostile text in every field a report shows."""
    changed = []
    for event in events:
        data: dict[str, Any] = dict(event.data)
        if event.type == "SignalReceived":
            data["labels"] = {**data.get("labels", {}), "team": HOSTILE, HOSTILE: "x"}
            data["annotations"] = {**data.get("annotations", {}), "summary": HOSTILE}
        elif event.type == "IncidentOpened":
            data["title"] = HOSTILE
        elif event.type == "PolicyEvaluated":
            data["reason"] = HOSTILE
            data["rules"] = [{**rule, "reason": HOSTILE} for rule in data["rules"]]
        elif event.type == "ActionSucceeded":
            data["output"] = FENCE_BREAK + HOSTILE
        elif event.type in ("Escalated", "IncidentResolved"):
            data["reason"] = HOSTILE
        changed.append(event.model_copy(update={"data": data}))
    return changed


def test_html_escapes_every_piece_of_untrusted_text(demo: DemoRun) -> None:
    timelines = incident_timelines(hostile(demo.events))
    page = render(incident_report(timelines))
    assert "<script" not in page and "<img" not in page and "javascript:alert" in page
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page
    assert "&lt;img src=http://evil.example/x.png" in page
    assert "\x1b" not in page and "\u202e" not in page  # made visible, not hidden
    assert "href=" not in page and "src=" not in page.replace("&lt;img src=", "")


def test_markdown_escapes_every_piece_of_untrusted_text(demo: DemoRun) -> None:
    text = md.render(incident_report(incident_timelines(hostile(demo.events))))
    assert UNESCAPED.findall(prose(text)) == []
    assert "\\](javascript:alert(3))" in text and "!\\[i\\]" in text
    assert "\\`tick\\` \\*em\\* \\_u\\_ &amp;amp;" in text
    assert "\x1b" not in text and "\u202e" not in text and "\\\\x1b\\[2J\\\\u202e" in text
    # the output's fence is longer than any run of backticks in it: it cannot be closed early
    assert "  `````text\n  line one\n  ```\n  <script>alert(4)</script>\n  ````\n" in text
    for row in (line for line in text.splitlines() if line.startswith("| ")):
        assert row.count(" | ") == len(re.findall(r"(?<!\\)\|", row)) - 2  # cells unsplit


def test_a_run_report_escapes_the_truth_and_the_lab_too(demo: DemoRun) -> None:
    faults = [{"id": HOSTILE, "kind": "k", "target": HOSTILE, "service": "s",
               "injected_at": "2026-01-05T09:00:00+00:00", "cleared_at": None,
               "cleared_by": None, "cause": HOSTILE, "right_fix": HOSTILE}]  # fmt: skip
    lab = {"runs": 2, HOSTILE: HOSTILE, "metrics": {HOSTILE: {HOSTILE: [1.0, 2.0]}}}
    report = run_report({"scenario": HOSTILE}, lab, events=[], faults=faults)
    page, text = render(report), md.render(report)
    assert "<script" not in page and "<img" not in page
    assert UNESCAPED.findall(prose(text)) == []
