"""Markdown table of ``bench.json`` files, for the README: ``python -m scripts.markdown_table A.json B.json``.

One column per run of ``audiolens bench explorer`` (its encoder, first or cached pass, and the machine's
load average when it started), one row per stage (``explorer_bench_table``, as the notebook shows it),
then the pipeline's seconds and the main process's peak RSS.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from lib.explorer.explorer_report import explorer_bench_table


def bench_table(paths) -> str:
    columns = []
    for path in paths:
        bench = json.loads(Path(path).read_text())
        load = bench.get("machine", {}).get("loadavg_1_5_15", ["?"])[0]
        table = explorer_bench_table(bench)
        table["pipeline"] = [run["pipeline_seconds"] for run in bench["runs"]]
        table["peak RSS main (MiB)"] = [rss["main"] for rss in table.pop("peak RSS (MiB)")]
        table.index = [f"{encoder} {run} (load {load})" for run, encoder in zip(table.index, table["encoder"])]
        columns.append(table.drop(columns=["encoder", "clips", "total"]))
    return pd.concat(columns).T.rename_axis("stage (s)").to_markdown(floatfmt=".2f")


if __name__ == "__main__":
    print(bench_table(sys.argv[1:]))
