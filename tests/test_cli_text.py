"""Text from outside is shown as it was sent, in every view of the command line and in the
server's log: never parsed as markup, never a raw control character, never a crash.

The views are functions that build Rich renderables; here they render into a string with the
console settings the command uses. Hypothesis feeds them arbitrary text, with markup brackets,
ANSI escapes, C0/C1 controls, bidi overrides and newlines mixed in. One end-to-end run reads a
store holding hostile alerts with the real `onduty` command."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rich.console import Console, RenderableType
from rich.text import Text

from onduty import logs
from onduty.act import ActuatorRegistry
from onduty.cli import base, talk
from onduty.cli import views as cli_views
from onduty.events import Event, IncidentOpened, SignalReceived, make_event
from onduty.log import open_log
from onduty.readmodel import IncidentProjection
from onduty.replay import Difference, describe
from onduty.runtime import Runtime, VirtualClock
from onduty.sim.driver import LiveView
from onduty.textsafe import in_markup, markup, visible
from tests import run_cli
from tests.core.helpers import Driver, config

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

# What an attacker (or a careless exporter) puts in an alert.
NASTY = [
    "[bold red]X[/]", "[/]", "[/bold]", "regex [/a-z]+ failed [/bold]", "[link=x]", "\\", "\\[b]",
    "\x1b", "\x1b[31m", "\x1b[2J", "\x1b]0;pwned\x07", "\x9b31m", "\x85", "\r", "\n", "\t",
    "\x00", "\x07", "\x08", "\x7f", "\u202e", "\u2066", "\u200b", "\ufeff", "\u2028",
    "\U000e0041", ":smile:", "é", "日本", "👨‍👩‍👧", "a\u0301",
]  # fmt: skip
hostile = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=3)), max_size=8).map("".join),
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Raw characters that must never reach a terminal from data: ESC and every other C0 control but
# the line break (tables and lines end with it), DEL, C1 controls, bidi and invisible formatting.
FORBIDDEN = {chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))} - {"\n"}
FORBIDDEN |= {"\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068"}
FORBIDDEN |= {"\u2069", "\u200e", "\u200f", "\u061c", "\u200b", "\ufeff", "\u2028", "\u2029"}


def console() -> Console:
    """A console set up as the command's own (`cli.base.out`), writing into a string, wide enough
    that no value is wrapped."""
    return Console(file=io.StringIO(), width=2000, highlight=False, emoji=False, color_system=None)


def render(*renderables: RenderableType) -> str:
    target = console()
    for renderable in renderables:
        target.print(renderable, soft_wrap=True)
    output = target.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def squeezed(text: str) -> str:
    return "".join(text.split())


def assert_shown(output: str, *values: str) -> None:
    """No raw control character reached the output, and each value is there, made visible."""
    raw = sorted({hex(ord(c)) for c in output if c in FORBIDDEN})
    assert not raw, f"raw control characters {raw} in {output!r}"
    for value in values:
        # a value printed as a table cell shows as `visible` says; one printed inside a markup
        # string as `in_markup` says (they differ only in a backslash before `[` or at the end)
        shown = {squeezed(visible(value)), squeezed(in_markup(value))}
        assert any(form in squeezed(output) for form in shown), (value, output)


# ----------------------------------------------------------------------------- the helper


@given(st.text())
@example("\ud800 lone surrogate")
@example("\x1b[31mred\x1b[0m \u202eevil\n\r")
def test_visible_leaves_no_control_and_keeps_the_rest(text: str) -> None:
    shown = visible(text)
    assert not any(c in FORBIDDEN for c in shown)
    shown.encode("utf-8")  # a lone surrogate would not even be printable
    assert all(c in shown for c in text if c.isprintable())  # what one sees is all there
    invisible = {"Cc", "Cf", "Cs", "Zl", "Zp"}
    allowed = {"\u200c", "\u200d"}  # joiners inside emoji and scripts
    assert not [c for c in shown if unicodedata.category(c) in invisible and c not in allowed]
    assert visible("\x1b[31m") == "\\x1b[31m"
    assert visible("a\nb") == "a\\nb" and visible("a\nb", single_line=False) == "a\nb"
    assert visible("\u202e") == "\\u202e"
    # inside a markup string, escaped data stays data, shown as `in_markup` says, in every place
    for template in ("[green]ok[/] {}", "[green]ok {}[/]", "{} [bold]x[/]", "{}"):
        output = render(template.format(markup(text)))
        raw = sorted({hex(ord(c)) for c in output if c in FORBIDDEN})
        assert not raw, f"raw control characters {raw} in {output!r}"
        expected = Text.from_markup(template.format("\x00")).plain.replace("\x00", in_markup(text))
        assert squeezed(output) == squeezed(expected), (text, output)


# ----------------------------------------------------------------------------- the views


def _hostile_log(summary: str, instance: str, alertname: str) -> list[Event]:
    """The decisions the core makes on a hostile alert (an incident, an action on its target)."""
    driver = Driver()
    labels = {"alertname": "InstanceDown", "instance": f"web-{instance}", "service": "web"}
    driver.feed(
        SignalReceived(
            source="test",
            fingerprint=f"fp:{instance}",
            status="firing",
            labels=labels,
            annotations={"summary": summary},
        )
    )
    driver.feed(
        SignalReceived(
            source=f"src {alertname}",
            fingerprint=f"fp2:{alertname}",
            status="firing",
            labels={"alertname": alertname, "service": alertname},
        )
    )
    return driver.log


@FAST
@given(summary=hostile, instance=hostile, alertname=hostile)
@example(summary="regex [/a-z]+ failed [/bold]", instance="[bold red]X[/]", alertname="\x1b[2J")
def test_incidents_and_events_tail_show_alert_text_as_sent(
    summary: str, instance: str, alertname: str
) -> None:
    log = _hostile_log(f"s{summary}", instance, alertname)
    views = IncidentProjection().feed_all(log).ordered()
    assert any(view.title == f"s{summary}" for view in views)
    output = render(cli_views.incidents_table(views))
    for view in views:
        assert_shown(output, view.incident_id, view.title, view.service or "-", *view.actions)
    lines = render(*(cli_views.event_line(event, describe) for event in log))
    assert_shown(lines, *(describe(event).removeprefix(event.type).strip() for event in log))
    assert len(lines.splitlines()) == len(log)  # one line per event, whatever the text holds


@FAST
@given(texts=st.lists(hostile, min_size=6, max_size=6))
@example(texts=["regex [/a-z]+ failed [/bold]", "[/]", "\x1b[31m", "\r\n", "\u202e", ":smile:"])
def test_approvals_silences_and_policy_status_show_server_text_as_sent(texts: list[str]) -> None:
    a, b, c, d, e, f = texts
    approvals = [{"id": "apr-1", "incident_id": a, "summary": b, "status": c, "expires_at": d}]
    assert_shown(render(cli_views.approvals_table(approvals)), a, b, c, d)
    silence = {
        "id": "sil-1", "kind": e, "matchers": [a, b], "ends_at": c,
        "created_by": d, "comment": f, "state": "active",
    }  # fmt: skip
    assert_shown(render(cli_views.silences_table([silence])), e, a, b, c, d, f)
    status = {
        "version": a,
        "source": b,
        "candidate": {"version": c, "mode": d, "selector": e},
    }
    assert_shown(render(*cli_views.policy_status_lines(status)), a, b, c, d, e)


@FAST
@given(texts=st.lists(hostile, min_size=3, max_size=3))
def test_replay_differences_show_decisions_as_sent(texts: list[str]) -> None:
    kind, recorded, replayed = texts
    difference = Difference(
        seq=7, input_type=kind, input_id="ev-7", recorded=(recorded, kind), replayed=(replayed,)
    )
    assert_shown(render(cli_views.differences_table([difference])), kind, recorded, replayed)


@FAST
@given(title=hostile)
def test_the_demo_live_view_shows_event_text_as_sent(title: str) -> None:
    target = console()
    opened = IncidentOpened(incident_id="inc-1", group_key={}, title=title, fingerprint="f")
    event = make_event(opened, id="e1", ts=T0, stream="inc-1")
    with LiveView(target, T0, T0 + timedelta(hours=1)) as view:
        view.on_event(event)
    output = target.file.getvalue()  # type: ignore[attr-defined]
    assert_shown(output, visible(describe(event).removeprefix(event.type).strip())[:80])


@FAST
@given(texts=st.lists(hostile, min_size=3, max_size=3))
@example(texts=["regex [/a-z]+ failed [/bold]", "[bold red]X[/]", "\x1b]0;t\x07"])
def test_printed_answers_and_problems_show_text_as_sent(texts: list[str]) -> None:
    approval_id, status, problem = texts
    with base.out.capture() as captured:
        talk.print_answer("approved", "green", approval_id, {"status": status})
    assert_shown(captured.get(), approval_id, status)
    with base.err.capture() as captured:
        base.problem_line(problem)
    assert_shown(captured.get(), " ".join(problem.split()))
    assert len(captured.get().splitlines()) == 1


# ----------------------------------------------------------------------------- log lines


def logged(log_format: str, source: str, problem: str, error: str) -> str:
    """What onduty's log handler writes for a warning and an error with a traceback, each
    carrying untrusted text."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("json" if log_format == "json" else "console"))
    logger = logging.getLogger("onduty.test-text")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("source %s: %s", source, problem, extra={"source": source})
        try:
            raise RuntimeError(error)
        except RuntimeError:
            logger.exception("delivery for %s failed", source)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


@FAST
@given(texts=st.lists(hostile, min_size=3, max_size=3))
@example(texts=["ok\n2026-01-05 INFO onduty: forged line", "\x1b[2J", "\u202eevil"])
def test_server_log_lines_show_untrusted_text_as_sent(texts: list[str]) -> None:
    source, problem, error = texts
    output = logged("console", source, problem, error)
    assert_shown(output, source, problem)
    first, second, *traceback = output.splitlines()
    assert " WARNING onduty.test-text: source " in first
    assert " ERROR onduty.test-text: delivery for " in second
    # the traceback is an indented block (a newline in the message cannot start a log line)
    assert traceback[0] == "    Traceback (most recent call last):"
    assert all(line.startswith("    ") for line in traceback)
    assert squeezed(visible(error, single_line=False)) in squeezed("".join(traceback))


@FAST
@given(texts=st.lists(hostile, min_size=3, max_size=3))
@example(texts=["ok\n2026-01-05 INFO onduty: forged line", "\x1b[2J", "\u202eevil"])
def test_json_log_lines_carry_untrusted_text_escaped_and_exact(texts: list[str]) -> None:
    source, problem, error = texts
    output = logged("json", source, problem, error)
    raw = sorted({hex(ord(c)) for c in output if c in FORBIDDEN})
    assert not raw, f"raw control characters {raw} in {output!r}"
    invisible = [c for c in output if unicodedata.category(c) in ("Cf", "Zl", "Zp", "Cs")]
    assert not set(invisible) - {"\u200c", "\u200d"}  # but the joiners `visible` keeps too
    warning, failure = (json.loads(line) for line in output.splitlines())  # one line each
    assert warning["level"] == "warning" and warning["logger"] == "onduty.test-text"
    assert warning["message"] == f"source {source}: {problem}" and warning["source"] == source
    assert failure["message"] == f"delivery for {source} failed"
    assert failure["exception"].startswith("Traceback (most recent call last):")
    assert error.rstrip("\n") in failure["exception"]


# ----------------------------------------------------------------------------- end to end

SUMMARY = "regex [/a-z]+ failed [/bold] \x1b[2J\x1b[31mred\u202eevil\rover :smile:\nsecond"


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    store = tmp_path_factory.mktemp("hostile") / "hostile.db"
    log = open_log(str(store))
    runtime, _ = Runtime.open(log, VirtualClock(T0), ActuatorRegistry(), config=config())
    labels = {"alertname": "InstanceDown", "instance": "web-1", "service": "web"}
    runtime.submit(
        SignalReceived(
            source="[bold]am\x1b[0m",
            fingerprint="fp-1",
            status="firing",
            labels=labels,
            annotations={"summary": SUMMARY},
        )
    )
    log.close()
    yield store


def onduty(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli.onduty(*args, columns=400, timeout=60)


@pytest.mark.parametrize(
    "command", [("incidents",), ("events", "tail", "-n", "50")], ids=["incidents", "tail"]
)
def test_the_command_shows_a_hostile_alert_as_sent(
    hostile_store: Path, command: tuple[str, ...]
) -> None:
    result = onduty(*command, "--store", str(hostile_store))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "MarkupError" not in result.stderr
    assert_shown(result.stdout, SUMMARY)
    assert "regex [/a-z]+ failed [/bold]" in result.stdout
    assert "\\x1b[2J" in result.stdout and "\\u202eevil" in result.stdout


def test_the_server_log_shows_a_hostile_source_as_sent(tmp_path: Path) -> None:
    from tests.integration.server import Server

    source = "ops\x1b[2J\x1b]0;owned\x07\u202eevil\n2026-01-05 00:00:00 INFO onduty: forged"
    with Server(tmp_path / "log.db") as server, server.client() as client:
        body = {"config": {}, "mode": "shadow", "source": source}
        assert client.post("/api/v1/policy/candidate", json=body).status_code == 202
        assert server.terminate() == 0
    output = server.output()
    raw = sorted({hex(ord(c)) for c in output if c in FORBIDDEN})
    assert not raw, f"raw control characters {raw} in the log"
    assert "\\u001b[2J\\u001b]0;owned\\u0007\\u202eevil\\n2026-01-05" in output
    lines = [json.loads(line) for line in output.splitlines()]  # every line is JSON
    (shadow,) = [line for line in lines if source in line["message"]]
    assert "shadow" in shadow["message"]


@FAST
@given(texts=st.lists(hostile, min_size=6, max_size=6))
def test_the_scorecard_shows_scenario_text_as_sent(texts: list[str]) -> None:
    from types import SimpleNamespace

    from onduty.sim.driver import render_scorecard
    from onduty.sim.scorecard import Expectation, FaultScore, Scorecard

    fault_id, kind, target, rule, name, store = texts
    record = SimpleNamespace(
        id=fault_id, kind=kind, target=target, injected_at=T0, cleared_at=None, cleared_by=None
    )
    card = Scorecard(
        faults=[FaultScore(record=record)],  # type: ignore[arg-type]
        actions_taken=0, guardrail_denials=1, approvals_requested=0, approved=0,
        wrong_actions=0, control_incidents=0, incidents=0, escalations=0, events=3,
        denied_by={rule: 1}, expectations=[Expectation(name, ">= 1", 0, False)],
    )  # fmt: skip
    result = SimpleNamespace(
        scorecard=card, scenario=SimpleNamespace(name=name), resumed=False, elapsed_s=0.5,
        store=store,
    )  # fmt: skip
    target_console = console()
    render_scorecard(result, target_console)  # type: ignore[arg-type]
    output = target_console.file.getvalue()  # type: ignore[attr-defined]
    assert_shown(output, fault_id, kind, target, rule, name, store)
