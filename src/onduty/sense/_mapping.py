"""How a sender's fields become a Signal's labels and annotations, so that none is lost.

The rule every wire format follows (the README's "What each field becomes" lists them):

- the well-known names `alertname`, `service`, `instance` and `severity` are labels (what
  incidents group, match and route by), when their value is a string;
- every other field is an annotation under its own name: a string as it is, anything else
  (a number, a boolean, null, a list, a nested object) as compact JSON text with sorted keys,
  e.g. `{"team":"payments","slack":"#oncall"}` -> `{"slack":"#oncall","team":"payments"}`;
- two fields never share a name: when a name is taken by another value, the later field is
  kept under the alternate name its format gives it (`custom_details.summary`,
  `labels.service`), and failing that under `<name>#2`, `<name>#3`, ...;
- data that is not JSON at all is kept whole: as the annotation `data` when it is text, and as
  `data_base64` (its bytes in base64) when it is not.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec

LABEL_NAMES = ("alertname", "service", "instance", "severity")
"""Field names that become labels rather than annotations."""


def as_text(value: Any) -> str:
    """A field's value as annotation text: a string as it is, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value, order="sorted").decode()


def keep(target: dict[str, str], name: str, value: str, *alternates: str) -> None:
    """Put `value` under `name`; when that name holds another value, under the first of
    `alternates` that is free (or already holds this value), else under `<last>#2`, `#3`...
    A value is never dropped, nor does it replace another."""
    candidates = (name, *alternates)
    for candidate in candidates:
        held = target.get(candidate)
        if held is None:
            target[candidate] = value
            return
        if held == value:
            return
    base, count = candidates[-1], 2
    while True:
        candidate = f"{base}#{count}"
        held = target.get(candidate)
        if held is None or held == value:
            target[candidate] = value
            return
        count += 1


def opaque(data: bytes, charset: str | None = None) -> tuple[str, str]:
    """Bytes that are not JSON, as an annotation: `("data", text)` when they decode as text
    (in `charset`, else UTF-8), else `("data_base64", base64 of the bytes)`."""
    for encoding in (charset, "utf-8") if charset else ("utf-8",):
        try:
            return "data", data.decode(encoding)
        except (LookupError, ValueError):  # not a text encoding Python knows; not this text
            continue
    return "data_base64", base64.b64encode(data).decode("ascii")
