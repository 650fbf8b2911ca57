"""The remediator's signals: which Events are its, which say detected and resolved, and what a
trial window holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from aftershock import analysis, comparison, remediation, report
from aftershock.engine.signals import Seen, SignalWatch, in_window
from aftershock.ledger.store import CampaignRow
from aftershock.model import (
    REMEDIATOR_DETECTED,
    REMEDIATOR_RESOLVED,
    AttemptRecord,
    CampaignRef,
    ClusterEvent,
    Milestone,
    Outcome,
    Phase,
    RemediatorSignals,
    SpecError,
    Verdict,
    parse_campaign_spec,
)

SIGNALS = RemediatorSignals("healer", "IncidentDetected", "IncidentResolved")


def seen(reason: str, mono: float, *, controller: str = "healer", uid: str = "") -> Seen:
    return Seen(
        ClusterEvent(uid or f"{reason}-{mono}", reason, f"{reason} msg", controller, "Pod/tikv-1"),
        mono,
        1000 + mono,
    )


def test_detected_and_resolved_are_the_first_of_their_reason_after_the_kill_and_all_are_actions() -> None:
    said = in_window(
        [
            seen("IncidentResolved", 9.0),  # a leftover of an earlier incident, before this kill
            seen("IncidentDetected", 10.2),
            seen("IncidentDetected", 10.3, controller="someone-else"),
            seen("UngatedPod", 10.25),
            seen("IncidentDetected", 10.4),
            seen("IncidentResolved", 11.5),
            seen("IncidentResolved", 11.9),
            seen("UngatedPod", 30.0),  # after the trial ended
        ],
        SIGNALS,
        kill_mono=10.0,
        end_mono=20.0,
    )
    assert said.milestones[REMEDIATOR_DETECTED].offset == pytest.approx(0.2)
    assert said.milestones[REMEDIATOR_RESOLVED].offset == pytest.approx(1.5)
    assert said.milestones[REMEDIATOR_DETECTED].wall == pytest.approx(1010.2)
    assert [a.reason for a in said.actions] == [
        "IncidentDetected",
        "UngatedPod",
        "IncidentDetected",
        "IncidentResolved",
        "IncidentResolved",
    ]


def test_resolved_without_detected_is_an_action_but_not_a_resolution() -> None:
    said = in_window([seen("IncidentResolved", 11.0)], SIGNALS, kill_mono=10.0, end_mono=20.0)
    assert said.milestones == {}
    assert [a.reason for a in said.actions] == ["IncidentResolved"]


class _Events:
    """One list (what happened before the Campaign), then a watch fed by the test."""

    def __init__(self, listed: list[ClusterEvent]) -> None:
        self.listed = listed
        self.queue: asyncio.Queue[ClusterEvent] = asyncio.Queue()

    async def list_events(self, namespace: str) -> tuple[list[ClusterEvent], str]:
        return self.listed, "1"

    async def watch_events(
        self, namespace: str, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncIterator[tuple[str, ClusterEvent, str]]:
        while True:
            event = await self.queue.get()
            yield "MODIFIED" if event.count > 1 else "ADDED", event, "2"
            # Resumed only once the watcher handled it: `queue.join()` waits for that.
            self.queue.task_done()


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def wall(self) -> float:
        return 5000.0 + self.now

    def monotonic(self) -> float:
        return self.now


async def test_the_watch_keeps_new_events_and_repeats_folded_by_the_api_but_not_what_was_there_before() -> (
    None
):
    old = ClusterEvent("e1", "IncidentDetected", "", "healer", "Pod/tikv-0")
    api = _Events([old])
    clock = _Clock()
    watch = SignalWatch(api, "db", SIGNALS, clock)
    task = asyncio.create_task(watch.run())
    try:
        assert await watch.wait_synced(5)
        clock.now = 101.0
        await api.queue.put(ClusterEvent("e2", "IncidentDetected", "", "healer", "Pod/tikv-1"))
        await api.queue.put(ClusterEvent("e3", "Scaled", "", "other", "Pod/tikv-1"))
        await api.queue.put(ClusterEvent("e1", "IncidentDetected", "", "healer", "Pod/tikv-0", count=2))
        await api.queue.join()
        said = watch.trial(kill_mono=100.5, end_mono=102.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [(a.involved, a.reason) for a in said.actions] == [
        ("Pod/tikv-1", "IncidentDetected"),
        ("Pod/tikv-0", "IncidentDetected"),
    ]
    assert said.milestones[REMEDIATOR_DETECTED].offset == pytest.approx(0.5)


def _spec(signals: object) -> dict[str, object]:
    return {
        "subject": {"kind": "TiKV", "selector": {"matchLabels": {"app": "tikv"}}},
        "chaos": {"type": "node_kill"},
        "remediator": {"kind": "Deployment", "name": "healer", "signals": signals},
    }


def test_signals_are_parsed_and_a_reason_that_is_not_one_is_refused() -> None:
    spec = parse_campaign_spec(
        _spec(
            {
                "controller": "healer",
                "detectedReason": "IncidentDetected",
                "resolvedReason": "IncidentResolved",
            }
        )
    )
    assert spec.remediator is not None
    assert spec.remediator.signals == SIGNALS
    with pytest.raises(SpecError, match=r"remediator\.signals\.detectedReason"):
        parse_campaign_spec(
            _spec({"controller": "healer", "detectedReason": "not a reason", "resolvedReason": "R"})
        )
    with pytest.raises(SpecError, match=r"remediator\.signals\.controller"):
        parse_campaign_spec(_spec({"detectedReason": "D", "resolvedReason": "R"}))


def _campaign(name: str, *, baseline: bool) -> CampaignRow:
    spec = {"baseline": baseline, "remediator": {"kind": "Deployment", "name": "healer"}}
    return CampaignRow(
        CampaignRef("chaos", name, f"uid-{name}"), spec, 6, "1", Phase.SUCCEEDED, Verdict.PASS, 0.0, 1.0, 2.0
    )


def _trial(name: str, index: int, recovery: float, said: tuple[float, float] | None) -> AttemptRecord:
    milestones = {"recovered": Milestone(1000.0 + recovery, recovery)}
    actions: list[dict[str, object]] = []
    if said is not None:
        milestones[REMEDIATOR_DETECTED] = Milestone(1000.0 + said[0], said[0])
        milestones[REMEDIATOR_RESOLVED] = Milestone(1000.0 + said[1], said[1])
        actions = [
            {"reason": r, "message": "", "object": "Pod/web-0", "wall": 1000.0 + o, "offset": o}
            for r, o in (("IncidentDetected", said[0]), ("Ungated", said[0]), ("IncidentResolved", said[1]))
        ]
    return AttemptRecord(
        f"uid-{name}",
        index,
        1,
        (),
        "s",
        1000.0,
        Outcome.RECOVERED,
        milestones,
        final_state={"remediatorActions": actions},
        finished_at=1010.0,
    )


def test_report_shows_detect_resolve_and_actions_and_compare_says_the_remediator_helped() -> None:
    baseline = report.build_report(
        _campaign("base", baseline=True), [_trial("base", i, 8.0 + i / 10, None) for i in range(6)]
    )
    assisted = report.build_report(
        _campaign("help", baseline=False),
        [_trial("help", i, 1.0 + i / 10, (0.2 + i / 100, 0.9 + i / 10)) for i in range(6)],
    )
    table = report.render_table(assisted)
    header = table.splitlines()[0].split()
    assert header[-4:] == ["detect", "resolve", "actions", "error"]
    first = table.splitlines()[1].split()
    assert first[-4:-1] == ["0.200", "0.900", "3"]
    assert "remediator detected 6/6  detect p50=0.225  resolved 6/6  resolve p50=1.150" in table
    assert report.to_json_value(assisted)["summary"]["remediator"]["actionsPerTrial"] == 3.0
    # The baseline's remediator was off: watched, never heard from.
    assert remediation.remediator_summary(baseline.attempts) == {
        "trials": 6,
        "detected": 0,
        "resolved": 0,
        "detectP50Seconds": None,
        "detectP95Seconds": None,
        "resolveP50Seconds": None,
        "resolveP95Seconds": None,
        "actionsPerTrial": 0.0,
    }
    cmp = comparison.compare_reports(baseline, assisted)
    assert cmp.result.verdict is analysis.ComparisonVerdict.IMPROVED
    assert "verdict    Improved: the remediator helped" in comparison.render_comparison_table(cmp)
    backwards = comparison.compare_reports(assisted, baseline)
    assert backwards.remediator == "the remediator helped"  # read from the assisted side
