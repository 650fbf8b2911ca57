"""spec.reset: parsing and the refusal of an unacknowledged Recreate, and the reset step as a
user sees it through a whole Campaign run on the fakes: what was deleted, what the ledger
records per trial, and that the reset is never part of the recovery time."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from tests.unit.fakes import (
    FAST_SETTINGS,
    FakeCluster,
    FakeLock,
    FakeVolumes,
    ListSink,
    RealClock,
    Stop,
    fast_campaign,
    make_pod,
)

from aftershock import report, validate
from aftershock.engine.runner import CampaignRunner
from aftershock.errors import SpecError
from aftershock.ledger import Ledger
from aftershock.model import (
    CampaignRef,
    Outcome,
    Phase,
    ResetMode,
    parse_campaign_spec,
)

REF = CampaignRef(namespace="db", name="reset-tikv", uid="campaign-uid-reset")
SETTINGS = FAST_SETTINGS


def campaign(**overrides: Any) -> dict[str, Any]:
    return fast_campaign(**{"trials": 2, **overrides})


RECREATE = {"mode": "Recreate", "acknowledgeDataLoss": True}


# --- parsing ----------------------------------------------------------------------------------------


def test_reset_defaults_to_none() -> None:
    assert parse_campaign_spec(campaign()).reset.mode is ResetMode.NONE


def test_restart_needs_no_acknowledgement() -> None:
    assert parse_campaign_spec(campaign(reset={"mode": "Restart"})).reset.mode is ResetMode.RESTART


def test_recreate_without_acknowledgement_is_refused_naming_the_field() -> None:
    for reset in ({"mode": "Recreate"}, {"mode": "Recreate", "acknowledgeDataLoss": False}):
        with pytest.raises(SpecError) as err:
            parse_campaign_spec(campaign(reset=reset))
        assert err.value.field == "spec.reset.acknowledgeDataLoss"
        assert "acknowledgeDataLoss: true" in str(err.value)


def test_recreate_with_acknowledgement_parses() -> None:
    reset = parse_campaign_spec(campaign(reset=RECREATE)).reset
    assert reset.mode is ResetMode.RECREATE
    assert reset.acknowledge_data_loss


def test_an_unknown_reset_mode_names_the_allowed_ones() -> None:
    with pytest.raises(SpecError, match="'None', 'Restart', 'Recreate'"):
        parse_campaign_spec(campaign(reset={"mode": "Wipe"}))


def test_validate_refuses_an_unacknowledged_recreate_by_the_crd_rule_and_the_operator() -> None:
    obj = {
        "apiVersion": "aftershock.dev/v1alpha1",
        "kind": "Campaign",
        "metadata": {"name": "c", "namespace": "db"},
        "spec": campaign(reset={"mode": "Recreate"}),
    }
    problems = validate.validate_object(obj)
    assert [p.source for p in problems] == ["cel"], problems
    assert "acknowledgeDataLoss must be true" in problems[0].message
    obj["spec"] = campaign(reset=RECREATE)
    assert validate.validate_object(obj) == []


# --- the reset through a Campaign run --------------------------------------------------------------


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    async with await Ledger.open(tmp_path / "ledger.db") as opened:
        yield opened


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    c = FakeCluster()
    c.add_statefulset("tikv", 3)
    yield c
    await c.close()


def runner(
    spec: Mapping[str, Any], ledger: Ledger, cluster: FakeCluster, volumes: FakeVolumes, sink: ListSink
) -> CampaignRunner:
    return CampaignRunner(
        ref=REF,
        generation=1,
        spec_source=lambda: spec,
        existing_status={},
        ledger=ledger,
        pods=cluster,
        probe_factory=lambda _s, _n: None,
        lock=FakeLock(),
        status=sink,
        events=sink,
        clock=RealClock(),
        settings=SETTINGS,
        volumes=volumes,
    )


async def test_recreate_starts_every_trial_from_new_claims_and_records_it_apart_from_recovery(
    ledger: Ledger, cluster: FakeCluster
) -> None:
    volumes = FakeVolumes(cluster, {"tikv": ["data"]})
    other = volumes.add_claim("data-elsewhere-0")  # not a selected pod's claim: never touched
    before = dict(volumes.claims)
    # The first reset's replacements are slow to turn Ready: that wait is the reset's, recorded
    # apart, and ends before the trial's gate.
    cluster.ready_delays = [0.3, 0.3, 0.3]
    sink = ListSink()
    phase = await asyncio.wait_for(
        runner(campaign(reset=RECREATE), ledger, cluster, volumes, sink).run(Stop()), 20
    )
    assert phase is Phase.SUCCEEDED

    attempts = await ledger.attempts(REF.uid)
    assert [a.outcome for a in attempts] == [Outcome.RECOVERED, Outcome.RECOVERED]
    seen: set[str] = set(before.values())
    for a in attempts:
        reset = a.final_state["reset"]
        assert reset["mode"] == "Recreate"
        assert reset["error"] is None
        claims = {c["name"]: c for c in reset["claims"]}
        assert set(claims) == {"data-tikv-0", "data-tikv-1", "data-tikv-2"}
        for c in claims.values():
            assert c["newUid"] not in (None, c["oldUid"])
            assert c["newUid"] not in seen, "a trial started on a claim an earlier one used"
            seen.add(c["newUid"])
        assert {p["name"] for p in reset["pods"]} == {"tikv-0", "tikv-1", "tikv-2"}
        assert a.recovery_seconds is not None
        # The reset ended before the trial's gate passed, so before the kill: recovery (from the
        # kill) cannot contain any of it.
        assert reset["finishedAt"] <= a.milestones["gate_passed"].wall <= a.milestones["kill_sent"].wall
    # Every claim deleted was a selected pod's, by the UID it had.
    assert {name for _, name, _ in volumes.deleted} == {"data-tikv-0", "data-tikv-1", "data-tikv-2"}
    assert len(volumes.deleted) == 6
    assert volumes.claims[("db", "data-elsewhere-0")] == other
    assert "TrialReset" in sink.reasons()
    # `report` shows the reset per trial.
    text = report.render_table(await report.load_report(ledger, REF.namespace, REF.name))
    assert text.count("Recreate") == 2
    assert "3 claims" in text


async def test_restart_replaces_every_member_and_deletes_no_claim(
    ledger: Ledger, cluster: FakeCluster
) -> None:
    volumes = FakeVolumes(cluster, {"tikv": ["data"]})
    original = {p.uid for p in cluster.pods()}
    phase = await asyncio.wait_for(
        runner(campaign(trials=1, reset={"mode": "Restart"}), ledger, cluster, volumes, ListSink()).run(
            Stop()
        ),
        20,
    )
    assert phase is Phase.SUCCEEDED
    (attempt,) = await ledger.attempts(REF.uid)
    reset = attempt.final_state["reset"]
    assert {p["oldUid"] for p in reset["pods"]} == original
    assert all(p["newUid"] not in original for p in reset["pods"])
    assert reset["claims"] == []
    assert volumes.deleted == []
    # The victim was one of the restarted members' replacements, not an original pod.
    assert attempt.victims[0].uid not in original


async def test_recreate_of_pods_without_a_statefulset_is_refused_and_nothing_is_deleted(
    ledger: Ledger,
) -> None:
    cluster = FakeCluster()
    cluster.add_pod(dataclasses.replace(make_pod("tikv-0"), owner_kind="ReplicaSet", owner_name="rs"))
    volumes = FakeVolumes(cluster, {})
    volumes.add_claim("data-tikv-0")
    sink = ListSink()
    try:
        phase = await asyncio.wait_for(
            runner(campaign(reset=RECREATE), ledger, cluster, volumes, sink).run(Stop()), 20
        )
    finally:
        await cluster.close()
    assert phase is Phase.FAILED
    assert cluster.delete_calls == []
    assert volumes.deleted == []
    assert "refused to reset (Recreate): tikv-0 is not a StatefulSet's pod" in sink.last["message"]


async def test_unacknowledged_recreate_marks_the_spec_invalid_and_kills_nothing(
    ledger: Ledger, cluster: FakeCluster
) -> None:
    volumes = FakeVolumes(cluster, {"tikv": ["data"]})
    sink = ListSink()
    phase = await asyncio.wait_for(
        runner(campaign(reset={"mode": "Recreate"}), ledger, cluster, volumes, sink).run(Stop()), 20
    )
    assert phase is Phase.FAILED
    valid = sink.condition("SpecValid")
    assert valid is not None
    assert valid["status"] == "False"
    assert "spec.reset.acknowledgeDataLoss" in valid["message"]
    assert cluster.delete_calls == []
    assert volumes.deleted == []
