"""network_partition on its own and through the engine (in-memory cluster, real ledger file):
what its container is given, where it refuses and adds nothing, and that every way a trial ends
leaves no pod cut off (`FakeCluster.partitioned`, the fake's own record of rules in place)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import pytest
from tests.unit.fakes import FakeCluster, make_pod
from tests.unit.test_engine_runner import REF, Harness, campaign

from aftershock.chaos import network_partition, registry
from aftershock.chaos.base import Fault, Strike
from aftershock.errors import SpecError
from aftershock.kube.errors import KubeForbiddenError
from aftershock.model import ChaosSpec, Outcome, PartitionDirection, Phase, Victim
from aftershock.model import parse_campaign_spec as parse_spec


class _Clock:
    def monotonic(self) -> float:
        return 1.0

    def wall(self) -> float:
        return 1_000.0


def _strike(
    *, host_network: bool = False, direction: PartitionDirection | None = None
) -> tuple[Strike, FakeCluster]:
    cluster = FakeCluster()
    pods = [cluster.add_pod(make_pod(f"etcd-{i}", host_network=host_network and i == 2)) for i in range(3)]
    victim = Victim(pods[0].name, pods[0].uid, pods[0].node, 0)
    chaos = ChaosSpec(type="network_partition", duration_seconds=5, direction=direction)
    return Strike("db", (victim,), {p.uid: p for p in pods}, chaos, 1.0, held=lambda: True), cluster


# --- the spec ---------------------------------------------------------------------------------


def test_a_partition_needs_a_duration_and_only_it_takes_direction_and_image() -> None:
    with pytest.raises(SpecError, match=r"network_partition needs chaos\.durationSeconds"):
        registry.kind_of(ChaosSpec(type="network_partition"))
    assert (
        registry.kind_of(ChaosSpec(type="network_partition", duration_seconds=3)).type == "network_partition"
    )
    with pytest.raises(SpecError, match=r"node_kill does not take chaos\.direction") as err:
        registry.kind_of(ChaosSpec(type="node_kill", direction=PartitionDirection.ALL))
    assert err.value.field == "spec.chaos.direction"
    with pytest.raises(SpecError, match=r"container_kill does not take chaos\.image"):
        registry.kind_of(ChaosSpec(type="container_kill", image="x/y:1"))


def test_the_duration_must_end_before_the_recovery_timeout() -> None:
    raw = campaign(
        chaos={"type": "network_partition", "durationSeconds": 30},
        recovery={"timeoutSeconds": 30},
    )
    with pytest.raises(SpecError, match=r"shorter than recovery\.timeoutSeconds"):
        parse_spec(raw)
    raw["recovery"]["timeoutSeconds"] = 31
    assert parse_spec(raw).chaos.duration_seconds == 30


def test_a_bad_direction_or_image_is_refused_by_name() -> None:
    with pytest.raises(SpecError, match=r"chaos\.direction"):
        parse_spec(
            campaign(chaos={"type": "network_partition", "durationSeconds": 3, "direction": "sideways"})
        )
    with pytest.raises(SpecError, match=r"chaos\.image"):
        parse_spec(
            campaign(chaos={"type": "network_partition", "durationSeconds": 3, "image": "Not An Image"})
        )


def test_the_script_survives_kubernetes_variable_expansion() -> None:
    """A container's command goes through $(VAR) expansion, where $$ becomes $ (seen: the
    holder wrote "$" as its PID and the heal could not end it): no $$, and no $(NAME) that a
    pod's environment could define."""
    assert "$$" not in network_partition.SCRIPT
    assert not re.search(r"\$\([A-Za-z_][A-Za-z0-9_]*\)", network_partition.SCRIPT)


# --- inject on its own ------------------------------------------------------------------------


async def test_the_container_gets_net_admin_only_and_the_other_members_ips() -> None:
    strike, cluster = _strike()
    done = await network_partition.inject(strike, cluster, _Clock(), lambda: False)
    assert done.error is None
    assert done.first_acked == (1.0, 1_000.0)
    ((ns, pod, body),) = cluster.ephemeral_calls
    assert (ns, pod) == ("db", "etcd-0")
    assert body["name"].startswith(network_partition.PREFIX)
    assert body["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert body["securityContext"]["allowPrivilegeEscalation"] is False
    assert body["image"] == network_partition.DEFAULT_IMAGE
    others = sorted(str(p.ip) for p in strike.pods.values() if p.name != "etcd-0")
    until = int(1_000 + 5 + network_partition.DEADMAN_GRACE_SECONDS) + 1
    assert body["command"][4:] == ["hold", str(until), "members", *others]
    assert strike.pods[strike.victims[0].uid].ip not in body["command"]
    assert cluster.partitioned == {"db/etcd-0"}
    assert done.details["etcd-0"]["cutOff"] == others
    await cluster.close()


async def test_direction_all_cuts_every_address_and_names_none() -> None:
    strike, cluster = _strike(direction=PartitionDirection.ALL)
    done = await network_partition.inject(strike, cluster, _Clock(), lambda: False)
    assert done.error is None
    ((_, _, body),) = cluster.ephemeral_calls
    assert body["command"][6] == "all"
    await cluster.close()


async def test_members_on_the_nodes_network_are_refused_and_nothing_is_added() -> None:
    strike, cluster = _strike(host_network=True)
    done = await network_partition.inject(strike, cluster, _Clock(), lambda: False)
    assert done.refused
    assert "hostNetwork" in str(done.error)
    assert cluster.ephemeral_calls == []
    await cluster.close()


async def test_a_pod_security_level_that_forbids_net_admin_is_refused_and_says_so() -> None:
    strike, cluster = _strike()
    cluster.fail_ephemeral.append(
        KubeForbiddenError(
            'pods "etcd-0" is forbidden: violates PodSecurity "baseline:latest": non-default '
            'capabilities (container "aftershock-partition-1" must not include "NET_ADMIN" in '
            "securityContext.capabilities.add)",
            403,
        )
    )
    done = await network_partition.inject(strike, cluster, _Clock(), lambda: False)
    assert done.refused
    assert "Pod Security level forbids the NET_ADMIN" in str(done.error)
    assert "privileged" in str(done.error)
    assert cluster.partitioned == set()
    await cluster.close()


async def test_no_patch_once_the_subject_lock_lapsed() -> None:
    strike, cluster = _strike()
    done = await network_partition.inject(
        dataclasses.replace(strike, held=lambda: False), cluster, _Clock(), lambda: False
    )
    assert "the subject lock lapsed" in str(done.error)
    assert cluster.ephemeral_calls == []
    await cluster.close()


# --- heal on its own --------------------------------------------------------------------------


async def _injected() -> tuple[Fault, FakeCluster]:
    strike, cluster = _strike()
    done = await network_partition.inject(strike, cluster, _Clock(), lambda: False)
    return Fault("db", strike.victims, strike.chaos, done.details), cluster


async def test_heal_removes_the_rules_by_exec_and_again_finds_nothing_to_do() -> None:
    fault, cluster = await _injected()
    assert await network_partition.heal(fault, cluster) is None
    assert cluster.partitioned == set()
    heals = [c for c in cluster.exec_calls if c[3][4] == "heal"]
    assert len(heals) == 1
    assert await network_partition.heal(fault, cluster) is None  # idempotent: nothing runs
    assert len([c for c in cluster.exec_calls if c[3][4] == "heal"]) == 1
    await cluster.close()


async def test_a_container_killed_with_its_rules_in_place_is_healed_by_a_new_one() -> None:
    fault, cluster = await _injected()
    cluster.end_ephemeral("db", "etcd-0", 137, keep_rules=True)
    assert await network_partition.heal(fault, cluster) is None
    assert cluster.partitioned == set()
    assert [b["command"][4] for _, _, b in cluster.ephemeral_calls] == ["hold", "heal"]
    await cluster.close()


async def test_a_container_that_ended_at_its_deadline_needs_nothing() -> None:
    fault, cluster = await _injected()
    cluster.end_ephemeral("db", "etcd-0", 0, keep_rules=False)
    assert await network_partition.heal(fault, cluster) is None
    assert len(cluster.ephemeral_calls) == 1
    await cluster.close()


async def test_without_details_every_running_container_of_ours_is_healed() -> None:
    """The operator died between the patch and recording it: the heal finds ours by name."""
    fault, cluster = await _injected()
    assert await network_partition.heal(dataclasses.replace(fault, details={}), cluster) is None
    assert cluster.partitioned == set()
    await cluster.close()


async def test_a_container_not_started_yet_is_waited_for_and_healed() -> None:
    """The operator died right after the patch: the container runs (and partitions) later."""
    strike, cluster = _strike()
    cluster.start_waiting = True
    await cluster.add_ephemeral_container(
        "db",
        "etcd-0",
        "uid-etcd-0",
        network_partition.build_container("aftershock-partition-x", "i", ("hold",)),
    )
    fault = Fault("db", strike.victims, strike.chaos, {})
    asyncio.get_running_loop().call_later(0.3, cluster.start_ephemerals)
    assert await network_partition.heal(fault, cluster) is None
    assert cluster.partitioned == set()
    await cluster.close()


async def test_a_pod_gone_or_replaced_took_its_rules_with_it() -> None:
    fault, cluster = await _injected()
    await cluster.delete_pod("db", "etcd-0", "uid-etcd-0", 0)
    exec_calls = len(cluster.exec_calls)
    assert await network_partition.heal(fault, cluster) is None
    assert len(cluster.exec_calls) == exec_calls
    await cluster.close()


# --- through the engine -----------------------------------------------------------------------


def _spec(**over: Any) -> dict[str, Any]:
    return campaign(
        chaos={"type": "network_partition", "mode": "one", "durationSeconds": 1},
        recovery={"timeoutSeconds": 20, "settleSeconds": 0},
        **over,
    )


async def test_a_partition_is_held_for_its_duration_healed_and_recovered_from(h: Harness) -> None:
    assert await h.run(_spec(trials=2), timeout=30) is Phase.SUCCEEDED
    assert h.cluster.partitioned == set()
    assert h.cluster.deleted == []
    attempts = await h.ledger.attempts(REF.uid)
    assert [a.outcome for a in attempts] == [Outcome.RECOVERED, Outcome.RECOVERED]
    for a in attempts:
        m = a.milestones
        assert m["fault_healed"].offset >= 1.0
        assert (
            m["kill_sent"].offset
            <= m["kill_acked"].offset
            <= m["fault_healed"].offset
            <= m["recovered"].offset
        )
        order = a.final_state["milestoneOrder"]
        assert order.index("fault_healed") < order.index("recovered")
        assert "container_started" not in m
    faults = await h.ledger.faults(REF.uid)
    assert len(faults) == 2
    assert all(f.healed_at is not None and f.heal_note == "held for chaos.durationSeconds" for f in faults)


async def test_a_partition_refused_by_pod_security_stops_the_campaign_and_adds_nothing(h: Harness) -> None:
    h.cluster.fail_ephemeral.append(KubeForbiddenError('violates PodSecurity "restricted:latest"', 403))
    assert await h.run(_spec(), timeout=30) is Phase.FAILED
    assert "ChaosRefused" in str(h.sink.last["conditions"])
    assert "Pod Security level" in h.sink.last["message"]
    assert h.cluster.partitioned == set()
    (fault,) = await h.ledger.faults(REF.uid)
    assert fault.injected_at is None
