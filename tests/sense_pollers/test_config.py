"""The `sources:` models: defaults, the accepted spellings, and the errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from onduty.secrets import SecretError
from onduty.sense.pollers import (
    HttpProbe,
    PrometheusQuery,
    parse_sources,
    resolve_headers,
)

EXAMPLE = """
sources:
  - kind: http_probe
    name: checkout-health
    url: https://checkout.internal:8443/health
    method: GET
    interval: 15s
    timeout: 2s
    expect_status: 2xx
    failures_before_firing: 3
    labels: {service: checkout, instance: checkout-1}
    headers:
      Authorization: "Bearer ${ENV:CHECKOUT_PROBE_TOKEN}"
  - kind: prometheus
    name: checkout-up
    url: http://prometheus.internal:9090/
    query: up{job="checkout"}
    op: "<"
    threshold: 1
    for: 1m
    interval: 30s
    timeout: 10s
    labels: {service: checkout, severity: critical}
    alertname: InstanceDown
"""


def test_example_sources_parse() -> None:
    probe, query = parse_sources(yaml.safe_load(EXAMPLE)["sources"])
    assert isinstance(probe, HttpProbe)
    assert probe.interval == timedelta(seconds=15)
    assert probe.timeout == timedelta(seconds=2)
    assert probe.expect_status == list(range(200, 300))
    assert probe.failures_before_firing == 3
    assert probe.resend == timedelta(minutes=5)
    assert isinstance(query, PrometheusQuery)
    assert query.url == "http://prometheus.internal:9090"
    assert query.for_ == timedelta(minutes=1)
    assert query.alertname == "InstanceDown"
    assert query.threshold == 1.0
    # Serialised with the YAML spelling, and back.
    dumped = query.model_dump(mode="json")
    assert dumped["for"] == "1m" and "for_" not in dumped
    assert PrometheusQuery.model_validate(dumped) == query
    assert HttpProbe.model_validate(probe.model_dump(mode="json")) == probe


def test_defaults() -> None:
    probe = HttpProbe(kind="http_probe", name="p", url="http://127.0.0.1/health")
    assert (probe.method, probe.interval, probe.timeout) == (
        "GET",
        timedelta(seconds=30),
        timedelta(seconds=5),
    )
    assert probe.expect_status == [200]
    assert probe.failures_before_firing == 1
    query = PrometheusQuery.model_validate(
        {
            "kind": "prometheus",
            "name": "q",
            "url": "http://p:9090",
            "query": "up",
            "op": "<",
            "threshold": 1,
        }
    )
    assert query.alertname == "q"
    assert query.for_ == timedelta(0)
    assert PrometheusQuery(
        kind="prometheus",
        name="q",
        url="http://p:9090",
        query="up",
        op="<",
        threshold=1,
        for_=timedelta(seconds=5),
    ).for_ == timedelta(seconds=5)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (204, [204]),
        ("503", [503]),
        ([200, "3xx"], [200, *range(300, 400)]),
        ("2XX", list(range(200, 300))),
    ],
)
def test_expect_status_spellings(given: object, expected: list[int]) -> None:
    probe = HttpProbe.model_validate(
        {"kind": "http_probe", "name": "p", "url": "http://h/", "expect_status": given}
    )
    assert probe.expect_status == expected


def test_method_is_case_insensitive() -> None:
    probe = HttpProbe.model_validate(
        {"kind": "http_probe", "name": "p", "url": "http://h/", "method": "head"}
    )
    assert probe.method == "HEAD"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": "ftp://h/health"}, "http:// or https://"),
        ({"url": "http:///health"}, "no host"),
        ({"url": "http://user:pw@h/health"}, "credentials in the URL"),
        ({"method": "POST"}, "method"),
        ({"timeout": "30s"}, "must be shorter than the interval"),
        ({"interval": "0s"}, "interval must be positive"),
        ({"expect_status": "6xx"}, "status code"),
        ({"expect_status": 99}, "not an HTTP status code"),
        ({"expect_status": []}, "at least one"),
        ({"failures_before_firing": 0}, "greater than or equal to 1"),
        ({"labels": {"alertname": "x"}}, "set by the source itself"),
        ({"labels": {"bad-name": "x"}}, "not a valid Prometheus label name"),
        ({"headers": {"Authorization": "Bearer abc"}}, "carries a credential"),
        ({"headers": {"X-Api-Key": "abc"}}, "carries a credential"),
        ({"headers": {"X-Thing": "${VAULT:x}"}}, "unknown reference"),
        ({"headers": {"X-Thing": "${FILE:relative}"}}, "unknown reference"),
        ({"headers": {"Bad Header": "x"}}, "not a valid HTTP header name"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_probe_errors(change: dict[str, object], message: str) -> None:
    raw = {"kind": "http_probe", "name": "p", "url": "http://h/health", **change}
    with pytest.raises(ValidationError, match=message):
        HttpProbe.model_validate(raw)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"op": "=~"}, "op"),
        ({"threshold": "NaN"}, "cannot be NaN"),
        ({"query": ""}, "at least 1 character"),
        ({"url": "http://p:9090/?x=1"}, "base URL"),
        ({"for": "-1s"}, "expected a duration"),
        ({"timeout": "1m"}, "must be shorter than the interval"),
    ],
)
def test_prometheus_errors(change: dict[str, object], message: str) -> None:
    raw: dict[str, object] = {
        "kind": "prometheus",
        "name": "q",
        "url": "http://p:9090",
        "query": "up",
        "op": "<",
        "threshold": 1,
        **change,
    }
    with pytest.raises(ValidationError, match=message):
        PrometheusQuery.model_validate(raw)


def test_the_discriminator_names_the_kinds() -> None:
    with pytest.raises(ValidationError, match="http_probe"):
        parse_sources([{"kind": "snmp", "name": "x"}])
    spec = {"kind": "http_probe", "name": "same", "url": "http://h/"}
    with pytest.raises(ValueError, match="used twice"):
        parse_sources([spec, spec])


def test_secret_references_resolve(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("from-a-file\n")
    resolved = resolve_headers(
        {
            "Authorization": "Bearer ${ENV:PROBE_TOKEN}",
            "X-Other": "${FILE:" + str(secret_file) + "}",
            "X-Plain": "a $ sign",
        },
        env={"PROBE_TOKEN": "env-secret"},
    )
    assert resolved.as_dict() == {
        "Authorization": "Bearer env-secret",
        "X-Other": "from-a-file",
        "X-Plain": "a $ sign",
    }
    assert "env-secret" not in repr(resolved) and "from-a-file" not in str(resolved)


def test_unresolvable_secrets_name_the_reference_only() -> None:
    with pytest.raises(SecretError, match="environment variable MISSING_TOKEN is not set"):
        resolve_headers({"Authorization": "${ENV:MISSING_TOKEN}"}, env={})
    with pytest.raises(SecretError, match="cannot read secret file /nonexistent/token"):
        resolve_headers({"Authorization": "${FILE:/nonexistent/token}"}, env={})
    with pytest.raises(SecretError, match="line break") as caught:
        resolve_headers({"Authorization": "${ENV:T}"}, env={"T": "evil\r\nX-Injected: 1"})
    assert "evil" not in str(caught.value)
