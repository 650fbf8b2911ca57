"""One pod watch shared by the Campaigns: each view sees exactly its selector's pods in its
namespace, with the events a watch of its own would have given, and the shared watch lives
exactly as long as some view needs it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable

import pytest
from tests.unit.fakes import FakeCluster, FakeLock, RealClock, fast_campaign, make_pod

from aftershock import cli
from aftershock.engine import strike
from aftershock.engine.holds import subject_keys
from aftershock.engine.outcomes import Gate
from aftershock.engine.podwatch import PodWatches, Scope
from aftershock.engine.view import Observation, PodView, next_observation
from aftershock.errors import ApiError
from aftershock.model import LabelSelector, LabelSelectorRequirement, Victim, parse_campaign_spec

TIKV = LabelSelector((("app", "tikv"),))
PD = LabelSelector((("app", "pd"),))
#: app in (tikv, pd), tier not canary: both of the above but the canary.
BOTH_NOT_CANARY = LabelSelector(
    (),
    (
        LabelSelectorRequirement("app", "In", ("tikv", "pd")),
        LabelSelectorRequirement("tier", "NotIn", ("canary",)),
    ),
)


@contextlib.asynccontextmanager
async def running(*views: PodView) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(v.run()) for v in views]
    try:
        for view in views:
            assert await view.wait_synced(5)
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def names(view: PodView) -> list[str]:
    return [p.name for p in view.pods()]


async def drain_until(queue: asyncio.Queue[Observation], name: str, type_: str) -> Observation:
    """The first observation of `type_` for pod `name`; fails if none comes within 5 s."""
    while True:
        obs = await next_observation(queue, 5)
        assert obs is not None, f"no {type_} for {name}"
        if obs.pod.name == name and obs.type == type_:
            return obs


def cluster_with_mixed_pods() -> FakeCluster:
    cluster = FakeCluster()
    cluster.add_statefulset("tikv", 3, labels={"app": "tikv"})
    cluster.add_statefulset("pd", 2, labels={"app": "pd"})
    cluster.add_pod(make_pod("canary", labels={"app": "tikv", "tier": "canary"}))
    cluster.add_pod(make_pod("other-ns", namespace="elsewhere", labels={"app": "tikv"}))
    return cluster


@pytest.mark.parametrize("scope", ["namespace", "cluster"])
async def test_views_with_different_selectors_share_one_list_and_one_watch(scope: Scope) -> None:
    cluster = cluster_with_mixed_pods()
    watches = PodWatches(cluster, RealClock(), scope=scope)
    tikv, pd, both = (PodView(watches, "db", s) for s in (TIKV, PD, BOTH_NOT_CANARY))
    async with running(tikv, pd, both):
        assert names(tikv) == ["canary", "tikv-0", "tikv-1", "tikv-2"]
        assert names(pd) == ["pd-0", "pd-1"]
        assert names(both) == ["pd-0", "pd-1", "tikv-0", "tikv-1", "tikv-2"]
        assert (cluster.list_calls, cluster.watch_calls, len(watches.feeds())) == (1, 1, 1)
        with tikv.subscribe() as tq, pd.subscribe() as pq:
            cluster.set_ready("tikv-1", False)
            assert not (await drain_until(tq, "tikv-1", "MODIFIED")).pod.ready
            cluster.set_ready("pd-0", False)
            # pd's view heard of pd-0 and of nothing of tikv's.
            assert (await drain_until(pq, "pd-0", "MODIFIED")).pod.name == "pd-0"
            assert all(o.pod.name.startswith("pd") for o in _queued(pq))


async def test_cluster_scope_is_one_feed_for_every_namespace_and_each_view_sees_only_its_own() -> None:
    cluster = cluster_with_mixed_pods()
    watches = PodWatches(cluster, RealClock(), scope="cluster")
    here, there = PodView(watches, "db", TIKV), PodView(watches, "elsewhere", TIKV)
    async with running(here, there):
        assert names(here) == ["canary", "tikv-0", "tikv-1", "tikv-2"]
        assert names(there) == ["other-ns"]
        assert (cluster.list_calls, cluster.watch_calls, len(watches.feeds())) == (1, 1, 1)
        with there.subscribe() as queue:
            cluster.remove_pod("tikv-0")
            cluster.remove_pod("other-ns", namespace="elsewhere")
            assert (await drain_until(queue, "other-ns", "DELETED")).pod.namespace == "elsewhere"
            assert not [o for o in _queued(queue) if o.pod.namespace != "elsewhere"]
        assert names(here) == ["canary", "tikv-1", "tikv-2"]


async def test_namespace_scope_opens_one_feed_per_namespace() -> None:
    cluster = cluster_with_mixed_pods()
    watches = PodWatches(cluster, RealClock(), scope="namespace")
    views = [PodView(watches, "db", TIKV), PodView(watches, "db", PD), PodView(watches, "elsewhere", TIKV)]
    async with running(*views):
        assert sorted(f.namespace or "" for f in watches.feeds()) == ["db", "elsewhere"]
        assert cluster.watch_calls == 2


async def test_a_pod_whose_labels_change_leaves_one_view_and_enters_another_as_a_selector_watch_does() -> (
    None
):
    cluster = cluster_with_mixed_pods()
    watches = PodWatches(cluster, RealClock())
    tikv, pd = PodView(watches, "db", TIKV), PodView(watches, "db", PD)
    async with running(tikv, pd):
        before = cluster.pod("tikv-2")
        assert before is not None
        with tikv.subscribe() as tq, pd.subscribe() as pq:
            cluster.add_pod(dataclasses.replace(before, labels={"app": "pd"}))
            left = await drain_until(tq, "tikv-2", "DELETED")
            entered = await drain_until(pq, "tikv-2", "ADDED")
        # The API server's watch sends the last state that matched with such a DELETED.
        assert left.pod.labels == {"app": "tikv"}
        assert entered.pod.labels == {"app": "pd"}
        assert left.mono == entered.mono  # one change, seen once
        assert "tikv-2" not in names(tikv)
        assert "tikv-2" in names(pd)


async def test_a_broken_watch_relists_and_every_view_hears_what_it_missed() -> None:
    cluster = cluster_with_mixed_pods()
    watches = PodWatches(cluster, RealClock(), backoff_initial=0.05)
    tikv, both = PodView(watches, "db", TIKV), PodView(watches, "db", BOTH_NOT_CANARY)
    async with running(tikv, both):
        with tikv.subscribe() as tq, both.subscribe() as bq:
            cluster.list_error = ApiError("etcd leader changed", 500)
            cluster.break_watches(ApiError("stream reset", 500))
            await _until(lambda: tikv.error is not None)
            # Gone while nobody watched: only the next list can tell.
            cluster.remove_pod("tikv-1")
            cluster.list_error = None
            gone = [await drain_until(q, "tikv-1", "DELETED") for q in (tq, bq)]
        assert gone[0].mono == gone[1].mono
        assert tikv.resyncs == both.resyncs == 1
        assert tikv.error is None
        assert "tikv-1" not in names(tikv) + names(both)


async def test_the_shared_watch_closes_with_its_last_view_and_a_late_view_starts_from_its_picture() -> None:
    cluster = cluster_with_mixed_pods()
    watches = PodWatches(cluster, RealClock())
    first = PodView(watches, "db", TIKV)
    async with running(first):
        late = PodView(watches, "db", PD)
        async with running(late):
            assert names(late) == ["pd-0", "pd-1"]
            assert cluster.list_calls == 1  # the late view listed nothing of its own
        assert len(watches.feeds()) == 1  # the first still needs it
    await _until(lambda: not watches.feeds() and not cluster.open_watches())
    again = PodView(watches, "db", TIKV)
    async with running(again):
        assert names(again) == ["canary", "tikv-0", "tikv-1", "tikv-2"]
        assert cluster.list_calls == 2


def _queued(queue: asyncio.Queue[Observation]) -> list[Observation]:
    out: list[Observation] = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for `condition`, looking at every turn of the loop's clock (bounded by `timeout`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_the_kill_guard_checks_each_victim_against_the_campaigns_own_selector_not_the_views() -> None:
    """The view's filter and the guard are two checks: a view that held a pod outside the
    Campaign's selector (here: a view built with a wider one) still kills nothing outside it."""
    cluster = cluster_with_mixed_pods()
    spec = parse_campaign_spec(
        fast_campaign(
            subject={
                "kind": "TiKV",
                "selector": {
                    "matchLabels": {"app": "tikv"},
                    "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["canary"]}],
                },
            }
        )
    )
    wider = PodView(PodWatches(cluster, RealClock()), "db", TIKV)
    lock = FakeLock()
    async with running(wider):
        pods = tuple(wider.pods())
        assert await lock.try_acquire(subject_keys(pods))
        inputs = strike.GuardInputs(spec, "db", frozenset(), len(pods), probed=False)
        gate = Gate(passed=True, pods=pods)

        def victim(name: str) -> Victim:
            pod = cluster.pod(name)
            assert pod is not None
            return Victim(pod.name, pod.uid, pod.node)

        assert strike.refusal(inputs, [victim("tikv-0")], wider, gate, lock) is None
        refused = strike.refusal(inputs, [victim("canary")], wider, gate, lock)
    assert refused == "canary no longer matches the selector"


@pytest.mark.parametrize(
    ("choice", "all_namespaces", "scope"),
    [
        ("auto", True, "cluster"),  # the cluster-wide install: its ClusterRole lists pods everywhere
        ("auto", False, "namespace"),  # named namespaces: Roles there only, never wider
        ("namespace", True, "namespace"),
        ("cluster", False, "cluster"),  # asked for explicitly: the installer grants it
    ],
)
def test_auto_is_cluster_wide_only_where_the_operator_serves_every_namespace(
    choice: str, all_namespaces: bool, scope: str
) -> None:
    assert cli.pod_watch_scope(choice, all_namespaces=all_namespaces) == scope


def test_the_default_pod_watch_is_per_namespace_even_for_a_cluster_wide_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 21: a cluster-wide watch holds every pod of the cluster (20,000 pods, an OOM at a
    256Mi limit); per namespace, memory follows the namespaces with running Campaigns."""
    monkeypatch.delenv("AFTERSHOCK_POD_WATCH_SCOPE", raising=False)
    args = cli.build_parser().parse_args(["run", "--all-namespaces"])
    assert cli.pod_watch_scope(args.pod_watch_scope, all_namespaces=True) == "namespace"
