"""Silences and maintenance windows: activity boundaries, expiry, pruning, snapshots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from onduty.correlate import DEFAULT_RETENTION, Matcher, Matchers, Silence, Silences

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


def silence(
    silence_id: str = "s1",
    matchers: Any = ('service="checkout"',),
    start: timedelta = timedelta(0),
    end: timedelta = H,
    **extra: Any,
) -> Silence:
    return Silence.model_validate(
        {
            "silence_id": silence_id,
            "matchers": list(matchers),
            "starts_at": T0 + start,
            "ends_at": T0 + end,
            "created_by": "alice",
            "comment": "deploying",
            **extra,
        }
    )


CHECKOUT = {"service": "checkout", "alertname": "HighLatency"}


def test_starts_at_is_inclusive_and_ends_at_exclusive() -> None:
    s = silence()
    assert not s.is_active(T0 - timedelta(microseconds=1))
    assert s.is_active(T0)
    assert s.is_active(T0 + H - timedelta(microseconds=1))
    assert not s.is_active(T0 + H)
    assert [s.state(T0 - H), s.state(T0), s.state(T0 + H)] == ["pending", "active", "expired"]
    assert s.mutes(CHECKOUT, T0)
    assert not s.mutes(CHECKOUT, T0 + H)
    assert not s.mutes({"service": "cart"}, T0)


def test_validation() -> None:
    with pytest.raises(ValidationError, match="ends_at must be after starts_at"):
        silence(end=timedelta(0))
    with pytest.raises(ValidationError, match="ends_at must be after starts_at"):
        silence(end=-H)
    with pytest.raises(ValidationError, match="at least one matcher"):
        silence(matchers=())
    with pytest.raises(ValidationError, match="expected an operator"):
        silence(matchers=("service",))
    with pytest.raises(ValidationError, match="time zone"):
        Silence(
            silence_id="s",
            matchers=Matchers([Matcher("a", "=", "b")]),
            starts_at=datetime(2026, 1, 1),
            ends_at=datetime(2026, 1, 2),
            created_by="alice",
            comment="why",
        )
    with pytest.raises(ValidationError, match="kind"):
        silence(kind="holiday")
    with pytest.raises(ValidationError, match="created_by"):
        silence(created_by="")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        silence(end_at=T0)


def test_times_are_kept_in_utc_and_matchers_serialize_as_strings() -> None:
    cet = timezone(timedelta(hours=1))
    s = silence(starts_at=datetime(2026, 1, 5, 10, 0, tzinfo=cet))
    assert s.starts_at == T0 and s.starts_at.tzinfo == UTC
    data = s.model_dump(mode="json")
    assert data["matchers"] == ['service="checkout"']
    assert data["starts_at"] == "2026-01-05T09:00:00Z"
    assert data["kind"] == "silence"


def test_api_shaped_matchers_are_accepted() -> None:
    s = silence(matchers=[{"name": "alertname", "value": "Instance.*", "isRegex": True}])
    assert s.mutes({"alertname": "InstanceDown"}, T0)


def test_muting_returns_the_first_active_matching_silence() -> None:
    silences = Silences(
        [
            silence("b-late", start=timedelta(minutes=30)),
            silence("z-wide", matchers=['alertname=~".+"'], start=-H, end=2 * H),
            silence("a-early", start=-H, end=2 * H),
            silence("m-maint", kind="maintenance", matchers=['service="cart"']),
        ]
    )
    first = silences.muting(CHECKOUT, T0)
    assert first is not None and first.silence_id == "a-early"
    maintenance = silences.muting({"service": "cart"}, T0)
    assert maintenance is not None and maintenance.kind == "maintenance"
    assert silences.muting({"service": "cart"}, T0 + H) is None
    assert silences.muting({"alertname": "X"}, T0 + H) is not None
    assert silences.muting({"service": "checkout"}, T0 + 3 * H) is None
    assert [s.silence_id for s in silences.active(T0 + timedelta(minutes=45))] == [
        "a-early",
        "z-wide",
        "m-maint",
        "b-late",
    ]
    assert [s.silence_id for s in silences] == ["a-early", "z-wide", "m-maint", "b-late"]


def test_add_replaces_a_silence_with_the_same_id() -> None:
    silences = Silences([silence("s1")])
    silences.add(silence("s1", matchers=['service="cart"']))
    assert len(silences) == 1
    assert silences.muting(CHECKOUT, T0) is None
    assert silences.muting({"service": "cart"}, T0) is not None


def test_expire_an_active_silence_ends_it_now() -> None:
    silences = Silences([silence("s1")])
    at = T0 + timedelta(minutes=10)
    ended = silences.expire("s1", at)
    assert ended is not None and ended.ends_at == at
    assert silences.get("s1") == ended
    assert silences.muting(CHECKOUT, at - timedelta(microseconds=1)) is not None
    assert silences.muting(CHECKOUT, at) is None
    # Expiring again, or later, changes nothing.
    assert silences.expire("s1", at + H) == ended
    assert silences.get("s1") == ended


def test_expire_a_pending_silence_drops_it_and_unknown_ids_are_ignored() -> None:
    silences = Silences([silence("later", start=H, end=2 * H), silence("now")])
    assert silences.expire("later", T0) is None
    assert "later" not in silences
    assert silences.expire("now", T0) is None  # expired at its very start: never muted
    assert len(silences) == 0
    assert silences.expire("nobody", T0) is None


def test_expire_keeps_the_expired_silence_valid_for_snapshots() -> None:
    silences = Silences([silence("s1")])
    silences.expire("s1", T0 + timedelta(microseconds=1))
    assert Silences.from_list(silences.to_list()) == silences


def test_prune_drops_silences_ended_more_than_the_retention_ago() -> None:
    silences = Silences(
        [
            silence("old", start=-3 * H, end=-2 * H),
            silence("recent", start=-2 * H, end=-H),
            silence("active", start=-H, end=H),
            silence("pending", start=H, end=2 * H),
        ]
    )
    assert silences.prune(T0, retention=H) == ["old"]
    assert [s.silence_id for s in silences] == ["recent", "active", "pending"]
    # Ended exactly `retention` ago: kept; a moment later: dropped.
    assert silences.prune(T0, retention=H) == []
    assert silences.prune(T0 + timedelta(microseconds=1), retention=H) == ["recent"]
    assert timedelta(hours=24) == DEFAULT_RETENTION
    assert silences.prune(T0 + H + DEFAULT_RETENTION) == []
    assert silences.prune(T0 + 2 * H + DEFAULT_RETENTION + H) == ["active", "pending"]
    assert len(silences) == 0


def test_next_change() -> None:
    silences = Silences([silence("a"), silence("b", start=timedelta(minutes=30), end=2 * H)])
    assert silences.next_change(T0 - H) == T0
    assert silences.next_change(T0) == T0 + timedelta(minutes=30)
    assert silences.next_change(T0 + timedelta(minutes=30)) == T0 + H
    assert silences.next_change(T0 + H) == T0 + 2 * H
    assert silences.next_change(T0 + 2 * H) is None


def test_snapshot_is_plain_json_and_round_trips() -> None:
    silences = Silences(
        [
            silence("b", kind="maintenance", matchers=['region="eu"', 'alertname=~"Node.*"']),
            silence("a", start=-H),
        ]
    )
    data = silences.to_list()
    assert orjson.loads(orjson.dumps(data)) == data
    assert [item["silence_id"] for item in data] == ["a", "b"]
    assert data[1]["matchers"] == ['region="eu"', 'alertname=~"Node.*"']
    restored = Silences.from_list(orjson.loads(orjson.dumps(data)))
    assert restored == silences
    assert restored.to_list() == data
    assert silences != Silences()
    assert repr(restored) == "Silences(['a', 'b'])"
