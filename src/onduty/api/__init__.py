"""The HTTP API (and, later, the web console)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onduty.api.app import build_app

# The application (FastAPI and all) is imported on first use, so that importing the access
# section's model (`onduty.api.access_config`) loads no web framework.
_LAZY = {"build_app": "onduty.api.app"}

__all__ = ["build_app"]


def __getattr__(name: str) -> Any:
    """The application, imported when first asked for."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
