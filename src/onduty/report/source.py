"""Reading a store for a report without changing it: a report never creates a store, a schema
or a table, so a mistyped path or schema is refused (naming it) before the log is opened, and
an incident that is not in the store is named with a few recent ones."""

from __future__ import annotations

from collections.abc import Iterable

from onduty.events import Event
from onduty.log import StoreError
from onduty.log.existing import require_existing_log

RECENT_SHOWN = 5


class ReportProblem(ValueError):
    """Why a report cannot be made: a problem the user can fix (one line)."""


def check_store(url: str) -> None:
    """Refuse a store that is not already an onduty event log, without creating anything."""
    try:
        require_existing_log(url)
    except StoreError as error:
        raise ReportProblem(str(error)) from None


def missing_incident(incident_id: str, events: Iterable[Event], store: str) -> ReportProblem:
    """The problem to report when `incident_id` is not in the store: the most recently opened
    incidents, to pick from."""
    recent: list[tuple[str, str]] = []
    for event in events:
        if event.type == "IncidentOpened":
            recent.append((str(event.data.get("incident_id")), str(event.data.get("title", ""))))
            del recent[:-RECENT_SHOWN]
    if not recent:
        return ReportProblem(f"no incident {incident_id!r} in {store}: it holds no incident")
    shown = ", ".join(f"{found} ({title})" for found, title in reversed(recent))
    return ReportProblem(
        f"no incident {incident_id!r} in {store}; the most recently opened: {shown}"
    )
