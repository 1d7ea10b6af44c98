"""`onduty learn validate MODEL`: the sim lab's scenarios over many seeds, as configured and with
the learning agent on and MODEL active, paired by seed. Exit 0 when no scenario gets
significantly worse on any metric and every expectation holds; 1 otherwise; 2 on bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from onduty.cli.base import UsageProblem, err, out
from onduty.cli.learn import learn_app
from onduty.textsafe import markup


@learn_app.command("validate")
def validate(
    model: Annotated[Path, typer.Argument(help="The model artifact (onduty learn train).")],
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario",
            "-s",
            help="A scenario file or built-in name; repeat for several (default: demo).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="The configuration to validate against (default: each scenario's own).",
        ),
    ] = None,
    runs: Annotated[int, typer.Option(min=2, help="Seeds per scenario.")] = 20,
    seed: Annotated[int, typer.Option(help="The first seed.")] = 1,
    jobs: Annotated[int | None, typer.Option(min=1, help="Processes (default: one per CPU).")] = (
        None
    ),
) -> None:
    """Run the scenarios with and without MODEL; exit 1 if any gets worse."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from onduty.config import ConfigError
    from onduty.learn.model import ModelProblem, load_model
    from onduty.sim.lab import render_comparison
    from onduty.sim.validation import validate as run_validation

    try:
        artifact = load_model(model)
    except ModelProblem as problem:
        raise UsageProblem(str(problem)) from None
    seeds = list(range(seed, seed + runs))
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err, transient=True, auto_refresh=False) as bar:

        def progress_of(name: str) -> Callable[[int, int], None]:
            task = bar.add_task(markup(name), total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)
                bar.refresh()

            return advance

        try:
            verdicts = run_validation(
                model,
                scenario or ["demo"],
                str(config) if config else None,
                seeds,
                jobs=jobs,
                progress=progress_of,
            )
        except ConfigError as error:
            raise UsageProblem(f"{error.source}: {'; '.join(error.problems)}") from None
    failed = False
    for verdict in verdicts:
        out.rule(markup(verdict.scenario))
        render_comparison(verdict.comparison, out)
        if verdict.passed:
            out.print(f"[green]not worse[/] over {len(seeds)} seeds", soft_wrap=True)
            continue
        failed = True
        worse = ", ".join(markup(d.metric) for d in verdict.comparison.worse)
        why = f"worse on {worse}" if worse else "an expectation failed with the model"
        out.print(f"[red]worse[/]: {why}", soft_wrap=True)
    verdict_line = "[red]refused[/]" if failed else "[green]validated[/]"
    out.print(f"{verdict_line}: {markup(artifact.model_id)}", soft_wrap=True)
    raise typer.Exit(1 if failed else 0)
