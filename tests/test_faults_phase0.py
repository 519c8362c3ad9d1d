"""Phase 0 and Tier 1 under faults: corrupt or stale caches, changed audio, bad checkpoints, artefacts, parameters.

Each case asserts the clear error (naming the file or parameter) or the recovery (what was rebuilt).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lib.phase0.phase0_latents import (
    consolidate_latent_store,
    extract_latents_to_store,
    open_latent_store,
    split_phase0_speakers,
)
from tests.test_phase0 import CountingEncoder

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def manifest4(librispeech_dir):
    from lib.core.datasets import load_librispeech

    manifest = load_librispeech(librispeech_dir, download=False)
    return split_phase0_speakers(manifest, seed=0).head(4).reset_index(drop=True)


def _extract(manifest, store, encoder=None, chunk=2):
    encoder = encoder or CountingEncoder()
    stats = extract_latents_to_store(manifest, encoder, store, chunk_utterances=chunk, max_seconds=1.0, progress=False)
    return encoder, stats


# ----------------------------------------------------------------------------- latent store
@pytest.mark.parametrize(
    "content, problem",
    [
        (b"\xff\xfe\x00garbage", "UnicodeDecodeError"),
        (b'{"version": 2, "enc', "JSONDecodeError"),
        (b"[1, 2, 3]", "expected a JSON object"),
        (b'{"version": 2, "encoder": {}}', "missing field"),
    ],
)
def test_corrupt_store_header_is_named_rewritten_and_parts_reused(tmp_path, manifest4, capsys, content, problem):
    store = tmp_path / "store"
    _extract(manifest4, store)
    (store / "store.json").write_bytes(content)
    encoder, stats = _extract(manifest4, store)
    out = capsys.readouterr().out
    assert "store.json is unreadable" in out and problem in out
    assert encoder.calls == 0 and stats["parts_reused"] == 2  # the parts carry the store key: still valid
    assert json.loads((store / "store.json").read_text())["n_parts"] == 2


@pytest.mark.parametrize("damage", ["truncated_npy", "garbage_parquet", "wrong_shape", "empty_energy"])
def test_corrupt_part_is_named_and_only_it_is_encoded_again(tmp_path, manifest4, capsys, damage):
    store = tmp_path / "store"
    _extract(manifest4, store)
    consolidate_latent_store(store)
    _, before, _, _ = open_latent_store(store)
    part = store / "parts"
    if damage == "truncated_npy":
        path = part / "part-000001.latents.npy"
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage_parquet":
        (part / "part-000001.parquet").write_bytes(b"PAR1 not really")
    elif damage == "wrong_shape":
        np.save(part / "part-000001.latents.npy", np.zeros((3, 80), np.float32))
    else:
        (part / "part-000001.energy.npy").write_bytes(b"")
    encoder, stats = _extract(manifest4, store)
    out = capsys.readouterr().out
    assert "part 1 (part-000001.parquet)" in out and stats["parts_stale"] == 1
    assert encoder.calls == 2 and stats["parts_reused"] == 1
    consolidate_latent_store(store)
    _, after, _, _ = open_latent_store(store)
    assert np.array_equal(before, after)


def test_changed_audio_is_detected_and_encoded_again(tmp_path, manifest4, capsys):
    audio = tmp_path / "audio"
    audio.mkdir()
    local = manifest4.copy()
    for i, row in local.iterrows():
        local.loc[i, "path"] = str(shutil.copy(row["path"], audio / Path(row["path"]).name))
    store = tmp_path / "store"
    _extract(local, store, chunk=1)
    consolidate_latent_store(store)
    index, before, _, _ = open_latent_store(store)
    shutil.copy(manifest4.loc[0, "path"], local.loc[2, "path"])  # same name, other speech
    encoder, stats = _extract(local, store, chunk=1)
    assert "audio changed for 1 utterance(s), e.g. " + local.loc[2, "utterance"] in capsys.readouterr().out
    assert encoder.calls == 1 and stats["parts_reused"] == 3
    consolidate_latent_store(store)
    index, after, _, _ = open_latent_store(store)
    start = int(index.set_index("utterance").loc[local.loc[2, "utterance"], "offset"])
    n = int(index.loc[2, "frames"])
    assert np.allclose(after[start : start + n], before[:n])  # now the audio of utterance 0
    assert not np.allclose(after[start : start + n], before[start : start + n])


def test_parts_of_another_encoder_are_never_reused_after_the_header_is_lost(tmp_path, manifest4):
    store = tmp_path / "store"
    _extract(manifest4, store)
    (store / "store.json").unlink()
    encoder, stats = _extract(manifest4, store, encoder=CountingEncoder(n_mels=40))
    assert encoder.calls == 4 and stats["parts_reused"] == 0
    consolidate_latent_store(store)
    assert open_latent_store(store)[1].shape[1] == 40


def test_corrupt_consolidation_is_rebuilt_and_a_broken_zarr_is_named(tmp_path, manifest4, capsys):
    store = tmp_path / "store"
    _extract(manifest4, store)
    consolidate_latent_store(store)
    _, before, _, _ = open_latent_store(store)
    (store / "index.parquet").write_bytes(b"garbage")
    consolidate_latent_store(store)
    assert "rebuilding the consolidated store (unreadable" in capsys.readouterr().out
    assert np.array_equal(open_latent_store(store)[1], before)
    shutil.rmtree(store / "latents.zarr" / "latents")
    with pytest.raises(ValueError, match="the consolidated store is unreadable"):
        open_latent_store(store)


# ----------------------------------------------------------------------------- Tier 1 checkpoints
@pytest.fixture()
def trained(tmp_path):
    from lib.phase0.tier1_config import TIER1_DEFAULT_CONFIG
    from lib.phase0.tier1_data import tier1_planted_source
    from lib.phase0.tier1_pipeline import tier1_exp1

    config = copy.deepcopy(TIER1_DEFAULT_CONFIG)
    config["context"].update(window=2, horizons_k=[1])
    config["model"].update(hidden=16)
    config["train"].update(max_steps=4, batch_size=32, log_every=2, checkpoint_every=2, warmup_steps=1)
    source, _ = tier1_planted_source("vmf_lognormal", speakers=10, utterances_per_speaker=2, frames=40, dim=4)
    result = tier1_exp1(source, config, tmp_path / "exp1", progress=False)
    return config, source, result


def test_checkpoint_missing_corrupt_foreign_other_config_or_altered(tmp_path, trained):
    from lib.phase0.tier1_training import Tier1CheckpointError, load_tier1_checkpoint, tier1_identity

    config, source, result = trained
    path = Path(result["checkpoint"])
    identity = tier1_identity(config, source.fingerprint, ("vmf", "gaussian"))
    assert load_tier1_checkpoint(path, identity)["step"] == 4
    with pytest.raises(Tier1CheckpointError, match="no such Tier 1 checkpoint.*-p checkpoint PATH"):
        load_tier1_checkpoint(tmp_path / "nope.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(Tier1CheckpointError, match="broken.pt: not a readable checkpoint"):
        load_tier1_checkpoint(broken)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(Tier1CheckpointError, match="not a Phase 0 Tier 1 checkpoint"):
        load_tier1_checkpoint(foreign)
    other = copy.deepcopy(config)
    other["model"]["hidden"] = 32
    with pytest.raises(Tier1CheckpointError, match=r"model\.hidden: checkpoint 16 vs this run 32"):
        load_tier1_checkpoint(path, tier1_identity(other, source.fingerprint, ("vmf", "gaussian")))
    with pytest.raises(Tier1CheckpointError, match="data_fingerprint"):
        load_tier1_checkpoint(path, tier1_identity(config, "another-store", ("vmf", "gaussian")))
    state = torch.load(path, weights_only=True)
    state["models"]["vmf"]["out.bias"] += 1.0
    altered = tmp_path / "altered.pt"
    torch.save(state, altered)
    with pytest.raises(Tier1CheckpointError, match="weights digest mismatch"):
        load_tier1_checkpoint(altered)


def test_resume_false_moves_the_checkpoint_aside_and_fewer_steps_trains_nothing(tmp_path, trained, capsys):
    from lib.phase0.tier1_pipeline import tier1_exp1

    config, source, result = trained
    folder = Path(result["checkpoint"]).parent
    fewer = copy.deepcopy(config)
    fewer["train"]["max_steps"] = 2
    again = tier1_exp1(source, fewer, folder, progress=False)
    assert "already holds 4 training steps" in capsys.readouterr().out
    assert again["history"]["steps_done"] == 4 and again["start_step"] == 4
    for name in again["models"]:
        for a, b in zip(again["models"][name].state_dict().values(), result["models"][name].state_dict().values()):
            assert torch.equal(a.cpu(), b.cpu())
    fresh = tier1_exp1(source, config, folder, resume=False, progress=False)
    moved = list(folder.glob("last.pt.*.bak"))
    assert len(moved) == 1 and "moved the existing checkpoint aside to" in capsys.readouterr().out
    assert fresh["start_step"] == 0 and (folder / "last.pt").exists()


# ----------------------------------------------------------------------------- Phase 0 artefacts
@pytest.fixture(scope="module")
def artefact_folder(tmp_path_factory):
    from lib.phase0.tier1_data import tier1_planted_source
    from lib.phase0.tier1_injection import tier1_fit_phase0

    source, _ = tier1_planted_source("cluster_memory", speakers=12, utterances_per_speaker=2, frames=40, dim=4)
    folder = tmp_path_factory.mktemp("phase0")
    tier1_fit_phase0(source, folder, 2, {"schemes": ["mean_vq64", "pca8_quartile"], "linear_reference": False})
    return folder, source


def _copy(folder, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


@pytest.mark.parametrize("damage", ["no_manifest", "garbage_manifest", "old_version", "altered_npz", "missing_npz"])
def test_bad_phase0_artefacts_are_named(tmp_path, artefact_folder, damage):
    from lib.phase0.phase0_artifacts import Phase0ArtifactError, load_phase0_artifacts

    folder = _copy(artefact_folder[0], tmp_path)
    load_phase0_artifacts(folder)  # intact: loads
    manifest = folder / "phase0_artifacts.json"
    expected = {
        "no_manifest": "phase0_artifacts.json: not found",
        "garbage_manifest": "not a readable Phase 0 artefact manifest",
        "old_version": "not a Phase 0 artefact manifest of version",
        "altered_npz": "phase0_kmeans.npz: content differs from its hash",
        "missing_npz": "phase0_pca.npz: missing",
    }[damage]
    if damage == "no_manifest":
        manifest.unlink()
    elif damage == "garbage_manifest":
        manifest.write_bytes(b"\x00\xff{")
    elif damage == "old_version":
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 0}))
    elif damage == "altered_npz":
        path = folder / "phase0_kmeans.npz"
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    else:
        (folder / "phase0_pca.npz").unlink()
    with pytest.raises(Phase0ArtifactError, match=expected):
        load_phase0_artifacts(folder)


def test_artefacts_of_another_encoder_or_with_leaked_speakers_are_refused(artefact_folder):
    from lib.phase0.phase0_artifacts import Phase0ArtifactError, load_phase0_artifacts
    from lib.phase0.tier1_injection import tier1_check_artifacts

    folder, source = artefact_folder
    artifacts = load_phase0_artifacts(folder)
    eval_speakers = source.table.loc[source.table["split"] == "eval", "speaker"].unique()
    tier1_check_artifacts(artifacts, source, eval_speakers)  # its own run: fine
    artifacts.manifest["encoder"]["fingerprint"] = "another-model"
    source.encoder["fingerprint"] = "this-model"
    with pytest.raises(Phase0ArtifactError, match="Run Phase 0 with the same encoder"):
        tier1_check_artifacts(artifacts, source, eval_speakers)
    artifacts.manifest["encoder"]["fingerprint"] = "this-model"
    train_speaker = artifacts.manifest["train_speakers"][0]
    with pytest.raises(Phase0ArtifactError, match="held-out speakers .* were train speakers"):
        tier1_check_artifacts(artifacts, source, [train_speaker])


# ----------------------------------------------------------------------------- parameters
BAD_PARAMETERS = [
    ("phase0_tier1", "experiment", "exp4", "is not one of"),
    ("phase0_tier1", "train_max_steps", 0, "below the smallest"),
    ("phase0_tier1", "train_max_steps", "ten", "not a whole number"),
    ("phase0_tier1", "context_horizons_k", [0, 1], "below the smallest"),
    ("phase0_tier1", "context_horizons_k", "[1, 2]", "looks like a list"),
    ("phase0_tier1", "train_amp_dtype", "fp16", "is not one of"),
    ("phase0_tier1", "checkpoint", "/no/such/last.pt", "does not exist"),
    ("phase0_tier1", "phase0_dir", "/no/such/folder", "does not exist"),
    ("phase0_tier1", "overrides", "{'model.hidden': 8", "looks like a dict"),
    ("phase0_tier1", "subset", "sampel", "did you mean 'sample'"),
    ("phase0_tier1", "diag_segments_per_utt", -3, "below the smallest"),
    ("phase0_tier1", "train_num_workers", -1, "below the smallest"),
    ("phase0_tier1", "train_compile", "yes", "not True or False"),
    ("phase0_latent_structure", "context_frames", 0, "below the smallest"),
    ("phase0_latent_structure", "edge", "wrap", "is not one of"),
    ("phase0_latent_structure", "max_utterances", 0, "below the smallest"),
    ("phase0_latent_structure", "control_speakers", 2, "below the smallest"),
    ("phase0_latent_structure", "sweep_context_frames", [0, 2], "below the smallest"),
    ("phase0_latent_structure", "config_path", "/no/such.yaml", "does not exist"),
    ("phase0_latent_structure", "whisper_mode", "pad", "did you mean 'padded'"),
    ("phase0_latent_structure", "subset", "auto ", "is not one of"),
]


@pytest.mark.parametrize("notebook, name, value, message", BAD_PARAMETERS)
def test_bad_parameters_are_rejected_before_any_work(notebook, name, value, message):
    from generator.assemble import parameter_schema
    from generator.parameter_check import ParameterError, audiolens_check_parameters

    schema = parameter_schema(notebook)
    values = {key: entry["default"] for key, entry in schema.items()}
    audiolens_check_parameters(dict(values), schema, notebook=notebook)  # the defaults pass
    values[name] = value
    with pytest.raises(ParameterError, match=message):
        audiolens_check_parameters(values, schema, notebook=notebook)


FREE_TEXT = {"output_dir", "encoder", "store_dir", "encoder_layer"}


@pytest.mark.parametrize("notebook", ["phase0_latent_structure", "phase0_tier1"])
def test_every_parameter_has_a_spec(notebook):
    from generator.assemble import parameter_schema

    missing = [
        name
        for name, entry in parameter_schema(notebook).items()
        if not entry["spec"] and name not in FREE_TEXT and not isinstance(entry["default"], bool)
    ]
    assert not missing, f"{notebook}: parameters without a [spec]: {missing}"


def test_bad_config_files_name_the_key(tmp_path):
    from generator.assemble import parameter_schema
    from lib.phase0.phase0_config import read_phase0_run_config
    from lib.phase0.tier1_config import Tier1ConfigError, load_tier1_config

    names = list(parameter_schema("phase0_latent_structure"))
    bad = tmp_path / "p.yaml"
    bad.write_text("encodr: logmel\n")
    with pytest.raises(ValueError, match="unknown Phase 0 setting 'encodr'; did you mean 'encoder'"):
        read_phase0_run_config(bad, names)
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        read_phase0_run_config(bad, names)
    bad.write_text("train: {max_steps: [}\n")
    with pytest.raises(Tier1ConfigError, match="not a readable YAML file"):
        load_tier1_config(bad)
    bad.write_text("model:\n  kind: rnn\n")
    with pytest.raises(Tier1ConfigError, match="model.kind must be one of"):
        load_tier1_config(bad)


def test_manifest_frame_is_untouched_by_extraction(tmp_path, manifest4):
    before = manifest4.copy()
    _extract(manifest4, tmp_path / "store")
    pd.testing.assert_frame_equal(manifest4, before)
