"""A reference remediator for node failures: the out-of-service taint, applied and removed.

Shipped as an example (issue 20), not as a test double: it does what an SRE runbook says for a
node that stopped answering while it hosts pods of a StatefulSet, so users can calibrate
aftershock's remediator evaluation before they point it at their own agent.

- It watches Nodes. A node whose Ready condition is not True for `--after` seconds (default
  30) and that hosts pods matching `--selector` in `--namespace` gets the taint
  ``node.kubernetes.io/out-of-service=nodeshutdown:NoExecute``: the control plane then
  force-deletes the pods there and detaches their volumes, and the StatefulSet replaces them
  elsewhere (Kubernetes' non-graceful node shutdown handling, GA in 1.28).
- When the node is Ready again it removes the taint, only the one it added (it marks the node
  with the annotation ``aftershock.dev/out-of-service-by``).

The control plane's own default for such pods is to wait: a StatefulSet pod on an unreachable
node is never replaced until the node comes back or someone acts (the taint-based eviction
after 300 s only marks it for deletion; the kubelet that would confirm it is gone).

Standard library only (one file, any Python 3.9+ image). In a pod it uses its ServiceAccount;
``--kubeconfig``-free by design. Rights: nodes get/list/watch/patch, pods list.
"""

from __future__ import annotations

import signal
import sys

# As a container's PID 1, SIGTERM has no default action: without a handler the pod lingers its
# whole grace period after a scale to zero (a baseline trial), still acting meanwhile. Installed
# before anything else is imported, so a pod stopped right after it started still exits at once
# (as a script only: a test that imports the module keeps its own handlers).
if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

import argparse
import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

TAINT = {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}
MARK = "aftershock.dev/out-of-service-by"
SA = "/var/run/secrets/kubernetes.io/serviceaccount"

log = logging.getLogger("out-of-service")


class Api:
    """The few API calls it makes, over HTTPS with the pod's ServiceAccount."""

    def __init__(self) -> None:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        self.base = f"https://{host}:{port}"
        self.ctx = ssl.create_default_context(cafile=f"{SA}/ca.crt")

    def _token(self) -> str:
        with open(f"{SA}/token", encoding="utf-8") as f:  # rotated by the kubelet: read each time
            return f.read().strip()

    def request(self, method: str, path: str, body: Any = None, ctype: str = "application/json",
                timeout: float = 15) -> Any:  # fmt: skip
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self._token()}")
        req.add_header("Content-Type", ctype)
        with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")

    def watch(self, path: str, timeout: int = 300) -> Any:
        req = urllib.request.Request(f"{self.base}{path}&watch=1&timeoutSeconds={timeout}")
        req.add_header("Authorization", f"Bearer {self._token()}")
        with urllib.request.urlopen(req, context=self.ctx, timeout=timeout + 30) as resp:
            for line in resp:
                if line.strip():
                    yield json.loads(line)


def ready(node: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )


class Remediator:
    def __init__(self, api: Api, namespace: str, selector: str, after: float, name: str) -> None:
        self.api = api
        self.namespace = namespace
        self.selector = selector
        self.after = after
        self.name = name
        self.lock = threading.Lock()
        #: node name -> (first seen not Ready, monotonic), for nodes not Ready now.
        self.down: dict[str, float] = {}
        self.nodes: dict[str, dict[str, Any]] = {}

    def watch_nodes(self) -> None:
        while True:
            try:
                listed = self.api.request("GET", "/api/v1/nodes")
                with self.lock:
                    for n in listed.get("items") or []:
                        self._see(n)
                rv = listed["metadata"]["resourceVersion"]
                for event in self.api.watch(f"/api/v1/nodes?resourceVersion={rv}&allowWatchBookmarks=true"):
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        with self.lock:
                            self._see(event["object"])
                    elif event.get("type") == "ERROR":
                        break
            except (OSError, ValueError, KeyError) as exc:
                log.warning("node watch broke (%s); watching again", exc)
                time.sleep(1)

    def _see(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        self.nodes[name] = node
        if ready(node):
            self.down.pop(name, None)
        else:
            self.down.setdefault(name, time.monotonic())

    def hosts_selected(self, node: str) -> list[str]:
        q = urllib.parse.urlencode({"labelSelector": self.selector, "fieldSelector": f"spec.nodeName={node}"})
        pods = self.api.request("GET", f"/api/v1/namespaces/{self.namespace}/pods?{q}")
        return [p["metadata"]["name"] for p in pods.get("items") or []]

    def step(self) -> None:
        """Taint what has been down long enough, untaint what is back (ours only)."""
        now = time.monotonic()
        with self.lock:
            due = [n for n, since in self.down.items() if now - since >= self.after]
            back = [
                n for n, node in self.nodes.items()
                if ready(node) and (node["metadata"].get("annotations") or {}).get(MARK) == self.name
            ]  # fmt: skip
        for name in due:
            if self._tainted(name):
                continue
            pods = self.hosts_selected(name)
            if pods:
                self._set_taint(name, True)
                log.warning(
                    "node %s not Ready for %.0fs and hosts %s: tainted out-of-service", name, self.after, pods
                )
        for name in back:
            self._set_taint(name, False)
            log.warning("node %s Ready again: out-of-service taint removed", name)

    def _tainted(self, name: str) -> bool:
        taints = (self.nodes.get(name, {}).get("spec") or {}).get("taints") or []
        return any(t.get("key") == TAINT["key"] for t in taints)

    def _set_taint(self, name: str, on: bool) -> None:
        for _ in range(5):
            node = self.api.request("GET", f"/api/v1/nodes/{name}")
            taints = [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("key") != TAINT["key"]]
            if on:
                taints.append(dict(TAINT))
            patch = {
                # The resourceVersion makes the patch fail (409) if the taints changed meanwhile.
                "metadata": {
                    "resourceVersion": node["metadata"]["resourceVersion"],
                    "annotations": {MARK: self.name if on else None},
                },
                "spec": {"taints": taints},
            }
            try:
                updated = self.api.request(
                    "PATCH", f"/api/v1/nodes/{name}", patch, "application/merge-patch+json"
                )
            except urllib.error.HTTPError as exc:
                if exc.code == 409:
                    continue
                raise
            with self.lock:
                self._see(updated)
            return

    def run(self, interval: float) -> None:
        threading.Thread(target=self.watch_nodes, daemon=True, name="nodes").start()
        while True:
            try:
                self.step()
            except (OSError, ValueError, KeyError) as exc:
                log.warning("step failed (%s)", exc)
            time.sleep(interval)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--namespace", required=True, help="where the selected pods live")
    p.add_argument("--selector", required=True, help="label selector of the pods it protects")
    p.add_argument("--after", type=float, default=30.0, help="seconds NotReady before the taint")
    p.add_argument("--name", default=os.environ.get("POD_NAME", "out-of-service-remediator"))
    p.add_argument(
        "--interval", type=float, default=1.0, help="how often deadlines are checked (no API call)"
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    Remediator(Api(), args.namespace, args.selector, args.after, args.name).run(args.interval)


if __name__ == "__main__":
    main()
