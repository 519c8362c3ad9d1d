"""Features: shapes, deltas, padding, pooling, and frame features measured on known signals."""

from __future__ import annotations

import numpy as np
import pytest

from lib.core.audio import load_audio
from lib.core.features import POOLING_MODES, frame_features, log_mel, mfcc_features, pad_frames, pool_frames


@pytest.fixture(scope="module")
def digit(fsdd_dir):
    return load_audio(fsdd_dir / "recordings" / "4_nicolas_20.wav", sr=8000)


def test_log_mel_shape_and_range(digit):
    spec = log_mel(digit, 8000, n_mels=40, n_fft=256, hop_length=80)
    assert spec.shape == (40, 1 + len(digit) // 80)
    assert spec.max() == pytest.approx(0.0) and spec.min() >= -80.0 - 1e-4


@pytest.mark.parametrize("order", [0, 1, 2])
def test_mfcc_with_deltas(digit, order):
    m = mfcc_features(digit, 8000, n_mfcc=40, delta_order=order)
    assert m.shape[0] == 40 * (1 + order) and m.dtype == np.float32
    if order:
        assert np.abs(m[40:80]).sum() > 0  # deltas are computed, not zeros


def test_mfcc_on_a_very_short_clip_still_works(digit):
    m = mfcc_features(digit[:300], 8000, n_mfcc=13, delta_order=2)
    assert m.shape[0] == 39 and np.isfinite(m).all()


def test_pad_frames_pads_and_cuts():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    padded = pad_frames(x, 6)
    assert padded.shape == (3, 6) and np.all(padded[:, 4:] == 0) and np.all(padded[:, :4] == x)
    assert pad_frames(x, 2).shape == (3, 2)


def test_pooling_modes():
    frames = np.array([[1.0, 10.0], [3.0, 30.0], [2.0, 20.0]])
    assert pool_frames(frames, "mean").tolist() == [2.0, 20.0]
    assert pool_frames(frames, "max").tolist() == [3.0, 30.0]
    assert pool_frames(frames, "first").tolist() == [1.0, 10.0]
    assert pool_frames(frames, "last").tolist() == [2.0, 20.0]
    assert pool_frames(frames, "flat").shape == (6,)
    np.testing.assert_allclose(pool_frames(frames, "mean+std"), [2.0, 20.0, np.std([1, 3, 2]), np.std([10, 30, 20])])
    assert set(POOLING_MODES) == {"flat", "mean", "max", "first", "last", "mean+std"}
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_frames(frames, "median")


def test_frame_features_on_known_signals():
    sr = 16000
    t = np.arange(sr) / sr
    tone = np.where(t < 0.5, 0.5 * np.sin(2 * np.pi * 220 * t), 0.0).astype(np.float32)  # 220 Hz then silence
    df = frame_features(tone, sr, pitch="pyin")
    assert len(df) == 51 and np.allclose(np.diff(df.time), 0.02)  # 20 ms grid
    voiced = df[(df.time > 0.1) & (df.time < 0.4)]
    assert voiced.voiced.all() and np.nanmedian(voiced.f0) == pytest.approx(220, rel=0.02)
    silent = df[df.time > 0.6]
    assert not silent.voiced.any() and (silent.rms < 1e-6).all()
    assert np.median(voiced.centroid) == pytest.approx(220, rel=0.25)
    rng = np.random.default_rng(0)
    noise = frame_features(rng.normal(size=sr).astype(np.float32), sr, pitch=None)
    assert noise.flatness.median() > 10 * voiced.flatness.median()  # white noise is flat, a tone is not
    assert {"f0", "voiced"}.isdisjoint(noise.columns)


def test_pyin_gives_no_pitch_to_a_faint_hum_under_the_speech():
    # pYIN alone calls a 70 Hz hum 54 dB below the tone voiced (f0 70 Hz in every frame); those frames are silence
    sr = 16000
    t = np.arange(sr) / sr
    y = np.where(t < 0.5, 0.5 * np.sin(2 * np.pi * 220 * t), 0.001 * np.sin(2 * np.pi * 70 * t)).astype(np.float32)
    df = frame_features(y, sr, pitch="pyin")
    hum = df[df.time > 0.6]
    assert not hum.voiced.any() and hum.f0.isna().all() and (hum.voiced_prob == 0).all()
    assert df[(df.time > 0.1) & (df.time < 0.4)].voiced.all()  # the tone keeps its pitch


def test_pyin_gives_no_pitch_pinned_at_the_floor_of_its_range():
    # a tone below fmin (65 Hz) reads exactly 65 Hz in every frame: the edge of the search, not a pitch
    sr = 16000
    t = np.arange(sr) / sr
    below = frame_features((0.3 * np.sin(2 * np.pi * 55 * t)).astype(np.float32), sr, pitch="pyin")
    assert below.f0.isna().all() and not below.voiced.any()
    low_voice = frame_features((0.3 * np.sin(2 * np.pi * 70 * t)).astype(np.float32), sr, pitch="pyin")
    assert np.nanmedian(low_voice.f0) == pytest.approx(70, rel=0.02) and low_voice.voiced.mean() > 0.8
