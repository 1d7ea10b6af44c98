"""The `sources:` section of the configuration: pollers that turn what they observe into
signals (`http_probe`, `prometheus`). Pure models, checked when the configuration is; the
running sources are in `onduty.sense.pollers`, `probe` and `prometheus`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from onduty.httpbits import Headers, check_http_url
from onduty.values import Duration, format_duration

__all__ = [
    "COMPARE",
    "DEFAULT_RESEND",
    "HttpProbe",
    "Operator",
    "PrometheusQuery",
    "Source",
    "SourceSpec",
    "parse_sources",
]

DEFAULT_RESEND = timedelta(minutes=5)


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _check_labels(labels: dict[str, str], reserved: Iterable[str]) -> dict[str, str]:
    taken = set(reserved)
    for name in labels:
        if not _LABEL_NAME.match(name):
            raise ValueError(f"label name {name!r} is not a valid Prometheus label name")
        if name.startswith("__"):
            raise ValueError(f"label name {name!r} is reserved (names starting with __)")
        if name in taken:
            raise ValueError(f"label {name!r} is set by the source itself and cannot be configured")
    return labels


def _check_url(value: str) -> str:
    return check_http_url(
        value,
        credentials="credentials in the URL would be recorded and shown; send them as a header "
        "that references ${ENV:NAME} or ${FILE:/path}",
    )


def _parse_status_class(value: Any) -> Any:
    """200, "2xx", [200, 204], ["2xx", 404] → a sorted list of status codes."""
    items = value if isinstance(value, list | tuple) else [value]
    codes: set[int] = set()
    for item in items:
        if isinstance(item, bool):
            raise ValueError(f"expected a status code such as 200 or a class such as 2xx: {item!r}")
        if isinstance(item, int):
            codes.add(item)
            continue
        if isinstance(item, str):
            text = item.strip().lower()
            if re.fullmatch(r"[1-5]xx", text):
                first = int(text[0]) * 100
                codes.update(range(first, first + 100))
                continue
            if text.isdigit():
                codes.add(int(text))
                continue
        raise ValueError(f"expected a status code such as 200 or a class such as 2xx: {item!r}")
    return sorted(codes)


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class _SourceModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    """The source's name (letters, digits, `_.:-`): the signals' `source`, and part of their
    fingerprint."""
    url: str
    """What is polled: the probed URL, or Prometheus's base URL."""
    interval: Duration = timedelta(seconds=30)
    """How often it polls."""
    timeout: Duration = timedelta(seconds=5)
    """The limit of one poll; shorter than `interval`."""
    resend: Duration = DEFAULT_RESEND
    """How often a firing signal is sent again while it keeps firing (Prometheus's
    `resend_delay` as Alertmanager sees it)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to every signal (e.g. `service`, `instance`, so that it is placed)."""
    headers: Headers = Field(default_factory=dict)
    """Request headers; values may reference `${ENV:NAME}` or `${FILE:/path}`."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)

    @model_validator(mode="after")
    def _timing(self) -> _SourceModel:
        if self.interval <= timedelta(0):
            raise ValueError("interval must be positive")
        if self.timeout <= timedelta(0):
            raise ValueError("timeout must be positive")
        if self.timeout >= self.interval:
            raise ValueError(
                f"timeout ({format_duration(self.timeout)}) must be shorter than the interval "
                f"({format_duration(self.interval)})"
            )
        if self.resend <= timedelta(0):
            raise ValueError("resend must be positive")
        return self


class HttpProbe(_SourceModel):
    """An HTTP health check: unhealthy on an unexpected status, a timeout or a connection
    error; firing after `failures_before_firing` unhealthy probes in a row."""

    kind: Literal["http_probe"]
    """`http_probe`."""
    method: Annotated[Literal["GET", "HEAD"], BeforeValidator(_upper)] = "GET"
    """`GET` or `HEAD`."""
    expect_status: Annotated[list[int], BeforeValidator(_parse_status_class)] = Field(
        default_factory=lambda: [200]
    )
    """Accepted statuses: a code (200), a class ("2xx"), or a list of either."""
    failures_before_firing: int = Field(default=1, ge=1)
    """Unhealthy probes in a row before the signal fires (`alertname: ProbeFailed`)."""

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, codes: list[int]) -> list[int]:
        if not codes:
            raise ValueError("expect at least one status code")
        for code in codes:
            if not 100 <= code <= 599:
                raise ValueError(f"{code} is not an HTTP status code (100-599)")
        return codes

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        return _check_labels(labels, reserved=("alertname", "probe"))


Operator = Literal[">", ">=", "<", "<=", "==", "!="]

COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": lambda value, threshold: value > threshold,
    ">=": lambda value, threshold: value >= threshold,
    "<": lambda value, threshold: value < threshold,
    "<=": lambda value, threshold: value <= threshold,
    "==": lambda value, threshold: value == threshold,
    "!=": lambda value, threshold: value != threshold,
}


class PrometheusQuery(_SourceModel):
    """An instant PromQL query whose every series is compared with a threshold; a series for
    which `value <op> threshold` holds for `for` fires, like a Prometheus alerting rule."""

    kind: Literal["prometheus"]
    """`prometheus`."""
    query: str = Field(min_length=1)
    """An instant PromQL query; each series is a signal of its own, labelled with the series'
    labels."""
    op: Operator
    """How each series' value is compared with `threshold`: `>`, `>=`, `<`, `<=`, `==`, `!=`."""
    threshold: float
    """The value compared with."""
    timeout: Duration = timedelta(seconds=10)
    """The limit of one query; shorter than `interval`."""
    for_: Duration = Field(default=timedelta(0), alias="for")
    """How long the comparison must hold before the signal fires (`for`, as in a Prometheus alerting
    rule)."""
    alertname: str = ""
    """The `alertname` label of the signals; empty means the source's name."""

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if math.isnan(value):
            raise ValueError("the threshold cannot be NaN")
        return value

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.query or parts.fragment:
            raise ValueError("the Prometheus URL is a base URL: no query string or fragment")
        return value.rstrip("/")

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        return _check_labels(labels, reserved=("alertname",))

    @model_validator(mode="before")
    @classmethod
    def _default_alertname(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("alertname") and data.get("name"):
            return {**data, "alertname": data["name"]}
        return data


Source = Annotated[HttpProbe | PrometheusQuery, Field(discriminator="kind")]

_SOURCES: TypeAdapter[list[HttpProbe | PrometheusQuery]] = TypeAdapter(list[Source])


def parse_sources(raw: Any) -> list[HttpProbe | PrometheusQuery]:
    """Validate a `sources:` list; source names must be unique."""
    sources = _SOURCES.validate_python(raw)
    seen: set[str] = set()
    for spec in sources:
        if spec.name in seen:
            raise ValueError(f"source name {spec.name!r} is used twice")
        seen.add(spec.name)
    return sources


SourceSpec = HttpProbe | PrometheusQuery
