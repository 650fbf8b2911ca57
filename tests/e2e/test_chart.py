"""The Helm chart, rendered by a real helm (built from Go modules by hack/tools/helm/build.sh)
and accepted by the real API server (server-side dry run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from aftershock import cli
from tests.e2e import testbed

CHART = testbed.REPO / "charts" / "aftershock"


def _kube_version() -> str:
    text = (testbed.TESTBED / "versions.env").read_text()
    return next(line.split("=", 1)[1] for line in text.splitlines() if line.startswith("K8S_VERSION="))


def _render(helm: str, *values: str) -> list[dict[str, Any]]:
    args = [helm, "template", "t", str(CHART), "-n", "aftershock-system", "--kube-version", _kube_version()]
    for v in values:
        args += ["--set", v]
    return [d for d in yaml.safe_load_all(testbed.run(args).stdout) if d]


def test_chart_lints(helm: str) -> None:
    out = testbed.run([helm, "lint", str(CHART), "--strict", "--kube-version", _kube_version()], check=False)
    assert "0 chart(s) failed" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize(
    ("values", "namespaced"),
    [
        ((), False),
        (("watchNamespaces={tikv}",), True),
        (("persistence.enabled=false",), False),
        (("alertReceiver.enabled=true",), False),
    ],
)
def test_rendered_chart_is_accepted_by_the_api_server(
    helm: str, cluster: testbed.Cluster, tmp_path: Path, values: tuple[str, ...], namespaced: bool
) -> None:
    docs = _render(helm, *values)
    # The release's own objects; the hooks' (a Role to stop the operator, among others) apart.
    kinds = sorted(d["kind"] for d in docs if "helm.sh/hook" not in (d["metadata"].get("annotations") or {}))
    assert ("Role" in kinds) == namespaced
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    parsed = cli.build_parser().parse_args(container["args"])  # the args are the CLI's own
    assert parsed.command == "run"
    assert (parsed.namespace or []) == (["tikv"] if namespaced else [])
    for ns in ("aftershock-system", "tikv"):
        cluster.kubectl("create", "namespace", ns, check=False)
    cluster_scoped = {
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    for d in docs:  # what `helm install -n aftershock-system` does for objects without one
        if d["kind"] not in cluster_scoped:
            d["metadata"].setdefault("namespace", "aftershock-system")
    path = tmp_path / "chart.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    out = cluster.kubectl("apply", "--dry-run=server", "-f", str(path))
    assert out.stdout.count("(server dry run)") == len(docs)
    # Issue 21: the admission policies and the NetworkPolicy ship with the chart; the namespace
    # opt-in only cluster-wide (the listed namespaces are the opt-in otherwise).
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("ValidatingAdmissionPolicy", "t-aftershock-campaigns") in names
    assert ("MutatingAdmissionPolicy", "t-aftershock-author") in names
    assert ("ValidatingAdmissionPolicy", "t-aftershock-operator") in names
    assert (("ValidatingAdmissionPolicy", "t-aftershock-namespace-opt-in") in names) == (not namespaced)
    assert ("NetworkPolicy", "t-aftershock") in names


@pytest.mark.parametrize(
    ("values", "mode"),
    [
        ((), "ReadWriteOncePod"),  # only one pod may mount the ledger (the chart needs 1.30+)
        (("persistence.accessMode=ReadWriteOnce",), "ReadWriteOnce"),  # a StorageClass that refuses it
    ],
)
def test_the_ledger_claim_is_read_write_once_pod_unless_told_otherwise(
    helm: str, values: tuple[str, ...], mode: str
) -> None:
    (claim,) = [d for d in _render(helm, *values) if d["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == [mode]


def test_the_alert_receiver_is_off_by_default_and_wired_when_enabled(helm: str) -> None:
    """Issue 20: the chart's alertReceiver gives the operator the receiver's port and the token
    file the kubelet mounts from the Secret, a Service for Alertmanager, and lets only the
    listed peers in."""
    off = _render(helm)
    (deployment,) = [d for d in off if d["kind"] == "Deployment"]
    args = cli.build_parser().parse_args(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args.alert_receiver_port == 0
    assert not any(d["kind"] == "Service" and d["metadata"]["name"].endswith("-alerts") for d in off)

    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    on = _render(
        helm,
        "alertReceiver.enabled=true",
        "alertReceiver.port=9195",
        "alertReceiver.tokenSecret=am-token",
        "alertReceiver.from[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
    )
    (deployment,) = [d for d in on if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = cli.build_parser().parse_args(container["args"])
    assert args.alert_receiver_port == 9195
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "alert-receiver-token"]
    assert args.alert_receiver_token_file == f"{mount['mountPath']}/token"
    (volume,) = [v for v in pod["volumes"] if v["name"] == "alert-receiver-token"]
    assert volume["secret"]["secretName"] == "am-token"
    assert {"name": "alerts", "containerPort": 9195, "protocol": "TCP"} in container["ports"]
    (service,) = [d for d in on if d["kind"] == "Service" and d["metadata"]["name"] == "t-aftershock-alerts"]
    alerts_port = {"name": "alerts", "port": 9195, "targetPort": "alerts", "protocol": "TCP"}
    assert service["spec"]["ports"] == [alerts_port]
    (policy,) = [d for d in on if d["kind"] == "NetworkPolicy"]
    (rule,) = [r for r in policy["spec"]["ingress"] if r["ports"] == [{"port": "alerts", "protocol": "TCP"}]]
    assert rule["from"] == [peer]


def test_the_service_monitor_honours_the_operators_labels(helm: str) -> None:
    """The operator's `namespace` label (the Campaign's) must not be renamed exported_namespace
    by Prometheus in favour of the target's (the operator's namespace)."""
    docs = _render(helm, "metrics.serviceMonitor.enabled=true")
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert [e.get("honorLabels") for e in monitor["spec"]["endpoints"]] == [True]


def test_the_hooks_run_the_operators_image_with_rights_only_for_their_job(helm: str) -> None:
    docs = _render(helm, "watchNamespaces={tikv}")
    hooks = {
        (d["kind"], d["metadata"]["name"]): d
        for d in docs
        if "helm.sh/hook" in (d["metadata"].get("annotations") or {})
    }
    jobs = {name: d for (kind, name), d in hooks.items() if kind == "Job"}
    assert {n: j["metadata"]["annotations"]["helm.sh/hook"] for n, j in jobs.items()} == {
        "t-aftershock-crd": "pre-install,pre-upgrade",
        "t-aftershock-release": "pre-delete",
    }
    release_args = jobs["t-aftershock-release"]["spec"]["template"]["spec"]["containers"][0]["args"]
    parsed = cli.build_parser().parse_args(release_args)  # the CLI's own command
    assert (parsed.command, parsed.deployment, parsed.watch_namespace) == (
        "release",
        "t-aftershock",
        ["tikv"],
    )
    crd_args = jobs["t-aftershock-crd"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert cli.build_parser().parse_args(crd_args).command == "apply-crd"
    # Namespaced mode: the Campaigns are let go in the watched namespace only, no ClusterRole.
    assert ("Role", "t-aftershock-release") in hooks
    assert ("ClusterRole", "t-aftershock-release") not in hooks
    crd_rules = hooks[("ClusterRole", "t-aftershock-crd")]["rules"]
    assert {r.get("resourceNames", ("*",))[0] for r in crd_rules if "patch" in r["verbs"]} == {
        "campaigns.aftershock.dev"
    }


def test_admission_bindings_can_be_scoped_to_namespaces(helm: str) -> None:
    """`admission.namespaceSelector` scopes every binding (a staged roll-out, a shared cluster)."""
    selector = {"matchLabels": {"team": "a"}}
    docs = _render(helm, "admission.namespaceSelector.matchLabels.team=a")
    bindings = [d for d in docs if d["kind"].endswith("AdmissionPolicyBinding")]
    assert len(bindings) == 4
    for b in bindings:
        assert b["spec"]["matchResources"]["namespaceSelector"] == selector, b
    assert not [d for d in _render(helm) if "matchResources" in d.get("spec", {})]
