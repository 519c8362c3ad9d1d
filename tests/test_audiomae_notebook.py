"""Papermill smoke run of the audiomae_training notebook on a few real FSDD clips, then resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.core.audio import load_audio
from lib.mae.audiomae import audiomae_model_from_config
from lib.mae.mae_checkpoints import load_audiomae_encoder, load_mae_checkpoint
from lib.mae.mae_data import build_mae_data_source, mae_load_split, mae_subsample
from lib.mae.mae_training import mae_pretrain
from lib.mae.mae_transforms import build_mae_transform

SMOKE = dict(
    dataset="fsdd",
    size="tiny",
    max_train_clips=40,
    max_test_clips=20,
    frames=32,
    pretrain_epochs=3,
    batch_size=8,
    warmup_epochs=1,
    pretrain_lr=2e-3,
    probe_epochs=20,
    finetune_epochs=1,
    model_overrides={"depth": 2, "decoder_dim": 96, "decoder_depth": 1, "decoder_heads": 2},
    n_reconstructions=2,
    cpu_threads=1,
)


@pytest.mark.notebook
def test_smoke_run_then_resume(run_notebook, fsdd_dir):
    results = run_notebook("audiomae_training", data_path=str(fsdd_dir), **SMOKE)
    out = Path(results["_out"])
    # Data: the stratified subset of real clips, nothing skipped.
    assert results["data"]["n_train"] == 40 and results["data"]["n_test"] == 20
    assert results["data"]["skipped_clips"] == [] and results["data"]["input_shape"] == [1, 80, 32]
    # FSDD's default split holds two speakers out: no test speaker is in the training clips, and the run says so
    assert results["data"]["group_column"] == "speaker" and results["data"]["test_groups_also_in_training"] == 0
    assert len(results["data"]["held_out_speakers"]) == 2
    # Pretraining ran every epoch and the masked-patch loss went down.
    losses = results["pretrain"]["loss_per_epoch"]
    assert len(losses) == 3 and results["pretrain"]["start_epoch"] == 0
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    # Embeddings [N, D]; throughputs measured.
    assert results["embeddings"]["shape"] == [20, 192]
    assert results["throughput"]["pretrain_clips_per_second"] > 0
    assert results["throughput"]["embedding_clips_per_second"] > 0
    # Both encoders probed and fine-tuned on the same split; accuracies are real fractions.
    for section in ("linear_probe", "finetune"):
        assert set(results[section]) == {"pretrained", "random_init"}
        assert all(0.0 <= v <= 1.0 for v in results[section].values())
    matrix = np.array(results["finetune_details"]["pretrained"]["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 20
    assert results["finetune"]["pretrained"] == pytest.approx(np.trace(matrix) / matrix.sum())  # the same 20 clips
    assert results["finetune_config"] == {"augment": "patch_drop", "patch_drop": 0.3, "from_probe": True}
    low, high = results["finetune_details"]["pretrained"]["ci95"]  # Wilson interval around the accuracy
    assert low <= results["finetune"]["pretrained"] <= high
    compared = results["summary"]["pretrained_vs_random"]["finetune"]
    assert 0.0 <= compared["mcnemar_p"] <= 1.0 and compared["only_first_right"] + compared["only_second_right"] <= 20
    for name in ("pretrained", "random_init"):  # the change fine-tuning made, against the probe it started from
        change = results["finetune_details"][name]["change_against_probe"]
        assert change == pytest.approx(results["finetune"][name] - results["linear_probe"][name])
    for figure in ("pretrain_loss", "reconstructions", "finetune_and_accuracy", "confusion_matrix"):
        assert (out / f"{figure}.png").stat().st_size > 1000, figure
    # The checkpoint round trip: the reloaded encoder embeds raw waveforms as the in-memory model did.
    checkpoint_path = out / "checkpoints" / "last.pt"
    assert results["checkpoint"]["round_trip_max_abs_diff"] < 1e-4 and results["checkpoint"]["epochs_done"] == 3
    encoder = load_audiomae_encoder(checkpoint_path)
    assert encoder.checkpoint_hash == results["checkpoint"]["sha256"]
    assert encoder.embedding_dim == 192 and encoder.config["depth"] == 2
    manifest = build_mae_data_source("fsdd", path=fsdd_dir, download=False).manifest()
    waves = [load_audio(p, sr=8000) for p in manifest.path[:3]]
    assert encoder.embed(waves, 8000).shape == (3, 192)

    # Resume: two more epochs continue from the saved epoch with the saved history.
    checkpoint = load_mae_checkpoint(checkpoint_path)
    assert checkpoint["epoch"] == 2 and checkpoint["history"]["loss"] == pytest.approx(losses)
    model = audiomae_model_from_config(checkpoint["model_config"])
    transform = build_mae_transform("log_mel", frames=32)
    train = manifest[manifest.split == "train"]
    data = mae_load_split(mae_subsample(train, 40, 0), transform, cache_dir=out / "cache")
    torch.set_num_threads(1)
    history = mae_pretrain(
        model,
        data["x"],
        epochs=5,
        batch_size=8,
        lr=2e-3,
        warmup_epochs=1,
        checkpoint_dir=out / "checkpoints",
        seed=0,
        transform_config=transform.config,
        progress=False,
    )
    assert history["start_epoch"] == 3
    assert len(history["loss"]) == 5 and history["loss"][:3] == pytest.approx(losses)
    assert load_mae_checkpoint(checkpoint_path)["epoch"] == 4
    saved_results = json.loads((out / "results.json").read_text())
    assert saved_results["pretrain"]["checkpoint"] == str(checkpoint_path)


@pytest.mark.notebook
def test_zero_pretraining_epochs_runs_the_baseline_and_says_so(run_notebook, fsdd_dir):
    """``pretrain_epochs 0`` without a checkpoint: no pretraining, said plainly, nothing reloaded."""
    small = dict(SMOKE, pretrain_epochs=0, max_train_clips=20, max_test_clips=10, probe_epochs=2, frames=16)
    results = run_notebook("audiomae_training", data_path=str(fsdd_dir), **small)
    out = Path(results["_out"])
    assert results["pretrain"]["epochs"] == 0 and results["pretrain"]["checkpoint"] is None
    assert results["checkpoint"]["path"] is None and "nothing saved" in results["checkpoint"]["note"]
    assert results["summary"]["pretrain_loss_first_last"] is None
    assert results["run"]["status"] == "complete" and results["run"]["parameters"]["pretrain_epochs"] == 0
    assert not (out / "checkpoints" / "last.pt").exists() and not (out / "pretrain_loss.png").exists()
    # both encoders are the same random initialisation, probed with the same seed: identical results
    assert results["linear_probe"]["pretrained"] == results["linear_probe"]["random_init"]
