"""Campaigns and their runs in the ledger: `CampaignRow`, `RunRow` and the queries that return them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aftershock import stats
from aftershock.ledger import attempts, sql
from aftershock.ledger.connection import Connection
from aftershock.ledger.errors import CampaignNotFoundError
from aftershock.model import AttemptRecord, CampaignRef, Outcome, Phase, Verdict

#: One row per run of a Campaign: its campaign row, and its run (run 1, the Campaign's own uid
#: and no token for a Campaign from before runs were recorded). The columns `_campaign` reads.
_SELECT_CAMPAIGNS: Final = (
    "SELECT c.uid, c.namespace, c.name, c.spec, c.requested_trials, c.seed, c.phase, c.verdict, "
    "c.created_at, c.started_at, c.finished_at, c.deleted_at, coalesce(r.run, 1), "
    "coalesce(r.campaign_uid, c.uid), coalesce(r.token, '') "
    "FROM campaigns c LEFT JOIN runs r ON r.run_uid = c.uid"
)
_BY_NAME: Final = "ORDER BY c.namespace, c.name, c.created_at, c.rowid"


@dataclass(frozen=True)
class RunRow:
    """One run of a Campaign: ``run_uid`` keys its rows (the Campaign's uid for run 1)."""

    run_uid: str
    campaign_uid: str
    run: int
    token: str
    #: The schedule's tick this run was started for (None: by its annotation, or on creation).
    tick: float | None = None


@dataclass(frozen=True)
class CampaignRow:
    """One campaign as the ledger holds it. ``spec`` is the raw spec recorded at first sight."""

    #: Which campaign run: ``uid`` is the run's id (the Campaign object's for run 1).
    ref: CampaignRef
    spec: Mapping[str, Any]
    requested_trials: int
    seed: str
    phase: Phase
    verdict: Verdict
    created_at: float
    started_at: float | None
    finished_at: float | None
    deleted_at: float | None = None  # when the Campaign object was deleted, if it was
    #: Which run of its Campaign this row is (re-runs by annotation); ``uid`` is the run's id.
    run: int = 1
    #: The Campaign object's uid ('' when constructed by hand: then ``uid``).
    campaign_uid: str = ""
    #: The ``aftershock.dev/run`` annotation's value that started this run ('' for none).
    run_token: str = ""

    @property
    def object_uid(self) -> str:
        return self.campaign_uid or self.uid

    @property
    def uid(self) -> str:
        return self.ref.uid

    @property
    def namespace(self) -> str:
        return self.ref.namespace

    @property
    def name(self) -> str:
        return self.ref.name


class Campaigns(Connection):
    """The ledger's campaign and run queries (a part of `aftershock.ledger.store.Ledger`)."""

    # --- campaigns -------------------------------------------------------------------------

    async def ensure_campaign(
        self,
        ref: CampaignRef,
        spec: Mapping[str, Any],
        requested_trials: int,
        seed: str,
        now: float,
    ) -> None:
        """Record a campaign at first sight; a uid already recorded keeps its row unchanged."""
        async with self._transaction("recording a campaign") as tx:
            await tx.execute(
                "INSERT INTO campaigns (uid, namespace, name, spec, requested_trials, seed, phase, "
                "verdict, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uid) DO NOTHING",
                (
                    ref.uid,
                    ref.namespace,
                    ref.name,
                    sql.dumps(spec),
                    requested_trials,
                    seed,
                    Phase.PENDING.value,
                    Verdict.NONE.value,
                    now,
                ),
            )

    async def set_campaign_state(
        self,
        campaign_uid: str,
        phase: Phase,
        verdict: Verdict,
        now: float,
        *,
        started: bool = False,
        finished: bool = False,
    ) -> None:
        """Record phase and verdict; ``started``/``finished`` stamp ``now`` once (the first time)."""
        async with self._transaction("updating a campaign's state") as tx:
            cursor = await tx.execute(
                "UPDATE campaigns SET phase = ?, verdict = ?, "
                "started_at = CASE WHEN ? THEN coalesce(started_at, ?) ELSE started_at END, "
                "finished_at = CASE WHEN ? THEN coalesce(finished_at, ?) ELSE finished_at END "
                "WHERE uid = ?",
                (phase.value, verdict.value, started, now, finished, now, campaign_uid),
            )
            if cursor.rowcount == 0:
                raise CampaignNotFoundError(f"no campaign with uid {campaign_uid} in the ledger")

    async def mark_deleted(self, campaign_uid: str, reason: str, now: float) -> list[AttemptRecord]:
        """Record that the Campaign was deleted at ``now``; return the attempts this interrupted.

        In one transaction: every attempt still in flight becomes ``interrupted`` with ``reason``
        (it measured nothing; the Campaign will not run it again), and an unfinished Campaign's
        phase becomes ``Deleted``. A finished one keeps its phase and verdict. The first
        deletion time stands; a uid the ledger never saw is left alone (nothing to record).
        """
        async with self._transaction("recording a campaign's deletion") as tx:
            interrupted = await attempts.interrupt_inflight_in(tx, campaign_uid, reason, now)
            await tx.execute(
                "UPDATE campaigns SET deleted_at = coalesce(deleted_at, ?), "
                "phase = CASE WHEN phase IN (?, ?) THEN phase ELSE ? END WHERE uid = ?",
                (now, Phase.SUCCEEDED.value, Phase.FAILED.value, Phase.DELETED.value, campaign_uid),
            )
            return interrupted

    async def get_campaign(self, uid: str) -> CampaignRow | None:
        """The row of one run (``uid``: the run's id; the Campaign's uid for its first run)."""
        found = await self._campaigns("reading a campaign", "WHERE c.uid = ?", (uid,))
        return found[0] if found else None

    async def find_campaign(self, namespace: str, name: str, run: int | None = None) -> CampaignRow | None:
        """The most recently created campaign with that namespace and name (names get reused):
        its latest run, or run number `run` of it."""
        found = await self._campaigns(
            "looking up a campaign",
            "WHERE c.namespace = ?1 AND c.name = ?2 AND (?3 IS NULL OR coalesce(r.run, 1) = ?3) "
            "ORDER BY c.created_at DESC, c.rowid DESC LIMIT 1",
            (namespace, name, run),
        )
        return found[0] if found else None

    async def list_campaigns(self) -> list[CampaignRow]:
        """Every campaign run, by namespace, name, then creation time."""
        return await self._campaigns("listing campaigns", _BY_NAME)

    async def campaigns_in_flight(self) -> list[CampaignRow]:
        """Every campaign run with an attempt in flight (no outcome yet), as `list_campaigns` orders them."""
        return await self._campaigns(
            "listing campaigns with attempts in flight",
            "WHERE EXISTS (SELECT 1 FROM attempts a WHERE a.campaign_uid = c.uid AND a.outcome IS NULL) "
            + _BY_NAME,
        )

    async def _campaigns(self, doing: str, clause: str, params: tuple[Any, ...] = ()) -> list[CampaignRow]:
        """Campaign rows, one per run, chosen and ordered by `clause` over ``c`` (campaigns) and
        ``r`` (their runs; none for a Campaign from before runs were recorded)."""
        async with self._read(doing) as db:
            rows = await sql.rows(db, f"{_SELECT_CAMPAIGNS} {clause}", params)
        return [_campaign(r) for r in rows]

    # --- runs ---------------------------------------------------------------------------------

    async def latest_run(self, campaign_uid: str) -> RunRow | None:
        """The Campaign's newest run: from ``runs``, or its pre-runs row as run 1 (no token)."""
        async with self._read("reading a campaign's runs") as db:
            rows = await sql.rows(
                db,
                "SELECT run_uid, campaign_uid, run, token, tick FROM runs WHERE campaign_uid = ?1 "
                "UNION ALL SELECT uid, uid, 1, '', NULL FROM campaigns WHERE uid = ?1 "
                "AND NOT EXISTS (SELECT 1 FROM runs WHERE run_uid = ?1) ORDER BY 3 DESC LIMIT 1",
                (campaign_uid,),
            )
        if not rows:
            return None
        run_uid, campaign, number, token, tick = rows[0]
        return RunRow(
            str(run_uid), str(campaign), int(number), str(token), None if tick is None else float(tick)
        )

    async def record_run(self, run: RunRow) -> None:
        """Record a run before it starts; recording the same run again changes nothing."""
        async with self._transaction("recording a run") as tx:
            await tx.execute(
                "INSERT INTO runs (run_uid, campaign_uid, run, token, tick) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (run.run_uid, run.campaign_uid, run.run, run.token, run.tick),
            )

    async def campaign_counts(self, campaign_uid: str) -> stats.AttemptCounts:
        """How the campaign's attempts ended so far (``in_flight``: not ended yet)."""
        async with self._read("counting attempts") as db:
            rows = await sql.rows(
                db,
                "SELECT outcome, count(*) FROM attempts WHERE campaign_uid = ? GROUP BY outcome",
                (campaign_uid,),
            )
        return stats.count_outcomes(
            outcome for value, n in rows for outcome in [None if value is None else Outcome(value)] * int(n)
        )


def _campaign(row: sqlite3.Row | tuple[Any, ...]) -> CampaignRow:
    return CampaignRow(
        ref=CampaignRef(namespace=row[1], name=row[2], uid=row[0]),
        spec=json.loads(row[3]),
        requested_trials=int(row[4]),
        seed=row[5],
        phase=Phase(row[6]),
        verdict=Verdict(row[7]),
        created_at=float(row[8]),
        started_at=row[9],
        finished_at=row[10],
        deleted_at=row[11],
        run=int(row[12]),
        campaign_uid=str(row[13]),
        run_token=str(row[14]),
    )
