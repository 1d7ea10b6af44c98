"""The web console: server-rendered pages over the read models, kept live by server-sent events.

One module per page (all HTML):

- `incidents`: `/` open incidents, newest first, and the recently resolved; `/incidents/{id}`
  one incident's timeline (drawn by `timeline`) and a page of its signal events (`signals`).
- `approvals`: `/approvals`, the approval inbox. `services`: `/services`, autonomy per service.
- `fleet`: `/fleet` (in a fleet), which manager holds each partition.
- `shift`: `/history`, `/silences` and `/shift` (its pictures: `charts`).
- `audit`: `/audit` verifies the hash chain and shows the result.
- `drill` (serving a simulation): `/drill`, the drill people take part in, and its scorecard.
- `signin`: `/signin` (GET a form, POST a token) and `/signout` (POST).
- `live`: `/events/stream` (`text/event-stream`), one message per appended event; the browser
  re-fetches the fragments it shows.

Each page has its fragment under `/fragments/...` (the part that changes; `/fragments/header`
the header): what a page re-fetches when something happened. `pages` holds what they share;
`/static/{name}` serves the stylesheet and the script (no build step, no CDN).

Writes (approve, deny, acknowledge, autonomy) go from the page's script to the JSON API with
`fetch`. The token lives in an HttpOnly, SameSite=Strict cookie, so the script never sees it: a
cross-site page cannot make the browser send it, and the script marks every call with the
`X-Onduty-Console: 1` header, which a cross-site form cannot set without a CORS preflight.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from onduty.api.console.approvals import approvals_router
from onduty.api.console.audit import Audit, audit_router
from onduty.api.console.fleet import fleet_router
from onduty.api.console.incidents import incidents_router
from onduty.api.console.live import Hub, live_router
from onduty.api.console.pages import Pages
from onduty.api.console.services import services_router
from onduty.api.console.shift import shift_router
from onduty.api.console.signin import signin_router
from onduty.service import Service

if TYPE_CHECKING:
    from onduty.sim.live import LiveSimulation

__all__ = ["console_router"]


def console_router(
    service: Service, *, stream_lifetime: float = 15.0, drill: LiveSimulation | None = None
) -> APIRouter:
    """The console's pages, fragments, event stream and static files, over `service`.

    The access guard leaves paths outside the API alone: every console route checks its caller
    itself (`principal_of`), and counts unknown tokens against the same failure throttle."""
    router = APIRouter(include_in_schema=False)
    audit = Audit(service)
    pages = Pages(service, audit)
    hub = Hub(service)

    router.include_router(incidents_router(service, pages))
    router.include_router(approvals_router(service, pages))
    router.include_router(services_router(service, pages))
    router.include_router(fleet_router(service, pages))
    if drill is not None:  # serving a simulation: its drill page
        from onduty.api.console.drill import drill_router

        router.include_router(drill_router(service, pages, drill))

    @router.get("/fragments/header", response_class=HTMLResponse)
    def header_fragment(request: Request) -> Response:
        who = pages.gate(request, fragment=True)
        if isinstance(who, Response):
            return who
        return pages.render(request, "_header.html", who)

    router.include_router(audit_router(audit, pages))
    router.include_router(signin_router(pages))
    router.include_router(live_router(hub, pages, stream_lifetime))

    @router.get("/static/{name}")
    def static_file(name: str) -> Response:
        found = pages.static.get(name)
        if found is None:
            return Response("not found", status_code=404)
        content, media, _ = found
        return Response(
            content,
            media_type=media,
            headers={
                "Cache-Control": "public, max-age=31536000, immutable",
                "X-Content-Type-Options": "nosniff",
            },
        )

    router.include_router(shift_router(service, pages))
    return router
