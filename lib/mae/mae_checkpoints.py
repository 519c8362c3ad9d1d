# %% [markdown]
# # Validated checkpoints and a ready-to-use encoder
#
# A checkpoint is one file holding the model's name and config, the input transform's
# config, the weights, the optimiser state, the epoch and the training history, plus a
# SHA-256 over the weights. It is written atomically (a crash never leaves half a file).
# Loading validates it and fails with a message that says what to do:
#
# - the path does not exist -> which path, and how checkpoints are made;
# - the file is not a readable checkpoint (truncated, corrupt, another format);
# - the weights do not match the hash stored with them, or the file does not match a hash the
#   caller expects (`expected_sha256`);
# - the checkpoint's config differs from the model it is loaded into -> the differing keys.
#
# Resuming checks more than the model: each checkpoint stores a training record (a fingerprint of
# the training inputs, the seed and the optimisation settings), and `mae_training_differences`
# lists what a resumed run would change, so resuming on other data or settings stops with the
# differences instead of continuing silently. `mae_move_checkpoint_aside` keeps an old checkpoint
# (renamed, never deleted) when a run starts afresh.
#
# `load_audiomae_encoder(path)` returns an embedder: `.embed(waveforms, sample_rate)` gives
# `[N, D]` float32 clip embeddings (resampling, log-mel, padding/cropping done inside), with
# `.checkpoint_hash`, `.config` and `.embedding_dim`.

# %%
import datetime as _dt
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from lib.core.atomic_io import file_sha256, json_plain
from lib.core.torch_files import atomic_torch_save, load_marked_torch_file
from lib.mae.audiomae import audiomae_model_from_config
from lib.mae.mae_transforms import build_mae_transform

MAE_CHECKPOINT_FORMAT = "audiolens-mae-checkpoint"
MAE_CHECKPOINT_VERSION = 1


class MaeCheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file, the problem and what to do."""


def _mae_unwrap(model):
    return model.module if hasattr(model, "module") else model


def mae_state_dict_sha256(state_dict: dict) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of a state dict's tensors (sorted by name)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_mae_checkpoint(
    path,
    model,
    optimizer=None,
    epoch: int | None = None,
    history: dict | None = None,
    transform_config: dict | None = None,
    scaler=None,
    extra: dict | None = None,
) -> str:
    """Write a checkpoint atomically; return the SHA-256 of the file.

    ``model`` may be wrapped in DistributedDataParallel; its ``config`` is stored so the model
    can be rebuilt without knowing how it was made.
    """
    model = _mae_unwrap(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": MAE_CHECKPOINT_FORMAT,
        "version": MAE_CHECKPOINT_VERSION,
        "model_config": json_plain(model.config),
        "transform_config": json_plain(transform_config or {}),
        "state_dict": state,
        "weights_sha256": mae_state_dict_sha256(state),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "history": json_plain(history or {}),
        "extra": json_plain(extra or {}),
    }
    atomic_torch_save(path, payload)
    return file_sha256(path)


# %% [markdown]
# ## Loading and validating a checkpoint
#
# Every problem becomes a `MaeCheckpointError` that names the file and says what to do.


# %%
MAE_CONFIG_ADDED = {"loss_on_constant_patches": True}  # keys added later: the value older checkpoints trained with


def _mae_config_differences(saved: dict, current: dict) -> list:
    saved = {**{k: v for k, v in MAE_CONFIG_ADDED.items() if k in current}, **saved}
    keys = sorted(set(saved) | set(current))
    norm = json_plain
    return [
        f"{k}: checkpoint {saved.get(k)!r} vs model {current.get(k)!r}"
        for k in keys
        if norm(saved.get(k)) != norm(current.get(k))
    ]


def load_mae_checkpoint(
    path, model=None, optimizer=None, scaler=None, map_location="cpu", expected_sha256: str | None = None
) -> dict:
    """Read and validate a checkpoint; optionally load it into ``model`` / ``optimizer`` / ``scaler``.

    Returns the checkpoint dict plus ``"path"`` and ``"file_sha256"``. Raises
    ``MaeCheckpointError`` (or ``FileNotFoundError`` for a missing path) with what to do.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: checkpoint not found. Check the path; checkpoints are written by the "
            "audiomae_training notebook (checkpoint_dir/last.pt) or save_mae_checkpoint()."
        )
    if path.is_dir():
        candidate = path / "last.pt"
        if candidate.exists():
            path = candidate
        else:
            raise MaeCheckpointError(f"{path}: is a folder without last.pt; pass the checkpoint file itself")
    if path.stat().st_size == 0:
        raise MaeCheckpointError(
            f"{path}: the checkpoint file is empty (an interrupted copy?). Re-copy it, or delete it and retrain."
        )
    actual_sha = file_sha256(path)
    if expected_sha256 is not None and actual_sha != expected_sha256:
        raise MaeCheckpointError(
            f"{path}: content hash {actual_sha[:16]}... does not match the expected "
            f"{expected_sha256[:16]}...: this is a different or modified checkpoint. Use the "
            "checkpoint the hash belongs to, or drop expected_sha256."
        )
    checkpoint = load_marked_torch_file(
        path,
        MAE_CHECKPOINT_FORMAT,
        "an audiolens MAE checkpoint",
        error=MaeCheckpointError,
        unreadable_advice="The file is corrupt or truncated, or not a torch checkpoint; re-copy it, or delete it and "
        "retrain.",
        wrong_format_advice="Save checkpoints with save_mae_checkpoint().",
        map_location=map_location,
    )
    missing = [k for k in ("model_config", "state_dict", "weights_sha256") if k not in checkpoint]
    if missing:
        raise MaeCheckpointError(f"{path}: checkpoint lacks {missing}; it is incomplete, re-save it")
    if mae_state_dict_sha256(checkpoint["state_dict"]) != checkpoint["weights_sha256"]:
        raise MaeCheckpointError(
            f"{path}: the weights do not match the hash saved with them; the file was "
            "modified or corrupted. Re-copy it, or delete it and retrain."
        )
    if model is not None:
        target = _mae_unwrap(model)
        differences = _mae_config_differences(checkpoint["model_config"], getattr(target, "config", {}))
        if differences:
            raise MaeCheckpointError(
                f"{path}: the checkpoint was saved for a different model config: "
                + "; ".join(differences)
                + ". Build the model from the checkpoint (audiomae_model_from_config(checkpoint['model_config'])"
                " or load_audiomae_encoder), or set the notebook's size/overrides to match, or use a new"
                " checkpoint_dir to start fresh."
            )
        try:
            target.load_state_dict(checkpoint["state_dict"], strict=True)
        except RuntimeError as error:
            raise MaeCheckpointError(
                f"{path}: the weights do not fit the model ({str(error)[:300]}). Use a "
                "matching model config or a new checkpoint_dir."
            ) from None
    if optimizer is not None and checkpoint.get("optimizer") is not None:
        try:
            optimizer.load_state_dict(checkpoint["optimizer"])
        except (ValueError, KeyError) as error:
            raise MaeCheckpointError(
                f"{path}: the optimiser state does not fit this optimiser ({error}); "
                "resume with the same training settings or start a new checkpoint_dir."
            ) from None
    if scaler is not None and checkpoint.get("scaler") is not None:
        scaler.load_state_dict(checkpoint["scaler"])
    checkpoint["path"] = str(path)
    checkpoint["file_sha256"] = actual_sha
    return checkpoint


# %% [markdown]
# ## Resuming safely: what the checkpoint was trained on


# %%
# Training settings that must match for a resumed run to continue the same experiment. The
# number of epochs may grow (that is what resuming is for); the process count may change.
MAE_TRAINING_KEYS = ("data", "n_clips", "input_shape", "seed", "lr", "min_lr", "batch_size", "weight_decay")
MAE_TRAINING_KEYS += ("warmup_epochs", "clip_grad", "mask_ratio")


def mae_data_fingerprint(x) -> str:
    """SHA-256 (16 hex digits) of the training inputs ``[N, 1, F, T]``: their values, order and shape."""
    array = np.ascontiguousarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x))
    digest = hashlib.sha256(f"{array.shape}|{array.dtype}|".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def mae_training_differences(saved: dict | None, current: dict) -> list:
    """``"key: checkpoint A vs this run B"`` for every training setting that differs."""
    if not saved:
        return ["the checkpoint has no training record (saved by an older audiolens): its data and settings"]
    return [
        f"{key}: checkpoint {saved.get(key)!r} vs this run {current.get(key)!r}"
        for key in MAE_TRAINING_KEYS
        if json_plain(saved.get(key)) != json_plain(current.get(key))
    ]


def mae_move_checkpoint_aside(path) -> Path:
    """Rename ``path`` to ``<stem>.replaced-<time>.pt`` beside it (never overwriting); return the new path."""
    path = Path(path)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.stem}.replaced-{stamp}{path.suffix}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.stem}.replaced-{stamp}-{n}{path.suffix}")
    os.replace(path, target)
    return target


# %% [markdown]
# ## Encoder for downstream use


# %%
class AudioMaeEmbedder:
    """A pretrained encoder with its input transform: raw waveforms in, ``[N, D]`` embeddings out."""

    def __init__(self, model, transform, checkpoint_hash: str = "", device: str = "cpu", pooling=None):
        self.model = _mae_unwrap(model).to(device).eval()
        self.transform = transform
        self.device = device
        self.pooling = pooling
        self.checkpoint_hash = checkpoint_hash
        self.config = dict(self.model.config)
        self.transform_config = dict(transform.config)
        self.embedding_dim = int(self.model.embed_dim)

    def features(self, waveforms, sample_rate: int) -> np.ndarray:
        """The model inputs ``[N, 1, F, T]`` for raw waveforms at ``sample_rate``."""
        images = []
        for i, wave in enumerate(waveforms):
            try:
                images.append(self.transform(np.asarray(wave, dtype=np.float32), int(sample_rate)))
            except ValueError as error:
                raise ValueError(f"waveform {i}: {error}") from None
        if not images:
            return np.zeros((0, *self.transform.output_shape), dtype=np.float32)
        return np.stack(images)

    @torch.no_grad()
    def embed(self, waveforms, sample_rate: int, batch_size: int = 32) -> np.ndarray:
        """Embeddings ``[N, D]`` (float32) of a list of mono waveforms sampled at ``sample_rate``."""
        waveforms = list(waveforms)
        out = []
        for start in range(0, len(waveforms), batch_size):
            images = torch.from_numpy(self.features(waveforms[start : start + batch_size], sample_rate))
            out.append(self.model.encode(images.to(self.device), self.pooling).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)


def load_audiomae_model(checkpoint_path, expected_sha256: str | None = None) -> tuple:
    """``(model, input transform, checkpoint)`` of a validated checkpoint, for audio or IQ inputs alike."""
    checkpoint = load_mae_checkpoint(checkpoint_path, expected_sha256=expected_sha256)
    try:
        model = audiomae_model_from_config(checkpoint["model_config"])
    except (KeyError, ValueError, TypeError) as error:
        raise MaeCheckpointError(
            f"{checkpoint['path']}: its model config cannot be built ({error}); the "
            "checkpoint comes from an incompatible version."
        ) from None
    load_mae_checkpoint(checkpoint["path"], model=model)
    transform_config = dict(checkpoint.get("transform_config") or {"name": "log_mel"})
    if "input_size" in checkpoint["model_config"] and not checkpoint.get("transform_config"):
        n_mels, frames = checkpoint["model_config"]["input_size"]
        transform_config.update(n_mels=n_mels, frames=frames)
    transform = build_mae_transform(transform_config.pop("name", "log_mel"), **transform_config)
    return model, transform, checkpoint


def load_audiomae_encoder(
    checkpoint_path, device: str = "cpu", pooling=None, expected_sha256: str | None = None
) -> AudioMaeEmbedder:
    """Rebuild a model from a validated checkpoint and return an ``AudioMaeEmbedder``."""
    model, transform, checkpoint = load_audiomae_model(checkpoint_path, expected_sha256)
    if transform.input_kind != "audio":
        raise MaeCheckpointError(
            f"{checkpoint['path']}: the model was trained on {transform.input_kind} inputs, "
            "not audio; load_audiomae_encoder embeds audio only"
        )
    return AudioMaeEmbedder(model, transform, checkpoint_hash=checkpoint["file_sha256"], device=device, pooling=pooling)
