"""`onduty log seal` and `onduty log archives`: old events sealed into compressed archives
beside the store, and what the store has sealed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from onduty.cli.base import ConfigOption, StoreOption, UsageProblem, existing_log, out, progress
from onduty.textsafe import markup

log_app = typer.Typer(no_args_is_help=True, help="Seal old events into archives, list them.")


def parse_moment(text: str) -> datetime:
    """A date (midnight UTC) or an ISO 8601 time (UTC when it names no offset)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageProblem(
            f"--before {text!r} is not a date (2026-11-01) or an ISO 8601 time "
            "(2026-11-01T12:00:00Z)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@log_app.command("seal")
def log_seal(
    before: Annotated[
        str,
        typer.Option(
            "--before",
            help="Seal the events stamped before this moment: a date (2026-11-01, midnight "
            "UTC) or a time (2026-11-01T12:00:00Z).",
        ),
    ],
    store: StoreOption = "onduty.db",
    config: ConfigOption = None,
) -> None:
    """Move the events stamped before a moment out of the live store into one sealed,
    compressed archive in <store>.archives/, with the core's state and a signed checkpoint as
    of the last of them. `audit verify`, `replay` and backtests read through the archives; the
    store starts without them. Run it on a store no `onduty serve` is writing (a running
    serve seals by its `retention:` section)."""
    from onduty.checkpointer import key_file, signing_key, store_file
    from onduty.configfile import load_config
    from onduty.log.checkpoints import CheckpointError
    from onduty.retention import ServingLock, StoreBusy, key_if_any

    moment = parse_moment(before)
    settings = load_config(config).checkpoints if config else None
    try:
        key = key_if_any(
            (lambda: signing_key(settings, store)) if settings and settings.key else None,
            key_file(store),
        )
    except CheckpointError as error:
        raise UsageProblem(str(error)) from None
    file = store_file(store)
    try:
        lock = ServingLock(file, exclusive=True) if file is not None and file.exists() else None
    except StoreBusy as error:
        raise UsageProblem(
            f"{error}: it seals by its `retention:` section; stop it to seal by hand"
        ) from None
    try:
        _seal(store, moment, key)
    finally:
        if lock is not None:
            lock.release()


def _seal(store: str, moment: datetime, key: Any) -> None:
    from onduty.log.sealed import ArchiveError
    from onduty.retention import last_before, seal_through, sealable

    with existing_log(store) as log:
        try:
            sealable(log)
        except ValueError as error:
            raise UsageProblem(str(error)) from None
        origin = log.origin()[0]
        through = last_before(log, moment)
        if through <= origin:
            out.print(f"nothing to seal: no event in the live store is stamped before {moment}")
            return
        try:
            with progress("sealing", total=2 * (through - origin)) as advance:
                sealed = seal_through(
                    log, through, now=datetime.now(UTC), key=key, before=moment, advance=advance
                )
        except (ArchiveError, OSError) as error:
            raise UsageProblem(f"could not seal: {error}; no event left the store") from None
    where = markup(str(sealed.folder / sealed.entry.name)) if sealed.folder else ""
    signed = (
        f"checkpoint signed by key {sealed.checkpoint.key_id}"
        if sealed.checkpoint
        else "[yellow]no signing key[/] (none configured or beside the store): the archive "
        "holds no checkpoint of its own"
    )
    out.print(
        f"[green]sealed[/] {sealed.count} events (seq {sealed.entry.first}..{sealed.entry.last}) "
        f"into {where}; {signed}",
        soft_wrap=True,
    )


@log_app.command("archives")
def log_archives(store: StoreOption = "onduty.db") -> None:
    """List the archives the store sealed events into, and whether each is present and
    unaltered (exit 1 when one is missing or altered)."""
    from onduty.log.sealed import Archives, file_digest
    from onduty.retention import archives_of

    with existing_log(store) as log:
        entries, folder = archives_of(log)
    if not entries:
        out.print("no archives: every event is in the live store")
        return
    archives, bad = Archives(folder, entries), 0
    for entry in entries:
        path = archives.file(entry).path
        if not path.exists():
            state, bad = "[bold red]missing[/]", bad + 1
        elif file_digest(path) != entry.sha256:
            state, bad = "[bold red]altered[/]", bad + 1
        else:
            state = f"intact, {path.stat().st_size:,} bytes"
        out.print(f"{markup(entry.name)}  seq {entry.first}..{entry.last}  {state}", soft_wrap=True)
    out.print(f"in {markup(str(folder))}", soft_wrap=True)
    if bad:
        raise typer.Exit(1)
