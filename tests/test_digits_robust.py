"""Speaker-robust digit features and CNN inputs: time normalisation, CMN, VTLP, time-resampled CNN frames."""

from __future__ import annotations

import numpy as np
import pytest

from lib.digits.digit_features import (
    DigitFeatureConfig,
    digit_clip_mfcc,
    digit_feature_vectors,
    digit_time_segments,
    load_digit_waves,
)


@pytest.fixture(scope="module")
def few_waves(fsdd_manifest):
    frame = fsdd_manifest.sort_values("path").groupby("label").head(2).head(12)
    waves, _, _ = load_digit_waves(frame, 8000, progress=False)
    return waves


def test_time_segments_do_not_depend_on_speaking_rate():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((6, 24)).astype(np.float32)
    slow = np.repeat(m, 3, axis=1)  # the same frames, each held three times as long
    np.testing.assert_allclose(digit_time_segments(slow, 8), digit_time_segments(m, 8), atol=1e-5)
    np.testing.assert_allclose(digit_time_segments(m, 8)[:, 0], m[:, :3].mean(axis=1), atol=1e-6)
    short = digit_time_segments(m[:, :3], 8)  # fewer frames than segments: frames repeat
    assert short.shape == (6, 8) and np.isfinite(short).all()
    lo, hi = m[:, :3].min(axis=1, keepdims=True), m[:, :3].max(axis=1, keepdims=True)
    assert np.all(short >= lo - 1e-6) and np.all(short <= hi + 1e-6)


def test_segments_pooling_mean_normalisation_and_vtlp(few_waves):
    config = DigitFeatureConfig(n_mfcc=13, n_frames=12, pooling="segments", cmvn="mean")
    X = digit_feature_vectors(few_waves, config)
    assert X.shape == (len(few_waves), 13 * 2 * 12) == (len(few_waves), config.vector_size)
    assert np.isfinite(X).all()
    # CMN centres every coefficient over the clip but, unlike mean+var, keeps its spread
    m = digit_clip_mfcc(few_waves[0], config)
    np.testing.assert_allclose(m.mean(axis=1), 0, atol=1e-3)
    full = digit_clip_mfcc(few_waves[0], DigitFeatureConfig(n_mfcc=13, cmvn=True))
    np.testing.assert_allclose(full.std(axis=1), 1, atol=1e-2)
    assert not np.allclose(m.std(axis=1), 1, atol=0.1)
    # a level change does not move CMN features (the log spectrum only shifts)
    np.testing.assert_allclose(digit_feature_vectors([few_waves[0] * 0.1], config)[0], X[0], atol=1e-2)
    # VTLP: warp 1 is the plain feature; other warps change it, but less than another clip differs
    np.testing.assert_allclose(digit_feature_vectors(few_waves[:1], config, warp=1.0)[0], X[0], atol=1e-5)
    warped = digit_feature_vectors(few_waves[:1], config, warp=1.1)[0]
    assert 0 < np.linalg.norm(warped - X[0]) < np.linalg.norm(X[1:] - X[0], axis=1).max()
    with pytest.raises(ValueError, match="cmvn"):
        DigitFeatureConfig(cmvn="median")


def test_vtlp_warp_scales_the_frequency_axis():
    from lib.core.features import warped_power_spectrogram

    sr = 8000
    t = np.arange(sr // 2) / sr
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    peaks = {w: int(warped_power_spectrogram(tone, 256, 64, w).mean(axis=1).argmax()) for w in (0.9, 1.0, 1.2)}
    assert peaks[1.0] == 32  # 1000 Hz at 31.25 Hz per bin
    assert peaks[1.2] == pytest.approx(32 * 1.2, abs=1) and peaks[0.9] == pytest.approx(32 * 0.9, abs=1)


def test_cnn_time_steps_resample_the_clip_span_and_old_configs_keep_frames():
    import torch

    from lib.digits.digit_models import DigitCnn, DigitCnnConfig, augment_waves

    config = DigitCnnConfig(n_mfcc=20, time_steps=32, channels=(8, 8, 8), convs_per_block=1)
    net = DigitCnn(config).eval()
    rng = np.random.default_rng(0)
    t = np.arange(3000) / 8000
    sweep = np.sin(2 * np.pi * (300 + 2000 * t) * t) * np.hanning(3000) + 0.01 * rng.standard_normal(3000)
    word = torch.from_numpy(sweep.astype(np.float32))
    early, late = torch.zeros(2, config.n_samples), torch.zeros(2, config.n_samples)
    early[:, 512 : 512 + 3000] = word
    late[:, 1536 : 1536 + 3000] = word  # the same word, 8 hops later: the same time-normalised frames
    with torch.no_grad():
        a, b = net.raw_features(early), net.raw_features(late)
        assert a.shape == (2, 20, 32)
        assert torch.allclose(a, b, atol=1e-3)
        assert net(early).shape == (2, 10)
    # noise augmentation stays inside the clip's span, so the span is unchanged
    noisy = augment_waves(early, DigitCnnConfig(time_steps=32, shift_ms=0, gain_db=0, noise_prob=1.0))
    assert torch.all(noisy[:, :512] == 0) and torch.all(noisy[:, 3512:] == 0)
    assert not torch.equal(noisy[:, 512:3512], early[:, 512:3512])
    # a config saved before time_steps existed loads without it
    old = {k: v for k, v in config.to_dict().items() if k != "time_steps"}
    assert DigitCnnConfig.from_dict(old).time_steps is None
    plain = DigitCnn(DigitCnnConfig.from_dict(old)).eval()
    with torch.no_grad():
        assert plain.raw_features(early).shape[-1] == 1 + config.n_samples // config.hop_length


def test_robust_svm_and_cnn_save_and_reload(tmp_path, fsdd_manifest, monkeypatch):
    from lib.digits.digit_models import DigitCnnConfig, SklearnDigitModel, make_digit_pipeline, train_digit_cnn
    from lib.digits.model_files import load_digit_model, save_cnn_digit_model, save_sklearn_digit_model

    monkeypatch.setenv("AUDIOLENS_SIGNING_KEY", str(tmp_path / "signing.key"))
    frame = fsdd_manifest[fsdd_manifest.split == "train"].sort_values("path").groupby("label").head(4)
    waves, frame, _ = load_digit_waves(frame, 8000, progress=False)
    y = frame["label"].to_numpy()
    config = DigitFeatureConfig(n_mfcc=13, n_frames=12, pooling="segments", cmvn="mean")
    X = np.concatenate([digit_feature_vectors(waves, config, warp=w) for w in (1.0, 0.9, 1.1)])
    pipeline = make_digit_pipeline(pca_components=None).fit(X, np.tile(y, 3))
    svm = SklearnDigitModel(pipeline, config)
    reloaded = load_digit_model(save_sklearn_digit_model(svm, tmp_path / "svm.joblib"))
    assert reloaded.feature_config == config
    np.testing.assert_array_equal(reloaded.predict(waves), svm.predict(waves))
    assert (svm.predict(waves) == y).mean() >= 0.9  # it fits its own training clips

    cnn_config = DigitCnnConfig(n_mfcc=20, time_steps=32, epochs=1, channels=(8, 8, 8), convs_per_block=1)
    cnn, _ = train_digit_cnn(waves, y, cnn_config, val_waves=waves[:10], val_labels=y[:10], progress=False)
    loaded = load_digit_model(save_cnn_digit_model(cnn, tmp_path / "cnn.pt"))
    assert loaded.config.time_steps == 32
    np.testing.assert_allclose(loaded.predict_logits(waves[:5]), cnn.predict_logits(waves[:5]), atol=1e-5)


def test_cnn_test_warps_average_the_softmax_over_warped_spectra(tmp_path, monkeypatch):
    import torch

    from lib.digits.digit_models import CnnDigitModel, DigitCnn, DigitCnnConfig, fix_wave_length
    from lib.digits.model_files import load_digit_model, save_cnn_digit_model

    config = DigitCnnConfig(features="logmel", n_mels=64, channels=(8, 8, 8), convs_per_block=1, trim_db=None)
    net = DigitCnn(config).eval()
    t = np.arange(config.n_samples) / 8000
    tone = torch.from_numpy(np.sin(2 * np.pi * 1000 * t).astype(np.float32))[None]
    with torch.no_grad():
        plain = net.frontend(tone)
        assert torch.equal(net.frontend(tone, warp=torch.ones(1)), plain)
        peak = {w: int(net.frontend(tone, warp=torch.tensor([w])).mean(dim=-1).argmax()) for w in (0.8, 1.0, 1.2)}
    assert peak[0.8] < peak[1.0] < peak[1.2]  # warp > 1 moves the formants (here: the tone) up

    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(5000).astype(np.float32) * 0.1 for _ in range(4)]
    model = CnnDigitModel(net)
    warped = CnnDigitModel(DigitCnn(DigitCnnConfig.from_dict({**config.to_dict(), "test_warps": [0.9, 1.0, 1.1]})))
    warped.network.load_state_dict(net.state_dict())
    x = torch.from_numpy(fix_wave_length(waves, config.n_samples))
    with torch.no_grad():
        expected = torch.stack([net(x, warp=torch.full((4,), w)).softmax(dim=1) for w in (0.9, 1.0, 1.1)]).mean(0)
    np.testing.assert_allclose(warped.predict_proba(waves), expected.numpy(), atol=1e-5)
    assert not np.allclose(warped.predict_proba(waves), model.predict_proba(waves), atol=1e-4)
    # saved and reloaded with its warps; a config saved before test_warps existed loads without them
    monkeypatch.setenv("AUDIOLENS_SIGNING_KEY", str(tmp_path / "signing.key"))
    loaded = load_digit_model(save_cnn_digit_model(warped, tmp_path / "cnn.pt"))
    assert loaded.config.test_warps == (0.9, 1.0, 1.1)
    np.testing.assert_allclose(loaded.predict_logits(waves), warped.predict_logits(waves), atol=1e-5)
    old = {k: v for k, v in config.to_dict().items() if k != "test_warps"}
    assert DigitCnnConfig.from_dict(old).test_warps is None
