"""Flap detection over a sliding window, with state in the manager's snapshot shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onduty.correlate import FlapDetector

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def test_flapping_needs_threshold_changes_within_the_window() -> None:
    flaps = FlapDetector(window=15 * M, threshold=4)
    assert [flaps.record("fp", T0 + n * M) for n in range(3)] == [1, 2, 3]
    assert not flaps.is_flapping("fp", T0 + 2 * M)
    assert flaps.record("fp", T0 + 3 * M) == 4
    assert flaps.is_flapping("fp", T0 + 3 * M)
    # The window is (at - window, at]: the change at T0 leaves it at T0 + 15m.
    assert flaps.count("fp", T0 + 15 * M - timedelta(microseconds=1)) == 4
    assert flaps.count("fp", T0 + 15 * M) == 3
    assert not flaps.is_flapping("fp", T0 + 15 * M)
    # Recording trims what has left the window.
    assert flaps.record("fp", T0 + 16 * M) == 3
    assert flaps.changes["fp"] == [T0 + 2 * M, T0 + 3 * M, T0 + 16 * M]
    assert flaps.count("other", T0) == 0


def test_calm_and_last_change() -> None:
    flaps = FlapDetector(window=15 * M, threshold=2)
    flaps.record("a", T0)
    flaps.record("b", T0 + 5 * M)
    assert flaps.last_change(["a", "b", "unknown"]) == T0 + 5 * M
    assert flaps.calm_at(["a", "b"]) == T0 + 20 * M
    assert not flaps.is_calm(["a", "b"], T0 + 20 * M - timedelta(microseconds=1))
    assert flaps.is_calm(["a", "b"], T0 + 20 * M)
    assert flaps.is_calm(["unknown"], T0)
    assert flaps.last_change([]) is None and flaps.calm_at(["unknown"]) is None


def test_prune_forgets_calm_keys_without_changing_any_answer() -> None:
    flaps = FlapDetector(window=15 * M, threshold=2)
    flaps.record("old", T0)
    flaps.record("new", T0 + 10 * M)
    at = T0 + 15 * M
    before = (flaps.is_calm(["old"], at), flaps.count("old", at), flaps.is_flapping("old", at))
    assert flaps.prune(at) == ["old"]
    assert (flaps.is_calm(["old"], at), flaps.count("old", at), flaps.is_flapping("old", at)) == (
        before
    )
    assert list(flaps.changes) == ["new"]


def test_state_is_the_plain_snapshot_shape() -> None:
    changes: dict[str, list[datetime]] = {}
    flaps = FlapDetector(window=15 * M, threshold=2, changes=changes)
    flaps.record("fp", T0)
    assert changes == {"fp": [T0]}  # works on the dict it was given
    encoded = msgspec.to_builtins(changes)
    decoded = msgspec.convert(encoded, dict[str, list[datetime]], strict=False)
    assert FlapDetector(15 * M, 2, decoded).count("fp", T0) == 1


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="window"):
        FlapDetector(window=timedelta(0), threshold=2)
    with pytest.raises(ValueError, match="threshold"):
        FlapDetector(window=M, threshold=0)


@given(st.lists(st.integers(0, 120), max_size=30), st.integers(0, 150))
def test_record_count_and_prune_agree_with_a_direct_count(offsets: list[int], probe: int) -> None:
    flaps = FlapDetector(window=15 * M, threshold=3)
    times = [T0 + n * M for n in sorted(offsets)]
    for t in times:
        flaps.record("fp", t)
    at = max([T0 + probe * M, *times])
    expected = sum(1 for t in times if at - 15 * M < t <= at)
    assert flaps.count("fp", at) == expected
    flaps.prune(at)
    assert flaps.count("fp", at) == expected
    assert flaps.is_flapping("fp", at) is (expected >= 3)
