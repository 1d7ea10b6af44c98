"""Signed ingest requests: `X-Onduty-Signature: t=<unix seconds>,v1=<hex>`, the HMAC-SHA256 of
`"<t>."` followed by the body (the scheme Stripe and Slack use), so that a captured request
cannot be sent again: its time must be within a tolerance of onduty's clock, and a signed
request already received within that window is refused. Several `v1=` values may be given
(a sender rotating its secret signs with both).

The body-only scheme, `sha256=<hex HMAC-SHA256 of the body>`, is accepted only from a
credential configured with `signature: body`; it cannot tell a replay from a new request.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = [
    "ParsedSignature",
    "ReplayWindow",
    "parse_signature",
    "sign",
    "sign_body",
    "timestamped_digest",
]


@dataclass(frozen=True)
class ParsedSignature:
    """A signature header read: `timestamp` is None for the body-only scheme."""

    timestamp: int | None
    digests: tuple[bytes, ...]


def parse_signature(header: str) -> ParsedSignature | None:
    """The header's timestamp and digests, or None when it is neither scheme."""
    text = header.strip()
    if text.lower().startswith("sha256="):
        digest = _hex(text.partition("=")[2])
        return ParsedSignature(None, (digest,)) if digest is not None else None
    timestamp: int | None = None
    digests: list[bytes] = []
    for part in text.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.strip().isdigit() and timestamp is None:
            timestamp = int(value.strip())
        elif key == "v1" and (digest := _hex(value)) is not None:
            digests.append(digest)
    if timestamp is None or not digests:
        return None
    return ParsedSignature(timestamp, tuple(digests))


def _hex(text: str) -> bytes | None:
    try:
        digest = bytes.fromhex(text.strip())
    except ValueError:
        return None
    return digest if len(digest) == hashlib.sha256().digest_size else None


def timestamped_digest(key: bytes, timestamp: int, body: bytes) -> bytes:
    return hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).digest()


def _key(secret: bytes | str) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: bytes | str, body: bytes, *, timestamp: int | None = None) -> str:
    """The `X-Onduty-Signature` value for `body`, signed now (or at `timestamp`)."""
    at = int(time.time()) if timestamp is None else timestamp
    return f"t={at},v1={timestamped_digest(_key(secret), at, body).hex()}"


def sign_body(secret: bytes | str, body: bytes) -> str:
    """The body-only `X-Onduty-Signature` value (for a `signature: body` credential)."""
    return "sha256=" + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


class ReplayWindow:
    """Signed requests received lately, each remembered until its signature could no longer be
    accepted anyway. A request's signature (its time and body) is what identifies it: a sender
    that sends new data signs anew.

    Entries expire in arrival order (`arrival + 2 x tolerance` is past any time the signature
    stays fresh, since its time is at most `tolerance` ahead of its arrival). `capacity` bounds
    the memory; past it the oldest are forgotten first."""

    def __init__(self, tolerance: float, *, capacity: int = 1_000_000) -> None:
        self.tolerance = tolerance
        self._capacity = capacity
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, digest: bytes, now: float) -> bool:
        """Remember `digest`; False when it was already received within the window."""
        with self._lock:
            while self._seen:
                oldest, expires = next(iter(self._seen.items()))
                if expires > now and len(self._seen) < self._capacity:
                    break
                del self._seen[oldest]
            if digest in self._seen:
                return False
            self._seen[digest] = now + 2 * self.tolerance
            return True

    def forget(self, digest: bytes) -> None:
        """Let a request that was refused for another reason (a full queue) be sent again."""
        with self._lock:
            self._seen.pop(digest, None)

    def __len__(self) -> int:
        return len(self._seen)
