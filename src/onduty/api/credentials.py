"""Credentials as `onduty serve` holds them: the `access:` section resolved (hashes read from
the environment, HMAC secrets from their references), who a caller is (`Principal`), and the
throttle on failed authentications. No web framework here: the service builds and reloads an
`Access`; `onduty.api.auth` checks requests against it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from onduty.api.access_config import (
    ADMIN,
    ROLES,
    SECRET_REFERENCE,
    TOKEN_HASH,
    VIEWER,
    AccessConfig,
    IngestSpec,
    TokenSpec,
    parse_access,
)
from onduty.api.signatures import (
    ReplayWindow,
    parse_signature,
    sign,
    sign_body,
    timestamped_digest,
)
from onduty.secrets import remember_secrets
from onduty.values import format_seconds

__all__ = [
    "LOCAL",
    "Access",
    "AccessError",
    "IngestSource",
    "Principal",
    "SignatureCheck",
    "Throttle",
    "expand_roles",
    "sign",
    "sign_body",
]


class AccessError(ValueError):
    """Credentials that cannot be resolved (an unset variable, an unreadable file)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


# --------------------------------------------------------------------------- principals


@dataclass(frozen=True)
class Principal:
    """Who is asking, and what they may do."""

    name: str
    roles: frozenset[str]


def expand_roles(roles: Iterable[str]) -> frozenset[str]:
    """Every token is a viewer; an admin holds every role."""
    granted = {VIEWER, *roles}
    return frozenset(ROLES) if ADMIN in granted else frozenset(granted)


# The caller when access control is off: the API itself, allowed everything (loopback only).
LOCAL = Principal("api", frozenset(ROLES))


@dataclass(frozen=True)
class IngestSource:
    name: str
    routes: frozenset[str] | None

    def may_use(self, route: str) -> bool:
        return self.routes is None or route in self.routes


class _Token(NamedTuple):
    """A bearer token as kept in memory: its holder and the digest it is compared by."""

    principal: Principal
    digest: bytes


class _Ingest(NamedTuple):
    source: IngestSource
    digest: bytes | None
    hmac_key: bytes | None
    timestamped: bool = True
    """Whether its signatures must carry a time (`signature: timestamped`)."""


@dataclass(frozen=True)
class SignatureCheck:
    """What a signed request's `X-Onduty-Signature` proves: its sender, or why it is refused
    (`problem`, answered with `status`; empty when no secret signed it)."""

    source: IngestSource | None
    problem: str = ""
    status: int = 401
    delivery: bytes | None = None
    """The signature remembered against replays (to forget if the request is refused later)."""


# --------------------------------------------------------------------------- throttling


class Throttle:
    """Failed authentications per client address in a sliding window; past `max`, the address
    is refused (429) until its oldest counted failure leaves the window."""

    def __init__(
        self,
        max_failures: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again, or None when it is not throttled."""
        with self._lock:
            failures = self._failures.get(address)
            if failures is None:
                return None
            now = self._clock()
            self._prune(failures, now)
            if not failures:
                del self._failures[address]
                return None
            if len(failures) < self.max_failures:
                return None
            frees_at = failures[len(failures) - self.max_failures] + self.window
            return max(1, math.ceil(frees_at - now))

    def failed(self, address: str) -> None:
        with self._lock:
            now = self._clock()
            failures = self._failures.get(address)
            if failures is None:
                failures = self._failures[address] = deque()
                while len(self._failures) > self._max_clients:
                    self._failures.popitem(last=False)  # forget the longest-quiet address
            else:
                self._failures.move_to_end(address)
            self._prune(failures, now)
            failures.append(now)
            while len(failures) > self.max_failures:
                failures.popleft()  # only the newest `max` decide when the address is free

    def _prune(self, failures: deque[float], now: float) -> None:
        while failures and failures[0] <= now - self.window:
            failures.popleft()


# --------------------------------------------------------------------------- the resolved set


def _resolve_reference(reference: str, env: Mapping[str, str], where: str) -> str:
    match = SECRET_REFERENCE.match(reference)
    if match is None:  # parse_access has refused it already
        raise AccessError([f"{where}: not a ${{ENV:NAME}} or ${{FILE:/path}} reference"])
    variable, path = match.groups()
    if variable is not None:
        if not env.get(variable):
            raise AccessError([f"{where}: environment variable {variable} is not set"])
        remember_secrets([env[variable]])
        return env[variable]
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise AccessError([f"{where}: cannot read the secret file {path}: {reason}"]) from None
    value = text.removesuffix("\n").removesuffix("\r")
    if not value:
        raise AccessError([f"{where}: the secret file {path} is empty"])
    remember_secrets([value])
    return value


def _digest(spec: TokenSpec | IngestSpec, env: Mapping[str, str], where: str) -> bytes:
    value = spec.hash
    if value is None:
        variable = spec.hash_env or ""
        value = env.get(variable, "").strip()
        if not value:
            raise AccessError([f"{where}.hash_env: environment variable {variable} is not set"])
        if not TOKEN_HASH.match(value):
            raise AccessError(
                [f"{where}.hash_env: {variable} does not hold sha256:<64 hex digits>"]
            )
    return bytes.fromhex(value.split(":", 1)[1])


class Access:
    """The credentials `onduty serve` accepts, resolved, and the failure throttle."""

    def __init__(
        self,
        config: AccessConfig | None = None,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        config = config or AccessConfig()
        environment = os.environ if env is None else env
        problems: list[str] = []
        tokens: list[_Token] = []
        for index, spec in enumerate(config.tokens):
            try:
                digest = _digest(spec, environment, f"access.tokens[{index}]")
            except AccessError as error:
                problems.extend(error.problems)
                continue
            tokens.append(_Token(Principal(spec.name, expand_roles(spec.roles)), digest))
        ingest: list[_Ingest] = []
        for index, item in enumerate(config.ingest):
            where = f"access.ingest[{index}]"
            source = IngestSource(item.name, frozenset(item.routes) if item.routes else None)
            try:
                if item.hmac_secret is not None:
                    key = _resolve_reference(item.hmac_secret, environment, f"{where}.hmac_secret")
                    timestamped = item.signature == "timestamped"
                    ingest.append(_Ingest(source, None, key.encode(), timestamped))
                else:
                    ingest.append(_Ingest(source, _digest(item, environment, where), None))
            except AccessError as error:
                problems.extend(error.problems)
        digests = [t.digest for t in tokens] + [i.digest for i in ingest if i.digest]
        if len(set(digests)) != len(digests):
            problems.append("access: two credentials share one token; give each its own")
        if problems:
            raise AccessError(problems)
        self._tokens = tuple(tokens)
        self._ingest = tuple(ingest)
        self.throttle = Throttle(
            config.failures.max, config.failures.per.total_seconds(), clock=clock
        )
        self._wall_clock = wall_clock
        self.replays = ReplayWindow(config.signatures.tolerance.total_seconds())
        self.warnings = [
            f"access.ingest[{index}] ({item.name}): signature: body: a captured request can be "
            "sent again; use timestamped signatures when the sender can"
            for index, item in enumerate(config.ingest)
            if item.hmac_secret is not None and item.signature == "body"
        ]

    @classmethod
    def from_raw(cls, raw: dict[str, Any], *, env: Mapping[str, str] | None = None) -> Access:
        """Validate and resolve the configuration's `access` section."""
        try:
            config = parse_access(raw)
        except ValueError as error:
            raise AccessError([f"access: {error}"]) from None
        return cls(config, env=env)

    @property
    def enabled(self) -> bool:
        """Access control is on exactly when at least one token is configured."""
        return bool(self._tokens)

    def describe(self) -> str:
        return f"{len(self._tokens)} tokens, {len(self._ingest)} ingest credentials"

    def update(self, other: Access) -> None:
        """Take `other`'s credentials (a reload); the failures counted so far stay."""
        self._tokens, self._ingest = other._tokens, other._ingest
        self.replays.tolerance = other.replays.tolerance
        self.warnings = other.warnings
        self.throttle.max_failures = other.throttle.max_failures
        self.throttle.window = other.throttle.window

    def authenticate(self, token: str) -> Principal | None:
        """The principal a user token belongs to. Every hash is compared, in constant time."""
        digest = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        for entry in self._tokens:
            if hmac.compare_digest(digest, entry.digest):
                found = entry.principal
        return found

    def ingest_token(self, token: str) -> IngestSource | None:
        digest = hashlib.sha256(token.encode()).digest()
        found: IngestSource | None = None
        for entry in self._ingest:
            if entry.digest is not None and hmac.compare_digest(digest, entry.digest):
                found = entry.source
        return found

    def ingest_signature(self, body: bytes, header: str) -> SignatureCheck:
        """Who signed `body` with the `X-Onduty-Signature` `header`, if the signature is fresh
        and not a replay. Every secret is tried, each comparison in constant time."""
        parsed = parse_signature(header)
        if parsed is None:
            return SignatureCheck(None, "X-Onduty-Signature is neither t=<time>,v1=<hex> nor "
                                  "sha256=<hex>")  # fmt: skip
        found: _Ingest | None = None
        matched = b""
        for entry in self._ingest:
            if entry.hmac_key is None:
                continue
            if parsed.timestamp is None:
                expected = hmac.new(entry.hmac_key, body, hashlib.sha256).digest()
            else:
                expected = timestamped_digest(entry.hmac_key, parsed.timestamp, body)
            for digest in parsed.digests:
                if hmac.compare_digest(digest, expected):
                    found, matched = entry, expected
        if found is None:
            return SignatureCheck(None)
        if parsed.timestamp is None:
            if found.timestamped:
                return SignatureCheck(None, f"{found.source.name} must sign with a time: "
                                      "t=<unix seconds>,v1=<hex>")  # fmt: skip
            return SignatureCheck(found.source)
        now = self._wall_clock()
        skew = now - parsed.timestamp
        if abs(skew) > self.replays.tolerance:
            side = "behind" if skew > 0 else "ahead of"
            return SignatureCheck(
                None,
                f"the signature's time is {format_seconds(round(abs(skew)))} {side} onduty's "
                f"clock, beyond the tolerance of {format_seconds(self.replays.tolerance)} "
                "(sign each request when it is sent; check the sender's clock)",
            )
        if not self.replays.first_time(matched, now):
            return SignatureCheck(
                None, "this signed request was already received; sign each request anew", 409
            )
        return SignatureCheck(found.source, delivery=matched)

    @property
    def signs(self) -> bool:
        """Whether any ingest credential is an HMAC secret."""
        return any(entry.hmac_key is not None for entry in self._ingest)
