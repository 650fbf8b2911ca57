"""node_failure: the Campaign's fields (chaos.nodes, chaos.acknowledgeNodeFailure), victims only on
the nodes it names."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import time
from pathlib import Path
from typing import Any, cast

import pytest
from tests.unit.fakes import FakeCluster, RealClock, fast_campaign, make_pod

from aftershock import nodeagent
from aftershock.chaos import node_failure, registry
from aftershock.chaos.base import Fault, Strike
from aftershock.chaos.victims import VictimSelectionError, choose_victims, rng_for
from aftershock.errors import SpecError
from aftershock.kube.access import build_resource_attributes
from aftershock.kube.errors import KubeForbiddenError
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


async def test_no_rights_on_nodes_is_a_refusal_naming_the_component_and_fails_no_node() -> None:
    """A 403 on the victim's node (the operator installed without manifests/node-failure): a
    refusal saying which component to add, never an exception, nothing written."""
    strike, cluster = _strike()

    async def forbidden(name: str) -> NodeState:
        raise KubeForbiddenError(f'nodes "{name}" is forbidden: cannot get resource "nodes"', 403)

    cluster.get_node = forbidden  # type: ignore[method-assign]
    done = await node_failure.inject(strike, cluster, RealClock(), lambda: False)
    assert done.refused
    assert "manifests/node-failure" in str(done.error)
    assert "chaosKinds" in str(done.error)
    assert cluster.node_patches == []
    await cluster.close()


async def test_get_without_patch_on_nodes_is_a_refusal_and_writes_nothing() -> None:
    strike, cluster = _strike()

    async def forbidden(name: str, annotations: Any) -> None:
        cluster.node_patches.append((name, dict(annotations)))
        raise KubeForbiddenError(f'nodes "{name}" is forbidden: cannot patch resource "nodes"', 403)

    cluster.patch_node_annotations = forbidden  # type: ignore[method-assign]
    done = await node_failure.inject(strike, cluster, RealClock(), lambda: False)
    assert done.refused
    assert "manifests/node-failure" in str(done.error)
    assert [a for _, a in cluster.node_patches] == [
        {node_failure.REQUEST: cluster.node_patches[0][1][node_failure.REQUEST]}
    ]
    assert cluster.nodes["real-1"].annotations == {}
    await cluster.close()


async def test_rights_gone_mid_injection_take_the_request_back_and_fail_no_node() -> None:
    """The request went out, then reading the agent's answer is forbidden (the component removed
    mid-run): the request is taken back and the fault refused."""
    strike, cluster = _strike()
    cluster.node_agent = False
    real_get = cluster.get_node
    refusals = 0

    async def forbidden_once_asked(name: str) -> NodeState:
        nonlocal refusals
        if cluster.node_patches and refusals == 0:
            refusals += 1
            raise KubeForbiddenError(f'nodes "{name}" is forbidden: cannot get resource "nodes"', 403)
        return await real_get(name)

    cluster.get_node = forbidden_once_asked  # type: ignore[method-assign]
    done = await node_failure.inject(strike, cluster, RealClock(), lambda: False)
    assert done.refused
    assert "manifests/node-failure" in str(done.error)
    assert [a for _, a in cluster.node_patches][-1] == {node_failure.REQUEST: None}
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


async def test_settled_waits_for_every_failed_node_ready_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A baseline trial restores its remediator only when this returns: every victim's node
    Ready again as the control plane shows it (a healed node stays NotReady until its kubelet's
    next status update), a node that is gone counting as settled."""
    monkeypatch.setattr(node_failure, "SETTLE_POLL", 0.01)
    cluster = FakeCluster()
    cluster.nodes["real-1"] = dataclasses.replace(_node("real-1"), ready="False")
    cluster.nodes["real-2"] = dataclasses.replace(_node("real-2"), ready="Unknown")
    victims = (
        Victim("etcd-1", "uid-1", "real-1", 0),
        Victim("etcd-2", "uid-2", "real-2", 0),
        Victim("etcd-3", "uid-3", "real-3", 0),  # its node deleted meanwhile
    )
    task = asyncio.create_task(node_failure.settled(victims, cluster, RealClock(), lambda: False))
    await asyncio.sleep(0.1)
    assert not task.done()
    cluster.nodes["real-1"] = _node("real-1")
    await asyncio.sleep(0.1)
    assert not task.done()  # real-2 still not Ready
    cluster.nodes["real-2"] = _node("real-2")
    assert await asyncio.wait_for(task, 5) is None
    await cluster.close()


async def test_settled_gives_up_at_its_deadline_naming_the_node_and_ends_when_stopping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(node_failure, "SETTLE_POLL", 0.01)
    monkeypatch.setattr(node_failure, "SETTLE_TIMEOUT", 0.2)
    cluster = FakeCluster()
    cluster.nodes["real-1"] = dataclasses.replace(_node("real-1"), ready="False")
    victims = (Victim("etcd-1", "uid-1", "real-1", 0),)
    why = await asyncio.wait_for(node_failure.settled(victims, cluster, RealClock(), lambda: False), 5)
    assert why == "real-1 not Ready 0.2s after the heal"
    # A trial that must stop (the Campaign deleted, the operator exiting) does not wait.
    monkeypatch.setattr(node_failure, "SETTLE_TIMEOUT", 60.0)
    started = time.monotonic()
    assert await node_failure.settled(victims, cluster, RealClock(), lambda: True) is None
    assert time.monotonic() - started < 5
    assert registry.KINDS["node_failure"].settled is node_failure.settled
    # The others leave nothing for a remediator to act on once healed (or the cluster heals them).
    assert [k for k, info in registry.KINDS.items() if info.settled is not None] == ["node_failure"]
    await cluster.close()


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


# --- the node agent itself: a real process stopped and continued, a cgroup tree of the test's own


class _AgentKube:
    """What the agent asks of the API: the pods on its node, and where it writes its answers."""

    def __init__(self, pods: list[tuple[str, str, str]]) -> None:
        self.pods = pods
        self.answers: list[dict[str, Any]] = []

    async def pods_on_node(self, node: str) -> list[tuple[str, str, str]]:
        return self.pods

    async def patch_node_annotations(self, name: str, annotations: dict[str, str | None]) -> None:
        self.answers.append(json.loads(str(annotations[node_failure.STATE])))


def _host_with_a_kubelet(tmp_path: Path) -> tuple[nodeagent.Host, subprocess.Popen[bytes], Path]:
    """A real process standing for real-1's kubelet (a /proc entry of the test's own names it;
    the signals go to the real PID), and one pod cgroup."""
    kubelet = subprocess.Popen(["sleep", "60"])
    proc = tmp_path / "proc"
    _proc(proc, kubelet.pid, ["/bin/kubelet", "--hostname-override", "real-1"])
    real_start = Path(f"/proc/{kubelet.pid}/stat").read_text()
    start = int(real_start[real_start.rindex(")") + 2 :].split()[19])
    (proc / str(kubelet.pid) / "stat").write_text(real_start)
    assert nodeagent.find_kubelet("real-1", proc) == nodeagent.Proc(kubelet.pid, start)
    pod = tmp_path / "cgroup" / "freezer" / "kubepods" / "poduid-a"
    pod.mkdir(parents=True)
    (pod / "freezer.state").write_text("THAWED")
    return (
        nodeagent.Host("real-1", tmp_path / "cgroup", proc, tmp_path / "state" / "real-1.json"),
        kubelet,
        pod,
    )


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def _asked(request: dict[str, Any] | None) -> NodeState:
    annotations = {} if request is None else {node_failure.REQUEST: json.dumps(request)}
    return NodeState("real-1", {}, annotations, (), "True")


async def _until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.02)


async def test_the_agent_thaws_at_the_deadline_by_itself(tmp_path: Path) -> None:
    host, kubelet, pod = _host_with_a_kubelet(tmp_path)
    kube = _AgentKube([("ns", "etcd-0", "uid-a"), ("agents", "agent", "own-uid")])
    try:
        agent = nodeagent.Agent(cast(Any, kube), host, own_uid="own-uid")
        request = {"id": "f1", "until": time.time() + 0.5}
        await agent.on_node(_asked(request))
        await _until(lambda: _state(kubelet.pid) == "T")  # the signal is delivered asynchronously
        assert (pod / "freezer.state").read_text() == "FROZEN"
        assert kube.answers[-1]["state"] == "frozen"
        assert kube.answers[-1]["pods"] == ["ns/etcd-0"]  # never its own pod
        # Nothing more from the API (the operator gone): the deadline alone brings it back. The
        # answer is written after the kubelet is continued: wait for both (at load 20 the check
        # once came between them).
        await _until(lambda: _state(kubelet.pid) != "T" and kube.answers[-1]["state"] == "thawed")
        assert (pod / "freezer.state").read_text() == "THAWED"
        assert kube.answers[-1]["state"] == "thawed"
        assert "deadline" in kube.answers[-1]["note"]
        assert not host.state_file.exists()
        # The same request seen again (a watch replays it) does not fail the node a second time.
        answers = len(kube.answers)
        await agent.on_node(_asked(request))
        assert (len(kube.answers), agent.held) == (answers, None)
        assert (pod / "freezer.state").read_text() == "THAWED"
    finally:
        kubelet.kill()
        kubelet.wait()


async def test_the_request_taken_back_thaws_and_a_restarted_agent_thaws_what_one_left(
    tmp_path: Path,
) -> None:
    host, kubelet, pod = _host_with_a_kubelet(tmp_path)
    kube = _AgentKube([("ns", "etcd-0", "uid-a")])
    try:
        agent = nodeagent.Agent(cast(Any, kube), host, own_uid="own-uid")
        await agent.on_node(_asked({"id": "f1", "until": time.time() + 60}))
        await _until(lambda: _state(kubelet.pid) == "T")  # the signal is delivered asynchronously
        await agent.on_node(_asked(None))  # the heal: the request taken back
        await _until(lambda: _state(kubelet.pid) != "T")
        assert (pod / "freezer.state").read_text() == "THAWED"
        assert kube.answers[-1] == {**kube.answers[-1], "id": "f1", "state": "thawed"}

        await agent.on_node(_asked({"id": "f2", "until": time.time() + 60}))
        await _until(lambda: _state(kubelet.pid) == "T")  # the signal is delivered asynchronously
        # The agent dies holding the node (its deadline timer with it): a new one, on start,
        # thaws what the host file says was frozen.
        assert agent._deadline is not None
        agent._deadline.cancel()
        again = nodeagent.Agent(cast(Any, kube), host, own_uid="own-uid")
        await again.start()
        await _until(lambda: _state(kubelet.pid) != "T")
        assert (pod / "freezer.state").read_text() == "THAWED"
        assert (kube.answers[-1]["id"], kube.answers[-1]["state"]) == ("f2", "thawed")
    finally:
        kubelet.kill()
        kubelet.wait()


def test_find_kubelet_of_a_node_name_served_twice_is_the_one_that_runs_the_agent(tmp_path: Path) -> None:
    # One host, node name real-0 in two clusters (the test bed's reliability cluster): the
    # kubelet whose root dir holds the agent's own pod.
    _proc(tmp_path, 20, ["/bin/kubelet", "--hostname-override", "real-0", "--root-dir", "/a/kubelet"])
    _proc(tmp_path, 21, ["/bin/kubelet", "--hostname-override=real-0", "--root-dir=/b/kubelet"], start=7)
    assert nodeagent.find_kubelet("real-0", tmp_path) is None  # ambiguous without the agent's pod
    (tmp_path / "21" / "root" / "b" / "kubelet" / "pods" / "agent-uid").mkdir(parents=True)
    assert nodeagent.find_kubelet("real-0", tmp_path, own_uid="agent-uid") == nodeagent.Proc(21, 7)
    assert nodeagent.find_kubelet("real-0", tmp_path, own_uid="other-uid") is None


class _NodeWithAgent:
    """The kind's view of one node (its `FaultApi` calls) with the real agent behind it: every
    patch of the node is the agent's next watch event, as on a cluster."""

    def __init__(self, host: nodeagent.Host, pods: list[tuple[str, str, str]]) -> None:
        self.node = NodeState("real-1", {}, {}, (), "True")
        self.agent = nodeagent.Agent(cast(Any, self), host, own_uid="agent-uid")
        self._pods = pods

    async def get_node(self, name: str) -> NodeState:
        return self.node

    async def patch_node_annotations(self, name: str, annotations: dict[str, str | None]) -> None:
        merged = {**self.node.annotations, **annotations}
        self.node = NodeState(name, {}, {k: v for k, v in merged.items() if v is not None}, (), "True")
        if node_failure.REQUEST in annotations:  # the agent's own answers are not requests
            await self.agent.on_node(self.node)

    async def pods_on_node(self, node: str) -> list[tuple[str, str, str]]:
        return self._pods


async def test_a_trial_run_again_on_the_same_victim_is_a_new_fault_the_agent_serves(tmp_path: Path) -> None:
    # After an operator restart the trial runs again, often on the same victim: its request
    # must not look like the one the agent has answered "thawed" already.
    host, kubelet, pod = _host_with_a_kubelet(tmp_path)
    api = _NodeWithAgent(host, [("db", "etcd-1", "uid-a")])
    strike, _cluster = _strike()
    try:
        for _ in range(2):
            done = await node_failure.inject(strike, cast(Any, api), RealClock(), lambda: False)
            assert done.error is None
            await _until(lambda: nodeagent.frozen(pod))
            await _until(lambda: _state(kubelet.pid) == "T")
            fault = Fault("db", strike.victims, strike.chaos, done.details)
            assert await node_failure.heal(fault, cast(Any, api)) is None
            await _until(lambda: _state(kubelet.pid) != "T")
            assert not nodeagent.frozen(pod)
    finally:
        kubelet.kill()
        kubelet.wait()
        await _cluster.close()
