"""Partitions and subjects: stable everywhere, and refusing what a subject cannot carry."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from onduty.bus import BusError, BusSettings, group_key_of, open_bus, partition_of, subject_for
from onduty.bus.partitions import parse_subject


def test_the_partition_of_a_group_key_is_pinned() -> None:
    # Fixed values: were the hash to change (or depend on the process, as hash() does), one
    # incident's signals would go to two managers across an upgrade.
    assert partition_of({"alertname": "HighLatency", "service": "api"}, 16) == 6
    assert partition_of({"service": "db"}, 16) == 8
    assert partition_of({}, 16) == 4
    assert partition_of({"service": "api"}, 1024) == 360


def test_the_partition_ignores_label_order_but_not_label_boundaries() -> None:
    many = 1 << 30
    assert partition_of({"b": "2", "a": "1"}, many) == partition_of({"a": "1", "b": "2"}, many)
    assert partition_of({"a": "bc"}, many) != partition_of({"ab": "c"}, many)


def test_group_keys_spread_over_the_partitions() -> None:
    counts = Counter(partition_of({"service": f"svc-{i}"}, 16) for i in range(16_000))
    assert set(counts) == set(range(16))
    assert max(counts.values()) < 1.2 * min(counts.values())


def test_the_group_key_is_the_cores() -> None:
    labels = {"alertname": "DiskFull", "service": "db", "instance": "db-1"}
    assert group_key_of(labels, ["service", "env"]) == {"service": "db", "env": ""}
    assert group_key_of(labels, []) == {}


def test_a_partition_count_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="partitions must be at least 1"):
        partition_of({"service": "api"}, 0)


def test_subjects_name_region_and_partition() -> None:
    assert subject_for("onduty.signals", "eu-west_1", 7) == "onduty.signals.eu-west_1.7"
    assert parse_subject("onduty.signals", "onduty.signals.eu-west_1.7") == ("eu-west_1", 7)
    with pytest.raises(ValueError, match=r"not <onduty\.signals>"):
        parse_subject("onduty.signals", "other.eu.7")


@pytest.mark.parametrize("region", ["eu.west", "eu west", "*", ">", "", "eu\n"])
def test_a_region_that_is_not_one_subject_token_is_refused(region: str) -> None:
    with pytest.raises(ValueError, match=r"^region .*NATS subject"):
        subject_for("onduty.signals", region, 0)


def test_a_bad_prefix_or_partition_is_refused() -> None:
    with pytest.raises(ValueError, match=r"subject prefix 'onduty\.\.signals'"):
        subject_for("onduty..signals", "eu", 0)
    with pytest.raises(ValueError, match=r"subject prefix 'onduty\.>'"):
        BusSettings(prefix="onduty.>")
    with pytest.raises(ValueError, match="partition -1"):
        subject_for("onduty.signals", "eu", -1)


def test_settings_name_the_field_they_refuse() -> None:
    with pytest.raises(ValueError, match="publish_window must be at least 1"):
        BusSettings(publish_window=0)
    with pytest.raises(ValueError, match="ack_timeout must be a positive"):
        BusSettings(ack_timeout=0)
    with pytest.raises(ValueError, match=r"stream 'ONDUTY\.SIGNALS'"):
        BusSettings(stream="ONDUTY.SIGNALS")
    assert BusSettings().durable_name("eu", 3) == "onduty-eu-3"


@pytest.mark.parametrize(
    "url", ["", "memory://", "sqlite:///bus.db", "nats://", "nats://a:4222,redis://b", "127.0.0.1"]
)
def test_open_bus_names_the_url_it_cannot_open(url: str) -> None:
    with pytest.raises(BusError, match=r"use 'memory' \(one process\) or nats://HOST:PORT") as info:
        asyncio.run(open_bus(url))
    assert repr(url) in str(info.value)
