"""Conditions (CEL) and templates (sandboxed Jinja2), compiled once and evaluated many times.

Shared by the runbook agent (`when`, `target`) and the guardrails (`when`); both are pure
computations, so the deterministic core may use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cel
import jinja2
from jinja2.sandbox import SandboxedEnvironment

_TEMPLATES = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


class ExpressionError(ValueError):
    """A condition or template that cannot be evaluated against a given context."""


def prepare(context: dict[str, Any]) -> Any:
    """Convert a context to CEL values once; evaluating several conditions against the prepared
    context is ~60x cheaper than handing each one the Python dict."""
    return cel.Context(context)


@dataclass(frozen=True)
class Condition:
    """A compiled CEL boolean condition."""

    source: str
    program: Any

    @classmethod
    def compile(cls, source: str) -> Condition:
        try:
            return cls(source, cel.compile(source))
        except (ValueError, RuntimeError) as error:
            raise ExpressionError(f"not a valid CEL expression: {error}") from None

    def holds(self, context: Any) -> bool:
        """True only when the condition evaluates to boolean true.

        `context` is a dict of variables or a `prepare`d one. A condition that refers to
        something absent from the context (a label the signal does not carry) does not hold:
        conditions never guess.
        """
        try:
            result = self.program.execute(context)
        except (ValueError, RuntimeError, TypeError, KeyError):
            return False
        return result is True


@dataclass(frozen=True)
class Template:
    """A compiled text template; a missing variable is an error, never an empty string."""

    source: str
    compiled: jinja2.Template

    @classmethod
    def compile(cls, source: str) -> Template:
        try:
            return cls(source, _TEMPLATES.from_string(source))
        except jinja2.TemplateSyntaxError as error:
            raise ExpressionError(f"not a valid template: {error.message}") from None

    def render(self, context: dict[str, Any]) -> str:
        try:
            return self.compiled.render(context).strip()
        except jinja2.UndefinedError as error:
            raise ExpressionError(f"template {self.source!r}: {error.message}") from None
        except jinja2.TemplateError as error:
            raise ExpressionError(f"template {self.source!r}: {error}") from None
