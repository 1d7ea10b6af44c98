"""The advisor benchmark (`onduty sim --advise`): seeds of a scenario with the advisor consulted
on every incident in shadow, against a chat server on loopback that answers as each test says,
and every agent's first choice judged against the fault behind the incident."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from onduty.cli.base import existing_log
from onduty.events import AdviceRequested
from onduty.sim import advice, lab
from onduty.sim.driver import run_scenario_command
from onduty.sim.faults import FaultRecord
from onduty.sim.scorecard import Scorecard
from tests.chat_server import ChatServer, Reply, reply
from tests.run_cli import onduty

ROOT = Path(__file__).resolve().parents[2]
AMBIGUOUS = str(ROOT / "examples" / "scenarios" / "ambiguous_memory.yaml")
MEMORY_LEAK = str(ROOT / "examples" / "scenarios" / "memory_leak.yaml")
EXAMPLE = ROOT / "examples" / "advisor" / "advisor.yaml"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def choices(body: dict[str, Any]) -> list[dict[str, str]]:
    """The choices the prompt offers, as the model reads them."""
    user = body["messages"][1]["content"]
    listed = user.split("CHOICES:\n", 1)[1].rsplit("\n\nWhich choice", 1)[0]
    found: list[dict[str, str]] = json.loads(listed)
    return found


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[dict[str, Any]], Reply]], ChatServer]]:
    started: list[ChatServer] = []

    def start(answer: Callable[[dict[str, Any]], Reply]) -> ChatServer:
        started.append(ChatServer(answer))
        return started[-1]

    yield start
    for server in started:
        server.close()


def abstain(body: dict[str, Any]) -> Reply:
    return reply("none", choices(body)[0]["target"], "a human should look")


def behind(card: Scorecard) -> dict[str, list[FaultRecord]]:
    found: dict[str, list[FaultRecord]] = {}
    for fault in card.faults:
        for incident_id in fault.incidents:
            found.setdefault(incident_id, []).append(fault.record)
    return found


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def test_an_advisor_that_knows_each_fault_is_right_on_every_incident_the_runbooks_are_not(
    serve: Callable[[Callable[[dict[str, Any]], Reply]], ChatServer], tmp_path: Path
) -> None:
    # First the seeds with an advisor that proposes nothing: in shadow it changes nothing, so
    # the same seeds consult it in the same order on the same incidents again; from the
    # faults behind each incident, the fix to answer each consultation with.
    first = serve(abstain)
    scenario, config, learning = advice.setup(
        AMBIGUOUS, str(EXAMPLE), advice.EndpointOverride(first.url, "oracle")
    )
    assert (config.advisor.agent, config.advisor.consult, config.learning.agent) == (
        "shadow",
        "always",
        "shadow",
    )
    assert config.advisor.endpoint.response_format == "json_object"  # as the example says
    script: list[Reply] = []
    runbook_verdicts: list[str | None] = []
    compared: list[str | None] = []
    for seed in (1, 2):
        judged, result, events = advice.run_advised(scenario, config, seed, learning=learning)
        card = result.scorecard
        faults_of = behind(card)
        for event in events:
            if event.type != "AdviceRequested":
                continue
            request = AdviceRequested.model_validate(event.data)
            fixes = {fault.right_fix for fault in faults_of.get(request.incident_id, [])}
            fit = [c for c in request.choices if f"{c.action} {c.target}" in fixes]
            script.append(
                reply(fit[0].name, fit[0].target, "the fault's fix")
                if fit
                else reply("none", request.choices[0].target, "nothing here fixes it")
            )
        runbook_verdicts += [incident.runbook.verdict for incident in judged.incidents]
        # The runbook agent's first proposals that ran have the verdicts the world gave them;
        # where one was the first action taken on a fault, the scorecard's first action.
        first_proposal = {i.runbook_command: i for i in judged.incidents if i.runbook_command}
        ran = [a for a in card.actions if a.command_id in first_proposal]
        assert ran
        assert [first_proposal[a.command_id].runbook.verdict for a in ran] == [
            a.verdict for a in ran
        ]
        ordered = sorted(card.faults, key=lambda f: (f.record.injected_at, f.record.id))
        for fault, outcome in zip(ordered, card.fault_outcomes(), strict=True):
            taken = sorted(
                (a for a in card.actions if a.fault_id == fault.record.id), key=lambda a: a.at
            )
            incident = first_proposal.get(taken[0].command_id) if taken else None
            if incident is not None:
                assert incident.runbook.verdict == outcome.first_action, (seed, fault.record)
                compared.append(incident.runbook.verdict)
    assert {"right", "wrong"} <= set(compared)  # the restart first: right only for a plain leak
    assert len(first.bodies) == len(script)

    oracle_answers = iter(script)
    oracle = serve(lambda body: next(oracle_answers))
    out = tmp_path / "advice.json"
    console = quiet()
    code = advice.advise_command(
        AMBIGUOUS,
        EXAMPLE,
        runs=2,
        seed=1,
        jobs=None,
        endpoint=advice.EndpointOverride(oracle.url, "oracle"),
        json_out=out,
        report=None,
        console=console,
    )
    assert code == 0
    assert len(oracle.bodies) == len(script)  # every consultation again, none more
    assert {body["model"] for body in oracle.bodies} == {"oracle"}
    assert {body["response_format"]["type"] for body in oracle.bodies} == {"json_object"}
    figures = json.loads(out.read_text())
    advisor, runbook = figures["agents"]["advisor"], figures["agents"]["runbook"]
    assert advisor["incidents"] == len(runbook_verdicts) > 0
    assert advisor["right_rate"] == 1.0 and advisor["no_answer"] == 0
    # the runbook agent still decided: its verdicts are those of the first pass
    assert [runbook[v] for v in advice.VERDICTS] == [
        runbook_verdicts.count(v) for v in advice.VERDICTS
    ]
    assert runbook["right_rate"] < 1.0
    once = figures["agents_first_incident"]
    assert once["advisor"]["right_rate"] == 1.0
    # a release leak the runbook order restarted alerts again: more incidents than faults
    assert 0 < once["runbook"]["incidents"] < runbook["incidents"]
    assert once["runbook"]["right_rate"] > runbook["right_rate"]
    assert set(figures["agents"]) == {"runbook", "learning", "advisor"}
    assert set(figures["by_fault_kind"]) >= {"memory_leak", "deploy_leak"}
    asked = figures["advisor"]
    assert asked["consultations"] == asked["answered"] == len(script)
    assert asked["discarded"] == 0 and asked["failed"] == {}
    assert asked["models"] == ["served-oracle"]
    assert asked["latency_ms"]["answers"] == len(script)
    assert 0 < asked["latency_ms"]["median"] <= asked["latency_ms"]["p90"]
    assert figures["disagreements"]["advisor_right"] == figures["disagreements"]["incidents"] > 0
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "advisor" in shown and "100%" in shown


def test_the_command_scores_an_advisor_that_picks_another_runbook(
    serve: Callable[[Callable[[dict[str, Any]], Reply]], ChatServer], tmp_path: Path
) -> None:
    def contrary(body: dict[str, Any]) -> Reply:
        # a leaking instance, rolled back as if its release were bad: on the fault's service,
        # not its fix
        (rollback,) = [c for c in choices(body) if c["action"] == "deploy.rollback"]
        return reply(rollback["name"], rollback["target"], "a release broke it")

    server = serve(contrary)
    out, page = tmp_path / "advice.json", tmp_path / "advice.html"
    result = onduty(
        "sim", MEMORY_LEAK, "--advise", "--runs", "2", "--seed", "3", "--base-url", server.url,
        "--model", "contrarian", "--json", str(out), "--report", str(page),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    assert figures["seeds"] == [3, 4]
    runbook, advisor = figures["agents"]["runbook"], figures["agents"]["advisor"]
    assert runbook["right"] == runbook["incidents"] > 0
    assert advisor["wrong"] == advisor["incidents"] == runbook["incidents"]
    assert advisor["right_rate"] == 0.0
    assert "learning" not in figures["agents"]  # the scenario's config does not run it
    (row, *_) = figures["incidents"]
    assert row["advisor"]["choice"]["action"] == "deploy.rollback"
    assert row["advisor"]["detail"] == "a release broke it"
    assert row["faults"][0]["right_fix"] == "process.restart api-2"
    assert {body["model"] for body in server.bodies} == {"contrarian"}
    assert "runbook agent" in result.stdout and "advisor" in result.stdout
    assert "served-contrarian" in result.stdout
    assert "would propose deploy.rollback on api" in page.read_text()


def test_discarded_answers_and_failed_consultations_are_no_answer(
    serve: Callable[[Callable[[dict[str, Any]], Reply]], ChatServer], tmp_path: Path
) -> None:
    replies = iter(
        [
            reply("restart-crashed-instance", "db-1", "another host"),  # not the choice's target
            (500, "model not loaded"),
        ]
    )
    server = serve(lambda body: next(replies))
    out = tmp_path / "advice.json"
    code = advice.advise_command(
        MEMORY_LEAK,
        None,
        runs=2,
        seed=1,
        jobs=None,
        endpoint=advice.EndpointOverride(server.url, "m"),
        json_out=out,
        report=None,
        console=quiet(),
    )
    assert code == 0  # the advisor answered, if badly
    figures = json.loads(out.read_text())
    asked = figures["advisor"]
    assert (asked["consultations"], asked["answered"], asked["discarded"]) == (2, 0, 1)
    assert asked["failed"] == {"refused": 1}
    assert asked["latency_ms"]["answers"] == 1  # the discarded answer took time too
    assert "is not the target of restart-crashed-instance" in asked["first_problem"]
    advisor = figures["agents"]["advisor"]
    assert (advisor["no_answer"], advisor["right_rate"], advisor["right_of_answered"]) == (
        2,
        0.0,
        None,
    )
    statuses = [row["advisor"]["status"] for row in figures["incidents"]]
    assert statuses == ["discarded", "failed"]


def test_an_advisor_that_never_answers_fails_the_command(tmp_path: Path) -> None:
    closed = ChatServer(abstain)
    closed.close()
    result = onduty("sim", MEMORY_LEAK, "--advise", "--base-url", closed.url)
    assert result.returncode == 1
    assert "unreachable" in result.stdout and "no answer" in result.stdout
    refused = onduty("sim", MEMORY_LEAK, "--json", str(tmp_path / "x.json"))
    assert refused.returncode == 2
    assert "--base-url, --model, --response-format and --json are for --advise" in refused.stderr
    assert not (tmp_path / "x.json").exists()


def test_verdicts_against_the_truth() -> None:
    at = lab.load_setup(MEMORY_LEAK, None)[1]
    service_of = {name: s.name for s in at.services for name in s.instances}

    def fault(kind: str, target: str, service: str, fix: str | None, scope: str) -> FaultRecord:
        return FaultRecord(
            id=kind, kind=kind, target=target, service=service, injected_at=T0,
            cleared_at=None, cleared_by=None, alertnames=(), right_fix=fix, scope=scope,
        )  # fmt: skip

    leak = [fault("memory_leak", "api-2", "api", "process.restart api-2", "instance")]
    slow = [fault("dependency_latency", "api", "api", None, "service")]

    def on(faults: list[FaultRecord], action: str | None, target: str = "") -> str:
        choice = advice.Choice(action, target, "r") if action else None
        return advice.verdict_on(choice, faults, service_of)

    assert on(leak, "process.restart", "api-2") == "right"
    assert on(leak, "deploy.rollback", "api") == "wrong"  # its service, not its fix
    assert on(leak, "process.restart", "api-1") == "harmful"  # an instance it does not touch
    assert on(leak, None) == "none"
    assert on(slow, None) == "right"  # no action fixes it: escalation is right
    assert on(slow, "process.restart", "api-1") == "wrong"
    assert on(slow, "process.restart", "web-1") == "harmful"
    both = [*leak, fault("deploy_leak", "api", "api", "deploy.rollback api", "service")]
    assert on(both, "deploy.rollback", "api") == "right"  # the fix of either fault


def test_a_simulated_run_asks_the_configured_advisor_and_people_alone_never_do(
    serve: Callable[[Callable[[dict[str, Any]], Reply]], ChatServer], tmp_path: Path
) -> None:
    server = serve(abstain)
    policy = yaml.safe_load((ROOT / "examples" / "scenarios" / "onduty.yaml").read_text())
    policy["advisor"] = {
        "agent": "shadow",
        "consult": "always",
        "endpoint": {"base_url": server.url},
    }
    config = tmp_path / "onduty.yaml"
    config.write_text(yaml.safe_dump(policy))
    store = tmp_path / "sim.db"
    code = run_scenario_command(
        MEMORY_LEAK, config, str(store), seed=None, fresh=True, live=False, console=quiet()
    )
    assert code == 0
    with existing_log(str(store)) as log:
        answers = [event for event in log.read() if event.type == "AdviceReceived"]
    # the run under the policy asked; the same seed with people alone (and with no fault) did not
    assert len(answers) == len(server.bodies) == 1
    assert "a human should look" in answers[0].data["content"]
