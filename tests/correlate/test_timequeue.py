"""A time queue gives out what a heap of (time, key) would, in order or not."""

from __future__ import annotations

import heapq
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from onduty.correlate.timequeue import TimeQueue

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
moments = st.integers(0, 50).map(lambda minutes: T0 + timedelta(minutes=minutes))
keys = st.sampled_from(["a", "b", "c", "d"])


@given(
    st.lists(st.tuples(moments, keys), max_size=20),
    st.lists(st.one_of(st.tuples(moments, keys), moments), max_size=60),
    st.booleans(),
)
def test_a_time_queue_takes_out_what_a_heap_does(
    start: list[tuple[datetime, str]], steps: list[tuple[datetime, str] | datetime], ordered: bool
) -> None:
    if ordered:  # as the log pushes them: times never go back
        steps = sorted(steps, key=lambda step: step[0] if isinstance(step, tuple) else step)
    queue, heap = TimeQueue(start), list(start)
    heapq.heapify(heap)
    for step in steps:
        if isinstance(step, tuple):
            queue.push(*step)
            heapq.heappush(heap, step)
        else:
            expected = []
            while heap and heap[0][0] <= step:
                expected.append(heapq.heappop(heap))
            assert sorted(queue.pop_until(step)) == sorted(expected)
        assert len(queue) == len(heap)
