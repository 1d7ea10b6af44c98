"""Text from outside, shown as it was sent: every character that would steer a terminal or a log
reader instead of being read is written as an escape.

Alert summaries, labels, source names and error messages are data. Printed raw, an ANSI escape
(`\\x1b[2J`) clears the operator's screen, a carriage return overwrites the start of a line, a
bidi override (U+202E) reverses what follows, and a newline forges a second log line. `visible`
keeps the text readable and makes those characters visible: ESC becomes `\\x1b`, U+202E becomes
`\\u202e`, and in single-line text a newline becomes `\\n`.

Markup (Rich's `[bold]`) is a second, separate matter: views build `rich.text.Text` from data, or
escape it with `rich.markup.escape`, never parse it as markup. `markup` does both in one call.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

__all__ = ["in_markup", "markup", "safe_text", "visible"]

# Format characters that are safe to keep: they join or separate letters (emoji sequences,
# Persian and Indic scripts) and never move or hide text.
_KEPT_FORMAT = frozenset({"\u200c", "\u200d"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


@lru_cache(maxsize=4096)
def _escape_char(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _hidden(char: str, single_line: bool) -> bool:
    if char == "\n":
        return single_line
    if " " <= char <= "~":  # the common case, printable ASCII
        return False
    category = unicodedata.category(char)
    if category == "Cf":  # bidi overrides and isolates, zero-width and tag characters
        return char not in _KEPT_FORMAT
    # controls (C0, DEL, C1), lone surrogates (which cannot even be encoded) and the line and
    # paragraph separators some viewers break lines at
    return category in ("Cc", "Cs", "Zl", "Zp")


def visible(value: object, *, single_line: bool = True) -> str:
    """`value` as text with every control, bidi and other invisible formatting character written
    as an escape (`\\x1b`, `\\u202e`, `\\U000e0041`). Single-line text (a table cell, a log
    line) shows newlines as `\\n` too; multi-line text keeps them as line breaks."""
    text = value if isinstance(value, str) else str(value)
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape_char(c) if _hidden(c, single_line) else c for c in text)


# Rich's markup has no escape for a backslash that holds wherever the text lands: before a `[`
# it is read as escaping the bracket (and dropped), and at the end of the text `escape` doubles
# it. Such a backslash is written as its escape, `\x5c`, like the other escapes `visible` writes.
_AMBIGUOUS_BACKSLASH = re.compile(r"\\(?=\[)|\\$")


def in_markup(value: object, *, single_line: bool = True) -> str:
    """What `markup(value)` shows once rendered: `visible(value)`, with a backslash before `[`
    or at the end written `\\x5c`."""
    return _AMBIGUOUS_BACKSLASH.sub(r"\\x5c", visible(value, single_line=single_line))


def markup(value: object, *, single_line: bool = True) -> str:
    """`value` made visible and escaped for Rich markup, to put data inside a markup string."""
    from rich.markup import escape

    return escape(in_markup(value, single_line=single_line))


def safe_text(value: object, style: str = "", *, single_line: bool = True) -> Text:
    """`value` made visible, as a Rich `Text` (never parsed as markup), e.g. for a table cell."""
    from rich.text import Text

    return Text(visible(value, single_line=single_line), style=style)
