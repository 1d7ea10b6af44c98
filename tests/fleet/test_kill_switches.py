"""The fleet-wide kill-switch record on the real PostgreSQL server, and what a manager records in
a partition to bring its core to it."""

from __future__ import annotations

from onduty.cells.kill_switch_watch import STREAM, changes_for
from onduty.events import KillSwitchCleared, KillSwitchSet
from onduty.fleet import StoreURL
from onduty.fleet.killswitches import FleetKillSwitches
from onduty.state import KillSwitch, kill_switch_key


def test_every_node_reads_the_same_switches_with_who_set_them_and_why(store: StoreURL) -> None:
    with FleetKillSwitches(store) as here, FleetKillSwitches(store) as there:
        assert here.version() == 0 and here.record().listing() == []
        first = here.set("runbook", "restart", "makes it worse", "alice")
        here.set("service", "search", "", "bob")
        assert there.version() == here.version() > first.version
        assert [
            (s["kind"], s["name"], s["set_by"], s["reason"]) for s in there.record().listing()
        ] == [
            ("runbook", "restart", "alice", "makes it worse"),
            ("service", "search", "bob", ""),
        ]
        cleared = there.clear("runbook", "restart", "carol")
        assert cleared is not None and cleared.actor == "carol" and not cleared.active
        assert there.clear("runbook", "restart", "carol") is None  # not set any more
        assert here.clear("actuator", "process", "carol") is None  # never set
        assert [s["name"] for s in here.record().listing()] == ["search"]
        assert here.record().version == here.version() == cleared.version


def test_a_partition_is_brought_to_the_record_by_the_difference_only(store: StoreURL) -> None:
    with FleetKillSwitches(store) as record:
        record.set("runbook", "restart", "makes it worse", "alice")
        record.set("service", "search", "migration", "bob")
        record.set("actuator", "process", "", "bob")
        record.clear("actuator", "process", "carol")
        now = record.record()
    held = {
        kill_switch_key("service", "search"): KillSwitch("service", "search", "migration", "bob"),
        kill_switch_key("actuator", "process"): KillSwitch("actuator", "process", "", "bob"),
    }
    changes = changes_for(now, held)
    assert [(type(c.body), c.body.name, c.actor, c.stream) for c in changes] == [
        (KillSwitchSet, "restart", "alice", STREAM),
        (KillSwitchCleared, "process", "carol", STREAM),
    ]
    assert isinstance(changes[0].body, KillSwitchSet)
    assert changes[0].body.reason == "makes it worse"
    brought = {
        kill_switch_key("runbook", "restart"): KillSwitch(
            "runbook", "restart", "makes it worse", "alice"
        ),
        kill_switch_key("service", "search"): held[kill_switch_key("service", "search")],
    }
    assert changes_for(now, brought) == []  # nothing to record twice
    reworded = {
        **brought,
        kill_switch_key("service", "search"): KillSwitch("service", "search", "x", "bob"),
    }
    assert [c.body.name for c in changes_for(now, reworded)] == ["search"]
