"""Victim selection for pod kill: deterministic for a seed, refuses what would be unsafe."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from aftershock.chaos.victims import (
    VictimSelectionError,
    choose_victims,
    rng_for,
    to_victim,
    victim_seed,
)
from aftershock.model import OPERATOR_POD_LABEL, ChaosMode, ChaosSpec, PodState, Victim


def pod(name: str, *, deleting: bool = False, labels: dict[str, str] | None = None) -> PodState:
    return PodState(
        name=name,
        uid=f"uid-{name}",
        namespace="db",
        labels=labels if labels is not None else {"app": "tikv"},
        node=f"node-{name[-1]}",
        phase="Running",
        ready=True,
        restart_count=2,
        created_at=1.0,
        deleting=deleting,
    )


def pods(n: int) -> list[PodState]:
    return [pod(f"tikv-{i}") for i in range(n)]


ONE = ChaosSpec(mode=ChaosMode.ONE)


def names(victims: tuple[PodState, ...]) -> list[str]:
    return [v.name for v in victims]


# --- determinism --------------------------------------------------------------------------------


def test_same_seed_same_victims_whatever_the_listing_order() -> None:
    listed = pods(7)
    chaos = ChaosSpec(mode=ChaosMode.FIXED, value=3)
    expected = names(choose_victims(listed, chaos, rng_for("seed-1")))

    for shuffle_seed in range(20):
        shuffled = listed[:]
        random.Random(shuffle_seed).shuffle(shuffled)
        assert names(choose_victims(shuffled, chaos, rng_for("seed-1"))) == expected


def test_different_seeds_reach_different_pods() -> None:
    chosen = {names(choose_victims(pods(5), ONE, rng_for(f"s{i}")))[0] for i in range(50)}

    assert len(chosen) >= 3  # 50 draws among 4+ pods all landing on 2 or fewer would be a bug


def test_rng_is_stable_across_processes_and_hash_seeds() -> None:
    code = (
        "from aftershock.chaos.victims import rng_for; "
        "r = rng_for('campaign-uid/trial-3/attempt-1'); print([r.random() for _ in range(3)])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": str(hash_seed), "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in (0, 1, 12345)
    }

    r = rng_for("campaign-uid/trial-3/attempt-1")
    assert outputs == {f"{[r.random() for _ in range(3)]}\n"}


def test_victim_seed_differs_per_trial_and_attempt() -> None:
    seeds = {victim_seed("c", t, a) for t in range(3) for a in (1, 2)}

    assert len(seeds) == 6
    assert victim_seed("c", 2, 1) == victim_seed("c", 2, 1)
    assert victim_seed("c", 1, 1) != victim_seed("d", 1, 1)


def test_victims_are_returned_sorted_by_name() -> None:
    victims = choose_victims(pods(9), ChaosSpec(mode=ChaosMode.FIXED, value=4), rng_for("x"))

    assert names(victims) == sorted(names(victims))
    assert len(set(names(victims))) == 4


# --- counts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chaos", "n", "count"),
    [
        (ONE, 3, 1),
        (ChaosSpec(mode=ChaosMode.FIXED, value=2), 5, 2),
        (ChaosSpec(mode=ChaosMode.FIXED_PERCENT, value=50), 5, 2),  # floor(2.5)
        (ChaosSpec(mode=ChaosMode.FIXED_PERCENT, value=10), 5, 1),  # floor(0.5) -> at least 1
        (ChaosSpec(mode=ChaosMode.FIXED_PERCENT, value=1), 3, 1),
        (ChaosSpec(mode=ChaosMode.FIXED_PERCENT, value=66), 3, 1),  # floor(1.98)
        (ChaosSpec(mode=ChaosMode.FIXED_PERCENT, value=67), 3, 2),  # floor(2.01)
    ],
)
def test_counts_per_mode(chaos: ChaosSpec, n: int, count: int) -> None:
    assert len(choose_victims(pods(n), chaos, rng_for("s"))) == count


def test_deleting_pods_are_never_victims() -> None:
    listed = [pod("tikv-0", deleting=True), pod("tikv-1"), pod("tikv-2"), pod("tikv-3", deleting=True)]

    for i in range(30):
        assert names(choose_victims(listed, ONE, rng_for(str(i))))[0] in ("tikv-1", "tikv-2")


def test_percent_counts_live_pods() -> None:
    listed = [*pods(4), pod("tikv-8", deleting=True), pod("tikv-9", deleting=True)]

    assert len(choose_victims(listed, ChaosSpec(mode=ChaosMode.FIXED_PERCENT, value=50), rng_for("s"))) == 2


# --- refusals -----------------------------------------------------------------------------------


def test_refuses_no_pods() -> None:
    with pytest.raises(VictimSelectionError, match="matches no pods"):
        choose_victims([], ONE, rng_for("s"))


def test_refuses_when_all_pods_are_deleting() -> None:
    with pytest.raises(VictimSelectionError, match="already being deleted"):
        choose_victims([pod("tikv-0", deleting=True)], ONE, rng_for("s"))


@pytest.mark.parametrize(
    ("chaos", "n"),
    [
        (ONE, 1),
        (ChaosSpec(mode=ChaosMode.FIXED, value=3), 3),
        (ChaosSpec(mode=ChaosMode.FIXED, value=5), 3),
        (ChaosSpec(mode=ChaosMode.FIXED_PERCENT, value=100), 3),
        (ChaosSpec(mode=ChaosMode.FIXED_PERCENT, value=10), 1),
    ],
)
def test_refuses_taking_down_the_whole_subject(chaos: ChaosSpec, n: int) -> None:
    with pytest.raises(VictimSelectionError, match="at least one must stay up"):
        choose_victims(pods(n), chaos, rng_for("s"))


def test_refuses_whole_subject_counting_only_live_pods() -> None:
    listed = [pod("tikv-0"), pod("tikv-1"), pod("tikv-2", deleting=True)]

    with pytest.raises(VictimSelectionError, match="2 of 2 live pods"):
        choose_victims(listed, ChaosSpec(mode=ChaosMode.FIXED, value=2), rng_for("s"))


def test_refuses_any_selection_reaching_the_operator() -> None:
    key, value = OPERATOR_POD_LABEL
    listed = [*pods(5), pod("aftershock-7f9c", labels={key: value})]

    for i in range(10):  # refused as a whole, not only when the operator would be drawn
        with pytest.raises(VictimSelectionError, match="operator's own pods"):
            choose_victims(listed, ONE, rng_for(str(i)))


def test_refuses_operator_pod_even_when_deleting() -> None:
    key, value = OPERATOR_POD_LABEL
    listed = [*pods(3), pod("aftershock-old", deleting=True, labels={key: value})]

    with pytest.raises(VictimSelectionError, match="aftershock-old"):
        choose_victims(listed, ONE, rng_for("s"))


def test_fixed_without_value_is_refused() -> None:
    with pytest.raises(VictimSelectionError, match="needs a value"):
        choose_victims(pods(3), ChaosSpec(mode=ChaosMode.FIXED), rng_for("s"))


# --- victims ------------------------------------------------------------------------------------


def test_to_victim_keeps_identity_and_store() -> None:
    assert to_victim(pod("tikv-1"), 4) == Victim(
        name="tikv-1", uid="uid-tikv-1", node="node-1", restart_count=2, member_id=4
    )
    assert to_victim(pod("tikv-1"), None).member_id is None
