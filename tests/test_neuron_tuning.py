"""Neuron tuning analysis: planted ground truth on real speech, correlation maths, FDR."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lib.core.audio import load_audio
from lib.core.datasets import load_librispeech
from lib.core.features import frame_features
from lib.neurons.neuron_tuning import (
    activity_pca,
    align_features_to_frames,
    analyse_layer_tuning,
    collect_layer_activity,
    heatmap_neuron_order,
    marked_frame_selectivity,
    neuron_feature_correlations,
    top_tuned_neurons,
)

PITCH_NEURONS = [5, 17, 40]
ENERGY_NEURONS = [3, 22, 51]
HIDDEN = 64


class PlantedSpeechModel:
    """Looks like a ``SpeechModelAdapter`` (WavLM frame grid) whose layer 1 has planted neurons.

    Layer 1: ``PITCH_NEURONS`` follow log f0 in voiced frames, ``ENERGY_NEURONS`` follow the
    frame energy (dB); every other unit, and all of layer 2, is independent noise.
    """

    family = "wavlm"
    name = "planted"
    sample_rate = 16000
    frame_rate = 50.0
    hidden_size = HIDDEN
    num_layers = 2
    layer_names = [0, 1, 2]

    def __init__(self, seed: int = 0):
        self.model = SimpleNamespace(
            config=SimpleNamespace(conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2))
        )
        self.rng = np.random.default_rng(seed)

    def hidden_states(self, waveform, layers):
        n = (len(waveform) - 400) // 320 + 1
        truth = frame_features(waveform, self.sample_rate, pitch="yin")
        # the model frame k covers samples [320k, 320k + 400): its centre is nearest feature frame k + 1
        idx = np.clip(np.round((np.arange(n) * 320 + 200) / 320).astype(int), 0, len(truth) - 1)
        f0 = truth["f0"].to_numpy()[idx]
        energy = truth["rms_db"].to_numpy()[idx]
        voiced = np.isfinite(f0)
        log_f0 = np.where(voiced, np.log(np.where(voiced, f0, 1.0)), 0.0)
        log_f0 = np.where(voiced, (log_f0 - log_f0[voiced].mean()) / (log_f0[voiced].std() + 1e-9), 0.0)
        energy = (energy - energy.mean()) / energy.std()
        out = {}
        for layer in layers:
            x = self.rng.normal(size=(n, HIDDEN)).astype(np.float32)
            if layer == 1:
                for gain, unit in zip((1.0, 2.0, 3.0), PITCH_NEURONS):
                    x[:, unit] = np.where(voiced, gain * log_f0, 0.0) + 0.1 * self.rng.normal(size=n)
                for gain, unit in zip((1.0, 0.5, 2.0), ENERGY_NEURONS):
                    x[:, unit] = gain * energy + 0.1 * self.rng.normal(size=n)
            out[layer] = x
        return out


@pytest.fixture(scope="module")
def real_utterances(librispeech_dir):
    manifest = load_librispeech(librispeech_dir, download=False).head(3)
    return [load_audio(p, sr=16000, max_seconds=5.0) for p in manifest.path], list(manifest.utterance)


@pytest.fixture(scope="module")
def planted_analysis(real_utterances):
    waves, names = real_utterances
    collected = collect_layer_activity(
        PlantedSpeechModel(), waves, layers=[1, 2], names=names, pitch="yin", progress=False
    )
    return collected, analyse_layer_tuning(collected, n_clusters=6, top_k=5)


def test_planted_pitch_and_energy_neurons_rank_first(planted_analysis):
    collected, analysis = planted_analysis
    assert [len(a) for a in collected["activity"][1]] == [len(f) for f in collected["features"]]
    tuning = analysis[1]["tuning"]
    for method in ("spearman", "pearson"):
        pitch_top = top_tuned_neurons(tuning, "f0", k=3, method=method)
        energy_top = top_tuned_neurons(tuning, "rms", k=3, method=method)
        assert set(pitch_top.neuron) == set(PITCH_NEURONS), (method, pitch_top)
        assert set(energy_top.neuron) == set(ENERGY_NEURONS), (method, energy_top)
        assert pitch_top.significant.all() and energy_top.significant.all()
        assert (pitch_top.r > 0.9).all()
    # the 4th-ranked neuron for pitch is far weaker than the planted ones
    fourth = top_tuned_neurons(tuning, "f0", k=4).iloc[3]
    assert abs(fourth.r) < 0.5 and fourth.neuron not in PITCH_NEURONS


def test_planted_neurons_cluster_together(planted_analysis):
    _, analysis = planted_analysis
    labels = analysis[1]["labels"]
    pitch_cluster = {labels[u] for u in PITCH_NEURONS}
    energy_cluster = {labels[u] for u in ENERGY_NEURONS}
    assert len(pitch_cluster) == 1 and len(energy_cluster) == 1
    assert pitch_cluster != energy_cluster
    # and nothing else joins them
    assert set(np.flatnonzero(labels == labels[PITCH_NEURONS[0]])) == set(PITCH_NEURONS)
    assert set(np.flatnonzero(labels == labels[ENERGY_NEURONS[0]])) == set(ENERGY_NEURONS)
    clusters = analysis[1]["clusters"].set_index("cluster")
    assert clusters.loc[labels[PITCH_NEURONS[0]], "dominant_feature"] == "f0"
    assert clusters.loc[labels[ENERGY_NEURONS[0]], "dominant_feature"] in ("rms", "voiced_prob")
    # the heatmap order by cluster puts the planted neurons first
    order = heatmap_neuron_order(np.zeros((10, HIDDEN)), analysis[1]["tuning"], labels)
    assert set(order[:6]) == set(PITCH_NEURONS + ENERGY_NEURONS)


def test_pure_noise_layer_has_no_discoveries_after_fdr(planted_analysis):
    _, analysis = planted_analysis
    tuning = analysis[2]["tuning"]
    assert np.sum(tuning["spearman_q"] < 0.05) <= 2
    assert np.sum(tuning["pearson_q"] < 0.05) <= 2
    # uncorrected p-values do produce false positives at this many tests: the correction matters
    assert np.all(tuning["spearman_q"] >= tuning["spearman_p"] - 1e-12)
    assert analysis[2]["summary"]["share_tuned_any_feature"] < 0.05
    assert analysis[1]["summary"]["share_tuned"]["f0"] >= 3 / HIDDEN


def test_correlations_match_scipy_and_use_voiced_frames_for_pitch():
    rng = np.random.default_rng(1)
    n = 300
    f0 = np.where(rng.random(n) < 0.6, rng.uniform(80, 250, n), np.nan)
    features = pd.DataFrame({"rms": rng.random(n), "f0": f0})
    activity = rng.normal(size=(n, 4))
    activity[:, 2] = np.nan_to_num(f0) * 0.01 + rng.normal(size=n) * 0.3
    result = neuron_feature_correlations(activity, features, ["rms", "f0"], autocorrelation_lags=0)  # scipy's p
    voiced = np.isfinite(f0)
    for unit in range(4):
        r, p = stats.pearsonr(activity[:, unit], features["rms"])
        assert result["pearson_r"][unit, 0] == pytest.approx(r, abs=1e-9)
        assert result["pearson_p"][unit, 0] == pytest.approx(p, rel=1e-6)
        rho, p_s = stats.spearmanr(activity[voiced, unit], f0[voiced])
        assert result["spearman_r"][unit, 1] == pytest.approx(rho, abs=1e-9)
        assert result["spearman_p"][unit, 1] == pytest.approx(p_s, rel=1e-6)
    assert result["n_frames"] == [n, int(voiced.sum())]
    expected_q = stats.false_discovery_control(result["spearman_p"].ravel(), method="bh").reshape(4, 2)
    np.testing.assert_allclose(result["spearman_q"], expected_q)
    with pytest.raises(ValueError, match="frames"):
        neuron_feature_correlations(activity[:10], features, ["rms"])
    only = neuron_feature_correlations(activity, features, ["rms", "f0"], autocorrelation_lags=0, methods=("spearman",))
    assert not any(key.startswith("pearson") for key in only)  # not computed
    for key in ("spearman_r", "spearman_p", "spearman_q"):
        np.testing.assert_array_equal(only[key], result[key])
    with pytest.raises(ValueError, match="methods"):
        neuron_feature_correlations(activity, features, ["rms"], methods=("kendall",))


def test_slow_unrelated_signals_are_not_called_tuned():
    """Autocorrelated frames: the naive p-values call most unrelated slow neurons tuned; the corrected ones
    keep the false-positive rate near alpha and still find a neuron that really follows the feature."""
    rng = np.random.default_rng(0)
    n, d = 3000, 200

    def slow(size):  # AR(1) with a 0.5 s time constant at 50 frames per second
        x = rng.normal(size=size)
        for t in range(1, len(x)):
            x[t] += 0.96 * x[t - 1]
        return x

    target = slow(n)
    activity = np.stack([slow(n) for _ in range(d)], axis=1)
    activity[:, 0] = target + 0.5 * slow(n)  # a tuned neuron
    features = pd.DataFrame({"rms": target})
    naive = neuron_feature_correlations(activity, features, ["rms"], autocorrelation_lags=0)
    corrected = neuron_feature_correlations(activity, features, ["rms"])
    assert (naive["spearman_p"][1:, 0] < 0.05).mean() > 0.4  # most unrelated neurons "tuned"
    assert (corrected["spearman_p"][1:, 0] < 0.05).mean() < 0.12
    assert corrected["spearman_q"][0, 0] < 0.001 and corrected["spearman_r"][0, 0] > 0.8
    assert 10 < corrected["effective_frames"][0] < n / 5  # a 0.5 s time constant: about 1 frame in 50 counts
    white = neuron_feature_correlations(rng.normal(size=(n, 5)), pd.DataFrame({"rms": rng.normal(size=n)}), ["rms"])
    assert white["effective_frames"][0] > 0.8 * n  # independent frames keep (almost) all of n


def test_constant_neuron_and_alignment():
    features = pd.DataFrame({"time": np.arange(50) * 0.02, "rms": np.linspace(0, 1, 50)})
    activity = np.zeros((50, 2))
    activity[:, 1] = features["rms"]
    result = neuron_feature_correlations(activity, features, ["rms"])
    assert result["pearson_r"][0, 0] == 0.0 and result["pearson_p"][0, 0] == 1.0
    assert result["pearson_r"][1, 0] == pytest.approx(1.0)
    aligned = align_features_to_frames(features, [0.0125, 0.0325, 0.99])
    assert list(aligned["rms"]) == [features["rms"][1], features["rms"][2], features["rms"][49]]


def test_pca_trajectories_shapes():
    rng = np.random.default_rng(0)
    acts = [rng.normal(size=(40, 16)), rng.normal(size=(25, 16))]
    pca, mean, std, trajectories = activity_pca(acts, n_components=3)
    assert [t.shape for t in trajectories] == [(40, 3), (25, 3)]
    assert pca.explained_variance_ratio_.sum() <= 1.0


def test_marked_frame_selectivity_finds_the_responding_neuron():
    rng = np.random.default_rng(3)
    acts = [rng.normal(size=(120, 20)), rng.normal(size=(80, 20))]
    masks = [np.zeros(120, bool), np.zeros(80, bool)]
    masks[0][30:50] = True
    masks[1][10:25] = True
    for a, m in zip(acts, masks):
        a[m, 7] += 2.0
    table = marked_frame_selectivity(acts, masks, k=3)
    assert table.neuron.iloc[0] == 7 and table.diff_z.iloc[0] > 1.0 and table.q.iloc[0] < 0.05
    assert (table.q.iloc[1:] > 0.05).all()
    with pytest.raises(ValueError, match="marked"):
        marked_frame_selectivity(acts, [np.zeros(120, bool), np.zeros(80, bool)])


def _ar1(rng, n, d, tau):
    a = np.exp(-1.0 / tau)
    x = np.zeros((n, d))
    noise = rng.normal(size=(n, d)) * np.sqrt(1 - a**2)
    for i in range(1, n):
        x[i] = a * x[i - 1] + noise[i]
    return x


def test_marked_frames_against_slow_unrelated_neurons_and_against_speech():
    rng = np.random.default_rng(5)
    n = 3000
    words = np.zeros(n, bool)  # 0.3-0.6 s words with pauses between them, 20 ms frames
    start = 0
    while start < n - 40:
        length = int(rng.integers(15, 30))
        words[start : start + length] = True
        start += length + int(rng.integers(10, 40))
    keyword = np.zeros(n, bool)
    starts = np.flatnonzero(np.diff(words.astype(int)) == 1)[::6] + 1  # every 6th word is the keyword
    for s0 in starts:
        keyword[s0 : s0 + 20] = words[s0 : s0 + 20]
    slow = _ar1(rng, n, 200, tau=25)  # 0.5 s time constant, unrelated to the keyword
    speech = rng.normal(size=(n, 1)) + 1.5 * words[:, None]  # follows speech, not the keyword
    key = rng.normal(size=(n, 1)) + 1.5 * keyword[:, None]  # follows the keyword
    acts = [np.hstack([slow, speech, key])]
    naive = marked_frame_selectivity(acts, [keyword], k=202, autocorrelation_lags=0)
    corrected = marked_frame_selectivity(acts, [keyword], k=202)
    slow_naive = (naive[naive.neuron < 200].q < 0.05).mean()
    slow_corrected = (corrected[corrected.neuron < 200].q < 0.05).mean()
    assert slow_naive > 0.3 and slow_corrected < 0.12, (slow_naive, slow_corrected)
    assert corrected.neuron.iloc[0] == 201 and corrected.q.iloc[0] < 1e-6  # the keyword neuron
    # against all other frames the speech neuron looks keyword-selective; against the other words it does not
    assert corrected.set_index("neuron").loc[200, "q"] < 0.05
    within = marked_frame_selectivity(acts, [keyword], k=202, reference_masks=[words]).set_index("neuron")
    assert within.loc[200, "q"] > 0.05 and within.loc[201, "q"] < 1e-6


def test_within_utterance_tuning_is_not_fooled_by_a_speaker_offset():
    """Pitch differs between speakers (women, men) and moves within each utterance. A neuron whose level only
    tells the speakers apart is 'tuned to pitch' on pooled frames, not within utterances; a neuron that
    follows pitch within utterances is found either way."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(6), 300)
    speaker = np.where(groups % 2, 1.0, -1.0)
    t = np.arange(len(groups)) / 50.0
    moving = np.sin(2 * np.pi * 0.7 * t + groups) + 0.3 * rng.normal(size=len(groups))
    f0 = 160 + 50 * speaker + 15 * moving
    activity = np.stack(
        [speaker + 0.3 * rng.normal(size=len(groups)), moving + 0.3 * rng.normal(size=len(groups))], axis=1
    )
    features = pd.DataFrame({"f0": f0})
    pooled = neuron_feature_correlations(activity, features, ["f0"])
    within = neuron_feature_correlations(activity, features, ["f0"], groups=groups)
    assert pooled["within"] == "pooled" and within["within"] == "utterance"
    assert pooled["spearman_q"][0, 0] < 1e-3 and pooled["spearman_r"][0, 0] > 0.6  # the confound
    assert within["spearman_q"][0, 0] > 0.05 and abs(within["spearman_r"][0, 0]) < 0.1
    assert within["pearson_q"][0, 0] > 0.05
    for method in ("spearman", "pearson"):
        assert within[f"{method}_q"][1, 0] < 1e-3 and within[f"{method}_r"][1, 0] > 0.8


def test_keyword_neurons_are_compared_within_utterances():
    """One speaker says the keyword often, the other never: a neuron that only tells the speakers apart is a
    'keyword neuron' on pooled frames, not within utterances; a neuron that responds to the keyword is found."""
    rng = np.random.default_rng(3)
    n = 600
    marks_a = np.zeros(n, bool)
    for start in range(20, n - 20, 60):
        marks_a[start : start + 15] = True
    acts = [rng.normal(size=(n, 3)), rng.normal(size=(n, 3))]
    acts[0][:, 0] += 2.0  # speaker A's level: no response to the keyword
    acts[0][:, 1] += 1.5 * marks_a  # responds to the keyword
    masks = [marks_a, np.zeros(n, bool)]
    pooled = marked_frame_selectivity(acts, masks, k=3, within_utterance=False).set_index("neuron")
    within = marked_frame_selectivity(acts, masks, k=3).set_index("neuron")
    assert pooled.loc[0, "q"] < 0.01  # the speaker offset passes for a keyword response
    assert within.loc[0, "q"] > 0.05 and within.loc[1, "q"] < 1e-3
