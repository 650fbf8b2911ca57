"""The Chaos Toolkit experiment the comparison runs, and how its journal is read.

The experiment is the one a Chaos Toolkit user writes for "kill a pod, the StatefulSet recovers"
with chaostoolkit-kubernetes:

- steady-state hypothesis: ``statefulset_fully_available`` (a watch on the StatefulSet that returns
  once ``status.readyReplicas == spec.replicas``), tolerance ``true``;
- method: ``terminate_pods`` (label selector, ``qty`` 1, ``rand``, ``grace_period`` 0), then
  ``statefulset_not_fully_available`` so that the hypothesis is not re-checked against a
  StatefulSet status that has not yet noticed the kill;
- after the method ``chaos run`` checks the hypothesis again: that probe waits until the
  StatefulSet reports every replica Ready again.

Its recovery time, as the journal tells it: ``end`` of the after-method hypothesis probe minus
``end`` of the terminate action (the delete has been acknowledged when the action ends). The
journal has no "recovery" field; this is the closest reading, and the kindest to the tool.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def build_experiment(
    namespace: str, selector: str, statefulset: str = "tikv", *, wait_for_disruption: bool = True
) -> dict[str, Any]:
    """The experiment; without `wait_for_disruption` the method is the terminate action alone
    (the shortest experiment a user writes, and the after-method hypothesis may then pass on a
    StatefulSet status that has not noticed the kill yet)."""

    def sts_probe(name: str, func: str, timeout: int) -> dict[str, Any]:
        return {
            "type": "probe",
            "name": name,
            "provider": {
                "type": "python",
                "module": "chaosk8s.statefulset.probes",
                "func": func,
                "arguments": {"name": statefulset, "ns": namespace, "timeout": timeout},
            },
        }

    return {
        "version": "1.0.0",
        "title": "Killing one TiKV pod leaves the StatefulSet whole again",
        "description": "aftershock benchmark: one pod kill, wait for full recovery",
        "tags": ["kubernetes", "tikv"],
        "steady-state-hypothesis": {
            "title": "every TiKV replica is Ready",
            "probes": [
                {**sts_probe("tikv-fully-available", "statefulset_fully_available", 60), "tolerance": True}
            ],
        },
        "method": [
            {
                "type": "action",
                "name": "terminate-one-tikv-pod",
                "provider": {
                    "type": "python",
                    "module": "chaosk8s.pod.actions",
                    "func": "terminate_pods",
                    "arguments": {
                        "label_selector": selector,
                        "ns": namespace,
                        "qty": 1,
                        "rand": True,
                        "grace_period": 0,
                    },
                },
            },
            *(
                [sts_probe("tikv-disrupted", "statefulset_not_fully_available", 30)]
                if wait_for_disruption
                else []
            ),
        ],
        "rollbacks": [],
    }


def _ts(value: str) -> float:
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def read_journal(journal: dict[str, Any]) -> dict[str, Any]:
    """What one run recorded: its status, the pod it killed, and its recovery time."""
    run = {r["activity"]["name"]: r for r in journal.get("run", [])}
    kill = run.get("terminate-one-tikv-pod")
    after = ((journal.get("steady_states") or {}).get("after") or {}).get("probes") or []
    recovery = None
    if kill is not None and after and after[0].get("status") == "succeeded":
        recovery = _ts(after[0]["end"]) - _ts(kill["end"])
    disrupted = run.get("tikv-disrupted")
    return {
        "kill_started": _ts(kill["start"]) if kill is not None else None,
        "disrupted_probe": None if disrupted is None else disrupted.get("status"),
        "status": journal.get("status"),
        "deviated": journal.get("deviated"),
        "victims": (kill or {}).get("output") or [],
        "recovery": recovery,
        "after_probe_duration": after[0].get("duration") if after else None,
        "duration": journal.get("duration"),
    }
