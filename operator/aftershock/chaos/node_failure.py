"""``node_failure``: the node hosting a victim stops answering for ``chaos.durationSeconds`` (its
kubelet stopped, every pod on it frozen), then comes back. ADR 0021.

How: aftershock never touches a node's processes itself. It writes a request on the Node
(annotation `REQUEST`: an id and a deadline, wall clock); the node agent on that node (an
opt-in privileged DaemonSet, `aftershock node-agent`) sees it, SIGSTOPs the kubelet, freezes
every pod's cgroup but its own, and answers on the Node (annotation `STATE`: frozen, with the
pods it froze). The heal removes the request; the agent thaws and answers ``thawed``. The agent
thaws at the deadline on its own too, whatever became of the operator or the API server: the
node always comes back.

Guards, each checked before anything is written (the Campaign stops with ``ChaosRefused``):
never a control-plane node, never the node the operator runs on, never more nodes than
victims, never a node already failing; no agent answering within `ACK_TIMEOUT` is a refusal
too (the request is taken back first).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aftershock.chaos.base import ChaosKindInfo, Clock, Fault, FaultApi, Injection, Right, Stopping, Strike
from aftershock.errors import ApiError, ForbiddenError, NotFoundError
from aftershock.model import NODE_FAILURE, NodeState, Victim

#: The request aftershock writes on the Node: ``{"id": ..., "until": unix seconds}``.
REQUEST = "aftershock.dev/node-failure"
#: The node agent's answer: ``{"id", "state": "frozen"|"thawed"|"error", "at", "pods", ...}``.
STATE = "aftershock.dev/node-failure-state"

#: How long the agent has to answer a request or its removal.
ACK_TIMEOUT = 30.0
#: How often the Node is read while waiting for the agent's answer (a few seconds at most).
ACK_POLL = 0.25
#: The agent's own deadline is this much after the operator's: the operator heals first; the
#: agent's deadline is the backstop when the operator cannot.
BACKSTOP_SECONDS = 10.0

CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")


def control_plane(node: NodeState) -> bool:
    return any(k in node.labels for k in CONTROL_PLANE_LABELS) or any(
        t in CONTROL_PLANE_LABELS for t in node.taints
    )


def read_json(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _victims_key(namespace: str, victims: Sequence[Victim]) -> str:
    return f"{namespace}/{'+'.join(v.uid[:8] for v in victims)}"


def fault_id(strike: Strike, wall: float) -> str:
    """One id per fault, recorded with it: the heal and the agent's answers name it. Unique
    per fault, not per victim set: a trial run again on the same victim (after an operator
    restart) is a new fault, which an agent that answered the last one ``thawed`` must serve."""
    return f"{_victims_key(strike.namespace, strike.victims)}@{wall:.3f}"


def _refusal(strike: Strike, nodes: Mapping[str, NodeState]) -> str | None:
    if len(nodes) > len(strike.victims):
        return f"{len(nodes)} nodes for {len(strike.victims)} victims"
    for name, node in nodes.items():
        if control_plane(node):
            return f"node {name} is a control-plane node: node_failure never fails one"
        if strike.operator_node is not None and name == strike.operator_node:
            return (
                f"node {name} runs the aftershock operator itself: node_failure never fails it "
                "(pick victims elsewhere with chaos.nodes, or run the operator on another node)"
            )
        if REQUEST in node.annotations:
            held = read_json(node.annotations[REQUEST]).get("id", "?")
            return f"node {name} is already being failed (request {held}): one failure per node at a time"
    return None


async def _wait_state(
    api: FaultApi, node: str, want: str, ident: str, clock: Clock, stopping: Stopping
) -> dict[str, Any] | None:
    """The agent's answer `want` for `ident`, or None after `ACK_TIMEOUT`."""
    deadline = clock.monotonic() + ACK_TIMEOUT
    while clock.monotonic() < deadline and not stopping():
        state = read_json((await api.get_node(node)).annotations.get(STATE))
        if state.get("id") == ident and state.get("state") == want:
            return state
        if state.get("id") == ident and state.get("state") == "error":
            return state
        await asyncio.sleep(ACK_POLL)
    return None


async def inject(strike: Strike, api: FaultApi, clock: Clock, stopping: Stopping) -> Injection:
    names = [v.node for v in strike.victims]
    if any(n is None for n in names):
        return Injection("a victim is not bound to a node", refused=True)
    duration = strike.chaos.duration_seconds
    assert duration is not None  # the registry requires it for this kind
    try:
        nodes = {n: await api.get_node(n) for n in _nodes_of(strike.victims)}
    except ForbiddenError as exc:
        return Injection(_forbidden(exc), refused=True)
    refused = _refusal(strike, nodes)
    if refused is not None:
        return Injection(refused, refused=True)
    if not strike.held():
        return Injection("not failing the node: the subject lock lapsed")
    ident = fault_id(strike, clock.wall())
    until = clock.wall() + duration + BACKSTOP_SECONDS
    request = json.dumps({"id": ident, "until": until}, sort_keys=True)
    first: tuple[float, float] | None = None
    answers: dict[str, dict[str, Any]] = {}
    asked: list[str] = []
    for name in nodes:
        try:
            await api.patch_node_annotations(name, {REQUEST: request})
            asked.append(name)
            state = await _wait_state(api, name, "frozen", ident, clock, stopping)
        except ForbiddenError as exc:
            # Only part of the rights (get without patch), or they went between the operator's
            # check and here (the component removed mid-run): take back what was asked.
            left = await _take_back(api, asked)
            return Injection(_forbidden(exc) + left, refused=not left)
        if state is None or state.get("state") != "frozen":
            # Take every request back: a node whose agent answers late must not fail later.
            for undo in nodes:
                await api.patch_node_annotations(undo, {REQUEST: None})
            why = (state or {}).get("error") or f"no answer within {ACK_TIMEOUT:.0f}s"
            return Injection(
                f"the node agent on {name} did not fail it ({why}): install the node agent "
                "(manifests/node-agent/, or the chart's nodeAgent.enabled; docs/chaos.md) on the "
                "nodes a Campaign may fail",
                refused=state is None,
            )
        if first is None:
            first = (clock.monotonic(), clock.wall())
        answers[name] = state
    details: dict[str, Any] = {}
    for victim in strike.victims:
        state = answers[str(victim.node)]
        pods = [str(p) for p in state.get("pods") or []]
        details[victim.name] = {
            "node": victim.node,
            "faultId": ident,
            "frozenAt": state.get("at"),
            "kubeletPid": state.get("kubeletPid"),
            "frozenPods": len(pods),
            # What else stopped with it: other namespaces' pods and this one's bystanders.
            "alsoStopped": [p for p in pods if p != f"{strike.namespace}/{victim.name}"],
        }
    others = sorted({p for d in details.values() for p in d["alsoStopped"]})
    notice = None
    if others:
        shown = ", ".join(others[:20]) + (f" and {len(others) - 20} more" if len(others) > 20 else "")
        notice = f"node_failure of {', '.join(nodes)} also stopped {len(others)} other pod(s): {shown}"
    return Injection(None, first, details=details, notice=notice)


def _forbidden(exc: ForbiddenError) -> str:
    return (
        f"aftershock may not read or annotate the victims' nodes ({exc}): "
        f"{KIND.enable_hint()}; no node was failed"
    )


def _nodes_of(victims: Sequence[Victim]) -> list[str]:
    """The victims' nodes, each once, in the victims' order."""
    return list(dict.fromkeys(str(v.node) for v in victims if v.node))


async def _take_back(api: FaultApi, nodes: Sequence[str]) -> str:
    """Remove the request from `nodes`; what could not be removed, said (empty: all gone)."""
    stuck = []
    for name in nodes:
        try:
            await api.patch_node_annotations(name, {REQUEST: None})
        except NotFoundError:
            continue
        except ApiError:
            stuck.append(name)
    if not stuck:
        return ""
    return (
        f"; the request on {', '.join(stuck)} could not be taken back: its node agent thaws by "
        "itself at the request's deadline, and the heal tries again"
    )


async def heal(fault: Fault, api: FaultApi) -> str | None:
    """Take the request back from every victim's node and see the agent thaw it. Idempotent: a
    node without our request (healed, never failed, or failed by someone else) is left alone."""
    ident = next((d.get("faultId") for d in fault.details.values() if isinstance(d, Mapping)), None)
    problems = []
    for name in _nodes_of(fault.victims):
        try:
            node = await api.get_node(name)
        except NotFoundError:
            continue  # the node is gone: nothing of ours is left on it
        held = read_json(node.annotations.get(REQUEST))
        if ident is None and str(held.get("id", "")).startswith(
            _victims_key(fault.namespace, fault.victims) + "@"
        ):
            # Injected before the details were stored (a crash between the two): ours is the
            # request whose id names this namespace and these victims.
            ident = str(held["id"])
        if ident is None:
            continue
        if held and held.get("id") == ident:
            await api.patch_node_annotations(name, {REQUEST: None})
        state = read_json(node.annotations.get(STATE))
        if state.get("id") == ident and state.get("state") == "frozen":
            answer = await _wait_state(api, name, "thawed", ident, _WallClock(), lambda: False)
            if answer is None or answer.get("state") != "thawed":
                problems.append(f"the node agent on {name} did not answer that it thawed the node")
    return "; ".join(problems) or None


#: How long a baseline trial waits for its failed nodes to be Ready again before it restores
#: the remediator anyway: a healed node is Ready at its kubelet's next status update (10 s by
#: default), or its lease's next renewal.
SETTLE_TIMEOUT = 120.0
#: How often the nodes are read meanwhile (the operator watches no Node: a bounded, rare wait).
SETTLE_POLL = 0.5


async def settled(victims: Sequence[Victim], api: FaultApi, clock: Clock, stopping: Stopping) -> str | None:
    """Every victim's node Ready again as the control plane shows it (what a remediator reads),
    or gone. Ends early, with no complaint, when the trial must stop."""
    waiting = _nodes_of(victims)
    deadline = clock.monotonic() + SETTLE_TIMEOUT
    while waiting:
        for name in list(waiting):
            try:
                node = await api.get_node(name)
            except NotFoundError:
                waiting.remove(name)
                continue
            except ApiError:
                continue  # asked again on the next pass, until the deadline
            if node.ready == "True":
                waiting.remove(name)
        if not waiting or stopping():
            return None
        if clock.monotonic() >= deadline:
            return f"{', '.join(waiting)} not Ready {SETTLE_TIMEOUT:g}s after the heal"
        await asyncio.sleep(SETTLE_POLL)
    return None


class _WallClock:
    """The heal has no clock handed in; waiting for the agent needs only a deadline."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


KIND = ChaosKindInfo(
    type=NODE_FAILURE,
    summary="the node hosting each victim stops answering (kubelet stopped, every pod on it frozen) "
    "for chaos.durationSeconds, then comes back; needs the node agent and acknowledgeNodeFailure",
    rights=(
        Right("get", "nodes", cluster=True, why="reads the victim's node and the node agent's answer"),
        Right("patch", "nodes", cluster=True, why="asks the node agent to fail the node, and takes it back"),
    ),
    milestones=(
        ("victim_unready", "every victim pod seen not Ready (the control plane saw its node stop answering)"),
        ("fault_healed", "the node was brought back (kubelet and pods running again)"),
    ),
    back="fault_healed",
    replaces_pods=False,
    restarts=False,
    needs_duration=True,
    inject=inject,
    heal=heal,
    settled=settled,
)

__all__ = ["KIND", "REQUEST", "STATE", "control_plane", "read_json"]
