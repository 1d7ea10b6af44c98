"""The policy in force and any candidate beside it, projected from the log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onduty.events import Event


@dataclass
class PolicyView:
    """Which configuration is enforced, which candidate runs beside it, and the one before."""

    version: str = ""
    source: str = ""
    document: dict[str, Any] | None = None
    previous: dict[str, Any] | None = None
    candidate_version: str = ""
    candidate_role: str = ""
    candidate_selector: str | None = None
    candidate_document: dict[str, Any] | None = None

    def feed(self, event: Event) -> None:
        if event.type != "PolicyActivated":
            return
        data = event.data
        role = data.get("role", "active")
        if role == "active":
            if self.document is not None and self.document != data["config"]:
                self.previous = self.document
            self.version, self.source, self.document = (
                data["version"],
                data["source"],
                data["config"],
            )
            if self.candidate_version == data["version"]:
                role = "withdrawn"
            else:
                return
        if role == "withdrawn":
            self.candidate_version, self.candidate_role = "", ""
            self.candidate_selector, self.candidate_document = None, None
        else:
            self.candidate_version, self.candidate_role = data["version"], role
            self.candidate_selector, self.candidate_document = data.get("selector"), data["config"]
