"""Digit classification: features, standardisation, grid search, CNN, Wav2Vec2, model files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lib.digits.digit_features import (
    DigitFeatureConfig,
    apply_standardizer,
    digit_feature_vectors,
    digit_mfcc_matrix,
    fit_standardizer,
    load_digit_waves,
)


def _subset(manifest, split, per_label, seed=0):
    frame = manifest[manifest.split == split]
    shuffled = frame.sample(frac=1.0, random_state=seed)
    return shuffled.groupby("label").head(per_label).sort_values(["label", "speaker"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def small_fsdd(fsdd_manifest):
    """20 train and 6 test clips per digit, real FSDD audio at 8 kHz."""
    train = _subset(fsdd_manifest, "train", 20)
    test = _subset(fsdd_manifest, "test", 6)
    train_waves, train, _ = load_digit_waves(train, 8000, progress=False)
    test_waves, test, _ = load_digit_waves(test, 8000, progress=False)
    return train_waves, train, test_waves, test


# ---------------------------------------------------------------- features


def test_feature_shapes_for_every_pooling_and_delta_order(small_fsdd):
    waves = small_fsdd[0][:5]
    for delta_order, coefficients in ((0, 40), (1, 80), (2, 120)):
        config = DigitFeatureConfig(delta_order=delta_order, n_frames=40)
        m = digit_mfcc_matrix(waves[0], config)
        assert m.shape == (coefficients, 40)
        assert np.isfinite(m).all()
        for pooling in ("flat", "mean", "max", "mean+std"):
            config = DigitFeatureConfig(delta_order=delta_order, n_frames=40, pooling=pooling)
            X = digit_feature_vectors(waves, config)
            assert X.shape == (5, config.vector_size)
            assert np.isfinite(X).all()
    # padding: a short clip is zero-padded at the end, a long one is cut
    config = DigitFeatureConfig(n_frames=200)
    padded = digit_mfcc_matrix(waves[0], config)
    real_frames = 1 + len(waves[0]) // config.hop_length
    assert padded.shape == (80, 200)
    assert np.all(padded[:, real_frames + 1 :] == 0) and np.any(padded[:, :real_frames] != 0)
    with pytest.raises(ValueError, match="pooling"):
        DigitFeatureConfig(pooling="median")


def test_standardisation_uses_training_statistics_only(small_fsdd):
    train_waves, _, test_waves, _ = small_fsdd
    config = DigitFeatureConfig()
    train = np.stack([digit_mfcc_matrix(w, config) for w in train_waves])
    test = np.stack([digit_mfcc_matrix(w, config) for w in test_waves]) + 5.0  # a shifted test set
    stats = fit_standardizer(train)
    assert stats["mean"].shape == (80, 1)
    z_train = apply_standardizer(train, stats)
    np.testing.assert_allclose(z_train.mean(axis=(0, 2)), 0, atol=1e-3)
    np.testing.assert_allclose(z_train.std(axis=(0, 2)), 1, atol=1e-2)
    z_test = apply_standardizer(test, stats)
    # the test set is transformed with the training statistics: its shift survives
    expected_shift = 5.0 / stats["std"][:, 0]
    shift = z_test.mean(axis=(0, 2)) - apply_standardizer(test - 5.0, stats).mean(axis=(0, 2))
    np.testing.assert_allclose(shift, expected_shift, rtol=1e-3)
    refit = fit_standardizer(np.concatenate([train, test]))
    assert not np.allclose(refit["mean"], stats["mean"])
    with pytest.raises(ValueError, match="coefficients"):
        apply_standardizer(train[:, :40], stats)


# ---------------------------------------------------------------- baseline


def test_grid_search_pipeline_on_real_digits(small_fsdd):
    from lib.digits.digit_models import SklearnDigitModel, grid_search_digit_pipeline

    train_waves, train, test_waves, test = small_fsdd
    config = DigitFeatureConfig()
    X_train = digit_feature_vectors(train_waves, config)
    X_test = digit_feature_vectors(test_waves, config)
    search = grid_search_digit_pipeline(
        X_train, train.label.to_numpy(), pca_components=64, C_grid=(1.0, 10.0), gamma_grid=("scale", 1e-4), cv_folds=3
    )
    assert len(search.cv_results_["params"]) == 4
    assert search.best_params_["clf__C"] in (1.0, 10.0)
    assert 0.5 < search.best_score_ <= 1.0
    pipeline = search.best_estimator_
    assert [name for name, _ in pipeline.steps] == ["scale", "pca", "clf"]
    # the scaler inside the refitted pipeline saw the training features only
    np.testing.assert_allclose(pipeline.named_steps["scale"].mean_, X_train.mean(axis=0), rtol=1e-4, atol=1e-4)
    accuracy = float((pipeline.predict(X_test) == test.label.to_numpy()).mean())
    assert accuracy > 0.6, accuracy  # chance is 0.1
    model = SklearnDigitModel(pipeline, config)
    proba = model.predict_proba(test_waves[:4], temperature=2.0)
    assert proba.shape == (4, 10) and np.allclose(proba.sum(axis=1), 1)
    np.testing.assert_array_equal(model.predict(test_waves[:4]), pipeline.predict(X_test[:4]))
    logreg = grid_search_digit_pipeline(
        X_train, train.label.to_numpy(), classifier="logreg", pca_components=32, C_grid=(0.1,), cv_folds=2
    )
    assert "clf__gamma" not in logreg.best_params_


# ---------------------------------------------------------------- CNN


@pytest.fixture(scope="module")
def quick_cnn(small_fsdd):
    from lib.digits.digit_models import DigitCnnConfig, train_digit_cnn

    train_waves, train, test_waves, test = small_fsdd
    config = DigitCnnConfig(epochs=3, patience=2, channels=(16, 24, 32), convs_per_block=1)
    return train_digit_cnn(
        train_waves,
        train.label.to_numpy(),
        config,
        val_waves=test_waves,
        val_labels=test.label.to_numpy(),
        progress=False,
    )


def test_cnn_keeps_best_checkpoint_and_train_statistics(quick_cnn, small_fsdd):
    import torch

    from lib.digits.digit_features import trim_digit_clip
    from lib.digits.digit_models import fix_wave_length

    model, history = quick_cnn
    train_waves, _, test_waves, test = small_fsdd
    assert len(history["epoch"]) == len(history["val_accuracy"]) >= 1
    assert history["best_val_accuracy"] == max(history["val_accuracy"])
    # the returned weights are the best epoch's: they reproduce its validation accuracy
    accuracy = float((model.predict(test_waves) == test.label.to_numpy()).mean())
    assert accuracy == pytest.approx(history["best_val_accuracy"])
    # standardisation buffers hold the training clips' statistics (after trimming and per-utterance CMVN)
    trimmed = [trim_digit_clip(w, model.config) for w in train_waves]
    with torch.no_grad():
        feats = model.network.raw_features(torch.from_numpy(fix_wave_length(trimmed, model.config.n_samples)))
    np.testing.assert_allclose(
        model.network.feat_mean[:, 0].numpy(), feats.mean(dim=(0, 2)).numpy(), rtol=1e-3, atol=1e-3
    )
    assert model.predict_logits(test_waves[:3]).shape == (3, 10)


def test_cnn_learns_a_small_set_by_heart(small_fsdd):
    """With augmentation and dropout off, the CNN fits 40 real clips (4 per digit): training works at all."""
    from lib.digits.digit_models import DigitCnnConfig, train_digit_cnn

    train_waves, train, _, _ = small_fsdd
    keep = train.groupby("label").head(4).index.to_numpy()
    waves, labels = [train_waves[i] for i in keep], train.label.to_numpy()[keep]
    config = DigitCnnConfig(epochs=12, patience=12, channels=(16, 24, 32), convs_per_block=1, dropout=0.0,
                            noise_snr_db=None, noise_prob=0.0, gain_db=0.0, shift_ms=0.0, freq_masks=0, time_masks=0,
                            batch_size=16)  # fmt: skip
    model, history = train_digit_cnn(waves, labels, config, val_waves=waves, val_labels=labels, progress=False)
    assert history["val_accuracy"][0] < 0.5 and history["best_val_accuracy"] >= 0.9  # from near chance to all
    assert (model.predict(waves) == labels).mean() >= 0.9


def test_waveform_augmentation_changes_audio_but_keeps_shape():
    import torch

    from lib.digits.digit_models import DigitCnnConfig, augment_waves

    config = DigitCnnConfig()
    x = torch.randn(4, config.n_samples) * 0.1
    y = augment_waves(x, config, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.allclose(x, y)
    off = DigitCnnConfig(gain_db=0, shift_ms=0, noise_snr_db=None)
    assert torch.equal(augment_waves(x, off), x)


# ---------------------------------------------------------------- model files


def test_model_files_round_trip_and_clear_errors(tmp_path, small_fsdd, quick_cnn, monkeypatch):
    from lib.digits.digit_models import SklearnDigitModel, make_digit_pipeline
    from lib.digits.model_files import (
        ModelFileError,
        load_digit_model,
        predict_audio_files,
        save_cnn_digit_model,
        save_sklearn_digit_model,
        sign_digit_model_file,
    )

    monkeypatch.setenv("AUDIOLENS_SIGNING_KEY", str(tmp_path / "signing.key"))

    train_waves, train, test_waves, test = small_fsdd
    config = DigitFeatureConfig()
    pipeline = make_digit_pipeline(pca_components=32).fit(digit_feature_vectors(train_waves, config), train.label)
    svm = SklearnDigitModel(pipeline, config)
    svm_path = save_sklearn_digit_model(svm, tmp_path / "svm.joblib")
    reloaded = load_digit_model(svm_path)
    np.testing.assert_array_equal(reloaded.predict(test_waves), svm.predict(test_waves))

    cnn, _ = quick_cnn
    cnn_path = save_cnn_digit_model(cnn, tmp_path / "cnn.pt")
    assert cnn_path.with_suffix(".json").exists()
    np.testing.assert_allclose(
        load_digit_model(cnn_path).predict_logits(test_waves[:5]), cnn.predict_logits(test_waves[:5]), atol=1e-5
    )

    table = predict_audio_files(load_digit_model(cnn_path), test.path.iloc[0])
    assert list(table.columns) == ["path", "prediction", "confidence", "error"] and len(table) == 1
    clips = tmp_path / "clips"
    clips.mkdir()
    for path in test.path.iloc[:3]:
        (clips / Path(path).name).symlink_to(path)
    (clips / "broken.wav").write_bytes(b"RIFF....WAVEfmt ")  # a corrupt clip is reported, not fatal
    table = predict_audio_files(reloaded, clips)
    assert len(table) == 4 and table.error.notna().sum() == 1
    ok = table[table.error.isna()].sort_values("path")
    np.testing.assert_array_equal(
        ok.prediction.to_numpy(), svm.predict(test_waves[:3])[np.argsort([Path(p).name for p in test.path.iloc[:3]])]
    )

    with pytest.raises(ModelFileError, match="file not found"):
        load_digit_model(tmp_path / "nowhere.joblib")
    broken = tmp_path / "broken.joblib"
    broken.write_bytes(svm_path.read_bytes()[:200])  # truncated
    with pytest.raises(ModelFileError, match="unsigned"):
        load_digit_model(broken)
    sign_digit_model_file(broken)  # signed but truncated: the unpickler's failure is reported
    with pytest.raises(ModelFileError, match="not a readable joblib"):
        load_digit_model(broken)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    (tmp_path / "garbage.json").write_text(cnn_path.with_suffix(".json").read_text())
    with pytest.raises(ModelFileError, match="not a readable PyTorch"):
        load_digit_model(garbage)
    # weights saved for one architecture, config of another
    meta = json.loads(cnn_path.with_suffix(".json").read_text())
    meta["config"]["channels"] = [8, 8, 8]
    (tmp_path / "mismatch.json").write_text(json.dumps(meta))
    (tmp_path / "mismatch.pt").write_bytes(cnn_path.read_bytes())
    with pytest.raises(ModelFileError, match="mismatched"):
        load_digit_model(tmp_path / "mismatch.pt")
    # a CNN whose JSON is missing
    (tmp_path / "lonely.pt").write_bytes(cnn_path.read_bytes())
    with pytest.raises(ModelFileError, match="lonely.json: file not found"):
        load_digit_model(tmp_path / "lonely.pt")
    # a joblib file that is not an audiolens model
    import joblib

    joblib.dump({"something": 1}, tmp_path / "other.joblib")
    sign_digit_model_file(tmp_path / "other.joblib")
    with pytest.raises(ModelFileError, match="not an audiolens digit model"):
        load_digit_model(tmp_path / "other.joblib")
    with pytest.raises(ModelFileError, match="unknown model file type"):
        (tmp_path / "model.onnx").write_bytes(b"x")
        load_digit_model(tmp_path / "model.onnx")
    with pytest.raises(ModelFileError, match="no config.json"):
        load_digit_model(tmp_path)


# ---------------------------------------------------------------- Wav2Vec2


def test_wav2vec2_learns_a_40_clip_set_and_reloads(tiny_model, tmp_path, small_fsdd):
    """Real learning: a tiny Wav2Vec2 overfits 40 clips (4 per digit); the saved model predicts the same labels."""

    from lib.digits.model_files import load_digit_model, save_wav2vec2_digit_model
    from lib.digits.wav2vec2_finetune import finetune_wav2vec2, finetune_wav2vec2_lr_grid, load_wav2vec2_classifier

    train_waves, train, test_waves, _ = small_fsdd
    pick = train.groupby("label").head(4).index.to_numpy()
    waves, labels = [train_waves[i] for i in pick], train.label.to_numpy()[pick]
    assert len(waves) == 40
    folder = tiny_model("wav2vec2")  # base model: the head is added by from_pretrained
    frozen, _ = load_wav2vec2_classifier(str(folder), freeze_feature_encoder=True)
    assert not any(p.requires_grad for p in frozen.wav2vec2.feature_extractor.parameters())
    # the tiny random model needs its convolutional front end trained too to fit 40 clips; a seeded head
    # (else its initialisation depends on whatever ran before in this process)
    model, extractor = load_wav2vec2_classifier(str(folder), freeze_feature_encoder=False, seed=0)
    assert model.config.num_labels == 10
    wrapped, history = finetune_wav2vec2(
        model,
        extractor,
        waves,
        labels,
        epochs=60,
        batch_size=8,
        learning_rate=3e-3,
        val_fraction=0.0,
        progress=False,
    )
    assert history["steps"] == 60 * 5
    train_accuracy = float(np.mean(wrapped.predict(waves) == labels))
    assert train_accuracy >= 0.9, (train_accuracy, history["train_accuracy"][-5:])  # chance is 0.1
    assert history["train_accuracy"][0] < 0.5  # it learned: the first epoch was far from it
    saved = save_wav2vec2_digit_model(wrapped, tmp_path / "w2v")
    reloaded = load_digit_model(saved)
    assert reloaded.labels == list(range(10)) and reloaded.sample_rate == 8000
    np.testing.assert_array_equal(reloaded.predict(waves), wrapped.predict(waves))
    np.testing.assert_allclose(
        reloaded.predict_logits(test_waves[:4]), wrapped.predict_logits(test_waves[:4]), atol=1e-4
    )
    # the learning-rate grid keeps the rate with the best validation accuracy; noise augmentation runs
    best, best_history, table = finetune_wav2vec2_lr_grid(
        lambda: load_wav2vec2_classifier(str(folder), freeze_feature_encoder=False)[0],
        extractor,
        waves,
        labels,
        [1e-7, 3e-3],
        epochs=3,
        batch_size=8,
        val_fraction=0.0,
        max_seconds=1.0,
        noise_prob=0.5,
        progress=False,
    )
    assert [row["learning_rate"] for row in table] == [1e-7, 3e-3] and best_history["noise_prob"] == 0.5
    assert best_history["learning_rate"] == max(table, key=lambda row: row["val_accuracy"])["learning_rate"]
    # a classification checkpoint with the right number of labels loads as is
    labelled, _ = load_wav2vec2_classifier(str(tiny_model("wav2vec2", num_labels=10)))
    assert labelled.config.num_labels == 10


def test_wav2vec2_unavailable_is_a_clear_error(tmp_path):
    from lib.digits.wav2vec2_finetune import Wav2Vec2Unavailable, load_wav2vec2_classifier

    with pytest.raises(Wav2Vec2Unavailable, match="cannot load .*local save_pretrained folder"):
        load_wav2vec2_classifier(str(tmp_path / "no-such-model"))
    with pytest.raises(Wav2Vec2Unavailable, match="facebook/wav2vec2-base"):
        load_wav2vec2_classifier("facebook/wav2vec2-base", local_files_only=True)


def test_cnn_variants_log_mel_and_2d_build_run_and_reload(tmp_path):
    import torch

    from lib.digits.digit_models import CnnDigitModel, DigitCnn, DigitCnnConfig, DigitFrontend
    from lib.digits.model_files import load_digit_model, save_cnn_digit_model

    wave = torch.randn(2, 6400) * 0.1
    mel = DigitFrontend(DigitCnnConfig(features="logmel", n_mels=64))(wave)
    mfcc = DigitFrontend(DigitCnnConfig(features="mfcc", n_mfcc=40))(wave)
    assert mel.shape == (2, 64, 51) and mfcc.shape == (2, 40, 51)
    # the MFCC front end matches librosa's MFCC of the same power mel spectrogram
    import librosa

    y = wave[0].numpy()
    mel_power = librosa.feature.melspectrogram(y=y, sr=8000, n_fft=512, hop_length=128, n_mels=64)
    expected = librosa.feature.mfcc(S=librosa.power_to_db(mel_power, ref=1.0, amin=1e-10, top_db=None), n_mfcc=40)
    np.testing.assert_allclose(mfcc[0].numpy(), expected, rtol=1e-3, atol=1e-2)
    for config in (
        DigitCnnConfig(features="logmel", architecture="2d", channels=(8, 16, 16)),
        DigitCnnConfig(labels=["yes", "no"], channels=(8, 8, 8)),
    ):
        network = DigitCnn(config)
        assert network(wave, augment=True).shape == (2, len(config.labels))
        model = CnnDigitModel(network)
        path = save_cnn_digit_model(model, tmp_path / f"{config.architecture}-{len(config.labels)}.pt")
        reloaded = load_digit_model(path)
        assert reloaded.labels == config.labels
        np.testing.assert_allclose(reloaded.predict_logits([y]), model.predict_logits([y]), atol=1e-5)
    with pytest.raises(ValueError, match="architecture"):
        DigitCnn(DigitCnnConfig(architecture="rnn"))
