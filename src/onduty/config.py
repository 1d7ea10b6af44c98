"""The onduty.yaml model: validated, with errors that name the field and the reason.

The whole validated configuration travels into the log as a `PolicyActivated` event, named by
the content hash of its canonical JSON; the core reads its configuration only from there, so a
replay always runs against the configuration that was live at the time.
"""

from __future__ import annotations

import difflib
import hashlib
import types
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from onduty.act.specs import (
    AlertmanagerSilenceSpec,
    HttpSpec,
    ShellSpec,
    SupervisorSpec,
    parse_actuators,
)
from onduty.api.access_config import AccessConfig, parse_access
from onduty.config_advisor import AdvisorSettings
from onduty.config_checkpoints import CheckpointSettings
from onduty.config_fleet import FleetSettings, deployment_problems
from onduty.config_learning import LearningSettings
from onduty.config_policy import (
    GUARDRAIL_KINDS,
    Approvals,
    BlastRadius,
    Breaker,
    Concurrency,
    Condition,
    Freeze,
    FreezeRange,
    Guardrail,
    OutageBrake,
    Policy,
    RateLimit,
)
from onduty.config_quality import QualitySettings
from onduty.config_retention import RetentionSettings
from onduty.config_runbooks import ProbeCheck, PrometheusCheck, Runbook, Step, Template, Verify
from onduty.config_server import HostName, Network, ServerSettings, Telemetry
from onduty.config_similar import SimilarSettings
from onduty.correlate.inhibition import InhibitRule
from onduty.escalate.specs import AnyChannel, parse_channels
from onduty.events import to_json
from onduty.sense.specs import HttpProbe, PrometheusQuery, parse_sources
from onduty.values import (
    Autonomy,
    AutonomyLevel,
    Duration,
    FieldProblems,
    SectionProblems,
    describe_validation_error,
    format_duration,
    format_seconds,
    line_of,
    loc_of,
    parse_duration,
    unique_names,
)

# Duration and the validation helpers live below every layer (onduty.values); they are
# re-exported here for the modules that still import them from the configuration.
from onduty.values import ConfigModel as Model

__all__ = [
    "GUARDRAIL_KINDS",
    "Approvals",
    "Autonomy",
    "AutonomyLevel",
    "BlastRadius",
    "Breaker",
    "Concurrency",
    "Condition",
    "Config",
    "ConfigError",
    "Correlation",
    "Duration",
    "Escalation",
    "Freeze",
    "FreezeRange",
    "Guardrail",
    "HostName",
    "Model",
    "Network",
    "OutageBrake",
    "Policy",
    "ProbeCheck",
    "PrometheusCheck",
    "RateLimit",
    "Runbook",
    "ServerSettings",
    "Service",
    "SimilarSettings",
    "Step",
    "Telemetry",
    "Template",
    "Tier",
    "Verify",
    "describe_validation_error",
    "field_names",
    "format_duration",
    "format_seconds",
    "model_at",
    "parse_config",
    "parse_config_text",
    "parse_duration",
    "policy_version",
    "sections",
]


class Service(Model):
    """A service onduty looks after. An alert belongs to the service its `service` label names;
    without one, to the service whose `instances` list its `instance` label (or else its `job`
    label); else to no service, and acting on what onduty cannot place is never autonomous (it
    counts as autonomy `suggest`: proposed to humans, not run)."""

    name: str = Field(min_length=1)
    """The service's name: what a signal's `service` label names, and what `service.name` is in
    conditions."""
    tier: Literal["critical", "high", "standard", "low"] = "standard"
    """How critical it is (`critical`, `high`, `standard`, `low`); conditions read it as
    `service.tier`."""
    region: str = ""
    """Where it runs, free text; conditions read it as `service.region`."""
    autonomy: AutonomyLevel = Autonomy.SUGGEST
    """How far onduty may go on its own: `observe` (record only), `suggest` (propose to humans),
    `approve` (act once a human approves), `act` (act within the guardrails). `onduty autonomy
    SERVICE LEVEL` changes it on a running server."""
    instances: list[str] = Field(default_factory=list)
    """Its instances (host or program names). An alert without a `service` label whose `instance`
    (or `job`) label is one of them belongs to this service; an action's target must be one of them
    (or the service itself), else the `known-target` guardrail refuses it. Each instance belongs to
    one service."""

    _unique = field_validator("instances")(
        unique_names("an instance name cannot be empty", "instance {name!r} is listed twice")
    )


class Correlation(Model):
    group_by: list[str] = Field(default_factory=lambda: ["service", "alertname"], min_length=1)
    """The labels whose values make one incident: signals with the same values (a missing label
    counts as empty) join the open incident of that group, as in Alertmanager's `group_by`."""
    group_wait: Duration = timedelta(seconds=0)
    """How long a new incident waits for more signals of its group before onduty plans what to
    do."""
    flap_threshold: int = Field(default=4, ge=2)
    """A signal that changes state (firing, resolved) this many times within `flap_window` is
    flapping: automatic actions on its incident pause and a human is paged."""
    flap_window: Duration = timedelta(minutes=15)
    """The window `flap_threshold` counts state changes in; a flapping incident closes only once
    calm for a whole window."""
    resolve_timeout: Duration | None = None
    """A firing signal not heard of for this long counts as resolved (for sources that never send a
    resolution); unset: wait for the source to say so."""
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)
    """Alerts that explain others: while a source alert fires, matching target alerts with the same
    `equal` labels are muted (recorded, never acted on), as in Alertmanager."""


class Tier(Model):
    """Who is paged, through which channels (in fallback order), and how long to wait for an
    acknowledgement before the next tier; the last tier repeats every `wait` until someone
    acknowledges (the incident is then overdue)."""

    notify: list[str] = Field(min_length=1)
    """The channels paged, in fallback order (the next is tried when one fails). A name that is no
    configured channel pages nobody (`onduty config check` warns)."""
    wait: Duration = timedelta(minutes=5)
    """How long to wait for an acknowledgement before paging the next tier (the last tier repeats
    every `wait`)."""


class Escalation(Model):
    default: list[Tier] = Field(default_factory=lambda: [Tier(notify=["on-call"])], min_length=1)
    """The tiers of every service without its own."""
    services: dict[str, list[Tier]] = Field(default_factory=dict)
    """Escalation policies of particular services; the others use `default`."""
    repeat_last: int = Field(default=3, ge=0)
    """How many times the last tier is paged again while nobody acknowledges."""

    def tiers(self, service: str | None) -> list[Tier]:
        return self.services.get(service or "", self.default) or self.default


RawSection = list[dict[str, Any]]


def _checked_by(parse: Callable[[RawSection], object], section: str) -> AfterValidator:
    """A section another layer owns, validated by that layer's models (pollers by sense,
    actuators by act, channels by escalate) and kept raw here; each problem names its field."""

    def check(raw: RawSection) -> RawSection:
        try:
            parse(raw)
        except ValidationError as error:
            raise SectionProblems(describe_validation_error(error, prefix=section)) from None
        except FieldProblems as error:
            raise SectionProblems(error.problems) from None
        return raw

    return AfterValidator(check)


def _check_access(raw: dict[str, Any]) -> dict[str, Any]:
    """Access control (tokens, roles, ingest secrets) is validated by the API layer's models."""
    try:
        AccessConfig.model_validate(raw or {})
    except ValidationError as error:
        raise SectionProblems(describe_validation_error(error, prefix="access")) from None
    parse_access(raw)  # what else the API layer checks; raises ValueError naming the field
    return raw


class Config(Model):
    store: str = "sqlite:///onduty.db"
    """Where the event log lives: `sqlite:///path/to/file.db` (a path relative to the working
    directory), a plain path, or `postgresql://HOST/DB?schema=NAME` (shared by several
    managers). `onduty serve --store` overrides it."""
    bus: str = "memory"
    """How signals reach the core: `memory` (in the process; the default) or
    `nats://HOST:PORT` (NATS JetStream, to the managers of a fleet; needs a PostgreSQL store)."""
    sources: Annotated[RawSection, _checked_by(parse_sources, "sources")] = Field(
        default_factory=list
    )
    """Pollers that turn what they observe into signals (`http_probe`, `prometheus`): see "sources"
    below."""
    actuators: Annotated[RawSection, _checked_by(parse_actuators, "actuators")] = Field(
        default_factory=list
    )
    """What carries out the runbooks' actions, routed by action name (`process.restart`) or family
    (`process.*`): see "actuators" below. An action no actuator provides is recorded as failed
    (`onduty config check` warns)."""
    channels: Annotated[RawSection, _checked_by(parse_channels, "channels")] = Field(
        default_factory=list
    )
    """Where people are paged (`webhook`, `slack`, `email`, `pagerduty`), by the names the
    escalation tiers use: see "channels" below."""
    access: Annotated[dict[str, Any], AfterValidator(_check_access)] = Field(default_factory=dict)
    """Who may do what over HTTP (tokens, roles, ingest credentials): see "access" below. Without
    tokens `serve` listens on loopback only."""
    server: ServerSettings = Field(default_factory=ServerSettings)
    """How `onduty serve` meets the network."""
    telemetry: Telemetry = Field(default_factory=Telemetry)
    """Traces of onduty's own work, exported over OTLP (off by default)."""
    checkpoints: CheckpointSettings = Field(default_factory=CheckpointSettings)
    """Signed checkpoints of the log and the witnesses they are exported to."""
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    """How long events stay in the live store before they are sealed into archives."""
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    """Several managers on PostgreSQL and NATS JetStream: partitions, region, leases."""
    quality: QualitySettings = Field(default_factory=QualitySettings)
    """How each source's signals are judged (silence, clock skew, drift, rejects, duplicates,
    label cardinality) and which problems put onduty in safe mode."""
    learning: LearningSettings = Field(default_factory=LearningSettings)
    """The learning agent: whether it ranks the runbooks' actions by what verified before, how
    it chooses and learns, and when it stops trusting its model."""
    advisor: AdvisorSettings = Field(default_factory=AdvisorSettings)
    """The advisor agent: whether a language model is asked for a proposal, when, how often, how
    far its proposals may go on their own, and where it answers."""
    similar: SimilarSettings = Field(default_factory=SimilarSettings)
    """Similar incidents: how the closed incidents most like an incident are found, how many
    are kept to compare with, and whether escalation messages name them."""
    snapshot_every: int = Field(default=10_000, ge=1)
    """Save a snapshot of the core's state every this many events; a restart folds at most this many
    events after the newest trusted one (snapshots cost the core thread time)."""
    services: list[Service] = Field(default_factory=list)
    """The services onduty looks after and their instances: how alerts are placed, how autonomous
    onduty may be."""
    correlation: Correlation = Field(default_factory=Correlation)
    """How signals become incidents: grouping, waiting, flapping, inhibition, timeouts."""
    runbooks: list[Runbook] = Field(default_factory=list)
    """What to do about an incident: a CEL condition on its signal, the steps, how to verify them
    and how to undo them."""
    policy: Policy = Field(default_factory=Policy)
    """The guardrails every proposed action passes, the approvals and the circuit breaker."""
    escalation: Escalation = Field(default_factory=Escalation)
    """Who is paged when a human must decide, in tiers, until someone acknowledges."""

    def _fleet_quality_problems(self) -> list[str]:
        """A fleet's partitions each judge only the signals routed to them: a source's silence
        and the drift of its mix need all of its signals in one place."""
        if self.bus == "memory":
            return []
        why = "a fleet's partitions each see only part of a source's signals"
        problems = []
        if self.quality.heartbeats:
            problems.append(f"quality.heartbeats: not judged on a fleet yet: {why}")
        if self.quality.drift is not None:
            problems.append(f"quality.drift: not judged on a fleet yet: {why}")
        return problems

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        problems = [
            *_unique_names("services", [s.name for s in self.services]),
            *_unique_names("runbooks", [r.name for r in self.runbooks]),
            *_unique_names("policy.guardrails", [g.name for g in self.policy.guardrails]),
            *deployment_problems(self.store, self.bus),
            *self._fleet_quality_problems(),
        ]
        owners: dict[str, str] = {}
        for index, service in enumerate(self.services):
            for position, instance in enumerate(service.instances):
                if instance in owners:
                    problems.append(
                        f"services[{index}].instances[{position}]: {instance!r} already belongs "
                        f"to service {owners[instance]!r}"
                    )
                else:
                    owners[instance] = service.name
        known = {service.name for service in self.services}
        problems += [
            f"{problem}: give each source one interval"
            for problem in _unique_names(
                "quality.heartbeats", [beat.source for beat in self.quality.heartbeats], "source"
            )
        ]
        for index, beat in enumerate(self.quality.heartbeats):
            for position, name in enumerate(beat.services):
                if name not in known:
                    problems.append(
                        f"quality.heartbeats[{index}].services[{position}]: {name!r} is not a "
                        "service in `services:`"
                    )
        if problems:
            raise FieldProblems(problems)
        return self

    def policy_document(self) -> dict[str, Any]:
        """What the core decides by: everything except the shell's own settings (where the log
        lives, the bus, the pollers that feed it)."""
        # A policy without a `quality:` section keeps the version it had before the section
        # existed, so recorded verdicts still name their policy's version.
        unjudged = {"quality"} if self.quality == QualitySettings() else set()
        # The model a configuration names is versioned by its own hash, not the policy's.
        learning = self.learning.model_copy(update={"model": None})
        if learning == LearningSettings():
            unjudged.add("learning")
        # Where the model answers is the shell's business: the advice itself is recorded.
        advisor = self.advisor.model_copy(update={"endpoint": AdvisorSettings().endpoint})
        if advisor == AdvisorSettings():
            unjudged.add("advisor")
        shell = (
            "store",
            "bus",
            "sources",
            "actuators",
            "channels",
            "access",
            "server",
            "telemetry",
            "checkpoints",
            "retention",
            "fleet",
            "similar",
        )
        excluded: dict[str, Any] = {name: True for name in (*unjudged, *shell)}
        if "learning" not in unjudged:
            excluded["learning"] = {"model": True}
        if "advisor" not in unjudged:
            excluded["advisor"] = {"endpoint": True}
        return self.model_dump(mode="json", exclude=excluded)

    @property
    def version(self) -> str:
        return policy_version(self.policy_document())


def policy_version(document: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(to_json(document)).hexdigest()[:16]


def _unique_names(where: str, names: list[str], field: str = "name") -> list[str]:
    first: dict[str, int] = {}
    problems = []
    for index, name in enumerate(names):
        if name in first:
            problems.append(
                f"{where}[{index}].{field}: the {field} {name!r} is already used by "
                f"{where}[{first[name]}]"
            )
        else:
            first[name] = index
    return problems


class ConfigError(ValueError):
    """A configuration that cannot be used; `problems` name each field and its reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


ModelT = TypeVar("ModelT", bound=BaseModel)


def validate_document(model: type[ModelT], document: Any, source: str) -> ModelT:
    """Validate a parsed document (a configuration, a scenario) as `model`; raise ConfigError
    naming every bad field."""
    if not isinstance(document, dict):
        raise ConfigError(source, ["(top level): expected a mapping of settings"])
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise ConfigError(source, describe_validation_error(error)) from None


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML text; a syntax error is a ConfigError saying where it is."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        reason = getattr(error, "problem", None) or str(error)
        raise ConfigError(source, [f"{where}: not valid YAML: {reason}"]) from None


def parse_config(document: Any, source: str = "<config>") -> Config:
    """Validate a parsed document (none: every default); raise ConfigError naming every bad
    field."""
    return validate_document(Config, {} if document is None else document, source)


def parse_config_text(text: str, source: str = "<config>") -> Config:
    """Validate a YAML document; each problem names its field and the line it is on."""
    document = read_yaml(text, source)
    nodes = yaml.compose(text, Loader=yaml.SafeLoader)  # the text parsed: this cannot fail
    try:
        return parse_config(document, source)
    except ConfigError as error:
        error.problems = [_placed(problem, document, nodes) for problem in error.problems]
        error.args = (f"{source}: " + "; ".join(error.problems),)
        raise


# ---------------------------------------------------------------------------- where problems are

_UNKNOWN = "unknown field (check its spelling and indentation)"


def _placed(problem: str, document: Any, nodes: yaml.Node | None) -> str:
    """A problem with the line it is on and, for an unknown field, the field meant."""
    path, sep, message = problem.partition(": ")
    loc = loc_of(path) if sep else None
    if loc is None:
        return problem
    line = line_of(nodes, loc) if loc else None
    where = f"line {line}" if line else ""
    if message == _UNKNOWN and loc:
        known = field_names(model_at(document, loc[:-1]))
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "check its spelling and indentation"
        return f"{path}: unknown field ({'; '.join(filter(None, (where, hint)))})"
    return f"{problem} ({where})" if where else problem


def sections() -> dict[str, Any]:
    """The sections whose models other packages own, as the types their models have."""
    actuator = ShellSpec | HttpSpec | SupervisorSpec | AlertmanagerSilenceSpec
    return {
        "sources": list[HttpProbe | PrometheusQuery],
        "actuators": list[actuator],
        "channels": list[AnyChannel],
        "access": AccessConfig,
    }


def _unwrap(annotation: Any, value: Any) -> Any:
    """The model (or container type) an annotation stands for, given the value it holds:
    Annotated and Optional are seen through; a union is decided by the value's `kind`."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        kind = value.get("kind") if isinstance(value, dict) else None
        for model in models:
            field = model.model_fields.get("kind")
            if field is not None and kind in (get_args(field.annotation) or (field.default,)):
                return model
        if len(members) == 1:
            return _unwrap(members[0], value)
        return models[0] if len(models) == 1 else None
    return annotation


def model_at(document: Any, loc: tuple[str | int, ...]) -> Any:
    """The model that validates the part of `document` at `loc` (None when unknown)."""
    current: Any = Config
    value = document
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            fields = {f.alias or name: f for name, f in current.model_fields.items()}
            field = fields.get(part)
            if field is None:
                return None
            annotation: Any = field.annotation
            if current is Config and part in sections():
                annotation = sections()[part]
            if field.metadata:
                annotation = Annotated[(annotation, *field.metadata)]
        elif get_origin(current) is list and isinstance(part, int):
            annotation = get_args(current)[0]
        elif get_origin(current) is dict and isinstance(part, str):
            annotation = get_args(current)[1]
        else:
            return None
        value = (
            value.get(part)
            if isinstance(value, dict)
            else (
                value[part]
                if isinstance(value, list) and isinstance(part, int) and part < len(value)
                else None
            )
        )
        current = _unwrap(annotation, value)
        if current is None:
            return None
    return current


def field_names(model: Any) -> list[str]:
    """The fields a model accepts, as a document spells them."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    return [field.alias or name for name, field in model.model_fields.items()]
