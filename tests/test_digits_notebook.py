"""Smoke runs of the digit_classification notebook on small real FSDD subsets."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.digit_eval_fixture import WORDS, build_digit_eval_folder


@pytest.mark.notebook
def test_digit_classification_notebook_small_run(run_notebook, tiny_model, fsdd_manifest, tmp_path, monkeypatch):
    """Every model (tiny random Whisper and Wav2Vec2 stand in for the real encoders), LOSO, zero-shot, eval_folder."""
    monkeypatch.setenv("AUDIOLENS_SIGNING_KEY", str(tmp_path / "signing.key"))  # the kernel inherits it
    eval_folder = build_digit_eval_folder(fsdd_manifest, tmp_path / "elsewhere", per_digit=1)["folder"]
    results = run_notebook(
        "digit_classification",
        max_train_clips=300,
        max_test_clips=60,
        max_loso_clips=240,
        augment_copies=1,
        c_grid=[1.0, 4.0],
        gamma_grid=["scale"],
        pca_components=64,
        cv_folds=3,
        cnn_epochs=4,
        cnn_patience=3,
        loso_cnn_epochs=2,
        loso_max_folds=3,  # the six speakers held out two at a time, as a corpus of many speakers would be
        encoder_model=str(tiny_model("whisper")),
        encoder_layers=[1, 2],
        encoder_epochs=4,
        encoder_voice_prob=0.4,  # re-voiced copies (off by default) go through the encoder's copies
        encoder_cache_dir=str(tmp_path / "encoder-cache"),
        zero_shot_max_clips=6,
        zero_shot_max_eval_clips=6,  # of the 10 eval clips: the zero-shot and its comparison on 6 of them
        wav2vec2_model=str(tiny_model("wav2vec2")),
        wav2vec2_on_cpu=True,
        wav2vec2_epochs=1,
        wav2vec2_max_steps=2,
        wav2vec2_batch_size=8,
        wav2vec2_lr_grid=[1e-3],
        eval_folder=str(eval_folder),
        latency_runs=3,
        stream_digits=[4, 0, 7],
        stream_test_digits=6,
        cpu_threads=1,
    )
    for section in ("data", "models", "leave_one_speaker_out", "zero_shot", "eval_folder", "summary", "best_model"):
        assert section in results, section
    for section in ("latency", "saved_models", "streaming", "timings", "encoder_layers", "augmentation"):
        assert section in results, section
    data = results["data"]
    assert data["n_train"] == 300 and data["n_test"] == 60 and data["n_loso"] == 240 and data["n_eval"] == 10
    assert {Path(s["path"]).name for s in data["eval_skipped_files"]} == {"broken.wav", "hello.wav"}
    models = results["models"]
    svm = models["svm"]
    assert svm["official_split_accuracy"] > 0.6 and "speaker-overlapping" in svm["official_split_note"]
    assert svm["best_params"]["clf__C"] in (1.0, 4.0) and svm["feature_config"]["cmvn"] == "speaker"
    assert svm["feature_config"]["norm_prior"].startswith("26 means")  # 13 MFCCs + deltas; the file holds them
    normalisation = results["speaker_normalisation"]  # every trained model's, by speaker in LOSO and the split
    assert normalisation["models"] == {"svm": "mean and std", "cnn": "mean and std", "encoder": "mean"}
    assert normalisation["groups"]["training, official split, leave-one-speaker-out"] == "speaker"
    assert models["encoder"]["config"]["norm_prior"].endswith("means and stds (in the model file)")
    for name in ("svm", "cnn", "encoder"):  # the same fold models with each held-out clip normalised alone
        held_out = results["leave_one_speaker_out"][name]
        alone = held_out["each_clip_alone"]
        assert set(alone["per_speaker_accuracy"]) == set(held_out["per_speaker_accuracy"])
        assert 0.0 <= alone["min_accuracy"] <= alone["mean_accuracy"] <= 1.0
        assert 0.0 <= results["eval_folder"][name]["each_clip_alone_accuracy"] <= 1.0
    alone = results["leave_one_speaker_out"]["svm"]["each_clip_alone"]
    assert results["summary"]["svm"]["LOSO mean, each clip alone"] == alone["mean_accuracy"]
    assert models["cnn"]["config"]["cmvn"] == "speaker"
    assert normalisation["groups"]["eval_folder"] == "the whole folder as one group (its sources are digit folders)"
    assert svm["feature_config"]["pooling"] == "segments" and models["cnn"]["config"]["time_steps"] == 32
    loso = results["leave_one_speaker_out"]
    for name in ("svm", "cnn", "encoder", "wav2vec2"):
        assert len(loso[name]["per_speaker_accuracy"]) == 6, name
        assert models[name]["loso_mean_accuracy"] == loso[name]["mean_accuracy"]
        assert models[name]["loso_min_accuracy"] <= models[name]["loso_mean_accuracy"] + 1e-9
        assert 0.0 <= models[name]["eval_folder_accuracy"] <= 1.0
        assert results["saved_models"][name]["agreement_with_in_memory"] == 1.0
        latency = models[name]["latency_ms"]
        assert 0 < latency["p50_ms"] <= latency["p95_ms"]
    assert loso["svm"]["mean_accuracy"] > 0.3  # 200 training clips; chance is 0.1
    assert models["svm"]["eval_folder_accuracy"] >= 0.5  # 10 FSDD clips at 16 kHz; the SVM scores 1.0, chance 0.1
    # the encoder's LOSO is the head fused with Whisper's decoder scores; both parts are reported on their own
    encoder_info = models["encoder"]["encoder"]  # 50 dB trim; about 30% of the encoder's copies are onset crops
    assert encoder_info["trim_db"] == models["encoder"]["config"]["trim_db"] == 50.0
    assert encoder_info["crop_prob"] == 0.3 and 0 < encoder_info["cropped_copies"] < encoder_info["clips"] / 2
    assert encoder_info["voice_prob"] == 0.4 and 0 < encoder_info["revoiced_copies"] < encoder_info["clips"] / 2
    prior = models["encoder"]["whisper_prior"]
    assert prior["used"] and prior["scorer"]["multi_token_spellings"] > 0 and prior["weight"] >= 0
    assert set(loso["encoder"]["weights"]) == set(loso["encoder"]["per_speaker_accuracy"])
    assert loso["svm"]["folds"] == loso["encoder"]["folds"] == 3 and sorted(map(len, loso["svm"]["fold_speakers"])) == [
        2,
        2,
        2,
    ]
    for pair in loso["svm"]["fold_speakers"]:  # the prior's weight: one per held-out pair
        assert loso["encoder"]["weights"][pair[0]] == loso["encoder"]["weights"][pair[1]]
    assert len(loso["encoder"]["head_alone"]["per_speaker_accuracy"]) == 6
    assert len(loso["encoder"]["prior_alone"]["per_speaker_accuracy"]) == 6
    assert 0.0 <= results["eval_folder"]["encoder"]["prior_alone_accuracy"] <= 1.0  # a tiny random Whisper here
    # the prior heard the 16 kHz eval clips at 16 kHz; the same model with the prior at the head's 8 kHz beside it
    assert results["eval_folder"]["encoder"]["prior_band"].startswith("16 kHz") and prior["eval_band"].startswith("16")
    narrow = results["eval_folder"]["encoder"]["prior_at_head_band"]
    assert narrow["sample_rate"] == 8000 and 0.0 <= narrow["accuracy"] <= 1.0
    zero_shot = results["zero_shot"]
    assert zero_shot["loso"]["n"] == 6 and len(zero_shot["loso"]["per_speaker_accuracy"]) == 6
    assert zero_shot["loso"]["pooled_accuracy"] >= 0.5  # the real Whisper tiny.en: about 0.94 per clip
    assert zero_shot["eval_folder"]["n"] == 6 and zero_shot["eval_folder"]["of_clips"] == 10
    assert zero_shot["eval_folder"]["accuracy"] >= 0.5
    assert results["eval_folder"]["svm"]["n"] == 10 and "per_group_accuracy" in results["eval_folder"]["svm"]
    assert "zero-shot Whisper" in results["summary"]
    best = max(models, key=lambda n: (models[n]["loso_mean_accuracy"], models[n]["loso_min_accuracy"]))
    assert (
        results["best_model"]["best_model"] == best
        and results["best_model"]["loso_mean"] == models[best]["loso_mean_accuracy"]
    )
    assert results["best_model"]["eval_folder"] == models[best]["eval_folder_accuracy"]
    paired = results["best_model"]["loso_vs_zero_shot"]  # on the zero-shot's own clips, McNemar
    assert paired["n"] == zero_shot["loso"]["n"] and paired["second_accuracy"] == zero_shot["loso"]["pooled_accuracy"]
    assert 0.0 < paired["mcnemar_p"] <= 1.0
    assert results["best_model"]["beats_zero_shot_on_loso"] == (paired["first_accuracy"] > paired["second_accuracy"])
    eval_paired = results["best_model"]["eval_folder_vs_zero_shot"]  # on the zero-shot's 6 clips, not all 10
    assert eval_paired["n"] == 6 and eval_paired["second_accuracy"] == zero_shot["eval_folder"]["accuracy"]
    lo, hi = models[best]["loso_ci95"]
    assert lo <= models[best]["loso_mean_accuracy"] <= hi
    table = pd.read_csv(Path(results["_out"]) / "loso_predictions.csv")
    assert {"svm", "encoder", "encoder head alone", "zero_shot"} <= set(table.columns)
    assert table["zero_shot"].notna().sum() == zero_shot["loso"]["n"] - zero_shot["loso"]["no_digit"]
    by_speaker = (table["svm"] == table["label"]).groupby(table["speaker"]).mean()
    assert by_speaker.to_dict() == pytest.approx(loso["svm"]["per_speaker_accuracy"])  # the file is what was scored
    assert set(results["encoder_layers"]["curve"]) == {"0", "1", "2", "conv"}
    stream = results["streaming"]
    for mode in ("toggle", "continuous"):
        assert stream[mode]["true_digits"] == 6 and 0.0 < stream[mode]["recall"] <= 1.0  # 0.5-0.67 with the SVM
    assert stream["demo"]["expected"] == [4, 0, 7]
    out = Path(results["_out"])
    for figure in ("confusion_matrices", "cnn_training", "leave_one_speaker_out", "streaming_demo", "mfcc_examples"):
        assert (out / f"{figure}.png").stat().st_size > 1000, figure
    assert (out / "encoder_layer_curve.png").exists() and (out / "augmentation_examples.png").exists()
    assert (out / "models" / "svm.joblib.sha256").exists() and (out / "models" / "encoder.json").exists()


@pytest.mark.notebook
def test_custom_word_folder_no_loso_and_missing_models(run_notebook, tiny_model, fsdd_manifest, tmp_path, monkeypatch):
    """A folder with one sub-folder per word (no speakers, no split), loso_models [], an unloadable Wav2Vec2, and
    the encoder with its top block fine-tuned (trained, saved and reloaded; no speaker normalisation then)."""
    monkeypatch.setenv("AUDIOLENS_SIGNING_KEY", str(tmp_path / "signing.key"))
    folder = tmp_path / "words"
    for digit, word in enumerate(WORDS):
        (folder / word).mkdir(parents=True)
        for k, path in enumerate(fsdd_manifest[fsdd_manifest.label == digit].path.iloc[::10]):  # 30 clips per word
            (folder / word / f"take{k}.wav").symlink_to(path)  # names without a speaker
    eval_folder = build_digit_eval_folder(fsdd_manifest, tmp_path / "elsewhere", per_digit=1)["folder"]
    results = run_notebook(
        "digit_classification",
        custom_folder=str(folder),
        eval_folder=str(eval_folder),
        models=["svm", "encoder", "wav2vec2"],
        loso_models=[],
        encoder_model=str(tiny_model("whisper")),
        encoder_layers=[1, 2],
        encoder_epochs=2,
        encoder_finetune_top=True,
        encoder_layer_curve=False,
        encoder_cache_dir=str(tmp_path / "encoder-cache"),
        augment_copies=0,
        c_grid=[4.0],
        gamma_grid=["scale"],
        cv_folds=2,
        pca_components=32,
        wav2vec2_model=str(tmp_path / "missing-model"),
        latency_runs=1,
        stream_digits=["one", "two"],
        stream_test_digits=4,
        live_model="svm",
        threads=1,
    )
    assert results["data"]["labels"] == sorted(WORDS) and results["data"]["speakers"] is None
    assert results["data"]["n_train"] + results["data"]["n_test"] == 300
    skipped = results["models"]["wav2vec2"]["skipped"]
    assert "cannot load" in skipped and "missing-model" in skipped
    assert results["leave_one_speaker_out"] == {"skipped": "no speaker information"}
    assert results["models"]["svm"]["official_split_accuracy"] > 0.4  # ~25 training clips per word; chance 0.1
    assert sorted(results["models"]["svm"]["per_class"]) == sorted(WORDS)
    # eval clips labelled 0-9 are scored against the word labels
    assert results["eval_folder"]["svm"]["n"] == 10 and results["eval_folder"]["svm"]["accuracy"] > 0.2
    assert results["eval_folder"]["zero_shot"]["accuracy"] >= 0.5
    assert results["streaming"]["model"] == "svm" and results["streaming"]["demo"]["expected"] == ["one", "two"]
    assert "cnn" not in results["models"]
    top = results["models"]["encoder"]["finetune_top"]
    assert top["used"] and top["trainable_parameters"] > 0 and results["models"]["encoder"]["config"]["finetune_top"]
    assert results["saved_models"]["encoder"]["agreement_with_in_memory"] == 1.0
    normalisation = results["speaker_normalisation"]  # no speakers: each clip alone; the fine-tuned encoder: none
    assert normalisation["models"] == {"svm": "mean and std"}
    assert normalisation["groups"]["training, official split, leave-one-speaker-out"] == "each clip alone"
