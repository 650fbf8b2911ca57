"""The recovery loop heeds a subject's own moment for its next look (`ProbeResult.look_at`: PD's
next heartbeat, `PdClock.next_look`), unjittered, only while it looks anyway and only when that
moment comes before the jittered one and after the last look."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from aftershock.engine.recovery import _next_probe_due
from aftershock.model import ProbeResult


class _Judge:
    def __init__(self, interval: float | None) -> None:
        self.interval = interval

    def probe_interval(self, replacement_ready: bool, normal: float) -> float | None:
        return self.interval


def _due(look_at: float | None, *, last: float | None = 100.0, interval: float | None = 0.05) -> float | None:
    w = SimpleNamespace(probe=object(), probe_interval=0.2, clock=SimpleNamespace(monotonic=lambda: 100.01))
    tracker = SimpleNamespace(
        judge=_Judge(interval),
        back="replacement_ready",
        milestones={},
        probe=ProbeResult(healthy=False, look_at=look_at),
    )
    return _next_probe_due(cast(Any, w), cast(Any, tracker), last, 1.0)


def test_an_aimed_moment_before_the_regular_look_is_taken() -> None:
    assert _due(100.03) == 100.03


def test_the_regular_look_when_the_aimed_moment_is_later_past_or_absent() -> None:
    assert _due(100.2) == 100.05  # later than the regular look: that one first
    assert _due(99.9) == 100.05  # before the last look: already served
    assert _due(None) == 100.05


def test_no_look_at_all_while_the_subject_wants_none() -> None:
    assert _due(100.03, interval=None) is None
    assert _due(100.03, last=None) == 100.01  # the first look: now
