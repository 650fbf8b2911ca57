"""A second ground truth: the API server's own audit log, no watch delivery in it.

The harness's pod watch (`groundtruth.PodWatcher`) stamps events when they reach a thread of the
harness's process. On a quiet machine that agrees with the tools' own watches within a few ms in
most trials, but in a few per run one of the two streams is 17-37 ms late, and the witness alone
cannot say which (docs/performance.md, 2026-12-07). The API server records every write it
completes, with microsecond timestamps on the host's clock (`--audit-log-path`, the test bed's
audit policy, `hack/testbed/cluster.sh audit-log`). Each kill's two ends are writes:

- the tool's DELETE of the victim (`verb=delete`, the pod itself): the deletion is committed when
  it completes;
- the status write that made the replacement Ready (the kubelet's, or kwok's, `pods/status`).

The policy logs `pods/status` at Metadata level (no body), so which status write made the pod
Ready is found by counting: every write that changes a pod (its create, the scheduler's binding,
each status patch) is one watch event, in the same order. The replacement's first Ready event is
its i-th event in the witness's log, so the write that made it Ready is the i-th write to that
pod from its create on. The count is checked (the write must have been received before the
witness saw the event); a kill whose count does not fit gets no audit truth rather than a wrong
one. (The kubelet's status patches of one pod can be 13 ms apart: "the last write before the
witness saw it" would pick the wrong one whenever the witness is that late.)

Each end is a write's `stageTimestamp` at ResponseComplete: after the commit by the response's
own serialisation (sub-ms here); a write's `requestReceivedTimestamp` bounds it from below.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A status write is taken as the one that made the pod Ready only if the witness saw Ready
#: within this long after the server received it (a watch delivery on a busy machine).
READY_WINDOW_S = 2.0
#: ... and the DELETE as the kill only if the witness saw the deletion within this long.
DELETE_WINDOW_S = 5.0


@dataclass(frozen=True)
class PodWrite:
    verb: str  # delete, patch, update, create
    name: str
    subresource: str  # "" for the pod itself
    user: str
    received: float  # wall seconds
    completed: float  # wall seconds: stageTimestamp at ResponseComplete


def _ts(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def parse(line: str, namespace: str) -> PodWrite | None:
    """One audit log line, if it is a completed write to a pod of `namespace`."""
    if namespace not in line or '"ResponseComplete"' not in line:
        return None  # cheap filter: most lines are other namespaces' or other stages
    try:
        event: dict[str, Any] = json.loads(line)
    except ValueError:
        return None
    ref = event.get("objectRef") or {}
    verb = str(event.get("verb") or "")
    if (
        event.get("stage") != "ResponseComplete"
        or ref.get("resource") != "pods"
        or ref.get("namespace") != namespace
        or verb not in ("delete", "patch", "update", "create")
        or not ref.get("name")
        or int((event.get("responseStatus") or {}).get("code") or 0) >= 300
    ):
        return None
    return PodWrite(
        verb=verb,
        name=str(ref["name"]),
        subresource=str(ref.get("subresource") or ""),
        user=str((event.get("user") or {}).get("username") or ""),
        received=_ts(event["requestReceivedTimestamp"]),
        completed=_ts(event["stageTimestamp"]),
    )


class AuditLog:
    """The audit log from a point on (the bench's start): only what was written after it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._start = path.stat().st_size if path.exists() else 0

    @classmethod
    def of_test_bed(cls, cluster_sh: Path, env: dict[str, str] | None = None) -> AuditLog | None:
        """The test bed's audit log, or None if its API server keeps none."""
        import subprocess

        out = subprocess.run(
            [str(cluster_sh), "audit-log"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, **(env or {})},
        )
        lines = out.stdout.strip().splitlines() if out.returncode == 0 else []
        path = Path(lines[-1]) if lines else None
        return cls(path) if path is not None and path.exists() else None

    def pod_writes(self, namespace: str) -> list[PodWrite]:
        """Every completed write to `namespace`'s pods since the start, in completion order. A
        log rotated meanwhile (the file shorter than where we started) is read whole: the
        writes before the rotation are then missing, and their kills get no audit truth."""
        size = self.path.stat().st_size
        start = self._start if size >= self._start else 0
        writes = []
        with self.path.open("rb") as f:
            f.seek(start)
            for raw in f:
                w = parse(raw.decode("utf-8", "replace"), namespace)
                if w is not None:
                    writes.append(w)
        return sorted(writes, key=lambda w: w.completed)


def kill_commit(writes: list[PodWrite], victim: str, seen_wall: float) -> PodWrite | None:
    """The DELETE of `victim` the witness saw take effect at `seen_wall`: the last one received
    before it (a deletion cannot be seen before its request arrived)."""
    deletes = [
        w
        for w in writes
        if w.verb == "delete"
        and not w.subresource
        and w.name == victim
        and seen_wall - DELETE_WINDOW_S <= w.received <= seen_wall
    ]
    return max(deletes, key=lambda w: w.received, default=None)


def ready_commit(
    writes: list[PodWrite], pod: str, after: float, event_index: int, seen_wall: float
) -> PodWrite | None:
    """The write that made the replacement `pod` Ready: the `event_index`-th (0: its create)
    write to that pod from its create on, the first create received after `after` (the kill's
    commit). None if there are too few writes or the one counted was received after the
    witness saw its event (the count does not fit)."""
    own = [w for w in writes if w.name == pod and w.verb != "delete" and w.received >= after]
    start = next((n for n, w in enumerate(own) if w.verb == "create" and not w.subresource), None)
    if start is None or start + event_index >= len(own):
        return None
    write = own[start + event_index]
    return write if write.received <= seen_wall else None
