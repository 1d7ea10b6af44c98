"""The Alertmanager silence actuator: create a silence, expire it as the undo.

Through Alertmanager's v2 API: `POST /api/v2/silences` creates, `DELETE /api/v2/silence/{id}`
expires, `GET /api/v2/silences` finds. Every silence it creates says `createdBy: onduty` and
carries `onduty_command_id=<command id>` in its comment, which makes it idempotent (a second
run finds the first run's silence and creates none) and checkable (`check(command_id)` finds
the silence, whatever its state).

Parameters of a create (`params`):

- `matchers`: `name="value"` strings (also `!=`, `=~`, `!~`). The matcher is parsed first and
  its value rendered afterwards as a template (`instance="{{ target }}"`), so a value can never
  add a matcher; in a regex matcher the substituted values are escaped.
- `duration`: how long (`30m`, `2h`; default the spec's `default_duration`, at most its
  `max_duration`).
- `comment`: why (default `onduty: incident <id>`).

An `expire` action (`alertmanager.expire`) expires `params.expire` (a silence id); an undo
(`StartUndo`) expires the silences its action created (found by the marker), or
`params.expire` when given. Expiring a silence that is already expired succeeds.

Crash semantics (`in_flight = "request"`): a create in flight dies with onduty, but Alertmanager
may still store it. A restart waits until the request's timeout has passed since it began, then
looks for the command's silence (`check`) and creates it only when there is none — never two.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from onduty.act.base import Outcome
from onduty.act.http import HttpExchange, HttpFailure, Response
from onduty.act.runs import InFlight, current_run
from onduty.act.specs import (
    AlertmanagerSilenceSpec,
    OutcomeUnknown,
    effective_timeout,
)
from onduty.act.templates import TemplateError, command_context, render_regex, render_text
from onduty.commands import StartAction, StartUndo
from onduty.secrets import resolve_references
from onduty.values import format_duration, parse_duration

MARKER = "onduty_command_id="
CREATED_BY = "onduty"
_LIST_LIMIT = 32 * 1024 * 1024
_MATCHER = re.compile(
    r"""^\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"""
    r"""(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^"\s]+))\s*$""",
    re.DOTALL,
)
_SILENCE_ID = re.compile(r"^[A-Za-z0-9-]{1,128}$")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_STATE_ORDER = {"active": 0, "pending": 1, "expired": 2}


class _Refused(Exception):
    pass


def marker(command_id: str) -> str:
    return f"{MARKER}{command_id}"


def has_marker(comment: str, command_id: str) -> bool:
    pattern = rf"(?:^|[\s(]){re.escape(marker(command_id))}(?=$|[\s),;])"
    return re.search(pattern, comment) is not None


def parse_matchers(raw: Any, context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`name="value"` strings → Alertmanager's v2 matchers; values rendered after parsing."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise _Refused('params.matchers: expected a list of matchers such as instance="web-1"')
    matchers = []
    for index, text in enumerate(raw):
        where = f"params.matchers[{index}]"
        match = _MATCHER.match(text) if isinstance(text, str) else None
        if match is None:
            raise _Refused(f'{where}: {text!r} is not a matcher such as name="value"')
        op = match.group("op")
        template = match.group("bare")
        if template is None:
            template = _ESCAPE.sub(r"\1", match.group("quoted"))
        is_regex = op in ("=~", "!~")
        try:
            value = (render_regex if is_regex else render_text)(template, context, where=where)
        except TemplateError as error:
            raise _Refused(str(error)) from None
        matchers.append(
            {
                "name": match.group("name"),
                "value": value,
                "isRegex": is_regex,
                "isEqual": op in ("=", "=~"),
            }
        )
    return matchers


def _sending(timeout: float, doing: str) -> None:
    """Note in the run's lock when a request that changes Alertmanager goes out: a restart
    waits until its timeout has passed before it looks for the silence."""
    if (run := current_run()) is not None:
        run.note(started=time.time(), timeout=timeout, doing=doing)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class AlertmanagerSilenceActuator:
    """Runs an `AlertmanagerSilenceSpec`. `client` may be shared (the caller closes it)."""

    idempotent = True
    can_check = True
    in_flight = InFlight.REQUEST

    def __init__(
        self,
        spec: AlertmanagerSilenceSpec,
        client: httpx.Client | None = None,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.spec = spec
        headers, secrets = resolve_references(spec.headers, what="header", env=env)
        self._http = HttpExchange(headers, secrets, client, max_body=64 * 1024)
        self._clock = clock or (lambda: datetime.now(UTC))

    def __repr__(self) -> str:
        return f"AlertmanagerSilenceActuator(action={self.spec.action!r}, {self.spec.url})"

    # ------------------------------------------------------------------ API

    def _silences(self, timeout: float) -> list[dict[str, Any]]:
        url = f"{self.spec.url}/api/v2/silences"
        response = self._http.send("GET", url, timeout=timeout, max_body=_LIST_LIMIT)
        if response.status != 200 or response.truncated:
            raise HttpFailure(self._http.describe("GET", url, response))
        try:
            silences = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            raise HttpFailure(f"GET {url}: the answer is not JSON") from None
        if not isinstance(silences, list):
            raise HttpFailure(f"GET {url}: expected a list of silences")
        return [s for s in silences if isinstance(s, dict)]

    def _find(self, command_id: str, timeout: float) -> list[dict[str, Any]]:
        """The silences created for `command_id`, the active ones first."""
        found = [
            silence
            for silence in self._silences(timeout)
            if has_marker(str(silence.get("comment", "")), command_id)
        ]
        return sorted(
            found, key=lambda s: _STATE_ORDER.get(str(s.get("status", {}).get("state")), 3)
        )

    def _silence(self, silence_id: str, timeout: float) -> Response:
        url = f"{self.spec.url}/api/v2/silence/{silence_id}"
        return self._http.send("GET", url, timeout=timeout)

    def _expire(self, silence_id: str, timeout: float) -> str:
        if not _SILENCE_ID.match(silence_id):
            raise _Refused(f"{silence_id!r} is not a silence id")
        url = f"{self.spec.url}/api/v2/silence/{silence_id}"
        _sending(timeout, f"expiring silence {silence_id}")
        response = self._http.send("DELETE", url, timeout=timeout)
        if response.status == 200:
            return f"silence {silence_id} expired"
        current = self._silence(silence_id, timeout)
        if current.status == 404:
            raise HttpFailure(f"alertmanager: no silence {silence_id}")
        if current.status == 200:
            try:
                state = orjson.loads(current.body).get("status", {}).get("state")
            except (orjson.JSONDecodeError, AttributeError):
                state = None
            if state == "expired":
                return f"silence {silence_id} was already expired"
        raise HttpFailure(self._http.describe("DELETE", url, response))

    # ------------------------------------------------------------------ actuator

    def run(self, command: StartAction | StartUndo) -> Outcome:
        timeout = effective_timeout(self.spec.timeout, command.timeout_s)
        operation = command.action.rsplit(".", 1)[-1]
        try:
            if isinstance(command, StartUndo):
                output = self._undo(command, timeout)
            elif operation == "expire":
                silence_id = command.params.get("expire")
                if not isinstance(silence_id, str):
                    raise _Refused("params.expire: the id of the silence to expire is missing")
                output = self._expire(silence_id, timeout)
            else:
                output = self._create(command, timeout)
        except _Refused as error:
            return Outcome(False, error=self._http.secrets.redact(f"refused: {error}"))
        except HttpFailure as error:
            return Outcome(False, error=self._http.secrets.redact(str(error)))
        return Outcome(True, output=output)

    def _undo(self, command: StartUndo, timeout: float) -> str:
        given = command.params.get("expire")
        if isinstance(given, str):
            return self._expire(given, timeout)
        silences = self._find(command.of_command_id, timeout)
        if not silences:
            return f"no silence was created by {command.of_command_id}; nothing to expire"
        return "\n".join(self._expire(str(silence["id"]), timeout) for silence in silences)

    def _create(self, command: StartAction, timeout: float) -> str:
        context = command_context(command)
        params = command.params
        matchers = parse_matchers(params.get("matchers"), context)
        try:
            duration = parse_duration(params.get("duration", self.spec.default_duration))
        except ValueError as error:
            raise _Refused(f"params.duration: {error}") from None
        if duration <= timedelta(0) or duration > self.spec.max_duration:
            raise _Refused(
                f"params.duration: {format_duration(duration)} is not between 0 and "
                f"{format_duration(self.spec.max_duration)}"
            )
        comment = params.get("comment") or f"onduty: incident {command.incident_id}"
        if not isinstance(comment, str):
            raise _Refused("params.comment: expected text")
        for silence in self._find(command.command_id, timeout):
            if silence.get("status", {}).get("state") in ("active", "pending"):
                return f"silence {silence['id']} (already created by this command)"
        now = self._clock()
        body = {
            "matchers": matchers,
            "startsAt": _iso(now),
            "endsAt": _iso(now + duration),
            "createdBy": CREATED_BY,
            "comment": f"{comment} ({marker(command.command_id)})",
        }
        url = f"{self.spec.url}/api/v2/silences"
        _sending(timeout, "creating a silence")
        response = self._http.send("POST", url, timeout=timeout, json=body)
        if response.status != 200:
            raise HttpFailure(self._http.describe("POST", url, response))
        try:
            silence_id = orjson.loads(response.body)["silenceID"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise HttpFailure(f"POST {url}: the answer has no silenceID") from None
        return f"silence {silence_id} until {_iso(now + duration)}"

    def check(self, command_id: str) -> Outcome | None:
        """The silence created for `command_id` (in any state), or None when there is none;
        raises `OutcomeUnknown` when Alertmanager cannot be asked."""
        try:
            silences = self._find(command_id, self.spec.timeout.total_seconds())
        except HttpFailure as error:
            raise OutcomeUnknown(self._http.secrets.redact(f"check failed: {error}")) from None
        if not silences:
            return None
        silence = silences[0]
        state = silence.get("status", {}).get("state", "unknown")
        return Outcome(True, output=f"silence {silence.get('id')} ({state})")


def from_spec(spec: Mapping[str, Any]) -> AlertmanagerSilenceActuator:
    """The `onduty.actuators` entry point for kind `alertmanager.silence`."""
    return AlertmanagerSilenceActuator(AlertmanagerSilenceSpec.model_validate(dict(spec)))
