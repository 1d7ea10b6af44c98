"""Whether a store already holds an onduty event log, found out without creating anything: read
commands (`incidents`, `events tail`, `replay`, `audit verify`, `report`, ...) refuse a mistyped
path or schema by name instead of opening an empty log there."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from onduty.log.base import StoreError


def require_existing_log(url: str) -> None:
    """Raise `StoreError` unless `url` names a store that already holds an event log."""
    if url.startswith(("postgresql://", "postgres://")):
        _require_postgres(url)
        return
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
    elif "://" in url:
        raise StoreError(f"store {url}: use sqlite:///PATH, a path or postgresql://HOST/DB")
    else:
        path = url
    if path == ":memory:":
        raise StoreError("an in-memory store holds no log to read")
    _require_sqlite(Path(path))


def _require_sqlite(path: Path) -> None:
    if not path.is_file():
        raise StoreError(f"no event log at {path} (run `onduty demo` to make one)")
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as error:
        raise StoreError(f"{path} is not an onduty event log: {error}") from None
    if not {"events", "meta"} <= tables:
        raise StoreError(f"{path} is not an onduty event log (it has no events table)")


def _require_postgres(url: str) -> None:
    import psycopg
    from psycopg import sql

    from onduty.log.pg import StoreURLError, parse_store_url, redact

    try:
        where = parse_store_url(url, own=("partition",))
    except StoreURLError as error:
        raise StoreError(str(error)) from None
    try:
        with psycopg.connect(where.conninfo, connect_timeout=10) as conn:
            conn.read_only = True
            table = sql.Identifier(where.schema, "events").as_string(conn)
            found = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    except psycopg.Error as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StoreError(f"cannot read the store {redact(url)}: {first}") from None
    if found is None or found[0] is None:
        raise StoreError(f"no onduty store in schema {where.schema} at {redact(url)}")
