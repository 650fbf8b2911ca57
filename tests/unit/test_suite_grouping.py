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
    time.sleep(1)
    print("LONG", time.time(), 0, os.environ["PYTEST_XDIST_WORKER"])


@pytest.mark.long
def test_long_second():
    time.sleep(1)
    print("LONG", time.time(), 1, os.environ["PYTEST_XDIST_WORKER"])


@pytest.mark.parametrize("i", range(12))
def test_short(i):
    time.sleep(0.3)  # 12 of them: 3.6 s on one worker, longer than the long group's 2 s
    print("SHORT", time.time(), i, os.environ["PYTEST_XDIST_WORKER"])
"""


def _long_group_run(
    tmp_path: Path, ours: bool
) -> tuple[list[tuple[float, int, str]], list[tuple[float, int, str]]]:
    """(end, index, worker) of the long group's tests and of the short tests."""
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
    long = sorted((float(w[1]), int(w[2]), w[3]) for w in words if w[:1] == ["LONG"])
    short = sorted((float(w[1]), int(w[2]), w[3]) for w in words if w[:1] == ["SHORT"])
    assert len(long) == 2, done.stdout
    assert len(short) == 12, done.stdout
    return long, short


def test_a_worker_running_a_long_group_is_given_nothing_from_the_front_of_the_queue(tmp_path: Path) -> None:
    """tests/scheduling.py: xdist alone gives the long group's worker tests from the front of the
    queue at the start, to run only after the group; ours leaves them to the free worker. A
    worker holds its last test back until it has a next one, so ours gives the group's worker
    one unit from the queue's tail (in `make test` a unit test) once the group is down to its
    last test; without it that test would wait for the end of the run."""
    long, short = _long_group_run(tmp_path / "ours", True)
    (worker,) = {w for _, _, w in long}
    beside = [(t, i) for t, i, w in short if w == worker]
    assert beside, (long, short)
    assert beside[0][1] == 11, (long, short)  # the tail's, and the first there
    assert all(t > long[-1][0] for t, _ in beside), (long, short)  # after the group
    assert long[-1][0] < short[-1][0], (long, short)  # its last test not held back to the end
    long, short = _long_group_run(tmp_path / "xdist", False)
    (worker,) = {w for _, _, w in long}
    beside = [(t, i) for t, i, w in short if w == worker]
    assert beside, (long, short)
    assert beside[0][1] < 11, (
        "plain loadgroup no longer queues from the front behind the group",
        long,
        short,
    )
