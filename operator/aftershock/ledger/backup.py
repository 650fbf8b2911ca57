"""`backup`: a consistent copy of the ledger, taken while the operator writes to it.

``VACUUM INTO`` reads the ledger in one read transaction (WAL: the operator's writes go on
meanwhile and are not in the copy) and writes a new, compact database file. It needs nothing
the operator's image lacks: no ``sqlite3`` shell (the image has none), and no write to the
source or to the image's read-only root filesystem; the source is opened read-only and only
the target's directory (a mounted volume, e.g. the ledger's own) is written.

The copy is a whole ledger file: restoring it is putting it where ``--db`` points while no
operator runs (README, "Backup and restore").
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from aftershock.ledger import schema, sql
from aftershock.ledger.errors import LedgerError


@dataclass(frozen=True)
class BackupResult:
    """What was written, checked by reading the copy back."""

    path: str
    bytes: int
    schema_version: int
    campaigns: int
    attempts: int


def _read_only_uri(path: str) -> str:
    return "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"


async def backup(source: str, target: str) -> BackupResult:
    """Copy the ledger at `source` into the new file `target` and check the copy.

    Raises `LedgerError` when `source` is missing or not an aftershock ledger, when `target`
    exists (never overwritten: an old backup is worth keeping) or its directory does not, and
    when the copy fails its integrity check.
    """
    await asyncio.to_thread(_refuse_unless_writable, source, target)
    with sql.translated(source, "opening the ledger read-only for a backup"):
        async with aiosqlite.connect(_read_only_uri(source), uri=True) as db:
            await db.execute(f"PRAGMA busy_timeout = {sql.BUSY_TIMEOUT_MS}")
            if int(await sql.scalar(db, "PRAGMA application_id")) != schema.APPLICATION_ID:
                raise LedgerError(f"{source} is not an aftershock ledger; nothing copied")
            with sql.translated(target, "writing the backup"):
                await db.execute("VACUUM INTO ?", (target,))
    return await _check(target)


def _refuse_unless_writable(source: str, target: str) -> None:
    if not os.path.exists(source):
        raise LedgerError(f"no ledger at {source}")
    if os.path.lexists(target):
        raise LedgerError(f"{target} exists; a backup never overwrites a file: give a new name")
    missing = sql.missing_directory(target)
    if missing is not None:
        raise LedgerError(f"{target}: the directory {missing} does not exist; mount a volume there")


async def _check(target: str) -> BackupResult:
    with sql.translated(target, "checking the backup"):
        async with aiosqlite.connect(_read_only_uri(target), uri=True) as db:
            verdict = await sql.scalar(db, "PRAGMA integrity_check")
            if verdict != "ok":
                raise LedgerError(f"{target}: the backup failed its integrity check: {verdict}")
            version = int(await sql.scalar(db, "PRAGMA user_version"))
            campaigns = int(await sql.scalar(db, "SELECT count(*) FROM campaigns"))
            attempts = int(await sql.scalar(db, "SELECT count(*) FROM attempts"))
    size = (await asyncio.to_thread(Path(target).stat)).st_size
    return BackupResult(target, size, version, campaigns, attempts)
