# %% [markdown]
# # Run outputs: `results.json`, figures, timings
#
# Every notebook writes its figures (accuracy, throughput, timings) to `results.json` in
# its output folder, plus its plots beside it. `update_results` merges a section into the
# file atomically, so a crash mid-run keeps what earlier cells recorded. `Stopwatch`
# measures wall-clock time for the timings reported there.
#
# `results.json` belongs to one run. Its `run` block holds the run id, the notebook, the
# parameters and the status (`running`, `complete`, `failed at cell N: ...`); the notebook's
# parameter-check cell (or `audiolens run`) starts it and exports the id as `$AUDIOLENS_RUN_ID`.
# `update_results` adds sections only to the current run's file: a file left by another run
# (or by an older audiolens without a run block) is renamed `results.previous.json` and the
# file starts afresh, so a rerun that fails midway never mixes new and old sections. Outside a
# notebook run (a script, a test) each process is its own run.

# %%
import datetime as _dt
import json
import math
import os
import secrets
import time
from pathlib import Path

from lib.core.atomic_io import atomic_write_json, json_plain

_OUTPUTS_PROCESS_RUN = {}  # the run id of this process when no notebook run exported one


def prepare_output_dir(path) -> Path:
    """Create (if needed) and return the run's output folder."""
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_results(output_dir) -> dict:
    """The current ``results.json`` of an output folder ({} if there is none yet).

    Raises ``ValueError`` naming the file when it is not a JSON object.
    """
    path = Path(output_dir) / "results.json"
    if not path.exists():
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            results = json.load(handle)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(results, dict):
        raise ValueError(f"{path} holds a {type(results).__name__}, not a JSON object")
    return results


def current_run_id() -> str:
    """The id of the run this process belongs to (``$AUDIOLENS_RUN_ID``, else one per process)."""
    run_id = os.environ.get("AUDIOLENS_RUN_ID")
    if run_id:
        return run_id
    if "id" not in _OUTPUTS_PROCESS_RUN:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        _OUTPUTS_PROCESS_RUN["id"] = f"{stamp}-{secrets.token_hex(3)}-pid{os.getpid()}"
    return _OUTPUTS_PROCESS_RUN["id"]


def update_results(output_dir, **sections) -> None:
    """Add ``sections`` to this run's ``results.json`` (top-level keys replaced); ``read_results`` reads it.

    Returns nothing, so a cell that ends with this call shows nothing (not the whole file). NaN and
    infinite values are written as null, so the file is strict JSON.

    The file's ``run`` block must name the current run (``current_run_id()``); a file of another
    run, an unreadable one, or one without a run block is first renamed
    ``results.previous.json`` (printed), so results of two runs never mix.
    """
    if "run" in sections:
        raise ValueError("'run' is the run record of results.json; name the section otherwise")
    output_dir = prepare_output_dir(output_dir)
    path = output_dir / "results.json"
    run_id = current_run_id()
    try:
        results = read_results(output_dir)
        problem = None
    except ValueError as error:
        results, problem = {}, str(error)
    run = results.get("run") if isinstance(results.get("run"), dict) else {}
    if run.get("id") != run_id:
        if path.exists():
            os.replace(path, output_dir / "results.previous.json")
            print(
                f"{path}: {problem or 'it held results of run ' + str(run.get('id', '(no run id)'))}; "
                f"this run ({run_id}) starts it afresh and kept the old file as results.previous.json"
            )
        now = _dt.datetime.now().isoformat(timespec="seconds")
        results = {"run": {"id": run_id, "status": "running", "started": now, "pid": os.getpid()}}
    results.update(_finite_or_none(json_plain(sections)))
    atomic_write_json(path, results)


def _finite_or_none(value):
    """NaN and infinities become None (JSON's null): results.json stays strict JSON for any reader."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
