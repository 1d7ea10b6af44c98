"""Asking the advisor over HTTP (`onduty.consulting`) against a chat server on loopback that
answers as it is told to: the answer recorded with the request it answered (no header, secrets
redacted), and every way of not answering (down, slow, refusing, not a chat completion)
recorded as a failure, never raised."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from onduty.commands import ConsultAdvisor
from onduty.config_advisor import AdvisorEndpoint
from onduty.consulting import ChatAdvisor, NoAdvisor
from onduty.events import AdviceChoice, AdviceFailed, AdviceReceived, AdviceRequested
from onduty.secrets import remember_secrets
from onduty.think.advisor import prompt_hash
from tests.chat_server import ANSWER, ChatServer

REQUEST = AdviceRequested(
    request_id="adv-1",
    incident_id="inc-1",
    title="MemoryPressure on web-1",
    service="web",
    labels={"alertname": "MemoryPressure", "instance": "web-1"},
    annotations={"runbook_url": "https://wiki/x?token=s3cr3t-v4lue-1234"},
    choices=[AdviceChoice(name="restart", action="process.restart", target="web-1")],
    reason="no runbook matches MemoryPressure",
)
COMMAND = ConsultAdvisor("adv-1", "inc-1", REQUEST.model_dump(mode="json"))


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer()
    yield server
    server.close()


def test_the_answer_is_recorded_with_the_request_it_answered(chat: ChatServer) -> None:
    remember_secrets(["s3cr3t-v4lue-1234"])
    similar = [{"incident_id": "inc-0", "title": "MemoryPressure on web-2", "actions": []}]
    advisor = ChatAdvisor(
        AdvisorEndpoint(base_url=chat.url, model="asked-model", api_key="${ENV:ADVISOR_KEY}"),
        similar=lambda incident_id, limit: similar[:limit],
        env={"ADVISOR_KEY": "key-123"},
    )
    answer = advisor.consult(COMMAND)
    assert isinstance(answer, AdviceReceived)
    assert answer.model == "served-model"  # the model that answered, as the server names it
    assert json.loads(answer.content) == ANSWER
    assert answer.similar == ["inc-0"]
    headers, sent = chat.seen[0]
    assert headers["Authorization"] == "Bearer key-123"
    assert sent == answer.request  # recorded exactly as sent
    assert answer.prompt_hash == prompt_hash(sent)
    recorded = json.dumps(answer.model_dump(mode="json"))
    assert "key-123" not in recorded
    assert "s3cr3t-v4lue-1234" not in recorded and "s3cr3t" not in json.dumps(sent)
    assert "[redacted]" in sent["messages"][1]["content"]
    assert "MemoryPressure on web-2" in sent["messages"][1]["content"]


def test_a_slow_model_times_out(chat: ChatServer) -> None:
    chat.delay = 1.5
    advisor = ChatAdvisor(AdvisorEndpoint(base_url=chat.url, timeout="300ms"))
    started = time.monotonic()
    answer = advisor.consult(COMMAND)
    assert time.monotonic() - started < 1.4
    assert isinstance(answer, AdviceFailed)
    assert (answer.problem, answer.reason) == ("timeout", "no answer within 300ms")
    assert answer.prompt_hash is not None and answer.prompt_hash.startswith("sha256:")


def test_an_unreachable_server_refusals_and_non_answers_are_failures(chat: ChatServer) -> None:
    closed = ChatServer()
    closed.close()
    down = ChatAdvisor(AdvisorEndpoint(base_url=closed.url)).consult(COMMAND)
    assert isinstance(down, AdviceFailed) and down.problem == "unreachable"
    assert closed.url in down.reason
    chat.status, chat.reply = 500, {"error": "model not loaded"}
    refused = ChatAdvisor(AdvisorEndpoint(base_url=chat.url)).consult(COMMAND)
    assert isinstance(refused, AdviceFailed) and refused.problem == "refused"
    assert "HTTP 500" in refused.reason and "model not loaded" in refused.reason
    chat.status, chat.reply = 200, {"object": "list", "data": []}
    malformed = ChatAdvisor(AdvisorEndpoint(base_url=chat.url)).consult(COMMAND)
    assert isinstance(malformed, AdviceFailed) and malformed.problem == "malformed"
    chat.reply = b"<html>proxy error</html>"
    html = ChatAdvisor(AdvisorEndpoint(base_url=chat.url)).consult(COMMAND)
    assert isinstance(html, AdviceFailed) and html.problem == "malformed"


def test_a_failing_history_lookup_still_asks(chat: ChatServer) -> None:
    def broken(incident_id: str, limit: int) -> list[dict[str, Any]]:
        raise RuntimeError("index unavailable")

    answer = ChatAdvisor(AdvisorEndpoint(base_url=chat.url), similar=broken).consult(COMMAND)
    assert isinstance(answer, AdviceReceived) and answer.similar == []


def test_without_an_endpoint_every_consultation_fails_saying_so() -> None:
    answer = NoAdvisor().consult(COMMAND)
    assert isinstance(answer, AdviceFailed) and answer.problem == "unconfigured"


def test_the_api_key_must_be_a_secret_reference() -> None:
    with pytest.raises(ValueError, match="reference it as"):
        AdvisorEndpoint(api_key="sk-plain")
    with pytest.raises(ValueError, match="http:// or https://"):
        AdvisorEndpoint(base_url="ftp://x")
