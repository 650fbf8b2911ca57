"""One operator per ledger: `aftershock run` holds its ledger exclusively (ADR 0016).

The hold is an exclusive ``flock`` on ``<ledger>.lock`` beside the ledger file, taken before
the ledger is opened and kept for the life of the process. The kernel drops it when the process
ends, however it ends (SIGKILL and OOM included), so a successor never waits for a crashed
predecessor, and two live processes can never both hold it: not two local processes on one
file, not two pods that mount one ReadWriteOnce volume on one node (they share the kernel and
the inode). Across nodes the volume is the fence: ReadWriteOncePod where the cluster has it.

The lock file holds who holds it (host, pid, since), so the refusal can name the other
operator. Readers (`aftershock report`, `export`) do not take it: WAL lets them read while the
operator writes. Do not delete the lock file while an operator runs: a new file is a new lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from aftershock.ledger.errors import LedgerError


class LedgerInUseError(LedgerError):
    """Another live process holds this ledger."""


@dataclass
class LedgerHold:
    """The exclusive hold on one ledger; released by `release` or by the process ending."""

    path: Path
    fd: int | None

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock


def lock_path(db_path: str | Path) -> Path:
    return Path(f"{db_path}.lock")


def hold(db_path: str | Path, *, who: str | None = None) -> LedgerHold:
    """Take `db_path`'s ledger exclusively, or raise `LedgerInUseError` naming its holder.

    Never waits: a second operator on one ledger is refused at once, before it opens the
    ledger or talks to the API server."""
    path = lock_path(db_path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise LedgerError(f"{path}: cannot open the ledger's lock file: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise LedgerInUseError(
                f"the ledger {db_path} is in use by another aftershock operator ({holder or 'unknown'}): "
                "one operator per ledger. Stop the other one, or give this one another --db"
            ) from exc
        raise LedgerError(f"{path}: cannot lock the ledger: {exc.strerror}") from exc
    me = who or f"pid {os.getpid()} on {socket.gethostname()}"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    # Who holds it, for the refusal of a second operator: best effort. A full disk (the ledger's
    # volume is full) must not stop the operator from starting: the lock is the flock, not this.
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{me}, since {stamp}\n".encode(), 0)
    except OSError:
        pass
    return LedgerHold(path, fd)


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        return ""
