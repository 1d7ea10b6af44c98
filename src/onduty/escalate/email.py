"""The email channel: a plain-text message through an SMTP server (smtplib).

Subject: `[onduty] Escalation: <incident title>` (the kind as a word, then the title). The
body starts with the message, then the incident's facts and the link to the console. Headers:
`Message-ID` derived from the notification's dedup key (a resent message keeps its id, so mail
systems and people can tell a duplicate), `X-Onduty-Dedup-Key`, `X-Onduty-Incident`,
`X-Onduty-Kind`, and `Auto-Submitted: auto-generated` (no auto-replies to a page).

With `starttls` the session is upgraded to TLS (verifying the server's certificate, against
`ca_file` when given) before credentials or the message are sent; a server that does not offer
STARTTLS is a permanent failure. Every attempt is bounded by the channel's timeout (on each
network operation). An SMTP answer of 5xx is permanent, 4xx and network errors are retried.
"""

from __future__ import annotations

import hashlib
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from onduty.commands import Notify
from onduty.escalate.channels import (
    ChannelSender,
    DeliveryError,
    incident_url,
    kind_word,
    title_of,
)
from onduty.escalate.specs import (
    EmailChannel,
)
from onduty.secrets import Secrets, resolve_references
from onduty.values import format_duration

logger = logging.getLogger(__name__)

_SUBJECT_LIMIT = 200
_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN = re.compile(r"^[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*$")


def message_id(dedup_key: str, sender: str) -> str:
    """`<dedup-key@sender's domain>`; a key that is not a valid id part is hashed."""
    left = dedup_key if _ATOM.match(dedup_key) and len(dedup_key) <= 128 else None
    if left is None:
        left = hashlib.sha256(dedup_key.encode()).hexdigest()[:32]
    _, at, domain = parseaddr(sender)[1].rpartition("@")
    if not at or not _DOMAIN.match(domain):
        domain = "onduty.invalid"
    return f"<{left}@{domain}>"


def _header_text(value: str) -> str:
    return " ".join(value.split())


def email_message(
    command: Notify,
    dedup_key: str,
    *,
    sender: str,
    recipients: list[str],
    now: datetime,
    console_url: str | None,
) -> EmailMessage:
    title = title_of(command)
    word = kind_word(command.kind)
    subject = f"[onduty] {word}: {title}"
    if len(subject) > _SUBJECT_LIMIT:
        subject = subject[: _SUBJECT_LIMIT - 1] + "…"
    link = incident_url(console_url, command.incident_id)
    facts = [
        ("Incident", command.incident_id),
        ("Title", title),
        ("Kind", word),
        ("Tier", str(command.tier + 1)),
        ("Service", command.service or "-"),
    ]
    if command.approval_id:
        facts.append(("Approval", command.approval_id))
    if link is not None:
        facts.append(("Open", link))
    width = max(len(label) for label, _ in facts) + 1
    lines = [
        command.message or title,
        "",
        *(f"{label + ':':<{width}} {value}" for label, value in facts),
        "",
        f"Dedup key: {dedup_key}",
        "-- ",
        "onduty",
        "",
    ]
    message = EmailMessage()
    message["Subject"] = _header_text(subject)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(now.astimezone(UTC))
    message["Message-ID"] = message_id(dedup_key, sender)
    message["X-Onduty-Dedup-Key"] = _header_text(dedup_key)
    message["X-Onduty-Incident"] = _header_text(command.incident_id)
    message["X-Onduty-Kind"] = _header_text(command.kind)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content("\n".join(lines))
    return message


class EmailSender(ChannelSender[EmailChannel]):
    """Delivers to an `EmailChannel`. The credentials are resolved here (raising `SecretError`
    naming the reference) and kept out of `repr` and messages."""

    def _resolve(self, env: Mapping[str, str] | None) -> Secrets:
        spec = self.spec
        credentials = (
            {"username": spec.username, "password": spec.password}
            if spec.username is not None and spec.password is not None
            else {}
        )
        self._credentials, secrets = resolve_references(
            credentials, what="channel " + repr(spec.name), env=env
        )
        return secrets

    def _describe(self) -> str:
        return f"email {self.name!r} (smtp {self.spec.host}:{self.spec.port})"

    def __repr__(self) -> str:
        return f"EmailSender(name={self.name!r}, host={self.spec.host!r}, port={self.spec.port})"

    def send(self, command: Notify, dedup_key: str) -> None:
        spec = self.spec
        message = email_message(
            command,
            dedup_key,
            sender=spec.from_,
            recipients=spec.to,
            now=self._clock(),
            console_url=self._console_url,
        )
        envelope_from = parseaddr(spec.from_)[1]
        envelope_to = [parseaddr(address)[1] for address in spec.to]
        try:
            refused = self._transmit(message, envelope_from, envelope_to)
        except DeliveryError:
            raise
        except smtplib.SMTPRecipientsRefused as error:
            codes = [code for code, _ in error.recipients.values()]
            permanent = bool(codes) and all(code >= 500 for code in codes)
            answers = "; ".join(
                f"{address}: {code} {_text(reply)}" for address, (code, reply) in sorted(
                    error.recipients.items()
                )
            )  # fmt: skip
            raise self._error(f"every recipient was refused ({answers})", permanent) from None
        except smtplib.SMTPResponseException as error:
            code, reply = error.smtp_code, _text(error.smtp_error)
            raise self._error(f"the server answered {code} {reply}", code >= 500) from None
        except smtplib.SMTPNotSupportedError as error:
            raise self._error(f"not supported by the server: {error}", True) from None
        except smtplib.SMTPServerDisconnected as error:
            raise self._error(f"the server closed the connection ({error})", False) from None
        except smtplib.SMTPException as error:
            raise self._error(f"SMTP: {error}", False) from None
        except ssl.SSLCertVerificationError as error:
            reason = error.verify_message or "certificate verification failed"
            raise self._error(f"TLS: {reason}", True) from None
        except ssl.SSLError as error:
            raise self._error(f"TLS: {error.reason or error}", False) from None
        except TimeoutError:
            raise self._error(f"timed out after {format_duration(spec.timeout)}", False) from None
        except ConnectionRefusedError:
            raise self._error("connection refused", False) from None
        except OSError as error:
            raise self._error(f"cannot connect: {error.strerror or error}", False) from None
        if refused:
            logger.warning(
                "%s: some recipients were refused: %s",
                self._where,
                self.secrets.redact(", ".join(sorted(refused))),
            )

    def _transmit(
        self, message: EmailMessage, envelope_from: str, envelope_to: list[str]
    ) -> dict[str, tuple[int, bytes]]:
        spec = self.spec
        timeout = spec.timeout.total_seconds()
        # The host is given here, not to a later `connect`: STARTTLS checks the certificate
        # against it. The local name is taken without a DNS lookup (getfqdn's can take seconds).
        with smtplib.SMTP(
            spec.host, spec.port, timeout=timeout, local_hostname=socket.gethostname()
        ) as smtp:
            smtp.ehlo()
            if spec.starttls:
                if not smtp.has_extn("starttls"):
                    raise self._error(
                        "the server does not offer STARTTLS (`starttls: true`): nothing is sent "
                        "in clear text",
                        True,
                    )
                smtp.starttls(context=ssl.create_default_context(cafile=spec.ca_file))
                smtp.ehlo()
            credentials = self._credentials.as_dict()
            if credentials:
                smtp.login(credentials["username"], credentials["password"])
            return smtp.send_message(message, from_addr=envelope_from, to_addrs=envelope_to)

    def _error(self, reason: str, permanent: bool) -> DeliveryError:
        return DeliveryError(self.secrets.redact(f"{self._where}: {reason}"), permanent=permanent)


def _text(reply: bytes | str) -> str:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())[:300]
