"""The safety rules for the URLs a Campaign names (TiKV's ``pdURL``, etcd's ``endpoints``).

Rule: no I/O here. The operator connects to these URLs from inside the cluster with its own
identity, so a Campaign must not be able to point it anywhere but a Service of its own
namespace (or loopback, behind an explicit operator flag, for development and tests).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

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


def check_endpoint_namespace(url: str, namespace: str, path: str = "subject.pdURL") -> None:
    """A subject's Service name must resolve inside the Campaign's own namespace."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
        return  # IP literals were already judged by check_pd_url
    except ValueError:
        pass
    if host == "localhost":
        return
    labels = host.split(".")
    if len(labels) == 1:
        return  # a bare Service name; the TiKV probe qualifies it with the Campaign's namespace
    # Only <svc>.<ns>, <svc>.<ns>.svc and <svc>.<ns>.svc.cluster.local name a Service in the
    # namespace; anything longer may be an outside DNS name that merely starts like one.
    in_namespace = labels[1] == namespace and (
        len(labels) == 2
        or (len(labels) == 3 and labels[2] == "svc")
        or (len(labels) == 5 and labels[2:] == ["svc", "cluster", "local"])
    )
    if not in_namespace:
        raise SpecError(
            path,
            f"{host} is outside the Campaign's namespace {namespace!r}; refused "
            f"(name a Service as <service>, <service>.{namespace}, <service>.{namespace}.svc or "
            f"<service>.{namespace}.svc.cluster.local)",
        )


#: The names this rule had when PD was the only subject with an API.
check_pd_url = check_endpoint_url
check_pd_namespace = check_endpoint_namespace
