"""A Campaign's runs over time: the schedule's ticks, each run's summary and judgements (the
trend), and retention (pruning old runs to a summary row). A part of `Ledger`."""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Final

import aiosqlite

from aftershock import stats
from aftershock.ledger import attempts, sql
from aftershock.ledger.connection import Connection
from aftershock.model import Phase, Verdict


class TickAction(enum.StrEnum):
    """What the operator did at a tick of a Campaign's schedule."""

    #: A run started for it.
    STARTED = "started"
    #: A run was still going and ``concurrencyPolicy`` is ``Forbid``: nothing started.
    SKIPPED = "skipped"
    #: A run was still going and ``concurrencyPolicy`` is ``Replace``: it was stopped, a run started.
    REPLACED = "replaced"
    #: Seen too late (past ``startingDeadlineSeconds``, the operator down meanwhile): not run.
    MISSED = "missed"


@dataclass(frozen=True)
class TickRow:
    tick: float
    action: TickAction
    #: The run it started (STARTED, REPLACED), or the run that was going (SKIPPED).
    run: int | None
    recorded_at: float


@dataclass(frozen=True)
class Judgement:
    """One finished run against an earlier one (``against``: ``previous`` or ``baseline``)."""

    run: int
    against: str
    against_run: int
    #: Improved, Regressed, NoChange, or NotCompared (a side had no recovered trial).
    verdict: str
    p_value: float | None
    median_difference: float | None
    low: float | None
    high: float | None
    message: str
    judged_at: float


@dataclass(frozen=True)
class RunSummary:
    """One run of a Campaign as the trend shows it: from its attempts, or from the summary row
    kept when its attempts were pruned."""

    run: int
    run_uid: str
    token: str
    phase: Phase
    verdict: Verdict
    started_at: float | None
    finished_at: float | None
    recovered: int
    unrecovered: int
    completed: int
    summary: stats.RecoverySummary
    pruned: bool
    judgements: tuple[Judgement, ...] = ()

    def judged(self, against: str) -> Judgement | None:
        return next((j for j in self.judgements if j.against == against), None)


_RUNS_OF: Final = (
    "SELECT coalesce(r.run, 1), c.uid, coalesce(r.token, ''), c.phase, c.verdict, c.started_at, "
    "c.finished_at, s.recovered, s.unrecovered, s.completed, s.p50, s.p95, s.max, s.mean "
    "FROM campaigns c LEFT JOIN runs r ON r.run_uid = c.uid LEFT JOIN run_summaries s ON s.run_uid = c.uid "
    "WHERE coalesce(r.campaign_uid, c.uid) = ? ORDER BY coalesce(r.run, 1)"
)


class History(Connection):
    """Ticks, judgements, run summaries and pruning (a part of `aftershock.ledger.store.Ledger`)."""

    # --- the schedule's ticks ---------------------------------------------------------------

    async def record_tick(
        self, campaign_uid: str, tick: float, action: TickAction, run: int | None, now: float
    ) -> bool:
        """Record what was done at `tick`; False (and nothing changed) when it was recorded
        before: a tick is acted on once, whatever restarts happen."""
        async with self._transaction("recording a schedule tick") as tx:
            cursor = await tx.execute(
                "INSERT INTO schedule_ticks (campaign_uid, tick, action, run, recorded_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (campaign_uid, tick, action.value, run, now),
            )
            return cursor.rowcount == 1

    async def ticks(self, campaign_uid: str) -> list[TickRow]:
        """Every tick acted on, oldest first."""
        async with self._read("reading schedule ticks") as db:
            rows = await sql.rows(
                db,
                "SELECT tick, action, run, recorded_at FROM schedule_ticks WHERE campaign_uid = ? "
                "ORDER BY tick",
                (campaign_uid,),
            )
        return [
            TickRow(float(t), TickAction(a), None if r is None else int(r), float(at)) for t, a, r, at in rows
        ]

    async def last_tick(self, campaign_uid: str) -> TickRow | None:
        """The latest tick acted on: a missed tick after it is caught up once, never twice."""
        found = await self.ticks(campaign_uid)
        return found[-1] if found else None

    # --- runs and their judgements ----------------------------------------------------------

    async def record_judgement(self, run_uid: str, judgement: Judgement) -> None:
        """Record (or replace: a run judged again gives the same answer) one judgement."""
        j = judgement
        async with self._transaction("recording a run's judgement") as tx:
            await tx.execute(
                "INSERT OR REPLACE INTO run_judgements (run_uid, against, against_run, verdict, p_value, "
                "median_difference, low, high, message, judged_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_uid,
                    j.against,
                    j.against_run,
                    j.verdict,
                    j.p_value,
                    j.median_difference,
                    j.low,
                    j.high,
                    j.message,
                    j.judged_at,
                ),
            )

    async def run_summaries(self, campaign_uid: str) -> list[RunSummary]:
        """Every run of the Campaign (the object's uid), oldest first, with its judgements."""
        async with self._read("reading a campaign's runs") as db:
            rows = await sql.rows(db, _RUNS_OF, (campaign_uid,))
            found = []
            for row in rows:
                judged = await _judgements(db, int(row[0]), str(row[1]))
                found.append(await _summary(db, row, judged))
        return found

    async def recovery_times_of(self, run_uid: str) -> list[float] | None:
        """The recovered trials' recovery seconds of one run, by trial index; None when its
        attempts were pruned."""
        async with self._read("reading a run's recovery times") as db:
            if await sql.scalar(db, "SELECT 1 FROM run_summaries WHERE run_uid = ?", (run_uid,)):
                return None
            done = await attempts.load_completed(db, run_uid)
        return stats.recovery_times(done)

    # --- retention ------------------------------------------------------------------------------

    async def prune_runs(
        self,
        campaign_uid: str,
        *,
        keep: int,
        protect: Collection[int] = (),
        finished_before: float | None = None,
        now: float,
    ) -> list[int]:
        """Prune the Campaign's runs older than its `keep` newest: each pruned run's attempts
        (and their trials and milestones) are deleted, and one summary row is kept for the trend
        (`run_summaries`); its campaign and run rows stay. Never pruned: the newest run, runs in
        `protect` (the trend's baseline), runs not finished, runs with an attempt in flight.
        With `finished_before`, only runs finished before that time. Returns the pruned run
        numbers; a run pruned before is left alone."""
        keep = max(keep, 1)
        async with self._transaction("pruning old runs") as tx:
            rows = await sql.rows(tx, _RUNS_OF, (campaign_uid,))
            candidates = rows[: max(len(rows) - keep, 0)]
            pruned: list[int] = []
            for row in candidates:
                run, run_uid, phase, finished_at, summarized = (
                    int(row[0]),
                    str(row[1]),
                    str(row[3]),
                    row[6],
                    row[7] is not None,
                )
                if summarized or run in protect or phase not in _PRUNABLE or finished_at is None:
                    continue
                if finished_before is not None and finished_at >= finished_before:
                    continue
                if await sql.scalar(
                    tx, "SELECT 1 FROM attempts WHERE campaign_uid = ? AND outcome IS NULL", (run_uid,)
                ):
                    continue
                await _summarize_and_delete(tx, run_uid, now)
                pruned.append(run)
            return pruned

    async def campaign_uids(self, *, min_runs: int = 1) -> list[str]:
        """Every Campaign object's uid the ledger holds with at least `min_runs` runs."""
        async with self._read("listing campaigns") as db:
            rows = await sql.rows(
                db,
                "SELECT coalesce(r.campaign_uid, c.uid) FROM campaigns c "
                "LEFT JOIN runs r ON r.run_uid = c.uid GROUP BY 1 HAVING count(*) >= ? ORDER BY 1",
                (min_runs,),
            )
        return [str(r[0]) for r in rows]


#: Phases a run may be pruned in: it ended (Deleted: its Campaign went mid-run).
_PRUNABLE: Final = frozenset({Phase.SUCCEEDED.value, Phase.FAILED.value, Phase.DELETED.value})


async def _summarize_and_delete(tx: aiosqlite.Connection, run_uid: str, now: float) -> None:
    done = await attempts.load_completed(tx, run_uid)
    counts = stats.count_outcomes(a.outcome for a in done)
    summary = stats.summarize(stats.recovery_times(done))
    total = await sql.scalar(tx, "SELECT count(*) FROM attempts WHERE campaign_uid = ?", (run_uid,))
    await tx.execute(
        "INSERT INTO run_summaries (run_uid, recovered, unrecovered, completed, p50, p95, max, mean, "
        "attempts, pruned_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_uid,
            counts.recovered,
            counts.unrecovered,
            counts.completed,
            summary.p50,
            summary.p95,
            summary.max,
            summary.mean,
            int(total or 0),
            now,
        ),
    )
    owned = "SELECT id FROM attempts WHERE campaign_uid = ?"
    await tx.execute(f"DELETE FROM subject_milestones WHERE attempt_id IN ({owned})", (run_uid,))
    await tx.execute("DELETE FROM alert_notifications WHERE campaign_uid = ?", (run_uid,))
    await tx.execute("DELETE FROM trials WHERE campaign_uid = ?", (run_uid,))
    await tx.execute("DELETE FROM attempts WHERE campaign_uid = ?", (run_uid,))


async def _judgements(db: aiosqlite.Connection, run: int, run_uid: str) -> tuple[Judgement, ...]:
    rows = await sql.rows(
        db,
        "SELECT against, against_run, verdict, p_value, median_difference, low, high, message, judged_at "
        "FROM run_judgements WHERE run_uid = ? ORDER BY against DESC",
        (run_uid,),
    )
    return tuple(
        Judgement(
            run=run,
            against=str(r[0]),
            against_run=int(r[1]),
            verdict=str(r[2]),
            p_value=r[3],
            median_difference=r[4],
            low=r[5],
            high=r[6],
            message=str(r[7]),
            judged_at=float(r[8]),
        )
        for r in rows
    )


async def _summary(db: aiosqlite.Connection, row: tuple[Any, ...], judged: Iterable[Judgement]) -> RunSummary:
    run_uid = str(row[1])
    pruned = row[7] is not None
    if pruned:
        recovered, unrecovered, completed = int(row[7]), int(row[8]), int(row[9])
        p50, p95, high, mean = row[10:14]
        summary = stats.RecoverySummary(n=recovered, p50=p50, p95=p95, max=high, mean=mean)
    else:
        done = await attempts.load_completed(db, run_uid)
        counts = stats.count_outcomes(a.outcome for a in done)
        recovered, unrecovered, completed = counts.recovered, counts.unrecovered, counts.completed
        summary = stats.summarize(stats.recovery_times(done))
    return RunSummary(
        run=int(row[0]),
        run_uid=run_uid,
        token=str(row[2]),
        phase=Phase(row[3]),
        verdict=Verdict(row[4]),
        started_at=row[5],
        finished_at=row[6],
        recovered=recovered,
        unrecovered=unrecovered,
        completed=completed,
        summary=summary,
        pruned=pruned,
        judgements=tuple(judged),
    )


__all__ = ["History", "Judgement", "RunSummary", "TickAction", "TickRow"]
