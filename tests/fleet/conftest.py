"""The fleet tests run against the real PostgreSQL server; each test gets a schema of its own,
dropped afterwards. A server that cannot be reached fails the tests, it never skips them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from psycopg import sql

from onduty.fleet import StoreURL, connect, parse_store_url

SERVER = "postgresql://postgres@127.0.0.1:5432/test"


def url_of(schema: str, server: str = SERVER) -> str:
    return f"{server}?schema={schema}"


@pytest.fixture(autouse=True)
def _server_reachable(postgres_server: None) -> None:
    """Every fleet test needs the real server."""


@pytest.fixture
def store() -> Iterator[StoreURL]:
    """A fresh schema for this test, as a parsed store URL."""
    schema = f"fleet_test_{uuid.uuid4().hex[:12]}"
    yield parse_store_url(url_of(schema))
    with connect(SERVER, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
