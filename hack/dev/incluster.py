"""`make dev` on the real node: the operator as users run it, in a pod, from its own image.

hack/dev/run.sh has started the cluster (with its real node) and built and imported the images.
This script then:

- deploys the operator with the manifests users apply (``kubectl apply -k hack/dev/overlay``:
  manifests/ plus only what this machine needs, see the overlay's kustomization), from the
  image built from the project's Dockerfile, its ledger on a PersistentVolumeClaim that the
  cluster's provisioner binds and the real kubelet mounts;
- runs the simulated TiKV on the real node, in namespace tikv: the PD stand-in as a pod
  (faithful mode: PD's 10 s store heartbeats, 20 s to Disconnected) and three store stand-in
  pods, each a real process that registers its store and heartbeats as tikv-server does;
- applies manifests/examples/campaign.yaml adapted for local use (pdURL: the stand-in on
  127.0.0.1; shorter pauses), and shows ``kubectl get campaigns -n tikv -w`` until Ctrl-C, or
  (AFTERSHOCK_DEV_WAIT=1) waits for it to finish and prints the report, read by
  ``aftershock report`` inside the operator's pod from the ledger on its volume.

Ctrl-C stops only the watch: the operator, PD and TiKV stand-ins keep running in the cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dev  # noqa: E402  (hack/dev/dev.py: the Campaign and the console helpers)
from tests.e2e import realnode  # noqa: E402

NAMESPACE = dev.NAMESPACE
OPERATOR_NS = "aftershock-system"
OVERLAY = REPO / "hack" / "dev" / "overlay"
PD_PORT = int(os.environ.get("AFTERSHOCK_DEV_PD_PORT", "23790"))
TIKV_LABELS = {
    "app.kubernetes.io/name": "tikv-cluster",
    "app.kubernetes.io/component": "tikv",
    "app.kubernetes.io/instance": "basic",
}
#: TiKV's default store heartbeat interval (raftstore.pd-store-heartbeat-tick-interval).
HEARTBEAT_SECONDS = 10.0
SETTLE_SECONDS = 15
say = dev.say
kubectl = dev.kubectl


def apply(objs: list[dict[str, Any]], namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input_=yaml.safe_dump_all(objs))


def ensure_namespace(name: str) -> None:
    manifest = kubectl("create", "namespace", name, "--dry-run=client", "-o", "yaml").stdout
    kubectl("apply", "-f", "-", input_=manifest)
    if name != OPERATOR_NS:
        # Opts in, as manifests/tikv/namespace.yaml does, should the operator be given --namespace-label.
        kubectl("label", "namespace", name, "aftershock.dev/campaigns=enabled", "--overwrite")


def api_server() -> tuple[str, str]:
    """The API server's address from the admin kubeconfig: the operator pod, on the host's
    network, reaches it there."""
    server = kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout
    host_port = server.removeprefix("https://").rstrip("/")
    host, _, port = host_port.rpartition(":")
    return host, port


def operator_image_id() -> str:
    """The operator image's id in the node's containerd: a new build rolls the pod."""
    out = subprocess.run(
        ["ctr", "-n", "k8s.io", "images", "ls"], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == "docker.io/library/aftershock:dev":
            return parts[2].removeprefix("sha256:")[:16]
    raise RuntimeError("the operator image aftershock:dev is not in the node's containerd")


def keep_live_claim(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A claim's access mode cannot change in place: a ledger claim made before it became
    ReadWriteOncePod (ADR 0016) keeps its own, so that applying the manifests goes through."""
    for obj in objs:
        if obj["kind"] != "PersistentVolumeClaim":
            continue
        ns = obj["metadata"].get("namespace", OPERATOR_NS)
        live = kubectl("get", "pvc", obj["metadata"]["name"], "-n", ns, "-o", "json", check=False)
        if live.returncode == 0:
            obj["spec"]["accessModes"] = json.loads(live.stdout)["spec"]["accessModes"]
    return objs


def deploy_operator() -> None:
    host, port = api_server()
    ensure_namespace(OPERATOR_NS)
    config = kubectl(
        "create", "configmap", "aftershock-local-apiserver", "-n", OPERATOR_NS,
        f"--from-literal=KUBERNETES_SERVICE_HOST={host}", f"--from-literal=KUBERNETES_SERVICE_PORT={port}",
        "--dry-run=client", "-o", "yaml",
    ).stdout  # fmt: skip
    kubectl("apply", "-f", "-", input_=config)
    rendered = [o for o in yaml.safe_load_all(kubectl("kustomize", str(OVERLAY)).stdout) if o]
    objs = keep_live_claim(rendered)
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input_=yaml.safe_dump_all(objs))
    kubectl("wait", "--for=condition=Established", "crd/campaigns.aftershock.dev", "--timeout=60s")
    patch = {
        "spec": {"template": {"metadata": {"annotations": {"aftershock.dev/image": operator_image_id()}}}}
    }
    kubectl("patch", "deployment", "aftershock", "-n", OPERATOR_NS, "--type=merge", "-p", json.dumps(patch))
    kubectl("rollout", "status", "deployment/aftershock", "-n", OPERATOR_NS, "--timeout=180s")
    say(f"operator running in-cluster: deployment {OPERATOR_NS}/aftershock, ledger on PVC aftershock-ledger")


def deploy_subject() -> str:
    """PD and TiKV stand-ins on the real node; returns the pdURL for the Campaign."""
    ensure_namespace(NAMESPACE)
    # A TiKV StatefulSet of `make dev-local` (kwok pods, no processes) is replaced.
    current = kubectl("get", "statefulset", "tikv", "-n", NAMESPACE, "-o", "json", check=False)
    if current.returncode == 0:
        spec = json.loads(current.stdout)["spec"]["template"]["spec"]
        if realnode.NODE_LABEL not in (spec.get("nodeSelector") or {}):
            say("replacing the kwok-simulated TiKV of make dev-local with the real-node stand-ins")
            kubectl("delete", "statefulset", "tikv", "-n", NAMESPACE, "--wait=true")
    pd_url = f"http://127.0.0.1:{PD_PORT}"
    apply(realnode.pd_standin("pd", PD_PORT, mode="faithful"), NAMESPACE)
    apply(
        realnode.store_standin("tikv", pd_url, heartbeat_interval=HEARTBEAT_SECONDS, labels=TIKV_LABELS),
        NAMESPACE,
    )
    kubectl("rollout", "status", "deployment/pd", "-n", NAMESPACE, "--timeout=180s")
    kubectl("rollout", "status", "statefulset/tikv", "-n", NAMESPACE, "--timeout=180s")
    say(f"TiKV stand-ins on node {realnode.NODE}: PD stand-in {pd_url} (faithful), 3 store processes")
    return pd_url


def report(name: str) -> int:
    proc = subprocess.run(
        ["kubectl", "exec", "-n", OPERATOR_NS, "deploy/aftershock", "--",
         "aftershock", "report", name, "-n", NAMESPACE],
        check=False,
    )  # fmt: skip
    return proc.returncode


def follow(name: str, wait: bool, timeout: float) -> int:
    status = dev.watch_campaign(name, wait, timeout, lambda: None)
    if status is None:
        return 1
    print(flush=True)
    print(kubectl("get", "campaigns", "-n", NAMESPACE).stdout, flush=True)
    return dev.finished(status, report(name))


def banner(name: str, pd_url: str) -> str:
    return "\n".join(
        [
            "",
            f"aftershock runs in-cluster on node {realnode.NODE} (image aftershock:dev, ledger on a PVC)",
            f"  export KUBECONFIG={dev.home(os.environ['KUBECONFIG'])}",
            f"  export PATH={dev.home(Path(shutil.which('kubectl') or 'kubectl').parent)}:$PATH",
            f"  campaign      {NAMESPACE}/{name}: {dev.home(dev.EXAMPLE)} with pdURL={pd_url},",
            "                intervalSeconds=5, steadyState.stableSeconds=3,",
            f"                recovery.settleSeconds={SETTLE_SECONDS}",
            f"  PD stand-in   {pd_url} (faithful: heartbeats every {HEARTBEAT_SECONDS:g} s)",
            f"  operator log  kubectl logs -n {OPERATOR_NS} deploy/aftershock -f",
            f"  report        kubectl exec -n {OPERATOR_NS} deploy/aftershock --"
            f" aftershock report {name} -n {NAMESPACE}",
            "  metrics       http://127.0.0.1:9090/metrics (the pod is on the host's network)",
            f"  try           kubectl -n {NAMESPACE} get pods -o wide -w    ps -ef | grep store.py",
            "Ctrl-C stops this watch only; everything keeps running (make dev-down removes it).",
            "",
        ]
    )


def main() -> int:
    wait = os.environ.get("AFTERSHOCK_DEV_WAIT") == "1"
    timeout = float(os.environ.get("AFTERSHOCK_DEV_TIMEOUT", "1800"))
    name = str(yaml.safe_load(dev.EXAMPLE.read_text())["metadata"]["name"])
    try:
        dev.stop_stale_operator()
        dev.remove_previous_campaign(name)
        deploy_operator()
        pd_url = deploy_subject()
        body = dev.build_campaign(pd_url)
        # PD's real intervals here: the settle window covers a heartbeat and a margin (the
        # CRD's default), not the host-process mode's scaled-down one.
        body["spec"]["recovery"]["settleSeconds"] = SETTLE_SECONDS
        kubectl("apply", "-f", "-", input_=yaml.safe_dump(body))
        print(banner(name, pd_url), file=sys.stderr, flush=True)
        if os.environ.get("AFTERSHOCK_DEV_DETACH") == "1":
            say("detached: the operator, the stand-ins and the Campaign keep running (make dev-down)")
            return 0
        return follow(name, wait, timeout)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 0
    except RuntimeError as exc:
        say(str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
