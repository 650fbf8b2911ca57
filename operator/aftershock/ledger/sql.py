"""The ledger's SQL plumbing: running statements, JSON in columns, and driver errors translated.

Functions here take an open `aiosqlite.Connection`; none holds a lock or opens a transaction
(that is `aftershock.ledger.connection`). Errors leave as `LedgerError`, keeping the cause.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final, NoReturn

import aiosqlite

from aftershock.ledger.errors import LedgerError

#: How long a write waits for another connection's write lock before failing, in ms.
BUSY_TIMEOUT_MS: Final = 5000


def dumps(value: Any) -> str:
    """Canonical JSON; any Mapping/sequence (e.g. kopf's spec views) becomes an object/array."""

    def default(o: Any) -> Any:
        if isinstance(o, Mapping):
            return dict(o)
        if isinstance(o, (set, frozenset, tuple)):
            return list(o)
        raise TypeError(f"{type(o).__name__} cannot be stored in the ledger as JSON")

    return json.dumps(value, default=default, sort_keys=True, separators=(",", ":"), allow_nan=False)


def missing_directory(path: str) -> str | None:
    if path == ":memory:" or path.startswith("file:"):
        return None
    directory = os.path.dirname(os.path.abspath(path))
    return None if os.path.isdir(directory) else directory


async def rows(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Every row, read to the end so no statement stays open holding a read snapshot."""
    return [tuple(r) for r in await db.execute_fetchall(sql, params)]


async def scalar(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    found = await rows(db, sql, params)
    return found[0][0] if found else None


async def rollback(db: aiosqlite.Connection) -> None:
    try:
        await db.execute("ROLLBACK")
    except sqlite3.OperationalError as e:
        if "no transaction is active" not in str(e):
            raise


# --- errors a person can act on --------------------------------------------------------------

_ADVICE: Final = {
    "SQLITE_BUSY": "the database is locked by another process (is a second operator replica or an "
    f"`aftershock` command writing to it?); gave up after {BUSY_TIMEOUT_MS} ms",
    "SQLITE_LOCKED": "the database is locked by another connection of this process",
    "SQLITE_FULL": "the disk is full: grow the operator's ledger PVC (or free space) and restart",
    "SQLITE_READONLY": "the file or its directory is read-only: the ledger needs a writable volume",
    "SQLITE_CANTOPEN": "cannot open the file: does its directory exist and is it writable by the operator?",
    "SQLITE_CORRUPT": "the file is corrupt: keep a copy and run `sqlite3 <file> 'PRAGMA integrity_check'`",
    "SQLITE_NOTADB": "the file is not a SQLite database: check the ledger path",
    "SQLITE_IOERR": "an I/O error from the volume: check the PVC and the node's disk",
    "SQLITE_PERM": "permission denied: the operator's user cannot write the ledger file",
}


@contextmanager
def translated(path: str, action: str) -> Iterator[None]:
    """Re-raise driver errors as `LedgerError` saying what failed and what to do; keep the cause."""
    try:
        yield
    except sqlite3.Error as e:
        _raise_ledger_error(path, action, e)
    except ValueError as e:
        # aiosqlite raises ValueError("no active connection") once its connection is gone.
        if "connection" in str(e).lower():
            raise LedgerError(f"{path}: {action} failed: the connection is closed ({e})") from e
        raise


def _raise_ledger_error(path: str, action: str, e: sqlite3.Error) -> NoReturn:
    name = str(getattr(e, "sqlite_errorname", "") or "")
    advice = _ADVICE.get("_".join(name.split("_")[:2]))  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    if advice is None:
        text = str(e).lower()
        if "locked" in text:
            advice = _ADVICE["SQLITE_BUSY"]
        elif "disk is full" in text or "database or disk is full" in text:
            advice = _ADVICE["SQLITE_FULL"]
    message = f"{path}: {action} failed: {e}"
    raise LedgerError(f"{message} ({advice})" if advice else message) from e
