"""Fixtures every end-to-end test uses: one cluster per session, a fresh namespace per test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import run_state
from tests.e2e import realnode, testbed
from tests.e2e.operator import OperatorProcess, Subject, start_subject

#: pytest-xdist (`make test` runs `--dist loadgroup`): the real-node tests share one kubelet and
#: one containerd, and some kill them mid-trial, so they run one after another on one worker
#: while the kwok-only tests run beside them.
REALNODE_GROUP = pytest.mark.xdist_group("realnode")
#: The kind path's test (test_kind.py) runs on a worker of its own from the start of the run: it is
#: the longest test (a cluster of its own, built and torn down), mostly waiting on its own dockerd.
KIND_GROUP = pytest.mark.xdist_group("kind")
#: The tests whose operator binds the test bed's audit webhook receiver (one fixed loopback port:
#: the API server's webhook configuration names it), one after another on one worker. The
#: remediator evaluation among them runs on real nodes of its own (real-2, real-3, real-4), so
#: this group runs beside the real-node group, not after it in its worker (ADR 0017).
AUDIT_WEBHOOK_GROUP = pytest.mark.xdist_group("audit-webhook")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
        # An item is in one xdist group only: the remediator evaluation is both real-node and
        # audit webhook, and its nodes are its own (the audit webhook group's).
        if item.get_closest_marker("audit_webhook"):
            item.add_marker(AUDIT_WEBHOOK_GROUP)
        elif item.get_closest_marker("realnode"):
            item.add_marker(REALNODE_GROUP)
        if item.get_closest_marker("kind") is not None:
            item.add_marker(KIND_GROUP)

    # The kind test first, then the real-node group, then the audit webhook group: xdist hands
    # out the first unit of work to each worker in collection order, so the longest test and
    # the two longest groups (one worker each, one test after another) start at once instead of
    # extending the run's tail (a stable sort keeps the rest in order).
    def first(item: pytest.Item) -> tuple[bool, bool, bool]:
        groups = {m.args[0] for m in item.iter_markers("xdist_group") if m.args}
        return (
            item.get_closest_marker("kind") is None,
            "realnode" not in groups,
            "audit-webhook" not in groups,
        )

    items.sort(key=first)
    # Real-node tests fail, never skip, when the node is missing on a machine that can host it
    # (root, Debian). Only where it cannot exist are they deselected, with the reason printed.
    # The kind path's test (test_kind.py) needs the same: root to run dockerd, Debian's packages.
    real = [i for i in items if i.get_closest_marker("realnode") or i.get_closest_marker("kind")]
    if real and (why := realnode.cannot_host()) is not None:
        config.hook.pytest_deselected(items=real)
        items[:] = [i for i in items if i not in real]
        _DESELECTED_WHY.append(
            f"{len(real)} real-node and kind tests deselected: this machine cannot host them ({why})"
        )


_DESELECTED_WHY: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _DESELECTED_WHY:
        terminalreporter.write_line(line, yellow=True)


@pytest.fixture(scope="session")
def real_node(cluster: testbed.Cluster) -> None:
    """Node real-0 (hack/testbed/realnode.sh) Ready, and the images built here imported."""
    got = cluster.kubectl("get", "node", realnode.NODE, "-o", "name", check=False)
    if got.returncode != 0:
        pytest.fail(
            f"node {realnode.NODE} is missing although this machine can host it: see "
            "~/.cache/aftershock/realnode/logs/ (hack/testbed/cluster.sh up starts it)"
        )
    cluster.kubectl("wait", "--for=condition=Ready", f"node/{realnode.NODE}", "--timeout=120s")
    realnode.import_images()


@pytest.fixture(scope="session")
def real_node_1(cluster: testbed.Cluster, real_node: None) -> Iterator[None]:
    """A second real node, real-1, beside real-0 (opt-in: only the tests that ask pay for it,
    ~20 s warm). Removed at the end of the session unless the cluster is kept."""
    with testbed.machine_lock("real-node-1"):
        realnode.start_second_node(cluster)
    cluster.kubectl("wait", "--for=condition=Ready", f"node/{realnode.NODE_1}", "--timeout=120s")
    yield
    if os.environ.get("AFTERSHOCK_KEEP_CLUSTER") != "1":
        realnode.stop_second_node(cluster)


def _extra_node(cluster: testbed.Cluster, instance: dict[str, str]) -> Iterator[None]:
    name = instance["AFTERSHOCK_REAL_NODE_NAME"]
    with testbed.machine_lock(f"real-node-{name}"):
        realnode.start_second_node(cluster, instance)
    cluster.kubectl("wait", "--for=condition=Ready", f"node/{name}", "--timeout=120s")
    yield
    if os.environ.get("AFTERSHOCK_KEEP_CLUSTER") != "1":
        realnode.stop_second_node(cluster, instance)


@pytest.fixture(scope="session")
def real_node_2(cluster: testbed.Cluster, real_node: None) -> Iterator[None]:
    """real-2, -3 and -4 (opt-in, as real-1: only the remediator evaluation pays for them): its
    subject's fixed members on real-2 and its floating one moving real-3 -> real-4 -> real-3 ...
    trial after trial, on nodes no other test touches."""
    yield from _extra_node(cluster, realnode.THIRD)


@pytest.fixture(scope="session")
def real_node_3(cluster: testbed.Cluster, real_node: None) -> Iterator[None]:
    yield from _extra_node(cluster, realnode.FOURTH)


@pytest.fixture(scope="session")
def real_node_4(cluster: testbed.Cluster, real_node: None) -> Iterator[None]:
    yield from _extra_node(cluster, realnode.FIFTH)


@pytest.fixture(scope="session")
def helm() -> str:
    """A real helm, built from Go modules by hack/tools/helm/build.sh (cached)."""
    out = testbed.run([str(testbed.REPO / "hack" / "tools" / "helm" / "build.sh")], timeout=1800)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def cluster() -> testbed.Cluster:
    """The local test bed. Started when none runs, and then torn down when the whole run ends
    (tests/conftest.py; set AFTERSHOCK_KEEP_CLUSTER=1 to keep it for the next run). Parallel
    workers each ask for it: the lock lets the first start it and the others find it running."""
    with testbed.machine_lock("cluster"):
        c = testbed.start_or_reuse()
    if c.started_here:
        run_state.note_cluster_started()
    return c


@pytest.fixture
def namespace(cluster: testbed.Cluster) -> Iterator[str]:
    name = testbed.unique("e2e")
    cluster.kubectl("create", "namespace", name)
    testbed.wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        60,
        what=f"default ServiceAccount in {name}",
    )
    yield name
    # With the operator gone, nobody would remove its finalizer and the namespace would hang
    # in Terminating: take the finalizers off first.
    for campaign in cluster.kubectl("get", "campaigns", "-n", name, "-o", "name", check=False).stdout.split():
        cluster.kubectl(
            "patch",
            campaign,
            "-n",
            name,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator_identity(cluster: testbed.Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """CRD and the operator's own ServiceAccount + RBAC from manifests/, and a kubeconfig
    holding that ServiceAccount's token: the operator under test never uses the admin cert."""
    return testbed.install_operator_identity(
        cluster, tmp_path_factory.mktemp("operator") / "operator.kubeconfig"
    )


@pytest.fixture
def start_operator(
    operator_identity: str, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start the operator (a real process) watching the test's namespace."""
    started: list[OperatorProcess] = []

    def start(*extra: str, namespaces: list[str] | None = None, db: Path | None = None) -> OperatorProcess:
        op = OperatorProcess(
            kubeconfig=operator_identity,
            db=db or tmp_path / "ledger.db",
            namespaces=namespaces or [namespace],
            log_path=tmp_path / f"operator-{len(started)}.log",
            extra_args=list(extra),
        )
        op.start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


@pytest.fixture
def subject(cluster: testbed.Cluster, namespace: str) -> Iterator[Subject]:
    s = start_subject(cluster, namespace)
    yield s
    s.close()
