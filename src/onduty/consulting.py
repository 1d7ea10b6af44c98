"""Where the advisor is asked (`ConsultAdvisor`): a language model behind an OpenAI-compatible
chat API answers, and the answer goes back to the core as an `AdviceReceived` input with the
request it answered, so the log holds the fact the core decides by and replay never asks again.
When there is no answer (the server is down, slow, refuses, or replies with something that is
not a chat completion) an `AdviceFailed` says why and the incident goes on without advice.

The request is built by the pure `think/advisor.chat_request` from the recorded
`AdviceRequested` and the incident's similar past incidents. Every secret this process resolved
is redacted from it before it is sent, hashed or recorded; the API key travels only in the
`Authorization` header, which is never recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import httpx

from onduty.commands import ConsultAdvisor
from onduty.config_advisor import AdvisorEndpoint, AdvisorSettings
from onduty.events import AdviceFailed, AdviceProblem, AdviceReceived, AdviceRequested
from onduty.secrets import Secrets, known_secrets, resolve_references
from onduty.think.advisor import chat_request, prompt_hash
from onduty.values import format_duration

logger = logging.getLogger("onduty.consulting")

MAX_CONTENT = 8_000
"""The most of a reply that is recorded: an answer that long is no valid proposal anyway."""

SimilarFinder = Callable[[str, int], Sequence[Mapping[str, Any]]]
"""The similar past incidents of an incident (its id, how many), as the prompt quotes them."""


class Consultant(Protocol):
    def consult(self, command: ConsultAdvisor) -> AdviceReceived | AdviceFailed:
        """Ask and wait for the answer (bounded by the endpoint's timeout); called off the
        core's thread."""
        ...


class NoAdvisor:
    """No endpoint is set up where the advisor runs: every consultation fails, saying so."""

    def consult(self, command: ConsultAdvisor) -> AdviceReceived | AdviceFailed:
        return AdviceFailed(
            request_id=command.request_id,
            incident_id=command.incident_id,
            problem="unconfigured",
            reason="no advisor endpoint is set up where onduty runs",
        )


def _redacted(value: Any, secrets: Secrets) -> Any:
    """`value` with every known secret written `[redacted]`, in every string it holds."""
    if isinstance(value, str):
        return secrets.redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item, secrets) for item in value]
    return value


class ChatAdvisor:
    """Asks an OpenAI-compatible chat API (vLLM, Ollama, the llama.cpp server, OpenAI) with the
    answer constrained to the proposal's JSON schema."""

    def __init__(
        self,
        endpoint: AdvisorEndpoint,
        *,
        similar: SimilarFinder | None = None,
        client: httpx.Client | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._similar = similar
        self._client = client or httpx.Client()
        self._headers = {"Content-Type": "application/json"}
        if endpoint.api_key is not None:
            values, _ = resolve_references(
                {"api_key": endpoint.api_key}, what="advisor.endpoint", env=env
            )
            self._headers["Authorization"] = f"Bearer {values.as_dict()['api_key']}"

    def close(self) -> None:
        self._client.close()

    def request_body(self, request: AdviceRequested) -> tuple[dict[str, Any], list[str]]:
        """The request as it is sent (and recorded), and the similar incidents it quotes."""
        similar: list[Mapping[str, Any]] = []
        if self._similar is not None and request.similar:
            try:
                similar = list(self._similar(request.incident_id, request.similar))
            except Exception:  # advice without history beats no advice
                logger.exception("finding incidents similar to %s failed", request.incident_id)
        body = chat_request(request, similar, self.endpoint)
        quoted = [str(item.get("incident_id", "")) for item in similar]
        return _redacted(body, Secrets(known_secrets())), quoted

    def consult(self, command: ConsultAdvisor) -> AdviceReceived | AdviceFailed:
        request = AdviceRequested.model_validate(command.request)
        body, quoted = self.request_body(request)
        digest = prompt_hash(body)
        timeout = self.endpoint.timeout.total_seconds()
        started = time.monotonic()

        def failed(problem: AdviceProblem, reason: str) -> AdviceFailed:
            return AdviceFailed(
                request_id=command.request_id,
                incident_id=command.incident_id,
                model=self.endpoint.model,
                problem=problem,
                reason=reason,
                prompt_hash=digest,
                latency_ms=round((time.monotonic() - started) * 1000, 1),
            )

        url = f"{self.endpoint.base_url}/chat/completions"
        try:
            response = self._client.post(url, json=body, headers=self._headers, timeout=timeout)
        except httpx.TimeoutException:
            return failed("timeout", f"no answer within {format_duration(self.endpoint.timeout)}")
        except httpx.HTTPError as error:
            return failed("unreachable", f"{url}: {type(error).__name__}: {error}")
        latency_ms = round((time.monotonic() - started) * 1000, 1)
        if response.status_code >= 400:
            return failed(
                "refused", f"{url} answered HTTP {response.status_code}: {response.text[:300]}"
            )
        try:
            reply = response.json()
            content = reply["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError("message.content is not text")
        except (ValueError, KeyError, IndexError, TypeError) as error:
            return failed("malformed", f"{url} did not answer a chat completion ({error})")
        model = reply.get("model") if isinstance(reply.get("model"), str) else None
        return AdviceReceived(
            request_id=command.request_id,
            incident_id=command.incident_id,
            model=model or self.endpoint.model,
            prompt_hash=digest,
            request=body,
            content=content[:MAX_CONTENT],
            latency_ms=latency_ms,
            similar=quoted,
        )


def consultant_for(
    settings: AdvisorSettings, *, similar: SimilarFinder | None = None
) -> Consultant | None:
    """The consultant a configuration asks for: None while the advisor is off."""
    if not settings.enabled:
        return None
    return ChatAdvisor(settings.endpoint, similar=similar)
