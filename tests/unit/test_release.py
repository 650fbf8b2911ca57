"""`aftershock release` (the chart's pre-delete hook): the operator stopped first, then its
finalizer, and only its, taken off every Campaign, a Campaign changed meanwhile read again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.unit.fakes import make_pod

from aftershock.kube import release
from aftershock.kube.errors import KubeConflictError, KubeNotFoundError
from aftershock.model import FINALIZER, PodState


def _campaign(ns: str, name: str, finalizers: list[str], rv: str = "1") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "finalizers": finalizers, "resourceVersion": rv}}


class FakeKube:
    def __init__(self, campaigns: list[dict[str, Any]], pods: list[list[str]]) -> None:
        self.campaigns = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in campaigns}
        self.pods = pods  # what each list of the operator's pods answers, in turn
        self.calls: list[tuple[Any, ...]] = []
        self.conflict_once: set[str] = set()

    async def set_replicas(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        self.calls.append(("scale", kind, namespace, name, replicas))

    async def list_pods(self, namespace: str, selector: str) -> tuple[list[PodState], str]:
        self.calls.append(("list pods", namespace, selector))
        names = self.pods.pop(0) if len(self.pods) > 1 else self.pods[0]
        return [make_pod(n, namespace=namespace) for n in names], "1"

    async def list_campaigns(self, namespace: str | None) -> list[dict[str, Any]]:
        self.calls.append(("list campaigns", namespace))
        return [c for (ns, _), c in self.campaigns.items() if namespace in (None, ns)]

    async def get_campaign(self, namespace: str, name: str) -> dict[str, Any]:
        return self.campaigns[(namespace, name)]

    async def set_campaign_finalizers(
        self, namespace: str, name: str, rv: str, finalizers: list[str]
    ) -> None:
        current = self.campaigns.get((namespace, name))
        if current is None:
            raise KubeNotFoundError("gone", 404)
        if name in self.conflict_once:
            self.conflict_once.discard(name)
            # Someone else changed it: a new version, another finalizer added.
            current["metadata"] = {**current["metadata"], "resourceVersion": "2"}
            current["metadata"]["finalizers"] = [*current["metadata"]["finalizers"], "other.io/keep"]
            raise KubeConflictError("changed", 409)
        assert rv == current["metadata"]["resourceVersion"]
        current["metadata"]["finalizers"] = finalizers
        self.calls.append(("finalizers", namespace, name, tuple(finalizers)))


async def test_the_operator_is_stopped_and_waited_for_before_anything_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = FakeKube([], pods=[["op-1"], ["op-1"], []])
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    waited = await release.stop_operator(
        kube,  # type: ignore[arg-type]
        "aftershock-system",
        "aftershock",
        "app=op",
        timeout=60,
        monotonic=lambda: 0.0,
    )
    assert waited == 1
    assert kube.calls[0] == ("scale", "Deployment", "aftershock-system", "aftershock", 0)
    assert [c[0] for c in kube.calls[1:]] == ["list pods"] * 3
    assert len(sleeps) == 2


async def test_a_pod_that_never_goes_fails_the_hook() -> None:
    kube = FakeKube([], pods=[["op-1"]])
    clock = iter([0.0, 100.0])
    with pytest.raises(TimeoutError, match="op-1"):
        await release.stop_operator(
            kube,  # type: ignore[arg-type]
            "ns",
            "aftershock",
            "app=op",
            timeout=60,
            monotonic=lambda: next(clock),
        )


async def test_only_the_operators_finalizer_goes_and_a_changed_campaign_is_read_again() -> None:
    kube = FakeKube(
        [
            _campaign("a", "running", [FINALIZER]),
            _campaign("a", "shared", ["other.io/keep", FINALIZER]),
            _campaign("b", "changed", [FINALIZER]),
            _campaign("b", "never-served", []),
        ],
        pods=[[]],
    )
    kube.conflict_once.add("changed")
    released = await release.release_campaigns(kube, ["a", "b"], FINALIZER)  # type: ignore[arg-type]

    assert released == ["a/running", "a/shared", "b/changed"]
    finals = {k: c["metadata"]["finalizers"] for k, c in kube.campaigns.items()}
    assert finals == {
        ("a", "running"): [],
        ("a", "shared"): ["other.io/keep"],
        ("b", "changed"): ["other.io/keep"],  # the other finalizer, added meanwhile, kept
        ("b", "never-served"): [],
    }
    assert [c for c in kube.calls if c[0] == "list campaigns"] == [
        ("list campaigns", "a"),
        ("list campaigns", "b"),
    ]
