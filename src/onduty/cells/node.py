"""A manager of the fleet: holds its fair share of the partitions through leases and runs a
cell for each one it holds.

The lease keeper's callbacks only queue the change; one thread of the node starts and stops
the cells in order (folding a partition's log can take a while, and the keeper must go on
renewing meanwhile). A cell is started with a fence bound to its lease's token, so even a cell
that has not yet heard its lease was lost cannot append.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from onduty.bus import Consumers
from onduty.cells.cell import OpenRuntime, PartitionCell
from onduty.cells.runner import LoopThread
from onduty.fleet.keeper import LeaseKeeper
from onduty.fleet.leases import Lease, Leases, lease_fence
from onduty.log.postgres import PostgresEventLog

logger = logging.getLogger("onduty.cells")

HEALTH_EVERY_S = 1.0
"""How often the node looks for cells whose core stopped."""


@dataclass(frozen=True)
class CellSettings:
    max_in_flight: int = 1_000
    ack_wait: float = 30.0
    max_pending: int = 20_000


class ManagerNode:
    def __init__(
        self,
        store: str,
        region: str,
        partitions: int,
        leases: Leases,
        bus: Consumers,
        runner: LoopThread,
        open_runtime: OpenRuntime,
        *,
        cells: CellSettings | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.store, self.region, self.partitions = store, region, partitions
        self.leases, self._bus, self._runner = leases, bus, runner
        self._open_runtime = open_runtime
        self._settings = cells or CellSettings()
        self._on_change = on_change or (lambda: None)
        self.cells: dict[int, PartitionCell] = {}
        self._cells_lock = threading.Lock()
        self._changes: queue.Queue[tuple[str, int, Lease | None]] = queue.Queue()
        self.keeper = LeaseKeeper(leases, partitions, on_gained=self._gained, on_lost=self._lost)
        self._worker = threading.Thread(target=self._work, name="onduty-cells", daemon=True)
        self._stopping = False

    @property
    def owner(self) -> str:
        return self.leases.owner

    def held(self) -> list[int]:
        """The partitions whose cells run here."""
        with self._cells_lock:
            return sorted(p for p, cell in self.cells.items() if cell.running)

    def running_cells(self) -> list[PartitionCell]:
        with self._cells_lock:
            return [cell for _, cell in sorted(self.cells.items()) if cell.running]

    def start(self) -> None:
        self._worker.start()
        self.keeper.start()

    def _gained(self, partition: int, token: int) -> None:
        lease = self.keeper.holding(partition)
        self._changes.put(("gained", partition, lease))

    def _lost(self, partition: int) -> None:
        self._changes.put(("lost", partition, None))

    def _work(self) -> None:
        while True:
            try:
                change, partition, lease = self._changes.get(timeout=HEALTH_EVERY_S)
            except queue.Empty:
                self._restart_failed()
                continue
            if change == "stop":
                return
            try:
                if change == "gained" and lease is not None and not self._stopping:
                    self._start_cell(partition, lease)
                elif change == "lost":
                    self._stop_cell(partition, graceful=False)
            except Exception:
                logger.exception("partition %s: %s not handled", partition, change)
            self._on_change()

    def _restart_failed(self) -> None:
        """A cell whose core stopped (its log refused an append: the database went away) is
        started afresh while its lease holds: it folds the log again and takes the deliveries
        it never acknowledged from the bus."""
        with self._cells_lock:
            failed = [p for p, cell in self.cells.items() if cell.failed]
        for partition in failed:
            lease = self.keeper.holding(partition)
            if lease is None or self._stopping:
                continue
            logger.warning("partition %s: its core stopped; starting it again", partition)
            try:
                self._start_cell(partition, lease)
            except Exception as error:  # still unreachable: the next round tries again
                logger.warning("partition %s: not started again yet: %s", partition, error)
            self._on_change()

    def _start_cell(self, partition: int, lease: Lease) -> None:
        if self.keeper.holding(partition) != lease:
            return  # lost again before its turn came
        self._stop_cell(partition, graceful=False)  # an earlier tenure's cell, if any
        fence = lease_fence(self.leases.url, lease)
        log = PostgresEventLog(self.store, partition, fence=fence)
        cell = PartitionCell(
            partition,
            self.region,
            log,
            self._open_runtime,
            self._bus,
            self._runner,
            max_in_flight=self._settings.max_in_flight,
            ack_wait=self._settings.ack_wait,
            max_pending=self._settings.max_pending,
        )
        try:
            cell.start()
        except Exception:
            cell.stop(graceful=False)
            raise
        with self._cells_lock:
            self.cells[partition] = cell
        logger.info("%s owns partition %s (lease token %s)", self.owner, partition, lease.token)

    def _stop_cell(self, partition: int, *, graceful: bool) -> None:
        with self._cells_lock:
            cell = self.cells.pop(partition, None)
        if cell is not None:
            cell.stop(graceful=graceful)
            logger.info("%s no longer runs partition %s", self.owner, partition)

    def stop(self) -> None:
        """Stop every cell while its lease still holds (each snapshots for the next owner),
        then release the leases so that the others take over at once."""
        self._stopping = True
        with self._cells_lock:
            running = sorted(self.cells)
        for partition in running:
            self._stop_cell(partition, graceful=True)
        self.keeper.stop(release=True)
        self._changes.put(("stop", -1, None))
        self._worker.join()
        for partition in list(self.cells):  # gained while stopping
            self._stop_cell(partition, graceful=False)
