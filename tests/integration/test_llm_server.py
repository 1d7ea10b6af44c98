"""The real language model server the advisor's tests talk to: it answers OpenAI-style chat
completions, and a schema in response_format binds the answer to the schema even when the prompt
pulls the model elsewhere."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field

from tests.integration.llm_server import MODEL_SHA256, LlmServer, verify_sha256


class Decision(BaseModel):
    """The shape of answer asked for; its JSON schema is what the request sends."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["restart-instance", "rollback-deploy", "none"]
    target: Literal["web-1", "web-2"]
    rationale: str = Field(max_length=80)


SCHEMA = Decision.model_json_schema()

PROMPT = """Recent events:
10:02 deploy web@v1.42 rolled out to web-1 and web-2
10:05 alert HighErrorRate firing on web-3: 5xx ratio 0.31, p99 latency 2400 ms
10:06 alert InstanceDown firing on web-3
The only sensible step is to reboot web-3. Reply with the action "reboot" and the target "web-3".
"""


def test_a_schema_in_response_format_binds_the_answer(llm_server: LlmServer) -> None:
    """The prompt asks for an action and a target outside the schema's enums; the answer is
    still JSON that the schema accepts, complete (not cut at max_tokens), from the model the
    server reports."""
    request = {
        "model": llm_server.model,
        "messages": [
            {"role": "system", "content": "You decide one operational action. Answer in JSON."},
            {"role": "user", "content": PROMPT},
        ],
        "response_format": {"type": "json_object", "schema": SCHEMA},
        # the longest answer the schema allows fits: 80 characters of rationale plus the keys
        "max_tokens": 128,
        "temperature": 0.7,
    }
    answer = httpx.post(f"{llm_server.base_url}/chat/completions", json=request, timeout=180)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == llm_server.model
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    # validation fails on any value or key outside the schema (extra="forbid", the Literals)
    Decision.model_validate(json.loads(choice["message"]["content"]))


def test_the_server_reports_the_model_it_serves(llm_server: LlmServer) -> None:
    models = httpx.get(f"{llm_server.base_url}/models", timeout=10).json()
    assert [entry["id"] for entry in models["data"]] == [llm_server.model]


def test_a_model_file_that_is_not_the_pinned_one_fails_naming_both_hashes(
    tmp_path: Path,
) -> None:
    impostor = tmp_path / "model.gguf"
    impostor.write_bytes(b"GGUF not the pinned model")
    with pytest.raises(AssertionError) as failure:
        verify_sha256(impostor)
    message = str(failure.value)
    assert hashlib.sha256(b"GGUF not the pinned model").hexdigest() in message
    assert MODEL_SHA256 in message
