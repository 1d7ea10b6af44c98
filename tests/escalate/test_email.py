"""The email channel against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from onduty.act.executor import inline
from onduty.escalate import Deliverer, dedup_key, parse_channels
from onduty.escalate.email import message_id
from onduty.events import NotificationFailed, NotificationSent
from tests.escalate.conftest import (
    SMTP_PASSWORD,
    SMTP_USER,
    Mailbox,
    Recorder,
    free_port,
    notify,
)

NOW = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def email(mailbox: Mailbox, **options: Any) -> dict[str, Any]:
    return {
        "kind": "email",
        "name": "mail",
        "host": mailbox.host,
        "port": mailbox.port,
        "from": "onduty <onduty@example.com>",
        "to": ["oncall@example.com", "Lead <lead@example.com>"],
        "starttls": False,
        "console_url": "https://onduty.example.com",
        "backoff": "10ms",
        "timeout": "5s",
        **options,
    }


def deliverer(recorder: Recorder, *channels: dict[str, Any], **kw: Any) -> Deliverer:
    return Deliverer(
        parse_channels(list(channels)), recorder, spawn=inline, clock=lambda: NOW, **kw
    )


def test_a_plain_text_message(smtp_server: Mailbox, recorder: Recorder) -> None:
    deliver = deliverer(recorder, email(smtp_server))
    command = notify(channels=("mail",), tier=1)
    deliver(command)
    (sent,) = recorder.payloads
    assert isinstance(sent, NotificationSent) and sent.channel == "mail" and sent.attempts == 1
    (envelope,) = smtp_server.envelopes
    assert envelope.mail_from == "onduty@example.com"
    assert envelope.rcpt_tos == ["oncall@example.com", "lead@example.com"]
    (message,) = smtp_server.messages()
    key = dedup_key(command)
    assert message["Subject"] == "[onduty] Escalation: Checkout error rate high"
    assert message["From"] == "onduty <onduty@example.com>"
    assert message["To"] == "oncall@example.com, Lead <lead@example.com>"
    assert message["Message-ID"] == f"<{key}@example.com>"
    assert message["X-Onduty-Dedup-Key"] == key
    assert message["X-Onduty-Incident"] == "inc-7f3a"
    assert message["X-Onduty-Kind"] == "escalation"
    assert message["Auto-Submitted"] == "auto-generated"
    assert parsedate_to_datetime(message["Date"]) == NOW
    assert message.get_content_type() == "text/plain"
    body = message.get_content().replace("\r\n", "\n")
    assert body.startswith("checkout 5xx above 5% for 10m: no runbook matched\n")
    assert "Incident: inc-7f3a" in body
    assert "Tier:     2" in body
    assert "Service:  checkout" in body
    assert "Open:     https://onduty.example.com/incidents/inc-7f3a" in body
    assert f"Dedup key: {key}" in body


def test_an_approval_request(smtp_server: Mailbox, recorder: Recorder) -> None:
    deliver = deliverer(recorder, email(smtp_server, console_url=None))
    deliver(notify(channels=("mail",), kind="approval", approval_id="ap-9", service=None))
    (message,) = smtp_server.messages()
    assert message["Subject"] == "[onduty] Approval needed: Checkout error rate high"
    body = message.get_content().replace("\r\n", "\n")
    assert "Approval: ap-9" in body and "Service:  -" in body and "Open:" not in body


def test_starttls_is_required_by_default(smtp_server: Mailbox, recorder: Recorder) -> None:
    deliver = deliverer(recorder, email(smtp_server, starttls=True))
    deliver(notify(channels=("mail",)))
    (failed,) = recorder.payloads
    assert isinstance(failed, NotificationFailed)
    assert "does not offer STARTTLS" in failed.error
    assert "attempts" not in failed.error  # permanent: not retried
    assert smtp_server.envelopes == []


def test_starttls_and_login(
    tls_smtp_server: Mailbox, certificate: tuple[Path, Path], recorder: Recorder
) -> None:
    cert, _ = certificate
    deliver = deliverer(
        recorder,
        email(
            tls_smtp_server,
            starttls=True,
            ca_file=str(cert),
            username=SMTP_USER,
            password="${ENV:SMTP_PASSWORD}",
        ),
        env={"SMTP_PASSWORD": SMTP_PASSWORD},
    )
    deliver(notify(channels=("mail",)))
    assert recorder.types() == ["NotificationSent"]
    assert tls_smtp_server.logins == [SMTP_USER]
    (message,) = tls_smtp_server.messages()
    assert message["Subject"] == "[onduty] Escalation: Checkout error rate high"
    assert SMTP_PASSWORD not in repr(deliver._senders["mail"])


def test_a_refused_login_is_permanent_and_redacted(
    tls_smtp_server: Mailbox, certificate: tuple[Path, Path], recorder: Recorder
) -> None:
    cert, _ = certificate
    deliver = deliverer(
        recorder,
        email(
            tls_smtp_server,
            starttls=True,
            ca_file=str(cert),
            username=SMTP_USER,
            password="${ENV:SMTP_PASSWORD}",
        ),
        env={"SMTP_PASSWORD": "wrong-pw-1234"},
    )
    deliver(notify(channels=("mail",)))
    (failed,) = recorder.payloads
    assert isinstance(failed, NotificationFailed)
    assert "the server answered 535" in failed.error and "attempts" not in failed.error
    assert "wrong-pw-1234" not in failed.model_dump_json()
    assert tls_smtp_server.envelopes == []


def test_an_untrusted_certificate_is_refused(tls_smtp_server: Mailbox, recorder: Recorder) -> None:
    deliver = deliverer(recorder, email(tls_smtp_server, starttls=True))
    deliver(notify(channels=("mail",)))
    (failed,) = recorder.payloads
    assert isinstance(failed, NotificationFailed)
    assert "TLS:" in failed.error and "certificate" in failed.error
    assert tls_smtp_server.envelopes == []


def test_a_dead_smtp_server_falls_back(smtp_server: Mailbox, recorder: Recorder) -> None:
    dead = Mailbox("127.0.0.1", free_port())
    deliver = deliverer(
        recorder,
        email(dead, name="dead-mail", retries=2),
        email(smtp_server),
        sleep=lambda _: None,
    )
    deliver(notify(channels=("dead-mail", "mail")))
    failed, sent = recorder.payloads
    assert isinstance(failed, NotificationFailed) and isinstance(sent, NotificationSent)
    assert failed.fallback == "mail"
    assert failed.error == (
        f"email 'dead-mail' (smtp 127.0.0.1:{dead.port}): connection refused (after 3 attempts)"
    )
    assert len(smtp_server.envelopes) == 1


def test_a_temporary_rejection_is_retried(smtp_server: Mailbox, recorder: Recorder) -> None:
    smtp_server.rejections = ["451 4.3.0 try again later"]
    deliver = deliverer(recorder, email(smtp_server), sleep=lambda _: None)
    deliver(notify(channels=("mail",)))
    (sent,) = recorder.payloads
    assert isinstance(sent, NotificationSent) and sent.attempts == 2
    assert len(smtp_server.envelopes) == 1


def test_a_permanent_rejection_is_not_retried(smtp_server: Mailbox, recorder: Recorder) -> None:
    smtp_server.rejections = ["554 5.7.1 message refused"]
    deliver = deliverer(recorder, email(smtp_server), sleep=lambda _: None)
    deliver(notify(channels=("mail",)))
    (failed,) = recorder.payloads
    assert isinstance(failed, NotificationFailed)
    assert failed.error == (
        f"email 'mail' (smtp 127.0.0.1:{smtp_server.port}): the server answered 554 "
        "5.7.1 message refused"
    )
    assert smtp_server.envelopes == []


def test_message_ids() -> None:
    assert message_id("n-abc123", "onduty@example.com") == "<n-abc123@example.com>"
    hashed = message_id("esc:inc 1", "onduty <onduty@ops.example.org>")
    assert hashed.endswith("@ops.example.org>") and ":" not in hashed and " " not in hashed
    assert message_id("k", "no-domain") == "<k@onduty.invalid>"
