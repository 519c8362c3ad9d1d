"""Compile librosa's numba functions once, in one process, so later parallel runs only read the cache.

numba writes a gufunc's on-disk cache in two files, and two processes compiling it at the same time
can leave a pair that crashes every later process that loads it (numba/numba#10128; seen here as a
notebook kernel that dies in a papermill sweep or a parallel test run on a fresh install). ``make
setup`` runs this once after installing, while nothing else runs.

usage: python -m scripts.warm_numba
"""

from __future__ import annotations

import time

import numpy as np


def warm() -> list[str]:
    """Call every librosa feature that compiles numba code and is used by a notebook; returns their names."""
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
    start = time.perf_counter()
    names = warm()
    print(f"numba cache warmed ({len(names)} librosa features) in {time.perf_counter() - start:.1f} s")
