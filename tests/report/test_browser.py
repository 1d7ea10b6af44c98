"""The HTML reports in a real headless Chromium (Debian's, driven by Playwright): a simulation
run's page with its Monte Carlo distributions, and a post-incident page full of hostile text,
open with no console error and no network request (the page loads nothing), and no script
runs.

Their screenshots are kept as test artifacts in artifacts/report/ at the repository's root
(ignored by git, like the console's in artifacts/console/): run.png (the top of the run's page),
run-distributions.png (its distributions) and incident.png (the hostile incident, whole)."""

from __future__ import annotations

import random
from pathlib import Path

from playwright.sync_api import Browser, Page, Request

from onduty.report import incident_timelines, write_html
from onduty.report.html import render_incidents
from tests.console.test_browser import ROOT, browser  # noqa: F401 (the fixture)
from tests.report.conftest import DemoRun
from tests.report.test_escaping import hostile

SHOTS = ROOT / "artifacts" / "report"


def lab() -> dict[str, object]:
    rng = random.Random(7)
    runs = 40
    return {
        "runs": runs,
        "seed": 7,
        "metrics": {
            "mttr_p90": {
                "policy": [rng.lognormvariate(5, 0.4) for _ in range(runs)],
                "baseline": [rng.lognormvariate(6, 0.5) for _ in range(runs)],
            },
            "wrong_actions": {
                "policy": [rng.choice((0, 0, 1)) for _ in range(runs)],
                "baseline": [0] * runs,
                "control": [0] * runs,
            },
        },
    }


def open_page(browser: Browser, path: Path) -> tuple[Page, list[str], list[str]]:  # noqa: F811
    """The page at `path`, with the problems it logs and the URLs it asks for besides itself."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    fetched: list[str] = []
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))

    def asked(request: Request) -> None:
        if request.url != path.as_uri():
            fetched.append(request.url)

    page.on("request", asked)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, problems, fetched


def test_a_run_report_opens_whole_and_fetches_nothing(
    browser: Browser,  # noqa: F811
    demo: DemoRun,
    tmp_path: Path,
) -> None:
    path = write_html(tmp_path / "run.html", demo.result, lab())
    page, problems, fetched = open_page(browser, path)
    try:
        assert page.title() == "Simulation report: demo"
        assert page.locator("[data-incident]").count() == demo.result.scorecard.incidents
        charts = page.locator("svg.chart-svg")
        assert charts.count() == 4
        box = charts.first.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 40
        assert page.locator("[data-kind=fault]").count() >= len(demo.result.world.faults)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "run.png"))
        page.locator("[data-section=distributions]").screenshot(
            path=str(SHOTS / "run-distributions.png")
        )
    finally:
        page.context.close()
    assert problems == [] and fetched == []


def test_a_hostile_incident_page_runs_no_script_and_fetches_nothing(
    browser: Browser,  # noqa: F811
    demo: DemoRun,
    tmp_path: Path,
) -> None:
    timelines = incident_timelines(hostile(demo.events))
    incident = next(t for t in timelines if t.approvals)
    path = tmp_path / "incident.html"
    path.write_text(render_incidents([incident]), encoding="utf-8")
    page, problems, fetched = open_page(browser, path)
    try:
        assert page.evaluate("typeof window.pwned") == "undefined"
        assert page.locator("img").count() == 0 and page.locator("script").count() == 0
        assert "<script>window.pwned=1</script>" in page.locator("h2").nth(1).inner_text()
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "incident.png"), full_page=True)
    finally:
        page.context.close()
    assert problems == [] and fetched == []
