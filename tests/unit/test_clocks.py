"""The three clocks (time to detect, to first action, to recover) per trial and as p50/p95 per
Campaign, in the status, the report, export, /metrics and compare; and each trial's timeline."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aftershock import clocks, comparison, export, page, report, timeline
from aftershock.engine.status import Conditions, build_status
from aftershock.engine.tally import Tally
from aftershock.ledger.store import CampaignRow
from aftershock.metrics import CLOCK, CLOCK_QUANTILE, Metrics
from aftershock.model import (
    ALERT_FIRING,
    ALERT_RESOLVED,
    REMEDIATOR_DETECTED,
    AttemptRecord,
    CampaignRef,
    Milestone,
    Outcome,
    Phase,
    Verdict,
    Victim,
)

T0 = 1_000_000.0


def _m(offset: float) -> Milestone:
    return Milestone(T0 + offset, offset)


def _action(reason: str, offset: float) -> dict[str, Any]:
    return {
        "reason": reason,
        "message": f"{reason} msg",
        "object": "Pod/tikv-1",
        "wall": T0 + offset,
        "offset": offset,
    }


def trial(
    index: int,
    *,
    recovered: float | None = 5.0,
    alert: float | None = None,
    said: float | None = None,
    actions: tuple[tuple[str, float], ...] | None = None,
    outcome: Outcome | None = None,
    extra: dict[str, Milestone] | None = None,
    final: dict[str, Any] | None = None,
) -> AttemptRecord:
    milestones = {"gate_passed": _m(-1.0), "kill_sent": _m(0.0), "kill_acked": _m(0.0)}
    if recovered is not None:
        milestones["recovered"] = _m(recovered)
    if alert is not None:
        milestones[ALERT_FIRING] = _m(alert)
    if said is not None:
        milestones[REMEDIATOR_DETECTED] = _m(said)
    milestones.update(extra or {})
    final_state: dict[str, Any] = dict(final or {})
    if actions is not None:
        final_state["remediatorActions"] = [_action(r, o) for r, o in actions]
    return AttemptRecord(
        "uid-c",
        index,
        1,
        (Victim("tikv-1", "pod-1"),),
        "s",
        T0 - 2,
        outcome or (Outcome.RECOVERED if recovered is not None else Outcome.UNRECOVERED),
        milestones,
        final_state=final_state,
        finished_at=T0 + 30,
    )


REMEDIATOR = {"kind": "Deployment", "name": "healer", "signals": {"controller": "h"}}


def _campaign(name: str, *, baseline: bool = False, remediator: bool = True) -> CampaignRow:
    spec: dict[str, Any] = {"baseline": baseline, "chaos": {"type": "node_kill"}}
    if remediator:
        spec["remediator"] = REMEDIATOR
    return CampaignRow(
        CampaignRef("chaos", name, f"uid-{name}"), spec, 6, "1", Phase.SUCCEEDED, Verdict.PASS, 0.0, 1.0, 2.0
    )


# --- per trial, and p50/p95 -----------------------------------------------------------------


def test_detect_is_the_alert_else_the_remediators_word_first_action_the_earliest_recover_only_recovered() -> (
    None
):
    alerted = clocks.trial_clocks(trial(0, alert=2.0, said=1.0, actions=(("Scale", 3.0), ("Ungate", 1.5))))
    assert (alerted.detect, alerted.detect_source) == (2.0, clocks.FROM_ALERT)
    assert alerted.first_action == 1.5
    assert alerted.recover == 5.0
    said = clocks.trial_clocks(trial(1, said=1.0, actions=()))
    assert (said.detect, said.detect_source, said.first_action) == (1.0, clocks.FROM_REMEDIATOR, None)
    unrecovered = clocks.trial_clocks(trial(2, recovered=None, alert=4.0))
    assert (unrecovered.detect, unrecovered.recover) == (4.0, None)
    silent = clocks.trial_clocks(trial(3))
    assert (silent.detect, silent.detect_source, silent.first_action) == (None, None, None)


def test_p50_p95_over_completed_trials_that_have_a_value_and_none_without_data() -> None:
    attempts = [
        trial(i, recovered=float(10 + i), alert=float(i + 1), actions=(("A", 0.5 * (i + 1)),))
        for i in range(5)
    ]
    attempts.append(trial(5, recovered=None))  # completed, no values at all
    attempts.append(trial(6, alert=0.1, outcome=Outcome.INTERRUPTED))  # not a completed trial
    found = clocks.clocks_summary(attempts)
    assert found["trials"] == 6
    assert found["detect"] == {"n": 5, "p50Seconds": 3.0, "p95Seconds": pytest.approx(4.8)}
    assert found["firstAction"]["n"] == 5
    assert found["firstAction"]["p50Seconds"] == 1.5
    assert found["recover"]["p50Seconds"] == 12.0
    empty = clocks.clocks_summary([trial(0)])
    assert empty["detect"] == {"n": 0, "p50Seconds": None, "p95Seconds": None}
    assert empty["firstAction"] == {"n": 0, "p50Seconds": None, "p95Seconds": None}
    assert clocks.clocks_summary([])["trials"] == 0


def test_status_carries_detect_and_first_action_and_the_tally_kept_equals_a_rebuild() -> None:
    attempts = [trial(i, alert=float(i + 1), actions=(("A", 2.0 * (i + 1)),)) for i in range(3)]
    attempts.append(trial(3))
    kept = Tally()
    for a in attempts:
        kept.record(a)
    assert kept.clocks == Tally.of(attempts).clocks
    status = build_status(
        requested=4,
        tally=kept,
        phase=Phase.RUNNING,
        verdict=Verdict.NONE,
        conditions=Conditions(None, 1),
        generation=1,
        health_source="pods",
        started_at=T0,
        completed_at=None,
        message="",
    )
    assert status["clocks"] == {
        "detectTrials": 3,
        "detectP50Seconds": 2.0,
        "detectP95Seconds": pytest.approx(2.9),
        "firstActionTrials": 3,
        "firstActionP50Seconds": 4.0,
        "firstActionP95Seconds": pytest.approx(5.8),
    }
    none = build_status(
        requested=1,
        tally=Tally.of([trial(0)]),
        phase=Phase.RUNNING,
        verdict=Verdict.NONE,
        conditions=Conditions(None, 1),
        generation=1,
        health_source="pods",
        started_at=T0,
        completed_at=None,
        message="",
    )
    assert none["clocks"]["detectTrials"] == 0
    assert none["clocks"]["detectP50Seconds"] is None


# --- the timeline ---------------------------------------------------------------------------


def _eventful() -> AttemptRecord:
    return trial(
        0,
        recovered=4.0,
        alert=1.0,
        said=0.5,
        actions=(("Detected", 0.5), ("Ungate", 0.75), ("Verified", 6.0)),
        extra={
            "first_unhealthy": _m(0.2),
            "leader_lost": _m(0.3),
            "leader_elected": _m(0.3),
            "fault_healed": _m(4.5),
            ALERT_RESOLVED: _m(8.0),
        },
        # One look saw the leader lost and the new one elected: the order recorded says which.
        final={
            "milestoneOrder": [
                "kill_acked",
                "first_unhealthy",
                "leader_lost",
                "leader_elected",
                "recovered",
                "gate_passed",
                "kill_sent",
            ],
            "quietWait": {"quietSeconds": 3.0, "endedOffset": 9.0, "capped": False},
        },
    )


def test_the_timeline_is_in_the_order_things_happened_with_ties_in_recording_order() -> None:
    entries = timeline.trial_timeline(_eventful(), "node_kill")
    assert [(e.offset, e.what) for e in entries] == [
        (-1.0, "steady state held (gate passed)"),
        # Recorded after the tracker's milestones, but the fault comes first at its offset.
        (0.0, "fault injected"),
        (0.0, "fault acknowledged by the API server"),
        (0.2, "subject first seen unhealthy"),
        (0.3, "leader lost"),
        (0.3, "leader elected"),
        (0.5, "remediator detected"),
        (0.5, "first action"),
        (0.75, "action"),
        (1.0, "alert firing"),
        (4.0, "recovered"),
        (4.5, "fault healed"),
        (6.0, "action"),
        (8.0, "alert resolved"),
        (9.0, "trial ended"),
    ]
    fault = next(e for e in entries if e.what == "fault injected")
    assert fault.detail == "node_kill tikv-1"
    late = [e for e in entries if e.after_recovery]
    assert [(e.offset, e.detail.split()[0]) for e in late] == [(6.0, "Verified")]
    assert entries[-1].detail == "the remediator was quiet for 3.0s"


def test_a_trial_that_never_injected_its_fault_has_no_timeline() -> None:
    attempt = trial(0, recovered=None, outcome=Outcome.INFRA_ERROR)
    bare = AttemptRecord(
        attempt.campaign_uid, 0, 1, attempt.victims, "s", T0, Outcome.INFRA_ERROR, {"gate_passed": _m(-1.0)}
    )
    assert timeline.trial_timeline(bare) == []


# --- report, page, export, metrics ----------------------------------------------------------


def test_report_shows_the_clocks_and_each_trials_timeline_and_page_and_export_carry_them() -> None:
    built = report.build_report(
        _campaign("help"), [_eventful(), trial(1, alert=3.0, actions=(("Ungate", 2.0),))]
    )
    text = report.render_table(built)
    clocks_line = next(line for line in text.splitlines() if line.startswith("clocks"))
    assert "detect p50=2.000 p95=2.900 (2/2)" in clocks_line
    assert "first action p50=1.250 p95=1.925 (2/2)" in clocks_line
    assert "timeline   trial 0 attempt 1 (recovered; seconds from the fault)" in text
    assert "Verified Pod/tikv-1 Verified msg  [after recovery]" in text
    data = report.to_json_value(built)
    assert data["summary"]["clocks"]["detect"]["n"] == 2
    first = data["trials"][0]
    assert first["clocks"] == {
        "detectSeconds": 1.0,
        "detectSource": "alert",
        "firstActionSeconds": 0.5,
        "recoverSeconds": 4.0,
    }
    assert [e["afterRecovery"] for e in first["timeline"] if e["kind"] == "action"] == [False, False, True]
    assert [a["afterRecovery"] for a in first["remediatorActions"]] == [False, False, True]
    assert "Clocks: detect p50=2.000 p95=2.900 (2/2)" in report.render_markdown(built)
    html = page.render_html(built)
    assert "Trial timelines" in html
    assert "(after recovery)" in html
    rows = export.build_rows(_campaign("help"), built.attempts)
    assert (rows[0]["detectSeconds"], rows[0]["detectSource"], rows[0]["firstActionSeconds"]) == (
        1.0,
        "alert",
        0.5,
    )
    assert rows[0]["actionsAfterRecovery"] == 1
    assert rows[1]["actionsAfterRecovery"] == 0
    # A Campaign with neither a remediator nor alerts: the report as before.
    plain = report.build_report(_campaign("plain", remediator=False), [trial(0)])
    assert "clocks" not in report.render_table(plain)
    assert "timeline" not in report.to_json_value(plain)["trials"][0]


def test_metrics_export_each_clock_as_a_histogram_and_its_p50_p95() -> None:
    m = Metrics()
    ref = CampaignRef("chaos", "help", "uid-help")
    for i in range(4):
        m.attempt_finished(ref, trial(i, recovered=10.0 + i, alert=1.0 + i, actions=(("A", 2.0 + i),)))
    m.attempt_finished(ref, trial(4, recovered=None))  # adds to no clock but recover's count
    families = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    quantiles = {(s.labels["clock"], s.labels["quantile"]): s.value for s in families[CLOCK_QUANTILE].samples}
    assert quantiles[("detect", "0.5")] == pytest.approx(2.5)
    assert quantiles[("detect", "0.95")] == pytest.approx(3.85)
    assert quantiles[("firstAction", "0.5")] == pytest.approx(3.5)
    assert quantiles[("recover", "0.5")] == pytest.approx(11.5)
    counts = {s.labels["clock"]: s.value for s in families[CLOCK].samples if s.name == f"{CLOCK}_count"}
    assert counts == {"detect": 4, "firstAction": 4, "recover": 4}


# --- compare --------------------------------------------------------------------------------


def test_compare_judges_each_clock_where_both_arms_have_values() -> None:
    # Baseline: the remediator is scaled to zero, so no action; alerts fire late in both arms.
    base = report.build_report(
        _campaign("base", baseline=True),
        [trial(i, recovered=8.0 + i / 10, alert=3.0 + i / 10, actions=()) for i in range(8)],
    )
    helped = report.build_report(
        _campaign("help"),
        [
            trial(i, recovered=1.0 + i / 10, alert=3.05 + i / 10, actions=(("Ungate", 0.3 + i / 100),))
            for i in range(8)
        ],
    )
    cmp = comparison.compare_reports(base, helped)
    judged = {c.key: c for c in cmp.clocks}
    recover = judged["recover"].judgement
    assert recover is not None
    assert recover.verdict.value == "Improved"
    detect = judged["detect"].judgement
    assert detect is not None
    assert detect.verdict.value == "NoChange"
    assert judged["firstAction"].judgement is None
    assert judged["firstAction"].why_not == "no values in A"
    data = comparison.comparison_json_value(cmp)
    assert data["clocks"]["firstAction"]["verdict"] is None
    assert data["clocks"]["firstAction"]["b"]["n"] == 8
    assert data["clocks"]["recover"]["verdict"] == "Improved"
    table = comparison.render_comparison_table(cmp)
    assert "first action  A p50 - p95 - (n=0)" in table
    assert "no values in A: not compared" in table
    assert "Improved" in next(line for line in table.splitlines() if line.strip().startswith("recover "))
    assert "Clocks (seconds from the fault):" in comparison.render_comparison_markdown(cmp)
