"""What the console shows of a signal: its labels, its annotations and the links to its source.

An incident's events name a signal by its fingerprint (a hash); the signal itself is the
`SignalReceived` event in the log's `signal:<fingerprint>` stream, read here one indexed query at
a time (the newest one at or before the incident event), so a page of signal events costs the
same whatever the size of the log.

Everything in a signal is untrusted text: the templates escape it (autoescape), and a value
becomes a link only when it is an absolute `http(s)` URL (never `javascript:`, `data:` or a
relative path), shown with `rel="noopener noreferrer"`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

from onduty.events import Event
from onduty.log import EventLog

LABELS_SHOWN = 50
ANNOTATIONS_SHOWN = 50
TEXT_SHOWN = 4000
"""Characters of one annotation shown; the rest stays in the log."""
URL_LONGEST = 4096
LOOKUPS_PER_PAGE = 200
"""Signals looked up for one page at most (a page shows at most 100 signal events)."""
READ_PER_LOOKUP = 16
"""Events of a signal's stream read back from an incident event to find the signal."""

_UNSAFE_IN_URL = re.compile(r"[\x00-\x20\x7f-\x9f\\<>\"'`]")
_URL_SUFFIX = re.compile(r"(?:_?url|_?link|_?href)$", re.IGNORECASE)


class Link(NamedTuple):
    """A link a signal carries (a runbook, a dashboard), shown only when it is http(s)."""

    label: str
    href: str


class Annotation(NamedTuple):
    key: str
    text: str
    href: str | None
    """The value itself, when it is an http(s) URL the page may link to."""


@dataclass(frozen=True)
class SignalDetails:
    """One received signal as the incident page shows it."""

    fingerprint: str
    source: str
    status: str
    seq: int
    labels: list[tuple[str, str]]
    annotations: list[Annotation]
    links: list[Link]
    """The source (`generatorURL`) first, then every annotation that is a link (a Grafana
    dashboard or panel, a silence, a runbook, a PagerDuty page)."""
    omitted: int = 0
    """Labels and annotations left out of a very large signal."""


def safe_url(value: object) -> str | None:
    """`value` when it is an absolute http or https URL with a host and nothing a browser could
    read otherwise (spaces, quotes, control characters, backslashes); else None."""
    if not isinstance(value, str) or not value or len(value) > URL_LONGEST:
        return None
    if _UNSAFE_IN_URL.search(value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return value


def link_label(key: str) -> str:
    """`dashboardURL` → `dashboard`, `runbook_url` → `runbook`, `generatorURL` → `source`."""
    if key in ("generatorURL", "generator_url"):
        return "source"
    label = _URL_SUFFIX.sub("", key) or key
    return label.replace("_", " ")


def _clip(text: str) -> str:
    return text if len(text) <= TEXT_SHOWN else text[:TEXT_SHOWN] + "…"


def details_of(event: Event) -> SignalDetails:
    """A `SignalReceived` event as the page shows it."""
    data = event.data
    labels_in: Mapping[str, object] = data.get("labels") or {}
    notes_in: Mapping[str, object] = data.get("annotations") or {}
    labels = [(str(k), _clip(str(v))) for k, v in sorted(labels_in.items())[:LABELS_SHOWN]]
    annotations = [
        Annotation(str(key), _clip(str(value)), safe_url(value))
        for key, value in sorted(notes_in.items())[:ANNOTATIONS_SHOWN]
    ]
    links: list[Link] = []
    source = safe_url(data.get("generator_url"))
    if source is not None:
        links.append(Link("source", source))
    links += [Link(link_label(a.key), a.href) for a in annotations if a.href is not None]
    omitted = max(0, len(labels_in) - LABELS_SHOWN) + max(0, len(notes_in) - ANNOTATIONS_SHOWN)
    return SignalDetails(
        fingerprint=str(data.get("fingerprint", "")),
        source=str(data.get("source", "")),
        status=str(data.get("status", "")),
        seq=event.seq,
        labels=labels,
        annotations=annotations,
        links=links,
        omitted=omitted,
    )


def signal_behind(log: EventLog, fingerprint: str, seq: int, cause: str | None) -> Event | None:
    """The `SignalReceived` of `fingerprint` that an incident event at `seq` is about: the one
    that caused it (`cause`, its causation id) or else the newest one before it."""
    newest: Event | None = None
    stream = log.read_stream(f"signal:{fingerprint}", 0, seq + 1, newest_first=True)
    for read, event in enumerate(stream):
        if read >= READ_PER_LOOKUP:
            break
        if event.type != "SignalReceived":
            continue
        if cause is None or event.id == cause:
            return event
        newest = newest or event
    return newest


def signal_details(log: EventLog | None, events: Iterable[Event]) -> dict[int, SignalDetails]:
    """The signal behind each of `events` (incident events that name a fingerprint), by the
    event's seq; events without one, or whose signal is not in the log, are left out."""
    found: dict[int, SignalDetails] = {}
    if log is None:
        return found
    seen: dict[str, SignalDetails] = {}
    for lookups, event in enumerate(events):
        fingerprint = event.data.get("fingerprint")
        if lookups >= LOOKUPS_PER_PAGE:
            break
        if not isinstance(fingerprint, str) or not fingerprint:
            continue
        signal = signal_behind(log, fingerprint, event.seq, event.causation_id)
        if signal is None:
            continue
        details = seen.get(signal.id)
        if details is None:
            details = seen[signal.id] = details_of(signal)
        found[event.seq] = details
    return found
