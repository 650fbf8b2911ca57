"""TiKV health judgements: pods, PD's view, restarts, and pod-to-store matching."""

from __future__ import annotations

import dataclasses

import pytest

from aftershock.model import PodState
from aftershock.subjects.pd import PdMemberHealth, StoreInfo, store_host
from aftershock.subjects.tikv import (
    Health,
    expected_store_count,
    judge_pd,
    judge_pods,
    match_store,
    store_restarted,
)

NOW = 1_750_000_000.0


def pod(name: str, *, ready: bool = True, deleting: bool = False, uid: str | None = None) -> PodState:
    return PodState(
        name=name,
        uid=uid or f"uid-{name}",
        namespace="db",
        labels={"app": "tikv"},
        node="node-1",
        phase="Running" if ready else "Pending",
        ready=ready,
        restart_count=0,
        created_at=NOW - 600,
        deleting=deleting,
    )


def store(
    store_id: int,
    pod_name: str,
    *,
    state: str = "Up",
    heartbeat_age: float = 1.0,
    started: int = int(NOW) - 500,
    pending: int = 0,
) -> StoreInfo:
    return StoreInfo(
        id=store_id,
        address=f"{pod_name}.tikv-peer.db.svc:20160",
        state_name=state,
        start_timestamp=started,
        last_heartbeat_ns=int((NOW - heartbeat_age) * 1e9),
        leader_count=8,
        region_count=24,
        pending_peer_count=pending,
        status_address=f"{pod_name}.tikv-peer.db.svc:20180",
    )


HEALTHY_PD = [PdMemberHealth("pd-0", 11, True)]
THREE = [store(1, "tikv-0"), store(4, "tikv-1"), store(5, "tikv-2")]


# --- pods ---------------------------------------------------------------------------------------


def test_pods_healthy_when_all_expected_ready() -> None:
    assert judge_pods([pod("tikv-0"), pod("tikv-1"), pod("tikv-2")], 3) == Health(True, ())


def test_pods_missing_one() -> None:
    health = judge_pods([pod("tikv-0"), pod("tikv-2")], 3)

    assert not health.healthy
    assert health.reasons == ("expected 3 pods, found 2",)


def test_pods_one_extra_is_unhealthy() -> None:
    assert not judge_pods([pod("a"), pod("b")], 1).healthy


def test_pod_not_ready_is_named() -> None:
    health = judge_pods([pod("tikv-0"), pod("tikv-1", ready=False), pod("tikv-2")], 3)

    assert not health.healthy
    assert health.reasons == ("pod tikv-1 is not Ready (phase Pending)",)


def test_pod_being_deleted_is_unhealthy_even_if_ready() -> None:
    health = judge_pods([pod("tikv-0"), pod("tikv-1", deleting=True), pod("tikv-2")], 3)

    assert not health.healthy
    assert health.reasons == ("pod tikv-1 is being deleted",)


# --- PD -----------------------------------------------------------------------------------------


def test_pd_healthy() -> None:
    assert judge_pd(THREE, HEALTHY_PD, expected_stores=3, now=NOW).healthy


def test_pd_disconnected_store() -> None:
    stores = [THREE[0], store(4, "tikv-1", state="Disconnected", heartbeat_age=25), THREE[2]]

    health = judge_pd(stores, HEALTHY_PD, expected_stores=3, now=NOW)

    assert not health.healthy
    assert "store 4 (tikv-1.tikv-peer.db.svc:20160) is Disconnected" in health.reasons
    assert "expected 3 stores Up, PD reports 2" in health.reasons


def test_pd_missing_store() -> None:
    health = judge_pd(THREE[:2], HEALTHY_PD, expected_stores=3, now=NOW)

    assert health.reasons == ("expected 3 stores Up, PD reports 2",)


def test_pd_stale_heartbeat_on_an_up_store() -> None:
    stores = [THREE[0], store(4, "tikv-1", heartbeat_age=31), THREE[2]]

    health = judge_pd(stores, HEALTHY_PD, expected_stores=3, now=NOW)

    assert not health.healthy
    assert any("store 4" in r and "heartbeat 31s ago" in r for r in health.reasons)
    assert judge_pd(stores, HEALTHY_PD, expected_stores=3, now=NOW, heartbeat_fresh_seconds=40).healthy


def test_pd_store_without_heartbeat() -> None:
    stores = [THREE[0], dataclasses.replace(THREE[1], last_heartbeat_ns=0), THREE[2]]

    assert "never sent a heartbeat" in judge_pd(stores, HEALTHY_PD, expected_stores=3, now=NOW).reasons[0]


def test_pd_heartbeat_ahead_of_our_clock_is_fresh() -> None:
    stores = [THREE[0], store(4, "tikv-1", heartbeat_age=-3), THREE[2]]

    assert judge_pd(stores, HEALTHY_PD, expected_stores=3, now=NOW).healthy


def test_pd_pending_peers_only_when_positive() -> None:
    stores = [THREE[0], store(4, "tikv-1", pending=2), THREE[2]]

    health = judge_pd(stores, HEALTHY_PD, expected_stores=3, now=NOW)

    assert health.reasons == ("store 4 (tikv-1.tikv-peer.db.svc:20160) has 2 pending peers",)


def test_pd_unhealthy_member() -> None:
    members = [PdMemberHealth("pd-0", 1, True), PdMemberHealth("pd-1", 2, False)]

    health = judge_pd(THREE, members, expected_stores=3, now=NOW)

    assert health.reasons == ("PD member pd-1 is unhealthy",)


def test_pd_without_members() -> None:
    assert judge_pd(THREE, [], expected_stores=3, now=NOW).reasons == ("PD reports no members",)


def test_pd_tombstone_is_ignored_but_a_down_extra_store_is_not() -> None:
    tomb = store(9, "tikv-1", state="Tombstone", heartbeat_age=9999)
    down = store(10, "tikv-9", state="Down", heartbeat_age=9999)

    assert judge_pd([*THREE, tomb], HEALTHY_PD, expected_stores=3, now=NOW).healthy
    health = judge_pd([*THREE, down], HEALTHY_PD, expected_stores=3, now=NOW)
    assert health.reasons == ("store 10 (tikv-9.tikv-peer.db.svc:20160) is Down",)


def test_pd_more_stores_up_than_expected_is_reported() -> None:
    health = judge_pd([*THREE, store(6, "tikv-3")], HEALTHY_PD, expected_stores=3, now=NOW)

    assert health.reasons == ("expected 3 stores Up, PD reports 4",)


def test_health_and_combines_reasons() -> None:
    both = Health(True) & Health(False, ("x",))

    assert both == Health(False, ("x",))
    assert (Health(True) & Health(True)).healthy


# --- restarts -----------------------------------------------------------------------------------


def test_store_restarted_on_new_start_timestamp() -> None:
    before = store(4, "tikv-1", started=1000)

    assert store_restarted(before, store(4, "tikv-1", started=1030))
    assert not store_restarted(before, store(4, "tikv-1", started=1000, heartbeat_age=0))


def test_store_restarted_earlier_timestamp_after_clock_step() -> None:
    assert store_restarted(store(4, "tikv-1", started=1000), store(4, "tikv-1", started=990))


def test_store_restarted_unknown_timestamp_proves_nothing() -> None:
    assert not store_restarted(store(4, "tikv-1", started=1000), store(4, "tikv-1", started=0))


def test_store_restarted_new_store_at_same_address() -> None:
    assert store_restarted(store(4, "tikv-1", started=1000), store(12, "tikv-1", started=1000))


# --- matching pods to stores --------------------------------------------------------------------


def test_match_store_by_first_dns_label() -> None:
    stores = [store(1, "tikv-1"), store(2, "tikv-10"), store(3, "tikv-11")]

    found = match_store("tikv-1", stores)

    assert found is not None
    assert found.id == 1
    assert match_store("tikv-2", stores) is None
    assert match_store("tikv", stores) is None


def test_match_store_short_address_form() -> None:
    s = dataclasses.replace(store(1, "x"), address="tikv-0.tikv-peer:20160")

    assert match_store("tikv-0", [s]) == s


def test_match_store_prefers_live_newest() -> None:
    old = store(4, "tikv-1", state="Tombstone", started=100)
    new = store(12, "tikv-1", started=50)
    newer = store(13, "tikv-1", state="Disconnected", started=200)

    assert match_store("tikv-1", [old, new]) == new
    assert match_store("tikv-1", [old, new, newer]) == newer


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("tikv-0.p.ns.svc:20160", "tikv-0.p.ns.svc"),
        ("tikv-0", "tikv-0"),
        ("[fd00::1]:20160", "fd00::1"),
        ("fd00::1", "fd00::1"),
    ],
)
def test_store_host(address: str, host: str) -> None:
    assert store_host(address) == host


def test_expected_store_count_counts_names() -> None:
    pods = [pod("tikv-0"), pod("tikv-1"), pod("tikv-1", uid="new", ready=False)]

    assert expected_store_count(pods) == 2
