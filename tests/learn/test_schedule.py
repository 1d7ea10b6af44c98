"""What scheduled training hands to a server: a model that learned from enough outcomes and
does no worse than the active one (or the prior alone) on its held-out examples."""

from __future__ import annotations

from typing import Any

from onduty.cli.learn import judge
from onduty.learn.model import Model
from onduty.think.learner import Posterior


def model(examples: int, brier: float | None, model_id: str = "model-new") -> Model:
    evaluation: dict[str, Any] = {"held_out_examples": 0}
    if brier is not None:
        evaluation = {"held_out_examples": 4, "brier_score": brier, "prior_brier_score": 0.25}
    body = {"model_id": model_id, "examples": examples, "offline_evaluation": evaluation}
    return Model(posterior=Posterior(), body=body)


def status(active_brier: float | None, candidate: str = "", auto: bool = False) -> dict[str, Any]:
    active: dict[str, Any] = {"model_id": "untrained", "offline_evaluation": None}
    if active_brier is not None:
        active = {"model_id": "model-old", "offline_evaluation": {"brier_score": active_brier}}
    found = {"model_id": candidate, "mode": "shadow"} if candidate else None
    return {"active": active, "candidate": found, "auto_promote": auto}


def test_a_model_no_worse_than_the_active_one_is_handed_over() -> None:
    assert judge(model(30, 0.10), status(0.10), 20) == ""
    assert judge(model(30, 0.20), status(None), 20) == ""  # against the prior alone's 0.25


def test_what_is_kept_back_says_why() -> None:
    assert "worse than the active model's (model-old) 0.100" in judge(
        model(30, 0.12), status(0.10), 20
    )
    assert "worse than the prior alone's 0.250" in judge(model(30, 0.30), status(None), 20)
    assert "fewer than --min-examples 20" in judge(model(19, 0.01), status(0.1), 20)
    assert "no offline evaluation" in judge(model(30, None), status(0.1), 20)
    assert "is the active model already" in judge(model(30, 0.1, "model-old"), status(0.1), 20)
    assert "is the candidate already" in judge(model(30, 0.1), status(0.2, "model-new"), 20)
    # with auto_promote, the schedule's own candidate may be activated
    assert judge(model(30, 0.1), status(0.2, "model-new", auto=True), 20) == ""
