"""Just enough of CEL's grammar to find what a condition names: its tokens, the variables and
fields it selects (`service.tier`, `signal.labels["x"]`), its comparisons with literals, its
memberships and its calls."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_RESERVED = frozenset({"true", "false", "null", "in"})
_TYPE_NAMES = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"}
)
_COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
_BEFORE_OPERAND = frozenset({"(", "&&", "||", ",", "?", ":", "[", "{"})
_AFTER_OPERAND = frozenset({")", "&&", "||", ",", "?", ":", "]", "}"})
_MIRRORED = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}


@dataclass(frozen=True)
class Token:
    kind: Literal["ident", "string", "number", "op"]
    text: str
    start: int  # 0-based offset
    value: str = ""  # a string literal's content

    @property
    def end(self) -> int:
        return self.start + len(self.text)


_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
    |(?P<string>
        (?:[rR][bB]?|[bB][rR]?)?
        (?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')
    )
    |(?P<number>0[xX][0-9a-fA-F]+[uU]?|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[uU]?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op>==|!=|<=|>=|&&|\|\||.)
    """,
    re.VERBOSE,
)
_PREFIX = re.compile(r"^[rRbB]*")


def _string_value(text: str) -> str:
    prefix = _PREFIX.match(text)
    raw = "r" in (prefix.group(0).lower() if prefix else "")
    body = text[len(prefix.group(0)) if prefix else 0 :]
    quote = 3 if body[:3] in ('"""', "'''") else 1
    inner = body[quote:-quote]
    return inner if raw else re.sub(r"\\(.)", r"\1", inner)


def tokenize(source: str) -> list[Token]:
    """CEL tokens, comments and white space dropped; good enough to find names and literals."""
    tokens: list[Token] = []
    for match in _TOKEN.finditer(source):
        kind = match.lastgroup
        text = match.group(0)
        if kind == "space":
            continue
        if kind == "string":
            tokens.append(Token("string", text, match.start(), _string_value(text)))
        elif kind in ("number", "ident", "op"):
            tokens.append(Token(kind, text, match.start()))  # type: ignore[arg-type]
    return tokens


@dataclass(frozen=True)
class Chain:
    """A variable and the fields selected from it: `signal.labels["x"]`, `service.tier`."""

    path: tuple[str, ...]
    starts: tuple[int, ...]  # 0-based offset of each part
    first: int  # index of the root token
    last: int  # index of the last token of the chain
    end: int  # 0-based offset just past the chain


@dataclass(frozen=True)
class Comparison:
    chain: Chain
    operator: str
    literal: Token
    span: tuple[int, int]  # 0-based offsets of the whole comparison
    at: int  # 0-based offset of the operator


@dataclass
class Analysis:
    tokens: list[Token]
    free: dict[str, int] = field(default_factory=dict)  # variable -> first offset
    bound: set[str] = field(default_factory=set)
    chains: list[Chain] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    memberships: list[tuple[Chain, list[Token]]] = field(default_factory=list)
    calls: list[tuple[str, int, tuple[int, int]]] = field(default_factory=list)


def token_text(tokens: Sequence[Token], index: int) -> str | None:
    return tokens[index].text if 0 <= index < len(tokens) else None


def _closing(tokens: Sequence[Token], opening: int) -> int | None:
    depth = 0
    for index in range(opening, len(tokens)):
        if tokens[index].kind != "op":
            continue
        if tokens[index].text in "([{":
            depth += 1
        elif tokens[index].text in ")]}":
            depth -= 1
            if depth == 0:
                return index
    return None


def analyse(source: str) -> Analysis:
    tokens = tokenize(source)
    result = Analysis(tokens)
    for index, token in enumerate(tokens):
        if (
            token.kind == "ident"
            and token.text in _MACROS
            and token_text(tokens, index - 1) == "."
            and token_text(tokens, index + 1) == "("
            and index + 2 < len(tokens)
            and tokens[index + 2].kind == "ident"
            and token_text(tokens, index + 3) == ","
        ):
            result.bound.add(tokens[index + 2].text)
    chains_by_first: dict[int, Chain] = {}
    for index, token in enumerate(tokens):
        if token.kind != "ident" or token_text(tokens, index - 1) == ".":
            continue
        if token_text(tokens, index + 1) == "(":
            close = _closing(tokens, index + 1)
            if token.text != "has" and close is not None:
                span = (token.start, tokens[close].end)
                result.calls.append((token.text, token.start, span))
            continue
        if token.text in _RESERVED or token.text in _TYPE_NAMES:
            continue
        if token.text not in result.bound:
            result.free.setdefault(token.text, token.start)
        chain = _chain(tokens, index)
        result.chains.append(chain)
        chains_by_first[index] = chain
    for chain in result.chains:
        _comparisons_of(result, chain, chains_by_first)
        method = chain.last + 2
        if (
            token_text(tokens, chain.last + 1) == "."
            and method < len(tokens)
            and tokens[method].kind == "ident"
            and token_text(tokens, method + 1) == "("
        ):
            close = _closing(tokens, method + 1)
            if close is not None:
                span = (tokens[chain.first].start, tokens[close].end)
                result.calls.append((tokens[method].text, tokens[method].start, span))
    return result


def _chain(tokens: Sequence[Token], index: int) -> Chain:
    path, starts = [tokens[index].text], [tokens[index].start]
    last = index
    while True:
        if (
            token_text(tokens, last + 1) == "."
            and last + 2 < len(tokens)
            and tokens[last + 2].kind == "ident"
            and token_text(tokens, last + 3) != "("
        ):
            path.append(tokens[last + 2].text)
            starts.append(tokens[last + 2].start)
            last += 2
        elif (
            token_text(tokens, last + 1) == "["
            and last + 2 < len(tokens)
            and tokens[last + 2].kind == "string"
            and token_text(tokens, last + 3) == "]"
        ):
            path.append(tokens[last + 2].value)
            starts.append(tokens[last + 2].start)
            last += 3
        else:
            break
    return Chain(tuple(path), tuple(starts), index, last, tokens[last].end)


def _is_literal(token: Token) -> bool:
    return token.kind in ("string", "number") or token.text in ("true", "false", "null")


def _comparisons_of(result: Analysis, chain: Chain, chains_by_first: dict[int, Chain]) -> None:
    tokens = result.tokens
    before = token_text(tokens, chain.first - 1)
    after = token_text(tokens, chain.last + 1)
    # the literal on the left: `"critical" == service.tier`
    if before in _COMPARISONS and chain.first >= 2:
        literal = tokens[chain.first - 2]
        before_literal = token_text(tokens, chain.first - 3)
        if (
            _is_literal(literal)
            and (before_literal is None or before_literal in _BEFORE_OPERAND)
            and (after is None or after in _AFTER_OPERAND)
        ):
            span = (literal.start, chain.end)
            operator = _MIRRORED.get(before, before)
            at = tokens[chain.first - 1].start
            result.comparisons.append(Comparison(chain, operator, literal, span, at))
        return
    if before is not None and before not in _BEFORE_OPERAND:
        return  # part of a larger operand (`x + service.instances > 3`): not a plain comparison
    if after in _COMPARISONS and chain.last + 2 < len(tokens):
        literal = tokens[chain.last + 2]
        after_literal = token_text(tokens, chain.last + 3)
        if _is_literal(literal) and (after_literal is None or after_literal in _AFTER_OPERAND):
            span = (tokens[chain.first].start, literal.end)
            at = tokens[chain.last + 1].start
            result.comparisons.append(Comparison(chain, after, literal, span, at))
    elif after == "in" and token_text(tokens, chain.last + 2) == "[":
        close = _closing(tokens, chain.last + 2)
        if close is not None:
            items = tokens[chain.last + 3 : close]
            literals = [t for t in items if t.text != ","]
            if literals and all(t.kind == "string" for t in literals):
                result.memberships.append((chain, literals))
