"""Fixtures of the actuator tests."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.act.standin import Standins


@pytest.fixture
def standins(tmp_path: Path) -> Iterator[Standins]:
    """Programs the killed stand-ins started run in process groups of their own; none may
    outlive the test."""
    found = Standins(tmp_path)
    yield found
    for pgid in found.groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
