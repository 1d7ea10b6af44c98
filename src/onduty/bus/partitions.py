"""Where a signal goes on the bus: its partition, and the subject that names it.

A signal's partition is a hash of its incident's group key, so every signal of one incident
lands on one partition and is folded, in order, by the one manager that owns it. The hash is
sha256 over an unambiguous encoding of the sorted label pairs: the same group key maps to the
same partition on every host and every Python version (Python's `hash()` is salted per process
for strings, so it never may). The number of partitions is fixed for the life of a stream:
changing it moves most group keys to another partition.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

DEFAULT_PREFIX = "onduty.signals"

# Stricter than NATS requires of a subject token (no dots, whitespace, `*` or `>`) so that a
# region is also valid inside a consumer's name and a file name.
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


def group_key_of(labels: Mapping[str, str], group_by: Iterable[str]) -> dict[str, str]:
    """The incident group key of a signal with `labels`, as the core computes it: every
    `group_by` label, an absent one as the empty string."""
    return {label: labels.get(label, "") for label in group_by}


def partition_of(group_key: Mapping[str, str], partitions: int) -> int:
    """The partition, in `range(partitions)`, of the incident with `group_key`."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    digest = hashlib.sha256()
    for label, value in sorted(group_key.items()):
        # Length-prefixed, so no two different keys share an encoding ("a"+"bc" vs "ab"+"c").
        for text in (label, value):
            encoded = text.encode()
            digest.update(b"%d:" % len(encoded))
            digest.update(encoded)
    return int.from_bytes(digest.digest()[:8], "big") % partitions


def check_token(field: str, value: str) -> str:
    """`value` when it can be one token of a subject; otherwise a ValueError naming `field`."""
    if not _TOKEN.fullmatch(value):
        raise ValueError(
            f"{field} {value!r}: use letters, digits, '-' and '_' only "
            "(it is one token of a NATS subject: no dots, spaces, '*' or '>')"
        )
    return value


def check_prefix(prefix: str) -> str:
    """`prefix` when it is a dot-separated run of valid tokens; otherwise a ValueError."""
    if not all(_TOKEN.fullmatch(token) for token in prefix.split(".")):
        raise ValueError(
            f"subject prefix {prefix!r}: use tokens of letters, digits, '-' and '_' joined by "
            "dots (no spaces, '*' or '>', no empty token)"
        )
    return prefix


def check_partition(partition: int, partitions: int) -> int:
    """`partition` when it is in `range(partitions)`; otherwise a ValueError."""
    if isinstance(partition, bool) or not 0 <= partition < partitions:
        raise ValueError(f"partition {partition!r}: must be in 0..{partitions - 1}")
    return partition


def subject_for(prefix: str, region: str, partition: int) -> str:
    """The subject of `region`'s signals on `partition`: `<prefix>.<region>.<partition>`."""
    if isinstance(partition, bool) or partition < 0:
        raise ValueError(f"partition {partition!r}: must be a number from 0")
    return f"{check_prefix(prefix)}.{check_token('region', region)}.{partition}"


def parse_subject(prefix: str, subject: str) -> tuple[str, int]:
    """The region and partition a subject made by `subject_for(prefix, ...)` names."""
    region, _, partition = subject.removeprefix(prefix + ".").partition(".")
    if not subject.startswith(prefix + ".") or not partition.isdigit():
        raise ValueError(f"subject {subject!r} is not <{prefix}>.<region>.<partition>")
    return region, int(partition)
