"""`onduty config check` and `onduty token hash`: configuration and access tokens."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from onduty.cli.base import UsageProblem, config_problems, err, out
from onduty.config import ConfigError
from onduty.configfile import load_config
from onduty.textsafe import markup

config_app = typer.Typer(no_args_is_help=True, help="Work with configuration files.")
token_app = typer.Typer(no_args_is_help=True, help="Access tokens for `onduty serve`.")


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="The configuration to validate.")],
) -> None:
    """Validate a configuration: exit 0 when valid, 2 with every problem named when not.
    Warnings (exit still 0): secret references that cannot be resolved here and now (the
    machine that runs onduty may well have them), an empty file, actions no actuator provides,
    escalations that reach no channel, templates naming a variable or label that does not
    exist."""
    from onduty.act.sim import SIM_ACTIONS
    from onduty.api.auth import Access, AccessError
    from onduty.configcheck import config_warnings
    from onduty.secrets import unresolved_references

    try:
        config = load_config(file)
    except ConfigError as error:
        raise config_problems(error) from None
    sections = {name: getattr(config, name) for name in ("sources", "actuators", "channels")}
    sections["telemetry"] = config.telemetry.model_dump(mode="json")
    sections["advisor"] = config.advisor.model_dump(mode="json")
    warnings = unresolved_references(sections)
    try:
        # hashes and ingest secrets named by variable or file; body-only signatures
        warnings += Access.from_raw(config.access).warnings
    except AccessError as error:
        warnings += error.problems
    if _is_empty(file):
        warnings.insert(
            0,
            f"{file} is empty: onduty would run on the built-in defaults alone (no services, "
            "no runbooks: it records and pages, and never acts)",
        )
    warnings += config_warnings(config, simulated_actions=SIM_ACTIONS)
    for warning in warnings:
        err.print(f"[yellow]warning[/]: {markup(warning)}", soft_wrap=True)
    out.print(
        f"[green]valid[/]: {markup(file)} — {len(config.services)} services, "
        f"{len(config.runbooks)} runbooks, {len(config.policy.guardrails)} guardrails; "
        f"policy version {config.version}"
    )


def _is_empty(file: Path) -> bool:
    """Whether a configuration file holds no settings at all (nothing, or only comments)."""
    import yaml

    try:
        return yaml.safe_load(file.read_text(encoding="utf-8")) is None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False


@token_app.command("hash")
def token_hash(
    new: Annotated[
        bool, typer.Option("--new", help="Generate a new random token and print it too.")
    ] = False,
) -> None:
    """Print the `sha256:<hex>` to put in `access.tokens` for a token read from stdin; with
    --new, make a random token and print both (keep the token, configure the hash)."""
    import getpass
    import secrets

    from onduty.api.auth import hash_token

    if new:
        token = secrets.token_urlsafe(32)
        out.print(f"token: {token}", soft_wrap=True)
        out.print(f"hash:  {hash_token(token)}", soft_wrap=True)
        return
    token = getpass.getpass("token: ") if sys.stdin.isatty() else sys.stdin.read()
    token = token.strip()
    if not token:
        raise UsageProblem("no token on stdin (or use --new to make one)")
    out.print(hash_token(token), soft_wrap=True)
