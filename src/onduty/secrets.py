"""Secrets in configuration: values written as `${ENV:NAME}` or `${FILE:/path}` references,
resolved when a component starts, redacted from everything it reports, never logged, pickled or
recorded. Shared by the pollers, the actuators and the notification channels."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from onduty.values import ENV_REFERENCE as _ENV_REFERENCE
from onduty.values import FILE_REFERENCE as _FILE_REFERENCE
from onduty.values import REFERENCE as _REFERENCE

__all__ = [
    "SecretError",
    "SecretValues",
    "Secrets",
    "known_secrets",
    "remember_secrets",
    "resolve_references",
    "unresolved",
    "unresolved_references",
]


_KNOWN: dict[str, None] = {}
_KNOWN_LOCK = threading.Lock()
_KNOWN_SORTED: list[tuple[str, ...]] = [()]
"""The register's values, the longest first (rebuilt when one is added)."""


def remember_secrets(values: Iterable[str]) -> None:
    """Add resolved secret values to the process's register of them, which the logs read to
    redact them wherever they appear (a value, a message, a traceback). Every `Secrets` built
    registers its values; so does whatever resolves a secret without one."""
    new = [value for value in values if value and value not in _KNOWN]
    if new:
        with _KNOWN_LOCK:
            for value in new:
                _KNOWN[value] = None
            _KNOWN_SORTED[0] = tuple(sorted(_KNOWN, key=len, reverse=True))


def known_secrets() -> tuple[str, ...]:
    """Every secret value resolved in this process so far, the longest first."""
    return _KNOWN_SORTED[0]


class SecretError(ValueError):
    """A secret reference could not be resolved. The message names the reference, never a
    value."""


class SecretValues:
    """Named values with their secret references resolved. Only `as_dict` gives the values;
    `repr` and `str` name the entries and nothing else."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    def as_dict(self) -> dict[str, str]:
        return dict(self._values)

    def names(self) -> list[str]:
        return sorted(self._values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.names()!r}, values redacted)"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickled, copied into a log, or sent elsewhere
        raise TypeError("resolved values hold secrets and cannot be pickled")


class Secrets:
    """Resolved secret values. `redact` replaces each of them with `[redacted]`; `repr`,
    `str` and pickling reveal nothing."""

    __slots__ = ("_values",)

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values = tuple(sorted({v for v in values if v}, key=len, reverse=True))
        remember_secrets(self._values)

    def __bool__(self) -> bool:
        return bool(self._values)

    def __or__(self, other: Secrets) -> Secrets:
        return Secrets((*self._values, *other._values))

    @property
    def longest(self) -> int:
        """The length in UTF-8 bytes of the longest secret (0 when there is none)."""
        return max((len(value.encode()) for value in self._values), default=0)

    def redact(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, "[redacted]")
        return text

    def __repr__(self) -> str:
        return f"Secrets({len(self._values)} values, redacted)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("secrets cannot be pickled")


def resolve_references(
    values: Mapping[str, str], *, what: str, env: Mapping[str, str] | None = None
) -> tuple[SecretValues, Secrets]:
    """Replace every `${ENV:NAME}` and `${FILE:/path}` in `values`.

    Returns the resolved values and the secrets among them (every substituted text, and every
    whole value that held a reference). A file's trailing line break is dropped. Errors name
    the entry and the reference, never a value."""
    environment = os.environ if env is None else env
    resolved: dict[str, str] = {}
    secrets: list[str] = []
    for name, template in values.items():

        def substitute(match: re.Match[str], entry: str = name) -> str:
            reference = match.group(1)
            env_match = _ENV_REFERENCE.match(reference)
            if env_match:
                variable = env_match.group(1)
                if variable not in environment:
                    raise SecretError(
                        f"{what} {entry!r}: environment variable {variable} is not set"
                    )
                secrets.append(environment[variable])
                return environment[variable]
            file_match = _FILE_REFERENCE.match(reference)
            if file_match:
                path = file_match.group(1)
                try:
                    text = Path(path).read_text(encoding="utf-8")
                except OSError as error:
                    raise SecretError(
                        f"{what} {entry!r}: cannot read secret file {path}: "
                        f"{error.strerror or type(error).__name__}"
                    ) from None
                except UnicodeDecodeError:
                    raise SecretError(
                        f"{what} {entry!r}: secret file {path} is not UTF-8 text"
                    ) from None
                value = text.removesuffix("\n").removesuffix("\r")
                secrets.append(value)
                return value
            raise SecretError(f"{what} {entry!r}: unknown reference ${{{reference}}}")

        value = _REFERENCE.sub(substitute, template)
        if value != template:
            secrets.append(value)
        resolved[name] = value
    return SecretValues(resolved), Secrets(secrets)


def unresolved(reference: str, env: Mapping[str, str] | None = None) -> str | None:
    """Why the reference `ENV:NAME` or `FILE:/path` (without `${}`) cannot be resolved now, or
    None when it can. Never returns or mentions a value."""
    environment = os.environ if env is None else env
    env_match = _ENV_REFERENCE.match(reference)
    if env_match:
        return None if env_match.group(1) in environment else "is not set"
    file_match = _FILE_REFERENCE.match(reference)
    if file_match:
        try:
            Path(file_match.group(1)).read_text(encoding="utf-8")
        except OSError as error:
            return f"cannot be read ({error.strerror or type(error).__name__})"
        except UnicodeDecodeError:
            return "is not UTF-8 text"
        return None
    return "is not a known kind of reference (expected ENV:NAME or FILE:/absolute/path)"


def unresolved_references(
    document: Any, where: str = "", env: Mapping[str, str] | None = None
) -> list[str]:
    """Every `${ENV:NAME}` or `${FILE:/path}` in `document` (parsed configuration: mappings,
    lists, strings) that cannot be resolved now, each as `field: secret ${...} why`, where
    `field` is the path under `where` (`actuators[0].password`). Other `${...}` text is left to
    the component that reads the field."""
    found: list[str] = []
    if isinstance(document, str):
        for reference in _REFERENCE.findall(document):
            if _ENV_REFERENCE.match(reference) or _FILE_REFERENCE.match(reference):
                reason = unresolved(reference, env)
                if reason is not None:
                    found.append(f"{where or '(top level)'}: secret ${{{reference}}} {reason}")
    elif isinstance(document, Mapping):
        for key, value in document.items():
            found += unresolved_references(value, f"{where}.{key}" if where else str(key), env)
    elif isinstance(document, list | tuple):
        for index, value in enumerate(document):
            found += unresolved_references(value, f"{where}[{index}]", env)
    return found
