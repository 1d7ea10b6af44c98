"""The `channels:` section of the configuration: where notifications for humans go, as pure
models checked with the rest of the configuration. The senders are in `onduty.escalate`'s
other modules; `onduty.escalate.channels` has what they share.

Every channel has a `kind`, a unique `name` (escalation tiers list channel names, in fallback
order), `retries`, a `timeout` for one attempt, and an optional `console_url`. Secrets are never
written in the configuration: header values, a webhook URL, a Slack webhook URL, SMTP
credentials and a PagerDuty routing key may (and for credentials, must) reference `${ENV:NAME}`
or `${FILE:/absolute/path}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from email.utils import parseaddr
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from onduty.httpbits import Headers, check_http_url
from onduty.values import (
    AbsolutePath,
    Duration,
    FieldProblems,
    PositiveDuration,
    describe_validation_error,
    parse_items,
    references,
    unknown_kind,
)

__all__ = [
    "DEFAULT_PAGERDUTY_URL",
    "KINDS",
    "AnyChannel",
    "ChannelConfigError",
    "ChannelSpec",
    "EmailChannel",
    "PagerDutyChannel",
    "SlackChannel",
    "WebhookChannel",
    "check_resolved_url",
    "parse_channels",
    "url_for_display",
]

DEFAULT_PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
KINDS = ("email", "pagerduty", "slack", "webhook")

_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]*$"
_HOST = re.compile(r"^[A-Za-z0-9._:\[\]-]+$")


class ChannelConfigError(FieldProblems):
    """A `channels:` list that cannot be used; `problems` name each field and the reason,
    e.g. `channels[1].url: expected an http:// or https:// URL`."""


# --------------------------------------------------------------------------- checks


def _check_plain_url(value: str, *, base: bool = False) -> str:
    return check_http_url(
        value,
        base=base,
        credentials="credentials in the URL would be shown; reference them as ${ENV:NAME} or "
        "${FILE:/path} instead",
    )


def _check_url(value: str) -> str:
    """A literal http(s) URL, or one that references secrets (`${ENV:NAME}` anywhere in it, or
    the whole URL as one reference): such a URL is checked once the reference is resolved."""
    if "\x00" in value or any(c.isspace() for c in value):
        raise ValueError("a URL cannot contain spaces, line breaks or NUL")
    if references(value, "url"):
        stripped = value.strip()
        whole = re.fullmatch(r"\$\{[^}]*\}", stripped) is not None
        if not whole and not re.match(r"^https?://", stripped):
            raise ValueError(
                "a URL that references a secret must start with http:// or https:// (or be "
                "one reference, such as ${ENV:SLACK_WEBHOOK_URL})"
            )
        return value
    return _check_plain_url(value)


def check_resolved_url(value: str, where: str) -> str:
    """Check a URL whose secret references were resolved; the message never shows the value."""
    try:
        _check_plain_url(value)
    except ValueError:
        raise ValueError(
            f"{where}: the resolved URL is not an http:// or https:// URL with a host"
        ) from None
    return value


def url_for_display(value: str) -> str:
    """Where a URL points, safe to show: `scheme://host[:port]` (paths and queries of webhook
    URLs often carry tokens). A URL given as a reference is shown as the reference."""
    if value.startswith("${"):
        return value
    parts = urlsplit(value)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _require_reference(value: str, what: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"the {what} cannot contain line breaks or NUL")
    if not references(value, what):
        raise ValueError(
            f"the {what} is a secret and would be shown with the configuration: reference it "
            "as ${ENV:NAME} or ${FILE:/path}"
        )
    return value


def _check_address(value: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"{value!r}: an address cannot contain line breaks or NUL")
    _, address = parseaddr(value)
    if not address or "@" not in address or address.startswith("@") or address.endswith("@"):
        raise ValueError(f"{value!r} is not an email address")
    return value


# --------------------------------------------------------------------------- models


class ChannelFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str = Field(min_length=1, max_length=100, pattern=_NAME)
    """The channel's name, as escalation tiers and `policy.approvals.notify` name it."""
    retries: int = Field(default=3, ge=0, le=10)
    """How many times a failing delivery is tried again (so at most `retries + 1` attempts)."""
    backoff: Duration = timedelta(seconds=1)
    """The wait before the first retry; it doubles before each further one (at most 30s, or
    `backoff` itself when that is longer)."""
    timeout: PositiveDuration = timedelta(seconds=10)
    """The limit of one attempt (connecting, sending, reading the answer)."""
    console_url: str | None = None
    """The web console's base URL; notifications then link to `{console_url}/incidents/{id}`."""

    @field_validator("console_url")
    @classmethod
    def _console_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "${" in value:
            raise ValueError("the console URL is shown to people: it cannot reference secrets")
        return _check_plain_url(value, base=True).rstrip("/")


class WebhookChannel(ChannelFields):
    """A JSON POST to `url` (see `onduty.escalate.webhook` for the body). Any 2xx answer is a
    delivery; 408, 425, 429 and 5xx answers and network errors are retried; other answers are
    permanent failures (redirects are not followed)."""

    kind: Literal["webhook"]
    """`webhook`."""
    url: str = Field(repr=False)
    """Where the JSON notification is POSTed."""
    headers: Headers = Field(default_factory=dict, repr=False)
    """Request headers; values may reference secrets."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)


class SlackChannel(ChannelFields):
    """A Slack-compatible incoming webhook. Its URL is a credential: prefer
    `url: ${ENV:SLACK_WEBHOOK_URL}`; a literal URL is accepted but is never shown."""

    kind: Literal["slack"]
    """`slack`."""
    url: str = Field(repr=False)
    """The incoming webhook URL (a credential: reference it)."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)


class EmailChannel(ChannelFields):
    """A plain-text message through an SMTP server. With `starttls` (the default) the session
    is upgraded to TLS before anything is sent, and a server that cannot is a permanent failure:
    nothing goes out in clear text. `ca_file` trusts a private CA (PEM), e.g. an internal
    relay's. Credentials need `starttls`."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, use_attribute_docstrings=True
    )

    kind: Literal["email"]
    """`email`."""
    host: str = Field(min_length=1)
    """The SMTP server."""
    port: int = Field(default=587, ge=1, le=65535)
    """Its port."""
    from_: str = Field(alias="from")
    """The sender address (`from`)."""
    to: list[str] = Field(min_length=1)
    """The recipients."""
    starttls: bool = True
    """Upgrade to TLS before sending (a server that cannot is a permanent failure)."""
    username: str | None = None
    """The SMTP user (with `password`; needs `starttls`)."""
    password: str | None = Field(default=None, repr=False)
    """A reference (`${ENV:NAME}` or `${FILE:/path}`), never the password itself."""
    ca_file: AbsolutePath | None = None
    """A PEM file of a private CA to trust."""

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not _HOST.match(value):
            raise ValueError(f"{value!r} is not a host name or address")
        return value

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        return _check_address(value)

    @field_validator("to")
    @classmethod
    def _to(cls, value: list[str]) -> list[str]:
        for index, address in enumerate(value):
            try:
                _check_address(address)
            except ValueError as error:
                raise ValueError(f"to[{index}]: {error}") from None
        return value

    @field_validator("username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        if value is not None:
            if not value or "\r" in value or "\n" in value:
                raise ValueError("the username cannot be empty or contain line breaks")
            references(value, "username")
        return value

    @field_validator("password")
    @classmethod
    def _password(cls, value: str | None) -> str | None:
        return None if value is None else _require_reference(value, "password")

    @model_validator(mode="after")
    def _credentials(self) -> EmailChannel:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        if self.username is not None and not self.starttls:
            raise ValueError("credentials need `starttls: true`: they would travel in clear text")
        if self.ca_file is not None and not self.starttls:
            raise ValueError("`ca_file` is for `starttls`")
        return self


class PagerDutyChannel(ChannelFields):
    """The PagerDuty Events API v2. Escalations, approval requests and suggestions trigger an
    alert; `resolved` resolves it and `acknowledged` acknowledges it. The alert's `dedup_key`
    is stable per incident (`onduty-<incident id>`), so every notification about one incident
    lands on the same alert and a resolve closes it."""

    kind: Literal["pagerduty"]
    """`pagerduty`."""
    url: str = DEFAULT_PAGERDUTY_URL
    """The Events API v2 endpoint."""
    routing_key: str = Field(repr=False)
    """A reference (`${ENV:NAME}` or `${FILE:/path}`) to the integration's routing key."""
    source: str = Field(default="onduty", min_length=1, max_length=255)
    """The `payload.source` of triggered alerts (the affected system)."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if "${" in value:
            raise ValueError("the Events API URL cannot reference secrets")
        return _check_plain_url(value)

    @field_validator("routing_key")
    @classmethod
    def _routing_key(cls, value: str) -> str:
        return _require_reference(value, "routing key")


AnyChannel = WebhookChannel | SlackChannel | EmailChannel | PagerDutyChannel
ChannelSpec = Annotated[AnyChannel, Field(discriminator="kind")]

_SPEC: TypeAdapter[AnyChannel] = TypeAdapter(ChannelSpec)


# --------------------------------------------------------------------------- parsing


def parse_channels(raw: Any) -> list[ChannelSpec]:
    """Validate a `channels:` list. Raises `ChannelConfigError` (a `ValueError`) naming every
    bad field (`channels[1].url: ...`); two channels with one name are an error."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ChannelConfigError(["channels: expected a list of channels"])

    def parse(prefix: str, item: Mapping[str, Any]) -> ChannelSpec:
        kind = item.get("kind")
        if kind not in KINDS:
            raise unknown_kind(prefix, kind, KINDS)
        try:
            return _SPEC.validate_python(dict(item))
        except ValidationError as error:
            raise FieldProblems(
                describe_validation_error(
                    error, prefix=prefix, tags=KINDS, aliases={"from_": "from"}
                )
            ) from None

    return parse_items(
        "channels",
        raw,
        parse,
        expected="a mapping with a `kind` and a `name`",
        key=lambda spec: spec.name,
        repeated=lambda prefix, name, earlier: (
            f"{prefix}.name: the name {name!r} is already used by {earlier}"
        ),
        error=ChannelConfigError,
    )
