"""`Connection`: one SQLite connection to the ledger, its pragmas, its migrations, its transactions.

The base of `aftershock.ledger.store.Ledger`: opening checks the file and migrates its schema
(`aftershock.ledger.schema`); `_read` and `_transaction` are how every query reaches the
connection, one coroutine at a time (an `asyncio.Lock`), each write one ``BEGIN IMMEDIATE``
... ``COMMIT`` that rolls back on any error or cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

import aiosqlite

from aftershock import model
from aftershock.ledger import schema, sql
from aftershock.ledger.errors import LedgerError


class Connection:
    """The ledger's connection. Open with `open`; close with `close` or ``async with``."""

    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        """Use `open`: it sets the pragmas and migrates the schema."""
        self._db: aiosqlite.Connection | None = db
        self._path = path
        self._lock = asyncio.Lock()

    @property
    def path(self) -> str:
        return self._path

    async def ledger_id(self) -> str:
        """This ledger's identity (32 hex digits), made once when the file was created."""
        async with self._read("reading the ledger's identity") as db:
            return str(await sql.scalar(db, "SELECT id FROM ledger_identity WHERE only = 1"))

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path) -> Self:
        """Open (creating if needed) the ledger at ``path`` and bring its schema up to date.

        Raises `LedgerError` if the file cannot be opened, is not an aftershock ledger, or was
        written by a newer aftershock (its schema version is higher than this code knows).
        """
        where = str(path)
        # Checked first because a failed connect leaves aiosqlite's thread finishing after us.
        missing = await asyncio.to_thread(sql.missing_directory, where)
        if missing is not None:
            raise LedgerError(
                f"{where}: the directory {missing} does not exist; mount the ledger volume there "
                "or give another path"
            )
        with sql.translated(where, "opening the ledger"):
            # isolation_level=None: the driver never opens transactions behind our back; every
            # write below is an explicit BEGIN IMMEDIATE ... COMMIT.
            db = await aiosqlite.connect(where, isolation_level=None, timeout=sql.BUSY_TIMEOUT_MS / 1000)
        ledger = cls(db, where)
        try:
            await ledger._configure()
            await ledger._migrate()
            await ledger._check_schema()
        except BaseException:
            await ledger.close()
            raise
        return ledger

    async def close(self) -> None:
        """Close the connection; idempotent."""
        db, self._db = self._db, None
        if db is not None:
            with sql.translated(self._path, "closing the ledger"):
                await db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _configure(self) -> None:
        db = self._conn()
        with sql.translated(self._path, "configuring the ledger"):
            await db.execute(f"PRAGMA busy_timeout = {sql.BUSY_TIMEOUT_MS}")
            mode = await sql.scalar(db, "PRAGMA journal_mode = WAL")
            # WAL: readers (the report, the status projection) never block the trial loop's
            # writes, and a commit appends to the log instead of rewriting pages in place.
            if str(mode).lower() != "wal" and not (self._path == ":memory:" and mode == "memory"):
                raise LedgerError(
                    f"{self._path}: SQLite refused WAL journal mode (got {mode!r}); the ledger needs a "
                    "local filesystem with shared-memory support (not NFS/SMB): use a ReadWriteOnce PVC"
                )
            # FULL: fsync the WAL at every commit. NORMAL (the usual WAL pairing) may lose the
            # last commits on power loss; a lost "trial completed" row means that trial's index
            # runs again and the pod is killed one more time than the ledger says.
            await db.execute("PRAGMA synchronous = FULL")
            await db.execute("PRAGMA foreign_keys = ON")

    async def _migrate(self) -> None:
        db = self._conn()
        with sql.translated(self._path, "checking the ledger's schema version"):
            version = int(await sql.scalar(db, "PRAGMA user_version"))
            application_id = int(await sql.scalar(db, "PRAGMA application_id"))
        self._refuse_newer(version)
        if version == 0:
            await self._refuse_foreign_file()
        elif application_id != schema.APPLICATION_ID:
            raise LedgerError(f"{self._path} is a SQLite file but not an aftershock ledger; refused")
        while version < schema.SCHEMA_VERSION:
            async with self._transaction(f"migrating the ledger to schema version {version + 1}") as tx:
                # Re-read inside the write lock: another process may have migrated meanwhile.
                version = int(await sql.scalar(tx, "PRAGMA user_version"))
                self._refuse_newer(version)
                if version >= schema.SCHEMA_VERSION:
                    break
                for statement in schema.MIGRATIONS[version]:
                    await tx.execute(statement)
                version += 1
                # user_version lives in the file header, which is part of this transaction.
                await tx.execute(f"PRAGMA user_version = {version}")

    def _refuse_newer(self, version: int) -> None:
        if version > schema.SCHEMA_VERSION:
            raise LedgerError(
                f"{self._path} has ledger schema version {version}, but this aftershock only knows up to "
                f"version {schema.SCHEMA_VERSION}: it was written by a newer aftershock. Upgrade the "
                "operator/CLI, or point it at another file; do not downgrade over an existing ledger."
            )

    async def _refuse_foreign_file(self) -> None:
        with sql.translated(self._path, "inspecting the ledger file"):
            tables = await sql.scalar(self._conn(), "SELECT count(*) FROM sqlite_master")
        if int(tables):
            raise LedgerError(
                f"{self._path} already holds a SQLite database that is not an aftershock ledger; refusing to "
                "add tables to it"
            )

    async def _check_schema(self) -> None:
        async with self._read("checking the ledger's columns") as db:
            columns = [str(row[1]) for row in await sql.rows(db, "PRAGMA table_info(attempts)")]
        missing = schema.missing_milestone_columns(columns, model.MILESTONES)
        if missing:
            raise LedgerError(
                f"{self._path}: the ledger schema has no columns for milestones {missing}; "
                "aftershock.ledger.schema needs a migration that adds them"
            )

    # --- plumbing --------------------------------------------------------------------------

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise LedgerError(f"the ledger at {self._path} is closed")
        return self._db

    @asynccontextmanager
    async def _read(self, action: str) -> AsyncIterator[aiosqlite.Connection]:
        """Serialise with the transactions of other coroutines on this connection."""
        async with self._lock:
            db = self._conn()
            with sql.translated(self._path, action):
                yield db

    @asynccontextmanager
    async def _transaction(self, action: str) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` on any error or cancellation.

        IMMEDIATE takes the write lock at once, so a busy database fails here, before anything
        was read that could be stale, rather than at the first write.
        """
        async with self._lock:
            db = self._conn()
            with sql.translated(self._path, action):
                try:
                    await db.execute("BEGIN IMMEDIATE")
                    yield db
                    await db.execute("COMMIT")
                except BaseException:
                    # Unconditional: the driver runs statements in order, so even if the caller was
                    # cancelled while BEGIN or a write was still queued, this ROLLBACK runs after
                    # it. Shielded, so a second cancellation cannot leave the transaction open.
                    await asyncio.shield(sql.rollback(db))
                    raise
