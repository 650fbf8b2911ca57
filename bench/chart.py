"""One PNG per comparison run: the two numbers a person wants, per tool, in ten seconds.

Left: timing error (|the tool's recovery - the independent watcher's|) p50 and p95. Right:
overhead (the watcher's "recovered" to the tool's next kill) p50 and p95. Both in milliseconds on
a log scale, because the tools differ by orders of magnitude (a few ms against a second). A
dashed line marks the issue's targets (20 ms error p95, 100 ms overhead median).

matplotlib comes with the dev extra; without it the run still writes its tables and says why
there is no chart.

Usage: .venv/bin/python -m bench.chart bench/results/<run>.json  (re-draws a run's chart)
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

TARGET_ERROR_P95_MS = 20.0
TARGET_OVERHEAD_P50_MS = 100.0


def _value(row: dict[str, Any], key: str) -> float:
    v = row.get(key)
    if v is None or not isinstance(v, int | float) or math.isnan(v):
        return math.nan
    # A log axis cannot show 0: a perfect 0 ms is drawn at the axis floor (0.1 ms).
    return max(float(v), 0.1)


def write(rows: list[dict[str, Any]], path: Path, *, title: str) -> Path | None:
    """Draw `rows` (bench.compare's analysed rows) to `path`; None if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError as exc:
        print(f"no chart ({exc}): pip install -e '.[dev]' brings matplotlib", file=sys.stderr)
        return None
    labels = [r["tool"] + (f"\n({r['measures']})" if r.get("measures") else "") for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.6 + 0.55 * max(len(rows), 2)), sharey=True)
    panels = [
        (axes[0], "timing error (ms, log)", "err_p50", "err_p95", TARGET_ERROR_P95_MS, "target p95 20 ms"),
        (axes[1], "overhead per trial (ms, log)", "overhead_p50", "overhead_p95", TARGET_OVERHEAD_P50_MS,
         "target p50 100 ms"),
    ]  # fmt: skip
    ys = list(range(len(rows)))
    for ax, xlabel, p50, p95, target, target_label in panels:
        h = 0.38
        v50 = [_value(r, p50) for r in rows]
        v95 = [_value(r, p95) for r in rows]
        ax.barh([y - h / 2 for y in ys], v50, height=h, color="#4C78A8", label="p50")
        ax.barh([y + h / 2 for y in ys], v95, height=h, color="#F58518", label="p95")
        for y, a, b in zip(ys, v50, v95, strict=True):
            for dy, v in ((-h / 2, a), (h / 2, b)):
                if not math.isnan(v):
                    ax.text(v * 1.08, y + dy, f"{v:.0f}" if v >= 10 else f"{v:.1f}", va="center", fontsize=8)
        ax.set_xscale("log")
        # Plain numbers (1, 10, 100 ms), not 10^1; no labels on minor ticks.
        shown = [v for v in v50 + v95 if not math.isnan(v)]
        # 1-2-5 steps over up to three decades; wider, only the powers of ten stay legible.
        wide = bool(shown) and max(shown) / min(shown) > 1000
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.axvline(target, color="#555", linestyle="--", linewidth=1, label=target_label)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", which="both", alpha=0.25)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=3, fontsize=8, frameon=False)
    axes[0].set_yticks(ys, labels, fontsize=9)
    axes[0].invert_yaxis()
    fig.suptitle(f"aftershock and its peers: {title} (lower is better)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    src = Path(sys.argv[1])
    raw = json.loads(src.read_text())
    out = write(raw["rows"], src.with_suffix(".png"), title=raw.get("title", src.stem))
    print(out or "no chart")


if __name__ == "__main__":
    main()
