"""The list-then-watch loop's backoff: transient errors in a row wait twice as long each time,
up to `backoff_max`, each wait jittered between 0.5x and 1.5x, and a watch that delivers resets
the wait to `backoff_initial`."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence

import pytest

from aftershock.engine.listwatch import ListWatch
from aftershock.errors import ApiError


class Script:
    """A lister and watcher that fail as scripted: `plan` holds, per list call, either an
    error to raise or a number of events the watch then delivers before breaking."""

    def __init__(self, plan: list[ApiError | int]) -> None:
        self.plan = plan
        self.lists = 0
        self.done = asyncio.Event()

    async def list_(self) -> tuple[Sequence[str], str]:
        step = self.plan[self.lists] if self.lists < len(self.plan) else 0
        self.lists += 1
        if self.lists >= len(self.plan):
            self.done.set()
        if isinstance(step, ApiError):
            raise step
        return [], "1"

    async def watch(self, rv: str) -> AsyncIterator[tuple[str, str, str]]:
        step = self.plan[self.lists - 1] if self.lists - 1 < len(self.plan) else 0
        assert isinstance(step, int)
        for i in range(step):
            yield "ADDED", f"pod-{i}", str(int(rv) + i + 1)
        if self.lists >= len(self.plan):
            await asyncio.Event().wait()  # the end of the script: watch quietly until cancelled
        raise ApiError("watch: connection reset", 503)


async def run_script(plan: list[ApiError | int], monkeypatch: pytest.MonkeyPatch, **kw: float) -> list[float]:
    """The waits the loop slept, in order, while it worked through `plan`."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    script = Script(plan)
    lw: ListWatch[str] = ListWatch(
        "test", script.list_, script.watch, lambda _items: None, lambda _t, _item: None, **kw
    )
    task = asyncio.create_task(lw.run())
    try:
        await asyncio.wait_for(script.done.wait(), 5)
        await real_sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return slept


ERR = ApiError("list: service unavailable", 503)


async def test_errors_in_a_row_double_the_wait_up_to_the_max(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "uniform", lambda a, b: (a + b) / 2)  # no jitter: 1.0
    slept = await run_script([ERR] * 7 + [0], monkeypatch, backoff_initial=0.2, backoff_max=5.0)
    assert slept == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])


async def test_a_watch_that_delivered_starts_the_doubling_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "uniform", lambda a, b: (a + b) / 2)
    # Two failed lists, then a list whose watch delivers two events and breaks, then a failed
    # list, then a quiet watch.
    slept = await run_script([ERR, ERR, 2, ERR, 0], monkeypatch, backoff_initial=0.2, backoff_max=5.0)
    assert slept == pytest.approx([0.2, 0.4, 0.2, 0.4])


async def test_each_wait_is_jittered_between_half_and_one_and_a_half(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[float, float]] = []
    rng = random.Random(7)

    def uniform(a: float, b: float) -> float:
        asked.append((a, b))
        return rng.uniform(a, b)

    monkeypatch.setattr(random, "uniform", uniform)
    slept = await run_script([ERR] * 6 + [0], monkeypatch, backoff_initial=1.0, backoff_max=100.0)
    assert asked == [(0.5, 1.5)] * 6
    factors = [s / 2**i for i, s in enumerate(slept)]
    assert all(0.5 <= f <= 1.5 for f in factors), factors
    assert len({round(f, 6) for f in factors}) == 6, factors  # drawn anew for every wait
