"""What must hold after every run, checked from three independent sources: the ledger (the
operator's own account, read through `aftershock.ledger`), the API server's audit log and the
suite's pod watch (`watchers`), and the Campaign's status as the API server stores it.

Every check returns a list of problems (empty: it holds), so a test can assert on one
invariant and the summary can count across all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aftershock import stats
from aftershock.ledger import CampaignRow, Ledger
from aftershock.model import AttemptRecord, Outcome
from tests.reliability.watchers import AuditDelete, PodGone

#: Slack for comparing the operator's wall clock with the API server's (same machine, so only
#: the gap between taking a timestamp and the request reaching the server).
CLOCK_SLACK = 0.5


@dataclass(frozen=True)
class ClockShift:
    """The operator's wall clock ran `offset` seconds off from `start` to `end` (real time)."""

    start: float
    end: float
    offset: float

    def unshift(self, wall: float) -> float:
        """The real time at which the operator wrote `wall` (unambiguous for offsets larger than
        the shifted interval plus a little)."""
        real = wall - self.offset
        if self.start - 2.0 <= real <= self.end + 2.0:
            return real
        return wall


@dataclass
class LedgerView:
    campaign: CampaignRow
    attempts: list[AttemptRecord]
    completed: list[AttemptRecord]
    integrity: str
    counts: stats.AttemptCounts


async def _read(db: Path, namespace: str, names: Sequence[str]) -> tuple[dict[str, LedgerView], str]:
    async with await Ledger.open(db) as ledger:
        integrity = await ledger.integrity_check()
        views: dict[str, LedgerView] = {}
        for name in names:
            row = await ledger.find_campaign(namespace, name)
            if row is None:
                continue
            views[name] = LedgerView(
                campaign=row,
                attempts=await ledger.attempts(row.uid),
                completed=await ledger.completed_trials(row.uid),
                integrity=integrity,
                counts=await ledger.campaign_counts(row.uid),
            )
    return views, integrity


def read_ledger(db: Path, namespace: str, names: Sequence[str]) -> tuple[dict[str, LedgerView], str]:
    """Each named campaign's ledger view, and the file's ``PRAGMA integrity_check``."""
    return asyncio.run(_read(db, namespace, names))


def real_time(wall: float | None, shifts: Sequence[ClockShift]) -> float | None:
    """A wall-clock time the operator wrote, as real time (undoing known clock steps)."""
    if wall is None:
        return None
    for s in shifts:
        wall = s.unshift(wall)
    return wall


# --- trials -----------------------------------------------------------------------------------


def trial_accounting(view: LedgerView, requested: int) -> tuple[int, int, list[str]]:
    """(trials lost, duplicates, problems): completed indexes must be exactly 0..requested-1."""
    indexes = [a.trial_index for a in view.completed]
    lost = len(set(range(requested)) - set(indexes))
    duplicates = len(indexes) - len(set(indexes))
    problems = []
    if lost:
        problems.append(
            f"{lost} trial(s) of {requested} never completed: {sorted(set(range(requested)) - set(indexes))}"
        )
    if duplicates:
        problems.append(f"{duplicates} trial index(es) completed twice: {sorted(indexes)}")
    extra = sorted(set(indexes) - set(range(requested)))
    if extra:
        problems.append(f"completed indexes beyond the request: {extra}")
    for a in view.completed:
        if a.outcome is None or not a.outcome.completes_trial:
            problems.append(f"trial {a.trial_index} completed by an attempt that ended {a.outcome}")
    in_flight = [a for a in view.attempts if a.outcome is None]
    if in_flight:
        where = [(a.trial_index, a.attempt) for a in in_flight]
        problems.append(f"attempts still in flight after the campaign ended: {where}")
    # Attempt numbers per index are 1..n without gaps (nothing overwritten, nothing lost).
    by_index: dict[int, list[int]] = {}
    for a in view.attempts:
        by_index.setdefault(a.trial_index, []).append(a.attempt)
    for index, numbers in by_index.items():
        if sorted(numbers) != list(range(1, len(numbers) + 1)):
            problems.append(f"trial {index}: attempt numbers {sorted(numbers)} have a gap or a repeat")
    return lost, duplicates, problems


def interrupted_recorded(
    view: LedgerView, operator_kills: Sequence[float], shifts: Sequence[ClockShift]
) -> list[str]:
    """Every SIGKILL of the operator that fell inside an attempt left that attempt `interrupted`,
    with its reason; and no attempt claims to have finished across a SIGKILL."""
    problems = []
    for t in operator_kills:
        for a in view.attempts:
            start, end = real_time(a.started_at, shifts), real_time(a.finished_at, shifts)
            assert start is not None
            inside = start + 0.05 < t and (end is None or t < end - 0.05)
            if inside and a.outcome is not Outcome.INTERRUPTED:
                problems.append(
                    f"operator SIGKILLed at {t:.3f} during trial {a.trial_index} attempt {a.attempt} "
                    f"[{start:.3f}, {end}], which ended {a.outcome} instead of interrupted"
                )
    for a in view.attempts:
        if a.outcome is Outcome.INTERRUPTED and not a.error:
            problems.append(f"trial {a.trial_index} attempt {a.attempt}: interrupted without a reason")
    return problems


# --- kills ------------------------------------------------------------------------------------


@dataclass
class KillAccounting:
    matched: list[tuple[AuditDelete, AttemptRecord]]
    unintended: list[str]  # effective deletes by the operator that no attempt accounts for
    problems: list[str]
    double_kills: int


def _windows(view: LedgerView, shifts: Sequence[ClockShift]) -> list[tuple[float, float, AttemptRecord]]:
    ordered = sorted(view.attempts, key=lambda a: a.started_at)
    out = []
    for i, a in enumerate(ordered):
        start = real_time(a.started_at, shifts)
        assert start is not None
        end = real_time(a.finished_at, shifts)
        if end is None and i + 1 < len(ordered):
            end = real_time(ordered[i + 1].started_at, shifts)
        out.append((start, end if end is not None else float("inf"), a))
    return out


def kills_match_ledger(
    deletes: Sequence[AuditDelete],
    views: Sequence[LedgerView],
    namespace: str,
    shifts: Sequence[ClockShift] = (),
    api_outages: Sequence[tuple[float, float]] = (),
    gone: Sequence[PodGone] = (),
) -> KillAccounting:
    """Every pod DELETE by the operator's ServiceAccount (audit log) belongs to exactly one ledger
    attempt that chose that pod as a victim and was open at that moment; every attempt that
    recorded a kill has its delete in the audit log (or, when the API server was SIGKILLed around
    then and lost the audit line, its victim's UID is seen gone by the pod watch)."""
    windows = [w for v in views for w in _windows(v, shifts)]
    matched: list[tuple[AuditDelete, AttemptRecord]] = []
    unintended: list[str] = []
    problems: list[str] = []
    for d in deletes:
        if not d.by_operator:
            continue
        if d.namespace != namespace:
            (unintended if d.effective else problems).append(
                f"operator DELETE of pod {d.namespace}/{d.name} (code {d.code}) "
                "outside the campaign's namespace"
            )
            continue
        # Both clocks are this machine's: an attempt's row is written before its kill and finished
        # after the kill's answer, so its window holds the delete exactly; the slack is only a
        # fallback for the moments at its edges.
        owners = [
            a for lo, hi, a in windows if lo <= d.received <= hi and d.name in {v.name for v in a.victims}
        ]
        if not owners:
            owners = [
                a
                for lo, hi, a in windows
                if lo - CLOCK_SLACK <= d.received <= hi + CLOCK_SLACK
                and d.name in {v.name for v in a.victims}
            ]
        if len(owners) == 1:
            matched.append((d, owners[0]))
        elif not owners:
            (unintended if d.effective else problems).append(
                f"operator DELETE of pod {d.name} at {d.received:.3f} (code {d.code}) "
                "matches no ledger attempt"
            )
        else:
            problems.append(
                f"operator DELETE of pod {d.name} at {d.received:.3f} matches {len(owners)} attempts: "
                f"{[(a.trial_index, a.attempt) for a in owners]}"
            )
    double = 0
    by_attempt: dict[tuple[str, int, int], list[AuditDelete]] = {}
    for d, a in matched:
        by_attempt.setdefault((a.campaign_uid, a.trial_index, a.attempt), []).append(d)
    for (_, index, number), ds in by_attempt.items():
        names = [d.name for d in ds if d.effective]
        repeated = len(names) - len(set(names))
        if repeated:
            double += repeated
            unintended.append(
                f"trial {index} attempt {number}: {repeated} extra effective delete(s) of {names}"
            )
    gone_uids = {g.uid for g in gone}
    for v in views:
        for a in v.attempts:
            if "kill_sent" not in a.milestones:
                continue
            ds = by_attempt.get((a.campaign_uid, a.trial_index, a.attempt), [])
            for victim in a.victims:
                if any(d.name == victim.name for d in ds):
                    continue
                kill = real_time(a.milestones["kill_sent"].wall, shifts) or 0.0
                in_outage = any(lo - 2 <= kill <= hi + 2 for lo, hi in api_outages)
                if in_outage and victim.uid in gone_uids:
                    continue  # audit line lost with the API server; the pod watch saw the kill
                problems.append(
                    f"trial {a.trial_index} attempt {a.attempt} recorded killing {victim.name} but the audit "
                    "log has no DELETE of it by the operator in the attempt's window"
                )
    return KillAccounting(matched, unintended, problems, double)


def no_other_pod_deleted(
    gone: Sequence[PodGone],
    views: Sequence[LedgerView],
    deletes: Sequence[AuditDelete],
    protected: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[list[str], list[str]]:
    """(unexplained, simulator): every pod the suite's watch saw disappear is a ledger victim (by
    UID), or was deleted by kwok-controller's by-name finalising delete (audit log: user agent
    ``kwok-controller/...``, same name, within seconds before it vanished; docs/adr/0005), or is
    unexplained. Pods whose name is in `protected` must never be among the victims at all."""
    victim_uids = {
        v.uid
        for view in views
        for a in view.attempts
        for v in a.victims
        if "kill_sent" in a.milestones or a.outcome is not None
    }
    unexplained, simulator = [], []
    for g in gone:
        if g.uid in victim_uids:
            if g.name in protected:
                unexplained.append(f"protected pod {g.name} ({g.uid}) was a victim")
            continue
        kwok = [
            d
            for d in deletes
            if d.by_kwok and d.name == g.name and d.effective and g.seen - 10 <= d.received <= g.seen + 1
        ]
        if kwok:
            simulator.append(f"{g.name} ({g.uid}) deleted by kwok-controller's by-name finalising delete")
            continue
        who = [
            f"{d.user} ({d.user_agent.split(' ')[0]}) code {d.code}"
            for d in deletes
            if d.name == g.name and g.seen - 10 <= d.received <= g.seen + 1
        ]
        unexplained.append(
            f"{g.name} ({g.uid}) {g.how} at {g.seen:.3f}; deletes of that name nearby: {who or 'none'}"
        )
    return unexplained, simulator


def gate_before_kill(
    views: Sequence[LedgerView], matched: Sequence[tuple[AuditDelete, AttemptRecord]]
) -> list[str]:
    """No kill without a passed steady-state gate before it, provable from the ledger: every
    attempt that recorded a kill, and every attempt the audit log shows killing, has its
    `gate_passed` milestone, at or before `kill_sent`."""
    problems = []
    killed = {(a.campaign_uid, a.trial_index, a.attempt) for d, a in matched if d.effective}
    for v in views:
        for a in v.attempts:
            key = (a.campaign_uid, a.trial_index, a.attempt)
            if "kill_sent" not in a.milestones and key not in killed:
                continue
            gate = a.milestones.get("gate_passed")
            kill = a.milestones.get("kill_sent")
            if gate is None:
                problems.append(
                    f"trial {a.trial_index} attempt {a.attempt} ({a.outcome}) killed "
                    f"{[x.name for x in a.victims]} but the ledger holds no gate_passed for it"
                )
            elif kill is not None and not (
                gate.offset <= kill.offset and gate.wall <= kill.wall + CLOCK_SLACK
            ):
                problems.append(f"trial {a.trial_index} attempt {a.attempt}: gate_passed after kill_sent")
    return problems


# --- status -----------------------------------------------------------------------------------


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def status_matches_ledger(status: dict[str, Any], view: LedgerView) -> list[str]:
    """The Campaign's status is the projection of its ledger: progress, counts, percentiles and
    phase recomputed here from the ledger's rows with `aftershock.stats`."""
    requested = view.campaign.requested_trials
    summary = stats.summarize(stats.recovery_times(view.completed))
    c = view.counts
    expected = {
        "phase": view.campaign.phase.value,
        "progress": f"{len(view.completed)}/{requested}",
        "trials": {
            "requested": requested,
            "completed": c.completed,
            "failed": c.unrecovered,
            "interrupted": c.interrupted,
            "infraErrors": c.infra_error,
        },
        "p50Seconds": _r(summary.p50),
        "p95Seconds": _r(summary.p95),
        "verdict": view.campaign.verdict.value,
    }
    actual = {
        "phase": status.get("phase"),
        "progress": status.get("progress"),
        "trials": status.get("trials"),
        "p50Seconds": (status.get("recovery") or {}).get("p50Seconds"),
        "p95Seconds": (status.get("recovery") or {}).get("p95Seconds"),
        "verdict": status.get("verdict"),
    }
    return [
        f"status.{k}: {actual[k]!r} != ledger {expected[k]!r}" for k in expected if actual[k] != expected[k]
    ]
