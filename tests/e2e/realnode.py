"""The test bed's real node (hack/testbed/realnode.sh): pods with real processes under a real
kubelet, beside the kwok nodes. What tests need to put pods there and to see their processes.

Containers are found by the containerID in the pod's status and their processes through the
node's containerd (``ctr -n k8s.io tasks ls``); a process is identified by its PID and its
start time (``/proc/PID/stat`` field 22), so a reused PID is never taken for the same process.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from tests.e2e import testbed

NODE = "real-0"
NODE_LABEL = "aftershock.dev/real-node"
REALNODE_SH = testbed.TESTBED / "realnode.sh"
IMAGES_SH = testbed.TESTBED / "images.sh"
STORE_SCRIPT = testbed.REPO / "tests" / "pdstub" / "store.py"
PYTHON_IMAGE = "registry.local/python:local"
OPERATOR_IMAGE = "aftershock:dev"

T = TypeVar("T")


def cannot_host() -> str | None:
    """Why this machine cannot host the real node (not root, not Debian), or None."""
    proc = subprocess.run([str(REALNODE_SH), "can"], capture_output=True, text=True, check=False)
    return None if proc.returncode == 0 else (proc.stdout.strip() or proc.stderr.strip() or "unknown")


def import_images() -> None:
    """Build (cached) and import the operator and subject images into the node's containerd."""
    testbed.run([str(IMAGES_SH), "all"], timeout=1800)


#: The second real node (opt-in: `second_node`), for tests where a member must really move.
NODE_1 = "real-1"
NODE_1_TAINT = "aftershock.dev/real-node-1"
#: realnode.sh's environment for real-1: an instance of its own (containerd, kubelet, bridge,
#: cgroup root) registered under its own name.
SECOND = {"AFTERSHOCK_REAL_NODE_INSTANCE": NODE_1, "AFTERSHOCK_REAL_NODE_NAME": NODE_1}


#: The third real node (opt-in: `real_node_2`), for repeated trials where a member moves each
#: time (real-1 -> real-2 -> real-1 ...). Its instance is named so that realnode.sh's slot (its
#: subnet, ports, cgroup root: a hash of the instance name) differs from real-1's ("real-2"
#: would share real-1's slot).
NODE_2 = "real-2"
NODE_2_TAINT = "aftershock.dev/real-node-2"
THIRD = {"AFTERSHOCK_REAL_NODE_INSTANCE": "real2", "AFTERSHOCK_REAL_NODE_NAME": NODE_2}

#: Two more (opt-in: `real_node_3`, `real_node_4`), for the remediator evaluation's floating
#: member (real-3 -> real-4 -> real-3 ...), whose other members live on real-2: nodes of their
#: own, so that it runs beside the real-node group (which kills real-0's kubelet and freezes
#: real-1) on another worker. Instance names chosen, as real-2's, for slots of their own.
NODE_3 = "real-3"
FOURTH = {"AFTERSHOCK_REAL_NODE_INSTANCE": "real3", "AFTERSHOCK_REAL_NODE_NAME": NODE_3}
NODE_4 = "real-4"
FIFTH = {"AFTERSHOCK_REAL_NODE_INSTANCE": "real4", "AFTERSHOCK_REAL_NODE_NAME": NODE_4}


def node_taint(node: str) -> str:
    """The label and NoSchedule taint realnode.sh gives `node` (real-N, N > 0)."""
    return f"aftershock.dev/real-node-{node.removeprefix('real-')}"


def node_sh(
    instance: Mapping[str, str], *args: str, cluster: testbed.Cluster | None = None
) -> subprocess.CompletedProcess[str]:
    """realnode.sh for one node instance (`instance`: its AFTERSHOCK_REAL_NODE_* variables; {}
    is the default cluster's real-0)."""
    env = {**(cluster.env() if cluster is not None else os.environ), **instance}
    for key in ("AFTERSHOCK_REAL_NODE_INSTANCE", "AFTERSHOCK_REAL_NODE_NAME"):
        if key not in instance:
            env.pop(key, None)
    return subprocess.run(
        [str(REALNODE_SH), *args], env=env, capture_output=True, text=True, check=True, timeout=600
    )


def _second(*args: str, cluster: testbed.Cluster | None = None) -> subprocess.CompletedProcess[str]:
    return node_sh(SECOND, *args, cluster=cluster)


def start_second_node(cluster: testbed.Cluster, instance: Mapping[str, str] = SECOND) -> None:
    """real-1 (or `instance`: real-2) beside real-0 (hack/testbed/realnode.sh, an instance of its
    own): its own containerd, kubelet, bridge and cgroup root; the images imported into it."""
    name = os.environ.get("AFTERSHOCK_CLUSTER_NAME", "aftershock")
    pki = Path(cluster.kubeconfig).parent / "kwok" / "clusters" / name / "pki"
    node_sh(instance, "up", cluster.kubeconfig, str(pki), cluster=cluster)
    env = {**cluster.env(), **instance}
    subprocess.run([str(IMAGES_SH), "all"], env=env, check=True, capture_output=True, text=True, timeout=1800)


def stop_second_node(cluster: testbed.Cluster, instance: Mapping[str, str] = SECOND) -> None:
    """Remove real-1 (or `instance`) and everything it made; real-0 is left as it is."""
    node_sh(instance, "down", cluster=cluster)
    cluster.kubectl(
        "delete", "node", instance["AFTERSHOCK_REAL_NODE_NAME"], "--ignore-not-found", check=False
    )


# --- node_failure's node agent and what it changes on the host -----------------------------------


def kubelet_of(instance: Mapping[str, str]) -> Process:
    """The instance's kubelet process (its pid file)."""
    state = Path(node_sh(instance, "state-dir").stdout.strip())
    process = Process.of(int((state / "run" / "kubelet.pid").read_text()))
    assert process is not None, f"no kubelet running for {instance or 'real-0'}"
    return process


def process_state(pid: int) -> str:
    """The process's state letter from /proc (T: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def cgroup_root(instance: Mapping[str, str]) -> str:
    """The instance's kubelet cgroup root (its pods are under <root>/kubepods)."""
    return node_sh(instance, "cgroup-root").stdout.strip()


def frozen_cgroups(root: str) -> list[str]:
    """The pod cgroups under cgroup root `root` not THAWED, read from the host's freezer
    hierarchy."""
    pods = Path(f"/sys/fs/cgroup/freezer{root.rstrip('/')}/kubepods")
    assert pods.is_dir(), pods
    return [
        str(p.parent)
        for p in pods.rglob("freezer.state")
        if p.parent != pods and p.read_text().strip() != "THAWED"
    ]


def node_agent_objects(namespace: str, server: str, node: str) -> list[dict[str, Any]]:
    """manifests/node-agent in `namespace`, on `node` only, with the test bed's additions (as
    the operator's local overlay): the host's network (the API server is on 127.0.0.1) and its
    address; the operator image built here; a host state folder of the namespace's own."""
    objs = list(
        yaml.safe_load_all((testbed.REPO / "manifests" / "node-agent" / "node-agent.yaml").read_text())
    )
    host, port = server.removeprefix("https://").rsplit(":", 1)
    for obj in objs:
        meta = obj["metadata"]
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            meta["name"] = f"{meta['name']}-{namespace}"
        else:
            meta["namespace"] = namespace
        if obj["kind"] == "ClusterRoleBinding":
            obj["roleRef"]["name"] = f"aftershock-node-agent-{namespace}"
            obj["subjects"][0]["namespace"] = namespace
        if obj["kind"] == "DaemonSet":
            pod = obj["spec"]["template"]["spec"]
            pod["hostNetwork"] = True
            pod["nodeSelector"] = {"kubernetes.io/hostname": node}
            pod.pop("priorityClassName", None)
            c = pod["containers"][0]
            c["image"] = OPERATOR_IMAGE
            c["imagePullPolicy"] = "Never"
            c["env"] += [
                {"name": "KUBERNETES_SERVICE_HOST", "value": host},
                {"name": "KUBERNETES_SERVICE_PORT", "value": port},
            ]
            pod["volumes"][1]["hostPath"]["path"] = str(node_agent_state_dir(namespace))
    return objs


def node_agent_state_dir(namespace: str) -> Path:
    """The host folder of `node_agent_objects`' agent (what it froze, while it holds a node)."""
    return Path(f"/tmp/aftershock-node-agent-{namespace}")


def on_real_nodes(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """The pod spec, allowed on real-0 and real-1 (both taints tolerated), nowhere else."""
    spec = dict(pod_spec)
    spec["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE, NODE_1]}
                        ]
                    }
                ]
            }
        }
    }
    spec["tolerations"] = [
        *spec.get("tolerations", []),
        {"key": NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"},
        {"key": NODE_1_TAINT, "operator": "Exists", "effect": "NoSchedule"},
    ]
    return spec


def on_node(pod_spec: dict[str, Any], node: str) -> dict[str, Any]:
    """The pod spec, placed on `node` (real-N, N > 0: its label, its taint tolerated)."""
    spec = dict(pod_spec)
    key = node_taint(node)
    spec["nodeSelector"] = {**spec.get("nodeSelector", {}), key: "true"}
    spec["tolerations"] = [
        *spec.get("tolerations", []),
        {"key": key, "operator": "Exists", "effect": "NoSchedule"},
    ]
    return spec


def on_real_node(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """The pod spec, placed on the real node (its label, its taint tolerated)."""
    spec = dict(pod_spec)
    spec["nodeSelector"] = {**spec.get("nodeSelector", {}), NODE_LABEL: "true"}
    spec["tolerations"] = [
        *spec.get("tolerations", []),
        {"key": NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"},
    ]
    return spec


@dataclass(frozen=True)
class Process:
    """One process on this machine: a PID and the start time that makes it unique."""

    pid: int
    start_ticks: int

    @classmethod
    def of(cls, pid: int) -> Process | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        # Field 2 (comm) may hold spaces: count from the closing parenthesis.
        fields = stat[stat.rindex(")") + 2 :].split()
        return cls(pid, int(fields[19]))

    def alive(self) -> bool:
        now = Process.of(self.pid)
        if now is None or now.start_ticks != self.start_ticks:
            return False
        # A zombie has finished: its parent has only not reaped it yet.
        state = Path(f"/proc/{self.pid}/stat").read_text()
        return state[state.rindex(")") + 2] != "Z"

    def ended(self) -> bool:
        return not self.alive()


def task_pids() -> dict[str, int]:
    """containerd's tasks on the node: container id -> PID of its first process."""
    out = subprocess.run(
        ["ctr", "-n", "k8s.io", "tasks", "ls"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    pids: dict[str, int] = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "RUNNING":
            pids[parts[0]] = int(parts[1])
    return pids


def container_process(pod: dict[str, Any], container: str | None = None) -> Process | None:
    """The main process of a pod's container (the first one, or the one named), if it runs."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if container is not None and status.get("name") != container:
            continue
        cid = str(status.get("containerID") or "")
        if not cid.startswith("containerd://"):
            return None
        pid = task_pids().get(cid.removeprefix("containerd://"))
        return Process.of(pid) if pid else None
    return None


def store_standin(
    name: str,
    pd_url: str,
    *,
    replicas: int = 3,
    heartbeat_interval: float,
    labels: dict[str, str],
    host_network: bool = True,
    start_delay: float = 0.0,
    metrics_port_base: int | None = None,
) -> list[dict[str, Any]]:
    """TiKV stand-in pods on the real node: a StatefulSet whose every pod runs
    tests/pdstub/store.py as PID 1, a real process that registers its store with the PD
    stand-in and heartbeats to it as tikv-server does. hostNetwork, because the stand-in
    listens on 127.0.0.1 (the pod bridge has no route to the host, by rule); on the bridge
    (`host_network` False) with a PD stand-in there too (`pd_standin`).

    `start_delay`: seconds each process waits before it registers (tikv-server's own start).
    `metrics_port_base`: pod n serves /metrics on 127.0.0.1:(base + n) once registered."""
    script = STORE_SCRIPT.read_text()
    extra_env = [{"name": "PDSTUB_START_DELAY", "value": f"{start_delay:g}"}]
    if metrics_port_base is not None:
        extra_env.append({"name": "PDSTUB_METRICS_PORT_BASE", "value": str(metrics_port_base)})
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-store-standin"},
        "data": {"store.py": script},
    }
    pod_spec = on_real_node(
        {
            "hostNetwork": host_network,
            "dnsPolicy": "ClusterFirstWithHostNet" if host_network else "ClusterFirst",
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "tikv",
                    "image": PYTHON_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-u", "/standin/store.py"],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {
                            "name": "POD_NAMESPACE",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                        },
                        {"name": "PDSTUB_PD_URL", "value": pd_url},
                        {"name": "PDSTUB_HEARTBEAT_INTERVAL", "value": f"{heartbeat_interval:g}"},
                        {"name": "PDSTUB_HEADLESS_SERVICE", "value": f"{name}-peer"},
                        *extra_env,
                    ],
                    "volumeMounts": [
                        {"name": "standin", "mountPath": "/standin", "readOnly": True},
                        {"name": "data", "mountPath": "/var/lib/tikv"},
                    ],
                }
            ],
            "volumes": [{"name": "standin", "configMap": {"name": f"{name}-store-standin"}}],
        }
    )
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "serviceName": f"{name}-peer",
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }
            ],
        },
    }
    return [config_map, statefulset]


PDSTUB_FILES = ("__init__.py", "server.py", "fleet.py", "config_schedule.json")


def pd_standin(
    name: str,
    port: int,
    *,
    mode: str = "faithful",
    scale: float | None = None,
    host_network: bool = True,
) -> list[dict[str, Any]]:
    """The PD stand-in as a pod on the real node (hostNetwork, 127.0.0.1:port; or on the bridge,
    its pod IP:port): the package's files from a ConfigMap, run by the Debian Python image,
    stdlib only. Its stores are what the store stand-in processes report; nothing is derived
    from pod objects."""
    pdstub = testbed.REPO / "tests" / "pdstub"
    files = {f: (pdstub / f).read_text() for f in PDSTUB_FILES if (pdstub / f).exists()}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-pdstub"},
        "data": {"tests__init__.py": '"""The tests package (only the PD stand-in is here)."""\n', **files},
    }
    items = [{"key": "tests__init__.py", "path": "tests/__init__.py"}] + [
        {"key": f, "path": f"tests/pdstub/{f}"} for f in files
    ]
    args = ["python3", "-u", "-m", "tests.pdstub.server", "--port", str(port), "--mode", mode]
    args += ["--namespace", "$(POD_NAMESPACE)"]
    if not host_network:
        args += ["--host", "0.0.0.0"]
    if scale is not None:
        args += ["--scale", f"{scale:g}"]
    labels = {"app.kubernetes.io/name": "pd-standin", "app.kubernetes.io/instance": name}
    url = f"http://127.0.0.1:{port}/pd/api/v1/health"
    health = f"import urllib.request as u; u.urlopen('{url}', timeout=1)"
    pod_spec = on_real_node(
        {
            "hostNetwork": host_network,
            "dnsPolicy": "ClusterFirstWithHostNet" if host_network else "ClusterFirst",
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "pd",
                    "image": PYTHON_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": args,
                    "workingDir": "/standin",
                    "env": [
                        {
                            "name": "POD_NAMESPACE",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                        }
                    ],
                    # The kubelet reaches a bridge pod only by exec (the host has no route to it).
                    "readinessProbe": {
                        "httpGet": {"host": "127.0.0.1", "path": "/pd/api/v1/health", "port": port},
                        "periodSeconds": 1,
                    }
                    if host_network
                    else {
                        "exec": {"command": ["python3", "-c", health]},
                        "periodSeconds": 1,
                    },
                    "volumeMounts": [{"name": "standin", "mountPath": "/standin", "readOnly": True}],
                }
            ],
            "volumes": [{"name": "standin", "configMap": {"name": f"{name}-pdstub", "items": items}}],
        }
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    return [config_map, deployment]


def boot_time() -> float:
    """The wall clock at boot, to the microsecond: what a process's start ticks count from.
    Not /proc/stat's btime: whole seconds, truncated, so a start time built on it was early by
    the boot's fraction of a second (0.15 s on one boot: a replacement seemed to start before
    the kill)."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def started_wall(process: Process) -> float:
    """When the process started, unix seconds (to a clock tick, 10 ms)."""
    return boot_time() + process.start_ticks / CLOCK_TICKS


class ProcessTracker:
    """Every container process of a namespace's pods, by pod UID, found when the pod's status
    first names a running container (a watch, so a replacement is seen as it starts, long
    before a Campaign's steady-state gate lets it be killed)."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self._v1 = k8s.CoreV1Api(api)
        self.namespace = namespace
        self.by_uid: dict[str, Process] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"procs-{namespace}", daemon=True)

    def start(self) -> ProcessTracker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def get(self, uid: str) -> Process | None:
        with self._lock:
            return self.by_uid.get(uid)

    def _see(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            if uid in self.by_uid:
                return
        process = container_process(pod)
        if process is not None:
            with self._lock:
                self.by_uid.setdefault(uid, process)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self._v1.list_namespaced_pod(
                    self.namespace, _preload_content=False, _request_timeout=30
                )
                listed = json.loads(resp.data)
                for pod in listed["items"]:
                    self._see(pod)
                w = k8s_watch.Watch()
                for event in w.stream(
                    self._v1.list_namespaced_pod,
                    self.namespace,
                    resource_version=listed["metadata"]["resourceVersion"],
                    timeout_seconds=20,
                    _request_timeout=30,
                ):
                    if self._stop.is_set():
                        w.stop()
                        return
                    if event["type"] != "DELETED":
                        self._see(event["raw_object"])
            except Exception:  # a broken watch: list again
                if self._stop.wait(0.2):
                    return


# --- a pod's own loopback, forwarded to the API server ------------------------------------------

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def pod_netns(pod_uid: str) -> Path | None:
    """The network namespace of a pod on the real node: that of any of its processes (the
    sandbox's pause first of all), found by the pod's cgroup (kubepods/.../pod<uid>/...)."""
    needles = (f"pod{pod_uid}", f"pod{pod_uid.replace('-', '_')}")
    host = os.stat("/proc/self/ns/net").st_ino
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            groups = Path(f"/proc/{entry.name}/cgroup").read_text()
            netns = Path(f"/proc/{entry.name}/ns/net")
            # The pod's cgroup may hold a process on the host's network too (the shim).
            if any(n in groups for n in needles) and os.stat(netns).st_ino != host:
                return netns
        except OSError:
            continue
    return None


class LoopbackForwarder:
    """127.0.0.1:`port` inside a pod's network namespace, forwarded to 127.0.0.1:`target` on the
    host: what the `kubernetes` Service's route is elsewhere, for a pod that may not use the
    host's network (the restricted Pod Security Standard forbids it) while the test bed's API
    server listens on the host's loopback only. Both ends are loopback addresses: the pod's own
    (a namespace the test bed made) and the host's. The listening socket is made by a thread
    that enters the pod's namespace (setns) and leaves it again; every upstream connection is
    made from the host's."""

    def __init__(self, netns: Path, port: int, target: int) -> None:
        self.netns = netns
        self.port = port
        self.target = target
        self.connections = 0
        self._listener: socket.socket | None = None
        self._stop = threading.Event()

    def start(self) -> LoopbackForwarder:
        self._listener = in_netns(self.netns, lambda: socket.create_server(("127.0.0.1", self.port)))
        threading.Thread(target=self._accept, name="netns-accept", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                inside, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                inside.close()
                continue
            upstream.settimeout(None)
            self.connections += 1
            for a, b in ((inside, upstream), (upstream, inside)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


# --- a pod's network, reached from the host ----------------------------------------------------


def in_netns(netns: Path, fn: Callable[[], T]) -> T:
    """`fn()` run by a thread inside `netns` (setns is per thread): a socket it makes stays in
    that namespace after the thread leaves it."""
    done: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(netns, os.O_RDONLY)
        try:
            _setns(target)
            try:
                done.append(fn())
            finally:
                _setns(home)
        except BaseException as exc:
            failed.append(exc)
        finally:
            os.close(home)
            os.close(target)

    thread = threading.Thread(target=run, name="in-netns")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return done[0]


def enter_netns(netns: Path) -> None:
    """Move the calling thread into `netns` for good (a witness thread that lives there)."""
    fd = os.open(netns, os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


class NetnsForwarder:
    """127.0.0.1:`port` on the host, forwarded to `ip`:`target` as reached from inside `netns`
    (a pod of the test's own on the bridge): the host has no route to the pod network (by rule),
    so the operator, a host process, reaches bridge pods this way. Both ends are addresses the
    rule allows: the host's loopback and a pod IP inside a namespace the test bed made."""

    def __init__(self, netns: Path, ip: str, target: int) -> None:
        self.netns = netns
        self.ip = ip
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NetnsForwarder:
        threading.Thread(target=self._accept, name="netns-forward", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                outside, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = in_netns(
                    self.netns, lambda: socket.create_connection((self.ip, self.target), timeout=5)
                )
            except OSError:
                outside.close()
                continue
            upstream.settimeout(None)
            for a, b in ((outside, upstream), (upstream, outside)):
                threading.Thread(target=LoopbackForwarder._pump, args=(a, b), daemon=True).start()


def netns_rules(netns: Path) -> str:
    """Every iptables rule (nf_tables backend, as Debian's iptables writes them) and the whole
    nftables ruleset of a network namespace, read from the host."""
    out = []
    for command in (["iptables-save"], ["nft", "list", "ruleset"]):
        proc = subprocess.run(
            ["nsenter", f"--net={netns}", *command], capture_output=True, text=True, check=False, timeout=30
        )
        out.append(proc.stdout + proc.stderr)
    return "\n".join(out)


def netns_processes(netns: Path) -> list[tuple[int, str, str]]:
    """(PID, command name, command line) of every process in a network namespace."""
    inode = os.stat(netns).st_ino
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino != inode:
                continue
            comm = Path(f"/proc/{entry.name}/comm").read_text().strip()
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        found.append((int(entry.name), comm, cmdline))
    return found
