"""The Deliverer against real receivers: retries, fallback, records, dedup keys, threads."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from onduty.act.executor import inline
from onduty.escalate import Deliverer, dedup_key, parse_channels
from onduty.events import NotificationFailed, NotificationSent
from onduty.workers import WorkerPool
from tests.escalate.conftest import Receiver, Recorder, closed_url, notify

FAST = {"backoff": "10ms", "timeout": "2s"}


def hook(name: str, url: str, **options: Any) -> dict[str, Any]:
    return {"kind": "webhook", "name": name, "url": url, **FAST, **options}


def deliverer(
    recorder: Recorder, *channels: dict[str, Any], sleeps: list[float] | None = None, **kw: Any
) -> Deliverer:
    return Deliverer(
        parse_channels(list(channels)),
        recorder,
        spawn=inline,
        sleep=sleeps.append if sleeps is not None else time.sleep,
        **kw,
    )


def test_a_delivery_is_recorded(receiver: Receiver, recorder: Recorder) -> None:
    deliver = deliverer(recorder, hook("hook", receiver.url + "/hook"))
    command = notify()
    deliver(command)
    key = dedup_key(command)
    assert recorder.events == [
        (
            NotificationSent(
                incident_id="inc-7f3a", channel="hook", kind="escalation", dedup_key=key, attempts=1
            ),
            "inc-7f3a",
        )
    ]
    (request,) = receiver.requests
    assert request.path == "/hook"
    assert request.json()["dedup_key"] == key


def test_retries_with_exponential_backoff(receiver: Receiver, recorder: Recorder) -> None:
    receiver.script = [503, 503]
    sleeps: list[float] = []
    deliver = deliverer(recorder, hook("hook", receiver.url), sleeps=sleeps)
    deliver(notify())
    (sent,) = recorder.payloads
    assert isinstance(sent, NotificationSent) and sent.attempts == 3
    assert sleeps == pytest.approx([0.01, 0.02])
    keys = {request.headers["X-Onduty-Dedup-Key"] for request in receiver.requests}
    assert len(receiver.requests) == 3 and keys == {sent.dedup_key}


def test_retries_really_wait(receiver: Receiver, recorder: Recorder) -> None:
    receiver.script = [503]
    deliver = deliverer(recorder, hook("hook", receiver.url, backoff="100ms"))
    started = time.monotonic()
    deliver(notify())
    assert time.monotonic() - started >= 0.1
    assert recorder.types() == ["NotificationSent"]


def test_a_lost_answer_is_delivered_again_with_the_same_key(
    receiver: Receiver, recorder: Recorder
) -> None:
    receiver.script = [0]  # the first request arrives, but its answer never does
    deliver = deliverer(recorder, hook("hook", receiver.url), sleeps=[])
    deliver(notify())
    (sent,) = recorder.payloads
    assert isinstance(sent, NotificationSent) and sent.attempts == 2
    first, second = receiver.bodies()
    assert first == second and first["dedup_key"] == sent.dedup_key  # the receiver can dedup


def test_fallback_to_the_next_channel(receiver: Receiver, recorder: Recorder) -> None:
    dead = closed_url()
    deliver = deliverer(recorder, hook("primary", dead), hook("secondary", receiver.url), sleeps=[])
    deliver(notify(channels=("primary", "secondary")))
    failed, sent = recorder.payloads
    assert isinstance(failed, NotificationFailed) and isinstance(sent, NotificationSent)
    assert (failed.channel, failed.fallback) == ("primary", "secondary")
    assert "connection refused" in failed.error and "after 4 attempts" in failed.error
    assert (sent.channel, sent.attempts) == ("secondary", 1)
    assert failed.dedup_key == sent.dedup_key
    assert [stream for _, stream in recorder.events] == ["inc-7f3a", "inc-7f3a"]


def test_a_dead_last_channel(recorder: Recorder) -> None:
    deliver = deliverer(recorder, hook("only", closed_url(), retries=1), sleeps=[])
    deliver(notify(channels=("only",)))
    (failed,) = recorder.payloads
    assert isinstance(failed, NotificationFailed)
    assert failed.fallback is None and failed.channel == "only"
    assert "after 2 attempts" in failed.error


def test_every_channel_dead(recorder: Recorder) -> None:
    deliver = deliverer(
        recorder, hook("a", closed_url(), retries=0), hook("b", closed_url(), retries=0)
    )
    deliver(notify(channels=("a", "b")))
    failures = [
        (p.channel, p.fallback) for p in recorder.payloads if isinstance(p, NotificationFailed)
    ]
    assert failures == [("a", "b"), ("b", None)] and len(recorder.payloads) == 2


def test_an_unknown_channel_is_skipped(receiver: Receiver, recorder: Recorder) -> None:
    deliver = deliverer(recorder, hook("hook", receiver.url))
    deliver(notify(channels=("pager", "hook")))
    failed, sent = recorder.payloads
    assert isinstance(failed, NotificationFailed)
    assert failed.channel == "pager" and failed.fallback == "hook"
    assert failed.error == "channel 'pager' is not configured"
    assert isinstance(sent, NotificationSent) and sent.channel == "hook"


def test_no_channel_configured_at_all(recorder: Recorder) -> None:
    deliver = deliverer(recorder)
    deliver(notify(channels=("on-call",)))
    (failed,) = recorder.payloads
    assert isinstance(failed, NotificationFailed) and failed.fallback is None


def test_a_notification_without_channels(recorder: Recorder) -> None:
    deliverer(recorder)(notify(channels=()))
    (failed,) = recorder.payloads
    assert isinstance(failed, NotificationFailed)
    assert failed.error == "the notification names no channel"


def test_a_channel_named_twice_is_tried_once(recorder: Recorder) -> None:
    deliver = deliverer(recorder, hook("a", closed_url(), retries=0))
    deliver(notify(channels=("a", "a")))
    assert [p.fallback for p in recorder.payloads if isinstance(p, NotificationFailed)] == [None]
    assert len(recorder.payloads) == 1


def test_a_permanent_failure_is_not_retried(receiver: Receiver, recorder: Recorder) -> None:
    receiver.status = 400
    receiver.answer = b'{"error": "invalid payload"}'
    deliver = deliverer(recorder, hook("hook", receiver.url), sleeps=[])
    deliver(notify())
    (failed,) = recorder.payloads
    assert isinstance(failed, NotificationFailed)
    assert len(receiver.requests) == 1
    assert failed.error.startswith("webhook 'hook' (http://127.0.0.1:")
    assert "HTTP 400" in failed.error and "invalid payload" in failed.error
    assert "attempts" not in failed.error


def test_429_is_retried(receiver: Receiver, recorder: Recorder) -> None:
    receiver.script = [429]
    deliver = deliverer(recorder, hook("hook", receiver.url), sleeps=[])
    deliver(notify())
    (sent,) = recorder.payloads
    assert isinstance(sent, NotificationSent) and sent.attempts == 2


def test_a_timeout_is_a_failure(receiver: Receiver, recorder: Recorder) -> None:
    receiver.delay = 0.6
    deliver = deliverer(recorder, hook("hook", receiver.url, timeout="200ms", retries=0), sleeps=[])
    deliver(notify())
    (failed,) = recorder.payloads
    assert isinstance(failed, NotificationFailed)
    assert "timed out after 200ms" in failed.error


# --------------------------------------------------------------------------- dedup keys


def test_dedup_key_is_the_commands_own() -> None:
    assert dedup_key(notify(dedup_key="esc:inc-7f3a:1")) == "esc:inc-7f3a:1"


def test_derived_dedup_keys_are_stable_and_distinct() -> None:
    base = notify()
    assert dedup_key(base) == dedup_key(notify(message="another wording"))
    others = {
        dedup_key(notify(tier=1)),
        dedup_key(notify(kind="resolved")),
        dedup_key(notify(kind="approval", approval_id="ap-1")),
        dedup_key(notify(kind="approval", approval_id="ap-2")),
        dedup_key(notify(incident_id="inc-other")),
    }
    assert len(others) == 5 and dedup_key(base) not in others
    assert dedup_key(base).startswith("n-")


def test_an_unsafe_dedup_key_is_hashed() -> None:
    key = dedup_key(notify(dedup_key="two words\r\nX-Injected: 1"))
    assert key.startswith("n-") and " " not in key
    assert key == dedup_key(notify(dedup_key="two words\r\nX-Injected: 1"))


# --------------------------------------------------------------------------- secrets


def test_secrets_stay_out_of_events_errors_and_repr(receiver: Receiver, recorder: Recorder) -> None:
    token = "tok-51c2e8a7"
    receiver.status = 401
    receiver.echo_header = "Authorization"  # a receiver that echoes the credential
    deliver = deliverer(
        recorder,
        hook(
            "hook",
            receiver.url + "/hook?key=${ENV:HOOK_KEY}",
            headers={"Authorization": "Bearer ${ENV:HOOK_TOKEN}"},
        ),
        env={"HOOK_TOKEN": token, "HOOK_KEY": "qk-77aa"},
    )
    deliver(notify())
    (failed,) = recorder.payloads
    assert isinstance(failed, NotificationFailed)
    (request,) = receiver.requests
    assert request.headers["Authorization"] == f"Bearer {token}"
    assert request.path == "/hook?key=qk-77aa"
    assert token not in request.body.decode()
    dumped = failed.model_dump_json()
    assert "HTTP 401" in dumped and "[redacted]" in dumped
    for secret in (token, "qk-77aa"):
        assert secret not in dumped
        assert secret not in repr(deliver) and secret not in repr(deliver._senders["hook"])


def test_a_missing_secret_makes_the_channel_fail_over(
    receiver: Receiver, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        deliver = deliverer(
            recorder,
            hook("hook", receiver.url, headers={"Authorization": "Bearer ${ENV:NOT_SET_X}"}),
            hook("backup", receiver.url),
            env={},
        )
    assert deliver.problems and "NOT_SET_X is not set" in deliver.problems[0]
    assert "NOT_SET_X is not set" in caplog.text
    deliver(notify(channels=("hook", "backup")))
    failed, sent = recorder.payloads
    assert isinstance(failed, NotificationFailed) and "NOT_SET_X is not set" in failed.error
    assert isinstance(sent, NotificationSent) and sent.channel == "backup"
    assert len(receiver.requests) == 1


def test_a_failure_to_record_does_not_stop_the_fallback(receiver: Receiver) -> None:
    seen: list[str] = []

    def record(body: Any, stream: str) -> None:
        seen.append(type(body).__name__)
        if isinstance(body, NotificationFailed):
            raise RuntimeError("the runtime stopped")

    deliver = Deliverer(
        parse_channels([hook("a", closed_url(), retries=0), hook("b", receiver.url)]),
        record,
        spawn=inline,
    )
    deliver(notify(channels=("a", "b")))
    assert seen == ["NotificationFailed", "NotificationSent"]
    assert len(receiver.requests) == 1


# --------------------------------------------------------------------------- threads


def test_deliveries_run_off_the_callers_thread(receiver: Receiver, recorder: Recorder) -> None:
    receiver.gate = threading.Event()  # the receiver answers nothing until the gate opens
    pool = WorkerPool(workers=4)
    deliver = Deliverer(parse_channels([hook("hook", receiver.url)]), recorder, spawn=pool)
    try:
        deliver(notify(incident_id="inc-a"))
        deliver(notify(incident_id="inc-b"))
        assert recorder.events == []  # the caller returned before any answer came
        receiver.wait_for(2)  # both in flight at once: incidents do not wait on each other
        receiver.gate.set()
        recorder.wait_for(2)
    finally:
        receiver.gate.set()
        pool.close()
    assert sorted(stream for _, stream in recorder.events) == ["inc-a", "inc-b"]
    assert recorder.types() == ["NotificationSent", "NotificationSent"]


def test_one_incidents_notifications_keep_their_order(
    receiver: Receiver, recorder: Recorder
) -> None:
    receiver.delay = 0.05
    pool = WorkerPool(workers=8, per_actuator=8)
    deliver = Deliverer(parse_channels([hook("hook", receiver.url)]), recorder, spawn=pool)
    kinds = ["escalation", "approval", "suggestion", "resolved"]
    try:
        for kind in kinds:
            deliver(notify(kind=kind))
        recorder.wait_for(4)
    finally:
        pool.close()
    assert [body["kind"] for body in receiver.bodies()] == kinds
    assert [p.kind for p in recorder.outcomes()] == kinds


def test_the_own_pool(receiver: Receiver, recorder: Recorder) -> None:
    deliver = Deliverer(parse_channels([hook("hook", receiver.url)]), recorder)
    try:
        deliver(notify())
        recorder.wait_for(1)
    finally:
        deliver.close()
    assert threading.active_count() >= 1
    assert recorder.types() == ["NotificationSent"]


def test_a_closed_pool_drops_with_a_log(
    receiver: Receiver, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    deliver = Deliverer(parse_channels([hook("hook", receiver.url)]), recorder)
    deliver.close()
    with caplog.at_level(logging.ERROR):
        deliver(notify())
    assert "were not delivered" in caplog.text
    assert recorder.events == []
    deliver.close()  # twice is harmless
