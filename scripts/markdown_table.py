"""Markdown table of ``bench.json`` files, for the README: ``python -m scripts.markdown_table A.json B.json``.

One column per run (its encoder, first and cached pass), one row per stage, then the totals, the
checks against the targets, the ESC-50 quality figures where the benchmark computed them, and the
machine's load average when the run started.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    return str(value)


def bench_table(paths) -> str:
    benches = [json.loads(Path(p).read_text()) for p in paths]
    columns, stages = [], []
    for bench in benches:
        load = bench.get("machine", {}).get("loadavg_1_5_15", ["?"])[0]
        for run in bench["runs"]:
            columns.append((f"{run['encoder']} {run['name']} (load {load})", run))
            stages += [s for s in run["stages"] if s not in stages]
    lines = ["| stage (s) | " + " | ".join(c for c, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for stage in stages:
        lines.append(f"| {stage} | " + " | ".join(_fmt(run["stages"].get(stage)) for _, run in columns) + " |")
    lines.append("| **pipeline** | " + " | ".join(f"**{_fmt(run['pipeline_seconds'])}**" for _, run in columns) + " |")
    rss = (_fmt(run["peak_rss_mib"]["main"]) for _, run in columns)
    lines.append("| peak RSS main (MiB) | " + " | ".join(rss) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(bench_table(sys.argv[1:]))
