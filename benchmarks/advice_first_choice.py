"""The advisor benchmark's plainest peer: `onduty sim SCENARIO --advise` against a chat server on
loopback that always answers the first choice offered (the runbook order's own pick, since the
choices are listed in the runbooks' order of preference). A language model is worth its cost
only where it does better than this.

    python benchmarks/advice_first_choice.py SCENARIO RUNS OUT.json [-c CONFIG ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.chat_server import ChatServer, Reply, reply  # noqa: E402 (after the path is set)


def first_choice(body: dict[str, Any]) -> Reply:
    user = body["messages"][1]["content"]
    choices = json.loads(user.split("CHOICES:\n", 1)[1].rsplit("\n\nWhich choice", 1)[0])
    return reply(choices[0]["name"], choices[0]["target"], "the first choice offered")


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    scenario, runs, out, *extra = argv
    server = ChatServer(first_choice)
    try:
        command = [
            sys.executable, "-m", "onduty", "sim", scenario, "--advise", "--runs", runs,
            "--base-url", server.url, "--model", "first-choice", "--json", out, *extra,
        ]  # fmt: skip
        return subprocess.call(command)
    finally:
        server.close()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
