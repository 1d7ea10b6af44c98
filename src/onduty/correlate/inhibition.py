"""Inhibition rules, as in Alertmanager: a firing alert mutes related ones.

    source_matchers: [alertname="RegionDown"]
    target_matchers: [alertname="InstanceDown"]
    equal: [region]

A target alert is inhibited by a rule when

1. the target matches the rule's `target_matchers`,
2. some *firing* source alert matches its `source_matchers`,
3. every label named in `equal` has the same value on both (a missing label is the empty
   string, so both missing counts as equal, as in Alertmanager), and
4. if the target also matches `source_matchers`, the source does **not** match
   `target_matchers` (Alertmanager's rule against two-sided matches: alerts matching both sides
   of a rule cannot inhibit each other). In particular an alert never inhibits itself: the
   only way it could be its own source is to match both sides, and then it is excluded.

Rules are tried in order; the first that inhibits is the answer.

## The index

`Inhibitor` keeps the firing alerts it is told about (`add_firing` / `remove_firing`) and, per
rule, the firing alerts that match the rule's source side, bucketed by the tuple of their
`equal` label values and split into *one-sided* sources (not matching the target side) and
*two-sided* ones. A question is then, per rule, one target-matcher test and one dictionary
lookup: O(rules x matchers), independent of how many alerts fire. Adding or removing an alert
costs the same. Nothing depends on the order in which alerts were added: when a source is
named (`inhibition`), it is the one with the smallest key.

An alert's identity is its key: by default the canonical text of its label set
(`format_labels`, which leaves out empty values), or one the caller gives (such as the
signal's fingerprint). Adding a key again with the same labels changes nothing; with other
labels it replaces the old ones.

The index is derived data: it is a function of the rules and the firing alerts, so the snapshot
is just the firing alerts (`to_list()`: `[{"key": ..., "labels": {...}}, ...]`, sorted by key),
and `Inhibitor.from_list(rules, data)` rebuilds it. Since the manager already keeps every
signal's labels and status, it can equally rebuild the inhibitor from its own state whenever
a policy activates or a snapshot is loaded, and never store it at all.

`scan_inhibition` is the same question answered by brute force over a given list of firing
alerts: the reference the index is tested against, and enough for small fleets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from onduty.correlate.matchers import MatcherList, Matchers, format_labels
from onduty.values import unique_names


class InhibitRule(BaseModel):
    """Mute alerts matching `target_matchers` while an alert matching `source_matchers` fires
    with the same values of the `equal` labels."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    name: str | None = None
    """A name for the rule, shown in the incident's timeline."""
    source_matchers: MatcherList
    """Label matchers (`alertname="RegionDown"`) an inhibiting alert matches."""
    target_matchers: MatcherList
    """Label matchers the muted alerts match."""
    equal: list[str] = Field(default_factory=list)
    """Labels whose values must be equal on both (a missing label counts as empty)."""

    @field_validator("source_matchers", "target_matchers")
    @classmethod
    def _some_matcher(cls, matchers: Matchers) -> Matchers:
        if not matchers:
            raise ValueError("needs at least one matcher (an empty list matches every alert)")
        return matchers

    _names = field_validator("equal")(
        unique_names(
            "a label name in `equal` cannot be empty", "label {name!r} is listed twice in `equal`"
        )
    )

    def describe(self) -> str:
        """The rule's name, or a readable summary of it."""
        if self.name:
            return self.name
        equal = f" on ({', '.join(self.equal)})" if self.equal else ""
        return f"{self.source_matchers} inhibits {self.target_matchers}{equal}"


@dataclass(frozen=True)
class Inhibition:
    """Why an alert is inhibited: the rule (and its position), and one firing source."""

    rule: InhibitRule
    rule_index: int
    source_key: str
    source_labels: Mapping[str, str]


def label_key(labels: Mapping[str, str]) -> str:
    """The default identity of an alert: the canonical text of its label set."""
    return format_labels(labels)


def _normalized(labels: Mapping[str, str]) -> dict[str, str]:
    """Sorted by name, empty values left out (an empty value is a missing label)."""
    return {name: labels[name] for name in sorted(labels) if labels[name]}


def _equal_values(rule: InhibitRule, labels: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(labels.get(name, "") for name in rule.equal)


@dataclass
class _Bucket:
    """Sources of one rule sharing the same `equal` values."""

    one_sided: dict[str, dict[str, str]] = field(default_factory=dict)
    two_sided: dict[str, dict[str, str]] = field(default_factory=dict)

    def sources(self, target_is_source: bool) -> list[dict[str, dict[str, str]]]:
        return [self.one_sided] if target_is_source else [self.one_sided, self.two_sided]


# Where one firing alert sits in the index: (rule index, equal values, two-sided).
_Placement = tuple[int, tuple[str, ...], bool]


class Inhibitor:
    """Inhibition rules over an incrementally maintained index of firing alerts."""

    __slots__ = ("_firing", "_index", "_placed", "_rules")

    def __init__(
        self, rules: Sequence[InhibitRule], firing: Iterable[Mapping[str, str]] = ()
    ) -> None:
        self._rules: tuple[InhibitRule, ...] = tuple(rules)
        self._firing: dict[str, dict[str, str]] = {}
        self._placed: dict[str, list[_Placement]] = {}
        self._index: list[dict[tuple[str, ...], _Bucket]] = [{} for _ in self._rules]
        for labels in firing:
            self.add_firing(labels)

    @property
    def rules(self) -> tuple[InhibitRule, ...]:
        return self._rules

    # ------------------------------------------------------------------ changes

    def add_firing(self, labels: Mapping[str, str], key: str | None = None) -> None:
        """Record a firing alert. `key` identifies it (default: its label set)."""
        normalized = _normalized(labels)
        key = label_key(normalized) if key is None else key
        known = self._firing.get(key)
        if known is not None:
            if known == normalized:
                return
            self._discard(key)
        self._firing[key] = normalized
        placements: list[_Placement] = []
        for index, rule in enumerate(self._rules):
            if not rule.source_matchers.matches(normalized):
                continue
            values = _equal_values(rule, normalized)
            two_sided = rule.target_matchers.matches(normalized)
            bucket = self._index[index].setdefault(values, _Bucket())
            (bucket.two_sided if two_sided else bucket.one_sided)[key] = normalized
            placements.append((index, values, two_sided))
        if placements:
            self._placed[key] = placements

    def remove_firing(self, labels: Mapping[str, str], key: str | None = None) -> None:
        """Forget a firing alert (it resolved). `key` as given to `add_firing`; without it the
        key is derived from `labels`. Forgetting an unknown alert does nothing."""
        self._discard(label_key(labels) if key is None else key)

    def _discard(self, key: str) -> None:
        if self._firing.pop(key, None) is None:
            return
        for index, values, two_sided in self._placed.pop(key, []):
            buckets = self._index[index]
            bucket = buckets[values]
            del (bucket.two_sided if two_sided else bucket.one_sided)[key]
            if not bucket.one_sided and not bucket.two_sided:
                del buckets[values]

    # ------------------------------------------------------------------ questions

    def inhibited_by(
        self,
        target_labels: Mapping[str, str],
        firing: Iterable[Mapping[str, str]] | None = None,
    ) -> InhibitRule | None:
        """The first rule that inhibits the target, or None.

        Without `firing`, the index of alerts given to `add_firing` answers. With `firing`, the
        given alerts are scanned instead and the index is not used (see `scan_inhibition`)."""
        if firing is not None:
            found = scan_inhibition(self._rules, target_labels, firing)
            return found.rule if found is not None else None
        for index, rule in enumerate(self._rules):
            if self._candidates(index, rule, target_labels):
                return rule
        return None

    def inhibition(self, target_labels: Mapping[str, str]) -> Inhibition | None:
        """Like `inhibited_by`, and name a source: the inhibiting alert with the smallest key."""
        for index, rule in enumerate(self._rules):
            pools = self._candidates(index, rule, target_labels)
            if pools:
                source_key = min(key for pool in pools for key in pool)
                labels = next(pool[source_key] for pool in pools if source_key in pool)
                return Inhibition(rule, index, source_key, dict(labels))
        return None

    def _candidates(
        self, index: int, rule: InhibitRule, target: Mapping[str, str]
    ) -> list[dict[str, dict[str, str]]]:
        """The non-empty pools of sources that inhibit `target` under rule `index`."""
        if not rule.target_matchers.matches(target):
            return []
        bucket = self._index[index].get(_equal_values(rule, target))
        if bucket is None:
            return []
        return [pool for pool in bucket.sources(rule.source_matchers.matches(target)) if pool]

    def is_firing(self, key: str) -> bool:
        return key in self._firing

    def __len__(self) -> int:
        return len(self._firing)

    # ------------------------------------------------------------------ snapshots

    def to_list(self) -> list[dict[str, Any]]:
        """The firing alerts, sorted by key: `[{"key": ..., "labels": {...}}, ...]`."""
        return [{"key": key, "labels": dict(self._firing[key])} for key in sorted(self._firing)]

    @classmethod
    def from_list(
        cls, rules: Sequence[InhibitRule], data: Iterable[Mapping[str, Any]]
    ) -> Inhibitor:
        inhibitor = cls(rules)
        for item in data:
            inhibitor.add_firing(item["labels"], key=item["key"])
        return inhibitor

    def with_rules(self, rules: Sequence[InhibitRule]) -> Inhibitor:
        """A new inhibitor over the same firing alerts (for a new configuration)."""
        return Inhibitor.from_list(rules, self.to_list())


def scan_inhibition(
    rules: Sequence[InhibitRule],
    target_labels: Mapping[str, str],
    firing: Iterable[Mapping[str, str]],
) -> Inhibition | None:
    """The same question as `Inhibitor.inhibition`, by scanning every firing alert.

    The source is the inhibiting alert with the smallest key (`label_key`)."""
    alerts = [_normalized(labels) for labels in firing]
    for index, rule in enumerate(rules):
        if not rule.target_matchers.matches(target_labels):
            continue
        target_is_source = rule.source_matchers.matches(target_labels)
        wanted = _equal_values(rule, target_labels)
        best: tuple[str, dict[str, str]] | None = None
        for labels in alerts:
            if not rule.source_matchers.matches(labels):
                continue
            if _equal_values(rule, labels) != wanted:
                continue
            if target_is_source and rule.target_matchers.matches(labels):
                continue
            key = label_key(labels)
            if best is None or key < best[0]:
                best = (key, labels)
        if best is not None:
            return Inhibition(rule, index, best[0], best[1])
    return None
