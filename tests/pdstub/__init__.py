"""A stand-in for PD's HTTP API, for tests and benchmarks (see docs/adr/0003-pd-stand-in.md).

``PdStandIn()`` serves PD's JSON shapes on 127.0.0.1, with store states judged from what the
stores report (PutStore and heartbeats). Who reports: `tests.pdstub.store` (a process per TiKV
pod on a real kubelet), or, with ``PdStandIn(pods)``, a `tests.pdstub.fleet.StoreFleet` of
simulated store processes following a pod source (`tests.pdstub.kube_source.KubePodSource`,
imported separately: it needs the kubernetes client). As a process:
``python -m tests.pdstub.server --help``.

Names are imported lazily, so that ``python -m tests.pdstub.server`` runs the module once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.pdstub.server import (
        FAITHFUL,
        FaultKind,
        PdStandIn,
        PodRecord,
        PodSource,
        Timing,
        go_duration,
        rfc3339,
    )

__all__ = ["FAITHFUL", "FaultKind", "PdStandIn", "PodRecord", "PodSource", "Timing", "go_duration", "rfc3339"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("tests.pdstub.server"), name)
    raise AttributeError(name)
