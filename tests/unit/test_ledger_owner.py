"""One operator per ledger (ADR 0016): the exclusive hold on ``<ledger>.lock``.

flock locks belong to an open file description, so two holds in one process conflict exactly
as two processes do; a subprocess shows the kernel dropping the hold when its holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aftershock.ledger import owner


def test_a_second_hold_on_the_same_ledger_is_refused_naming_the_first(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    first = owner.hold(db, who="pod aftershock-0")
    try:
        with pytest.raises(owner.LedgerInUseError, match="in use by another aftershock operator") as exc:
            owner.hold(db, who="pod aftershock-1")
        assert "pod aftershock-0" in str(exc.value)
        assert "one operator per ledger" in str(exc.value)
        assert owner.hold(tmp_path / "other.db").fd is not None  # another ledger: another lock
    finally:
        first.release()
    owner.hold(db).release()  # released: free again


def test_the_kernel_drops_the_hold_of_a_killed_holder(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    code = (
        f"from aftershock.ledger import owner; h = owner.hold({str(db)!r}); "
        "print('held', flush=True); input()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(owner.LedgerInUseError):
            owner.hold(db)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    owner.hold(db).release()  # no wait: the successor of a SIGKILLed operator starts at once


def test_a_full_disk_does_not_stop_the_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_args: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    owner.hold(tmp_path / "ledger.db").release()
