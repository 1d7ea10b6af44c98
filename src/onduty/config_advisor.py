"""The `advisor:` section of the configuration: whether a language model is asked for a
proposal, when, how often, how far its proposals may go on their own, and where the model
answers (an OpenAI-compatible chat API: vLLM, Ollama, the llama.cpp server).

The core reads everything but `endpoint`: when to consult, the budget, the autonomy cap. The
endpoint is the shell's (where the model is, how long to wait for it); it is not part of the
policy's version, so pointing onduty at another server changes no decision by itself. Which
model answered is recorded with each answer (`AdviceReceived.model`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from onduty.values import Autonomy, AutonomyLevel, PositiveDuration, references
from onduty.values import ConfigModel as Model

__all__ = ["AdvisorEndpoint", "AdvisorSettings"]


def _yaml_switch(value: Any) -> Any:
    """YAML 1.1 reads a bare `on` or `off` as a boolean: take it as the word that was written."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


class AdvisorEndpoint(Model):
    """Where the language model answers: an OpenAI-compatible `POST {base_url}/chat/completions`."""

    base_url: str = "http://127.0.0.1:8080/v1"
    """The API's base URL, up to and including its version (`http://127.0.0.1:11434/v1` for
    Ollama, `http://127.0.0.1:8000/v1` for vLLM)."""
    model: str = Field(default="default", min_length=1)
    """The model to ask, as the server names it."""
    api_key: str | None = None
    """Sent as a bearer token; a secret, so written as `${ENV:NAME}` or `${FILE:/path}`. Never
    recorded: the recorded request holds no header."""
    timeout: PositiveDuration = timedelta(seconds=30)
    """How long one answer may take; a slower model is recorded as timed out
    (`AdviceFailed`) and onduty carries on without it."""
    response_format: Literal["json_schema", "json_object"] = "json_schema"
    """How the answer is constrained to the proposal's JSON schema: `json_schema` (OpenAI's
    structured outputs: vLLM, Ollama, OpenAI) or `json_object` with a `schema` (llama-cpp-python's
    server). Either way the answer is validated again when it arrives."""
    max_tokens: int = Field(default=256, ge=16, le=8192)
    """The most tokens the answer may take."""
    temperature: float = Field(default=0.0, ge=0, le=2)
    """0: the model's most likely answer, as near to repeatable as the server allows."""

    @field_validator("api_key")
    @classmethod
    def _key_is_a_reference(cls, value: str | None) -> str | None:
        if value is not None and not references(value, "advisor.endpoint.api_key"):
            raise ValueError(
                "the API key is a secret and would be shown with the configuration: reference "
                "it as ${ENV:NAME} or ${FILE:/path}"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r}: expected an http:// or https:// URL")
        return value.rstrip("/")


class AdvisorSettings(Model):
    """The advisor agent: for an incident, it asks a language model to choose among the actions
    the runbooks allow for the incident's targets, with the incident's labels and annotations
    (quoted as data) and the similar incidents of the past. Its proposal is an `ActionProposed`
    like any other, judged by the same guardrails; by default a person confirms it. Off by
    default."""

    agent: Annotated[Literal["off", "shadow", "on"], BeforeValidator(_yaml_switch)] = "off"
    """`on`: a valid answer becomes a proposal (agent `advisor`); `shadow`: the answer is judged
    and noted on the incident's timeline, never proposed; `off`: no model is asked."""
    consult: Literal["unmatched", "always"] = "unmatched"
    """`unmatched`: ask only for incidents no runbook matches (they are escalated as before, and
    the advice follows); `always`: ask for every incident planned (a proposal on a target
    another action is busy with loses arbitration, as any would)."""
    autonomy: AutonomyLevel = Autonomy.APPROVE
    """At most this autonomy for the advisor's proposals, whatever the service's level (a cap,
    never a raise): by default a person confirms each one."""
    services: dict[str, AutonomyLevel] = Field(default_factory=dict)
    """The cap for a service's incidents, in place of `autonomy` (still never above the
    service's own level)."""
    max_calls_per_hour: int = Field(default=30, ge=1)
    """The budget: at most this many consultations in any hour (by event time); past it, the
    incident goes on without advice and its timeline says why."""
    similar: int = Field(default=3, ge=0, le=10)
    """How many similar past incidents go into the prompt (what was done, whether it verified)."""
    max_rationale: int = Field(default=400, ge=40, le=2000)
    """The longest rationale an answer may give, in characters: a longer one is discarded."""
    endpoint: AdvisorEndpoint = Field(default_factory=AdvisorEndpoint)
    """Where the model answers (the shell's setting: not part of the policy's version)."""

    @property
    def enabled(self) -> bool:
        return self.agent != "off"

    def cap(self, service: str | None) -> Autonomy:
        """The most autonomy an advisor proposal may have for `service`'s incidents."""
        return self.services.get(service or "", self.autonomy)
