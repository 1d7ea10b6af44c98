"""The benchmark workloads `onduty bench` runs: each public module here has a
`run(quick: bool) -> list[Row]`; modules whose name starts with `_` are their shared helpers.
Figures are recorded in BENCHMARKS.md, never asserted."""

from __future__ import annotations

import pkgutil


def workloads() -> list[str]:
    """The names of the workload modules, in order."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
