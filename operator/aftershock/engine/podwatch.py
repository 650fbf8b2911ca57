"""One pod watch shared by the Campaigns: per namespace, or one for the whole cluster.

Each running Campaign used to list and watch its own selector's pods: at 100 Campaigns, 100
watch connections, each with its buffers in the operator and a watcher in the API server. Now
a `PodFeed` lists and watches every pod of a namespace (or, with `scope="cluster"`, of every
namespace) once, and hands each change to the `PodView`s of the Campaigns there; each view
keeps the pods its selector matches (`aftershock.engine.view`). `PodWatches` counts who uses
which feed: a feed starts with its first view and stops with its last, so an idle operator
holds no pods and no connection.

Why the scope is a choice (docs/adr/0009-shared-pod-watch.md): the cluster-wide feed is one
connection whatever the number of namespaces, but it needs `list`/`watch` on pods in every
namespace (the cluster-wide install's ClusterRole has it; the namespaced install has not)
and it holds, while any Campaign runs, every pod of the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Literal

from aftershock.engine.listwatch import ListWatch
from aftershock.engine.ports import Clock, PodApi
from aftershock.model import ManagedFields, PodState

if TYPE_CHECKING:
    from aftershock.engine.view import PodView

__all__ = ["PodFeed", "PodWatches", "Scope"]

#: "namespace": one feed per namespace with Campaigns; "cluster": one feed for all of them.
Scope = Literal["namespace", "cluster"]


class PodFeed:
    """Every pod of one namespace (or of all: `namespace=None`), fanned out to the views."""

    def __init__(
        self,
        api: PodApi,
        namespace: str | None,
        clock: Clock,
        *,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
    ) -> None:
        self.namespace = namespace
        self._clock = clock
        self._pods: dict[str, PodState] = {}
        self._views: dict[str, set[PodView]] = {}
        where = namespace if namespace is not None else "all namespaces"

        async def watch(version: str) -> AsyncIterator[tuple[str, PodState, str]]:
            # No label selector: the selectors are the views', matched here.
            async for event in api.watch_pods(namespace, "", version):
                yield event.type, event.pod, event.resource_version

        self._loop = ListWatch[PodState](
            what=f"pod watch in {where}",
            list_=lambda: api.list_pods(namespace, ""),
            watch=watch,
            on_list=self._listed,
            on_change=self._changed,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        self._task: asyncio.Task[None] | None = None
        self._name = f"podfeed-{where}"

    @property
    def synced(self) -> bool:
        return self._loop.synced

    @property
    def error(self) -> str | None:
        return self._loop.error

    @property
    def relists(self) -> int:
        return self._loop.relists

    @property
    def views(self) -> int:
        return sum(len(v) for v in self._views.values())

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop.run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def attach(self, view: PodView) -> None:
        """From now on `view` gets every change in its namespace; if the feed already has a
        picture, the view starts from it, as if it had listed itself."""
        self._views.setdefault(view.namespace, set()).add(view)
        if self.synced:
            mono, wall = self._clock.monotonic(), self._clock.wall()
            for pod in self._pods.values():
                if pod.namespace == view.namespace:
                    view.offer("ADDED", pod, mono, wall)
            view.mark_synced()

    def detach(self, view: PodView) -> None:
        views = self._views.get(view.namespace)
        if views is not None:
            views.discard(view)
            if not views:
                del self._views[view.namespace]

    def _dispatch(self, type_: str, pod: PodState) -> None:
        views = self._views.get(pod.namespace)
        if not views:
            return
        # One moment for every view: the same change was seen once, by one watch.
        mono, wall = self._clock.monotonic(), self._clock.wall()
        for view in list(views):
            view.offer(type_, pod, mono, wall)

    def _changed(self, type_: str, pod: PodState) -> None:
        if type_ == "DELETED":
            self._pods.pop(pod.uid, None)
        else:
            self._pods[pod.uid] = pod
        self._dispatch(type_, pod)
        if isinstance(pod.managed, ManagedFields):
            # After the views saw it: decoded where a Campaign of the namespace reads managedFields
            # (its next change diffs against them), else released, so the picture holds no raw
            # JSON (ADR 0025).
            pod.managed.settle(self._reads_managed(pod.namespace))

    def _reads_managed(self, namespace: str) -> bool:
        return any(view.reads_managed_fields for view in self._views.get(namespace, ()))

    def _unknown_where_read(self, pod: PodState) -> bool:
        """A pod kept with its managedFields released, in a namespace where they are read now:
        a relist cannot tell whether they changed while the watch was broken, so it passes the
        listed pod on (the reader then goes by the entries' own times)."""
        managed = pod.managed
        return isinstance(managed, ManagedFields) and not managed.known and self._reads_managed(pod.namespace)

    def _listed(self, pods: Sequence[PodState]) -> None:
        """A full list: what differs from the picture goes out as synthetic events, so no view
        misses that a pod disappeared while the watch was broken (only that moment's precision
        suffers)."""
        fresh = {p.uid: p for p in pods}
        for uid, old in list(self._pods.items()):
            if uid not in fresh:
                self._changed("DELETED", old)
        for uid, pod in fresh.items():
            known = self._pods.get(uid)
            if known is None:
                self._changed("ADDED", pod)
            elif known != pod or self._unknown_where_read(known):
                self._changed("MODIFIED", pod)
        for views in list(self._views.values()):
            for view in list(views):
                view.mark_synced()


class PodWatches:
    """The operator's pod feeds, one per namespace (or one in all), counted by their views."""

    def __init__(
        self,
        api: PodApi,
        clock: Clock,
        *,
        scope: Scope = "namespace",
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
    ) -> None:
        self._api = api
        self._clock = clock
        self.scope: Scope = scope
        self._backoff = (backoff_initial, backoff_max)
        self._feeds: dict[str | None, PodFeed] = {}

    def feeds(self) -> list[PodFeed]:
        """The feeds open now (each one list and one watch connection)."""
        return list(self._feeds.values())

    @contextlib.asynccontextmanager
    async def share(self, view: PodView) -> AsyncIterator[PodFeed]:
        """The feed for `view`'s namespace, started if it is the first to need it, attached
        to `view` for the block; stopped when its last view leaves."""
        key = None if self.scope == "cluster" else view.namespace
        feed = self._feeds.get(key)
        if feed is None:
            initial, maximum = self._backoff
            feed = PodFeed(self._api, key, self._clock, backoff_initial=initial, backoff_max=maximum)
            self._feeds[key] = feed
            feed.start()
        feed.attach(view)
        try:
            yield feed
        finally:
            feed.detach(view)
            if feed.views == 0 and self._feeds.get(key) is feed:
                del self._feeds[key]
                await feed.stop()
