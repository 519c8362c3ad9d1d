# %% [markdown]
# # AudioMAE++ encoders for the explorer: checkpoints of this project and of other programs
#
# Two encoders, registered in `EXPLORER_ENCODERS` (this module is carried only by the
# `fiftyone_explorer_mae` variant of the notebook):
#
# - `audiomae`: a checkpoint written by the `audiomae_training` notebook, validated on load
#   (the file's content hash, the weights' hash stored inside, the model config) and cached by
#   its content hash. Its own input transform (log-mel, or an RF transform for a model trained
#   on IQ recordings) is used: the notebook prints which.
# - `external`: an encoder saved by another program, as a plain `state_dict` (e.g.
#   `encoder_only_fixed.pt`) or a full-model checkpoint. Known wrappers and key prefixes
#   (`state_dict`, `model`, `module.`, `encoder.`, `backbone.`...) are removed and timm-style ViT
#   names (`patch_embed.proj`, `norm1`, `mlp.fc1`, the official AudioMAE's) are mapped to this
#   project's; the model config (width, depth, patch size, block type, MLP ratio) is inferred
#   from the tensor shapes, and what shapes cannot tell (heads, rotary positions, input size)
#   comes from the size table or `external_config`. A report lists the matched, missing,
#   unexpected and mis-shaped tensors; below `min_loaded` (a fraction of the encoder's
#   parameters) the checkpoint is refused with that report, before any clip is read.

# %%
import re
from pathlib import Path

import numpy as np
import torch

from lib.core.atomic_io import file_sha256
from lib.explorer.audio_embedders import ExplorerEncoderError, register_explorer_encoder
from lib.explorer.explorer_batches import ExplorerAudioReader
from lib.explorer.explorer_rf import ExplorerIqReader
from lib.mae.audiomae import AUDIOMAE_SIZES, audiomae_config, audiomae_model_from_config
from lib.mae.mae_checkpoints import MAE_CHECKPOINT_FORMAT, load_audiomae_model
from lib.mae.mae_transforms import build_mae_transform


class ExternalCheckpointError(ExplorerEncoderError):
    """An external checkpoint cannot be used as an encoder; the message holds the load report."""


class MaeEncoderBase:
    """Shared by both encoders: a model, its input transform, batched ``encode`` under inference mode."""

    kind = "audiomae"
    weights = "pretrained"
    config_in_key = False  # the external encoder's config is inferred, so it is part of the key

    def _setup(self, model, transform, device: str, batch_size: int):
        self.model = model.to(device).eval()
        self.transform = transform
        self.device = device
        self.batch_size = int(batch_size)
        self.signal = "iq" if transform.input_kind == "iq" else "audio"
        self.sample_rate = int(getattr(transform, "sample_rate", 16000))
        self.embedding_dim = int(model.embed_dim)

    def reader(self):
        """What reads this encoder's input files: IQ recordings for an RF-trained model, else audio."""
        if self.signal == "iq":
            return ExplorerIqReader(getattr(self, "iq_sample_rate", None))
        return ExplorerAudioReader(self.sample_rate)

    def prepare(self, signal, sample_rate=None) -> np.ndarray:
        return self.transform(signal, int(sample_rate or self.sample_rate))

    def preparer(self):
        """The input transform alone (what worker processes run per clip; no model inside)."""
        return self.transform

    def embed_prepared(self, items) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(items), self.batch_size):
                batch = torch.from_numpy(np.stack(items[start : start + self.batch_size])).to(self.device)
                out.append(self.model.encode(batch, self.pooling).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def config(self) -> dict:
        """What the embeddings depend on (the cache key): the checkpoint by hash, pooling, the transform;
        encoders whose architecture is not fixed by the checkpoint's own config add ``model_config``."""
        self.load()
        config = {
            "kind": self.kind,
            "name": self.name,
            "checkpoint": str(self.checkpoint_path),
            "checkpoint_hash": self.checkpoint_hash,
        }
        if self.config_in_key:
            config["model_config"] = self.model.config
        return dict(config, pooling=self.pooling, transform=self.transform.config)

    def _describe_model(self) -> str:
        c, t = self.model.config, self.transform.config
        return (
            f"{c.get('model_name', 'audiomae++')} encoder ({c['embed_dim']} wide, {c['depth']} {c['block']} blocks, "
            f"{c['num_heads']} heads, {'rotary' if c['use_rope'] else 'sine-cosine'} positions, patches "
            f"{c['patch_size'][0]} x {c['patch_size'][1]}), {self.pooling or c['pooling']}-pooled tokens; input: "
            f"transform `{t['name']}` ({', '.join(f'{k} {v}' for k, v in t.items() if k != 'name')})"
        )


# %% [markdown]
# ## Checkpoints of `audiomae_training`


# %%
@register_explorer_encoder("audiomae")
class AudioMaeCheckpointEmbedder(MaeEncoderBase):
    """The encoder of an AudioMAE++ checkpoint (validated), keyed by the file's content hash."""

    kind = "audiomae"

    def __init__(self, checkpoint=None, device: str = "cpu", batch_size: int = 32, pooling=None, iq_sample_rate=None):
        self.iq_sample_rate = iq_sample_rate
        if checkpoint is None:
            raise ExplorerEncoderError(
                "encoder 'audiomae' needs audiomae_checkpoint: the checkpoint file written by the audiomae_training "
                "notebook (checkpoint_dir/last.pt)"
            )
        self.checkpoint_path = Path(checkpoint).expanduser()
        self.device, self.batch_size, self.pooling = device, int(batch_size), pooling
        self.name = f"audiomae-{self.checkpoint_path.stem}"
        self.model = None
        self.sample_rate, self.signal = 16000, "audio"

    def load(self):
        """Validate and load the checkpoint once (``MaeCheckpointError`` / ``FileNotFoundError`` say why not)."""
        if self.model is not None:
            return self
        model, transform, checkpoint = load_audiomae_model(self.checkpoint_path)
        self._setup(model, transform, self.device, self.batch_size)
        self.checkpoint_hash = checkpoint["file_sha256"]
        self.epoch = checkpoint.get("epoch")
        return self

    def info(self) -> dict:
        return dict(self.config(), embedding_dim=self.embedding_dim, model_config=self.model.config, epoch=self.epoch)

    def describe(self) -> str:
        self.load()
        return (
            f"**AudioMAE++ checkpoint** `{self.checkpoint_path.name}` (sha256 {self.checkpoint_hash[:12]}, epoch "
            f"{self.epoch}): {self._describe_model()}."
        )


# %% [markdown]
# ## Encoders saved by other programs


# %%
MAE_EXTERNAL_WRAPPERS = ("state_dict", "model_state_dict", "model", "encoder", "net", "module", "weights", "params")
MAE_EXTERNAL_PREFIXES = ("module.", "_orig_mod.", "model.", "encoder.", "backbone.", "mae.", "audiomae.", "net.")
MAE_EXTERNAL_RENAMES = (  # timm / official AudioMAE ViT names -> this project's
    (r"^patch_embed\.proj\.", "patch_embed."),
    (r"^(blocks\.\d+)\.norm1\.", r"\1.norm_attn."),
    (r"^(blocks\.\d+)\.norm2\.", r"\1.norm_ff2."),
    (r"^(blocks\.\d+)\.mlp\.fc1\.", r"\1.ff2.fc1."),
    (r"^(blocks\.\d+)\.mlp\.fc2\.", r"\1.ff2.fc2."),
)
MAE_EXTERNAL_IGNORED = re.compile(r"^(decoder|mask_token|head|fc_norm|pos_embed|decoder_pos_embed)")
MAE_EXTERNAL_CONFIG_KEYS = ("num_heads", "use_rope", "input_size", "pooling", "mlp_ratio", "block", "sample_rate")


def mae_external_state_dict(checkpoint) -> tuple:
    """``(tensors, notes)``: the tensor dict inside a loaded checkpoint, prefixes removed, names mapped."""
    notes = []
    state = checkpoint
    for _ in range(3):  # unwrap nested containers ({"model": {"state_dict": ...}})
        if not isinstance(state, dict):
            break
        tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        if len(tensors) >= max(1, len(state) // 2):
            break
        inner = next((k for k in MAE_EXTERNAL_WRAPPERS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        notes.append(f"unwrapped {inner!r}")
        state = state[inner]
    if not isinstance(state, dict):
        raise ExternalCheckpointError(f"holds a {type(state).__name__}, not a dict of tensors (a state_dict)")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ExternalCheckpointError("holds no tensors: not a state_dict or a model checkpoint")
    stripped = True
    while stripped:
        stripped = False
        for prefix in MAE_EXTERNAL_PREFIXES:
            if sum(k.startswith(prefix) for k in tensors) >= len(tensors) / 2:
                tensors = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in tensors.items()}
                notes.append(f"removed prefix {prefix!r}")
                stripped = True
    renamed = 0
    mapped = {}
    for key, value in tensors.items():
        new = key
        for pattern, replacement in MAE_EXTERNAL_RENAMES:
            new = re.sub(pattern, replacement, new)
        renamed += new != key
        mapped[new] = value
    if renamed:
        notes.append(f"renamed {renamed} timm-style ViT keys")
    return mapped, notes


def mae_infer_config(tensors: dict, overrides: dict | None = None) -> dict:
    """A model config for ``tensors`` (see the module notes); ``overrides`` win."""
    overrides = dict(overrides or {})
    patch = tensors.get("patch_embed.weight")
    if patch is None or patch.ndim != 4:
        raise ExternalCheckpointError(
            "no patch embedding ('patch_embed.weight' [width, channels, mel bins, frames] after mapping): "
            f"this is not a ViT/AudioMAE encoder. Keys seen: {sorted(tensors)[:8]}"
        )
    dim, chans, pf, pt = (int(v) for v in patch.shape)
    depth = 1 + max((int(m.group(1)) for k in tensors if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    if depth < 1:
        raise ExternalCheckpointError("no transformer blocks ('blocks.<i>.' keys) found after mapping")
    macaron = any(k.startswith("blocks.0.ff1.") for k in tensors)
    if macaron and "blocks.0.ff2.w13.weight" in tensors:
        hidden = int(tensors["blocks.0.ff2.w13.weight"].shape[0]) // 2
        mlp_ratio = 3 * hidden / (2 * dim)
    elif "blocks.0.ff2.fc1.weight" in tensors:
        mlp_ratio = int(tensors["blocks.0.ff2.fc1.weight"].shape[0]) / dim
    else:
        mlp_ratio = 4.0
    heads = next((v["num_heads"] for v in AUDIOMAE_SIZES.values() if v["embed_dim"] == dim), max(1, dim // 64))
    mels, frames = (80, 200)
    config = {
        "embed_dim": dim,
        "depth": depth,
        "num_heads": heads,
        "in_chans": chans,
        "patch_size": (pf, pt),
        "input_size": (pf * -(-mels // pf), pt * -(-frames // pt)),
        "block": "macaron" if macaron else "vit",
        "use_rope": macaron,
        "mlp_ratio": round(mlp_ratio, 4),
        "decoder_dim": 64,
        "decoder_depth": 1,
        "decoder_heads": 1,
    }
    config.update({k: v for k, v in overrides.items() if k in config or k == "pooling"})
    config["input_size"] = tuple(int(v) for v in config["input_size"])
    return config


# %% [markdown]
# ## What loaded and what did not
#
# Tensors load where name and shape match; the report counts matched, missing, unexpected and
# wrong-shape tensors and the share of the encoder's parameters that loaded.


# %%
def mae_load_report(model, tensors: dict) -> dict:
    """Load ``tensors`` into ``model``'s encoder where names and shapes match; return what happened."""
    target = {k: v for k, v in model.state_dict().items() if not MAE_EXTERNAL_IGNORED.match(k)}
    matched, mismatched = {}, []
    for key, value in tensors.items():
        if key in target:
            if tuple(value.shape) == tuple(target[key].shape):
                matched[key] = value
            else:
                mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(target[key].shape)}")
    missing = sorted(k for k in target if k not in matched)
    unexpected = sorted(k for k in tensors if k not in target and not MAE_EXTERNAL_IGNORED.match(k))
    ignored = sorted(k for k in tensors if MAE_EXTERNAL_IGNORED.match(k))
    total = sum(v.numel() for v in target.values())
    loaded = sum(v.numel() for v in matched.values())
    model.load_state_dict(matched, strict=False)
    return {
        "matched": len(matched),
        "encoder_tensors": len(target),
        "fraction_loaded": loaded / max(total, 1),
        "missing": missing,
        "unexpected": unexpected,
        "mismatched": mismatched,
        "ignored": ignored,
    }


def mae_format_report(report: dict, limit: int = 8) -> str:
    def some(items):
        return ", ".join(items[:limit]) + (f" ... ({len(items)} in all)" if len(items) > limit else "") or "none"

    return (
        f"matched {report['matched']} of {report['encoder_tensors']} encoder tensors "
        f"({100 * report['fraction_loaded']:.1f}% of the encoder's parameters); missing: {some(report['missing'])}; "
        f"unexpected: {some(report['unexpected'])}; wrong shape: {some(report['mismatched'])}; ignored (decoder, "
        f"heads, fixed position tables): {len(report['ignored'])}"
    )


# %% [markdown]
# ## The external encoder
#
# `ExternalCheckpointEmbedder` maps the checkpoint, infers the config (overridable with
# `external_config`), prints the load report and refuses a checkpoint that loads less than
# `min_loaded` of the encoder.


# %%
@register_explorer_encoder("external")
class ExternalCheckpointEmbedder(MaeEncoderBase):
    """An encoder ``state_dict`` (or full-model checkpoint) saved by another program (see the module notes)."""

    kind = "external"
    config_in_key = True

    def __init__(
        self,
        checkpoint=None,
        device: str = "cpu",
        batch_size: int = 32,
        external_config=None,
        min_loaded: float = 0.9,
        pooling=None,
    ):
        self.iq_sample_rate = None
        if checkpoint is None:
            raise ExplorerEncoderError("encoder 'external' needs audiomae_checkpoint: the path of the state dict")
        self.checkpoint_path = Path(checkpoint).expanduser()
        self.device, self.batch_size = device, int(batch_size)
        self.overrides = dict(external_config or {})
        unknown = set(self.overrides) - set(MAE_EXTERNAL_CONFIG_KEYS)
        if unknown:
            raise ExplorerEncoderError(
                f"external_config has unknown key(s) {sorted(unknown)}; known: {', '.join(MAE_EXTERNAL_CONFIG_KEYS)}"
            )
        self.min_loaded = float(min_loaded)
        self.pooling = pooling or self.overrides.get("pooling")
        self.name = f"external-{self.checkpoint_path.stem}"
        self.model = None
        self.sample_rate, self.signal = int(self.overrides.get("sample_rate", 16000)), "audio"

    def load(self):
        """Load, map, infer, report; refuse below ``min_loaded`` (``ExternalCheckpointError`` with the report)."""
        if self.model is not None:
            return self
        path = self.checkpoint_path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: external checkpoint not found")
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any failure means an unusable file
            raise ExternalCheckpointError(
                f"{path}: not a readable torch checkpoint ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
            ) from None
        if isinstance(raw, dict) and raw.get("format") == MAE_CHECKPOINT_FORMAT:
            raise ExternalCheckpointError(
                f"{path} is a checkpoint of this project's audiomae_training: use encoder='audiomae' (validated)"
            )
        try:
            tensors, notes = mae_external_state_dict(raw)
            config = mae_infer_config(tensors, self.overrides)
        except ExternalCheckpointError as error:
            raise ExternalCheckpointError(f"{path}: {error}") from None
        size = next((name for name, v in AUDIOMAE_SIZES.items() if v["embed_dim"] == config["embed_dim"]), "tiny")
        try:
            model = audiomae_model_from_config(dict(audiomae_config(size, **config), model_name="audiomae++"))
        except ValueError as error:
            raise ExternalCheckpointError(
                f"{path}: the inferred config {config} cannot be built ({error}); set external_config"
            ) from None
        report = mae_load_report(model, tensors)
        self.report = dict(report, notes=notes, config={k: v for k, v in model.config.items()})
        print(f"{path.name}: {'; '.join(notes) or 'no wrapper or prefix'}\n{mae_format_report(report)}")
        if report["fraction_loaded"] < self.min_loaded:
            raise ExternalCheckpointError(
                f"{path}: refused: only {100 * report['fraction_loaded']:.1f}% of the encoder's parameters load "
                f"(min_loaded {100 * self.min_loaded:.0f}%). {mae_format_report(report)}. Inferred config: "
                f"{config}. Fix the key names or set external_config (num_heads, input_size, use_rope...)."
            )
        mels, frames = model.config["input_size"]
        transform = build_mae_transform("log_mel", sample_rate=self.sample_rate, n_mels=mels, frames=frames)
        self._setup(model, transform, self.device, self.batch_size)
        self.checkpoint_hash = file_sha256(path)
        return self

    def info(self) -> dict:
        return dict(self.config(), embedding_dim=self.embedding_dim, load_report=self.report)

    def describe(self) -> str:
        self.load()
        return (
            f"**External encoder** `{self.checkpoint_path.name}` (sha256 {self.checkpoint_hash[:12]}; "
            f"{mae_format_report(self.report, limit=3)}): {self._describe_model()}."
        )
