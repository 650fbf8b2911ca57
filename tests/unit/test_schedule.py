"""Scheduled Campaigns: cron in time zones across daylight saving time (cronsim's arithmetic),
the tick decision (no run on apply, one catch-up within the deadline, never a burst), and the
schedule's loop on a real ledger with a fast schedule clock: Forbid, Replace, restarts,
suspend, a run asked for by the annotation."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from aftershock import cron, model
from aftershock.engine import schedule
from aftershock.engine.ports import StopSignal
from aftershock.ledger import Ledger, RunRow, TickAction
from aftershock.model import CampaignRef, Phase, Verdict

UTC = dt.UTC


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, tz: str = "UTC"
) -> float:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=cron.zone(tz)).timestamp()


def local(t: float, tz: str) -> str:
    return dt.datetime.fromtimestamp(t, cron.zone(tz)).strftime("%Y-%m-%d %H:%M %Z")


def ticks(expr: str, tz: str, start: float, n: int) -> list[str]:
    s = cron.parse(expr, tz)
    out = []
    for _ in range(n):
        start = s.next_after(start)
        out.append(local(start, tz))
    return out


# --- cron in time zones --------------------------------------------------------------------


def test_every_minute_in_utc_and_the_latest_tick_at_or_before_a_time() -> None:
    s = cron.parse("* * * * *")
    t = at(2026, 12, 6, 15, 0, 30)
    assert s.next_after(t) == at(2026, 12, 6, 15, 1)
    assert s.latest_at_or_before(t) == at(2026, 12, 6, 15, 0)
    # A tick exactly at the time counts as at-or-before; next_after is strictly after.
    assert s.latest_at_or_before(at(2026, 12, 6, 15, 1)) == at(2026, 12, 6, 15, 1)
    assert s.next_after(at(2026, 12, 6, 15, 1)) == at(2026, 12, 6, 15, 2)


def test_a_daily_time_is_read_in_the_time_zone() -> None:
    s = cron.parse("0 9 * * 1-5", "Asia/Tokyo")
    # 09:00 in Tokyo is 00:00 UTC; Saturday 2026-12-05 is skipped.
    assert local(s.next_after(at(2026, 12, 4, 1, 0)), "UTC") == "2026-12-07 00:00 UTC"


def test_spring_forward_a_tick_in_the_missing_hour_happens_at_the_first_moment_that_exists() -> None:
    # Europe/Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST.
    assert ticks("30 2 * * *", "Europe/Berlin", at(2026, 3, 27, 12, 0), 3) == [
        "2026-03-28 02:30 CET",
        "2026-03-29 03:00 CEST",
        "2026-03-30 02:30 CEST",
    ]
    # America/New_York, 2026-03-08: the same rule.
    assert ticks("30 2 * * *", "America/New_York", at(2026, 3, 7, 12, 0), 2) == [
        "2026-03-08 03:00 EDT",
        "2026-03-09 02:30 EDT",
    ]


def test_spring_forward_an_interval_schedule_has_no_ticks_in_the_missing_hour() -> None:
    assert ticks("*/30 * * * *", "Europe/Berlin", at(2026, 3, 29, 1, 10, tz="Europe/Berlin"), 4) == [
        "2026-03-29 01:30 CET",
        "2026-03-29 03:00 CEST",
        "2026-03-29 03:30 CEST",
        "2026-03-29 04:00 CEST",
    ]


def test_fall_back_a_fixed_time_runs_once_and_an_interval_schedule_runs_through_both_hours() -> None:
    # Europe/Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    daily = ticks("30 2 * * *", "Europe/Berlin", at(2026, 10, 24, 12, 0), 2)
    assert daily == ["2026-10-25 02:30 CEST", "2026-10-26 02:30 CET"]
    half_hourly = ticks("*/30 * * * *", "Europe/Berlin", at(2026, 10, 25, 0, 10), 4)
    assert half_hourly == [
        "2026-10-25 02:30 CEST",
        "2026-10-25 02:00 CET",
        "2026-10-25 02:30 CET",
        "2026-10-25 03:00 CET",
    ]
    # The real gap between the two 02:30s is 90 minutes of schedule, not 0.
    s = cron.parse("*/30 * * * *", "Europe/Berlin")
    first = s.next_after(at(2026, 10, 25, 0, 10))
    assert s.next_after(s.next_after(first)) - first == 3600


def test_the_latest_tick_looks_back_across_a_dst_change() -> None:
    s = cron.parse("30 2 * * *", "Europe/Berlin")
    # Just after the spring-forward day's tick (03:00 CEST = 01:00 UTC).
    assert s.latest_at_or_before(at(2026, 3, 29, 1, 5)) == at(2026, 3, 29, 1, 0)
    assert s.latest_at_or_before(at(2026, 3, 29, 0, 59)) == at(2026, 3, 28, 1, 30)


def test_macros_are_cronjobs() -> None:
    assert cron.parse("@hourly").next_after(at(2026, 1, 1, 0, 5)) == at(2026, 1, 1, 1, 0)
    assert cron.parse("@daily", "Europe/Berlin").next_after(at(2026, 1, 1, 12)) == at(2026, 1, 1, 23)


@pytest.mark.parametrize(
    ("expr", "zone", "says"),
    [
        ("* * * *", "UTC", "has 4 fields"),
        ("0 * * * * *", "UTC", "has 6 fields"),
        ("61 * * * *", "UTC", "Bad minute"),
        ("0 0 30 2 *", "UTC", "Bad day-of-month"),
        ("TZ=Europe/Berlin 0 * * * *", "UTC", "use spec.schedule.timeZone"),
        ("@reboot", "UTC", "unknown macro"),
        ("* * * * *", "Mars/Olympus", "unknown time zone"),
        ("* * * * *", "../etc/passwd", "not an IANA time zone"),
    ],
)
def test_bad_schedules_are_refused_saying_what_to_fix(expr: str, zone: str, says: str) -> None:
    with pytest.raises(cron.CronError, match=says.replace("(", r"\(")):
        cron.parse(expr, zone)


def test_the_spec_parser_names_the_field() -> None:
    base: dict[str, Any] = {
        "subject": {"kind": "TiKV", "selector": {"matchLabels": {"a": "b"}}},
        "chaos": {"type": "node_kill"},
    }
    parsed = model.parse_campaign_spec(
        {**base, "schedule": {"cron": "*/5 * * * *", "timeZone": "Europe/Berlin"}}
    )
    assert parsed.schedule is not None
    assert (parsed.schedule.concurrency_policy, parsed.schedule.history_limit) == (
        model.ConcurrencyPolicy.FORBID,
        model.DEFAULT_HISTORY_LIMIT,
    )
    assert parsed.schedule.starting_deadline_seconds is None
    assert model.parse_campaign_spec(base).schedule is None
    for bad, field in (
        ({"cron": "nope"}, "spec.schedule.cron"),
        ({"cron": "* * * * *", "timeZone": "Nowhere/Else"}, "spec.schedule.timeZone"),
        ({"cron": "* * * * *", "concurrencyPolicy": "Allow"}, "spec.schedule.concurrencyPolicy"),
        ({"cron": "* * * * *", "historyLimit": 1}, "spec.schedule.historyLimit"),
        ({}, "spec.schedule.cron"),
    ):
        with pytest.raises(model.SpecError) as err:
            model.parse_campaign_spec({**base, "schedule": bad})
        assert err.value.field == field


# --- the tick decision ------------------------------------------------------------------------

EVERY_MINUTE = model.ScheduleSpec(cron=cron.parse("* * * * *"))
T0 = at(2026, 12, 6, 12, 0)


def test_no_run_on_apply_the_first_tick_after_creation_runs() -> None:
    created = T0 + 30
    assert schedule.decide(EVERY_MINUTE, last_acted=None, created_at=created, now=T0 + 45).due is None
    assert schedule.decide(EVERY_MINUTE, last_acted=None, created_at=created, now=T0 + 61).due == T0 + 60


def test_ticks_missed_while_down_give_one_catch_up_for_the_latest_never_a_burst() -> None:
    decision = schedule.decide(EVERY_MINUTE, last_acted=T0, created_at=T0 - 600, now=T0 + 5 * 60 + 20)
    assert (decision.due, decision.missed, decision.next_tick) == (T0 + 300, None, T0 + 360)
    # Once acted on, nothing more until the next tick.
    assert schedule.decide(EVERY_MINUTE, last_acted=T0 + 300, created_at=T0, now=T0 + 330).due is None


def test_a_tick_past_the_starting_deadline_is_missed_not_run() -> None:
    spec = model.ScheduleSpec(cron=cron.parse("* * * * *"), starting_deadline_seconds=15)
    late = schedule.decide(spec, last_acted=T0, created_at=T0 - 600, now=T0 + 60 + 20)
    assert (late.due, late.missed) == (None, T0 + 60)
    in_time = schedule.decide(spec, last_acted=T0, created_at=T0 - 600, now=T0 + 60 + 10)
    assert (in_time.due, in_time.missed) == (T0 + 60, None)


def test_the_scaled_clock_runs_faster_from_its_origin() -> None:
    clock = schedule.parse_clock(f"{time.time() - 10}:60")
    assert clock.now() == pytest.approx(time.time() + 590, abs=2)
    assert clock.real_seconds(60) == 1
    with pytest.raises(ValueError, match="ORIGIN:SPEED"):
        schedule.parse_clock("60")


# --- the loop, on a real ledger ---------------------------------------------------------------

REF = CampaignRef("db", "nightly", "uid-s")
#: 1 schedule minute = 0.1 s: a per-minute cron ticks ten times a second.
SPEED = 600.0


class Stop:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    def is_set(self) -> bool:
        return self.event.is_set()

    @property
    def deleted(self) -> bool:
        return False

    async def wait(self, timeout: float | None = None) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)
        return self.event.is_set()


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def emit(self, type_: str, reason: str, message: str) -> None:
        self.seen.append((reason, message))


class Harness:
    """A scheduled Campaign whose runs are held until released (a run's length is the test's)."""

    def __init__(
        self,
        ledger: Ledger,
        spec: Mapping[str, Any],
        *,
        created_at: float,
        token: str = "",
        clock: schedule.ScheduleClock | None = None,
    ) -> None:
        self.ledger = ledger
        self.spec = dict(spec)
        self.token = token
        self.started: list[RunRow] = []
        self.release = asyncio.Event()
        self.patches: list[dict[str, Any]] = []
        self.events = Events()
        self.stop = Stop()
        self.clock = clock or schedule.ScaledScheduleClock(time.time(), SPEED)
        self.wake = asyncio.Event()
        self.loop = schedule.ScheduledCampaign(
            ref=REF,
            ledger=ledger,
            clock=self.clock,
            spec_source=lambda: self.spec,
            token_source=lambda: self.token,
            generation_source=lambda: 1,
            status_source=dict,
            created_at=created_at,
            start_run=self.run,
            patch_status=self.patch,
            events=self.events,
            wake=self.wake,
        )
        self.task: asyncio.Task[None] | None = None

    async def run(self, run: RunRow, stop: StopSignal) -> Phase:
        self.started.append(run)
        ref = CampaignRef(REF.namespace, REF.name, run.run_uid)
        await self.ledger.ensure_campaign(ref, self.spec, 1, "1", time.time())
        while not self.release.is_set() and not stop.is_set():
            await stop.wait(0.01)
        if stop.is_set():
            return Phase.RUNNING
        await self.ledger.set_campaign_state(
            run.run_uid, Phase.SUCCEEDED, Verdict.PASS, time.time(), finished=True
        )
        return Phase.SUCCEEDED

    async def patch(self, patch: Mapping[str, Any]) -> None:
        self.patches.append(dict(patch))

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.loop.serve(self.stop))

    async def until(self, predicate: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self.stop.event.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


def scheduled(**fields: Any) -> dict[str, Any]:
    return {
        "subject": {"kind": "TiKV", "selector": {"matchLabels": {"a": "b"}}},
        "chaos": {"type": "node_kill"},
        "schedule": {"cron": "* * * * *", **fields},
    }


async def test_forbid_skips_the_ticks_that_come_while_a_run_goes(tmp_path: Path) -> None:
    async with await Ledger.open(tmp_path / "l.db") as ledger:
        h = Harness(ledger, scheduled(), created_at=time.time())
        h.start()
        await h.until(lambda: len(h.started) == 1)
        await h.until(lambda: _skips(h) >= 2)
        h.release.set()
        await h.until(lambda: len(h.started) >= 2)
        await h.close()
        actions = [t.action for t in await ledger.ticks(REF.uid)]
        assert actions[0] is TickAction.STARTED
        skipped = [t for t in await ledger.ticks(REF.uid) if t.action is TickAction.SKIPPED]
        assert len(skipped) >= 2
        assert {t.run for t in skipped} == {1}
        # A skipped tick never runs later: run 2 is for a tick after every skip.
        assert h.started[1].tick is not None
        assert h.started[1].tick > max(t.tick for t in skipped)
        assert [r.run for r in h.started[:2]] == [1, 2]


def _skips(h: Harness) -> int:
    return sum(1 for reason, _ in h.events.seen if reason == schedule.REASON_TICK_SKIPPED)


async def test_replace_stops_the_running_run_and_starts_anew(tmp_path: Path) -> None:
    async with await Ledger.open(tmp_path / "l.db") as ledger:
        h = Harness(ledger, scheduled(concurrencyPolicy="Replace"), created_at=time.time())
        h.start()
        await h.until(lambda: len(h.started) >= 2)
        await h.close()
        first = await ledger.get_campaign(h.started[0].run_uid)
        assert first is not None
        assert first.phase is Phase.FAILED  # replaced, its end recorded
        ticks_ = await ledger.ticks(REF.uid)
        assert [t.action for t in ticks_[:2]] == [TickAction.STARTED, TickAction.REPLACED]
        assert ticks_[1].run == 2
        assert any(reason == schedule.REASON_RUN_REPLACED for reason, _ in h.events.seen)


class StoppedClock:
    """Schedule time standing still: what the loop decides is what `decide` says at `now`."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now

    def real_seconds(self, schedule_seconds: float) -> float:
        return 3600.0


async def test_a_restart_after_missed_ticks_runs_once_for_the_latest(tmp_path: Path) -> None:
    async with await Ledger.open(tmp_path / "l.db") as ledger:
        # The operator acted on a tick at 12:00, then was down until 12:05:20.
        clock = StoppedClock(T0 + 5 * 60 + 20)
        h = Harness(ledger, scheduled(), created_at=T0 - 3600, clock=clock)
        h.release.set()
        await ledger.record_tick(REF.uid, T0, TickAction.STARTED, 1, T0)
        await ledger.record_run(RunRow("uid-s", "uid-s", 1, "", T0))
        await ledger.ensure_campaign(REF, {}, 1, "1", T0 + 1)
        await ledger.set_campaign_state(REF.uid, Phase.SUCCEEDED, Verdict.PASS, T0 + 30, finished=True)
        h.start()
        await h.until(lambda: len(h.started) >= 1)
        await asyncio.sleep(0.3)  # time for a second run, were there one
        await h.close()
        # One run, for the latest missed tick (12:05), not five.
        assert [(r.run, r.tick) for r in h.started] == [(2, T0 + 300)]
        started = [t for t in await ledger.ticks(REF.uid) if t.action is TickAction.STARTED]
        assert [(t.run, t.tick) for t in started] == [(1, T0), (2, T0 + 300)]
        assert any(message.endswith("(20s late)") for _, message in h.events.seen)


async def test_a_schedule_added_to_a_campaign_that_ran_catches_up_from_its_last_run(tmp_path: Path) -> None:
    async with await Ledger.open(tmp_path / "l.db") as ledger:
        clock = StoppedClock(T0 + 30)
        h = Harness(ledger, scheduled(), created_at=T0 - 86_400, clock=clock)
        await ledger.record_run(RunRow("uid-s", "uid-s", 1, ""))
        await ledger.ensure_campaign(REF, {}, 1, "1", T0 + 10)  # its one run began after 12:00
        await ledger.set_campaign_state(REF.uid, Phase.SUCCEEDED, Verdict.PASS, T0 + 20, finished=True)
        h.start()
        await h.until(lambda: bool(h.patches))
        await asyncio.sleep(0.3)
        await h.close()
        assert h.started == []  # 12:00 is before its last run: nothing to catch up


async def test_suspend_pauses_the_schedule_and_the_annotation_still_runs_by_hand(tmp_path: Path) -> None:
    async with await Ledger.open(tmp_path / "l.db") as ledger:
        h = Harness(ledger, {**scheduled(), "suspend": True}, created_at=time.time())
        h.release.set()
        h.start()
        await asyncio.sleep(0.5)  # five schedule minutes
        assert h.started == []
        assert h.patches[-1]["nextScheduleTime"] is None
        assert h.patches[-1]["conditions"][0]["reason"] == "Scheduled"
        h.token = "by-hand"
        h.wake.set()
        await h.until(lambda: len(h.started) == 1)
        await h.close()
        assert (h.started[0].token, h.started[0].tick) == ("by-hand", None)
        assert await ledger.ticks(REF.uid) == []


async def test_the_first_status_says_when_the_first_run_is(tmp_path: Path) -> None:
    async with await Ledger.open(tmp_path / "l.db") as ledger:
        h = Harness(ledger, scheduled(cron="0 0 1 1 *"), created_at=time.time())
        h.start()
        await h.until(lambda: bool(h.patches))
        await h.close()
        first = h.patches[0]
        assert first["phase"] == "Pending"
        assert first["lastScheduleTime"] is None
        assert first["nextScheduleTime"].endswith("-01-01T00:00:00Z")
        ready = next(c for c in first["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("True", "Scheduled")
        assert h.started == []
