"""`/api/v1/learn`: the learning agent's models in their roles, as `/api/v1/policy` does
policies: the active model, a candidate beside it (shadow or canary), promotion, rollback, and
activating a model directly (for automation). Every artifact is checked as `onduty learn` checks
a file before anything is recorded: a corrupted or incompatible one is refused (422, naming what
is wrong) and the running model stays."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from onduty.api.ingest import JSONBody, error
from onduty.api.routes.common import API, READ, Admin
from onduty.events.vocabulary import ModelRole
from onduty.expressions import Condition, ExpressionError
from onduty.learn.model import Model, ModelProblem, model_from_body
from onduty.service import Service
from onduty.think.features import UNTRAINED


class ModelCandidate(BaseModel):
    """A model to try beside the active one: the whole artifact, how to run it, where from."""

    model_config = ConfigDict(extra="forbid")

    model: Any
    mode: Literal["shadow", "canary"] = "shadow"
    selector: str | None = Field(default=None, max_length=4000)
    source: str = Field(default="api", max_length=500)


class ModelActivation(BaseModel):
    """A model to make active at once: the whole artifact and where it comes from."""

    model_config = ConfigDict(extra="forbid")

    model: Any
    source: str = Field(default="api", max_length=500)


def checked(body: Any, where: str = "model") -> Model | Response:
    """The artifact, or the 422 naming what is wrong with it (the field is `model`)."""
    try:
        return model_from_body(body, where=where)
    except ModelProblem as problem:
        return error(422, str(problem), "model")


def learning_router(service: Service) -> APIRouter:
    router = APIRouter()

    async def record(
        model_id: str,
        model: dict[str, Any],
        role: ModelRole,
        source: str,
        actor: str,
        selector: str | None = None,
    ) -> Response:
        status, body = await asyncio.to_thread(
            service.activate_model,
            model_id,
            model,
            role=role,
            source=source,
            selector=selector,
            actor=actor,
        )
        return JSONBody(body, status_code=status)

    def unchanged(model_id: str, role: str) -> Response:
        return JSONBody({"model_id": model_id, "role": role, "changed": False}, status_code=200)

    @router.get(f"{API}/learn", dependencies=READ)
    def status() -> dict[str, Any]:
        settings = service.config.learning
        with service.read.lock:
            found = service.read.learning.status()
        return {"agent": settings.agent, "auto_promote": settings.auto_promote, **found}

    @router.post(f"{API}/learn/candidate")
    async def candidate(body: ModelCandidate, principal: Admin) -> Response:
        model = checked(body.model)
        if isinstance(model, Response):
            return model
        if body.selector:
            try:
                Condition.compile(body.selector)
            except ExpressionError as problem:
                return error(422, str(problem), "selector")
        with service.read.lock:
            view = service.read.learning
            same = (view.candidate_id, view.candidate_role, view.candidate_selector) == (
                model.model_id,
                body.mode,
                body.selector,
            )
            active = view.model_id
        if model.model_id == active:
            return error(409, f"{model.model_id} is the active model already", "model")
        if same:
            return unchanged(model.model_id, body.mode)
        return await record(
            model.model_id, model.body, body.mode, body.source, principal.name, body.selector
        )

    @router.post(f"{API}/learn/activate")
    async def activate(body: ModelActivation, principal: Admin) -> Response:
        model = checked(body.model)
        if isinstance(model, Response):
            return model
        with service.read.lock:
            active = service.read.learning.model_id
        if model.model_id == active:
            return unchanged(model.model_id, "active")
        return await record(model.model_id, model.body, "active", body.source, principal.name)

    @router.post(f"{API}/learn/promote")
    async def promote(principal: Admin) -> Response:
        with service.read.lock:
            view = service.read.learning
            body, source = view.candidate, view.candidate_source
        if body is None:
            return error(409, "there is no candidate model to promote")
        model = checked(body, "the candidate")  # an onduty upgraded since may not read it
        if isinstance(model, Response):
            return model
        return await record(
            model.model_id, model.body, "active", f"promoted ({source})", principal.name
        )

    @router.post(f"{API}/learn/rollback")
    async def rollback(principal: Admin) -> Response:
        """Drop the candidate; without one, go back to the previous active model (or to the
        prior alone, `untrained`)."""
        with service.read.lock:
            target = service.read.learning.rollback_target()
        if target is None:
            return error(409, "there is no candidate and no model to roll back from")
        role, model_id, body = target
        if role == "withdrawn":
            return await record(model_id, {}, "withdrawn", "rollback", principal.name)
        if body is None:
            return await record(UNTRAINED, {}, "active", "rollback", principal.name)
        model = checked(body, "the previous model")
        if isinstance(model, Response):
            return model
        return await record(model.model_id, model.body, "active", "rollback", principal.name)

    return router
