"""Load: many Campaigns at once, and one long campaign, with the operator as a real process.

- RELIABILITY_LOAD_CAMPAIGNS (100) Campaigns created at once, spread over
  RELIABILITY_LOAD_NAMESPACES (10) namespaces that each hold a simulated TiKV; each runs
  RELIABILITY_LOAD_TRIALS (1) trial(s). Campaigns of one namespace share one subject, so the
  subject lock makes them take turns: the test is that none is lost, starved or run twice.
- One campaign of RELIABILITY_BIG_TRIALS (1000) trials, interval 0. By default a dry run
  (RELIABILITY_BIG_DRY_RUN=1): the whole trial loop, the ledger's two commits per trial and
  the status patches, without the ~2 s a real kill and recovery take on this test bed; set it
  to 0 for real kills (about 35 minutes for 1000 trials here).

Afterwards: every campaign Succeeded with exactly its trials in the ledger, the status is the
ledger's projection, every operator DELETE is accounted for by a ledger attempt, the status
patches per campaign (aftershock_status_patches_total on the operator's --metrics-port) grow at
most linearly with trials and the status object does not grow with them.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import testbed
from tests.e2e.operator import campaign, tikv_statefulset
from tests.reliability import invariants
from tests.reliability.conftest import drop_namespace, env_float, env_int, make_namespace
from tests.reliability.proc import Operator
from tests.reliability.tally import TALLY
from tests.reliability.watchers import AuditLog

pytestmark = pytest.mark.reliability

CAMPAIGNS = env_int("RELIABILITY_LOAD_CAMPAIGNS", 100)
NAMESPACES = env_int("RELIABILITY_LOAD_NAMESPACES", 10)
LOAD_TRIALS = env_int("RELIABILITY_LOAD_TRIALS", 1)
BIG_TRIALS = env_int("RELIABILITY_BIG_TRIALS", 1000)
BIG_DRY_RUN = env_int("RELIABILITY_BIG_DRY_RUN", 1) == 1
BUDGET = env_float("RELIABILITY_LOAD_BUDGET_SECONDS", 900)


def _status_patches(port: int) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "aftershock_status_patches":
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[(s.labels["namespace"], s.labels["campaign"])] = s.value
    return out


def _patch_bound(trials: int) -> int:
    """Status patches a campaign may cost: a handful to start and finish, and a few per trial
    (gate, kill, outcome). Waiting for the subject lock must not add any (unchanged status is
    not re-sent), however long the wait."""
    return 12 + 4 * trials


def _list_campaigns(cluster: testbed.Cluster, namespaces: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    api = k8s.CustomObjectsApi(cluster.api_client())
    found = {}
    for ns in namespaces:
        for obj in api.list_namespaced_custom_object("aftershock.dev", "v1alpha1", ns, "campaigns")["items"]:
            found[(ns, obj["metadata"]["name"])] = obj
    return found


def test_hundred_campaigns_at_once(
    cluster: testbed.Cluster, operator_identity: str, audit: AuditLog, tmp_path: Path
) -> None:
    namespaces = [make_namespace(cluster, "load") for _ in range(NAMESPACES)]
    op = Operator(
        kubeconfig=operator_identity, db=tmp_path / "ledger.db", workdir=tmp_path, namespaces=namespaces
    )
    try:
        for ns in namespaces:
            cluster.apply(tikv_statefulset(), namespace=ns)
        for ns in namespaces:
            cluster.kubectl("rollout", "status", "statefulset/tikv", "-n", ns, "--timeout=180s", timeout=200)
        audit.mark()
        op.start()
        names = {ns: [] for ns in namespaces}  # type: dict[str, list[str]]
        docs = []
        for i in range(CAMPAIGNS):
            ns = namespaces[i % NAMESPACES]
            name = f"load-{i:03d}"
            names[ns].append(name)
            body = campaign(
                name,
                ns,
                None,
                trials=LOAD_TRIALS,
                steadyState={"timeoutSeconds": 600, "stableSeconds": 0},
                # Ten Campaigns take turns on each subject: a short settle window keeps the turns
                # short (what is measured here is the operator's load, not the subject).
                recovery={"timeoutSeconds": 120, "settleSeconds": 2},
            )
            docs.append(body)
        # "At once": one kubectl apply of every Campaign.
        cluster.kubectl("apply", "-f", "-", input_="\n---\n".join(json.dumps(d) for d in docs), timeout=300)
        start = time.monotonic()

        def all_finished() -> bool:
            op.check_alive()
            objs = _list_campaigns(cluster, namespaces)
            return len(objs) == CAMPAIGNS and all(
                (o.get("status") or {}).get("phase") in ("Succeeded", "Failed") for o in objs.values()
            )

        testbed.wait_for(all_finished, BUDGET, interval=2.0, what=f"{CAMPAIGNS} campaigns finished")
        elapsed = time.monotonic() - start
        time.sleep(2.0)
        objs = _list_campaigns(cluster, namespaces)
        patches = _status_patches(op.metrics_port)
    finally:
        op.stop()
    problems: list[str] = []
    lost = duplicates = unintended = 0
    for ns in namespaces:
        views, integrity = invariants.read_ledger(op.db, ns, names[ns])
        assert integrity == "ok"
        for name in names[ns]:
            status = objs[(ns, name)].get("status") or {}
            if status.get("phase") != "Succeeded":
                problems.append(f"{ns}/{name}: {status.get('phase')}: {status.get('message')}")
            view = views.get(name)
            if view is None:
                problems.append(f"{ns}/{name}: not in the ledger")
                lost += LOAD_TRIALS
                continue
            n_lost, n_dup, p = invariants.trial_accounting(view, LOAD_TRIALS)
            lost, duplicates = lost + n_lost, duplicates + n_dup
            problems += [f"{ns}/{name}: {x}" for x in p]
            problems += [f"{ns}/{name}: {x}" for x in invariants.status_matches_ledger(status, view)]
            count = patches.get((ns, name), 0)
            if count > _patch_bound(LOAD_TRIALS):
                problems.append(f"{ns}/{name}: {count:.0f} status patches for {LOAD_TRIALS} trial(s)")
        acc = invariants.kills_match_ledger(audit.pod_deletes(ns), list(views.values()), ns)
        unintended += len(acc.unintended)
        problems += acc.problems + acc.unintended
    TALLY.trials_lost += lost
    TALLY.duplicates += duplicates
    TALLY.unintended_kills += unintended
    TALLY.crashes += len(op.crashes)
    most = max(patches.values(), default=0)
    TALLY.note(
        f"load: {CAMPAIGNS} campaigns x {LOAD_TRIALS} trial(s) in {NAMESPACES} namespaces finished in "
        f"{elapsed:.0f}s; status patches per campaign at most {most:.0f}"
    )
    for ns in namespaces:
        drop_namespace(cluster, ns)
    assert not op.crashes
    assert not op.non_loopback_contacts()
    assert not problems, problems[:20]


def test_thousand_trial_campaign(
    cluster: testbed.Cluster, operator_identity: str, audit: AuditLog, tmp_path: Path
) -> None:
    ns = make_namespace(cluster, "big")
    op = Operator(kubeconfig=operator_identity, db=tmp_path / "ledger.db", workdir=tmp_path, namespaces=[ns])
    try:
        cluster.apply(tikv_statefulset(), namespace=ns)
        cluster.kubectl("rollout", "status", "statefulset/tikv", "-n", ns, "--timeout=180s", timeout=200)
        audit.mark()
        op.start()
        cluster.apply(
            campaign(
                "long",
                ns,
                None,
                trials=BIG_TRIALS,
                dryRun=BIG_DRY_RUN,
                intervalSeconds=0,
                steadyState={"timeoutSeconds": 300, "stableSeconds": 0},
                recovery={"timeoutSeconds": 120},
            )
        )
        start = time.monotonic()
        sizes: list[int] = []

        def finished() -> bool:
            op.check_alive()
            obj = k8s.CustomObjectsApi(cluster.api_client()).get_namespaced_custom_object(
                "aftershock.dev", "v1alpha1", ns, "campaigns", "long"
            )
            sizes.append(len(json.dumps(obj.get("status") or {})))
            return (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")

        testbed.wait_for(finished, BUDGET, interval=2.0, what=f"{BIG_TRIALS}-trial campaign finished")
        elapsed = time.monotonic() - start
        obj = k8s.CustomObjectsApi(cluster.api_client()).get_namespaced_custom_object(
            "aftershock.dev", "v1alpha1", ns, "campaigns", "long"
        )
        patches = _status_patches(op.metrics_port).get((ns, "long"), 0)
    finally:
        op.stop()
    status = obj.get("status") or {}
    views, integrity = invariants.read_ledger(op.db, ns, ["long"])
    view = views["long"]
    lost, duplicates, problems = invariants.trial_accounting(view, BIG_TRIALS)
    TALLY.trials_lost += lost
    TALLY.duplicates += duplicates
    TALLY.crashes += len(op.crashes)
    deletes = [d for d in audit.pod_deletes(ns) if d.by_operator]
    acc = invariants.kills_match_ledger(deletes, [view], ns)
    TALLY.unintended_kills += len(acc.unintended)
    TALLY.note(
        f"long campaign: {BIG_TRIALS} {'dry-run ' if BIG_DRY_RUN else ''}trials in {elapsed:.0f}s, "
        f"{patches:.0f} status patches ({patches / BIG_TRIALS:.2f} per trial), "
        f"status at most {max(sizes)} bytes"
    )
    drop_namespace(cluster, ns)
    assert status.get("phase") == "Succeeded", status
    assert integrity == "ok"
    assert not problems
    assert not invariants.status_matches_ledger(status, view)
    assert patches <= _patch_bound(BIG_TRIALS), patches
    # The status is a summary: it must not grow with the number of trials.
    assert max(sizes) < 8192, max(sizes)
    if BIG_DRY_RUN:
        assert not deletes, "a dry run deleted pods"
    else:
        assert not acc.unintended
        assert not acc.problems
    assert not op.crashes
