"""The `actuators:` section of the configuration: which actuator runs which actions, and how.

Every actuator spec has a `kind` (which actuator), an `action` (an action name such as
`process.restart`, or a family such as `process.*`) and a `timeout`. The built-in kinds:

- `shell` (`ShellSpec`): a program from an allow list, run without a shell.
- `http` (`HttpSpec`): one HTTP request.
- `supervisor` (`SupervisorSpec`): restart, start or stop a program through supervisord's
  XML-RPC interface.
- `alertmanager.silence` (`AlertmanagerSilenceSpec`): create (and expire) a silence in a
  Prometheus Alertmanager.

Other kinds come from installed packages (the `onduty.actuators` entry-point group, see
`onduty.act.plugins`); their specs are kept as `PluginSpec` and validated by their factory.

Secrets are never written in the configuration (which is recorded in the event log): a value
may reference `${ENV:NAME}` or `${FILE:/absolute/path}` instead, and the reference is resolved
when the actuator is built. Resolved values live in `Secrets`, whose `repr` shows none of them
and whose `redact` hides every one of them in a text.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Collection, Mapping
from datetime import timedelta
from importlib.metadata import entry_points
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from onduty.act.templates import (
    ACTION_VARIABLES,
    CHECK_VARIABLES,
    TemplateError,
    check_template,
    is_constant,
    json_templates,
)
from onduty.httpbits import Headers, check_http_url
from onduty.values import (
    AbsolutePath,
    Duration,
    FieldProblems,
    PositiveDuration,
    describe_validation_error,
    format_seconds,
    parse_items,
    references,
    unknown_kind,
)

__all__ = [
    "ActuatorConfigError",
    "ActuatorSpec",
    "AlertmanagerSilenceSpec",
    "AnyActuatorSpec",
    "HttpSpec",
    "OutcomeUnknown",
    "PluginSpec",
    "ShellSpec",
    "SupervisorSpec",
    "effective_timeout",
    "format_seconds",
    "parse_actuators",
]

ACTION_PATTERN = r"^[a-z][a-z0-9_-]*(?:\.[a-z0-9_-]+)*(?:\.\*)?$"
"""An action name (`process.restart`) or a family of them (`process.*`)."""

DEFAULT_TIMEOUT = timedelta(seconds=30)
DEFAULT_MAX_OUTPUT = 64 * 1024


class OutcomeUnknown(Exception):
    """`check(command_id)` could not tell whether an earlier run took effect (the thing asked
    was unreachable or gave an answer that means neither yes nor no). The executor records the
    action's outcome as unknown and escalates; it must not run the action again."""


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ActuatorConfigError(FieldProblems):
    """An `actuators:` list that cannot be used; `problems` name each field and the reason,
    e.g. `actuators[2].allow[0]: must be an absolute path`."""


def effective_timeout(spec_timeout: timedelta, command_timeout_s: float) -> float:
    """The stricter of the spec's timeout and the command's own (a runbook step's), in
    seconds."""
    limit = spec_timeout.total_seconds()
    if command_timeout_s > 0:
        limit = min(limit, command_timeout_s)
    return limit


# --------------------------------------------------------------------------- secrets

# --------------------------------------------------------------------------- shared checks


def _check_http_url(value: str, where: str = "") -> str:
    """An http(s) URL with a host and no credentials; `where` prefixes the messages."""
    check_http_url(
        value,
        where=where,
        credentials="credentials in the URL would be recorded and shown; use the spec's header "
        "or password fields with ${ENV:NAME} or ${FILE:/path}",
    )
    if "${" in value:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}a URL cannot reference secrets (it is recorded and shown)")
    return value


_LITERAL_AUTHORITY = re.compile(r"^(https?)://([^/?#{}]+)(?=$|[/?#])")


def _check_url_template(value: str, variables: frozenset[str]) -> str:
    """A URL template whose scheme and host are literal: values go into the path and query."""
    try:
        check_template(value, variables=variables, where="template")
    except TemplateError as error:
        raise ValueError(str(error).removeprefix("template: ")) from None
    match = _LITERAL_AUTHORITY.match(value)
    if match is None:
        raise ValueError(
            "the scheme and host must be written out (http://host:port/...); "
            "templates may fill in the path and the query only"
        )
    _check_http_url(match.group(0))
    if "#" in value:
        raise ValueError("a URL template cannot have a fragment")
    return value


def _template(value: str, variables: frozenset[str], where: str) -> str:
    try:
        return check_template(value, variables=variables, where=where)
    except TemplateError as error:
        raise ValueError(str(error)) from None


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _status_list(value: Any) -> Any:
    return [value] if isinstance(value, int) and not isinstance(value, bool) else value


# --------------------------------------------------------------------------- models


class _Spec(BaseModel):
    """What every actuator shares. Its outcome is recorded in the log: a success as
    `ActionSucceeded` with the output (a program's stdout and stderr together; a request's
    status and response body), cut to `max_output` bytes with every resolved secret replaced by
    `[redacted]`; a failure as `ActionFailed` with the last lines of that output; a run past its
    timeout as `ActionOutcomeUnknown`, which is checked (`check_argv`, `check_url`) or
    escalated, and never blindly re-run unless the action is idempotent."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    action: str = Field(pattern=ACTION_PATTERN)
    """The action (`process.restart`) or family of actions (`process.*`) this actuator carries out;
    one actuator per action."""
    timeout: PositiveDuration = DEFAULT_TIMEOUT
    """The limit of one run; past it the outcome is unknown and escalated, never blindly re-run."""


class ShellSpec(_Spec):
    """Run a program (never a shell). `argv` holds templates, one argument each; the rendered
    `argv[0]` must be one of `allow` (absolute paths), else the run is refused.

    The program gets a clean environment: `PATH=/usr/sbin:/usr/bin:/sbin:/bin`,
    `LANG=C.UTF-8` and the variables of `env` (whose values may reference secrets). Its output
    (stdout and stderr) is kept up to `max_output` bytes, with every secret redacted.
    `check_argv`, run with the command id (`{{ command_id }}`), tells whether an earlier run
    took effect: exit 0 yes, 1 no, anything else unknown."""

    kind: Literal["shell"]
    """`shell`."""
    argv: list[str] = Field(min_length=1)
    """The program and its arguments, each a template rendering exactly one argument (see "Template
    variables"); never a shell string."""
    allow: list[str] = Field(min_length=1)
    """The absolute paths the rendered `argv[0]` may be; anything else is refused."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables for the program (values may reference secrets); it gets nothing else
    but `PATH` and `LANG`."""
    cwd: AbsolutePath | None = None
    """The working directory (absolute); default: onduty's."""
    max_output: int = Field(default=DEFAULT_MAX_OUTPUT, ge=1024, le=16 * 1024 * 1024)
    """Output kept, in bytes (the beginning and the end), secrets redacted: recorded as the action's
    output, its last lines as the error of a failure."""
    idempotent: bool = False
    """Whether running it twice does no harm: an idempotent action whose outcome is unknown may be
    retried; any other is checked (`check_argv`) or escalated."""
    check_argv: list[str] | None = Field(default=None, min_length=1)
    """A program that tells whether an earlier run took effect, given `{{ command_id }}`: exit 0
    yes, 1 no, anything else unknown."""

    @field_validator("argv")
    @classmethod
    def _argv(cls, argv: list[str]) -> list[str]:
        for index, item in enumerate(argv):
            _template(item, ACTION_VARIABLES, f"argv[{index}]")
        return argv

    @field_validator("check_argv")
    @classmethod
    def _check_argv(cls, argv: list[str] | None) -> list[str] | None:
        for index, item in enumerate(argv or []):
            _template(item, CHECK_VARIABLES, f"check_argv[{index}]")
        return argv

    @field_validator("allow")
    @classmethod
    def _allow(cls, allow: list[str]) -> list[str]:
        for path in allow:
            if not path.startswith("/") or "\x00" in path:
                raise ValueError(f"{path!r} must be an absolute path")
            if posixpath.normpath(path) != path:
                raise ValueError(f"{path!r} must be a normalised path (no '..', '.' or '//')")
        return allow

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
            if "\x00" in value:
                raise ValueError(f"env {name!r}: a value cannot contain a NUL byte")
            references(value, f"env {name!r}")
        return env

    @model_validator(mode="after")
    def _programs_allowed(self) -> ShellSpec:
        for field, argv in (("argv", self.argv), ("check_argv", self.check_argv)):
            if argv and is_constant(argv[0]) and argv[0] not in self.allow:
                raise ValueError(
                    f"{field}[0]: {argv[0]!r} is not in `allow` ({', '.join(self.allow)})"
                )
        return self


class HttpSpec(_Spec):
    """One HTTP request. `url` is a template whose scheme and host are written out; every
    value substituted into it is percent-encoded. `body` is a JSON structure whose string
    leaves are templates (sent as JSON). `headers` may reference secrets. `check_url`, fetched
    with GET and the command id, tells whether an earlier run took effect: 200 yes, 404 no."""

    kind: Literal["http"]
    """`http`."""
    method: Annotated[Literal["GET", "POST", "PUT", "PATCH", "DELETE"], BeforeValidator(_upper)] = (
        "POST"
    )
    """The request method; `GET`, `PUT` and `DELETE` are idempotent by default."""
    url: str
    """A template; every value substituted is percent-encoded as one path segment or query value."""
    headers: Headers = Field(default_factory=dict)
    """Request headers; values may reference `${ENV:NAME}` or `${FILE:/path}`."""
    body: JsonValue = None
    """A JSON body whose string leaves are templates (a leaf that is one `{{ expression }}` keeps
    its JSON type)."""
    expect_status: Annotated[list[int], BeforeValidator(_status_list)] = Field(
        default_factory=lambda: [200, 201, 202, 204], min_length=1
    )
    """The statuses that mean success."""
    idempotent: bool = False
    """Defaults to true for GET, PUT and DELETE."""
    check_url: str | None = None
    """A URL, given `{{ command_id }}`, that tells whether an earlier run took effect: 200 yes, 404
    no."""
    max_output: int = Field(default=DEFAULT_MAX_OUTPUT, ge=1024, le=16 * 1024 * 1024)
    """Response body kept, in bytes (secrets redacted): recorded as the action's output."""

    @model_validator(mode="before")
    @classmethod
    def _default_idempotent(cls, data: Any) -> Any:
        if isinstance(data, dict) and "idempotent" not in data:
            method = data.get("method", "POST")
            safe = isinstance(method, str) and method.upper() in ("GET", "PUT", "DELETE")
            return {**data, "idempotent": safe}
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url_template(value, ACTION_VARIABLES)

    @field_validator("check_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url_template(value, CHECK_VARIABLES)

    @field_validator("body")
    @classmethod
    def _body(cls, value: JsonValue) -> JsonValue:
        for where, template in json_templates(value):
            _template(template, ACTION_VARIABLES, where)
        return value

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, codes: list[int]) -> list[int]:
        for code in codes:
            if not 100 <= code <= 599:
                raise ValueError(f"{code} is not an HTTP status code (100-599)")
        return codes


SUPERVISOR_OPERATIONS = ("restart", "start", "stop")
_PROGRAM = re.compile(r"^[^\s:]+(?::[^\s:]+)?$")


class SupervisorSpec(_Spec):
    """supervisord's XML-RPC interface: `url` is `http://host:port/RPC2` (an
    `inet_http_server`) or `unix:///path/to/supervisor.sock` (a `unix_http_server`).
    The operation is the last part of the action name: `restart`, `start` or `stop`
    (`process.*` covers all three). `program` renders the program name (`name` or
    `group:name`) from the target."""

    kind: Literal["supervisor"]
    """`supervisor`."""
    action: str = Field(default="process.*", pattern=ACTION_PATTERN)
    """The actions it takes: the last part is the operation (`restart`, `start`, `stop`);
    `process.*` covers all three."""
    url: str
    """`http://host:port/RPC2` or `unix:///path/to/supervisor.sock`."""
    username: str | None = None
    """The XML-RPC user (a reference or a name)."""
    password: str | None = None
    """A reference (`${ENV:NAME}` or `${FILE:/path}`), never the password itself."""
    program: str = "{{ target }}"
    """A template rendering the supervisord program (`name` or `group:name`) from the target."""

    @field_validator("action")
    @classmethod
    def _operation(cls, action: str) -> str:
        operation = action.rsplit(".", 1)[-1]
        if operation != "*" and operation not in SUPERVISOR_OPERATIONS:
            raise ValueError(
                f"the supervisor actuator restarts, starts or stops: the action must end in "
                f".restart, .start, .stop or .* (got {action!r})"
            )
        return action

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value.startswith("unix://"):
            path = value.removeprefix("unix://")
            if not path.startswith("/"):
                raise ValueError(f"expected unix:///absolute/path/to/supervisor.sock: {value!r}")
            return value
        return _check_http_url(value)

    @field_validator("username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        if value is not None:
            references(value, "username")
        return value

    @field_validator("password")
    @classmethod
    def _password(cls, value: str | None) -> str | None:
        if value is not None and not references(value, "password"):
            raise ValueError(
                "the password would be recorded in the event log: reference it as "
                "${ENV:NAME} or ${FILE:/path}"
            )
        return value

    @field_validator("program")
    @classmethod
    def _program(cls, value: str) -> str:
        return _template(value, ACTION_VARIABLES, "program")

    @model_validator(mode="after")
    def _credentials(self) -> SupervisorSpec:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        return self

    @property
    def idempotent(self) -> bool:
        return self.action.rsplit(".", 1)[-1] in ("start", "stop")


class AlertmanagerSilenceSpec(_Spec):
    """Silences in a Prometheus Alertmanager (`url` is its base URL).

    The operation is the last part of the action name. `expire` (e.g. `alertmanager.expire`)
    expires the silence `params.expire` (a silence id); any other creates a silence from
    `params.matchers` (`name="value"`, `name!="value"`, `name=~"regex"`, `name!~"regex"`; the
    values are templates, rendered after the matcher is parsed, and escaped in a regex),
    `params.duration` (default `default_duration`, at most `max_duration`) and
    `params.comment`. An undo (`StartUndo`) expires the silence its action created.

    Each silence's comment carries `onduty_command_id=<command id>`, so a second run finds
    the silence instead of creating another one, and `check(command_id)` finds it too."""

    kind: Literal["alertmanager.silence"]
    """`alertmanager.silence`."""
    action: str = Field(default="alertmanager.*", pattern=ACTION_PATTERN)
    """The actions it takes: `….expire` expires a silence, any other creates one."""
    url: str
    """The Alertmanager's base URL."""
    headers: Headers = Field(default_factory=dict)
    """Request headers; values may reference secrets."""
    default_duration: Duration = timedelta(hours=1)
    """A silence's duration when the step's `params.duration` gives none."""
    max_duration: Duration = timedelta(hours=24)
    """The longest silence it creates."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        _check_http_url(value)
        parts = urlsplit(value)
        if parts.query or parts.fragment:
            raise ValueError("the Alertmanager URL is a base URL: no query string or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _durations(self) -> AlertmanagerSilenceSpec:
        if self.default_duration <= timedelta(0) or self.max_duration <= timedelta(0):
            raise ValueError("silence durations must be positive")
        if self.default_duration > self.max_duration:
            raise ValueError("default_duration cannot be longer than max_duration")
        return self


ActuatorSpec = Annotated[
    ShellSpec | HttpSpec | SupervisorSpec | AlertmanagerSilenceSpec,
    Field(discriminator="kind"),
]
BuiltinSpec = ShellSpec | HttpSpec | SupervisorSpec | AlertmanagerSilenceSpec
BUILTIN_KIND_NAMES = ("shell", "http", "supervisor", "alertmanager.silence")


class PluginSpec(BaseModel):
    """An actuator of a kind an installed package provides; its own factory validates the
    rest of its fields (kept as extra fields)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str = Field(min_length=1)
    action: str = Field(pattern=ACTION_PATTERN)
    timeout: Duration = DEFAULT_TIMEOUT

    def options(self) -> dict[str, Any]:
        """The spec as its factory receives it (the fields as written)."""
        return self.model_dump(mode="json")


AnyActuatorSpec = BuiltinSpec | PluginSpec

ENTRY_POINT_GROUP = "onduty.actuators"


def entry_point_kinds() -> set[str]:
    """The kinds installed packages declare (without importing them)."""
    return {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} - set(BUILTIN_KIND_NAMES)


_SPEC: TypeAdapter[BuiltinSpec] = TypeAdapter(ActuatorSpec)


def parse_actuators(
    raw: Any, *, plugin_kinds: Collection[str] | None = None
) -> list[AnyActuatorSpec]:
    """Validate an `actuators:` list.

    Built-in kinds become their models; a kind from `plugin_kinds` (by default the installed
    `onduty.actuators` entry points) becomes a `PluginSpec`. Raises `ActuatorConfigError`
    naming every bad field (`actuators[1].allow[0]: ...`). Two specs for the same action are an
    error: which one runs would be ambiguous."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ActuatorConfigError(["actuators: expected a list of actuator specs"])
    if plugin_kinds is None:
        plugin_kinds = entry_point_kinds()
    kinds = plugin_kinds

    def parse(prefix: str, item: Mapping[str, Any]) -> AnyActuatorSpec:
        kind = item.get("kind")
        try:
            if kind in BUILTIN_KIND_NAMES:
                return _SPEC.validate_python(dict(item))
            if isinstance(kind, str) and kind in kinds:
                return PluginSpec.model_validate(dict(item))
        except ValidationError as error:
            raise FieldProblems(
                describe_validation_error(
                    error,
                    prefix=prefix,
                    tags=BUILTIN_KIND_NAMES if kind in BUILTIN_KIND_NAMES else (),
                )
            ) from None
        raise unknown_kind(prefix, kind, sorted({*BUILTIN_KIND_NAMES, *kinds}))

    return parse_items(
        "actuators",
        raw,
        parse,
        expected="a mapping with a `kind`",
        key=lambda spec: spec.action,
        repeated=lambda prefix, action, earlier: (
            f"{prefix}.action: {action!r} is already handled by {earlier}"
        ),
        error=ActuatorConfigError,
    )
