"""The pretraining loop under torchrun: two CPU processes (gloo) train and write a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lib.mae.mae_checkpoints import load_mae_checkpoint
from tests.process_helpers import run_torchrun

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_torchrun_two_processes_write_and_resume_a_checkpoint(fsdd_dir, tmp_path):
    overrides = {"depth": 1, "embed_dim": 32, "num_heads": 1, "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 1}
    args = [
        "--dataset",
        "fsdd",
        "--data-path",
        str(fsdd_dir),
        "--size",
        "tiny",
        "--overrides",
        json.dumps(overrides),
        "--frames",
        "16",
        "--max-clips",
        "10",
        "--epochs",
        "1",
        "--batch-size",
        "3",
        "--device",
        "cpu",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
    ]
    result = run_torchrun("scripts.mae_torchrun", args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    summary = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    assert summary["world_size"] == 2 and summary["clips"] == 10 and len(summary["loss"]) == 1
    checkpoint = load_mae_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert checkpoint["epoch"] == 0 and checkpoint["extra"]["world_size"] == 2
    assert checkpoint["model_config"]["embed_dim"] == 32
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())

    # The same command with more epochs resumes on both ranks from the saved epoch.
    args[args.index("--epochs") + 1] = "2"
    result = run_torchrun("scripts.mae_torchrun", args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Resuming from" in result.stdout
    summary = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    assert len(summary["loss"]) == 2 and summary["loss"][0] == pytest.approx(checkpoint["history"]["loss"][0])
    assert load_mae_checkpoint(tmp_path / "ckpt" / "last.pt")["epoch"] == 1
