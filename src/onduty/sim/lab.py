"""The simulation lab: a scenario over many seeds, in parallel processes, as distributions.

Each run is one seed of one scenario in one *mode*:

* `policy`: the scenario as written, against the onduty config under test;
* `baseline`: the same scenario and seed with every service's autonomy forced to `observe`:
  onduty only records, every incident is paged to people, and the simulated people fix what
  they are handed with their response times: the team alone, as with Alertmanager and a pager;
* `control`: the same scenario and seed with no fault at all: any action is a false action,
  any incident a false alarm.

A run keeps its log in memory (the driver's `MemoryEventLog`) and returns a small picklable
`RunSummary`: the scorecard's metrics and the expectations' outcomes. `monte_carlo` runs seeds
S, S+1, ... in a process pool; `compare` runs the same seeds under two configs and gives the
paired differences with 95 % confidence intervals (t-based). Everything is a function of the
seeds: the same seeds give the same numbers, in parallel or not.
"""

from __future__ import annotations

import math
import os
import signal
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from onduty.config import Autonomy, Config, ConfigError, format_duration, parse_config
from onduty.sim.expectations import DURATION_METRICS, METRICS
from onduty.sim.scenario import Scenario
from onduty.sim.scorecard import (
    AUTONOMY_RULE,
    HIGHER_IS_BETTER,
    NEUTRAL,
    FaultOutcome,
    Metrics,
    Scorecard,
    quantile,
)
from onduty.sim.world import World

if TYPE_CHECKING:
    from rich.console import Console

    from onduty.events import Event
    from onduty.sim.driver import RunResult

Mode = Literal["policy", "baseline", "control"]
MODES: tuple[Mode, ...] = ("policy", "baseline", "control")
MEMORY = "memory"  # the driver keeps such a run's log in memory (MemoryEventLog)
CONFIDENCE = 0.95
CI_METHOD = "paired t-interval (95 %)"

Progress = Callable[[int, int], None]
"""Called with (runs done, runs in all) as runs finish."""


@dataclass(frozen=True)
class ExpectationOutcome:
    name: str
    bound: str
    actual: float | None
    ok: bool


@dataclass(frozen=True)
class RunSummary:
    """One run, as plain data: what crosses the process boundary."""

    seed: int
    mode: str
    metrics: Metrics
    expectations: tuple[ExpectationOutcome, ...] = ()
    events: int = 0
    elapsed_s: float = 0.0
    denied_by: tuple[tuple[str, int], ...] = ()
    """Guardrail denials by rule (the autonomy level included)."""
    faults: tuple[FaultOutcome, ...] = ()
    """Each fault in order of injection: what a learning curve is drawn from."""
    learner_proposals: int = 0

    @property
    def passed(self) -> bool:
        return all(e.ok for e in self.expectations)


@dataclass(frozen=True)
class Distribution:
    """One metric across runs (runs where it has no value, e.g. nothing recovered, are left
    out and counted in `missing`)."""

    n: int
    missing: int
    median: float | None
    p10: float | None
    p90: float | None
    max: float | None
    mean: float | None
    ci: tuple[float, float] | None
    """The 95 % confidence interval of the mean (t-based); None for fewer than two values."""

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Distribution:
        present = [v for v in values if v is not None]
        missing = len(values) - len(present)
        if not present:
            return cls(0, missing, None, None, None, None, None, None)
        mean = statistics.fmean(present)
        return cls(
            n=len(present),
            missing=missing,
            median=statistics.median(present),
            p10=quantile(present, 0.1),
            p90=quantile(present, 0.9),
            max=max(present),
            mean=mean,
            ci=mean_interval(present),
        )


@dataclass
class LabResult:
    """A Monte Carlo run: every summary, by mode, in seed order."""

    scenario: str
    config: str
    seeds: list[int]
    runs: dict[str, list[RunSummary]]
    jobs: int
    elapsed_s: float = 0.0
    learning_period: float | None = None
    """The scenario's `learning_period` in seconds (None: not set)."""

    def values(self, mode: str, metric: str) -> list[float | None]:
        return [run.metrics.get(metric) for run in self.runs.get(mode, [])]

    def distribution(self, mode: str, metric: str) -> Distribution:
        return Distribution.of(self.values(mode, metric))

    def distributions(self, mode: str) -> dict[str, Distribution]:
        return {metric: self.distribution(mode, metric) for metric in METRICS}

    def ratio(self, metric: str) -> float | None:
        """Mean under the policy over mean with people alone (None when undefined)."""
        return ratio(
            self.distribution("policy", metric).mean, self.distribution("baseline", metric).mean
        )

    def denials_by_rule(self, mode: str = "policy") -> dict[str, float]:
        """Per rule, the mean number of actions it denied per run."""
        runs = self.runs.get(mode, [])
        totals: dict[str, int] = {}
        for run in runs:
            for rule, count in run.denied_by:
                totals[rule] = totals.get(rule, 0) + count
        return {rule: total / len(runs) for rule, total in sorted(totals.items())}

    def failures(self) -> dict[str, tuple[int, int]]:
        """Per expectation (name and bound): (runs where it failed, runs that checked it), over
        the policy runs."""
        counted: dict[str, tuple[int, int]] = {}
        for run in self.runs.get("policy", []):
            for check in run.expectations:
                key = f"{check.name} {check.bound}"
                failed, total = counted.get(key, (0, 0))
                counted[key] = (failed + (not check.ok), total + 1)
        return counted

    @property
    def passed(self) -> bool:
        return all(failed == 0 for failed, _ in self.failures().values())

    def to_dict(self) -> dict[str, Any]:
        """Plain data: every metric's values by mode (`metrics`), the number of seeds (`runs`),
        a few facts, and the summaries the terminal shows."""
        seeds = f"{self.seeds[0]}..{self.seeds[-1]}" if self.seeds else ""
        return {
            "scenario": self.scenario,
            "config": self.config,
            "seeds": seeds,
            "runs": len(self.seeds),
            "processes": self.jobs,
            "elapsed_s": round(self.elapsed_s, 1),
            "baseline": "people alone: every service at autonomy observe",
            "metrics": {
                metric: {mode: self.values(mode, metric) for mode in self.runs}
                for metric in METRICS
            },
            "distributions": {
                mode: {
                    metric: vars(dist)
                    for metric, dist in self.distributions(mode).items()
                    if dist.n
                }
                for mode in self.runs
            },
            "ratios": {metric: self.ratio(metric) for metric in METRICS},
            "denied_by": {mode: self.denials_by_rule(mode) for mode in self.runs},
            "failures": {
                name: {"failed": failed, "runs": total}
                for name, (failed, total) in self.failures().items()
            },
        }


@dataclass(frozen=True)
class Difference:
    """A metric under config B minus the same seed's under config A, across seeds."""

    metric: str
    n: int
    mean_a: float | None
    mean_b: float | None
    mean: float | None
    ci: tuple[float, float] | None

    @property
    def significant(self) -> bool:
        """The 95 % interval excludes zero."""
        return self.ci is not None and (self.ci[0] > 0 or self.ci[1] < 0)

    @property
    def better(self) -> bool | None:
        """Whether B is better than A (None: no significant change)."""
        if not self.significant or self.mean is None or self.metric in NEUTRAL:
            return None
        return (self.mean > 0) == (self.metric in HIGHER_IS_BETTER)


@dataclass
class Comparison:
    """The same seeds under two configs: both labs and the paired differences (B - A)."""

    a: LabResult
    b: LabResult
    differences: list[Difference] = field(default_factory=list)
    method: str = CI_METHOD
    people: LabResult | None = None
    """The same seeds with people alone (A's config at autonomy observe), when asked for."""

    @property
    def worse(self) -> list[Difference]:
        return [d for d in self.differences if d.better is False]


# ---------------------------------------------------------------------------- statistics


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom: exact for 1 and 2, else
    the Cornish-Fisher expansion around the normal (error < 1e-3 from df 3 at p 0.975)."""
    if df < 1:
        raise ValueError("t needs at least one degree of freedom")
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = statistics.NormalDist().inv_cdf(p)
    v = float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4)
    )


def mean_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """The t-based 95 % confidence interval of the mean; None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean - half, mean + half


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


CONTROL_METRICS = ("false_actions", "false_action_rate", "control_incidents")
"""What the control runs (no fault) say about a policy."""


def paired_differences(
    a: LabResult, b: LabResult, mode: str = "policy", metrics: Sequence[str] = METRICS
) -> list[Difference]:
    """Per metric, B minus A seed by seed (seeds where either has no value are left out); the
    metrics of a mode other than `policy` are named `MODE: METRIC`."""
    by_seed_a = {run.seed: run for run in a.runs.get(mode, [])}
    found: list[Difference] = []
    for metric in metrics:
        label = metric if mode == "policy" else f"{mode}: {metric}"
        pairs = [
            (va, vb)
            for run in b.runs.get(mode, [])
            if run.seed in by_seed_a
            and (va := by_seed_a[run.seed].metrics.get(metric)) is not None
            and (vb := run.metrics.get(metric)) is not None
        ]
        if not pairs:
            found.append(Difference(label, 0, None, None, None, None))
            continue
        diffs = [vb - va for va, vb in pairs]
        found.append(
            Difference(
                label,
                len(pairs),
                statistics.fmean(va for va, _ in pairs),
                statistics.fmean(vb for _, vb in pairs),
                statistics.fmean(diffs),
                mean_interval(diffs),
            )
        )
    return found


# ---------------------------------------------------------------------------- one run


def observe_only(config: Config) -> Config:
    """The config with every service at autonomy `observe` and no advisor agent: onduty records
    and pages, people do the rest (no language model is asked for advice nobody may follow)."""
    document = config.model_dump(mode="json", by_alias=True, exclude_unset=True)
    document["services"] = [
        {**service, "autonomy": Autonomy.OBSERVE.name.lower()} for service in document["services"]
    ]
    if config.advisor.enabled:
        document["advisor"] = {**document["advisor"], "agent": "off"}
    return parse_config(document, "baseline (every service at observe)")


def load_setup(scenario_ref: str, config_path: str | None) -> tuple[Scenario, Config]:
    """The scenario and the config it runs against: `config_path`, else the scenario's own
    (`config:`, relative to the scenario file, or a built-in name), else the built-in config
    of a built-in scenario; with the scenario's fleet applied."""
    from onduty.configfile import load_config
    from onduty.sim.scenario import load_builtin_config, load_scenario

    scenario = load_scenario(scenario_ref)
    own = scenario.config
    if config_path is not None:
        config = load_config(Path(config_path))
    elif own:
        config = _scenario_config(scenario_ref, own)
    else:
        try:
            config = load_builtin_config(scenario.name)
        except ConfigError:
            raise ConfigError(
                scenario_ref,
                [f"no built-in config for scenario {scenario.name!r}: pass -c FILE"],
            ) from None
    return scenario, scenario.apply_fleet(config)


def _scenario_config(scenario_ref: str, ref: str) -> Config:
    from onduty.configfile import load_config
    from onduty.sim.scenario import builtin_scenarios, load_builtin_config

    base = Path(scenario_ref).parent
    if (base / ref).is_file():
        return load_config(base / ref)
    name = ref.removesuffix(".yaml").removesuffix("-config")
    if name in builtin_scenarios():
        return load_builtin_config(name)
    raise ConfigError(scenario_ref, [f"config: no file {ref!r} next to the scenario"])


@lru_cache(maxsize=8)
def setup(scenario_ref: str, config_path: str | None) -> tuple[Scenario, Config]:
    """`load_setup`, once per process: the workers of a pool inherit it."""
    return load_setup(scenario_ref, config_path)


def people_alone(scenario: Scenario, config: Config) -> tuple[Scenario, Config]:
    """The baseline: every service at autonomy `observe` (in the config and in the scenario's
    fleet, which may set its own), so onduty records and pages and people do the rest."""
    fleet = scenario.fleet
    if fleet is not None:
        services = [s.model_copy(update={"autonomy": Autonomy.OBSERVE}) for s in fleet.services]
        scenario = scenario.model_copy(
            update={"fleet": fleet.model_copy(update={"services": services})}
        )
    return scenario, observe_only(config)


@lru_cache(maxsize=8)
def _baseline(scenario_ref: str, config_path: str | None) -> tuple[Scenario, Config]:
    return people_alone(*setup(scenario_ref, config_path))


def without_faults(scenario: Scenario) -> Scenario:
    """The scenario with no fault at all (fixed or drawn), for a control run."""
    return scenario.model_copy(update={"faults": [], "control": []})


def run_one(scenario_ref: str, config_path: str | None, seed: int, mode: str) -> RunSummary:
    """One seed of the scenario in one mode, in memory."""
    from onduty.sim.driver import run_scenario

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; the modes are {', '.join(MODES)}")
    began = time.perf_counter()
    scenario, config = setup(scenario_ref, config_path)
    if mode == "baseline":
        scenario, config = _baseline(scenario_ref, config_path)
    scenario = scenario.model_copy(update={"seed": seed})
    if mode == "control":
        scenario = without_faults(scenario)
    result = run_scenario(scenario, config, MEMORY, control_run=mode == "control")
    return summarize(result.scorecard, seed, mode, time.perf_counter() - began)


def summarize(card: Scorecard, seed: int, mode: str, elapsed_s: float = 0.0) -> RunSummary:
    return RunSummary(
        seed=seed,
        mode=mode,
        metrics=card.metrics(),
        expectations=tuple(
            ExpectationOutcome(e.name, e.bound, e.actual, e.ok) for e in card.expectations
        ),
        events=card.events,
        elapsed_s=elapsed_s,
        denied_by=tuple(sorted(card.denied_by.items())),
        faults=tuple(card.fault_outcomes()),
        learner_proposals=card.learner_proposals,
    )


@dataclass(frozen=True)
class _Refused:
    """A run that could not start (a ConfigError in a worker), as plain data: the exception
    itself does not survive the trip back between processes."""

    seed: int
    mode: str
    source: str
    problems: tuple[str, ...]

    def error(self) -> ConfigError:
        return ConfigError(
            self.source, [f"seed {self.seed} ({self.mode}): {p}" for p in self.problems]
        )


def _run_batch(
    scenario_ref: str, config_path: str | None, tasks: list[tuple[int, str]]
) -> list[RunSummary | _Refused]:
    done: list[RunSummary | _Refused] = []
    for seed, mode in tasks:
        try:
            done.append(run_one(scenario_ref, config_path, seed, mode))
        except ConfigError as error:
            done.append(_Refused(seed, mode, error.source, tuple(error.problems)))
            break
    return done


# ---------------------------------------------------------------------------- many runs


def _worker_start() -> None:
    """A worker leaves Ctrl-C to the parent, which stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_jobs(config: Config | None = None) -> int:
    """One process per CPU; one while `config`'s advisor agent runs, as a model served on one
    machine answers one request at a time."""
    if config is not None and config.advisor.enabled:
        return 1
    return os.cpu_count() or 1


def stop_now(pool: ProcessPoolExecutor) -> None:
    """Drop what a pool has not started and stop its workers at once, rather than after the
    work they hold (a refusal, Ctrl-C)."""
    workers = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.terminate()


def run_many(
    scenario_ref: str,
    config_path: str | None,
    tasks: Sequence[tuple[int, str]],
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> list[RunSummary]:
    """Run (seed, mode) tasks, in `jobs` processes (1: in this process), in task order; by
    default as `default_jobs` says for the config."""
    from onduty.sim import driver  # noqa: F401 - imported once here, inherited by the workers

    scenario, config = setup(scenario_ref, config_path)  # forked workers inherit it
    jobs = jobs or default_jobs(config)
    if tasks:  # a scenario that cannot run fails here, once, before any process starts
        World(config, scenario.model_copy(update={"seed": tasks[0][0]}))
    done: list[RunSummary] = []
    if jobs <= 1 or len(tasks) <= 1:
        for seed, mode in tasks:
            done.append(run_one(scenario_ref, config_path, seed, mode))
            if progress is not None:
                progress(len(done), len(tasks))
        return done
    # Batches amortise the hand-over between processes; small enough that progress moves.
    size = max(1, min(16, len(tasks) // (jobs * 8)))
    batches = [list(tasks[i : i + size]) for i in range(0, len(tasks), size)]
    order = {task: index for index, task in enumerate(tasks)}
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_worker_start)
    try:
        futures = [pool.submit(_run_batch, scenario_ref, config_path, b) for b in batches]
        for future in as_completed(futures):
            for item in future.result():
                if isinstance(item, _Refused):
                    raise item.error()
                done.append(item)
            if progress is not None:
                progress(len(done), len(tasks))
    except BaseException:
        # a refusal or Ctrl-C: drop the batches not started, and stop the workers now rather
        # than after the batches they hold
        stop_now(pool)
        raise
    pool.shutdown()
    return sorted(done, key=lambda run: order[(run.seed, run.mode)])


def monte_carlo(
    scenario_ref: str,
    config_path: str | Path | None,
    seeds: Iterable[int],
    *,
    modes: Sequence[str] = MODES,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> LabResult:
    """Every seed in every mode, in parallel processes."""
    began = time.perf_counter()
    seeds = list(seeds)
    path = str(config_path) if config_path is not None else None
    tasks = [(seed, mode) for seed in seeds for mode in modes]
    runs = run_many(scenario_ref, path, tasks, jobs=jobs, progress=progress)
    by_mode: dict[str, list[RunSummary]] = {mode: [] for mode in modes}
    for run in runs:
        by_mode[run.mode].append(run)
    period = setup(scenario_ref, path)[0].learning_period
    return LabResult(
        scenario=scenario_ref,
        config=path or "(the scenario's own)",
        seeds=seeds,
        runs=by_mode,
        jobs=jobs or default_jobs(setup(scenario_ref, path)[1]),
        elapsed_s=time.perf_counter() - began,
        learning_period=period.total_seconds() if period is not None else None,
    )


def compare(
    scenario_ref: str,
    config_a: str | Path,
    config_b: str | Path,
    seeds: Iterable[int],
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
    control: bool = True,
    people: bool = False,
) -> Comparison:
    """The same seeds under two configs (and, with `control`, their control runs with no
    fault; with `people`, the same seeds with people alone); differences are B - A, paired by
    seed."""
    seeds = list(seeds)
    modes = ("policy", "control") if control else ("policy",)
    each = len(seeds) * len(modes)
    total = 2 * each + (len(seeds) if people else 0)
    offset = 0

    def step(done: int, _: int) -> None:
        if progress is not None:
            progress(offset + done, total)

    a = monte_carlo(scenario_ref, config_a, seeds, modes=modes, jobs=jobs, progress=step)
    offset = each
    b = monte_carlo(scenario_ref, config_b, seeds, modes=modes, jobs=jobs, progress=step)
    alone = None
    if people:
        offset = 2 * each
        alone = monte_carlo(
            scenario_ref, config_a, seeds, modes=("baseline",), jobs=jobs, progress=step
        )
    differences = paired_differences(a, b)
    if control:
        differences += paired_differences(a, b, "control", CONTROL_METRICS)
    return Comparison(a, b, differences, people=alone)


# ---------------------------------------------------------------------------- learning

PHASES = ("learning period", "after it", "whole run")


@dataclass(frozen=True)
class LearningFigures:
    """One config's faults over the seeds of a Monte Carlo run, in one phase: those injected
    during the scenario's `learning_period`, after it, or all of them. Recovery times are
    pooled over the phase's faults of every seed."""

    label: str
    phase: str
    runs: int
    faults: int
    first_right: float | None
    """The share of the faults whose first action (onduty's) was their fix; a fault it took
    no action on counts as not right. None when no run took any action (people alone)."""
    wrong_per_run: float
    """onduty's actions on the phase's faults that fixed nothing, per run."""
    recover_p50: float | None
    recover_p90: float | None
    unrecovered: int

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _in_phase(fault: FaultOutcome, phase: str, period: float | None) -> bool:
    if phase == PHASES[2] or period is None:
        return True
    return (fault.injected_s < period) == (phase == PHASES[0])


def learning_figures(
    label: str, runs: Sequence[RunSummary], period: float | None, phase: str = PHASES[2]
) -> LearningFigures:
    """The figures of `runs` (one config, one mode) in `phase` (see PHASES)."""
    faults = [f for run in runs for f in run.faults if _in_phase(f, phase, period)]
    acted = any(f.first_action is not None for run in runs for f in run.faults)
    recovered = [f.recover_s for f in faults if f.recover_s is not None]
    right = sum(1 for f in faults if f.first_action == "right")
    return LearningFigures(
        label=label,
        phase=phase,
        runs=len(runs),
        faults=len(faults),
        first_right=right / len(faults) if acted and faults else None,
        wrong_per_run=sum(f.wrong_actions for f in faults) / len(runs) if runs else 0.0,
        recover_p50=quantile(recovered, 0.5),
        recover_p90=quantile(recovered, 0.9),
        unrecovered=len(faults) - len(recovered),
    )


Series = list[tuple[str, str, list[RunSummary]]]
"""(label, tone, runs) per config shown on a learning curve."""


def learning_series(result: LabResult | Comparison) -> Series:
    """What a learning curve shows: for a comparison, A, B (their policy runs) and people
    alone when run; for one config, its policy runs and people alone, when the learning agent
    proposed anything (else nothing)."""
    if isinstance(result, Comparison):
        series: Series = [
            (f"A: {_config_name(result.a)}", "quiet", result.a.runs.get("policy", [])),
            (f"B: {_config_name(result.b)}", "info", result.b.runs.get("policy", [])),
        ]
        if result.people is not None:
            series.append(("people alone", "warn", result.people.runs.get("baseline", [])))
        return series
    policy = result.runs.get("policy", [])
    if not any(run.learner_proposals for run in policy):
        return []
    series = [("with the policy", "info", policy)]
    if result.runs.get("baseline"):
        series.append(("people alone", "warn", result.runs["baseline"]))
    return series


def _config_name(result: LabResult) -> str:
    return Path(result.config).stem if result.config.endswith((".yaml", ".yml")) else result.config


def learning_rows(series: Series, period: float | None) -> list[LearningFigures]:
    """Per config and phase (the learning period and after it, when the scenario sets one;
    else the whole run), its figures."""
    phases = PHASES[:2] if period is not None else PHASES[2:]
    return [
        learning_figures(label, runs, period, phase)
        for phase in phases
        for label, _, runs in series
    ]


def learning_curve(series: Series, period: float | None) -> dict[str, Any]:
    """Plain data for the report's learning curves: per config, for the n-th fault of a run
    (in order of injection), over the seeds that had one: the share whose first action was its
    fix, and the mean time to recover (a wrong first action shows in the tail a median hides).
    Faults that fewer than half of the seeds reached are left out (too few to say)."""
    drawn = []
    for label, tone, runs in series:
        acted = any(f.first_action is not None for run in runs for f in run.faults)
        deepest = max((len(run.faults) for run in runs), default=0)
        points = []
        for order in range(deepest):
            found = [run.faults[order] for run in runs if len(run.faults) > order]
            if len(found) * 2 < len(runs):
                break
            recovered = [f.recover_s for f in found if f.recover_s is not None]
            points.append(
                {
                    "order": order + 1,
                    "runs": len(found),
                    "right": (
                        sum(1 for f in found if f.first_action == "right") / len(found)
                        if acted
                        else None
                    ),
                    "recover_mean": statistics.fmean(recovered) if recovered else None,
                }
            )
        drawn.append({"label": label, "tone": tone, "points": points})
    before = None
    if period is not None and series and series[0][2]:
        runs = series[0][2]
        before = statistics.fmean(
            sum(1 for f in run.faults if f.injected_s < period) for run in runs
        )
    return {
        "series": drawn,
        "period_s": period,
        "faults_in_period": before,
        "rows": [row.to_dict() for row in learning_rows(series, period)],
    }


def render_learning(series: Series, period: float | None, console: Console) -> None:
    """Side by side, per config: the faults' first actions, wrong actions and recovery, in the
    learning period and after it."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    if not series:
        return
    said = f" ({_span(period)})" if period is not None else ""
    table = Table(
        title=Text(f"learning: the faults in the learning period{said} and after it"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        caption="first action right: the share of faults whose first action was their fix (no "
        "action counts as not right); recovery: pooled over the faults of every seed",
        caption_justify="left",
    )
    for column in ("config", "phase", "faults", "first action right", "wrong actions / run",
                   "recovery p50", "recovery p90", "unrecovered"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("config", "phase") else "right")
    for row in learning_rows(series, period):
        table.add_row(
            Text(row.label),
            row.phase,
            str(row.faults),
            "-" if row.first_right is None else f"{row.first_right:.0%}",
            f"{row.wrong_per_run:.2f}",
            _fmt("mttr_median", row.recover_p50),
            _fmt("mttr_p90", row.recover_p90),
            str(row.unrecovered),
        )
    console.print(table)


def _span(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds))


# ---------------------------------------------------------------------------- reports


def write_report(
    path: Path,
    result: RunResult | None,
    lab: LabResult | None,
    console: Console,
    events: list[Event] | None = None,
    learning: dict[str, Any] | None = None,
) -> None:
    """The self-contained HTML page of a run (its incidents' timelines; `events` for a run
    that kept its log in memory) and, for a Monte Carlo run, its distributions
    (`onduty.report`) and, with `learning` (`learning_curve`), its learning curves."""
    from onduty.report.html import write_html

    write_html(path, result, lab, events=events, learning=learning)
    console.print(f"report: {path}")


# ---------------------------------------------------------------------------- presentation

# The metrics the lab's table shows, in order; rows where every run of every mode is zero or
# has no value are left out.
_SHOWN = tuple(m for m in METRICS if m not in ("false_action_rate",))
_RATIO_MEANINGLESS = frozenset(
    {
        "faults",
        "signal_faults",
        "guardrail_denials",
        "approvals_requested",
        "approved",
        "approval_wait_p90",
        "refused_signals",
    }
)


def _fmt(metric: str, value: float | None) -> str:
    from onduty.sim.driver import format_metric

    if value is not None and metric not in DURATION_METRICS and value != int(value):
        return f"{value:.2f}"
    return format_metric(metric, value)


def _mean_ci(metric: str, dist: Distribution) -> str:
    if dist.mean is None:
        return "-"
    if dist.ci is None:
        return _fmt(metric, dist.mean)
    low, high = dist.ci
    if low == high:
        return _fmt(metric, dist.mean)
    return f"{_fmt(metric, dist.mean)} [{_fmt(metric, low)}, {_fmt(metric, high)}]"


def render_lab(result: LabResult, console: Console) -> None:
    """The distributions of every metric for onduty and for people alone, with the ratio of
    their means; the control runs' false actions; the expectations' failures."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    policy, people = result.distributions("policy"), result.distributions("baseline")
    table = Table(
        title=Text(
            f"{result.scenario}: {len(result.seeds)} seeds ({result.seeds[0]}..{result.seeds[-1]})"
            if result.seeds
            else result.scenario
        ),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        caption="mean with its 95 % confidence interval (t-based); ratio = onduty mean / "
        "people-alone mean; people alone: every service at autonomy observe",
        caption_justify="left",
    )
    table.add_column("metric", no_wrap=True)  # the names expectations use, whole
    for column in ("median", "p10", "p90", "max", "mean [95% CI]"):
        table.add_column(column, justify="right", overflow="fold")
    if "baseline" in result.runs:
        for column in ("people: median", "people: mean", "ratio"):
            table.add_column(column, justify="right", overflow="fold")
    rows = 0
    for metric in _SHOWN:
        ours, theirs = policy[metric], people[metric]
        if not any((d.max or 0) != 0 for d in (ours, theirs)):
            continue
        rows += 1
        row = [
            metric,
            _fmt(metric, ours.median),
            _fmt(metric, ours.p10),
            _fmt(metric, ours.p90),
            _fmt(metric, ours.max),
            _mean_ci(metric, ours),
        ]
        if "baseline" in result.runs:
            shown = (
                "" if metric in _RATIO_MEANINGLESS else _ratio_text(ratio(ours.mean, theirs.mean))
            )
            row += [_fmt(metric, theirs.median), _fmt(metric, theirs.mean), shown]
        table.add_row(*row)
    if rows:
        console.print(table)
    else:
        console.print(Text(f"{table.title}: every metric is zero (or has no value) in every run"))
    denials = {r: n for r, n in result.denials_by_rule().items() if r != AUTONOMY_RULE}
    if denials:
        listed = ", ".join(f"{rule} {mean:.2f}" for rule, mean in denials.items())
        console.print(Text(f"guardrail denials by rule (mean per run): {listed}"))
    control = result.runs.get("control", [])
    if control:
        rate = result.distribution("control", "false_action_rate")
        actions = sum(run.metrics.get("false_actions") or 0 for run in control)
        alarms = sum(run.metrics.get("control_incidents") or 0 for run in control)
        console.print(
            f"control runs (each seed with no fault): {len(control)}; false actions "
            f"{int(actions)} in all, {_mean_ci('false_action_rate', rate)} per simulated hour "
            f"(mean [95 % CI]); incidents opened (false alarms) {int(alarms)}"
        )
    failures = result.failures()
    if failures:
        checks = Table(
            title="expectations", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
        )
        checks.add_column("expectation")
        checks.add_column("failed in", justify="right")
        for name, (failed, total) in failures.items():
            style = "bold red" if failed else "green"
            checks.add_row(Text(name), Text(f"{failed} of {total} runs", style=style))
        console.print(checks)
    console.print(throughput(result))


def throughput(result: LabResult) -> str:
    """How fast the runs went, against one run at a time: the mean time a run took inside its
    process, measured in the same Monte Carlo run."""
    every = [run for runs in result.runs.values() for run in runs]
    if not every or result.elapsed_s <= 0:
        return f"{len(every)} runs"
    rate = len(every) / result.elapsed_s
    each = statistics.fmean(run.elapsed_s for run in every)
    alone = f"; one run takes {each:.3f}s ({1 / each:.1f} runs/s in one process)" if each else ""
    speedup = f", {rate * each:.2f}x that" if each else ""
    return (
        f"{len(every)} runs in {result.elapsed_s:.1f}s with {result.jobs} process(es): "
        f"{rate:.1f} runs/s{alone}{speedup}"
    )


def _ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render_comparison(comparison: Comparison, console: Console) -> None:
    """B - A per metric, paired by seed, with its 95 % interval and whether it is significant
    (the interval excludes zero) and better or worse."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    a, b = comparison.a, comparison.b
    table = Table(
        title=Text(f"{a.scenario}: B - A over the same {len(a.seeds)} seeds"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for column in ("metric", "A mean", "B mean", "B - A", "95 % CI", "change"):
        table.add_column(column, justify="left" if column in ("metric", "change") else "right")
    for diff in comparison.differences:
        if diff.n == 0 or (diff.mean_a == 0 and diff.mean_b == 0 and diff.mean == 0):
            continue
        if not diff.significant:
            change = Text("no significant change", style="dim")
        elif diff.better is None:
            change = Text("changed (significant; neither better nor worse)")
        elif diff.better:
            change = Text("better (significant)", style="bold green")
        else:
            change = Text("WORSE (significant)", style="bold red")
        interval = (
            "-"
            if diff.ci is None
            else f"[{_num(diff.metric, diff.ci[0])}, {_num(diff.metric, diff.ci[1])}]"
        )
        table.add_row(
            diff.metric,
            _fmt(diff.metric, diff.mean_a),
            _fmt(diff.metric, diff.mean_b),
            _num(diff.metric, diff.mean),
            interval,
            change,
        )
    console.print(table)
    console.print(Text(f"A = {a.config}\nB = {b.config}"), soft_wrap=True)
    console.print(
        f"confidence intervals: {comparison.method} of the per-seed difference B - A, per "
        "metric (no correction for the number of metrics); significant: the interval excludes 0",
        soft_wrap=True,
    )
    for label, lab_result in (("A", a), ("B", b)):
        failed = {n: f for n, (f, _) in lab_result.failures().items() if f}
        if failed:
            listed = "; ".join(
                f"{n}: {f} of {len(lab_result.seeds)} runs" for n, f in failed.items()
            )
            console.print(Text(f"{label}: expectations failed: {listed}", style="red"))


def _num(metric: str, value: float | None) -> str:
    """A signed difference: durations as -5m50s, other figures as +0.25."""
    if value is None:
        return "-"
    if metric in DURATION_METRICS:
        return ("-" if value < 0 else "+") + _fmt(metric, abs(value))
    return f"{value:+.2f}" if value != int(value) else f"{int(value):+d}"


# ---------------------------------------------------------------------------- the command


def lab_command(
    scenario_ref: str,
    configs: Sequence[Path],
    *,
    runs: int,
    seed: int | None,
    jobs: int | None,
    compare_configs: bool,
    control: bool,
    fail_on_worse: bool,
    report: Path | None,
    console: Console,
    people: bool = False,
) -> int:
    """The body of `onduty sim --runs N` and `--compare`: 0 when every expectation holds in
    every run (of B, when comparing; and with `fail_on_worse`, no metric significantly
    worse), else 1."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    scenario, _ = setup(scenario_ref, str(configs[0]) if configs else None)
    first = scenario.seed if seed is None else seed
    seeds = list(range(first, first + runs))
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("runs"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    # No refresh thread: the pool forks its workers while the bar is shown, and a fork must
    # not copy a lock another thread holds. The bar is redrawn as runs finish.
    with Progress(*columns, console=console, transient=True, auto_refresh=False) as bar:
        task = bar.add_task(scenario_ref, total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
            bar.refresh()

        if compare_configs:
            if len(configs) != 2:
                raise ConfigError("--compare", ["give two configs: -c A.yaml -c B.yaml"])
            comparison = compare(
                scenario_ref,
                configs[0],
                configs[1],
                seeds,
                jobs=jobs,
                progress=progress,
                control=control,
                people=people,
            )
        else:
            modes = [mode for mode in MODES if control or mode != "control"]
            result = monte_carlo(
                scenario_ref,
                configs[0] if configs else None,
                seeds,
                modes=modes,
                jobs=jobs,
                progress=progress,
            )
    if compare_configs:
        render_comparison(comparison, console)
        failed = not comparison.b.passed or (fail_on_worse and bool(comparison.worse))
        lab_result = comparison.b
        series = learning_series(comparison)
    else:
        render_lab(result, console)
        failed = not result.passed
        lab_result = result
        series = learning_series(result)
    render_learning(series, lab_result.learning_period, console)
    if report is not None:
        from onduty.sim.driver import run_scenario

        shown, config = setup(scenario_ref, str(configs[-1]) if configs else None)
        events: list[Event] = []
        one = run_scenario(
            shown.model_copy(update={"seed": seeds[0]}), config, MEMORY, on_event=events.append
        )
        curve = learning_curve(series, lab_result.learning_period) if series else None
        write_report(report, one, lab_result, console, events, curve)
    return 1 if failed else 0
