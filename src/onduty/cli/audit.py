"""`onduty audit verify`: the hash chain, the snapshots bound to it, and the signed checkpoints
that show nothing was cut off or rewritten."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from onduty.cli.base import StoreOption, UsageProblem, counting, err, existing_log, out, progress
from onduty.log import EventLog
from onduty.textsafe import markup

if TYPE_CHECKING:
    from onduty.log.fleet_checkpoints import FleetCheckpointReport

_HEADS_SHOWN = 8  # partitions whose covered seq the coverage line names

audit_app = typer.Typer(no_args_is_help=True, help="Check the log's integrity.")


@audit_app.command("verify")
def audit_verify(
    store: StoreOption = "onduty.db",
    deep: Annotated[
        bool,
        typer.Option(
            "--deep",
            help="Also fold the log and check that each stored snapshot is exactly the state "
            "at its seq (catches one forged with a recomputed digest; costs a replay).",
        ),
    ] = False,
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            help="The witness file of signed checkpoints (default: <store>.checkpoints when "
            "it exists; a PostgreSQL store has none beside it: give a signing node's "
            "checkpoints.witness, else only the store's own checkpoints table is read).",
        ),
    ] = None,
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help="A public key the checkpoints are signed with (repeat it for keys rotated "
            "out; default: <store>.checkpoint.key.pub when it exists; a PostgreSQL store has "
            "no default: give the .pub beside the fleet's checkpoints.key).",
        ),
    ] = None,
) -> None:
    """Check the hash chain, the stored snapshots and the signed checkpoints: exit 0 intact, 1
    broken (naming the first bad sequence number, or the checkpoint that no longer matches, or
    each snapshot that is not bound to the chain and why)."""
    from onduty.auditing import audit_checkpoints, audit_fleet_checkpoints
    from onduty.log import verify_snapshots
    from onduty.log.checkpoints import CheckpointError

    # a whole PostgreSQL store reports a missing witness as a finding, naming what the
    # store's own table says the witness held
    if checkpoints is not None and not checkpoints.exists() and not _whole_store(store):
        raise UsageProblem(f"--checkpoints {checkpoints}: no such file")
    with existing_log(store) as log:
        seq, _ = log.head()
        partitions = _partitions(log)
        with progress("verifying", total=seq) as advance:
            broken = log.verify(progress=lambda done, total: advance(done))
        keys = public_key or ()
        try:
            if partitions is None:
                audited = audit_checkpoints(
                    log, store, broken, witness=checkpoints, public_keys=keys
                )
                findings, entries = audited.findings, audited.archives
                signatures = audited.report.signatures
                coverage = _coverage(audited.report, audited.witness, seq)
            else:
                fleet = audit_fleet_checkpoints(
                    store, broken, witness=checkpoints, public_keys=keys
                )
                findings, entries = fleet.findings, []
                signatures = fleet.report.signatures
                coverage = _fleet_coverage(fleet.report, fleet.witness)
        except CheckpointError as error:
            raise UsageProblem(str(error)) from None
        snapshots = log.snapshots()
        problems = verify_snapshots(log)
        if deep and broken is None:
            bad = {problem.seq for problem in problems}
            with progress("folding", total=seq) as advance:
                problems += _unfolded(log, [s for s in snapshots if s.seq not in bad], advance)
    for finding in findings:
        title = "chain broken" if finding.kind == "chain" else f"checkpoint: {finding.kind}"
        text = f"at {finding.message}" if finding.kind == "chain" else finding.message
        err.print(f"[bold red]{title}[/] {markup(text)}", soft_wrap=True)
    for problem in sorted(problems, key=lambda problem: -problem.seq):
        err.print(
            f"[bold red]snapshot at seq {problem.seq} is bad[/]: {markup(problem.reason)}; "
            "onduty discards it at start-up and folds the log instead",
            soft_wrap=True,
        )
    if findings or problems:
        raise typer.Exit(1)
    kept = f"; {len(snapshots)} snapshots bound to it" if snapshots else ""
    folded = " and equal to the log folded up to their seq" if snapshots and deep else ""
    counted = f"{seq} events verified"
    if partitions is not None:
        counted = (
            f"{partitions[1]} events in {partitions[0]} partitions verified, each its own chain"
        )
    out.print(f"[green]chain intact[/]: {counted}{kept}{folded}", soft_wrap=True)
    if entries:
        out.print(_archived(entries, signatures), soft_wrap=True)
    out.print(coverage, soft_wrap=True)


def _archived(entries: list[Any], keys: bool) -> str:
    """What the walk covered of the archives, in one line."""
    last = entries[-1].last
    signed = "their checkpoints' signatures checked" if keys else "signatures NOT checked"
    return (
        f"[green]archives hold[/]: {len(entries)} sealed archive"
        f"{'s' if len(entries) > 1 else ''} (seq 1..{last}) walked as one chain with the live "
        f"store ({signed})"
    )


def _coverage(report: Any, witness: Path | None, head: int) -> str:
    """What the checkpoints vouch for, in one line."""
    if report.latest is None and not report.in_log:
        return "[yellow]no signed checkpoints[/]: a cut tail or a rewritten chain would not be seen"
    signed = "signatures checked" if report.signatures else "[yellow]signatures NOT checked[/] "
    if not report.signatures:
        signed += "(no public key: give --public-key)"
    if report.latest is None:
        return (
            f"[yellow]no witness file[/]: {report.in_log} checkpoints in the log agree with it "
            f"({signed}); give --checkpoints to detect a cut tail"
        )
    latest = report.latest
    after = head - latest.seq
    tail = f"; {after} later event{'s' if after > 1 else ''} not yet covered" if after > 0 else ""
    return (
        f"[green]checkpoints hold[/]: {report.checked} in {markup(str(witness))} and "
        f"{report.in_log} in the log, latest at seq {latest.seq} signed {latest.signed_at} by "
        f"key {latest.key_id} ({signed}){tail}"
    )


def _fleet_coverage(report: FleetCheckpointReport, witness: Path | None) -> str:
    """What a fleet's checkpoints vouch for, in one line."""
    latest = report.latest
    if latest is None:
        return (
            "[yellow]no signed checkpoints[/]: a cut tail or a rewritten partition would not be "
            "seen (a fleet signs them once checkpoints.key and checkpoints.witness are set)"
        )
    signed = "signatures checked" if report.signatures else "[yellow]signatures NOT checked[/] "
    if not report.signatures:
        signed += "(no public key: give --public-key)"
    c = latest.checkpoint
    heads = [f"{p} to seq {seq}" for p, seq, _, _ in c.partitions]
    shown = ", ".join(heads[:_HEADS_SHOWN]) + (", …" if len(heads) > _HEADS_SHOWN else "")
    newest = (
        f"the newest, signed {c.signed_at} by {markup(c.signer)} with key {c.key_id}, covers "
        f"{len(heads)} partitions, {c.covered} events (partition {shown})"
    )
    after = report.uncovered
    tail = f"; {after} later event{'s' if after > 1 else ''} not yet covered" if after > 0 else ""
    table = f"{report.in_store} in the store's checkpoints table"
    if witness is None:
        return (
            f"[yellow]no witness file[/]: {table} agree with it; {newest} ({signed}){tail}; "
            "give --checkpoints to detect a cut tail whose checkpoints were deleted too"
        )
    return (
        f"[green]checkpoints hold[/]: {report.in_witness} in {markup(str(witness))} and "
        f"{table}; {newest} ({signed}){tail}"
    )


def _unfolded(log: EventLog, snapshots: list[Any], advance: Callable[[int], None]) -> list[Any]:
    """The snapshots whose state is not the state of the core after folding the log up to their
    seq (the state is compared in its stored JSON form)."""
    import orjson

    from onduty.log import SnapshotProblem
    from onduty.manager import Manager

    wanted = {snapshot.seq: snapshot for snapshot in snapshots}
    manager, problems = Manager(), []
    last = max(wanted, default=0)
    for event in counting(log.read(), advance):
        if event.seq > last:
            break
        manager.apply(event)
        snapshot = wanted.get(event.seq)
        if (
            snapshot is not None
            and orjson.loads(orjson.dumps(manager.snapshot())) != snapshot.state
        ):
            reason = "its state is not the log folded up to its seq (forged or stale)"
            problems.append(SnapshotProblem(event.seq, reason))
    return problems


def _whole_store(store: str) -> bool:
    """Whether `existing_log` reads `store` whole: a PostgreSQL store without a partition."""
    return store.startswith(("postgresql://", "postgres://")) and "partition=" not in store


def _partitions(log: EventLog) -> tuple[int, int] | None:
    """(partitions, events) of a store read whole across its partitions; None for one log."""
    from onduty.log.fleet_view import FleetView

    if not isinstance(log, FleetView):
        return None
    return len(log.partitions()), log.count()
