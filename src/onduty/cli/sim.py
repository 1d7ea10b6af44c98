"""The commands that run onduty offline: `demo`, `sim` and `bench`."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from onduty.cli.base import StoreOption, UsageProblem, out

SeedOption = Annotated[int | None, typer.Option(help="Override the scenario's seed.")]


def demo(
    store: StoreOption = "onduty-demo.db",
    seed: SeedOption = None,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted demo in --store instead of starting over.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No live view; just the scorecard.")] = False,
    pace: Annotated[
        float, typer.Option(help="Real seconds the live view spreads the simulated day over.")
    ] = 12.0,
) -> None:
    """Run the built-in scenario on a simulated fleet and print a scorecard."""
    from onduty.sim.driver import run_scenario_command

    code = run_scenario_command(
        "demo",
        None,
        store,
        seed=seed,
        fresh=not resume,
        live=not quiet,
        pace=0.0 if quiet else pace,
        console=out,
    )
    raise typer.Exit(code)


def sim(
    scenario: Annotated[str, typer.Argument(help="A scenario file, or a built-in name (demo).")],
    config: Annotated[
        list[Path] | None,
        typer.Option(
            "--config",
            "-c",
            help="The onduty config under test (default: the scenario's own); twice with "
            "--compare.",
        ),
    ] = None,
    store: StoreOption = "onduty-sim.db",
    seed: SeedOption = None,
    fresh: Annotated[
        bool, typer.Option(help="Start over even if --store holds an interrupted run.")
    ] = False,
    live: Annotated[bool, typer.Option(help="Show the live view while it runs.")] = False,
    pace: Annotated[
        float, typer.Option(help="Real seconds to spread the simulated span over (0: flat out).")
    ] = 0.0,
    runs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Monte Carlo: run this many seeds (--seed, --seed + 1, ...) in memory, in "
            "parallel, and show distributions beside people alone.",
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes for --runs (default: one per CPU; one while the config's advisor "
            "agent runs, and with --advise).",
        ),
    ] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Run the same seeds under two configs (-c A.yaml -c B.yaml) and show the "
            "differences B - A with 95 % confidence intervals (100 seeds unless --runs).",
        ),
    ] = False,
    control: Annotated[
        bool,
        typer.Option(
            help="With --runs or --compare, also run each seed with no fault (the control "
            "runs that measure false actions)."
        ),
    ] = True,
    people: Annotated[
        bool,
        typer.Option(
            "--people",
            help="With --compare, also run each seed with people alone (the first config at "
            "autonomy observe), shown beside both.",
        ),
    ] = False,
    fail_on_worse: Annotated[
        bool,
        typer.Option(help="With --compare, exit 1 when B is significantly worse on a metric."),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            help="Also write a self-contained HTML report to this file (with --advise: the "
            "first seed's run, its incidents' timelines with the advice)."
        ),
    ] = None,
    advise: Annotated[
        bool,
        typer.Option(
            "--advise",
            help="Benchmark the advisor agent: run --runs seeds (default 1) with the advisor "
            "consulted on every incident in shadow (and the learning agent in shadow, if the "
            "config runs it) and score each agent's first choice for every incident against "
            "the fault behind it; exit 1 if the advisor never answered.",
        ),
    ] = False,
    base_url: Annotated[
        str | None,
        typer.Option(
            help="With --advise, the advisor's chat API (default: the config's "
            "advisor.endpoint.base_url)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="With --advise, the model to ask (default: the config's advisor.endpoint.model)."
        ),
    ] = None,
    response_format: Annotated[
        str | None,
        typer.Option(
            help="With --advise, how the answer is bound to its schema: json_schema or "
            "json_object, llama-cpp-python's server's (default: the config's "
            "advisor.endpoint.response_format)."
        ),
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="With --advise, also write the figures and every incident's verdicts to this "
            "file.",
        ),
    ] = None,
) -> None:
    """Run a scenario in virtual time, beside people alone; exit 1 if one of its expectations
    fails (with --runs: in any run)."""
    configs = list(config or [])
    if compare and len(configs) != 2:
        raise UsageProblem("--compare needs two configs: -c A.yaml -c B.yaml")
    if not compare and len(configs) > 1:
        raise UsageProblem("give one config (-c FILE), or two with --compare")
    overrides = (base_url, model, response_format, json_out)
    if not advise and any(value is not None for value in overrides):
        raise UsageProblem("--base-url, --model, --response-format and --json are for --advise")
    if advise:
        from onduty.sim.advice import EndpointOverride, advise_command

        if compare or people or fail_on_worse or live or pace or fresh:
            raise UsageProblem(
                "--advise runs the seeds in memory with the runbook agent deciding: --compare, "
                "--people, --fail-on-worse, --live, --pace and --fresh do not apply"
            )
        code = advise_command(
            scenario,
            configs[0] if configs else None,
            runs=runs if runs is not None else 1,
            seed=seed,
            jobs=jobs,
            endpoint=EndpointOverride(base_url, model, response_format),
            json_out=json_out,
            report=report,
            console=out,
        )
        raise typer.Exit(code)
    if compare or runs is not None:
        from onduty.sim.lab import lab_command

        if live or pace or fresh:
            raise UsageProblem(
                "--live, --pace and --fresh are for one run; --runs and --compare run in memory"
            )

        code = lab_command(
            scenario,
            configs,
            runs=runs if runs is not None else 100,
            seed=seed,
            jobs=jobs,
            compare_configs=compare,
            control=control,
            fail_on_worse=fail_on_worse,
            report=report,
            console=out,
            people=people,
        )
        raise typer.Exit(code)
    from onduty.sim.driver import run_scenario_command

    code = run_scenario_command(
        scenario,
        configs[0] if configs else None,
        store,
        seed=seed,
        fresh=fresh,
        live=live,
        pace=pace,
        console=out,
        report=report,
    )
    raise typer.Exit(code)


def bench(
    quick: Annotated[
        bool, typer.Option(help="Small sizes: a smoke run, not a measurement.")
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option(help="Run only these workloads (module names).")
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Also write every row (with its details) to this file."),
    ] = None,
) -> None:
    """Run the benchmark workloads and print their figures (record them in BENCHMARKS.md)."""
    from onduty.bench import workloads

    known = workloads()
    for name in only or []:
        if name not in known:
            raise UsageProblem(
                f"no benchmark workload named {name!r}; the workloads are {', '.join(known)}"
            )
    results: dict[str, list[dict[str, str | float]]] = {}
    for name in only or known:
        module = importlib.import_module(f"onduty.bench.{name}")
        out.print(f"[bold]{name}[/] …")
        results[name] = module.run(quick=quick)
        table = Table("workload", "figure", "peer", "ratio")  # each as soon as it is measured
        for row in results[name]:
            table.add_row(str(row["name"]), str(row["figure"]), str(row["peer"]), str(row["ratio"]))
        out.print(table)
        if json_out is not None:
            json_out.write_text(json.dumps({"quick": quick, "workloads": results}, indent=1))
