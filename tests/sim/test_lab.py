"""The lab: Monte Carlo runs in parallel processes, people alone beside them, control runs,
paired comparisons of two configs, and the exit status a runbook repository's CI reads."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from onduty.cli import app
from onduty.config import ConfigError
from onduty.sim import lab
from onduty.sim.driver import IN_MEMORY, run_scenario_command
from onduty.sim.lab import (
    Distribution,
    LabResult,
    RunSummary,
    compare,
    mean_interval,
    monte_carlo,
    paired_differences,
    t_quantile,
)
from onduty.sim.scenario import read_builtin
from tests.run_cli import onduty
from tests.sim.lab_configs import bad_runbook_config, demo_config


def plain(result: LabResult) -> dict[str, list[tuple[int, object, object]]]:
    """What a lab result says, without the time each run took."""
    return {
        mode: [(run.seed, run.metrics, run.expectations) for run in runs]
        for mode, runs in result.runs.items()
    }


def test_t_quantiles_and_the_interval_of_a_mean() -> None:
    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(0.975, 2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(0.975, 5) == pytest.approx(2.571, abs=2e-3)
    assert t_quantile(0.975, 10) == pytest.approx(2.228, abs=1e-3)
    assert t_quantile(0.975, 999) == pytest.approx(1.962, abs=1e-3)
    low, high = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0]) or (0.0, 0.0)
    assert (low + high) / 2 == pytest.approx(3.0)
    assert high - 3.0 == pytest.approx(2.776 * (2.5**0.5) / 5**0.5, abs=1e-2)
    assert mean_interval([4.0]) is None
    spread = Distribution.of([None, 1.0, 2.0, 3.0, 10.0])
    assert (spread.n, spread.missing, spread.median, spread.max) == (4, 1, 2.5, 10.0)


VARIED = """
name: varied
config: demo
seed: 1
duration: 3h
on_call:
  approve_after: {median: 2m, p90: 6m}
  acknowledge_after: {median: 3m, p90: 8m}
  fix_after: {median: 20m, p90: 45m}
  away: 0.2
  approvers: [alice, bob]
faults:
  - {kind: instance_crash, count: 3, between: [10m, 2h30m], target: any}
  - {kind: bad_deploy, count: 1, between: [10m, 2h30m], target: {tier: high}}
expect:
  - detected >= 1
"""


def test_the_same_seeds_give_the_same_distributions_in_parallel_or_not(tmp_path: Path) -> None:
    scenario = tmp_path / "varied.yaml"  # faults and people's response times drawn per seed
    scenario.write_text(VARIED, encoding="utf-8")
    seeds = [1, 2, 3, 4]
    alone = monte_carlo(str(scenario), None, seeds, jobs=1)
    parallel = monte_carlo(str(scenario), None, seeds, jobs=2)
    assert plain(parallel) == plain(alone)
    assert plain(monte_carlo(str(scenario), None, seeds, jobs=2)) == plain(parallel)
    assert [run.seed for run in parallel.runs["policy"]] == seeds
    assert set(parallel.runs) == {"policy", "baseline", "control"}
    assert len(set(parallel.values("baseline", "mttr_median"))) > 1  # the seeds differ
    # people alone: onduty acts on nothing, and recovery is slower; the control run is quiet
    assert parallel.distribution("baseline", "actions").max == 0
    assert (parallel.ratio("mttr_median") or 1.0) < 1.0
    assert parallel.distribution("control", "faults").max == 0
    assert parallel.distribution("control", "false_actions").max == 0
    assert parallel.passed and parallel.failures()["detected >= 1"] == (0, 4)
    document = parallel.to_dict()
    assert document["runs"] == 4 and len(document["metrics"]["mttr_median"]["baseline"]) == 4


def test_the_demo_s_guardrails_deny_once_each_per_run() -> None:
    result = monte_carlo("demo", None, [3, 4], modes=("policy",), jobs=2)
    assert result.denials_by_rule() == {
        "outage-brake": 1.0,
        "release-freeze": 1.0,
        "restart-budget": 1.0,
        "search-capacity": 1.0,
    }


def test_identical_configs_differ_in_nothing_and_a_bad_runbook_significantly(
    tmp_path: Path,
) -> None:
    good, bad = demo_config(tmp_path), bad_runbook_config(tmp_path)
    same = compare("demo", good, good, [1, 2, 3], jobs=2)
    assert not [d.metric for d in same.differences if d.significant]
    assert same.worse == []
    control = {d.metric: d for d in same.differences if d.metric.startswith("control: ")}
    assert control["control: false_action_rate"].n == 3  # the no-fault runs, compared too
    worse = compare("demo", good, bad, [1, 2, 3], jobs=2)
    flagged = {d.metric for d in worse.worse}
    assert {"wrong_actions", "mttr_median", "slo_minutes_lost"} <= flagged
    wrong = next(d for d in worse.differences if d.metric == "wrong_actions")
    assert wrong.mean is not None and wrong.mean > 0 and wrong.ci is not None


def test_paired_differences_pair_runs_by_seed() -> None:
    def result(values: dict[int, float]) -> LabResult:
        runs = [RunSummary(seed, "policy", {"mttr_median": v}) for seed, v in values.items()]
        return LabResult("s", "c", list(values), {"policy": runs}, jobs=1)

    a = result({1: 100.0, 2: 200.0, 3: 300.0, 4: 400.0})
    b = result({4: 430.0, 3: 310.0, 2: 220.0, 1: 140.0})  # each 10..40 s slower
    (diff,) = [d for d in paired_differences(a, b) if d.metric == "mttr_median"]
    assert (diff.n, diff.mean) == (4, 25.0)
    assert diff.ci is not None and diff.ci[0] > 0 and diff.better is False


def _strict_demo(folder: Path) -> Path:
    """The demo with an expectation no run meets."""
    document = yaml.safe_load(read_builtin("demo.yaml"))
    document["expect"] = {"detected_min": 99}
    path = folder / "strict.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def lab_run(*configs: Path, scenario: str = "demo", **options: object) -> tuple[int, str]:
    """`onduty sim SCENARIO --runs ...` in this process: its exit status and what it shows."""
    console = Console(file=io.StringIO(), width=200)
    settings: dict[str, object] = {
        "runs": 2,
        "seed": None,
        "jobs": 2,
        "compare_configs": False,
        "control": True,
        "fail_on_worse": False,
        "report": None,
    }
    settings.update(options)
    code = lab.lab_command(scenario, list(configs), console=console, **settings)  # type: ignore[arg-type]
    return code, console.file.getvalue()  # type: ignore[attr-defined]


def test_exit_status_of_a_monte_carlo_run(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    passing = onduty("sim", "demo", "-c", str(config), "--runs", "2", "--seed", "5")
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "demo: 2 seeds (5..6)" in passing.stdout
    assert "people alone" in passing.stdout and "control runs" in passing.stdout
    assert "0 of 2 runs" in passing.stdout
    strict = str(_strict_demo(tmp_path))
    code, shown = lab_run(config, scenario=strict, control=False, jobs=1)
    assert code == 1
    assert "2 of 2 runs" in shown and "control runs" not in shown
    console = Console(file=io.StringIO(), width=200)
    single = run_scenario_command(
        strict, config, IN_MEMORY, seed=None, fresh=True, live=False, console=console
    )
    assert single == 1 and "FAILED" in console.file.getvalue()  # type: ignore[attr-defined]


def test_compare_names_its_method_and_gates_on_request(tmp_path: Path) -> None:
    good, bad = demo_config(tmp_path), bad_runbook_config(tmp_path)
    code, shown = lab_run(good, bad, compare_configs=True)
    assert code == 0, shown
    assert "paired t-interval (95 %)" in shown and "WORSE (significant)" in shown
    assert lab_run(good, bad, compare_configs=True, fail_on_worse=True)[0] == 1
    assert lab_run(good, good, compare_configs=True, fail_on_worse=True)[0] == 0
    usage = CliRunner().invoke(app, ["sim", "demo", "--compare", "-c", str(good)])
    assert usage.exit_code != 0 and "two configs" in str(usage.exception)
    live = CliRunner().invoke(app, ["sim", "demo", "--runs", "2", "--live"])
    assert live.exit_code != 0 and "for one run" in str(live.exception)


def test_a_run_in_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        lab.run_one("demo", None, 1, "chaos")


def test_a_monte_carlo_report_is_one_page_with_the_distributions(tmp_path: Path) -> None:
    page = tmp_path / "lab.html"
    code, shown = lab_run(report=page, runs=2)
    assert code == 0 and f"report: {page}" in shown
    html = page.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html")
    assert "mttr_median" in html and "<svg" in html  # a distribution drawn per metric
    assert "InstanceDown" in html  # the first seed's incidents, told from its events
    assert "http://" not in html.replace("http://www.w3.org", "")  # nothing fetched


def test_a_scenario_that_cannot_run_is_refused_with_its_reason(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(
        "name: bad\nconfig: demo\nseed: 1\nduration: 1h\n"
        "faults:\n  - {at: 10m, kind: instance_crash, target: nope-1}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="no instance 'nope-1'"):
        monte_carlo(str(scenario), None, [1, 2], jobs=2)
    # a worker's refusal crosses back between processes as plain data, naming the seed
    (refused,) = lab._run_batch(str(scenario), None, [(2, "policy"), (3, "policy")])
    assert isinstance(refused, lab._Refused)
    assert "seed 2 (policy): faults[0].target" in str(refused.error())


def test_a_single_run_shows_faults_in_the_signals_apart_from_the_outages() -> None:
    scenario = Path(__file__).parents[2] / "examples" / "scenarios" / "malformed_signals.yaml"
    shown = io.StringIO()
    code = run_scenario_command(
        str(scenario),
        None,
        IN_MEMORY,
        seed=None,
        fresh=True,
        live=False,
        console=Console(file=shown, width=160),
    )
    text = shown.getvalue()
    assert code == 0
    outages, _, pipeline = text.partition("faults in the signals (the fleet was fine)")
    assert "malformed_signals" in pipeline.split("scorecard:")[0]
    assert "malformed_signals" not in outages and "instance_crash" in outages
