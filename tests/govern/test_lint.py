"""`check_policy`: each kind of problem, named by its rule, with its position."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from onduty.config import Config, ConfigError, parse_config
from onduty.configfile import load_config
from onduty.events import Tick
from onduty.govern import lint
from onduty.govern.lint import Problem, check_document, check_policy, condition_variables
from tests.core.helpers import Driver
from tests.core.helpers import config as core_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy" / "onduty.yaml"
NOW = datetime(2026, 6, 1, tzinfo=UTC)

SERVICES = [
    {"name": "checkout", "tier": "critical", "autonomy": "approve",
     "instances": ["checkout-1", "checkout-2", "checkout-3", "checkout-4"]},
    {"name": "payments", "tier": "high", "region": "eu-west", "autonomy": "act",
     "instances": ["payments-1", "payments-2", "payments-3", "payments-4"]},
    {"name": "search", "autonomy": "act", "instances": [f"search-{i}" for i in range(1, 7)]},
]  # fmt: skip
RUNBOOKS = [
    {
        "name": "restart-crashed-instance",
        "when": 'signal.labels.alertname == "InstanceDown"',
        "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
    },
    {
        "name": "rollback-bad-deploy",
        "when": 'signal.labels.alertname == "HighErrorRate"',
        "do": [{"action": "deploy.rollback", "target": "{{ signal.labels.service }}"}],
    },
]


def document(*guardrails: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(
        {"services": SERVICES, "runbooks": RUNBOOKS, "policy": {"guardrails": list(guardrails)}}
    )


def policy(*guardrails: dict[str, Any]) -> Config:
    return parse_config(document(*guardrails))


def condition(when: str, effect: str = "deny", name: str = "rule") -> dict[str, Any]:
    return {"name": name, "when": when, "effect": effect}


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, problems
    return problems[0]


def test_the_example_policy_is_clean() -> None:
    assert check_policy(load_config(EXAMPLE), now=NOW) == []


def test_a_clean_policy_has_no_problems() -> None:
    config = policy(
        condition('service.tier == "critical" && action.name == "process.restart"'),
        condition("incident.flapping || signal.labels.severity == 'page'", name="second"),
        {"name": "budget", "rate": {"action": "process.restart", "max": 3, "per": "1h"}},
    )
    assert check_policy(config, now=NOW) == []


# ---------------------------------------------------------------------------- (a) compile errors


@pytest.mark.parametrize(
    ("when", "position", "words"),
    [
        ("service.tier ==", 16, "ends too early"),
        ("service.tier == (1", 19, "missing ')'"),
        ('service.tier == "x" &&\n  action.name ==', 40, "ends too early"),
        ('"ää" == service.name &&', 24, "ends too early"),
    ],
)
def test_a_compile_error_names_the_rule_and_the_position(
    when: str, position: int, words: str
) -> None:
    problems = check_document(document(condition("true", name="fine"), condition(when, name="bad")))
    problem = only([p for p in problems if p.severity == "error"])
    assert problem.rule == "bad"
    assert problem.position == position
    assert words in problem.message
    assert problem.expression == when


def test_load_config_refuses_the_same_errors_check_document_explains() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(document(condition("service.tier ==", name="bad")))
    assert any("policy.guardrails[0].when" in p for p in caught.value.problems)
    problems = lint.problems_of_config_error(
        document(condition("service.tier ==", name="bad")), caught.value
    )
    assert [(p.rule, p.position) for p in problems] == [("bad", 16)]


def test_the_other_rules_are_still_checked_when_one_does_not_compile() -> None:
    problems = check_document(
        document(condition("service.tier ==", name="bad"), condition("servce.tier", name="typo"))
    )
    assert [(p.rule, p.position) for p in problems] == [("bad", 16), ("typo", 1)]


def test_other_configuration_problems_are_reported_as_they_are() -> None:
    doc = document(condition("service.tier ==", name="bad"))
    doc["services"][0] = {**SERVICES[0], "tier": "platinum"}
    problems = check_document(doc)
    assert ("bad", 16) in [(p.rule, p.position) for p in problems]
    other = [p for p in problems if p.rule == ""]
    assert other and "services[0].tier" in other[0].message


def test_a_guardrail_problem_names_its_rule() -> None:
    problems = check_document(document({"name": "broken", "rate": {"max": 3}}))
    assert [p.rule for p in problems] == ["broken"]
    assert "rate.per" in problems[0].message


# ---------------------------------------------------------------------------- (b) unknown names


def test_an_unknown_variable_is_named_with_its_position_and_a_suggestion() -> None:
    problem = only(check_policy(policy(condition('action.name == "x" || servce.tier == "y"'))))
    assert problem.severity == "error"
    assert problem.rule == "rule"
    assert problem.position == 23
    assert "unknown variable 'servce'" in problem.message
    assert "known: signal, incident, action, target, service, now, counts" in problem.message
    assert "did you mean 'service'" in problem.message


def test_comprehension_variables_and_strings_are_not_variables() -> None:
    config = policy(condition('signal.labels.exists(k, k == "servce") && "tier" != service.tier'))
    assert check_policy(config) == []


def test_an_unknown_field_is_an_error() -> None:
    problem = only(check_policy(policy(condition('service.nme == "checkout"'))))
    assert problem.position == 9
    assert "service has no field 'nme'" in problem.message
    assert "did you mean 'name'" in problem.message


def test_labels_and_params_are_open() -> None:
    config = policy(condition('signal.labels.team == "x" || action.params["replicas"] > 2'))
    assert check_policy(config) == []


def test_now_has_no_fields() -> None:
    problem = only(check_policy(policy(condition("now.hour > 3"))))
    assert problem.position == 5
    assert "now is a timestamp" in problem.message


def test_counts_from_history_are_known_and_checked() -> None:
    assert check_policy(policy(condition("counts.target_actions_1h > 3"))) == []


def test_an_unknown_function_is_an_error() -> None:
    problem = only(check_policy(policy(condition("service.tier == 'x' || frobnicate(1)"))))
    assert problem.position == 24
    assert "unknown function 'frobnicate'" in problem.message


# ---------------------------------------------------------------------------- (c) types


@pytest.mark.parametrize(
    ("when", "position", "words"),
    [
        ("service.tier > 3", 14, "compares service.tier (a string) with an int"),
        ("service.tier == 3", 14, "never equal"),
        ("3 == service.tier", 3, "never equal"),
        ('service.instances == "4"', 19, "compare with a number"),
        ('now > "2026-01-01T00:00:00Z"', 5, 'timestamp("2026-01-01T00:00:00Z")'),
        ("size(service.instances) > 1", 1, "service.instances is an int"),
        ('service.instances.startsWith("4")', 19, "is not defined for the values"),
    ],
)
def test_a_type_error_is_an_error_with_its_position(when: str, position: int, words: str) -> None:
    problem = only(check_policy(policy(condition(when))))
    assert problem.severity == "error"
    assert problem.position == position
    assert words in problem.message


def test_a_condition_that_is_not_a_boolean_is_an_error() -> None:
    problem = only(check_policy(policy(condition("service.tier"))))
    assert problem.severity == "error"
    assert "not a boolean" in problem.message


def test_numbers_of_different_kinds_compare_fine() -> None:
    config = policy(condition("service.instances > 2.5 && service.instances < 10u"))
    assert check_policy(config) == []


# ---------------------------------------------------------------------------- (d) never fires


@pytest.mark.parametrize(
    ("when", "position", "words"),
    [
        ('service.name == "nonexistent"', 17, "no service is named 'nonexistent'"),
        ('action.name == "x.y"', 16, "no runbook takes the action 'x.y'"),
        ('"gold" == service.tier', 1, "no service has tier 'gold'"),
        ('service.region == "mars" && incident.flapping', 19, "no service is in region 'mars'"),
        ('service.name in ["a", "b"]', 18, "none of 'a', 'b' can be service.name"),
        ('signal.status == "burning"', 18, "never 'burning'"),
    ],
)
def test_a_rule_that_can_never_fire_is_a_warning(when: str, position: int, words: str) -> None:
    problem = only(check_policy(policy(condition(when))))
    assert problem.severity == "warning"
    assert problem.position == position
    assert words in problem.message
    assert "never fires" in problem.message


def test_a_literal_that_exists_is_no_warning_even_if_false_in_the_samples() -> None:
    assert check_policy(policy(condition('signal.labels.alertname == "Nope"'))) == []


def test_a_scoped_rule_that_never_applies_is_a_warning() -> None:
    rule = {"name": "scoped", "concurrent": {"max": 1}, "when": 'service.name == "web"'}
    problem = only(check_policy(policy(rule)))
    assert problem.rule == "scoped"
    assert "never applies" in problem.message


@pytest.mark.parametrize("kind", ["rate", "blast"])
def test_a_limit_on_an_action_no_runbook_takes_is_a_warning(kind: str) -> None:
    spec = {"action": "process.restrat", "max": 1}
    spec |= {"per": "1h"} if kind == "rate" else {}
    problem = only(check_policy(policy({"name": "limit", kind: spec})))
    assert problem.severity == "warning"
    assert f"{kind}.action 'process.restrat' is not an action of any runbook" in problem.message
    assert "did you mean 'process.restart'" in problem.message


def test_freeze_ranges_in_the_past_are_warnings() -> None:
    past = {"from": "2025-12-23T00:00:00+01:00", "to": "2026-01-02T00:00:00+01:00"}
    future = {"from": "2026-12-23T00:00:00+01:00", "to": "2027-01-02T00:00:00+01:00"}
    over = policy({"name": "year-end", "freeze": {"ranges": [past]}})
    problem = only(check_policy(over, now=NOW))
    assert problem.severity == "warning"
    assert "never applies again" in problem.message
    mixed = policy({"name": "year-end", "freeze": {"ranges": [past, future]}})
    assert "freeze.ranges[0]" in only(check_policy(mixed, now=NOW)).message
    assert check_policy(mixed, now=datetime(2025, 12, 1, tzinfo=UTC)) == []
    assert check_policy(over) == []  # without the current time the check is skipped


def test_a_fraction_that_rounds_down_to_nothing_is_a_warning() -> None:
    problem = only(check_policy(policy({"name": "few", "concurrent": {"max_fraction": 0.2}})))
    assert "rounds down to 0 on checkout (4), payments (4)" in problem.message
    scoped = {
        "name": "few",
        "concurrent": {"max_fraction": 0.2},
        "when": 'service.name == "search"',
    }
    assert check_policy(policy(scoped)) == []
    blast = only(check_policy(policy({"name": "b", "blast": {"max_fraction": 0.2}})))
    assert "no instance there may ever be affected" in blast.message


def test_an_outage_brake_one_service_trips_is_a_warning() -> None:
    problem = only(check_policy(policy({"name": "brake", "outage": {"max_fraction": 0.3}})))
    assert "one alerting service is already 33% of 3" in problem.message
    assert check_policy(policy({"name": "brake", "outage": {"max_fraction": 0.5}})) == []


def test_duplicated_and_contradicting_rules_are_warnings() -> None:
    problems = check_policy(
        policy(
            condition('service.tier == "critical"', "deny", "first"),
            condition('service.tier  ==  "critical"', "deny", "again"),
            condition('service.tier == "critical"', "require_approval", "softer"),
        )
    )
    assert [(p.rule, p.severity) for p in problems] == [
        ("again", "warning"),
        ("softer", "warning"),
    ]
    assert "duplicates rule 'first'" in problems[0].message
    assert "contradicts rule 'first'" in problems[1].message


# ---------------------------------------------------------------------------- the variables


def test_condition_variables_have_the_shape_the_manager_gives_them() -> None:
    """If the manager's CEL variables change, lint and table tests must change with them."""
    seen: list[dict[str, Any]] = []
    cfg = core_config(policy={"guardrails": [condition('service.tier == "critical"')]})
    driver = Driver(cfg)
    driver.manager.actions.verdicts.on_facts.append(
        lambda facts: seen.append(facts.variables.variables)
    )
    driver.signal("web-1")
    driver.feed(Tick(timer_id="wake"), after=60)
    assert seen, "the manager never evaluated the policy"
    service = next(s for s in cfg.services if s.name == "web")
    ours = condition_variables(
        service=service,
        service_name="web",
        autonomy=service.autonomy,
        labels={"alertname": "InstanceDown", "instance": "web-1", "service": "web"},
        incident_id=seen[0]["incident"]["id"],
        action="process.restart",
        runbook="restart-crashed-instance",
        params={},
        target="web-1",
        target_service="web",
        now=seen[0]["now"],
        source="test",
        fingerprint="InstanceDown:web-1",
    )
    assert seen[0].pop("counts").keys() == ours.pop("counts").keys()
    assert seen[0] == ours


def test_representative_contexts_cover_every_service_and_step() -> None:
    samples = lint.representative_contexts(policy())
    assert {(s.service, s.action) for s in samples} == {
        (service["name"], action)
        for service in SERVICES
        for action in ("process.restart", "deploy.rollback")
    }
    rollback = next(s for s in samples if s.service == "search" and s.action == "deploy.rollback")
    assert rollback.variables["target"] == {"name": "search", "service": "search"}
    assert rollback.variables["signal"]["labels"]["alertname"] == "HighErrorRate"


def test_the_benchmark_policy_is_clean() -> None:
    from onduty.bench.verdict import policy_config

    config = policy_config()
    assert len(config.policy.guardrails) == 20
    assert check_policy(config, now=NOW) == []
