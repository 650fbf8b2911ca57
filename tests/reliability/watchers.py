"""Independent witnesses of what happened to the pods: the API server's audit log and a pod
watch of the suite's own. Neither trusts the operator's account (the ledger); the invariants
compare the three.

The audit log records the metadata of every request (policy: hack/testbed/manifests/
audit-policy.yaml): user, user agent, verb, object name, response code and timestamps. A DELETE
request's audit record names the pod but carries no UID (the UID precondition travels in the
request body, which the Metadata level does not log), so deletions are matched to ledger
attempts by pod name and time window. The pod watch sees UIDs but not who deleted; together they
tell apart the operator's kills and kwok's own finalising deletes (docs/adr/0005).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch

OPERATOR_USER = "system:serviceaccount:aftershock-system:aftershock"


def parse_ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def request_right(record: dict[str, Any]) -> tuple[str, str] | None:
    """(resource as `kubectl auth can-i --list` prints it, verb) of one audit record; None for
    a non-resource URL."""
    ref = record.get("objectRef") or {}
    resource = ref.get("resource")
    if not resource:
        return None
    group = ref.get("apiGroup") or ""
    name = f"{resource}.{group}" if group else resource
    if ref.get("subresource"):
        name = f"{name}/{ref['subresource']}"
    return name, str(record.get("verb"))


@dataclass(frozen=True)
class AuditDelete:
    """One DELETE of a pod, as the API server audited it."""

    name: str
    namespace: str
    user: str
    user_agent: str
    code: int
    received: float  # requestReceivedTimestamp, unix seconds
    completed: float  # stageTimestamp (ResponseComplete)

    @property
    def by_operator(self) -> bool:
        return self.user == OPERATOR_USER

    @property
    def by_kwok(self) -> bool:
        return self.user_agent.startswith("kwok-controller/")

    @property
    def effective(self) -> bool:
        return 200 <= self.code < 300


class AuditLog:
    """Reads the audit log from a byte offset taken at `mark` (a test sees only its own era)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def records(self) -> list[dict[str, Any]]:
        out = []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a line cut short by an API server SIGKILL
        return out

    def pod_deletes(self, namespace: str | None = None) -> list[AuditDelete]:
        found = []
        for r in self.records():
            ref = r.get("objectRef") or {}
            if r.get("verb") != "delete" or ref.get("resource") != "pods" or ref.get("subresource"):
                continue
            if r.get("stage") != "ResponseComplete":
                continue
            if namespace is not None and ref.get("namespace") != namespace:
                continue
            found.append(
                AuditDelete(
                    name=str(ref.get("name", "")),
                    namespace=str(ref.get("namespace", "")),
                    user=str((r.get("user") or {}).get("username", "")),
                    user_agent=str(r.get("userAgent", "")),
                    code=int((r.get("responseStatus") or {}).get("code") or 0),
                    received=parse_ts(r["requestReceivedTimestamp"]),
                    completed=parse_ts(r["stageTimestamp"]),
                )
            )
        return sorted(found, key=lambda d: d.received)

    def requests_by(self, user: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if (r.get("user") or {}).get("username") == user]


@dataclass(frozen=True)
class PodGone:
    """A pod (by UID) that stopped existing, as the suite's own watch saw it."""

    name: str
    uid: str
    labels: tuple[tuple[str, str], ...]
    seen: float  # wall clock of the observation
    how: str  # DELETED (a watch event) or VANISHED (missing at a re-list after a broken watch)


@dataclass
class PodWatch:
    """List + watch every pod of a namespace in a thread; re-list after any break, reporting
    pods that disappeared meanwhile as VANISHED (the moment is then only known to be within
    the outage)."""

    api: client.ApiClient
    namespace: str
    gone: list[PodGone] = field(default_factory=list)
    seen_uids: dict[str, str] = field(default_factory=dict)  # uid -> name
    #: uid -> when the watch first saw the pod marked for deletion (still running until then).
    terminating: dict[str, float] = field(default_factory=dict)
    relists: int = 0
    _pods: dict[str, Any] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> PodWatch:
        self._thread = threading.Thread(target=self._run, name=f"podwatch-{self.namespace}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _record(self, pod: Any, how: str) -> None:
        if any(g.uid == pod.metadata.uid for g in self.gone):
            return  # already reported (a VANISHED pod whose DELETED event arrives late)
        labels = tuple(sorted((pod.metadata.labels or {}).items()))
        self.gone.append(PodGone(pod.metadata.name, pod.metadata.uid, labels, time.time(), how))

    def _run(self) -> None:
        v1 = client.CoreV1Api(self.api)
        first = True
        while not self._stop.is_set():
            try:
                listed = v1.list_namespaced_pod(self.namespace, _request_timeout=10)
                fresh = {p.metadata.uid: p for p in listed.items}
                with self._lock:
                    if not first:
                        self.relists += 1
                        for uid, old in self._pods.items():
                            if uid not in fresh:
                                self._record(old, "VANISHED")
                    first = False
                    self._pods = fresh
                    for uid, p in fresh.items():
                        self.seen_uids[uid] = p.metadata.name
                w = watch.Watch()
                for event in w.stream(
                    v1.list_namespaced_pod,
                    self.namespace,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=30,
                    _request_timeout=40,
                ):
                    if self._stop.is_set():
                        w.stop()
                        return
                    pod = event["object"]
                    with self._lock:
                        if event["type"] == "DELETED":
                            self._pods.pop(pod.metadata.uid, None)
                            self._record(pod, "DELETED")
                        elif event["type"] in ("ADDED", "MODIFIED"):
                            self._pods[pod.metadata.uid] = pod
                            self.seen_uids[pod.metadata.uid] = pod.metadata.name
                            if pod.metadata.deletion_timestamp is not None:
                                self.terminating.setdefault(pod.metadata.uid, time.time())
            except Exception:
                if self._stop.wait(0.3):
                    return
