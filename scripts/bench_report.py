"""Turn the rows `onduty bench --json FILE` wrote into BENCHMARKS.md's tables.

    python scripts/bench_report.py bench.json > tables.md

One table per workload, each row as the bench printed it (figure, peer, ratio); the text
around the tables in BENCHMARKS.md (what limits a missed target) is written by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def tables(figures: dict[str, object]) -> str:
    workloads = figures["workloads"]
    assert isinstance(workloads, dict)
    out: list[str] = []
    for name, rows in workloads.items():
        out += [f"### `onduty bench --only {name}`", "", "| workload | figure | peer | ratio |",
                "|---|---|---|---|"]  # fmt: skip
        out += [
            f"| {cell(r['name'])} | {cell(r['figure'])} | {cell(r['peer'])} | {cell(r['ratio'])} |"
            for r in rows
        ]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(tables(json.loads(Path(sys.argv[1]).read_text())))
