"""`make test` runs the suite on pytest-xdist workers with `--dist loadgroup`, and relies on it to
run the real-node tests one after another on one worker (tests/e2e/conftest.py: they share
kubelets, containerds and the audit webhook's port, and some stop them). pytest 9.2 with
pytest-xdist 3.8 ignored every group without a word; this runs a small suite the way `make
test` does, with a group added by a conftest hook as ours is, and checks where its tests ran."""

from __future__ import annotations

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
