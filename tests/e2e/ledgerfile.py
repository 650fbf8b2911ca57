"""Reading a ledger file as a witness, from outside the operator that writes it.

Read-only (``mode=ro``), one short query at a time: the operator keeps writing (WAL) while a
test looks. Tests judge the operator by its ledger, so they read it with their own SQL rather
than with the code under test.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Attempt:
    id: int
    trial_index: int
    outcome: str | None
    kill_sent_wall: float | None


def attempts(db: Path, campaign_uid: str | None = None) -> list[Attempt]:
    """The attempts in the file (of one Campaign, by its UID), oldest first; [] while the file
    does not exist yet. A ledger on a volume holds every Campaign the operator ever ran."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT id, trial_index, outcome, kill_sent_wall FROM attempts"
            " WHERE campaign_uid = coalesce(?, campaign_uid) ORDER BY id",
            (campaign_uid,),
        ).fetchall()
    except sqlite3.OperationalError:
        return []  # the schema is not there yet (the operator is still creating it)
    finally:
        conn.close()
    return [Attempt(int(r[0]), int(r[1]), r[2], r[3]) for r in rows]


def in_flight(db: Path, campaign_uid: str | None = None) -> list[Attempt]:
    """Attempts whose kill was sent and whose outcome is not recorded: a trial mid-recovery."""
    return [a for a in attempts(db, campaign_uid) if a.outcome is None and a.kill_sent_wall is not None]
