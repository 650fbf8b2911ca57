"""The write probe's window (`recovery.write_probe`, `WriteWindow`): what users of the subject
felt during a trial. Writes fail from the first failed write's start to the first write that
succeeds after the last failure; `unavailableSeconds` is that span, 0 when nothing failed and
unknown (None) when writes never came back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aftershock.engine import recovery
from aftershock.errors import ProbeUnavailableError
from aftershock.records import Milestone


class StepClock:
    """A clock that moves only when told: every write takes exactly `step` seconds."""

    def __init__(self) -> None:
        self.t = 100.0

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_700_000_000.0 + self.t


class ScriptedWrites:
    """A subject whose n-th write fails when n is in `failing`; each write takes 0.1 s."""

    writes = True

    def __init__(self, clock: StepClock, failing: set[int]) -> None:
        self.clock = clock
        self.failing = failing
        self.calls = 0
        self.keys: set[str] = set()
        self.limit = 0
        self.all_done = asyncio.Event()

    async def write_and_read(self, key: str, value: str, timeout: float) -> None:
        n = self.calls
        self.calls += 1
        self.keys.add(key)
        self.clock.t += 0.1
        if self.calls == self.limit:
            self.all_done.set()
        if n in self.failing:
            raise ProbeUnavailableError(f"write {n}: no leader")


async def run_window(failing: set[int], writes: int) -> tuple[recovery.WriteWindow, StepClock]:
    clock = StepClock()
    kill_mono = clock.t
    probe = ScriptedWrites(clock, failing)
    probe.limit = writes
    subject: Any = probe  # the one method of the SubjectProbe port that the window uses
    async with recovery.write_probe(
        subject, key="k", clock=clock, kill_mono=kill_mono, interval=0.1, timeout=0.5, limit=writes
    ) as window:
        assert window is not None
        await asyncio.wait_for(probe.all_done.wait(), 5)
        await asyncio.sleep(0)  # the last write's outcome is recorded after it returns
    return window, clock


async def test_the_window_runs_from_the_first_failed_write_to_the_first_write_back() -> None:
    # Writes 0-2 succeed, 3-5 fail, 6-9 succeed. Write n starts at n x 0.1 s after the kill.
    window, _ = await run_window({3, 4, 5}, 10)
    assert (window.ok, window.failed) == (7, 3)
    assert window.first_failed is not None
    assert window.restored is not None
    assert window.first_failed.offset == pytest.approx(0.3)  # write 3 started
    assert window.restored.offset == pytest.approx(0.7)  # write 6 came back
    assert window.first_failed.wall == pytest.approx(1_700_000_000.0 + 100.4)  # stamped as it failed
    summary = window.summary()
    assert summary["unavailableSeconds"] == pytest.approx(0.4)
    assert summary["failed"] == 3
    assert summary["lastError"] == "write 5: no leader"
    assert summary["slowestSeconds"] == pytest.approx(0.1)
    assert set(window.milestones()) == {"writes_failed", "writes_restored"}


async def test_two_outages_count_from_the_first_failure_to_the_last_return() -> None:
    window, _ = await run_window({2, 3, 6}, 9)
    assert window.first_failed is not None
    assert window.restored is not None
    assert window.first_failed.offset == pytest.approx(0.2)
    assert window.restored.offset == pytest.approx(0.8)  # write 7, after the last failure (6)
    assert window.summary()["unavailableSeconds"] == pytest.approx(0.6)


async def test_no_failed_write_is_zero_unavailable_and_no_milestone() -> None:
    window, _ = await run_window(set(), 5)
    assert window.summary()["unavailableSeconds"] == 0.0
    assert window.milestones() == {}
    assert (window.ok, window.failed) == (5, 0)


async def test_writes_that_never_came_back_are_unknown_not_zero() -> None:
    window, _ = await run_window({2, 3, 4}, 5)
    assert window.restored is None
    assert window.summary()["unavailableSeconds"] is None
    assert set(window.milestones()) == {"writes_failed"}


def test_summary_rounds_the_span_to_microseconds() -> None:
    window = recovery.WriteWindow(
        ok=1, failed=1, first_failed=Milestone(1.0, 0.1234564), restored=Milestone(2.0, 1.9876541)
    )
    assert window.summary()["unavailableSeconds"] == 1.864198


async def test_a_subject_without_writes_has_no_window() -> None:
    class NoWrites:
        writes = False

    probe: Any = NoWrites()
    async with recovery.write_probe(
        probe, key="k", clock=StepClock(), kill_mono=0, interval=0.1, timeout=0.5, limit=3
    ) as window:
        assert window is None
