"""docs/configuration.md is generated from the configuration models and cannot drift: a field
added, renamed, re-defaulted or re-described without `make docs` fails here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel

from onduty.config import Config

ROOT = Path(__file__).resolve().parents[1]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "scripts" / "config_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_committed_reference_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == generator().render(), (
        "docs/configuration.md is stale: run `make docs` (python scripts/config_reference.py "
        "--write) and commit it"
    )


def every_model() -> list[type[BaseModel]]:
    reference = generator()
    found: dict[type[BaseModel], list[str]] = {}
    for name, field in Config.model_fields.items():
        annotation = reference.field_type(Config, name, field)
        for model in reference.models_in(annotation):
            reference.paths(name, model, found)
    return [Config, *found]


def test_every_field_of_every_section_is_described() -> None:
    undescribed = [
        f"{model.__name__}.{name}"
        for model in every_model()
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert undescribed == []
    assert len(every_model()) > 30


def test_the_reference_names_every_section_field_and_variable() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for section in ("services[]", "runbooks[].do[]", "policy.guardrails[].blast",
                    "actuators[]` with `kind: shell", "channels[]` with `kind: email",
                    "access.tokens[]", "escalation.default[]"):  # fmt: skip
        assert f"### `{section}" in text, section
    for field in ("`group_wait`", "`flap_threshold`", "`max_output`", "`hash_env`", "`for`"):
        assert field in text
    for variable in ("`signal.labels`", "`counts.open_incidents`", "`known-target`", "`autonomy`"):
        assert variable in text
    assert "whose `instances` list its `instance` label" in text  # how an alert finds its service
    assert "`ActionSucceeded` with the output" in text  # what actuators do with output
