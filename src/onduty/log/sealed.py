"""Sealed archives: old events moved out of the live store into compressed, read-only files.

An archive holds one contiguous run of the chain, seq `first`..`last`, exactly as it was
stored: each event's canonical body and hash, so the chain walks from an archive into the next
one and into the live store unchanged. Beside the events it carries a manifest: the log's
identity, where the run links to the chain (`prev_hash`, `last_hash`), the signed checkpoint
of its last event (when the store had a signing key) and the core's snapshot as of its last
event, which is what lets the live store start after it without it.

The live store records each archive it gave events to (`ArchiveEntry`: its name, its range,
its links and the sha256 of the whole file), so a missing or altered archive is reported by
name. The file is written aside, synced and renamed into place before the live store lets go
of a single event: a crash at any moment leaves either the events in the live store or in a
complete archive the store records.

Layout: `MAGIC`, then blocks of up to `BLOCK_EVENTS` events (each zlib-compressed on its own,
so reading one event decompresses one block), then the manifest (JSON), then a trailer with
the manifest's offset. In a block, each event is two lines: `[seq, id, type, stream, hash]` as
JSON, then its canonical body (JSON never holds a raw newline).
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from onduty.events import GENESIS_HASH
from onduty.log.base import ChainBreak, StoreError

FORMAT = "onduty-archive/1"
MAGIC = b"ONDUTY-ARCHIVE/1\n"
SUFFIX = ".onduty-archive"
BLOCK_EVENTS = 2_000
BLOCKS_CACHED = 4  # decompressed blocks a reader keeps (reading back a timeline hits few)
META_KEY = "archives"
"""The live store's meta key listing its archives (JSON), oldest first."""
_TRAILER = struct.Struct("!Q8s")
_END = b"ODARCEND"

FullRow = tuple[int, str, str, str, bytes, str]  # (seq, id, type, stream, body, hash)


class ArchiveError(StoreError):
    """An archive that is missing, unreadable or not what the live store recorded; the message
    names the file."""


@dataclass(frozen=True)
class ArchiveEntry:
    """What the live store records of one archive."""

    name: str
    first: int
    last: int
    prev_hash: str
    last_hash: str
    sha256: str

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> ArchiveEntry:
        return cls(**{name: fields[name] for name in cls.__dataclass_fields__})

    def describe(self) -> str:
        return f"archive {self.name} (seq {self.first}..{self.last})"


def entries_from_meta(value: str | None) -> list[ArchiveEntry]:
    if not value:
        return []
    return [ArchiveEntry.of(fields) for fields in orjson.loads(value)]


def entries_to_meta(entries: Iterable[ArchiveEntry]) -> str:
    return orjson.dumps([asdict(entry) for entry in entries]).decode()


def archive_name(store_name: str, first: int, last: int) -> str:
    return f"{store_name}-{first:012d}-{last:012d}{SUFFIX}"


def write_archive(
    path: Path, rows: Iterable[FullRow], *, first: int, prev_hash: str, manifest: dict[str, Any]
) -> ArchiveEntry:
    """Write the `rows` (seq `first` on, in order, linked to `prev_hash`) and `manifest` to
    `path`, durably (written aside, synced, renamed, folder synced); what the store records
    of it. Raises `ArchiveError` when the rows are not one contiguous run."""
    temporary = path.with_name(path.name + ".partial")
    digest = hashlib.sha256()
    blocks: list[list[int]] = []
    expected, last_hash = first, prev_hash
    with open(temporary, "wb") as out:

        def put(data: bytes) -> None:
            out.write(data)
            digest.update(data)

        put(MAGIC)
        lines: list[bytes] = []
        offset, block_first = len(MAGIC), first

        def flush() -> None:
            nonlocal offset, lines, block_first
            if not lines:
                return
            packed = zlib.compress(b"".join(lines), 6)
            put(packed)
            blocks.append([block_first, expected - 1, offset, len(packed)])
            offset += len(packed)
            lines, block_first = [], expected

        for seq, id_, type_, stream, body, hash_ in rows:
            if seq != expected:
                raise ArchiveError(f"archive {path.name}: seq {expected} is missing (got {seq})")
            lines.append(orjson.dumps([seq, id_, type_, stream, hash_]) + b"\n" + body + b"\n")
            expected, last_hash = seq + 1, hash_
            if len(lines) >= BLOCK_EVENTS:
                flush()
        flush()
        last = expected - 1
        if last < first:
            raise ArchiveError(f"archive {path.name}: no events to seal")
        header = {
            **manifest,
            "format": FORMAT,
            "first": first,
            "last": last,
            "prev_hash": prev_hash,
            "last_hash": last_hash,
            "blocks": blocks,
        }
        put(orjson.dumps(header, option=orjson.OPT_SORT_KEYS))
        put(_TRAILER.pack(offset, _END))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    _sync_folder(path.parent)
    return ArchiveEntry(path.name, first, last, prev_hash, last_hash, digest.hexdigest())


def counted(
    rows: Iterable[FullRow], advance: Callable[[int], Any] | None, every: int
) -> Iterator[FullRow]:
    """`rows`, telling `advance` how many went by every `every` rows."""
    for count, row in enumerate(rows, start=1):
        if advance is not None and count % every == 0:
            advance(count)
        yield row


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ArchiveFile:
    """One archive, read block by block."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._manifest: dict[str, Any] | None = None
        self._blocks: OrderedDict[int, list[FullRow]] = OrderedDict()

    def _fail(self, reason: str) -> ArchiveError:
        return ArchiveError(f"archive {self.path.name} in {self.path.parent}: {reason}")

    @property
    def manifest(self) -> dict[str, Any]:
        if self._manifest is None:
            try:
                with open(self.path, "rb") as source:
                    if source.read(len(MAGIC)) != MAGIC:
                        raise self._fail("not an onduty archive")
                    source.seek(-_TRAILER.size, os.SEEK_END)
                    offset, end = _TRAILER.unpack(source.read(_TRAILER.size))
                    if end != _END:
                        raise self._fail("its trailer is damaged (a cut or altered file)")
                    size = source.seek(0, os.SEEK_END) - _TRAILER.size
                    source.seek(offset)
                    manifest = orjson.loads(source.read(size - offset))
            except FileNotFoundError:
                raise self._fail("missing") from None
            except (OSError, ValueError, struct.error) as error:
                if isinstance(error, ArchiveError):
                    raise
                raise self._fail(f"unreadable ({error})") from None
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise self._fail(f"its manifest is not of format {FORMAT}")
            self._manifest = manifest
        return self._manifest

    def _block(self, index: int) -> list[FullRow]:
        cached = self._blocks.get(index)
        if cached is not None:
            self._blocks.move_to_end(index)
            return cached
        first, last, offset, length = self.manifest["blocks"][index]
        try:
            with open(self.path, "rb") as source:
                source.seek(offset)
                lines = zlib.decompress(source.read(length)).split(b"\n")
        except FileNotFoundError:
            raise self._fail("missing") from None
        except (OSError, zlib.error) as error:
            raise self._fail(f"block of seq {first}..{last} is unreadable ({error})") from None
        rows: list[FullRow] = []
        try:
            for position in range(0, len(lines) - 1, 2):
                seq, id_, type_, stream, hash_ = orjson.loads(lines[position])
                rows.append((seq, id_, type_, stream, lines[position + 1], hash_))
        except (ValueError, TypeError) as error:
            raise self._fail(f"block of seq {first}..{last} is damaged ({error})") from None
        self._blocks[index] = rows
        if len(self._blocks) > BLOCKS_CACHED:
            self._blocks.popitem(last=False)
        return rows

    def rows(self, after: int, before: int) -> Iterator[FullRow]:
        """Its events with `after` < seq < `before`, in order."""
        for index, (first, last, _offset, _length) in enumerate(self.manifest["blocks"]):
            if last <= after or first >= before:
                continue
            for row in self._block(index):
                if after < row[0] < before:
                    yield row

    def rows_at(self, seqs: Iterable[int]) -> list[FullRow]:
        """Its events at `seqs` (those it holds), in seq order."""
        wanted = sorted(set(seqs))
        found: list[FullRow] = []
        blocks = self.manifest["blocks"]
        for index, (first, last, _offset, _length) in enumerate(blocks):
            inside = {seq for seq in wanted if first <= seq <= last}
            if inside:
                found.extend(row for row in self._block(index) if row[0] in inside)
        return found


class Archives:
    """The archives a live store recorded, looked for in `directory`."""

    def __init__(self, directory: Path | None, entries: list[ArchiveEntry]) -> None:
        self.directory = directory
        self.entries = entries
        self._files: dict[str, ArchiveFile] = {}

    @property
    def origin(self) -> tuple[int, str]:
        """(seq, hash) of the last archived event: the live store's chain continues after it."""
        if not self.entries:
            return 0, GENESIS_HASH
        return self.entries[-1].last, self.entries[-1].last_hash

    @property
    def count(self) -> int:
        return sum(entry.last - entry.first + 1 for entry in self.entries)

    def file(self, entry: ArchiveEntry) -> ArchiveFile:
        found = self._files.get(entry.name)
        if found is None:
            folder = self.directory or Path(".")
            found = self._files[entry.name] = ArchiveFile(folder / entry.name)
        return found

    def added(self, entry: ArchiveEntry) -> None:
        self.entries = [*self.entries, entry]

    def rows(self, after: int, before: int) -> Iterator[FullRow]:
        """Archived events with `after` < seq < `before`, in order."""
        for entry in self.entries:
            if entry.last > after and entry.first < before:
                yield from self.file(entry).rows(after, before)

    def rows_at(self, seqs: Iterable[int]) -> list[FullRow]:
        wanted = list(seqs)
        found: list[FullRow] = []
        for entry in self.entries:
            inside = [seq for seq in wanted if entry.first <= seq <= entry.last]
            if inside:
                found.extend(self.file(entry).rows_at(inside))
        return found

    def problems(self) -> list[ChainBreak]:
        """Each archive that is missing, altered, or does not link to the one before it, as a
        `ChainBreak` at its first seq naming it. Reads every archive file once, whole."""
        found: list[ChainBreak] = []
        prev = GENESIS_HASH
        for entry in self.entries:
            archive = self.file(entry)
            where = f"{entry.describe()} in {archive.path.parent}"
            if entry.prev_hash != prev:
                found.append(ChainBreak(entry.first, f"{where} does not link to the one before"))
            prev = entry.last_hash
            if not archive.path.exists():
                found.append(ChainBreak(entry.first, f"{where} is missing"))
                continue
            actual = file_digest(archive.path)
            if actual != entry.sha256:
                found.append(
                    ChainBreak(
                        entry.first,
                        f"{where} was altered: its sha256 is {actual[:12]}…, the live store "
                        f"recorded {entry.sha256[:12]}…",
                    )
                )
        return found
