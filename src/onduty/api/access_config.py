"""The `access:` section of the configuration: bearer tokens (by hash) with roles, ingest
credentials, and the brake on guessing. Pure models, checked with the rest of the
configuration; `onduty.api.credentials` resolves them, `onduty.api.auth` enforces them.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from onduty.values import PositiveDuration, describe_validation_error, require_exactly_one

__all__ = [
    "ADMIN",
    "APPROVER",
    "OPERATOR",
    "ROLES",
    "SECRET_REFERENCE",
    "TOKEN_HASH",
    "VIEWER",
    "AccessConfig",
    "Failures",
    "IngestRoute",
    "IngestSpec",
    "Role",
    "Signatures",
    "TokenSpec",
    "hash_token",
    "parse_access",
]

VIEWER, OPERATOR, APPROVER, ADMIN = "viewer", "operator", "approver", "admin"
ROLES = (VIEWER, OPERATOR, APPROVER, ADMIN)
Role = Literal["viewer", "operator", "approver", "admin"]
IngestRoute = Literal[
    "alertmanager", "grafana", "prometheus", "pagerduty", "cloudevents", "native"
]  # fmt: skip
# Actors appear in the log and in the console: a short, plain name.
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$"
TOKEN_HASH = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_REFERENCE = re.compile(r"^\$\{(?:ENV:([A-Za-z_][A-Za-z0-9_]*)|FILE:(/.+))\}$")


def _check_hash(value: str | None) -> str | None:
    if value is not None and not TOKEN_HASH.match(value):
        raise ValueError(
            "expected sha256:<64 hex digits> (make one with `onduty token hash --new`)"
        )
    return value.lower() if value is not None else None


def _check_env_name(value: str | None) -> str | None:
    if value is not None and not _ENV_NAME.match(value):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class TokenSpec(_Model):
    """A person's or a tool's bearer token, by the hash of the token."""

    name: str = Field(pattern=_NAME)
    """Who it is: recorded as the actor of every change made with it (names differing only in case
    are refused)."""
    roles: list[Role] = Field(default_factory=list)
    """What it may do: `viewer` (read), `operator` (acknowledge, silence), `approver` (answer
    approvals), `admin` (autonomy, policy)."""
    hash: str | None = None
    """The token's hash, `sha256:<64 hex digits>` (`onduty token hash --new`)."""
    hash_env: str | None = None
    """The name of an environment variable holding the hash, instead of `hash`."""

    _hash = field_validator("hash")(_check_hash)
    _hash_env = field_validator("hash_env")(_check_env_name)

    @model_validator(mode="after")
    def _one_hash(self) -> TokenSpec:
        require_exactly_one(self, "hash", "hash_env")
        return self


class IngestSpec(_Model):
    """A sender of signals: a bearer token (by its hash) or an HMAC secret (by reference)."""

    name: str = Field(pattern=_NAME)
    """The sender's name: recorded as the actor of its signals."""
    hash: str | None = None
    """Its bearer token's hash, `sha256:<64 hex digits>`."""
    hash_env: str | None = None
    """An environment variable holding the hash, instead of `hash`."""
    hmac_secret: str | None = None
    """A reference to a secret the sender signs requests with (`X-Onduty-Signature`, see
    `signature`)."""
    signature: Literal["timestamped", "body"] = "timestamped"
    """How requests are signed with `hmac_secret`. `timestamped`: `t=<unix seconds>,v1=<hex
    HMAC-SHA256 of "<t>." followed by the body>`, refused when `t` is further from onduty's
    clock than `access.signatures.tolerance` or when the same signed request comes again.
    `body`: `sha256=<hex HMAC-SHA256 of the body>`, which a captured request can be replayed
    with; only for senders that cannot sign a time (`serve` warns at start-up)."""
    routes: list[IngestRoute] | None = None
    """The ingest routes this credential may use; all of them when absent."""

    _hash = field_validator("hash")(_check_hash)
    _hash_env = field_validator("hash_env")(_check_env_name)

    @field_validator("hmac_secret")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        if value is not None and not SECRET_REFERENCE.match(value):
            raise ValueError(
                "reference the secret as ${ENV:NAME} or ${FILE:/absolute/path}; "
                "it is never written in the configuration"
            )
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> IngestSpec:
        require_exactly_one(self, "hash", "hash_env", "hmac_secret")
        if self.signature == "body" and self.hmac_secret is None:
            raise ValueError("signature: body applies to an hmac_secret, not to a token")
        return self


class Failures(_Model):
    max: int = Field(default=10, ge=1)
    """Wrong credentials allowed per address within `per`."""
    per: PositiveDuration = timedelta(minutes=1)
    """The window they are counted in."""


class Signatures(_Model):
    tolerance: PositiveDuration = timedelta(minutes=5)
    """How far a timestamped signature's time may be from onduty's clock, either way; within
    it, a signed request already received is refused as a replay."""


class AccessConfig(_Model):
    tokens: list[TokenSpec] = Field(default_factory=list)
    """People's and tools' bearer tokens, by hash, with roles."""
    ingest: list[IngestSpec] = Field(default_factory=list)
    """Senders of signals and their credentials."""
    signatures: Signatures = Field(default_factory=Signatures)
    """How signed ingest requests are checked for freshness and replays."""
    failures: Failures = Field(default_factory=Failures)
    """How many wrong credentials an address may present before it gets 429 (a credential that
    verifies is always accepted)."""

    @model_validator(mode="after")
    def _cross_checks(self) -> AccessConfig:
        problems: list[str] = []
        seen: dict[str, tuple[str, str]] = {}
        every: list[tuple[str, TokenSpec | IngestSpec]] = [
            *((f"tokens[{index}]", spec) for index, spec in enumerate(self.tokens)),
            *((f"ingest[{index}]", spec) for index, spec in enumerate(self.ingest)),
        ]
        for where, spec in every:
            key = spec.name.casefold()  # alice and Alice are one person (one approver)
            if key in seen:
                other, name = seen[key]
                same = "" if name == spec.name else f" ({name!r}: names ignore case)"
                problems.append(
                    f"{where}.name: {spec.name!r} is already the name of {other}{same} "
                    "(names are the actors in the log)"
                )
            else:
                seen[key] = (where, spec.name)
        hashes: dict[str, str] = {}
        for where, spec in every:
            if spec.hash is None:
                continue
            if spec.hash in hashes:
                problems.append(
                    f"{where}.hash: the same token as {hashes[spec.hash]}; "
                    "every credential needs a token of its own"
                )
            else:
                hashes[spec.hash] = where
        if self.ingest and not self.tokens:
            problems.append(
                "ingest: ingest credentials need access control on: add at least one token "
                "under access.tokens"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


def parse_access(raw: dict[str, Any]) -> AccessConfig:
    """Validate the `access` section; a ValueError names each bad field."""
    try:
        return AccessConfig.model_validate(raw or {})
    except ValidationError as error:
        problems = [p.removeprefix("(top level): ") for p in describe_validation_error(error)]
        raise ValueError("; ".join(problems)) from None


def hash_token(token: str) -> str:
    """How a token is written in the configuration: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()
