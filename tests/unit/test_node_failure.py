"""node_failure: the Campaign's fields (chaos.nodes, chaos.acknowledgeNodeFailure), victims only on
the nodes it names."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from tests.unit.fakes import FakeCluster, RealClock, fast_campaign, make_pod

from aftershock import nodeagent
from aftershock.chaos import node_failure, registry
from aftershock.chaos.base import Fault, Strike
from aftershock.chaos.victims import VictimSelectionError, choose_victims, rng_for
from aftershock.errors import SpecError
from aftershock.kube.access import build_resource_attributes
from aftershock.model import ChaosMode, ChaosSpec, NodeState, PodState, Victim, parse_campaign_spec


def campaign(**chaos: Any) -> dict[str, Any]:
    # A held fault ends before the recovery timeout (the parser refuses one that cannot).
    return fast_campaign(
        chaos={"type": "node_kill", **chaos}, recovery={"timeoutSeconds": 60, "settleSeconds": 0}
    )


def member(name: str, node: str) -> PodState:
    return PodState(
        name=name,
        uid=f"uid-{name}",
        namespace="db",
        labels={"app": "etcd"},
        node=node,
        phase="Running",
        ready=True,
        restart_count=0,
        created_at=1.0,
        deleting=False,
    )


def test_node_failure_without_acknowledgement_is_refused_naming_the_field() -> None:
    for extra in ({}, {"acknowledgeNodeFailure": False}):
        with pytest.raises(SpecError) as err:
            parse_campaign_spec(campaign(type="node_failure", durationSeconds=30, **extra))
        assert err.value.field == "spec.chaos.acknowledgeNodeFailure"
        assert "other namespaces' pods" in str(err.value)


def test_nodes_and_acknowledgement_parse() -> None:
    spec = campaign(
        type="node_failure", durationSeconds=30, acknowledgeNodeFailure=True, nodes=["real-1", "real-1"]
    )
    spec["recovery"] = {"timeoutSeconds": 90}
    chaos = parse_campaign_spec(spec).chaos
    assert chaos.nodes == ("real-1",)
    assert chaos.acknowledge_node_failure


@pytest.mark.parametrize("nodes", ["real-1", ["Real_1"], [""], [7]])
def test_bad_nodes_are_refused(nodes: Any) -> None:
    with pytest.raises(SpecError) as err:
        parse_campaign_spec(campaign(nodes=nodes))
    assert err.value.field.startswith("spec.chaos.nodes")


def test_victims_only_on_the_named_nodes() -> None:
    pods = [member("etcd-0", "real-0"), member("etcd-1", "real-1"), member("etcd-2", "real-0")]
    chaos = ChaosSpec(mode=ChaosMode.ONE, nodes=("real-1",))
    for i in range(20):
        (chosen,) = choose_victims(pods, chaos, rng_for(f"seed-{i}"))
        assert chosen.name == "etcd-1"


def test_too_few_members_on_the_named_nodes_is_refused() -> None:
    pods = [member("etcd-0", "real-0"), member("etcd-1", "real-1"), member("etcd-2", "real-0")]
    with pytest.raises(VictimSelectionError, match=r"chaos\.nodes real-9: 0 live member"):
        choose_victims(pods, ChaosSpec(nodes=("real-9",)), rng_for("s"))
    with pytest.raises(VictimSelectionError, match=r"1 live member.*2 needed"):
        choose_victims(pods, ChaosSpec(mode=ChaosMode.FIXED, value=2, nodes=("real-1",)), rng_for("s"))


# --- the kind on its own, against the in-memory cluster and its node agent ----------------------


def _node(name: str, **labels: str) -> NodeState:
    return NodeState(name=name, labels=labels, annotations={}, taints=(), ready="True")


def _strike(operator_node: str | None = None, **labels: str) -> tuple[Strike, FakeCluster]:
    cluster = FakeCluster()
    cluster.nodes["real-1"] = _node("real-1", **labels)
    pod = cluster.add_pod(make_pod("etcd-1", node="real-1"))
    cluster.add_pod(make_pod("etcd-0", node="real-0"))
    victim = Victim(pod.name, pod.uid, pod.node, pod.restart_count)
    chaos = ChaosSpec(type="node_failure", duration_seconds=30, acknowledge_node_failure=True)
    strike = Strike(
        "db", (victim,), {pod.uid: pod}, chaos, 1.0, held=lambda: True, operator_node=operator_node
    )
    return strike, cluster


async def test_inject_asks_the_agent_and_names_what_else_stopped_then_heal_takes_it_back() -> None:
    strike, cluster = _strike()
    done = await node_failure.inject(strike, cluster, RealClock(), lambda: False)
    assert done.error is None
    assert done.first_acked is not None
    details = done.details["etcd-1"]
    assert details["node"] == "real-1"
    assert details["alsoStopped"] == ["kube-system/bystander"]
    assert done.notice is not None
    assert "also stopped 1 other pod(s): kube-system/bystander" in done.notice
    request = json.loads(cluster.nodes["real-1"].annotations[node_failure.REQUEST])
    assert request["until"] > time.time() + 30  # the agent's own deadline: after the operator's heal
    assert [n for n, _ in cluster.node_patches] == ["real-1"]  # never another node
    fault = Fault("db", strike.victims, strike.chaos, done.details)
    assert await node_failure.heal(fault, cluster) is None
    annotations = cluster.nodes["real-1"].annotations
    assert node_failure.REQUEST not in annotations
    assert json.loads(annotations[node_failure.STATE])["state"] == "thawed"
    # Healing again finds nothing to do.
    patches = len(cluster.node_patches)
    assert await node_failure.heal(fault, cluster) is None
    assert len(cluster.node_patches) == patches
    await cluster.close()


@pytest.mark.parametrize(
    ("operator_node", "labels", "why"),
    [
        ("real-1", {}, "runs the aftershock operator itself"),
        (None, {"node-role.kubernetes.io/control-plane": ""}, "is a control-plane node"),
    ],
)
async def test_guards_refuse_before_anything_is_written(
    operator_node: str | None, labels: dict[str, str], why: str
) -> None:
    strike, cluster = _strike(operator_node, **labels)
    done = await node_failure.inject(strike, cluster, RealClock(), lambda: False)
    assert done.refused
    assert why in str(done.error)
    assert cluster.node_patches == []
    await cluster.close()


async def test_no_agent_answering_is_a_refusal_and_the_request_is_taken_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(node_failure, "ACK_TIMEOUT", 0.3)
    strike, cluster = _strike()
    cluster.node_agent = False
    done = await node_failure.inject(strike, cluster, RealClock(), lambda: False)
    assert done.refused
    assert "install the node agent" in str(done.error)
    assert node_failure.REQUEST not in cluster.nodes["real-1"].annotations
    await cluster.close()


def test_the_kind_needs_a_duration_and_declares_cluster_scoped_node_rights() -> None:
    info = registry.KINDS["node_failure"]
    assert info.needs_duration
    assert not info.restarts
    assert info.back == "fault_healed"
    assert {(r.verb, r.resource, r.cluster) for r in info.rights} == {
        ("get", "nodes", True),
        ("patch", "nodes", True),
    }
    rights = registry.authz_rights()["node_failure"]
    assert all(r.cluster for r in rights)
    assert "namespace" not in build_resource_attributes("db", rights[0])


# --- the node agent's host side, on a /proc and a cgroup tree of the test's own ------------------


def _proc(root: Path, pid: int, argv: list[str], start: int = 100) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "stat").write_text(f"{pid} (x y) S " + " ".join(["0"] * 18) + f" {start} 0 0\n")


def test_find_kubelet_takes_the_one_that_names_the_node(tmp_path: Path) -> None:
    _proc(tmp_path, 10, ["/bin/kubelet", "--hostname-override", "real-0"])
    _proc(tmp_path, 11, ["/bin/kubelet", "--config", "c", "--hostname-override=real-1"], start=555)
    _proc(tmp_path, 12, ["/usr/bin/containerd"])
    assert nodeagent.find_kubelet("real-1", tmp_path) == nodeagent.Proc(11, 555)
    assert nodeagent.find_kubelet("real-9", tmp_path) is None


def test_pod_cgroups_freeze_and_thaw(tmp_path: Path) -> None:
    base = tmp_path / "freezer" / "aftershock-real-1" / "kubepods"
    pods = [base / "besteffort" / "poduid-a", base / "burstable" / "poduid-b", base / "poduid-c"]
    for p in pods:
        (p / "ctr").mkdir(parents=True)
        (p / "freezer.state").write_text("THAWED")
    found = nodeagent.pod_cgroups(tmp_path, ["uid-a", "uid-c"])
    assert sorted(found) == sorted([pods[0], pods[2]])
    for c in found:
        nodeagent.freeze(c)
    assert [nodeagent.frozen(p) for p in pods] == [True, False, True]
    for c in found:
        nodeagent.thaw(c)
    assert not any(nodeagent.frozen(p) for p in pods)


def test_a_recovery_timeout_within_the_fault_is_refused() -> None:
    spec = fast_campaign(
        chaos={"type": "node_failure", "durationSeconds": 60, "acknowledgeNodeFailure": True},
        recovery={"timeoutSeconds": 60},
    )
    with pytest.raises(SpecError) as err:
        parse_campaign_spec(spec)
    assert err.value.field == "spec.chaos.durationSeconds"
    spec["recovery"] = {"timeoutSeconds": 61}
    assert parse_campaign_spec(spec).recovery_timeout_seconds == 61
