"""node_failure: the Campaign's fields (chaos.nodes, chaos.acknowledgeNodeFailure), victims only on
the nodes it names."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.fakes import fast_campaign

from aftershock.chaos.victims import VictimSelectionError, choose_victims, rng_for
from aftershock.errors import SpecError
from aftershock.model import ChaosMode, ChaosSpec, PodState, parse_campaign_spec


def campaign(**chaos: Any) -> dict[str, Any]:
    return fast_campaign(chaos={"type": "node_kill", **chaos})


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
    chaos = parse_campaign_spec(
        campaign(
            type="node_failure", durationSeconds=30, acknowledgeNodeFailure=True, nodes=["real-1", "real-1"]
        )
    ).chaos
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
