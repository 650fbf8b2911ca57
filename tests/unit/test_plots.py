"""The pictures: timeline bars built from milestones, the ECDF, the self-contained HTML page (one
mark per trial, nothing fetched), and the matplotlib PNG/SVG (which the operator never imports)."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from tests.unit import etcd_trials

from aftershock import analysis, model, page, plots, report
from aftershock.ledger import CampaignRow
from aftershock.model import AttemptRecord, CampaignRef, Milestone, Outcome, Phase, Verdict, Victim

T0 = 1_714_564_800.0
CAMPAIGN = CampaignRow(
    ref=CampaignRef(namespace="chaos", name="tikv-kill", uid="uid-1"),
    spec={"trials": 4},
    requested_trials=4,
    seed="7",
    phase=Phase.FAILED,
    verdict=Verdict.PARTIAL,
    created_at=T0,
    started_at=T0 + 1,
    finished_at=T0 + 900,
)


def attempt(
    index: int,
    outcome: Outcome | None,
    offsets: dict[str, float],
    *,
    attempt_no: int = 1,
    finished_after_kill: float | None = None,
    error: str | None = None,
) -> AttemptRecord:
    kill_wall = T0 + 100 * index + 5
    return AttemptRecord(
        campaign_uid=CAMPAIGN.uid,
        trial_index=index,
        attempt=attempt_no,
        victims=(Victim(f"tikv-{index}", f"pod-{index}"),),
        victim_seed="s",
        started_at=kill_wall - 5,
        outcome=outcome,
        milestones={name: Milestone(kill_wall + off, off) for name, off in offsets.items()},
        error=error,
        finished_at=None
        if outcome is None
        else kill_wall + (finished_after_kill or max(offsets.values(), default=0.0) + 1),
    )


FULL = {
    "kill_sent": 0.0,
    "victim_gone": 1.0,
    "replacement_created": 1.5,
    "replacement_scheduled": 2.0,
    "replacement_ready": 8.0,
    "store_up": 9.5,
    "recovered": 10.0,
}


def sample_report(bootstrap: analysis.Bootstrap | None = None) -> report.CampaignReport:
    attempts = [
        attempt(0, Outcome.RECOVERED, FULL),
        # no replacement_scheduled seen: its time goes to the next phase seen (Ready)
        attempt(1, Outcome.RECOVERED, {k: v * 2 for k, v in FULL.items() if k != "replacement_scheduled"}),
        attempt(2, Outcome.INFRA_ERROR, {}, error="apiserver: 503"),  # retried: no bar
        attempt(2, Outcome.RECOVERED, FULL | {"recovered": 12.5}, attempt_no=2),
        attempt(3, Outcome.UNRECOVERED, {"kill_sent": 0.0, "victim_gone": 1.0}, finished_after_kill=60.0),
    ]
    return report.build_report(CAMPAIGN, attempts, bootstrap=bootstrap)


class TestBars:
    def test_one_bar_per_measured_trial_with_consecutive_phases(self) -> None:
        bars = plots.timeline_bars(sample_report())
        assert [(b.index, b.attempt, b.outcome) for b in bars] == [
            (0, 1, Outcome.RECOVERED),
            (1, 1, Outcome.RECOVERED),
            (2, 2, Outcome.RECOVERED),
            (3, 1, Outcome.UNRECOVERED),
        ]
        for bar in bars:
            starts = [s.start for s in bar.segments]
            ends = [s.end for s in bar.segments]
            assert starts[0] == 0.0
            assert starts[1:] == ends[:-1]  # no gap, no overlap
            assert ends[-1] == bar.end
        assert [(s.phase, s.start, s.end) for s in bars[0].segments] == [
            (0, 0.0, 1.0),
            (1, 1.0, 1.5),
            (2, 1.5, 2.0),
            (3, 2.0, 8.0),
            (4, 8.0, 9.5),
            (5, 9.5, 10.0),
        ]

    def test_an_unseen_milestone_merges_into_the_next_phase(self) -> None:
        bar = plots.timeline_bars(sample_report())[1]
        assert [(s.phase, s.start, s.end) for s in bar.segments][2:4] == [(3, 3.0, 16.0), (4, 16.0, 19.0)]

    def test_unrecovered_ends_when_the_attempt_gave_up(self) -> None:
        bar = plots.timeline_bars(sample_report())[3]
        assert [(s.phase, s.start, s.end) for s in bar.segments] == [
            (0, 0.0, 1.0),
            (plots.NOT_RECOVERED, 1.0, 60.0),
        ]
        assert bar.end == 60.0
        assert bar.describe().startswith("trial 3 (attempt 1): not recovered after 60.000 s")

    def test_long_waits_of_unrecovered_trials_do_not_squash_the_recovered(self) -> None:
        bars = plots.timeline_bars(sample_report())
        # recovered bars end at 10, 20 and 12.5 s; the unrecovered one waited 60 s
        assert plots.timeline_limit(bars) == 25.0
        assert plots.timeline_limit(bars[3:]) == 60.0  # nothing recovered: the whole wait
        assert plots.timeline_limit(bars[:3]) == 20.0
        svg = plots.timeline_svg(sample_report())
        assert "not recovered after 60.0 s" in svg
        assert '<text class="cut" x="1070"' in svg  # at the right edge of the plot (1076), inside the bar

    def test_milestones_out_of_order_never_draw_backwards(self) -> None:
        odd = attempt(0, Outcome.RECOVERED, FULL | {"replacement_ready": 9.8, "store_up": 9.0})
        segments, end = plots.attempt_segments(odd)
        assert all(s.end >= s.start for s in segments)
        assert end == 10.0

    def test_ecdf_points(self) -> None:
        assert plots.ecdf_points([3.0, 1.0, 2.0, 2.0]) == [(1.0, 0.25), (2.0, 0.75), (3.0, 1.0)]

    @pytest.mark.parametrize("maximum", [0.0, 0.321, 1.0, 7.3, 12.5, 61.0, 599.0, 1e5])
    def test_ticks_are_round_and_cover_the_data(self, maximum: float) -> None:
        ticks = plots.nice_ticks(maximum)
        assert ticks[0] == 0.0
        assert ticks[-1] >= maximum
        assert 3 <= len(ticks) <= 12
        steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
        assert len(steps) == 1


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.open_trial: str | None = None
        self.rects_per_trial: dict[str, int] = {}
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if "data-trial" in a:
            self.open_trial = a["data-trial"]
            self.rects_per_trial[str(a["data-trial"])] = 0
        if tag == "rect" and self.open_trial is not None:
            self.rects_per_trial[self.open_trial] += 1
        self._in_title = tag == "title" and not self.title

    def handle_endtag(self, tag: str) -> None:
        if tag == "g":
            self.open_trial = None
        self._in_title = False

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


class TestHtml:
    def page(self) -> tuple[str, _Collect]:
        text = page.render_html(sample_report(analysis.Bootstrap(resamples=200)), source="/tmp/ledger.db")
        parsed = _Collect()
        parsed.feed(text)
        return text, parsed

    def test_one_mark_per_trial_each_a_group_of_phase_rects(self) -> None:
        _, parsed = self.page()
        marks = [(tag, a) for tag, a in parsed.tags if "data-trial" in a]
        assert [a["data-trial"] for _, a in marks] == ["0", "1", "2", "3"]
        assert {tag for tag, _ in marks} == {"g"}
        assert [a["data-outcome"] for _, a in marks] == ["recovered", "recovered", "recovered", "unrecovered"]
        assert parsed.rects_per_trial == {"0": 6, "1": 5, "2": 6, "3": 2}

    def test_self_contained(self) -> None:
        text, parsed = self.page()
        lowered = text.lower()
        for fetches in ("http:", "https:", "<script", "<link", "@import", "url(", "<img", "<iframe", "src="):
            assert fetches not in lowered, fetches
        assert {tag for tag, _ in parsed.tags} >= {"html", "head", "style", "svg", "table"}

    def test_title_summary_and_failures(self) -> None:
        text, parsed = self.page()
        assert parsed.title == "aftershock report: chaos/tikv-kill"
        assert "Partial" in text
        assert "95% CI" in text
        assert "apiserver: 503" in text  # the failure reasons table
        assert "not recovered" in text  # the legend entry for the unrecovered tail

    def test_text_is_escaped(self) -> None:
        hostile = dataclasses.replace(
            CAMPAIGN, ref=dataclasses.replace(CAMPAIGN.ref, name="<script>alert(1)</script>")
        )
        text = page.render_html(report.build_report(hostile, [attempt(0, Outcome.RECOVERED, FULL)]))
        assert "<script>" not in text
        assert "&lt;script&gt;" in text

    def test_nothing_to_draw(self) -> None:
        text = page.render_html(report.build_report(CAMPAIGN, []))
        assert "data-trial" not in text
        assert "No measured trial yet" in text


class TestFigures:
    def test_png(self, tmp_path: Path) -> None:
        path = tmp_path / "r.png"
        plots.write_figure(sample_report(analysis.Bootstrap(resamples=100)), path, "png")
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width == 1320  # 11 in at 120 dpi
        assert height > 500

    def test_svg_is_xml_and_reproducible(self, tmp_path: Path) -> None:
        first, second = tmp_path / "a.svg", tmp_path / "b.svg"
        data = sample_report()
        plots.write_figure(data, first, "svg")
        plots.write_figure(data, second, "svg")
        root = ET.parse(first).getroot()
        assert root.tag.endswith("svg")
        assert first.read_bytes() == second.read_bytes()

    def test_many_trials_draw_quickly_enough(self, tmp_path: Path) -> None:
        many = [
            attempt(i, Outcome.RECOVERED, {k: v * (1 + i % 7 / 10) for k, v in FULL.items()})
            for i in range(3000)
        ]
        plots.write_figure(report.build_report(CAMPAIGN, many), tmp_path / "many.png", "png")
        assert (tmp_path / "many.png").stat().st_size > 10_000

    def test_without_matplotlib(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        with pytest.raises(analysis.AnalysisUnavailableError, match=r"aftershock\[analysis\]"):
            plots.write_figure(sample_report(), tmp_path / "r.png", "png")


def test_the_operator_never_imports_the_analysis_packages() -> None:
    """Importing the CLI, handlers and every results module loads no numpy, scipy or matplotlib."""
    code = (
        "import sys, aftershock.cli, aftershock.handlers, aftershock.metrics, aftershock.report, "
        "aftershock.analysis, aftershock.plots, aftershock.export; "
        "print(sorted(m for m in ('numpy', 'scipy', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


class TestAnEtcdCampaign:
    """Its own chain (an election, a member catching up): eight phases, each its own colour."""

    def report(self) -> report.CampaignReport:
        row = dataclasses.replace(CAMPAIGN, ref=CampaignRef(CAMPAIGN.namespace, "etcd-leader", "uid-e"))
        return report.build_report(row, etcd_trials.attempts("uid-e"))

    def test_bars_are_cut_into_the_subjects_phases(self) -> None:
        bars = plots.timeline_bars(self.report())
        leader = bars[0]
        names = [f"{a}->{b}" for a, b in itertools.pairwise(etcd_trials.CHAIN)]
        assert [s.name for s in leader.segments] == names
        assert "leader_lost->leader_elected 0.260 s" in leader.describe()
        follower = bars[1]  # no election: its time goes to the next phase it saw
        assert "leader_lost->leader_elected" not in [s.name for s in follower.segments]
        assert follower.end == bars[0].end == 1.6

    def test_the_page_shows_its_phases_in_distinct_colours(self) -> None:
        text = page.render_html(self.report())
        parsed = _Collect()
        parsed.feed(text)
        leader_fills = [
            a["fill"] for tag, a in parsed.tags if tag == "rect" and a.get("fill") and "class" not in a
        ][: len(etcd_trials.CHAIN) - 1]
        assert len(set(leader_fills)) == len(etcd_trials.CHAIN) - 1
        for a, b in itertools.pairwise(etcd_trials.CHAIN):
            assert f"{a} \u2192 {b}" in text  # the legend
            assert f">{a}-&gt;{b}</th>" in text  # the attempts table
        assert "store Up" not in text
        assert "Ready \u2192 store Up" not in text

    def test_the_figure_draws(self, tmp_path: Path) -> None:
        plots.write_figure(self.report(), tmp_path / "etcd.svg", "svg")
        svg = (tmp_path / "etcd.svg").read_text()
        assert "leader_lost \u2192 leader_elected" in svg  # the legend names its phases

    def test_a_long_chain_reuses_colours_only_past_the_palette(self) -> None:
        colours = [plots.phase_colour(i) for i in range(len(plots.PHASE_COLOURS) + 1)]
        assert len(set(colours[:-1])) == len(plots.PHASE_COLOURS)
        assert plots.UNRECOVERED_COLOUR not in colours
        assert colours[-1] == colours[0]

    def test_the_text_reports_use_its_phases_too(self) -> None:
        data = self.report()
        table_head = report.render_table(data).splitlines()[0]
        (markdown_head,) = [
            line for line in report.render_markdown(data).splitlines() if line.startswith("| # |")
        ]
        for head in (table_head, markdown_head):  # the per-attempt tables' columns
            assert "leader_lost->leader_elected" in head
            assert "ready->storeUp" not in head


class TestEvents:
    """The events chart of the HTML page: a row per trial on one axis from the fault, a mark
    per event where it happened, actions after the recovery told apart, a legend and titles."""

    @staticmethod
    def built() -> report.CampaignReport:
        from tests.unit.test_clocks import _campaign, _eventful, _m, trial

        second = trial(
            1,
            recovered=7.5,
            alert=2.5,
            actions=(("Taint", 3.0), ("Untaint", 10.0)),
            extra={"victim_gone": _m(1.25), model.ALERT_RESOLVED: _m(12.0)},
            final={"quietWait": {"quietSeconds": 2.0, "endedOffset": 12.5, "capped": False}},
        )
        retried = dataclasses.replace(trial(2, alert=0.1), attempt=1, outcome=Outcome.INTERRUPTED)
        unrecovered = dataclasses.replace(
            trial(2, recovered=None, actions=(("Taint", 5.0),)), attempt=2, finished_at=T0 + 99
        )
        return report.build_report(_campaign("help"), [_eventful(), second, retried, unrecovered])

    @staticmethod
    def drawn(svg: str) -> tuple[ET.Element, dict[str, list[tuple[str, float, ET.Element]]]]:
        """The chart as XML (it must be well-formed), and per row (``data-trial``) each mark's
        kind and the seconds its centre stands for, read back through the axis' own ticks."""
        root = ET.fromstring(svg)
        ns = ""  # inline SVG in HTML: no namespace declared
        ticks = {
            float(t.text or ""): float(t.attrib["x"])
            for t in root.iter(f"{ns}text")
            if t.get("class") == "tick"
        }
        (zero, one), *_ = [(ticks[0.0], ticks[v] / v - ticks[0.0] / v) for v in sorted(ticks) if v > 0]

        def centre(e: ET.Element) -> float:
            if e.tag == f"{ns}circle":
                return float(e.attrib["cx"])
            if e.tag == f"{ns}rect":
                return float(e.attrib["x"]) + float(e.attrib["width"]) / 2
            xs = [float(p.split(",")[0]) for p in e.attrib["points"].split()]
            return (min(xs) + max(xs)) / 2

        rows: dict[str, list[tuple[str, float, ET.Element]]] = {}
        for g in root.iter(f"{ns}g"):
            if g.get("class") != "trial-events":
                continue
            rows[g.attrib["data-trial"]] = [
                (e.attrib["data-kind"], (centre(e) - zero) / one, e)
                for e in g
                if (e.get("class") or "").startswith("ev ")
            ]
        return root, rows

    def test_every_event_is_marked_at_its_time_in_its_trials_row(self) -> None:
        _, rows = self.drawn(plots.events_svg(self.built()))
        # One row per completed trial, by index: the interrupted attempt is not one.
        assert list(rows) == ["0", "1", "2"]
        got = {i: sorted((k, round(x, 2)) for k, x, _ in marks) for i, marks in rows.items()}
        # _eventful: fault at 0 (and its answer), first unhealthy 0.2, leader lost/elected 0.3,
        # the remediator's word 0.5, actions 0.5 and 0.75, alert 1.0, recovered 4.0, healed 4.5,
        # a verifying action 6.0 (after the recovery), alert resolved 8.0, the end 9.0. The gate
        # (-1.0, before the fault) is in the table only.
        assert got["0"] == sorted(
            [
                ("fault", 0.0), ("milestone", 0.0), ("milestone", 0.2), ("milestone", 0.3),
                ("milestone", 0.3), ("remediator_detected", 0.5), ("first_action", 0.5),
                ("action", 0.75), ("alert_firing", 1.0), ("recovered", 4.0), ("fault_healed", 4.5),
                ("action_after_recovery", 6.0), ("alert_resolved", 8.0), ("trial_ended", 9.0),
            ]
        )  # fmt: skip
        assert got["1"] == sorted(
            [
                ("fault", 0.0), ("milestone", 0.0), ("milestone", 1.25), ("alert_firing", 2.5),
                ("first_action", 3.0), ("recovered", 7.5), ("action_after_recovery", 10.0),
                ("alert_resolved", 12.0), ("trial_ended", 12.5),
            ]
        )  # fmt: skip
        # Unrecovered: no recovery mark, and its action is not "after" anything.
        assert got["2"] == sorted([("fault", 0.0), ("milestone", 0.0), ("first_action", 5.0)])

    def test_actions_after_the_recovery_are_hollow_on_a_band_from_the_recovery(self) -> None:
        root, rows = self.drawn(plots.events_svg(self.built()))
        ns = ""  # inline SVG in HTML: no namespace declared
        for _, marks in rows.items():
            for kind, _, e in marks:
                hollow = e.attrib.get("fill") == "#fff"
                assert hollow == (kind in ("action_after_recovery", "fault_healed", "alert_resolved")), kind
        bands = {
            g.attrib["data-trial"]: next(r for r in g if r.get("class") == "after-recovery")
            for g in root.iter(f"{ns}g")
            if g.get("class") == "trial-events" and any(r.get("class") == "after-recovery" for r in g)
        }
        assert sorted(bands) == ["0", "1"]  # the unrecovered trial has none
        for trial_id, band in bands.items():
            recovered = next(e for k, _, e in rows[trial_id] if k == "recovered")
            start = float(band.attrib["x"])
            assert start == pytest.approx(
                float(recovered.attrib["x"]) + float(recovered.attrib["width"]) / 2, abs=0.01
            )
            later = [e for k, _, e in rows[trial_id] if k == "action_after_recovery"]
            assert later
            assert all(float(e.attrib["cx"]) > start for e in later)

    def test_each_mark_has_a_title_and_the_legend_names_the_kinds_drawn(self) -> None:
        root, rows = self.drawn(plots.events_svg(self.built()))
        ns = ""  # inline SVG in HTML: no namespace declared
        for trial_id, marks in rows.items():
            for kind, _, e in marks:
                title = e.find(f"{ns}title")
                assert title is not None, kind
                assert (title.text or "").startswith(f"trial {trial_id}: "), title.text
        titles = [e.find(f"{ns}title").text for _, _, e in rows["0"]]  # type: ignore[union-attr]
        assert "trial 0: action +6.000 s: Verified Pod/tikv-1 Verified msg" in titles
        assert root.attrib["role"] == "img"
        keys = [e.attrib["data-kind"] for e in root.iter() if (e.get("class") or "").startswith("key ")]
        drawn = {k for marks in rows.values() for k, _, _ in marks}
        assert set(keys) == drawn
        assert keys == [k.key for k in plots.MARK_KINDS if k.key in drawn]  # the legend's order
        labels = [t.text for t in root.iter(f"{ns}text") if t.get("class") == "legend-label"]
        assert labels == [k.label for k in plots.MARK_KINDS if k.key in drawn]

    def test_the_page_draws_it_for_a_remediator_and_keeps_the_table(self) -> None:
        text = page.render_html(self.built())
        assert text.count('<svg class="chart events"') == 1
        assert "Trial timelines" in text  # the table stays
        plain = page.render_html(sample_report())
        assert "chart events" not in plain
        assert 'class="trial-events"' not in plain
