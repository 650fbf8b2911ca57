"""The operator as a real process, authenticated as its own ServiceAccount, and a simulated
TiKV subject: a StatefulSet on kwok nodes plus the PD stand-in on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kubernetes import client as k8s

from tests.e2e import testbed
from tests.pdstub import PdStandIn, Timing
from tests.pdstub.kube_source import KubePodSource


def operator_command(
    db: Path,
    kubeconfig: str,
    metrics_port: int,
    namespaces: list[str] | None,
    *,
    allow_loopback_pd: bool = True,
) -> list[str]:
    """`aftershock run` as the tests start it: its own ServiceAccount's kubeconfig, the PD
    stand-in on loopback allowed, PD asked every 0.2 s; `namespaces=None` is --all-namespaces."""
    args = [
        sys.executable,
        "-m",
        "aftershock",
        "run",
        "--db",
        str(db),
        "--liveness-port",
        "0",
        "--metrics-port",
        str(metrics_port),
        "--probe-interval",
        "0.2",
        "--kubeconfig",
        kubeconfig,
    ]
    if allow_loopback_pd:
        args.append("--allow-loopback-pd")
    if namespaces is None:
        args.append("--all-namespaces")
    for ns in namespaces or ():
        args += ["--namespace", ns]
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


TIKV_LABELS = {"app.kubernetes.io/component": "tikv", "app.kubernetes.io/instance": "e2e"}


@dataclass
class OperatorProcess:
    kubeconfig: str
    db: Path
    namespaces: list[str] | None  # None: --all-namespaces
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    _log: TextIO | None = None
    starts: int = 0
    metrics_port: int = 0

    def start(self) -> None:
        self.metrics_port = free_port()
        args = operator_command(self.db, self.kubeconfig, self.metrics_port, self.namespaces)
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "a")  # noqa: SIM115 (kept open for the process's life)
        self._log.write(f"\n===== start #{self.starts + 1} {' '.join(args)}\n")
        self._log.flush()
        self.proc = subprocess.Popen(
            args + self.extra_args, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful stop: the crash the ledger must survive."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The process stopped (SIGSTOP) for the block: whatever changes meanwhile is certainly
        not acted on yet. SIGCONT after, whatever happened."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def tikv_statefulset(name: str = "tikv", replicas: int = 3) -> dict[str, Any]:
    labels = dict(TIKV_LABELS)
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "serviceName": f"{name}-peer",
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {
                            "name": "tikv",
                            "image": "pingcap/tikv:v8.5.3",
                            "ports": [{"containerPort": 20160}, {"containerPort": 20180}],
                        }
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }
            ],
        },
    }


@dataclass
class Subject:
    namespace: str
    pd: PdStandIn
    source: KubePodSource

    @property
    def pd_url(self) -> str:
        return self.pd.base_url

    def close(self) -> None:
        self.pd.stop()
        self.source.stop()


#: The stand-in's timing in end-to-end tests: PD's and TiKV's rules, every interval x 0.05
#: (heartbeat 0.5 s, Disconnected after 1 s). A restarted store reports Up one interval after Ready.
E2E_TIMING = Timing.fast(0.05)


def start_subject(
    cluster: testbed.Cluster, namespace: str, replicas: int = 3, timing: Timing = E2E_TIMING
) -> Subject:
    cluster.apply(tikv_statefulset(replicas=replicas), namespace=namespace)
    cluster.kubectl("rollout", "status", "statefulset/tikv", "-n", namespace, "--timeout=120s")
    selector = ",".join(f"{k}={v}" for k, v in TIKV_LABELS.items())
    source = KubePodSource(cluster.api_client(), namespace, selector).start()
    assert source.wait_synced(30)
    pd = PdStandIn(source, timing=timing, headless_service="tikv-peer", namespace=namespace)
    pd.start()
    return Subject(namespace, pd, source)


def campaign(name: str, namespace: str, pd_url: str | None, **spec: Any) -> dict[str, Any]:
    subject: dict[str, Any] = {"kind": "TiKV", "selector": {"matchLabels": dict(TIKV_LABELS)}}
    if pd_url is not None:
        subject["pdURL"] = pd_url
    body: dict[str, Any] = {
        "subject": subject,
        "chaos": {"type": "node_kill", "mode": "one", "gracePeriodSeconds": 0},
        "trials": 3,
        "intervalSeconds": 0,
        "steadyState": {"timeoutSeconds": 60, "stableSeconds": 0.5},
        "recovery": {"timeoutSeconds": 60},
    }
    body.update(spec)
    return {
        "apiVersion": "aftershock.dev/v1alpha1",
        "kind": "Campaign",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def kind_campaign(
    name: str,
    namespace: str,
    subject: dict[str, Any],
    chaos: dict[str, Any],
    *,
    trials: int,
    recovery_s: float,
) -> dict[str, Any]:
    """A Campaign of the real-node tests of one chaos kind: `chaos` on one victim, trials back to
    back, each after a steady state held 1 s (within 180 s) and recovered within `recovery_s`,
    settled 1 s."""
    return {
        "apiVersion": "aftershock.dev/v1alpha1",
        "kind": "Campaign",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "subject": subject,
            "chaos": {"mode": "one", **chaos},
            "trials": trials,
            "intervalSeconds": 0,
            "steadyState": {"timeoutSeconds": 180, "stableSeconds": 1},
            "recovery": {"timeoutSeconds": recovery_s, "settleSeconds": 1},
        },
    }


def percentiles(values: list[float]) -> str:
    """p50, p95 and the maximum of `values` (seconds), for a test's printed summary."""
    ordered = sorted(values)
    p50 = ordered[len(ordered) // 2]
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"n={len(ordered)} p50 {p50:.3f}s p95 {p95:.3f}s max {ordered[-1]:.3f}s"


def get_campaign(cluster: testbed.Cluster, namespace: str, name: str) -> dict[str, Any]:
    api = k8s.CustomObjectsApi(cluster.api_client())
    obj: dict[str, Any] = api.get_namespaced_custom_object(
        "aftershock.dev", "v1alpha1", namespace, "campaigns", name
    )
    return obj


def wait_phase(
    cluster: testbed.Cluster,
    namespace: str,
    name: str,
    phases: set[str],
    timeout: float = 120,
    op: OperatorProcess | None = None,
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        if op is not None and not op.alive():
            raise AssertionError(f"operator exited:\n{op.log_text()[-4000:]}")
        obj = get_campaign(cluster, namespace, name)
        return obj if (obj.get("status") or {}).get("phase") in phases else None

    try:
        result: dict[str, Any] = testbed.wait_for(check, timeout, interval=0.3, what=f"{name} in {phases}")
    except AssertionError:
        if op is not None:
            print(op.log_text()[-6000:])
        print("last seen:", get_campaign(cluster, namespace, name).get("status"))
        raise
    return result


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return None


def pod_uids(cluster: testbed.Cluster, namespace: str) -> dict[str, str]:
    pods = cluster.get_json("pods", "-n", namespace)["items"]
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}


def wait_until(pred: Any, timeout: float, what: str) -> Any:
    return testbed.wait_for(pred, timeout, interval=0.1, what=what)


def now() -> float:
    return time.time()
