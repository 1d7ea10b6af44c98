"""Access control: tokens by hash, roles, ingest credentials, the failure throttle, and every
route of the API checked for the role it needs."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request

from onduty.api import build_app
from onduty.api.app import API, INGEST_ALIASES, INGEST_ROUTES, ROUTE_ROLES
from onduty.api.auth import (
    LOCAL,
    ROLES,
    Access,
    AccessError,
    AuthProblem,
    Principal,
    Throttle,
    approval_role,
    expand_roles,
    hash_token,
    parse_access,
    principal_of,
    required_role,
    requires,
    sign,
    sign_in,
)
from onduty.config import Config, ConfigError, parse_config
from onduty.service import Service

TOKENS = {"vera": "tok-viewer", "otto": "tok-operator", "anna": "tok-approver", "root": "tok-admin"}
RAW: dict[str, Any] = {
    "tokens": [
        {"name": "vera", "hash": hash_token(TOKENS["vera"])},
        {"name": "otto", "roles": ["operator"], "hash": hash_token(TOKENS["otto"])},
        {"name": "anna", "roles": ["approver"], "hash": hash_token(TOKENS["anna"])},
        {"name": "root", "roles": ["admin"], "hash_env": "ROOT_HASH"},
    ],
    "ingest": [
        {"name": "am-eu", "hash": hash_token("tok-am"), "routes": ["alertmanager"]},
        {"name": "ce", "hmac_secret": "${ENV:CE_HMAC}"},
        {"name": "pd", "hash": hash_token("tok-pd"), "routes": ["pagerduty"]},
    ],
    "failures": {"max": 3, "per": "1m"},
}
ENV = {"ROOT_HASH": hash_token(TOKENS["root"]), "CE_HMAC": "s3cret"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def access() -> Access:
    return Access(parse_access(RAW), env=ENV)


# --------------------------------------------------------------------------- configuration


def test_the_hash_is_the_sha256_of_the_token() -> None:
    assert hash_token("abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"tokens": [{"name": "a", "hash": "md5:00"}]}, "tokens[0].hash"),
        ({"tokens": [{"name": "a"}]}, "exactly one of hash or hash_env"),
        ({"tokens": [{"name": "a", "hash": hash_token("x"), "hash_env": "X"}]}, "exactly one"),
        ({"tokens": [{"name": "a", "hash_env": "not a name"}]}, "tokens[0].hash_env"),
        ({"tokens": [{"name": "a", "roles": ["root"], "hash": hash_token("x")}]},
         "tokens[0].roles[0]"),
        ({"tokens": [{"name": "two words", "hash": hash_token("x")}]}, "tokens[0].name"),
        ({"tokens": [{"name": "a", "hash": hash_token("x"), "color": "red"}]},
         "tokens[0].color"),
        ({"tokens": [{"name": "a", "hash": hash_token("x")},
                     {"name": "a", "hash": hash_token("y")}]}, "tokens[1].name"),
        ({"tokens": [{"name": "a", "hash": hash_token("x")},
                     {"name": "b", "hash": hash_token("x")}]}, "tokens[1].hash"),
        ({"tokens": [{"name": "a", "hash": hash_token("x")}],
          "ingest": [{"name": "s", "hmac_secret": "plain"}]}, "ingest[0].hmac_secret"),
        ({"tokens": [{"name": "a", "hash": hash_token("x")}],
          "ingest": [{"name": "s", "hash": hash_token("y"), "hmac_secret": "${ENV:S}"}]},
         "exactly one of hash, hash_env or hmac_secret"),
        ({"tokens": [{"name": "a", "hash": hash_token("x")}],
          "ingest": [{"name": "s", "hash": hash_token("y"), "routes": ["smtp"]}]},
         "ingest[0].routes[0]"),
        ({"ingest": [{"name": "s", "hash": hash_token("y")}]}, "access.tokens"),
        ({"failures": {"max": 0}}, "failures.max"),
        ({"failures": {"per": "0s"}}, "failures.per"),
        ({"users": []}, "users"),
    ],
)  # fmt: skip
def test_a_bad_access_section_names_the_field(raw: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError) as problem:
        parse_access(raw)
    assert named in str(problem.value)


def test_the_configuration_validates_access_through_the_api_layer() -> None:
    with pytest.raises(ConfigError) as problem:
        parse_config({"access": {"tokens": [{"name": "a", "hash": "sha256:12"}]}})
    # Named by its full path, as every other field is (and so given its line by load_config).
    assert any(p.startswith("access.tokens[0].hash: ") for p in problem.value.problems)
    assert parse_config({"access": RAW}).access == RAW


def test_unresolvable_credentials_name_the_field() -> None:
    with pytest.raises(AccessError) as problem:
        Access(parse_access(RAW), env={"CE_HMAC": "x"})
    assert problem.value.problems == [
        "access.tokens[3].hash_env: environment variable ROOT_HASH is not set"
    ]
    with pytest.raises(AccessError, match=r"tokens\[3\].hash_env: ROOT_HASH does not hold"):
        Access(parse_access(RAW), env={**ENV, "ROOT_HASH": "hunter2"})
    with pytest.raises(AccessError, match=r"ingest\[1\].hmac_secret: environment variable CE_"):
        Access(parse_access(RAW), env={"ROOT_HASH": ENV["ROOT_HASH"]})


def test_an_hmac_secret_may_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "hmac"
    secret.write_text("from-a-file\n")
    raw = {
        "tokens": RAW["tokens"][:1],
        "ingest": [{"name": "f", "hmac_secret": f"${{FILE:{secret}}}"}],
    }
    access = Access(parse_access(raw), env={})
    source = access.ingest_signature(b"{}", sign("from-a-file", b"{}")).source
    assert source is not None and source.name == "f"
    with pytest.raises(AccessError, match="cannot read the secret file"):
        Access(parse_access({**raw, "ingest": [{"name": "f", "hmac_secret": "${FILE:/nope}"}]}))


def test_without_tokens_access_control_is_off() -> None:
    assert not Access().enabled
    assert not Access.from_raw({}).enabled
    assert Access(parse_access(RAW), env=ENV).enabled


# --------------------------------------------------------------------------- tokens and roles


def test_roles_are_explicit_sets_and_admin_holds_them_all() -> None:
    assert expand_roles([]) == {"viewer"}
    assert expand_roles(["approver"]) == {"viewer", "approver"}  # not operator
    assert expand_roles(["operator"]) == {"viewer", "operator"}
    assert expand_roles(["admin"]) == set(ROLES)


def test_a_token_is_known_by_its_hash(access: Access) -> None:
    anna = access.authenticate("tok-approver")
    assert anna == Principal("anna", frozenset({"viewer", "approver"}))
    root = access.authenticate("tok-admin")  # its hash came from the environment
    assert root is not None and root.roles == set(ROLES)
    assert access.authenticate("tok-approver ") is None
    assert access.authenticate("") is None
    assert access.authenticate("tok-am") is None  # an ingest token is no user token


def test_ingest_tokens_and_signatures(access: Access) -> None:
    am = access.ingest_token("tok-am")
    assert am is not None and am.name == "am-eu"
    assert am.may_use("alertmanager") and not am.may_use("native")
    assert access.ingest_token("tok-admin") is None  # a user token is no ingest credential

    body = b'{"source": "x"}'
    ce = access.ingest_signature(body, sign("s3cret", body)).source
    assert ce is not None and ce.name == "ce" and ce.may_use("native")
    # the signature schemes themselves: tests/api/test_signatures.py


def test_an_approval_is_answered_in_a_role_the_policy_accepts() -> None:
    anna = Principal("anna", expand_roles(["approver"]))
    root = Principal("root", expand_roles(["admin"]))
    assert approval_role(anna, []) == "approver"
    assert approval_role(anna, ["approver"]) == "approver"
    assert approval_role(anna, ["admin"]) == "approver"  # the core refuses it, and records so
    assert approval_role(root, ["admin"]) == "admin"
    assert approval_role(root, ["approver", "admin"]) == "approver"


def test_requires_knows_only_the_four_roles() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        requires("superuser")
    assert required_role(requires("operator")) == "operator"
    assert required_role(print) is None


# --------------------------------------------------------------------------- throttling


def test_the_throttle_is_a_sliding_window_per_address() -> None:
    clock = Clock()
    throttle = Throttle(3, 60.0, clock=clock)
    for offset in (0, 10, 20):
        clock.now = 1000.0 + offset
        assert throttle.retry_after("a") is None
        throttle.failed("a")
    assert throttle.retry_after("a") == 40  # the failure at 1000 leaves the window at 1060
    assert throttle.retry_after("b") is None  # another address is not affected
    clock.now = 1059.5
    assert throttle.retry_after("a") == 1
    clock.now = 1060.0
    assert throttle.retry_after("a") is None  # two failures left in the window
    throttle.failed("a")
    assert throttle.retry_after("a") == 10  # now the one at 1010 must leave first
    clock.now = 2000.0
    assert throttle.retry_after("a") is None


def test_the_throttle_remembers_a_bounded_number_of_addresses() -> None:
    clock = Clock()
    throttle = Throttle(1, 60.0, clock=clock, max_clients=2)
    for address in ("a", "b", "c"):
        throttle.failed(address)
    assert throttle.retry_after("a") is None  # forgotten: the longest quiet
    assert throttle.retry_after("b") == 60 and throttle.retry_after("c") == 60


# --------------------------------------------------------------------------- requests


def request(headers: dict[str, str], method: str = "GET", access: Access | None = None) -> Request:
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": "/api/v1/incidents",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("10.0.0.1", 1234),
        "onduty.access": access,
    }
    return Request(scope)


def test_principal_of_reads_the_bearer_token_or_the_console_cookie(access: Access) -> None:
    assert principal_of(request({"Authorization": "Bearer tok-operator"}, access=access)) == (
        Principal("otto", frozenset({"viewer", "operator"}))
    )
    assert principal_of(request({"authorization": "bearer tok-operator"}, access=access))
    assert principal_of(request({"Authorization": "Basic dG9rOng="}, access=access)) is None
    assert principal_of(request({"Authorization": "Bearer nope"}, access=access)) is None
    assert principal_of(request({}, access=access)) is None
    cookie = {"Cookie": "onduty_token=tok-viewer"}
    viewer = principal_of(request(cookie, access=access))
    assert viewer is not None and viewer.name == "vera"
    # a bearer header wins over the cookie, even when it is wrong
    assert principal_of(request({**cookie, "Authorization": "Bearer x"}, access=access)) is None


def test_a_cookie_changes_nothing_from_another_site(access: Access) -> None:
    cookie = {"Cookie": "onduty_token=tok-operator", "Host": "onduty.example:8765"}
    assert principal_of(request(cookie, "POST", access)) is None  # no Origin: refused
    evil = {**cookie, "Origin": "https://evil.example"}
    assert principal_of(request(evil, "DELETE", access)) is None
    same = {**cookie, "Origin": "https://onduty.example:8765"}
    assert principal_of(request(same, "POST", access)) is not None
    console = {**cookie, "X-Onduty-Console": "1"}
    assert principal_of(request(console, "PUT", access)) is not None
    bearer = {"Authorization": "Bearer tok-operator", "Origin": "https://evil.example"}
    assert principal_of(request(bearer, "POST", access)) is not None  # not a browser's cookie


def test_with_access_control_off_everyone_is_the_api() -> None:
    assert principal_of(request({}, access=Access())) is LOCAL
    assert principal_of(request({"Authorization": "Bearer anything"}, access=Access())) is LOCAL
    assert LOCAL.name == "api" and LOCAL.roles == set(ROLES)


# --------------------------------------------------------------------------- the app


class AppClient:
    """Requests straight to the ASGI app, without its lifespan (so the read models are empty
    and there is no core loop)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            base = "http://localhost"  # a name the app answers to
            async with httpx.AsyncClient(transport=transport, base_url=base) as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)


@pytest.fixture
def app_client(tmp_path: Path, access: Access) -> AppClient:
    return AppClient(build_app(Service(Config(), str(tmp_path / "x.db"), access=access)))


def test_routes_answer_401_403_and_then_the_route(app_client: AppClient) -> None:
    missing = app_client.get(f"{API}/incidents")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json() == {"error": "authentication required: a bearer token", "field": None}
    viewer = {"Authorization": "Bearer tok-viewer"}
    assert app_client.get(f"{API}/incidents", headers=viewer).json() == []
    refused = app_client.delete(f"{API}/silences/sil-x", headers=viewer)
    assert refused.status_code == 403
    assert refused.json()["error"] == "vera does not have the operator role"
    operator = {"Authorization": "Bearer tok-operator"}
    assert app_client.delete(f"{API}/silences/sil-x", headers=operator).status_code == 404
    assert app_client.get("/healthz").status_code == 200


def test_repeated_failures_are_throttled_but_a_good_token_still_works(
    app_client: AppClient,
) -> None:
    for _ in range(3):
        assert app_client.get("/metrics").status_code == 401
    throttled = app_client.get("/metrics", headers={"Authorization": "Bearer guess"})
    assert throttled.status_code == 429
    assert 0 < int(throttled.headers["Retry-After"]) <= 60
    good = app_client.get("/metrics", headers={"Authorization": "Bearer tok-viewer"})
    assert good.status_code == 200  # the same address, a token that verifies
    assert app_client.get("/metrics").status_code == 429
    assert app_client.get("/healthz").status_code == 200


def test_ingest_checks_its_own_credentials(app_client: AppClient) -> None:
    native = {"source": "t", "fingerprint": "f", "status": "firing", "labels": {}}
    headers = {"Content-Type": "application/json"}
    # credentials are checked before anything else; a user token is not an ingest credential
    assert app_client.post(f"{API}/signals", json=native).status_code == 401
    user = {"Authorization": "Bearer tok-admin"}
    assert app_client.post(f"{API}/signals", json=native, headers=user).status_code == 401
    wrong_route = {"Authorization": "Bearer tok-am"}
    answer = app_client.post(f"{API}/signals", json=native, headers=wrong_route)
    assert answer.status_code == 403 and "am-eu" in answer.json()["error"]
    # authenticated, then the usual checks: this app has no core loop, so 503
    body = b'{"source": "t", "fingerprint": "f", "status": "firing", "labels": {}}'
    signed = {**headers, "X-Onduty-Signature": sign("s3cret", body)}
    assert app_client.post(f"{API}/signals", content=body, headers=signed).status_code == 503
    # refused after it verified: the same signed request may come again (it is no replay)
    assert app_client.post(f"{API}/signals", content=body, headers=signed).status_code == 503
    assert app_client.post(f"{API}/signals", content=b"{}", headers=signed).status_code == 401


def test_pagerduty_senders_may_use_their_routing_key(app_client: AppClient) -> None:
    event = {
        "event_action": "trigger",
        "payload": {"summary": "s", "source": "h", "severity": "info"},
    }
    path = f"{API}/signals/pagerduty"
    assert app_client.post(path, json={**event, "routing_key": "nope"}).status_code == 401
    # known: authenticated, then this app has no core loop to take it
    assert app_client.post(path, json={**event, "routing_key": "tok-pd"}).status_code == 503
    assert app_client.post(path, json={**event, "routing_key": "tok-am"}).status_code == 403
    native = {"source": "t", "fingerprint": "f", "status": "firing", "labels": {}}
    routed = {**native, "routing_key": "tok-pd"}  # only the PagerDuty route reads the body
    assert app_client.post(f"{API}/signals", json=routed).status_code == 401


def test_sign_in_checks_a_token_and_counts_failures(access: Access) -> None:
    form = request({}, "POST", access)
    assert sign_in(form, "tok-viewer").name == "vera"
    for _ in range(3):
        with pytest.raises(AuthProblem) as problem:
            sign_in(form, "guess")
        assert problem.value.status_code == 401
    with pytest.raises(AuthProblem) as problem:
        sign_in(form, "guess")
    assert problem.value.status_code == 429 and problem.value.headers
    assert sign_in(form, "tok-viewer").name == "vera"  # a known token is never throttled
    assert sign_in(request({}, "POST", Access()), "") is LOCAL


def test_every_api_route_checks_the_role_in_the_table(tmp_path: Path) -> None:
    app = build_app(Service(Config(), str(tmp_path / "x.db")))
    ingest = {API + path for path, _ in INGEST_ROUTES.values()}
    ingest |= {path for paths in INGEST_ALIASES.values() for path in paths}
    documents = {f"{API}/openapi.json"}
    seen: dict[tuple[str, str], str | None] = {}
    for route in app.routes:
        path = getattr(route, "path", "")
        if not (path.startswith(f"{API}/") or path == "/metrics"):
            continue
        if path in ingest or path in documents:
            continue  # ingest checks its own credentials; the documents need any token
        assert isinstance(route, APIRoute), path
        roles = {required_role(d.call) for d in route.dependant.dependencies} - {None}
        assert len(roles) == 1, (path, roles)
        for method in route.methods or ():
            seen[(method, path)] = roles.pop() if len(route.methods) == 1 else None
    assert seen == ROUTE_ROLES


def test_a_reload_rotates_tokens_but_never_turns_access_control_off(tmp_path: Path) -> None:
    from onduty.configfile import load_config

    file = tmp_path / "onduty.yaml"

    def write(access: str) -> Config:
        file.write_text("services: [{name: web, instances: [web-1]}]\n" + access)
        return load_config(file)

    config = write(f"access: {{tokens: [{{name: a, hash: '{hash_token('tok-a')}'}}]}}\n")
    service = Service(
        config, str(tmp_path / "x.db"), config_path=str(file), access=Access.from_raw(config.access)
    )
    access = service.access
    service.read.policy.version = config.version  # as if running: the policy is unchanged

    write(f"access: {{tokens: [{{name: b, roles: [admin], hash: '{hash_token('tok-b')}'}}]}}\n")
    assert service.reload() == (200, {"version": config.version, "changed": False})
    assert service.access is access  # updated in place: the app holds this object
    assert access.authenticate("tok-a") is None
    assert access.authenticate("tok-b") == Principal("b", frozenset(ROLES))

    write("")
    status, body = service.reload()
    assert status == 422 and "turn access control off" in body["problems"][0]
    write("access: {tokens: [{name: c, hash_env: UNSET_FOR_THIS_TEST}]}\n")
    status, body = service.reload()
    assert status == 422 and "UNSET_FOR_THIS_TEST is not set" in body["problems"][0]
    assert access.authenticate("tok-b") is not None  # a refused reload changes nothing
