"""Chaos kinds behind their registry: the spec each takes, the rights rendered per kind, and
container_kill through the whole engine (in-memory cluster, real ledger file): the same pod
gets a new container, nothing is deleted, and a method that cannot work kills nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.unit.fakes import FakeCluster, make_pod
from tests.unit.test_engine_runner import REF, Harness, campaign

from aftershock.chaos import container_kill, registry
from aftershock.chaos.base import Strike
from aftershock.errors import SpecError
from aftershock.kube.errors import KubeForbiddenError
from aftershock.ledger import Ledger
from aftershock.model import ChaosSpec, ExecResult, Outcome, Phase, Victim

REPO = Path(__file__).resolve().parents[2]


# --- the registry ------------------------------------------------------------------------------


def test_unknown_type_is_refused_naming_every_kind() -> None:
    with pytest.raises(SpecError, match="'node_kill', 'container_kill'") as err:
        registry.kind_of(ChaosSpec(type="network_delay"))
    assert err.value.field == "spec.chaos.type"


def test_a_duration_is_refused_by_kinds_the_cluster_heals() -> None:
    for kind in ("node_kill", "container_kill"):
        with pytest.raises(SpecError, match=r"does not take chaos\.durationSeconds"):
            registry.kind_of(ChaosSpec(type=kind, duration_seconds=30))
        assert registry.kind_of(ChaosSpec(type=kind)).type == kind


def test_each_kind_exposes_its_rights_as_data() -> None:
    assert registry.rights() == {
        "node_kill": [{"apiGroup": "", "resource": "pods", "subresource": "", "verb": "delete"}],
        "container_kill": [
            {"apiGroup": "", "resource": "pods", "subresource": "exec", "verb": "create"},
            {"apiGroup": "", "resource": "pods", "subresource": "exec", "verb": "get"},
        ],
        "network_partition": [
            {"apiGroup": "", "resource": "pods", "subresource": "ephemeralcontainers", "verb": "patch"},
            {"apiGroup": "", "resource": "pods", "subresource": "exec", "verb": "create"},
            {"apiGroup": "", "resource": "pods", "subresource": "exec", "verb": "get"},
        ],
        "node_failure": [
            {"apiGroup": "", "resource": "nodes", "subresource": "", "verb": "get"},
            {"apiGroup": "", "resource": "nodes", "subresource": "", "verb": "patch"},
        ],
    }


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize(
    ("path", "role", "binding"),
    [
        ("manifests/operator/chaos-rbac.yaml", "ClusterRole", "ClusterRoleBinding"),
        ("manifests/operator-namespaced/chaos-rbac.yaml", "Role", "RoleBinding"),
    ],
)
def test_rendered_rbac_grants_each_kind_exactly_its_rights(path: str, role: str, binding: str) -> None:
    """Each kind on by default has its role in both installs; an opt-in kind (rights on
    cluster-scoped resources: node_failure's nodes) is in neither, only in its component."""
    docs = _docs(REPO / path)
    on = {k: i for k, i in registry.KINDS.items() if not i.opt_in}
    assert on
    assert "node_failure" not in on
    _assert_roles(docs, on, role, binding)
    assert not [d for d in docs for rule in d.get("rules", []) if "nodes" in rule["resources"]]


def test_each_opt_in_kind_is_a_component_with_exactly_its_rights() -> None:
    opt_in = {k: i for k, i in registry.KINDS.items() if i.opt_in}
    assert set(opt_in) == {"node_failure"}
    for kind, info in opt_in.items():
        assert info.component == "manifests/" + kind.replace("_", "-")
        component = yaml.safe_load((REPO / info.component / "kustomization.yaml").read_text())
        assert component["kind"] == "Component"
        assert component["resources"] == ["chaos-rbac.yaml"]
        _assert_roles(
            _docs(REPO / info.component / "chaos-rbac.yaml"),
            {kind: info},
            "ClusterRole",
            "ClusterRoleBinding",
        )
    # Neither install's kustomization pulls a component in: off by default.
    for k in ("manifests/kustomization.yaml", "manifests/operator-namespaced/kustomization.yaml"):
        assert "components" not in yaml.safe_load((REPO / k).read_text()), k


def _assert_roles(docs: list[dict[str, Any]], kinds: Mapping[str, Any], role: str, binding: str) -> None:
    # Rights on cluster-scoped resources (node_failure's nodes) are a ClusterRole in every install.
    roles = {
        d["metadata"]["labels"]["aftershock.dev/chaos-type"]: d
        for d in docs
        if d["kind"] in (role, "ClusterRole")
    }
    bindings = {d["metadata"]["name"]: d for d in docs if d["kind"] in (binding, "ClusterRoleBinding")}
    assert set(roles) == set(kinds)
    for kind, info in kinds.items():
        kind_role = "ClusterRole" if info.opt_in else role
        assert roles[kind]["kind"] == kind_role
        granted = {
            (g, r, v) for rule in roles[kind]["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]
        }  # fmt: skip
        assert granted == {(r.group, r.rbac_resource, r.verb) for r in info.rights}
        bound = bindings[roles[kind]["metadata"]["name"]]
        assert bound["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": kind_role,
            "name": bound["metadata"]["name"],
        }
        assert bound["subjects"][0]["name"] == "aftershock"


def test_chart_grants_each_kinds_rights_only_when_it_is_enabled() -> None:
    helper = (REPO / "charts/aftershock/templates/_chaos.tpl").read_text()
    outside = helper
    for kind, info in registry.KINDS.items():
        block = helper.split(f'{{{{- if has "{kind}" .Values.chaosKinds }}}}')[1].split("{{- end }}")[0]
        for right in info.rights:
            assert f'resources: ["{right.rbac_resource}"]' in block, (kind, right)
        outside = outside.replace(block, "")
    assert "pods" not in outside
    rbac = (REPO / "charts/aftershock/templates/rbac.yaml").read_text()
    assert rbac.count('include "aftershock.chaosRules"') == 2  # cluster-wide and per namespace


def test_chart_grants_nodes_only_when_node_failure_is_enabled_and_only_cluster_wide() -> None:
    helper = (REPO / "charts/aftershock/templates/_chaos.tpl").read_text()
    namespaced = helper.split("{{/* Rights on cluster-scoped")[0]
    assert "nodes" not in namespaced
    block = helper.split('{{- if has "node_failure" .Values.chaosKinds }}')[1].split("{{- end }}")[0]
    assert 'resources: ["nodes"]' in block
    rbac = (REPO / "charts/aftershock/templates/rbac.yaml").read_text()
    # In the cluster-wide ClusterRole and in the namespaced install's cluster-wide one.
    assert rbac.count('include "aftershock.chaosClusterRules"') == 2
    values = yaml.safe_load((REPO / "charts/aftershock/values.yaml").read_text())
    assert "node_failure" not in values["chaosKinds"]
    assert values["nodeAgent"]["enabled"] is False


# --- container_kill on its own ---------------------------------------------------------------


class _Clock:
    def monotonic(self) -> float:
        return 1.0

    def wall(self) -> float:
        return 2.0


def _strike(shares: bool = True, container: str | None = None) -> tuple[Strike, FakeCluster]:
    cluster = FakeCluster()
    pod = cluster.add_pod(make_pod("etcd-0", shares_process_namespace=shares))
    victim = Victim(pod.name, pod.uid, pod.node, pod.restart_count)
    chaos = ChaosSpec(type="container_kill", container=container)
    return Strike("db", (victim,), {pod.uid: pod}, chaos, 1.0, held=lambda: True), cluster


async def test_a_pod_without_a_shared_process_namespace_is_refused_before_any_exec() -> None:
    strike, cluster = _strike(shares=False)
    done = await container_kill.inject(strike, cluster, _Clock(), lambda: False)
    assert done.refused
    assert "shareProcessNamespace: true" in str(done.error)
    assert cluster.exec_calls == []
    await cluster.close()


async def test_a_missing_container_is_refused_naming_the_ones_there() -> None:
    strike, cluster = _strike(container="sidecar")
    done = await container_kill.inject(strike, cluster, _Clock(), lambda: False)
    assert done.refused
    assert "has no container 'sidecar'" in str(done.error)
    assert "main" in str(done.error)
    assert cluster.exec_calls == []
    await cluster.close()


async def test_an_image_without_sh_is_refused_and_nothing_is_killed() -> None:
    strike, cluster = _strike()
    cluster.exec_results.append(ExecResult("", "", 'exec: "sh": executable file not found in $PATH: unknown'))
    done = await container_kill.inject(strike, cluster, _Clock(), lambda: False)
    assert done.refused
    assert "has no sh" in str(done.error)
    assert cluster.events_of("MODIFIED") == []
    await cluster.close()


async def test_an_exec_the_operator_may_not_make_is_refused() -> None:
    strike, cluster = _strike()

    async def forbidden(*_: Any) -> ExecResult:
        raise KubeForbiddenError('pods "etcd-0" is forbidden: cannot create resource "pods/exec"', 403)

    cluster.exec_in_pod = forbidden  # type: ignore[method-assign, assignment]
    done = await container_kill.inject(strike, cluster, _Clock(), lambda: False)
    assert done.refused
    assert "pods/exec create" in str(done.error)
    await cluster.close()


async def test_a_kill_that_reports_nothing_is_an_error_not_a_kill() -> None:
    strike, cluster = _strike()
    cluster.exec_results.append(
        ExecResult("aftershock: the main process is PID 1 of its namespace\n", "", "exit 5")
    )
    done = await container_kill.inject(strike, cluster, _Clock(), lambda: False)
    assert not done.refused
    assert "failed" in str(done.error)
    assert "PID 1" in str(done.error)
    await cluster.close()


async def test_no_exec_once_the_subject_lock_lapsed() -> None:
    """Each exec only while the subject lock is fresh: after its renew deadline another Campaign
    may hold the subject, and a kill sent then would be in its trial."""
    strike, cluster = _strike()
    done = await container_kill.inject(
        dataclasses.replace(strike, held=lambda: False), cluster, _Clock(), lambda: False
    )
    assert not done.refused  # not the Campaign's to fix: the trial is an infrastructure error
    assert "the subject lock lapsed" in str(done.error)
    assert done.first_acked is None
    assert cluster.exec_calls == []
    await cluster.close()


# --- container_kill through the engine --------------------------------------------------------


async def test_container_kill_restarts_a_container_in_place_and_records_both_containers(h: Harness) -> None:
    spec = campaign(chaos={"type": "container_kill", "mode": "one"}, trials=2)
    assert await h.run(spec) is Phase.SUCCEEDED
    assert h.cluster.deleted == []  # no pod was deleted
    assert [c[2:] for c in h.cluster.exec_calls] == [("main", ("sh", "-c", container_kill.KILL_SCRIPT))] * 2
    attempts = await h.ledger.attempts(REF.uid)
    assert [a.outcome for a in attempts] == [Outcome.RECOVERED, Outcome.RECOVERED]
    for a in attempts:
        (victim,) = a.victims
        chaos = a.final_state["chaos"][victim.name]
        assert chaos["containerIDBefore"] != chaos["containerIDAfter"]
        assert chaos["restartCountAfter"] == chaos["restartCountBefore"] + 1
        assert chaos["pid"] == 7
        m = a.milestones
        order = ["kill_sent", "container_down", "container_started", "container_ready", "recovered"]
        assert [m[n].offset for n in order] == sorted(m[n].offset for n in order)
        assert "replacement_created" not in m
        assert "victim_gone" not in m
        now = {p.name: p for p in (await h.cluster.list_pods("db", "app=tikv"))[0]}
        assert now[victim.name].uid == victim.uid  # the same pod


async def test_container_kill_refused_stops_the_campaign_with_a_condition_and_kills_nothing(
    tmp_path: Path,
) -> None:
    async with await Ledger.open(tmp_path / "ledger.db") as ledger:
        harness = Harness(ledger=ledger)
        for i in range(3):
            harness.cluster.add_pod(make_pod(f"tikv-{i}", shares_process_namespace=False))
        spec = campaign(chaos={"type": "container_kill", "mode": "one"})
        assert await harness.run(spec) is Phase.FAILED
        assert harness.cluster.exec_calls == []
        assert harness.cluster.deleted == []
        assert "ChaosRefused" in str(harness.sink.last["conditions"])
        assert "shareProcessNamespace" in harness.sink.last["message"]
        (attempt,) = await ledger.attempts(REF.uid)
        assert attempt.outcome is Outcome.INTERRUPTED
        assert "not killed" in str(attempt.error)
        await harness.cluster.close()
