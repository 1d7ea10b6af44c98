"""The HTTP API (and, later, the web console)."""

from onduty.api.app import build_app

__all__ = ["build_app"]
