"""Faults in the FiftyOne explorer: bad encoders fail once and fast, never as thousands of audio failures;
encoder failures are never cached; a shared database folder says it is in use; bad parameters stop first."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from generator import assemble as asm
from generator.parameter_check import ParameterError, audiolens_check_parameters
from lib.core.audio import load_audio
from lib.core.vector_cache import embed_cache_dir
from lib.explorer.audio_embedders import (
    ExplorerEncoderError,
    MfccStatsEmbedder,
    embed_audio_files_cached,
    make_audio_embedder,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clips(fsdd_manifest):
    return list(fsdd_manifest.groupby("label").head(1).path[:8])


class FlakyEncoder(MfccStatsEmbedder):
    """MFCC, except that the 'model' rejects the clips whose names are in ``reject`` (or every clip)."""

    def __init__(self, reject=None):
        super().__init__()
        self.reject = reject
        self.name = "flaky"
        self.calls = 0

    def prepare(self, y, sample_rate=None):
        return (super().prepare(y, sample_rate), len(y))

    def embed_prepared(self, items):
        self.calls += 1
        if self.reject == "all" or any(n in (self.reject or ()) for _, n in items):
            raise RuntimeError("CUDA error: device-side assert (simulated)")
        return np.stack([v for v, _ in items])


def test_a_bad_checkpoint_is_one_clear_error_before_any_clip(tmp_path, clips):
    pytest.importorskip("lib.explorer.mae_embedders")
    from lib.mae.mae_checkpoints import MaeCheckpointError

    bad = tmp_path / "last.pt"
    bad.write_bytes(b"PK\x03\x04 definitely not a torch checkpoint" * 10)
    embedder = make_audio_embedder("audiomae", checkpoint=bad)
    with pytest.raises(MaeCheckpointError, match="not a readable checkpoint"):
        embed_audio_files_cached(clips, embedder, tmp_path / "cache", "fsdd", progress=False)
    assert not (tmp_path / "cache").exists(), "nothing may be cached for an encoder that never loaded"


def test_an_encoder_failing_on_every_clip_stops_and_caches_nothing(tmp_path, clips):
    encoder = FlakyEncoder(reject="all")
    with pytest.raises(ExplorerEncoderError, match="failed on every clip of the first batch.*CUDA error"):
        embed_audio_files_cached(clips, encoder, tmp_path, "fsdd", batch_size=4, progress=False)
    assert encoder.calls <= 5, "it must stop after the first batch, not try every clip"
    assert not embed_cache_dir(tmp_path, "fsdd", encoder.config()).exists()


def test_encoder_failures_are_reported_and_retried_never_cached(tmp_path, clips):
    lengths = {p: len(load_audio(p)) for p in clips}
    rejected = clips[3]
    encoder = FlakyEncoder(reject={lengths[rejected]})
    embeddings, files, meta = embed_audio_files_cached(clips, encoder, tmp_path, "fsdd", batch_size=4, progress=False)
    assert rejected not in files and len(files) == len(clips) - 1
    assert [f["path"] for f in meta["encoder_failed"]] == [rejected] and meta["failed"] == []
    assert "encoder failed: RuntimeError" in meta["encoder_failed"][0]["error"]
    fixed = FlakyEncoder(reject=None)  # the same config: the same cache
    again, files_again, meta_again = embed_audio_files_cached(clips, fixed, tmp_path, "fsdd", progress=False)
    assert meta_again["cache"]["n_computed"] == 1 and files_again == clips, "only the rejected clip is retried"


def test_unreadable_clips_are_cached_as_audio_failures(tmp_path, clips):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x24\x00\x00\x00WAVEnot audio" * 4)
    paths = clips[:3] + [str(garbage)]
    _, files, meta = embed_audio_files_cached(paths, MfccStatsEmbedder(), tmp_path / "c", "x", progress=False)
    assert files == clips[:3] and [f["path"] for f in meta["failed"]] == [str(garbage)]
    _, _, again = embed_audio_files_cached(paths, MfccStatsEmbedder(), tmp_path / "c", "x", progress=False)
    assert again["cache"]["n_computed"] == 0, "a file that cannot be read is not read again until it changes"


CONNECT = textwrap.dedent(
    """
    import faulthandler, sys
    faulthandler.dump_traceback_later(480, exit=True)  # a hang ends with where it hung, not a silent timeout
    sys.path.insert(0, {root!r})
    from lib.explorer.fiftyone_audio import FoDatabaseInUseError, fo_connect
    try:
        fo_connect({folder!r}, timeout={timeout})
    except FoDatabaseInUseError as error:
        print("IN USE:", error)
        sys.exit(3)
    except RuntimeError as error:  # a database that did not start in time on a busy machine: said plainly
        print("NOT STARTED:", error)
        sys.exit(4)
    print("CONNECTED")
    """
)


def _connect(folder, timeout=120.0):
    code = CONNECT.format(root=str(ROOT), folder=str(folder), timeout=timeout)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.xdist_group(name="fiftyone")  # FiftyOne attaches to any running database: keep them apart
def test_a_database_folder_in_use_says_so(tmp_path):
    import fcntl

    folder = tmp_path / "fo-db"
    folder.mkdir()
    with open(folder / ".audiolens-connect.lock", "a+") as lock:  # another explorer is starting on this folder
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("4242 2026-01-01 00:00:00\n")
        lock.flush()
        proc = _connect(folder, timeout=2)
        out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 3, out
    assert f"FiftyOne database folder {folder} is in use" in out and "4242" in out and "fiftyone_db_dir" in out
    assert "Traceback" not in out


@pytest.mark.xdist_group(name="fiftyone")
def test_two_explorers_starting_on_one_folder_both_work_or_say_why(tmp_path):
    folder = tmp_path / "shared-db"
    procs = [_connect(folder) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode in (0, 3, 4), out
        assert "CONNECTED" in out or "is in use" in out or "did not start within" in out, out
        assert "Traceback" not in out, out
    assert any(p.returncode == 0 and "CONNECTED" in out for p, out in zip(procs, outputs)), outputs


# ----------------------------------------------------------------------------------------- parameters
SCHEMA = asm.parameter_schema("fiftyone_explorer")


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("n_neighbours", 0, "below the smallest allowed value 1"),
        ("max_clips", 0, "below the smallest allowed value 1"),
        ("knn_neighbours", -2, "below the smallest allowed value 1"),
        ("batch_size", 2.5, "not a whole number"),
        ("dataset", "esc-50", "did you mean 'esc50'"),
        ("encoder", "wavlm", "not one of mfcc"),
        ("transform", "mel", "not one of log_mel"),
        ("map_methods", ["umap", "isomap"], "'isomap' is not one of umap"),
        ("umap_min_dist", 2, "above the largest allowed value 1"),
        ("external_min_loaded", 1.5, "above the largest allowed value 1"),
        ("app_port", 0, "below the smallest allowed value 1"),
        ("data_path", "/no/such/folder", "does not exist"),
        ("overwrite", "yes", "not True or False"),
    ],
)
def test_bad_parameters_stop_before_any_work(name, value, message):
    namespace = {key: entry["default"] for key, entry in SCHEMA.items()}
    namespace[name] = value
    with pytest.raises(ParameterError, match=message) as caught:
        audiolens_check_parameters(namespace, SCHEMA, notebook="fiftyone_explorer")
    assert name in str(caught.value)


def test_every_parameter_is_declared_and_remote_is_gone():
    free = {  # values of mixed type, checked by the code that uses them
        "output_dir", "label_column", "group_column", "model_layer", "cache_dir", "media_dir", "fo_dataset_name",
        "fiftyone_db_dir", "geo_by", "query_audio", "map_color_column", "map_threads", "workers", "external_config",
    }  # fmt: skip
    # a parameter without a [spec] is still checked against its default's type (str, bool); numbers need a range
    untyped = [n for n, e in SCHEMA.items() if e["default"] is None or type(e["default"]) in (int, float)]
    undeclared = [name for name in untyped if not SCHEMA[name]["spec"] and name not in free]
    assert undeclared == [], f"parameters without a [spec]: {undeclared}"
    assert "remote" not in SCHEMA, "remote=True cannot work inside a notebook: it is a script-only option"
    assert SCHEMA["overwrite"]["default"] is False, "rebuilding must never delete user content by default"
    renamed = asm.parameter_check_source("fiftyone_explorer", asm.recipe_script("fiftyone_explorer").cells[1].source)
    assert "'quality_group_column': 'group_column'" in renamed


def test_the_cli_runs_the_variant_that_carries_the_code():
    name, params, note = asm.variant_for("fiftyone_explorer", {"encoder": "audiomae", "dataset": "esc50"})
    assert name == "fiftyone_explorer_mae" and "running fiftyone_explorer_mae" in note
    assert params["encoder"] == "audiomae" and params["dataset"] == "esc50" and params["transform"] == "log_mel"
    name, params, _ = asm.variant_for("fiftyone_explorer", {"dataset": "rf"})
    assert name == "fiftyone_explorer_mae" and params == {"dataset": "rf"}, "an RF run takes the variant's defaults"
    assert asm.variant_for("fiftyone_explorer", {"encoder": "mfcc"})[0] == "fiftyone_explorer"
    mae_schema = asm.parameter_schema("fiftyone_explorer_mae")
    assert mae_schema["dataset"]["default"] == "rf" and set(mae_schema) == set(SCHEMA)


def test_a_corrupt_colour_scale_cache_is_recomputed(tmp_path, clips):
    from lib.explorer.spectrogram_media import make_explorer_transform

    first = make_explorer_transform("log_mel", tmp_path, clips, seed=0)
    (cached,) = tmp_path.glob("scale-*.json")
    cached.write_text("{not json")
    again = make_explorer_transform("log_mel", tmp_path, clips, seed=0)
    assert again.scale == first.scale and os.path.getsize(cached) > 20


def test_a_folder_of_unreadable_clips_names_them_before_any_preview(tmp_path):
    from lib.explorer.spectrogram_media import spec_preview_scale

    bad = []
    for name in ("a.wav", "b.flac"):
        (tmp_path / name).write_bytes(b"RIFF\x24\x00\x00\x00WAVEnot audio" * 4)
        bad.append(tmp_path / name)
    with pytest.raises(ValueError, match="none of the 2 sampled clips could be read") as error:
        spec_preview_scale(bad)
    assert str(bad[0]) in str(error.value) and "data_path" in str(error.value)
