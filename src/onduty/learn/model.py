"""The model artifact: the posterior table learned from a log, how it was made and how well it
did offline, as JSON named by its content hash (`model-<sha256[:16]>.json`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from onduty.events import Event, ModelActivated
from onduty.learn.examples import Example, Window, examples
from onduty.think.learner import (
    FEATURE_SCHEMA_VERSION,
    RESTART_BUCKETS,
    SIGNATURE_LEVELS,
    ModelBodyProblem,
    Posterior,
    Prior,
    posterior_from_body,
)

SCHEMA_VERSION = 1
HELD_OUT = 0.2
"""The latest fifth of the examples is held out for the offline evaluation."""
REQUIRED = (
    "schema_version",
    "model_id",
    "feature_schema",
    "prior",
    "min_evidence",
    "training_window",
    "examples",
    "posterior",
    "offline_evaluation",
)


class ModelProblem(ValueError):
    """Why a model artifact cannot be used (one line naming the file and what is wrong)."""


@dataclass(frozen=True)
class Model:
    posterior: Posterior
    body: dict[str, Any]
    """The artifact's content, `model_id` included."""

    @property
    def model_id(self) -> str:
        return str(self.body["model_id"])

    @property
    def evaluation(self) -> dict[str, Any]:
        return dict(self.body["offline_evaluation"])


def feature_schema() -> dict[str, Any]:
    return {
        "version": FEATURE_SCHEMA_VERSION,
        "fields": ["alertname", "service", "recent_deploy", "since_restart"],
        "since_restart_buckets": list(RESTART_BUCKETS),
        "signature_levels": [list(level) for level in SIGNATURE_LEVELS],
    }


def fit(found: Iterable[Example], prior: Prior, min_evidence: int) -> Posterior:
    posterior = Posterior(prior=prior, min_evidence=min_evidence)
    for example in found:
        assert example.outcome is not None
        posterior.observe(example.features, example.action, example.outcome)
    return posterior


def evaluate(found: list[Example], prior: Prior, min_evidence: int) -> dict[str, Any]:
    """Train on the earlier examples, score on the later ones: the held-out verification rate,
    the Brier score of the predicted probability (and of the prior alone, to compare), and how
    often the most likely action differs from the first the runbooks proposed."""
    held = max(1, round(len(found) * HELD_OUT)) if len(found) >= 2 else 0
    train_part, test_part = found[: len(found) - held], found[len(found) - held :]
    posterior = fit(train_part, prior, min_evidence)
    if not test_part:
        return {"train_examples": len(train_part), "held_out_examples": 0}
    outcomes = [1.0 if example.outcome and example.outcome.success else 0.0 for example in found]
    outcomes = outcomes[len(train_part) :]
    predicted = [posterior.evidence(e.features, e.action).mean for e in test_part]
    prior_mean = prior.alpha / (prior.alpha + prior.beta)
    differ = 0
    for example in test_part:
        best = max(
            example.candidates,
            key=lambda action: (
                posterior.evidence(example.features, action).mean,
                -example.candidates.index(action),
            ),
        )
        differ += best != example.candidates[0]
    return {
        "train_examples": len(train_part),
        "held_out_examples": len(test_part),
        "held_out_verification_rate": round(sum(outcomes) / len(outcomes), 6),
        "brier_score": round(
            sum((p - y) ** 2 for p, y in zip(predicted, outcomes, strict=True)) / len(outcomes), 6
        ),
        "prior_brier_score": round(sum((prior_mean - y) ** 2 for y in outcomes) / len(outcomes), 6),
        "differs_from_runbook_order": round(differ / len(test_part), 6),
    }


def train(
    events: Iterable[Event],
    since: datetime | None = None,
    until: datetime | None = None,
    prior: Prior | None = None,
    min_evidence: int = 3,
) -> Model:
    """The model a log teaches: deterministic, so the same log gives the same artifact."""
    prior = prior or Prior()
    window = Window()
    found = examples(events, since=since, until=until, window=window)
    posterior = fit(found, prior, min_evidence)
    body: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "feature_schema": feature_schema(),
        "prior": {"alpha": prior.alpha, "beta": prior.beta},
        "min_evidence": min_evidence,
        "training_window": {
            "first_seq": window.first_seq,
            "last_seq": window.last_seq,
            "first_ts": window.first_ts.isoformat() if window.first_ts else None,
            "last_ts": window.last_ts.isoformat() if window.last_ts else None,
            "events": window.events,
        },
        "examples": len(found),
        "posterior": [
            {
                "signature": dict(signature),
                "action": action,
                "successes": record.successes,
                "failures": record.failures,
            }
            for signature, action, record in posterior.rows()
        ],
        "offline_evaluation": evaluate(found, prior, min_evidence),
    }
    body["model_id"] = model_id(body)
    return Model(posterior=posterior, body=body)


def canonical(body: dict[str, Any]) -> bytes:
    content = {key: value for key, value in body.items() if key != "model_id"}
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def model_id(body: dict[str, Any]) -> str:
    return "model-" + hashlib.sha256(canonical(body)).hexdigest()[:16]


def save_model(model: Model, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{model.model_id}.json"
    path.write_text(json.dumps(model.body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def load_model(path: Path) -> Model:
    """A model artifact back, or a `ModelProblem` naming the file and what is wrong with it."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ModelProblem(f"{path}: cannot read: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelProblem(f"{path}: not a model artifact: bad JSON ({error})") from None
    model = model_from_body(body, where=str(path))
    if path.stem.startswith("model-") and path.stem != model.model_id:
        raise ModelProblem(f"{path}: hash mismatch: the content hashes to {model.model_id}")
    return model


def model_from_body(body: Any, where: str = "model") -> Model:
    """An artifact's parsed content checked as `load_model` checks a file (a model sent over
    HTTP is checked the same way); `where` names it in the `ModelProblem`."""
    if not isinstance(body, dict):
        raise ModelProblem(f"{where}: not a model artifact: a JSON object is expected")
    missing = [name for name in REQUIRED if name not in body]
    if missing:
        raise ModelProblem(f"{where}: missing field {', '.join(missing)}")
    if body["schema_version"] != SCHEMA_VERSION:
        raise ModelProblem(
            f"{where}: schema_version {body['schema_version']!r} is not supported "
            f"(this onduty reads {SCHEMA_VERSION})"
        )
    features = body["feature_schema"]
    if not isinstance(features, dict) or features.get("version") != FEATURE_SCHEMA_VERSION:
        found = features.get("version") if isinstance(features, dict) else features
        raise ModelProblem(
            f"{where}: feature_schema version {found!r} is not {FEATURE_SCHEMA_VERSION!r}"
        )
    expected = model_id(body)
    if body["model_id"] != expected:
        raise ModelProblem(
            f"{where}: hash mismatch: the content hashes to {expected}, "
            f"the artifact says {body['model_id']!r} (changed after it was written?)"
        )
    try:
        posterior = posterior_from_body(body)
    except ModelBodyProblem as error:
        raise ModelProblem(f"{where}: {error}") from None
    return Model(posterior=posterior, body=body)


def model_activation(path: str | None, active_model_id: str) -> ModelActivated | None:
    """The input that makes the artifact at `path` (a configuration's `learning.model`) the
    active model, or None when there is none or it is active already."""
    if path is None:
        return None
    model = load_model(Path(path))
    if model.model_id == active_model_id:
        return None
    return ModelActivated(model_id=model.model_id, model=model.body, source=path, role="active")
