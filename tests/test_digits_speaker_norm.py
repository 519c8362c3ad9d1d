"""Speaker normalisation: statistics over a speaker's clips (shrunk toward the training frames'), for the
SVM's MFCCs, the CNN's front end and the encoder's frames; what it removes, what it keeps, saving it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.signal import lfilter
from sklearn.preprocessing import StandardScaler

from lib.digits.digit_features import (
    DigitFeatureConfig,
    digit_clip_mfcc,
    digit_feature_prior,
    digit_feature_vectors,
    digit_time_segments,
    frame_moments,
    load_digit_waves,
    norm_prior_from_moments,
    speaker_norm_stats,
)


def test_group_statistics_and_their_shrinkage_toward_the_prior():
    rng = np.random.default_rng(0)
    clips = [rng.normal(3.0, 2.0, size=(int(n), 4)) for n in rng.integers(5, 40, size=6)]
    moments = [frame_moments(c) for c in clips]
    # one group, no prior: exactly the mean and std of all its frames together
    stats = speaker_norm_stats(moments, ["a"] * 6)
    every = np.concatenate(clips)
    for mean, std in stats:
        np.testing.assert_allclose(mean, every.mean(0), rtol=1e-5)
        np.testing.assert_allclose(std, every.std(0), rtol=1e-5)
    # groups None: every clip its own statistics
    for (mean, std), clip in zip(speaker_norm_stats(moments), clips):
        np.testing.assert_allclose(mean, clip.mean(0), rtol=1e-5)
        np.testing.assert_allclose(std, clip.std(0), rtol=1e-4)
    # with a prior, a group of n clips weighs n / (n + prior_clips): one clip mostly takes the prior's
    prior = {"mean": [0.0] * 4, "std": [1.0] * 4}
    mean, std = speaker_norm_stats(moments[:1], None, prior, prior_clips=5)[0]
    np.testing.assert_allclose(mean, clips[0].mean(0) / 6, rtol=1e-5)
    second = (np.mean(clips[0] ** 2, 0) + 5 * 1.0) / 6
    np.testing.assert_allclose(std, np.sqrt(second - mean.astype(np.float64) ** 2), rtol=1e-4)
    many = speaker_norm_stats(moments * 100, ["s"] * 600, prior, prior_clips=5)[0][0]  # 600 clips: its own
    np.testing.assert_allclose(many, every.mean(0), rtol=0.01)
    # a group of 3 clips against a prior with a non-zero mean, computed by hand
    skewed = {"mean": [1.0, -2.0, 0.5, 4.0], "std": [0.5, 3.0, 1.0, 2.0]}
    frames = np.concatenate(clips[:3])
    w = 3 / (3 + 5)
    mean = w * frames.mean(0) + (1 - w) * np.array(skewed["mean"])
    second = w * (frames**2).mean(0) + (1 - w) * (np.array(skewed["std"]) ** 2 + np.array(skewed["mean"]) ** 2)
    got_mean, got_std = speaker_norm_stats(moments[:3], ["g"] * 3, skewed, prior_clips=5)[1]
    np.testing.assert_allclose(got_mean, mean, rtol=1e-5)
    np.testing.assert_allclose(got_std, np.sqrt(second - mean**2), rtol=1e-4)
    # one frame, no prior: centred only (no spread to scale by)
    assert speaker_norm_stats([frame_moments(np.ones((1, 4)))])[0][1].tolist() == [1.0] * 4
    # a clip with no frames gets the prior; without a prior that is an error
    empty = frame_moments(np.zeros((0, 4)))
    np.testing.assert_allclose(speaker_norm_stats([empty], None, prior)[0][1], 1.0)
    with pytest.raises(ValueError, match="no frames"):
        speaker_norm_stats([empty])
    with pytest.raises(ValueError, match="2 group keys for 6 clips"):
        speaker_norm_stats(moments, ["a", "b"])
    assert norm_prior_from_moments(moments)["mean"] == pytest.approx(every.mean(0).tolist())


@pytest.fixture(scope="module")
def two_speakers(fsdd_manifest):
    frame = fsdd_manifest[fsdd_manifest.speaker.isin(["george", "theo"])].sort_values("path")
    frame = frame.groupby(["speaker", "label"]).head(3)
    waves, frame, _ = load_digit_waves(frame, 8000, progress=False)
    return waves, frame


def test_a_speakers_microphone_is_removed_but_the_words_are_kept(two_speakers):
    """One speaker's clips through another microphone (a fixed tilt filter and gain) give the same vectors once
    normalised over that speaker's clips; per clip, the same words of the two speakers stay told apart."""
    waves, frame = two_speakers
    config = DigitFeatureConfig(n_mfcc=13, n_frames=12, pooling="segments", cmvn="speaker")
    config.norm_prior = digit_feature_prior(waves, config)
    george = np.flatnonzero(frame.speaker.to_numpy() == "george")
    clean = [waves[i] for i in george]
    other_mic = [0.3 * lfilter([1.0, -0.4], [1.0], w).astype(np.float32) for w in clean]
    a = digit_feature_vectors(clean, config, groups=["george"] * len(clean))
    b = digit_feature_vectors(other_mic, config, groups=["george (other microphone)"] * len(clean))
    spread = np.linalg.norm(a - a.mean(0), axis=1).mean()  # how far clips of different words lie apart
    assert np.linalg.norm(a - b, axis=1).mean() < 0.45 * spread  # 0.34 here
    raw = DigitFeatureConfig.from_dict({**config.to_dict(), "cmvn": False})
    a_raw, b_raw = digit_feature_vectors(clean, raw), digit_feature_vectors(other_mic, raw)
    raw_spread = np.linalg.norm(a_raw - a_raw.mean(0), axis=1).mean()
    assert np.linalg.norm(a_raw - b_raw, axis=1).mean() > raw_spread  # 1.5: unnormalised, the microphone shows
    # the words are kept: a george clip's nearest theo clip says the same digit more often than with per-clip
    # normalisation (CMN) or none (here 0.67 against 0.47 and 0.40; chance 0.1)
    labels, speakers = frame.label.to_numpy(), frame.speaker.to_numpy()

    def nearest_neighbour_accuracy(cmvn):
        mode = DigitFeatureConfig.from_dict({**config.to_dict(), "cmvn": cmvn})
        X = StandardScaler().fit_transform(digit_feature_vectors(waves, mode, groups=frame.speaker.tolist()))
        distances = np.linalg.norm(X[speakers == "george"][:, None] - X[speakers == "theo"][None], axis=2)
        return np.mean(labels[speakers == "theo"][distances.argmin(1)] == labels[speakers == "george"])

    by_speaker = nearest_neighbour_accuracy("speaker")
    assert by_speaker >= 0.55 and by_speaker > nearest_neighbour_accuracy("mean") > nearest_neighbour_accuracy(False)
    # without groups every clip is a group of one, pulled toward the prior: 1/6 its own statistics
    alone = digit_feature_vectors(waves[:1], config)[0]
    m = digit_clip_mfcc(waves[0], raw).astype(np.float64)  # [coefficients, frames], not normalised
    prior_mean, prior_std = np.asarray(config.norm_prior["mean"]), np.asarray(config.norm_prior["std"])
    mean = m.mean(1) / 6 + prior_mean * 5 / 6
    std = np.sqrt((m**2).mean(1) / 6 + (prior_std**2 + prior_mean**2) * 5 / 6 - mean**2)
    expected = digit_time_segments((m - mean[:, None]) / std[:, None], config.n_frames).ravel()
    np.testing.assert_allclose(alone, expected, atol=1e-3)


def test_svm_with_speaker_normalisation_saves_and_reloads(two_speakers, tmp_path, monkeypatch):
    from lib.digits.digit_models import SklearnDigitModel, make_digit_pipeline
    from lib.digits.model_files import load_digit_model, save_sklearn_digit_model

    monkeypatch.setenv("AUDIOLENS_SIGNING_KEY", str(tmp_path / "signing.key"))
    waves, frame = two_speakers
    config = DigitFeatureConfig(n_mfcc=13, n_frames=12, pooling="segments", cmvn="speaker")
    config.norm_prior = digit_feature_prior(waves, config)
    groups = frame.speaker.tolist()
    X = digit_feature_vectors(waves, config, groups=groups)
    pipeline = make_digit_pipeline(pca_components=None).fit(X, frame.label)
    svm = SklearnDigitModel(pipeline, config)
    assert (svm.predict(waves, groups=groups) == frame.label.to_numpy()).mean() >= 0.9
    reloaded = load_digit_model(save_sklearn_digit_model(svm, tmp_path / "svm.joblib"))
    assert reloaded.feature_config.norm_prior == config.norm_prior
    np.testing.assert_array_equal(reloaded.predict(waves, groups=groups), svm.predict(waves, groups=groups))
    np.testing.assert_allclose(reloaded.predict_logits(waves[:4]), svm.predict_logits(waves[:4]))
    # a folder of one user's clips: normalised together with one_speaker=True, each file alone by default
    from lib.digits.model_files import predict_audio_files

    folder = tmp_path / "one user"
    folder.mkdir()
    theo = frame[frame.speaker == "theo"]
    for path in theo.path:
        (folder / Path(path).name).symlink_to(path)
    together = predict_audio_files(svm, folder, one_speaker=True).set_index("path")["prediction"]
    alone = predict_audio_files(svm, folder).set_index("path")["prediction"]
    theo_waves = [waves[i] for i in np.flatnonzero(frame.speaker.to_numpy() == "theo")]
    expected = dict(zip([str(folder / Path(p).name) for p in theo.path], svm.predict(theo_waves, ["theo"] * 30)))
    assert {str(k): v for k, v in together.items()} == expected
    expected_alone = dict(zip([str(folder / Path(p).name) for p in theo.path], svm.predict(theo_waves)))
    assert {str(k): v for k, v in alone.items()} == expected_alone


def test_cnn_normalises_by_speaker_in_training_prediction_and_reloading(two_speakers, tmp_path, monkeypatch):
    import torch

    from lib.digits.digit_features import trim_digit_clip
    from lib.digits.digit_models import DigitCnnConfig, fix_wave_length, train_digit_cnn
    from lib.digits.model_files import load_digit_model, save_cnn_digit_model

    waves, frame = two_speakers
    groups = frame.speaker.tolist()
    config = DigitCnnConfig(n_mfcc=20, time_steps=32, epochs=2, channels=(8, 8, 8), convs_per_block=1, cmvn="speaker")
    cnn, _ = train_digit_cnn(waves, frame.label.to_numpy(), config, groups=groups, progress=False)
    assert config.norm_prior is None and len(cnn.config.norm_prior["mean"]) == 20  # the caller's config is not changed
    x = torch.from_numpy(fix_wave_length(waves, config.n_samples))
    with torch.no_grad():  # the CNN's own speaker statistics: its front end's frames over the speaker's clips
        stats = cnn.network.group_stats(x, groups)
        frames = cnn.network.frontend(x[:1])
    george = np.flatnonzero(np.asarray(groups) == "george")
    torch.testing.assert_close(stats[george[0]], stats[george[-1]])
    assert not torch.allclose(stats[0], stats[-1])  # another speaker, other statistics
    assert frames.shape[1] == stats.shape[2] == 20
    # no groups: each clip alone (shrunk toward the prior), as a group of one would be
    alone = cnn.predict_logits(waves[:4])
    np.testing.assert_allclose(alone, cnn.predict_logits(waves[:4], groups=[0, 1, 2, 3]), atol=1e-4)
    by_speaker = cnn.predict_logits(waves, groups=groups)
    assert not np.allclose(by_speaker[:4], alone, atol=1e-3)
    monkeypatch.setenv("AUDIOLENS_SIGNING_KEY", str(tmp_path / "signing.key"))
    loaded = load_digit_model(save_cnn_digit_model(cnn, tmp_path / "cnn.pt"))
    assert loaded.config.norm_prior == cnn.config.norm_prior and loaded.config.cmvn == "speaker"
    np.testing.assert_allclose(loaded.predict_logits(waves, groups=groups), by_speaker, atol=1e-4)
    # batches of 7 and a shuffled order give the same logits (each clip keeps its speaker's statistics)
    loaded.batch_size = 7
    order = np.random.default_rng(0).permutation(len(waves))
    shuffled = loaded.predict_logits([waves[i] for i in order], groups=[groups[i] for i in order])
    np.testing.assert_allclose(shuffled, by_speaker[order], atol=1e-4)
    # spectrum warps: every warp with the statistics of the speaker's clips as that warp sees them
    warped = DigitCnnConfig.from_dict({**cnn.config.to_dict(), "test_warps": [0.9, 1.0, 1.1]})
    loaded.network.config = loaded.config = warped
    x = torch.from_numpy(fix_wave_length([trim_digit_clip(w, warped) for w in waves], warped.n_samples))
    with torch.no_grad():
        expected = torch.stack(
            [
                loaded.network(
                    x, warp=torch.full((len(x),), w), stats=loaded.network.group_stats(x, groups, w)
                ).softmax(1)
                for w in (0.9, 1.0, 1.1)
            ]
        ).mean(0)
    np.testing.assert_allclose(loaded.predict_proba(waves, groups=groups), expected.numpy(), atol=1e-4)
    np.testing.assert_allclose(
        loaded.predict_logits([waves[i] for i in order], groups=[groups[i] for i in order]),
        loaded.predict_logits(waves, groups=groups)[order],
        atol=1e-4,
    )


def test_an_encoder_config_saved_when_speaker_norm_was_a_switch_still_loads():
    from lib.digits.encoder_digits import DigitEncoderConfig

    old = DigitEncoderConfig().to_dict() | {"speaker_norm": True}  # True then meant mean and standard deviation
    assert DigitEncoderConfig.from_dict(old).speaker_norm == "mean+var"
    with pytest.raises(ValueError, match="speaker_norm must be one of"):
        DigitEncoderConfig(speaker_norm="median")


def test_encoder_frames_are_normalised_per_speaker_and_the_model_keeps_its_prior(tiny_whisper, two_speakers, tmp_path):
    import torch

    from lib.digits.encoder_digits import (
        DigitEncoderConfig,
        EncoderDigitModel,
        encoder_norm_prior,
        speaker_normalised_frames,
        train_digit_encoder_head,
    )
    from lib.digits.model_files import load_digit_model, save_encoder_digit_model

    folder, adapter = tiny_whisper
    waves, frame = two_speakers
    groups = frame.speaker.tolist()
    config = DigitEncoderConfig(model=str(folder), layers=[1, 2], epochs=2, speaker_norm="mean+var")
    frames = EncoderDigitModel(adapter, torch.nn.Identity(), config).frames(waves)
    config.norm_prior = encoder_norm_prior(frames)
    assert np.asarray(config.norm_prior["mean"]).shape == (2, frames[0].shape[2])
    own = DigitEncoderConfig.from_dict({**config.to_dict(), "norm_prior": None})  # a speaker's own statistics
    theo = [f for f, g in zip(speaker_normalised_frames(frames, groups, own), groups) if g == "theo"]
    theo = np.concatenate(theo).astype(np.float32)  # every layer and dimension: mean 0, std 1 over theo's frames
    assert np.abs(theo.mean(0)).max() < 0.01 and np.abs(theo.std(0) - 1).max() < 0.01
    own.speaker_norm = "mean"  # the mean only (the default): centred, the spread kept
    centred = [f for f, g in zip(speaker_normalised_frames(frames, groups, own), groups) if g == "theo"]
    centred = np.concatenate(centred).astype(np.float32)
    raw = np.concatenate([f for f, g in zip(frames, groups) if g == "theo"]).astype(np.float32)
    assert np.abs(centred.mean(0)).max() < 0.01
    np.testing.assert_allclose(centred.std(0), raw.std(0), rtol=0.02, atol=1e-3)
    normalised = speaker_normalised_frames(frames, groups, config)  # 30 clips each: 30/35 their own, 5/35 prior
    head, _ = train_digit_encoder_head(normalised, list(frame.label), config, progress=False)
    model = EncoderDigitModel(adapter, head, config)
    by_speaker = model.predict_logits(waves, groups=groups)
    np.testing.assert_allclose(by_speaker, model.head_logits(frames, groups=groups), atol=1e-4)
    assert not np.allclose(by_speaker, model.predict_logits(waves), atol=1e-3)  # alone: mostly the prior's
    reloaded = load_digit_model(save_encoder_digit_model(model, tmp_path / "encoder.pt"), adapter=adapter)
    assert reloaded.config.speaker_norm and reloaded.config.norm_prior == config.norm_prior
    np.testing.assert_allclose(reloaded.predict_logits(waves, groups=groups), by_speaker, atol=1e-4)
    with pytest.raises(ValueError, match="speaker_norm and finetune_top"):
        DigitEncoderConfig(speaker_norm="mean", finetune_top=True)
    with pytest.raises(ValueError, match="speaker_norm must be one of"):
        DigitEncoderConfig(speaker_norm="median")


def test_eval_folder_groups_are_its_sources_unless_those_are_the_digits():
    import pandas as pd

    from lib.digits.digit_folders import eval_norm_groups

    def manifest(sources, source_from="folder"):
        return pd.DataFrame({"source": sources, "source_from": source_from, "label": range(len(sources))})

    groups, how = eval_norm_groups(manifest(["01", "01", "02", "02"]))  # AudioMNIST's speaker folders
    assert groups == ["01", "01", "02", "02"] and how == "its source (2, named by the sub-folders)"
    groups, how = eval_norm_groups(manifest(["0a7c2a8d", "0a7c2a8d", "1b4c9b89"], "file name"))  # Speech Commands
    assert groups[0] == groups[1] != groups[2] and "named by the file names" in how
    # digit folders beside others (seven/, numerals/): grouping by them would normalise the digits away
    groups, how = eval_norm_groups(manifest(["seven", "three", "numerals", "loose"]))
    assert len(set(groups)) == 1 and how == "the whole folder as one group (its sources are digit folders)"
    groups, how = eval_norm_groups(manifest([".", ".", "."]))  # clips right in the folder
    assert len(set(groups)) == 1 and "names no sources" in how
