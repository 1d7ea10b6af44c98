"""Inhibition: Alertmanager's rules, an index equal to a brute-force scan, plain snapshots."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from onduty.correlate import Inhibitor, InhibitRule, label_key, scan_inhibition

REGION_DOWN = InhibitRule(
    name="region-down",
    source_matchers=['alertname="RegionDown"'],
    target_matchers=['alertname=~"Instance.*"'],
    equal=["region"],
)


def region_down(region: str) -> dict[str, str]:
    return {"alertname": "RegionDown", "region": region, "severity": "critical"}


def instance_down(instance: str, region: str) -> dict[str, str]:
    return {"alertname": "InstanceDown", "instance": instance, "region": region}


def test_region_down_inhibits_instance_alerts_in_that_region_only() -> None:
    inhibitor = Inhibitor([REGION_DOWN])
    inhibitor.add_firing(region_down("eu"))
    assert inhibitor.inhibited_by(instance_down("web-1", "eu")) is REGION_DOWN
    assert inhibitor.inhibited_by(instance_down("web-2", "us")) is None
    assert inhibitor.inhibited_by({"alertname": "HighLatency", "region": "eu"}) is None
    # The source itself is not inhibited (it does not match the target side).
    assert inhibitor.inhibited_by(region_down("eu")) is None
    found = inhibitor.inhibition(instance_down("web-1", "eu"))
    assert found is not None
    assert found.rule is REGION_DOWN and found.rule_index == 0
    assert found.source_labels == region_down("eu")
    assert found.source_key == label_key(region_down("eu"))


def test_inhibition_ends_when_the_source_resolves() -> None:
    inhibitor = Inhibitor([REGION_DOWN])
    inhibitor.add_firing(region_down("eu"))
    inhibitor.add_firing(region_down("eu"))  # a repeat changes nothing
    inhibitor.add_firing({**region_down("eu"), "severity": "page"})  # another alert
    inhibitor.remove_firing(region_down("eu"))
    assert inhibitor.inhibited_by(instance_down("web-1", "eu")) is REGION_DOWN
    inhibitor.remove_firing({**region_down("eu"), "severity": "page"})
    assert inhibitor.inhibited_by(instance_down("web-1", "eu")) is None
    inhibitor.remove_firing(region_down("eu"))  # unknown: nothing happens
    assert len(inhibitor) == 0


def test_only_firing_sources_inhibit_a_scan_sees_what_it_is_given() -> None:
    assert REGION_DOWN.describe() == "region-down"
    inhibitor = Inhibitor([REGION_DOWN])
    target = instance_down("web-1", "eu")
    assert inhibitor.inhibited_by(target, firing=[region_down("eu")]) is REGION_DOWN
    assert inhibitor.inhibited_by(target, firing=[region_down("us")]) is None
    assert inhibitor.inhibited_by(target) is None  # the index holds nothing


def test_equal_with_missing_labels() -> None:
    rule = InhibitRule.model_validate(
        {
            "source_matchers": ['alertname="ClusterDown"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["cluster", "zone"],
        }
    )
    inhibitor = Inhibitor([rule])
    inhibitor.add_firing({"alertname": "ClusterDown", "cluster": "c1"})  # no zone
    # Both missing `zone`: equal.
    assert inhibitor.inhibited_by({"severity": "warning", "cluster": "c1"}) is rule
    # An empty value is the same as a missing label.
    assert inhibitor.inhibited_by({"severity": "warning", "cluster": "c1", "zone": ""}) is rule
    # Present on one side only: not equal.
    assert inhibitor.inhibited_by({"severity": "warning", "cluster": "c1", "zone": "a"}) is None
    # Missing on the target, present on the source: not equal.
    assert inhibitor.inhibited_by({"severity": "warning"}) is None
    # Everything missing on both sides is equal too.
    inhibitor.add_firing({"alertname": "ClusterDown"})
    assert inhibitor.inhibited_by({"severity": "warning"}) is rule


def test_no_equal_labels_means_any_source_inhibits() -> None:
    rule = InhibitRule.model_validate(
        {"source_matchers": ['alertname="Maintenance"'], "target_matchers": ['severity!=""']}
    )
    inhibitor = Inhibitor([rule], firing=[{"alertname": "Maintenance"}])
    assert inhibitor.inhibited_by({"severity": "page", "region": "anywhere"}) is rule
    assert "inhibits" in rule.describe()


def test_an_alert_never_inhibits_itself() -> None:
    # Both sides match every alert with severity set: the two-sided case.
    rule = InhibitRule.model_validate(
        {
            "source_matchers": ['severity=~".+"'],
            "target_matchers": ['severity=~".+"'],
            "equal": ["service"],
        }
    )
    alert = {"severity": "page", "service": "checkout"}
    inhibitor = Inhibitor([rule], firing=[alert])
    assert inhibitor.inhibited_by(alert) is None
    # Nor do two alerts matching both sides inhibit each other (Alertmanager's rule).
    other = {"severity": "warning", "service": "checkout"}
    inhibitor.add_firing(other)
    assert inhibitor.inhibited_by(alert) is None
    assert inhibitor.inhibited_by(other) is None
    assert scan_inhibition([rule], alert, [alert, other]) is None


def test_a_one_sided_source_still_inhibits_a_two_sided_target() -> None:
    rule = InhibitRule.model_validate(
        {
            "source_matchers": ['severity=~"critical|warning"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["service"],
        }
    )
    warning = {"severity": "warning", "service": "checkout"}
    critical = {"severity": "critical", "service": "checkout"}
    inhibitor = Inhibitor([rule], firing=[warning])
    assert inhibitor.inhibited_by(warning) is None
    inhibitor.add_firing(critical)
    assert inhibitor.inhibited_by(warning) is rule
    assert inhibitor.inhibited_by(critical) is None  # not a target


def test_rules_are_tried_in_order_and_the_source_is_the_smallest_key() -> None:
    broad = InhibitRule.model_validate(
        {"source_matchers": ['alertname="RegionDown"'], "target_matchers": ['region="eu"']}
    )
    inhibitor = Inhibitor([REGION_DOWN, broad])
    inhibitor.add_firing(region_down("us"))
    inhibitor.add_firing(region_down("eu") | {"severity": "page"}, key="fp-2")
    inhibitor.add_firing(region_down("eu"), key="fp-1")
    found = inhibitor.inhibition(instance_down("web-1", "eu"))
    assert found is not None and found.rule_index == 0 and found.source_key == "fp-1"
    found = inhibitor.inhibition({"alertname": "HighLatency", "region": "eu"})
    assert found is not None and found.rule is broad
    assert found.source_key == "fp-1"  # "f" sorts before "{"
    inhibitor.remove_firing({}, key="fp-1")
    inhibitor.remove_firing({}, key="fp-2")
    found = inhibitor.inhibition({"alertname": "HighLatency", "region": "eu"})
    assert found is not None and found.source_key == label_key(region_down("us"))


def test_a_key_added_again_with_new_labels_moves() -> None:
    inhibitor = Inhibitor([REGION_DOWN])
    inhibitor.add_firing(region_down("eu"), key="fp")
    inhibitor.add_firing(region_down("us"), key="fp")
    assert inhibitor.inhibited_by(instance_down("web-1", "eu")) is None
    assert inhibitor.inhibited_by(instance_down("web-1", "us")) is REGION_DOWN
    inhibitor.add_firing({"alertname": "Other"}, key="fp")
    assert inhibitor.inhibited_by(instance_down("web-1", "us")) is None
    assert inhibitor.is_firing("fp")
    inhibitor.remove_firing({}, key="fp")
    assert not inhibitor.is_firing("fp")


def test_snapshot_is_plain_data_and_rebuilds_the_same_answers() -> None:
    inhibitor = Inhibitor([REGION_DOWN])
    inhibitor.add_firing(region_down("us"), key="b")
    inhibitor.add_firing(region_down("eu") | {"team": ""}, key="a")
    inhibitor.add_firing(instance_down("web-1", "eu"))
    data = inhibitor.to_list()
    assert orjson.loads(orjson.dumps(data)) == data
    assert [item["key"] for item in data] == [
        "a",
        "b",
        label_key(instance_down("web-1", "eu")),
    ]
    assert data[0]["labels"] == region_down("eu")  # empty values are left out
    restored = Inhibitor.from_list([REGION_DOWN], data)
    assert restored.to_list() == data
    for target in (instance_down("web-9", "eu"), instance_down("web-9", "ap")):
        assert restored.inhibition(target) == inhibitor.inhibition(target)
    # A new configuration: the same firing alerts under other rules.
    swapped = inhibitor.with_rules([])
    assert swapped.to_list() == data and swapped.inhibited_by(instance_down("x", "eu")) is None


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"source_matchers": [], "target_matchers": ["a=b"]}, "at least one matcher"),
        ({"source_matchers": ["a=b"], "target_matchers": "{}"}, "at least one matcher"),
        ({"source_matchers": ["a"], "target_matchers": ["a=b"]}, "expected an operator"),
        (
            {"source_matchers": ["a=b"], "target_matchers": ["c=d"], "equal": ["x", "x"]},
            "listed twice",
        ),
        ({"source_matchers": ["a=b"], "target_matchers": ["c=d"], "equal": [""]}, "empty"),
        ({"source_matchers": ["a=b"], "target_matchers": ["c=d"], "eq": []}, "Extra inputs"),
    ],
)
def test_rule_validation(document: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        InhibitRule.model_validate(document)


def test_rules_serialize_with_matcher_strings() -> None:
    assert REGION_DOWN.model_dump(mode="json") == {
        "name": "region-down",
        "source_matchers": ['alertname="RegionDown"'],
        "target_matchers": ['alertname=~"Instance.*"'],
        "equal": ["region"],
    }
    assert InhibitRule.model_validate_json(REGION_DOWN.model_dump_json()) == REGION_DOWN


# --------------------------------------------------------------------------- index == scan

NAMES = ["alertname", "region", "severity"]
VALUES = ["", "a", "b"]

label_sets = st.dictionaries(st.sampled_from(NAMES), st.sampled_from(VALUES), max_size=4)
matcher_texts = st.builds(
    lambda name, op, value: f'{name}{op}"{value}"',
    st.sampled_from(NAMES),
    st.sampled_from(["=", "!=", "=~", "!~"]),
    st.sampled_from([*VALUES, "a|b", ".*", ".+", "[ab]"]),
)
rules = st.builds(
    lambda source, target, equal: InhibitRule.model_validate(
        {"source_matchers": source, "target_matchers": target, "equal": equal}
    ),
    st.lists(matcher_texts, min_size=1, max_size=2),
    st.lists(matcher_texts, min_size=1, max_size=2),
    st.lists(st.sampled_from(NAMES), max_size=2, unique=True),
)
operations = st.lists(st.tuples(st.booleans(), label_sets), max_size=25)


@settings(max_examples=300)
@given(st.lists(rules, min_size=1, max_size=3), operations, st.lists(label_sets, max_size=8))
def test_index_agrees_with_a_brute_force_scan(
    rule_list: list[InhibitRule],
    ops: list[tuple[bool, dict[str, str]]],
    targets: list[dict[str, str]],
) -> None:
    inhibitor = Inhibitor(rule_list)
    firing: dict[str, dict[str, str]] = {}
    for add, labels in ops:
        if add:
            inhibitor.add_firing(labels)
            firing[label_key(labels)] = labels
        else:
            inhibitor.remove_firing(labels)
            firing.pop(label_key(labels), None)
    alerts = list(firing.values())
    for target in [*targets, *alerts]:
        expected = scan_inhibition(rule_list, target, alerts)
        assert inhibitor.inhibition(target) == expected
        assert inhibitor.inhibited_by(target) == (expected.rule if expected else None)
        assert inhibitor.inhibited_by(target, firing=alerts) == inhibitor.inhibited_by(target)
        # Self-inhibition is impossible: alone, an alert is never inhibited.
        assert scan_inhibition(rule_list, target, [target]) is None
    # The snapshot rebuilds an index that answers the same, whatever the history was.
    rebuilt = Inhibitor.from_list(rule_list, inhibitor.to_list())
    fresh = Inhibitor(rule_list, firing=sorted(alerts, key=label_key, reverse=True))
    for target in targets:
        assert rebuilt.inhibition(target) == inhibitor.inhibition(target)
        assert fresh.inhibition(target) == inhibitor.inhibition(target)


def test_ten_thousand_firing_alerts() -> None:
    inhibitor = Inhibitor([REGION_DOWN])
    for n in range(10_000):
        inhibitor.add_firing(instance_down(f"web-{n}", f"r{n % 50}"))
    inhibitor.add_firing(region_down("r7"))
    inhibited = [
        n
        for n in range(10_000)
        if inhibitor.inhibited_by(instance_down(f"web-{n}", f"r{n % 50}")) is not None
    ]
    assert len(inhibited) == 200 and all(n % 50 == 7 for n in inhibited)
    for n in range(10_000):
        inhibitor.remove_firing(instance_down(f"web-{n}", f"r{n % 50}"))
    assert inhibitor.to_list() == [
        {"key": label_key(region_down("r7")), "labels": region_down("r7")}
    ]
