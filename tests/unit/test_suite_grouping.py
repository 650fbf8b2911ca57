"""`make test` runs the suite on pytest-xdist workers with `--dist loadgroup`, and relies on it to
run the real-node tests one after another on one worker (tests/e2e/conftest.py: they share
kubelets, containerds and the audit webhook's port, and some stop them). pytest 9.2 with
pytest-xdist 3.8 ignored every group without a word; this runs a small suite the way `make
test` does, with a group added by a conftest hook as ours is, and checks where its tests ran."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONFTEST = """
import pytest

GROUP = pytest.mark.xdist_group("together")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("grouped"):
            item.add_marker(GROUP)
"""

TESTS = """
import os
import time

import pytest


@pytest.mark.grouped
@pytest.mark.parametrize("i", range(6))
def test_grouped(i):
    time.sleep(0.2)  # long enough that an idle worker would take the next one
    print("WORKER", i, os.environ["PYTEST_XDIST_WORKER"])


@pytest.mark.parametrize("i", range(6))
def test_free(i):
    time.sleep(0.2)
"""


def test_an_xdist_group_runs_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_suite.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    grouped: one worker\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "3", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider",
         "-rP", "test_suite.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    ran = [line.split()[0] for line in lines if "PASSED test_suite.py::test_grouped" in line]
    assert len(ran) == 6, done.stdout
    assert len(set(ran)) == 1, ("the group's tests ran on several workers", ran)
    assert all("@together" in line for line in lines if "::test_grouped" in line), done.stdout


LONG_CONFTEST = """
import pytest

from tests import scheduling


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("long"):
            item.add_marker(pytest.mark.xdist_group("audit-webhook"))
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def pytest_xdist_make_scheduler(config, log):
    return scheduling.LongGroupsAlone(config, log) if {0} else None
"""

LONG_TESTS = """
import os
import time

import pytest


@pytest.mark.long
def test_long_first():
    time.sleep(4)  # the other worker runs every short test meanwhile
    print("LONG", os.environ["PYTEST_XDIST_WORKER"])


@pytest.mark.long
def test_long_second():
    print("LONG", os.environ["PYTEST_XDIST_WORKER"])


@pytest.mark.parametrize("i", range(6))
def test_short(i):
    time.sleep(0.1)
    print("SHORT", i, os.environ["PYTEST_XDIST_WORKER"])
"""


def _long_group_run(tmp_path: Path, ours: bool) -> tuple[set[str], set[str]]:
    """The workers of the long group's tests and of the short tests."""
    tmp_path.mkdir()
    (tmp_path / "conftest.py").write_text(LONG_CONFTEST.format(ours))
    (tmp_path / "test_suite.py").write_text(LONG_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    long: the long group\n")
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider",
         "-p", "no:randomly", "-rP", "test_suite.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    words = [line.split() for line in done.stdout.splitlines()]
    long = {w[-1] for w in words if w[:1] == ["LONG"]}
    short = {w[-1] for w in words if w[:1] == ["SHORT"]}
    assert long, done.stdout
    assert short, done.stdout
    return long, short


def test_a_worker_running_a_long_group_is_given_nothing_else(tmp_path: Path) -> None:
    """tests/scheduling.py: xdist alone queues short tests behind the long group's (its worker's
    queue is down to two), to run at the end; ours leaves them to the free worker."""
    long, short = _long_group_run(tmp_path / "ours", True)
    assert len(long) == 1, long
    assert not (long & short), (long, short)
    long, short = _long_group_run(tmp_path / "xdist", False)
    assert long & short, ("plain loadgroup no longer queues short tests behind the group", long, short)
