"""Which proxy carries the operator's requests (ADR 0024): the API server's as kubectl decides it,
the subjects' never. Real sockets on 127.0.0.1 only: an API server stand-in, a "proxy" that
answers in the API server's place (it never forwards anything), and a closed port."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kopf
import pytest
from kubernetes_asyncio.config import kube_config
from tests.pdstub import PdStandIn

from aftershock import handlers
from aftershock.kube import Kube
from aftershock.kube.proxy import api_server_proxy
from aftershock.subjects.etcd import EtcdClient
from aftershock.subjects.pd import PdClient

PROXY = "http://proxy.corp:3128"


@pytest.mark.parametrize(
    ("server", "env", "expected"),
    [
        # HTTPS_PROXY for an https server, HTTP_PROXY for http; either case; no scheme: http.
        ("https://10.96.0.1:443", {"HTTPS_PROXY": PROXY}, PROXY),
        ("https://10.96.0.1:443", {"https_proxy": PROXY}, PROXY),
        ("https://10.96.0.1:443", {"HTTP_PROXY": PROXY}, None),
        ("http://api.corp:8080", {"HTTP_PROXY": PROXY}, PROXY),
        ("https://api.corp", {"HTTPS_PROXY": "proxy.corp:3128"}, PROXY),
        # NO_PROXY as Go reads it: a CIDR range (the Service range in a pod), ...
        ("https://10.96.0.1:443", {"HTTPS_PROXY": PROXY, "NO_PROXY": "10.96.0.0/12"}, None),
        ("https://10.112.0.1:443", {"HTTPS_PROXY": PROXY, "NO_PROXY": "10.96.0.0/12"}, PROXY),
        # ... an IP, with or without a port, ...
        ("https://10.96.0.1", {"HTTPS_PROXY": PROXY, "NO_PROXY": "10.96.0.1"}, None),
        ("https://10.96.0.1", {"HTTPS_PROXY": PROXY, "NO_PROXY": "10.96.0.1:6443"}, PROXY),
        ("https://10.96.0.1:6443", {"HTTPS_PROXY": PROXY, "NO_PROXY": "10.96.0.1:6443"}, None),
        ("https://[fd00::1]:443", {"HTTPS_PROXY": PROXY, "NO_PROXY": "fd00::/64"}, None),
        # ... a domain (itself and the names under it), a leading dot or *. (under it only), ...
        ("https://kubernetes.default.svc", {"HTTPS_PROXY": PROXY, "NO_PROXY": "svc"}, None),
        ("https://api.corp", {"HTTPS_PROXY": PROXY, "NO_PROXY": "x, api.corp"}, None),
        ("https://api.corp", {"HTTPS_PROXY": PROXY, "NO_PROXY": ".api.corp"}, PROXY),
        ("https://k8s.api.corp", {"HTTPS_PROXY": PROXY, "NO_PROXY": "*.api.corp"}, None),
        ("https://notapi.corp", {"HTTPS_PROXY": PROXY, "NO_PROXY": "api.corp"}, PROXY),
        # ... and * for everything.
        ("https://api.corp", {"HTTPS_PROXY": PROXY, "no_proxy": "*"}, None),
        # A loopback server is never proxied.
        ("https://127.0.0.1:6443", {"HTTPS_PROXY": PROXY}, None),
        ("https://localhost:6443", {"HTTPS_PROXY": PROXY}, None),
        ("https://[::1]:6443", {"HTTPS_PROXY": PROXY}, None),
    ],
)
def test_the_api_server_proxy_is_decided_as_kubectl_decides_it(
    server: str, env: dict[str, str], expected: str | None
) -> None:
    assert api_server_proxy(server, env) == expected


def test_the_kubeconfig_proxy_url_wins_over_the_environment() -> None:
    configured = "http://kubeconfig-proxy:3128"
    env = {"HTTPS_PROXY": PROXY, "NO_PROXY": "*"}
    assert api_server_proxy("https://api.corp", env, configured) == configured


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Answering(BaseHTTPRequestHandler):
    """Answers every GET with an empty pod list (an API server), every POST with a member's
    status (etcd), and keeps the request lines it got."""

    seen: list[str]

    def do_GET(self) -> None:
        self._answer({"kind": "PodList", "metadata": {"resourceVersion": "7"}, "items": []})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer({"header": {"member_id": "11"}, "leader": "11", "raftTerm": "3"})

    def _answer(self, answer: dict[str, Any]) -> None:
        self.seen.append(self.requestline)
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_Answering,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def _kubeconfig(tmp_path: Path, server: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return str(path)


def _proxy_env(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


async def test_a_proxy_in_the_environment_does_not_carry_requests_to_a_loopback_api_server(
    answering: tuple[str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Set for something else: a closed port, which would refuse every request sent through it.
    _proxy_env(monkeypatch, f"http://127.0.0.1:{_closed_port()}")
    url, seen = answering
    kube = await Kube.connect(_kubeconfig(tmp_path, url))
    try:
        pods, version = await kube.list_pods("db", "app=x")
    finally:
        await kube.close()
    assert (pods, version) == ([], "7")
    assert seen[0].startswith("GET /api/v1/namespaces/db/pods?"), seen


async def test_the_environment_proxy_carries_requests_to_an_api_server_it_covers(
    answering: tuple[str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The "proxy" is the stand-in on 127.0.0.1: it answers in the API server's place, so a
    # request that went through it arrives with the server's absolute URL. Nothing resolves or
    # reaches api.aftershock.test itself.
    url, seen = answering
    _proxy_env(monkeypatch, url)
    kube = await Kube.connect(_kubeconfig(tmp_path, "http://api.aftershock.test:8080"))
    try:
        pods, _ = await kube.list_pods("db", "app=x")
    finally:
        await kube.close()
    assert pods == []
    assert seen[0].startswith("GET http://api.aftershock.test:8080/api/v1/namespaces/db/pods?"), seen


async def test_kopfs_login_takes_the_same_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # kubernetes_asyncio read $KUBECONFIG when it was imported: its default path is set here.
    kubeconfig = _kubeconfig(tmp_path, "https://api.aftershock.test:6443")
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", kubeconfig)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    _proxy_env(monkeypatch, PROXY)
    settings = kopf.OperatorSettings()
    info = await handlers.login_through_api_server_proxy(logger=logging.getLogger("test"), settings=settings)
    assert info is not None
    assert (info.server, info.proxy_url, info.trust_env) == ("https://api.aftershock.test:6443", PROXY, False)
    monkeypatch.setenv("NO_PROXY", ".aftershock.test")
    info = await handlers.login_through_api_server_proxy(logger=logging.getLogger("test"), settings=settings)
    assert info is not None
    assert (info.proxy_url, info.trust_env) == (None, False)


async def test_the_subjects_never_go_through_a_proxy(
    answering: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _proxy_env(monkeypatch, f"http://127.0.0.1:{_closed_port()}")
    with PdStandIn(namespace="db") as stand_in:
        stand_in.put_store(1, address="tikv-0.tikv-peer.db.svc:20160", status_address="", start_timestamp=1)
        pd = PdClient(stand_in.base_url, timeout=2)
        try:
            assert [s.id for s in await pd.stores()] == [1]
        finally:
            await pd.aclose()
    url, seen = answering
    etcd = EtcdClient([url], timeout=2)
    try:
        status = await etcd._post(url, "/v3/maintenance/status", {})
    finally:
        await etcd.aclose()
    assert status["raftTerm"] == "3"
    assert seen == ["POST /v3/maintenance/status HTTP/1.1"]
