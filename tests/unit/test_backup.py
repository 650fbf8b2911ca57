"""`aftershock backup FILE`: a consistent copy of a ledger the operator is writing, taken without
writing to the source, and restored by putting the copy where `--db` points (README)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from tests.unit.test_ledger import REF, SPEC, run_trial

from aftershock import cli
from aftershock.ledger import Ledger


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


async def test_a_backup_of_a_live_ledger_holds_every_committed_trial_and_restores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live_dir, backups = tmp_path / "pvc", tmp_path / "backups"
    live_dir.mkdir()
    backups.mkdir()
    source = live_dir / "ledger.db"
    async with await Ledger.open(source) as writer:  # the operator, still running
        await writer.ensure_campaign(REF, SPEC, requested_trials=3, seed="42", now=1000.0)
        for index in range(3):
            await run_trial(writer, index, recovery=10.0 + index)
        # The trials are committed to the WAL, not checkpointed into ledger.db: a plain file
        # copy of ledger.db alone would lose them.
        wal = Path(f"{source}-wal")
        assert wal.stat().st_size > 0  # noqa: ASYNC240 (a test's own file)
        before = {p: _digest(p) for p in (source, wal)}
        target = backups / "ledger-backup.db"
        assert (
            await cli._backup(cli.build_parser().parse_args(["backup", str(target), "--db", str(source)]))
            == 0
        )
        # Nothing written to the source (its bytes are the same; the test runs as root, so a
        # read-only mode bit would prove nothing).
        assert {p: _digest(p) for p in (source, wal)} == before
        # A snapshot: what the operator commits afterwards is not in it.
        await run_trial(writer, 3, recovery=99.0)
    out = capsys.readouterr().out
    assert "1 campaign runs, 3 attempts; integrity ok" in out, out
    # Restore, as documented: the copy becomes the ledger a new operator opens.
    restored = tmp_path / "restored" / "ledger.db"
    restored.parent.mkdir()
    restored.write_bytes(target.read_bytes())
    async with await Ledger.open(restored) as ledger:
        trials = await ledger.completed_trials(REF.uid)
        assert [t.recovery_seconds for t in trials] == [10.0, 11.0, 12.0]
        assert await ledger.next_trial_index(REF.uid) == 3
        assert await ledger.integrity_check() == "ok"


def test_a_backup_never_overwrites_and_refuses_what_is_not_a_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "ledger.db"
    other = tmp_path / "other.db"
    import sqlite3

    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    existing = tmp_path / "old-backup.db"
    existing.write_bytes(b"an older backup")

    assert cli.main(["backup", str(tmp_path / "b.db"), "--db", str(source)]) == 2
    assert "no ledger at" in capsys.readouterr().err
    assert cli.main(["backup", str(tmp_path / "b.db"), "--db", str(other)]) == 2
    assert "not an aftershock ledger" in capsys.readouterr().err
    assert not (tmp_path / "b.db").exists()

    import asyncio

    async def make() -> None:
        async with await Ledger.open(source):
            pass

    asyncio.run(make())
    assert cli.main(["backup", str(existing), "--db", str(source)]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert existing.read_bytes() == b"an older backup"
    assert cli.main(["backup", str(tmp_path / "no-such-dir" / "b.db"), "--db", str(source)]) == 2
    assert "does not exist" in capsys.readouterr().err
