"""Scheduled Campaigns (``spec.schedule``): a new run at each tick of a cron schedule, on the
same run mechanism as the ``aftershock.dev/run`` annotation (`aftershock.engine.runs`).

What a tick does (ADR 0015):

- nothing on apply: the first run is at the first tick after the Campaign was created, unless
  the annotation asks for one (present at creation, or changed later: a run now, by hand);
- a tick while a run still goes: ``Forbid`` skips it, ``Replace`` stops that run (its attempt in
  flight recorded ``interrupted``, the run ``Failed``) and starts a new one;
- ticks missed while the operator was down, or suspended: only the latest one runs, and only
  within ``startingDeadlineSeconds`` of its time; never a burst. Every tick acted on is
  recorded in the ledger (`TickAction`), so a tick is acted on once across restarts;
- ``spec.suspend`` pauses the schedule (and a run in progress, as before).

No polling: between ticks the loop sleeps until the next tick, woken early only by a change to
the Campaign (`wake`, set by the handlers on its watch events) or a stop. The clock is a port
(`ScheduleClock`): the operator's ``--schedule-clock ORIGIN:SPEED`` runs schedule time faster
than wall time, so the end-to-end tests see a per-minute cron tick every few seconds.

Plain asyncio over ports; no kopf, no API client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aftershock.engine import retention, runs
from aftershock.engine.ports import EventSink, LedgerPort, StopSignal
from aftershock.engine.status import READY, RECONCILING, STALLED, Conditions, iso
from aftershock.errors import SpecError
from aftershock.ledger import RunRow, TickAction
from aftershock.model import (
    CampaignRef,
    ConcurrencyPolicy,
    Phase,
    ScheduleSpec,
    Verdict,
    parse_campaign_spec,
    read_suspend,
)

log = logging.getLogger(__name__)

#: Event reasons.
REASON_TICK_SKIPPED = "ScheduleTickSkipped"
REASON_TICK_MISSED = "ScheduleTickMissed"
REASON_RUN_REPLACED = "RunReplaced"
REASON_SCHEDULED = "Scheduled"


class ScheduleClock(Protocol):
    """Schedule time: what the cron expression is read against."""

    def now(self) -> float:
        """Unix seconds on the schedule's clock."""

    def real_seconds(self, schedule_seconds: float) -> float:
        """How long to really wait for `schedule_seconds` to pass on the schedule's clock."""


class WallScheduleClock:
    """The wall clock: what the operator uses unless told otherwise."""

    def now(self) -> float:
        return time.time()

    def real_seconds(self, schedule_seconds: float) -> float:
        return schedule_seconds


@dataclass(frozen=True)
class ScaledScheduleClock:
    """Schedule time running `speed` times faster than wall time from `origin` (Unix seconds)
    on: ``origin + (wall - origin) * speed``. For tests (``--schedule-clock ORIGIN:SPEED``):
    a fixed origin keeps it continuous across operator restarts."""

    origin: float
    speed: float

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError(f"the schedule clock's speed must be positive, got {self.speed}")

    def now(self) -> float:
        return self.origin + (time.time() - self.origin) * self.speed

    def real_seconds(self, schedule_seconds: float) -> float:
        return schedule_seconds / self.speed


def parse_clock(text: str) -> ScheduleClock:
    """``ORIGIN:SPEED`` (``--schedule-clock``); raises ValueError saying what is wrong."""
    origin, sep, speed = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return ScaledScheduleClock(float(origin), float(speed))
    except ValueError:
        raise ValueError(f"{text!r}: give ORIGIN:SPEED, e.g. {int(time.time())}:30") from None


@dataclass(frozen=True)
class TickDecision:
    """What the schedule asks for now."""

    #: The tick to start a run for now (None: none).
    due: float | None
    #: The latest tick, past its deadline: recorded as missed, not run.
    missed: float | None
    #: The next tick after now.
    next_tick: float


def decide(
    schedule: ScheduleSpec, *, last_acted: float | None, created_at: float, now: float
) -> TickDecision:
    """The tick to act on at `now`: the latest tick at or before `now` that is after both the
    last tick acted on and the Campaign's creation (no run on apply), when within the deadline.
    Earlier missed ticks are never run: at most one catch-up."""
    floor = max(created_at, last_acted if last_acted is not None else created_at)
    latest = schedule.cron.latest_at_or_before(now)
    next_tick = schedule.cron.next_after(now)
    if latest is None or latest <= floor:
        return TickDecision(None, None, next_tick)
    deadline = schedule.starting_deadline_seconds
    if deadline is not None and now - latest > deadline:
        return TickDecision(None, latest, next_tick)
    return TickDecision(latest, None, next_tick)


class _RunStop:
    """The runner's stop: kopf's (deletion, operator exit) or this schedule's own (Replace)."""

    def __init__(self, outer: StopSignal) -> None:
        self._outer = outer
        self._replace = asyncio.Event()

    def replace(self) -> None:
        self._replace.set()

    def is_set(self) -> bool:
        return self._outer.is_set() or self._replace.is_set()

    @property
    def deleted(self) -> bool:
        return self._outer.deleted

    async def wait(self, timeout: float | None = None) -> bool:
        outer = asyncio.ensure_future(self._outer.wait(timeout))
        own = asyncio.ensure_future(self._replace.wait())
        try:
            await asyncio.wait({outer, own}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (outer, own):
                task.cancel()
            await asyncio.gather(outer, own, return_exceptions=True)
        return self.is_set()


#: Starts (or resumes) `run` and returns the phase it ended in; the handler builds the runner.
RunStarter = Callable[[RunRow, StopSignal], Awaitable[Phase]]
StatusPatcher = Callable[[Mapping[str, Any]], Awaitable[None]]


@dataclass(kw_only=True, eq=False)
class ScheduledCampaign:
    """One scheduled Campaign's loop: runs at its ticks until it is deleted or unscheduled."""

    ref: CampaignRef
    ledger: LedgerPort
    clock: ScheduleClock
    #: Live views (kopf's, kept current by its watch): reading them costs nothing.
    spec_source: Callable[[], Mapping[str, Any]]
    token_source: Callable[[], str]
    generation_source: Callable[[], int]
    status_source: Callable[[], Mapping[str, Any]]
    created_at: float
    start_run: RunStarter
    patch_status: StatusPatcher
    events: EventSink
    #: Set by the handlers on each watch event of the Campaign: look again.
    wake: asyncio.Event
    allow_loopback_pd: bool = False
    _published: dict[str, Any] | None = None

    def _schedule(self) -> ScheduleSpec | None:
        try:
            spec = parse_campaign_spec(self.spec_source(), allow_loopback_pd=self.allow_loopback_pd)
        except SpecError as exc:
            log.debug("campaign %s/%s: no schedule to serve: %s", self.ref.namespace, self.ref.name, exc)
            return None
        return spec.schedule

    async def serve(self, stop: StopSignal) -> None:
        """Until `stop`, or until the spec has no (valid) schedule any more."""
        while not stop.is_set():
            self.wake.clear()
            schedule = self._schedule()
            if schedule is None:
                return
            run = await self._next_run(schedule)
            while run is not None and not stop.is_set():
                replacing = await self._run(run, schedule, stop)
                run = None if replacing is None else await self._replace(replacing)
            # The schedule may have changed while a run went.
            schedule = self._schedule() or schedule
            if run is None and not stop.is_set():
                await self._idle(schedule, stop)

    async def _next_run(self, schedule: ScheduleSpec) -> RunRow | None:
        """The run to go on with: one left unfinished (the operator restarted mid-run), one the
        annotation asks for, or one for a due tick; None: nothing now."""
        uid = self.ref.uid
        latest = await self.ledger.latest_run(uid)
        token = self.token_source()
        # Ticks before the latest run began are not missed ticks (a schedule added to a
        # Campaign that ran before catches up from its last run, not from its creation).
        floor = self.created_at
        if latest is not None:
            row = await self.ledger.get_campaign(latest.run_uid)
            if row is None or not (row.phase.finished or row.phase is Phase.DELETED):
                return latest
            floor = max(floor, row.created_at)
        if token != (latest.token if latest is not None else ""):
            log.info("campaign %s/%s: a run asked for by its annotation", self.ref.namespace, self.ref.name)
            return await runs.resolve(self.ledger, self.ref, token)
        if read_suspend(self.spec_source()):
            return None
        last = await self.ledger.last_tick(uid)
        now = self.clock.now()
        decision = decide(schedule, last_acted=None if last is None else last.tick, created_at=floor, now=now)
        log.debug(
            "campaign %s/%s: schedule %r at %s: due %s, missed %s, next %s",
            self.ref.namespace,
            self.ref.name,
            schedule.cron.expression,
            iso(now),
            iso(decision.due),
            iso(decision.missed),
            iso(decision.next_tick),
        )
        if decision.missed is not None and await self.ledger.record_tick(
            uid, decision.missed, TickAction.MISSED, None, time.time()
        ):
            await self._emit(
                "Warning",
                REASON_TICK_MISSED,
                f"the tick at {iso(decision.missed)} was seen {now - decision.missed:.0f}s late, past "
                f"startingDeadlineSeconds ({schedule.starting_deadline_seconds}): not run",
            )
        if decision.due is None:
            return None
        run = await runs.start_new(self.ledger, self.ref, token, decision.due)
        await self.ledger.record_tick(uid, decision.due, TickAction.STARTED, run.run, time.time())
        late = now - decision.due
        await self._emit(
            "Normal",
            REASON_SCHEDULED,
            f"run {run.run} for the tick at {iso(decision.due)}"
            + (f" ({late:.0f}s late)" if late >= 1 else ""),
        )
        return run

    async def _run(self, run: RunRow, schedule: ScheduleSpec, stop: StopSignal) -> float | None:
        """Run `run` to its end, acting on the ticks that come meanwhile; then prune the runs
        beyond ``historyLimit``. Returns the tick that replaced it (Replace), else None."""
        await self._publish_times(schedule, running=True)
        run_stop = _RunStop(stop)
        task = asyncio.ensure_future(self.start_run(run, run_stop))
        replacing: float | None = None
        mark = self.clock.now()
        try:
            while not task.done():
                self.wake.clear()
                changed = self._schedule() or schedule
                if changed != schedule:  # edited meanwhile: the next tick moves
                    schedule = changed
                    await self._publish_times(schedule, running=True)
                waker = asyncio.ensure_future(self.wake.wait())
                wait = self._seconds_to_next(schedule, mark)
                await asyncio.wait({task, waker}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                if task.done() or stop.is_set():
                    break
                if self.clock.now() < schedule.cron.next_after(mark):
                    continue  # woken by a change to the Campaign, not by a tick
                mark = self.clock.now()
                replacing = await self._tick_during(run, schedule)
                if replacing is not None:
                    run_stop.replace()
                    break
            phase = await task
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if replacing is not None:
            now = time.time()
            await self.ledger.set_campaign_state(run.run_uid, Phase.FAILED, Verdict.NONE, now, finished=True)
            await self._emit(
                "Warning",
                REASON_RUN_REPLACED,
                f"run {run.run} stopped and replaced at the tick at {iso(replacing)} "
                "(concurrencyPolicy Replace)",
            )
        elif phase.finished:
            await self._prune(schedule)
        log.info("campaign %s/%s run %d ends in phase %s", self.ref.namespace, self.ref.name, run.run, phase)
        return replacing

    async def _prune(self, schedule: ScheduleSpec) -> None:
        """Retention: runs beyond ``historyLimit`` keep a summary row, not their attempts; the
        trend's baseline run (as the latest run's spec names it) is never pruned."""
        pruned = await retention.prune(
            self.ledger, self.ref.uid, keep=schedule.history_limit, finished_before=None, now=time.time()
        )
        if pruned:
            log.info(
                "campaign %s/%s: runs %s pruned to their summaries (historyLimit %d)",
                self.ref.namespace,
                self.ref.name,
                ", ".join(map(str, pruned)),
                schedule.history_limit,
            )

    async def _tick_during(self, run: RunRow, schedule: ScheduleSpec) -> float | None:
        """A tick (or a wake) while `run` goes: Forbid records a skip; Replace returns the tick."""
        if read_suspend(self.spec_source()):
            return None
        last = await self.ledger.last_tick(self.ref.uid)
        decision = decide(
            schedule,
            last_acted=None if last is None else last.tick,
            created_at=self.created_at,
            now=self.clock.now(),
        )
        if decision.due is None:
            return None
        if schedule.concurrency_policy is ConcurrencyPolicy.REPLACE:
            return decision.due
        if await self.ledger.record_tick(
            self.ref.uid, decision.due, TickAction.SKIPPED, run.run, time.time()
        ):
            await self._emit(
                "Normal",
                REASON_TICK_SKIPPED,
                f"the tick at {iso(decision.due)} is skipped: run {run.run} is still going "
                "(concurrencyPolicy Forbid)",
            )
        await self._publish_times(schedule, running=True)
        return None

    async def _replace(self, tick: float) -> RunRow:
        run = await runs.start_new(self.ledger, self.ref, self.token_source(), tick)
        await self.ledger.record_tick(self.ref.uid, tick, TickAction.REPLACED, run.run, time.time())
        return run

    async def _idle(self, schedule: ScheduleSpec, stop: StopSignal) -> None:
        """Between runs: say when the next one is, and sleep until then (or a change, or stop)."""
        await self._publish_times(schedule, running=False)
        now = self.clock.now()
        wait = None if read_suspend(self.spec_source()) else self._seconds_to_next(schedule, now)
        waker = asyncio.ensure_future(self.wake.wait())
        stopper = asyncio.ensure_future(stop.wait(wait))
        try:
            await asyncio.wait({waker, stopper}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waker, stopper):
                task.cancel()
            await asyncio.gather(waker, stopper, return_exceptions=True)

    def _seconds_to_next(self, schedule: ScheduleSpec, after: float) -> float:
        """Real seconds until the first tick after `after` (schedule time)."""
        # A hair past the tick, so that the tick is at or before "now" when the loop looks.
        left = schedule.cron.next_after(after) - self.clock.now()
        return max(self.clock.real_seconds(left), 0.0) + 0.01

    async def _publish_times(self, schedule: ScheduleSpec, *, running: bool) -> None:
        """``status.lastScheduleTime`` and ``nextScheduleTime``; before the first run also the
        conditions that say the schedule is in force (Ready: nothing to wait for until its
        first tick), with the generation acted on."""
        last = await self._last_started_tick()
        suspended = read_suspend(self.spec_source())
        patch: dict[str, Any] = {
            "lastScheduleTime": iso(last),
            "nextScheduleTime": None if suspended else iso(schedule.cron.next_after(self.clock.now())),
        }
        status = self.status_source()
        if not running and await self.ledger.latest_run(self.ref.uid) is None:
            generation = self.generation_source()
            conditions = Conditions(status.get("conditions"), generation)
            now = time.time()
            if suspended:
                message = "schedule suspended: set spec.suspend to false to resume it"
            else:
                message = f"scheduled: the first run is at {patch['nextScheduleTime']}"
            conditions.set(READY, True, REASON_SCHEDULED, message, now)
            conditions.set(RECONCILING, False, REASON_SCHEDULED, message, now)
            conditions.set(STALLED, False, REASON_SCHEDULED, "", now)
            conditions.observe(generation)
            patch |= {
                "phase": Phase.PENDING.value,
                "message": message,
                "observedGeneration": generation,
                "conditions": conditions.to_list(),
            }
        elif not running:
            # Between runs the last run's status stands; only the generation follows the spec.
            generation = self.generation_source()
            if status.get("observedGeneration") != generation:
                conditions = Conditions(status.get("conditions"), generation)
                conditions.observe(generation)
                patch |= {"observedGeneration": generation, "conditions": conditions.to_list()}
        if patch == self._published:
            return
        try:
            await self.patch_status(patch)
            self._published = patch
        except Exception as exc:  # the next look publishes it again
            log.warning("publishing the schedule of %s/%s failed: %s", self.ref.namespace, self.ref.name, exc)

    async def _last_started_tick(self) -> float | None:
        ticks = await self.ledger.ticks(self.ref.uid)
        started = [t.tick for t in ticks if t.action in (TickAction.STARTED, TickAction.REPLACED)]
        return started[-1] if started else None

    async def _emit(self, type_: str, reason: str, message: str) -> None:
        try:
            await self.events.emit(type_, reason, message)
        except Exception as exc:
            log.warning("emitting event %s failed: %s", reason, exc)
