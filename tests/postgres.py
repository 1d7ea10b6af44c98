"""The PostgreSQL the tests use: the server scripts/services.sh starts, a schema per test
(dropped afterwards), and the check that it answers: a server that cannot be reached fails
the tests that need it, it never skips them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

SERVER = "postgresql://postgres@127.0.0.1:5432/test"


def store_url(schema: str, **query: object) -> str:
    extra = "".join(f"&{key}={value}" for key, value in query.items())
    return f"{SERVER}?schema={schema}{extra}"


def require_server() -> None:
    """Fail (never skip) when the server does not answer."""
    try:
        with psycopg.connect(SERVER, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL at {SERVER} is needed (scripts/services.sh starts it): {error}")


class Schemas:
    """Schemas named after test folders, dropped when the test ends."""

    def __init__(self) -> None:
        self.made: set[str] = set()

    def name(self, folder: Path) -> str:
        schema = "t_" + hashlib.sha1(str(folder).encode()).hexdigest()[:16]
        self.made.add(schema)
        return schema

    def drop(self) -> None:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            for schema in self.made:
                drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                conn.execute(drop.format(sql.Identifier(schema)))
