"""Smoke run of the digit_classification notebook on a small real FSDD subset."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.notebook
def test_digit_classification_notebook_small_run(run_notebook, tiny_model):
    w2v = tiny_model("wav2vec2")
    results = run_notebook(
        "digit_classification",
        max_train_clips=400,
        max_test_clips=100,
        c_grid=[10.0],
        gamma_grid=["scale", 0.001],
        cv_folds=3,
        cnn_epochs=8,
        cnn_patience=4,
        loso_models=["svm", "cnn", "wav2vec2"],
        loso_cnn_epochs=3,
        wav2vec2_model=str(w2v),
        wav2vec2_on_cpu=True,
        wav2vec2_epochs=1,
        wav2vec2_max_steps=3,
        wav2vec2_batch_size=8,
        latency_runs=5,
        stream_digits=[4, 0, 7],
        threads=1,
    )
    for section in (
        "data",
        "models",
        "leave_one_speaker_out",
        "latency",
        "saved_models",
        "streaming",
        "summary",
        "run",
    ):
        assert section in results, section
    assert results["data"]["n_train"] == 400 and results["data"]["n_test"] == 100
    svm, cnn, w2v_result = results["models"]["svm"], results["models"]["cnn"], results["models"]["wav2vec2"]
    assert svm["test_accuracy"] > 0.6, svm["test_accuracy"]  # chance is 0.1
    assert 0.5 < svm["cv_accuracy"] <= 1.0 and svm["best_params"]["clf__C"] == 10.0
    assert cnn["test_accuracy"] > 0.3, cnn["test_accuracy"]
    assert 1 <= cnn["best_epoch"] <= cnn["epochs_run"] <= 8
    # the tiny random Wav2Vec2 is fine-tuned for 3 steps: it runs end to end, accuracy is just a number
    assert w2v_result["steps"] == 3 and 0.0 <= w2v_result["test_accuracy"] <= 1.0
    loso = results["leave_one_speaker_out"]
    for name in ("svm", "cnn", "wav2vec2"):
        assert len(loso[name]["per_speaker_accuracy"]) == 6
        assert results["models"][name]["loso_mean_accuracy"] == loso[name]["mean_accuracy"]
    assert loso["svm"]["mean_accuracy"] > 0.2
    for name in ("svm", "cnn", "wav2vec2"):
        latency = results["models"][name]["latency_ms"]
        assert latency["mean_ms"] > 0 and 0 < latency["p50_ms"] <= latency["p95_ms"]
        assert results["saved_models"][name]["agreement_with_in_memory"] == 1.0
    per_class = svm["per_class"]
    assert sorted(per_class, key=int) == [str(d) for d in range(10)]
    assert len(svm["per_speaker_accuracy"]) == 6
    stream = results["streaming"]
    assert stream["expected"] == [4, 0, 7] and len(stream["emitted"]) == 3
    out = Path(results["_out"])
    for figure in (
        "confusion_matrices.png",
        "cnn_training.png",
        "leave_one_speaker_out.png",
        "streaming_demo.png",
        "mfcc_examples.png",
    ):
        assert (out / figure).stat().st_size > 1000, figure
    assert (out / "models" / "svm.joblib").exists() and (out / "models" / "cnn.json").exists()


@pytest.mark.notebook
def test_custom_word_folder_and_missing_wav2vec2_are_handled(run_notebook, fsdd_manifest, tmp_path):
    """A folder with one sub-folder per word (no speakers, no split) and an unloadable Wav2Vec2."""
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    folder = tmp_path / "words"
    for digit, word in enumerate(words):
        (folder / word).mkdir(parents=True)
        for path in fsdd_manifest[fsdd_manifest.label == digit].path.iloc[::10]:  # 30 clips per word
            (folder / word / Path(path).name).symlink_to(path)
    results = run_notebook(
        "digit_classification",
        custom_folder=str(folder),
        c_grid=[10.0],
        gamma_grid=["scale"],
        cv_folds=2,
        pca_components=32,
        cnn_epochs=1,
        wav2vec2_model=str(tmp_path / "missing-model"),
        latency_runs=1,
        stream_digits=["one", "two"],
        live_model="svm",
        threads=1,
    )
    assert results["data"]["labels"] == sorted(words) and results["data"]["speakers"] is None
    assert results["data"]["n_train"] + results["data"]["n_test"] == 300
    skipped = results["models"]["wav2vec2"]["skipped"]
    assert "cannot load" in skipped and "missing-model" in skipped
    assert results["leave_one_speaker_out"] == {"skipped": "no speaker information"}
    assert results["models"]["svm"]["test_accuracy"] > 0.4  # ~25 training clips per word; chance is 0.1
    assert sorted(results["models"]["svm"]["per_class"]) == sorted(words)
    assert results["streaming"]["expected"] == ["one", "two"] and results["streaming"]["model"] == "svm"
