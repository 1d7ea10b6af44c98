"""Warnings about a valid configuration that would not do what it seems to (`onduty config
check`): an action no actuator provides, an escalation that reaches no channel, a template that
names a variable or a label that does not exist.

A warning is not an error: the configuration loads and `serve` runs it. Each warning names the
field, says what would happen, and, for a misspelling, the name probably meant.

Pure: the configuration in, sentences out.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import jinja2
from jinja2 import nodes

from onduty.config import Config, Step, Tier
from onduty.config_fleet import is_shared_store
from onduty.govern.variables import FIELDS

TEMPLATE_VARIABLES: dict[str, tuple[str, ...]] = {
    **{name: tuple(FIELDS[name]) for name in ("signal", "incident", "service")},
    "now": (),
}
"""What a runbook step's `target` template may use, and the fields of each variable, as the
manager builds them (`govern.variables.FIELDS`; `now` is a timestamp; `signal.labels` and
`signal.annotations` are maps of strings)."""

MEANINGS: dict[str, str] = {
    "signal": "the incident's signal the action is for: its first firing one that is not muted",
    "signal.labels": "its labels (a map: `signal.labels.instance`)",
    "signal.annotations": "its annotations (a map: `signal.annotations.summary`)",
    "signal.status": "`firing` or `resolved`",
    "signal.source": "where it came from (`alertmanager`, a poller's name, …)",
    "signal.fingerprint": "its identity at its source",
    "incident": "the incident",
    "incident.id": "its id (`inc-…`)",
    "incident.title": "its title: its one signal's summary, or what its signals share",
    "incident.service": "its service's name (empty when it has none)",
    "incident.signals": "how many signals it has",
    "incident.flapping": "whether one of its signals is flapping",
    "service": "the incident's service (empty fields when it has none)",
    "service.name": "its name",
    "service.tier": "`critical`, `high`, `standard` or `low`",
    "service.region": "its region",
    "service.autonomy": "its autonomy now (`observe`, `suggest`, `approve`, `act`)",
    "service.instances": "how many instances it has",
    "now": "the time of the event being decided on (a timestamp, UTC), never the wall clock",
    "action": "the proposed action (guardrails only)",
    "action.name": "its name (`process.restart`)",
    "action.runbook": "the runbook that proposed it",
    "action.params": "its parameters (a map)",
    "target": "what the action acts on (guardrails only)",
    "target.name": "its name (`search-2`)",
    "target.service": "the service it belongs to (empty when unknown)",
    "counts": "how busy automation has been (guardrails only)",
    "counts.target_actions_1h": "actions on this target within the last hour",
    "counts.service_actions_1h": "actions on this service within the last hour",
    "counts.target_actions_24h": "actions on this target within the last day",
    "counts.open_incidents": "incidents open now",
}
"""What each variable (and field) of conditions and templates means, for people."""

WELL_KNOWN_LABELS = (
    "alertname",
    "instance",
    "service",
    "job",
    "severity",
    "pod",
    "namespace",
    "container",
    "node",
    "cluster",
    "region",
)
"""Label names common enough to suggest for a misspelling."""

_LABEL_IN_CONDITION = re.compile(r"""signal\.labels(?:\.(\w+)|\[\s*["'](\w+)["']\s*\])""")
_SYNTAX = jinja2.Environment(autoescape=False)


def config_warnings(config: Config, *, simulated_actions: Collection[str] = ()) -> list[str]:
    """Every warning about `config`. `simulated_actions` are the actions the simulated fleet
    (`onduty demo`, `onduty sim`, `serve --sim`) carries out without an actuator."""
    return [
        *unserved_actions(config, simulated_actions),
        *unreachable_escalation(config),
        *unknown_template_variables(config),
        *fleet_limits(config),
    ]


def fleet_limits(config: Config) -> Iterator[str]:
    """What a fleet's store does not do (yet) that the configuration asks for."""
    if not is_shared_store(config.store):
        if any(g.rate and g.rate.across == "fleet" for g in config.policy.guardrails):
            yield (
                "policy.guardrails: `across: fleet` counts on one process are this process's "
                "own (one manager is the whole fleet); they are shared on a postgresql:// store"
            )
        return
    if config.retention.keep is not None:
        yield (
            "retention.keep: sealing old events into archives is done for a SQLite store; a "
            "PostgreSQL store keeps every event (use the database's own archiving)"
        )


# ---------------------------------------------------------------------------- actions


def provides(pattern: str, action: str) -> bool:
    """Whether an actuator's `action` (a name or a `family.*`) takes `action`."""
    return pattern == action or (pattern.endswith(".*") and action.startswith(pattern[:-1]))


def unserved_actions(config: Config, simulated_actions: Collection[str] = ()) -> Iterator[str]:
    patterns = [a["action"] for a in config.actuators if isinstance(a.get("action"), str)]
    for index, runbook in enumerate(config.runbooks):
        for part, steps in (("do", runbook.do), ("undo", runbook.undo)):
            for position, step in enumerate(steps):
                if any(provides(pattern, step.action) for pattern in patterns):
                    continue
                simulated = (
                    " (only the simulated fleet of `onduty demo`, `onduty sim` and "
                    "`serve --sim` carries it out)"
                    if step.action in simulated_actions
                    else ""
                )
                yield (
                    f"runbooks[{index}].{part}[{position}].action: no actuator provides "
                    f"{step.action!r}{simulated}: `onduty serve` would record every "
                    f"{step.action} as failed; add an `actuators:` entry for it"
                )


# ---------------------------------------------------------------------------- escalation


def unreachable_escalation(config: Config) -> Iterator[str]:
    channels = {str(c.get("name")) for c in config.channels}
    policies: list[tuple[str, Sequence[Tier]]] = [("escalation.default", config.escalation.default)]
    policies += [
        (f"escalation.services.{name}", tiers) for name, tiers in config.escalation.services.items()
    ]
    for where, tiers in policies:
        for index, tier in enumerate(tiers):
            yield from _unknown_channels(f"{where}[{index}].notify", tier.notify, channels)
    yield from _unknown_channels(
        "policy.approvals.notify", config.policy.approvals.notify, channels
    )


def _unknown_channels(where: str, names: Sequence[str], channels: set[str]) -> Iterator[str]:
    missing = [name for name in names if name not in channels]
    if not missing:
        return
    known = f"the channels are {', '.join(sorted(channels))}" if channels else "none is"
    hints = [_did_you_mean(name, sorted(channels)) for name in missing]
    hint = "".join(f" ({name}: {h})" for name, h in zip(missing, hints, strict=True) if h)
    listed = ", ".join(repr(name) for name in missing)
    if len(missing) == len(names):
        yield (
            f"{where}: {listed} {'is not a' if len(missing) == 1 else 'are not'} configured "
            f"channel{'s' if len(missing) > 1 else ''} ({known} configured under `channels:`)"
            f"{hint}: nobody would be paged"
        )
    else:
        yield f"{where}: {listed} not configured under `channels:`{hint}: skipped when paging"


# ---------------------------------------------------------------------------- templates


def known_labels(config: Config) -> list[str]:
    """Label names the configuration itself uses: grouping, inhibition, runbook conditions,
    and the well-known ones."""
    names = set(WELL_KNOWN_LABELS) | set(config.correlation.group_by)
    for rule in config.correlation.inhibit_rules:
        names.update(rule.equal)
        names.update(m.name for m in (*rule.source_matchers, *rule.target_matchers))
    for runbook in config.runbooks:
        for match in _LABEL_IN_CONDITION.finditer(runbook.when):
            names.add(match.group(1) or match.group(2))
    for guardrail in config.policy.guardrails:
        for match in _LABEL_IN_CONDITION.finditer(guardrail.when or ""):
            names.add(match.group(1) or match.group(2))
    return sorted(names)


def unknown_template_variables(config: Config) -> Iterator[str]:
    labels = known_labels(config)
    for index, runbook in enumerate(config.runbooks):
        steps: list[tuple[str, Step]] = [
            *((f"do[{i}]", step) for i, step in enumerate(runbook.do)),
            *((f"undo[{i}]", step) for i, step in enumerate(runbook.undo)),
        ]
        for where, step in steps:
            for problem in template_problems(step.target, labels):
                yield f"runbooks[{index}].{where}.target: {problem}"


def template_problems(source: str, labels: Sequence[str]) -> list[str]:
    """What is wrong with the variables a template names (the first problem of each name)."""
    try:
        tree = _SYNTAX.parse(source)
    except jinja2.TemplateSyntaxError:
        return []  # the configuration's own validation reports it
    problems: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for chain in _chains(tree):
        if chain in seen:
            continue
        seen.add(chain)
        problem = _chain_problem(chain, labels)
        if problem and problem not in problems:
            problems.append(problem)
    return problems


def _chain_problem(chain: tuple[str, ...], labels: Sequence[str]) -> str | None:
    top = chain[0]
    if top not in TEMPLATE_VARIABLES:
        hint = _did_you_mean(top, list(TEMPLATE_VARIABLES))
        return (
            f"unknown variable {top!r}{f' ({hint})' if hint else ''}; a step's target may use "
            f"{', '.join(TEMPLATE_VARIABLES)}: rendering it would fail"
        )
    if len(chain) < 2:
        return None
    fields = TEMPLATE_VARIABLES[top]
    if chain[1] not in fields:
        hint = _did_you_mean(chain[1], list(fields))
        known = f"the fields of {top} are {', '.join(fields)}" if fields else f"{top} has none"
        return (
            f"{top} has no field {chain[1]!r}{f' ({hint})' if hint else ''}; {known}: "
            "rendering it would fail"
        )
    if top == "signal" and chain[1] == "labels" and len(chain) > 2 and chain[2] not in labels:
        hint = _did_you_mean(chain[2], labels)
        if hint:
            return (
                f"label {chain[2]!r} is not one this configuration uses ({hint}); a signal "
                "without it fails to render"
            )
    return None


def _chains(tree: nodes.Node) -> Iterator[tuple[str, ...]]:
    """Every `name.field.key` the template reads, as the longest chains it spells."""
    inner: set[int] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        inner.add(id(getattr(node, "node", None)))
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        if id(node) in inner:
            continue
        chain = _chain(node)
        if chain:
            yield chain


def _chain(node: Any) -> tuple[str, ...] | None:
    if isinstance(node, nodes.Name):
        return (node.name,) if node.ctx == "load" else None
    if isinstance(node, nodes.Getattr):
        head = _chain(node.node)
        return (*head, node.attr) if head else None
    if isinstance(node, nodes.Getitem):
        head = _chain(node.node)
        if head is None:
            return None
        key = node.arg
        return (
            (*head, key.value)
            if isinstance(key, nodes.Const) and isinstance(key.value, str)
            else head
        )
    return None


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else ""
