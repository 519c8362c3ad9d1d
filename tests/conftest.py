"""Shared fixtures: real data location, notebook execution, tiny local models.

Every test runs offline: the hub is switched off here, before anything imports
transformers, and kernels started by papermill inherit these variables.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("AUDIOLENS_DATA", str(ROOT.parent / "shared" / "data"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ.pop("MPLBACKEND", None)  # kernels use the inline backend: figures stay in executed notebooks
# pytest runs 2 workers on 2 cores: one math thread per process avoids oversubscription (5-40x slowdowns)
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# librosa's numba gufuncs (zero crossings, yin's interpolation, peak picking) are cached on disk, and two
# processes compiling one at once can write a cache that crashes the next process to load it (numba/numba
# #10128; CI: "the kernel died" in neuron_analysis, also with a cache folder per worker, since a test's own
# processes start together too). The session compiles them once, before any worker starts: they compile
# when their module is imported, so after that every process only reads them. After `make setup`, which
# warms the same cache, this only checks it (a few seconds).


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker: the controller warmed the cache before starting it
        return
    import subprocess
    import sys

    from jupyter_client.kernelspec import KernelSpecManager

    from generator.cli import ensure_kernel

    # the notebooks' kernel may run another Python (another environment, or another path to this one, as in a
    # clone whose .venv links to another checkout's), whose librosa has a cache of its own: warm both
    pythons = {sys.executable, KernelSpecManager().get_kernel_spec(ensure_kernel()).argv[0]}
    for python in sorted(pythons):
        warm = subprocess.run(
            [python, "-m", "scripts.warm_numba"], cwd=ROOT, capture_output=True, text=True, timeout=900
        )
        if warm.returncode != 0:
            raise pytest.UsageError(f"could not compile librosa's numba code with {python}: {warm.stderr[-2000:]}")


def _data_root() -> Path:
    return Path(os.environ["AUDIOLENS_DATA"].split(os.pathsep)[0])


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared real data (``$AUDIOLENS_DATA``); fails clearly when it is absent."""
    root = _data_root()
    missing = [name for name in ("fsdd/recordings", "librispeech-sample", "esc50-subset") if not (root / name).is_dir()]
    if missing:
        pytest.fail(
            f"real test data not found at {root} (no {', '.join(missing)}): set AUDIOLENS_DATA to the folder "
            "holding fsdd/, librispeech-sample/ and esc50-subset/ (CI uses ../shared/data)"
        )
    return root


@pytest.fixture(scope="session")
def fsdd_dir(data_root) -> Path:
    return data_root / "fsdd"


@pytest.fixture(scope="session")
def librispeech_dir(data_root) -> Path:
    return data_root / "librispeech-sample"


@pytest.fixture(scope="session")
def fsdd_manifest(fsdd_dir):
    from lib.core.datasets import load_fsdd

    return load_fsdd(fsdd_dir, download=False)


@pytest.fixture
def run_notebook(tmp_path, data_root):
    """Execute a notebook with papermill in a temp folder; return its ``results.json`` as a dict.

    Depends on ``data_root``: without the shared data the test fails at once, instead of a notebook
    downloading a data set (the notebooks' last resort) in the middle of the suite.

    ``run_notebook("digit_classification", max_train_clips=200)``: parameters are papermill
    parameters; ``output_dir`` is set to the temp folder (also returned as ``results["_out"]``).
    On a failing cell the test fails with the cell's error.
    """
    import papermill as pm

    from generator.cli import execute_notebook

    def run(name: str, timeout: int = 900, **parameters) -> dict:
        out = tmp_path / f"run-{name}"
        try:
            execute_notebook(name, parameters, out, timeout=timeout, build_first=False)
        except pm.PapermillExecutionError as error:
            pytest.fail(
                f"{name} failed in cell {error.exec_count}: {error.ename}: {error.evalue}\n"
                + "\n".join(error.traceback[-5:]),
                pytrace=False,
            )
        results_path = out / "results.json"
        assert results_path.exists(), f"{name} wrote no results.json in {out}"
        results = json.loads(results_path.read_text())
        results["_out"] = str(out)
        return results

    return run


@pytest.fixture
def toy_recipes_at(tmp_path, monkeypatch):
    """Factory: ``toy_recipes_at({"name": recipe source, ...})`` points the generator at temp recipe
    and notebook folders holding those recipes; returns the temp folder."""
    from generator import assemble as asm

    def make(recipes: dict) -> Path:
        (tmp_path / "recipes").mkdir(exist_ok=True)
        (tmp_path / "notebooks").mkdir(exist_ok=True)
        for name, text in recipes.items():
            (tmp_path / "recipes" / f"{name}.py").write_text(text)
        monkeypatch.setattr(asm, "RECIPES_DIR", tmp_path / "recipes")
        monkeypatch.setattr(asm, "NOTEBOOKS_DIR", tmp_path / "notebooks")
        return tmp_path

    return make


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Factory: ``tiny_model("wavlm")`` -> folder of a tiny random model saved with save_pretrained."""
    from tests.tiny_models import build_tiny_model

    cache = {}

    def make(family: str, num_labels: int | None = None) -> Path:
        key = (family, num_labels)
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"tiny-{family}-{num_labels or 'base'}")
            cache[key] = build_tiny_model(family, folder, num_labels=num_labels)
        return cache[key]

    return make


@pytest.fixture(scope="module")
def tiny_whisper(tiny_model):
    """``(folder, adapter)``: a tiny random Whisper (2 encoder blocks: hidden states 0, 1, 2; a character
    tokenizer) loaded through the digit model's encoder path."""
    from lib.digits.encoder_digits import load_digit_encoder_adapter

    folder = tiny_model("whisper")
    return folder, load_digit_encoder_adapter(str(folder), "clip")
