"""A pod source for the PD stand-in backed by a real API server: list, then watch, forever.

``PdStandIn(KubePodSource(...).start())`` runs a `tests.pdstub.fleet.StoreFleet` on it: one
simulated store process per Ready pod, reporting PutStore and heartbeats (kwok pods run nothing).

A daemon thread keeps an in-memory copy of the selected pods. Each round lists the pods (which
replaces the copy, so nothing missed while disconnected survives) and then watches from the list's
resourceVersion until the watch ends (server timeout, 410 Gone, a connection error); then it starts
another round, after a short pause if the round failed.

A pod being deleted is reported not Ready: its tikv-server has been told to stop.
"""

from __future__ import annotations

import logging
import threading
import types
from typing import Any

from kubernetes import client, watch

from tests.pdstub.server import PodRecord

log = logging.getLogger(__name__)


def pod_record(pod: Any) -> PodRecord:
    """A `V1Pod` as the stand-in needs it; ``ready_since`` is the Ready condition's lastTransitionTime."""
    ready = False
    ready_since: float | None = None
    for cond in (pod.status and pod.status.conditions) or ():
        if cond.type == "Ready" and cond.status == "True":
            ready = True
            if cond.last_transition_time is not None:
                ready_since = cond.last_transition_time.timestamp()
    if pod.metadata.deletion_timestamp is not None:
        ready = False
    return {"name": pod.metadata.name, "uid": pod.metadata.uid, "ready": ready, "ready_since": ready_since}


class KubePodSource:
    """Callable pod source: ``KubePodSource(api_client, "tikv", "app=tikv").start()``."""

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        label_selector: str,
        *,
        watch_timeout_seconds: int = 60,
        retry_seconds: float = 1.0,
    ) -> None:
        self._v1 = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.label_selector = label_selector
        self._watch_timeout = watch_timeout_seconds
        self._retry = retry_seconds
        self._lock = threading.Lock()
        self._pods: dict[str, PodRecord] = {}
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._watch: Any = None  # watch.Watch: untyped
        self._thread: threading.Thread | None = None

    def __call__(self) -> list[PodRecord]:
        with self._lock:
            return [p.copy() for p in self._pods.values()]

    def start(self) -> KubePodSource:
        if self._thread is None:
            # A fresh event per thread: an old thread still blocked in its watch stays stopped.
            self._stopping = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stopping,), name="kube-pod-source", daemon=True
            )
            self._thread.start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        """Whether the first list has completed within `timeout` seconds."""
        return self._synced.wait(timeout)

    def stop(self) -> None:
        """Stop following the pods. The pod list is frozen from now on; the daemon thread may
        stay blocked in the open watch until its next event or timeout, then ends."""
        self._stopping.set()
        if self._watch is not None:
            self._watch.stop()  # takes effect at the next event or when the watch times out
        if self._thread is not None:
            self._thread.join(timeout=1)
            self._thread = None

    def __enter__(self) -> KubePodSource:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                self._round(stopping)
            except Exception:
                if stopping.is_set():
                    return  # the watch broke because we are going away
                log.warning("pod watch of %s failed; listing again", self.namespace, exc_info=True)
                stopping.wait(self._retry)

    def _round(self, stopping: threading.Event) -> None:
        listed: Any = self._v1.list_namespaced_pod(
            self.namespace, label_selector=self.label_selector, _request_timeout=30
        )
        if stopping.is_set():
            return
        with self._lock:
            self._pods = {p.metadata.name: pod_record(p) for p in listed.items}
        self._synced.set()
        w: Any = watch.Watch()
        self._watch = w
        for event in w.stream(
            self._v1.list_namespaced_pod,
            self.namespace,
            label_selector=self.label_selector,
            resource_version=listed.metadata.resource_version,
            timeout_seconds=self._watch_timeout,
        ):
            if stopping.is_set():
                return
            kind, pod = event["type"], event["object"]
            if kind in ("ADDED", "MODIFIED"):
                with self._lock:
                    self._pods[pod.metadata.name] = pod_record(pod)
            elif kind == "DELETED":
                with self._lock:
                    current = self._pods.get(pod.metadata.name)
                    if current is not None and current["uid"] == pod.metadata.uid:
                        del self._pods[pod.metadata.name]
