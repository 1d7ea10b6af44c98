"""`onduty serve`: the runtime on the wall clock, its core loop, read models and metrics."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onduty.act import ActuatorRegistry
from onduty.act.plugins import build_registry
from onduty.act.runs import RunLocks
from onduty.api.credentials import Access, AccessError
from onduty.checkpointer import Checkpointer, open_checkpointer, store_file
from onduty.commands import Notify
from onduty.config import Config, ConfigError
from onduty.configfile import load_config
from onduty.consulting import Consultant, NoAdvisor, consultant_for
from onduty.escalate import Deliverer, parse_channels
from onduty.events import Event, ModelActivated, Payload, PolicyActivated
from onduty.events.vocabulary import ModelRole
from onduty.gateway import Gateway, LoopGateway
from onduty.health import Health, for_service
from onduty.learn.model import ModelProblem, model_activation
from onduty.log import EventLog, StoreError, open_log
from onduty.log.checkpoints import CheckpointError
from onduty.loop import CoreLoop, record
from onduty.obs import Metrics
from onduty.readmodel.archive import Archive
from onduty.readmodel.models import AutonomyView, ReadModels  # noqa: F401 (re-exported)
from onduty.readmodel.similar import (
    SimilarIncident,
    SimilarIncidents,
    UnknownIncident,
    document_from_log,
    prompt_finder,
    summarize,
)
from onduty.retention import Retention, ServingLock, StoreBusy, open_retention
from onduty.runtime import (
    Clock,
    Input,
    RecoveryReport,
    Runtime,
    RuntimeStopped,
    SystemClock,
    settle_heap,
)
from onduty.secrets import SecretError, unresolved_references
from onduty.stepback import DependencyWatch, DependencyWatcher
from onduty.tracing import Tracing
from onduty.workers import WorkerPool

if TYPE_CHECKING:  # PostgreSQL's client is loaded only by a fleet
    from onduty.fleet.status import FleetStatus

logger = logging.getLogger("onduty")

READ_SNAPSHOT_EVERY = 50_000
"""Events between two snapshots of the read models (also saved at a graceful stop): a start
feeds them at most this many events after a crash, instead of the whole log."""


def run_lock_directory(store: str) -> Path | None:
    """Where the locks of running actions live: beside the SQLite file (`<file>.runs/`), so
    a restart on the same store finds them; None for an in-memory store (nothing survives)."""
    path = store.removeprefix("sqlite:///") if store.startswith("sqlite:///") else store
    if "://" in path or not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path + ".runs")


def activation(
    config: Config, role: str, source: str, selector: str | None = None
) -> PolicyActivated:
    """The input that gives `config` its `role` (active, shadow, canary, withdrawn)."""
    return PolicyActivated(
        version=config.version,
        config={} if role == "withdrawn" else config.policy_document(),
        source=source,
        role=role,
        selector=selector,
    )


class StartupError(Exception):
    """`onduty serve` cannot start; the message is one line naming the field, secret or file."""


class Service:
    def __init__(
        self,
        config: Config,
        store: str,
        *,
        actuators: ActuatorRegistry | None = None,
        max_body: int = 1 << 20,
        max_pending: int = 20_000,
        config_path: str | None = None,
        access: Access | None = None,
        clock: Clock | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        self.tracing = tracing or Tracing(config.telemetry.traces)
        """Traces of the work (off unless configured); started by `prepare`."""
        self._traced: Callable[[Event], None] | None = None
        # The credentials the API accepts; a reload updates this object in place.
        self.access = access if access is not None else Access()
        self.config_path = config_path
        self.store = store
        self.max_body = max_body
        self.max_pending = max_pending
        self.metrics = Metrics()
        self.metrics.per_event = config.telemetry.event_metrics
        similar = config.similar
        self.read = ReadModels(similar=SimilarIncidents(similar.keep, min_score=similar.min_score))
        # Pending approvals as the read models hold them (restored at a restart, moot ones gone).
        self.metrics.projection.approvals_pending.set_function(
            lambda: len(self.read.incidents.approvals)
        )
        self.metrics.watch_safe_mode(self._safe_mode_now)
        self.archive = Archive()
        """Resolved incidents that left the read models' memory, read back from the log."""
        self._read_saved = 0
        self._actuators = actuators
        self._workers = WorkerPool()
        self._runs: RunLocks | None = None
        self._serving: ServingLock | None = None
        self._early: list[tuple[Payload, str]] = []
        self._early_lock = threading.Lock()
        self._deliverer: Deliverer | None = None
        self._stepback: DependencyWatcher | None = None
        self.log: EventLog | None = None
        self.runtime: Runtime | None = None
        self.loop: CoreLoop | None = None
        self.recovery: RecoveryReport | None = None
        self.checkpointer: Checkpointer | None = None
        self.retention: Retention | None = None
        self._subscribers: tuple[Callable[[Event], None], ...] = ()
        self._subscribers_lock = threading.Lock()
        self.clock: Clock = clock or SystemClock()
        self.gateway: Gateway = LoopGateway(lambda: self.loop)
        """Where the API hands inputs on (the core loop of this process)."""

    def _safe_mode_now(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self.read.lock:
            return self.read.safe_mode.listing(), self.read.safe_mode.source_problems()

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call `callback(event)` with every event appended from now on, after the read models
        have seen it. It runs on the core's thread: it must be quick and must not block (hand
        the event to another thread or event loop). Returns the function that unsubscribes."""
        with self._subscribers_lock:
            self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            with self._subscribers_lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not callback)

        return unsubscribe

    def prepare(self) -> None:
        """Everything start-up can fail at, done before the server listens: resolve the secrets
        the actuators and pollers need, open the store, build the actuators, fold the log. A
        failure raises `StartupError`, one line naming the field, secret or file, and leaves
        nothing open. Done once; `start` calls it when nobody did."""
        if self.runtime is not None:
            return
        problems = self.secret_problems()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise StartupError(problems[0] + more)
        self._prepare_similar()
        try:
            log = open_log(self.store)
        except StoreError as error:
            raise StartupError(str(error)) from None
        try:
            self._start_tracing()
            self._traced = self.tracing.projector(log)
            self._open(log)
        except BaseException:
            self.tracing.shutdown()
            log.close()
            self.log = None
            raise

    def _prepare_similar(self) -> None:
        """With `similar.method: embeddings`, load the model now: a missing extra stops the
        start, naming it, rather than the first page that asks."""
        if self.config.similar.method != "embeddings" or self.read.similar.embedder is not None:
            return
        from onduty.readmodel.embeddings import EmbeddingsUnavailable, MiniLM

        try:
            self.read.similar.embedder = MiniLM.load()
        except EmbeddingsUnavailable as error:
            raise StartupError(str(error)) from None

    def similar_incidents(self, incident_id: str, limit: int) -> list[SimilarIncident] | None:
        """The closed incidents most like `incident_id`, best first; None when there is no such
        incident. One that left the read model's memory is rebuilt from the log."""
        similar = self.read.similar
        try:
            return similar.similar_to(incident_id, limit)
        except UnknownIncident:
            pass
        log = self.log
        document = document_from_log(log, incident_id) if log is not None else None
        return None if document is None else similar.similar_to_document(document, limit)

    def with_similar(self, command: Notify) -> Notify:
        """An escalation's message with the line about similar incidents added, when there are
        any (and `similar.escalations` is on); every other notification as it is."""
        settings = self.config.similar
        if command.kind != "escalation" or not settings.escalations:
            return command
        # an incident not (yet) in the read model is sent as the core said
        matches = self.read.similar.similar_if_known(command.incident_id, settings.limit)
        if not matches:
            return command
        return dataclasses.replace(command, message=f"{command.message}\n{summarize(matches)}")

    def secret_problems(self) -> list[str]:
        """The secret references start-up needs that cannot be resolved now: the actuators'
        (unless the actuators are given, as a simulation does) and the pollers'."""
        sections: dict[str, Any] = {"sources": self.config.sources}
        if self._actuators is None:
            sections["actuators"] = self.config.actuators
        sections["telemetry"] = self.config.telemetry.model_dump(mode="json")
        if self.config.advisor.enabled:
            sections["advisor"] = self.config.advisor.model_dump(mode="json")
        return unresolved_references(sections)

    def _start_tracing(self) -> None:
        try:
            self.tracing.start(self.name or None, on_drop=self._spans_dropped)
        except SecretError as error:  # names the header, never its value
            raise StartupError(str(error)) from None

    def _spans_dropped(self, reason: str, count: int) -> None:
        self.metrics.trace_spans_dropped.labels(reason).inc(count)

    def _open(self, log: EventLog) -> None:
        self.log = log
        try:
            actuators = self._actuators or build_registry(self.config.actuators)
        except ValueError as error:  # a secret the check above could not foresee
            raise StartupError(f"actuators: {error}") from None
        if self.config.channels and self._deliverer is None:
            self._deliverer = Deliverer(
                parse_channels(self.config.channels),
                self._record_outcome,
                spawn=self._workers,
                amend=self.with_similar,
            )
            for problem in self._deliverer.problems:  # a channel that cannot deliver is skipped
                logger.error("%s", problem)
        file = store_file(self.store)
        if file is not None and self._serving is None:
            try:
                self._serving = ServingLock(file, exclusive=False)
            except StoreBusy as error:
                raise StartupError(f"{error}: wait for it to finish") from None
        directory = run_lock_directory(self.store)
        if directory is not None and self._runs is None:
            try:
                self._runs = RunLocks(directory)
            except OSError as error:
                raise StartupError(
                    f"cannot use {directory} for the locks of running actions: "
                    f"{error.strerror or type(error).__name__}"
                ) from None
        try:
            fed = self.read.restore(log)
            if fed >= READ_SNAPSHOT_EVERY:  # the next start need not fold them again
                self.read.save_soon(log)
            self._read_saved = self.read.seq
            runtime, self.recovery = Runtime.open(
                log,
                self.clock,
                actuators,
                config=self.config,
                notifier=self._notify_humans,
                snapshot_every=self.config.snapshot_every,
                on_event=self._on_event,
                on_append=self.metrics.appended,
                spawn=self._workers,
                attempts=3,
                runs=self._runs,
                background_snapshots=True,
                consultant=self._consultant(self.config),
            )
        except (ValueError, KeyError, TypeError, RuntimeStopped) as error:  # a stored event that
            # does not decode, or a log that refuses appends
            logger.debug("recovery from %s failed", self.store, exc_info=True)
            raise StartupError(
                f"cannot start on the event log {self.store}: {error} "
                f"(check it with `onduty audit verify --store {self.store}`)"
            ) from None
        self.runtime = runtime
        try:
            self.checkpointer = open_checkpointer(
                self.config.checkpoints, self.store, log, self.metrics.registry
            )
        except CheckpointError as error:
            raise StartupError(str(error)) from None
        key = self.checkpointer.key if self.checkpointer is not None else None
        try:
            self.retention = open_retention(
                self.config.retention, log, key, self.clock.now, lambda: self.read.save(log)
            )
        except ValueError as error:
            raise StartupError(f"retention: {error}") from None

    def start(self) -> None:
        self.prepare()
        log, runtime = self.log, self.runtime
        assert log is not None and runtime is not None and self.recovery is not None
        self.metrics.head = log.head()[0]
        settle_heap()
        self.loop = CoreLoop(runtime, max_pending=self.max_pending)
        runtime.send_outcomes_to(self._record_outcome)
        self.loop.start()
        if self.checkpointer is not None:
            self.checkpointer.start(self._record_outcome)
            self.subscribe(self.checkpointer.observe)
        if self.retention is not None:
            self.retention.start()
        self._watch_dependencies()
        with self._early_lock:
            early, self._early = self._early, []
        for body, stream in early:
            self._record_outcome(body, stream)
        logger.info(
            "ready: %s events in %s (snapshot at %s, %s folded), policy %s",
            self.recovery.head_seq,
            self.store,
            self.recovery.snapshot_seq,
            self.recovery.folded,
            self.config.version,
        )

    def _watch_dependencies(self) -> None:
        """With `server.readiness.safe_mode_after`, failing log, bus or core checks put onduty
        in safe mode (`stepback.py`); a degradation recorded before a restart is still open."""
        after = self.config.server.readiness.safe_mode_after
        if after is None:
            return
        with self.read.lock:
            scopes = list(self.read.safe_mode.active)
        open_before = {s.split(":", 1)[1] for s in scopes if s.startswith("dependency:")}
        watch = DependencyWatch(after.total_seconds(), open_before)
        self._stepback = DependencyWatcher(self.health.check_all, self._record_outcome, watch)
        self._stepback.start()

    def stop(self) -> None:
        """Drain queued inputs, snapshot, and close the log."""
        if self._stepback is not None:
            self._stepback.stop()
        if self.retention is not None:
            self.retention.stop()  # a seal in progress finishes first
        if self.checkpointer is not None and self.loop is not None:
            self.checkpointer.stop()  # a last checkpoint, recorded through the running loop
        if self.loop is not None:
            self.loop.stop()
        if self._runs is not None:
            self._runs.close()  # a wait on a run from before a crash resumes at the next start
        self._workers.close(wait=True)  # actions in flight finish and record their outcomes
        if self.runtime is not None and self.loop is not None and self.loop.failure is None:
            self.runtime.snapshot_now()
            if self.log is not None:
                self.read.save(self.log)
        if self.runtime is not None:
            self.runtime.flush_snapshots()  # one being written in the background is finished
        self.read.wait_saved()
        if self.log is not None:
            self.log.close()
            self.log = None
        if self._serving is not None:
            self._serving.release()
            self._serving = None
        self.tracing.shutdown()  # the spans still buffered are exported
        logger.info("stopped")

    def reload(self, actor: str = "api") -> tuple[int, dict[str, Any]]:
        """Re-read the configuration file and activate it when it changed. An invalid file never
        activates: the running policy stays, and the problems are reported."""
        if self.config_path is None:
            return 409, {"error": "onduty was started without -c FILE: there is nothing to reload"}
        try:
            config = load_config(self.config_path)
        except ConfigError as error:
            logger.error("policy reload refused: %s", error)
            return 422, {"error": "the configuration is invalid", "problems": error.problems}
        refused = self._reload_access(config)
        if refused is not None:
            return refused
        if self.runtime is not None:  # where the advisor answers is no part of the policy
            try:
                self.runtime.consultant = self._consultant(config) or NoAdvisor()
            except StartupError as error:
                return 422, {"error": "the advisor is invalid", "problems": [str(error)]}
        model = self._reload_model(config, actor)
        if model is not None and model[0] >= 400:
            return model
        if config.version == self.read.policy.version:
            return 200, {"version": config.version, "changed": model is not None}
        return self.activate(config, role="active", source=self.config_path, actor=actor)

    def _consultant(self, config: Config) -> Consultant | None:
        """Who answers the advisor's consultations under `config` (None while it is off)."""
        try:
            return consultant_for(config.advisor, similar=prompt_finder(self.read.similar))
        except SecretError as error:
            raise StartupError(f"advisor.endpoint: {error}") from None

    def _reload_model(self, config: Config, actor: str) -> tuple[int, dict[str, Any]] | None:
        """Make the file's `learning.model` active when it is not (checked by `load_config`:
        a corrupted or incompatible artifact refused the whole file, the running model stays);
        None when there is nothing to change."""
        try:
            change = model_activation(config.learning.model, self.read.learning.model_id)
        except ModelProblem as problem:  # changed on disk since the file was read
            logger.error("model reload refused: %s", problem)
            return 422, {"error": "the model is invalid", "problems": [str(problem)]}
        if change is None:
            return None
        return self.activate_model(
            change.model_id, change.model, role="active", source=change.source, actor=actor
        )

    def _reload_access(self, config: Config) -> tuple[int, dict[str, Any]] | None:
        """Take the file's access section (tokens rotate without a restart); None when done,
        else the refusal. Access control once on is never turned off by a reload."""
        try:
            access = Access.from_raw(config.access)
        except AccessError as error:
            logger.error("reload refused: %s", error)
            return 422, {"error": "the access section is invalid", "problems": error.problems}
        if self.access.enabled and not access.enabled:
            problem = "access.tokens: removing every token would turn access control off"
            logger.error("reload refused: %s; restart onduty to do that", problem)
            return 422, {"error": "the access section is invalid", "problems": [problem]}
        self.access.update(access)
        if access.enabled:
            logger.info("access: %s", access.describe())
        return None

    def activate(
        self,
        config: Config,
        *,
        role: str,
        source: str,
        selector: str | None = None,
        actor: str = "api",
    ) -> tuple[int, dict[str, Any]]:
        body = activation(config, role, source, selector)
        refused = self._submit_policy(Input(body, stream="policy", actor=actor))
        if refused is not None:
            return refused
        if role == "active":
            self.config = config
        logger.info("policy %s is now %s (from %s)", config.version, role, source)
        return 202, {"version": config.version, "role": role, "changed": True}

    def activate_model(
        self,
        model_id: str,
        model: dict[str, Any],
        *,
        role: ModelRole,
        source: str,
        selector: str | None = None,
        actor: str = "api",
    ) -> tuple[int, dict[str, Any]]:
        """Record a learning model in its role (`ModelActivated`), as `activate` does a policy:
        the artifact is checked by the caller (`onduty.learn.model.model_from_body`)."""
        body = ModelActivated(
            model_id=model_id,
            model={} if role == "withdrawn" else model,
            source=source,
            role=role,
            selector=selector,
        )
        refused = self._submit_policy(Input(body, stream="learning", actor=actor))
        if refused is not None:
            return refused
        logger.info("learning model %s is now %s (from %s)", model_id, role, source)
        return 202, {"model_id": model_id, "role": role, "changed": True}

    def _submit_policy(self, item: Input) -> tuple[int, dict[str, Any]] | None:
        """Hand a policy change to the core and wait until it is recorded; None once it is,
        else the refusal (status, body)."""
        loop = self.loop
        if loop is None:
            return 503, {"error": "onduty is starting"}
        future = loop.offer([item])
        if future is None:
            return 429, {"error": "the queue is full; retry shortly"}
        future.result(timeout=30)
        return None

    def _record_outcome(self, body: Payload, stream: str) -> None:
        """An actuator's outcome joins the core loop's queue, batched with other inputs; a
        worker never waits on the core. When the queue is full or the loop is stopping, it is
        recorded directly instead (never dropped)."""
        loop, runtime = self.loop, self.runtime
        with self._early_lock:
            if runtime is None or self.loop is None:
                self._early.append((body, stream))  # during start-up: recorded once running
                return
        record(loop, runtime, body, stream)

    @property
    def ready(self) -> bool:
        return self.loop is not None and self.loop.running

    @cached_property
    def health(self) -> Health:
        """The readiness checks `/readyz` answers from (`check_all()` polls them without
        HTTP); made once the service is built, with `onduty_ready` and the queue depths."""
        health = for_service(self)
        for name in health.names:
            self.metrics.ready.labels(name).set_function(partial(health.ok, name))
        depth = self.metrics.queue_depth
        depth.labels("core").set_function(lambda: self.loop.pending if self.loop else 0)
        depth.labels("workers").set_function(lambda: self._workers.waiting)
        depth.labels("notifications").set_function(
            lambda: self._deliverer.waiting if self._deliverer is not None else 0
        )
        return health

    is_fleet = False
    """Whether this is one node of a fleet (`FleetService`)."""

    def kill_switches(self, *, fresh: bool = False) -> list[dict[str, str]]:
        """The active kill switches, as the API and every console page list them."""
        with self.read.lock:
            return [dict(item) for item in self.read.kill_switches.listing()]

    def change_kill_switch(
        self, kind: str, name: str, *, active: bool, reason: str, actor: str
    ) -> tuple[int, dict[str, Any]]:
        """A fleet's way to set or clear a switch (`FleetService`); one process records it
        through its core loop like any other input."""
        raise NotImplementedError("one process records kill switches through its core loop")

    name = ""
    """A fleet node's name among the managers ("" for one process)."""

    def fleet_status(self) -> FleetStatus | None:
        """Who runs which partition, in a fleet; None for one process (it runs them all)."""
        return None

    def _on_event(self, event: Event) -> None:
        if self._traced is not None:
            self._traced(event)
        self.read.feed(event)
        if event.seq - self._read_saved >= READ_SNAPSHOT_EVERY and self.log is not None:
            self._read_saved = event.seq  # encoded and stored off the core's thread
            self.read.save_soon(self.log)
        self.metrics.observe(event)
        for callback in self._subscribers:  # a tuple, replaced (never mutated) on change
            try:
                callback(event)
            except Exception:
                logger.exception(
                    "an event subscriber failed on %s %s", event.type, event.id,
                    extra={"event_id": event.id},
                )  # fmt: skip

    def _notify_humans(self, command: Notify) -> None:
        """Deliver through the configured channels; without any, a page is a log line."""
        if self._deliverer is not None:
            self._deliverer(command)
            return
        logger.warning(
            "%s for %s → %s: %s", command.kind, command.incident_id, ",".join(command.channels),
            command.message, extra={"incident_id": command.incident_id, "kind": command.kind},
        )  # fmt: skip
