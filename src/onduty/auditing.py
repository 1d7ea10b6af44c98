"""What `onduty audit verify`, `GET /api/v1/audit/verify` and the console's `/audit` hold a log
against besides its hash chain: the signed checkpoints of the witness file beside the store (or
given), the checkpoints the log records, and the checkpoint of each sealed archive. A
PostgreSQL store read whole (every partition) is held against its fleet checkpoints instead:
those of the witness file given and of the store's `checkpoints` table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from onduty.checkpointer import key_file, witness_file
from onduty.config_checkpoints import CheckpointSettings
from onduty.log import ChainBreak, EventLog, StoreError
from onduty.log.checkpoints import (
    CheckpointError,
    CheckpointReport,
    Finding,
    load_public_keys,
    public_path,
    read_witness,
    verify_checkpoints,
)
from onduty.log.sealed import ArchiveEntry
from onduty.retention import archive_findings, archives_of

if TYPE_CHECKING:  # the fleet's modules load psycopg: only a fleet's audit imports them
    from onduty.log.fleet_checkpoints import FleetCheckpointReport, Sourced


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


@dataclass
class FleetCheckpointAudit:
    """The fleet checkpoints' verdict on a PostgreSQL store: `findings` (every one, in
    position order) is empty when they hold."""

    report: FleetCheckpointReport
    witness: Path | None
    """The witness file read (None when none was given, or it is missing)."""
    findings: list[Finding] = field(default_factory=list)


def audit_fleet_checkpoints(
    store: str,
    broken: ChainBreak | None,
    *,
    witness: Path | None = None,
    public_keys: Sequence[Path] = (),
) -> FleetCheckpointAudit:
    """Hold the PostgreSQL `store` (every partition; its chains' check found `broken`) against
    its fleet checkpoints: the `witness` file's when given, and those its table records;
    signatures checked with the `public_keys` given (a fleet keeps none beside its store).
    Raises `CheckpointError` for a key or witness that cannot be read, `StoreError` for a
    store that cannot."""
    from onduty.log.fleet_checkpoint_store import CheckpointStore
    from onduty.log.fleet_checkpoints import covered_seqs, hold
    from onduty.log.fleet_checkpoints import read_witness as read_fleet_witness

    keys = load_public_keys(public_keys)
    found: list[Sourced] = []
    problems: list[Finding] = []
    if broken is not None:  # the view's break names the partition and its seq
        problems.append(Finding("chain", broken.seq, broken.reason))
    read = witness is not None and witness.exists()
    if read:
        assert witness is not None
        found, unreadable = read_fleet_witness(witness)
        problems += unreadable
    with CheckpointStore(store) as database:
        recorded, edited = database.recorded()
        state = database.state(covered_seqs([*found, *recorded]))
    problems += edited
    if witness is not None and not read:
        problems.append(_missing(witness, recorded))
    name = str(witness) if read else None
    report = hold(state, found, recorded, keys, witness_name=name)
    findings = sorted([*problems, *report.findings], key=lambda f: f.seq)
    return FleetCheckpointAudit(report, witness if read else None, findings)


def _missing(witness: Path, recorded: list[Sourced]) -> Finding:
    """A witness file given that is not there: what the store's table says it should hold."""
    if not recorded:
        held = "the store's checkpoints table records none either"
    else:
        newest = max(recorded, key=lambda s: s.checkpoint.signed_at)
        held = (
            f"the store's checkpoints table records {len(recorded)} it may have held, the "
            f"newest {newest.describe()}"
        )
    return Finding(
        "witness",
        0,
        f"the witness file {witness} does not exist ({held}): without it a cut tail whose "
        "checkpoints were deleted from the store too would not be seen; give a copy of it",
    )


def events_in(log: EventLog) -> int:
    """How many events a log holds: its head, or for a whole PostgreSQL store the sum of its
    partitions' heads (its head is a position, not a count)."""
    from onduty.log.fleet_view import FleetView

    return log.count() if isinstance(log, FleetView) else log.head()[0]


def fleet_audit_of(
    settings: CheckpointSettings, store: str, broken: ChainBreak | None, node: str
) -> FleetCheckpointAudit:
    """The fleet checkpoints' verdict as node `node` sees it: its own witness file and the
    public half of the key it signs with, from its configuration."""
    witness = Path(settings.witness.replace("{node}", node)) if settings.witness else None
    public = public_path(Path(settings.key)) if settings.key else None
    keys = [public] if public is not None and public.exists() else []
    return audit_fleet_checkpoints(store, broken, witness=witness, public_keys=keys)


@dataclass
class CheckpointSummary:
    """The checkpoints' verdict as the API and the console show it, for one log or a fleet's
    store alike. `problem` is set (and the rest empty) when a key or witness cannot be read."""

    witness: Path | None = None
    checked: int = 0
    """Checkpoints that hold (in the witness and in the log or the store's table)."""
    in_log: int = 0
    """Those recorded in the log itself (or the store's table)."""
    signatures: bool = False
    latest: dict[str, str | int] | None = None
    vouched: str = ""
    """A sentence: what the newest checkpoint that holds vouches for."""
    archives: list[ArchiveEntry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    """Every finding against the store, the chain's own break included for one log."""
    problem: str = ""

    @property
    def first_finding(self) -> str:
        """The first finding that is not the chain's own break ("" for none)."""
        return next((f.message for f in self.findings if f.kind != "chain"), "")


def summarize_checkpoints(
    log: EventLog,
    store: str,
    broken: ChainBreak | None,
    *,
    fleet: bool,
    settings: CheckpointSettings,
    node: str,
) -> CheckpointSummary:
    """`audit_checkpoints` for one log, `fleet_audit_of` for a fleet's store (as node `node`),
    in the one shape a page or an answer shows."""
    if fleet:
        try:
            audited_fleet = fleet_audit_of(settings, store, broken, node)
        except (CheckpointError, StoreError) as error:
            return CheckpointSummary(problem=str(error))
        report = audited_fleet.report
        newest = report.latest
        return CheckpointSummary(
            witness=audited_fleet.witness,
            checked=report.in_witness + report.in_store,
            in_log=report.in_store,
            signatures=report.signatures,
            latest=None if newest is None else {"described": newest.describe()},
            vouched="no signed checkpoint of the partitions: a cut tail would not be seen"
            if newest is None
            else f"{report.in_witness + report.in_store} signed checkpoints hold; the newest "
            f"{newest.describe()}",
            findings=[f for f in audited_fleet.findings if f.kind != "chain"],
        )
    try:
        audited = audit_checkpoints(log, store, broken)
    except CheckpointError as error:
        return CheckpointSummary(problem=str(error))
    latest = audited.report.latest
    return CheckpointSummary(
        witness=audited.witness,
        checked=audited.report.checked,
        in_log=audited.report.in_log,
        signatures=audited.report.signatures,
        latest=None
        if latest is None
        else {"seq": latest.seq, "signed_at": latest.signed_at, "key_id": latest.key_id},
        vouched="no signed checkpoint in a witness file: a cut tail would not be seen"
        if latest is None
        else f"{audited.report.checked} signed checkpoints hold, the latest at event "
        f"#{latest.seq} (signed {latest.signed_at} by key {latest.key_id})",
        archives=audited.archives,
        findings=audited.findings,
    )
