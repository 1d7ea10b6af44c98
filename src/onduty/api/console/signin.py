"""Signing in to the console: `/signin` (GET a form, POST a token) and `/signout` (POST).

The token lives in an HttpOnly, SameSite=Strict cookie, so the page's script never sees it; a
form post is accepted only from a page of this server."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from onduty.api.auth import COOKIE, access_of, client_address, principal_of
from onduty.api.console.pages import Pages

COOKIE_MAX_AGE = 7 * 24 * 3600
FORM_LIMIT = 16 * 1024


def safe_next(value: str | None) -> str:
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def read_form(request: Request, limit: int = FORM_LIMIT) -> bytes | None:
    """The request's body, or None past `limit` bytes (read no further)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def same_origin(request: Request) -> bool:
    """A form post from a page of this server: what the browser says (`Sec-Fetch-Site`),
    else the `Origin` it sends with every POST. A client that is no browser sends neither."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return (
        origin != "null"
        and urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()
    )


def signin_router(pages: Pages) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/signin", response_class=HTMLResponse)
    def signin_page(request: Request, next: str = "/") -> Response:
        return pages.render(
            request, "signin.html", principal_of(request), title="Sign in", next=safe_next(next),
            error="",
        )  # fmt: skip

    @router.post("/signin", response_class=HTMLResponse)
    async def signin(request: Request) -> Response:
        if not same_origin(request):
            return Response("cross-site sign-in refused", status_code=403)
        body = await read_form(request)
        if body is None:
            return Response("the form is too large", status_code=413)
        form = parse_qs(body.decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        target = safe_next((form.get("next") or ["/"])[0])
        access = access_of(request)

        def refuse(status_code: int, error: str) -> Response:
            return pages.render(
                request, "signin.html", None, status_code=status_code, title="Sign in",
                next=target, error=error,
            )  # fmt: skip

        if not access.enabled:
            return refuse(409, "Access control is off: there is nothing to sign in to.")
        if not token:
            return refuse(400, "Paste a token.")
        if access.authenticate(token) is None:  # a known token is accepted from anywhere
            address = client_address(request)
            retry = access.throttle.retry_after(address)
            if retry is not None:
                return refuse(429, f"Too many failed attempts: try again in {retry} s.")
            access.throttle.failed(address)
            return refuse(401, "That token is not recognised.")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            max_age=COOKIE_MAX_AGE,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @router.post("/signout")
    def signout(request: Request) -> Response:
        if not same_origin(request):
            return Response("cross-site sign-out refused", status_code=403)
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return router
