"""Write docs/configuration.md from the configuration models, so that it cannot drift.

Every section and field comes from the pydantic models that validate it (their names, types,
defaults and descriptions — the models' attribute docstrings); the variables of conditions and
templates from the tables the linters check them with; the built-in guardrails from their
classes. Run `make docs` (or `python scripts/config_reference.py --write`) after changing any of
them; tests/test_config_reference.py fails while the committed file is stale.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import types
from collections.abc import Iterator
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from onduty.act.templates import ACTION_VARIABLES, CHECK_VARIABLES
from onduty.config import Config, format_duration, sections
from onduty.configcheck import MEANINGS, TEMPLATE_VARIABLES
from onduty.govern.autonomy import AutonomyLevel
from onduty.govern.target import KnownTarget
from onduty.govern.variables import COUNTS, FIELDS, KNOWN_VARIABLES

BUILTIN_RULES = (KnownTarget(), AutonomyLevel())
BUILTIN_DETAILS = {
    "known-target": (
        "It denies an action whose target rendered empty, a target that is neither a configured "
        "instance nor a service, and a target of another service than the incident's."
    ),
    "autonomy": (
        "It applies the service's level (`services[].autonomy`, capped by the runbook's "
        "`autonomy`): `observe` records only and `suggest` proposes to humans (both deny the "
        "action), `approve` requires an approval (`policy.approvals`), `act` allows it within "
        "the other guardrails. A service raised at run time needs as many admins as an approval "
        "needs approvers; lowering is immediate."
    ),
}
"""What the built-in rules do, beyond their docstrings (a test checks each has an entry)."""

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

INTRO = """\
# Configuration reference

<!-- Generated from the configuration models by `make docs` (scripts/config_reference.py).
     Do not edit by hand: change the models' descriptions and regenerate. -->

onduty reads one YAML file (`onduty serve -c onduty.yaml`, `onduty sim … -c`, `onduty replay
… -c`). `onduty config check FILE` validates it: every bad field is named with its line (and,
when misspelt, the field probably meant), exit 2; what would not work as it reads (an action no
actuator provides, an escalation that pages nobody, a template naming a label that does not
exist, a secret not set here) is a warning, exit 0. Unknown fields are errors everywhere.

- **Durations** are written `250ms`, `30s`, `5m`, `1h`, `1d` (or a number of seconds).
- **Secrets** are never written in the file, which is recorded in the event log: where a field
  says it may reference one, write `${ENV:NAME}` or `${FILE:/absolute/path}`; it is resolved
  when `serve` starts (an unset one stops it, naming the field).
- **Conditions** (`when`) are CEL expressions over the variables in "CEL variables" below;
  **templates** are Jinja2 (`{{ signal.labels.instance }}`), see "Template variables".
- The core decides by everything except `store`, `bus`, `sources`, `actuators`, `channels`,
  `access` and `server`, which only the running process reads; the rest is recorded as the
  policy, named by its content hash (the policy version).
"""


# ---------------------------------------------------------------------------- types


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _validators(field: FieldInfo) -> set[str]:
    names = set()
    for item in field.metadata:
        function = getattr(item, "func", None)
        if function is not None:
            names.add(getattr(function, "__name__", ""))
    return names


def type_text(annotation: Any, field: FieldInfo | None = None) -> str:
    """A type as people read it: `duration`, `list of string`, one of `a`, `b`."""
    checks = _validators(field) if field is not None else set()
    if get_origin(annotation) is Annotated:
        checks |= {
            getattr(getattr(m, "func", None), "__name__", "") for m in annotation.__metadata__
        }
    if "_check_condition" in checks:
        return "CEL condition"
    if "_check_template" in checks:
        return "template"
    annotation = _strip(annotation)
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return " or ".join(dict.fromkeys(type_text(member) for member in members))
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    if origin is list:
        return f"list of {type_text(get_args(annotation)[0])}"
    if origin is dict:
        key, value = get_args(annotation)
        return f"map of {type_text(key)} to {type_text(value)}"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "mapping"
        if issubclass(annotation, bool):
            return "boolean"
        if issubclass(annotation, Enum):
            return "one of " + ", ".join(f"`{member.name.lower()}`" for member in annotation)
        return {
            str: "string",
            int: "integer",
            float: "number",
            timedelta: "duration",
        }.get(annotation, annotation.__name__)
    return "any JSON value" if "JsonValue" in str(annotation) else str(annotation)


def _plain(value: Any) -> Any:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Enum):
        return value.name.lower()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "see below"
    plain = _plain(value)
    if plain in ([], {}):
        return "none" if plain == [] else "`{}`"
    text = plain if isinstance(plain, str) else json.dumps(plain, ensure_ascii=False)
    if isinstance(plain, str) and plain == "":
        return '`""`'
    return f"`{text}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# ---------------------------------------------------------------------------- models


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's type holds (a list's items, a map's values, a union's members)."""
    found: list[type[BaseModel]] = []
    annotation = _strip(annotation)
    origin = get_origin(annotation)
    if origin in (list, dict, Union, types.UnionType):
        for argument in get_args(annotation):
            found.extend(models_in(argument))
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    return found


def field_type(model: type[BaseModel], name: str, field: FieldInfo) -> Any:
    if model is Config and name in sections():
        return sections()[name]
    return field.annotation


def kind_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("kind")
    if field is not None and get_origin(_strip(field.annotation)) is Literal:
        return str(get_args(_strip(field.annotation))[0])
    return None


def container_suffix(annotation: Any) -> str:
    annotation = _strip(annotation)
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return container_suffix(members[0]) if len(members) == 1 else ""
    if origin is list:
        return "[]"
    if origin is dict:
        inner = get_args(annotation)[1]
        return ".<name>" + container_suffix(inner)
    return ""


def docstring(model: type[BaseModel]) -> str:
    own = model.__dict__.get("__doc__")
    return inspect.cleandoc(own) if own else ""


def table(model: type[BaseModel]) -> Iterator[str]:
    yield "| field | type | default | meaning |"
    yield "|---|---|---|---|"
    for name, field in model.model_fields.items():
        annotation = field_type(model, name, field)
        shown = field.alias or name
        yield (
            f"| `{shown}` | {_cell(type_text(annotation, field))} | {_cell(default_text(field))} "
            f"| {_cell(field.description or '')} |"
        )


def paths(path: str, model: type[BaseModel], found: dict[type[BaseModel], list[str]]) -> None:
    """Every place each model is used, in document order."""
    seen = found.setdefault(model, [])
    if path in seen:
        return
    seen.append(path)
    if len(seen) > 1:
        return
    for name, field in model.model_fields.items():
        annotation = field_type(model, name, field)
        for inner in models_in(annotation):
            paths(f"{path}.{field.alias or name}{container_suffix(annotation)}", inner, found)


def section(
    path: str,
    model: type[BaseModel],
    done: set[type[BaseModel]],
    found: dict[type[BaseModel], list[str]],
) -> Iterator[str]:
    """A model's table under its path, then the models inside it."""
    if model in done:
        return
    done.add(model)
    kind = kind_of(model)
    yield f"### `{path}`" + (f" with `kind: {kind}`" if kind else "")
    yield ""
    also = [other for other in found.get(model, []) if other != path]
    if also:
        yield "Also at " + ", ".join(f"`{other}`" for other in also) + "."
        yield ""
    text = docstring(model)
    if text and not text.startswith("!"):
        yield text
        yield ""
    yield from table(model)
    yield ""
    for name, field in model.model_fields.items():
        annotation = field_type(model, name, field)
        for inner in models_in(annotation):
            inner_path = f"{path}.{field.alias or name}{container_suffix(annotation)}"
            yield from section(inner_path, inner, done, found)


def top_level() -> Iterator[str]:
    yield "## Top level"
    yield ""
    yield from table(Config)
    yield ""
    done: set[type[BaseModel]] = {Config}
    found: dict[type[BaseModel], list[str]] = {}
    for name, field in Config.model_fields.items():
        annotation = field_type(Config, name, field)
        for model in models_in(annotation):
            paths(f"{name}{container_suffix(annotation)}", model, found)
    for name, field in Config.model_fields.items():
        annotation = field_type(Config, name, field)
        inner = models_in(annotation)
        if not inner:
            continue
        yield f"## `{name}`"
        yield ""
        yield _cell(field.description or "")
        yield ""
        for model in inner:
            if name == "actuators" and model.__base__ is not BaseModel:
                shared = docstring(model.__base__)  # what every actuator shares
                if shared and model.__base__ not in done:
                    done.add(model.__base__)
                    yield shared
                    yield ""
            yield from section(f"{name}{container_suffix(annotation)}", model, done, found)


# ---------------------------------------------------------------------------- variables


def cel_variables() -> Iterator[str]:
    yield "## CEL variables"
    yield ""
    yield (
        "Runbook conditions (`runbooks[].when`) see `signal`, `incident`, `service` and `now`; "
        "guardrail conditions (`policy.guardrails[].when`) see those and `action`, `target` and "
        "`counts`. `onduty policy check` names a variable or field that does not exist."
    )
    yield ""
    yield "| variable | type | meaning |"
    yield "|---|---|---|"
    for variable in KNOWN_VARIABLES:
        kind = "timestamp" if variable == "now" else "map"
        yield f"| `{variable}` | {kind} | {_cell(MEANINGS[variable])} |"
        fields = FIELDS.get(variable, {})
        if variable == "counts":
            fields = dict.fromkeys(COUNTS, "int")
        for name, field_kind in fields.items():
            shown = "map of string to string" if field_kind == "map" else field_kind
            yield f"| `{variable}.{name}` | {shown} | {_cell(MEANINGS[f'{variable}.{name}'])} |"
    yield ""


def template_variables() -> Iterator[str]:
    yield "## Template variables"
    yield ""
    yield (
        "A runbook step's `target` (`runbooks[].do[].target`, `runbooks[].undo[].target`) is "
        "rendered from these; a variable that does not exist fails the render (the step then "
        "has no target and `known-target` refuses it), which `onduty config check` warns about:"
    )
    yield ""
    for variable, fields in TEMPLATE_VARIABLES.items():
        listed = ", ".join(f"`{variable}.{name}`" for name in fields)
        yield f"- `{variable}`: {MEANINGS[variable]}" + (f" ({listed})" if listed else "")
    yield ""
    yield (
        "An actuator's templates (`argv`, `url`, `body`, `program`, silence matchers) see "
        + ", ".join(f"`{name}`" for name in sorted(ACTION_VARIABLES))
        + "; its checks (`check_argv`, `check_url`) see "
        + ", ".join(f"`{name}`" for name in sorted(CHECK_VARIABLES))
        + " only. Each value renders to exactly one argument or one percent-encoded URL "
        "segment, so a label full of `;`, `$()` or `../` stays data."
    )
    yield ""


def builtin_guardrails() -> Iterator[str]:
    yield "## Built-in guardrails"
    yield ""
    yield (
        "Every proposal passes these before the configured guardrails; they cannot be turned "
        "off. The circuit breaker (`policy.breaker`) is built in too."
    )
    yield ""
    for rule in BUILTIN_RULES:
        yield f"- `{rule.name}`: {_cell(docstring_of(type(rule)))} {BUILTIN_DETAILS[rule.name]}"
    yield ""


def docstring_of(cls: type) -> str:
    return inspect.cleandoc(cls.__doc__ or "")


def render() -> str:
    lines = [INTRO, *top_level(), *cel_variables(), *template_variables(), *builtin_guardrails()]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {OUTPUT}")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    arguments = parser.parse_args()
    text = render()
    if arguments.check:
        stale = not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text
        if stale:
            print(f"{OUTPUT} is stale: run `make docs`", file=sys.stderr)
        return 1 if stale else 0
    if arguments.write:
        OUTPUT.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
