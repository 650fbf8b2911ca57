"""A stand-in for PD's HTTP API, for tests and benchmarks (see docs/adr/0003-pd-stand-in.md).

``PdStandIn(pods)`` serves PD's JSON shapes on 127.0.0.1, derived from a pod source: any callable
returning `PodRecord` dicts. A static list for unit tests; `tests.pdstub.kube_source.KubePodSource`
(imported separately: it needs the kubernetes client) for the real API server.
"""

from tests.pdstub.server import FaultKind, PdStandIn, PodRecord, PodSource, go_duration, rfc3339

__all__ = ["FaultKind", "PdStandIn", "PodRecord", "PodSource", "go_duration", "rfc3339"]
