"""API requests per client and verb, counted by the API server itself.

The audit log would say who sent what, but only on a test bed created with the audit policy
(`hack/testbed/cluster.sh audit-log`); a running test bed shared with other work cannot be
recreated for a benchmark. `apiserver_request_total` has verbs but no client: its deltas include
the controllers, kwok and whoever else uses the cluster at the same time.

So each tool runs under its own ServiceAccount, and the harness installs one API Priority and
Fairness FlowSchema per (tool, verb): APF classifies every request by user and verb before it
runs, and the server's `/metrics` counts dispatched requests per FlowSchema
(`apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}`). The schemas send the
requests to the `exempt` priority level, so the classification adds no queueing. A watch counts
once, when it is established. Requests that APF does not see (none for these clients) would be
missing; requests rejected before APF (authentication failures) too.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from typing import Any

from tests.e2e import testbed

VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
#: Names and labels of everything a bench run makes. Two runs at once on a shared test bed (other
#: engineers' benches) each take a prefix of their own (AFTERSHOCK_BENCH_PREFIX): a run's teardown
#: deletes what carries its prefix, and would take the other run's identities and counters.
PREFIX = os.environ.get("AFTERSHOCK_BENCH_PREFIX") or "aftershock-bench"
_LINE = re.compile(r"^(\w+)\{([^}]*)\}\s+([0-9.e+]+)$")


def _schema(tool: str, verb: str, sa_namespace: str, sa_name: str, precedence: int) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "subjects": [
            {"kind": "ServiceAccount", "serviceAccount": {"namespace": sa_namespace, "name": sa_name}}
        ],
    }
    if verb == "nonresource":
        rule["nonResourceRules"] = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
    else:
        rule["resourceRules"] = [
            {
                "verbs": [verb],
                "apiGroups": ["*"],
                "resources": ["*"],
                "namespaces": ["*"],
                "clusterScope": True,
            }
        ]
    return {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": f"{PREFIX}-{tool}-{verb}", "labels": {"app.kubernetes.io/part-of": PREFIX}},
        "spec": {
            "priorityLevelConfiguration": {"name": "exempt"},
            "matchingPrecedence": precedence,
            "rules": [rule],
        },
    }


def install(cluster: testbed.Cluster, tool: str, sa_namespace: str, sa_name: str) -> None:
    """FlowSchemas that count `sa_namespace/sa_name`'s requests per verb under `tool`'s name."""
    docs = [_schema(tool, v, sa_namespace, sa_name, 50) for v in (*VERBS, "nonresource")]
    cluster.apply("\n---\n".join(json.dumps(d) for d in docs))


def uninstall(cluster: testbed.Cluster) -> None:
    cluster.kubectl(
        "delete",
        "flowschemas",
        "-l",
        f"app.kubernetes.io/part-of={PREFIX}",
        "--ignore-not-found",
        check=False,
    )


def scrape(cluster: testbed.Cluster) -> dict[str, Any]:
    """The counters this module compares: per FlowSchema, and `apiserver_request_total` per verb."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    per_schema: Counter[str] = Counter()
    all_verbs: Counter[str] = Counter()
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        name, labels, value = m.group(1), m.group(2), float(m.group(3))
        if name == "apiserver_flowcontrol_dispatched_requests_total":
            fs = re.search(r'flow_schema="([^"]*)"', labels)
            if fs and fs.group(1).startswith(PREFIX + "-"):
                per_schema[fs.group(1)[len(PREFIX) + 1 :]] += int(value)
        elif name == "apiserver_request_total":
            verb = re.search(r'verb="([^"]*)"', labels)
            if verb:
                all_verbs[verb.group(1)] += int(value)
    return {"schemas": per_schema, "all": all_verbs}


def delta(before: dict[str, Any], after: dict[str, Any], tool: str) -> dict[str, Any]:
    """`tool`'s requests by verb between two scrapes, and every client's (incl. controllers)."""
    mine = {
        v: after["schemas"][f"{tool}-{v}"] - before["schemas"][f"{tool}-{v}"] for v in (*VERBS, "nonresource")
    }
    everyone = {v: after["all"][v] - before["all"][v] for v in after["all"]}
    return {
        "tool": {k: n for k, n in mine.items() if n},
        "all_clients": {k: n for k, n in everyone.items() if n},
    }
