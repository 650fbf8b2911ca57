"""The quiet wait (``spec.remediator.quietSeconds``): a recovered trial ends only once the
remediator has done nothing for quietSeconds; an action during the wait extends it; the wait
stops at its cap and says so; actions after the recovery are flagged; the recovery time never
moves. The loop tests run `recovery.observe` on the real clock with sub-second windows and
assert lower bounds only (the machine may be slow, never fast)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, cast

import pytest
from tests.unit.fakes import RealClock, Stop, make_pod

from aftershock.engine import recovery
from aftershock.engine.observe import RecoveryTracker
from aftershock.engine.view import Observation
from aftershock.model import (
    Milestone,
    Outcome,
    RemediatorAction,
    SpecError,
    actions_after_recovery,
    after_recovery,
    parse_campaign_spec,
)

SIGNALS = {"controller": "healer", "detectedReason": "Detected", "resolvedReason": "Resolved"}


def _raw(quiet: float | None, *, settle: float = 0.0, timeout: float = 60.0, signals: bool = True) -> Any:
    rem: dict[str, Any] = {"kind": "Deployment", "name": "healer"}
    if signals:
        rem["signals"] = SIGNALS
    if quiet is not None:
        rem["quietSeconds"] = quiet
    return {
        "subject": {"kind": "TiKV", "selector": {"matchLabels": {"app": "tikv"}}},
        "chaos": {"type": "pod_kill"},
        "recovery": {"timeoutSeconds": timeout, "settleSeconds": settle},
        "remediator": rem,
    }


class Activity:
    """The `RemediatorActivity` port: the test says when the last action was seen."""

    def __init__(self, last: float | None = None) -> None:
        self.last = last

    def last_action_mono(self) -> float | None:
        return self.last


# --- the spec --------------------------------------------------------------------------------


def test_quiet_seconds_is_parsed_and_bounded() -> None:
    spec = parse_campaign_spec(_raw(5))
    assert spec.remediator is not None
    assert spec.remediator.quiet_seconds == 5
    assert parse_campaign_spec(_raw(None)).remediator.quiet_seconds is None  # type: ignore[union-attr]
    with pytest.raises(SpecError, match=r"remediator\.quietSeconds.*between|remediator\.quietSeconds.*at"):
        parse_campaign_spec(_raw(0))
    with pytest.raises(SpecError, match=r"remediator\.quietSeconds.*shorter than recovery\.timeoutSeconds"):
        parse_campaign_spec(_raw(60, timeout=60))
    # Without signals too: the remediator's writes are its actions (audit, managedFields).
    assert parse_campaign_spec(_raw(5, signals=False)).remediator.quiet_seconds == 5  # type: ignore[union-attr]


# --- the wait, pure ----------------------------------------------------------------------------


def test_the_wait_runs_from_the_later_of_the_recovery_and_the_last_action() -> None:
    wait = recovery.QuietWait(quiet_seconds=5.0, cap_seconds=60.0, activity=Activity())
    # No action at all: quietSeconds after the recovery was seen (settle window shorter).
    assert wait.until(recovered_seen=10.0, settled=12.0) == 15.0
    # An action before the recovery: still from the recovery.
    wait.activity = Activity(8.0)
    assert wait.until(10.0, 12.0) == 15.0
    # An action during the wait moves the end.
    wait.activity = Activity(14.0)
    assert wait.until(10.0, 12.0) == 19.0
    # A settle window longer than the wait: the settle window's end.
    assert wait.until(10.0, 30.0) == 30.0


def test_the_wait_stops_at_its_cap_and_records_that_it_did() -> None:
    activity = Activity(60.0)
    wait = recovery.QuietWait(quiet_seconds=5.0, cap_seconds=30.0, activity=activity)
    assert wait.until(10.0, 12.0) == 40.0  # the remediator still acts: the cap
    wait.end(10.0, 12.0, now=40.0)
    assert wait.capped
    summary = wait.summary(kill_mono=0.0, recovered_seen=10.0)
    assert summary["capped"] is True
    assert summary["endedOffset"] == 40.0
    assert summary["lastActionOffset"] == 60.0
    quiet = recovery.QuietWait(quiet_seconds=5.0, cap_seconds=30.0, activity=Activity(11.0))
    quiet.end(10.0, 12.0, now=16.0)
    assert not quiet.capped


def test_actions_after_the_recovery_are_flagged_by_offset() -> None:
    recovered = Milestone(1003.0, 3.0)
    acts = tuple(RemediatorAction("R", "", "Pod/a", 1000.0 + o, o) for o in (1.0, 3.0, 4.5))
    assert [after_recovery(a, recovered) for a in acts] == [False, False, True]
    assert not after_recovery(acts[2], None)  # an unrecovered trial has no "after"
    assert actions_after_recovery(acts, {"recovered": recovered}) == (acts[2],)


# --- the loop, on the real clock ----------------------------------------------------------


def _recovered_tracker(kill_mono: float) -> RecoveryTracker:
    pods = [make_pod(f"tikv-{i}", node=f"node-{i}") for i in range(3)]
    tracker = RecoveryTracker(
        victims=[],
        initial_pods=pods,
        kill_sent_mono=kill_mono,
        kill_sent_wall=time.time(),
        expected_pods=3,
        restarts=False,
    )
    tracker.mark_back(time.monotonic(), time.time())
    assert tracker.recovered
    return tracker


async def _observe(quiet: float | None, activity: Activity, act_after: float | None) -> tuple[Outcome, float]:
    """Observe a trial already recovered; with `act_after`, the remediator acts that long after
    the recovery. Returns the outcome and how long after the recovery the trial ended."""
    spec = parse_campaign_spec(_raw(None, settle=0.1))
    # Sub-second, below the spec's bound of 1 s, so that the test is short.
    assert spec.remediator is not None
    spec = dataclasses.replace(spec, remediator=dataclasses.replace(spec.remediator, quiet_seconds=quiet))
    clock = RealClock()
    kill = clock.monotonic()
    tracker = _recovered_tracker(kill)
    seen = tracker.recovered_seen_mono
    assert seen is not None
    w = recovery.Watch(
        spec,
        cast(Any, None),  # the view is asked only by the subject's probe: none here
        None,
        clock,
        0.2,
        quiet=recovery.quiet_wait(spec, activity),
    )

    async def act() -> None:
        if act_after is not None:
            await asyncio.sleep(act_after)
            activity.last = clock.monotonic()

    acting = asyncio.create_task(act())
    queue: asyncio.Queue[Observation] = asyncio.Queue()
    outcome, _ = await recovery.observe(w, tracker, queue, Stop())
    ended = clock.monotonic() - seen
    await acting
    return outcome, ended


async def test_without_quiet_seconds_the_trial_ends_after_the_settle_window() -> None:
    outcome, ended = await _observe(None, Activity(), act_after=None)
    assert outcome is Outcome.RECOVERED
    assert 0.1 <= ended < 1.0


async def test_an_action_during_the_wait_extends_it() -> None:
    activity = Activity()
    outcome, ended = await _observe(0.5, activity, act_after=0.3)
    assert outcome is Outcome.RECOVERED
    assert activity.last is not None
    # Not before quietSeconds after the action, which came 0.3 s into the wait.
    assert ended >= 0.3 + 0.5


async def test_a_quiet_remediator_ends_the_trial_quiet_seconds_after_the_recovery() -> None:
    outcome, ended = await _observe(0.5, Activity(), act_after=None)
    assert outcome is Outcome.RECOVERED
    assert 0.5 <= ended < 0.5 + 1.0  # the loop wakes at least once a second
