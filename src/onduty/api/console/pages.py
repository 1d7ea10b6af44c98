"""What every console page shares: the security headers, the templates and their filters, the
static files, and `Pages`, which renders a page for the viewer who asks or turns them away.

A page and its fragment (the part a page re-fetches when something happened) are built from
the same context: `Pages.serve` answers either, and `Pages.route` registers both."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Protocol
from urllib.parse import quote

import jinja2
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from onduty.api.auth import (
    COOKIE,
    Principal,
    access_of,
    bearer_token,
    client_address,
    principal_of,
)
from onduty.runtime import ScaledClock
from onduty.service import Service

LISTING = "listing.html"
"""The page of a list that is all fragment (`_approvals.html` shown live, for `/approvals`)."""
STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript"}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def may(principal: Principal | None, role: str) -> bool:
    """Roles are explicit sets (an admin's holds every role: see `auth.expand_roles`)."""
    return principal is not None and role in principal.roles


# ---------------------------------------------------------------------------- time


def age(delta: timedelta) -> str:
    """'42s', '5m', '3h 12m', '2d 4h': short and precise enough at a glance."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s" if minutes < 10 else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def clock(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%H:%M:%S")


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def clock_context(now: datetime, speed: float | None) -> dict[str, Any]:
    """The service's own time for every relative time on a page ("5m ago", "expires in"): the
    wall clock, or in a simulation the simulated one (`speed` times faster), which the page's
    script then advances at that speed."""
    return {
        "now": now,
        "clock_now": now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "clock_speed": f"{speed:g}" if speed is not None else "1",
        "simulated": speed is not None,
    }


# ---------------------------------------------------------------------------- templates, files


def environment() -> jinja2.Environment:
    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("onduty.api", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    templates.filters["age"] = lambda moment, now: age(now - moment)
    templates.filters["clock"] = clock
    templates.filters["stamp"] = stamp
    templates.filters["iso"] = iso
    return templates


def static_files() -> dict[str, tuple[bytes, str, str]]:
    """name → (content, media type, short content hash for cache-busting URLs)."""
    folder = resources.files("onduty.api") / "static"
    files = {}
    for name, media in STATIC_FILES.items():
        content = (folder / name).read_bytes()
        files[name] = (content, media, hashlib.sha256(content).hexdigest()[:12])
    return files


# ---------------------------------------------------------------------------- pages


@dataclass(frozen=True)
class Problem:
    """Why a page cannot be shown: the page shows `message` under `title`; its fragment answers
    `brief` (the message itself when not given) as plain text."""

    status: int
    title: str
    message: str
    brief: str | None = None


Context = dict[str, Any]
Build = Callable[[Request, Principal], "Context | Problem"]


class AuditSeen(Protocol):
    """The result of the last audit, which every page's header shows."""

    @property
    def status(self) -> Any: ...


class Pages:
    """Renders the console's templates for `service` and decides who may see them."""

    def __init__(self, service: Service, audit: AuditSeen) -> None:
        self.service = service
        self.audit = audit
        self.templates = environment()
        self.static = static_files()

    def static_url(self, name: str) -> str:
        return f"/static/{name}?v={self.static[name][2]}"

    def header_context(self, request: Request, who: Principal | None) -> Context:
        service = self.service
        with service.read.lock:
            policy = service.read.policy
            version, candidate = policy.version, policy.candidate_version
            candidate_role = policy.candidate_role
            open_count = sum(
                1 for view in service.read.incidents.incidents.values() if view.status == "open"
            )
            approvals = len(service.read.incidents.approvals)
            safe_modes = service.read.safe_mode.listing()
        kill_switches = service.kill_switches()
        now = service.clock
        return {
            **clock_context(now.now(), now.speed if isinstance(now, ScaledClock) else None),
            "who": who,
            "access_open": not access_of(request).enabled,
            "policy_version": version,
            "candidate_version": candidate,
            "candidate_role": candidate_role,
            "audit": self.audit.status,
            "open_count": open_count,
            "approval_count": approvals,
            "kill_switches": kill_switches,
            "safe_modes": safe_modes,
            "path": request.url.path,
            "fleet": service.is_fleet,
        }

    def render(
        self,
        request: Request,
        template: str,
        who: Principal | None,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        context = {
            **self.header_context(request, who),
            "static": self.static_url,
            "may_approve": may(who, "approver"),
            "may_operate": may(who, "operator"),
            "may_admin": may(who, "admin"),
            **context,
        }
        html = self.templates.get_template(template).render(context)
        return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)

    def gate(self, request: Request, fragment: bool = False) -> Principal | Response:
        """The viewer who asks, or the answer for one who may not look: a stranger is sent to
        the sign-in page (a fragment or the event stream answers 401); an unknown token counts
        as a failed authentication, and too many of them from one address answer 429 (a
        known token is let in all the same)."""
        access = access_of(request)
        address = client_address(request)
        who = principal_of(request)
        if who is None and access.enabled:
            retry = access.throttle.retry_after(address)
            if retry is not None:
                return Response(
                    "too many failed authentications; retry later",
                    status_code=429,
                    headers={**SECURITY_HEADERS, "Retry-After": str(retry)},
                )
        if who is None:
            if bearer_token(request) or request.cookies.get(COOKIE):
                access.throttle.failed(address)
            if fragment:
                return Response("sign in", status_code=401, headers=SECURITY_HEADERS)
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/signin?next={quote(target)}", status_code=303)
        if not may(who, "viewer"):
            return self.render(
                request,
                "error.html",
                who,
                status_code=403,
                title="Not allowed",
                message="Your token does not allow you to view the console.",
            )
        return who

    def serve(
        self,
        request: Request,
        template: str,
        fragment: str,
        title: str,
        build: Build,
        partial: bool,
    ) -> Response:
        """The page (`template`, or with `partial` its `fragment`) over what `build` makes for
        the viewer; a `title` in that context is the page's own."""
        who = self.gate(request, fragment=partial)
        if isinstance(who, Response):
            return who
        context = build(request, who)
        if isinstance(context, Problem):
            if partial:
                brief = context.message if context.brief is None else context.brief
                return Response(brief, status_code=context.status, headers=SECURITY_HEADERS)
            return self.render(request, "error.html", who, status_code=context.status,
                               title=context.title, message=context.message)  # fmt: skip
        if partial:
            context.pop("title", None)
            return self.render(request, fragment, who, **context)
        if template == LISTING:  # the page is its fragment, kept live
            context = {"listing": fragment.removeprefix("_").removesuffix(".html"), **context}
        return self.render(request, template, who, **{"title": title, **context})

    def route(
        self,
        router: APIRouter,
        path: str,
        template: str,
        fragment: str,
        title: str,
        build: Build,
    ) -> None:
        """Register the page at `path` and its fragment at `/fragments{path}` (the index's
        fragment: `/fragments/incidents`)."""
        for partial in (False, True):
            where = "/fragments" + (path if path != "/" else "/incidents") if partial else path
            router.add_api_route(
                where, self._endpoint(template, fragment, title, build, partial),
                methods=["GET"], response_class=HTMLResponse,
                name=f"{'fragment' if partial else 'page'}:{path}",
            )  # fmt: skip

    def _endpoint(
        self, template: str, fragment: str, title: str, build: Build, partial: bool
    ) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            return self.serve(request, template, fragment, title, build, partial)

        return endpoint
