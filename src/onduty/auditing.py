"""What `onduty audit verify`, `GET /api/v1/audit/verify` and the console's `/audit` hold a log
against besides its hash chain: the signed checkpoints of the witness file beside the store (or
given), the checkpoints the log records, and the checkpoint of each sealed archive."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from onduty.checkpointer import key_file, witness_file
from onduty.log import ChainBreak, EventLog, StoreError
from onduty.log.checkpoints import (
    CheckpointReport,
    Finding,
    load_public_keys,
    public_path,
    read_witness,
    verify_checkpoints,
)
from onduty.log.sealed import ArchiveEntry
from onduty.retention import archive_findings, archives_of


@dataclass
class CheckpointAudit:
    """The checkpoints' verdict on a log: `findings` (every one, in seq order) is empty when
    they hold."""

    report: CheckpointReport
    witness: Path | None
    """The witness file read (None when there is none)."""
    archives: list[ArchiveEntry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def audit_checkpoints(
    log: EventLog,
    store: str,
    broken: ChainBreak | None,
    *,
    witness: Path | None = None,
    public_keys: Sequence[Path] = (),
) -> CheckpointAudit:
    """Hold `log` (whose chain check found `broken`) against its checkpoints: the witness file
    given or beside the `store`, signatures checked with the public keys given or the one
    beside the store. Raises `CheckpointError` for a key or witness that cannot be read."""
    witness = witness or witness_file(store)
    keys_given = list(public_keys)
    beside = key_file(store)
    if not keys_given and beside is not None and public_path(beside).exists():
        keys_given = [public_path(beside)]
    keys = load_public_keys(keys_given)
    found, unreadable = read_witness(witness) if witness and witness.exists() else ([], [])
    name = str(witness)
    try:
        report = verify_checkpoints(log, found, keys, chain=broken, witness_name=name)
    except StoreError:  # an archive it must read through, already named by `broken`
        assert broken is not None
        report = CheckpointReport(signatures=bool(keys), head=log.head()[0])
        report.findings.append(Finding("chain", broken.seq, f"seq {broken.seq}: {broken.reason}"))
    archives, folder = archives_of(log)
    sealed = archive_findings(archives, folder, keys)
    findings = sorted([*unreadable, *report.findings, *sealed], key=lambda f: f.seq)
    return CheckpointAudit(report, witness if found else None, archives, findings)
