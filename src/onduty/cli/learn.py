"""`onduty learn`: the learning agent's model. `learn train` reads an event log (never changing
it) and writes a model artifact named by its content hash; with `--schedule` (or `--once`) it
trains again and again and hands each model that does no worse to a running server. `status`,
`shadow`, `canary`, `promote`, `rollback` and `activate` manage the model a running server ranks
with, as `onduty policy` does its policy: a file is checked here first, and a corrupted or
incompatible one is refused in one line (exit 2) naming the file."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from onduty.cli.base import (
    SERVER,
    SelectorOption,
    StoreOption,
    TokenOption,
    UrlOption,
    UsageProblem,
    counting,
    err,
    existing_log,
    out,
    problem_line,
    progress,
)
from onduty.cli.client import call
from onduty.textsafe import markup
from onduty.think.features import UNTRAINED

if TYPE_CHECKING:
    from onduty.learn import Model

learn_app = typer.Typer(
    no_args_is_help=True,
    help="The learning agent's model: train it from the log; try, promote or roll back the one "
    "a running server ranks with.",
    pretty_exceptions_enable=False,
)

TIME_FORMATS = ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]
SCHEDULED = "onduty learn train --schedule"
"""The source the scheduled training records its models under (and recognises its own by)."""


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _duration(option: str, text: str | None) -> timedelta | None:
    from onduty.values import parse_duration

    if text is None:
        return None
    try:
        value = parse_duration(text)
    except ValueError as error:
        raise UsageProblem(f"{option}: {error}") from None
    if value <= timedelta(0):
        raise UsageProblem(f"{option}: {text!r} must be longer than nothing")
    return value


def _evaluation(evaluation: dict[str, Any] | None) -> str:
    if not evaluation or not evaluation.get("held_out_examples"):
        return "no offline evaluation (too few outcomes to hold any out)"
    return (
        f"held out {evaluation['held_out_examples']}: verification rate "
        f"{evaluation['held_out_verification_rate']:.0%}, Brier score "
        f"{evaluation['brier_score']:.3f} (prior alone {evaluation['prior_brier_score']:.3f}), "
        f"differs from the runbook order {evaluation['differs_from_runbook_order']:.0%}"
    )


# ---------------------------------------------------------------------------- training


def _learn(
    store: str,
    since: datetime | None,
    until: datetime | None,
    window: timedelta | None = None,
) -> Model:
    """The model the log teaches over [since, until), or over the `window` that ends at the
    log's newest event."""
    from onduty.learn import train as learn

    with existing_log(store) as log:
        total = log.head()[0]
        if window is not None:
            newest = next(log.read(after=total - 1), None) if total else None
            since = None if newest is None else newest.ts - window
        with progress("learning", total=total) as advance:
            return learn(counting(log.read(), advance), since=since, until=until)


def _save(model: Model, out_dir: Path) -> Path:
    from onduty.learn import save_model

    try:
        return save_model(model, out_dir)
    except OSError as error:
        raise UsageProblem(f"--out {out_dir}: cannot write: {error.strerror or error}") from None


def _report(model: Model, path: Path) -> None:
    body = model.body
    signatures = {tuple(sorted(row["signature"].items())) for row in body["posterior"]}
    actions = {row["action"] for row in body["posterior"]}
    out.print(
        f"learned from {body['examples']} action outcomes "
        f"({body['training_window']['events']} events): {len(actions)} actions, "
        f"{len(signatures)} signatures"
    )
    out.print(_evaluation(model.evaluation), soft_wrap=True)
    out.print(f"wrote {markup(str(path))}", soft_wrap=True)


@dataclass(frozen=True)
class Schedule:
    """What a scheduled round needs besides the model it trains."""

    store: str
    out_dir: Path
    window: timedelta | None
    server: str
    token: str | None
    min_examples: int
    scenarios: tuple[str, ...] = ()
    """Sim lab scenarios the model must not make worse (`onduty learn validate`)."""
    runs: int = 20


def judge(model: Model, status: dict[str, Any], min_examples: int) -> str:
    """Why `model` is not handed to the server ("" when it is): the same as the active model
    or the candidate, too few examples, no held-out evaluation, or a Brier score worse than the
    active model's (the prior alone's, while none is active)."""
    active, candidate = status["active"], status.get("candidate") or {}
    if model.model_id == active["model_id"]:
        return f"{model.model_id} is the active model already"
    if model.model_id == candidate.get("model_id") and not status.get("auto_promote"):
        return f"{model.model_id} is the candidate already"
    examples = int(model.body["examples"])
    if examples < min_examples:
        return f"{examples} action outcomes, fewer than --min-examples {min_examples}"
    evaluation = model.evaluation
    if not evaluation.get("held_out_examples"):
        return "too few outcomes to hold any out: no offline evaluation to compare"
    brier = float(evaluation["brier_score"])
    theirs = (active.get("offline_evaluation") or {}).get("brier_score")
    against = f"the active model's ({active['model_id']})"
    if theirs is None:
        theirs, against = evaluation["prior_brier_score"], "the prior alone's"
    if brier > float(theirs):
        return f"its Brier score {brier:.3f} is worse than {against} {float(theirs):.3f}"
    return ""


def simulated(path: Path, schedule: Schedule) -> str:
    """Why the sim lab refuses the model at `path` ("" when no scenario gets worse with it, or
    none is given): `onduty learn validate`, over `schedule.runs` seeds."""
    if not schedule.scenarios:
        return ""
    from onduty.sim.validation import validate as run_validation

    verdicts = run_validation(path, schedule.scenarios, None, range(1, schedule.runs + 1))
    failed = next((verdict for verdict in verdicts if not verdict.passed), None)
    if failed is not None:
        worse = ", ".join(d.metric for d in failed.comparison.worse) or "an expectation failed"
        return f"the sim lab's {failed.scenario} gets worse with it ({worse})"
    out.print(
        f"validated on {', '.join(markup(s) for s in schedule.scenarios)} over {schedule.runs} "
        "seeds: not worse",
        soft_wrap=True,
    )
    return ""


def scheduled_round(schedule: Schedule) -> None:
    """Train on the window, write the artifact, and hand it to the server when it does no
    worse: activated when the policy's `learning.auto_promote` says so, else as a shadow
    candidate for a person to promote."""
    status = call("GET", schedule.server, "/api/v1/learn", token=schedule.token)
    model = _learn(schedule.store, None, None, schedule.window)
    path = _save(model, schedule.out_dir)
    _report(model, path)
    why = judge(model, status, schedule.min_examples) or simulated(path, schedule)
    if why:
        out.print(f"[yellow]not submitted[/]: {markup(why)}", soft_wrap=True)
        return
    candidate = status.get("candidate")
    if status.get("agent") == "off":
        out.print("note: the policy's learning.agent is off: the model is recorded, not used")
    if (
        candidate
        and candidate["model_id"] != model.model_id
        and not str(candidate.get("source", "")).startswith(SCHEDULED)
    ):
        out.print(
            f"[yellow]not submitted[/]: {markup(candidate['model_id'])} is being tried as "
            f"{markup(candidate['mode'])} (from {markup(candidate['source'])}); it is left alone",
            soft_wrap=True,
        )
        return
    source = f"{SCHEDULED} ({path.name})"
    if status.get("auto_promote"):
        call(
            "POST", schedule.server, "/api/v1/learn/activate",
            {"model": model.body, "source": source}, schedule.token,
        )  # fmt: skip
        out.print(
            f"[green]activated[/]: {markup(model.model_id)} (learning.auto_promote is on)",
            soft_wrap=True,
        )
        return
    call(
        "POST", schedule.server, "/api/v1/learn/candidate",
        {"model": model.body, "mode": "shadow", "source": source}, schedule.token,
    )  # fmt: skip
    out.print(
        f"[green]shadow[/]: {markup(model.model_id)} runs beside the active model; promotion is "
        "left to a person (`onduty learn promote`; learning.auto_promote is off)",
        soft_wrap=True,
    )


def run_schedule(schedule: Schedule, every: timedelta | None, once: bool) -> None:
    """Rounds every `every` until SIGINT or SIGTERM (the round in progress finishes first);
    one round with `once`. A round that fails is reported and the next one tried."""
    from onduty.log import StoreError

    if once or every is None:
        scheduled_round(schedule)
        return
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, stopping) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        number = 0
        while not stop.is_set():
            number += 1
            started = time.monotonic()
            out.print(f"round {number} at {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
            try:
                scheduled_round(schedule)
            except (UsageProblem, StoreError) as problem:  # back next time, maybe
                problem_line(f"round {number}: {problem}")
            wait = max(0.0, every.total_seconds() - (time.monotonic() - started))
            if not stop.is_set():
                out.print(f"next round in {wait:.0f}s (Ctrl-C stops)")
            stop.wait(wait)
        out.print("stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@learn_app.command("train")
def train(
    store: StoreOption = "onduty.db",
    out_dir: Annotated[
        Path, typer.Option("--out", help="Where to write the model artifact.")
    ] = Path("models"),
    since: Annotated[
        datetime | None,
        typer.Option(
            help="Learn from proposals at or after this time (UTC unless it says otherwise).",
            formats=TIME_FORMATS,
        ),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option(
            help="Learn from proposals before this time (UTC unless it says otherwise).",
            formats=TIME_FORMATS,
        ),
    ] = None,
    window: Annotated[
        str | None,
        typer.Option(
            help="Learn from the proposals of this long before the log's newest event, e.g. "
            "30d (instead of --since and --until).",
            show_default=False,
        ),
    ] = None,
    schedule: Annotated[
        str | None,
        typer.Option(
            help="Train every this long (e.g. 1d) until interrupted, and hand each model that "
            "does no worse than the active one to the server at --server.",
            show_default=False,
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="One round of what --schedule does, then exit.")
    ] = False,
    server: Annotated[
        str,
        typer.Option(
            "--server", "--url", envvar="ONDUTY_URL", help="Where `onduty serve` listens."
        ),
    ] = SERVER,
    token: TokenOption = None,
    min_examples: Annotated[
        int,
        typer.Option(
            "--min-examples",
            min=1,
            help="Hand a model to the server only when it learned from "
            "at least this many action outcomes.",
        ),
    ] = 20,
    validate_scenario: Annotated[
        list[str] | None,
        typer.Option(
            "--validate-scenario",
            help="With --schedule: hand a model over only when this sim lab scenario does not "
            "get worse with it (as `onduty learn validate`); repeat for several.",
        ),
    ] = None,
    validate_runs: Annotated[int, typer.Option(min=2, help="Seeds per --validate-scenario.")] = 20,
) -> None:
    """Learn how often each action verified, by incident kind, from the log (read only), and
    write the model as model-<hash>.json with its offline evaluation. With --schedule (or
    --once), keep doing so and hand each model that does no worse to a running server: a
    shadow candidate for a person to promote, or active when the policy's
    learning.auto_promote is on."""
    since, until = _utc(since), _utc(until)
    span = _duration("--window", window)
    every = _duration("--schedule", schedule)
    if span is not None and (since is not None or until is not None):
        raise UsageProblem("--window replaces --since and --until: give one or the other")
    if since is not None and until is not None and since >= until:
        raise UsageProblem("--since must be before --until")
    if every is None and not once:
        model = _learn(store, since, until, span)
        _report(model, _save(model, out_dir))
        return
    if since is not None or until is not None:
        raise UsageProblem("--schedule trains on a --window that moves: not --since or --until")
    scenarios = tuple(validate_scenario or ())
    plan = Schedule(store, out_dir, span, server, token, min_examples, scenarios, validate_runs)
    run_schedule(plan, every, once)


# ---------------------------------------------------------------------------- a server's model


def _checked(file: Path) -> Model:
    """The artifact in `file`, checked; a problem is one line naming the file (exit 2)."""
    from onduty.learn import ModelProblem, load_model

    try:
        return load_model(file)
    except ModelProblem as problem:
        raise UsageProblem(str(problem)) from None


def status_lines(status: dict[str, Any]) -> list[str]:
    """The status `GET /api/v1/learn` answers, as lines of rich markup (data escaped)."""

    def summary(model: dict[str, Any]) -> str:
        if model["model_id"] == UNTRAINED:
            return "the prior alone"
        window = model.get("training_window") or {}
        span = f"{window.get('first_ts') or '?'} to {window.get('last_ts') or '?'}"
        return (
            f"{markup(str(model.get('examples')))} action outcomes ({markup(span)}); "
            f"{markup(_evaluation(model.get('offline_evaluation')))}"
        )

    auto = "on" if status.get("auto_promote") else "off"
    lines = [f"agent: {markup(status.get('agent', '?'))} (auto_promote {auto})"]
    active = status["active"]
    since = f", since {markup(active['activated_at'])}" if active.get("activated_at") else ""
    by = f" by {markup(active['activated_by'])}" if active.get("activated_by") else ""
    source = f" from {markup(active['source'])}" if active.get("source") else ""
    lines.append(f"active: [bold]{markup(active['model_id'])}[/]{source}{since}{by}")
    lines.append(f"  {summary(active)}")
    candidate = status.get("candidate")
    if candidate:
        selector = candidate.get("selector")
        where = f" where `{markup(selector)}`" if selector else ""
        counts = candidate.get("divergences") or {}
        diverged = sum(counts.values())
        lines.append(
            f"candidate: [bold]{markup(candidate['model_id'])}[/] as "
            f"{markup(candidate['mode'])}{where} from {markup(candidate.get('source') or '-')}; "
            f"ranked otherwise {diverged} time{'s' if diverged != 1 else ''}"
        )
        lines.append(f"  {summary(candidate)}")
    previous = status.get("previous")
    if previous:
        lines.append(f"previous: {markup(previous['model_id'])}")
    for drift in status.get("drift") or []:
        lines.append(
            f"[yellow]set aside[/] for {markup(drift['service'] or 'services without a name')}: "
            f"{markup(drift['detail'])}"
        )
    return lines


@learn_app.command("status")
def learn_status(url: UrlOption = SERVER, token: TokenOption = None) -> None:
    """The model a running server ranks with, any candidate beside it, the one before, and
    where drift set the model aside."""
    for line in status_lines(call("GET", url, "/api/v1/learn", token=token)):
        out.print(line, soft_wrap=True)


def _candidate(file: Path, mode: str, selector: str | None, url: str, token: str | None) -> None:
    model = _checked(file)
    body = {"model": model.body, "mode": mode, "selector": selector, "source": str(file)}
    result = call("POST", url, "/api/v1/learn/candidate", body, token)
    state = "" if result.get("changed", True) else " (already)"
    out.print(
        f"[green]{mode}[/]: {markup(result['model_id'])} runs beside the active model{state}",
        soft_wrap=True,
    )


FileArgument = Annotated[Path, typer.Argument(help="A model artifact (`onduty learn train`).")]


@learn_app.command("shadow")
def learn_shadow(file: FileArgument, url: UrlOption = SERVER, token: TokenOption = None) -> None:
    """Rank with FILE's model beside the active one, recording where it would choose otherwise;
    never enforced."""
    _candidate(file, "shadow", None, url, token)


@learn_app.command("canary")
def learn_canary(
    file: FileArgument,
    selector: SelectorOption,
    url: UrlOption = SERVER,
    token: TokenOption = None,
) -> None:
    """Rank with FILE's model where SELECTOR holds (with the agent on); the active model
    everywhere else."""
    _candidate(file, "canary", selector, url, token)


@learn_app.command("promote")
def learn_promote(url: UrlOption = SERVER, token: TokenOption = None) -> None:
    """Make the candidate the active model."""
    result = call("POST", url, "/api/v1/learn/promote", token=token)
    out.print(f"[green]promoted[/]: {markup(result['model_id'])} is active", soft_wrap=True)


@learn_app.command("rollback")
def learn_rollback(url: UrlOption = SERVER, token: TokenOption = None) -> None:
    """Drop the candidate; without one, go back to the previous active model (or the prior
    alone, `untrained`)."""
    result = call("POST", url, "/api/v1/learn/rollback", token=token)
    what = "candidate dropped" if result["role"] == "withdrawn" else "active"
    out.print(f"[yellow]rolled back[/]: {markup(result['model_id'])} {what}", soft_wrap=True)


@learn_app.command("activate")
def learn_activate(file: FileArgument, url: UrlOption = SERVER, token: TokenOption = None) -> None:
    """Make FILE's model active at once (for automation; a person tries it as shadow first)."""
    model = _checked(file)
    body = {"model": model.body, "source": str(file)}
    result = call("POST", url, "/api/v1/learn/activate", body, token)
    state = "is active" if result.get("changed", True) else "was active already"
    out.print(f"[green]activated[/]: {markup(result['model_id'])} {state}", soft_wrap=True)


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
