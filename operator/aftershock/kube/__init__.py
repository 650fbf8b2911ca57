"""The only place that talks to the Kubernetes API.

Everything above this package sees typed values (`PodState`, `PodEvent`, `LeaseHolder`) and a
small error hierarchy; nothing above it imports a Kubernetes client. The client is
kubernetes_asyncio (see docs/adr/0001-async-kubernetes-client.md): the official client is
synchronous and would block the operator's event loop.
"""

from aftershock.kube.client import Kube, PodEvent
from aftershock.kube.decode import decode_pod
from aftershock.kube.errors import (
    KubeConflictError,
    KubeError,
    KubeForbiddenError,
    KubeGoneError,
    KubeNotFoundError,
    KubeUnavailableError,
)

__all__ = [
    "Kube",
    "KubeConflictError",
    "KubeError",
    "KubeForbiddenError",
    "KubeGoneError",
    "KubeNotFoundError",
    "KubeUnavailableError",
    "PodEvent",
    "decode_pod",
]
