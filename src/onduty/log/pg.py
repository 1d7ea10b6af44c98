"""What every PostgreSQL client of onduty shares: the store URL, connections, schema creation.

A store is a schema of one database, named in the URL: `postgresql://user@host:5432/db?schema=x`
(default schema `onduty`). libpq rejects query parameters it does not know, so onduty's own
(`schema`, and any a caller names, such as the log's `partition`) are taken out before the rest
of the URL reaches it.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

DEFAULT_SCHEMA = "onduty"
CONNECT_TIMEOUT_S = 5.0
APPLICATION_NAME = "onduty"
SCHEMES = ("postgresql", "postgres")

# What PostgreSQL accepts as an unquoted identifier (ASCII only); names starting with `pg_` are
# reserved for the system's schemas.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

Connection = psycopg.Connection[tuple[Any, ...]]


class StoreURLError(ValueError):
    """A store URL onduty cannot use; the message names the URL (without its password) and why."""


class DatabaseUnavailable(ConnectionError):
    """The database could not be reached, or the connection broke during a statement. Whether
    the statement took effect is unknown: retry it with the same arguments (every fleet
    operation is idempotent)."""


@dataclass(frozen=True)
class StoreURL:
    """A store URL taken apart: what libpq reads, the schema, and onduty's other parameters."""

    conninfo: str
    schema: str
    options: Mapping[str, str] = field(default_factory=dict)

    def table(self, name: str) -> sql.Identifier:
        """`schema.name`, quoted as one identifier for composed statements."""
        return sql.Identifier(self.schema, name)


def parse_store_url(url: str, own: Collection[str] = ()) -> StoreURL:
    """Take `?schema=NAME` (and the parameters named in `own`) out of a postgresql:// URL.

    The schema is folded to lower case, as PostgreSQL folds an unquoted name, so `?schema=Ops`
    and a `SET search_path TO Ops` typed in psql mean the same schema. A parameter given twice
    is refused rather than guessed at. Raises `StoreURLError`."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or (not parts.netloc and not parts.path):
        raise StoreURLError(f"store {redact(url)}: not a postgresql://HOST/DATABASE URL")
    taken: dict[str, str] = {}
    kept: list[str] = []
    for pair in parts.query.split("&") if parts.query else []:
        key, _, value = pair.partition("=")
        key = unquote(key)
        if key != "schema" and key not in own:
            kept.append(pair)  # as written: libpq decodes it
            continue
        if key in taken:
            raise StoreURLError(f"store {redact(url)}: `{key}` is given more than once")
        taken[key] = unquote(value)
    schema = taken.pop("schema", DEFAULT_SCHEMA)
    if not _IDENTIFIER.fullmatch(schema) or schema.lower().startswith("pg_"):
        raise StoreURLError(
            f"store {redact(url)}: schema {schema!r} must be a plain identifier: ASCII letters, "
            "digits and _, not starting with a digit, at most 63 characters, not starting "
            "with pg_"
        )
    conninfo = urlunsplit(parts._replace(query="&".join(kept)))
    return StoreURL(conninfo, schema.lower(), taken)


def redact(url: str) -> str:
    """`url` without its password: what error messages and logs may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def connect(
    conninfo: str,
    *,
    autocommit: bool,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    statement_timeout: float | None = None,
    dead_peer_after: float | None = None,
) -> Connection:
    """A connection to the store's database, opened within `connect_timeout` seconds (libpq
    counts whole seconds, at least 2).

    `autocommit` is the caller's explicit choice: True for single statements and explicit
    `conn.transaction()` blocks, False for a connection that is always inside a transaction.
    `statement_timeout` makes the server cancel a statement that runs (or waits for a lock)
    longer. `dead_peer_after` makes the kernel give up on a connection whose peer stopped
    answering (TCP keepalives and TCP_USER_TIMEOUT) after about that many seconds, instead of
    the minutes its defaults allow: a lease holder must learn quickly that it cannot renew."""
    settings: dict[str, Any] = {
        "connect_timeout": max(2, round(connect_timeout)),
        "application_name": APPLICATION_NAME,
    }
    if statement_timeout is not None:
        settings["options"] = f"-c statement_timeout={max(1, round(statement_timeout * 1000))}"
    if dead_peer_after is not None:
        probe = max(1, round(dead_peer_after / 3))
        settings |= {
            "keepalives": 1,
            "keepalives_idle": probe,
            "keepalives_interval": probe,
            "keepalives_count": 2,
            "tcp_user_timeout": max(1000, round(dead_peer_after * 1000)),
        }
    try:
        return psycopg.connect(conninfo, autocommit=autocommit, **settings)
    except psycopg.OperationalError as error:
        raise DatabaseUnavailable(f"cannot connect to {redact(conninfo)}: {error}") from error


def ensure_schema(conn: Connection, schema: str, statements: Iterable[sql.Composed]) -> None:
    """Run `CREATE … IF NOT EXISTS` statements for `schema` in one transaction.

    Two processes creating the same table at once can both pass the IF NOT EXISTS check and
    one then fails on a catalog unique index, so creation is serialised by an advisory lock
    per schema (held until the transaction ends)."""
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"onduty-schema:{schema}",)
        )
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for statement in statements:
            conn.execute(statement)


class LazyConnection:
    """One autocommit connection (single statements, or explicit `conn.transaction()` blocks),
    opened on first use and opened again after it broke. With `schema` (the statements that
    create a record's tables), they are run once, on the first use that may create them.

    One thread uses it at a time: its owner serialises, or asks for `shared` (a lock)."""

    def __init__(
        self,
        url: StoreURL,
        *,
        schema: Iterable[sql.Composed] | None = None,
        shared: bool = False,
        **connect_options: Any,
    ) -> None:
        self.url = url
        self._options = connect_options
        self._conn: Connection | None = None
        self._schema = schema
        self._prepared = schema is None
        self._lock: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if shared else contextlib.nullcontext()
        )

    def connection(self) -> Connection:
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self.discard()
        if self._conn is None:
            self._conn = connect(self.url.conninfo, autocommit=True, **self._options)
        return self._conn

    @contextmanager
    def using(self, *, create: bool = True) -> Iterator[Connection]:
        """The connection (its tables made first, unless `create` is false); a connection
        failure inside the block drops it and is raised as `DatabaseUnavailable`."""
        with self._lock:
            conn = self.connection()
            try:
                if create and not self._prepared:
                    assert self._schema is not None
                    ensure_schema(conn, self.url.schema, self._schema)
                    self._prepared = True
                yield conn
            except psycopg.OperationalError as error:
                self.discard()
                raise DatabaseUnavailable(f"{redact(self.url.conninfo)}: {error}") from error

    def discard(self) -> None:
        """Drop the connection (after an error); the next use opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:  # not while another thread is using it
            self.discard()
