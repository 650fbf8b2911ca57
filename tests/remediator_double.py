"""Test doubles for the remediator scenario (issue 11): a subject whose replacement pods wait,
a slow gatekeeper that lets them go (self-healing alone), and a small remediator that lets them
go at once and says so with Events. Plainly test code: threads of the test process speaking to
the API server with the official `kubernetes` client.

The scenario. The subject's pod template carries a scheduling gate (`GATE`), so every pod the
StatefulSet controller makes, the replacement of a killed member included, stays Pending until
someone removes the gate:

- `Gatekeeper` removes it `delay` seconds after it first sees the gated pod: the path the
  subject takes without help, measurably slower.
- `TestRemediator` is active only while its own Deployment has replicas > 0, so a baseline
  Campaign's scale-to-zero (`spec.remediator`) switches it off. Active, it emits a "detected"
  Event when a member is deleted (or a gated member appears), removes the gate at once with an
  "action" Event, and emits "resolved" when that member is Ready again.

Neither is a model of a real controller: no informer caches, no leader election, no retries
beyond the watch re-list. They only need to be right for the few seconds a trial lasts.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)

#: The scheduling gate the subject's pod template carries.
GATE = "aftershock.dev/held-for-test"

CONTROLLER = "aftershock-test-remediator"
DETECTED = "IncidentDetected"
ACTION = "ReplacementUngated"
RESOLVED = "IncidentResolved"


def gated(pod_template_spec: dict[str, Any]) -> dict[str, Any]:
    """The pod spec with the test's scheduling gate added."""
    return {**pod_template_spec, "schedulingGates": [{"name": GATE}]}


def _is_gated(pod: Any) -> bool:
    return any(g.name == GATE for g in (pod.spec.scheduling_gates or []))


def _is_ready(pod: Any) -> bool:
    if pod.metadata.deletion_timestamp is not None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def ungate(v1: client.CoreV1Api, namespace: str, name: str) -> bool:
    """Remove the gate; False when someone else already did (or the pod is gone)."""
    try:
        v1.patch_namespaced_pod(
            name,
            namespace,
            [
                {"op": "test", "path": "/spec/schedulingGates", "value": [{"name": GATE}]},
                {"op": "remove", "path": "/spec/schedulingGates"},
            ],
        )
    except ApiException as exc:
        if exc.status in (404, 409, 422):  # gone, or the test op failed: already ungated
            return False
        raise
    return True


class _PodWatch:
    """List-then-watch the pods of one selector in a thread; calls `on_pod(kind, pod)`."""

    def __init__(
        self, api: client.ApiClient, namespace: str, selector: str, on_pod: Callable[[str, Any], None]
    ) -> None:
        self.v1 = client.CoreV1Api(api)
        self.namespace = namespace
        self.selector = selector
        self._on_pod = on_pod
        self._stopping = threading.Event()
        self._synced = threading.Event()
        self._watch: Any = None
        self._thread = threading.Thread(target=self._run, name=f"pods-{selector}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def stop(self) -> None:
        self._stopping.set()
        if self._watch is not None:
            self._watch.stop()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                listed = self.v1.list_namespaced_pod(self.namespace, label_selector=self.selector)
                for pod in listed.items:
                    self._on_pod("ADDED", pod)
                self._synced.set()
                self._watch = watch.Watch()
                for event in self._watch.stream(
                    self.v1.list_namespaced_pod,
                    self.namespace,
                    label_selector=self.selector,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=30,
                ):
                    if self._stopping.is_set():
                        return
                    self._on_pod(event["type"], event["object"])
            except Exception:
                if self._stopping.is_set():
                    return
                log.warning("pod watch in %s failed; listing again", self.namespace, exc_info=True)
                self._stopping.wait(0.5)


class Gatekeeper:
    """Removes the gate `delay` seconds after first seeing a gated pod: self-healing, slowly."""

    def __init__(self, api: client.ApiClient, namespace: str, selector: str, delay: float) -> None:
        self.delay = delay
        self._pods = _PodWatch(api, namespace, selector, self._on_pod)
        self._timers: dict[str, threading.Timer] = {}
        self.ungated: list[str] = []  # pod names it let go, in order

    def start(self) -> Gatekeeper:
        self._pods.start()
        return self

    def stop(self) -> None:
        self._pods.stop()
        for t in self._timers.values():
            t.cancel()

    def _on_pod(self, kind: str, pod: Any) -> None:
        uid = pod.metadata.uid
        if kind == "DELETED" or not _is_gated(pod) or uid in self._timers:
            return
        # The delay is the behaviour being simulated (a slow path), not a wait for a condition.
        timer = threading.Timer(self.delay, self._release, (pod.metadata.name,))
        timer.daemon = True
        self._timers[uid] = timer
        timer.start()

    def _release(self, name: str) -> None:
        if ungate(self._pods.v1, self._pods.namespace, name):
            self.ungated.append(name)


@dataclass(frozen=True)
class Emitted:
    """One Event the test remediator created: what, about which pod, and the wall clock just
    before it asked the API server and just after the API server answered."""

    reason: str
    pod: str
    before: float
    after: float


class TestRemediator:
    """Detects a lost member, ungates its replacement at once, says so with Events; only while
    its Deployment `deployment` has replicas > 0."""

    __test__ = False  # not a pytest test class

    def __init__(self, api: client.ApiClient, namespace: str, selector: str, deployment: str) -> None:
        self.namespace = namespace
        self.deployment = deployment
        self._apps = client.AppsV1Api(api)
        self._pods = _PodWatch(api, namespace, selector, self._on_pod)
        self._open: dict[str, Any] = {}  # pod name -> the pod the incident is about
        self.emitted: list[Emitted] = []  # in order

    def start(self) -> TestRemediator:
        self._pods.start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        return self._pods.wait_synced(timeout)

    def stop(self) -> None:
        self._pods.stop()

    def active(self) -> bool:
        scale = self._apps.read_namespaced_deployment_scale(self.deployment, self.namespace)
        return int(scale.spec.replicas or 0) > 0

    def _on_pod(self, kind: str, pod: Any) -> None:
        name = pod.metadata.name
        lost = kind == "DELETED" or pod.metadata.deletion_timestamp is not None
        if lost or _is_gated(pod):
            if name not in self._open and self.active():
                self._open[name] = pod
                what = "was deleted" if lost else "cannot be scheduled"
                self._emit(pod, DETECTED, f"member {name} {what}")
            if (
                not lost
                and _is_gated(pod)
                and name in self._open
                and ungate(self._pods.v1, self.namespace, name)
            ):
                self._emit(pod, ACTION, f"removed scheduling gate {GATE} from {name}")
        elif name in self._open and _is_ready(pod):
            del self._open[name]
            self._emit(pod, RESOLVED, f"member {name} is Ready again")

    def _emit(self, pod: Any, reason: str, message: str) -> None:
        before = time.time()
        emit(self._pods.v1, self.namespace, pod.metadata.name, pod.metadata.uid, reason, message)
        self.emitted.append(Emitted(reason, pod.metadata.name, before, time.time()))


def emit(v1: client.CoreV1Api, namespace: str, name: str, uid: str, reason: str, message: str) -> None:
    """One Event of the test remediator (`CONTROLLER`) about pod `name`."""
    now = datetime.datetime.now(datetime.UTC)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{name}."),
        involved_object=client.V1ObjectReference(kind="Pod", name=name, namespace=namespace, uid=uid),
        reason=reason,
        message=message,
        type="Normal",
        source=client.V1EventSource(component=CONTROLLER),
        reporting_component=CONTROLLER,
        reporting_instance="test",
        first_timestamp=now,
        last_timestamp=now,
        count=1,
    )
    v1.create_namespaced_event(namespace, event)
