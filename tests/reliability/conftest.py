"""The reliability suite (`make reliability`): the operator under faults, load and hostile input,
on a cluster of its own that the suite starts and tears down (set RELIABILITY_KEEP_CLUSTER=1 to
keep it). Counts are configurable through RELIABILITY_* variables (docs/guarantees.md); the
summary table is printed at the end of the run and written to $RELIABILITY_SUMMARY
(default: reliability-summary.json in pytest's base temporary directory)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import realnode, testbed
from tests.reliability import bed
from tests.reliability.tally import TALLY
from tests.reliability.watchers import AuditLog


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise pytest.UsageError(f"${name} must be an integer, got {value!r}") from None


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise pytest.UsageError(f"${name} must be a number, got {value!r}") from None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the suite, and deselect (not skip) the tests of a fault kind that this run does not
    inject (RELIABILITY_FAULTS): they are not run, rather than run and excused."""
    kinds = set(os.environ.get("RELIABILITY_FAULTS", "").split(",")) - {""}
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        if "/reliability/" in str(item.fspath):
            item.add_marker(pytest.mark.reliability)
        needs = item.get_closest_marker("fault_kind")
        if kinds and needs is not None and needs.args[0] not in kinds:
            dropped.append(item)
        else:
            keep.append(item)
    # Where this machine cannot host a real node (not root, not Debian), the tests that need
    # one are deselected with the reason printed, as in tests/e2e; where it can, they must pass.
    real = [i for i in keep if i.get_closest_marker("realnode")]
    if real and (why := realnode.cannot_host()) is not None:
        dropped += real
        keep = [i for i in keep if i not in real]
        _DESELECTED_WHY.append(
            f"{len(real)} real-node reliability tests deselected: no real node here ({why})"
        )
    _NEEDS_REAL_NODE[:] = [bool(real) and not _DESELECTED_WHY]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


_DESELECTED_WHY: list[str] = []
#: Whether the selected tests need the suite's real node (its cluster starts with one then).
_NEEDS_REAL_NODE: list[bool] = [False]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _DESELECTED_WHY:
        terminalreporter.write_line(line, yellow=True)
    if not TALLY.touched:
        return
    terminalreporter.write_sep("=", "reliability summary")
    terminalreporter.write_line(TALLY.render())
    target = os.environ.get("RELIABILITY_SUMMARY")
    path = Path(target) if target else None
    if path is None:
        base = terminalreporter.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
        path = Path(base) / "reliability-summary.json"
    TALLY.write_json(path)
    terminalreporter.write_line(f"(also written to {path})")


@pytest.fixture(scope="session")
def cluster() -> Iterator[testbed.Cluster]:
    """The suite's own cluster: its API server and etcd get killed, so never the shared one."""
    c = bed.start_cluster(real_node=_NEEDS_REAL_NODE[0])
    yield c
    if os.environ.get("RELIABILITY_KEEP_CLUSTER") != "1":
        bed.stop_cluster()


@pytest.fixture(scope="session")
def real_node(cluster: testbed.Cluster) -> None:
    """The suite's own node real-0 (a second realnode.sh instance) Ready, subject images in."""
    got = cluster.kubectl("get", "node", realnode.NODE, "-o", "name", check=False)
    if got.returncode != 0:
        pytest.fail(
            f"node {realnode.NODE} is missing from the suite's cluster although this machine can host "
            f"it: see ~/.cache/aftershock/realnode-{bed.CLUSTER_NAME}/logs/"
        )
    cluster.kubectl("wait", "--for=condition=Ready", f"node/{realnode.NODE}", "--timeout=120s")
    bed.import_subject_images()


@pytest.fixture(scope="session")
def control_plane(cluster: testbed.Cluster) -> bed.ControlPlane:
    return bed.ControlPlane()


@pytest.fixture(scope="session")
def audit(cluster: testbed.Cluster) -> AuditLog:
    return AuditLog(bed.audit_log_path())


@pytest.fixture(scope="session")
def operator_identity(cluster: testbed.Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """CRD, the operator's ServiceAccount and cluster-wide RBAC from manifests/, and a kubeconfig
    with that ServiceAccount's token: the operator under test never holds the admin certificate."""
    return testbed.install_operator_identity(
        cluster, tmp_path_factory.mktemp("identity") / "operator.kubeconfig"
    )


def make_namespace(cluster: testbed.Cluster, prefix: str) -> str:
    name = testbed.unique(prefix)
    cluster.kubectl("create", "namespace", name)
    testbed.wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        60,
        what=f"default ServiceAccount in {name}",
    )
    return name


def drop_namespace(cluster: testbed.Cluster, name: str) -> None:
    """Delete a test namespace; with no operator left to remove its finalizer, take it off first."""
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


@pytest.fixture
def namespace(cluster: testbed.Cluster) -> Iterator[str]:
    name = make_namespace(cluster, "rel")
    yield name
    drop_namespace(cluster, name)
