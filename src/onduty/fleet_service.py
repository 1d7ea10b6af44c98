"""`onduty serve` as one node of a fleet: on a PostgreSQL store and a NATS JetStream bus.

Every node serves the API and the console. Its read models follow every partition of the store,
whichever manager wrote them; what it is sent goes to the bus for the partitions it belongs to
(`BusGateway`) and is accepted once the bus stored it. A node with the `manager` role also
holds its fair share of the partitions through leases and runs a cell for each (`ManagerNode`):
a manager that dies loses its leases after `fleet.lease_ttl`, and the others take its
partitions over, fold their logs and carry on from the signals the bus still holds for them.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Any

from onduty.act import ActuatorRegistry
from onduty.act.plugins import build_registry
from onduty.bus import Bus, BusError, BusSettings, open_bus
from onduty.cells import read_snapshots
from onduty.cells.cell import Record
from onduty.cells.follower import Follower
from onduty.cells.gateway import BusGateway
from onduty.cells.kill_switch_watch import STREAM as KILL_SWITCH_STREAM
from onduty.cells.kill_switch_watch import KillSwitchWatch
from onduty.cells.node import CellSettings, ManagerNode
from onduty.cells.policy_watch import PolicyWatch
from onduty.cells.routing import Router
from onduty.cells.runner import LoopThread
from onduty.commands import Notify
from onduty.config import Config
from onduty.counting import SharedCounts
from onduty.escalate import Deliverer, parse_channels
from onduty.events import (
    Acknowledged,
    ApprovalDenied,
    ApprovalGranted,
    Event,
    Payload,
    PolicyActivated,
)
from onduty.fleet.killswitches import FleetKillSwitches, SwitchChange
from onduty.fleet.leases import Leases
from onduty.fleet.policies import Bundle, PolicyBundles
from onduty.fleet.quota import Quota
from onduty.fleet.status import FleetStatus, StatusReader
from onduty.fleet_checkpointer import FleetCheckpointer, open_fleet_checkpointer
from onduty.log import EventLog, StoreError
from onduty.log.checkpoints import CheckpointError
from onduty.log.fleet_view import FleetView, place_of
from onduty.log.pg import DatabaseUnavailable, StoreURLError
from onduty.runtime import Input, RecoveryReport, Runtime, settle_heap
from onduty.service import Service, StartupError

logger = logging.getLogger("onduty")

ROLES = ("ingest", "manager")
KILL_SWITCH_WAIT_S = 10.0
"""How long setting or clearing a kill switch waits, beyond a lease's time to live, for every
partition's log to hold it before answering that some do not yet."""


def default_node_name() -> str:
    """A name no other running node has: host, process and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class FleetService(Service):
    is_fleet = True

    def __init__(
        self,
        config: Config,
        store: str,
        *,
        bus: str,
        roles: tuple[str, ...] = ROLES,
        region: str | None = None,
        name: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(config, store, **options)
        unknown = [role for role in roles if role not in ROLES]
        if unknown or not roles:
            raise StartupError(
                f"--role: {', '.join(unknown) or 'none'}: use ingest, manager or all"
            )
        self.bus_url, self.roles = bus, roles
        self.region = region or config.fleet.region
        self.name = name or default_node_name()
        self.node: ManagerNode | None = None
        self._runner: LoopThread | None = None
        self._bus: Bus | None = None
        self._view: FleetView | None = None
        self._follower: Follower | None = None
        self._actuator_registry: ActuatorRegistry | None = None
        self._quota: Quota | None = None
        self._status: StatusReader | None = None
        self._policy: PolicyWatch | None = None
        self.fleet_checkpointer: FleetCheckpointer | None = None
        self._saver: read_snapshots.Saver | None = None
        self._since_saved = 0
        self._counts: SharedCounts | None = None
        self._kill_switches: KillSwitchWatch | None = None

    # ------------------------------------------------------------------ start-up

    def prepare(self) -> None:
        if self._view is not None:
            return
        problems = self.secret_problems()
        if problems:
            raise StartupError(problems[0])
        self._prepare_similar()
        fleet = self.config.fleet
        try:
            view = FleetView(self.store)
        except StoreError as error:
            raise StartupError(str(error)) from None
        self._view, self.log = view, view
        try:
            self._start_tracing()
            self._prepare_rest()
        except BaseException:
            self._close_all()
            raise
        logger.info(
            "fleet node %s (%s) in region %s: %s partitions, bus %s",
            self.name,
            ",".join(self.roles),
            self.region,
            fleet.partitions,
            self.bus_url,
        )

    def _prepare_rest(self) -> None:
        fleet, view = self.config.fleet, self._view
        assert view is not None
        try:
            self._actuator_registry = self._actuators or build_registry(self.config.actuators)
        except ValueError as error:
            raise StartupError(f"actuators: {error}") from None
        self._runner = LoopThread()
        settings = BusSettings(
            partitions=fleet.partitions,
            publish_window=fleet.publish_window,
            stream=fleet.stream,
            prefix=fleet.subjects,
            consumer_prefix=fleet.stream.lower(),
        )
        try:
            self._bus = self._runner.call(open_bus(self.bus_url, settings), timeout=30)
        except (BusError, ValueError) as error:
            raise StartupError(f"bus {self.bus_url}: {error}") from None
        router = Router(fleet.partitions, lambda: self.config.correlation.group_by, self._locate)
        self.gateway = BusGateway(self._bus, self._runner, router, self.region)
        try:  # any node may sign: the heads are read from the store
            self.fleet_checkpointer = open_fleet_checkpointer(
                self.config.checkpoints,
                self.store,
                signer=self.name,
                registry=self.metrics.registry,
            )
        except (CheckpointError, StoreError) as error:
            raise StartupError(f"checkpoints: {error}") from None
        restored = read_snapshots.restore(view, self.read)
        self._saver = read_snapshots.Saver(view)
        self._follower = Follower(view, self._on_followed, cursors=restored, fed=self._followed)
        self._status = StatusReader(self.store, fleet.partitions, fleet.lease_ttl.total_seconds())
        try:
            fed = self._follower.catch_up()  # what users see is ready before the API listens
        except Exception as error:
            raise StartupError(f"cannot read the store {view.url}: {error}") from None
        self.recovery = RecoveryReport(
            head_seq=view.head()[0], folded=fed, snapshot_seq=sum(s for s, _ in restored.values())
        )
        if fed >= read_snapshots.EVERY:  # the next start need not read them again
            self._saver.save_soon(self.read.state(), dict(self._follower.cursors))
        if fleet.central is not None:
            try:
                self._policy = PolicyWatch(
                    PolicyBundles(fleet.central), lambda: self.config, self._adopt
                )
                self._policy.check()  # the central policy in force before serving
            except (StoreURLError, DatabaseUnavailable) as error:
                raise StartupError(f"fleet.central: {error}") from None
        try:
            self._kill_switches = KillSwitchWatch(
                FleetKillSwitches(self.store), self._running_runtimes
            )
            self._kill_switches.read()  # the console shows the switches from the first page
        except (StoreURLError, DatabaseUnavailable) as error:
            raise StartupError(f"kill switches: {error}") from None
        if "manager" in self.roles:
            self._quota = Quota(fleet.central or self.store, self.name)
            self._counts = SharedCounts(self._quota)
            try:
                leases = Leases(
                    self.store,
                    self.name,
                    ttl=fleet.lease_ttl.total_seconds(),
                    region=self.region,
                    role=f"manager-{self.region}",
                )
            except (StoreURLError, ValueError) as error:
                raise StartupError(f"fleet: {error}") from None
            self.node = ManagerNode(
                self.store,
                self.region,
                fleet.partitions,
                leases,
                self._bus,
                self._runner,
                self._open_runtime,
                cells=CellSettings(max_in_flight=fleet.max_in_flight, max_pending=self.max_pending),
                on_change=self._cells_changed,
            )

    def _open_runtime(self, log: EventLog, record: Record) -> tuple[Runtime, RecoveryReport]:
        assert self._actuator_registry is not None
        deliverer = None
        if self.config.channels:
            deliverer = Deliverer(
                parse_channels(self.config.channels),
                record,
                spawn=self._workers,
                amend=self.with_similar,  # as far as this node's read models have followed
            )

        def notify(command: Notify) -> None:
            if deliverer is not None:
                deliverer(command)
            else:
                self._notify_humans(command)

        runtime, report = Runtime.open(
            log,
            self.clock,
            self._actuator_registry,
            config=self.config,
            notifier=notify,
            snapshot_every=self.config.snapshot_every,
            spawn=self._workers,
            attempts=3,
            background_snapshots=True,
            counts=self._counts,
            on_append=self.metrics.appended,
            on_event=self.tracing.projector(log),  # each partition's incidents, where they run
        )
        if self._kill_switches is not None:  # before the partition's core takes any input
            self._kill_switches.bring(runtime)
        return runtime, report

    def _running_runtimes(self) -> list[Runtime]:
        cells = self.node.running_cells() if self.node is not None else []
        return [cell.runtime for cell in cells if cell.runtime is not None]

    def start(self) -> None:
        self.prepare()
        assert self._follower is not None
        settle_heap()
        self._follower.start()
        if self.node is not None:
            self.node.start()
        if self._policy is not None:
            self._policy.start()
        if self._kill_switches is not None:
            self._kill_switches.start()
        if self.fleet_checkpointer is not None:
            self.fleet_checkpointer.start()
        logger.info(
            "ready: %s events followed in %s",
            self.recovery.folded if self.recovery else 0,
            self.store,
        )

    @property
    def ready(self) -> bool:
        """Ready once the read models have caught up with the store: ingest depends on the bus
        alone (a store that goes away later leaves the console behind, not ingest)."""
        follower = self._follower
        return follower is not None and follower.caught_up.is_set()

    @property
    def bus(self) -> Bus | None:
        """The bus this node publishes to and its cells consume from (None before start-up)."""
        return self._bus

    def _adopt(self, config: Config, bundle: Bundle) -> None:
        """The central bundle becomes the policy here: the cells this node runs each record
        it; cells started later fold with it; ingest routes by its grouping."""
        self.config = config
        body = PolicyActivated(
            version=config.version,
            config=config.policy_document(),
            source=f"central bundle {bundle.version} ({bundle.source})",
            role="active",
        )
        cells = self.node.running_cells() if self.node is not None else []
        for cell in cells:
            cell.record(body, "policy")
        logger.info(
            "central policy %s adopted (published by %s); recorded in %s partitions",
            bundle.version,
            bundle.published_by,
            len(cells),
        )

    def fleet_status(self) -> FleetStatus | None:
        """Read now from the store; raises `DatabaseUnavailable` when it cannot be reached."""
        if self._status is None:
            return None
        return self._status.read()

    def _cells_changed(self) -> None:
        node = self.node
        if node is not None:  # counted at each scrape: a cell that stopped by itself is gone
            self.metrics.partitions_held.set_function(lambda: len(node.held()))

    # ------------------------------------------------------------------ what users send

    def _locate(self, body: Payload) -> int | None:
        """The partition of the incident an acknowledgement or an approval answer names."""
        incidents = self.read.incidents
        incident_id: str | None = None
        if isinstance(body, Acknowledged):
            incident_id = body.incident_id
        elif isinstance(body, ApprovalGranted | ApprovalDenied):
            pending = incidents.approvals.get(body.approval_id)
            incident_id = pending.incident_id if pending is not None else None
        view = incidents.incidents.get(incident_id or "")
        if view is None or not view.decisions.first_seq:
            return None
        return place_of(view.decisions.first_seq)[0]

    def _submit_policy(self, item: Input) -> tuple[int, dict[str, Any]] | None:
        """Publish a policy change to every partition (each cell records it), waiting until
        the bus stored it; None once it did, else the refusal."""
        runner = self._runner
        if runner is None:
            return 503, {"error": "onduty is starting"}
        refused = runner.call(self.gateway.submit([item]), 30)
        if refused is not None:
            return refused.status, {"error": refused.reason}
        return None

    def kill_switches(self, *, fresh: bool = False) -> list[dict[str, str]]:
        """The switches in the fleet-wide record: the same on every node. `fresh` reads it now
        (raises `DatabaseUnavailable`); otherwise as last polled (the console's badge)."""
        watch = self._kill_switches
        if watch is None:
            return []
        return (watch.read() if fresh else watch.known).listing()

    def change_kill_switch(
        self, kind: str, name: str, *, active: bool, reason: str, actor: str
    ) -> tuple[int, dict[str, Any]]:
        """Set (`active`) or clear a switch fleet-wide, and answer once every partition's log
        holds the change: from then on no partition allows an action under a switch set, and
        a partition taken over later folds it from its log.

        A partition that has not recorded it within `KILL_SWITCH_WAIT_S` plus a lease's time to
        live (no manager runs it, or its manager is cut off) makes the answer a 504 naming it:
        the change stays in the record, and whoever runs the partition next records it before
        its core takes any input."""
        watch = self._kill_switches
        if watch is None:
            return 503, {"error": "onduty is starting"}
        switches = watch.switches
        if active:
            change: SwitchChange | None = switches.set(kind, name, reason, actor)
        else:
            change = switches.clear(kind, name, actor)
            if change is None:
                return 404, {"error": f"no active kill switch on {kind} {name}", "field": "name"}
        assert change is not None
        watch.wake()  # this node's partitions at once; the others' at their next poll
        fleet = self.config.fleet
        pending = self._await_kill_switch(
            change, KILL_SWITCH_WAIT_S + fleet.lease_ttl.total_seconds()
        )
        what = "set" if active else "cleared"
        logger.info(
            "kill switch on %s %s %s by %s (record version %s)",
            kind,
            name,
            what,
            actor,
            change.version,
        )
        if pending:
            listed = ", ".join(map(str, pending))
            return 504, {
                "error": (
                    f"the kill switch on {kind} {name} is {what} in the fleet's record, but "
                    f"partitions {listed} have not recorded it yet (no manager runs them now, or "
                    "theirs is cut off); each records it before it takes any input once a "
                    "manager runs it"
                ),
                "field": "name",
                "pending_partitions": pending,
            }
        body: dict[str, Any] = {"kind": kind, "name": name, "partitions": fleet.partitions}
        if active:
            body |= {"reason": reason, "set_by": actor}
        else:
            body |= {"cleared": True, "cleared_by": actor}
        return 202, body

    def _await_kill_switch(self, change: SwitchChange, timeout: float) -> list[int]:
        """Wait until every partition's log holds `change` (its latest event on the switch
        sets it, or, for a clearing, does not); the partitions that still do not."""
        view = self._view
        partitions = range(self.config.fleet.partitions)
        if view is None:
            return list(partitions)
        deadline = time.monotonic() + timeout
        while True:
            holds: dict[int, bool] = {}
            for event in view.read_stream(KILL_SWITCH_STREAM):
                data = event.data
                if (data.get("kind"), data.get("name")) == (change.kind, change.name):
                    holds[place_of(event.seq)[0]] = event.type == "KillSwitchSet"
            pending = [p for p in partitions if holds.get(p, False) != change.active]
            if not pending or time.monotonic() >= deadline:
                return pending
            time.sleep(0.05)

    def _record_outcome(self, body: Payload, stream: str) -> None:
        """Outcomes are recorded by the cell whose action it was; nothing reaches here."""
        logger.warning("an outcome outside any partition was not recorded: %s", type(body).__name__)

    # ------------------------------------------------------------------ what users see

    def _followed(self, cursors: dict[int, tuple[int, str]], count: int) -> None:
        """After each page the follower fed: a snapshot every `read_snapshots.EVERY` events."""
        self._since_saved += count
        if self._since_saved >= read_snapshots.EVERY and self._saver is not None:
            self._since_saved = 0
            self._saver.save_soon(self.read.state(), dict(cursors))

    def _on_followed(self, event: Event) -> None:
        self.read.feed(event)
        self.metrics.observe(event)
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:
                logger.exception("an event subscriber failed on %s %s", event.type, event.id)

    # ------------------------------------------------------------------ stopping

    def stop(self) -> None:
        if self._kill_switches is not None:
            self._kill_switches.stop()  # records nothing in cells that are stopping
        if self._counts is not None:
            self._counts.stop()  # a count waiting for the database gives up
        if self.node is not None:
            try:
                self.node.stop()
            except DatabaseUnavailable as error:
                logger.warning("leases not released: %s", error)
        self._workers.close(wait=True)
        if self.fleet_checkpointer is not None:
            self.fleet_checkpointer.stop()  # signs what is new since the last one
            self.fleet_checkpointer = None
        self._close_all()
        logger.info("stopped")

    def _save_read_models(self) -> None:
        """At a clean stop: the read models as of the follower's cursors, for the next start."""
        if self._follower is None or self._view is None or self._saver is None:
            return
        self._saver.wait()
        try:
            read_snapshots.save(self._view, self.read.state(), dict(self._follower.cursors))
        except Exception as error:
            logger.warning("read-model snapshot not saved at stop: %s", error)

    def _close_all(self) -> None:
        if self.fleet_checkpointer is not None:  # start-up failed part-way: sign nothing
            self.fleet_checkpointer.close()
            self.fleet_checkpointer = None
        if self._policy is not None:
            self._policy.stop()
            self._policy = None
        if self._follower is not None:
            self._follower.stop()
            self._save_read_models()
        if self._bus is not None and self._runner is not None:
            try:
                self._runner.call(self._bus.close(), timeout=10)
            except Exception as error:
                logger.warning("bus not closed cleanly: %s", error)
            self._bus = None
        if self._runner is not None:
            self._runner.stop()
            self._runner = None
        if self._view is not None:
            self._view.close()
            self._view, self.log = None, None
        if self._quota is not None:
            self._quota.close()
            self._quota = None
        if self._status is not None:
            self._status.close()
            self._status = None
        if self._kill_switches is not None:
            self._kill_switches.close()
            self._kill_switches = None
        self.tracing.shutdown()  # the spans still buffered are exported
