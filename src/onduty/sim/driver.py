"""Run a scenario: the real runtime and core against the simulated world, in virtual time.

The driver is the world's side of the loop: it advances the fleet, hands its alerts to the
runtime, lets a simulated on-call human answer approvals and pages, and scores the result. A run
interrupted at any point (even by SIGKILL) resumes from its log: the core is rebuilt from the
log, the world is re-simulated up to the last recorded moment with the actions the log says
took effect, and actions left in doubt are reconciled by command id, never run twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from onduty.act import ActuatorRegistry
from onduty.act.sim import SIM_ACTIONS, SimActuator
from onduty.config import Config
from onduty.consulting import ChatAdvisor, Consultant, SimilarFinder, consultant_for
from onduty.events import Event, Signal, SignalReceived
from onduty.log import EventLog, StoreError, open_log
from onduty.log.memory import MemoryEventLog
from onduty.readmodel.similar import log_finder
from onduty.replay import describe
from onduty.runtime import RecoveryReport, Runtime, VirtualClock, counter_ids, run_virtual
from onduty.sense import IngestError, parse_alertmanager
from onduty.sim import lab
from onduty.sim.expectations import DURATION_METRICS, Watch
from onduty.sim.lab import ratio
from onduty.sim.oncall import HumanFix, OnCall
from onduty.sim.scenario import Scenario
from onduty.sim.scorecard import Scorecard, score
from onduty.sim.world import AppliedRecord, World
from onduty.textsafe import markup, safe_text, visible

IN_MEMORY = "memory"
"""The store of a run that keeps its log in memory only (the lab's runs)."""


SimilarFor = Callable[[EventLog], SimilarFinder]
"""Given a run's log, what finds an incident's similar past incidents in it for the advisor's
prompt (the run's own history is the past a simulated incident has)."""


class StoreMismatch(ValueError):
    """The store holds a different run than the one asked for."""


@dataclass
class RunResult:
    scenario: Scenario
    config: Config
    world: World
    scorecard: Scorecard
    recovery: RecoveryReport
    resumed: bool
    elapsed_s: float
    store: str
    notable: list[Event] = field(default_factory=list)


def _applied_actions(events: list[Event], humans: list[HumanFix]) -> list[AppliedRecord]:
    """Actions the log says reached the world: started, and with a recorded outcome."""
    params: dict[str, dict[str, Any]] = {}
    started: dict[str, Event] = {}
    finished: set[str] = set()
    for event in events:
        data = event.data
        if event.type == "ActionProposed":
            params[data["command_id"]] = data.get("params", {})
        elif event.type in ("ActionStarted", "UndoStarted"):
            started[data["command_id"]] = event
        elif event.type in ("ActionSucceeded", "ActionFailed", "UndoFinished"):
            finished.add(data["command_id"])
    applied: list[AppliedRecord] = [
        (event.ts, event.data["action"], event.data["target"], params.get(cid, {}), cid)
        for cid, event in started.items()
        if cid in finished
    ]
    applied += [(fix.at, fix.action, fix.target, {}, fix.command_id) for fix in humans]
    return sorted(applied, key=lambda record: record[0])


def _run_key(scenario: Scenario, config: Config) -> str:
    return json.dumps({"scenario": scenario.name, "seed": scenario.seed, "policy": config.version})


def remove_store(store: str) -> None:
    path = Path(store.removeprefix("sqlite:///"))
    for suffix in ("", "-wal", "-shm"):
        try:
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        except OSError as error:  # a folder, or no permission: say so, in one line
            reason = error.strerror or type(error).__name__
            raise StoreError(f"cannot start a fresh run in {path}{suffix}: {reason}") from None


def run_scenario(
    scenario: Scenario,
    config: Config,
    store: str,
    *,
    fresh: bool = True,
    pace: float = 0.0,
    on_event: Callable[[Event], None] | None = None,
    on_step: Callable[[datetime, World], None] | None = None,
    control_run: bool = False,
    similar: SimilarFor | None = None,
) -> RunResult:
    """Run (or resume) a scenario. `pace` > 0 spreads the simulated span over that many real
    seconds, so a person can follow the live view. A `control_run` is scored as one with no
    fault: every incident is a false alarm. While the config's advisor agent runs, its
    consultations go to the endpoint the config names, answered at once in virtual time, with
    the similar incidents `similar` finds in the run's log (by default the read model's, as
    `onduty serve` finds them)."""
    began = time.perf_counter()
    log: EventLog
    if store == IN_MEMORY:
        log = MemoryEventLog()
    else:
        if fresh:
            remove_store(store)
        log = open_log(store)
    consultant: Consultant | None = None
    try:
        consultant = consultant_for(
            config.advisor, similar=similar(log) if similar is not None else log_finder(log)
        )
        return _run(
            scenario, config, log, store, on_event, on_step, began, pace, control_run, consultant
        )
    finally:
        if isinstance(consultant, ChatAdvisor):
            consultant.close()
        log.close()


def _run(
    scenario: Scenario,
    config: Config,
    log: EventLog,
    store: str,
    on_event: Callable[[Event], None] | None,
    on_step: Callable[[datetime, World], None] | None,
    began: float,
    pace: float,
    control_run: bool,
    consultant: Consultant | None,
) -> RunResult:
    key = _run_key(scenario, config)
    head = log.head()[0]
    if head and log.get_meta("sim.run") != key:
        raise StoreMismatch(
            f"{store} holds another run ({log.get_meta('sim.run') or 'not a simulation'}); "
            "pass --fresh to start over, or use another --store"
        )
    log.set_meta("sim.run", key)
    history = list(log.read()) if head else []
    resumed = bool(history)
    on_call = OnCall(scenario, scenario.start_at, scenario.eval_interval)
    for event in history:
        on_call.feed(event)
    if resumed:
        until = history[-1].ts
        past_fixes = on_call.fixes_until(until)
        world = World.rebuild(config, scenario, _applied_actions(history, past_fixes), until)
    else:
        world = World(config, scenario)
        until = world.start
    clock = VirtualClock(until)

    def observe(event: Event) -> None:
        on_call.feed(event)
        if on_event is not None:
            on_event(event)

    actuators = ActuatorRegistry()
    sim_actuator = SimActuator(world, clock.now)
    for action in SIM_ACTIONS:
        actuators.register(action, sim_actuator)
    runtime, recovery = Runtime.open(
        log,
        clock,
        actuators,
        config=config,
        notifier=None,
        snapshot_every=config.snapshot_every,
        new_id=counter_ids("ev", head + 1),
        on_event=observe,
        consultant=consultant,
    )

    refused = 0
    # Held during the run: checked at every step (a resumed run checks from where it resumed).
    watch = Watch(scenario.steady_during())

    def step(moment: datetime) -> None:
        nonlocal refused
        for signal in world.advance(moment):
            runtime.submit(
                SignalReceived(**signal.model_dump()), stream=f"signal:{signal.fingerprint}"
            )
        for delivered in _through_the_webhook(world, moment):
            if delivered is None:
                refused += 1
            else:
                runtime.submit(
                    SignalReceived(**delivered.model_dump()),
                    stream=f"signal:{delivered.fingerprint}",
                )
        answers, fixes = on_call.due(moment)
        for item in answers:  # each through the answer desk, as the log stands when given
            given = on_call.give(item)
            if given is not None:
                runtime.submit(given.body, stream=given.stream, actor=given.actor)
        for fix in fixes:
            world.apply(fix.action, fix.target, {}, fix.command_id, moment)
        if watch.expectations:
            watch.observe(world.steady_metrics(), moment)
        if pace > 0:
            share = (moment - world.start) / (world.end - world.start)
            behind = began + share * pace - time.perf_counter()
            if behind > 0:
                time.sleep(behind)
        if on_step is not None:
            on_step(moment, world)

    run_virtual(runtime, clock, world.end, _steps(world, until), step)
    runtime.snapshot_now()
    card = score(
        log.read(),
        world.faults,
        world.actions,
        scenario,
        config=config,
        slo_minutes_lost=world.slo_minutes_lost(),
        refused_signals=refused,
        firing_alerts=len(world.firing()),
        control_run=control_run,
        steady_before=world.steady_before(),
        steady_after=world.steady_metrics(),
        steady_during=watch.checks(),
    )
    return RunResult(
        scenario=scenario,
        config=config,
        world=world,
        scorecard=card,
        recovery=recovery,
        resumed=resumed,
        elapsed_s=time.perf_counter() - began,
        store=store,
    )


def _through_the_webhook(world: World, moment: datetime) -> Iterator[Signal | None]:
    """The deliveries a signal fault made malformed, through the real Alertmanager webhook
    parser: each signal it accepts, or None for a delivery it refuses."""
    for payload in world.take_malformed():
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            yield from parse_alertmanager(body, received_at=moment)
        except IngestError:
            yield None


def _steps(world: World, after: datetime) -> Iterator[datetime]:
    moment = world.start
    while moment <= world.end:
        if moment > after or (moment == world.start and after == world.start):
            yield moment
        moment += world.eval_interval


# ---------------------------------------------------------------------------- presentation

NOTABLE = {
    "IncidentOpened": "red",
    "ActionStarted": "cyan",
    "PolicyEvaluated": "yellow",
    "ApprovalRequested": "magenta",
    "ApprovalGranted": "magenta",
    "VerificationPassed": "green",
    "VerificationFailed": "red",
    "Escalated": "bold red",
    "IncidentResolved": "green",
}


class LiveView:
    """A live panel: virtual time, counters, and the latest notable events."""

    def __init__(self, console: Console, world_start: datetime, world_end: datetime) -> None:
        self._console = console
        self._start, self._end = world_start, world_end
        self._recent: list[Event] = []
        self._counts: dict[str, int] = {}
        self._progress = Progress(
            TextColumn("[bold]simulated time[/] {task.description}"),
            BarColumn(bar_width=40),
            TextColumn("{task.percentage:>3.0f}%"),
            console=console,
        )
        span = (world_end - world_start).total_seconds()
        self._task = self._progress.add_task("", total=span)
        self._live = Live(self._render(), console=console, refresh_per_second=10, transient=False)
        self._last_draw = 0.0

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.update(self._render())
        self._live.__exit__(None, None, None)

    def on_event(self, event: Event) -> None:
        self._counts[event.type] = self._counts.get(event.type, 0) + 1
        if event.type == "PolicyEvaluated" and event.data.get("verdict") == "allow":
            return
        if event.type in NOTABLE:
            self._recent = [*self._recent[-11:], event]

    def on_step(self, moment: datetime, world: World) -> None:
        self._progress.update(
            self._task,
            completed=(moment - self._start).total_seconds(),
            description=moment.strftime("%H:%M"),
        )
        now = time.perf_counter()
        if now - self._last_draw > 0.05:
            self._last_draw = now
            self._live.update(self._render())

    def _render(self) -> Group:
        counts = self._counts
        summary = Text.assemble(
            ("signals ", "dim"), str(counts.get("SignalReceived", 0)),
            ("   incidents ", "dim"), str(counts.get("IncidentOpened", 0)),
            ("   actions ", "dim"), str(counts.get("ActionStarted", 0)),
            ("   escalations ", "dim"), str(counts.get("Escalated", 0)),
            ("   events ", "dim"), str(sum(counts.values())),
        )  # fmt: skip
        feed = Table.grid(padding=(0, 1))
        for event in self._recent:
            feed.add_row(
                Text(event.ts.strftime("%H:%M:%S"), style="dim"),
                safe_text(event.type, style=NOTABLE[event.type]),
                Text(visible(describe(event).removeprefix(event.type).strip())[:90]),
            )
        return Group(self._progress, summary, feed)


def _fmt(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s"


# A scorecard row: its label, the metrics it shows (joined by " / "), and whether the ratio to
# people alone means something for it (a time, a count of what people would also do).
_ROWS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("faults injected", ("faults",), False),
    ("detected", ("detected",), True),
    ("auto-remediated", ("auto_remediated",), False),
    ("escalated to a human", ("escalated",), True),
    ("fixed by a human after escalation", ("human_fixed",), True),
    ("actions taken", ("actions_taken",), False),
    ("right actions (the fix of an active fault)", ("right_actions",), False),
    ("wrong actions (fixed nothing)", ("wrong_actions",), False),
    ("harmful actions (healthy target, or capacity taken down)", ("harmful_actions",), False),
    ("actions blocked by guardrails", ("guardrail_denials",), False),
    ("approvals requested / granted", ("approvals_requested", "approved"), False),
    ("approval wait, p90", ("approval_wait_p90",), False),
    ("actions approved by two people", ("two_person_approvals",), False),
    ("false actions (on a healthy target)", ("false_actions",), False),
    ("incidents in the no-fault control period", ("control_incidents",), False),
    ("time to detect, median / p90", ("mttd_median", "mttd_p90"), True),
    ("time to recover, median / p90", ("mttr_median", "mttr_p90"), True),
    ("time to recover, max", ("mttr_max",), True),
    ("longest wait for a human (fault to page)", ("escalated_within",), True),
    ("SLO minutes lost", ("slo_minutes_lost",), True),
    ("malformed deliveries refused", ("refused_signals",), False),
    ("events in the log", ("events",), False),
)


def _card_values(card: Scorecard) -> dict[str, float | None]:
    return {
        **card.metrics(),
        "actions_taken": card.actions_taken,
        "two_person_approvals": card.two_person_approvals,
        "events": card.events,
    }


def format_metric(metric: str, value: float | None) -> str:
    """A metric's value as a person reads it: durations as 4m30s, minutes and rates with one
    decimal, counts whole."""
    if value is None:
        return "-"
    if metric in DURATION_METRICS:
        return _fmt(timedelta(seconds=value))
    if metric in ("slo_minutes_lost", "false_action_rate") or value != int(value):
        return f"{value:.1f}"
    return str(int(value))


def format_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _render_signal_faults(card: Scorecard, console: Console) -> None:
    """The faults of the alerting pipeline: no outage to detect or recover from, only what they
    did to what onduty was told."""
    table = Table(
        title="faults in the signals (the fleet was fine)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("id", "kind", "target", "from", "to", "signals received", "refused"):
        table.add_column(column, no_wrap=column in ("id", "from", "to"), overflow="fold")
    for fault in card.signal_faults:
        record = fault.record
        table.add_row(
            safe_text(record.id),
            safe_text(record.kind),
            safe_text(record.target),
            record.injected_at.strftime("%H:%M"),
            record.cleared_at.strftime("%H:%M") if record.cleared_at else "-",
            str(fault.delivered),
            "?" if fault.refused is None else str(fault.refused),
        )
    console.print(table)


def render_scorecard(
    result: RunResult,
    console: Console,
    baseline: Scorecard | None = None,
    control: Scorecard | None = None,
) -> None:
    """The faults and the scorecard; with `baseline` (the same scenario and seed with people
    alone) beside it as ratios, and with `control` (no fault at all) its false actions."""
    card = result.scorecard
    console.print()
    faults = Table(title="faults", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    widest = max((len(visible(fault.record.id)) for fault in card.faults), default=2)
    for column in ("id", "kind", "target", "at", "detect", "outcome", "recover"):
        # an id is shown whole, ready to copy; other text folds rather than being cut
        faults.add_column(
            column,
            no_wrap=column != "outcome",
            overflow="fold",
            min_width=widest if column == "id" else None,
        )
    for fault in card.faults:
        record = fault.record
        handled = (
            " + ".join(
                label
                for label, flag in (
                    ("[green]fixed[/]", fault.remediated),
                    ("[yellow]escalated[/]", fault.escalated),
                    ("fixed by a human", fault.fixed_by_human),
                )
                if flag
            )
            or "-"
        )
        faults.add_row(
            safe_text(record.id),
            safe_text(record.kind),
            safe_text(record.target),
            record.injected_at.strftime("%H:%M"),
            f"+{_fmt(fault.time_to_detect)}" if fault.detected_at else "[red]no[/]",
            handled,
            f"+{_fmt(fault.time_to_recover)}" if record.cleared_at else "[red]not yet[/]",
        )
    console.print(faults)
    if card.signal_faults:
        _render_signal_faults(card, console)

    table = Table(
        title=Text(f"scorecard: {visible(result.scenario.name)}"),
        title_justify="left",
        show_header=baseline is not None,
        box=box.SIMPLE,
    )
    table.add_column("metric")
    table.add_column("onduty", justify="right")
    ours = _card_values(card)
    theirs = _card_values(baseline) if baseline is not None else None
    if theirs is not None:
        table.add_column("people alone", justify="right")
        table.add_column("ratio", justify="right")
    for label, metrics, comparable in _ROWS:
        row = [label, " / ".join(format_metric(m, ours.get(m)) for m in metrics)]
        if theirs is not None:
            row.append(" / ".join(format_metric(m, theirs.get(m)) for m in metrics))
            row.append(
                " / ".join(format_ratio(ratio(ours.get(m), theirs.get(m))) for m in metrics)
                if comparable
                else ""
            )
        table.add_row(*row)
    console.print(table)
    if baseline is not None:
        console.print(
            "  people alone: the same scenario and seed with every service at autonomy "
            "`observe` (onduty pages, the simulated people fix); ratio = onduty / people alone"
        )
    if control is not None:
        console.print(
            f"  control run (the same seed, no fault): {control.false_actions} false action(s), "
            f"{control.false_action_rate:.2f} per simulated hour; "
            f"{control.incidents} incident(s) opened"
        )
    if card.denied_by:
        blocked = ", ".join(f"{markup(rule)} ({n})" for rule, n in sorted(card.denied_by.items()))
        console.print(f"  actions blocked by: {blocked}\n")
    for expectation in card.expectations:
        mark = "[green]ok[/]" if expectation.ok else "[bold red]FAILED[/]"
        console.print(
            f"  expect {markup(expectation.name)} {markup(expectation.bound)}: "
            f"{_actual(expectation.name, expectation.actual)}  {mark}"
        )
    recovered = (
        f"; resumed from its log ({result.recovery.folded} events folded, "
        f"{len(result.recovery.in_doubt)} actions reconciled)"
        if result.resumed
        else ""
    )
    console.print(
        f"\n{result.scorecard.events} events in {markup(result.store)}, "
        f"{result.elapsed_s:.1f}s of real time{recovered}"
    )


def _actual(name: str, value: float | None) -> str:
    """What an expectation measured, in its metric's unit (durations as 2m30s)."""
    metric = name.rsplit(": ", 1)[-1].split(" ", 1)[0]
    if value is not None and metric in DURATION_METRICS:
        return format_metric(metric, value)
    if value is None:
        return "-"
    return str(int(value)) if value == int(value) else f"{value:g}"


def run_scenario_command(
    scenario_ref: str,
    config_path: Path | None,
    store: str,
    *,
    seed: int | None,
    fresh: bool,
    live: bool,
    console: Console,
    pace: float = 0.0,
    report: Path | None = None,
) -> int:
    """The body of `onduty demo` and `onduty sim`: 0 when every expectation holds, else 1.
    Beside the run, the same seed with people alone (the baseline) and with no fault (the
    control run), both in memory."""
    scenario, config = lab.load_setup(scenario_ref, str(config_path) if config_path else None)
    if seed is not None:
        scenario = scenario.model_copy(update={"seed": seed})
    World(config, scenario)  # validates fault targets against the config before anything runs
    if live:
        view = LiveView(console, scenario.start_at, scenario.start_at + scenario.duration)
        with view:
            result = run_scenario(
                scenario,
                config,
                store,
                fresh=fresh,
                pace=pace,
                on_event=view.on_event,
                on_step=view.on_step,
            )
    else:
        result = run_scenario(scenario, config, store, fresh=fresh, pace=pace)
    people_scenario, people_config = lab.people_alone(scenario, config)
    baseline = run_scenario(people_scenario, people_config, lab.MEMORY).scorecard
    control = run_scenario(
        lab.without_faults(scenario), config, lab.MEMORY, control_run=True
    ).scorecard
    render_scorecard(result, console, baseline, control)
    if result.scorecard.open_incidents:
        console.print(
            f"{result.scorecard.open_incidents} incident(s) still open at the end of the run"
        )
    if report is not None:
        curve = None
        if result.scorecard.learner_proposals:  # the learning agent ran: its curve, one seed
            series: lab.Series = [
                (
                    "with the policy",
                    "info",
                    [lab.summarize(result.scorecard, scenario.seed, "policy")],
                ),
                ("people alone", "warn", [lab.summarize(baseline, scenario.seed, "baseline")]),
            ]
            period = scenario.learning_period
            curve = lab.learning_curve(series, period.total_seconds() if period else None)
        lab.write_report(report, result, None, console, learning=curve)
    return 0 if result.scorecard.passed else 1
