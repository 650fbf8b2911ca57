"""How the operator lists (issue 21): in pages, from the API server's watch cache, never the
whole cluster in one request read from etcd. The generated client's call is replaced by one that
records what it was asked and answers as the API server does (`continue` tokens)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from aftershock.engine.listwatch import ListWatch
from aftershock.kube import Kube
from aftershock.kube.client import LIST_PAGE


class _Response:
    def __init__(self, body: dict[str, Any]) -> None:
        self.status = 200
        self._body = json.dumps(body).encode()

    async def __aenter__(self) -> _Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def read(self) -> bytes:
        return self._body


def _pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "db", "uid": f"uid-{name}", "labels": {"app": "x"}},
        "spec": {},
        "status": {"phase": "Running"},
    }


async def test_pods_are_listed_in_pages_from_the_watch_cache() -> None:
    pages = {
        None: ({"resourceVersion": "100", "continue": "t1"}, ["a", "b"]),
        "t1": ({"resourceVersion": "100", "continue": "t2"}, ["c"]),
        "t2": ({"resourceVersion": "100"}, ["d"]),
    }
    asked: list[dict[str, Any]] = []

    async def list_namespaced_pod(namespace: str, **kwargs: Any) -> _Response:
        asked.append({"namespace": namespace, **{k: v for k, v in kwargs.items() if not k.startswith("_r")}})
        meta, names = pages[kwargs.get("_continue")]
        return _Response({"metadata": meta, "items": [_pod(n) for n in names]})

    api = k8s.ApiClient()
    kube = Kube(api)
    try:
        kube._core.list_namespaced_pod = list_namespaced_pod
        pods, version = await kube.list_pods("db", "app=x")
    finally:
        await kube.close()

    assert [p.name for p in pods] == ["a", "b", "c", "d"]
    assert version == "100"
    assert kube.requests["list"] == 3
    first, *rest = asked
    # The first page from the cache: any state at least as new as it holds, not a quorum read.
    assert first == {
        "namespace": "db",
        "label_selector": "app=x",
        "limit": LIST_PAGE,
        "resource_version": "0",
        "resource_version_match": "NotOlderThan",
        "_preload_content": False,
    }
    # The next pages follow the token alone (it carries the version; the server refuses both).
    assert [(r.get("_continue"), "resource_version" in r, r["limit"]) for r in rest] == [
        ("t1", False, LIST_PAGE),
        ("t2", False, LIST_PAGE),
    ]


def test_tls_connections_get_a_bounded_read_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio gives each TLS connection a 256 KiB read buffer; every watch is a connection of
    its own (kopf's per namespace, the pod watch per namespace): 26 of 37 MiB measured idle over
    100 namespaces (bench/idle_memory.py). `aftershock run` bounds it, for every connection."""
    import asyncio
    import asyncio.sslproto
    import ssl

    from aftershock.kube.client import TLS_READ_BUFFER, bound_tls_read_buffers

    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size", asyncio.sslproto.SSLProtocol.max_size)
    assert asyncio.sslproto.SSLProtocol.max_size == 256 * 1024  # what asyncio would allocate
    bound_tls_read_buffers()
    loop = asyncio.new_event_loop()
    try:
        proto = asyncio.sslproto.SSLProtocol(
            loop, asyncio.Protocol(), ssl.create_default_context(), loop.create_future(), server_hostname="x"
        )
        assert len(proto._ssl_buffer) == TLS_READ_BUFFER == 64 * 1024  # type: ignore[attr-defined]
    finally:
        loop.close()


class _Stream(_Response):
    """A watch's response: one JSON event per line, then the server ends the watch."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        super().__init__({})
        self.content = self._lines(events)

    @staticmethod
    async def _lines(events: list[dict[str, Any]]) -> Any:
        for event in events:
            yield json.dumps(event).encode() + b"\n"


async def test_pod_watches_take_bookmarks_and_resume_from_the_last_one() -> None:
    """A quiet namespace's watch ends every few minutes; without bookmarks it resumes from the
    list's version, which the API server may have compacted away by then (410: a whole list
    again, per namespace). With them it resumes from the version the server last vouched for."""
    asked: list[dict[str, Any]] = []
    second = asyncio.Event()

    async def list_namespaced_pod(namespace: str, **kwargs: Any) -> _Response:
        if not kwargs.get("watch"):
            return _Response({"metadata": {"resourceVersion": "100"}, "items": [_pod("a")]})
        asked.append(kwargs)
        if len(asked) == 2:
            second.set()
            await asyncio.sleep(3600)
        bookmark = {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "150"}}
        return _Stream([{"type": "BOOKMARK", "object": bookmark}])

    kube = Kube(k8s.ApiClient())
    changes: list[tuple[str, Any]] = []
    try:
        kube._core.list_namespaced_pod = list_namespaced_pod
        kube._watch_core.list_namespaced_pod = list_namespaced_pod

        async def watch(rv: str) -> Any:
            async for event in kube.watch_pods("db", "app=x", rv):
                yield event.type, event.pod, event.resource_version

        loop = ListWatch(
            "pods in db",
            lambda: kube.list_pods("db", "app=x"),
            watch,
            on_list=lambda pods: None,
            on_change=lambda etype, pod: changes.append((etype, pod)),
        )
        task = asyncio.create_task(loop.run())
        await asyncio.wait_for(second.wait(), 10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await kube.close()
    assert [a["allow_watch_bookmarks"] for a in asked] == [True, True]
    assert [a["resource_version"] for a in asked] == ["100", "150"]
    assert changes == []  # a bookmark changes no pod
    assert loop.relists == 0


async def test_a_consistent_list_names_no_version() -> None:
    """`consistent`: the server answers at least as new as every write before the request (a
    baseline trial must see the remediator pod a restore created a moment ago)."""
    asked: list[dict[str, Any]] = []

    async def list_namespaced_pod(namespace: str, **kwargs: Any) -> _Response:
        asked.append({k: v for k, v in kwargs.items() if not k.startswith("_")})
        return _Response({"metadata": {"resourceVersion": "7"}, "items": [_pod("a")]})

    kube = Kube(k8s.ApiClient())
    try:
        kube._core.list_namespaced_pod = list_namespaced_pod
        pods, version = await kube.list_pods("db", "app=x", consistent=True)
    finally:
        await kube.close()
    assert ([p.name for p in pods], version) == (["a"], "7")
    assert asked == [{"label_selector": "app=x", "limit": LIST_PAGE}]
