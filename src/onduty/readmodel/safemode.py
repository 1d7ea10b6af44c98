"""Safe mode and the sources' problems as the API, the console and /metrics show them: what is
in safe mode now, since when and why, and which source is judged untrustworthy in which way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from onduty.events import Event


@dataclass
class SafeModeView:
    active: dict[str, dict[str, Any]] = field(default_factory=dict)
    """By scope (`check:source` or `dependency:component`): services, reason, since, incident."""
    problems: dict[str, dict[str, Any]] = field(default_factory=dict)
    """By "source/check": what was found, measured against what, since when."""

    def feed(self, event: Event) -> None:
        kind, data = event.type, event.data
        if kind == "SafeModeEntered" and data["scope"] in self.active:  # widened
            self.active[data["scope"]]["services"] = list(data.get("services") or [])
        elif kind == "SafeModeEntered":
            self.active[data["scope"]] = {
                "scope": data["scope"],
                "services": list(data.get("services") or []),
                "reason": data["reason"],
                "since": event.ts.isoformat(),
                "incident_id": data["incident_id"],
            }
        elif kind == "SafeModeExited":
            self.active.pop(data["scope"], None)
        elif kind == "SourceDegraded":
            self.problems[f"{data['source']}/{data['check']}"] = {
                "source": data["source"],
                "check": data["check"],
                "detail": data["detail"],
                "value": data.get("value"),
                "limit": data.get("limit"),
                "since": event.ts.isoformat(),
            }
        elif kind == "SourceRecovered":
            self.problems.pop(f"{data['source']}/{data['check']}", None)

    def listing(self) -> list[dict[str, Any]]:
        return [self.active[scope] for scope in sorted(self.active)]

    def source_problems(self) -> list[dict[str, Any]]:
        return [self.problems[key] for key in sorted(self.problems)]

    def state(self) -> dict[str, Any]:
        return {"active": list(self.active.values()), "problems": list(self.problems.values())}

    @classmethod
    def of(cls, state: dict[str, Any] | None) -> SafeModeView:
        view = cls()
        for item in (state or {}).get("active", []):
            view.active[item["scope"]] = dict(item)
        for item in (state or {}).get("problems", []):
            view.problems[f"{item['source']}/{item['check']}"] = dict(item)
        return view
