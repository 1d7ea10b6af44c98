"""`onduty learn`: the learning agent's model (a preview: it proposes nothing yet).
`learn train` reads an event log (never changing it) and writes a model artifact named by its
content hash."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from onduty.cli.base import StoreOption, UsageProblem, counting, existing_log, out, progress
from onduty.textsafe import markup

learn_app = typer.Typer(
    no_args_is_help=True,
    help="The learning agent's model, learned from the log (a preview: it proposes nothing yet).",
)


def _utc(value: datetime | None) -> datetime | None:
    from datetime import UTC

    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


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
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"],
        ),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option(
            help="Learn from proposals before this time (UTC unless it says otherwise).",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"],
        ),
    ] = None,
) -> None:
    """Learn how often each action verified, by incident kind, from the log (read only), and
    write the model as model-<hash>.json with its offline evaluation."""
    from onduty.learn import save_model
    from onduty.learn import train as learn

    since, until = _utc(since), _utc(until)
    if since is not None and until is not None and since >= until:
        raise UsageProblem("--since must be before --until")
    with existing_log(store) as log:
        total = log.head()[0]
        with progress("learning", total=total) as advance:
            model = learn(counting(log.read(), advance), since=since, until=until)
    try:
        path = save_model(model, out_dir)
    except OSError as error:
        raise UsageProblem(f"--out {out_dir}: cannot write: {error.strerror or error}") from None
    body = model.body
    signatures = {tuple(sorted(row["signature"].items())) for row in body["posterior"]}
    actions = {row["action"] for row in body["posterior"]}
    out.print(
        f"learned from {body['examples']} action outcomes "
        f"({body['training_window']['events']} events): {len(actions)} actions, "
        f"{len(signatures)} signatures"
    )
    evaluation = model.evaluation
    if evaluation.get("held_out_examples"):
        out.print(
            f"held out {evaluation['held_out_examples']}: verification rate "
            f"{evaluation['held_out_verification_rate']:.0%}, Brier score "
            f"{evaluation['brier_score']:.3f} (prior alone {evaluation['prior_brier_score']:.3f}), "
            f"differs from the runbook order {evaluation['differs_from_runbook_order']:.0%}"
        )
    else:
        out.print("too few outcomes to hold any out: no offline evaluation")
    out.print(f"wrote {markup(str(path))}")
