"""What the manager asks about signals beyond their own state: is one muted (silenced, in a
maintenance window, inhibited by another alert), and is one flapping.

The correlator holds only structures derived from the core's `State` (silences, the firing
index of the inhibitor, the flap history) and is rebuilt from it whenever a configuration
activates or a snapshot is loaded; the manager keeps both in step as it applies events.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from onduty.config import Correlation
from onduty.correlate.flapping import FlapDetector
from onduty.correlate.inhibition import Inhibitor
from onduty.correlate.silences import Silence, Silences
from onduty.state import State


class Correlator:
    def __init__(self, state: State, correlation: Correlation) -> None:
        self._state = state
        self.silences = Silences.from_list(state.silences.values())
        firing = {fp: s.labels for fp, s in state.signals.items() if s.status == "firing"}
        self.inhibitor = Inhibitor(correlation.inhibit_rules)
        for fingerprint, labels in firing.items():
            self.inhibitor.add_firing(labels, key=fingerprint)
        self.flaps = FlapDetector(
            correlation.flap_window, correlation.flap_threshold, state.transitions
        )

    # ------------------------------------------------------------------ keeping in step

    def firing(self, fingerprint: str, labels: Mapping[str, str]) -> None:
        self.inhibitor.add_firing(labels, key=fingerprint)

    def not_firing(self, fingerprint: str) -> None:
        self.inhibitor.remove_firing({}, key=fingerprint)

    def add_silence(self, data: dict[str, Any]) -> None:
        silence = Silence.model_validate(data)
        self.silences.add(silence)
        self._state.silences[silence.silence_id] = silence.model_dump(mode="json")

    def expire_silence(self, silence_id: str, at: datetime) -> None:
        expired = self.silences.expire(silence_id, at)
        if expired is None:
            self._state.silences.pop(silence_id, None)
        else:
            self._state.silences[silence_id] = expired.model_dump(mode="json")

    def prune(self, at: datetime) -> None:
        for silence_id in self.silences.prune(at):
            self._state.silences.pop(silence_id, None)
        self.flaps.prune(at)

    # ------------------------------------------------------------------ questions

    def mute_reason(self, fingerprint: str, labels: Mapping[str, str], at: datetime) -> str | None:
        """Why a firing signal must not be acted on right now, or None."""
        silence = self.silences.muting(labels, at)
        if silence is not None:
            what = "maintenance window" if silence.kind == "maintenance" else "silence"
            return f"{what} {silence.silence_id} by {silence.created_by}: {silence.comment}"
        inhibition = self.inhibitor.inhibition(labels)
        if inhibition is not None and inhibition.source_key != fingerprint:
            return (
                f"inhibited by rule {inhibition.rule.describe()} while "
                f"{inhibition.source_labels.get('alertname', inhibition.source_key)} fires"
            )
        return None

    def next_silence_change(self, at: datetime) -> datetime | None:
        return self.silences.next_change(at)
