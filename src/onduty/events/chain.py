"""The hash chain: each event's hash covers its body and the hash of the one before.

hash = sha256(prev_hash + canonical_json(envelope without hash))
"""

from __future__ import annotations

import hashlib

from onduty.events.codec import Event, canonical_body

GENESIS_HASH = "0" * 64


def chain_hash(prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


def seal(event: Event, seq: int, prev_hash: str) -> tuple[Event, bytes]:
    """Place an event at `seq` after `prev_hash`; return it with its hash, and its body bytes."""
    placed = event.model_copy(update={"seq": seq, "prev_hash": prev_hash, "hash": ""})
    body = canonical_body(placed)
    return placed.model_copy(update={"hash": chain_hash(prev_hash, body)}), body
