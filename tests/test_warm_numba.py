"""`make setup` compiles librosa's numba code once, so parallel kernels only ever read its cache."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_warm_numba_fills_a_fresh_cache_with_the_gufuncs_that_race(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    done = subprocess.run(
        [sys.executable, "-m", "scripts.warm_numba"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "numba cache warmed (8 librosa features)" in done.stdout
    cached = {re.sub(r"-\d+\.py.*$", "", p.name) for p in (tmp_path / "numba").rglob("*.nbi")}  # name-LINE.py311.nbi
    # the gufuncs the neuron, digit and explorer notebooks call: zero crossings, yin's interpolation, peaks
    assert {"audio._zc_wrapper", "pitch._pi_wrapper", "utils._localmax"} <= cached, cached
