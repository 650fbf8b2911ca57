"""Raw API payloads (JSON) decoded into model values, and the API's time stamps both ways."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from aftershock.model import (
    ClusterEvent,
    ContainerState,
    EphemeralState,
    ManagedEntry,
    ManagedFields,
    PodState,
)


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def format_time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decode_pod(raw: Mapping[str, Any]) -> PodState:
    """Decode a raw pod object (as JSON) into the engine's `PodState`."""
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    ready = False
    ready_at: float | None = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = cond.get("status") == "True"
            ready_at = parse_time(cond.get("lastTransitionTime")) if ready else None
    restarts = sum(int(cs.get("restartCount") or 0) for cs in status.get("containerStatuses") or [])
    owners = meta.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), None)
    owner_kind = owner.get("kind") if owner is not None else None
    owner_name = owner.get("name") if owner is not None else None
    statuses = {str(cs.get("name")): cs for cs in status.get("containerStatuses") or []}
    containers = tuple(
        _container(str(c.get("name", "")), statuses.get(str(c.get("name", ""))) or {})
        for c in spec.get("containers") or []
    )
    return PodState(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        namespace=str(meta.get("namespace", "")),
        labels=dict(meta.get("labels") or {}),
        node=spec.get("nodeName") or None,
        phase=str(status.get("phase") or "Pending"),
        ready=ready,
        restart_count=restarts,
        created_at=parse_time(meta.get("creationTimestamp")),
        deleting=meta.get("deletionTimestamp") is not None,
        owner_kind=owner_kind,
        owner_name=str(owner_name) if owner_name else None,
        ready_at=ready_at,
        containers=containers,
        shares_process_namespace=bool(spec.get("shareProcessNamespace", False)),
        ip=status.get("podIP") or None,
        host_network=bool(spec.get("hostNetwork", False)),
        # Not decoded here: most pod events never need them (`ManagedFields`, ADR 0025).
        managed=ManagedFields(meta.get("managedFields"), decode_managed),
    )


#: How deep and how many field paths of one managedFields entry are kept.
_FIELD_DEPTH = 3
_MAX_FIELDS = 64


def decode_managed(raw: Any) -> tuple[ManagedEntry, ...]:
    """managedFields entries, each with its field paths (fieldsV1 flattened to a few levels:
    ``f:metadata`` -> ``metadata``, ``k:{...}`` keys kept as they are)."""
    found = []
    for entry in raw if isinstance(raw, list) else []:
        if not isinstance(entry, Mapping):
            continue
        paths: list[str] = []
        _flatten(entry.get("fieldsV1"), "", 0, paths)
        try:
            when = parse_time(entry.get("time"))
        except ValueError:
            when = None
        found.append(
            ManagedEntry(
                manager=str(entry.get("manager") or ""),
                operation=str(entry.get("operation") or ""),
                subresource=str(entry.get("subresource") or ""),
                time=when,
                fields=tuple(paths[:_MAX_FIELDS]),
            )
        )
    return tuple(found)


def _flatten(node: Any, prefix: str, depth: int, out: list[str]) -> None:
    if not isinstance(node, Mapping) or len(out) >= _MAX_FIELDS:
        return
    keys = [k for k in node if k != "."]
    if not keys or depth >= _FIELD_DEPTH:
        if prefix:
            out.append(prefix)
        return
    for key in keys:
        name = key[2:] if key.startswith("f:") else key
        _flatten(node[key], f"{prefix}.{name}" if prefix else name, depth + 1, out)


def decode_ephemerals(raw: Mapping[str, Any]) -> tuple[EphemeralState, ...]:
    """A raw pod's ephemeral containers, in spec order, each as its status shows it."""
    uid = str((raw.get("metadata") or {}).get("uid", ""))
    statuses = {
        str(cs.get("name")): cs for cs in (raw.get("status") or {}).get("ephemeralContainerStatuses") or []
    }
    found = []
    for c in (raw.get("spec") or {}).get("ephemeralContainers") or []:
        name = str(c.get("name", ""))
        state = (statuses.get(name) or {}).get("state") or {}
        if "running" in state:
            found.append(EphemeralState(uid, "running", name=name))
        elif "terminated" in state:
            term = state["terminated"] or {}
            said = str(term.get("message") or term.get("reason") or "").strip()
            found.append(EphemeralState(uid, "terminated", int(term.get("exitCode") or 0), said, name=name))
        else:
            waiting = str((state.get("waiting") or {}).get("reason") or "")
            found.append(EphemeralState(uid, "waiting", None, waiting, name=name))
    return tuple(found)


def _container(name: str, status: Mapping[str, Any]) -> ContainerState:
    running = (status.get("state") or {}).get("running") or {}
    return ContainerState(
        name=name,
        container_id=status.get("containerID") or None,
        ready=bool(status.get("ready", False)),
        restart_count=int(status.get("restartCount") or 0),
        started_at=parse_time(running.get("startedAt")),
    )


def decode_event(raw: Mapping[str, Any]) -> ClusterEvent:
    """Decode a core/v1 Event. The reporter is `reportingComponent` (what events.k8s.io calls
    reportingController) and else `source.component`: older clients fill only the latter."""
    meta = raw.get("metadata") or {}
    involved = raw.get("involvedObject") or {}
    controller = raw.get("reportingComponent") or (raw.get("source") or {}).get("component") or ""
    return ClusterEvent(
        uid=str(meta.get("uid", "")),
        reason=str(raw.get("reason") or ""),
        message=str(raw.get("message") or ""),
        controller=str(controller),
        involved=f"{involved.get('kind', '')}/{involved.get('name', '')}",
        count=int(raw.get("count") or 1),
    )
