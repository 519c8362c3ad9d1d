"""The pretraining loop under torchrun: two CPU processes (gloo) train and write a checkpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib.mae.mae_checkpoints import load_mae_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_write_and_resume_a_checkpoint(fsdd_dir, tmp_path):
    overrides = {"depth": 1, "embed_dim": 32, "num_heads": 1, "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 1}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "scripts.mae_torchrun",
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
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    summary = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    assert summary["world_size"] == 2 and summary["clips"] == 10 and len(summary["loss"]) == 1
    checkpoint = load_mae_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert checkpoint["epoch"] == 0 and checkpoint["extra"]["world_size"] == 2
    assert checkpoint["model_config"]["embed_dim"] == 32
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())

    # The same command with more epochs resumes on both ranks from the saved epoch.
    command[command.index("--epochs") + 1] = "2"
    port_index = next(i for i, arg in enumerate(command) if arg.startswith("--master_port="))
    command[port_index] = f"--master_port={_free_port()}"
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Resuming from" in result.stdout
    summary = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    assert len(summary["loss"]) == 2 and summary["loss"][0] == pytest.approx(checkpoint["history"]["loss"][0])
    assert load_mae_checkpoint(tmp_path / "ckpt" / "last.pt")["epoch"] == 1
