"""The audiolens command: list, check, run (success and failure), parameter parsing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from generator import assemble as asm
from generator import cli

GOOD = """# %% [markdown]
# # Toy run
#
# Writes results.json.

# %% tags=["parameters"]
output_dir = "runs/toy"  # output folder
seed = 0  # seed
data_path = None  # unused
n = 2  # multiplier
label = "x"  # a string parameter

# %%
from lib.core.outputs import prepare_output_dir, update_results

out = prepare_output_dir(output_dir)
update_results(out, toy={"value": n * 21, "label": label, "n_type": type(n).__name__})

# %%
import matplotlib.pyplot as plt

plt.plot([1, 2, 3], [n, 0, n])
plt.show()
"""

BAD = GOOD.replace(
    'update_results(out, toy={"value": n * 21, "label": label, "n_type": type(n).__name__})',
    "values = [1, 2]\nprint(values[n * 5])",
)


KERNEL = GOOD.replace(
    'update_results(out, toy={"value": n * 21, "label": label, "n_type": type(n).__name__})',
    "from ipykernel.connect import get_connection_info\n\n"
    "info = get_connection_info(unpack=True)\n"
    'update_results(out, kernel={"transport": info["transport"], "ip": info["ip"]})',
)


@pytest.fixture
def toy_recipes(toy_recipes_at):
    return toy_recipes_at({"toy_good": GOOD, "toy_bad": BAD, "toy_kernel": KERNEL})


@pytest.mark.notebook
@pytest.mark.skipif(os.name != "posix", reason="Unix sockets: POSIX only (elsewhere papermill's TCP default)")
def test_the_kernel_talks_over_private_unix_sockets_not_plain_tcp(toy_recipes, capfd):
    out = toy_recipes / "kernel"
    assert cli.main(["run", "toy_kernel", "--out", str(out)]) == 0
    kernel = json.loads((out / "results.json").read_text())["kernel"]
    assert kernel["transport"] == "ipc"
    folder = Path(kernel["ip"]).parent
    assert folder.name.startswith("audiolens-kernel-") and not folder.exists()  # removed after the run
    assert "without encryption" not in capfd.readouterr().err  # ipykernel's TCP warning is gone


@pytest.mark.notebook
def test_run_executes_with_parameters_and_prints_results(toy_recipes, capsys):
    out = toy_recipes / "out"
    code = cli.main(["run", "toy_good", "-p", "n", "5", "-p", "label", "hello world", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["toy"] == {"value": 105, "label": "hello world", "n_type": "int"}
    executed = json.loads((out / "toy_good.ipynb").read_text())  # the executed notebook sits beside its results
    outputs = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), "figures must stay in the executed notebook"
    assert "value: 105" in printed and str(out) in printed
    assert (toy_recipes / "notebooks" / "toy_good.ipynb").exists()  # run builds first


@pytest.mark.notebook
def test_run_failure_exits_nonzero_and_shows_the_cell(toy_recipes, capsys):
    code = cli.main(["run", "toy_bad", "--out", str(toy_recipes / "bad")])
    err = capsys.readouterr().err
    assert code == 1
    assert "IndexError" in err and "list index out of range" in err
    assert "print(values[n * 5])" in err  # the failing cell's source


def test_unknown_notebook_is_a_clear_error(toy_recipes, capsys):
    assert cli.main(["build", "nosuch"]) == 2
    assert "unknown notebook 'nosuch'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, value",
    [
        ("3", 3),
        ("0.5", 0.5),
        ("true", True),
        ("None", None),
        ("[1, 2]", [1, 2]),
        ("facebook/wav2vec2-base", "facebook/wav2vec2-base"),
        ("'quoted'", "quoted"),
    ],
)
def test_parameter_values_are_parsed(text, value):
    assert cli.parse_value(text) == value


def test_list_and_check_on_the_real_notebooks():
    listing = subprocess.run(
        [sys.executable, "-m", "generator.cli", "list"], capture_output=True, text=True, cwd=asm.ROOT, check=True
    ).stdout
    for name in asm.available_recipes():
        assert name in listing
    assert "output_dir = " in listing
    result = subprocess.run(
        [sys.executable, "-m", "generator.cli", "check"], capture_output=True, text=True, cwd=asm.ROOT
    )
    assert result.returncode == 0, result.stderr


def test_bench_help_reaches_the_benchmark_and_bench_alone_lists_them(capsys):
    with pytest.raises(SystemExit) as stop:  # argparse's own --help of scripts/bench_streaming.py
        cli.main(["bench", "streaming", "--help"])
    assert stop.value.code == 0
    assert "--sweep-seconds" in capsys.readouterr().out  # an option of that benchmark, not of `audiolens bench`
    assert cli.main(["bench", "--help"]) == 0
    assert "benchmarks: " in capsys.readouterr().out and "streaming" in cli.available_benchmarks()
    assert cli.main(["bench"]) == 2
    assert cli.main(["bench", "nosuch"]) == 2
    assert "no benchmark 'nosuch'" in capsys.readouterr().err


def test_bench_digits_reads_a_run_and_times_its_saved_models(tmp_path, fsdd_manifest, capsys):
    """`audiolens bench digits`: the run's stage seconds against the 15-minute budget, and each model's latency."""
    import json

    from lib.digits.digit_features import DigitFeatureConfig, digit_feature_vectors, load_digit_waves
    from lib.digits.digit_models import SklearnDigitModel, make_digit_pipeline
    from lib.digits.model_files import save_sklearn_digit_model

    assert cli.main(["bench", "digits", "--run-dir", str(tmp_path / "none"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "no results of a digit run" in err and "audiolens run digit_classification" in err and "Traceback" not in err
    run = tmp_path / "run"
    train = fsdd_manifest[fsdd_manifest.split == "train"].groupby(["label", "speaker"]).head(1)
    waves, train, _ = load_digit_waves(train, 8000, progress=False)
    config = DigitFeatureConfig()
    pipeline = make_digit_pipeline(pca_components=16).fit(digit_feature_vectors(waves, config), train.label)
    save_sklearn_digit_model(SklearnDigitModel(pipeline, config), run / "models" / "svm.joblib")
    timings = {"total_seconds": 600.0, "threads": 2, "data": 2.0, "loso_cnn": 145.4, "loso_wav2vec2": None}
    (run / "results.json").write_text(
        json.dumps({"run": {"id": "r", "status": "complete", "seconds": 612.5}, "timings": timings})
    )
    assert cli.main(["bench", "digits", "--run-dir", str(run), "--runs", "3", "--out", str(tmp_path / "b")]) == 0
    report = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert report["run"]["stages"] == {"data": 2.0, "loso_cnn": 145.4}  # seconds per stage, not the thread count
    assert report["run"]["within_budget"] and report["run"]["notebook_seconds"] == 600.0
    svm = report["latency"]["ms"]["svm"]
    assert set(report["latency"]["ms"]) == {"svm"} and svm["runs"] == 3 and 0 < svm["p50_ms"] <= svm["p95_ms"]
    assert "within the 15-minute budget" in capsys.readouterr().out


def test_bench_with_a_model_that_cannot_load_is_one_line_not_a_traceback(tmp_path, capsys):
    code = cli.main(["bench", "streaming", "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("audiolens bench streaming: ") and "no-such-model" in err
    assert "Traceback" not in err
