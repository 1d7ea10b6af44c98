"""Delivering `Notify` commands to people, with retries, records and fallback.

`Deliverer` is the runtime's notifier. For each notification it tries the channels the
command names, in order: the first that is configured gets it; a failing delivery is retried
with exponential backoff (tenacity) up to the channel's `retries`; a channel that keeps failing
is recorded as `NotificationFailed(fallback=<next channel>)` and the next one is tried; the last
failure has `fallback=None`. A delivery is recorded as `NotificationSent` with the number of
attempts it took. A channel name that is not configured is skipped the same way, with a
`NotificationFailed` that says so.

Delivery is at least once: an attempt whose answer was lost is tried again. Every delivery of
one notification carries the same dedup key (`dedup_key(command)`), on every channel, so a
receiver can drop a duplicate.

Deliveries run off the caller's thread, through a `spawn` strategy like the executor's:
`onduty.workers.WorkerPool` under `onduty serve` (the core must never wait on a slow SMTP
server), `inline` in tests and simulations. Notifications about one incident are delivered one
after another, in the order they were asked for (an alert is never resolved before it is
triggered); different incidents are delivered concurrently.

Secrets (webhook headers and URLs, SMTP credentials, routing keys) are resolved when the
Deliverer is built. A channel whose secret cannot be read is logged and listed in `problems`,
and every delivery to it fails at once (so the next channel is tried) with the reason, which
names the reference and never a value.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import httpx
from structlog.contextvars import bound_contextvars
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from onduty.commands import Notify
from onduty.escalate.channels import ChannelSender, DeliveryError, utcnow
from onduty.escalate.email import EmailSender
from onduty.escalate.pagerduty import PagerDutySender
from onduty.escalate.slack import SlackSender
from onduty.escalate.specs import (
    AnyChannel,
    EmailChannel,
    PagerDutyChannel,
    SlackChannel,
    WebhookChannel,
)
from onduty.escalate.webhook import WebhookSender
from onduty.events import NotificationFailed, NotificationSent, Payload, to_json
from onduty.secrets import Secrets
from onduty.workers import WorkerPool

logger = logging.getLogger(__name__)

Record = Callable[[Payload, str], None]
"""Append an input event to the log (durably) and let the core react: (payload, stream)."""

Spawn = Callable[[Any, Callable[[], None]], None]
"""Run a piece of work for a key (at most a few at once per key): now, or on a worker.
`onduty.act.executor.inline` and `onduty.workers.WorkerPool` both fit."""

_ERROR_LIMIT = 2000
_MAX_WAIT_S = 30.0
_SAFE_KEY = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,200}$")


class Sender(Protocol):
    """One configured channel: `send` delivers once or raises (`DeliveryError` when it
    understands the failure)."""

    name: str
    secrets: Secrets

    def send(self, command: Notify, dedup_key: str) -> None: ...


def dedup_key(command: Notify) -> str:
    """The notification's identity for receivers: `command.dedup_key` when it is set (and
    safe to put in a header), else a stable hash of the incident, kind, tier and approval."""
    given = command.dedup_key
    if given and _SAFE_KEY.match(given):
        return given
    basis: object = given or [command.incident_id, command.kind, command.tier, command.approval_id]
    return "n-" + hashlib.sha256(to_json(basis)).hexdigest()[:32]


class _Unavailable:
    """A channel that cannot deliver (its secret could not be read): every attempt fails at
    once, with the reason."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        self.secrets = Secrets()

    def __repr__(self) -> str:
        return f"_Unavailable(name={self.name!r})"

    def send(self, command: Notify, dedup_key: str) -> None:
        raise DeliveryError(self.reason, permanent=True)


SENDERS: dict[type[AnyChannel], type[ChannelSender[Any]]] = {
    WebhookChannel: WebhookSender,
    SlackChannel: SlackSender,
    EmailChannel: EmailSender,
    PagerDutyChannel: PagerDutySender,
}
"""Each kind of channel's sender, built from its spec (raising `SecretError` when a reference
cannot be read)."""


class Deliverer:
    """The runtime's notifier: `deliverer(command)` returns at once; the delivery runs through
    `spawn`. Without a `spawn`, the Deliverer starts a worker pool of its own (`close` stops
    it). `sleep` and `clock` are injectable for tests; `env` replaces `os.environ` for secret
    references; `client` is an httpx client to share (the caller closes it); `console_url` is
    the default base URL for links to incidents (a channel's own `console_url` wins); `amend`
    gives the notification its last form before it is sent, once, on the delivering thread
    (the service adds what it knows of similar incidents to an escalation's message): one that
    raises leaves the notification as it was."""

    def __init__(
        self,
        specs: Sequence[AnyChannel],
        record: Record,
        *,
        spawn: Spawn | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = utcnow,
        env: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
        console_url: str | None = None,
        amend: Callable[[Notify], Notify] | None = None,
    ) -> None:
        self._record = record
        self._amend = amend
        self._sleep = sleep
        self._own_pool: WorkerPool | None = None
        if spawn is None:
            self._own_pool = spawn = WorkerPool(workers=8, per_actuator=4)
        self._spawn: Spawn = spawn
        self.problems: list[str] = []
        self._specs = {spec.name: spec for spec in specs}
        self._senders: dict[str, Sender] = {}
        for spec in specs:
            try:
                self._senders[spec.name] = SENDERS[type(spec)](
                    spec, env=env, client=client, clock=clock, console_url=console_url
                )
            except ValueError as error:  # SecretError: names the reference, never a value
                reason = f"channel {spec.name!r} is unavailable: {error}"
                logger.error("%s", reason)
                self.problems.append(reason)
                self._senders[spec.name] = _Unavailable(spec.name, reason)
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Notify]] = {}

    @property
    def channels(self) -> list[str]:
        """The configured channel names."""
        return list(self._senders)

    def __repr__(self) -> str:
        return f"Deliverer(channels={self.channels!r})"

    @property
    def waiting(self) -> int:
        """Notifications queued and not yet being delivered."""
        with self._lock:
            return sum(len(queue) for queue in self._queues.values())

    # ------------------------------------------------------------------ the notifier

    def __call__(self, command: Notify) -> None:
        """Queue the notification behind any other for its incident; deliver off this thread."""
        incident = command.incident_id
        with self._lock:
            queue = self._queues.get(incident)
            if queue is not None:  # a worker is on this incident: it takes this one next
                queue.append(command)
                return
            self._queues[incident] = deque([command])
        lane = next(
            (self._senders[name] for name in command.channels if name in self._senders), self
        )
        try:
            self._spawn(lane, lambda: self._drain(incident))
        except Exception:  # a pool that is shut down: nothing will deliver these
            with self._lock:
                dropped = self._queues.pop(incident, deque())
            logger.exception(
                "%s notification(s) for incident %s were not delivered", len(dropped), incident
            )

    def close(self, wait: bool = True) -> None:
        """Stop the Deliverer's own worker pool (deliveries in flight finish when `wait`)."""
        if self._own_pool is not None:
            self._own_pool.close(wait=wait)

    def _drain(self, incident: str) -> None:
        while True:
            with self._lock:
                queue = self._queues.get(incident)
                if not queue:
                    self._queues.pop(incident, None)
                    return
                command = queue.popleft()
            try:
                self.deliver(command)
            except Exception:  # a bug must not stop the notifications queued behind this one
                logger.exception(
                    "delivering a %s notification for incident %s failed", command.kind, incident
                )

    # ------------------------------------------------------------------ one notification

    def deliver(self, command: Notify) -> None:
        """Deliver one notification now, on this thread, and record what happened."""
        with bound_contextvars(incident_id=command.incident_id):
            self._deliver(self._amended(command))

    def _amended(self, command: Notify) -> Notify:
        if self._amend is None:
            return command
        try:
            return self._amend(command)
        except Exception:  # what it adds is a courtesy: the page goes out as the core said
            logger.exception("amending a %s notification failed; sent as it was", command.kind)
            return command

    def _deliver(self, command: Notify) -> None:
        key = dedup_key(command)
        names = list(dict.fromkeys(command.channels))  # a name listed twice is tried once
        if not names:
            self._failed(command, key, "", "the notification names no channel", None)
            return
        for position, name in enumerate(names):
            fallback = names[position + 1] if position + 1 < len(names) else None
            sender = self._senders.get(name)
            if sender is None:
                self._failed(command, key, name, f"channel {name!r} is not configured", fallback)
                continue
            attempts, error = self._attempt(sender, command, key)
            if error is None:
                self._outcome(NotificationSent, command, key, name, attempts=attempts)
                return
            self._failed(command, key, name, error, fallback)

    def _attempt(self, sender: Sender, command: Notify, key: str) -> tuple[int, str | None]:
        """Send with retries; return the number of attempts and the last error (None: sent)."""
        spec = self._specs[sender.name]
        backoff = spec.backoff.total_seconds()
        attempts = 0

        def once() -> None:
            nonlocal attempts
            attempts += 1
            try:
                sender.send(command, key)
            except DeliveryError:
                raise
            except Exception as error:  # a failure the sender did not classify: try again
                raise DeliveryError(
                    sender.secrets.redact(f"{sender.name}: {type(error).__name__}: {error}")
                ) from None

        def log_retry(state: RetryCallState) -> None:
            wait = state.next_action.sleep if state.next_action else 0.0
            logger.warning(
                "notification %s to %s failed (attempt %s), retrying in %.2fs: %s",
                key,
                sender.name,
                state.attempt_number,
                wait,
                state.outcome.exception() if state.outcome else "",
            )

        retrying = Retrying(
            stop=stop_after_attempt(spec.retries + 1),
            wait=wait_exponential(multiplier=backoff, max=max(_MAX_WAIT_S, backoff)),
            retry=retry_if_exception(
                lambda error: isinstance(error, DeliveryError) and not error.permanent
            ),
            sleep=self._sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            retrying(once)
        except DeliveryError as error:
            reason = sender.secrets.redact(str(error))
            suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
            return attempts, (reason[: _ERROR_LIMIT - len(suffix)] + suffix)
        return attempts, None

    def _failed(
        self, command: Notify, key: str, channel: str, error: str, fallback: str | None
    ) -> None:
        logger.error(
            "%s notification for incident %s not delivered to %s: %s%s",
            command.kind,
            command.incident_id,
            channel or "(no channel)",
            error,
            f"; trying {fallback}" if fallback else "",
            extra={"channel": channel, "kind": command.kind},
        )
        self._outcome(NotificationFailed, command, key, channel, error=error, fallback=fallback)

    def _outcome(
        self,
        event: type[NotificationSent | NotificationFailed],
        command: Notify,
        key: str,
        channel: str,
        **detail: Any,
    ) -> None:
        """Record how a notification went, in its incident's stream."""
        body = event(
            incident_id=command.incident_id,
            channel=channel,
            kind=command.kind,
            dedup_key=key,
            **detail,
        )
        self._emit(body, command.incident_id)

    def _emit(self, body: Payload, stream: str) -> None:
        """Record an outcome; a failure to record (the runtime stopped) is logged, and the
        delivery goes on: a person must still be told."""
        try:
            self._record(body, stream)
        except Exception:
            logger.exception("recording %s for incident %s failed", type(body).__name__, stream)
