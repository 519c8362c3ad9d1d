# %% [markdown]
# # Run outputs: `results.json`, figures, timings
#
# Every notebook writes its figures (accuracy, throughput, timings) to `results.json` in
# its output folder, plus its plots beside it. `update_results` merges a section into the
# file atomically, so a crash mid-run keeps what earlier cells recorded. `Stopwatch`
# measures wall-clock time for the timings reported there.

# %%
import json
import time
from pathlib import Path

from lib.core.atomic_io import atomic_write_json


def prepare_output_dir(path) -> Path:
    """Create (if needed) and return the run's output folder."""
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_results(output_dir) -> dict:
    """The current ``results.json`` of an output folder ({} if there is none yet)."""
    path = Path(output_dir) / "results.json"
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def update_results(output_dir, **sections) -> dict:
    """Merge ``sections`` into ``results.json`` (top-level keys replaced) and return it."""
    results = read_results(output_dir)
    results.update(sections)
    atomic_write_json(Path(output_dir) / "results.json", results)
    return results


def save_figure(fig, output_dir, name: str, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG (or a Plotly figure as HTML) in the output folder."""
    output_dir = prepare_output_dir(output_dir)
    if hasattr(fig, "write_html"):
        # plotly.min.js is written once per output folder, so the HTML opens offline too
        path = output_dir / f"{name}.html"
        fig.write_html(str(path), include_plotlyjs="directory")
        return path
    path = output_dir / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


class Stopwatch:
    """Context manager measuring wall-clock seconds: ``with Stopwatch() as sw: ...; sw.seconds``."""

    def __init__(self):
        self.seconds = float("nan")
        self._start = None

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._start
        return False
