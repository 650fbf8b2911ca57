"""Watching one recovery: pod events and the subject's own API fed to the `RecoveryTracker`
until the subject is recovered and has stayed so for the settle window (and, with
``spec.remediator.quietSeconds``, the remediator has been quiet: `QuietWait`), or the timeout;
and the write probe that runs beside it for subjects that take writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aftershock.engine import lifecycle
from aftershock.engine.observe import RecoveryTracker
from aftershock.engine.outcomes import look_jitter
from aftershock.engine.ports import (
    Clock,
    NamespaceApi,
    ProbeUnavailableError,
    RemediatorActivity,
    StopSignal,
    SubjectProbe,
)
from aftershock.engine.view import Observation, PodView, next_observation
from aftershock.errors import ApiError
from aftershock.model import CampaignSpec, Milestone, Outcome

#: Seconds between two looks at whether the namespace is being deleted, while pods go.
NAMESPACE_LOOK_INTERVAL = 5.0


log = logging.getLogger(__name__)


@dataclass
class QuietWait:
    """The end of a trial with ``spec.remediator.quietSeconds``: after the recovery and its
    settle window, until the remediator has done nothing for `quiet_seconds`, counted from the
    later of the recovery (seen) and its last action seen, so an action during the wait extends
    it. At most `cap_seconds` after the recovery was seen: a remediator that never stops must
    not hold the trial forever (``capped`` is recorded). A relapse during the wait is one, as
    in the settle window: the trial was not over. Never part of the recovery time."""

    quiet_seconds: float
    cap_seconds: float
    activity: RemediatorActivity
    #: Set when the trial ended: the wait stopped at the cap, not because the remediator was quiet.
    capped: bool = False
    #: When the trial ended (monotonic), once it did.
    ended_mono: float | None = None

    def until(self, recovered_seen: float, settled: float) -> float:
        """When the trial may end (monotonic), as things stand: `settled` is the settle
        window's end."""
        return min(self._wanted(recovered_seen, settled), self._cap(recovered_seen, settled))

    def end(self, recovered_seen: float, settled: float, now: float) -> None:
        self.ended_mono = now
        self.capped = self._wanted(recovered_seen, settled) > self._cap(recovered_seen, settled)

    def _wanted(self, recovered_seen: float, settled: float) -> float:
        last = self.activity.last_action_mono()
        since = recovered_seen if last is None else max(recovered_seen, last)
        return max(settled, since + self.quiet_seconds)

    def _cap(self, recovered_seen: float, settled: float) -> float:
        return max(settled, recovered_seen + self.cap_seconds)

    def summary(self, kill_mono: float, recovered_seen: float | None) -> dict[str, Any]:
        """``final_state["quietWait"]``: what the wait was and how it ended (offsets from the
        kill; None: the trial did not end by it)."""
        last = self.activity.last_action_mono()
        return {
            "quietSeconds": self.quiet_seconds,
            "capSeconds": self.cap_seconds,
            "recoveredSeenOffset": None if recovered_seen is None else recovered_seen - kill_mono,
            "lastActionOffset": None if last is None or last < kill_mono else last - kill_mono,
            "endedOffset": None if self.ended_mono is None else self.ended_mono - kill_mono,
            "capped": self.capped,
        }


def quiet_wait(spec: CampaignSpec, activity: RemediatorActivity | None) -> QuietWait | None:
    """The trial's quiet wait, when its Campaign asks for one and its actions are seen."""
    rem = spec.remediator
    if rem is None or rem.quiet_seconds is None or activity is None:
        return None
    return QuietWait(rem.quiet_seconds, spec.recovery_timeout_seconds, activity)


@dataclass(frozen=True)
class Watch:
    spec: CampaignSpec
    view: PodView
    probe: SubjectProbe | None
    clock: Clock
    probe_interval: float
    #: The Campaign's namespace, and where to ask whether it is being deleted (None: never asked).
    namespace: str = ""
    namespaces: NamespaceApi | None = None
    #: The end after the recovery (``spec.remediator.quietSeconds``); None: the settle window's.
    quiet: QuietWait | None = None
    #: Awaited once, when the subject is first judged recovered (the trial goes on: settle
    #: window, quiet wait), with the recovered milestone's offset from the kill.
    on_recovered: Callable[[float], Awaitable[None]] | None = None


def _trial_end(w: Watch, tracker: RecoveryTracker, now: float) -> float:
    """When a recovered trial ends (monotonic): the settle window's end, or the quiet wait's."""
    seen = tracker.recovered_seen_mono
    seen = now if seen is None else seen
    settled = seen + w.spec.recovery_settle_seconds
    return settled if w.quiet is None else w.quiet.until(seen, settled)


def _goes(tracker: RecoveryTracker, obs: Observation) -> bool:
    """A pod other than a victim is going: the first sign of a namespace deletion, which
    deletes the namespace's pods before its Campaigns."""
    going = obs.type == "DELETED" or obs.pod.deleting
    return going and obs.pod.uid not in {v.uid for v in tracker.victims}


async def _namespace_deleting(w: Watch) -> bool:
    if w.namespaces is None:
        return False
    try:
        return await w.namespaces.namespace_deleting(w.namespace)
    except ApiError as exc:
        log.debug("cannot tell whether namespace %s is being deleted: %s", w.namespace, exc)
        return False


def _relapse_error(tracker: RecoveryTracker) -> str:
    relapsed, recovered = tracker.milestones["relapsed"], tracker.milestones["recovered"]
    return (
        f"relapsed {relapsed.offset - recovered.offset:.3f}s after recovering "
        f"({relapsed.offset:.3f}s after the kill): {tracker.relapse_reason}"
    )


def _next_probe_due(w: Watch, tracker: RecoveryTracker, last: float | None, jitter: float) -> float | None:
    """When the next look is due; `jitter`: drawn once per look (`look_jitter`)."""
    if w.probe is None or tracker.judge is None:
        return None
    interval = tracker.judge.probe_interval(tracker.back in tracker.milestones, w.probe_interval)
    if interval is None:
        return None
    if last is None:
        return w.clock.monotonic()
    due = last + interval * jitter
    # The subject's own moment for a look (PD: just as a heartbeat is due), not jittered: it is
    # aimed. Only one after the last look counts; one already past is not chased.
    aimed = tracker.probe.look_at if tracker.probe is not None else None
    if aimed is not None and last < aimed < due:
        return aimed
    return due


def _verdict(
    w: Watch, tracker: RecoveryTracker, probe_error: str | None
) -> tuple[Outcome, str | None] | None:
    """The trial's end, if it has come; None while it goes on."""
    now = w.clock.monotonic()
    spec = w.spec
    if tracker.recovered:
        # Keep watching for the settle window: a relapse is recorded, never a success.
        if tracker.relapsed:
            return Outcome.UNRECOVERED, _relapse_error(tracker)
        if now < _trial_end(w, tracker, now):
            return None
        if w.quiet is not None:
            seen = tracker.recovered_seen_mono
            seen = now if seen is None else seen
            w.quiet.end(seen, seen + spec.recovery_settle_seconds, now)
        return Outcome.RECOVERED, None
    if now < tracker.kill_sent_mono + spec.recovery_timeout_seconds:
        return None
    if probe_error is not None and tracker.back in tracker.milestones and tracker.pods_healthy():
        unavailable = f"the subject's API stayed unavailable until the recovery timeout: {probe_error}"
        return Outcome.INFRA_ERROR, unavailable
    pending = "; ".join(tracker.pending()) or "unknown"
    return Outcome.UNRECOVERED, f"not recovered within {spec.recovery_timeout_seconds:g}s: {pending}"


def _pods_part(tracker: RecoveryTracker) -> tuple[bool, bool]:
    """What the pod watch completes of a recovery: every victim back (the kind's milestone),
    the pods healthy."""
    return tracker.back in tracker.milestones, tracker.pods_healthy()


def _look_now_if_pods_did_their_part(
    tracker: RecoveryTracker, before: tuple[bool, bool], last_probe: float | None
) -> tuple[float | None, tuple[bool, bool]]:
    """(The last look, or None to look now; the pods' part as it is.) The pods just did their
    part (a victim back, the pods healthy): the subject is looked at now, not at the next tick,
    so that the recovery is stamped when the watch says so and not up to an interval and a half
    later (0.14 s late on the real node with 0.1 s looks, against a watch of the test's own).
    Once per such change."""
    now = _pods_part(tracker)
    if any(done and not was for was, done in zip(before, now, strict=True)):
        return None, now
    return last_probe, now


async def observe(
    w: Watch, tracker: RecoveryTracker, queue: asyncio.Queue[Observation], stop: StopSignal
) -> tuple[Outcome, str | None]:
    clock = w.clock
    deadline = tracker.kill_sent_mono + w.spec.recovery_timeout_seconds
    last_probe: float | None = None
    jitter = look_jitter()
    probe_error: str | None = None
    # Pods other than the victims going, and when the namespace may next be looked at.
    going, next_look = False, 0.0
    announced = False
    pods_part = _pods_part(tracker)

    def drain() -> None:
        nonlocal going
        while not queue.empty():
            queued = queue.get_nowait()
            tracker.observe_pod(queued.type, queued.pod, queued.mono, queued.wall)
            going = going or _goes(tracker, queued)

    while True:
        drain()
        last_probe, pods_part = _look_now_if_pods_did_their_part(tracker, pods_part, last_probe)
        if going and clock.monotonic() >= next_look:
            # Before the verdict: the namespace controller's deletes are not a relapse.
            going, next_look = False, clock.monotonic() + NAMESPACE_LOOK_INTERVAL
            if await _namespace_deleting(w):
                return Outcome.INTERRUPTED, lifecycle.NAMESPACE_DELETED_MID_ATTEMPT
        due = _next_probe_due(w, tracker, last_probe, jitter)
        if w.probe is not None and due is not None and clock.monotonic() >= due:
            last_probe, jitter = clock.monotonic(), look_jitter()
            asked = (last_probe, clock.wall())
            try:
                result = await w.probe.check(w.view.pods(), asked[1])
                # What the pod watch said while the look was out, first: the answer is judged
                # with the pods as they are when it is in (a replacement Ready meanwhile counts
                # at this look, not at one more look later).
                drain()
                tracker.observe_probe(result, clock.monotonic(), clock.wall(), asked)
                probe_error = None
            except ProbeUnavailableError as exc:
                probe_error = str(exc)
        if tracker.recovered and not announced:
            announced = True
            if w.on_recovered is not None:
                await w.on_recovered(tracker.milestones["recovered"].offset)
        ended = _verdict(w, tracker, probe_error)
        if ended is not None:
            return ended
        if stop.is_set():
            return Outcome.INTERRUPTED, lifecycle.interrupted_reason(stop)
        wake = deadline
        if tracker.recovered:
            # With a quiet wait, an action seen meanwhile moves this later: the loop wakes at
            # least once a second (below) and asks again.
            wake = _trial_end(w, tracker, clock.monotonic())
        due = _next_probe_due(w, tracker, last_probe, jitter)
        if due is not None:
            wake = min(wake, due)
        obs = await next_observation(queue, min(wake - clock.monotonic(), 1.0))
        if obs is not None:
            tracker.observe_pod(obs.type, obs.pod, obs.mono, obs.wall)
            going = going or _goes(tracker, obs)


@dataclass
class WriteWindow:
    """What the write probe saw: how many writes, how many failed, and when writes first
    failed and were first back after the last failure (offsets from the kill)."""

    ok: int = 0
    failed: int = 0
    first_failed: Milestone | None = None
    restored: Milestone | None = None
    last_error: str | None = None
    #: The longest write-and-read-back that succeeded: a leader change can stall writes well
    #: under the timeout without failing any, and users feel that too.
    slowest: float = 0.0
    _failing: bool = field(default=False, repr=False)

    def milestones(self) -> dict[str, Milestone]:
        found: dict[str, Milestone] = {}
        if self.first_failed is not None:
            found["writes_failed"] = self.first_failed
        if self.restored is not None:
            found["writes_restored"] = self.restored
        return found

    def summary(self) -> dict[str, Any]:
        unavailable = None
        if self.first_failed is not None and self.restored is not None:
            unavailable = round(self.restored.offset - self.first_failed.offset, 6)
        elif self.first_failed is None:
            unavailable = 0.0
        return {
            "ok": self.ok,
            "failed": self.failed,
            "unavailableSeconds": unavailable,
            "lastError": self.last_error,
            "slowestSeconds": round(self.slowest, 6),
        }


@contextlib.asynccontextmanager
async def write_probe(
    probe: SubjectProbe | None,
    *,
    key: str,
    clock: Clock,
    kill_mono: float,
    interval: float,
    timeout: float,
    limit: int,
) -> AsyncIterator[WriteWindow | None]:
    """Writes and reads `key` every `interval` while the block runs (at most `limit` times):
    what the subject's users feel during the trial. None for a subject without writes."""
    if probe is None or not probe.writes:
        yield None
        return
    window = WriteWindow()

    async def loop() -> None:
        for n in range(limit):
            started = clock.monotonic()
            try:
                await probe.write_and_read(key, f"{n}@{clock.wall():.6f}", timeout)
            except ProbeUnavailableError as exc:
                window.failed += 1
                window.last_error = str(exc)
                if window.first_failed is None:
                    window.first_failed = Milestone(clock.wall(), started - kill_mono)
                window._failing = True
            else:
                window.ok += 1
                window.slowest = max(window.slowest, clock.monotonic() - started)
                if window._failing:
                    window.restored = Milestone(clock.wall(), clock.monotonic() - kill_mono)
                    window._failing = False
            await asyncio.sleep(max(0.0, started + interval - clock.monotonic()))

    task = asyncio.create_task(loop(), name=f"writes-{key}")
    try:
        yield window
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
