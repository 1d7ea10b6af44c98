"""The runbook agent: match an incident to the configured runbooks and propose their steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onduty.config import Runbook, Step
from onduty.expressions import Condition, ExpressionError, Template, prepare
from onduty.think.observed import project, projection
from onduty.think.proposal import Proposal


@dataclass(frozen=True)
class CompiledRunbook:
    spec: Runbook
    when: Condition
    targets: tuple[Template, ...]
    undo_targets: tuple[Template, ...]


class RunbookAgent:
    """Proposes the steps of the highest-priority runbook whose condition holds."""

    name = "runbook"

    def __init__(self, runbooks: list[Runbook]) -> None:
        self._runbooks = [
            CompiledRunbook(
                spec=runbook,
                when=Condition.compile(runbook.when),
                targets=tuple(Template.compile(step.target) for step in runbook.do),
                undo_targets=tuple(Template.compile(step.target) for step in runbook.undo),
            )
            for runbook in runbooks
        ]
        self._by_name = {compiled.spec.name: compiled for compiled in self._runbooks}
        self._observed = projection(
            [compiled.when.source for compiled in self._runbooks],
            {name for compiled in self._runbooks for name in compiled.when.program.variables()},
        )
        self._by_priority = sorted(self._runbooks, key=lambda compiled: -compiled.spec.priority)

    def runbook(self, name: str) -> Runbook | None:
        compiled = self._by_name.get(name)
        return compiled.spec if compiled else None

    def runbooks(self) -> list[Runbook]:
        """Every runbook, in the order of preference: highest priority first, then in
        configuration order."""
        return [compiled.spec for compiled in self._by_priority]

    def matching(self, context: dict[str, Any]) -> list[Runbook]:
        """Runbooks whose `when` holds, highest priority first, then in configuration order."""
        if not self._runbooks:
            return []
        prepared = prepare(project(context, self._observed))
        return [c.spec for c in self._by_priority if c.when.holds(prepared)]

    def propose_step(self, runbook: str, step: int, context: dict[str, Any]) -> Proposal | None:
        """The proposal for step `step` of a runbook; None when the runbook has no such step.

        A target template that cannot render yields an empty target, which the guardrails
        refuse: an unknown target always means do nothing.
        """
        compiled = self._by_name.get(runbook)
        if compiled is None or step >= len(compiled.spec.do):
            return None
        return self._proposal(
            compiled, compiled.spec.do[step], compiled.targets[step], step, context
        )

    def undo_steps(self, runbook: str, context: dict[str, Any]) -> list[Proposal]:
        compiled = self._by_name.get(runbook)
        if compiled is None:
            return []
        return [
            self._proposal(compiled, step, template, index, context)
            for index, (step, template) in enumerate(
                zip(compiled.spec.undo, compiled.undo_targets, strict=True)
            )
        ]

    def _proposal(
        self,
        compiled: CompiledRunbook,
        step: Step,
        template: Template,
        index: int,
        context: dict[str, Any],
    ) -> Proposal:
        try:
            target = template.render(context)
            rationale = f"runbook {compiled.spec.name}: `{compiled.spec.when}` holds"
        except ExpressionError as error:
            target = ""
            rationale = f"runbook {compiled.spec.name}: target could not be rendered ({error})"
        return Proposal(
            agent=self.name,
            runbook=compiled.spec.name,
            step=index,
            action=step.action,
            target=target,
            rationale=rationale,
            params=dict(step.params),
            timeout_s=step.timeout.total_seconds(),
            priority=compiled.spec.priority,
        )
