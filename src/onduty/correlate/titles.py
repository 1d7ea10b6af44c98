"""What an incident is called: by its one signal, or — once several signals share it — by what
they have in common.

The core records the shared part only: `IncidentOpened.title` is the first signal's title, and an
`IncidentUpdated` with change `retitled` (the new title as its detail) follows when a signal
joins that makes the shared description change — from one member's summary to "PodOOMKilled on
svc-0" when a second pod joins, to "alerts on svc-0" if a third alert of another name does. What
members share only ever shrinks, so an incident is retitled a handful of times at most, never
once per signal, and the log stays small. The count ("PodOOMKilled on svc-0: 60 pods") changes
with every member, so it is never recorded: the read models add it (`counted_title`), naming the
members by the label that tells them apart (`member_noun`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

PLACE_LABELS = ("instance", "service", "job")
"""Where a signal (or a group) is, most specific first: the title's "on …" part."""

MEMBER_LABELS: tuple[tuple[str, str], ...] = (
    ("pod", "pods"),
    ("instance", "instances"),
    ("container", "containers"),
    ("node", "nodes"),
    ("host", "hosts"),
    ("job", "jobs"),
    ("service", "services"),
    ("alertname", "alerts"),
)
"""Labels that tell a group's members apart, with the word for several of them."""


def signal_title(labels: Mapping[str, str], annotations: Mapping[str, str]) -> str:
    """One signal's title: its `summary` annotation, else "<alertname> on <where>"."""
    summary = annotations.get("summary")
    if summary:
        return summary
    what = labels.get("alertname", "signal")
    where = next((labels[label] for label in PLACE_LABELS if labels.get(label)), "")
    return f"{what} on {where}" if where else what


def group_title(shared_labels: Mapping[str, str], shared_summary: str = "") -> str:
    """The title of several signals: the summary they all have, else their shared alert name
    (or "alerts") on the most specific place they all share, else the other labels they all
    share."""
    if shared_summary:
        return shared_summary
    what = shared_labels.get("alertname") or "alerts"
    where = next((shared_labels[k] for k in PLACE_LABELS if shared_labels.get(k)), "")
    if where:
        return f"{what} on {where}"
    rest = [f"{k}={v}" for k, v in sorted(shared_labels.items()) if v and k != "alertname"]
    if rest:
        more = ", …" if len(rest) > 3 else ""
        return f"{what} with {', '.join(rest[:3])}{more}"
    return what


def shared(labels: Mapping[str, str], other: Mapping[str, str]) -> dict[str, str]:
    """The labels two sets have in common, with equal values."""
    return {k: v for k, v in labels.items() if other.get(k) == v}


def summary_of(annotations: Mapping[str, str]) -> str:
    """A signal's `summary` annotation, or "" without one."""
    return annotations.get("summary", "")


def narrowed(
    labels: Mapping[str, str],
    summary: str,
    member_labels: Mapping[str, str],
    member_annotations: Mapping[str, str],
) -> tuple[dict[str, str], str]:
    """What a group shares — its labels with equal values, and its summary if all have the
    same — once a member with these labels and annotations joins."""
    kept = summary if summary_of(member_annotations) == summary else ""
    return shared(labels, member_labels), kept


def shared_by(
    members: Sequence[tuple[Mapping[str, str], Mapping[str, str]]],
) -> tuple[dict[str, str], str]:
    """What a group of members (labels, annotations), at least one, shares."""
    first_labels, first_annotations = members[0]
    labels, summary = dict(first_labels), summary_of(first_annotations)
    for member_labels, member_annotations in members[1:]:
        labels, summary = narrowed(labels, summary, member_labels, member_annotations)
    return labels, summary


def differing(labels: Mapping[str, str], other: Mapping[str, str]) -> set[str]:
    """The member labels (`MEMBER_LABELS`) whose values differ between two signals."""
    return {label for label, _ in MEMBER_LABELS if labels.get(label, "") != other.get(label, "")}


def member_noun(varying: Collection[str]) -> str:
    """The word for a group's members: "pods" when their `pod` labels differ, and so on."""
    return next((plural for label, plural in MEMBER_LABELS if label in varying), "signals")


def counted_title(title: str, members: int, noun: str = "signals") -> str:
    """The title people read: "PodOOMKilled on svc-0: 60 pods" (a single signal's as is)."""
    return f"{title}: {members} {noun}" if members > 1 else title
