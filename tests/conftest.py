"""The run as a whole, in the controller process (the only one without pytest-xdist, the one
that starts the workers with it): the test bed is torn down once, after every worker is done."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import pytest

from tests import run_state, scheduling


def _controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` with the long groups kept alone on their workers (tests/scheduling.py)."""
    if config.getoption("dist") == "loadgroup":
        return scheduling.LongGroupsAlone(config, log)
    return None


def pytest_configure(config: pytest.Config) -> None:
    if _controller(config) and run_state.folder() is None:
        # Workers inherit the environment: they find the run's folder through it.
        os.environ[run_state.ENV] = tempfile.mkdtemp(prefix="aftershock-run-")


def pytest_unconfigure(config: pytest.Config) -> None:
    if not _controller(config):
        return
    where = run_state.folder()
    if where is None:
        return
    if run_state.cluster_started() and os.environ.get("AFTERSHOCK_KEEP_CLUSTER") != "1":
        from tests.e2e import testbed

        testbed.run([str(testbed.TESTBED / "cluster.sh"), "down"], check=False, timeout=300)
    shutil.rmtree(where, ignore_errors=True)
    os.environ.pop(run_state.ENV, None)
