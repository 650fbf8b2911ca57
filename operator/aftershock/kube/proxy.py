"""Which proxy, if any, carries the operator's requests to the API server (ADR 0024).

As kubectl and client-go decide it, so that an operator beside kubectl reaches the API server
the same way: a ``proxy-url`` in the kubeconfig's cluster wins; else ``HTTPS_PROXY`` (for an
``https`` server; ``HTTP_PROXY`` for ``http``), either case, unless ``NO_PROXY`` names the
server. ``NO_PROXY`` is read as Go's ``net/http/httpproxy`` reads it: ``*`` (everything), an IP
address, a CIDR range (``10.96.0.0/12``: Python's own reading of it ignores ranges, and a
cluster's Service range is the usual entry), a domain (itself and every name under it; a
leading dot: only the names under it), each optionally with ``:port``. A loopback server
(``localhost``, ``127.0.0.0/8``, ``::1``) is never proxied.

Only the API server. The subjects (PD, etcd), the alert receiver and the metrics server never
go through a proxy: their clients are made with ``trust_env=False``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import TypeVar
from urllib.parse import urlsplit

from kubernetes_asyncio import client as k8s

ApiClientT = TypeVar("ApiClientT", bound=k8s.ApiClient)


def _env(environ: Mapping[str, str], name: str) -> str:
    """An environment variable in either case (the upper case first, as Go reads them)."""
    return environ.get(name.upper()) or environ.get(name.lower()) or ""


def _host_port(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    scheme = parts.scheme or "https"
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return host, port, scheme


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _split_port(entry: str) -> tuple[str, int]:
    """``name:port`` or ``[v6]:port`` -> (name, port); 0: any port."""
    if entry.startswith("[") and "]" in entry:
        name, _, rest = entry[1:].partition("]")
        return name, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else 0
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        return name, int(port) if port.isdigit() else 0
    return entry, 0


def _entry_names(entry: str, host: str, port: int, ip: Address | None) -> bool:
    """Whether one NO_PROXY entry names `host:port`."""
    if entry == "*":
        return True
    if "/" in entry:
        try:
            return ip is not None and ip in ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
    name, want_port = _split_port(entry)
    if want_port and want_port != port:
        return False
    try:
        named: Address | None = ipaddress.ip_address(name)
    except ValueError:
        named = None
    if named is not None:  # an address names that address only
        return ip == named
    name = name.removeprefix("*")
    if name.startswith("."):  # the names under it only
        return host.endswith(name)
    return host == name or host.endswith("." + name)


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether `NO_PROXY` names `host:port` (Go's httpproxy rules)."""
    try:
        ip: Address | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    entries = (e.strip().lower() for e in no_proxy.split(","))
    return any(_entry_names(e, host, port, ip) for e in entries if e)


def api_server_proxy(server: str, environ: Mapping[str, str], configured: str | None = None) -> str | None:
    """The proxy URL for requests to `server` (None: straight to it). `configured`: the
    kubeconfig cluster's ``proxy-url``, which wins over the environment as in kubectl."""
    if configured:
        return configured
    host, port, scheme = _host_port(server)
    if not host or _is_loopback(host):
        return None
    proxy = _env(environ, "https_proxy" if scheme == "https" else "http_proxy")
    if not proxy or _bypassed(host, port, _env(environ, "no_proxy")):
        return None
    # A proxy given without a scheme is an http one (as Go reads it).
    return proxy if "://" in proxy else "http://" + proxy


def without_env_proxy(api: ApiClientT) -> ApiClientT:
    """`api`, its HTTP session no longer reading proxies (nor ~/.netrc) from the environment:
    kubernetes_asyncio makes it with aiohttp's ``trust_env=True``, whose reading of NO_PROXY
    ignores CIDR ranges. The proxy is decided once (`api_server_proxy`) and set on the
    configuration, which the client passes with every request."""
    # aiohttp has no public setter; tests/unit/test_proxy.py fails if this stops working.
    api.rest_client.pool_manager._trust_env = False
    return api
