# %% [markdown]
# # Fine-tuning Whisper's top encoder block on cached frames
#
# The frozen-encoder head reads cached frames of Whisper tiny.en's layers 2, 3 and 4. Hidden
# state *k* is the output of encoder block *k - 1*, and the last one (4) also has the encoder's
# final layer norm (`ln_post`) applied. So the cached layer-3 frames are exactly the input of
# the top block: a trainable copy of that block (and of the final layer norm) can run on them
# and be trained together with the head, with no extra encoder pass per clip or per epoch.
#
# `DigitTopBlock` is that copy. Its attention is computed here (the same projections, scaling
# and softmax as transformers' `WhisperAttention`), because the cached frames cover only the
# clip itself while Whisper's top block also attended to the trailing silence of the window
# (at least 0.2 s, up to `window_seconds`). Leaving that silence out changes the block's output
# (cosine 0.954 to the real layer 4 on FSDD clips); `context`, the layer-3 states of an
# all-silence window computed once from the frozen encoder, supplies approximate silence keys
# at the positions the silence would take (cosine 0.979), at the cost of a few extra keys.
#
# `DigitFinetunedHead` puts the block in front of the usual `DigitEncoderHead`: the block's
# output replaces the final layer's cached frames in the head's layer mix. The frozen encoder
# is untouched: Whisper's decoder prior still reads the original final layer.
#
# Measured (FSDD leave-one-speaker-out, 6 folds, 20 epochs, the recipe's 2 copies per clip,
# block learning rate 2e-4): head alone 0.987 mean both frozen and fine-tuned, worst speaker
# 0.966 vs 0.968; fused with the prior 0.988 vs 0.987. No gain, and a higher block learning rate
# (5e-4) lost accuracy on held-out speakers (the block fits the five training voices); training
# costs about 5x the head's (one thread, 14.7 s vs 2.9 s per epoch). The silence context did not
# help either (nicolas 0.960, yweweler 0.982 vs 0.968 / 0.982 without it). Hence off by default.

# %%
import copy
import math

import numpy as np
import torch
from torch import nn


class DigitTopBlock(nn.Module):
    """A trainable copy of an encoder's top block and final layer norm, run on states of the layer below.

    ``context``: optional ``[W, dims]`` states of the layer below for an all-silence window;
    a clip of ``n`` frames also attends to context frames ``n .. max(window_frames, n + 10) - 1``
    (the silence `digit_encoder_input` puts after it).
    """

    def __init__(self, layer: nn.Module, layer_norm: nn.Module, context=None, window_frames: int = 75):
        super().__init__()
        self.source_layer, self.target_layer = -2, -1
        self.layer = copy.deepcopy(layer).float()
        self.layer_norm = copy.deepcopy(layer_norm).float()
        for p in self.parameters():
            p.requires_grad_(True)
        attn = self.layer.self_attn
        self.heads = int(attn.num_heads)
        self.window_frames = int(window_frames)
        self.register_buffer(
            "context", torch.zeros(0, attn.embed_dim) if context is None else torch.as_tensor(context).float()
        )

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, T, dims]`` (states of the layer below), ``mask`` ``[B, T]`` -> ``[B, T, dims]``."""
        layer, attn = self.layer, self.layer.self_attn
        h = layer.self_attn_layer_norm(x)
        q = self._split(attn.q_proj(h) * attn.scaling)
        keys, values, valid = attn.k_proj(h), attn.v_proj(h), mask
        if len(self.context):
            c = layer.self_attn_layer_norm(self.context)
            b, w = len(x), len(self.context)
            keys = torch.cat([keys, attn.k_proj(c)[None].expand(b, -1, -1)], dim=1)
            values = torch.cat([values, attn.v_proj(c)[None].expand(b, -1, -1)], dim=1)
            n = mask.sum(dim=1, keepdim=True)
            end = torch.clamp(n + 10, min=self.window_frames)
            positions = torch.arange(w, device=x.device)[None]
            valid = torch.cat([mask, (positions >= n) & (positions < end)], dim=1)
        bias = torch.zeros(valid.shape, dtype=h.dtype, device=h.device).masked_fill(~valid, float("-inf"))
        out = nn.functional.scaled_dot_product_attention(
            q, self._split(keys), self._split(values), attn_mask=bias[:, None, None, :], scale=1.0
        )
        x = x + attn.out_proj(out.transpose(1, 2).flatten(2))
        x = x + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(x))))
        return self.layer_norm(x)


def digit_top_block(adapter, context: bool = False, window_seconds: float = 1.5, max_seconds: float = 3.0):
    """A `DigitTopBlock` copied from a Whisper adapter's encoder (its frozen model is not touched).

    ``context``: also compute the layer-below states of an all-silence window (see the module).
    """
    if getattr(adapter, "family", None) != "whisper":
        raise ValueError(f"fine-tuning the top block needs a Whisper encoder, not {adapter.name}")
    encoder = adapter._whisper_encoder()
    window_frames = int(math.ceil(window_seconds * 50))
    states = None
    if context:
        silence = np.zeros(int((max(window_seconds, max_seconds + 0.2)) * adapter.sample_rate), dtype=np.float32)
        states = adapter.hidden_states(silence, layers=[adapter.num_layers - 1])[adapter.num_layers - 1]
    block = DigitTopBlock(encoder.layers[-1], encoder.layer_norm, states, window_frames)
    block.source_layer, block.target_layer = adapter.num_layers - 1, adapter.num_layers
    return block


def digit_top_positions(layers, top: DigitTopBlock) -> tuple:
    """``(source, target)``: where the top block's input and output layers are in ``layers``."""
    names = [str(v) for v in layers]
    source = str(top.source_layer)
    target = next((i for i, v in enumerate(names) if v in (str(top.target_layer), "-1")), None)
    if source not in names or target is None:
        raise ValueError(
            f"fine-tuning the top block needs layers {top.source_layer} (its input) and {top.target_layer} "
            f"(its output) among the head's layers, not {list(layers)}"
        )
    return names.index(source), target


class DigitFinetunedHead(nn.Module):
    """`DigitTopBlock` + `DigitEncoderHead`: the block's output replaces the final layer in the head's input.

    ``source`` / ``target``: positions of the layer below the top block and of the final layer
    in the frames' layer axis (``config.layers``).
    """

    def __init__(self, top: DigitTopBlock, head: nn.Module, source: int, target: int):
        super().__init__()
        self.top, self.head, self.source, self.target = top, head, int(source), int(target)

    @property
    def mlp(self):
        return self.head.mlp

    def layer_weights(self) -> torch.Tensor:
        return self.head.layer_weights()

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        top = self.top(frames[:, :, self.source], mask) * mask[:, :, None]
        parts = [top[:, :, None] if k == self.target else frames[:, :, k : k + 1] for k in range(frames.shape[2])]
        return self.head(torch.cat(parts, dim=2), mask)
