"""`tests/pdstub/store.py`, the stand-in tikv-server, run as a real process against the stand-in."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.pdstub import PdStandIn, Timing
from tests.pdstub.store import store_id_for_pod

STORE = Path(__file__).resolve().parents[1] / "pdstub" / "store.py"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def store_entry(base_url: str, store_id: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{base_url}/pd/api/v1/store/{store_id}", timeout=2) as r:
            entry: dict[str, Any] = json.loads(r.read())
            return entry
    except OSError:
        return None


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        # Isolated from the repository: `-I` and a clean environment; the file must stand alone.
        proc = subprocess.Popen(
            [sys.executable, "-I", str(STORE), *args],
            env={"PATH": os.environ.get("PATH", "")} | (env or {}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_registers_then_heartbeats_an_interval_later_and_stops_on_sigterm(
    spawn: Callable[..., subprocess.Popen[bytes]],
) -> None:
    with PdStandIn(timing=Timing.fast(0.05)) as pd:
        proc = spawn(
            "--pd",
            pd.base_url,
            "--store-id",
            "4",
            "--address",
            "tikv-1.p.ns.svc:20160",
            "--heartbeat-interval",
            "0.5",
        )
        wait_for(lambda: pd.bootstrapped, "PutStore")
        registered = store_entry(pd.base_url, 4)
        wait_for(lambda: "uptime" in (store_entry(pd.base_url, 4) or {}).get("status", {}), "a heartbeat")
        beating = store_entry(pd.base_url, 4)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)

    assert registered is not None
    assert beating is not None
    # The first report is PutStore alone: start set, no heartbeat yet (so no uptime).
    assert "last_heartbeat" not in registered["store"] or "uptime" not in registered["status"]
    assert registered["store"]["start_timestamp"] == beating["store"]["start_timestamp"]
    assert beating["store"]["last_heartbeat"] / 1e9 >= beating["store"]["start_timestamp"]
    assert beating["store"]["status_address"] == "tikv-1.p.ns.svc:20180"
    assert beating["store"]["state_name"] == "Up"
    assert rc == 0


def test_tolerates_pd_down_and_registers_once_it_is_up(spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    port = free_port()
    env = {
        "POD_NAME": "tikv-2",
        "POD_NAMESPACE": "tikv",
        "PDSTUB_PD_URL": f"http://127.0.0.1:{port}",
        "PDSTUB_HEARTBEAT_INTERVAL": "0.5",
    }
    proc = spawn(env=env)
    assert proc.stderr is not None
    proc.stderr.readline()  # one report failed: PD is not there yet
    with PdStandIn(timing=Timing.fast(0.05), port=port) as pd:
        wait_for(
            lambda: (store_entry(pd.base_url, 5) or {}).get("store", {}).get("state_name") == "Up",
            "store 5 Up",
        )
        entry = store_entry(pd.base_url, 5)
    assert proc.poll() is None  # still running
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert entry is not None
    assert entry["store"]["address"] == "tikv-2.tikv-peer.tikv.svc:20160"


@pytest.mark.parametrize(
    ("pod", "store_id"), [("tikv-0", 1), ("tikv-1", 4), ("tikv-2", 5), ("db-tikv-10", 13)]
)
def test_store_id_from_the_pod_ordinal(pod: str, store_id: int) -> None:
    assert store_id_for_pod(pod) == store_id


def test_a_pod_name_without_ordinal_is_refused() -> None:
    with pytest.raises(ValueError, match="ordinal"):
        store_id_for_pod("tikv")
