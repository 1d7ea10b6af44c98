"""The advisor benchmark: the advisor agent's advice beside the runbook agent's and the learning
agent's choices, on the same incidents, against the truth of the simulated faults.

Each seed of a scenario runs with the advisor consulted on every incident in shadow (its advice
noted on the incident's timeline, never proposed) and the learning agent, when the config runs
it, in shadow too: the runbook order decides, so a seed runs as it would without them, and every
agent's opinion of the same incident is on record. For every incident a fault is behind (as the
scorecard attributes incidents to faults), each agent's first choice is judged against the
faults' fixes (`FaultRecord.right_fix`):

* right: the fix of a fault behind the incident; or no proposal where no action fixes any of
  them (escalation is the right response);
* wrong: an action on a target those faults touch that fixes none of them, or any action where
  no action fixes them;
* harmful: an action on a target none of them touches;
* none: no proposal where an action would have fixed the fault.

The runbook agent's choice is its first proposal for the incident; the learning agent's is the
action it ranked first where that differed from the runbook order (`ModelShadowDiverged`), else
the runbook agent's; the advisor's is its answer to the first consultation for the incident,
judged again (`think/advisor.judge`) against the request as the core judged it. An answer the
core discards, a consultation that failed (timeout, unreachable server...) and an incident the
advisor was not consulted on (its budget spent, no runbook's target renders) are no answer.

Seeds run one after another by default: a model served on one machine answers one request at a
time, and the answers are asked for in real time while the scenario runs in virtual time.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from onduty.config import Config, parse_config
from onduty.events import AdviceRequested, Event
from onduty.sim import lab
from onduty.sim.faults import FaultRecord
from onduty.sim.scenario import Scenario
from onduty.sim.scorecard import Scorecard, quantile
from onduty.think.advisor import judge
from onduty.think.runbooks import RunbookAgent

if TYPE_CHECKING:
    from rich.console import Console

    from onduty.sim.driver import RunResult, SimilarFor

Verdict = Literal["right", "wrong", "harmful", "none"]
VERDICTS: tuple[Verdict, ...] = ("right", "wrong", "harmful", "none")
Agent = Literal["runbook", "learning", "advisor"]
AGENTS: tuple[Agent, ...] = ("runbook", "learning", "advisor")
AdviceStatus = Literal["answered", "discarded", "failed", "unanswered", "not consulted"]

RUNBOOK = RunbookAgent.name
LABELS: dict[Agent, str] = {
    "runbook": "runbook agent",
    "learning": "learning agent",
    "advisor": "advisor",
}

Progress = Callable[[int, int, int], None]
"""Called with (runs done, runs in all, advisor answers and failures so far)."""


@dataclass(frozen=True)
class Choice:
    """An agent's choice for an incident: a runbook's action on a target."""

    action: str
    target: str
    runbook: str

    def __str__(self) -> str:
        return f"{self.action} {self.target}"


@dataclass(frozen=True)
class Judged:
    """One agent's first choice for an incident (None: it proposed nothing) and its verdict
    (None: the advisor gave no answer; `status` says why)."""

    choice: Choice | None
    verdict: Verdict | None
    status: str = "proposed"
    detail: str = ""
    """The advisor's rationale, or why it gave no answer."""


@dataclass(frozen=True)
class Truth:
    """A fault behind an incident, as the benchmark judges by it."""

    fault_id: str
    kind: str
    target: str
    right_fix: str | None


@dataclass(frozen=True)
class IncidentVerdicts:
    """One incident a fault is behind, and each agent's first choice for it, judged."""

    seed: int
    incident_id: str
    opened_s: float
    """Seconds from the start of the scenario."""
    alert: str
    faults: tuple[Truth, ...]
    runbook: Judged
    advisor: Judged
    learning: Judged | None = None
    """None while the config does not run the learning agent."""
    runbook_command: str | None = None
    """The command id of the runbook agent's first proposal."""
    first_of_fault: bool = False
    """The first incident of one of its faults (a fault that alerts again, after a restart
    that only relieved it, opens more)."""

    def judged(self, agent: Agent) -> Judged | None:
        if agent == "runbook":
            return self.runbook
        return self.learning if agent == "learning" else self.advisor

    @property
    def kinds(self) -> str:
        return " + ".join(sorted({truth.kind for truth in self.faults}))


@dataclass(frozen=True)
class AdvisedRun:
    """One seed: its incidents' verdicts and what became of each consultation (plain data, to
    cross the process boundary)."""

    seed: int
    incidents: tuple[IncidentVerdicts, ...]
    unattributed: int
    """Incidents no fault is behind (false alarms): not judged."""
    consultations: int
    answered: int
    """Answers the core accepted (a choice, or none on purpose)."""
    abstained: int
    """Of those, answers proposing nothing."""
    discarded: int
    failed: tuple[tuple[str, int], ...]
    """Consultations with no answer, by problem (timeout, unreachable, refused, malformed)."""
    not_consulted: int
    """Incidents planned without consulting the advisor (its budget spent, no choice)."""
    latencies_ms: tuple[float, ...]
    """Of every answer received, valid or not."""
    models: tuple[str, ...]
    first_problem: str = ""
    """The first failure or discard, in words: what to look at when nothing is answered."""
    events: int = 0
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class AgentFigures:
    """One agent's verdicts over every judged incident."""

    agent: str
    incidents: int
    right: int
    wrong: int
    harmful: int
    none: int
    no_answer: int

    @property
    def answered(self) -> int:
        return self.incidents - self.no_answer

    @property
    def right_rate(self) -> float | None:
        """Right over every judged incident (no answer counts as not right)."""
        return self.right / self.incidents if self.incidents else None

    @property
    def right_of_answered(self) -> float | None:
        return self.right / self.answered if self.answered else None

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "right_rate": self.right_rate,
            "right_of_answered": self.right_of_answered,
        }


def figures(agent: Agent, incidents: Iterable[IncidentVerdicts]) -> AgentFigures:
    verdicts = [judged for incident in incidents if (judged := incident.judged(agent))]
    counted = {verdict: sum(1 for j in verdicts if j.verdict == verdict) for verdict in VERDICTS}
    return AgentFigures(
        agent=agent,
        incidents=len(verdicts),
        no_answer=sum(1 for j in verdicts if j.verdict is None),
        **counted,
    )


@dataclass
class AdviceLab:
    """Every seed's verdicts, and the figures over them."""

    scenario: str
    config: str
    base_url: str
    model: str
    seeds: list[int]
    runs: list[AdvisedRun]
    jobs: int
    learning: bool
    elapsed_s: float = 0.0
    first: RunResult | None = field(default=None, repr=False)
    """The first seed's run, kept for the HTML report (with `first_events`)."""
    first_events: list[Event] = field(default_factory=list, repr=False)

    @property
    def incidents(self) -> list[IncidentVerdicts]:
        return [incident for run in self.runs for incident in run.incidents]

    @property
    def agents(self) -> tuple[Agent, ...]:
        return AGENTS if self.learning else ("runbook", "advisor")

    def figures(
        self, agent: Agent, kinds: str | None = None, *, first_of_fault: bool = False
    ) -> AgentFigures:
        """Over every judged incident, or those of one kind of fault, or only each fault's
        first incident."""
        return figures(
            agent,
            (
                incident
                for incident in self.incidents
                if (kinds is None or incident.kinds == kinds)
                and (incident.first_of_fault or not first_of_fault)
            ),
        )

    def kinds(self) -> list[str]:
        return sorted({incident.kinds for incident in self.incidents})

    def consultations(self) -> dict[str, Any]:
        failed: dict[str, int] = {}
        for run in self.runs:
            for problem, count in run.failed:
                failed[problem] = failed.get(problem, 0) + count
        latencies = [value for run in self.runs for value in run.latencies_ms]
        return {
            "consultations": sum(run.consultations for run in self.runs),
            "answered": sum(run.answered for run in self.runs),
            "abstained": sum(run.abstained for run in self.runs),
            "discarded": sum(run.discarded for run in self.runs),
            "failed": dict(sorted(failed.items())),
            "not_consulted": sum(run.not_consulted for run in self.runs),
            "latency_ms": {
                "answers": len(latencies),
                "median": statistics.median(latencies) if latencies else None,
                "p90": quantile(latencies, 0.9),
                "max": max(latencies, default=None),
            },
            "models": sorted({model for run in self.runs for model in run.models}),
            "first_problem": next(
                (run.first_problem for run in self.runs if run.first_problem), ""
            ),
        }

    def disagreements(self) -> dict[str, int]:
        """Where the advisor answered otherwise than the runbook agent chose (another action
        or target; the runbook that names it does not matter): how often, and how often each
        was right there."""

        def acts(choice: Choice | None) -> str | None:
            return None if choice is None else str(choice)

        differ = [
            incident
            for incident in self.incidents
            if incident.advisor.verdict is not None
            and acts(incident.advisor.choice) != acts(incident.runbook.choice)
        ]
        return {
            "incidents": len(differ),
            "advisor_right": sum(1 for i in differ if i.advisor.verdict == "right"),
            "runbook_right": sum(1 for i in differ if i.runbook.verdict == "right"),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "config": self.config,
            "endpoint": {"base_url": self.base_url, "model": self.model},
            "seeds": self.seeds,
            "processes": self.jobs,
            "elapsed_s": round(self.elapsed_s, 1),
            "agents": {agent: self.figures(agent).to_dict() for agent in self.agents},
            "agents_first_incident": {
                agent: self.figures(agent, first_of_fault=True).to_dict() for agent in self.agents
            },
            "by_fault_kind": {
                kinds: {agent: self.figures(agent, kinds).to_dict() for agent in self.agents}
                for kinds in self.kinds()
            },
            "advisor": self.consultations(),
            "disagreements": self.disagreements(),
            "unattributed_incidents": sum(run.unattributed for run in self.runs),
            "incidents": [asdict(incident) for incident in self.incidents],
        }

    @property
    def answered(self) -> bool:
        return any(run.answered or run.discarded for run in self.runs)


# ---------------------------------------------------------------------------- the setup


@dataclass(frozen=True)
class EndpointOverride:
    """What the command line says of the advisor's endpoint, over the config's."""

    base_url: str | None = None
    model: str | None = None
    response_format: str | None = None

    def settings(self) -> dict[str, str]:
        return {
            name: value
            for name, value in (
                ("base_url", self.base_url),
                ("model", self.model),
                ("response_format", self.response_format),
            )
            if value is not None
        }


def advising(config: Config, endpoint_override: EndpointOverride | None = None) -> Config:
    """`config` with the advisor consulted on every incident in shadow (at the endpoint the
    command line says, over the config's) and the learning agent, if it runs, in shadow: the
    runbook order decides, the other agents' opinions are recorded."""
    document = config.model_dump(mode="json", by_alias=True, exclude_unset=True)
    advisor = dict(document.get("advisor", {}))
    endpoint = dict(advisor.get("endpoint", {}))
    if endpoint_override is not None:
        endpoint.update(endpoint_override.settings())
    document["advisor"] = {**advisor, "agent": "shadow", "consult": "always", "endpoint": endpoint}
    if config.learning.agent != "off":
        document["learning"] = {**document.get("learning", {}), "agent": "shadow"}
    return parse_config(document, "--advise (the advisor and the learning agent in shadow)")


@lru_cache(maxsize=8)
def setup(
    scenario_ref: str, config_path: str | None, endpoint: EndpointOverride
) -> tuple[Scenario, Config, bool]:
    """The scenario, its config as `advising` makes it, and whether the learning agent runs;
    once per process (a pool's workers inherit it)."""
    scenario, config = lab.load_setup(scenario_ref, config_path)
    return (
        scenario,
        advising(config, endpoint),
        config.learning.agent != "off",
    )


# ---------------------------------------------------------------------------- judging a run


def _touches(fault: FaultRecord, target: str, service_of: dict[str, str]) -> bool:
    """Whether the fault touches `target`: its own target or service, where its alerts come
    from, or (a fault of a service or a region) an instance of a service it touches."""
    if not target:
        return False
    if target in (fault.target, fault.service) or target in fault.signals_from:
        return True
    if fault.scope == "instance":
        return False
    service = service_of.get(target)
    return service is not None and (service == fault.service or service in fault.signals_from)


def verdict_on(
    choice: Choice | None, faults: Sequence[FaultRecord], service_of: dict[str, str]
) -> Verdict:
    """The verdict on a choice for an incident these faults are behind (see the module)."""
    fixes = {fault.right_fix for fault in faults if fault.right_fix}
    if choice is None:
        return "none" if fixes else "right"
    if str(choice) in fixes:
        return "right"
    if any(_touches(fault, choice.target, service_of) for fault in faults):
        return "wrong"
    return "harmful"


@dataclass
class _Consultation:
    request: AdviceRequested
    status: AdviceStatus = "unanswered"
    choice: Choice | None = None
    detail: str = ""


def judge_run(
    seed: int,
    events: Sequence[Event],
    card: Scorecard,
    config: Config,
    *,
    learning: bool,
    elapsed_s: float = 0.0,
) -> AdvisedRun:
    """Judge a run's log against its scorecard's faults (see the module)."""
    service_of = {name: s.name for s in config.services for name in s.instances}
    behind: dict[str, list[FaultRecord]] = {}
    for fault in card.faults:
        for incident_id in fault.incidents:
            behind.setdefault(incident_id, []).append(fault.record)
    start = card.start
    labels_of: dict[str, dict[str, str]] = {}
    opened: dict[str, tuple[float, str]] = {}
    proposed: dict[str, tuple[Choice, str]] = {}
    learned: dict[str, Choice] = {}
    diverged: dict[str, tuple[tuple[str, str], Choice]] = {}
    consulted: dict[str, _Consultation] = {}
    first_consultation: dict[str, str] = {}
    skipped: dict[str, str] = {}
    failed: dict[str, int] = {}
    latencies: list[float] = []
    models: set[str] = set()
    problems: list[str] = []
    answered = abstained = discarded = 0
    for event in events:
        data = event.data
        kind = event.type
        if kind == "SignalReceived":
            labels_of[data["fingerprint"]] = data.get("labels", {})
        elif kind == "IncidentOpened":
            at = (event.ts - start).total_seconds() if start else 0.0
            alert = labels_of.get(data["fingerprint"], {}).get("alertname", "")
            opened[data["incident_id"]] = (at, alert)
        elif kind == "ModelShadowDiverged":
            diverged[data["incident_id"]] = (
                (data["enforced_action"], data["enforced_target"]),
                Choice(data["model_action"], data["model_target"], ""),
            )
        elif kind == "ActionProposed" and data["agent"] == RUNBOOK:
            incident_id = data["incident_id"]
            if incident_id in proposed:
                continue
            choice = Choice(data["action"], data["target"], data["runbook"])
            proposed[incident_id] = (choice, data["command_id"])
            # the learning agent's view was recorded in the same decision, just before
            enforced, preferred = diverged.pop(incident_id, (("", ""), choice))
            learned[incident_id] = (
                preferred if enforced == (choice.action, choice.target) else choice
            )
        elif kind == "AdviceRequested":
            request = AdviceRequested.model_validate(data)
            consulted[request.request_id] = _Consultation(request)
            first_consultation.setdefault(request.incident_id, request.request_id)
        elif kind == "AdviceReceived":
            latencies.append(float(data.get("latency_ms", 0.0)))
            models.add(data["model"])
            found = consulted.get(data["request_id"])
            if found is None:
                continue
            judgement = judge(data["content"], found.request)
            if judgement.problem is not None:
                discarded += 1
                found.status, found.detail = "discarded", judgement.problem
                problems.append(f"an answer was discarded: {judgement.problem}")
                continue
            answered += 1
            abstained += judgement.choice is None
            found.status, found.detail = "answered", judgement.rationale
            if judgement.choice is not None:
                picked = judgement.choice
                found.choice = Choice(picked.action, picked.target, picked.name)
        elif kind == "AdviceFailed":
            failed[data["problem"]] = failed.get(data["problem"], 0) + 1
            found = consulted.get(data["request_id"])
            if found is not None:
                found.status, found.detail = "failed", f"{data['problem']}: {data['reason']}"
            problems.append(f"a consultation failed ({data['problem']}: {data['reason']})")
        elif kind == "IncidentUpdated" and data["change"] == "advice_skipped":
            skipped.setdefault(data["incident_id"], data.get("detail", ""))

    incidents = []
    for incident_id, faults in behind.items():
        at, alert = opened.get(incident_id, (0.0, ""))
        runbook, command = proposed.get(incident_id, (None, None))
        request_id = first_consultation.get(incident_id)
        advice = consulted[request_id] if request_id is not None else None
        if advice is None:
            advisor = Judged(None, None, "not consulted", skipped.get(incident_id, ""))
        elif advice.status == "answered":
            verdict = verdict_on(advice.choice, faults, service_of)
            advisor = Judged(advice.choice, verdict, "answered", advice.detail)
        else:
            advisor = Judged(None, None, advice.status, advice.detail)
        learner = learned.get(incident_id) if runbook is not None else None
        incidents.append(
            IncidentVerdicts(
                seed=seed,
                incident_id=incident_id,
                opened_s=at,
                alert=alert,
                faults=tuple(Truth(f.id, f.kind, f.target, f.right_fix) for f in faults),
                runbook=Judged(runbook, verdict_on(runbook, faults, service_of)),
                advisor=advisor,
                learning=(
                    Judged(learner, verdict_on(learner, faults, service_of)) if learning else None
                ),
                runbook_command=command,
            )
        )
    incidents.sort(key=lambda incident: (incident.opened_s, incident.incident_id))
    seen: set[str] = set()
    for index, incident in enumerate(incidents):
        ids = {truth.fault_id for truth in incident.faults}
        if ids - seen:
            incidents[index] = replace(incident, first_of_fault=True)
        seen |= ids
    planned_without_advice = {
        incident_id for incident_id in behind if incident_id not in first_consultation
    }
    return AdvisedRun(
        seed=seed,
        incidents=tuple(incidents),
        unattributed=sum(1 for incident_id in opened if incident_id not in behind),
        consultations=len(consulted),
        answered=answered,
        abstained=abstained,
        discarded=discarded,
        failed=tuple(sorted(failed.items())),
        not_consulted=len(planned_without_advice),
        latencies_ms=tuple(latencies),
        models=tuple(sorted(models)),
        first_problem=problems[0] if problems else "",
        events=len(events),
        elapsed_s=elapsed_s,
    )


# ---------------------------------------------------------------------------- running seeds


def run_advised(
    scenario: Scenario,
    config: Config,
    seed: int,
    *,
    learning: bool,
    similar: SimilarFor | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> tuple[AdvisedRun, RunResult, list[Event]]:
    """One seed of the scenario under `config` (already `advising`), in memory, judged."""
    from onduty.sim.driver import run_scenario

    began = time.perf_counter()
    events: list[Event] = []

    def keep(event: Event) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    result = run_scenario(
        scenario.model_copy(update={"seed": seed}), config, lab.MEMORY, on_event=keep,
        similar=similar,
    )  # fmt: skip
    judged = judge_run(
        seed,
        events,
        result.scorecard,
        config,
        learning=learning,
        elapsed_s=time.perf_counter() - began,
    )
    return judged, result, events


def _advise_seed(
    scenario_ref: str,
    config_path: str | None,
    endpoint: EndpointOverride,
    seed: int,
    similar: SimilarFor | None,
) -> AdvisedRun:
    """One seed in a worker process."""
    scenario, config, learning = setup(scenario_ref, config_path, endpoint)
    return run_advised(scenario, config, seed, learning=learning, similar=similar)[0]


def advise_lab(
    scenario_ref: str,
    config_path: str | Path | None,
    seeds: Sequence[int],
    *,
    jobs: int = 1,
    endpoint: EndpointOverride | None = None,
    similar: SimilarFor | None = None,
    progress: Progress | None = None,
) -> AdviceLab:
    """Every seed with the advisor (and the learning agent) in shadow, judged. The first seed
    runs in this process (its run is kept for a report), the rest one after another or, with
    `jobs` > 1, in that many processes."""
    began = time.perf_counter()
    path = str(config_path) if config_path is not None else None
    endpoint = endpoint or EndpointOverride()
    scenario, config, learning = setup(scenario_ref, path, endpoint)
    seeds = list(seeds)
    jobs = max(1, min(jobs, len(seeds) - 1, lab.default_jobs()))
    asked = 0

    def count(event: Event) -> None:
        nonlocal asked
        if event.type in ("AdviceReceived", "AdviceFailed"):
            asked += 1
            if progress is not None:
                progress(len(runs), len(seeds), asked)

    runs: list[AdvisedRun] = []
    first: RunResult | None = None
    first_events: list[Event] = []
    for seed in seeds if jobs <= 1 else seeds[:1]:
        judged, result, events = run_advised(
            scenario, config, seed, learning=learning, similar=similar, on_event=count
        )
        if first is None:
            first, first_events = result, events
        runs.append(judged)
        if progress is not None:
            progress(len(runs), len(seeds), asked)
    if jobs > 1 and len(seeds) > 1:
        runs += _in_processes(
            scenario_ref, path, endpoint, seeds[1:], jobs, similar, runs, progress
        )
    runs.sort(key=lambda run: run.seed)
    return AdviceLab(
        scenario=scenario_ref,
        config=path or "(the scenario's own)",
        base_url=config.advisor.endpoint.base_url,
        model=config.advisor.endpoint.model,
        seeds=seeds,
        runs=runs,
        jobs=jobs,
        learning=learning,
        elapsed_s=time.perf_counter() - began,
        first=first,
        first_events=first_events,
    )


def _in_processes(
    scenario_ref: str,
    path: str | None,
    endpoint: EndpointOverride,
    seeds: Sequence[int],
    jobs: int,
    similar: SimilarFor | None,
    done: list[AdvisedRun],
    progress: Progress | None,
) -> list[AdvisedRun]:
    total = len(done) + len(seeds)
    found: list[AdvisedRun] = []
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=lab._worker_start)
    try:
        futures = [
            pool.submit(_advise_seed, scenario_ref, path, endpoint, seed, similar) for seed in seeds
        ]
        for future in as_completed(futures):
            found.append(future.result())
            if progress is not None:
                asked = sum(
                    run.answered + run.discarded + sum(n for _, n in run.failed)
                    for run in (*done, *found)
                )
                progress(len(done) + len(found), total, asked)
    except BaseException:
        lab.stop_now(pool)
        raise
    pool.shutdown()
    return found


# ---------------------------------------------------------------------------- presentation


def _share(part: int, whole: int) -> str:
    return "-" if not whole else f"{part / whole:.0%}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}ms" if value < 1000 else f"{value / 1000:.1f}s"


def _figure_row(label: str, figures: AgentFigures) -> list[str]:
    return [
        label,
        str(figures.incidents),
        *(str(getattr(figures, verdict)) for verdict in VERDICTS),
        str(figures.no_answer),
        _share(figures.right, figures.incidents),
        _share(figures.right, figures.answered),
    ]


def render_advice(result: AdviceLab, console: Console) -> None:
    """Each agent's verdicts, then by fault kind, then what became of the consultations."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from onduty.textsafe import safe_text, visible

    seeds = result.seeds
    span = f"{seeds[0]}..{seeds[-1]}" if seeds else "-"
    judged = len(result.incidents)
    table = Table(
        title=Text(
            f"{visible(result.scenario)}: each agent's first choice on {judged} incidents with "
            f"a fault behind them, {len(seeds)} seeds ({span}); the runbook agent decided, the "
            "others in shadow"
        ),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
    )
    table.add_column("agent", no_wrap=True)
    headers = ("judged", *VERDICTS, "no\nanswer", "right\n(all)", "right of\nanswered")
    for column in headers:
        table.add_column(column, justify="right")
    for agent in result.agents:
        table.add_row(*_figure_row(LABELS[agent], result.figures(agent)))
    console.print(table)
    console.print()
    firsts = Table(
        title=Text(
            "the same, on each fault's first incident only (a fault alerting again counts once)"
        ),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
    )
    firsts.add_column("agent", no_wrap=True)
    for column in headers:
        firsts.add_column(column, justify="right")
    for agent in result.agents:
        firsts.add_row(*_figure_row(LABELS[agent], result.figures(agent, first_of_fault=True)))
    console.print(firsts)
    console.print(
        "right: the fix of the fault behind the incident, or no proposal where no action fixes "
        "it (escalation); wrong: on the fault's target but not its fix, or any action where "
        "none fixes it; harmful: on a target the fault does not touch; none: no proposal where "
        "an action fixes it; no answer: the advisor's answer was discarded, the consultation "
        "failed, or it was not consulted\n"
    )

    kinds = result.kinds()
    if len(kinds) > 1:
        by_kind = Table(
            title="right, by the kind of fault behind the incident",
            title_justify="left",
            box=box.SIMPLE_HEAD,
        )
        by_kind.add_column("fault")
        by_kind.add_column("incidents", justify="right")
        for agent in result.agents:
            by_kind.add_column(agent, justify="right")
        for kind in kinds:
            row = [result.figures(agent, kind) for agent in result.agents]
            by_kind.add_row(
                Text(kind),
                str(row[0].incidents),
                *(f"{f.right} ({_share(f.right, f.incidents)})" for f in row),
            )
        console.print(by_kind)

    asked = result.consultations()
    failures = ", ".join(f"{problem} {n}" for problem, n in asked["failed"].items())
    failed = sum(asked["failed"].values())
    console.print(
        Text(
            f"advisor: {asked['consultations']} consultations; {asked['answered']} answered "
            f"({asked['abstained']} proposing nothing), {asked['discarded']} discarded as "
            f"invalid, {failed} failed"
            + (f" ({failures})" if failures else "")
            + f"; {asked['not_consulted']} incidents with a fault behind them planned without "
            "consulting it"
        )
    )
    latency = asked["latency_ms"]
    console.print(
        Text(
            f"answer latency: median {_ms(latency['median'])}, p90 {_ms(latency['p90'])}, max "
            f"{_ms(latency['max'])} over {latency['answers']} answers"
        )
    )
    differ = result.disagreements()
    if differ["incidents"]:
        console.print(
            Text(
                f"where the advisor answered otherwise than the runbook agent chose "
                f"({differ['incidents']} incidents): the advisor was right on "
                f"{differ['advisor_right']}, the runbook agent on {differ['runbook_right']}"
            )
        )
    unattributed = sum(run.unattributed for run in result.runs)
    if unattributed:
        console.print(f"incidents no fault was behind (not judged): {unattributed}")
    asked_of = f"endpoint: {result.model} at {result.base_url}"
    if asked["models"]:
        asked_of += f"; answered by {', '.join(asked['models'])}"
    console.print(safe_text(asked_of))
    if not result.answered and asked["first_problem"]:
        console.print(safe_text(f"no answer: {asked['first_problem']}", "bold red"))
    rate = len(result.runs) / result.elapsed_s if result.elapsed_s > 0 else 0.0
    console.print(
        f"{len(result.runs)} runs in {result.elapsed_s:.1f}s with {result.jobs} process(es) "
        f"({rate:.2f} runs/s)"
    )


def advise_command(
    scenario_ref: str,
    config_path: Path | None,
    *,
    runs: int,
    seed: int | None,
    jobs: int | None,
    endpoint: EndpointOverride,
    json_out: Path | None,
    report: Path | None,
    console: Console,
) -> int:
    """The body of `onduty sim --advise`: 0 when the advisor answered at least once, 1 when it
    never did (its endpoint is down, or nothing was asked)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from onduty.sim.world import World

    path = str(config_path) if config_path is not None else None
    scenario, config, _ = setup(scenario_ref, path, endpoint)
    first = scenario.seed if seed is None else seed
    seeds = list(range(first, first + runs))
    World(config, scenario.model_copy(update={"seed": first}))  # a scenario that cannot run
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("runs, {task.fields[asked]} consultations"),
        TimeElapsedColumn(),
    )
    # No refresh thread: a pool forks its workers while the bar is shown (as the lab's).
    with Progress(*columns, console=console, transient=True, auto_refresh=False) as bar:
        task = bar.add_task(scenario_ref, total=len(seeds), asked=0)

        def progress(done: int, total: int, asked: int) -> None:
            bar.update(task, completed=done, total=total, asked=asked)
            bar.refresh()

        result = advise_lab(
            scenario_ref,
            path,
            seeds,
            jobs=jobs or 1,
            endpoint=endpoint,
            progress=progress,
        )
    render_advice(result, console)
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False) + "\n")
        console.print(f"figures: {json_out}")
    if report is not None and result.first is not None:
        lab.write_report(report, result.first, None, console, result.first_events)
    return 0 if result.answered else 1


__all__ = [
    "AdviceLab",
    "AdvisedRun",
    "IncidentVerdicts",
    "advise_command",
    "advise_lab",
    "advising",
    "judge_run",
    "run_advised",
    "verdict_on",
]
