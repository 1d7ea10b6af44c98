"""Reading a store for a report without changing it: a report never creates a store, a schema
or a table, so a mistyped path or schema is refused (naming it) before the log is opened, and
an incident that is not in the store is named with a few recent ones."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from onduty.events import Event

RECENT_SHOWN = 5


class ReportProblem(ValueError):
    """Why a report cannot be made: a problem the user can fix (one line)."""


def check_store(url: str) -> None:
    """Refuse a store that is not already an onduty event log, without creating anything."""
    if url.startswith(("postgresql://", "postgres://")):
        _check_postgres(url)
        return
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
    elif "://" in url:
        raise ReportProblem(f"store {url}: use sqlite:///PATH, a path or postgresql://HOST/DB")
    else:
        path = url
    if path == ":memory:":
        raise ReportProblem("an in-memory store holds no incidents to report on")
    _check_sqlite(Path(path))


def _check_sqlite(path: Path) -> None:
    if not path.is_file():
        raise ReportProblem(f"no event log at {path}")
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as error:
        raise ReportProblem(f"{path} is not an onduty event log: {error}") from None
    if not {"events", "meta"} <= tables:
        raise ReportProblem(f"{path} is not an onduty event log (it has no events table)")


def _check_postgres(url: str) -> None:
    import psycopg
    from psycopg import sql

    from onduty.log.pg import StoreURLError, parse_store_url, redact

    try:
        where = parse_store_url(url, own=("partition",))
    except StoreURLError as error:
        raise ReportProblem(str(error)) from None
    try:
        with psycopg.connect(where.conninfo, connect_timeout=10) as conn:
            conn.read_only = True
            table = sql.Identifier(where.schema, "events").as_string(conn)
            found = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    except psycopg.Error as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ReportProblem(f"cannot read the store {redact(url)}: {first}") from None
    if found is None or found[0] is None:
        raise ReportProblem(f"no onduty store in schema {where.schema} at {redact(url)}")


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
