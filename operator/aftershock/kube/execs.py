"""``pods/exec``: a command run in a container over the API server's WebSocket (channel
protocol v4: stdout, stderr, and a status on the error channel), for the container-level chaos
kinds. The only place aftershock execs into anything."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.stream import WsApiClient

from aftershock.kube import errors
from aftershock.kube.calls import Calls
from aftershock.kube.proxy import without_env_proxy
from aftershock.model import ExecResult

_STDOUT, _STDERR, _ERROR = 1, 2, 3


def _status_error(raw: str) -> str | None:
    """None for a ``Success`` status; else its message (exit code, or why nothing ran)."""
    try:
        status = json.loads(raw)
    except ValueError:
        return raw.strip() or None
    if status.get("status") == "Success":
        return None
    return str(status.get("message") or status.get("reason") or raw)


class _Execs(Calls):
    _api: k8s.ApiClient
    _ws: WsApiClient | None = None

    def _ws_core(self) -> k8s.CoreV1Api:
        if self._ws is None:
            self._ws = without_env_proxy(WsApiClient(configuration=self._api.configuration))
        return k8s.CoreV1Api(self._ws)

    async def close_execs(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    async def exec_in_pod(
        self, namespace: str, pod: str, container: str, command: Sequence[str], timeout: float
    ) -> ExecResult:
        """Run `command` in `container` of `pod`; raise `KubeError` only for the API's own
        failure (RBAC, no such pod, the node unreachable), never for the command's."""
        what = f"exec in pod {namespace}/{pod} container {container}"
        self.requests["exec"] += 1
        out: list[str] = []
        err: list[str] = []
        status: str | None = None
        try:
            async with asyncio.timeout(timeout):
                ctx = await self._ws_core().connect_get_namespaced_pod_exec(
                    pod,
                    namespace,
                    container=container,
                    command=list(command),
                    stdout=True,
                    stderr=True,
                    stdin=False,
                    tty=False,
                    _preload_content=False,
                )
                async with ctx as ws:
                    async for msg in ws:
                        data = msg.data
                        if not isinstance(data, bytes | str) or len(data) < 1:
                            continue
                        raw = data if isinstance(data, bytes) else data.encode()
                        channel, text = raw[0], raw[1:].decode("utf-8", "replace")
                        if channel == _STDOUT:
                            out.append(text)
                        elif channel == _STDERR:
                            err.append(text)
                        elif channel == _ERROR and text:
                            status = text
        except aiohttp.WSServerHandshakeError as exc:
            raise errors.error_for_status(exc.status, exc.message, what) from exc
        except TimeoutError as exc:
            raise errors.KubeUnavailableError(f"{what}: no end within {timeout:g}s", None) from exc
        except errors.TRANSPORT_ERRORS as exc:
            raise errors.map_error(exc, what) from exc
        error = _status_error(status) if status is not None else "the exec ended without a status"
        return ExecResult("".join(out), "".join(err), error)
