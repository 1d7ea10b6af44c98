"""`channels:` validation: the models, the messages that name the field, and the config."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from onduty.config import ConfigError, parse_config
from onduty.escalate.specs import (
    DEFAULT_PAGERDUTY_URL,
    ChannelConfigError,
    EmailChannel,
    PagerDutyChannel,
    SlackChannel,
    WebhookChannel,
    parse_channels,
)


def problems(raw: Any) -> list[str]:
    with pytest.raises(ChannelConfigError) as caught:
        parse_channels(raw)
    assert isinstance(caught.value, ValueError)
    return caught.value.problems


def test_every_kind_parses_with_defaults() -> None:
    specs = parse_channels(
        [
            {"kind": "webhook", "name": "hook", "url": "https://hooks.example.com/onduty"},
            {"kind": "slack", "name": "ops-slack", "url": "${ENV:SLACK_WEBHOOK_URL}"},
            {
                "kind": "email",
                "name": "mail",
                "host": "smtp.example.com",
                "from": "onduty@example.com",
                "to": ["oncall@example.com"],
                "username": "onduty",
                "password": "${FILE:/run/secrets/smtp}",
            },
            {"kind": "pagerduty", "name": "pd", "routing_key": "${ENV:PD_ROUTING_KEY}"},
        ]
    )
    hook, slack, mail, pd = specs
    assert isinstance(hook, WebhookChannel) and hook.retries == 3
    assert hook.backoff == timedelta(seconds=1) and hook.timeout == timedelta(seconds=10)
    assert isinstance(slack, SlackChannel)
    assert isinstance(mail, EmailChannel)
    assert (mail.port, mail.starttls, mail.from_) == (587, True, "onduty@example.com")
    assert isinstance(pd, PagerDutyChannel) and pd.url == DEFAULT_PAGERDUTY_URL
    assert parse_channels(None) == [] and parse_channels([]) == []


def test_durations_and_console_url() -> None:
    (spec,) = parse_channels(
        [
            {
                "kind": "webhook",
                "name": "hook",
                "url": "http://127.0.0.1:9/x",
                "retries": 0,
                "backoff": "250ms",
                "timeout": "3s",
                "console_url": "https://onduty.example.com/",
            }
        ]
    )
    assert spec.backoff == timedelta(milliseconds=250) and spec.timeout == timedelta(seconds=3)
    assert spec.console_url == "https://onduty.example.com"
    assert spec.retries == 0


def test_errors_name_the_field() -> None:
    found = problems(
        [
            {"kind": "webhook", "name": "ok", "url": "https://example.com/hook"},
            {"kind": "webhook", "name": "bad", "url": "ftp://example.com/hook"},
        ]
    )
    assert found == [
        "channels[1].url: expected an http:// or https:// URL, got 'ftp://example.com/hook'"
    ]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"name": "x", "url": "https://e.com"}, "channels[0].kind: required field is missing"),
        ({"kind": "sms", "name": "x"}, "channels[0].kind: unknown kind 'sms'"),
        ({"kind": "webhook", "url": "https://e.com"}, "channels[0].name: required field"),
        ({"kind": "webhook", "name": "x"}, "channels[0].url: required field is missing"),
        (
            {"kind": "webhook", "name": "x", "url": "https://e.com", "retry": 2},
            "channels[0].retry: unknown field",
        ),
        (
            {"kind": "webhook", "name": "x", "url": "https://e.com", "retries": -1},
            "channels[0].retries: ",
        ),
        (
            {"kind": "webhook", "name": "x", "url": "https://e.com", "timeout": "0s"},
            "channels[0].timeout: must be longer than zero",
        ),
        (
            {"kind": "webhook", "name": "x", "url": "https://user:pw@e.com/hook"},
            "channels[0].url: credentials in the URL",
        ),
        (
            {"kind": "webhook", "name": "x", "url": "${ENV:A}/path${ENV:B}"},
            "channels[0].url: a URL that references a secret must start with http",
        ),
        (
            {"kind": "webhook", "name": "x", "url": "https://e.com", "headers": {"X-Api-Key": "k"}},
            "channels[0].headers: header 'X-Api-Key' carries a credential",
        ),
        (
            {"kind": "webhook", "name": "x", "url": "https://e.com", "headers": {"A": "${V:x}"}},
            "channels[0].headers: header 'A': unknown reference ${V:x}",
        ),
        (
            {"kind": "webhook", "name": "x", "url": "https://e.com", "console_url": "https://c/?a"},
            "channels[0].console_url: a base URL cannot have a query string",
        ),
        (
            {"kind": "webhook", "name": "two words", "url": "https://e.com"},
            "channels[0].name: String should match pattern",
        ),
        (
            {"kind": "pagerduty", "name": "pd", "routing_key": "R0123456789"},
            "channels[0].routing_key: the routing key is a secret",
        ),
        (
            {"kind": "pagerduty", "name": "pd", "routing_key": "${ENV:K}", "url": "gopher://x"},
            "channels[0].url: expected an http:// or https:// URL",
        ),
        (
            {"kind": "email", "name": "m", "host": "h", "from": "nobody", "to": ["a@b.c"]},
            "channels[0].from: 'nobody' is not an email address",
        ),
        (
            {"kind": "email", "name": "m", "host": "h", "from": "a@b.c", "to": ["a@b.c", "x"]},
            "channels[0].to: to[1]: 'x' is not an email address",
        ),
        (
            {"kind": "email", "name": "m", "host": "h", "from": "a@b.c", "to": []},
            "channels[0].to: List should have at least 1 item",
        ),
        (
            {
                "kind": "email", "name": "m", "host": "h", "from": "a@b.c", "to": ["a@b.c"],
                "username": "u", "password": "hunter2",
            },
            "channels[0].password: the password is a secret",
        ),
        (
            {
                "kind": "email", "name": "m", "host": "h", "from": "a@b.c", "to": ["a@b.c"],
                "username": "u", "password": "${ENV:P}", "starttls": False,
            },
            "channels[0]: credentials need `starttls: true`",
        ),
        (
            {
                "kind": "email", "name": "m", "host": "h", "from": "a@b.c", "to": ["a@b.c"],
                "username": "u",
            },
            "channels[0]: give both username and password, or neither",
        ),
        (
            {
                "kind": "email", "name": "m", "host": "h", "from": "a@b.c", "to": ["a@b.c"],
                "ca_file": "ca.pem",
            },
            "channels[0].ca_file: 'ca.pem' must be an absolute path",
        ),
        ("webhook", "channels[0]: expected a mapping"),
    ],
)  # fmt: skip
def test_bad_channels(item: Any, expected: str) -> None:
    found = problems([item])
    assert any(problem.startswith(expected) for problem in found), found


def test_not_a_list() -> None:
    assert problems({"kind": "webhook"}) == ["channels: expected a list of channels"]


def test_duplicate_names_are_refused() -> None:
    found = problems(
        [
            {"kind": "webhook", "name": "ops", "url": "https://e.com/a"},
            {"kind": "slack", "name": "other", "url": "https://e.com/b"},
            {"kind": "slack", "name": "ops", "url": "https://e.com/c"},
        ]
    )
    assert found == ["channels[2].name: the name 'ops' is already used by channels[0]"]


def test_every_problem_is_reported() -> None:
    found = problems(
        [
            {"kind": "webhook", "name": "a", "url": "nope"},
            {"kind": "pagerduty", "name": "b"},
        ]
    )
    assert [problem.split(":")[0] for problem in found] == [
        "channels[0].url",
        "channels[1].routing_key",
    ]


def test_secrets_stay_out_of_repr() -> None:
    slack, hook = parse_channels(
        [
            {
                "kind": "slack",
                "name": "s",
                "url": "https://hooks.slack.com/services/T0/B0/XYZSECRET",
            },
            {
                "kind": "webhook",
                "name": "w",
                "url": "https://e.com/hook?token=${ENV:T}",
                "headers": {"Authorization": "Bearer ${ENV:TOKEN}"},
            },
        ]
    )
    assert "XYZSECRET" not in repr(slack)
    assert "token" not in repr(hook).lower()


def test_the_configuration_validates_its_channels() -> None:
    config = parse_config(
        {"channels": [{"kind": "webhook", "name": "on-call", "url": "https://e.com/hook"}]}
    )
    assert config.channels[0]["name"] == "on-call"
    with pytest.raises(ConfigError) as caught:
        parse_config({"channels": [{"kind": "webhook", "name": "x", "url": "mailto:a@b"}]})
    assert any("channels[0].url: expected an http" in p for p in caught.value.problems)
