"""Following the fleet's kill switches: every node polls the fleet-wide record
(`onduty.fleet.killswitches`), and a manager records each change in every partition it runs as
a `KillSwitchSet` / `KillSwitchCleared` input, with the actor and reason of the change. A
partition it takes over is brought to the record after its log is folded and before its core
takes any input, so a partition that moved keeps the switches it had and learns the ones set
while nobody ran it.

Bringing a partition to the record compares the record with the switches its core holds and
records only the difference; one node does it for one partition at a time, reading the record
afresh each time, so a slower reading can never undo a newer change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from onduty.events import KillSwitchCleared, KillSwitchSet
from onduty.fleet.killswitches import EMPTY, FleetKillSwitches, SwitchRecord
from onduty.log.pg import DatabaseUnavailable
from onduty.runtime import Input, Runtime
from onduty.state import KillSwitch, kill_switch_key

logger = logging.getLogger("onduty.cells")

STREAM = "kill-switches"
"""The stream of every kill-switch event, one process's or a fleet's."""
POLL_S = 0.25
"""How often a node reads the record's version (one indexed row)."""
RESYNC_S = 5.0
"""How often every partition run here is compared with the record even when it did not move."""


def changes_for(record: SwitchRecord, held: Mapping[str, KillSwitch]) -> list[Input]:
    """The inputs that bring a core holding the switches `held` (`State.kill_switches`) to
    `record`: a switch set (or set again with another reason or by someone else) that it lacks,
    a switch cleared that it still holds. A switch the record never had is left alone."""
    inputs: list[Input] = []
    for change in sorted(record.latest, key=lambda c: c.version):
        have = held.get(kill_switch_key(change.kind, change.name))
        if change.active:
            if have is None or (have.reason, have.set_by) != (change.reason, change.actor):
                body = KillSwitchSet.model_validate(
                    {"kind": change.kind, "name": change.name, "reason": change.reason}
                )
                inputs.append(Input(body, stream=STREAM, actor=change.actor))
        elif have is not None:
            cleared = KillSwitchCleared.model_validate({"kind": change.kind, "name": change.name})
            inputs.append(Input(cleared, stream=STREAM, actor=change.actor))
    return inputs


class KillSwitchWatch:
    def __init__(
        self,
        switches: FleetKillSwitches,
        runtimes: Callable[[], list[Runtime]],
        *,
        poll: float = POLL_S,
    ) -> None:
        self._switches, self._runtimes, self._poll = switches, runtimes, poll
        self._lock = threading.Lock()  # one partition brought to the record at a time
        self._known = EMPTY
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="onduty-kill-switches", daemon=True)

    @property
    def switches(self) -> FleetKillSwitches:
        return self._switches

    @property
    def known(self) -> SwitchRecord:
        """The record as last read (for the console's badge, which must not wait on the
        database)."""
        return self._known

    def read(self) -> SwitchRecord:
        """The record now; raises `DatabaseUnavailable`."""
        record = self._switches.record()
        self._known = record
        return record

    def bring(self, runtime: Runtime) -> int:
        """Record in `runtime`'s partition the changes it lacks; how many. Call it on a core
        just folded, before it takes any input."""
        with self._lock:
            return self._bring(runtime, self.read())

    def _bring(self, runtime: Runtime, record: SwitchRecord) -> int:
        inputs = changes_for(record, dict(runtime.manager.state.kill_switches))
        if inputs:
            runtime.submit_many(inputs)
        return len(inputs)

    def sync(self) -> bool:
        """Bring every partition run here to the record; whether all of them are."""
        with self._lock:
            record = self.read()
            done = True
            for runtime in self._runtimes():
                try:
                    recorded = self._bring(runtime, record)
                except Exception as error:  # its lease lost, its log refused: the next owner's
                    logger.warning("kill switches not recorded in a partition: %s", error)
                    done = False
                    continue
                if recorded:
                    logger.info(
                        "kill switches: %s changes recorded in a partition (record version %s)",
                        recorded,
                        record.version,
                    )
        return done

    def wake(self) -> None:
        """Look at the record now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        synced, at = -1, 0.0
        while not self._stop.is_set():
            self._wake.wait(self._poll)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                version = self._switches.version()
                if version != synced or time.monotonic() - at > RESYNC_S:
                    at = time.monotonic()
                    if self.sync():
                        synced = version
            except DatabaseUnavailable as error:
                logger.warning("kill switches not checked: %s", error)
            except Exception:
                logger.exception("kill switch check failed")

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def close(self) -> None:
        self.stop()
        self._switches.close()
