"""Compile librosa's numba functions once, in one process, so later parallel runs only read the cache.

numba writes a gufunc's on-disk cache in two files, and two processes compiling it at the same time
can leave a pair that crashes every later process that loads it (numba/numba#10128; seen here as a
notebook kernel that dies in a papermill sweep or a parallel test run on a fresh install). ``make
setup`` runs this once after installing, while nothing else runs.

A cache that was already written wrong keeps crashing every run (numba trusts it): ``--fresh``
deletes it first (librosa's own ``__pycache__`` files, or every numba file under
``$NUMBA_CACHE_DIR`` when that is set) and compiles again. ``audiolens run`` suggests this when
a kernel dies.

usage: python -m scripts.warm_numba [--fresh]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def clear_numba_cache() -> int:
    """Delete librosa's numba cache files (all numba files under ``$NUMBA_CACHE_DIR`` if set); returns how many."""
    custom = os.environ.get("NUMBA_CACHE_DIR")
    if custom:
        files = [p for p in Path(custom).expanduser().rglob("*") if p.suffix in (".nbi", ".nbc")]
    else:
        import importlib.util

        root = Path(importlib.util.find_spec("librosa").origin).parent  # without importing it (that compiles)
        files = [p for p in root.rglob("*") if p.suffix in (".nbi", ".nbc") and p.parent.name == "__pycache__"]
    for path in files:
        path.unlink(missing_ok=True)
    return len(files)


def warm() -> list[str]:
    """Call the librosa features the notebooks use that compile numba code; returns their names."""
    import librosa

    sr = 16000
    y = np.random.default_rng(0).standard_normal(sr).astype(np.float32) * 0.1
    calls = {
        "zero_crossing_rate": lambda: librosa.feature.zero_crossing_rate(y),
        "yin": lambda: librosa.yin(y, fmin=60, fmax=500, sr=sr),
        "pyin": lambda: librosa.pyin(y[: sr // 2], fmin=60, fmax=500, sr=sr),
        "onset_detect": lambda: librosa.onset.onset_detect(y=y, sr=sr),
        "localmin": lambda: librosa.util.localmin(np.random.default_rng(1).random(64)),
        "istft": lambda: librosa.istft(librosa.stft(y)),
        "pitch_shift": lambda: librosa.effects.pitch_shift(y, sr=sr, n_steps=2),
        "trim": lambda: librosa.effects.trim(y, top_db=40),
    }
    for call in calls.values():
        call()
    return list(calls)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="delete the numba cache first (a corrupt one crashes)")
    if parser.parse_args().fresh:
        print(f"deleted {clear_numba_cache()} numba cache files")
    start = time.perf_counter()
    names = warm()
    print(f"numba cache warmed ({len(names)} librosa features) in {time.perf_counter() - start:.1f} s")
