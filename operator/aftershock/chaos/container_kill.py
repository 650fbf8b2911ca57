"""``container_kill``: SIGKILL the victim container's main process in place; the kubelet starts
a new container in the same pod (same UID, restartCount + 1). Nothing of ours is left to heal.

How (ADR 0018): ``pods/exec`` of a short ``sh`` script in the victim container. The script
finds the container's main process (the oldest process in the container's own mount namespace)
and sends it SIGKILL. No agent on the node, no ephemeral container, no extra image; the right
it exercises is ``pods/exec`` create.

Where this cannot work, nothing is killed and the Campaign stops with the reason
(`Injection.refused`):

- the pod does not share one PID namespace among its containers: the main process is then
  PID 1 of the container's namespace, and the kernel drops a SIGKILL sent to a namespace's init
  from inside it (pid_namespaces(7)), whoever sends it. With ``shareProcessNamespace: true``
  the pod's pause process is PID 1 and the main process an ordinary one;
- the image has no ``sh`` (distroless): exec finds nothing to run;
- the container named by ``chaos.container`` is not in the pod.
"""

from __future__ import annotations

from typing import Any

from aftershock.chaos.base import (
    ChaosKindInfo,
    Clock,
    FaultApi,
    Injection,
    Right,
    Stopping,
    Strike,
)
from aftershock.errors import ApiError, ForbiddenError
from aftershock.model import PodState, Victim

#: Finds the oldest process sharing this exec's mount namespace (the container's main process:
#: the exec, its subshells and any probe started later) and SIGKILLs it. Field 22 of
#: /proc/PID/stat (the start time) is the 20th after the ") " that ends the command name.
KILL_SCRIPT = r"""
mnt=$(readlink /proc/self/ns/mnt) || { echo "aftershock: cannot read /proc/self/ns/mnt"; exit 3; }
best=""; bt=""
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  [ "$p" = "$$" ] && continue
  [ "$(readlink "$d/ns/mnt" 2>/dev/null)" = "$mnt" ] || continue
  s=$(cat "$d/stat" 2>/dev/null) || continue
  s=${s##*) }
  set -- $s
  t=${20}
  if [ -z "$bt" ] || [ "$t" -lt "$bt" ]; then best=$p; bt=$t; fi
done
[ -n "$best" ] || { echo "aftershock: no main process found"; exit 4; }
[ "$best" != 1 ] || { echo "aftershock: the main process is PID 1 of its namespace"; exit 5; }
kill -9 "$best" && echo "killed $best $bt"
"""

EXEC_TIMEOUT_SECONDS = 15.0

_NO_SHELL_SIGNS = ("executable file not found", "no such file or directory", "not found in $path")


def _refusal(pod: PodState | None, victim: Victim, container: str | None) -> str | None:
    """Why the kill cannot work on this victim, before anything is done; None: it can."""
    if pod is None:
        return f"{victim.name}: its pod is not in the gate's view"
    if pod.container(container) is None:
        names = ", ".join(c.name for c in pod.containers) or "none"
        return f"{victim.name} has no container {container!r} (chaos.container; it has {names})"
    if not pod.shares_process_namespace:
        return (
            f"{victim.name} does not share its process namespace: the container's main process is "
            "PID 1 of its own PID namespace, and the kernel drops SIGKILL sent to it from inside "
            "the pod. Set spec.shareProcessNamespace: true in the subject's pod template "
            "(the pod's pause process is then PID 1), or use chaos.type node_kill"
        )
    return None


def _parse_killed(stdout: str) -> tuple[int, int] | None:
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "killed" and parts[1].isdigit() and parts[2].isdigit():
            return int(parts[1]), int(parts[2])
    return None


async def inject(strike: Strike, api: FaultApi, clock: Clock, stopping: Stopping) -> Injection:
    """SIGKILL each victim's main process (one exec per victim, one after another), each exec
    only while `Strike.held` says the subject lock is fresh."""
    wanted = strike.chaos.container
    for victim in strike.victims:
        refused = _refusal(strike.pods.get(victim.uid), victim, wanted)
        if refused is not None:
            return Injection(f"container_kill refused: {refused}", refused=True)
    details: dict[str, Any] = {}
    first: tuple[float, float] | None = None
    for i, victim in enumerate(strike.victims):
        pod = strike.pods[victim.uid]
        container = pod.container(wanted)
        assert container is not None  # checked above
        if not strike.held():
            # The next exec comes after the lock's renew deadline: another Campaign may hold the
            # subject now, so the kill is not ours to send.
            return Injection(
                f"not killing {victim.name}/{container.name}: the subject lock lapsed", details=details
            )
        try:
            result = await api.exec_in_pod(
                strike.namespace, victim.name, container.name, ("sh", "-c", KILL_SCRIPT), EXEC_TIMEOUT_SECONDS
            )
        except ForbiddenError as exc:
            if i == 0:
                return Injection(
                    f"container_kill refused: the operator may not exec into {victim.name} "
                    f"(pods/exec create and get; the kind is left out of its RBAC?): {exc}",
                    refused=True,
                )
            return Injection(f"exec in {victim.name}/{container.name} failed: {exc}", details=details)
        except ApiError as exc:
            return Injection(f"exec in {victim.name}/{container.name} failed: {exc}", details=details)
        acked = (clock.monotonic(), clock.wall())
        said = (result.error or "") + " " + result.stderr + " " + result.stdout
        if result.error is not None and any(s in said.lower() for s in _NO_SHELL_SIGNS) and i == 0:
            return Injection(
                f"container_kill refused: {victim.name}/{container.name} has no sh to run the kill "
                f"in (an image without a shell: {result.error.strip()}); nothing was killed. "
                "Use chaos.type node_kill for this subject",
                refused=True,
            )
        killed = _parse_killed(result.stdout)
        if result.error is not None or killed is None:
            why = (result.error or "no kill reported").strip()
            out = (result.stdout + result.stderr).strip()
            return Injection(
                f"killing the main process of {victim.name}/{container.name} failed: {why} ({out})",
                details=details,
            )
        details[victim.name] = {
            "container": container.name,
            "containerIDBefore": container.container_id,
            "restartCountBefore": container.restart_count,
            "pid": killed[0],
            "startTicks": killed[1],
        }
        if i == 0:
            first = acked
    return Injection(None, first, details=details)


KIND = ChaosKindInfo(
    type="container_kill",
    summary="SIGKILLs the victim container's main process in place (pods/exec of sh; the pod "
    "needs shareProcessNamespace: true); the kubelet restarts the container in the same pod",
    rights=(
        Right("create", "pods", "exec", why="runs the kill in the victim container"),
        # The exec arrives as a WebSocket upgrade, an HTTP GET, which the API server also
        # authorizes as get (403 without it, seen on v1.36).
        Right("get", "pods", "exec", why="the exec's WebSocket upgrade is a GET"),
    ),
    milestones=(
        ("container_down", "the victim container is seen not running or not Ready"),
        ("container_started", "a new container (new containerID) runs in the victim pod"),
        ("container_ready", "the new container is Ready"),
    ),
    back="container_ready",
    replaces_pods=False,
    needs_duration=False,
    inject=inject,
)
