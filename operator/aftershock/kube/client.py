"""A thin, typed, async wrapper over the few API calls aftershock makes.

Payloads are read as plain JSON (``_preload_content=False``) and decoded once into model
values: the generated model classes cost more CPU than the operator's whole trial loop.

Errors are mapped to one hierarchy (`aftershock.kube.errors`) so callers can decide by kind,
not by status code; payloads are decoded by `aftershock.kube.decode`.
"""

from __future__ import annotations

import collections
import copy
import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from aftershock.endpoints import ServiceInfo
from aftershock.kube import decode, errors
from aftershock.kube.access import _Access
from aftershock.kube.ephemerals import _Ephemerals
from aftershock.kube.errors import (
    KubeError,
    KubeGoneError,
    KubeNotFoundError,
    KubeUnavailableError,
)
from aftershock.kube.execs import _Execs
from aftershock.kube.nodes import _Nodes
from aftershock.kube.proxy import api_server_proxy, without_env_proxy
from aftershock.kube.volumes import _Volumes
from aftershock.model import GROUP, PLURAL, VERSION, ClusterEvent, PodState

FIELD_MANAGER = "aftershock"

#: Items per page of a list: a few hundred KB of pods per request, whatever the cluster's size.
LIST_PAGE = 500

#: Read buffer of each TLS connection (asyncio's default: 256 KiB, allocated per connection).
TLS_READ_BUFFER = 64 * 1024


def bound_tls_read_buffers(size: int = TLS_READ_BUFFER) -> None:
    """Give every TLS connection this process opens a read buffer of `size` bytes.

    asyncio allocates 256 KiB per TLS connection up front (`SSLProtocol.max_size`), and every
    watch is a connection of its own: kopf's Campaign watch per namespace, a pod watch per
    namespace with running Campaigns. tracemalloc on an idle operator serving 100 namespaces
    (bench/idle_memory.py) found 26 of the 37 MiB over one namespace in those buffers. A watch
    reads small events; 64 KiB still takes a page of a list in a handful of reads. Process-wide,
    so call it once, before the first connection (`aftershock run` does)."""
    import asyncio.sslproto

    asyncio.sslproto.SSLProtocol.max_size = size


def api_client(configuration: k8s.Configuration) -> k8s.ApiClient:
    return without_env_proxy(k8s.ApiClient(configuration))


@dataclass(frozen=True)
class PodEvent:
    type: str  # ADDED, MODIFIED, DELETED, or SYNC (a re-list replaced the whole picture)
    pod: PodState
    resource_version: str


@dataclass(frozen=True)
class LeaseRecord:
    holder: str | None
    renew_time: float | None
    duration_seconds: int
    resource_version: str


class Kube(_Volumes, _Access, _Execs, _Nodes, _Ephemerals):
    """The API calls aftershock makes, typed. One instance per operator process."""

    def __init__(self, api: k8s.ApiClient, watch_api: k8s.ApiClient | None = None) -> None:
        self._api = api
        self._watch_api = watch_api or api
        self._core = k8s.CoreV1Api(api)
        self._watch_core = k8s.CoreV1Api(self._watch_api)
        self._custom = k8s.CustomObjectsApi(api)
        self._coordination = k8s.CoordinationV1Api(api)
        self._apps = k8s.AppsV1Api(api)
        self._authorization = k8s.AuthorizationV1Api(api)
        self.requests = collections.Counter()

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> Kube:
        """In-cluster credentials when running in a pod, else the kubeconfig (``$KUBECONFIG``)."""
        configuration = k8s.Configuration()
        if (
            kubeconfig is None
            and os.environ.get("KUBERNETES_SERVICE_HOST")
            and not os.environ.get("KUBECONFIG")
        ):
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            await k8s_config.load_kube_config(
                config_file=kubeconfig or os.environ.get("KUBECONFIG"),
                client_configuration=configuration,
                persist_config=False,
            )
        # The environment's proxy settings as kubectl reads them, decided once here (ADR 0024).
        configuration.proxy = api_server_proxy(configuration.host, os.environ, configuration.proxy)
        # Every running Campaign holds one pod watch open for its whole life. Watches get a pool
        # of their own without a cap, so that requests (kills, status patches, leases) never
        # wait behind them: with one shared pool of the library's default 100 connections,
        # 100 Campaigns' watches took every connection and every request timed out.
        watch_configuration = copy.copy(configuration)
        watch_configuration.connection_pool_maxsize = 0  # aiohttp: 0 is no limit
        return cls(api_client(configuration), api_client(watch_configuration))

    async def close(self) -> None:
        await self.close_execs()
        await self._api.close()
        if self._watch_api is not self._api:
            await self._watch_api.close()

    # --- pods ----------------------------------------------------------------------------

    async def list_pods(
        self, namespace: str | None, selector: str, *, consistent: bool = False
    ) -> tuple[list[PodState], str]:
        """The pods of `namespace` (None: of every namespace) that `selector` matches, in pages
        from the API server's watch cache (`_list_pages`), each page decoded as it comes.
        `consistent`: at least as new as every write before the call (a list with no
        resourceVersion), for a caller that must not miss a pod created a moment ago."""
        pods: list[PodState] = []
        if namespace is None:
            pages = self._list_pages(
                "list pods in all namespaces",
                self._core.list_pod_for_all_namespaces,
                consistent=consistent,
                label_selector=selector,
            )
        else:
            pages = self._list_pages(
                f"list pods in {namespace}",
                self._core.list_namespaced_pod,
                namespace,
                consistent=consistent,
                label_selector=selector,
            )
        version = ""
        async for items, page_version in pages:
            pods.extend(decode.decode_pod(item) for item in items)
            version = page_version
        return pods, version

    async def _list_pages(
        self, what: str, call: Any, *args: Any, consistent: bool = False, **kwargs: Any
    ) -> AsyncIterator[tuple[list[Mapping[str, Any]], str]]:
        """A list in pages of `LIST_PAGE` items, (items, the list's resourceVersion) per page.

        The first page asks (unless `consistent`: no version, as new as every write before it)
        for ``resourceVersion=0`` with ``resourceVersionMatch=NotOlderThan``:
        any state at least as new as the server's cache, served from the API server's watch
        cache instead of a quorum read of etcd; the watch that follows from the list's version
        catches up from there, as an informer does. The next pages follow the ``continue``
        token (which carries the version). A server that cannot page from its cache answers
        the whole list at once: one page. One page is one request, so no single request reads
        a cluster's every pod within the request timeout."""
        token: str | None = None
        while True:
            paging: dict[str, Any] = {"limit": LIST_PAGE}
            if token:
                paging["_continue"] = token
            elif not consistent:
                paging.update(resource_version="0", resource_version_match="NotOlderThan")
            data = await self._json("list", what, call, *args, **paging, **kwargs)
            meta = data.get("metadata") or {}
            yield list(data.get("items") or []), str(meta.get("resourceVersion", ""))
            token = meta.get("continue")
            if not token:
                return

    async def watch_pods(
        self, namespace: str | None, selector: str, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncIterator[PodEvent]:
        """Stream pod events after `resource_version` until the server ends the watch.

        Raises `KubeGoneError` when the version is too old (the caller lists again) and
        `KubeUnavailableError` when the stream breaks.
        """
        stream = self._watch(
            self._watch_core.list_pod_for_all_namespaces
            if namespace is None
            else self._watch_core.list_namespaced_pod,
            namespace,
            f"watch pods in {namespace or 'all namespaces'}",
            resource_version,
            timeout_seconds,
            label_selector=selector,
        )
        async for etype, obj, rv in stream:
            yield PodEvent(etype, decode.decode_pod(obj), rv)

    async def list_events(self, namespace: str) -> tuple[list[ClusterEvent], str]:
        """The namespace's Events now, and the version to watch from (paged, from the cache)."""
        events: list[ClusterEvent] = []
        version = ""
        pages = self._list_pages(f"list events in {namespace}", self._core.list_namespaced_event, namespace)
        async for items, page_version in pages:
            events.extend(decode.decode_event(item) for item in items)
            version = page_version
        return events, version

    async def watch_events(
        self, namespace: str, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncIterator[tuple[str, ClusterEvent, str]]:
        """Stream the namespace's Events (type, event, resourceVersion) after `resource_version`;
        errors as `watch_pods`. BOOKMARKs come through with an empty event."""
        stream = self._watch(
            self._watch_core.list_namespaced_event,
            namespace,
            f"watch events in {namespace}",
            resource_version,
            timeout_seconds,
        )
        async for etype, obj, rv in stream:
            yield etype, decode.decode_event(obj), rv

    async def _watch(
        self,
        call: Any,
        namespace: str | None,
        what: str,
        resource_version: str,
        timeout_seconds: int,
        **kwargs: Any,
    ) -> AsyncIterator[tuple[str, Mapping[str, Any], str]]:
        where = () if namespace is None else (namespace,)  # the all-namespaces call takes none
        try:
            resp = await call(
                *where,
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=resource_version,
                timeout_seconds=timeout_seconds,
                _preload_content=False,
                _request_timeout=(10, timeout_seconds + 30),
                **kwargs,
            )
        except ApiException as exc:
            raise errors.map_error(exc, what) from exc
        except errors.TRANSPORT_ERRORS as exc:
            raise errors.map_error(exc, what) from exc
        if not 200 <= resp.status <= 299:
            async with resp:
                body = await resp.read()
            raise errors.error_for_status(resp.status, body, what)
        try:
            async with resp:
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    etype = event.get("type")
                    obj = event.get("object") or {}
                    if etype == "ERROR":
                        code = int(obj.get("code") or 0)
                        if code == 410:
                            raise KubeGoneError(f"{what}: {obj.get('message')}", 410)
                        raise KubeUnavailableError(f"{what}: {obj.get('message')}", code)
                    rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
                    yield str(etype), obj, rv
        except errors.TRANSPORT_ERRORS as exc:
            raise errors.map_error(exc, what) from exc

    async def delete_pod(self, namespace: str, name: str, uid: str, grace_period_seconds: int) -> None:
        """Delete exactly this pod: the UID precondition makes the API refuse (409) if the
        name now belongs to a replacement, so a retried delete can never kill a pod the
        trial did not choose."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": grace_period_seconds,
            "preconditions": {"uid": uid},
        }
        await self._json(
            "delete",
            f"delete pod {namespace}/{name}",
            self._core.delete_namespaced_pod,
            name,
            namespace,
            body=body,
        )

    # --- campaigns -----------------------------------------------------------------------

    async def patch_campaign_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await self._json(
            "patch",
            f"patch status of campaign {namespace}/{name}",
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": dict(status)},
            field_manager=FIELD_MANAGER,
            # The generated client would pick JSON Patch, which an object body silently
            # turns into a no-op; a merge patch is what a status projection means.
            _content_type="application/merge-patch+json",
        )

    async def campaigns_served(self) -> bool:
        """Whether the API serves Campaigns (their CRD installed and established), read from
        discovery, which every authenticated client may read."""
        try:
            found = await self._json(
                "get", f"discover {GROUP}/{VERSION}", self._custom.get_api_resources, GROUP, VERSION
            )
        except KubeNotFoundError:
            return False
        return any(r.get("name") == PLURAL for r in (found or {}).get("resources") or [])

    async def get_campaign(self, namespace: str, name: str) -> Mapping[str, Any]:
        data = await self._json(
            "get",
            f"get campaign {namespace}/{name}",
            self._custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
        )
        return dict(data)

    # --- events --------------------------------------------------------------------------

    async def emit_event(
        self,
        *,
        namespace: str,
        name: str,
        uid: str,
        type_: str,
        reason: str,
        message: str,
        now: float,
    ) -> None:
        """A core/v1 Event about a Campaign (what `kubectl describe` shows)."""
        stamp = decode.format_time(now)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Campaign",
                "name": name,
                "namespace": namespace,
                "uid": uid,
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "aftershock"},
            "reportingComponent": "aftershock.dev/operator",
            "reportingInstance": os.environ.get("HOSTNAME", "aftershock"),
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "eventTime": decode.format_micro_time(now),
            "action": reason,
            "count": 1,
        }
        await self._json(
            "create",
            f"create event for {namespace}/{name}",
            self._core.create_namespaced_event,
            namespace,
            body,
        )

    # --- workloads' scale (the remediator in baseline trials) ------------------------------

    def _scale_calls(self, kind: str) -> tuple[Any, Any]:
        if kind == "Deployment":
            return self._apps.read_namespaced_deployment_scale, self._apps.patch_namespaced_deployment_scale
        if kind == "StatefulSet":
            return (
                self._apps.read_namespaced_stateful_set_scale,
                self._apps.patch_namespaced_stateful_set_scale,
            )
        raise KubeError(f"cannot scale a {kind}")

    async def _read_scale(self, kind: str, namespace: str, name: str) -> Mapping[str, Any]:
        read, _ = self._scale_calls(kind)
        data: Mapping[str, Any] = await self._json(
            "get", f"get scale of {kind} {namespace}/{name}", read, name, namespace
        )
        return data

    async def get_replicas(self, kind: str, namespace: str, name: str) -> tuple[int, int]:
        """(spec.replicas, status.replicas) of the workload's scale subresource."""
        data = await self._read_scale(kind, namespace, name)
        return int((data.get("spec") or {}).get("replicas") or 0), int(
            (data.get("status") or {}).get("replicas") or 0
        )

    async def get_pod_selector(self, kind: str, namespace: str, name: str) -> str:
        """``status.selector`` of the workload's scale subresource: its pods' label selector as
        a string (what an HPA reads), empty until its controller has reported."""
        data = await self._read_scale(kind, namespace, name)
        return str((data.get("status") or {}).get("selector") or "")

    async def set_replicas(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        _, patch = self._scale_calls(kind)
        await self._json(
            "patch",
            f"scale {kind} {namespace}/{name} to {replicas}",
            patch,
            name,
            namespace,
            {"spec": {"replicas": replicas}},
            field_manager=FIELD_MANAGER,
            _content_type="application/merge-patch+json",
        )

    def _workload_calls(self, kind: str) -> tuple[Any, Any, Any]:
        """(patch, list in a namespace, list in all namespaces) of a workload kind."""
        if kind == "Deployment":
            return (
                self._apps.patch_namespaced_deployment,
                self._apps.list_namespaced_deployment,
                self._apps.list_deployment_for_all_namespaces,
            )
        if kind == "StatefulSet":
            return (
                self._apps.patch_namespaced_stateful_set,
                self._apps.list_namespaced_stateful_set,
                self._apps.list_stateful_set_for_all_namespaces,
            )
        raise KubeError(f"cannot annotate a {kind}")

    async def service_account(self, kind: str, namespace: str, name: str) -> str:
        """The ServiceAccount the workload's pod template names ("default" when none)."""
        read = (
            self._apps.read_namespaced_deployment
            if kind == "Deployment"
            else self._apps.read_namespaced_stateful_set
        )
        data = await self._json("get", f"get {kind} {namespace}/{name}", read, name, namespace)
        spec = ((data.get("spec") or {}).get("template") or {}).get("spec") or {}
        return str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")

    async def patch_workload_metadata(
        self,
        kind: str,
        namespace: str,
        name: str,
        *,
        labels: Mapping[str, str | None],
        annotations: Mapping[str, str | None],
    ) -> None:
        """Merge-patch the workload's labels and annotations (None removes one): metadata only."""
        patch, _, _ = self._workload_calls(kind)
        await self._json(
            "patch",
            f"annotate {kind} {namespace}/{name}",
            patch,
            name,
            namespace,
            {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}},
            field_manager=FIELD_MANAGER,
            _content_type="application/merge-patch+json",
        )

    async def list_workloads(
        self, kind: str, namespace: str | None, label_selector: str
    ) -> list[tuple[str, str, Mapping[str, str]]]:
        """(namespace, name, annotations) of the workloads of `kind` matching `label_selector`,
        in `namespace` or (None) in every namespace."""
        _, in_namespace, everywhere = self._workload_calls(kind)
        if namespace is None:
            data = await self._json("list", f"list {kind}s", everywhere, label_selector=label_selector)
        else:
            data = await self._json(
                "list", f"list {kind}s in {namespace}", in_namespace, namespace, label_selector=label_selector
            )
        found: list[tuple[str, str, Mapping[str, str]]] = []
        for item in data.get("items") or []:
            meta = item.get("metadata") or {}
            found.append(
                (str(meta.get("namespace")), str(meta.get("name")), dict(meta.get("annotations") or {}))
            )
        return found

    async def list_campaigns(self, namespace: str | None) -> list[Mapping[str, Any]]:
        """Every Campaign of `namespace` (None: of every namespace), as the API returns them."""
        if namespace is None:
            data = await self._json(
                "list",
                "list campaigns in all namespaces",
                self._custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
            )
        else:
            data = await self._json(
                "list",
                f"list campaigns in {namespace}",
                self._custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
            )
        return list(data.get("items") or [])

    async def set_campaign_finalizers(
        self, namespace: str, name: str, resource_version: str, finalizers: list[str]
    ) -> None:
        """Replace the Campaign's finalizers, only if it is still at `resource_version`
        (`KubeConflictError` otherwise: read it again)."""
        await self._json(
            "patch",
            f"set the finalizers of campaign {namespace}/{name}",
            self._custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}},
            _content_type="application/merge-patch+json",
        )

    async def apply_crd(self, crd: Mapping[str, Any], field_manager: str) -> str:
        """Server-side apply of a CustomResourceDefinition, taking over the fields it sets from
        whoever set them before (force); the resourceVersion the API server answers with."""
        api = k8s.ApiextensionsV1Api(self._api)
        name = str((crd.get("metadata") or {}).get("name"))
        data = await self._json(
            "patch",
            f"apply customresourcedefinition {name}",
            api.patch_custom_resource_definition,
            name,
            dict(crd),
            field_manager=field_manager,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        return str((data.get("metadata") or {}).get("resourceVersion", ""))

    async def find_campaign(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The Campaign, or None when there is none of that name."""
        try:
            return await self.get_campaign(namespace, name)
        except KubeNotFoundError:
            return None

    # --- services (what a subject's URL names) --------------------------------------------

    async def get_service(self, namespace: str, name: str) -> ServiceInfo | None:
        """The Service's type and whether it is headless; None when there is none."""
        data = await self._get_if_present("service", self._core.read_namespaced_service, namespace, name)
        if data is None:
            return None
        spec = data.get("spec") or {}
        return ServiceInfo(
            type=str(spec.get("type") or "ClusterIP"), headless=spec.get("clusterIP") == "None"
        )

    # --- leases (per-subject locks) ------------------------------------------------------

    @staticmethod
    def _lease_record(data: Mapping[str, Any]) -> LeaseRecord:
        spec = data.get("spec") or {}
        return LeaseRecord(
            holder=spec.get("holderIdentity"),
            renew_time=decode.parse_time(spec.get("renewTime")),
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            resource_version=str((data.get("metadata") or {}).get("resourceVersion", "")),
        )

    async def get_lease(self, namespace: str, name: str) -> LeaseRecord | None:
        read = self._coordination.read_namespaced_lease
        data = await self._get_if_present("lease", read, namespace, name)
        return None if data is None else self._lease_record(data)

    def _lease_body(
        self,
        name: str,
        holder: str | None,
        duration: int,
        now: float,
        labels: Mapping[str, str],
        rv: str | None,
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
        if rv:
            meta["resourceVersion"] = rv
        spec: dict[str, Any] = {"leaseDurationSeconds": duration}
        if holder is not None:
            spec["holderIdentity"] = holder
            spec["renewTime"] = decode.format_micro_time(now)
            spec["acquireTime"] = decode.format_micro_time(now)
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    async def create_lease(
        self, namespace: str, name: str, holder: str, duration: int, now: float, labels: Mapping[str, str]
    ) -> LeaseRecord:
        data = await self._json(
            "create",
            f"create lease {namespace}/{name}",
            self._coordination.create_namespaced_lease,
            namespace,
            self._lease_body(name, holder, duration, now, labels, None),
            field_manager=FIELD_MANAGER,
        )
        return self._lease_record(data)

    async def replace_lease(
        self,
        namespace: str,
        name: str,
        holder: str | None,
        duration: int,
        now: float,
        labels: Mapping[str, str],
        resource_version: str,
    ) -> LeaseRecord:
        """Optimistic-concurrency update: a 409 means someone else changed the lease first."""
        data = await self._json(
            "update",
            f"update lease {namespace}/{name}",
            self._coordination.replace_namespaced_lease,
            name,
            namespace,
            self._lease_body(name, holder, duration, now, labels, resource_version),
            field_manager=FIELD_MANAGER,
        )
        return self._lease_record(data)
