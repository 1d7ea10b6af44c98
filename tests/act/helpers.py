"""Helpers shared by the actuator tests: loopback ports, process-group inspection, commands."""

from __future__ import annotations

import os
import socket
from typing import Any

from onduty.commands import StartAction, StartUndo


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_state(pid: int) -> str | None:
    """The state letter of a process (R, S, Z, ...), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0].decode()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def live_members(pgid: int) -> list[int]:
    """Processes of the group that still run (zombies only wait to be reaped)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members


def action(
    target: str = "web-1",
    params: dict[str, Any] | None = None,
    *,
    name: str = "process.restart",
    command_id: str = "cmd-1",
    timeout_s: float = 30.0,
) -> StartAction:
    return StartAction(
        command_id=command_id,
        incident_id="inc-1",
        action=name,
        target=target,
        params=params or {},
        timeout_s=timeout_s,
    )


def undo(
    of_command_id: str,
    target: str = "web-1",
    params: dict[str, Any] | None = None,
    *,
    name: str = "process.restart",
    command_id: str = "undo-1",
) -> StartUndo:
    return StartUndo(
        command_id=command_id,
        of_command_id=of_command_id,
        incident_id="inc-1",
        action=name,
        target=target,
        params=params or {},
    )
