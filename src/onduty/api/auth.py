"""Access control: bearer tokens with roles, per-source ingest secrets, and a brake on guessing.

```yaml
access:
  tokens:                 # only hashes are stored: `onduty token hash --new` makes a pair
    - {name: alice, roles: [approver, operator], hash: "sha256:<hex of sha256(token)>"}
    - {name: grafana, roles: [viewer], hash_env: ONDUTY_TOKEN_GRAFANA}
  ingest:                 # who may push signals: a bearer token, or an HMAC of time and body
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
cookie) for the API, an ingest credential (its bearer token, or `X-Onduty-Signature:
t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." and the body>`, see `onduty.api.signatures`)
for the ingest routes. A signature further than `signatures.tolerance` from onduty's clock is
refused (401), and so is a signed request received again within it (409).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from fastapi import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from onduty.api.access_config import (
    ADMIN,
    APPROVER,
    OPERATOR,
    ROLES,
    VIEWER,
    AccessConfig,
    hash_token,
    parse_access,
)
from onduty.api.credentials import (
    LOCAL,
    Access,
    AccessError,
    IngestSource,
    Principal,
    Throttle,
    expand_roles,
    sign,
    sign_body,
)
from onduty.api.front import ConnectionMiddleware, close_websocket, refuse

# The access section's model and the resolved credentials have modules of their own (free of
# the web framework); their names stay importable from here.
__all__ = [
    "ADMIN",
    "APPROVER",
    "CONSOLE_HEADER",
    "COOKIE",
    "LOCAL",
    "OPERATOR",
    "ROLES",
    "SIGNATURE_HEADER",
    "TOO_MANY",
    "UNAUTHENTICATED",
    "UNSAFE_METHODS",
    "VIEWER",
    "Access",
    "AccessConfig",
    "AccessError",
    "AccessGuard",
    "AuthProblem",
    "IngestSource",
    "Principal",
    "Throttle",
    "access_of",
    "approval_role",
    "bearer_token",
    "client_address",
    "expand_roles",
    "hash_token",
    "parse_access",
    "principal_of",
    "required_role",
    "requires",
    "sign",
    "sign_body",
    "sign_in",
]

COOKIE = "onduty_token"
SIGNATURE_HEADER = "x-onduty-signature"
CONSOLE_HEADER = "x-onduty-console"
TOO_MANY = "too many failed authentications; retry later"
UNAUTHENTICATED = "authentication required: a bearer token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SCOPE_ACCESS = "onduty.access"
_SCOPE_PRINCIPAL = "onduty.principal"


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


class AccessGuard(ConnectionMiddleware):
    """Pure ASGI middleware: with access control on, a request to a guarded path must carry a
    known user token, else 401 — or 429 once its address has failed too often (a known token
    is served all the same) — before any route runs. Routes then check roles with `requires`.
    The ingest routes check their own credentials; pages outside the API (a console) check
    theirs with `principal_of`."""

    def __init__(self, app: ASGIApp, *, access: Access, guarded: Callable[[str], bool]) -> None:
        super().__init__(app)
        self.access = access
        self.guarded = guarded

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
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
            await close_websocket(receive, send, 4429 if retry else 4401)
        elif retry is not None:
            await refuse(send, 429, TOO_MANY, **{"Retry-After": str(retry)})
        else:
            await refuse(send, 401, UNAUTHENTICATED, **{"WWW-Authenticate": "Bearer"})


_OFF = Access()
