"""The web console: server-rendered pages over the read models, kept live by server-sent events.

Routes (all HTML unless said otherwise):

- `/` open incidents, newest first, and the recently resolved; `/incidents/{id}` one incident's
  timeline and a page of its signal events (the latest; `?signals_before=SEQ` and
  `?signals_after=SEQ` the others); `/approvals` the approval inbox; `/services` autonomy per
  service; `/audit` verifies the hash chain and shows the result; `/signin` (GET a form, POST a
  token) and `/signout` (POST).
- `/fragments/...` the part of each page that changes (the header, the incident list, one
  incident, the inbox, the services): what a page re-fetches when something happened.
- `/events/stream` (`text/event-stream`): one message per appended event, `{"seq", "type",
  "incident_id"}`; the browser re-fetches the fragments it shows. Each stream ends after
  `stream_lifetime` seconds and the browser reconnects (and re-fetches once, so nothing missed
  in between is lost): an open console never holds up a graceful shutdown for long.
- `/static/{name}` the stylesheet and the script (no build step, no CDN).

Writes (approve, deny, acknowledge, autonomy) go from the page's script to the JSON API with
`fetch`. The token lives in an HttpOnly, SameSite=Strict cookie, so the script never sees it: a
cross-site page cannot make the browser send it, and the script marks every call with the
`X-Onduty-Console: 1` header, which a cross-site form cannot set without a CORS preflight.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import jinja2
import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from onduty.api.auth import (
    COOKIE,
    Principal,
    access_of,
    bearer_token,
    client_address,
    principal_of,
)
from onduty.api.console_signals import SignalDetails, signal_details
from onduty.events import Event
from onduty.log import verify_snapshots
from onduty.readmodel import (
    IncidentView,
    PendingApproval,
    SignalCursor,
    SignalPage,
    signal_page,
)
from onduty.runtime import ScaledClock
from onduty.service import Service

COOKIE_MAX_AGE = 7 * 24 * 3600
AUTONOMY_LEVELS = ("observe", "suggest", "approve", "act")
RESOLVED_SHOWN = 10
QUEUE_LIMIT = 1000
"""Messages one stream may fall behind by; past that it is told to re-fetch everything."""
KEEPALIVE_S = 10.0
FORM_LIMIT = 16 * 1024
STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript"}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


# ---------------------------------------------------------------------------- who is asking


def _may(principal: Principal | None, role: str) -> bool:
    """Roles are explicit sets (an admin's holds every role: see `auth.expand_roles`)."""
    return principal is not None and role in principal.roles


# ---------------------------------------------------------------------------- time


def _age(delta: timedelta) -> str:
    """'42s', '5m', '3h 12m', '2d 4h': short and precise enough at a glance."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s" if minutes < 10 else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def _clock(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%H:%M:%S")


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _clock_context(now: datetime, speed: float | None) -> dict[str, Any]:
    """The service's own time for every relative time on a page ("5m ago", "expires in"): the
    wall clock, or in a simulation the simulated one (`speed` times faster), which the page's
    script then advances at that speed."""
    return {
        "now": now,
        "clock_now": now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "clock_speed": f"{speed:g}" if speed is not None else "1",
        "simulated": speed is not None,
    }


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


# ---------------------------------------------------------------------------- incidents


@dataclass(frozen=True)
class Row:
    """An incident as the list shows it."""

    id: str
    title: str
    service: str
    status: str
    phase: str
    tone: str
    opened_at: datetime
    resolved_at: datetime | None
    resolution: str
    signals: int
    flapping: bool
    muted: bool
    escalated: bool
    acknowledged: bool
    approvals: int


def _row(view: IncidentView) -> Row:
    """The incident's phase from the state its view follows (never a walk of its timeline,
    which a list of many incidents would pay for each of them)."""
    muted, acknowledged = view.muted, view.acknowledged
    acting, verifying = view.acting, view.verifying
    approvals = len(view.awaiting_approval)
    if view.status == "resolved":
        phase, tone = "resolved", "good"
    elif approvals:
        phase, tone = "awaiting approval", "warn"
    elif acting:
        phase, tone = "acting", "info"
    elif verifying:
        phase, tone = "verifying", "info"
    elif view.escalated and not acknowledged:
        phase, tone = "escalated", "bad"
    elif acknowledged:
        phase, tone = "acknowledged", "info"
    elif muted:
        phase, tone = "muted", "quiet"
    elif view.flapping:
        phase, tone = "flapping", "warn"
    else:
        phase, tone = "open", "bad"
    return Row(
        id=view.incident_id,
        title=view.title,
        service=view.service or "",
        status=view.status,
        phase=phase,
        tone=tone,
        opened_at=view.opened_at,
        resolved_at=view.resolved_at,
        resolution=view.resolution,
        signals=view.signals,
        flapping=view.flapping,
        muted=muted,
        escalated=view.escalated,
        acknowledged=acknowledged,
        approvals=approvals,
    )


@dataclass
class Entry:
    """One line of an incident's timeline, ready to show."""

    event: Event
    kind: str
    title: str
    tone: str = "info"
    facts: list[tuple[str, str]] = field(default_factory=list)
    rules: list[dict[str, str]] = field(default_factory=list)
    text: str = ""
    """Longer text (an action's output, an error), shown preformatted."""
    by: str | None = None
    """Who recorded it, when that is a person or a tool (None: onduty itself, or the title
    says who)."""

    @property
    def ts(self) -> datetime:
        return self.event.ts


_CHANGES = {
    "signal_added": ("signal", "A signal joined", "info"),
    "signal_resolved": ("signal", "A signal resolved", "good"),
    "signal_refired": ("signal", "A signal fired again", "warn"),
    "signal_timed_out": ("signal", "A signal went quiet (counted as resolved)", "info"),
    "acknowledged": ("ack", "Acknowledged at the source", "info"),
    "flapping": ("flapping", "Flapping: automation paused", "warn"),
    "muted": ("muted", "Muted", "quiet"),
    "unmuted": ("muted", "Unmuted", "info"),
    "planned": ("plan", "Planned", "info"),
    "overdue": ("escalation", "Overdue: nobody acknowledged", "bad"),
}
_EFFECT_TONE = {"allow": "good", "require_approval": "warn", "deny": "bad"}
_EFFECT_WORD = {"allow": "allow", "require_approval": "needs approval", "deny": "deny"}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _entry(event: Event) -> Entry:
    entry = _describe(event)
    if entry.by is None and event.actor not in ("onduty", "") and event.actor not in entry.title:
        entry.by = event.actor
    return entry


def _describe(event: Event) -> Entry:
    data, kind = event.data, event.type
    who = event.actor

    def fact(*pairs: tuple[str, Any]) -> list[tuple[str, str]]:
        return [(label, _text(value)) for label, value in pairs if value not in (None, "", [], {})]

    if kind == "IncidentOpened":
        labels = ", ".join(f"{k}={v}" for k, v in sorted(data.get("group_key", {}).items()))
        return Entry(
            event,
            "signal",
            "Incident opened",
            "bad",
            fact(("signal", data.get("fingerprint")), ("group", labels)),
        )
    if kind == "IncidentUpdated":
        change = data.get("change", "")
        group, title, tone = _CHANGES.get(change, ("update", change.replace("_", " "), "info"))
        return Entry(
            event,
            group,
            title,
            tone,
            fact(("signal", data.get("fingerprint")), ("detail", data.get("detail"))),
        )
    if kind == "IncidentResolved":
        return Entry(event, "resolved", "Resolved", "good", fact(("reason", data.get("reason"))))
    if kind == "ActionProposed":
        return Entry(
            event,
            "proposal",
            f"Proposed {data.get('action')} on {data.get('target')}",
            "info",
            fact(
                ("runbook", f"{data.get('runbook')} (step {int(data.get('step', 0)) + 1})"),
                ("why", data.get("rationale")),
                ("params", data.get("params")),
                ("command", data.get("command_id")),
            ),
        )
    if kind == "ProposalRejected":
        return Entry(
            event,
            "proposal",
            f"Not chosen: {data.get('action')} on {data.get('target')}",
            "quiet",
            fact(("runbook", data.get("runbook")), ("reason", data.get("reason"))),
        )
    if kind == "PolicyEvaluated":
        verdict = data.get("verdict", "")
        rules = [
            {
                "rule": str(rule.get("rule", "")),
                "effect": str(rule.get("effect", "")),
                "word": _EFFECT_WORD.get(str(rule.get("effect", "")), str(rule.get("effect"))),
                "tone": _EFFECT_TONE.get(str(rule.get("effect", "")), "info"),
                "reason": str(rule.get("reason", "")),
            }
            for rule in data.get("rules", [])
        ]
        return Entry(
            event,
            "verdict",
            f"Guardrails: {_EFFECT_WORD.get(verdict, verdict)}",
            _EFFECT_TONE.get(verdict, "info"),
            fact(("reason", data.get("reason")), ("policy", data.get("policy_version"))),
            rules,
        )
    if kind == "PolicyShadowDiverged":
        return Entry(
            event,
            "verdict",
            f"The {data.get('mode')} policy would have said {data.get('other')}",
            "quiet",
            fact(
                ("enforced", f"{data.get('enforced')} ({data.get('enforced_version')})"),
                ("candidate", f"{data.get('other')} ({data.get('other_version')})"),
                ("reason", data.get("other_reason")),
            ),
        )
    if kind == "ApprovalRequested":
        expires = _parse_time(data.get("expires_at"))
        return Entry(
            event,
            "approval",
            "Approval requested" + (" (next tier)" if data.get("round") else ""),
            "warn",
            fact(
                ("action", data.get("summary")),
                ("needs", f"{data.get('required', 1)} approver(s)"),
                ("asked", ", ".join(data.get("notify", []))),
                ("expires", _stamp(expires) if expires else None),
            ),
        )
    if kind in ("ApprovalGranted", "ApprovalDenied"):
        granted = kind == "ApprovalGranted"
        role = data.get("role")
        return Entry(
            event,
            "approval",
            f"{'Approved' if granted else 'Denied'} by {who}" + (f" ({role})" if role else ""),
            "good" if granted else "bad",
            fact(("comment", data.get("comment"))),
        )
    if kind == "ApprovalExpired":
        return Entry(event, "approval", "Approval expired: denied", "bad")
    if kind == "ActionStarted":
        attempt = int(data.get("attempt", 1))
        return Entry(
            event,
            "action",
            f"Started {data.get('action')} on {data.get('target')}",
            "info",
            fact(
                ("attempt", attempt if attempt > 1 else None), ("command", data.get("command_id"))
            ),
        )
    if kind == "ActionSucceeded":
        return Entry(event, "action", "Action succeeded", "good", text=data.get("output", ""))
    if kind == "ActionFailed":
        return Entry(event, "action", "Action failed", "bad", text=data.get("error", ""))
    if kind == "ActionOutcomeUnknown":
        return Entry(
            event, "action", "Action outcome unknown", "bad", fact(("why", data.get("reason")))
        )
    if kind == "VerificationPassed":
        return Entry(event, "verify", "Verified", "good", fact(("check", data.get("check"))))
    if kind == "VerificationFailed":
        return Entry(
            event, "verify", "Verification failed", "bad", fact(("why", data.get("reason")))
        )
    if kind == "UndoStarted":
        return Entry(
            event, "undo", f"Undoing: {data.get('action')} on {data.get('target')}", "warn"
        )
    if kind == "UndoFinished":
        ok = bool(data.get("ok"))
        return Entry(
            event,
            "undo",
            "Undo finished" if ok else "Undo failed",
            "good" if ok else "bad",
            text="" if ok else data.get("error", ""),
        )
    if kind == "Escalated":
        return Entry(
            event,
            "escalation",
            f"Escalated to people (tier {int(data.get('tier', 0)) + 1})",
            "bad",
            fact(("why", data.get("reason")), ("paged", ", ".join(data.get("notify", [])))),
        )
    if kind == "Acknowledged":
        return Entry(
            event, "ack", f"Acknowledged by {who}", "info", fact(("comment", data.get("comment")))
        )
    if kind == "NotificationSent":
        return Entry(
            event,
            "notify",
            f"Notified {data.get('channel')} ({data.get('kind')})",
            "quiet",
            fact(("attempts", data.get("attempts") if data.get("attempts", 1) > 1 else None)),
        )
    if kind == "NotificationFailed":
        return Entry(
            event,
            "notify",
            f"Could not notify {data.get('channel')}",
            "bad",
            fact(("error", data.get("error")), ("next", data.get("fallback"))),
        )
    facts = [(key, _text(value)) for key, value in sorted(data.items()) if key != "incident_id"]
    return Entry(event, "other", kind, "info", facts)


# ---------------------------------------------------------------------------- signals

SIGNALS_SHOWN = 100
"""Signal events on one page of an incident: the rest are a link away (`?signals_before=SEQ`,
`?signals_after=SEQ`), read from the log, so a page stays small however large the incident."""


@dataclass(frozen=True)
class SignalsAsked:
    """Which page of its signal events an incident page shows: the latest (neither given),
    the ones after seq `after` (0: the first page), or the ones just before seq `before`."""

    after: int | None = None
    before: int | None = None

    @classmethod
    def of(cls, request: Request) -> SignalsAsked | str:
        """The page the query asks for, or what is wrong with the query."""
        found: dict[str, int] = {}
        for name, least in (("signals_after", 0), ("signals_before", 1)):
            value = request.query_params.get(name)
            if value is None:
                continue
            if not value.isdigit() or len(value) > 18 or int(value) < least:
                return f"{name} must be a whole number of at least {least}."
            found[name] = int(value)
        if len(found) > 1:
            return "Give signals_after or signals_before, not both."
        return cls(found.get("signals_after"), found.get("signals_before"))

    @property
    def query(self) -> str:
        if self.after is not None:
            return f"?signals_after={self.after}"
        if self.before is not None:
            return f"?signals_before={self.before}"
        return ""


@dataclass(frozen=True)
class PagerLink:
    rel: str
    label: str
    href: str
    key: str = ""


@dataclass(frozen=True)
class SignalsShown:
    """A page of an incident's signal events as the page shows them."""

    total: int
    entries: list[Entry]
    links: list[PagerLink]
    describe: str
    query: str
    """The page's own query, which the live refresh of the fragment keeps."""


def _signals_shown(incident_id: str, asked: SignalsAsked, page: SignalPage) -> SignalsShown:
    base = f"/incidents/{quote(incident_id, safe='')}"
    events = page.events
    links = []
    if page.earlier and events:
        links.append(PagerLink("first", "⇤ First", f"{base}?signals_after=0"))
        links.append(PagerLink("prev", "← Earlier", f"{base}?signals_before={events[0].seq}", "["))
    if page.later and events:
        links.append(PagerLink("next", "Later →", f"{base}?signals_after={events[-1].seq}", "]"))
        links.append(PagerLink("last", "Latest ⇥", base))
    elif asked.query:
        links.append(PagerLink("last", "Latest ⇥", base))
    if not events:
        describe = "No signal events on this page."
    elif not page.earlier and not page.later:
        describe = f"All {page.total:,} signal events, oldest first."
    else:
        which = "the latest " if not page.later else "the first " if not page.earlier else ""
        describe = (
            f"Showing {which}{len(events):,} of {page.total:,} signal events "
            f"({_clock(events[0].ts)} to {_clock(events[-1].ts)} UTC), oldest first."
        )
    return SignalsShown(
        total=page.total,
        entries=[_entry(event) for event in events],
        links=links,
        describe=describe,
        query=asked.query,
    )


def _first_of_each(details: dict[int, SignalDetails]) -> set[int]:
    """The seqs of the first event on a page for each signal: the page shows its annotations
    open there, and folded where the same signal comes back."""
    first: dict[str, int] = {}
    for seq in sorted(details):
        first.setdefault(details[seq].fingerprint, seq)
    return set(first.values())


# ---------------------------------------------------------------------------- approvals


@dataclass
class Inbox:
    """A pending approval with what an approver needs to decide."""

    id: str
    incident_id: str
    incident_title: str
    service: str
    summary: str
    requested_at: datetime
    expires_at: datetime
    required: int
    granted_by: list[str]
    status: str
    """One sentence: "1 of 2: approved by alice, waiting for another approver"."""
    yours: bool
    """The signed-in person has already approved it: no buttons for them."""
    action: str
    target: str
    runbook: str
    rationale: str
    rules: list[dict[str, str]]


def _inbox(
    views: dict[str, IncidentView], pending: Iterable[PendingApproval], who: Principal | None
) -> list[Inbox]:
    """The requests with what an approver needs; who has approved comes from the read model,
    which counts approvals exactly as the core does."""
    items = []
    for item in pending:
        view = views.get(item.incident_id)
        action = target = runbook = rationale = ""
        rules: list[dict[str, str]] = []
        for event in view.timeline if view else []:
            data = event.data
            if event.type == "ActionProposed" and data.get("command_id") == item.command_id:
                action, target = str(data.get("action", "")), str(data.get("target", ""))
                runbook, rationale = str(data.get("runbook", "")), str(data.get("rationale", ""))
            elif event.type == "PolicyEvaluated" and data.get("command_id") == item.command_id:
                rules = _entry(event).rules
        items.append(
            Inbox(
                id=item.approval_id,
                incident_id=item.incident_id,
                incident_title=view.title if view else "",
                service=(view.service or "") if view else "",
                summary=item.summary,
                requested_at=item.requested_at,
                expires_at=item.expires_at,
                required=item.required,
                granted_by=list(item.approved_by),
                status=item.status,
                yours=who is not None and item.has_approved(who.name),
                action=action,
                target=target,
                runbook=runbook,
                rationale=rationale,
                rules=rules,
            )
        )
    return sorted(items, key=lambda entry: entry.expires_at)


# ---------------------------------------------------------------------------- live state


@dataclass
class Message:
    seq: int
    type: str
    incident_id: str | None

    def sse(self) -> str:
        body = orjson.dumps({"seq": self.seq, "type": self.type, "incident_id": self.incident_id})
        return f"id: {self.seq}\ndata: {body.decode()}\n\n"


class _Stream:
    """One connected browser: messages waiting for it, and the event that wakes it."""

    def __init__(self) -> None:
        self.messages: deque[Message] = deque()
        self.wake = asyncio.Event()
        self.overflowed = False


@dataclass
class AuditStatus:
    intact: bool | None = None
    events: int = 0
    first_bad_seq: int | None = None
    reason: str = ""
    bad_snapshot: int | None = None
    """With an intact chain: the seq of a stored snapshot that is not bound to it."""
    checked_at: datetime | None = None
    took_s: float = 0.0


class Hub:
    """Fans the service's appended events out to the connected event streams, and keeps the
    result of the last audit the console ran."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.audit = AuditStatus()
        self.audit_lock = threading.Lock()
        self._audit_started = float("-inf")
        self._lock = threading.Lock()
        self._streams: set[_Stream] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[Message] = []
        self._scheduled = False
        self._owner: OrderedDict[str, str] = OrderedDict()
        """command and approval ids → their incident (the most recent 50,000)."""
        service.subscribe(self._on_event)

    def _incident_of(self, event: Event) -> str | None:
        data = event.data
        incident = data.get("incident_id")
        keys = [
            data[key] for key in ("command_id", "approval_id") if isinstance(data.get(key), str)
        ]
        if isinstance(incident, str):
            for key in keys:
                self._owner[key] = incident
            while len(self._owner) > 50_000:
                self._owner.popitem(last=False)
            return incident
        for key in (*keys, data.get("of_command_id")):
            if isinstance(key, str) and key in self._owner:
                found = self._owner[key]
                if isinstance(data.get("command_id"), str):
                    self._owner[data["command_id"]] = found
                return found
        return None

    def _on_event(self, event: Event) -> None:
        """On the core's thread: note the event and wake the event loop (once per burst)."""
        with self._lock:
            incident = self._incident_of(event)
            loop = self._loop
            if loop is None or not self._streams:
                return
            self._pending.append(Message(event.seq, event.type, incident))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            with self._lock:
                self._pending.clear()
                self._scheduled = False

    def _deliver(self) -> None:
        with self._lock:
            batch, self._pending, self._scheduled = self._pending, [], False
            streams = list(self._streams)
        for stream in streams:
            if len(stream.messages) + len(batch) > QUEUE_LIMIT:
                stream.messages.clear()
                stream.overflowed = True
            else:
                stream.messages.extend(batch)
            stream.wake.set()

    def connect(self) -> _Stream:
        stream = _Stream()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._streams.add(stream)
        return stream

    def disconnect(self, stream: _Stream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def verify(self) -> AuditStatus:
        """Check the whole chain (one check at a time; a caller that waited gets its result)."""
        log = self.service.log
        if log is None:
            return self.audit
        asked = time.monotonic()
        with self.audit_lock:
            if self._audit_started >= asked:
                return self.audit  # a check that started after this call asked has finished
            started = self._audit_started = time.monotonic()
            head = log.head()[0]
            broken = log.verify()
            bad = verify_snapshots(log)
            reason = broken.reason if broken else ""
            if broken is None and bad:
                reason = "; ".join(f"snapshot at seq {p.seq}: {p.reason}" for p in bad)
            self.audit = AuditStatus(
                intact=broken is None and not bad,
                events=head,
                first_bad_seq=broken.seq if broken else None,
                reason=reason,
                bad_snapshot=bad[0].seq if broken is None and bad else None,
                checked_at=datetime.now(UTC),
                took_s=time.monotonic() - started,
            )
            return self.audit


async def _event_stream(hub: Hub, request: Request, lifetime: float) -> AsyncIterator[str]:
    """`retry` first (reconnect after a second), then each event as it comes, a comment every
    `KEEPALIVE_S` when nothing happens, and the end after `lifetime` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lifetime
    stream = hub.connect()
    try:
        yield "retry: 1000\n: onduty events\n\n"
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or await request.is_disconnected():
                return
            try:
                await asyncio.wait_for(stream.wake.wait(), timeout=min(KEEPALIVE_S, remaining))
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            stream.wake.clear()
            if stream.overflowed:
                stream.overflowed = False
                yield "event: resync\ndata: {}\n\n"
                continue
            chunk = []
            while stream.messages:
                chunk.append(stream.messages.popleft().sse())
            if chunk:
                yield "".join(chunk)
    finally:
        hub.disconnect(stream)


# ---------------------------------------------------------------------------- the router


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("onduty.api", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["age"] = lambda moment, now: _age(now - moment)
    environment.filters["clock"] = _clock
    environment.filters["stamp"] = _stamp
    environment.filters["iso"] = _iso
    return environment


def _static() -> dict[str, tuple[bytes, str, str]]:
    """name → (content, media type, short content hash for cache-busting URLs)."""
    folder = resources.files("onduty.api") / "static"
    files = {}
    for name, media in STATIC_FILES.items():
        content = (folder / name).read_bytes()
        files[name] = (content, media, hashlib.sha256(content).hexdigest()[:12])
    return files


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def _read_form(request: Request, limit: int = FORM_LIMIT) -> bytes | None:
    """The request's body, or None past `limit` bytes (read no further)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _same_origin(request: Request) -> bool:
    """A form post from a page of this server: what the browser says (`Sec-Fetch-Site`),
    else the `Origin` it sends with every POST. A client that is no browser sends neither."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return (
        origin != "null"
        and urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()
    )


def console_router(service: Service, *, stream_lifetime: float = 15.0) -> APIRouter:
    """The console's pages, fragments, event stream and static files, over `service`.

    The access guard leaves paths outside the API alone: every console route checks its caller
    itself (`principal_of`), and counts unknown tokens against the same failure throttle."""
    router = APIRouter(include_in_schema=False)
    environment = _environment()
    static = _static()
    hub = Hub(service)

    def static_url(name: str) -> str:
        return f"/static/{name}?v={static[name][2]}"

    def header_context(request: Request, who: Principal | None) -> dict[str, Any]:
        with service.read.lock:
            policy = service.read.policy
            version, candidate = policy.version, policy.candidate_version
            candidate_role = policy.candidate_role
            open_count = sum(
                1 for view in service.read.incidents.incidents.values() if view.status == "open"
            )
            approvals = len(service.read.incidents.approvals)
        clock = service.clock
        return {
            **_clock_context(clock.now(), clock.speed if isinstance(clock, ScaledClock) else None),
            "who": who,
            "access_open": not access_of(request).enabled,
            "policy_version": version,
            "candidate_version": candidate,
            "candidate_role": candidate_role,
            "audit": hub.audit,
            "open_count": open_count,
            "approval_count": approvals,
            "path": request.url.path,
        }

    def render(
        request: Request,
        template: str,
        who: Principal | None,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        context = {
            **header_context(request, who),
            "static": static_url,
            "may_approve": _may(who, "approver"),
            "may_operate": _may(who, "operator"),
            "may_admin": _may(who, "admin"),
            **context,
        }
        html = environment.get_template(template).render(context)
        return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)

    def gate(request: Request, fragment: bool = False) -> Principal | Response:
        """The viewer who asks, or the answer for one who may not look: a stranger is sent to
        the sign-in page (a fragment or the event stream answers 401); an unknown token counts
        as a failed authentication, and too many of them from one address answer 429 (a
        known token is let in all the same)."""
        access = access_of(request)
        address = client_address(request)
        who = principal_of(request)
        if who is None and access.enabled:
            retry = access.throttle.retry_after(address)
            if retry is not None:
                return Response(
                    "too many failed authentications; retry later",
                    status_code=429,
                    headers={**SECURITY_HEADERS, "Retry-After": str(retry)},
                )
        if who is None:
            if bearer_token(request) or request.cookies.get(COOKIE):
                access.throttle.failed(address)
            if fragment:
                return Response("sign in", status_code=401, headers=SECURITY_HEADERS)
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/signin?next={quote(target)}", status_code=303)
        if not _may(who, "viewer"):
            return render(
                request,
                "error.html",
                who,
                status_code=403,
                title="Not allowed",
                message="Your token does not allow you to view the console.",
            )
        return who

    def incident_lists() -> tuple[list[Row], list[Row]]:
        """The open incidents, newest first, and the last few resolved."""
        with service.read.lock:
            views = service.read.incidents.incidents.values()
            open_views = [view for view in views if view.status == "open"]
            open_views.sort(key=lambda view: view.opened_at, reverse=True)
            resolved = heapq.nlargest(
                RESOLVED_SHOWN,
                (view for view in views if view.status == "resolved"),
                key=lambda view: view.resolved_at or view.opened_at,
            )
            return [_row(view) for view in open_views], [_row(view) for view in resolved]

    def incident_context(incident_id: str, who: Principal | None = None) -> dict[str, Any] | None:
        with service.read.lock:
            view = service.read.incidents.incidents.get(incident_id)
            if view is None:
                return None
            row = _row(view)
            entries = [_entry(event) for event in view.decisions.events()]
            decisions = view.decisions
            cursor = SignalCursor.of(view)
            pending = [
                service.read.incidents.approvals[approval]
                for approval in view.awaiting_approval
                if approval in service.read.incidents.approvals
            ]
            inbox = _inbox(service.read.incidents.incidents, pending, who)
        return {
            "incident": row,
            "entries": entries,
            "inbox": inbox,
            "decisions_omitted": decisions.omitted,
            "decisions_split": len(decisions.start),
            "cursor": cursor,
        }

    def with_signals(context: dict[str, Any], asked: SignalsAsked) -> dict[str, Any]:
        """The context with the page of signal events `asked` for, read (from the log, for a
        large incident) without holding the read models' lock."""
        cursor: SignalCursor = context.pop("cursor")
        after, before = asked.after or 0, asked.before
        if asked.after is None and asked.before is None:  # the latest page
            before = cursor.last_seq + 1
        page = signal_page(cursor, service.log, after=after, before=before, limit=SIGNALS_SHOWN)
        opened = [entry.event for entry in context["entries"] if entry.kind == "signal"]
        details = signal_details(service.log, [*opened, *page.events])
        return {
            **context,
            "signals": _signals_shown(cursor.incident_id, asked, page),
            "signal_details": details,
            "signal_first": _first_of_each(details),
        }

    def approvals_context(who: Principal | None) -> dict[str, Any]:
        with service.read.lock:
            inbox = _inbox(
                service.read.incidents.incidents, service.read.incidents.approvals.values(), who
            )
        return {"inbox": inbox}

    def services_context(who: Principal | None = None) -> dict[str, Any]:
        now = service.clock.now()
        with service.read.lock:
            document = service.read.policy.document or {}
            overrides = dict(service.read.autonomy.overrides)
            raises = {
                r.service: {
                    "id": r.request_id,
                    "level": r.level,
                    "status": r.status(now),
                    "yours": who is not None and r.has_confirmed(who.name),
                }
                for r in service.read.raises.pending(now)
            }
            counts: dict[str, int] = {}
            for view in service.read.incidents.incidents.values():
                if view.status == "open" and view.service:
                    counts[view.service] = counts.get(view.service, 0) + 1
        capped = [
            f"{runbook['name']}: {runbook['autonomy']}"
            for runbook in document.get("runbooks", [])
            if runbook.get("autonomy")
        ]
        rows = []
        for spec in document.get("services", []):
            name = str(spec.get("name", ""))
            configured = str(spec.get("autonomy", "suggest"))
            rows.append(
                {
                    "name": name,
                    "tier": spec.get("tier", "standard"),
                    "instances": len(spec.get("instances", [])),
                    "configured": configured,
                    "effective": overrides.get(name) or configured,
                    "overridden": bool(overrides.get(name)) and overrides[name] != configured,
                    "open": counts.get(name, 0),
                    "raise": raises.get(name),
                }
            )
        return {"services": rows, "levels": AUTONOMY_LEVELS, "capped": capped}

    # ------------------------------------------------------------------------ pages

    @router.get("/", response_class=HTMLResponse)
    def index(request: Request) -> Response:
        who = gate(request)
        if isinstance(who, Response):
            return who
        open_rows, resolved_rows = incident_lists()
        return render(
            request, "index.html", who, title="Incidents", open=open_rows, resolved=resolved_rows
        )

    @router.get("/fragments/incidents", response_class=HTMLResponse)
    def incidents_fragment(request: Request) -> Response:
        who = gate(request, fragment=True)
        if isinstance(who, Response):
            return who
        open_rows, resolved_rows = incident_lists()
        return render(request, "_incidents.html", who, open=open_rows, resolved=resolved_rows)

    @router.get("/incidents/{incident_id}", response_class=HTMLResponse)
    def incident_page(request: Request, incident_id: str) -> Response:
        who = gate(request)
        if isinstance(who, Response):
            return who
        asked = SignalsAsked.of(request)
        if isinstance(asked, str):
            return render(
                request, "error.html", who, status_code=400, title="Bad request", message=asked
            )
        context = incident_context(incident_id, who)
        if context is None:
            return render(
                request,
                "error.html",
                who,
                status_code=404,
                title="No such incident",
                message=f"There is no incident {incident_id}.",
            )
        context = with_signals(context, asked)
        return render(request, "incident.html", who, title=context["incident"].title, **context)

    @router.get("/fragments/incidents/{incident_id}", response_class=HTMLResponse)
    def incident_fragment(request: Request, incident_id: str) -> Response:
        who = gate(request, fragment=True)
        if isinstance(who, Response):
            return who
        asked = SignalsAsked.of(request)
        if isinstance(asked, str):
            return Response(asked, status_code=400, headers=SECURITY_HEADERS)
        context = incident_context(incident_id, who)
        if context is None:
            return Response("not found", status_code=404, headers=SECURITY_HEADERS)
        return render(request, "_incident.html", who, **with_signals(context, asked))

    @router.get("/approvals", response_class=HTMLResponse)
    def approvals_page(request: Request) -> Response:
        who = gate(request)
        if isinstance(who, Response):
            return who
        return render(request, "approvals.html", who, title="Approvals", **approvals_context(who))

    @router.get("/fragments/approvals", response_class=HTMLResponse)
    def approvals_fragment(request: Request) -> Response:
        who = gate(request, fragment=True)
        if isinstance(who, Response):
            return who
        return render(request, "_approvals.html", who, **approvals_context(who))

    @router.get("/services", response_class=HTMLResponse)
    def services_page(request: Request) -> Response:
        who = gate(request)
        if isinstance(who, Response):
            return who
        return render(request, "services.html", who, title="Services", **services_context(who))

    @router.get("/fragments/services", response_class=HTMLResponse)
    def services_fragment(request: Request) -> Response:
        who = gate(request, fragment=True)
        if isinstance(who, Response):
            return who
        return render(request, "_services.html", who, **services_context(who))

    @router.get("/fragments/header", response_class=HTMLResponse)
    def header_fragment(request: Request) -> Response:
        who = gate(request, fragment=True)
        if isinstance(who, Response):
            return who
        return render(request, "_header.html", who)

    @router.get("/audit", response_class=HTMLResponse)
    async def audit_page(request: Request) -> Response:
        who = gate(request)
        if isinstance(who, Response):
            return who
        status = await asyncio.to_thread(hub.verify)
        return render(request, "audit.html", who, title="Audit", result=status)

    # ------------------------------------------------------------------------ signing in

    @router.get("/signin", response_class=HTMLResponse)
    def signin_page(request: Request, next: str = "/") -> Response:
        return render(
            request, "signin.html", principal_of(request), title="Sign in", next=_safe_next(next),
            error="",
        )  # fmt: skip

    @router.post("/signin", response_class=HTMLResponse)
    async def signin(request: Request) -> Response:
        if not _same_origin(request):
            return Response("cross-site sign-in refused", status_code=403)
        body = await _read_form(request)
        if body is None:
            return Response("the form is too large", status_code=413)
        form = parse_qs(body.decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        target = _safe_next((form.get("next") or ["/"])[0])
        access = access_of(request)

        def refuse(status_code: int, error: str) -> Response:
            return render(
                request, "signin.html", None, status_code=status_code, title="Sign in",
                next=target, error=error,
            )  # fmt: skip

        if not access.enabled:
            return refuse(409, "Access control is off: there is nothing to sign in to.")
        if not token:
            return refuse(400, "Paste a token.")
        if access.authenticate(token) is None:  # a known token is accepted from anywhere
            address = client_address(request)
            retry = access.throttle.retry_after(address)
            if retry is not None:
                return refuse(429, f"Too many failed attempts: try again in {retry} s.")
            access.throttle.failed(address)
            return refuse(401, "That token is not recognised.")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            max_age=COOKIE_MAX_AGE,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @router.post("/signout")
    def signout(request: Request) -> Response:
        if not _same_origin(request):
            return Response("cross-site sign-out refused", status_code=403)
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # ------------------------------------------------------------------------ live, static

    @router.get("/events/stream")
    async def event_stream(request: Request) -> Response:
        who = gate(request, fragment=True)
        if isinstance(who, Response):
            return who
        return StreamingResponse(
            _event_stream(hub, request, stream_lifetime),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @router.get("/static/{name}")
    def static_file(name: str) -> Response:
        found = static.get(name)
        if found is None:
            return Response("not found", status_code=404)
        content, media, _ = found
        return Response(
            content,
            media_type=media,
            headers={
                "Cache-Control": "public, max-age=31536000, immutable",
                "X-Content-Type-Options": "nosniff",
            },
        )

    from onduty.api.console_shift import shift_router

    router.include_router(shift_router(service, render, gate))
    return router
