"""Verification checks run by the shell: an HTTP probe that must answer an expected status, or
a Prometheus query whose every series must hold against a threshold. A check is repeated at its
interval until it passes or the verification window closes."""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from onduty.values import parse_duration

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


def probe_once(check: dict[str, Any]) -> tuple[bool, str]:
    timeout = parse_duration(check.get("timeout", 5)).total_seconds()
    url = str(check["url"])
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as error:
        return False, f"GET {url}: {type(error).__name__}: {error}"
    expected = check.get("expect_status", [200])
    ok = response.status_code in expected
    return ok, f"GET {url} answered {response.status_code}" + (
        "" if ok else f", expected {expected}"
    )


def query_once(check: dict[str, Any]) -> tuple[bool, str]:
    from onduty.sense.pollers import PollError
    from onduty.sense.prometheus import format_series, format_value, parse_query_response

    timeout = parse_duration(check.get("timeout", 10)).total_seconds()
    base = str(check["url"]).rstrip("/")
    query, op, threshold = str(check["query"]), str(check["op"]), float(check["threshold"])
    try:
        response = httpx.get(f"{base}/api/v1/query", params={"query": query}, timeout=timeout)
        samples = parse_query_response(response.json())
    except (httpx.HTTPError, ValueError, PollError) as error:
        return False, f"Prometheus query {query!r}: {error}"
    if not samples:
        return False, f"{query} returned no series"
    failing = [s for s in samples if not _COMPARE[op](s.value, threshold)]
    if failing:
        first = failing[0]
        return False, (
            f"{format_series(first.metric)} = {format_value(first.value)}, "
            f"not {op} {format_value(threshold)}"
        )
    return True, f"{query} {op} {format_value(threshold)} holds for {len(samples)} series"


def run_check(
    check: dict[str, Any],
    deadline: datetime,
    now: Callable[[], datetime],
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, str]:
    """Repeat the check until it passes or `deadline` passes; the last result and why."""
    once = probe_once if check.get("kind") == "probe" else query_once
    interval = parse_duration(check.get("interval", 5)).total_seconds()
    while True:
        ok, detail = once(check)
        if ok:
            return True, detail
        left = (deadline - now()).total_seconds()
        if left <= 0:
            return False, detail
        sleep(min(interval, left))
