"""Actuator specs: validated models whose errors name the field, and templates that keep
substituted values inert."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from onduty.act.specs import (
    ActuatorConfigError,
    AlertmanagerSilenceSpec,
    HttpSpec,
    PluginSpec,
    ShellSpec,
    SupervisorSpec,
    parse_actuators,
)
from onduty.act.templates import (
    TemplateError,
    check_template,
    command_context,
    render_argv,
    render_json,
    render_regex,
    render_url,
)
from onduty.secrets import resolve_references
from tests.act.helpers import action

VALID: list[dict[str, Any]] = [
    {
        "kind": "shell",
        "action": "deploy.rollback",
        "argv": ["/usr/local/bin/rollback", "--service", "{{ target }}"],
        "allow": ["/usr/local/bin/rollback"],
        "env": {"TOKEN": "${ENV:DEPLOY_TOKEN}"},
        "timeout": "2m",
    },
    {
        "kind": "http",
        "action": "service.scale_out",
        "method": "post",
        "url": "https://scaler.internal:8443/v1/services/{{ target }}/scale",
        "headers": {"Authorization": "Bearer ${FILE:/run/secrets/scaler}"},
        "body": {"replicas": "{{ params.replicas }}", "reason": "incident {{ incident_id }}"},
    },
    {
        "kind": "supervisor",
        "url": "http://127.0.0.1:9001/RPC2",
        "username": "onduty",
        "password": "${ENV:SUPERVISOR_PASSWORD}",
    },
    {"kind": "alertmanager.silence", "url": "http://127.0.0.1:9093/"},
]


def problems(raw: list[dict[str, Any]]) -> list[str]:
    with pytest.raises(ActuatorConfigError) as caught:
        parse_actuators(raw, plugin_kinds=())
    return caught.value.problems


def test_valid_specs_parse_into_their_models() -> None:
    shell, http, supervisor, silence = parse_actuators(VALID, plugin_kinds=())
    assert isinstance(shell, ShellSpec)
    assert shell.timeout == timedelta(minutes=2)
    assert shell.max_output == 64 * 1024
    assert not shell.idempotent
    assert isinstance(http, HttpSpec)
    assert http.method == "POST"
    assert http.expect_status == [200, 201, 202, 204]
    assert http.timeout == timedelta(seconds=30)
    assert not http.idempotent
    assert isinstance(supervisor, SupervisorSpec)
    assert supervisor.action == "process.*"
    assert not supervisor.idempotent  # the family includes restart
    assert isinstance(silence, AlertmanagerSilenceSpec)
    assert silence.url == "http://127.0.0.1:9093"
    assert silence.action == "alertmanager.*"


def test_specs_are_frozen_and_round_trip_through_json() -> None:
    specs = parse_actuators(VALID, plugin_kinds=())
    with pytest.raises(ValueError, match="frozen"):
        specs[0].action = "x"  # type: ignore[misc]
    dumped = [spec.model_dump(mode="json") for spec in specs]
    assert dumped[0]["timeout"] == "2m"
    assert parse_actuators(dumped, plugin_kinds=()) == specs


def test_http_idempotence_follows_the_method_unless_given() -> None:
    base = {"kind": "http", "action": "a.b", "url": "http://h/x"}
    for method, expected in (("GET", True), ("put", True), ("DELETE", True), ("POST", False)):
        (spec,) = parse_actuators([{**base, "method": method}], plugin_kinds=())
        assert isinstance(spec, HttpSpec)
        assert spec.idempotent is expected, method
    (spec,) = parse_actuators([{**base, "method": "POST", "idempotent": True}], plugin_kinds=())
    assert isinstance(spec, HttpSpec)
    assert spec.idempotent


def test_supervisor_idempotence_follows_the_operation() -> None:
    base = {"kind": "supervisor", "url": "http://127.0.0.1:9001/RPC2"}
    for name, expected in (("process.start", True), ("process.stop", True)):
        (spec,) = parse_actuators([{**base, "action": name}], plugin_kinds=())
        assert isinstance(spec, SupervisorSpec)
        assert spec.idempotent is expected
    (spec,) = parse_actuators([{**base, "action": "process.restart"}], plugin_kinds=())
    assert isinstance(spec, SupervisorSpec)
    assert not spec.idempotent


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"kind": "nope", "action": "a"}, "actuators[0].kind: unknown kind 'nope'"),
        ({"action": "a"}, "actuators[0].kind: required field is missing"),
        (
            {"kind": "shell", "action": "a", "argv": ["/bin/true"], "allow": ["/bin/true"], "x": 1},
            "actuators[0].x: unknown field",
        ),
        ({"kind": "shell", "action": "a", "argv": ["/bin/true"]}, "actuators[0].allow: required"),
        (
            {"kind": "shell", "action": "a", "argv": ["/bin/true"], "allow": ["bin/true"]},
            "actuators[0].allow: 'bin/true' must be an absolute path",
        ),
        (
            {"kind": "shell", "action": "a", "argv": ["/bin/rm", "-rf"], "allow": ["/bin/true"]},
            "actuators[0]: argv[0]: '/bin/rm' is not in `allow`",
        ),
        (
            {
                "kind": "shell",
                "action": "a",
                "argv": ["/bin/true", "{{ nope }}"],
                "allow": ["/bin/true"],
            },
            "actuators[0].argv: argv[1]: unknown variable 'nope'",
        ),
        (
            {
                "kind": "shell",
                "action": "a",
                "argv": ["/bin/true"],
                "allow": ["/bin/true"],
                "check_argv": ["/bin/true", "{{ target }}"],
            },
            "actuators[0].check_argv: check_argv[1]: unknown variable 'target' "
            "(available: command_id)",
        ),
        (
            {"kind": "shell", "action": "a", "argv": ["/bin/true", "{{ x"], "allow": ["/bin/true"]},
            "actuators[0].argv: argv[1]: not a valid template",
        ),
        (
            {"kind": "shell", "action": "Bad Name", "argv": ["/bin/true"], "allow": ["/bin/true"]},
            "actuators[0].action: String should match pattern",
        ),
        (
            {
                "kind": "shell",
                "action": "a",
                "argv": ["/bin/true"],
                "allow": ["/bin/true"],
                "timeout": "0s",
            },
            "actuators[0].timeout: must be longer than zero",
        ),
        (
            {"kind": "http", "action": "a", "url": "http://{{ target }}/restart"},
            "actuators[0].url: the scheme and host must be written out",
        ),
        (
            {"kind": "http", "action": "a", "url": "http://user:pw@host/x"},
            "actuators[0].url: credentials in the URL",
        ),
        (
            {"kind": "http", "action": "a", "url": "http://h/x", "headers": {"X-Api-Key": "abc"}},
            "actuators[0].headers: header 'X-Api-Key' carries a credential",
        ),
        (
            {"kind": "http", "action": "a", "url": "http://h/x", "headers": {"X": "${VAULT:x}"}},
            "actuators[0].headers: header 'X': unknown reference ${VAULT:x}",
        ),
        (
            {"kind": "http", "action": "a", "url": "http://h/x", "expect_status": [999]},
            "actuators[0].expect_status: 999 is not an HTTP status code",
        ),
        (
            {"kind": "http", "action": "a", "url": "http://h/x", "body": {"k": "{{ secret }}"}},
            "actuators[0].body: body.k: unknown variable 'secret'",
        ),
        (
            {"kind": "supervisor", "url": "http://h:9001/RPC2", "username": "u", "password": "pw"},
            "actuators[0].password: the password would be recorded",
        ),
        (
            {"kind": "supervisor", "url": "http://h:9001/RPC2", "action": "process.scale"},
            "actuators[0].action: the supervisor actuator restarts, starts or stops",
        ),
        (
            {"kind": "supervisor", "url": "unix://relative.sock"},
            "actuators[0].url: expected unix:///absolute/path",
        ),
        (
            {"kind": "alertmanager.silence", "url": "http://am:9093/?x=1"},
            "actuators[0].url: the Alertmanager URL is a base URL",
        ),
        (
            {"kind": "alertmanager.silence", "url": "http://am", "default_duration": "2d"},
            "actuators[0]: default_duration cannot be longer than max_duration",
        ),
    ],
)
def test_errors_name_the_field(item: dict[str, Any], expected: str) -> None:
    found = problems([item])
    assert any(problem.startswith(expected) for problem in found), found


def test_every_problem_is_reported_and_duplicate_actions_are_refused() -> None:
    found = problems(
        [
            VALID[0],
            {**VALID[0], "allow": ["relative"]},
            {"kind": "shell", "action": "deploy.rollback", "argv": ["/x"], "allow": ["/x"]},
        ]
    )
    assert found[0].startswith("actuators[1].allow")
    assert found[-1] == (
        "actuators[2].action: 'deploy.rollback' is already handled by actuators[0]"
    )


def test_plugin_kinds_are_kept_for_their_factory() -> None:
    (spec,) = parse_actuators(
        [{"kind": "k8s.rollout", "action": "deploy.*", "namespace": "prod"}],
        plugin_kinds={"k8s.rollout"},
    )
    assert isinstance(spec, PluginSpec)
    assert spec.options() == {
        "kind": "k8s.rollout",
        "action": "deploy.*",
        "timeout": "30s",
        "namespace": "prod",
    }


def test_resolved_secrets_are_never_shown(tmp_path: Any) -> None:
    path = tmp_path / "secret"
    path.write_text("from-file\n")
    values, secrets = resolve_references(
        {"A": "${ENV:TOKEN}", "B": f"x-${{FILE:{path}}}", "C": "plain"},
        what="env",
        env={"TOKEN": "tok-123"},
    )
    assert values.as_dict() == {"A": "tok-123", "B": "x-from-file", "C": "plain"}
    for shown in (repr(values), str(values), repr(secrets)):
        assert "tok-123" not in shown and "from-file" not in shown
    assert secrets.redact("a tok-123 x-from-file plain") == "a [redacted] [redacted] plain"
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(values)


# --------------------------------------------------------------------------- templates


def test_a_missing_variable_is_an_error_naming_it() -> None:
    with pytest.raises(TemplateError, match="'nothing' is undefined"):
        render_argv(["{{ nothing }}"], {"target": "x"})
    with pytest.raises(TemplateError, match=r"argv\[1\].*no attribute 'replicas'"):
        render_argv(["a", "{{ params.replicas }}"], command_context(action()))


def test_unknown_variables_are_found_before_anything_runs() -> None:
    check_template("{{ target }} {{ params.x }} {{ command_id }}")
    with pytest.raises(TemplateError, match="unknown variable 'signal'"):
        check_template("{{ signal.labels.instance }}")


def test_the_sandbox_refuses_to_reach_python_internals() -> None:
    for template in ("{{ ''.__class__.__mro__ }}", "{{ params.update({'a': 1}) }}"):
        with pytest.raises(TemplateError):
            render_argv([template], command_context(action()))


def test_url_values_are_percent_encoded_path_segments() -> None:
    template = "http://h/api/items/{{ target }}/restart?reason={{ params.reason }}"
    context = command_context(action("../admin", {"reason": "a&b=c #1 /x?"}))
    assert render_url(template, context) == (
        "http://h/api/items/..%2Fadmin/restart?reason=a%26b%3Dc%20%231%20%2Fx%3F"
    )
    explicit = render_url("http://h/{{ target | urlencode }}", context)
    assert explicit == "http://h/..%2Fadmin"  # not encoded twice
    for target in ("..", ".", ""):
        with pytest.raises(TemplateError, match="would change the path"):
            render_url("http://h/x/{{ target }}", command_context(action(target)))
    assert render_url("http://h/{{ target }}", command_context(action("a@b:c"))) == (
        "http://h/a%40b%3Ac"
    )


def test_regex_values_match_only_themselves() -> None:
    context = command_context(action("web.1|.*"))
    assert render_regex("{{ target }}-(a|b)", context) == "web\\.1\\|\\.\\*-(a|b)"


def test_json_bodies_keep_types_and_structure() -> None:
    context = command_context(action('x", "admin": true', {"replicas": 3, "tags": ["a"]}))
    body = {
        "replicas": "{{ params.replicas }}",
        "tags": "{{ params.tags }}",
        "name": "svc-{{ target }}",
        "target": "{{ target }}",
        "fixed": [1, None, True],
    }
    assert render_json(body, context) == {
        "replicas": 3,
        "tags": ["a"],
        "name": 'svc-x", "admin": true',
        "target": 'x", "admin": true',
        "fixed": [1, None, True],
    }
    with pytest.raises(TemplateError, match="no attribute 'missing'"):
        render_json({"a": "{{ params.missing }}"}, context)
