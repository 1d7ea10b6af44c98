"""What the webhook, Slack and PagerDuty channels send, as a real HTTP receiver sees it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from onduty.act.executor import inline
from onduty.escalate import Deliverer, dedup_key, parse_channels
from onduty.escalate.pagerduty import incident_dedup_key
from onduty.events import NotificationFailed, NotificationSent
from tests.escalate.conftest import Receiver, Recorder, notify

CONSOLE = "https://onduty.example.com"
NOW = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def deliverer(recorder: Recorder, *channels: dict[str, Any], **kw: Any) -> Deliverer:
    return Deliverer(
        parse_channels(list(channels)),
        recorder,
        spawn=inline,
        sleep=lambda _: None,
        clock=lambda: NOW,
        **kw,
    )


# --------------------------------------------------------------------------- webhook


def test_webhook_body_and_headers(receiver: Receiver, recorder: Recorder) -> None:
    deliver = deliverer(
        recorder,
        {
            "kind": "webhook",
            "name": "hook",
            "url": receiver.url + "/onduty",
            "headers": {"X-Team": "sre"},
            "console_url": CONSOLE,
        },
    )
    command = notify(kind="approval", approval_id="ap-19", tier=1)
    deliver(command)
    (request,) = receiver.requests
    key = dedup_key(command)
    assert request.json() == {
        "version": 1,
        "dedup_key": key,
        "kind": "approval",
        "incident_id": "inc-7f3a",
        "title": "Checkout error rate high",
        "message": "checkout 5xx above 5% for 10m: no runbook matched",
        "tier": 1,
        "service": "checkout",
        "approval_id": "ap-19",
        "channel": "hook",
        "incident_url": f"{CONSOLE}/incidents/inc-7f3a",
    }
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Team"] == "sre"
    assert request.headers["X-Onduty-Dedup-Key"] == key
    assert request.headers["Idempotency-Key"] == key


def test_webhook_without_console_or_title(receiver: Receiver, recorder: Recorder) -> None:
    deliver = deliverer(recorder, {"kind": "webhook", "name": "hook", "url": receiver.url})
    deliver(notify(title="", message="db-1 down: restart failed\nmore detail"))
    body = receiver.bodies()[0]
    assert body["incident_url"] is None
    assert body["title"] == "db-1 down: restart failed"


def test_the_deliverers_console_url_is_the_default(receiver: Receiver, recorder: Recorder) -> None:
    deliver = deliverer(
        recorder,
        {"kind": "webhook", "name": "a", "url": receiver.url},
        {
            "kind": "webhook",
            "name": "b",
            "url": receiver.url,
            "console_url": "https://other.example",
        },
        console_url=CONSOLE,
    )
    deliver(notify(channels=("a",), incident_id="inc/1 x"))
    deliver(notify(channels=("b",)))
    first, second = receiver.bodies()
    assert first["incident_url"] == f"{CONSOLE}/incidents/inc%2F1%20x"
    assert second["incident_url"] == "https://other.example/incidents/inc-7f3a"


# --------------------------------------------------------------------------- Slack

SLACK_PATH = "/services/T000/B000/s3cr3tPath"


def slack(receiver: Receiver, **options: Any) -> dict[str, Any]:
    return {
        "kind": "slack",
        "name": "ops-slack",
        "url": "${ENV:SLACK_WEBHOOK_URL}",
        "console_url": CONSOLE,
        **options,
    }


def slack_env(receiver: Receiver) -> dict[str, str]:
    return {"SLACK_WEBHOOK_URL": receiver.url + SLACK_PATH}


def test_slack_blocks(receiver: Receiver, recorder: Recorder) -> None:
    deliver = deliverer(recorder, slack(receiver), env=slack_env(receiver))
    command = notify(channels=("ops-slack",), tier=1)
    deliver(command)
    (request,) = receiver.requests
    assert request.path == SLACK_PATH
    message = request.json()
    header, section, actions, context = message["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Checkout error rate high", "emoji": True},
    }
    assert section["type"] == "section"
    assert section["text"] == {
        "type": "mrkdwn",
        "text": "checkout 5xx above 5% for 10m: no runbook matched",
    }
    fields = [field["text"] for field in section["fields"]]
    assert fields == ["*Kind*\nEscalation", "*Tier*\n2", "*Service*\ncheckout"]
    (button,) = actions["elements"]
    assert button["type"] == "button"
    assert button["url"] == f"{CONSOLE}/incidents/inc-7f3a"
    assert button["text"]["text"] == "Open incident"
    (note,) = context["elements"]
    assert dedup_key(command) in note["text"] and "inc-7f3a" in note["text"]
    assert message["text"].startswith("Escalation: Checkout error rate high")
    assert f"<{CONSOLE}/incidents/inc-7f3a|open incident>" in message["text"]
    assert request.headers["X-Onduty-Dedup-Key"] == dedup_key(command)
    assert recorder.types() == ["NotificationSent"]


def test_slack_escapes_alert_text(receiver: Receiver, recorder: Recorder) -> None:
    deliver = deliverer(recorder, slack(receiver, console_url=None), env=slack_env(receiver))
    deliver(
        notify(
            channels=("ops-slack",),
            message="<!channel> disk & <https://evil.example|click>",
            service=None,
            kind="approval",
            approval_id="ap-3",
        )
    )
    message = receiver.bodies()[0]
    section = message["blocks"][1]
    assert (
        section["text"]["text"] == "&lt;!channel&gt; disk &amp; &lt;https://evil.example|click&gt;"
    )
    assert [field["text"] for field in section["fields"]][2:] == [
        "*Service*\n—",
        "*Approval*\n`ap-3`",
    ]
    assert [block["type"] for block in message["blocks"]] == ["header", "section", "context"]
    assert "<!channel>" not in json.dumps(message)


def test_slack_cuts_a_long_title(receiver: Receiver, recorder: Recorder) -> None:
    deliver = deliverer(recorder, slack(receiver), env=slack_env(receiver))
    deliver(notify(channels=("ops-slack",), title="x" * 400))
    header = receiver.bodies()[0]["blocks"][0]["text"]["text"]
    assert len(header) == 150 and header.endswith("…")


def test_slack_errors_never_show_the_webhook_url(receiver: Receiver, recorder: Recorder) -> None:
    receiver.status = 404
    receiver.answer = b"no_service"
    deliver = deliverer(recorder, slack(receiver), env=slack_env(receiver))
    deliver(notify(channels=("ops-slack",)))
    (failed,) = recorder.payloads
    assert isinstance(failed, NotificationFailed)
    assert failed.error == "slack 'ops-slack': HTTP 404: no_service"
    assert "s3cr3t" not in repr(deliver._senders["ops-slack"])
    assert len(receiver.requests) == 1  # 404 is permanent


def test_slack_with_a_literal_url(receiver: Receiver, recorder: Recorder) -> None:
    receiver.status = 500
    receiver.answer = f"failed for {receiver.url}{SLACK_PATH}".encode()
    deliver = deliverer(recorder, slack(receiver, url=receiver.url + SLACK_PATH, retries=1))
    deliver(notify(channels=("ops-slack",)))
    (failed,) = recorder.payloads
    assert isinstance(failed, NotificationFailed)
    assert "s3cr3tPath" not in failed.error and "[redacted]" in failed.error
    assert len(receiver.requests) == 2


# --------------------------------------------------------------------------- PagerDuty

ROUTING_KEY = "R0ut1ngK3y0123456789abcdef012345"


def pagerduty(receiver: Receiver, **options: Any) -> dict[str, Any]:
    return {
        "kind": "pagerduty",
        "name": "pd",
        "url": receiver.url + "/v2/enqueue",
        "routing_key": "${ENV:PD_ROUTING_KEY}",
        "console_url": CONSOLE,
        **options,
    }


def test_pagerduty_trigger(receiver: Receiver, recorder: Recorder) -> None:
    receiver.status = 202
    receiver.answer = b'{"status":"success","message":"Event processed","dedup_key":"x"}'
    deliver = deliverer(recorder, pagerduty(receiver), env={"PD_ROUTING_KEY": ROUTING_KEY})
    command = notify(channels=("pd",))
    deliver(command)
    (request,) = receiver.requests
    assert request.path == "/v2/enqueue"
    event = request.json()
    assert event["routing_key"] == ROUTING_KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "onduty-inc-7f3a" == incident_dedup_key("inc-7f3a")
    payload = event["payload"]
    assert payload["summary"] == "Escalation: Checkout error rate high"
    assert payload["source"] == "onduty"
    assert payload["severity"] == "critical"
    assert payload["timestamp"] == "2026-03-01T12:30:00Z"
    assert (payload["component"], payload["group"], payload["class"]) == (
        "checkout",
        "checkout",
        "escalation",
    )
    details = payload["custom_details"]
    assert details["dedup_key"] == dedup_key(command)
    assert details["message"] == command.message and details["tier"] == 0
    assert event["links"] == [
        {"href": f"{CONSOLE}/incidents/inc-7f3a", "text": "Open the incident in onduty"}
    ]
    assert event["client"] == "onduty"
    # The routing key is the body's only secret, in the one field the API needs it.
    del event["routing_key"]
    assert ROUTING_KEY not in json.dumps(event)
    assert ROUTING_KEY not in repr(deliver._senders["pd"])
    (sent,) = recorder.payloads
    assert isinstance(sent, NotificationSent) and ROUTING_KEY not in sent.model_dump_json()


def test_pagerduty_resolves_the_same_alert(receiver: Receiver, recorder: Recorder) -> None:
    receiver.status = 202
    deliver = deliverer(recorder, pagerduty(receiver), env={"PD_ROUTING_KEY": ROUTING_KEY})
    deliver(notify(channels=("pd",)))
    deliver(notify(channels=("pd",), tier=1))
    deliver(notify(channels=("pd",), kind="resolved", message="recovered"))
    trigger, again, resolve = receiver.bodies()
    assert trigger["dedup_key"] == again["dedup_key"] == resolve["dedup_key"]
    assert again["event_action"] == "trigger" and again["payload"]["custom_details"]["tier"] == 1
    assert resolve == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": "onduty-inc-7f3a",
    }
    keys = {p.dedup_key for p in recorder.outcomes()}
    assert len(keys) == 3  # three notifications, one alert


def test_pagerduty_kinds(receiver: Receiver, recorder: Recorder) -> None:
    receiver.status = 202
    deliver = deliverer(recorder, pagerduty(receiver, console_url=None, source="prod-eu"),
                        env={"PD_ROUTING_KEY": ROUTING_KEY})  # fmt: skip
    deliver(notify(channels=("pd",), kind="approval", approval_id="ap-1"))
    deliver(notify(channels=("pd",), kind="suggestion"))
    deliver(notify(channels=("pd",), kind="acknowledged"))
    approval, suggestion, ack = receiver.bodies()
    assert approval["payload"]["severity"] == "warning"
    assert approval["payload"]["source"] == "prod-eu"
    assert approval["payload"]["summary"] == "Approval needed: Checkout error rate high"
    assert "links" not in approval and "client_url" not in approval
    assert suggestion["payload"]["severity"] == "info"
    assert ack["event_action"] == "acknowledge"


def test_pagerduty_rejection_is_redacted_and_permanent(
    receiver: Receiver, recorder: Recorder
) -> None:
    receiver.status = 400
    receiver.answer = (
        f'{{"status":"invalid event","errors":["bad routing_key {ROUTING_KEY}"]}}'
    ).encode()
    deliver = deliverer(recorder, pagerduty(receiver), env={"PD_ROUTING_KEY": ROUTING_KEY})
    deliver(notify(channels=("pd",)))
    (failed,) = recorder.payloads
    assert isinstance(failed, NotificationFailed)
    assert failed.error.startswith("pagerduty 'pd' (http://127.0.0.1:")
    assert "HTTP 400" in failed.error and "[redacted]" in failed.error
    assert ROUTING_KEY not in failed.model_dump_json()
    assert len(receiver.requests) == 1


def test_pagerduty_rate_limit_is_retried(receiver: Receiver, recorder: Recorder) -> None:
    receiver.script = [429, 503]
    receiver.status = 202
    deliver = deliverer(recorder, pagerduty(receiver), env={"PD_ROUTING_KEY": ROUTING_KEY})
    deliver(notify(channels=("pd",)))
    (sent,) = recorder.payloads
    assert isinstance(sent, NotificationSent) and sent.attempts == 3
