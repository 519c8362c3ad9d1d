"""Embedding cache, embedders, spectrogram media and embedding-quality scores (no FiftyOne needed)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from lib.core.audio import audio_info, load_audio
from lib.core.vector_cache import embed_cache_dir, embed_cache_load, embed_cache_update
from lib.explorer.audio_embedders import (
    ExplorerEncoderError,
    MfccStatsEmbedder,
    SpeechLayerEmbedder,
    embed_audio_files_cached,
    embed_signal_files,
    make_audio_embedder,
)
from lib.explorer.embedding_quality import (
    intra_inter_distances,
    knn_accuracy_cv,
    precision_at_k,
    precision_at_k_across_groups,
    precision_chance,
    quality_comparison,
    quality_report,
)
from lib.explorer.spectrogram_media import (
    make_explorer_transform,
    spec_media_streams,
    spec_video_metadata,
    spectrogram_videos,
)
from tests.explorer_helpers import decode_soundtrack, embed_files, render_previews


@pytest.fixture(scope="module")
def clips(fsdd_manifest):
    """16 real FSDD clips, two per digit 0-7, several speakers."""
    picked = fsdd_manifest[fsdd_manifest.label < 8].groupby("label").head(2)
    return list(picked.path)


class CountingCompute:
    """compute_fn for the cache that records which files it was asked to embed."""

    def __init__(self, embedder):
        self.embedder = embedder
        self.calls = []

    def __call__(self, paths):
        self.calls.append(list(paths))
        return embed_files(paths, self.embedder, batch_size=8)

    @property
    def computed(self):
        return [p for call in self.calls for p in call]


def _broken_wavs(tmp_path, real_clip):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x24\x00\x00\x00WAVEthis is not audio at all" * 3)
    truncated = tmp_path / "truncated.wav"
    data = open(real_clip, "rb").read()
    truncated.write_bytes(data[: len(data) // 3])  # header announces more audio than is there
    return [str(garbage), str(truncated)]


def test_second_run_computes_nothing(tmp_path, clips):
    embedder = MfccStatsEmbedder()
    compute = CountingCompute(embedder)
    first, files, report = embed_cache_update(clips, compute, tmp_path, "fsdd", embedder.config(), verbose=False)
    assert first.shape == (len(clips), embedder.embedding_dim) and files == clips
    assert report["n_computed"] == len(clips) and report["written"]
    compute.calls.clear()
    second, files2, report2 = embed_cache_update(clips, compute, tmp_path, "fsdd", embedder.config(), verbose=False)
    assert compute.calls == [], "a second run with nothing changed must not compute anything"
    assert report2["n_computed"] == 0 and report2["n_cached"] == len(clips) and not report2["written"]
    np.testing.assert_array_equal(first, second)
    folder = embed_cache_dir(tmp_path, "fsdd", embedder.config())
    assert {p.name for p in folder.iterdir()} == {"embeddings.npy", "metadata.json", "config.json"}
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["files"] == clips and metadata["n"] == len(clips)


def test_added_files_are_computed_alone_and_removed_files_dropped(tmp_path, clips):
    """A smaller request keeps the other clips' rows while their files exist; a deleted file's row goes."""
    embedder = MfccStatsEmbedder()
    compute = CountingCompute(embedder)
    embed_cache_update(clips[:10], compute, tmp_path, "fsdd", embedder.config(), verbose=False)
    compute.calls.clear()
    full, files, report = embed_cache_update(clips, compute, tmp_path, "fsdd", embedder.config(), verbose=False)
    assert sorted(compute.computed) == sorted(clips[10:]), "only the added files may be computed"
    assert report["n_cached"] == 10 and report["n_computed"] == len(clips) - 10
    reference = embed_files(clips, embedder)[0]
    np.testing.assert_allclose(full, reference, rtol=1e-5, atol=1e-5)
    compute.calls.clear()
    fewer, files, report = embed_cache_update(clips[3:9], compute, tmp_path, "fsdd", embedder.config(), verbose=False)
    assert compute.calls == [] and report["n_removed"] == 0 and files == clips[3:9]
    np.testing.assert_array_equal(fewer, full[3:9])
    stored, metadata = embed_cache_load(embed_cache_dir(tmp_path, "fsdd", embedder.config()), embedder.config())
    assert sorted(metadata["files"]) == sorted(clips) and stored.shape[0] == len(clips)  # the other rows are kept
    again, _, report = embed_cache_update(clips, compute, tmp_path, "fsdd", embedder.config(), verbose=False)
    assert compute.calls == [] and report["n_cached"] == len(clips)
    np.testing.assert_array_equal(again, full)
    # a file deleted from disk: its row is dropped at the next update, whatever is asked for
    copies = [shutil.copy(c, tmp_path / Path(c).name) for c in clips[:3]]
    cache = tmp_path / "copies"
    embed_cache_update(copies, compute, cache, "fsdd", embedder.config(), verbose=False)
    os.remove(copies[0])
    _, _, report = embed_cache_update(copies[1:2], compute, cache, "fsdd", embedder.config(), verbose=False)
    assert report["n_removed"] == 1
    _, metadata = embed_cache_load(embed_cache_dir(cache, "fsdd", embedder.config()), embedder.config())
    assert sorted(metadata["files"]) == sorted(str(c) for c in copies[1:])


def test_modified_file_is_recomputed(tmp_path, clips):
    local = [shutil.copy(p, tmp_path / os.path.basename(p)) for p in clips[:4]]
    local = [str(p) for p in local]
    embedder = MfccStatsEmbedder()
    compute = CountingCompute(embedder)
    embed_cache_update(local, compute, tmp_path / "cache", "copy", embedder.config(), verbose=False)
    shutil.copy(clips[5], local[1])  # same name, new content
    compute.calls.clear()
    _, _, report = embed_cache_update(local, compute, tmp_path / "cache", "copy", embedder.config(), verbose=False)
    assert compute.computed == [local[1]] and report["n_computed"] == 1


def test_corrupt_clips_are_skipped_listed_and_not_retried(tmp_path, clips):
    broken = _broken_wavs(tmp_path, clips[0])
    paths = clips[:4] + broken + clips[4:6]
    embedder = MfccStatsEmbedder()
    compute = CountingCompute(embedder)
    embeddings, files, report = embed_cache_update(
        paths, compute, tmp_path / "cache", "mixed", embedder.config(), verbose=False
    )
    assert files == clips[:6] and embeddings.shape[0] == 6
    failed = {item["path"]: item["error"] for item in report["failed"]}
    assert set(failed) == set(broken)
    assert "truncated" in failed[broken[1]]
    assert "not a readable audio file" in failed[broken[0]]
    compute.calls.clear()
    _, files2, report2 = embed_cache_update(
        paths, compute, tmp_path / "cache", "mixed", embedder.config(), verbose=False
    )
    assert compute.calls == [] and files2 == files and {f["path"] for f in report2["failed"]} == set(broken)


def test_killed_write_leaves_the_old_cache_readable(tmp_path, clips, monkeypatch):
    embedder = MfccStatsEmbedder()
    config = embedder.config()
    compute = CountingCompute(embedder)
    old, _, _ = embed_cache_update(clips[:6], compute, tmp_path, "fsdd", config, verbose=False)
    folder = embed_cache_dir(tmp_path, "fsdd", config)

    real_save = np.save

    def dying_save(handle, array, **kwargs):  # write half the bytes, then "die"
        real_save(handle, array[: len(array) // 2], **kwargs)
        raise KeyboardInterrupt("killed while writing embeddings.npy")

    monkeypatch.setattr(np, "save", dying_save)  # atomic_save_npy calls numpy.save
    with pytest.raises(KeyboardInterrupt):
        embed_cache_update(clips, compute, tmp_path, "fsdd", config, verbose=False)
    monkeypatch.undo()
    stored, metadata = embed_cache_load(folder, config)
    assert stored is not None, metadata
    assert metadata["files"] == clips[:6]
    np.testing.assert_array_equal(stored, old)
    assert not any(p.name.startswith(".") for p in folder.parent.iterdir()), "staging folders must be cleaned up"

    # killed between the two renames (old folder moved aside, new one not yet in place)
    os.replace(folder, folder.parent / f".{folder.name}.old-123")
    stored, metadata = embed_cache_load(folder, config)
    assert stored is not None and metadata["files"] == clips[:6] and folder.exists()


def test_changed_encoder_or_tampered_cache_is_not_reused(tmp_path, clips, capsys):
    a, b = MfccStatsEmbedder(), MfccStatsEmbedder(n_mfcc=13)
    assert embed_cache_dir(tmp_path, "fsdd", a.config()) != embed_cache_dir(tmp_path, "fsdd", b.config())
    compute = CountingCompute(a)
    embed_cache_update(clips[:4], compute, tmp_path, "fsdd", a.config(), verbose=False)
    compute_b = CountingCompute(b)
    emb_b, _, report = embed_cache_update(clips[:4], compute_b, tmp_path, "fsdd", b.config(), verbose=False)
    assert report["n_computed"] == 4 and emb_b.shape[1] == b.embedding_dim
    folder = embed_cache_dir(tmp_path, "fsdd", a.config())
    tampered = np.load(folder / "embeddings.npy")
    tampered[0, 0] += 1.0
    np.save(folder / "embeddings.npy", tampered)
    stored, reason = embed_cache_load(folder, a.config())
    assert stored is None and "SHA-256" in reason
    compute.calls.clear()
    _, _, report = embed_cache_update(clips[:4], compute, tmp_path, "fsdd", a.config(), verbose=True)
    assert report["n_computed"] == 4 and "rebuilt" in capsys.readouterr().out


def test_cached_embedding_metadata(tmp_path, clips):
    embedder = make_audio_embedder("mfcc")
    embeddings, files, meta = embed_audio_files_cached(clips[:5], embedder, tmp_path, "fsdd", progress=False)
    assert embeddings.shape == (5, embedder.embedding_dim) and np.isfinite(embeddings).all()
    assert meta["files"] == files and meta["failed"] == [] and meta["model"]["kind"] == "mfcc"
    assert meta["cache"]["n_computed"] == 5 and meta["timestamp"]


def test_speech_model_layer_embedder(tiny_model, clips, tmp_path):
    folder = tiny_model("wavlm")
    embedder = SpeechLayerEmbedder(str(folder), layer=1, local_files_only=True)
    assert embedder._adapter is None and embedder.model_hash  # keyed by content; loaded by load(), before any clip
    embeddings, files, meta = embed_audio_files_cached(clips[:3], embedder, tmp_path, "fsdd", progress=False)
    assert embeddings.shape == (3, 32) and np.isfinite(embeddings).all()
    assert embedder.config()["layer"] == "1" and embedder.config()["fingerprint"]
    other = SpeechLayerEmbedder(str(folder), layer=2, local_files_only=True)
    assert embed_cache_dir(tmp_path, "fsdd", other.config()) != embed_cache_dir(tmp_path, "fsdd", embedder.config())
    fresh = SpeechLayerEmbedder(str(folder), layer=1, local_files_only=True)
    again, _, meta2 = embed_audio_files_cached(clips[:3], fresh, tmp_path, "fsdd", progress=False)
    assert meta2["cache"]["n_computed"] == 0, "a second run with the same model computes nothing"
    np.testing.assert_array_equal(again, embeddings)
    assert "layer 1" in embedder.describe() and "wavlm" in embedder.describe()
    with pytest.raises(ExplorerEncoderError, match="no layer"):
        SpeechLayerEmbedder(str(folder), layer=7, local_files_only=True).load()
    with pytest.raises(ExplorerEncoderError, match="cannot use"):
        SpeechLayerEmbedder(str(tmp_path / "no-such-model"), local_files_only=True).load()


def test_encoder_registry_names_the_variant_for_its_encoders(monkeypatch):
    from lib.explorer.audio_embedders import EXPLORER_ENCODERS
    from lib.explorer.spectrogram_media import EXPLORER_TRANSFORMS

    for name in ("audiomae", "external", "transform_stats"):  # as in the default notebook, whatever was imported
        monkeypatch.delitem(EXPLORER_ENCODERS, name, raising=False)
    monkeypatch.delitem(EXPLORER_TRANSFORMS, "iq_spectrogram", raising=False)
    assert isinstance(make_audio_embedder("mfcc", model_name="ignored", n_mfcc=13), MfccStatsEmbedder)
    assert make_audio_embedder("mfcc", n_mfcc=13).embedding_dim == 13 * 2 * 4
    for name in ("audiomae", "external", "transform_stats"):
        with pytest.raises(ExplorerEncoderError, match="fiftyone_explorer_mae"):
            make_audio_embedder(name)
    with pytest.raises(ExplorerEncoderError, match="unknown encoder 'wav2vec'"):
        make_audio_embedder("wav2vec")
    with pytest.raises(ValueError, match="fiftyone_explorer_mae"):
        make_explorer_transform("iq_spectrogram", "/tmp", [])


def test_workers_give_the_same_embeddings_and_previews(tmp_path, clips):
    embedder = MfccStatsEmbedder()
    renderer = make_explorer_transform("log_mel", tmp_path / "png", clips, seed=0)
    stats = {}
    with_workers, ok_w, failed_w, rejected_w = embed_signal_files(
        clips, embedder, batch_size=4, progress=False, workers=2, preview=renderer, stats=stats
    )
    alone, ok_a, _, _ = embed_signal_files(clips, embedder, batch_size=5, progress=False, workers=0)
    assert ok_w == ok_a == clips and not failed_w and not rejected_w
    np.testing.assert_allclose(with_workers, alone, rtol=1e-5, atol=1e-6)
    assert set(stats["previews"]) == set(clips) and all(os.path.exists(p) for p in stats["previews"].values())
    assert stats["decode"] > 0 and stats["transform"] > 0 and stats["media"] > 0
    assert "log-mel" in renderer.describe() and "dB" in renderer.describe()
    # the colour scale is kept: a second renderer on the same clips reads it instead of decoding them again
    again = make_explorer_transform("log_mel", tmp_path / "png", clips, seed=0)
    assert again.scale == renderer.scale and len(list((tmp_path / "png").glob("scale-*.json"))) == 1


def test_previews_share_one_colour_scale_and_videos_play(tmp_path, clips):
    broken = _broken_wavs(tmp_path, clips[0])[:1]
    pngs, ok, failures, scale = render_previews(clips[:3] + broken, tmp_path / "png")
    assert ok == clips[:3] and [f["path"] for f in failures] == broken
    assert all(os.path.getsize(p) > 500 for p in pngs)
    assert scale["fmax"] == 4000.0 and scale["vmax_db"] > scale["vmin_db"]
    assert scale["n_sampled"] == 3 and scale["percentiles"] == [1.0, 99.5]  # the broken clip is not counted
    from PIL import Image

    assert {Image.open(p).size[1] for p in pngs} == {128}
    # fixed scale: a louder copy of a clip gets a brighter picture
    again, _, _, fixed = render_previews(clips[:1], tmp_path / "png2", db_range=(-80, 0))
    assert fixed["vmin_db"] == -80 and os.path.exists(again[0])

    mp4s, video_failures = spectrogram_videos(ok, pngs, tmp_path / "mp4", progress=False)
    assert video_failures == [] and all(os.path.exists(p) for p in mp4s)
    for clip, mp4, png in zip(ok, mp4s, pngs):
        streams = spec_media_streams(mp4)
        assert streams["audio"] == ["aac"] and streams["video"] == ["h264"]
        meta = spec_video_metadata(mp4, png, audio_info(clip)["duration"])
        assert abs(meta["duration"] - streams["duration"]) < 0.05 and meta["frame_rate"] == 10
        assert meta["frame_height"] == 128 and meta["frame_width"] % 2 == 0 and meta["size_bytes"] > 1000
        assert meta["total_frame_count"] == _video_frames(mp4)
        original = load_audio(clip, sr=16000)
        decoded = decode_soundtrack(mp4, sr=16000)
        assert abs(len(decoded) - len(original)) / 16000 < 0.08, "soundtrack must last as long as the clip"
        assert np.sqrt(np.mean(decoded**2)) > 0.2 * np.sqrt(np.mean(original**2)), "soundtrack is silent"


def _video_frames(mp4) -> int:
    import re
    import subprocess

    from lib.explorer.spectrogram_media import spec_ffmpeg_exe

    result = subprocess.run(
        [spec_ffmpeg_exe(), "-i", str(mp4), "-map", "0:v", "-c", "copy", "-f", "null", "-"],
        capture_output=True,
        text=True,
    )
    return int(re.findall(r"frame=\s*(\d+)", result.stderr)[-1])


def test_quality_scores_on_known_structure():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 10
    labels = np.repeat(np.arange(4), 30)
    clustered = centres[labels] + rng.normal(size=(120, 16))
    assert precision_at_k(clustered, labels, 20) == pytest.approx(1.0)
    noise = rng.normal(size=(120, 16))
    chance = precision_chance(labels)
    assert chance == pytest.approx(29 / 119)
    assert abs(precision_at_k(noise, labels, 20) - chance) < 0.1
    distances = intra_inter_distances(clustered, labels)
    assert distances["ratio"] < 0.3
    report = quality_report(clustered, labels, k=20)
    assert report["silhouette"] > 0.5 and report["precision_at_k"] == pytest.approx(1.0)
    assert report["distances"]["ratio"] == pytest.approx(distances["ratio"])
    from lib.explorer.embedding_quality import plot_embedding_quality

    mixed = centres[labels] + rng.normal(size=(120, 16)) * 8  # overlapping classes: precision falls with k
    fig = plot_embedding_quality(mixed, labels, ks=(1, 5, 20, 50), per_label_k=5)
    curve, bars = fig.axes[0].lines[0].get_ydata(), [p.get_height() for p in fig.axes[1].patches]
    x = mixed - mixed.mean(axis=0)  # the report's centring, as the plot's
    assert list(curve) == pytest.approx([precision_at_k(x, labels, k, center=False) for k in (1, 5, 20, 50)])
    assert bars == pytest.approx(list(precision_at_k(x, labels, 5, center=False, per_class=True)[1].sort_index()))
    assert curve[0] > curve[-1]


def test_precision_across_groups_ignores_the_query_group():
    rng = np.random.default_rng(1)
    # 3 speakers x 4 words x 5 takes; each speaker has a strong voice offset, words a weak one
    speakers = np.repeat(np.arange(3), 20)
    words = np.tile(np.repeat(np.arange(4), 5), 3)
    voice = rng.normal(size=(3, 8)) * 10
    word = rng.normal(size=(4, 8)) * 5
    x = voice[speakers] + word[words] + rng.normal(size=(60, 8)) * 0.3
    assert precision_at_k(x, words, 4) == pytest.approx(1.0)  # same speaker, same word: easy
    across = precision_at_k_across_groups(x, words, speakers, 5)
    assert across > 0.5  # the word signal survives across voices (chance: 10 of 40 other-speaker clips)
    voice_only = voice[speakers] + rng.normal(size=(60, 8)) * 0.3
    assert abs(precision_at_k_across_groups(voice_only, words, speakers, 5) - 0.25) < 0.12


def test_knn_accuracy_is_grouped_and_uses_predefined_folds():
    rng = np.random.default_rng(2)
    # 5 classes; each source recording (group) has a strong private offset: splitting a group between train and
    # test would let k-NN recognise the recording instead of the class
    groups = np.repeat(np.arange(50), 4)
    labels = groups % 5
    recording = rng.normal(size=(50, 12)) * 6
    x = recording[groups] + rng.normal(size=(5, 12))[labels] * 1.0 + rng.normal(size=(200, 12)) * 0.3
    leaky = knn_accuracy_cv(x, labels, None, None, k=3)
    grouped = knn_accuracy_cv(x, labels, groups, None, k=3)
    assert leaky["scheme"].startswith("5-fold, stratified") and grouped["scheme"].startswith("5-fold, grouped")
    assert leaky["accuracy"] > grouped["accuracy"] + 0.2, (leaky, grouped)
    folds = (groups // 5) % 5 + 1  # ESC-50 style: five predefined folds, each holding every class
    predefined = knn_accuracy_cv(x, labels, groups, folds, k=3)
    assert predefined["scheme"].startswith("predefined folds (5") and predefined["n_folds"] == 5
    only_two = knn_accuracy_cv(x, labels, groups, np.where(folds > 2, 1, 2), k=3)
    assert only_two["scheme"].startswith("5-fold, grouped"), "fewer than five folds: grouped CV instead"
    clean = rng.normal(size=(5, 12))[labels] * 5 + rng.normal(size=(200, 12))
    assert knn_accuracy_cv(clean, labels, groups, folds)["accuracy"] > 0.9


def test_quality_report_on_real_clips(fsdd_manifest):
    picked = fsdd_manifest.groupby(["label", "speaker"]).head(3).reset_index(drop=True)
    x, ok, failed = embed_files(picked.path, MfccStatsEmbedder(), workers=2)
    assert ok == list(picked.path) and not failed
    x = (x - x.mean(0)) / x.std(0)
    labels, speakers = picked.label.astype(str).to_numpy(), picked.speaker.to_numpy()
    report = quality_report(x, labels, speakers, None, k=10, knn_k=5)
    assert report["precision_at_k"] > 2 * report["chance"]
    assert report["precision_at_k_other_groups"] > 1.5 * report["chance"]
    assert report["knn"]["scheme"].startswith("5-fold, grouped") and report["knn"]["accuracy"] > 0.3
    assert set(report["per_class_precision"]) == set(labels) and -1 < report["silhouette"] < 1
    table = quality_comparison(
        {
            "mfcc": report,
            "noise": quality_report(np.random.default_rng(0).normal(size=x.shape), labels, speakers, None, 10, 5),
        }
    )
    assert table.loc["mfcc", "k-NN accuracy (k=5)"] > table.loc["noise", "k-NN accuracy (k=5)"] + 0.2
