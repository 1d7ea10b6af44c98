"""examples/monitoring: the alerting rules pass `promtool check rules`, and every metric the
rules and the Grafana dashboard use is one that `onduty serve` exposes on /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from onduty.configfile import load_config
from onduty.service import Service

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MONITORING = EXAMPLES / "monitoring"
METRIC = re.compile(r"\bonduty_[a-z0-9_]+")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def exposed(tmp_path: Path) -> set[str]:
    """The series names a freshly prepared server exposes (labelled ones with no sample yet
    included, under each name their type gives them)."""
    service = Service(load_config(EXAMPLES / "serve" / "onduty.yaml"), str(tmp_path / "m.db"))
    service.prepare()
    try:
        text = generate_latest(service.metrics.registry).decode()
    finally:
        assert service.log is not None
        service.log.close()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def rule_expressions() -> Iterator[str]:
    document = yaml.safe_load((MONITORING / "rules.yml").read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]


def dashboard_expressions() -> Iterator[str]:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            yield target["expr"]


def test_every_metric_the_rules_and_dashboard_use_is_exposed(tmp_path: Path) -> None:
    names = exposed(tmp_path)
    assert "onduty_signal_to_verdict_seconds_bucket" in names
    for where, expressions in (
        ("rules.yml", list(rule_expressions())),
        ("dashboard.json", list(dashboard_expressions())),
    ):
        assert expressions, where
        used = {name for expr in expressions for name in METRIC.findall(expr)}
        assert used, where
        assert used <= names, f"{where} uses metrics /metrics does not have: {used - names}"


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():  # Debian's Prometheus package brings promtool
        ensure = Path(__file__).parent.parent / "scripts" / "ensure_prometheus.sh"
        subprocess.run(["bash", str(ensure)], check=True, timeout=900)
    assert Path(promtool).exists(), "promtool is needed to check the example alerting rules"
    result = subprocess.run(
        [promtool, "check", "rules", str(MONITORING / "rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
