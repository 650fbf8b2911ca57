"""The HTML report in a real browser (headless Chromium): it renders one mark per trial, logs
nothing to the console, fetches nothing, and draws the bars (their colours are on screen); for
a Campaign with a remediator and alerts, the events chart too: a row per trial, a titled mark
per event, actions after the recovery as their own kind, its colours on screen.

The detectors (console messages on stderr, page requests in the net log) are first shown to
catch a deliberately broken page, so their silence on the report is evidence.

Chromium is the Debian package `chromium` (`apt-get install -y chromium`). Without it the tests
are skipped, except under CI (``CI`` set), where a missing browser fails them.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from tests.browser import chromium
from tests.unit.test_export import HELPED, write_helped_campaign
from tests.unit.test_report_ledgers import plan_campaign, write_campaign

from aftershock import cli
from aftershock.model import CampaignRef

REF = CampaignRef(namespace="chaos", name="tikv-kill", uid="uid-browser")
TRIALS = 12  # plan_campaign(12): index 1 unrecovered, index 3 retried after an infra error


@pytest.fixture(scope="module")
def browser() -> str:
    found = chromium.find()
    if found is None:
        pytest.fail("headless Chromium is needed: apt-get install -y chromium (`make test` does it as root)")
    return found


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of a real ledger file, written through the Ledger API, as `aftershock report --html`
    writes it."""
    tmp = tmp_path_factory.mktemp("html")
    db = tmp / "ledger.db"
    asyncio.run(write_campaign(db, plan_campaign(TRIALS), REF))
    html = tmp / "report.html"
    code = cli.main(
        ["report", REF.name, "-n", REF.namespace, "--db", str(db), "--html", str(html), "--format", "json"]
    )
    assert code == 0
    return html


def test_detectors_catch_console_errors_and_fetches(browser: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><title>bad</title>"
        '<style>@import url("https://example.invalid/x.css");</style></head><body>'
        '<img src="https://example.invalid/x.png" alt="">'
        '<script>console.error("boom"); undefinedFunction();</script></body></html>'
    )
    seen = chromium.visit(browser, bad)
    assert any("boom" in m for m in seen.console), seen.stderr[-3000:]
    assert any("Uncaught ReferenceError" in m for m in seen.console)
    assert set(seen.fetched) == {"https://example.invalid/x.css", "https://example.invalid/x.png"}


def test_renders_title_and_one_mark_per_trial(browser: str, page: Path) -> None:
    seen = chromium.visit(browser, page)
    assert re.search(r"<title>aftershock report: chaos/tikv-kill</title>", seen.dom)
    marks = re.findall(r'<g class="trial" data-trial="(\d+)"', seen.dom)
    assert [int(m) for m in marks] == list(range(TRIALS))
    assert seen.dom.count("<svg") == 2  # the timeline and the distribution


def test_no_console_message_and_nothing_fetched(browser: str, page: Path) -> None:
    seen = chromium.visit(browser, page)
    assert seen.console == []
    assert seen.fetched == []


def test_screenshot_shows_the_bars(browser: str, page: Path, tmp_path: Path) -> None:
    from matplotlib import image

    shot = tmp_path / "shot.png"
    seen = chromium.visit(browser, page, screenshot=shot, window=(1200, 900))
    assert seen.console == []
    pixels = image.imread(shot)
    assert pixels.shape[:2] == (900, 1200)
    rgb = (pixels[..., :3] * 255).round().astype(int).reshape(-1, 3)
    colours = {tuple(c) for c in rgb}
    # a few phase colours and the "not recovered" colour are on screen: the SVG was drawn
    for hex_colour in ("#E69F00", "#0072B2", "#D55E00"):
        wanted = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        assert wanted in colours, hex_colour


@pytest.fixture(scope="module")
def helped_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page of a Campaign with alerts and a remediator (a real ledger file: five trials, four
    recovered at 10..13 s with an action at 20 s, after the recovery; one unrecovered), as
    `aftershock report --html` writes it."""
    tmp = tmp_path_factory.mktemp("helped")
    db = tmp / "ledger.db"
    asyncio.run(write_helped_campaign(db))
    html = tmp / "report.html"
    code = cli.main(["report", HELPED.name, "-n", HELPED.namespace, "--db", str(db), "--html", str(html)])
    assert code == 0
    return html


def test_the_events_chart_has_a_row_per_trial_and_a_titled_mark_per_event(
    browser: str, helped_page: Path
) -> None:
    seen = chromium.visit(browser, helped_page)
    assert seen.console == []
    assert seen.fetched == []
    assert seen.dom.count('<svg class="chart events"') == 1
    rows = re.findall(r'<g class="trial-events" data-trial="(\d+)"', seen.dom)
    assert [int(r) for r in rows] == [0, 1, 2, 3, 4]
    # Each mark as the browser parsed it: its kind, and a title as its first child.
    marks = re.findall(
        r'<(?:circle|rect|polygon) class="ev ev-([a-z_]+)"[^>]*><title>(trial \d+: [^<]*)</title>', seen.dom
    )
    kinds = [k for k, _ in marks]
    assert kinds.count("fault") == 5
    assert kinds.count("recovered") == 4
    assert kinds.count("alert_firing") == 4
    assert kinds.count("first_action") == 4
    # The action at 20 s came after each recovery (10..13 s): its own kind, said in its title.
    after = [t for k, t in marks if k == "action_after_recovery"]
    assert len(after) == 4, marks
    assert all(t.startswith("trial ") and "action +20.000 s" in t for t in after), after
    assert len(re.findall(r'class="ev ', seen.dom)) == len(marks)  # every mark has its title


def test_screenshot_shows_the_event_marks(browser: str, helped_page: Path, tmp_path: Path) -> None:
    from matplotlib import image

    shot = tmp_path / "shot.png"
    seen = chromium.visit(browser, helped_page, screenshot=shot, window=(1200, 1400))
    assert seen.console == []
    rgb = (image.imread(shot)[..., :3] * 255).round().astype(int).reshape(-1, 3)
    colours = {tuple(c) for c in rgb}
    # The fault, the actions and the recovery in their colours (Tol's bright set, used by the
    # events chart only): the marks were drawn.
    for hex_colour in ("#EE6677", "#4477AA", "#228833"):
        wanted = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        assert wanted in colours, hex_colour
