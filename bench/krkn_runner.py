"""Krkn's pod-disruption scenario, N times, through krkn-lib: run in krkn-lib's own virtualenv.

Krkn itself is not published on PyPI (it is run from a git checkout or a container image, and
neither can be had here); krkn-lib, the library its scenarios are built on, is. This script makes
the calls Krkn's pod_disruption plugin makes, in the same order, with the plugin's defaults
unless stated, for one pod per iteration:

1. start krkn-lib's pod monitor (``select_and_monitor_by_namespace_pattern_and_label``, a
   thread with its own list+watch over all namespaces, filtered by label and namespace regex);
2. select the Running pods by namespace pattern and label (``select_pods_by_namespace_pattern_and_label``),
   shuffle, kill one with ``KrknKubernetes.delete_pod`` (the pod's own grace period: 0 here);
3. wait for the pods: list Running pods every ``duration`` seconds until the count is back
   (the plugin's ``wait_for_pods``; plugin default 10 s, here ``--duration``);
4. take the monitor's snapshot and its ``get_pods_status()``: per recovered pod
   ``pod_rescheduling_time``, ``pod_readiness_time`` and ``total_recovery_time`` (what Krkn puts in
   its telemetry as ``affected_pods``);
5. sleep ``--wait-duration`` (Krkn's ``tunings.wait_duration`` between iterations).

Prints nothing the harness needs; writes one JSON line per iteration to ``--out``.
No project code is imported here: this file must run on krkn-lib's pins alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from typing import Any, TextIO

from krkn_lib.k8s import KrknKubernetes
from krkn_lib.k8s.pod_monitor import select_and_monitor_by_namespace_pattern_and_label


def wait_for_pods(
    kubecli: KrknKubernetes, ns_pattern: str, selector: str, count: int, duration: float, timeout: float
) -> int:
    started = time.monotonic()
    while True:
        running = kubecli.select_pods_by_namespace_pattern_and_label(
            namespace_pattern=ns_pattern, label_selector=selector, field_selector="status.phase=Running"
        )
        if len(running) == count:
            return 0
        time.sleep(duration)
        if time.monotonic() - started > timeout:
            return 1


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--selector", required=True)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--recovery-time", type=int, default=120)
    p.add_argument("--wait-duration", type=float, default=0)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--container-kill",
        type=int,
        default=0,
        help="Krkn's container scenario instead (its `action`, a signal number 1-15): "
        "exec `kill <action>` in one container of a random pod, as the plugin does",
    )
    p.add_argument("--container", default="", help="the container scenario's container_name")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    kubecli = KrknKubernetes(kubeconfig_path=args.kubeconfig)
    ns_pattern = f"^{args.namespace}$"
    if args.container_kill:
        container_scenario(kubecli, args, ns_pattern)
        return
    with open(args.out, "a") as out:
        for i in range(args.iterations):
            future = select_and_monitor_by_namespace_pattern_and_label(
                namespace_pattern=ns_pattern,
                label_selector=args.selector,
                max_timeout=args.recovery_time,
                v1_client=kubecli.cli,
            )
            pods = kubecli.select_pods_by_namespace_pattern_and_label(
                namespace_pattern=ns_pattern,
                label_selector=args.selector,
                field_selector="status.phase=Running",
            )
            random.shuffle(pods)
            victim = pods[0]
            kill_ts = time.time()
            kubecli.delete_pod(victim[0], victim[1])
            waited = wait_for_pods(kubecli, ns_pattern, args.selector, len(pods), args.duration, args.timeout)
            head = {"iteration": i, "victim": victim[0], "kill_ts": kill_ts, "wait_for_pods": waited}
            _record(out, head, future.result(), args.wait_duration)


def _record(out: TextIO, head: dict[str, Any], snapshot: Any, wait_duration: float) -> None:
    """One iteration's line: `head` and what Krkn records as ``affected_pods`` (the monitor
    snapshot's ``get_pods_status()``), then the scenario's wait between iterations."""
    status = snapshot.get_pods_status()
    record = {
        **head,
        "recovered": [
            {
                "pod": a.pod_name,
                "rescheduling": a.pod_rescheduling_time,
                "readiness": a.pod_readiness_time,
                "total": a.total_recovery_time,
            }
            for a in status.recovered
        ],
        "unrecovered": [a.pod_name for a in status.unrecovered],
        "done_ts": time.time(),
    }
    out.write(json.dumps(record) + "\n")
    out.flush()
    logging.info("iteration %d: %s", head["iteration"], record)
    if wait_duration:
        time.sleep(wait_duration)


def container_scenario(kubecli: KrknKubernetes, args: argparse.Namespace, ns_pattern: str) -> None:
    """Krkn's container scenario plugin (krkn/scenario_plugins/container), its calls in its
    order, one container per iteration: start the pod monitor
    (``expected_recovery_time`` = ``--recovery-time``), list the pods by label
    (``list_pods``), pick one at random, run ``kill <action>`` in the named container through
    ``exec_cmd_in_pod`` (retried up to 5 times while it answers something, as the plugin's
    ``retry_container_killing`` does), then take the monitor's snapshot and its
    ``get_pods_status()``, which is what Krkn records as ``affected_pods``. Note: the plugin's
    command is ``kill <action>``, i.e. SIGTERM to the PID numbered <action> (its default 1:
    the namespace's init) rather than signal <action> to the main process."""
    kill_action = "kill " + str(args.container_kill)
    with open(args.out, "a") as out:
        for i in range(args.iterations):
            future = select_and_monitor_by_namespace_pattern_and_label(
                namespace_pattern=ns_pattern,
                label_selector=args.selector,
                max_timeout=args.recovery_time,
                v1_client=kubecli.cli,
            )
            pods = kubecli.list_pods(namespace=args.namespace, label_selector=args.selector)
            victim = pods[random.randint(0, len(pods) - 1)]
            kill_ts = time.time()
            responses = []
            for _ in range(5):
                response = kubecli.exec_cmd_in_pod(kill_action, victim, args.namespace, args.container)
                responses.append(response)
                if not response:
                    break
                if "unauthorized" in response.lower() or "authorization" in response.lower():
                    time.sleep(2)
            head = {"iteration": i, "victim": victim, "kill_ts": kill_ts, "responses": responses}
            _record(out, head, future.result(), args.wait_duration)


if __name__ == "__main__":
    main()
