"""Several `bench.compare` runs side by side: per run and tool the timing error against both
ground truths (the harness's own watch, the API server's audit log), the machine's load, and
whether aftershock (with PD, and pods only) was below every peer at p50 and p95 in that run.

Usage: .venv/bin/python -m bench.runs_table bench/results/A.json [B.json ...] > table.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OURS = ("aftershock", "aftershock-pods")
PEERS = ("chaostoolkit", "krkn")


def _ms(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    return "-" if value is None else f"{value:.1f}"


def _below(rows: dict[str, dict[str, Any]], prefix: str) -> str:
    """Each of ours against each peer, at p50 and p95, on one ground truth (`prefix`: "" for
    the watch, "audit_" for the audit log)."""
    missing, behind = [], []
    for ours in OURS:
        for peer in PEERS:
            for q in ("p50", "p95"):
                a = rows.get(ours, {}).get(f"{prefix}err_{q}")
                b = rows.get(peer, {}).get(f"{prefix}err_{q}")
                if a is None or b is None:
                    missing.append(f"{ours}/{peer} {q}")
                elif a >= b:
                    behind.append(f"{ours} {q} {a:.1f} >= {peer} {b:.1f}")
    if behind:
        return "**no**: " + "; ".join(behind)
    if len(missing) == len(OURS) * len(PEERS) * 2:
        return "not measured"
    return "yes" + (f" (not measured: {', '.join(missing)})" if missing else "")


def table(paths: list[Path]) -> str:
    out = [
        "| run | tool | load start-end | error vs watch p50 / p95 / max (ms) "
        "| error vs audit log p50 / p95 / max (ms) |",
        "|---|---|---|---|---|",
    ]
    verdicts = [
        "",
        "| run | ours below every peer (watch) | ours below every peer (audit log) |",
        "|---|---|---|",
    ]
    for path in paths:
        data = json.loads(path.read_text())
        loads = {r["tool"]: r.get("load") for r in data.get("runs", [])}
        rows = {r["tool"]: r for r in data["rows"]}
        for tool, row in rows.items():
            load = loads.get(tool) or (0.0, 0.0)
            out.append(
                f"| {path.stem} | {tool} ({row.get('measures', '')}) | {load[0]:.1f}-{load[1]:.1f} | "
                f"{_ms(row, 'err_p50')} / {_ms(row, 'err_p95')} / {_ms(row, 'err_max')} | "
                f"{_ms(row, 'audit_err_p50')} / {_ms(row, 'audit_err_p95')} / {_ms(row, 'audit_err_max')} |"
            )
        verdicts.append(f"| {path.stem} | {_below(rows, '')} | {_below(rows, 'audit_')} |")
    return "\n".join(out + verdicts) + "\n"


def main(argv: list[str]) -> None:
    sys.stdout.write(table([Path(a) for a in argv]))


if __name__ == "__main__":
    main(sys.argv[1:])
