"""Access control: bearer tokens with roles, per-source ingest secrets, and a brake on guessing.

```yaml
access:
  tokens:                 # only hashes are stored: `onduty token hash --new` makes a pair
    - {name: alice, roles: [approver, operator], hash: "sha256:<hex of sha256(token)>"}
    - {name: grafana, roles: [viewer], hash_env: ONDUTY_TOKEN_GRAFANA}
  ingest:                 # who may push signals: a bearer token, or an HMAC of the body
    - {name: alertmanager-eu, hash: "sha256:..."}
    - {name: cloud-events, hmac_secret: "${ENV:CE_HMAC}", routes: [cloudevents]}
  failures: {max: 10, per: 1m}   # failed authentications per client address, then 429
```

Only failures are throttled: past `failures.max` in the window, an address's *unknown*
credentials are answered 429 instead of 401, but a credential that verifies is always accepted
(one address may be a NAT shared by Alertmanager and whoever is guessing). Client addresses come
from `X-Forwarded-For` only when the peer is one of `server.trusted_proxies`.

Roles are explicit sets, not a ladder: `viewer` reads, `operator` acknowledges and silences,
`approver` answers approvals, `admin` changes autonomy and policy and holds every other role.
Every token is a `viewer`. The token's `name` is the actor of everything it records.

With no tokens, access control is off and `onduty serve` only listens on loopback. With tokens,
every route except the probes (`/healthz`, `/readyz`, `/-/healthy`, `/-/ready`) needs a
credential: a user token (`Authorization: Bearer <token>`, or the console's `onduty_token`
cookie) for the API, an ingest credential (its bearer token, or
`X-Onduty-Signature: sha256=<hex HMAC-SHA256 of the body>`) for the ingest routes.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from onduty.config import Duration, describe_validation_error

VIEWER, OPERATOR, APPROVER, ADMIN = "viewer", "operator", "approver", "admin"
ROLES = (VIEWER, OPERATOR, APPROVER, ADMIN)
Role = Literal["viewer", "operator", "approver", "admin"]
IngestRoute = Literal[
    "alertmanager", "grafana", "prometheus", "pagerduty", "cloudevents", "native"
]  # fmt: skip

COOKIE = "onduty_token"
SIGNATURE_HEADER = "x-onduty-signature"
CONSOLE_HEADER = "x-onduty-console"
TOO_MANY = "too many failed authentications; retry later"
UNAUTHENTICATED = "authentication required: a bearer token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Actors appear in the log and in the console: a short, plain name.
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$"
_HASH = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_REFERENCE = re.compile(r"^\$\{(?:ENV:([A-Za-z_][A-Za-z0-9_]*)|FILE:(/.+))\}$")
_SCOPE_ACCESS = "onduty.access"
_SCOPE_PRINCIPAL = "onduty.principal"


# --------------------------------------------------------------------------- configuration


def _check_hash(value: str | None) -> str | None:
    if value is not None and not _HASH.match(value):
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
        if (self.hash is None) == (self.hash_env is None):
            raise ValueError("give exactly one of hash or hash_env")
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
    """A reference to a secret the sender signs bodies with (`X-Onduty-Signature:
    sha256=<hmac>`)."""
    routes: list[IngestRoute] | None = None
    """The ingest routes this credential may use; all of them when absent."""

    _hash = field_validator("hash")(_check_hash)
    _hash_env = field_validator("hash_env")(_check_env_name)

    @field_validator("hmac_secret")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        if value is not None and not _SECRET_REFERENCE.match(value):
            raise ValueError(
                "reference the secret as ${ENV:NAME} or ${FILE:/absolute/path}; "
                "it is never written in the configuration"
            )
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> IngestSpec:
        given = [self.hash, self.hash_env, self.hmac_secret]
        if sum(value is not None for value in given) != 1:
            raise ValueError("give exactly one of hash, hash_env or hmac_secret")
        return self


class Failures(_Model):
    max: int = Field(default=10, ge=1)
    """Wrong credentials allowed per address within `per`."""
    per: Duration = timedelta(minutes=1)
    """The window they are counted in."""

    @field_validator("per")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("the window must be longer than zero")
        return value


class AccessConfig(_Model):
    tokens: list[TokenSpec] = Field(default_factory=list)
    """People's and tools' bearer tokens, by hash, with roles."""
    ingest: list[IngestSpec] = Field(default_factory=list)
    """Senders of signals and their credentials."""
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


class AccessError(ValueError):
    """Credentials that cannot be resolved (an unset variable, an unreadable file)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def hash_token(token: str) -> str:
    """How a token is written in the configuration: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


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


@dataclass(frozen=True)
class _Token:
    principal: Principal
    digest: bytes


@dataclass(frozen=True)
class _Ingest:
    source: IngestSource
    digest: bytes | None
    hmac_key: bytes | None


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
    match = _SECRET_REFERENCE.match(reference)
    if match is None:  # parse_access has refused it already
        raise AccessError([f"{where}: not a ${{ENV:NAME}} or ${{FILE:/path}} reference"])
    variable, path = match.groups()
    if variable is not None:
        if not env.get(variable):
            raise AccessError([f"{where}: environment variable {variable} is not set"])
        return env[variable]
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise AccessError([f"{where}: cannot read the secret file {path}: {reason}"]) from None
    value = text.removesuffix("\n").removesuffix("\r")
    if not value:
        raise AccessError([f"{where}: the secret file {path} is empty"])
    return value


def _digest(spec: TokenSpec | IngestSpec, env: Mapping[str, str], where: str) -> bytes:
    value = spec.hash
    if value is None:
        variable = spec.hash_env or ""
        value = env.get(variable, "").strip()
        if not value:
            raise AccessError([f"{where}.hash_env: environment variable {variable} is not set"])
        if not _HASH.match(value):
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
                    ingest.append(_Ingest(source, None, key.encode()))
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

    def ingest_signature(self, body: bytes, signature: str) -> IngestSource | None:
        """The source whose HMAC secret signed `body`; `signature` is `sha256=<hex>`."""
        scheme, _, text = signature.strip().partition("=")
        if scheme.strip().lower() != "sha256":
            return None
        try:
            given = bytes.fromhex(text.strip())
        except ValueError:
            return None
        found: IngestSource | None = None
        for entry in self._ingest:
            if entry.hmac_key is not None:
                expected = hmac.new(entry.hmac_key, body, hashlib.sha256).digest()
                if hmac.compare_digest(given, expected):
                    found = entry.source
        return found

    @property
    def signs(self) -> bool:
        """Whether any ingest credential is an HMAC secret."""
        return any(entry.hmac_key is not None for entry in self._ingest)


def sign(secret: bytes | str, body: bytes) -> str:
    """The `X-Onduty-Signature` value for `body`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- requests


def access_of(connection: HTTPConnection) -> Access:
    """The Access of the app serving this request (off when the app was built without one)."""
    access = connection.scope.get(_SCOPE_ACCESS)
    if access is None:
        access = getattr(connection.app.state, "access", None)
    return access if isinstance(access, Access) else _OFF


def client_address(connection: HTTPConnection) -> str:
    return connection.client.host if connection.client else "unknown"


def bearer_token(connection: HTTPConnection) -> str | None:
    """The token of `Authorization: Bearer <token>`, or None."""
    header = connection.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""  # an Authorization header that is not a bearer token: never valid
    return token.strip()


def _same_origin(connection: HTTPConnection) -> bool:
    """Whether a cookie-carrying request comes from a page of this server (against CSRF): the
    console's header, which a cross-site form cannot set, or an Origin naming this host."""
    if connection.headers.get(CONSOLE_HEADER):
        return True
    origin = connection.headers.get("origin") or connection.headers.get("referer")
    host = connection.headers.get("host")
    if not origin or not host or origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == host.lower()


def principal_of(connection: HTTPConnection) -> Principal | None:
    """Who sent this request: the bearer token's principal, else the console's session cookie's
    (for a state-changing method only with `X-Onduty-Console` or a same-origin `Origin`). None
    when neither is a known token. With access control off, everyone is `LOCAL`."""
    access = access_of(connection)
    if not access.enabled:
        return LOCAL
    known = connection.scope.get(_SCOPE_PRINCIPAL)
    if isinstance(known, Principal):
        return known
    token = bearer_token(connection)
    if token is None:
        token = connection.cookies.get(COOKIE)
        method = connection.scope.get("method", "GET")
        if token and method in UNSAFE_METHODS and not _same_origin(connection):
            return None
    if not token:
        return None
    return access.authenticate(token)


class AuthProblem(HTTPException):
    """401 (no or unknown credential), 403 (a known one without the role), 429 (throttled)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, reason, headers)
        self.reason = reason


def _unauthenticated(connection: HTTPConnection, access: Access) -> AuthProblem:
    address = client_address(connection)
    retry = access.throttle.retry_after(address)
    if retry is not None:
        return AuthProblem(429, TOO_MANY, {"Retry-After": str(retry)})
    access.throttle.failed(address)
    return AuthProblem(401, UNAUTHENTICATED, {"WWW-Authenticate": "Bearer"})


def requires(role: str) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller's Principal when it holds `role`; else 401 (no or
    unknown token), 403 (a known token without the role) or 429 (too many failures)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")

    async def dependency(request: Request) -> Principal:
        principal = principal_of(request)
        if principal is None:
            raise _unauthenticated(request, access_of(request))
        if role not in principal.roles:
            raise AuthProblem(403, f"{principal.name} does not have the {role} role")
        return principal

    dependency.role = role  # type: ignore[attr-defined]  # read by the route audit
    dependency.__name__ = f"requires_{role}"
    return dependency


def sign_in(connection: HTTPConnection, token: str) -> Principal:
    """For a sign-in form: the principal of `token`, throttled like every other credential
    (a failure counts against the client's address). Raises AuthProblem 401 (unknown token)
    or 429 (an unknown token from an address that failed too often; a known one is always
    accepted). With access control off, `LOCAL`."""
    access = access_of(connection)
    if not access.enabled:
        return LOCAL
    principal = access.authenticate(token) if token else None
    if principal is not None:
        return principal
    address = client_address(connection)
    retry = access.throttle.retry_after(address)
    if retry is not None:
        raise AuthProblem(429, TOO_MANY, {"Retry-After": str(retry)})
    access.throttle.failed(address)
    raise AuthProblem(401, "that token is not recognised")


def required_role(dependency: object) -> str | None:
    """The role a dependency made by `requires` checks, or None for any other callable."""
    role = getattr(dependency, "role", None)
    return role if isinstance(role, str) and role in ROLES else None


def approval_role(principal: Principal, allowed: Iterable[str]) -> str:
    """The role an approval answer is given in: the first of the policy's approval roles the
    principal holds, else `approver` (the core then records the answer as refused). The answer
    desk decides it, for every door."""
    from onduty.approvals import answering_role

    return answering_role(principal.roles, allowed)


# --------------------------------------------------------------------------- the guard


def _json(status: int, reason: str, headers: Mapping[str, str]) -> tuple[dict[str, Any], bytes]:
    body = orjson.dumps({"error": reason, "field": None})
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in headers.items()),
        ],
    }, body


class AccessGuard:
    """Pure ASGI middleware: with access control on, a request to a guarded path must carry a
    known user token, else 401 — or 429 once its address has failed too often (a known token
    is served all the same) — before any route runs. Routes then check roles with `requires`.
    The ingest routes check their own credentials; pages outside the API (a console) check
    theirs with `principal_of`."""

    def __init__(self, app: ASGIApp, *, access: Access, guarded: Callable[[str], bool]) -> None:
        self.app = app
        self.access = access
        self.guarded = guarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope[_SCOPE_ACCESS] = self.access
        if not self.access.enabled or not self.guarded(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        # A token that verifies is served even from an address that has failed too often (it
        # may be a NAT shared with whoever is guessing); only failures are throttled.
        principal = principal_of(connection)
        if principal is not None:
            scope[_SCOPE_PRINCIPAL] = principal
            await self.app(scope, receive, send)
            return
        address = client_address(connection)
        retry = self.access.throttle.retry_after(address)
        if retry is None:
            self.access.throttle.failed(address)
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 4429 if retry else 4401})
            return
        if retry is not None:
            reason, headers = TOO_MANY, {"Retry-After": str(retry)}
            start, body = _json(429, reason, headers)
        else:
            start, body = _json(401, UNAUTHENTICATED, {"WWW-Authenticate": "Bearer"})
        await send(start)
        await send({"type": "http.response.body", "body": body})


_OFF = Access()
