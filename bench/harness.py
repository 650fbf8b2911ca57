"""What every benchmark run shares: the test bed, one identity per tool, a fresh subject per
tool, and the cost of a process (CPU seconds, peak RSS).

Each tool authenticates as its own ServiceAccount in the `aftershock-bench` namespace, never as
the admin: that is how the API server tells its requests apart (see `bench.apicount`). The
harness itself (ground-truth watch, PD stand-in, setup) uses the admin certificate.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tests.e2e import testbed
from tests.e2e.operator import TIKV_LABELS, tikv_statefulset

from bench import apicount

BENCH_NS = apicount.PREFIX
SELECTOR = ",".join(f"{k}={v}" for k, v in TIKV_LABELS.items())
CACHE = Path(os.environ.get("AFTERSHOCK_CACHE", Path.home() / ".cache" / "aftershock"))
VENVS = CACHE / "bench-venvs"

#: What the peers need, and nothing more than their users would grant: pods (their own
#: namespace is not known in advance, and Krkn watches pods cluster-wide), StatefulSets to read.
_PEER_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": f"{apicount.PREFIX}-peer", "labels": {"app.kubernetes.io/part-of": apicount.PREFIX}},
    "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
        {"apiGroups": [""], "resources": ["namespaces", "nodes"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get", "list", "watch"]},
    ],
}


def _binding(tool: str, role: str, suffix: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": f"{apicount.PREFIX}-{tool}{suffix}",
            "labels": {"app.kubernetes.io/part-of": apicount.PREFIX},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": tool, "namespace": BENCH_NS}],
    }


@dataclass
class Bed:
    cluster: testbed.Cluster
    workdir: Path

    def identity(self, tool: str, role: str = f"{apicount.PREFIX}-peer") -> str:
        """A ServiceAccount `aftershock-bench/<tool>` bound to `role`, its request counters, and a
        kubeconfig with its bound token."""
        self.cluster.kubectl("create", "serviceaccount", tool, "-n", BENCH_NS, check=False)
        self.cluster.apply(_binding(tool, role))
        if role == "aftershock":
            # As shipped, the operator also holds the author check's SubjectAccessReview right
            # (its own ClusterRole, ADR 0012): without it every Campaign fails that check.
            self.cluster.apply(_binding(tool, "aftershock-author-check", "-author-check"))
        apicount.install(self.cluster, tool, BENCH_NS, tool)
        return self.cluster.service_account_kubeconfig(
            BENCH_NS, tool, self.workdir / f"{tool}.kubeconfig", "4h"
        )


def setup(workdir: Path) -> Bed:
    cluster = testbed.start_or_reuse()
    manifests = testbed.REPO / "manifests"
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(manifests / "crd" / "campaigns.aftershock.dev.yaml"),
    )
    cluster.kubectl("apply", "-f", str(manifests / "operator" / "rbac.yaml"))
    # Records each Campaign's author, which the operator checks before a run (ADR 0012).
    cluster.kubectl("apply", "-f", str(manifests / "admission" / "author.yaml"))
    _ensure_namespace(cluster, BENCH_NS)
    cluster.apply(_PEER_ROLE)
    workdir.mkdir(parents=True, exist_ok=True)
    return Bed(cluster, workdir)


def _ensure_namespace(cluster: testbed.Cluster, name: str, timeout: float = 180) -> None:
    """The namespace, Active: a previous run's teardown may have left it Terminating."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cluster.kubectl("get", "namespace", name, "-o", "jsonpath={.status.phase}", check=False)
        if got.returncode != 0:
            cluster.kubectl("create", "namespace", name, check=False)
        elif got.stdout.strip() == "Active":
            return
        time.sleep(1)
    raise RuntimeError(f"namespace {name} not Active within {timeout:g}s")


def teardown(bed: Bed) -> None:
    """Everything `setup` and `identity` made (the CRD and the operator's ClusterRole stay:
    they are the project's own and other work uses them)."""
    c = bed.cluster
    apicount.uninstall(c)
    c.kubectl(
        "delete",
        "clusterrolebindings,clusterroles",
        "-l",
        f"app.kubernetes.io/part-of={apicount.PREFIX}",
        "--ignore-not-found",
        check=False,
    )
    c.kubectl("delete", "namespace", BENCH_NS, "--wait=false", "--ignore-not-found", check=False)


def fresh_subject(bed: Bed, prefix: str, replicas: int = 3) -> str:
    """A new namespace with a Ready `replicas`-pod TiKV-shaped StatefulSet on kwok nodes."""
    ns = testbed.unique(prefix)
    c = bed.cluster
    c.kubectl("create", "namespace", ns)
    c.kubectl("label", "namespace", ns, f"app.kubernetes.io/part-of={apicount.PREFIX}")
    testbed.wait_for(
        lambda: c.kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0,
        60,
        what=f"default ServiceAccount in {ns}",
    )
    c.apply(tikv_statefulset(replicas=replicas), namespace=ns)
    c.kubectl("rollout", "status", "statefulset/tikv", "-n", ns, "--timeout=180s", timeout=200)
    return ns


def fresh_real_subject(bed: Bed, prefix: str, pd_url: str, heartbeat_interval: float) -> str:
    """A new namespace with a Ready 3-pod StatefulSet on the real node: every pod a real store
    process (tests/pdstub/store.py) that registers with the PD stand-in at `pd_url` (on
    127.0.0.1: the pods use the host's network) and heartbeats to it every
    `heartbeat_interval` s. Grace period 0, as on kwok: a kill ends the process at once."""
    from tests.e2e import realnode

    ns = testbed.unique(prefix)
    c = bed.cluster
    c.kubectl("create", "namespace", ns)
    c.kubectl("label", "namespace", ns, f"app.kubernetes.io/part-of={apicount.PREFIX}")
    testbed.wait_for(
        lambda: c.kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0,
        60,
        what=f"default ServiceAccount in {ns}",
    )
    objs = realnode.store_standin(
        "tikv", pd_url, heartbeat_interval=heartbeat_interval, labels=dict(TIKV_LABELS)
    )
    for obj in objs:
        if obj["kind"] == "StatefulSet":
            obj["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 0
    c.apply(yaml.safe_dump_all(objs), namespace=ns)
    c.kubectl("rollout", "status", "statefulset/tikv", "-n", ns, "--timeout=180s", timeout=200)
    return ns


def real_node_ready(bed: Bed) -> str | None:
    """Why the real node cannot take a subject now (missing, not Ready), or None."""
    from tests.e2e import realnode

    got = bed.cluster.kubectl(
        "get",
        "node",
        realnode.NODE,
        "-o",
        'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
        check=False,
    )
    if got.returncode != 0:
        return f"node {realnode.NODE} is missing (hack/testbed/cluster.sh up starts it where it can run)"
    if got.stdout.strip() != "True":
        return f"node {realnode.NODE} is not Ready"
    images = bed.cluster.kubectl(
        "get", "node", realnode.NODE, "-o", "jsonpath={.status.images[*].names}"
    ).stdout
    if realnode.PYTHON_IMAGE not in images:
        return f"{realnode.PYTHON_IMAGE} is not on {realnode.NODE}: run hack/testbed/images.sh all"
    return None


def drop_namespace(bed: Bed, ns: str) -> None:
    """Delete a subject namespace; Campaigns lose their finalizer first (no operator remains to
    remove it, and the namespace would hang in Terminating)."""
    c = bed.cluster
    for name in c.kubectl("get", "campaigns", "-n", ns, "-o", "name", check=False).stdout.split():
        c.kubectl(
            "patch", name, "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False
        )
    c.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


# --- process cost ------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def report_json(namespace: str, name: str, db: Path) -> dict[str, Any]:
    """`aftershock report NAME -n NAMESPACE --db DB --format json`, as a user runs it."""
    cmd = [sys.executable, "-m", "aftershock", "report", name, "-n", namespace, "--db", str(db)]
    cmd += ["--format", "json"]
    report: dict[str, Any] = json.loads(testbed.run(cmd).stdout)
    return report


def proc_cpu_rss(pid: int) -> tuple[float, float]:
    """(user+system CPU seconds, peak RSS in MiB) of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICK
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return cpu, hwm / 1024


@dataclass
class Finished:
    returncode: int
    cpu: float  # user + system seconds
    max_rss_mib: float
    wall: float
    started: float  # monotonic
    ended: float  # monotonic


def run_measured(args: list[str], *, env: dict[str, str], log: Path, timeout: float) -> Finished:
    """Run a command to completion; its CPU time and peak RSS come from the kernel (wait4)."""
    started = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
    ended = time.monotonic()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Finished(
        returncode=proc.returncode,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss_mib=usage.ru_maxrss / 1024,
        wall=ended - started,
        started=started,
        ended=ended,
    )


def versions(bed: Bed) -> dict[str, str]:
    def pip_version(python: str, pkg: str) -> str:
        if not Path(python).exists():  # a peer's venv not made (bench/peers.sh): runs without it
            return "not installed"
        out = subprocess.run(
            [python, "-c", f"import importlib.metadata as m; print(m.version({pkg!r}))"],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip() or "not installed"

    ctk = str(VENVS / "chaostoolkit" / "bin" / "python")
    krkn = str(VENVS / "krkn" / "bin" / "python")
    try:
        k8s = json.loads(bed.cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    except (ValueError, KeyError, RuntimeError):
        k8s = "unknown"
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    head = subprocess.run(
        ["git", "-C", str(testbed.REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "aftershock": f"{pip_version(sys.executable, 'aftershock')} (git {head})",
        "kopf": pip_version(sys.executable, "kopf"),
        "chaostoolkit": pip_version(ctk, "chaostoolkit"),
        "chaostoolkit-lib": pip_version(ctk, "chaostoolkit-lib"),
        "chaostoolkit-kubernetes": pip_version(ctk, "chaostoolkit-kubernetes"),
        "krkn-lib": pip_version(krkn, "krkn-lib"),
        "kubernetes client (peers)": f"{pip_version(ctk, 'kubernetes')} (Chaos Toolkit), "
        f"{pip_version(krkn, 'kubernetes')} (krkn-lib)",
        "Kubernetes (server)": k8s,
        "kwok": "v0.8.0",
        "Python": platform.python_version(),
        "machine": f"{os.cpu_count()} cores (nproc), {mem_kib / 1024 / 1024:.1f} GiB memory, "
        f"load average {os.getloadavg()[0]:.2f} at start (shared with other work)",
    }
