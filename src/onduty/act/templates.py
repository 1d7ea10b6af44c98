"""Rendering the templates of actuator specs, safely.

Templates are Jinja2, rendered in an immutable sandbox with `StrictUndefined`: a missing
variable is an error that names it, never an empty string. The context of an action is
`target`, `action`, `params`, `incident_id` and `command_id`; the context of a check (which
knows nothing but the command id) is `command_id` alone. Which variables a template may use is
checked when the configuration is validated.

A value is substituted once and never parsed again, so whatever a target or a parameter holds
(shell metacharacters, `../`, `--flags`, Jinja syntax) stays data:

- **argv** (`render_argv`): each element renders to exactly one argument, passed to the program
  without a shell. An argument that renders empty or holds a NUL byte is refused.
- **URLs** (`render_url`): every `{{ expression }}` is percent-encoded as a path segment or a
  query value, `/`, `?`, `#`, `&`, `=`, `%`, `@` and `:` included, so a value can neither add a
  path segment nor a query parameter nor change the host. Writing `| urlencode` yourself does
  not encode twice. A value that would render `.`, `..` or nothing is refused (dot segments are
  collapsed by URL normalisation; an empty segment changes the route).
- **regular expressions** (`render_regex`): every expression is escaped, so a value matches
  itself and nothing else.
- **JSON bodies** (`render_json`): every string leaf of the structure is a template of its own;
  a leaf that is exactly one `{{ expression }}` keeps the expression's JSON type (a number stays
  a number). A value can never add keys or elements.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import jinja2
from jinja2 import StrictUndefined, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from onduty.commands import StartAction, StartUndo

ACTION_VARIABLES = frozenset({"target", "action", "params", "incident_id", "command_id"})
"""What the templates of an action may use."""
CHECK_VARIABLES = frozenset({"command_id"})
"""What the templates of a check may use: a check is asked about a command id, nothing else."""


class TemplateError(ValueError):
    """A template that cannot be used or rendered; the message names the template and why."""


class _Encoded(str):
    """A value already percent-encoded by an explicit `urlencode` filter."""

    __slots__ = ()


def _no_none(value: Any) -> Any:
    if value is None:
        raise TemplateError("an expression rendered None (a parameter is null)")
    return value


def _url_value(value: Any) -> str:
    if isinstance(value, _Encoded):
        return str(value)
    text = str(_no_none(value))
    if text in ("", ".", ".."):
        raise TemplateError(f"a URL value cannot be {text!r}: it would change the path")
    return quote(text, safe="")


def _urlencode(value: Any) -> _Encoded:
    return _Encoded(_url_value(value))


_REGEX_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")


def regex_escape(text: str) -> str:
    """Escape the characters RE2 (Alertmanager, Prometheus) gives a meaning to."""
    return _REGEX_SPECIAL.sub(r"\\\1", text)


def _regex_value(value: Any) -> str:
    return regex_escape(str(_no_none(value)))


def _environment(finalize: Callable[[Any], Any]) -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=finalize,
    )
    return environment


_TEXT = _environment(_no_none)
_URL = _environment(_url_value)
_URL.filters["urlencode"] = _urlencode
_REGEX = _environment(_regex_value)
_NATIVE = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_SINGLE_EXPRESSION = re.compile(r"^\{\{(?P<expression>(?:(?!\{\{|\}\}).)*)\}\}$", re.DOTALL)


def check_template(
    text: str, *, variables: frozenset[str] = ACTION_VARIABLES, where: str = "template"
) -> str:
    """A template that parses and uses only `variables`; returns it unchanged."""
    if "\x00" in text:
        raise TemplateError(f"{where}: a template cannot contain a NUL byte")
    try:
        parsed = _TEXT.parse(text)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(
            f"{where}: not a valid template (line {error.lineno}): {error.message}"
        ) from None
    unknown = sorted(meta.find_undeclared_variables(parsed) - variables)
    if unknown:
        raise TemplateError(
            f"{where}: unknown variable {', '.join(repr(name) for name in unknown)} "
            f"(available: {', '.join(sorted(variables))})"
        )
    return text


def is_constant(text: str) -> bool:
    """True when the template has no expressions or blocks: it renders to itself."""
    return "{{" not in text and "{%" not in text and "{#" not in text


def command_context(command: StartAction | StartUndo) -> dict[str, Any]:
    return {
        "target": command.target,
        "action": command.action,
        "params": dict(command.params),
        "incident_id": command.incident_id,
        "command_id": command.command_id,
    }


def check_context(command_id: str) -> dict[str, Any]:
    return {"command_id": command_id}


@functools.lru_cache(maxsize=512)
def _compile(environment: ImmutableSandboxedEnvironment, text: str) -> jinja2.Template:
    return environment.from_string(text)


# What rendering or evaluating may raise; `_reason` says why, in the message's words.
_RENDER_ERRORS = (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError)


def _reason(error: Exception) -> str:
    if isinstance(error, jinja2.UndefinedError):
        return f"{error.message}"
    if isinstance(error, SecurityError):
        return f"refused by the sandbox: {error}"
    if isinstance(error, jinja2.TemplateError):
        return f"{error}"
    return f"{type(error).__name__}: {error}"


def _render(
    environment: ImmutableSandboxedEnvironment, text: str, context: Mapping[str, Any], where: str
) -> str:
    try:
        return _compile(environment, text).render(dict(context))
    except TemplateError as error:
        raise TemplateError(f"{where} ({text!r}): {error}") from None
    except _RENDER_ERRORS as error:
        raise TemplateError(f"{where} ({text!r}): {_reason(error)}") from None


def render_text(text: str, context: Mapping[str, Any], *, where: str = "template") -> str:
    return _render(_TEXT, text, context, where)


def render_argv(
    templates: Sequence[str], context: Mapping[str, Any], *, where: str = "argv"
) -> list[str]:
    """One argument per template, never split; an empty argument or a NUL byte is refused."""
    argv: list[str] = []
    for index, template in enumerate(templates):
        label = f"{where}[{index}]"
        argument = _render(_TEXT, template, context, label)
        if argument == "":
            raise TemplateError(f"{label} ({template!r}) renders an empty argument")
        if "\x00" in argument:
            raise TemplateError(f"{label} ({template!r}) renders a NUL byte")
        argv.append(argument)
    return argv


def render_url(text: str, context: Mapping[str, Any], *, where: str = "url") -> str:
    """Every expression's value percent-encoded (slashes included)."""
    return _render(_URL, text, context, where)


def render_regex(text: str, context: Mapping[str, Any], *, where: str = "regex") -> str:
    """Every expression's value escaped, so that it matches itself literally."""
    return _render(_REGEX, text, context, where)


def _json_compatible(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list | tuple):
        return all(_json_compatible(item) for item in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _json_compatible(v) for k, v in value.items())
    return False


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(item) for item in value]
    return value


def _evaluate(expression: str, context: Mapping[str, Any], where: str) -> Any:
    try:
        compiled = _NATIVE.compile_expression(expression, undefined_to_none=False)
        value = compiled(**context)
        if isinstance(value, jinja2.Undefined):
            str(value)  # StrictUndefined raises, naming what is missing
            raise TemplateError(f"{where}: the expression is undefined")
    except _RENDER_ERRORS as error:
        raise TemplateError(f"{where}: {_reason(error)}") from None
    return value


def render_json(value: Any, context: Mapping[str, Any], *, where: str = "body") -> Any:
    """A JSON structure whose string leaves are templates, each rendered on its own."""
    if isinstance(value, str):
        single = _SINGLE_EXPRESSION.match(value.strip())
        if single is not None:
            native = _evaluate(single.group("expression"), context, f"{where} ({value!r})")
            if _json_compatible(native):
                return _thaw(native)
        return render_text(value, context, where=where)
    if isinstance(value, Mapping):
        return {
            key: render_json(item, context, where=f"{where}.{key}") for key, item in value.items()
        }
    if isinstance(value, list):
        return [render_json(item, context, where=f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def json_templates(value: Any, where: str = "body") -> Iterable[tuple[str, str]]:
    """Every string leaf of a JSON structure with its location: (where, template)."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from json_templates(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_templates(item, f"{where}[{index}]")
