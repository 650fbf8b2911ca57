"""The Helm chart, installed for real: `helm install` (helm v3.21.4 built from its module) on the
test bed with values for its real node, a Campaign that passes, `helm upgrade` bringing a
changed CRD back to the chart's, and `helm uninstall` with a Campaign running: the pre-delete
hook stops the operator and lets go of the Campaigns, and nothing is left Terminating.

The operator runs from its own image, under a tag of this checkout's own (other checkouts import
their `aftershock:dev` into the same node), watching only the test's namespace (the chart's
namespaced mode), so it never touches another test's Campaigns. About 3 minutes once the image
is built (cold: +4 minutes for the image)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import realnode, testbed
from tests.e2e.operator import Subject, campaign, condition, free_port, get_campaign, wait_phase
from tests.e2e.test_chart import CHART
from tests.e2e.test_realnode_operator import api_server_config

pytestmark = pytest.mark.realnode

CRD = "customresourcedefinitions/campaigns.aftershock.dev"
COLUMN_DESCRIPTION = "/spec/versions/0/additionalPrinterColumns/0/description"


def _retagged(archive: Path, tag: str) -> Path:
    """A copy of `docker save`'s archive whose image is named `tag`."""
    out = archive.with_name(f"{archive.stem}-{tag.replace(':', '_')}.tar")
    if out.exists():
        return out
    repo, _, version = tag.partition(":")
    with tarfile.open(archive) as src, tarfile.open(f"{out}.tmp", "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member) if member.isfile() else None
            if member.name == "manifest.json" and data is not None:
                manifest = json.load(data)
                for entry in manifest:
                    entry["RepoTags"] = [tag]
                body = json.dumps(manifest).encode()
            elif member.name == "repositories" and data is not None:
                ids = [i for tags in json.load(data).values() for i in tags.values()]
                body = json.dumps({repo: {version: ids[0]}}).encode()
            else:
                dst.addfile(member, data)
                continue
            member.size = len(body)
            dst.addfile(member, io.BytesIO(body))
    Path(f"{out}.tmp").rename(out)
    return out


@pytest.fixture(scope="module")
def operator_image(real_node: None) -> str:
    """This checkout's operator image on real-0, under a tag named by its content."""
    archive = Path(
        testbed.run([str(realnode.IMAGES_SH), "operator"], timeout=1800).stdout.strip().splitlines()[-1]
    )
    tag = f"aftershock:e2e-{archive.stem.removeprefix('operator-')[:16]}"
    testbed.run([str(realnode.REALNODE_SH), "import", str(_retagged(archive, tag))], timeout=600)
    return tag


def real_node_values(image: str, namespace: str) -> dict[str, Any]:
    """What the test bed's real node needs (hack/dev/overlay says why, point by point): the
    host's network and the API server's address on it, probes on loopback, the node's selector
    and toleration, the volume handed to the operator's user, loopback PD for the stand-in."""
    repository, _, tag = image.partition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "watchNamespaces": [namespace],
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "probes": {"host": "127.0.0.1"},
        "livenessPort": free_port(),
        "metrics": {"port": free_port()},
        "extraEnvFrom": [{"configMapRef": {"name": "aftershock-local-apiserver"}}],
        "extraArgs": ["--allow-loopback-endpoints"],
        # The admission policies (ADR 0012) bound to the test's namespace only: bound cluster-wide
        # they would refuse other tests' Campaigns in protected namespaces meanwhile.
        "admission": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
        "nodeSelector": {realnode.NODE_LABEL: "true"},
        "tolerations": [{"key": realnode.NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
        "initContainers": [
            {
                "name": "volume-owner",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["chown", "65532:65532", "/var/lib/aftershock"],
                "securityContext": {
                    "runAsUser": 0,
                    "runAsNonRoot": False,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
                },
                "volumeMounts": [{"name": "ledger", "mountPath": "/var/lib/aftershock"}],
            }
        ],
    }


@pytest.fixture
def release_namespace(cluster: testbed.Cluster, namespace: str) -> Iterator[str]:
    name = f"{namespace}-helm"
    cluster.kubectl("create", "namespace", name)
    cluster.apply(api_server_config(cluster, name))
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _operator_pods(cluster: testbed.Cluster, namespace: str) -> list[dict[str, Any]]:
    return list(
        cluster.get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator")["items"]
    )


def test_install_run_upgrade_and_uninstall_with_a_campaign_running(
    cluster: testbed.Cluster,
    namespace: str,
    subject: Subject,
    helm: str,
    operator_image: str,
    release_namespace: str,
    tmp_path: Path,
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(real_node_values(operator_image, namespace)))
    env = cluster.env()
    # A release name of the test's own: the cluster-scoped objects it makes (ClusterRoles) must
    # not collide with manifests/' (other tests run with those meanwhile) nor another run's.
    release = f"{namespace}-rel"
    common = ["-n", release_namespace, "-f", str(values), "--wait", "--timeout", "5m"]

    # Install: the operator runs, Ready through its probes; a Campaign passes.
    testbed.run([helm, "install", release, str(CHART), *common], timeout=600, env=env)
    (pod,) = _operator_pods(cluster, release_namespace)
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert pod["spec"]["nodeName"] == realnode.NODE
    (container,) = pod["spec"]["containers"]
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
    assert "cpu" not in container["resources"]["limits"]
    cluster.apply(campaign("via-helm", namespace, subject.pd_url, trials=2))
    done = wait_phase(cluster, namespace, "via-helm", {"Succeeded", "Failed"}, timeout=180)
    assert (done["status"]["phase"], done["status"]["verdict"]) == ("Succeeded", "Pass"), done["status"]

    # Upgrade with a CRD change: the live CRD drifted from the chart's (a printer column's
    # description here, harmless to anyone else's test meanwhile); helm upgrade's hook applies
    # the chart's CRD again. Helm by itself never touches a CRD after the first install.
    shipped = yaml.safe_load((CHART / "crds" / "campaigns.aftershock.dev.yaml").read_text())
    want = shipped["spec"]["versions"][0]["additionalPrinterColumns"][0]["description"]
    patch = [{"op": "replace", "path": COLUMN_DESCRIPTION, "value": "stale: from an older chart"}]
    cluster.kubectl("patch", CRD, "--type=json", "-p", json.dumps(patch))
    testbed.run([helm, "upgrade", release, str(CHART), *common], timeout=600, env=env)
    crd = json.loads(cluster.kubectl("get", CRD, "-o", "json", "--show-managed-fields").stdout)
    assert crd["spec"]["versions"][0]["additionalPrinterColumns"][0]["description"] == want
    assert "aftershock-chart" in {m["manager"] for m in crd["metadata"]["managedFields"]}

    # Uninstall with a Campaign running: the hook stops the operator, then lets go of the
    # Campaigns; nothing is left Terminating.
    cluster.apply(campaign("running", namespace, subject.pd_url, trials=200, intervalSeconds=1))
    wait_phase(cluster, namespace, "running", {"Running"}, timeout=120)
    testbed.run(
        [helm, "uninstall", release, "-n", release_namespace, "--wait", "--timeout", "5m"],
        timeout=600,
        env=env,
    )
    assert _operator_pods(cluster, release_namespace) == []
    left = get_campaign(cluster, namespace, "running")
    assert "aftershock.dev/finalizer" not in (left["metadata"].get("finalizers") or []), left["metadata"]
    assert condition(left, "Reconciling") is not None  # the Campaign stays, as the operator left it
    # Deleting it now takes no operator: gone at once, not held by a finalizer.
    cluster.kubectl("delete", "campaign", "running", "via-helm", "-n", namespace, "--timeout=30s")
    cluster.kubectl("delete", "namespace", release_namespace, "--timeout=120s")
    assert cluster.kubectl("get", "namespace", release_namespace, check=False).returncode != 0
    # No cluster-scoped object of the release is left behind (its hooks' included).
    for kind in ("clusterroles", "clusterrolebindings"):
        names = cluster.kubectl("get", kind, "-o", "name").stdout.split()
        assert not [n for n in names if release in n], names
