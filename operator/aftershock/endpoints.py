"""The safety rules for the URLs a Campaign names (TiKV's ``pdURL``, etcd's ``endpoints``).

Rule: no I/O here. The operator connects to these URLs from inside the cluster with its own
identity, so a Campaign must not be able to point it anywhere but a Service of its own
namespace (or loopback, behind an explicit operator flag, for development and tests), and the
name is always qualified with that namespace before it is resolved. The Services a name gives
are read through the API (`resolve_service_name` judges what the API server said).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from aftershock.errors import SpecError

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def check_endpoint_url(url: str, path: str = "subject.pdURL", *, allow_loopback: bool = False) -> str:
    """The rule for a subject's API URL (TiKV's pdURL, etcd's endpoints), enforced before any
    connection is made.

    Allowed: ``http(s)://`` to a DNS name (a Service, normally ``pd`` in the Campaign's own
    namespace; a name with dots must stay inside that namespace, which `check_pd_namespace`
    enforces once the namespace is known). Refused: other schemes, credentials in the URL,
    IP literals (they bypass the namespace rule), link-local and cloud metadata addresses.
    Loopback IPs only when the operator runs with ``--allow-loopback-endpoints`` (formerly
    ``--allow-loopback-pd``): local development and tests, where the stand-ins listen on 127.0.0.1.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https"):
        raise SpecError(path, f"scheme must be http or https, got {parsed.scheme!r}")
    if parsed.username or parsed.password:
        raise SpecError(path, "must not carry credentials")
    if parsed.query or parsed.fragment:
        # PD's API takes none, and a token there would be published with the Campaign's spec.
        raise SpecError(path, "must not carry a query string or fragment")
    host = parsed.hostname
    if not host:
        raise SpecError(path, "has no host")
    try:
        _ = parsed.port
    except ValueError:
        raise SpecError(path, "has an invalid port") from None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        if ip.is_loopback and allow_loopback:
            return url
        if ip.is_link_local:
            raise SpecError(path, f"{host} is link-local (cloud metadata lives there); refused")
        raise SpecError(path, f"IP addresses are refused ({host}); name the Service instead")
    if host in ("metadata", "metadata.google.internal") or host.endswith(".internal"):
        raise SpecError(path, f"{host} is a metadata endpoint; refused")
    if host == "localhost" or host.endswith(".localhost"):
        if allow_loopback:
            return url
        raise SpecError(
            path,
            f"{host} is loopback; refused (the operator was not started with --allow-loopback-endpoints)",
        )
    # Resolvers read "2852039166", "0xa9fea9fe" or "0251.0376.0251.0376" as IPv4 addresses
    # (169.254.169.254 here) although ipaddress does not: a name whose last label is numeric
    # is no DNS name, so refuse it rather than guess what it resolves to.
    if re.fullmatch(r"(0x[0-9a-f]+|[0-9]+)", host.rsplit(".", 1)[-1], flags=re.IGNORECASE):
        raise SpecError(
            path, f"{host!r} reads as an IP address in another notation; name the Service instead"
        )
    if not all(_DNS_LABEL.match(label) for label in host.split(".")):
        raise SpecError(path, f"{host!r} is not a valid DNS name")
    return url


@dataclass(frozen=True)
class ServiceName:
    """What a subject URL's host names in the Campaign's namespace: a Service, or one member
    (`pod`, its hostname) of a headless Service, as a StatefulSet's pods are named."""

    service: str
    pod: str | None = None

    def host(self, namespace: str) -> str:
        """The name qualified to the namespace, as the operator connects to it. Never left bare:
        a bare or two-label name would resolve in the *operator's* namespace first (the
        resolver's search path), or in a namespace named like its second label."""
        member = f"{self.pod}." if self.pod else ""
        return f"{member}{self.service}.{namespace}.svc"

    def describe(self, namespace: str) -> str:
        if self.pod:
            return f"pod {self.pod!r} of headless Service {self.service!r} in namespace {namespace!r}"
        return f"Service {self.service!r} in namespace {namespace!r}"


def service_names(url: str, namespace: str, path: str = "subject.pdURL") -> tuple[ServiceName, ...]:
    """What `url`'s host can name inside `namespace`, the likelier first; empty for loopback
    (judged by `check_endpoint_url`). Raises `SpecError` when it names nothing there.

    Accepted: ``<service>[.<ns>[.svc[.cluster.local]]]`` and, for a member of a headless
    Service, ``<pod>.<service>[.<ns>[.svc[.cluster.local]]]``, with ``<ns>`` the Campaign's.
    ``a.b`` is read as Service ``a`` when ``b`` is the namespace, and as pod ``a`` of Service
    ``b`` otherwise (or too, when no Service ``a`` exists: `resolve_service_name` asks the API).
    Anything longer or elsewhere may be an outside DNS name that merely starts like one.
    """
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
        return ()  # IP literals were already judged by check_endpoint_url
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):
        return ()
    labels = host.split(".")
    # Strip what only repeats the namespace: ".svc.cluster.local" or ".svc" after it.
    if labels[-3:] == ["svc", "cluster", "local"]:
        labels = labels[:-3]
        qualified = True
    elif labels[-1:] == ["svc"]:
        labels = labels[:-1]
        qualified = True
    else:
        qualified = False
    found: list[ServiceName] = []
    if qualified:
        # <svc>.<ns> or <pod>.<svc>.<ns>, then .svc[.cluster.local]
        if len(labels) == 2 and labels[1] == namespace:
            found.append(ServiceName(labels[0]))
        elif len(labels) == 3 and labels[2] == namespace:
            found.append(ServiceName(labels[1], labels[0]))
    elif len(labels) == 1:
        found.append(ServiceName(labels[0]))
    elif len(labels) == 2:
        if labels[1] == namespace:
            found.append(ServiceName(labels[0]))
        found.append(ServiceName(labels[1], labels[0]))
    elif len(labels) == 3 and labels[2] == namespace:
        found.append(ServiceName(labels[1], labels[0]))
    if not found:
        raise SpecError(
            path,
            f"{host} is outside the Campaign's namespace {namespace!r}; refused "
            f"(name a Service as <service>, <service>.{namespace}, <service>.{namespace}.svc or "
            f"<service>.{namespace}.svc.cluster.local, or a member of a headless Service as "
            f"<pod>.<service>, <pod>.<service>.{namespace}[.svc[.cluster.local]])",
        )
    return tuple(found)


def check_endpoint_namespace(url: str, namespace: str, path: str = "subject.pdURL") -> None:
    """A subject's Service name must resolve inside the Campaign's own namespace."""
    service_names(url, namespace, path)


@dataclass(frozen=True)
class ServiceInfo:
    """What the operator reads of a Service before connecting to a name it gives."""

    type: str  # ClusterIP, NodePort, LoadBalancer, ExternalName
    headless: bool  # clusterIP None: DNS names each ready pod <hostname>.<service>


def resolve_service_name(
    url: str,
    namespace: str,
    services: Mapping[str, ServiceInfo | None],
    path: str = "subject.pdURL",
) -> str:
    """`url` with its host qualified to the Service it names in `namespace`, judged by what the
    API server says of that Service (`services`: each name `service_names` gives, None when
    there is no such Service). Raises `SpecError` for an ExternalName Service (a CNAME to any
    name at all, outside the cluster included), for a member name under a Service that is not
    headless (no such DNS record), and when no Service of those names exists."""
    names = service_names(url, namespace, path)
    if not names:
        return url
    for name in names:
        info = services.get(name.service)
        if info is None:
            continue
        if info.type == "ExternalName":
            raise SpecError(
                path,
                f"Service {name.service!r} in namespace {namespace!r} is of type ExternalName (an alias "
                "for any DNS name, outside the cluster too); refused: name a Service that selects the "
                "subject's pods",
            )
        if name.pod is not None and not info.headless:
            raise SpecError(
                path,
                f"{name.describe(namespace)}: Service {name.service!r} is not headless (clusterIP: None), "
                "so it gives its pods no DNS names",
            )
        parts = urllib.parse.urlsplit(url)
        netloc = name.host(namespace) + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    wanted = " or ".join(n.describe(namespace) for n in names)
    raise SpecError(path, f"no Service for it: looked for {wanted}")


#: The names this rule had when PD was the only subject with an API.
check_pd_url = check_endpoint_url
check_pd_namespace = check_endpoint_namespace
