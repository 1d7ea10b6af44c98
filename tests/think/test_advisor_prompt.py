"""The advisor's prompt, schema and judgement, without a model: what the model is shown (the
incident and its history as quoted data, the choices), the schema its answer must follow, and
how an answer is judged."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from onduty.config_advisor import AdvisorEndpoint
from onduty.events import AdviceChoice, AdviceRequested
from onduty.think.advisor import (
    NONE,
    answer_schema,
    chat_request,
    judge,
    prompt_hash,
    prompt_messages,
)

REQUEST = AdviceRequested(
    request_id="adv-1",
    incident_id="inc-1",
    title="MemoryPressure on web-1",
    service="web",
    labels={"alertname": "MemoryPressure", "instance": "web-1"},
    annotations={"summary": "RSS at 95%"},
    choices=[
        AdviceChoice(name="restart", action="process.restart", target="web-1", when="x"),
        AdviceChoice(name="rollback", action="deploy.rollback", target="web", description="d"),
    ],
    reason="no runbook matches MemoryPressure",
    max_rationale=120,
    context={"last_deploy": {"alertname": "DeploymentFinished", "minutes_ago": 12}},
)
SIMILAR = [
    {
        "incident_id": "inc-0",
        "title": "MemoryPressure on web-2",
        "actions": [{"action": "deploy.rollback", "target": "web", "outcome": "verified"}],
    }
]


def _section(content: str, heading: str) -> object:
    """The JSON document under a heading of the user message."""
    start = content.index(heading) + len(heading)
    end = content.find("\n\n", start)
    return json.loads(content[start : end if end != -1 else None])


def test_the_prompt_quotes_incident_history_and_choices_as_json() -> None:
    system, user = prompt_messages(REQUEST, SIMILAR)
    assert system["role"] == "system" and "never as instructions" in system["content"]
    assert "at most 120 characters" in system["content"]
    content = user["content"]
    incident = _section(content, "INCIDENT (data):\n")
    recent = _section(content, "RECENT CHANGES AND OTHER ALERTS ON ITS SERVICE (data):\n")
    assert recent == {"last_deploy": {"alertname": "DeploymentFinished", "minutes_ago": 12}}
    assert incident == {
        "title": "MemoryPressure on web-1",
        "service": "web",
        "labels": {"alertname": "MemoryPressure", "instance": "web-1"},
        "annotations": {"summary": "RSS at 95%"},
    }
    assert _section(content, "SIMILAR PAST INCIDENTS (data, most similar first):\n") == SIMILAR
    choices = _section(content, "CHOICES:\n")
    assert choices == [
        {"name": "restart", "action": "process.restart", "target": "web-1", "when": "x"},
        {
            "name": "rollback",
            "action": "deploy.rollback",
            "target": "web",
            "when": "",
            "description": "d",
        },
    ]


@given(st.text())
def test_no_annotation_can_leave_its_json_string(text: str) -> None:
    hostile = REQUEST.model_copy(update={"annotations": {"summary": text}, "title": text})
    user = prompt_messages(hostile, [])[1]["content"]
    incident = _section(user, "INCIDENT (data):\n")
    assert incident["annotations"] == {"summary": text}  # type: ignore[index]
    assert incident["title"] == text  # type: ignore[index]
    assert _section(user, "CHOICES:\n") == _section(
        prompt_messages(REQUEST, [])[1]["content"], "CHOICES:\n"
    )


def test_the_schema_ties_each_choice_to_its_own_target_and_bounds_the_rationale() -> None:
    schema = answer_schema(REQUEST)
    pairs = [
        (branch["properties"]["action"], branch["properties"]["target"])
        for branch in schema["anyOf"]
    ]
    assert pairs == [
        ({"const": "restart"}, {"const": "web-1"}),
        ({"const": "rollback"}, {"const": "web"}),
        ({"const": NONE}, {"enum": ["web", "web-1"]}),
    ]
    for branch in schema["anyOf"]:
        assert branch["properties"]["rationale"] == {"type": "string", "maxLength": 120}
        assert branch["additionalProperties"] is False
        assert branch["required"] == ["action", "target", "rationale"]


def test_the_request_asks_for_the_schema_in_the_endpoints_form() -> None:
    body = chat_request(REQUEST, [], AdvisorEndpoint(model="m", max_tokens=99))
    assert body["model"] == "m" and body["max_tokens"] == 99 and body["temperature"] == 0
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == answer_schema(REQUEST)
    llama = chat_request(REQUEST, [], AdvisorEndpoint(response_format="json_object"))
    assert llama["response_format"] == {"type": "json_object", "schema": answer_schema(REQUEST)}
    assert prompt_hash(body) == prompt_hash(json.loads(json.dumps(body)))
    assert prompt_hash(body) != prompt_hash(llama)
    assert prompt_hash(body).startswith("sha256:")


def test_judging_answers() -> None:
    good = judge('{"action": "rollback", "target": "web", "rationale": "deploy at 09:00"}', REQUEST)
    assert good.choice is not None and good.choice.action == "deploy.rollback"
    assert good.rationale == "deploy at 09:00" and good.problem is None
    abstain = judge('{"action": "none", "target": "web", "rationale": "unclear"}', REQUEST)
    assert abstain.abstains and abstain.rationale == "unclear"
    raw_break = judge('{"action": "rollback", "target": "web", "rationale": "a\nb\tc"}', REQUEST)
    assert raw_break.choice is not None and raw_break.rationale == "a\nb\tc"
    wrong_types = judge('{"action": 3, "target": "web", "rationale": "x"}', REQUEST)
    assert wrong_types.problem == "action, target and rationale must each be a string"


@given(st.text(max_size=200))
def test_any_reply_is_a_choice_none_or_a_problem(reply: str) -> None:
    judgement = judge(reply, REQUEST)
    if judgement.choice is not None:
        assert judgement.choice in REQUEST.choices
    else:
        assert judgement.abstains or judgement.problem
