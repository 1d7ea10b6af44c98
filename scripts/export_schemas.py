"""Publish the JSON Schemas of the event envelope and every event type.

    python scripts/export_schemas.py           # write src/onduty/schemas/events.json
    python scripts/export_schemas.py --check   # exit 1 when the committed file is stale

The file is `onduty.events.json_schemas()` as pretty JSON with sorted keys and a trailing
newline, so a change to any payload shows up as a readable diff in review.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from onduty.events import json_schemas

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "src" / "onduty" / "schemas" / "events.json"
COMMAND = "python scripts/export_schemas.py"


def render(schemas: dict[str, Any] | None = None) -> str:
    """The published text of the schemas (the current ones unless given)."""
    document = json_schemas() if schemas is None else schemas
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _differences(published: str, expected: str) -> list[str]:
    """Which parts of the published file differ, in words a reviewer can act on."""
    try:
        old = json.loads(published)
        new = json.loads(expected)
    except ValueError:
        return ["the published file is not valid JSON"]
    if not isinstance(old, dict) or not isinstance(old.get("types"), dict):
        return ["the published file does not have the expected layout"]
    lines = []
    if old.get("envelope") != new["envelope"]:
        lines.append("envelope: changed")
    old_types, new_types = old["types"], new["types"]
    for name in sorted(new_types.keys() - old_types.keys()):
        lines.append(f"{name}: new type, not yet published")
    for name in sorted(old_types.keys() - new_types.keys()):
        lines.append(f"{name}: published but no longer in EVENT_TYPES")
    for name in sorted(old_types.keys() & new_types.keys()):
        if old_types[name] != new_types[name]:
            lines.append(f"{name}: schema changed")
    return lines or ["formatting differs"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the published file differs from the current schemas",
    )
    parser.add_argument(
        "--output", type=Path, default=OUTPUT, help=f"where to write (default: {OUTPUT})"
    )
    args = parser.parse_args(argv)
    output: Path = args.output
    expected = render()

    if args.check:
        try:
            published = output.read_text(encoding="utf-8")
        except FileNotFoundError:
            print(f"{output} is missing; run `{COMMAND}` and commit it", file=sys.stderr)
            return 1
        if published != expected:
            print(
                f"{output} is stale: the event schemas changed since it was exported.",
                file=sys.stderr,
            )
            for line in _differences(published, expected):
                print(f"  {line}", file=sys.stderr)
            print(f"Run `{COMMAND}` and commit the result.", file=sys.stderr)
            return 1
        print(f"{output} is up to date")
        return 0

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(expected, encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
