"""The README's "Safety promises" name the tests that prove them: every one named must exist, so
a renamed or deleted test cannot leave a promise without its proof."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTION = re.compile(r"^## Safety promises\n(.*?)^## ", re.S | re.M)
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`")


def _references() -> list[tuple[str, str | None]]:
    """(file, test name or None) pairs in the section's order; `::name` alone reuses the file
    named before it in the same cell, as the table writes it."""
    section = SECTION.search((ROOT / "README.md").read_text())
    assert section is not None, "README.md has no 'Safety promises' section"
    found: list[tuple[str, str | None]] = []
    for row in section.group(1).splitlines():
        if not row.startswith("|") or row.startswith("|---") or row.startswith("| promise"):
            continue
        proof = row.rstrip(" |").rsplit("|", 1)[-1]
        current = ""
        for path, name in REFERENCE.findall(proof):
            current = path or current
            assert current, f"a test name with no file before it: {row}"
            found.append((current, name or None))
    return found


def test_every_promise_names_a_test_that_exists() -> None:
    references = _references()
    assert len(references) >= 20
    missing = []
    for path, name in references:
        file = ROOT / path
        if not file.is_file():
            missing.append(path)
        elif name is not None and not re.search(
            rf"^\s*(?:async )?def {name}\(", file.read_text(), re.M
        ):
            missing.append(f"{path}::{name}")
    assert not missing, f"README promises name tests that do not exist: {missing}"
