"""``network_partition``: cut the victims off from the subject's other members (or from every
address but their own loopback) for ``chaos.durationSeconds``, then heal.

How (ADR 0020): an ephemeral container of ours in each victim pod, with ``NET_ADMIN`` and
nothing else, adds iptables rules in the pod's network namespace (which every container of a
pod shares): two chains of our own, ``AFTERSHOCK-IN`` and ``AFTERSHOCK-OUT``, hooked first
into INPUT and OUTPUT, dropping the packets from and to each other member's pod IP (or every
packet not on ``lo``). Nothing runs on the node and nothing runs in the victim's own container,
so the subject's image needs no shell.

Healing, in order of who gets there first:

- the operator, after ``chaos.durationSeconds`` (or when the trial, the Campaign, its namespace
  or the operator stops): ``pods/exec`` of the heal in our container, which removes both chains
  and ends the container's holding process;
- the container itself (a dead-man): it holds the rules until a wall-clock deadline (the
  injection + ``durationSeconds`` + `DEADMAN_GRACE_SECONDS`) and then removes them and exits,
  so rules never outlive an operator that died and never came back. A SIGTERM (the pod
  deleted) also removes them;
- a new heal-only ephemeral container, where ours ended abnormally (killed by the kernel, say)
  and may have left rules behind.

A pod that is gone, or replaced under its name, took its network namespace and the rules with it.

Refused before anything is done (`Injection.refused`): a victim or member on the node's network
(``hostNetwork``: the rules would cut the node), a victim without a pod IP, and, at the first
victim's patch, a namespace whose Pod Security level forbids ``NET_ADMIN`` (baseline,
restricted) or an operator without the ``pods/ephemeralcontainers`` right: the API server
refuses the container, so nothing was added anywhere.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aftershock.chaos.base import (
    ChaosKindInfo,
    Clock,
    Fault,
    FaultApi,
    Injection,
    Right,
    Stopping,
    Strike,
)
from aftershock.errors import ApiError, ConflictError, ForbiddenError, NotFoundError
from aftershock.model import EphemeralState, PartitionDirection, PodState, Victim

#: The image our container runs when ``chaos.image`` is not set: Debian's iptables and dash
#: (``hack/testbed/images.sh netutils`` builds it). Anything with ``sh``, ``iptables``, ``grep``,
#: ``date`` and ``sleep`` will do.
DEFAULT_IMAGE = "aftershock-netutils:dev"
#: Our containers' names start with this (a pod's ephemeral containers stay in its spec for
#: the pod's life; each fault adds one with a fresh suffix).
PREFIX = "aftershock-partition-"
HEAL_PREFIX = "aftershock-heal-"
#: The container drops its rules by itself this long after the operator should have healed
#: them: long enough that the operator's heal (and its ``fault_healed`` stamp) comes first on a
#: loaded machine, short enough that rules never stay long after an operator that died.
DEADMAN_GRACE_SECONDS = 15.0
#: How long a new container may take to run and show its rules in place.
START_TIMEOUT_SECONDS = 60.0
EXEC_TIMEOUT_SECONDS = 15.0
_POLL_SECONDS = 0.1

#: One script, three modes: ``hold UNTIL DIRECTION IP...`` (add the rules, hold them until the
#: unix time UNTIL or a SIGTERM, remove them), ``heal`` (remove them, end the holder) and
#: ``check`` (print how many rules of ours are in place). POSIX sh (dash), so a trap interrupts
#: the wait at once and the holder never leaves its sleep behind. No ``$$`` in it: in a
#: container's command Kubernetes turns ``$$`` into ``$`` (its escape for ``$(VAR)``), so the
#: holder reads its own PID from /proc/self/stat instead.
SCRIPT = r"""
set -u
pidfile=/run/aftershock-partition.pid
unhook() {
  while iptables -w 5 -D "$1" -j "$2" 2>/dev/null; do :; done
  iptables -w 5 -F "$2" 2>/dev/null
  iptables -w 5 -X "$2" 2>/dev/null
  return 0
}
count() { iptables -w 5 -S | grep -c AFTERSHOCK; }
clear() {
  unhook INPUT AFTERSHOCK-IN
  unhook OUTPUT AFTERSHOCK-OUT
  left=$( count )
  [ "$left" = 0 ] || { echo "aftershock: $left rules still in place"; return 1; }
}
mode=$1; shift
case "$mode" in
check)
  echo "rules $( count )"; exit 0 ;;
heal)
  clear || exit 1
  echo healed
  pid=$(cat "$pidfile" 2>/dev/null) && [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
  exit 0 ;;
hold)
  until=$1; direction=$2; shift 2
  read -r self _ < /proc/self/stat
  echo "$self" > "$pidfile"
  sleeper=""
  stop() {
    [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null
    clear || exit 1
    rm -f "$pidfile"
    echo "aftershock: healed ($1)" | tee /dev/termination-log
    exit 0
  }
  trap 'stop signal' TERM INT HUP
  clear >/dev/null || exit 1
  now=$(date +%s)
  [ "$now" -lt "$until" ] || { echo "aftershock: past the deadline, nothing added"; exit 0; }
  add() { iptables -w 5 "$@" || { echo "aftershock: iptables $* failed"; clear; exit 2; }; }
  add -N AFTERSHOCK-IN
  add -N AFTERSHOCK-OUT
  if [ "$direction" = all ]; then
    add -A AFTERSHOCK-IN -i lo -j RETURN
    add -A AFTERSHOCK-IN -j DROP
    add -A AFTERSHOCK-OUT -o lo -j RETURN
    add -A AFTERSHOCK-OUT -j DROP
  else
    for ip in "$@"; do
      add -A AFTERSHOCK-IN -s "$ip" -j DROP
      add -A AFTERSHOCK-OUT -d "$ip" -j DROP
    done
  fi
  add -I INPUT 1 -j AFTERSHOCK-IN
  add -I OUTPUT 1 -j AFTERSHOCK-OUT
  echo "aftershock: partitioned until $until ($direction: $*)"
  sleep $((until - now)) &
  sleeper=$!
  wait "$sleeper"
  sleeper=""
  stop deadline ;;
esac
echo "aftershock: unknown mode $mode"; exit 64
"""


def build_container(name: str, image: str, args: Sequence[str]) -> dict[str, Any]:
    """Our ephemeral container: the script in `args`' mode, root with NET_ADMIN and no other
    capability (iptables needs no more), no privilege escalation."""
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", SCRIPT, "aftershock-partition", *args],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
        },
        "terminationMessagePolicy": "File",
    }


def cut_off(strike: Strike, victim: Victim) -> tuple[str, ...]:
    """The addresses the victim loses: every other member's pod IP (the other victims too: a
    partition of several victims isolates each of them)."""
    return tuple(sorted({p.ip for p in strike.pods.values() if p.uid != victim.uid and p.ip}))


def _refusal(strike: Strike) -> str | None:
    """Why the partition cannot be made here, before anything is done; None: it can."""
    for pod in strike.pods.values():
        if pod.host_network:
            return (
                f"{pod.name} uses the node's network (hostNetwork): rules in its network namespace "
                "would cut the node and every hostNetwork pod on it. network_partition needs "
                "members on the pod network"
            )
    for victim in strike.victims:
        seen = strike.pods.get(victim.uid)
        if seen is None:
            return f"{victim.name}: its pod is not in the gate's view"
        if not seen.ip:
            return f"{victim.name} has no pod IP"
    direction = strike.chaos.direction or PartitionDirection.MEMBERS
    if direction is PartitionDirection.MEMBERS and not any(cut_off(strike, v) for v in strike.victims):
        return "there is no other member to cut the victims off from (one pod?)"
    return None


def _forbidden(victim: Victim, exc: ForbiddenError) -> str:
    said = str(exc)
    if "PodSecurity" in said:
        return (
            f"network_partition refused: the namespace's Pod Security level forbids the NET_ADMIN "
            f"capability our container needs in {victim.name} (it needs the privileged level; "
            f"nothing was added): {said}"
        )
    return (
        f"network_partition refused: the operator may not add an ephemeral container to "
        f"{victim.name} (pods/ephemeralcontainers patch; the kind is left out of its RBAC?): {said}"
    )


async def _await_state(
    api: FaultApi, namespace: str, pod: str, name: str, clock: Clock, want: Sequence[str]
) -> EphemeralState | None:
    """Poll the pod until our container is in one of `want` (or gone); None on timeout. The
    wait is a few seconds at most (the image is on the node or is pulled once)."""
    deadline = clock.monotonic() + START_TIMEOUT_SECONDS
    while True:
        states = await api.ephemeral_containers(namespace, pod)
        if states is None:
            return EphemeralState("", "gone", name=name)
        state = next((s for s in states if s.name == name), None)
        if state is not None and state.state in want:
            return state
        if clock.monotonic() > deadline:
            return None
        await asyncio.sleep(_POLL_SECONDS)


def rules_in_place(stdout: str) -> int:
    """The count the script's ``check`` printed (``rules N``); 0 when it printed none."""
    for line in stdout.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "rules" and words[1].isdigit():
            return int(words[1])
    return 0


async def _confirm(
    api: FaultApi, namespace: str, victim: Victim, name: str, clock: Clock
) -> tuple[tuple[float, float] | None, str | None]:
    """Wait until the victim's rules are in place, as our container itself reports them: the
    (monotonic, wall) of that answer, or why not."""
    state = await _await_state(api, namespace, victim.name, name, clock, ("running", "terminated"))
    if state is None:
        return None, f"{victim.name}/{name} did not start within {START_TIMEOUT_SECONDS:g}s"
    deadline = clock.monotonic() + START_TIMEOUT_SECONDS
    while state.state == "running":
        try:
            result = await api.exec_in_pod(
                namespace, victim.name, name, ("sh", "-c", SCRIPT, "x", "check"), EXEC_TIMEOUT_SECONDS
            )
        except (NotFoundError, ConflictError):
            break
        if rules_in_place(result.stdout) > 0:
            return (clock.monotonic(), clock.wall()), None
        if clock.monotonic() > deadline:
            said = f"{result.stdout.strip()} {result.error or ''}".strip()
            return None, f"{victim.name}/{name}: no rules in place after {START_TIMEOUT_SECONDS:g}s ({said})"
        await asyncio.sleep(_POLL_SECONDS)
        states = await api.ephemeral_containers(namespace, victim.name)
        state = next((s for s in states or () if s.name == name), EphemeralState("", "gone", name=name))
    return (
        None,
        f"{victim.name}/{name} ended before its rules were seen: "
        f"{state.state} {state.exit_code} {state.message}",
    )


async def inject(strike: Strike, api: FaultApi, clock: Clock, stopping: Stopping) -> Injection:
    """Add our container to each victim (one patch per victim, each only while `Strike.held`
    says the subject lock is fresh), then wait until each reports its rules in place."""
    refused = _refusal(strike)
    if refused is not None:
        return Injection(f"network_partition refused: {refused}", refused=True)
    assert strike.chaos.duration_seconds is not None  # the registry checked it
    direction = strike.chaos.direction or PartitionDirection.MEMBERS
    image = strike.chaos.image or DEFAULT_IMAGE
    until = int(clock.wall() + strike.chaos.duration_seconds + DEADMAN_GRACE_SECONDS) + 1
    details: dict[str, Any] = {}
    for i, victim in enumerate(strike.victims):
        if not strike.held():
            return Injection(f"not partitioning {victim.name}: the subject lock lapsed", details=details)
        name = PREFIX + secrets.token_hex(4)
        peers = cut_off(strike, victim)
        container = build_container(name, image, ("hold", str(until), direction.value, *peers))
        try:
            await api.add_ephemeral_container(strike.namespace, victim.name, victim.uid, container)
        except ForbiddenError as exc:
            if i == 0:
                return Injection(_forbidden(victim, exc), refused=True)
            return Injection(f"adding our container to {victim.name} failed: {exc}", details=details)
        except ApiError as exc:
            return Injection(f"adding our container to {victim.name} failed: {exc}", details=details)
        pod: PodState = strike.pods[victim.uid]
        details[victim.name] = {
            "container": name,
            "uid": victim.uid,
            "ip": pod.ip,
            "direction": direction.value,
            "cutOff": list(peers),
            "deadmanUntil": until,
        }
    first: tuple[float, float] | None = None
    for victim in strike.victims:
        acked, error = await _confirm(api, strike.namespace, victim, details[victim.name]["container"], clock)
        if error is not None:
            return Injection(f"partitioning {victim.name} failed: {error}", details=details)
        first = first or acked
    return Injection(None, first, details=details)


async def _heal_running(api: FaultApi, namespace: str, pod: str, name: str) -> str | None:
    try:
        result = await api.exec_in_pod(
            namespace, pod, name, ("sh", "-c", SCRIPT, "x", "heal"), EXEC_TIMEOUT_SECONDS
        )
    except NotFoundError:
        return None  # the pod went, and its network namespace with it
    # The holder ends as soon as it is told, and may take the exec down with it (its own PID
    # namespace ends): "healed" is printed before, once the rules are seen gone.
    if "healed" in result.stdout.split():
        return None
    return f"the heal in {pod}/{name} failed: {(result.stdout + result.stderr).strip()} {result.error or ''}"


async def _heal_anew(api: FaultApi, namespace: str, victim: Victim, image: str, clock: Clock) -> str | None:
    """Our container ended abnormally and may have left its rules: a heal-only container."""
    name = HEAL_PREFIX + secrets.token_hex(4)
    try:
        await api.add_ephemeral_container(
            namespace, victim.name, victim.uid, build_container(name, image, ("heal",))
        )
    except (NotFoundError, ConflictError):
        return None  # gone or replaced: the rules went with the pod's network namespace
    state = await _await_state(api, namespace, victim.name, name, clock, ("terminated",))
    if state is None:
        return f"{victim.name}/{name} did not finish within {START_TIMEOUT_SECONDS:g}s"
    if state.state == "gone" or state.exit_code == 0:
        return None
    return f"{victim.name}/{name} could not remove the rules: exit {state.exit_code} {state.message}"


class _SystemClock:
    """The heal is handed no clock (it runs from resume and the sweeper too): the system's."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


async def _heal_container(
    api: FaultApi, namespace: str, victim: Victim, seen: EphemeralState, image: str, clock: Clock
) -> str | None:
    """Heal what one container of ours may have left in the victim; None when nothing is left."""
    state = seen
    if state.state == "waiting":
        # Added but not started yet (the operator died right after the patch): it would add
        # its rules once it runs, so wait for it to run, then heal it.
        started = await _await_state(api, namespace, victim.name, seen.name, clock, ("running", "terminated"))
        if started is None:
            return (
                f"{victim.name}/{seen.name} has not started within {START_TIMEOUT_SECONDS:g}s "
                f"({seen.message}): healed once it runs, or it ends by itself at its deadline"
            )
        state = started
    if state.state == "running":
        return await _heal_running(api, namespace, victim.name, state.name)
    if state.state == "terminated" and state.exit_code not in (0, None):
        return await _heal_anew(api, namespace, victim, image, clock)
    return None  # ended cleanly (its deadline, a SIGTERM), or the pod is gone


async def heal(fault: Fault, api: FaultApi) -> str | None:
    """Remove the rules from every victim, idempotently: a container already ended cleanly
    (the dead-man, a SIGTERM), a pod gone or replaced, nothing to do. Without details (the
    operator died between the patch and recording it) every running or starting container
    of ours in the victim pods is healed."""
    image = fault.chaos.image or DEFAULT_IMAGE
    clock = _SystemClock()
    problems: list[str] = []
    for victim in fault.victims:
        entry = fault.details.get(victim.name)
        named = entry.get("container") if isinstance(entry, Mapping) else None
        states = await api.ephemeral_containers(fault.namespace, victim.name)
        if states is None or not states or states[0].pod_uid != victim.uid:
            continue  # gone or replaced: its network namespace (and our rules) went with it
        # Without its name, the container is one that runs or is about to (the patch came just
        # before the crash); one of an earlier trial that ended is that trial's to account for.
        ours = [
            s
            for s in states
            if s.name.startswith(PREFIX) and (s.name == named if named else s.state in ("running", "waiting"))
        ]
        for seen in ours:
            problem = await _heal_container(api, fault.namespace, victim, seen, image, clock)
            if problem is not None:
                problems.append(problem)
    return "; ".join(problems) if problems else None


KIND = ChaosKindInfo(
    type="network_partition",
    summary="cuts the victims off from the other members (chaos.direction all: from everyone) "
    "for chaos.durationSeconds by iptables rules in the pod's network namespace, added by an "
    "ephemeral container of ours with NET_ADMIN (Pod Security level privileged), then heals",
    rights=(
        Right("patch", "pods", "ephemeralcontainers", why="adds our NET_ADMIN container to the victim pod"),
        Right("create", "pods", "exec", why="confirms the rules and heals them in our container"),
        Right("get", "pods", "exec", why="the exec's WebSocket upgrade is a GET"),
    ),
    milestones=(("fault_healed", "the partition is healed: the rules are gone from every victim"),),
    back="fault_healed",
    replaces_pods=False,
    needs_duration=True,
    inject=inject,
    heal=heal,
    restarts=False,
    takes=frozenset({"direction", "image"}),
)
