"""Checkpoints of the MAE models: round trip, validation errors, and the embedder contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.core.audio import load_audio
from lib.mae.audiomae import build_audiomae_model
from lib.mae.mae_checkpoints import (
    MaeCheckpointError,
    load_audiomae_encoder,
    load_mae_checkpoint,
    save_mae_checkpoint,
)
from lib.mae.mae_transforms import build_mae_transform

TINY = dict(depth=2, embed_dim=64, num_heads=2, decoder_dim=64, decoder_depth=1, decoder_heads=2)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = build_audiomae_model("audiomae++", "tiny", input_size=(80, 48), **TINY)
    transform = build_mae_transform("log_mel", frames=48)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 1, 80, 48))["loss"].backward()
    optimizer.step()
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    digest = save_mae_checkpoint(
        path, model, optimizer, epoch=3, history={"loss": [1.0, 0.5]}, transform_config=transform.config
    )
    return path, digest, model


def test_round_trip_restores_weights_optimizer_and_history(saved):
    path, digest, model = saved
    fresh = build_audiomae_model("audiomae++", "tiny", input_size=(80, 48), **TINY)
    optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    checkpoint = load_mae_checkpoint(path, model=fresh, optimizer=optimizer)
    assert checkpoint["epoch"] == 3 and checkpoint["history"]["loss"] == [1.0, 0.5]
    assert checkpoint["file_sha256"] == digest
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert len(optimizer.state_dict()["state"]) > 0


def test_missing_path_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_mae_checkpoint(tmp_path / "nope.pt")


def test_truncated_and_garbage_files_are_reported(saved, tmp_path):
    path, _, _ = saved
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(MaeCheckpointError, match="corrupt or truncated"):
        load_mae_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(MaeCheckpointError, match="not a readable checkpoint"):
        load_mae_checkpoint(garbage)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(MaeCheckpointError, match="empty"):
        load_mae_checkpoint(empty)


def test_hash_mismatch_is_reported(saved, tmp_path):
    path, digest, _ = saved
    with pytest.raises(MaeCheckpointError, match="does not match the expected"):
        load_mae_checkpoint(path, expected_sha256="0" * 64)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["norm.weight"] += 1.0  # tampered weights, stale stored hash
    tampered = tmp_path / "tampered.pt"
    torch.save(checkpoint, tampered)
    with pytest.raises(MaeCheckpointError, match="do not match the hash"):
        load_mae_checkpoint(tampered)


def test_config_mismatch_names_the_keys(saved):
    path, _, _ = saved
    other = build_audiomae_model("audiomae++", "tiny", input_size=(80, 48), **{**TINY, "depth": 3})
    with pytest.raises(MaeCheckpointError, match="depth: checkpoint 2 vs model 3"):
        load_mae_checkpoint(path, model=other)
    baseline = build_audiomae_model("vit_mae", "tiny", input_size=(80, 48), **TINY)
    with pytest.raises(MaeCheckpointError, match="model_name"):
        load_mae_checkpoint(path, model=baseline)


def test_encoder_contract_on_real_clips(saved, fsdd_manifest):
    path, digest, model = saved
    encoder = load_audiomae_encoder(path)
    assert encoder.checkpoint_hash == digest
    assert encoder.embedding_dim == 64 and encoder.config["depth"] == 2
    waves = [load_audio(p, sr=8000) for p in fsdd_manifest.path[:5]]
    embeddings = encoder.embed(waves, sample_rate=8000, batch_size=2)
    assert embeddings.shape == (5, 64) and embeddings.dtype == np.float32
    assert np.all(np.isfinite(embeddings))
    # Same clips at another rate give (almost) the same embeddings: resampling is done inside.
    waves16 = [load_audio(p, sr=16000) for p in fsdd_manifest.path[:5]]
    again = encoder.embed(waves16, sample_rate=16000)
    assert np.abs(again - embeddings).max() < 0.1 * np.abs(embeddings).max()
    # Different clips give different embeddings; batching does not change them.
    assert np.abs(embeddings[0] - embeddings[1]).max() > 1e-3
    assert np.allclose(encoder.embed(waves[:1], 8000), embeddings[:1], atol=1e-4)
    assert encoder.embed([], 8000).shape == (0, 64)
