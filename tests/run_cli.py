"""Run the `onduty` command line as a user does: a subprocess of this interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def onduty(
    *args: str,
    cwd: Path | None = None,
    columns: int = 240,
    timeout: float = 120,
    unset: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `onduty *args` with a terminal `columns` wide, the variables in `unset` removed and
    those in `env` set; a traceback on stderr fails the calling test."""
    environment = {key: value for key, value in os.environ.items() if key not in unset}
    environment.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "onduty", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
        env={**environment, "COLUMNS": str(columns)},
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result
