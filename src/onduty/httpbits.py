"""HTTP helpers that several layers share: whether a URL or a header may be configured, and
why a connection could not be made.

Below every layer (it imports only `onduty.values`), so that sense, act and escalate use one copy
instead of borrowing from each other.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

from onduty.values import references

__all__ = ["Headers", "check_headers", "check_http_url", "connect_error_reason"]

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_SENSITIVE_WORDS = ("authorization", "cookie", "token", "secret", "password", "key")


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    """Valid header names, no line breaks, and credentials only as secret references."""
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid HTTP header name")
        if "\r" in value or "\n" in value or "\x00" in value:
            raise ValueError(f"header {name!r}: a value cannot contain line breaks or NUL")
        found = references(value, f"header {name!r}")
        if any(word in name.lower() for word in _SENSITIVE_WORDS) and not found:
            raise ValueError(
                f"header {name!r} carries a credential: reference it as ${{ENV:NAME}} or "
                "${FILE:/path} instead of writing it in the configuration"
            )
    return headers


def check_http_url(value: str, *, credentials: str, where: str = "", base: bool = False) -> str:
    """An http(s) URL with a host, a valid port and no credentials. `credentials` says where
    credentials go instead (the URL is recorded and shown); `where` prefixes every message;
    `base`: no query string or fragment either."""
    prefix = f"{where}: " if where else ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{prefix}expected an http:// or https:// URL, got {value!r}")
    if not parts.hostname:
        raise ValueError(f"{prefix}the URL {value!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{prefix}{credentials}")
    try:
        _ = parts.port
    except ValueError as error:
        raise ValueError(f"{prefix}the URL {value!r} has an invalid port: {error}") from None
    if base and (parts.query or parts.fragment):
        raise ValueError(f"{prefix}a base URL cannot have a query string or a fragment")
    return value


def connect_error_reason(error: BaseException) -> str:
    """Why a connection could not be made: "connection refused", or the error's own text."""
    cause: BaseException | None = error
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    text = str(error)
    if "refused" in text.lower():
        return "connection refused"
    return f"cannot connect: {text}" if text else "cannot connect"


Headers = Annotated[dict[str, str], AfterValidator(check_headers)]
"""Request headers as a configuration writes them: checked by `check_headers`."""
