"""Fixtures every end-to-end test uses: one cluster per session, a fresh namespace per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.e2e import testbed


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster() -> Iterator[testbed.Cluster]:
    """The local test bed. Started when none runs, and then torn down at the end (set
    AFTERSHOCK_KEEP_CLUSTER=1 to keep it for the next run)."""
    c = testbed.start_or_reuse()
    yield c
    if c.started_here and os.environ.get("AFTERSHOCK_KEEP_CLUSTER") != "1":
        testbed.stop(c)


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
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
