"""Fixtures several unit test modules share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.unit.test_engine_runner import Harness

from aftershock.ledger import Ledger


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    """The engine's harness (`test_engine_runner.Harness`) on a ledger file of its own, with a
    StatefulSet ``tikv`` of 3 pods in the fake cluster. A module may define its own ``h``."""
    async with await Ledger.open(tmp_path / "ledger.db") as ledger:
        harness = Harness(ledger=ledger)
        harness.cluster.add_statefulset("tikv", 3)
        yield harness
        await harness.cluster.close()
