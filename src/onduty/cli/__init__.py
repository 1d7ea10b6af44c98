"""The `onduty` command.

One module per command group; this one assembles them into `app`, in the order `--help` lists
them, and runs it (`main`, the `onduty` entry point and `python -m onduty`):

* `store`: what reads an event log on disk (`audit verify`, `replay`, `incidents`,
  `similar`, `events tail`);
* `sim`: what runs offline (`demo`, `sim`, `bench`);
* `serve`: `onduty serve`;
* `talk`: what talks to a running server (`approve`, `deny`, `approvals`, `ack`, `autonomy`,
  `silence`, `kill-switch`), through `client`;
* `config`: `config check` and `token hash`;
* `learn`: `learn train`, the learning agent's model from a log; `learn validate`, the sim
  lab's scenarios with and without a model;
* `policy`: checking and table-testing a policy, and managing the one a server enforces;
* `views`: the tables and lines the commands print; `base`: consoles, common options and the
  problems a user can fix.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from onduty.cli import audit, config, learn, policy, report, sealing, serve, sim, store, talk
from onduty.cli.base import UsageProblem, err, out, problem_line
from onduty.config import ConfigError
from onduty.log import StoreError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="onduty: an autonomous manager-on-duty. Every fact it acts on is a hash-chained event.",
    pretty_exceptions_enable=False,
)
app.add_typer(audit.audit_app, name="audit")
app.add_typer(store.events_app, name="events")
app.add_typer(sealing.log_app, name="log")
app.add_typer(config.config_app, name="config")
app.command()(store.replay)
app.command()(store.incidents)
app.command()(store.similar)
app.command()(report.report)
app.command()(report.trace)
app.command()(sim.demo)
app.command()(sim.sim)
app.command()(serve.serve)
app.add_typer(talk.silence_app, name="silence")
app.add_typer(talk.kill_switch_app, name="kill-switch")
app.command()(talk.approve)
app.command()(talk.deny)
app.command("approvals")(talk.approvals_list)
app.command()(talk.ack)
app.command()(talk.autonomy)
app.add_typer(config.token_app, name="token")
app.add_typer(policy.policy_app, name="policy")
app.command()(sim.bench)
app.add_typer(learn.learn_app, name="learn")


def _show_version(value: bool) -> None:
    if value:
        from onduty import __version__

        out.print(f"onduty {__version__}")
        raise typer.Exit()


@app.callback()
def _onduty(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print onduty's version and exit.",
            is_eager=True,
            callback=_show_version,
        ),
    ] = False,
) -> None:
    pass  # the commands do the work; this only takes the options before them  # fmt: skip


def command() -> Any:
    """The `onduty` command as it runs: every option's value named plainly in `--help` (a
    flag takes none, a repeatable option names one value, not `<bool>` or `<list[str]>`)."""
    root = typer.main.get_command(app)
    pending = [root]
    while pending:
        current = pending.pop()
        pending.extend(getattr(current, "commands", {}).values())
        context = typer.Context(current)
        help_option = current.get_help_option(context)
        params: list[Any] = [*current.params, *([help_option] if help_option else [])]
        for param in params:
            if param.metavar is not None:
                continue
            shown = str(param.display_type_rich(context) or "")
            if param.param_type_name != "option":
                if shown.startswith("<list[") and shown.endswith("]>"):  # NAME... says "several"
                    one = "<" + shown.removeprefix("<list[").removesuffix("]>") + ">"
                    param.display_type_rich = lambda ctx, one=one: one
                continue
            if getattr(param, "is_flag", False) or getattr(param, "count", False):
                param.metavar = ""
            elif shown.startswith("<list[") and shown.endswith("]>"):
                param.metavar = "<" + shown.removeprefix("<list[").removesuffix("]>") + ">"
    return root


def main() -> None:
    try:
        command()(prog_name="onduty")
    except ConfigError as error:  # `config check` lists every problem; elsewhere one line
        more = ""
        if len(error.problems) > 1:
            more = f" (and {len(error.problems) - 1} more: `onduty config check {error.source}`)"
        problem_line(f"{error.source}: {error.problems[0]}{more}")
        sys.exit(2)
    except (UsageProblem, StoreError) as error:
        problem_line(str(error))
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


__all__ = ["app", "command", "main"]
