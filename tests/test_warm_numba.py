"""`make setup` compiles librosa's numba code once, so parallel kernels only ever read its cache;
`--fresh` rebuilds a cache that was written wrong."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_warm_numba_fills_a_fresh_cache_and_fresh_rebuilds_a_damaged_one(tmp_path):
    cache = tmp_path / "numba"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}

    def warm(*args):
        done = subprocess.run(
            [sys.executable, "-m", "scripts.warm_numba", *args], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    assert "numba cache warmed (8 librosa features)" in warm()
    files = sorted(p for p in cache.rglob("*") if p.suffix in (".nbi", ".nbc"))
    cached = {re.sub(r"-\d+\.py.*$", "", p.name) for p in files if p.suffix == ".nbi"}  # name-LINE.py311.nbi
    # the gufuncs the neuron, digit and explorer notebooks call: zero crossings, yin's interpolation, peaks
    assert {"audio._zc_wrapper", "pitch._pi_wrapper", "utils._localmax"} <= cached, cached

    damaged = next(p for p in files if p.name.startswith("guf-audio._zc_wrapper") and p.suffix == ".nbc")
    damaged.write_bytes(b"written half by another process")
    assert f"deleted {len(files)} numba cache files" in warm("--fresh")
    assert damaged.exists() and damaged.read_bytes() != b"written half by another process", "compiled again"
