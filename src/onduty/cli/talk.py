"""The commands that talk to a running `onduty serve`: answers to approvals,
acknowledgements, silences, kill switches and autonomy."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from onduty.cli.base import SERVER, TokenOption, UrlOption, UsageProblem, err, out
from onduty.cli.client import call, call_on_id, post_on_id
from onduty.cli.views import approvals_table, silences_table
from onduty.textsafe import markup

silence_app = typer.Typer(
    no_args_is_help=True, help="Silences and maintenance windows on a running onduty."
)


@silence_app.command("add")
def silence_add(
    matchers: Annotated[
        list[str],
        typer.Argument(help='Label matchers, e.g. service="checkout" alertname=~"Disk.*"'),
    ],
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why (required).")],
    duration: Annotated[str, typer.Option(help="How long, e.g. 2h.")] = "1h",
    maintenance: Annotated[bool, typer.Option(help="A maintenance window.")] = False,
    by: Annotated[
        str, typer.Option(help="Who creates it (with access control on: the token's name).")
    ] = "cli",
    url: UrlOption = SERVER,
    token: TokenOption = None,
) -> None:
    """Mute matching signals for a while: recorded, never acted on."""
    created = call(
        "POST",
        url,
        "/api/v1/silences",
        {
            "matchers": matchers,
            "comment": comment,
            "duration": duration,
            "kind": "maintenance" if maintenance else "silence",
            "created_by": by,
        },
        token,
    )
    out.print(
        f"[green]created[/] {markup(created['id'])} until {markup(created['ends_at'])}",
        soft_wrap=True,
    )


@silence_app.command("list")
def silence_list(
    state: Annotated[str, typer.Option(help="active, pending, expired or all")] = "active",
    url: UrlOption = SERVER,
    token: TokenOption = None,
) -> None:
    """List silences."""
    out.print(silences_table(call("GET", url, f"/api/v1/silences?state={state}", token=token)))


@silence_app.command("expire")
def silence_expire(silence_id: str, url: UrlOption = SERVER, token: TokenOption = None) -> None:
    """End a silence now. SILENCE_ID: its ID or enough of its beginning to name one."""

    def current() -> list[str]:
        items = call("GET", url, "/api/v1/silences?state=all", token=token)
        return [str(item["id"]) for item in items if item.get("state") != "expired"]

    def send(whole: str) -> Any:
        return call("DELETE", url, f"/api/v1/silences/{whole}", token=token)

    whole, _ = call_on_id("active or pending silence", silence_id, current, send)
    out.print(f"[green]expired[/] {markup(whole)}", soft_wrap=True)


kill_switch_app = typer.Typer(
    no_args_is_help=True,
    help="Kill switches on a running onduty: stop automation at once for one actuator, "
    "runbook or service.",
)
KILL_SWITCH_KINDS = ("actuator", "runbook", "service")
KILL_SWITCH_TIMEOUT_S = 120.0
"""A fleet answers once every partition's log holds the switch: longer than other calls."""
KindArgument = Annotated[str, typer.Argument(help="actuator, runbook or service")]
NameArgument = Annotated[
    str,
    typer.Argument(
        help="The runbook's or service's name, or the actuator's action (process.restart) or "
        "action family (process)."
    ),
]


def _kind(kind: str) -> str:
    if kind not in KILL_SWITCH_KINDS:
        raise UsageProblem(f"KIND must be one of {', '.join(KILL_SWITCH_KINDS)}, not {kind!r}")
    return kind


@kill_switch_app.command("set")
def kill_switch_set(
    kind: KindArgument,
    name: NameArgument,
    reason: Annotated[str, typer.Option("--reason", "-m", help="Why (recorded).")] = "",
    by: Annotated[
        str, typer.Option(help="Who sets it (with access control on: the token's name).")
    ] = "cli",
    url: UrlOption = SERVER,
    token: TokenOption = None,
) -> None:
    """Stop automation under KIND NAME at once: every proposal under it is denied until the
    switch is cleared (recorded; needs the operator role)."""
    body = {"kind": _kind(kind), "name": name, "reason": reason, "set_by": by}
    result = call("POST", url, "/api/v1/kill-switches", body, token, timeout=KILL_SWITCH_TIMEOUT_S)
    out.print(
        f"[bold red]kill switch set[/] on {markup(kind)} {markup(name)} "
        f"by {markup(str(result.get('set_by', by)))}",
        soft_wrap=True,
    )


@kill_switch_app.command("clear")
def kill_switch_clear(
    kind: KindArgument, name: NameArgument, url: UrlOption = SERVER, token: TokenOption = None
) -> None:
    """Lift the kill switch on KIND NAME: its proposals are judged by the policy again."""
    from urllib.parse import quote

    path = f"/api/v1/kill-switches/{_kind(kind)}/{quote(name, safe='')}"
    call("DELETE", url, path, token=token, timeout=KILL_SWITCH_TIMEOUT_S)
    out.print(f"[green]kill switch cleared[/] on {markup(kind)} {markup(name)}", soft_wrap=True)


@kill_switch_app.command("list")
def kill_switch_list(url: UrlOption = SERVER, token: TokenOption = None) -> None:
    """List the active kill switches, with who set them and why."""
    switches = call("GET", url, "/api/v1/kill-switches", token=token)
    if not switches:
        out.print("no kill switch is set")
        return
    for item in switches:
        reason = f": {markup(item['reason'])}" if item.get("reason") else ""
        out.print(
            f"[bold red]{markup(item['kind'])} {markup(item['name'])}[/] "
            f"set by {markup(item['set_by'])} at {markup(item['set_at'])}{reason}",
            soft_wrap=True,
        )


ApproveComment = Annotated[
    str, typer.Option("--comment", "-m", help="Why you approve (recorded with the answer).")
]
DenyComment = Annotated[
    str, typer.Option("--comment", "-m", help="Why you deny (recorded with the answer).")
]
AckComment = Annotated[
    str, typer.Option("--comment", "-m", help="A note recorded with the acknowledgement.")
]


def approve(
    approval_id: str,
    comment: ApproveComment = "",
    url: UrlOption = SERVER,
    token: TokenOption = None,
) -> None:
    """Approve a pending action (ID: the approval's ID or enough of its beginning to name one).
    Where several people must approve (the two-person rule), it says how many have and who:
    "1 of 2: approved by alice, waiting for another approver"."""
    print_answer("approved", "green", *_answer(approval_id, "approve", comment, url, token))


def deny(
    approval_id: str, comment: DenyComment = "", url: UrlOption = SERVER, token: TokenOption = None
) -> None:
    """Deny a pending action (the incident goes to a human). ID: the approval's ID or enough
    of its beginning to name one."""
    print_answer("denied", "yellow", *_answer(approval_id, "deny", comment, url, token))


def _answer(
    typed: str, verdict: str, comment: str, url: str, token: str | None
) -> tuple[str, dict[str, Any]]:
    path = f"/api/v1/approvals/{{}}/{verdict}"
    return post_on_id("pending approval", typed, "/api/v1/approvals", path, comment, url, token)


def print_answer(verb: str, color: str, approval_id: str, result: dict[str, Any]) -> None:
    """What became of an answer; exit 1 when onduty recorded it but did not count it."""
    if result.get("counted") is False:
        reason = markup(str(result.get("refused") or "your role may not answer approvals"))
        err.print(f"[bold red]not counted[/] {markup(approval_id)}: {reason}", soft_wrap=True)
        raise typer.Exit(1)
    status = f": {markup(str(result['status']))}" if result.get("status") else ""
    out.print(f"[{color}]{verb}[/] {markup(approval_id)}{status}", soft_wrap=True)


def approvals_list(
    url: UrlOption = SERVER,
    token: TokenOption = None,
) -> None:
    """List the approval requests waiting for an answer, with who has approved so far."""
    out.print(approvals_table(call("GET", url, "/api/v1/approvals", token=token)))


def ack(
    incident_id: str, comment: AckComment = "", url: UrlOption = SERVER, token: TokenOption = None
) -> None:
    """Acknowledge an incident: someone has it, so escalation stops paging further tiers.
    INCIDENT_ID: the incident's ID or enough of its beginning to name one open incident."""
    listing = "/api/v1/incidents?status=open&limit=1000"
    path = "/api/v1/incidents/{}/acknowledge"
    whole, _ = post_on_id("open incident", incident_id, listing, path, comment, url, token)
    out.print(f"[green]acknowledged[/] {markup(whole)}", soft_wrap=True)


AUTONOMY_LEVELS = ("observe", "suggest", "approve", "act")


def autonomy(
    service: str,
    level: Annotated[str, typer.Argument(help="observe, suggest, approve or act")],
    url: UrlOption = SERVER,
    token: TokenOption = None,
) -> None:
    """Change how far onduty may act on SERVICE by itself (recorded; needs the admin role)."""
    if level not in AUTONOMY_LEVELS:
        raise UsageProblem(f"LEVEL must be one of {', '.join(AUTONOMY_LEVELS)}, not {level!r}")
    from urllib.parse import quote

    path = f"/api/v1/services/{quote(service, safe='')}/autonomy"
    result = call("PUT", url, path, {"level": level}, token)
    if result.get("pending"):  # a raise that needs more admins (the two-person rule)
        out.print(
            f"[yellow]{markup(service)}[/]: raise to {level} requested "
            f"({markup(str(result.get('request_id', '')))}): {markup(str(result['status']))}",
            soft_wrap=True,
        )
    elif result.get("changed"):
        out.print(
            f"[green]{markup(service)}[/]: autonomy {markup(result['previous'])} → "
            f"{markup(result['level'])}",
            soft_wrap=True,
        )
    else:
        out.print(f"{markup(service)}: autonomy is already {markup(result['level'])}")
