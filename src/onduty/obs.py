"""Self-observation: Prometheus metrics of the service (its logs are `onduty.logs`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from onduty.events import Event

DECISION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
"""Signal-to-verdict latency buckets (seconds): a verdict waits for the incident's grouping
window (tens of seconds by default), so the interesting range is a second to minutes."""


class Metrics:
    """The service's own metrics, on a registry of its own (several apps may share a process
    in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.signals = Counter(
            "onduty_signals_ingested_total",
            "Signals durably accepted, by wire format.",
            ["format"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "onduty_signals_rejected_total",
            "Ingest requests refused, by wire format and HTTP status.",
            ["format", "status"],
            registry=self.registry,
        )
        self.ingest_seconds = Histogram(
            "onduty_ingest_seconds",
            "Time from a request's arrival to its signals being durable.",
            ["format"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.pending = Gauge(
            "onduty_ingest_pending", "Inputs queued for the core.", registry=self.registry
        )
        self.log_head = Gauge(
            "onduty_log_head_seq", "Sequence number of the newest event.", registry=self.registry
        )
        self.events = Counter(
            "onduty_events_total", "Events appended, by type.", ["type"], registry=self.registry
        )
        self.partitions_held = Gauge(
            "onduty_partitions_held",
            "Partitions whose lease this manager holds and whose cells it runs (in a fleet).",
            registry=self.registry,
        )
        self.append_events = Histogram(
            "onduty_log_append_batch_events",
            "Events per append to the log (one durable commit).",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=self.registry,
        )
        self.append_seconds = Histogram(
            "onduty_log_append_seconds",
            "Time the log took to make one batch of events durable.",
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.trace_spans_dropped = Counter(
            "onduty_trace_spans_dropped_total",
            "Spans not exported: the export queue was full, or the OTLP endpoint failed.",
            ["reason"],
            registry=self.registry,
        )
        self.projection = EventMetrics(self.registry)
        self.per_event = True
        """Whether appended events feed the counters (`telemetry.event_metrics`)."""
        self._by_type: dict[str, Any] = {}
        self.head = 0
        """The seq of the newest event: read at a scrape, not set on a lock per event."""
        self.log_head.set_function(lambda: self.head)
        # ---- readiness, queues and breakers (onduty.health sets `ready`; the service the
        # queue depths; `breakers` is a projection of the log like `projection`) ----
        self.ready = Gauge(
            "onduty_ready",
            "1 when the readiness check passes, else 0 (what /readyz answers), by check.",
            ["check"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "onduty_queue_depth",
            "Work waiting, by queue: core (inputs for the core), workers (actions and "
            "notifications waiting for a worker thread), notifications (waiting to be sent).",
            ["queue"],
            registry=self.registry,
        )
        self.breakers = BreakerMetrics(self.registry)

    def watch_safe_mode(
        self,
        read: Callable[[], tuple[list[dict[str, Any]], list[dict[str, Any]]]],
    ) -> None:
        """Serve safe mode and the sources' problems as they are now (from the read models,
        so a restart shows them at once): `read` returns both listings."""
        self.registry.register(SafeModeCollector(read))

    def appended(self, events: int, seconds: float) -> None:
        """One append to the log: how many events, and how long it took to be durable."""
        self.append_events.observe(events)
        self.append_seconds.observe(seconds)

    def observe(self, event: Event) -> None:
        """Count one appended event (the service calls this for every event it appends)."""
        self.head = event.seq
        if self.per_event:
            counted = self._by_type.get(event.type)
            if counted is None:  # a labelled child is looked up once per type: it is per event
                counted = self._by_type[event.type] = self.events.labels(event.type)
            counted.inc()
            self.projection.feed(event)
        self.breakers.feed(event)


class SafeModeCollector(Collector):
    """`onduty_safe_mode{scope}` and `onduty_source_problem{source,check}`: one series, of
    value 1, per scope in safe mode and per problem of a source now; and how many scopes are
    in safe mode (0 too, so an alert can say `> 0`)."""

    def __init__(
        self, read: Callable[[], tuple[list[dict[str, Any]], list[dict[str, Any]]]]
    ) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        modes, problems = self._read()
        active = GaugeMetricFamily(
            "onduty_safe_mode_scopes",
            "Scopes in safe mode now (autonomy lowered to suggest because of a problem).",
        )
        active.add_metric([], len(modes))
        scopes = GaugeMetricFamily(
            "onduty_safe_mode",
            "1 for each scope in safe mode now, by the problem that put it there.",
            labels=["scope", "services"],
        )
        for mode in modes:
            services = ",".join(mode.get("services") or []) or "*"
            scopes.add_metric([str(mode["scope"]), services], 1)
        found = GaugeMetricFamily(
            "onduty_source_problem",
            "1 for each problem a source has now (silent, clock_skew, drift, rejected, "
            "duplicates, cardinality), by source and check.",
            labels=["source", "check"],
        )
        for problem in problems:
            found.add_metric([str(problem["source"]), str(problem["check"])], 1)
        yield from (active, scopes, found)


class EventMetrics:
    """A projection of the event log into Prometheus series: fed every appended event, it
    counts exactly what the log holds (since this process started). It reads events only; the
    core never calls it. Its memory is bounded by what is in flight: open incidents, commands
    awaiting a verdict or an outcome."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.signals = Counter(
            "onduty_signal_events_total",
            "Signals recorded in the log, by source and outcome (received or rejected).",
            ["source", "outcome"],
            registry=registry,
        )
        self.decision_seconds = Histogram(
            "onduty_signal_to_verdict_seconds",
            "Event time from the signal that opened an incident to the first policy verdict "
            "on each of its proposed actions.",
            buckets=DECISION_BUCKETS,
            registry=registry,
        )
        self.verdicts = Counter(
            "onduty_verdicts_total",
            "Policy verdicts (PolicyEvaluated events), by verdict.",
            ["effect"],
            registry=registry,
        )
        self.rule_outcomes = Counter(
            "onduty_rule_outcomes_total",
            "Guardrail opinions inside policy verdicts, by rule and effect.",
            ["rule", "effect"],
            registry=registry,
        )
        self.actions = Counter(
            "onduty_actions_started_total",
            "Actions started, by actuator (the action's family) and action.",
            ["actuator", "action"],
            registry=registry,
        )
        self.action_outcomes = Counter(
            "onduty_action_outcomes_total",
            "Actions finished, by actuator, action and outcome (succeeded, failed, unknown).",
            ["actuator", "action", "outcome"],
            registry=registry,
        )
        self.verifications = Counter(
            "onduty_verifications_total",
            "Verifications of an action's effect, by outcome (passed or failed).",
            ["outcome"],
            registry=registry,
        )
        self.undos = Counter(
            "onduty_undos_total",
            "Undos finished, by outcome (succeeded, failed, unknown).",
            ["outcome"],
            registry=registry,
        )
        self.escalations = Counter(
            "onduty_escalations_total", "Escalations, by tier.", ["tier"], registry=registry
        )
        self.approvals_requested = Counter(
            "onduty_approvals_requested_total", "Approval requests.", registry=registry
        )
        self.approvals_pending = Gauge(
            "onduty_approvals_pending", "Approval requests awaiting a human.", registry=registry
        )
        self.incidents = Counter(
            "onduty_incidents_total",
            "Incidents, by lifecycle event (opened or resolved).",
            ["event"],
            registry=registry,
        )
        self.source_problems = Counter(
            "onduty_source_problems_total",
            "Problems found with a source's signals (SourceDegraded), by check.",
            ["check"],
            registry=registry,
        )
        self.safe_mode_entered = Counter(
            "onduty_safe_mode_entered_total",
            "Times a scope entered safe mode, by the kind of problem.",
            ["check"],
            registry=registry,
        )
        self.proposals = Counter(
            "onduty_proposals_total",
            "Actions proposed (ActionProposed), by the agent that proposed them (runbook, "
            "learner or advisor).",
            ["agent"],
            registry=registry,
        )
        self.model_divergences = Counter(
            "onduty_model_divergences_total",
            "Times a learning model not enforced ranked another action first "
            "(ModelShadowDiverged), by mode (shadow or canary).",
            ["mode"],
            registry=registry,
        )
        self.model_drift = Counter(
            "onduty_model_drift_total",
            "Times the learning model was set aside for a service (ModelDriftDetected), by check.",
            ["check"],
            registry=registry,
        )
        self.advice = Counter(
            "onduty_advice_total",
            "Consultations of the advisor (a language model), by outcome: asked, answered, "
            "failed (no answer: unreachable, timeout, refused, malformed, unconfigured, error) or "
            "discarded (an answer outside the schema or the choices).",
            ["outcome"],
            registry=registry,
        )
        self.advice_latency = Histogram(
            "onduty_advice_latency_seconds",
            "How long the advisor's model took to answer (AdviceReceived.latency_ms).",
            buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
            registry=registry,
        )
        self._received: dict[str, Any] = {}
        self._opened: dict[str, datetime] = {}
        """Open incident → event time of the signal that opened it."""
        self._signal_at: dict[str, datetime] = {}
        """Recent SignalReceived ids → their event time (until the incident they open)."""
        self._awaiting_verdict: dict[str, str] = {}
        """Proposed command → its incident, until its first verdict."""
        self._running: dict[str, str] = {}
        """Started command (action or undo) → its action, until its outcome."""
        self.approval_wait = Histogram(
            "onduty_approval_wait_seconds",
            "Event time from an approval request to its answer, by outcome (granted, denied, "
            "expired).",
            ["outcome"],
            buckets=DECISION_BUCKETS,
            registry=registry,
        )
        self._pending: set[str] = set()
        self.approvals_pending.set_function(lambda: len(self._pending))
        self._requested_at: dict[str, datetime] = {}
        """Pending approval request → when it was asked."""
        self._approval_of: dict[str, str] = {}
        """Command awaiting approval → its approval request."""

    def feed(self, event: Event) -> None:
        data = event.data
        kind = event.type
        if kind == "SignalReceived":
            source = str(data.get("source", ""))
            counted = self._received.get(source)
            if counted is None:  # looked up once per source: signals are most of the events
                counted = self._received[source] = self.signals.labels(source, "received")
            counted.inc()
            self._signal_at[event.id] = event.ts
            if len(self._signal_at) > 1024:  # a signal that opened nothing is forgotten
                del self._signal_at[next(iter(self._signal_at))]
        elif kind == "SignalRejected":
            self.signals.labels(str(data.get("source", "")), "rejected").inc()
        elif kind == "IncidentOpened":
            self.incidents.labels("opened").inc()
            cause = self._signal_at.pop(event.causation_id or "", None)
            self._opened[data["incident_id"]] = cause or event.ts
        elif kind == "IncidentResolved":
            self.incidents.labels("resolved").inc()
            self._opened.pop(data["incident_id"], None)
        elif kind == "ActionProposed":
            self._awaiting_verdict[data["command_id"]] = data["incident_id"]
            self.proposals.labels(str(data.get("agent", ""))).inc()
        elif kind == "PolicyEvaluated":
            self.verdicts.labels(str(data.get("verdict", ""))).inc()
            for outcome in data.get("rules") or ():
                self.rule_outcomes.labels(str(outcome["rule"]), str(outcome["effect"])).inc()
            incident = self._awaiting_verdict.pop(data["command_id"], None)
            opened = self._opened.get(incident or data.get("incident_id", ""))
            if incident is not None and opened is not None:
                self.decision_seconds.observe(max(0.0, (event.ts - opened).total_seconds()))
            self._settle_approval_of(data["command_id"], event.ts)
        elif kind == "ApprovalRequested":
            self.approvals_requested.inc()
            self._pending.add(data["approval_id"])
            self._requested_at[data["approval_id"]] = event.ts
            self._approval_of[data["command_id"]] = data["approval_id"]
        elif kind in ("ApprovalDenied", "ApprovalExpired"):
            self._pending.discard(data["approval_id"])
            outcome = "denied" if kind == "ApprovalDenied" else "expired"
            self._waited(data["approval_id"], outcome, event.ts)
        elif kind in ("ActionStarted", "UndoStarted"):
            action = str(data.get("action", ""))
            self._running[data["command_id"]] = action
            if kind == "ActionStarted":
                self.actions.labels(family(action), action).inc()
        elif kind in ("ActionSucceeded", "ActionFailed", "ActionOutcomeUnknown"):
            action = self._running.pop(data["command_id"], "")
            outcome = {"ActionSucceeded": "succeeded", "ActionFailed": "failed"}.get(
                kind, "unknown"
            )
            self.action_outcomes.labels(family(action), action, outcome).inc()
        elif kind == "UndoFinished":
            self._running.pop(data["command_id"], None)
            outcome = "unknown" if data.get("unknown") else "succeeded" if data["ok"] else "failed"
            self.undos.labels(outcome).inc()
        elif kind == "VerificationPassed":
            self.verifications.labels("passed").inc()
        elif kind == "VerificationFailed":
            self.verifications.labels("failed").inc()
        elif kind == "Escalated":
            self.escalations.labels(str(data.get("tier", 0))).inc()
        elif kind == "SourceDegraded":
            self.source_problems.labels(str(data.get("check", ""))).inc()
        elif kind == "SafeModeEntered":
            self.safe_mode_entered.labels(str(data.get("scope", "")).split(":", 1)[0]).inc()
        elif kind == "ModelShadowDiverged":
            self.model_divergences.labels(str(data.get("mode", ""))).inc()
        elif kind == "ModelDriftDetected":
            self.model_drift.labels(str(data.get("check", ""))).inc()
        elif kind in ADVICE_OUTCOMES:
            self.advice.labels(ADVICE_OUTCOMES[kind]).inc()
            if kind == "AdviceReceived":
                self.advice_latency.observe(float(data.get("latency_ms", 0.0)) / 1000)

    def _settle_approval_of(self, command_id: str, now: datetime) -> None:
        approval = self._approval_of.pop(command_id, None)
        if approval is not None:
            self._pending.discard(approval)
            self._waited(approval, "granted", now)

    def _waited(self, approval_id: str, outcome: str, now: datetime) -> None:
        asked = self._requested_at.pop(approval_id, None)
        if asked is not None:
            self.approval_wait.labels(outcome).observe(max(0.0, (now - asked).total_seconds()))


ADVICE_OUTCOMES = {
    "AdviceRequested": "asked",
    "AdviceReceived": "answered",
    "AdviceFailed": "failed",
    "AdviceDiscarded": "discarded",
}


class BreakerMetrics:
    """The circuit breakers as the log tells them: per action and target, consecutive failures
    (or unknown outcomes) open it once they reach the active policy's `breaker.failures`; a
    success closes it. Open stays 1 through the cool-down and the half-open trial. Its memory is
    the pairs that failed since they last succeeded."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.open = Gauge(
            "onduty_breaker_open",
            "1 while the circuit breaker of an action on a target is open (automation of it "
            "escalates instead), else 0; by actuator (the action's family), action and target.",
            ["actuator", "action", "target"],
            registry=registry,
        )
        self._threshold = 3
        self._started: dict[str, tuple[str, str]] = {}
        """Started command → (action, target), until its outcome."""
        self._failures: dict[tuple[str, str], int] = {}

    def feed(self, event: Event) -> None:
        data, kind = event.data, event.type
        if kind == "PolicyActivated" and data.get("role", "active") == "active":
            breaker = (data.get("config") or {}).get("policy", {}).get("breaker") or {}
            self._threshold = int(breaker.get("failures", self._threshold))
        elif kind == "ActionStarted":
            self._started[data["command_id"]] = (str(data["action"]), str(data["target"]))
        elif kind == "ActionSucceeded":
            pair = self._started.pop(data["command_id"], None)
            if pair is not None and self._failures.pop(pair, None) is not None:
                self.open.labels(family(pair[0]), *pair).set(0)
        elif kind in ("ActionFailed", "ActionOutcomeUnknown"):
            pair = self._started.pop(data["command_id"], None)
            if pair is not None:
                failures = self._failures[pair] = self._failures.get(pair, 0) + 1
                self.open.labels(family(pair[0]), *pair).set(failures >= self._threshold)


def family(action: str) -> str:
    """The actuator family of an action (`k8s` of `k8s.rollout_restart`)."""
    return action.split(".", 1)[0]
