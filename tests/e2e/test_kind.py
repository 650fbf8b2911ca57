"""The README's kind path, end to end: `make kind-up tikv-up image deploy`, the example Campaign,
`make kind-down`, on a kind cluster of its own (docs/adr/0014-kind-node-image.md).

On a machine without a Docker of its own (this project's, CI) it runs on the project's dockerd
with the node image and the PD/TiKV stand-in images built here; the targets are the ones a user
runs. It does not use the shared test bed. Witnesses independent of the operator:
- a watch on the TiKV pods counts the pods that were really deleted and replaced;
- PD (the stand-in in its pod, asked through the API server's pod proxy) has every store Up after;
- after `make kind-down`, the host has no container, no bridge, no iptables rule or FORWARD
  policy change left from it.
Deselected (not skipped) only where the machine cannot host it (the real node's conditions:
root, Debian); the reason is printed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch

from tests.e2e import testbed

pytestmark = pytest.mark.kind

CLUSTER = "aftershock-e2e"
CONTEXT = f"kind-{CLUSTER}"
EXAMPLE = testbed.REPO / "manifests" / "examples" / "campaign.yaml"
# The example runs 10 trials 30 s apart (~10 min here). CI's budget takes 3, 10 s apart: the same
# Campaign otherwise (selector, PD URL, chaos, SLO).
TRIALS = int(os.environ.get("AFTERSHOCK_KIND_TRIALS", "3"))
INTERVAL = int(os.environ.get("AFTERSHOCK_KIND_INTERVAL", "10"))


def _make(env: dict[str, str], *targets: str, timeout: float) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        ["make", *targets],
        cwd=testbed.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    took = time.monotonic() - started
    print(f"make {' '.join(targets)}: {took:.0f}s")
    if proc.returncode != 0:
        out, err = proc.stdout[-4000:], proc.stderr[-6000:]
        pytest.fail(f"make {' '.join(targets)} failed ({proc.returncode}):\n{out}\n{err}")


def _host_network() -> dict[str, Any]:
    """What the project's dockerd and kind could leave on the host: bridges, FORWARD policy,
    iptables rules that name Docker or kind's bridge, the /lib/modules folder kind mounts."""
    links = subprocess.run(
        ["ip", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True, check=True
    )
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    forward = re.search(r"^:FORWARD (\w+)", rules, re.M)
    # Only the bridges Docker or kind make (docker0, br-<id>, kind's aftershock-kind): in `make
    # test` the other tests run beside this one, and the real node's bridge is not this test's.
    bridges = re.findall(r"^\d+: ([^:@]+)", links.stdout, re.M)
    return {
        "bridges": sorted(b for b in bridges if re.fullmatch(r"docker0|br-[0-9a-f]+|aftershock-kind", b)),
        "forward": forward.group(1) if forward else None,
        "lib_modules": Path("/lib/modules").exists(),
        "docker_rules": sorted(
            line for line in rules.splitlines() if re.search(r"DOCKER|aftershock-kind", line)
        ),
    }


class PodWitness:
    """Every TiKV pod UID the API server shows, from a watch of the namespace."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.core = k8s.CoreV1Api(api)
        self.uids: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            w = k8s_watch.Watch()
            try:
                for event in w.stream(
                    self.core.list_namespaced_pod,
                    "tikv",
                    label_selector="app.kubernetes.io/component=tikv",
                    timeout_seconds=30,
                ):
                    self.uids.add(event["object"].metadata.uid)
                    if self._stop.is_set():
                        break
            except Exception:  # the watch is restarted; a gap shows in the count of pods
                time.sleep(1)

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture
def kind_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    env.update(KIND_CLUSTER=CLUSTER, KUBECONFIG=str(tmp_path / "kubeconfig"))
    before = _host_network()
    try:
        yield env
    finally:
        _make(env, "kind-down", timeout=600)
        after = _host_network()
        # Nothing new: what was there before stays allowed (a run killed mid-way leaves its
        # dockerd's bridge and rules, which this test's kind-down then removes; seen once).
        left = {
            "bridges": sorted(set(after["bridges"]) - set(before["bridges"])),
            "forward": after["forward"] if after["forward"] != before["forward"] else None,
            "lib_modules": after["lib_modules"] and not before["lib_modules"],
            "docker_rules": sorted(set(after["docker_rules"]) - set(before["docker_rules"])),
        }
        assert not any(left.values()), f"the kind path left a trace on the host: {left} (before {before})"
        docker_sock = Path("/run/aftershock-kind-docker/docker.sock")
        assert not docker_sock.exists(), "the project's dockerd is still running after make kind-down"


# Cold, the node image's Go builds alone take 10-25 minutes on 2 cores.
@pytest.mark.timeout(5400)
def test_kind_path_runs_the_example_campaign(kind_env: dict[str, str]) -> None:
    started = time.monotonic()
    _make(kind_env, "kind-up", timeout=3000)
    up = time.monotonic()
    _make(kind_env, "tikv-up", "image", "deploy", timeout=1800)

    api = k8s_config.new_client_from_config(config_file=kind_env["KUBECONFIG"], context=CONTEXT)
    core = k8s.CoreV1Api(api)
    nodes = core.list_node().items
    zones = sorted(n.metadata.labels.get("topology.kubernetes.io/zone", "") for n in nodes)
    assert zones == ["", "zone-a", "zone-b", "zone-c"], zones
    witness = PodWitness(api)
    time.sleep(2)
    first = set(witness.uids)
    assert len(first) == 3, f"expected the 3 TiKV pods, the watch saw {first}"

    campaign = yaml.safe_load(EXAMPLE.read_text())
    campaign["spec"]["trials"] = TRIALS
    campaign["spec"]["intervalSeconds"] = INTERVAL
    custom = k8s.CustomObjectsApi(api)
    custom.create_namespaced_custom_object("aftershock.dev", "v1alpha1", "tikv", "campaigns", campaign)
    name = campaign["metadata"]["name"]
    status: dict[str, Any] = {}

    def finished() -> bool:
        nonlocal status
        obj = custom.get_namespaced_custom_object("aftershock.dev", "v1alpha1", "tikv", "campaigns", name)
        status = obj.get("status") or {}
        return status.get("phase") in ("Succeeded", "Failed")

    testbed.wait_for(finished, 60 + TRIALS * (INTERVAL + 120), what=f"Campaign {name} to finish")
    passed = time.monotonic()
    witness.stop()
    print(
        f"kind-up {up - started:.0f}s; kind-up to a finished Campaign {passed - started:.0f}s; "
        f"status {json.dumps(status)[:800]}"
    )
    assert status.get("verdict") == "Pass", status
    assert status.get("healthSource") == "pods+pd", status
    # Each trial killed one TiKV pod, and the StatefulSet replaced it with a new one.
    assert len(witness.uids) == 3 + TRIALS, f"{len(witness.uids) - 3} pods replaced for {TRIALS} trials"

    # PD's own view, through the API server's proxy to the PD pod: three stores, all Up.
    raw = core.connect_get_namespaced_pod_proxy_with_path(
        "pd-0:2379", "tikv", "pd/api/v1/stores", _preload_content=False
    )
    stores = json.loads(raw.data)
    states = sorted(s["store"]["state_name"] for s in stores["stores"])
    assert states == ["Up", "Up", "Up"], stores
