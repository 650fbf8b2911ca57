"""Access to the local test bed for end-to-end tests: a real API server (kube-apiserver,
controllers, scheduler, etcd) with kwok-simulated nodes, started by hack/testbed/cluster.sh."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from aftershock.chaos import registry as chaos_registry

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "hack" / "testbed"


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    input_: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(cmd), capture_output=True, text=True, input=input_, env=env, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


_CRD_LAG = "There can be a delay between when CustomResourceDefinitions are created"


@dataclass
class Cluster:
    kubeconfig: str
    bin_dir: str
    started_here: bool

    @property
    def kubectl_path(self) -> str:
        return os.path.join(self.bin_dir, "kubectl")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = self.kubeconfig
        env["PATH"] = f"{self.bin_dir}:{env.get('PATH', '')}"
        return env

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input_: str | None = None,
        kubeconfig: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        return run(
            [self.kubectl_path, "--kubeconfig", kubeconfig or self.kubeconfig, *args],
            check=check,
            input_=input_,
            timeout=timeout,
        )

    def apply(
        self,
        obj: dict[str, Any] | str,
        *,
        namespace: str | None = None,
        check: bool = True,
        kubeconfig: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        # On a cluster started a moment ago, a Campaign can be refused for a few seconds after its
        # CRD is Established: the admission policies that match Campaigns (ADR 0012) learn the new
        # kind late and answer 503 "Kind=Campaign not found. There can be a delay ...". That is
        # the API server catching up, not a refusal: ask again, for a bounded time.
        deadline = time.monotonic() + 60
        while True:
            got = self.kubectl(*args, input_=text, check=False, kubeconfig=kubeconfig)
            if got.returncode == 0 or _CRD_LAG not in got.stderr or time.monotonic() > deadline:
                break
            time.sleep(1)
        if check and got.returncode != 0:
            what = " ".join(args)
            raise RuntimeError(f"kubectl {what} failed ({got.returncode}):\n{got.stdout}\n{got.stderr}")
        return got

    def api_client(self, kubeconfig: str | None = None) -> k8s.ApiClient:
        return k8s_config.new_client_from_config(config_file=kubeconfig or self.kubeconfig)

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def service_account_kubeconfig(self, namespace: str, sa: str, path: Path, duration: str = "2h") -> str:
        """A kubeconfig that authenticates as the ServiceAccount with a bound token
        (TokenRequest API), never the admin certificate."""
        token = self.kubectl("create", "token", sa, "-n", namespace, f"--duration={duration}").stdout.strip()
        admin = yaml.safe_load(Path(self.kubeconfig).read_text())
        ctx_name = admin["current-context"]
        ctx = next(c for c in admin["contexts"] if c["name"] == ctx_name)["context"]
        cluster = next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": f"{namespace}-{sa}", "user": {"token": token}}],
            "contexts": [
                {"name": "sa", "context": {"cluster": cluster["name"], "user": f"{namespace}-{sa}"}}
            ],
            "current-context": "sa",
        }
        path.write_text(yaml.safe_dump(cfg))
        return str(path)


def install_operator_identity(cluster: Cluster, kubeconfig_path: Path, duration: str = "6h") -> str:
    """The CRD, the operator's Namespace, ServiceAccount and RBAC from manifests/, and a kubeconfig
    holding that ServiceAccount's token: an operator started with it never uses the admin cert."""
    manifests = REPO / "manifests"
    with machine_lock("operator-identity"):  # parallel workers would race on the same objects
        cluster.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(manifests / "crd" / "campaigns.aftershock.dev.yaml"),
        )
        cluster.kubectl(
            "wait", "--for=condition=Established", "crd/campaigns.aftershock.dev", "--timeout=60s"
        )
        for f in ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml", "chaos-rbac.yaml"):
            cluster.kubectl("apply", "-f", str(manifests / "operator" / f))
        # With every opt-in chaos kind's component (node_failure's nodes get and patch,
        # manifests/node-failure): the test bed's tests fail nodes. The install as shipped grants
        # none of them: tests/reliability/test_security.py checks that, and the refusal a
        # node_failure Campaign gets there, on a cluster of its own.
        for info in chaos_registry.KINDS.values():
            if info.component is not None:
                cluster.kubectl("apply", "-f", str(REPO / info.component / "chaos-rbac.yaml"))
        # The MutatingAdmissionPolicy that records each Campaign's author (ADR 0012), bound
        # cluster-wide as shipped: the operator's --author-check (on by default) reads it. It only
        # adds an annotation. The validating policies are bound by the tests that test them, to
        # their own namespaces: on a shared test bed they would refuse other tests' Campaigns.
        cluster.kubectl("apply", "-f", str(manifests / "admission" / "author.yaml"))
    return cluster.service_account_kubeconfig(
        "aftershock-system", "aftershock", kubeconfig_path, duration=duration
    )


CACHE = Path(os.environ.get("AFTERSHOCK_CACHE") or Path.home() / ".cache" / "aftershock")


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """One holder at a time on this machine (an flock on a file in the cache): pytest-xdist's
    workers, and other checkouts' runs, start the one shared test bed and install its
    cluster-wide objects, never two at once."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def allow_recreate(cluster: Cluster, namespace: str) -> None:
    """What a cluster administrator does to allow spec.reset Recreate in a namespace: bind the
    ClusterRole aftershock-reset-recreate there to the operator's ServiceAccount."""
    cluster.kubectl(
        "create", "rolebinding", "aftershock-reset-recreate", "-n", namespace,
        "--clusterrole", "aftershock-reset-recreate", "--serviceaccount", "aftershock-system:aftershock",
    )  # fmt: skip


def start_or_reuse() -> Cluster:
    """Use the running test bed, or start one (the caller tears down what it started)."""
    bin_dir = run([str(TESTBED / "build.sh")], timeout=3600).stdout.strip().splitlines()[-1]
    running = (
        subprocess.run([str(TESTBED / "cluster.sh"), "status"], capture_output=True, check=False).returncode
        == 0
    )
    out = run([str(TESTBED / "cluster.sh"), "up"], timeout=600).stdout.strip().splitlines()[-1]
    return Cluster(kubeconfig=out, bin_dir=bin_dir, started_here=not running)


def stop(cluster: Cluster) -> None:
    run([str(TESTBED / "cluster.sh"), "down"], check=False, timeout=300)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def wait_for(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition"
) -> Any:
    """Wait until predicate() is truthy; the interval is for checks a test makes by hand."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
