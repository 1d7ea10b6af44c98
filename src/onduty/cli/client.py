"""Talking to a running `onduty serve`: one HTTP call, and IDs typed by their beginning."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from onduty.cli.base import ServerRefused, UsageProblem


def call(
    method: str,
    url: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    *,
    timeout: float = 10.0,
) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {token.strip()}"} if token and token.strip() else {}
    if method == "POST":
        headers["Content-Type"] = "application/json"  # the API takes no other, body or not
    try:
        response = httpx.request(
            method, url.rstrip("/") + path, json=body, headers=headers, timeout=timeout
        )
    except httpx.TransportError as error:
        raise UsageProblem(f"cannot reach onduty at {url}: {error}") from None
    if response.status_code >= 400:
        try:
            detail = response.json()
            reason = detail.get("error") or detail.get("detail") or detail
            problems = detail.get("problems")
            if isinstance(problems, list) and problems:  # what is wrong, not only that it is
                reason = f"{reason}: {'; '.join(str(problem) for problem in problems)}"
        except (ValueError, AttributeError):
            reason = response.text
        if response.status_code == 401:
            sent = "Authorization" in headers
            hint = "the token was not accepted" if sent else "pass --token or set ONDUTY_TOKEN"
            reason = f"{reason} ({hint})"
        elif response.status_code == 429 and "Retry-After" in response.headers:
            reason = f"{reason} (retry after {response.headers['Retry-After']}s)"
        raise ServerRefused(response.status_code, f"{response.status_code}: {reason}")
    return response.json()


def resolve_id(kind: str, typed: str, known: Iterable[str]) -> str:
    """The one ID in `known` that `typed` names: itself, or the only one it is the beginning of
    (as with git commits). None or several: a UsageProblem (exit 2) that names them."""
    candidates = list(dict.fromkeys(known))
    if typed in candidates:
        return typed
    matches = [candidate for candidate in candidates if typed and candidate.startswith(typed)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageProblem(f"no {kind} matches {typed!r}")
    more = f" and {len(matches) - 10} more" if len(matches) > 10 else ""
    shown = ", ".join(matches[:10]) + more
    raise UsageProblem(f"{typed!r} is ambiguous: {len(matches)} {kind}s begin with it: {shown}")


def call_on_id(
    kind: str,
    typed: str,
    known: Callable[[], Iterable[str]],
    call: Callable[[str], Any],
) -> tuple[str, Any]:
    """`call` with the ID the user typed: a whole ID as it is; when the server knows no such ID,
    `typed` is taken as the beginning of one of `known()` (listed from the server) and `call` is
    made with that whole ID. Returns the ID used and what `call` returned."""
    from urllib.parse import quote

    if not typed.strip():
        raise UsageProblem(f"the {kind} ID is empty")
    try:
        return typed, call(quote(typed, safe=""))
    except ServerRefused as refused:
        if refused.status != 404:
            raise
        try:
            whole = resolve_id(kind, typed, known())
        except UsageProblem as unresolved:
            if str(unresolved).startswith("no "):
                raise UsageProblem(f"{unresolved} ({refused})") from None
            raise
        if whole == typed:
            raise
    return whole, call(quote(whole, safe=""))


def post_on_id(
    kind: str,
    typed: str,
    listing: str,
    path: str,
    comment: str,
    url: str,
    token: str | None,
) -> tuple[str, Any]:
    """POST `{"comment": comment}` to `path` (where `{}` stands for the ID) for the ID the user
    typed: whole, or the beginning of one of the IDs that GET `listing` returns (as
    `call_on_id`). An answer to an approval, an acknowledgement. Returns the ID used and the
    server's reply."""

    def known() -> list[str]:
        return [str(item["id"]) for item in call("GET", url, listing, token=token)]

    def send(whole: str) -> Any:
        return call("POST", url, path.format(whole), {"comment": comment}, token)

    return call_on_id(kind, typed, known, send)
