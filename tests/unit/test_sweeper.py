"""The sweeper: attempts and remediators a gone or finished Campaign left behind are put right;
a Campaign that still runs is never touched."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aftershock.engine import sweeper
from aftershock.ledger import Ledger
from aftershock.model import CampaignRef, Outcome, Phase, Verdict

GONE = CampaignRef("db", "gone", "uid-gone")
ALIVE = CampaignRef("db", "alive", "uid-alive")
REMEDIATOR = {"kind": "Deployment", "name": "healer", "replicas": 2}


class FakeApi:
    def __init__(self) -> None:
        self.campaigns: dict[tuple[str, str], dict[str, Any]] = {}
        self.workloads: dict[tuple[str, str, str], dict[str, str]] = {}
        self.replicas: dict[tuple[str, str, str], int] = {}

    def add_campaign(self, ref: CampaignRef, phase: str) -> None:
        self.campaigns[(ref.namespace, ref.name)] = {"metadata": {"uid": ref.uid}, "status": {"phase": phase}}

    async def find_campaign(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.campaigns.get((namespace, name))

    async def list_scaled_down(
        self, kind: str, namespace: str | None
    ) -> list[tuple[str, str, Mapping[str, str]]]:
        return [(ns, n, a) for (k, ns, n), a in self.workloads.items() if k == kind]

    async def restore(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        self.replicas[(kind, namespace, name)] = replicas
        self.workloads.pop((kind, namespace, name), None)


async def _in_flight(ledger: Ledger, ref: CampaignRef) -> None:
    await ledger.ensure_campaign(ref, {}, 3, "7", 1000.0)
    await ledger.set_campaign_state(ref.uid, Phase.RUNNING, Verdict.NONE, 1000.0, started=True)
    await ledger.begin_attempt(
        ref.uid,
        0,
        victims=[],
        victim_seed="7",
        initial_state={"remediator": REMEDIATOR},
        gate_passed=None,
        now=1001.0,
    )


async def test_a_gone_campaigns_attempt_is_interrupted_and_its_remediator_restored(tmp_path: Path) -> None:
    api = FakeApi()
    async with await Ledger.open(tmp_path / "l.db") as ledger:
        await _in_flight(ledger, GONE)
        result = await sweeper.sweep(ledger, api, [], 2000.0)
        (attempt,) = await ledger.attempts(GONE.uid)
    assert attempt.outcome is Outcome.INTERRUPTED
    assert attempt.error == sweeper.SWEPT
    assert api.replicas == {("Deployment", "db", "healer"): 2}
    assert result.interrupted == ["db/gone run 1 trial 1"]


async def test_a_running_campaign_is_left_alone(tmp_path: Path) -> None:
    api = FakeApi()
    api.add_campaign(ALIVE, "Running")
    api.workloads[("Deployment", "db", "healer")] = {
        sweeper.ORIGINAL_REPLICAS: "2",
        sweeper.SCALED_DOWN_BY: "db/alive/uid-alive",
    }
    async with await Ledger.open(tmp_path / "l.db") as ledger:
        await _in_flight(ledger, ALIVE)
        result = await sweeper.sweep(ledger, api, [], 2000.0)
        (attempt,) = await ledger.attempts(ALIVE.uid)
    assert attempt.outcome is None
    assert api.replicas == {}
    assert (result.interrupted, result.restored) == ([], [])


async def test_a_remediator_left_at_zero_by_a_deleted_campaign_is_restored_from_its_annotation(
    tmp_path: Path,
) -> None:
    api = FakeApi()
    api.add_campaign(CampaignRef("db", "gone", "uid-of-a-new-object"), "Running")  # same name, new object
    api.workloads[("StatefulSet", "db", "healer")] = {
        sweeper.ORIGINAL_REPLICAS: "3",
        sweeper.SCALED_DOWN_BY: "db/gone/uid-gone",
    }
    async with await Ledger.open(tmp_path / "l.db") as ledger:
        result = await sweeper.sweep(ledger, api, ["db"], 2000.0)
    assert api.replicas == {("StatefulSet", "db", "healer"): 3}
    assert api.workloads == {}
    assert result.restored == ["StatefulSet db/healer -> 3"]


async def test_a_finished_campaigns_remediator_is_restored(tmp_path: Path) -> None:
    api = FakeApi()
    api.add_campaign(ALIVE, "Succeeded")
    api.workloads[("Deployment", "db", "healer")] = {
        sweeper.ORIGINAL_REPLICAS: "1",
        sweeper.SCALED_DOWN_BY: "db/alive/uid-alive",
    }
    async with await Ledger.open(tmp_path / "l.db") as ledger:
        await sweeper.sweep(ledger, api, [], 2000.0)
    assert api.replicas == {("Deployment", "db", "healer"): 1}


async def test_an_attempt_of_a_superseded_run_is_interrupted(tmp_path: Path) -> None:
    from aftershock.engine import runs

    api = FakeApi()
    api.add_campaign(ALIVE, "Running")
    async with await Ledger.open(tmp_path / "l.db") as ledger:
        await runs.resolve(ledger, ALIVE, "")
        await _in_flight(ledger, ALIVE)
        await runs.resolve(ledger, ALIVE, "second")
        await sweeper.sweep(ledger, api, [], 2000.0)
        (attempt,) = await ledger.attempts(ALIVE.uid)
    assert attempt.outcome is Outcome.INTERRUPTED
