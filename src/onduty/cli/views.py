"""The command line's views: tables and lines built from data as Rich renderables.

Data never goes through markup or emoji codes: a view builds `Text` from it, or escapes it
(`textsafe`), so untrusted text is shown as it was sent."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from onduty.textsafe import safe_text, visible


def data_table(*headers: str, ids: dict[str, Iterable[str]] | None = None, **options: Any) -> Table:
    """A table of data: long values fold onto more lines instead of being cut with an ellipsis,
    and the columns named in `ids` (header -> the IDs it shows) are never wrapped: an ID is
    shown whole, on one line, ready to copy; the other columns give way."""
    table = Table(**options)
    for header in headers:
        shown = (ids or {}).get(header)
        if shown is None:
            table.add_column(header, overflow="fold")
        else:
            widest = max((len(visible(value)) for value in shown), default=len(header))
            table.add_column(header, no_wrap=True, overflow="fold", min_width=widest)
    return table


def differences_table(differences: list[Any]) -> Table:
    """The inputs a replay or backtest decided differently, with both sets of decisions."""
    table = data_table("seq", "input", "recorded", "replayed", show_lines=True)
    for difference in differences:
        table.add_row(
            str(difference.seq),
            safe_text(difference.input_type),
            _lines(difference.recorded),
            _lines(difference.replayed),
        )
    return table


def _lines(items: Iterable[str]) -> Text:
    """One line per item, each made visible (a newline inside an item shows as `\\n`)."""
    return Text("\n".join(visible(item) for item in items) or "(nothing)")


def incidents_table(views: Iterable[Any], status: str = "all") -> Table:
    """The incidents (read-model views) with the given status, oldest first."""
    chosen = [view for view in views if status in ("all", view.status)]
    table = data_table(
        "incident", "opened", "service", "title", "status", "actions", "escalated",
        ids={"incident": [view.incident_id for view in chosen]},
    )  # fmt: skip
    for view in chosen:
        table.add_row(
            safe_text(view.incident_id),
            view.opened_at.strftime("%Y-%m-%d %H:%M:%S"),
            safe_text(view.service or "-"),
            safe_text(view.title),
            safe_text(view.status + (" (flapping)" if view.flapping else "")),
            Text("\n".join(visible(action) for action in view.actions) or "-"),
            "yes" if view.escalated else "no",
        )
    return table


def similar_table(matches: Iterable[Any]) -> Table:
    """Similar incidents (`onduty.readmodel.similar.SimilarIncident`), best first."""
    shown = list(matches)
    table = data_table(
        "incident", "score", "closed", "service", "title", "actions (outcome)",
        ids={"incident": [match.incident_id for match in shown]},
    )  # fmt: skip
    for match in shown:
        table.add_row(
            safe_text(match.incident_id),
            f"{match.score:.2f}",
            _utc(match.closed_at),
            safe_text(match.service or "-"),
            safe_text(match.title),
            Text("\n".join(action.describe() for action in match.actions) or "none taken"),
        )
    return table


def event_line(event: Any, describe: Callable[[Any], str]) -> Text:
    """One event as one line: seq, time, type, stream, actor and its key facts, all as data."""
    actor = f" by {visible(event.actor)}" if event.actor != "onduty" else ""
    return Text.assemble(
        (f"{event.seq:>7}", "dim"),
        f" {event.ts.strftime('%Y-%m-%d %H:%M:%S')} ",
        (visible(event.type), "cyan"),
        " ",
        (visible(event.stream), "dim"),
        actor,
        "  ",
        visible(describe(event).removeprefix(event.type).strip()),
    )


def silences_table(items: list[dict[str, Any]]) -> Table:
    """Silences as the API lists them."""
    table = data_table(
        "silence", "kind", "matchers", "until", "by", "comment", "state",
        ids={"silence": [str(item["id"]) for item in items]},
    )  # fmt: skip
    for item in items:
        table.add_row(
            *(safe_text(item[key]) for key in ("id", "kind")),
            safe_text(", ".join(str(matcher) for matcher in item["matchers"])),
            *(safe_text(item[key]) for key in ("ends_at", "created_by", "comment", "state")),
        )
    return table


def approvals_table(items: list[dict[str, Any]]) -> Table:
    """Pending approval requests as the API lists them."""
    table = data_table(
        "approval", "incident", "what", "status", "expires",
        ids={
            "approval": [str(item.get("id", "")) for item in items],
            "incident": [str(item.get("incident_id", "")) for item in items],
        },
    )  # fmt: skip
    for item in items:
        keys = ("id", "incident_id", "summary", "status", "expires_at")
        table.add_row(*(safe_text(item.get(key, "")) for key in keys))
    return table


def policy_status_lines(status: dict[str, Any]) -> list[Text]:
    """The policy status the API reports, as lines to print."""
    source = visible(status["source"] or "-")
    lines = [Text(f"active: {visible(status['version'])} (from {source})")]
    candidate = status.get("candidate")
    if candidate:
        selector = candidate.get("selector")
        where = f" where `{visible(selector)}`" if selector else ""
        version, mode = visible(candidate["version"]), visible(candidate["mode"])
        lines.append(Text(f"candidate: {version} as {mode}{where}"))
    return lines


def bundles_lines(activations: Iterable[Any]) -> list[Any]:
    """The activations of central policy bundles, newest first: the active one in a line, then
    the table of them all (a version activated again says so)."""
    chosen = list(activations)
    if not chosen:
        return []
    latest = chosen[0]
    active = Text.assemble(
        "active: ",
        (visible(latest.version), "green"),
        f" since {_utc(latest.activated_at)} UTC, by {visible(latest.activated_by)}",
    )
    table = data_table(
        "version", "activated (UTC)", "by", "from",
        ids={
            "version": [item.version for item in chosen],
            "activated (UTC)": [_utc(item.activated_at) for item in chosen],
        },
    )  # fmt: skip
    for item in chosen:
        again = item.activated_at > item.published_at
        table.add_row(
            Text(visible(item.version), "green" if item.active else ""),
            _utc(item.activated_at),
            safe_text(item.activated_by),
            Text.assemble(visible(item.source), (" (again)" if again else "", "dim")),
        )
    return [active, table]


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
