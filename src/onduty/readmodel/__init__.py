"""Read models: what humans and tools look at, projected from the log (never from the core's
private state), so they can be rebuilt at any time and agree with the audit trail.

One module per projection, each fed events in log order:

* `incidents`: incidents as people see them (`IncidentProjection`, `IncidentView`);
* `timeline`: an incident's bounded timeline and the signal pages read from the log for the rest;
* `approvals`: approval requests, pending and decided lately (kept by the incident projection);
* `autonomy`: autonomy raises waiting for several admins;
* `silences`: silences and maintenance windows;
* `policy`: the policy in force and any candidate beside it;
* `learning`: the learning agent's models in their roles, drift and divergences;
* `similar`: closed incidents as documents, to find those most like an incident and what fixed
  them (`SimilarIncidents.similar_to`, `summarize`, `for_prompt`); `embeddings` the optional
  sentence-embedding ranking.

Everything is imported from here (`from onduty.readmodel import IncidentProjection`).
"""

from __future__ import annotations

from onduty.readmodel.approvals import ANSWERED_KEPT, ApprovalBook, PendingApproval, same_person
from onduty.readmodel.autonomy import AutonomyRaise, AutonomyRaises
from onduty.readmodel.incidents import LIST_KEPT, IncidentProjection, IncidentView
from onduty.readmodel.learning import LearningView
from onduty.readmodel.policy import PolicyView
from onduty.readmodel.silences import SilenceProjection, SilenceView
from onduty.readmodel.similar import (
    PastAction,
    SimilarIncident,
    SimilarIncidents,
    UnknownIncident,
    for_prompt,
    summarize,
)
from onduty.readmodel.timeline import (
    DECISIONS_FIRST,
    DECISIONS_RECENT,
    SIGNAL_CHANGES,
    SIGNAL_PAGE,
    SIGNAL_PAGE_MAX,
    SIGNALS_FIRST,
    SIGNALS_RECENT,
    SignalCursor,
    SignalPage,
    Window,
    is_signal_event,
    signal_page,
)

__all__ = [
    "ANSWERED_KEPT",
    "DECISIONS_FIRST",
    "DECISIONS_RECENT",
    "LIST_KEPT",
    "SIGNALS_FIRST",
    "SIGNALS_RECENT",
    "SIGNAL_CHANGES",
    "SIGNAL_PAGE",
    "SIGNAL_PAGE_MAX",
    "ApprovalBook",
    "AutonomyRaise",
    "AutonomyRaises",
    "IncidentProjection",
    "IncidentView",
    "LearningView",
    "PastAction",
    "PendingApproval",
    "PolicyView",
    "SignalCursor",
    "SignalPage",
    "SilenceProjection",
    "SilenceView",
    "SimilarIncident",
    "SimilarIncidents",
    "UnknownIncident",
    "Window",
    "for_prompt",
    "is_signal_event",
    "same_person",
    "signal_page",
    "summarize",
]
