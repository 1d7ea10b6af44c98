"""What every router of the API shares: its prefix, the role dependencies, and the one way an
answer is recorded (durably, then 202)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends
from pydantic import BaseModel, Field
from starlette.responses import Response

from onduty.api.auth import ADMIN, APPROVER, OPERATOR, VIEWER, Principal, requires
from onduty.api.ingest import Ingest, JSONBody
from onduty.events import Event
from onduty.runtime import Input

API = "/api/v1"

Operator = Annotated[Principal, Depends(requires(OPERATOR))]
Approver = Annotated[Principal, Depends(requires(APPROVER))]
Admin = Annotated[Principal, Depends(requires(ADMIN))]
READ = [Depends(requires(VIEWER))]


class Answer(BaseModel):
    # the optional body of an approval's answer or an acknowledgement (no docstring: it would
    # become the schema's description in the OpenAPI document)
    comment: str = Field(default="", max_length=2000)


def comment_of(body: Answer | None) -> str:
    return body.comment if body else ""


def event_json(event: Event) -> dict[str, Any]:
    return event.model_dump(mode="json")


async def record(
    ingest: Ingest, inputs: Sequence[Input], reply: Any, status_code: int = 202
) -> Response:
    """Hand `inputs` to the core and answer `reply` once they are durable (or why not)."""
    refused = await ingest.durable(inputs)
    return refused or JSONBody(reply, status_code=status_code)
