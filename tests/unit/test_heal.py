"""Healing is a guarantee: a fault that stays until undone is in the ledger before it is
injected, healed after chaos.durationSeconds, when the Campaign is stopped or deleted mid-fault,
at resume after a crash, and by the sweeper for a Campaign that is gone; each heal is recorded.

The kind here is the tests' own (`HOLD`): it "holds" a pod in the in-memory cluster and its
heal releases it, so the cluster itself says whether anything is still held."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest
from tests.unit.fakes import FakeCluster
from tests.unit.test_engine_runner import REF, Harness, campaign

from aftershock.chaos import registry
from aftershock.chaos.base import ChaosKindInfo, Clock, Fault, FaultApi, Injection, Stopping, Strike
from aftershock.engine import heal, sweeper
from aftershock.ledger import Ledger
from aftershock.model import ChaosSpec, Milestone, Outcome, Phase, Victim


async def _inject(strike: Strike, api: FaultApi, clock: Clock, stopping: Stopping) -> Injection:
    for v in strike.victims:
        await api.exec_in_pod(strike.namespace, v.name, "main", ("hold",), 5.0)
    return Injection(
        None, (clock.monotonic(), clock.wall()), details={v.name: {"held": True} for v in strike.victims}
    )


async def _heal(fault: Fault, api: FaultApi) -> str | None:
    for v in fault.victims:
        await api.exec_in_pod(fault.namespace, v.name, "main", ("release",), 5.0)
    return None


HOLD = ChaosKindInfo(
    type="test_hold",
    summary="holds the victims until healed (tests only)",
    rights=(),
    milestones=(),
    back="replacement_ready",
    replaces_pods=True,
    needs_duration=True,
    inject=_inject,
    heal=_heal,
)


@pytest.fixture(autouse=True)
def hold_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "KINDS", MappingProxyType({**registry.KINDS, HOLD.type: HOLD}))


def _spec(duration: float, **over: Any) -> dict[str, Any]:
    # The held pod is never deleted, so no replacement comes: the trial ends at its timeout.
    return campaign(
        chaos={"type": "test_hold", "mode": "one", "durationSeconds": duration},
        recovery={"timeoutSeconds": duration + 0.5, "settleSeconds": 0, "stopOnUnrecovered": False},
        **over,
    )


def _commands(cluster: FakeCluster) -> list[str]:
    return [c[3][0] for c in cluster.exec_calls]


def test_a_held_kind_needs_a_duration() -> None:
    with pytest.raises(ValueError, match=r"needs chaos\.durationSeconds"):
        registry.kind_of(ChaosSpec(type="test_hold"))


async def test_the_fault_is_healed_after_its_duration_and_the_ledger_says_so(h: Harness) -> None:
    started = time.monotonic()
    assert await h.run(_spec(1.0, trials=1), timeout=20) is Phase.SUCCEEDED
    assert _commands(h.cluster) == ["hold", "release"]
    assert h.cluster.held == set()
    (fault,) = await h.ledger.faults(REF.uid)
    assert fault.injected_at is not None
    assert fault.healed_at is not None
    assert fault.intended_at <= fault.injected_at <= fault.healed_at
    assert fault.heal_note == "held for chaos.durationSeconds"
    assert fault.healed_at - fault.injected_at >= 1.0
    (attempt,) = await h.ledger.attempts(REF.uid)
    assert attempt.milestones["fault_healed"].offset >= 1.0
    assert time.monotonic() - started >= 1.0


async def test_a_campaign_deleted_mid_fault_is_healed_at_once(h: Harness) -> None:
    runner = asyncio.create_task(h.runner(_spec(30.0, trials=1)).run(h.stop))
    await asyncio.wait_for(h.cluster.holding.wait(), 10)
    stopped = time.monotonic()
    h.stop.set(deleted=True)
    await asyncio.wait_for(runner, 10)
    assert time.monotonic() - stopped < 5  # not the 30 s duration
    assert h.cluster.held == set()
    (fault,) = await h.ledger.faults(REF.uid)
    assert fault.healed_at is not None
    assert fault.heal_note == "the trial was stopped"


async def _crashed_mid_fault(ledger: Ledger, cluster: FakeCluster, run_uid: str) -> None:
    """What an operator SIGKILLed mid-fault leaves: an attempt in flight, its fault in place."""
    await ledger.ensure_campaign(REF, {"trials": 1}, 1, "7", 1.0)
    attempt_id = await ledger.begin_attempt(
        run_uid,
        0,
        victims=[Victim("tikv-1", "uid-tikv-1")],
        victim_seed="s",
        initial_state={},
        gate_passed=Milestone(1.0, -0.1),
        now=1.0,
    )
    await ledger.record_fault(
        attempt_id,
        run_uid,
        kind="test_hold",
        namespace="db",
        chaos=heal.chaos_json(ChaosSpec(type="test_hold", duration_seconds=30)),
        victims=[Victim("tikv-1", "uid-tikv-1")],
        now=1.0,
    )
    await cluster.exec_in_pod("db", "tikv-1", "main", ("hold",), 5.0)
    await ledger.mark_fault_injected(attempt_id, {"held": ["tikv-1"]}, 31.0, 1.1)


async def test_resume_heals_what_a_crashed_operator_left_in_place(h: Harness) -> None:
    await _crashed_mid_fault(h.ledger, h.cluster, REF.uid)
    assert h.cluster.held == {"db/tikv-1"}
    assert await h.run(_spec(1.0, trials=1), timeout=20) is Phase.SUCCEEDED
    faults = await h.ledger.faults(REF.uid)
    assert faults[0].heal_note == "healed at resume (operator restart)"
    assert all(f.healed_at is not None for f in faults)
    assert h.cluster.held == set()
    # Healed before the new attempt held anything: release, then the new trial's hold.
    assert _commands(h.cluster)[:3] == ["hold", "release", "hold"]
    assert (await h.ledger.attempts(REF.uid))[0].outcome is Outcome.INTERRUPTED


class _GoneApi:
    """The sweeper's API where every Campaign is gone."""

    async def find_campaign(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return None

    async def list_scaled_down(
        self, kind: str, namespace: str | None
    ) -> list[tuple[str, str, Mapping[str, str]]]:
        return []

    async def restore(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        raise AssertionError("nothing to restore")


async def test_the_sweeper_heals_the_faults_of_a_campaign_that_is_gone(h: Harness) -> None:
    await _crashed_mid_fault(h.ledger, h.cluster, REF.uid)
    result = await sweeper.sweep(h.ledger, _GoneApi(), [], 2000.0, h.cluster)
    assert h.cluster.held == set()
    assert len(result.healed) == 1
    (fault,) = await h.ledger.faults(REF.uid)
    assert fault.heal_note == "swept: its Campaign is gone or finished"
    # Without the API to heal through, nothing is healed (and nothing pretends it was).
    assert await h.ledger.open_faults() == []


async def test_a_sweep_without_a_fault_api_heals_nothing(h: Harness) -> None:
    await _crashed_mid_fault(h.ledger, h.cluster, REF.uid)
    result = await sweeper.sweep(h.ledger, _GoneApi(), [], 2000.0)
    assert result.healed == []
    assert h.cluster.held == {"db/tikv-1"}
    assert len(await h.ledger.open_faults()) == 1


async def test_a_running_campaign_keeps_its_fault_from_the_sweeper(h: Harness) -> None:
    runner = asyncio.create_task(h.runner(_spec(30.0, trials=1)).run(h.stop))
    await asyncio.wait_for(h.cluster.holding.wait(), 10)

    class _Alive(_GoneApi):
        async def find_campaign(self, namespace: str, name: str) -> Mapping[str, Any] | None:
            return {"metadata": {"uid": REF.uid}, "status": {"phase": Phase.RUNNING.value}}

    result = await sweeper.sweep(h.ledger, _Alive(), [], 2000.0, h.cluster)
    assert result.healed == []
    assert len(h.cluster.held) == 1  # still held: its Campaign runs
    h.stop.set()
    await asyncio.wait_for(runner, 10)
    assert h.cluster.held == set()
