"""What one pytest run shares between its processes (the controller and pytest-xdist's workers):
a folder named in the environment, made by the controller before the workers start."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "AFTERSHOCK_TEST_RUN_DIR"
CLUSTER_STARTED = "cluster-started"


def folder() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def note_cluster_started() -> None:
    """This run started the test bed (no cluster answered): the run tears it down at its end."""
    where = folder()
    if where is not None:
        (where / CLUSTER_STARTED).touch()


def cluster_started() -> bool:
    where = folder()
    return where is not None and (where / CLUSTER_STARTED).exists()
