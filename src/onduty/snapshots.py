"""Snapshots of the core's state, written off the thread that owns the state.

Where the platform can fork (as Redis does for its snapshots), the core thread only forks: the
child holds a copy-on-write image of the state as it was, encodes it to JSON bytes
(`State.encode`) and once more with keys sorted (the canonical JSON the digest is taken over),
hashes that, sends the bytes and the digest through a pipe and exits; it touches no lock, log
or connection of the parent's. A writer thread reads the pipe and stores the snapshot. So the
core thread's pause does not grow with the state. Elsewhere, the core thread encodes and the
writer hashes and stores.

A snapshot is only ever of events already durable, and a backend stores it in one transaction:
a crash while writing (or a child that dies) leaves the previous snapshots, never a partial one
that start-up would take (and one whose content does not match its digest is refused anyway).
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import signal
import struct
import threading
import time
import warnings

import orjson

from onduty.log import EventLog, Snapshot
from onduty.state import State

logger = logging.getLogger("onduty.snapshots")


def _digest(seq: int, event_hash: str, canonical: bytes) -> str:
    digest = hashlib.sha256(b'{"event_hash":' + orjson.dumps(event_hash) + b',"seq":')
    digest.update(b"%d" % seq + b',"state":')
    digest.update(canonical)
    digest.update(b"}")
    return digest.hexdigest()


def bind(seq: int, event_hash: str, encoded: bytes, canonical: bytes | None) -> Snapshot:
    """The snapshot of the state `encoded` (`State.encode`) after the event at `seq`, bound to
    the chain as `Snapshot.bound` binds it. With the state's canonical JSON at hand
    (`State.encode_canonical`), the digest is taken over it (hashing releases the GIL) and
    `encoded` is stored as it is; otherwise the content is decoded and bound the ordinary
    way."""
    if canonical is None:
        return Snapshot.bound(seq, event_hash, State.snapshot_of(encoded))
    return Snapshot(seq, {}, event_hash, _digest(seq, event_hash, canonical), encoded=encoded)


def save(log: EventLog, seq: int, event_hash: str, state: State) -> None:
    """Store a snapshot of `state` after the event at `seq`, here and now."""
    log.save_snapshot(bind(seq, event_hash, state.encode(), state.encode_canonical()))


# What a child sends: a header (the lengths of the encoded state and of its canonical JSON, -1
# when that could not be trusted), then both. The digest is taken by the parent's writer: the
# child calls no library that may hold a lock another thread had when it forked (OpenSSL's).
_HEADER = struct.Struct("!qq")
FORKS = hasattr(os, "fork")
_MAX_FD = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536
COLLECT_TIMEOUT = 600.0
"""A child that has not sent its snapshot by then is stopped (the next snapshot may do)."""


class _Forked:
    """A child encoding the state as it was when it forked: `collect` reads what it sends."""

    def __init__(self, seq: int, event_hash: str, state: State) -> None:
        self.seq, self.event_hash = seq, event_hash
        read, write = os.pipe()
        with warnings.catch_warnings():  # forking with threads: the child touches none of theirs
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: encode, send, exit; nothing of the parent's is touched
            code = 1
            try:
                # Hold none of the parent's files: a run lock (flock) must end with its run.
                os.closerange(3, write)
                os.closerange(write + 1, _MAX_FD)
                encoded = state.encode()
                canonical = state.encode_canonical()
                size = -1 if canonical is None else len(canonical)
                with os.fdopen(write, "wb") as pipe:
                    pipe.write(_HEADER.pack(len(encoded), size))
                    pipe.write(encoded)
                    pipe.write(canonical or b"")
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        self.pid, self._read = pid, read

    def collect(self, timeout: float = COLLECT_TIMEOUT) -> Snapshot | None:
        """The snapshot the child made, or None when it died (or hung) before sending it."""
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                ready, _, _ = select.select([self._read], [], [], deadline - time.monotonic())
                if not ready:
                    os.kill(self.pid, signal.SIGKILL)
                    return None
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(self._read)
            _, status = os.waitpid(self.pid, 0)
        data = b"".join(chunks)
        if status != 0 or len(data) < _HEADER.size:
            return None
        length, size = _HEADER.unpack_from(data)
        end = _HEADER.size + length
        if len(data) != end + max(size, 0):
            return None
        canonical = None if size < 0 else data[end:]
        return bind(self.seq, self.event_hash, data[_HEADER.size : end], canonical)

    def abandon(self) -> None:
        """A newer snapshot replaces this one before it was read: stop the child."""
        os.kill(self.pid, signal.SIGKILL)
        os.close(self._read)
        os.waitpid(self.pid, 0)


_Job = tuple[int, str, bytes, bytes | None] | _Forked


class SnapshotWriter:
    """Saves snapshots on a thread of its own, started when there is one to write and ended
    when there is none. While one is being written, a newer one replaces any still waiting:
    only the newest is worth writing. With `fork` (the default where the platform has it),
    the state is encoded by a forked child, not by the caller."""

    def __init__(self, log: EventLog, *, fork: bool = FORKS) -> None:
        self._log = log
        self._fork = fork
        self._cond = threading.Condition()
        self._waiting: _Job | None = None
        self._running = False

    def submit(self, seq: int, event_hash: str, state: State) -> None:
        """Snapshot `state` after the event at `seq`: forked (or encoded) now, on the caller's
        thread (that owns the state), bound and stored on the writer's."""
        job: _Job
        if self._fork:
            job = _Forked(seq, event_hash, state)
        else:
            job = (seq, event_hash, state.encode(), state.encode_canonical())
        with self._cond:
            replaced, self._waiting = self._waiting, job
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="onduty-snapshots", daemon=True).start()
        if isinstance(replaced, _Forked):
            replaced.abandon()

    def wait(self) -> None:
        """Return once every snapshot submitted is written (or failed)."""
        with self._cond:
            while self._running:
                self._cond.wait()

    def _run(self) -> None:
        while True:
            with self._cond:
                job, self._waiting = self._waiting, None
                if job is None:
                    self._running = False
                    self._cond.notify_all()
                    return
            seq = job.seq if isinstance(job, _Forked) else job[0]
            try:
                snapshot = job.collect() if isinstance(job, _Forked) else bind(*job)
                if snapshot is None:
                    logger.error("the snapshot at seq %s was not made: its encoder died", seq)
                else:
                    self._log.save_snapshot(snapshot)
            except Exception:  # the log still holds every event: the next snapshot may succeed
                logger.exception("the snapshot at seq %s could not be saved", seq)
