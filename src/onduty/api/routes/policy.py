"""`/api/v1/policy`: the active policy and its candidate; reload, try a candidate (shadow or
canary), promote it, roll back."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from onduty.api.ingest import JSONBody, error
from onduty.api.routes.common import API, READ, Admin
from onduty.config import Config, ConfigError, parse_config
from onduty.expressions import Condition, ExpressionError
from onduty.service import Service


class Candidate(BaseModel):
    """A candidate policy: the whole configuration document, how to run it, and where from."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any]
    mode: Literal["shadow", "canary"] = "shadow"
    selector: str | None = None
    source: str = "api"


async def _policy_call(call: Any, *args: Any, **kwargs: Any) -> Response:
    status, body = await asyncio.to_thread(call, *args, **kwargs)
    return JSONBody(body, status_code=status)


def policy_router(service: Service) -> APIRouter:
    router = APIRouter()

    async def activate(config: Config, role: str, source: str, actor: str) -> Response:
        return await _policy_call(service.activate, config, role=role, source=source, actor=actor)

    @router.get(f"{API}/policy", dependencies=READ)
    def policy() -> dict[str, Any]:
        with service.read.lock:
            view = service.read.policy
            candidate = (
                {
                    "version": view.candidate_version,
                    "mode": view.candidate_role,
                    "selector": view.candidate_selector,
                }
                if view.candidate_version
                else None
            )
            return {
                "version": view.version,
                "source": view.source,
                "candidate": candidate,
                "can_roll_back": candidate is not None or view.previous is not None,
            }

    @router.post(f"{API}/policy/reload")
    async def policy_reload(principal: Admin) -> Response:
        return await _policy_call(service.reload, actor=principal.name)

    @router.post(f"{API}/policy/candidate")
    async def policy_candidate(body: Candidate, principal: Admin) -> Response:
        try:
            config = parse_config(body.config, body.source)
            if body.selector:
                Condition.compile(body.selector)
        except ConfigError as problem:
            return JSONBody(
                {"error": "the configuration is invalid", "problems": problem.problems}, 422
            )
        except ExpressionError as problem:
            return error(422, str(problem), "selector")
        return await _policy_call(
            service.activate,
            config,
            role=body.mode,
            source=body.source,
            selector=body.selector,
            actor=principal.name,
        )

    @router.post(f"{API}/policy/promote")
    async def policy_promote(principal: Admin) -> Response:
        with service.read.lock:
            document = service.read.policy.candidate_document
        if document is None:
            return error(409, "there is no candidate policy to promote")
        config = parse_config(document, "candidate")
        return await activate(config, "active", "promoted", principal.name)

    @router.post(f"{API}/policy/rollback")
    async def policy_rollback(principal: Admin) -> Response:
        """Drop the candidate; without one, go back to the previous active policy."""
        with service.read.lock:
            view = service.read.policy
            candidate, previous = view.candidate_document, view.previous
        if candidate is not None:
            return await activate(Config(), "withdrawn", "rollback", principal.name)
        if previous is None:
            return error(409, "there is no candidate and no previous policy to roll back to")
        config = parse_config(previous, "previous")
        return await activate(config, "active", "rollback", principal.name)

    return router
