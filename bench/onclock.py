"""One trial's stamps on one clock: aftershock's ledger, the bench's witness and the API
server's audit log, all on the host's wall clock (one machine), per kill of a `bench.compare` run.

Used to place the timing error: whether aftershock's start (the first sign the kill took effect)
or its end (the replacement Ready) differs from the witness's, and by how much, and where the
API server's own records fall between them. Needs a results file written with the witness's
wall offset (`witness_wall_offset`, from 2026-12-07) and the run's work directory (its ledger).

Usage: .venv/bin/python -m bench.onclock RESULTS.json WORKDIR [aftershock|aftershock-pods]
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import sys
from pathlib import Path
from typing import Any

from tests.e2e import testbed

from bench import audittruth


def _ms(x: float | None) -> str:
    return "     -" if x is None else f"{x * 1000:6.1f}"


def main(argv: list[str]) -> None:
    results, work = Path(argv[0]), Path(argv[1])
    tool = argv[2] if len(argv) > 2 else "aftershock-pods"
    run = next(r for r in json.loads(results.read_text())["runs"] if r["tool"] == tool)
    offset = run.get("witness_wall_offset")
    if offset is None:
        sys.exit("this results file has no witness_wall_offset (written before 2026-12-07)")
    conn = sqlite3.connect(f"file:{work / (tool + '.db')}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    attempts: list[dict[str, Any]] = [
        dict(r)
        for r in conn.execute(
            "SELECT a.*, c.namespace AS ns FROM attempts a JOIN campaigns c ON c.uid = a.campaign_uid "
            "WHERE a.outcome = 'recovered' ORDER BY a.id"
        )
    ]
    audit = audittruth.AuditLog.of_test_bed(testbed.TESTBED / "cluster.sh")
    if audit is None:
        sys.exit("this test bed keeps no audit log")
    writes = audit.pod_writes(attempts[0]["ns"])
    by_uid = {json.loads(a["victims"])[0]["uid"]: a for a in attempts}
    print(
        "per kill, ms on the host's clock; w = the witness's stamp (first sight of the deletion, "
        "the set whole again)\n"
        "unhealthy-w  acked-w  gone-w | DELETE done-w | ready-w | error (tool - witness recovery)"
    )
    starts, ends = [], []
    for kill in run["kills"]:
        a = by_uid.get(kill["victim_uid"])
        if a is None:
            continue
        w_start = kill["deleted_at"] + offset
        w_end = (kill["pods_ready_at"] or kill["ready_at"]) + offset
        start = min(x for x in (a["kill_acked_wall"], a["first_unhealthy_wall"]) if x is not None)
        end = a["replacement_ready_wall"]
        sent = a["kill_sent_wall"]
        deletes = [
            w
            for w in writes
            if w.verb == "delete"
            and w.name == kill["victim"]
            and not w.subresource
            and sent - 0.05 <= w.received <= sent + 1
        ]
        done = min(deletes, key=lambda w: w.received).completed - w_start if deletes else None
        starts.append(start - w_start)
        ends.append(end - w_end)
        print(
            f"{_ms(a['first_unhealthy_wall'] - w_start)}  {_ms(a['kill_acked_wall'] - w_start)} "
            f"{_ms(a['victim_gone_wall'] - w_start)} | {_ms(done)} | {_ms(end - w_end)} | "
            f"{_ms((end - start) - (w_end - w_start))}"
        )
    print(
        f"median start (tool - witness) {statistics.median(starts) * 1000:.1f} ms, "
        f"end {statistics.median(ends) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
