"""The store URL shared by every PostgreSQL client of onduty, and the connect helper."""

from __future__ import annotations

import pytest

from onduty.fleet import DatabaseUnavailable, StoreURLError, connect, parse_store_url, redact
from tests.fleet.conftest import SERVER


def test_the_schema_comes_out_of_the_url_and_the_rest_goes_to_libpq() -> None:
    url = parse_store_url("postgresql://u:pw@db:5433/ops?sslmode=require&schema=Fleet_1")
    assert url.conninfo == "postgresql://u:pw@db:5433/ops?sslmode=require"
    assert url.schema == "fleet_1"  # folded, as PostgreSQL folds an unquoted name
    assert url.options == {}


def test_without_a_schema_the_default_one_is_used() -> None:
    url = parse_store_url("postgres://db/ops")
    assert (url.conninfo, url.schema) == ("postgres://db/ops", "onduty")


def test_a_caller_takes_its_own_parameters_out_too() -> None:
    url = parse_store_url(
        "postgresql://db/ops?partition=3&schema=s&application_name=x", {"partition"}
    )
    assert url.conninfo == "postgresql://db/ops?application_name=x"
    assert (url.schema, url.options) == ("s", {"partition": "3"})


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("postgresql://db/ops?schema=1abc", "schema '1abc' must be a plain identifier"),
        ("postgresql://db/ops?schema=a-b", "schema 'a-b' must be a plain identifier"),
        ("postgresql://db/ops?schema=", "schema '' must be a plain identifier"),
        ("postgresql://db/ops?schema=" + "a" * 64, "at most 63 characters"),
        ("postgresql://db/ops?schema=pg_catalog", "not starting with pg_"),
        ("postgresql://db/ops?schema=a&schema=b", "`schema` is given more than once"),
        ("mysql://db/ops", "not a postgresql://HOST/DATABASE URL"),
        ("postgresql://", "not a postgresql://HOST/DATABASE URL"),
    ],
)
def test_a_bad_url_is_refused_naming_why(url: str, complaint: str) -> None:
    with pytest.raises(StoreURLError, match=complaint):
        parse_store_url(url)


def test_errors_never_show_the_password() -> None:
    assert redact("postgresql://u:secret@db:5432/ops") == "postgresql://u:***@db:5432/ops"
    with pytest.raises(StoreURLError) as caught:
        parse_store_url("postgresql://u:secret@db/ops?schema=1")
    assert "secret" not in str(caught.value)


def test_a_connection_says_who_it_is_and_carries_the_timeouts() -> None:
    with connect(SERVER, autocommit=True, statement_timeout=1.5, dead_peer_after=3) as conn:
        assert conn.autocommit
        row = conn.execute(
            "SELECT current_setting('application_name'), current_setting('statement_timeout')"
        ).fetchone()
        assert row == ("onduty", "1500ms")


def test_a_server_that_does_not_answer_is_reported_within_the_connect_timeout() -> None:
    with pytest.raises(DatabaseUnavailable, match="cannot connect to postgresql://postgres@127"):
        connect("postgresql://postgres@127.0.0.1:1/test", autocommit=True, connect_timeout=2)
