"""Table tests of a policy: proposals in given situations, and the verdict expected of each.

A case file (YAML) holds a list of cases:

    - name: the fourth restart within the hour is denied
      given:
        service: payments            # the incident's service (must be configured)
        target: payments-1           # may be unknown: the known-target rule then denies
        action: process.restart
        runbook: restart-crashed-instance   # optional: else the runbook taking the action
        labels: {alertname: HighMemoryUsage}  # optional, merged over the defaults below
        approved_by: alice           # optional: the proposal was approved by a human
        history:                     # actions allowed earlier (for rate and blast limits)
          - {action: process.restart, target: payments-1, ago: 10m}
        in_flight: [payments-2]      # targets of actions running now
        alerting: {services: 2, instances: 3}   # how much of the fleet alerts
        unhealthy:                   # other instances of the service with firing signals:
          - payments-3               #   down (counts for every blast rule's down_alerts)
          - {instance: payments-4, alert: HighLatency}   # or firing a given alert
        flapping: false              # optional: the incident is flapping
        now: 2026-01-05T09:00:00Z    # default: Wednesday 2026-01-07 12:00 UTC
      expect:
        verdict: deny                # allow | deny | require_approval
        rules: [restart-budget]      # rules that must have had an opinion
        reason_contains: "limit 3"

The situation is built the way the manager would see it. The incident's own signal is firing,
with the labels `service` (the given service), `instance` (the target, when it is an instance)
and those the runbook's `when` asks for by equality (`alertname`), all overridden by `labels`:
so a restart for InstanceDown finds its target already down, and the incident's service and
instance count as alerting. `unhealthy` and `alerting` describe the rest of the fleet
(`alerting` gives totals, replacing what is derived). Without `runbook`, the first runbook that
takes the action and whose `when` holds for those labels is used (else the first that takes
it). A past action's service defaults to its target's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from onduty.config import Config, Duration, Runbook, Service, describe_validation_error
from onduty.events import PolicyEvaluated, RuleOutcome
from onduty.expressions import Condition, prepare
from onduty.govern.context import Facts
from onduty.govern.lint import label_literals
from onduty.govern.policy import Policy
from onduty.govern.variables import condition_variables
from onduty.state import ActionRecord
from onduty.think.proposal import Proposal

DEFAULT_NOW = datetime(2026, 1, 7, 12, 0, tzinfo=UTC)
"""When a case gives no `now`: a Wednesday at noon, UTC."""


def rule_names(config: Config) -> list[str]:
    """Every rule a verdict can name: the built-in ones, then the configured guardrails."""
    return [rule.name for rule in Policy(config).rules]


class CaseError(ValueError):
    """Case files that cannot be run; each problem names the file, the case and the field."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PastAction(_Model):
    action: str = Field(min_length=1)
    target: str = Field(min_length=1)
    ago: Duration
    runbook: str | None = None
    service: str | None = None


class Unhealthy(_Model):
    instance: str = Field(min_length=1)
    alert: str = Field(min_length=1)


class Alerting(_Model):
    services: int | None = Field(default=None, ge=0)
    instances: int | None = Field(default=None, ge=0)


class Given(_Model):
    service: str = Field(min_length=1)
    target: str
    action: str = Field(min_length=1)
    runbook: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    approved_by: str | None = None
    history: list[PastAction] = Field(default_factory=list)
    in_flight: list[str] = Field(default_factory=list)
    alerting: Alerting = Field(default_factory=Alerting)
    unhealthy: list[str | Unhealthy] = Field(default_factory=list)
    flapping: bool = False
    now: AwareDatetime | None = None


class Expect(_Model):
    verdict: Literal["allow", "deny", "require_approval"]
    rules: list[str] = Field(default_factory=list)
    reason_contains: str | None = None


class Case(_Model):
    name: str = Field(min_length=1)
    given: Given
    expect: Expect


@dataclass(frozen=True)
class TableCase:
    file: str
    index: int
    case: Case

    @property
    def where(self) -> str:
        return f"{self.file}: case {self.case.name!r} (#{self.index + 1})"


@dataclass(frozen=True)
class CaseResult:
    file: str
    name: str
    passed: bool
    verdict: str
    reason: str
    rules: tuple[RuleOutcome, ...]
    failures: tuple[str, ...] = ()


# ---------------------------------------------------------------------------- reading


def parse_cases(document: Any, file: str) -> list[TableCase]:
    """The cases of one parsed case file; CaseError names every bad field."""
    if not isinstance(document, list):
        raise CaseError([f"{file}: expected a list of cases, each with name, given and expect"])
    cases: list[TableCase] = []
    problems: list[str] = []
    names: dict[str, int] = {}
    for index, item in enumerate(document):
        label = (
            f"case {item['name']!r} (#{index + 1})"
            if isinstance(item, dict) and isinstance(item.get("name"), str)
            else f"case #{index + 1}"
        )
        if not isinstance(item, dict):
            problems.append(f"{file}: {label}: expected a mapping with name, given and expect")
            continue
        try:
            case = Case.model_validate(item)
        except ValidationError as error:
            problems.extend(f"{file}: {label}: {p}" for p in describe_validation_error(error))
            continue
        if case.name in names:
            problems.append(
                f"{file}: {label}: name: the name is already used by case #{names[case.name] + 1}"
            )
            continue
        names[case.name] = index
        cases.append(TableCase(file, index, case))
    if problems:
        raise CaseError(problems)
    return cases


def load_cases(directory: Path) -> list[TableCase]:
    """Every case of every `*.yaml` file in `directory`, files in name order."""
    if not directory.is_dir():
        raise CaseError([f"{directory}: not a directory of case files"])
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise CaseError([f"{directory}: no *.yaml case files"])
    cases: list[TableCase] = []
    problems: list[str] = []
    for path in files:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            problems.append(f"{path}: cannot read the file: {error}")
            continue
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
            reason = getattr(error, "problem", None) or str(error)
            problems.append(f"{path}: {where}: not valid YAML: {reason}")
            continue
        try:
            cases.extend(parse_cases(document, str(path)))
        except CaseError as error:
            problems.extend(error.problems)
    if problems:
        raise CaseError(problems)
    return cases


# ---------------------------------------------------------------------------- the situation


@dataclass
class _World:
    """The configuration's inventory, looked up by name."""

    config: Config
    services: dict[str, Service] = field(init=False)
    owner: dict[str, str] = field(init=False)
    runbooks: dict[str, Runbook] = field(init=False)

    def __post_init__(self) -> None:
        self.services = {s.name: s for s in self.config.services}
        self.owner = {s.name: s.name for s in self.config.services}
        self.owner.update({i: s.name for s in self.config.services for i in s.instances})
        self.runbooks = {r.name: r for r in self.config.runbooks}

    def is_instance(self, name: str) -> bool:
        return name in self.owner and name not in self.services


def _choose_runbook(
    world: _World,
    given: Given,
    holds: Callable[[Runbook], bool],
    problems: list[str],
) -> tuple[Runbook | None, int]:
    if given.runbook is not None:
        runbook = world.runbooks.get(given.runbook)
        if runbook is None:
            known = ", ".join(world.runbooks) or "none"
            problems.append(f"given.runbook: unknown runbook {given.runbook!r} (runbooks: {known})")
            return None, 0
        steps = [step.action for step in runbook.do]
        if given.action not in steps:
            problems.append(
                f"given.action: runbook {runbook.name!r} does not take the action "
                f"{given.action!r} (its steps: {', '.join(steps)})"
            )
            return None, 0
        return runbook, steps.index(given.action)
    taking = [r for r in world.config.runbooks if any(s.action == given.action for s in r.do)]
    if not taking:
        actions = sorted({s.action for r in world.config.runbooks for s in r.do})
        problems.append(
            f"given.action: no runbook takes the action {given.action!r} "
            f"(actions: {', '.join(actions) or 'none'})"
        )
        return None, 0
    matching = [r for r in taking if holds(r)]
    runbook = (matching or taking)[0]
    return runbook, [s.action for s in runbook.do].index(given.action)


def _check_names(world: _World, given: Given, problems: list[str]) -> None:
    for index, past in enumerate(given.history):
        if past.target not in world.owner:
            problems.append(
                f"given.history[{index}].target: {past.target!r} is neither an instance nor a "
                "service"
            )
        if past.service is not None and past.service not in world.services:
            problems.append(f"given.history[{index}].service: unknown service {past.service!r}")
        if past.runbook is not None and past.runbook not in world.runbooks:
            problems.append(f"given.history[{index}].runbook: unknown runbook {past.runbook!r}")
    for index, target in enumerate(given.in_flight):
        if target not in world.owner:
            problems.append(
                f"given.in_flight[{index}]: {target!r} is neither an instance nor a service"
            )
    service = world.services.get(given.service)
    for index, item in enumerate(given.unhealthy):
        instance = item if isinstance(item, str) else item.instance
        if service is not None and instance not in service.instances:
            problems.append(
                f"given.unhealthy[{index}]: {instance!r} is not an instance of {service.name}"
            )
    total_services = len(world.services)
    total_instances = sum(len(s.instances) for s in world.services.values())
    if given.alerting.services is not None and given.alerting.services > total_services:
        problems.append(
            f"given.alerting.services: {given.alerting.services} is more than the "
            f"{total_services} configured services"
        )
    if given.alerting.instances is not None and given.alerting.instances > total_instances:
        problems.append(
            f"given.alerting.instances: {given.alerting.instances} is more than the "
            f"{total_instances} configured instances"
        )


def build_facts(config: Config, case: Case, *, rules: Sequence[str] | None = None) -> Facts:
    """The facts of a verdict, as the manager would gather them for this situation (`rules`:
    the policy's rule names, when already known). Raises CaseError naming each field that does
    not fit the configuration."""
    world = _World(config)
    given = case.given
    problems: list[str] = []
    service = world.services.get(given.service)
    if service is None:
        known = ", ".join(world.services) or "none"
        raise CaseError([f"given.service: unknown service {given.service!r} (services: {known})"])
    _check_names(world, given, problems)
    names = list(rules) if rules is not None else rule_names(config)
    for index, rule in enumerate(case.expect.rules):
        if rule not in names:
            problems.append(
                f"expect.rules[{index}]: no rule named {rule!r} (rules: {', '.join(names)})"
            )
    now = given.now.astimezone(UTC) if given.now is not None else DEFAULT_NOW
    target_service = world.owner.get(given.target)

    def labels_for(runbook: Runbook | None) -> dict[str, str]:
        labels = {"alertname": "Alert"}
        if runbook is not None:
            labels.update(label_literals(runbook))
        labels["service"] = service.name
        if world.is_instance(given.target):
            labels["instance"] = given.target
        labels.update(given.labels)
        return labels

    def variables_for(
        labels: dict[str, str], runbook: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        return condition_variables(
            service=service,
            service_name=service.name,
            autonomy=service.autonomy,
            labels=labels,
            incident_id=f"inc-{case.name}",
            action=given.action,
            runbook=runbook,
            params=params,
            target=given.target,
            target_service=target_service or "",
            now=now,
            source="table-test",
            fingerprint=f"{labels.get('alertname', '')}:{labels.get('instance', '')}",
            flapping=given.flapping,
        )

    def holds(runbook: Runbook) -> bool:
        variables = variables_for(labels_for(runbook), runbook.name, {})
        return Condition.compile(runbook.when).holds(variables)

    runbook, step = _choose_runbook(world, given, holds, problems)
    if problems or runbook is None:
        raise CaseError(problems)
    labels = labels_for(runbook)
    params = dict(runbook.do[step].params)
    variables = variables_for(labels, runbook.name, params)
    autonomy = service.autonomy
    if runbook.autonomy is not None:
        autonomy = min(autonomy, runbook.autonomy)

    history = sorted(
        (
            ActionRecord(
                now - past.ago,
                past.action,
                past.target,
                past.service or world.owner.get(past.target) or service.name,
                past.runbook or runbook.name,
            )
            for past in given.history
        ),
        key=lambda record: record.at,
    )
    in_flight: dict[str, int] = {}
    for target in given.in_flight:
        where = world.owner[target]
        in_flight[where] = in_flight.get(where, 0) + 1
    down = sorted({n for g in config.policy.guardrails if g.blast for n in g.blast.down_alerts})
    firing: dict[str, set[str]] = {}
    for item in given.unhealthy:
        if isinstance(item, str):
            firing.setdefault(item, set()).update(down or ["InstanceDown"])
        else:
            firing.setdefault(item.instance, set()).add(item.alert)
    signal_instance = labels.get("instance", "")
    alerting = set(firing)
    if world.is_instance(signal_instance):
        alerting.add(signal_instance)
        if signal_instance in service.instances:
            firing.setdefault(signal_instance, set()).add(labels.get("alertname", ""))
    alerting_services = 1 if labels.get("service") in world.services else 0
    return Facts(
        proposal=Proposal(
            agent="runbook",
            runbook=runbook.name,
            step=step,
            action=given.action,
            target=given.target,
            rationale=f"table test {case.name!r}",
            params=params,
            timeout_s=runbook.do[step].timeout.total_seconds(),
        ),
        now=now,
        incident_service=service.name,
        target_service=target_service,
        target_known=target_service is not None,
        autonomy=autonomy,
        approved_by=given.approved_by,
        history=tuple(history),
        in_flight_by_service=in_flight,
        service_size=len(service.instances),
        service_instances=tuple(service.instances),
        in_flight_targets=frozenset(t for t in given.in_flight if world.owner[t] == service.name),
        firing_by_instance={i: frozenset(names) for i, names in firing.items()},
        alerting_services=(
            given.alerting.services if given.alerting.services is not None else alerting_services
        ),
        total_services=len(world.services),
        alerting_instances=(
            given.alerting.instances if given.alerting.instances is not None else len(alerting)
        ),
        total_instances=sum(len(s.instances) for s in world.services.values()),
        variables=prepare(variables),
    )


# ---------------------------------------------------------------------------- running


def judge(case: Case, verdict: PolicyEvaluated) -> tuple[str, ...]:
    """What differs between the expectation and the verdict (empty: the case passes)."""
    failures: list[str] = []
    expect = case.expect
    if verdict.verdict != expect.verdict:
        failures.append(f"expected {expect.verdict}, got {verdict.verdict}")
    fired = [outcome.rule for outcome in verdict.rules]
    for rule in expect.rules:
        if rule not in fired:
            failures.append(
                f"expected rule {rule!r} to have an opinion; those that did: "
                f"{', '.join(fired) or 'none'}"
            )
    if expect.reason_contains is not None and expect.reason_contains not in verdict.reason:
        failures.append(
            f"expected the reason to contain {expect.reason_contains!r}; it is {verdict.reason!r}"
        )
    return tuple(failures)


def run_cases(config: Config, cases: Iterable[TableCase]) -> list[CaseResult]:
    """Every case's result; CaseError (before anything runs) when a case does not fit the
    configuration."""
    policy = Policy(config)
    names = [rule.name for rule in policy.rules]
    prepared: list[tuple[TableCase, Facts]] = []
    problems: list[str] = []
    for table_case in cases:
        try:
            prepared.append((table_case, build_facts(config, table_case.case, rules=names)))
        except CaseError as error:
            problems.extend(f"{table_case.where}: {p}" for p in error.problems)
    if problems:
        raise CaseError(problems)
    results: list[CaseResult] = []
    for table_case, facts in prepared:
        verdict = policy.evaluate(
            facts, command_id="cmd-table-test", incident_id=f"inc-{table_case.case.name}"
        )
        failures = judge(table_case.case, verdict)
        results.append(
            CaseResult(
                file=table_case.file,
                name=table_case.case.name,
                passed=not failures,
                verdict=verdict.verdict,
                reason=verdict.reason,
                rules=tuple(verdict.rules),
                failures=failures,
            )
        )
    return results
