"""The reference remediator (remediators/out-of-service): taints a NotReady node that hosts
selected pods once it has been down `after` seconds, removes only its own taint when the node is
back. Its API is a fake of the test's own here; the decisions are the remediator's."""

from __future__ import annotations

import copy
import importlib.util
import urllib.parse
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oos", REPO / "remediators/out-of-service/remediator.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


oos = _module()


def node(name: str, ready: bool, taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": "1", "annotations": {}},
        "spec": {"taints": taints or []},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "Unknown"}]},
    }


class FakeApi:
    def __init__(self, nodes: list[dict[str, Any]], pods: dict[str, list[str]]) -> None:
        self.nodes = {n["metadata"]["name"]: n for n in nodes}
        self.pods = pods  # node -> pod names (selected ones)
        self.patches: list[str] = []

    def request(self, method: str, path: str, body: Any = None, ctype: str = "", timeout: float = 0) -> Any:
        if "/pods?" in path:
            query = urllib.parse.parse_qs(path.split("?", 1)[1])
            on = query["fieldSelector"][0].split("=", 1)[1]
            return {"items": [{"metadata": {"name": p}} for p in self.pods.get(on, [])]}
        name = path.rsplit("/", 1)[1]
        if method == "GET":
            return copy.deepcopy(self.nodes[name])
        self.patches.append(name)
        current = self.nodes[name]
        current["spec"]["taints"] = body["spec"]["taints"]
        for k, v in body["metadata"]["annotations"].items():
            if v is None:
                current["metadata"]["annotations"].pop(k, None)
            else:
                current["metadata"]["annotations"][k] = v
        return copy.deepcopy(current)


def test_taints_a_down_node_hosting_selected_pods_and_untaints_it_when_back() -> None:
    other = {"key": "example.com/other", "value": "x", "effect": "NoSchedule"}
    api = FakeApi([node("real-1", False, [other]), node("real-2", False)], {"real-1": ["etcd-2"]})
    r = oos.Remediator(api, "etcd", "app=etcd", 0.0, "rem-1")
    for n in api.nodes.values():
        r._see(copy.deepcopy(n))
    r.step()
    # real-2 hosts none of the selected pods: left alone.
    assert api.patches == ["real-1"]
    taints = api.nodes["real-1"]["spec"]["taints"]
    assert oos.TAINT in taints
    assert other in taints
    assert api.nodes["real-1"]["metadata"]["annotations"][oos.MARK] == "rem-1"
    r.step()
    assert api.patches == ["real-1"]  # tainted once
    api.nodes["real-1"]["status"]["conditions"][0]["status"] = "True"
    r._see(copy.deepcopy(api.nodes["real-1"]))
    r.step()
    assert api.nodes["real-1"]["spec"]["taints"] == [other]
    assert oos.MARK not in api.nodes["real-1"]["metadata"]["annotations"]


def test_waits_the_given_seconds_and_never_removes_a_taint_it_did_not_add() -> None:
    api = FakeApi([node("real-1", False)], {"real-1": ["etcd-2"]})
    r = oos.Remediator(api, "etcd", "app=etcd", 3600.0, "rem-1")
    r._see(copy.deepcopy(api.nodes["real-1"]))
    r.step()
    assert api.patches == []
    someone = node("real-3", True, [dict(oos.TAINT)])
    api.nodes["real-3"] = someone
    r._see(copy.deepcopy(someone))
    r.step()
    assert api.patches == []
