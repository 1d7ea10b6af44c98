"""The learning agent's model: how often each action verified, by incident kind, and a ranking
of candidate actions by that record.

Pure: no I/O, no clock, no ambient randomness. The posterior is a Beta(alpha, beta) per (signature,
action) kept as counts of verified and failed outcomes, so updates commute and a model is the
same whatever order its outcomes were learned in. Thompson sampling draws from a small seeded
generator (splitmix64) whose seed comes from an event id (`seed_from`), so a ranking replays
exactly; the UCB mode draws nothing at all.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

FEATURE_SCHEMA_VERSION = "incident-features/1"

RESTART_BUCKETS = ("never", "under-1h", "under-1d", "older")
"""Hours since the target's last restart, bucketed: none on record, < 1 h, < 24 h, older."""

SIGNATURE_LEVELS: tuple[tuple[str, ...], ...] = (
    ("alertname", "service", "recent_deploy", "since_restart"),
    ("alertname", "service", "recent_deploy"),
    ("alertname", "recent_deploy"),
    ("alertname",),
)
"""The keys the posterior is kept by, finest first; a ranking backs off to a coarser one when a
finer one holds too little evidence for an action."""

Signature = tuple[tuple[str, str], ...]
"""A signature: (feature, bucketed value) pairs in the order of its level."""


def restart_bucket(hours: float | None) -> str:
    """The bucket of the hours since a target's last restart (None: no restart on record)."""
    if hours is None:
        return RESTART_BUCKETS[0]
    if hours < 1:
        return RESTART_BUCKETS[1]
    if hours < 24:
        return RESTART_BUCKETS[2]
    return RESTART_BUCKETS[3]


@dataclass(frozen=True)
class IncidentFeatures:
    """What the learner knows of an incident when an action is proposed for it."""

    alertname: str
    service: str
    recent_deploy: bool
    """A deploy-ish signal (label, annotation or alert name) was seen for the service within the
    deploy window before the proposal."""
    since_restart: str = RESTART_BUCKETS[0]
    """Hours since the target's last restart, bucketed (`restart_bucket`)."""

    def __post_init__(self) -> None:
        if self.since_restart not in RESTART_BUCKETS:
            raise ValueError(
                f"since_restart: {self.since_restart!r} is not one of {', '.join(RESTART_BUCKETS)}"
            )

    def value(self, name: str) -> str:
        if name == "recent_deploy":
            return "yes" if self.recent_deploy else "no"
        return str(getattr(self, name))

    def signatures(self) -> tuple[Signature, ...]:
        """Every signature of these features, finest first."""
        return tuple(
            tuple((name, self.value(name)) for name in level) for level in SIGNATURE_LEVELS
        )

    def signature(self) -> Signature:
        """The finest signature: the key the posterior is first looked up by."""
        return self.signatures()[0]

    def values(self) -> list[str]:
        """The features as the values of the finest signature (what the core records)."""
        return [value for _, value in self.signature()]

    @classmethod
    def from_values(cls, values: Sequence[str]) -> IncidentFeatures:
        alertname, service, deploy, restart = values
        return cls(alertname, service, deploy == "yes", restart)

    def kind(self) -> str:
        """The incident's kind as drift is judged by: its alert, and whether a deploy came
        before it."""
        return f"{self.alertname} ({'after a deploy' if self.recent_deploy else 'no deploy'})"


def describe(signature: Signature) -> str:
    """A signature in words: "HighErrorRate on payments after a deploy"."""
    values = dict(signature)
    words = values.get("alertname", "any alert")
    if "service" in values:
        words += f" on {values['service']}"
    if values.get("recent_deploy") == "yes":
        words += " after a deploy"
    elif values.get("recent_deploy") == "no":
        words += " with no recent deploy"
    restart = values.get("since_restart")
    if restart == "never":
        words += ", target never restarted before"
    elif restart is not None:
        words += f", target restarted {restart.replace('-', ' ')} before"
    return words


class Outcome(StrEnum):
    """How an action ended, as the learner counts it."""

    VERIFIED = "verified"
    VERIFY_FAILED = "verify_failed"
    ACTION_FAILED = "action_failed"
    UNDONE = "undone"
    RECURRED = "recurred"
    """Verified, but its alert fired again on its target within the recurrence window."""

    @property
    def success(self) -> bool:
        return self is Outcome.VERIFIED


@dataclass(frozen=True)
class Prior:
    alpha: float = 1.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and self.beta > 0):
            raise ValueError(f"prior: alpha and beta must be > 0, not {self.alpha}, {self.beta}")


@dataclass(frozen=True)
class Record:
    """The outcomes of one action under one signature."""

    successes: int = 0
    failures: int = 0

    @property
    def count(self) -> int:
        return self.successes + self.failures

    def add(self, success: bool) -> Record:
        if success:
            return Record(self.successes + 1, self.failures)
        return Record(self.successes, self.failures + 1)


@dataclass(frozen=True)
class Evidence:
    """What the posterior says of one action for some features: the signature it was read at,
    the record there, and the Beta distribution it gives."""

    action: str
    signature: Signature
    record: Record
    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def quantile(self, p: float) -> float:
        return beta_quantile(p, self.alpha, self.beta)


@dataclass
class Posterior:
    """Beta(alpha0 + verified, beta0 + failed) per (signature, action), at every signature level."""

    prior: Prior = field(default_factory=Prior)
    min_evidence: int = 3
    """A signature with fewer outcomes of an action than this backs off to a coarser one."""
    table: dict[tuple[Signature, str], Record] = field(default_factory=dict)

    def observe(self, features: IncidentFeatures, action: str, outcome: Outcome) -> None:
        for signature in features.signatures():
            key = (signature, action)
            self.table[key] = self.table.get(key, Record()).add(outcome.success)

    def add(self, features: IncidentFeatures, action: str, successes: int, failures: int) -> None:
        """Add counts (a correction may be negative: a fix that did not last is moved from
        the verified to the failed) at every signature level of `features`."""
        for signature in features.signatures():
            key = (signature, action)
            found = self.table.get(key, Record())
            self.table[key] = Record(found.successes + successes, found.failures + failures)

    def copy(self) -> Posterior:
        return Posterior(prior=self.prior, min_evidence=self.min_evidence, table=dict(self.table))

    def record(self, signature: Signature, action: str) -> Record:
        return self.table.get((signature, action), Record())

    def evidence(self, features: IncidentFeatures, action: str) -> Evidence:
        """The finest signature with enough outcomes of `action`; else the finest with any;
        else the coarsest (the prior alone)."""
        signatures = features.signatures()
        chosen = next(
            (s for s in signatures if self.record(s, action).count >= self.min_evidence),
            next((s for s in signatures if self.record(s, action).count > 0), signatures[-1]),
        )
        found = self.record(chosen, action)
        return Evidence(
            action=action,
            signature=chosen,
            record=found,
            alpha=self.prior.alpha + found.successes,
            beta=self.prior.beta + found.failures,
        )

    def rows(self) -> list[tuple[Signature, str, Record]]:
        """The table in a stable order (for an artifact)."""
        return sorted(((s, a, r) for (s, a), r in self.table.items()), key=lambda row: row[:2])

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[Signature, str, Record]],
        prior: Prior | None = None,
        min_evidence: int = 3,
    ) -> Posterior:
        table = {(signature, action): record for signature, action, record in rows}
        return cls(prior=prior or Prior(), min_evidence=min_evidence, table=table)


# --- a seeded generator and the Beta distribution, in pure Python ---------------------------

MASK64 = (1 << 64) - 1


def seed_from(event_id: str, salt: str = "learner") -> int:
    """A 64-bit seed derived from an event id: the same event always gives the same draws."""
    digest = hashlib.sha256(f"onduty/{salt}/{event_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class SplitMix64:
    """splitmix64 (Steele, Lea, Flood 2014): small, fast, and well mixed from any seed."""

    def __init__(self, seed: int) -> None:
        self.state = seed & MASK64

    def next64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self) -> float:
        """A draw in (0, 1), never 0 or 1."""
        return ((self.next64() >> 11) + 0.5) / float(1 << 53)

    def normal(self) -> float:
        """A standard normal draw (Box-Muller)."""
        return math.sqrt(-2.0 * math.log(self.uniform())) * math.cos(2 * math.pi * self.uniform())

    def gamma(self, shape: float) -> float:
        """A Gamma(shape, 1) draw (Marsaglia-Tsang; boosted for shape < 1)."""
        if shape < 1:
            boost: float = self.uniform() ** (1 / shape)
            return self.gamma(shape + 1) * boost
        d = shape - 1 / 3
        c = 1 / math.sqrt(9 * d)
        while True:
            x = self.normal()
            v = (1 + c * x) ** 3
            if v <= 0:
                continue
            u = self.uniform()
            if math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
                return d * v

    def beta(self, alpha: float, beta: float) -> float:
        x = self.gamma(alpha)
        y = self.gamma(beta)
        return x / (x + y)


def _beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of the regularized incomplete beta function (Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    """P(X <= x) for X ~ Beta(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(x, a, b) / a
    return 1 - front * _beta_fraction(1 - x, b, a) / b


def beta_quantile(p: float, a: float, b: float) -> float:
    """The x with P(X <= x) = p for X ~ Beta(a, b) (bisection: monotone in a and b)."""
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if beta_cdf(middle, a, b) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2


# --- ranking -----------------------------------------------------------------------------


class Mode(StrEnum):
    THOMPSON = "thompson"
    """Order by one draw from each action's posterior: explores while it learns."""
    UCB = "ucb"
    """Order by the upper end of each action's credible interval: optimistic, draws nothing."""


@dataclass(frozen=True)
class RankedAction:
    """One candidate action, where it ranks and why."""

    action: str
    score: float
    """What it was ranked by: a Thompson draw or the upper credible bound."""
    estimate: float
    """The posterior mean probability that the action verifies."""
    interval: tuple[float, float]
    """The central credible interval of that probability."""
    evidence: int
    """How many recorded outcomes the estimate rests on."""
    signature: Signature
    rationale: str


@dataclass(frozen=True)
class Ranker:
    posterior: Posterior
    mode: Mode = Mode.THOMPSON
    credibility: float = 0.9
    """The mass of the credible interval (0.9: from the 5th to the 95th percentile)."""

    def rank(
        self, features: IncidentFeatures, candidates: Sequence[str], seed: int
    ) -> list[RankedAction]:
        """The candidates, most likely to verify first. Candidates are taken in the order given
        (the runbook order), which also breaks ties; the same inputs and seed give the same
        ranking."""
        options = [(features, action) for action in dict.fromkeys(candidates)]
        return [entry for _, entry in self.rank_options(options, seed)]

    def rank_options(
        self, options: Sequence[tuple[IncidentFeatures, str]], seed: int
    ) -> list[tuple[int, RankedAction]]:
        """Options (features as seen from each one's target, and its action) ranked, each with
        its index in `options`: the order given breaks ties, and the draws are taken in that
        order from one generator seeded with `seed`."""
        generator = SplitMix64(seed)
        tail = (1 - self.credibility) / 2
        ranked: list[tuple[tuple[float, float], int, RankedAction]] = []
        for position, (features, action) in enumerate(options):
            found = self.posterior.evidence(features, action)
            interval = (found.quantile(tail), found.quantile(1 - tail))
            if self.mode is Mode.THOMPSON:
                score = generator.beta(found.alpha, found.beta)
            else:
                score = interval[1]
            entry = RankedAction(
                action=action,
                score=score,
                estimate=found.mean,
                interval=interval,
                evidence=found.record.count,
                signature=found.signature,
                rationale=rationale(found),
            )
            ranked.append(((score, found.mean), position, entry))
        ranked.sort(key=lambda item: (-item[0][0], -item[0][1], item[1]))
        return [(position, entry) for _, position, entry in ranked]


def rationale(found: Evidence) -> str:
    """In words: "deploy.rollback verified 9 of 11 times for HighErrorRate on payments after a
    deploy"."""
    where = describe(found.signature)
    if found.record.count == 0:
        return (
            f"{found.action} has no recorded outcome for {where}; prior estimate {found.mean:.0%}"
        )
    times = "time" if found.record.count == 1 else "times"
    return (
        f"{found.action} verified {found.record.successes} of {found.record.count} {times} "
        f"for {where}"
    )


def signature_from(mapping: Mapping[str, str]) -> Signature:
    """A signature back from its JSON form, checked against the levels this schema knows."""
    level = next((level for level in SIGNATURE_LEVELS if set(level) == set(mapping)), None)
    if level is None:
        names = ", ".join(sorted(mapping)) or "(none)"
        raise ValueError(f"signature fields {names} are not a known level")
    return tuple((name, str(mapping[name])) for name in level)


class ModelBodyProblem(ValueError):
    """A model artifact's content that cannot be read (names the field)."""


def posterior_from_body(body: Mapping[str, object]) -> Posterior:
    """The posterior an artifact's content holds (`onduty learn train`), checked field by field;
    pure, so the core reads a `ModelActivated` event's model as training wrote it."""
    try:
        prior_field = body["prior"]
        rows_field = body["posterior"]
        min_evidence = int(str(body["min_evidence"]))
        if not isinstance(prior_field, Mapping) or not isinstance(rows_field, list):
            raise TypeError("prior must be an object and posterior a list")
        prior = Prior(float(prior_field["alpha"]), float(prior_field["beta"]))
        rows = [
            (
                signature_from(row["signature"]),
                str(row["action"]),
                Record(int(row["successes"]), int(row["failures"])),
            )
            for row in rows_field
        ]
    except (KeyError, TypeError, ValueError) as error:
        raise ModelBodyProblem(f"posterior: {error}") from None
    return Posterior.from_rows(rows, prior=prior, min_evidence=min_evidence)


def kind_mix(posterior: Posterior, service: str) -> dict[str, int]:
    """How many outcomes of each incident kind (`IncidentFeatures.kind`) the posterior holds for
    a service: the mix a model was trained on."""
    level = SIGNATURE_LEVELS[1]
    mix: dict[str, int] = {}
    for (signature, _), record in posterior.table.items():
        values = dict(signature)
        if tuple(values) != level or values["service"] != service:
            continue
        kind = IncidentFeatures(
            values["alertname"], service, values["recent_deploy"] == "yes"
        ).kind()
        mix[kind] = mix.get(kind, 0) + record.count
    return mix
