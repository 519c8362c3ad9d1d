# %% [markdown]
# # AudioMAE++: a masked autoencoder over log-mel patches
#
# A Vision-Transformer encoder over log-mel patches, pretrained by masking most patches
# (80 % by default) and reconstructing them with a light decoder, following AudioMAE++:
#
# - input `[N, 1, 80 mel bins, 200 frames]`, cut into patches of 16 mel bins x 4 frames
#   (5 x 50 = 250 patches), as in the official AudioMAE++ code;
# - **Macaron blocks**: a half-step SwiGLU feed-forward, self-attention, then a second
#   half-step SwiGLU feed-forward (pre-norm, residual);
# - **rotary position embeddings** (2-D: half of each head rotates with the mel-band index, half
#   with the frame index), switchable to fixed 2-D sine-cosine embeddings (`use_rope=False`);
#   both are computed from patch coordinates, so any input size that is a multiple of the
#   patch works;
# - a CLS token; random masking; a light decoder (4 layers, 384 wide) predicting
#   per-patch normalised log-mel values, the loss taken on masked patches only. As in AudioMAE,
#   that includes constant patches (the padding after a short clip, silence at the log-mel
#   floor), whose normalised target is all zeros: predicting them means knowing where the clip
#   ends. `loss_on_constant_patches=False` leaves them out (measured below: worse on FSDD).
#
# `vit_mae` is the plain ViT masked autoencoder (GELU MLP blocks, sine-cosine positions) with
# the same interface, as a baseline. `AudioMaeClassifier` puts a linear head on CLS or
# mean-pooled tokens for fine-tuning and linear probing. `encode(batch) -> [N, D]` gives
# clip embeddings for downstream use.

# %%
import math

import torch
import torch.nn.functional as F
from torch import nn

from lib.mae.mae_registry import MAE_MODELS, MaeModelBase, register_mae_model

MAE_CONSTANT_PATCH_VARIANCE = 1e-6  # a patch varying less than this (normalised log-mel units) is constant

AUDIOMAE_SIZES = {
    "tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
}

AUDIOMAE_DEFAULTS = {
    "size": "base",
    "input_size": (80, 200),  # (mel bins, frames)
    "patch_size": (16, 4),  # (mel bins, frames) per patch
    "in_chans": 1,
    "mlp_ratio": 4.0,
    "decoder_dim": 384,
    "decoder_depth": 4,
    "decoder_heads": 6,
    "mask_ratio": 0.8,
    "use_rope": True,
    "rope_base": 10000.0,
    "block": "macaron",  # "macaron" (AudioMAE++) or "vit" (plain ViT)
    "norm_pix_loss": True,
    # constant patches (padding, floor silence) in the loss, as in AudioMAE; FSDD, 64 frames (39% constant),
    # 8 epochs, speakers held out: with them probe 0.475 / fine-tune 0.665, without 0.441 / 0.634 (random 0.429 / 0.682)
    "loss_on_constant_patches": True,
    "pooling": "mean",  # default pooling of encode(): "mean" (patch tokens) or "cls"
    "drop_path": 0.0,
}


def audiomae_config(size: str = "base", **overrides) -> dict:
    """A complete model config: the named size's widths, the defaults, then ``overrides``.

    ``None`` values in ``overrides`` are ignored, so notebook parameters can pass them through.
    """
    if size not in AUDIOMAE_SIZES:
        raise ValueError(f"unknown AudioMAE size {size!r}; choose one of {', '.join(AUDIOMAE_SIZES)}")
    config = dict(AUDIOMAE_DEFAULTS)
    config.update(AUDIOMAE_SIZES[size])
    config["size"] = size
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown AudioMAE config key(s) {sorted(unknown)}; known: {sorted(config)}")
    config.update({k: v for k, v in overrides.items() if v is not None})
    config["input_size"] = tuple(int(v) for v in config["input_size"])
    config["patch_size"] = tuple(int(v) for v in config["patch_size"])
    _check_audiomae_config(config)
    return config


def _check_audiomae_config(config: dict) -> None:
    for prefix, dim, heads in (
        ("encoder", config["embed_dim"], config["num_heads"]),
        ("decoder", config["decoder_dim"], config["decoder_heads"]),
    ):
        if dim % heads:
            raise ValueError(f"{prefix} width {dim} is not divisible by its {heads} heads")
        if config["use_rope"] and (dim // heads) % 4:
            raise ValueError(
                f"{prefix} head size {dim // heads} must be a multiple of 4 for 2-D rotary "
                "embeddings; change the width or heads, or set use_rope=False"
            )
    if config["block"] not in ("macaron", "vit"):
        raise ValueError(f"block must be 'macaron' or 'vit', not {config['block']!r}")
    if not 0.0 <= config["mask_ratio"] < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), not {config['mask_ratio']}")
    if config["pooling"] not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', not {config['pooling']!r}")
    for size, patch, name in zip(config["input_size"], config["patch_size"], ("mel bins", "frames")):
        if size % patch:
            raise ValueError(f"input {name} ({size}) must be a multiple of the patch's {patch}")


# %% [markdown]
# ## Position encodings
#
# Both encodings are functions of each token's (mel-band, frame) patch coordinates, so the
# masked encoder (which sees a random subset of patches) and any input size are handled
# the same way. The CLS token has no position.


# %%
def audiomae_rope_tables(positions: torch.Tensor, head_dim: int, base: float = 10000.0):
    """cos/sin tables ``[N, L, head_dim]`` for 2-D rotary embeddings from ``positions [N, L, 2]``."""
    quarter = head_dim // 4
    inv_freq = base ** (-torch.arange(quarter, device=positions.device, dtype=torch.float32) / quarter)
    cos_parts, sin_parts = [], []
    for axis in range(2):
        angles = positions[..., axis : axis + 1].float() * inv_freq
        cos_parts += [angles.cos(), angles.cos()]
        sin_parts += [angles.sin(), angles.sin()]
    return torch.cat(cos_parts, dim=-1), torch.cat(sin_parts, dim=-1)


def audiomae_apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [N, H, L, d]`` by the tables ``[N, L, d]`` (each axis' half rotated separately)."""
    q = x.shape[-1] // 4
    a1, a2, b1, b2 = x[..., :q], x[..., q : 2 * q], x[..., 2 * q : 3 * q], x[..., 3 * q :]
    rotated = torch.cat([-a2, a1, -b2, b1], dim=-1)
    return x * cos.unsqueeze(1).to(x.dtype) + rotated * sin.unsqueeze(1).to(x.dtype)


def audiomae_sincos_embedding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine embeddings ``[N, L, dim]`` from ``positions [N, L, 2]``."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, device=positions.device, dtype=torch.float32) / max(quarter, 1))
    parts = []
    for axis in range(2):
        angles = positions[..., axis : axis + 1].float() * omega
        parts += [angles.sin(), angles.cos()]
    embedding = torch.cat(parts, dim=-1)
    if embedding.shape[-1] < dim:
        embedding = F.pad(embedding, (0, dim - embedding.shape[-1]))
    return embedding


# %% [markdown]
# ## Blocks


# %%
class AudioMaeSwiGLU(nn.Module):
    """SwiGLU feed-forward: ``W2(silu(W1 x) * W3 x)`` with the hidden size of a 4x GELU MLP's parameters."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(math.ceil(2 * mlp_ratio * dim / 3 / 8) * 8)
        self.w13 = nn.Linear(dim, 2 * hidden)
        self.w2 = nn.Linear(hidden, dim)

    def forward(self, x):
        gate, value = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * value)


class AudioMaeMlp(nn.Module):
    """The plain ViT feed-forward: Linear, GELU, Linear."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class AudioMaeAttention(nn.Module):
    """Multi-head self-attention with optional 2-D rotary embeddings (CLS, token 0, is not rotated)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, rope=None):
        n, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        if rope is not None:
            cos, sin = rope  # tables for tokens 1..L-1 (token 0 is CLS)
            q = torch.cat([q[:, :, :1], audiomae_apply_rope(q[:, :, 1:], cos, sin)], dim=2)
            k = torch.cat([k[:, :, :1], audiomae_apply_rope(k[:, :, 1:], cos, sin)], dim=2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class AudioMaeDropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample with probability ``p`` in training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class AudioMaeBlock(nn.Module):
    """``macaron``: x + FF/2, x + Attn, x + SwiGLU/2 (AudioMAE++); ``vit``: x + Attn, x + MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, kind: str = "macaron", drop_path: float = 0.0):
        super().__init__()
        self.kind = kind
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = AudioMaeAttention(dim, num_heads)
        self.drop = AudioMaeDropPath(drop_path)
        if kind == "macaron":
            self.norm_ff1 = nn.LayerNorm(dim)
            self.ff1 = AudioMaeSwiGLU(dim, mlp_ratio)
            self.norm_ff2 = nn.LayerNorm(dim)
            self.ff2 = AudioMaeSwiGLU(dim, mlp_ratio)
        else:
            self.norm_ff2 = nn.LayerNorm(dim)
            self.ff2 = AudioMaeMlp(dim, mlp_ratio)

    def forward(self, x, rope=None):
        if self.kind == "macaron":
            x = x + 0.5 * self.drop(self.ff1(self.norm_ff1(x)))
            x = x + self.drop(self.attn(self.norm_attn(x), rope))
            return x + 0.5 * self.drop(self.ff2(self.norm_ff2(x)))
        x = x + self.drop(self.attn(self.norm_attn(x), rope))
        return x + self.drop(self.ff2(self.norm_ff2(x)))


# %% [markdown]
# ## Spectrogram patches
#
# The patch grid over a log-mel image, (un)patchify, token positions, the normalised
# reconstruction target and reconstructed images for plots.


# %%
class _AudioMaePatches:
    """Spectrogram images <-> patches, positions and reconstructions (part of ``AudioMaePlusPlus``)."""

    # -- patches -------------------------------------------------------------------------
    def _check_input(self, specs):
        if specs.ndim != 4 or specs.shape[1] != self.config["in_chans"]:
            raise ValueError(
                f"expected input [N, {self.config['in_chans']}, mel bins, frames], got {tuple(specs.shape)}"
            )
        pf, pt = self.patch_size
        if specs.shape[2] % pf or specs.shape[3] % pt:
            raise ValueError(
                f"input of {specs.shape[2]} mel bins x {specs.shape[3]} frames is not a multiple of "
                f"the {pf} x {pt} patch; pad or crop it (the transforms do)"
            )

    def grid(self, freq_bins: int, frames: int) -> tuple:
        return freq_bins // self.patch_size[0], frames // self.patch_size[1]

    def patchify(self, specs):
        n, c, f, t = specs.shape
        pf, pt = self.patch_size
        x = specs.reshape(n, c, f // pf, pf, t // pt, pt)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (f // pf) * (t // pt), pf * pt * c)

    def unpatchify(self, patches, freq_bins, frames):
        n = patches.shape[0]
        pf, pt = self.patch_size
        c = self.config["in_chans"]
        gf, gt = self.grid(freq_bins, frames)
        x = patches.reshape(n, gf, gt, pf, pt, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(n, c, gf * pf, gt * pt)

    def _positions(self, n, gf, gt, device):
        f_idx, t_idx = torch.meshgrid(torch.arange(gf, device=device), torch.arange(gt, device=device), indexing="ij")
        return torch.stack([f_idx.reshape(-1), t_idx.reshape(-1)], dim=-1).float().unsqueeze(0).expand(n, -1, -1)

    def informative_patches(self, specs):
        """``[N, L]``: 1.0 where a patch varies (holds signal), 0.0 where it is constant (padding, floor silence)."""
        return (self.patchify(specs).float().var(dim=-1) > MAE_CONSTANT_PATCH_VARIANCE).float()

    def reconstruction_target(self, specs):
        target = self.patchify(specs)
        if self.config["norm_pix_loss"]:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target

    def reconstruct(self, specs, mask_ratio=None):
        """``(masked input, reconstruction, mask)`` as ``[N, 1, F, T]`` images in input units.

        The prediction is in per-patch normalised units when ``norm_pix_loss``; it is mapped
        back with each patch's own mean and std so it can be compared with the input.
        """
        out = self.forward(specs, mask_ratio)
        f, t = specs.shape[2], specs.shape[3]
        patches = self.patchify(specs)
        pred = out["pred"].float()
        if self.config["norm_pix_loss"]:
            pred = pred * (patches.var(dim=-1, keepdim=True) + 1e-6) ** 0.5 + patches.mean(dim=-1, keepdim=True)
        mask = out["mask"].unsqueeze(-1)
        masked = self.unpatchify(patches * (1 - mask) + mask * patches.min(), f, t)
        recon = self.unpatchify(pred * mask + patches * (1 - mask), f, t)
        return masked, recon, self.unpatchify(mask.expand_as(patches), f, t)


# %% [markdown]
# ## The masked autoencoder
#
# `AudioMaePlusPlus` masks patches, encodes the visible ones with a `[CLS]` token, decodes all of
# them with a light decoder and scores the reconstruction of the masked patches; `encode` gives
# clip embeddings.


# %%
@register_mae_model("audiomae++")
class AudioMaePlusPlus(_AudioMaePatches, MaeModelBase):
    """AudioMAE++ (Macaron blocks, SwiGLU, 2-D RoPE, CLS, masking, light decoder).

    ``AudioMaePlusPlus(size="tiny")`` or with any key of ``AUDIOMAE_DEFAULTS`` overridden.
    Inputs are ``[N, 1, F, T]`` normalised log-mels, ``F``/``T`` multiples of ``patch_size``.
    """

    fixed_config = {}

    @property
    def pretrain_loss(self) -> str:
        """What ``forward``'s loss averages (for results)."""
        if self.config.get("loss_on_constant_patches", True):
            return "MSE on the masked patches"
        return "MSE on the masked patches that vary (constant padding and floor silence left out)"

    def __init__(self, size: str = "base", **overrides):
        super().__init__()
        overrides = {**overrides, **self.fixed_config}
        self.config = audiomae_config(size, **overrides)
        self.config["model_name"] = self.registry_name
        c = self.config
        dim, self.embed_dim = c["embed_dim"], c["embed_dim"]
        self.patch_size = c["patch_size"]
        self.patch_dim = self.patch_size[0] * self.patch_size[1] * c["in_chans"]
        self.patch_embed = nn.Conv2d(c["in_chans"], dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        rates = torch.linspace(0, c["drop_path"], c["depth"]).tolist()
        self.blocks = nn.ModuleList(
            AudioMaeBlock(dim, c["num_heads"], c["mlp_ratio"], c["block"], rate) for rate in rates
        )
        self.norm = nn.LayerNorm(dim)
        ddim = c["decoder_dim"]
        self.decoder_embed = nn.Linear(dim, ddim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
        self.decoder_blocks = nn.ModuleList(
            AudioMaeBlock(ddim, c["decoder_heads"], c["mlp_ratio"], c["block"]) for _ in range(c["decoder_depth"])
        )
        self.decoder_norm = nn.LayerNorm(ddim)
        self.decoder_pred = nn.Linear(ddim, self.patch_dim)
        self._init_weights()

    def _init_weights(self):
        w = self.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _run(self, blocks, tokens, positions, head_dim):
        """Add sine-cosine positions or build RoPE tables; run ``blocks`` over ``[CLS] + tokens``."""
        if self.config["use_rope"]:
            rope = audiomae_rope_tables(positions, head_dim, self.config["rope_base"])
        else:
            rope = None
            tokens = tokens.clone()
            tokens[:, 1:] = tokens[:, 1:] + audiomae_sincos_embedding(positions, tokens.shape[-1]).to(tokens.dtype)
        for block in blocks:
            tokens = block(tokens, rope)
        return tokens

    # -- encoder / decoder ---------------------------------------------------------------
    def forward_encoder(self, specs, mask_ratio: float):
        self._check_input(specs)
        n = specs.shape[0]
        gf, gt = self.grid(specs.shape[2], specs.shape[3])
        patches = self.patch_embed(specs).flatten(2).transpose(1, 2)  # [N, L, D]
        length = patches.shape[1]
        positions = self._positions(n, gf, gt, specs.device)
        keep = max(1, int(round(length * (1.0 - mask_ratio))))
        noise = torch.rand(n, length, device=specs.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        visible = torch.gather(patches, 1, ids_keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        visible_pos = torch.gather(positions, 1, ids_keep.unsqueeze(-1).expand(-1, -1, 2))
        mask = torch.ones(n, length, device=specs.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        tokens = torch.cat([self.cls_token.expand(n, -1, -1).to(visible.dtype), visible], dim=1)
        head_dim = self.embed_dim // self.config["num_heads"]
        latent = self.norm(self._run(self.blocks, tokens, visible_pos, head_dim))
        return latent, mask, ids_restore, positions

    def forward_decoder(self, latent, ids_restore, positions):
        x = self.decoder_embed(latent)
        n, length = ids_restore.shape
        masked = self.mask_token.to(x.dtype).expand(n, length + 1 - x.shape[1], -1)
        body = torch.cat([x[:, 1:], masked], dim=1)
        body = torch.gather(body, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        tokens = torch.cat([x[:, :1], body], dim=1)
        head_dim = self.config["decoder_dim"] // self.config["decoder_heads"]
        tokens = self.decoder_norm(self._run(self.decoder_blocks, tokens, positions, head_dim))
        return self.decoder_pred(tokens[:, 1:])

    def forward(self, specs, mask_ratio=None):
        """Pretraining step: mask, encode, decode; loss = MSE on the masked patches.

        Constant patches (the padding after a short clip, silence clipped at the floor;
        `informative_patches`) have an all-zero target with ``norm_pix_loss``. They count in the
        loss unless ``loss_on_constant_patches`` is False.
        """
        mask_ratio = self.config["mask_ratio"] if mask_ratio is None else mask_ratio
        latent, mask, ids_restore, positions = self.forward_encoder(specs, mask_ratio)
        pred = self.forward_decoder(latent, ids_restore, positions)
        target = self.reconstruction_target(specs)
        per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)
        counted = mask if self.config.get("loss_on_constant_patches", True) else mask * self.informative_patches(specs)
        loss = (per_patch * counted).sum() / counted.sum().clamp(min=1.0)
        return {"loss": loss, "pred": pred, "mask": mask, "target": target}

    def forward_features(self, specs):
        """Encoder tokens of the whole (unmasked) input, ``[N, 1 + L, D]``."""
        self._check_input(specs)
        n = specs.shape[0]
        gf, gt = self.grid(specs.shape[2], specs.shape[3])
        patches = self.patch_embed(specs).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(n, -1, -1).to(patches.dtype), patches], dim=1)
        head_dim = self.embed_dim // self.config["num_heads"]
        return self.norm(self._run(self.blocks, tokens, self._positions(n, gf, gt, specs.device), head_dim))

    def encode(self, specs, pooling=None, patch_drop: float = 0.0):
        """Clip embeddings ``[N, D]``: mean of the patch tokens (default) or the CLS token.

        ``patch_drop > 0`` encodes a random share of each clip's patches only, the others
        dropped as in pretraining (AudioMAE's fine-tuning masking): an augmentation whose
        embeddings stay close to the whole clip's, since the encoder learned on visible subsets.
        """
        pooling = pooling or self.config["pooling"]
        tokens = self.forward_encoder(specs, patch_drop)[0] if patch_drop > 0 else self.forward_features(specs)
        if pooling == "cls":
            return tokens[:, 0]
        if pooling == "mean":
            return tokens[:, 1:].mean(dim=1)
        raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")


# %% [markdown]
# ## The ViT baseline, and building a model by name
#
# The same model with plain pre-norm GELU blocks and fixed sine-cosine positions;
# `build_audiomae_model` and `audiomae_model_from_config` build any registered model.


# %%
@register_mae_model("vit_mae")
class AudioMaeVitBaseline(AudioMaePlusPlus):
    """Plain ViT masked autoencoder (pre-norm GELU blocks, fixed sine-cosine positions)."""

    fixed_config = {"block": "vit", "use_rope": False}


def build_audiomae_model(name: str = "audiomae++", size: str = "base", **overrides) -> MaeModelBase:
    """Build a registered model by name: ``build_audiomae_model("vit_mae", "tiny", depth=4)``."""
    return MAE_MODELS.build(name, size=size, **overrides)


def audiomae_model_from_config(config: dict) -> MaeModelBase:
    """Rebuild a model from the ``config`` it saved (checkpoints store it)."""
    config = dict(config)
    name = config.pop("model_name", "audiomae++")
    size = config.pop("size", "base")
    model_cls = MAE_MODELS.get(name)
    for key in model_cls.fixed_config:
        config.pop(key, None)
    return model_cls(size=size, **config)


# %% [markdown]
# ## Classifier wrapper
#
# A linear head on the encoder's CLS token or mean-pooled patch tokens. With
# `freeze_encoder=True` only the head trains (linear probe); as in MAE, the head starts with a
# non-affine batch norm so that probing is insensitive to the features' scale.


# %%
class AudioMaeClassifier(nn.Module):
    """Encoder + (BatchNorm without affine) + Linear head over CLS or mean-pooled tokens.

    ``patch_drop``: while training (not in eval mode), each clip is encoded from a random
    ``1 - patch_drop`` share of its patches (the encoder's ``encode(..., patch_drop=)``).
    """

    def __init__(
        self,
        encoder: MaeModelBase,
        num_classes: int,
        pooling: str = "mean",
        freeze_encoder: bool = False,
        head_dropout: float = 0.0,
        patch_drop: float = 0.0,
    ):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling
        self.num_classes = int(num_classes)
        self.freeze_encoder = freeze_encoder
        self.patch_drop = float(patch_drop)  # share of patches dropped while training (fine-tuning augmentation)
        self.head = nn.Sequential(
            nn.BatchNorm1d(encoder.embed_dim, affine=False),
            nn.Dropout(head_dropout),
            nn.Linear(encoder.embed_dim, self.num_classes),
        )
        nn.init.trunc_normal_(self.head[-1].weight, std=0.01)
        nn.init.zeros_(self.head[-1].bias)
        if freeze_encoder:
            for parameter in self.encoder.parameters():
                parameter.requires_grad_(False)

    def embed(self, specs):
        if self.freeze_encoder:
            with torch.no_grad():
                return self.encoder.encode(specs, self.pooling)
        if self.training and self.patch_drop > 0:
            return self.encoder.encode(specs, self.pooling, patch_drop=self.patch_drop)
        return self.encoder.encode(specs, self.pooling)

    def forward(self, specs):
        return self.head(self.embed(specs))
