# %% [markdown]
# # Fast streaming encoders: cached convolution features, truncated depth, key/value cache
#
# The live view needs the hidden states of a few layers (default 2, 6, 10) for every new
# 200 ms of audio, in well under 200 ms on two CPU cores. Running the whole model on the
# left context + new audio each time (the reference `StreamingLayerActivations`) wastes most
# of that work. `Wav2Vec2StreamEncoder` (WavLM, Wav2Vec2, HuBERT) runs the same weights with
# switches, each measured by `audiolens bench streaming`:
#
# - `truncate_depth`: run the transformer only up to the deepest requested layer;
# - `cache_conv`: the convolutional feature encoder runs only on the new audio plus its
#   receptive-field margin (80 samples). Its first layer's GroupNorm normalises each channel
#   over the whole input, so the streamed version normalises with running statistics over the
#   last `norm_horizon_s` seconds (offline: the whole utterance; no cached frame is recomputed);
# - `attention`: `"recompute"` runs the transformer over the whole left-context window each
#   update; `"kv"` keeps every layer's keys and values of the last `left_context_s` seconds
#   and runs only the new frames through the layers (chunked attention: a frame attends to its
#   left context and to the frames of its own update);
# - `quantize="int8"`: dynamic int8 matrix products for the transformer's linear layers
#   (kept only if the benchmark's fidelity holds);
# - `warm_up()`: a few throw-away updates at start, so the first real ones are not outliers.
#
# `WhisperStreamEncoder` streams a Whisper encoder in clip mode: each update encodes the
# left-context window alone (positional embeddings sliced to its length), only up to the
# deepest requested layer. Both report per-update stage times (`encoder_ms`,
# `transformer_ms`) and emit frames on the stream's global 20 ms grid.

# %%
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from lib.neurons.streaming_activations import conv_frame_geometry

STREAM_ATTENTION_MODES = ("kv", "recompute")


def _empty_stream_output(layers, hidden_size) -> dict:
    return {
        "frames": np.zeros(0, dtype=int),
        "times": np.zeros(0),
        "states": {layer: np.zeros((0, hidden_size), np.float32) for layer in layers},
        "timings": {"encoder_ms": 0.0, "transformer_ms": 0.0},
    }


def _check_stream_layers(adapter, layers) -> list:
    out = []
    for layer in layers:
        key = "conv" if str(layer) == "conv" else int(layer)
        if key not in adapter.layer_names:
            raise ValueError(f"{adapter.name} has no layer {layer!r}; it has {adapter.layer_names}")
        out.append(key)
    if not out:
        raise ValueError("no layer requested: pass at least one layer to stream")
    return out


def _warm_up_encoder(encoder, seconds: float, block_s: float) -> float:
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    noise = (0.01 * rng.standard_normal(int(seconds * encoder.sample_rate))).astype(np.float32)
    block = max(1, int(block_s * encoder.sample_rate))
    for i in range(0, len(noise), block):
        encoder.push(noise[i : i + block], i)
    encoder.reset()
    return time.perf_counter() - start


class _RunningChannelStats:
    """Exponentially forgetting per-channel mean and variance (horizon in samples of the statistic)."""

    def __init__(self, horizon: float):
        self.horizon = max(1.0, float(horizon))
        self.reset()

    def reset(self) -> None:
        self.weight = 0.0
        self.sum = None
        self.sumsq = None

    def update(self, x: torch.Tensor) -> None:
        """``x``: ``[channels, n]`` new values."""
        n = x.shape[-1]
        if n == 0:
            return
        decay = math.exp(-n / self.horizon)
        s, ss = x.sum(-1, dtype=torch.float64), (x.double() ** 2).sum(-1)
        if self.sum is None:
            self.sum, self.sumsq, self.weight = s, ss, float(n)
        else:
            self.sum = decay * self.sum + s
            self.sumsq = decay * self.sumsq + ss
            self.weight = decay * self.weight + n

    def mean_var(self) -> tuple:
        mean = self.sum / self.weight
        var = torch.clamp(self.sumsq / self.weight - mean**2, min=0.0)
        return mean.float(), var.float()


# %% [markdown]
# ## One transformer layer over new frames with a key/value cache
#
# The same arithmetic as the transformers layers (post- or pre-layer-norm, WavLM's gated
# relative position bias), written for queries that are only the new frames and keys that
# are the cached past plus the new frames. With an empty cache it is the plain layer.

# %%


def _stream_layer_forward(layer, x, k_past, v_past, rel_bias, stable: bool, wavlm: bool) -> tuple:
    """``x``: ``[n, D]`` new frames; ``k_past``/``v_past``: ``[m, D]``; returns ``(out [n, D], k [n, D], v [n, D])``."""
    attn = layer.attention
    heads = attn.num_heads
    n, dim = x.shape
    head_dim = dim // heads
    h = layer.layer_norm(x) if stable else x
    q = attn.q_proj(h) * (head_dim**-0.5)
    k_new, v_new = attn.k_proj(h), attn.v_proj(h)
    keys = torch.cat([k_past, k_new]) if k_past is not None and len(k_past) else k_new
    values = torch.cat([v_past, v_new]) if v_past is not None and len(v_past) else v_new
    m = len(keys)
    qh = q.view(n, heads, head_dim).transpose(0, 1)
    kh = keys.view(m, heads, head_dim).transpose(0, 1)
    vh = values.view(m, heads, head_dim).transpose(0, 1)
    scores = qh @ kh.transpose(1, 2)  # [heads, n, m]
    if wavlm and rel_bias is not None:
        gated = h.view(n, heads, head_dim).transpose(0, 1)  # [heads, n, hd]
        proj = attn.gru_rel_pos_linear(gated).view(heads, n, 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(proj).chunk(2, dim=-1)
        gate = gate_a * (gate_b * attn.gru_rel_pos_const[0] - 1.0) + 2.0  # [heads, n, 1]
        scores = scores + gate * rel_bias
    context = torch.softmax(scores, dim=-1) @ vh  # [heads, n, hd]
    out = attn.out_proj(context.transpose(0, 1).reshape(n, dim))
    x = x + out
    if stable:
        x = x + layer.feed_forward(layer.final_layer_norm(x))
    else:
        x = layer.layer_norm(x)
        x = layer.final_layer_norm(x + layer.feed_forward(x))
    return x, k_new, v_new


def _wavlm_relative_bias(attn0, query_pos, key_pos) -> torch.Tensor:
    """WavLM's relative position bias ``[heads, n, m]`` for absolute query and key frame indices."""
    relative = key_pos[None, :] - query_pos[:, None]
    buckets = attn0._relative_positions_bucket(relative)
    return attn0.rel_attn_embed(buckets).permute(2, 0, 1)


def _quantized_layers(layers):
    """Dynamic int8 copies of the layers' linear maps (``torch.ao`` dynamic quantisation)."""
    import copy

    from torch.ao.quantization import quantize_dynamic

    out = []
    for layer in layers:
        clone = copy.deepcopy(layer)
        attn = clone.attention
        keep = {"gru_rel_pos_linear": getattr(attn, "gru_rel_pos_linear", None)}
        clone = quantize_dynamic(clone, {torch.nn.Linear}, dtype=torch.qint8)
        if keep["gru_rel_pos_linear"] is not None:  # tiny gate projection: stays float
            clone.attention.gru_rel_pos_linear = keep["gru_rel_pos_linear"]
        out.append(clone)
    return out


# %% [markdown]
# ## Wav2Vec2-style models (WavLM, Wav2Vec2, HuBERT)


# %%
def _check_wav2vec2_stream_settings(adapter, attention: str, quantize, left_context_s: float) -> None:
    """A clear ``ValueError`` for a model or a setting that ``Wav2Vec2StreamEncoder`` cannot stream."""
    if adapter.family in ("whisper", "mimi", "encodec", "dac"):
        raise ValueError(f"Wav2Vec2StreamEncoder needs WavLM, Wav2Vec2 or HuBERT, not {adapter.family}")
    if attention not in STREAM_ATTENTION_MODES:
        raise ValueError(f"attention must be one of {STREAM_ATTENTION_MODES}, not {attention!r}")
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', not {quantize!r}")
    if left_context_s < 0:
        raise ValueError(f"left_context_s must be >= 0, not {left_context_s}")


class _Wav2Vec2StreamFrontEnd:
    """Convolution features, projection and positions of the streamed window (part of ``Wav2Vec2StreamEncoder``)."""

    # ------------------------------------------------------------------ convolutional front end
    def _conv_frames(self, audio: np.ndarray, fresh_from: int) -> torch.Tensor:
        """Conv features ``[frames, C]`` of ``audio`` (starting on the frame grid), streamed GroupNorm.

        ``fresh_from``: index in ``audio`` where samples not seen before start (statistics use those).
        """
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        if self.normalize_waveform:  # the feature extractor's zero-mean unit-variance, with running statistics
            self._wave_stats.update(x[None, fresh_from:])
            mean, var = self._wave_stats.mean_var()
            x = (x - mean) / torch.sqrt(var + 1e-7)
        h = x[None, None]
        first = self.conv_layers[0]
        if self.group_norm:
            h = first.conv(h)
            stride0 = first.conv.stride[0]
            self._gn_stats.update(h[0, :, fresh_from // stride0 :])
            mean, var = self._gn_stats.mean_var()
            gn = first.layer_norm
            h = (h - mean[None, :, None]) / torch.sqrt(var[None, :, None] + gn.eps)
            h = h * gn.weight[None, :, None] + gn.bias[None, :, None]
            h = first.activation(h)
        else:
            h = first(h)
        for conv_layer in self.conv_layers[1:]:
            h = conv_layer(h)
        return h[0].transpose(0, 1)

    def _project(self, conv: torch.Tensor) -> torch.Tensor:
        out = self.projection(conv[None])
        return (out[0] if isinstance(out, tuple) else out)[0]

    def _pos_embed(self, x: torch.Tensor, n_out: int) -> torch.Tensor:
        """Positional conv embedding of the last ``n_out`` rows of ``x [T, D]`` (zeros beyond both ends)."""
        pad = self.pos_kernel // 2
        y = F.conv1d(x.T[None], self.pos_conv_weight, self.pos_conv_bias, padding=pad, groups=self.pos_conv_groups)
        if self.pos_kernel % 2 == 0:
            y = y[:, :, :-1]
        return self.pos_activation(y)[0].T[-n_out:]

    # ------------------------------------------------------------------ one update
    def _restart_at(self, first_sample: int) -> int:
        """A gap in the stream: drop the context, restart at the next whole frame; return that sample."""
        self.gaps += 1
        start = int(math.ceil(first_sample / self.stride) * self.stride)
        self._audio = np.zeros(0, dtype=np.float32)
        self._audio_start = start
        self.received = start
        self.emitted = max(self.emitted, start // self.stride)
        self.start_frame = self.emitted
        self._proj = torch.zeros(0, self.hidden_size)
        self._proj_start = self.emitted
        self._kv = [(None, None) for _ in self.transformer_layers]
        return start

    def _window_features(self, complete: int) -> tuple:
        """Projected features of the left-context window (whole model front end on the window)."""
        first = max(self.start_frame, self.emitted - self.context_frames)
        lo = first * self.stride - self._audio_start
        hi = (complete - 1) * self.stride + self.field - self._audio_start
        audio = self._audio[lo:hi]
        values = self.adapter.feature_extractor(audio, sampling_rate=self.sample_rate, return_tensors="pt")
        conv = self.adapter.model.feature_extractor(values["input_values"])[0].transpose(0, 1)
        return first, conv, self._project(conv)


# %% [markdown]
# ## Transformer layers: recompute or key/value cache
#
# `attention="recompute"` runs the layers over the whole left-context window at every update;
# `"kv"` keeps each layer's keys and values and runs only the new frames, attending to the cached
# context.


# %%
class _Wav2Vec2StreamLayers:
    """Layers over the left context: recomputed, or one key/value-cached step (part of ``Wav2Vec2StreamEncoder``)."""

    def _input_states(self, proj: torch.Tensor, n_out: int) -> torch.Tensor:
        x = proj[-n_out:] + self._pos_embed(proj, n_out)
        return x if self.stable else self.encoder_norm(x)

    def _collect(self, states: dict, index: int, x: torch.Tensor) -> None:
        # transformers 5.x: hidden_states[L] of a stable-layer-norm model is the last layer's raw output
        # (the final layer norm goes only into last_hidden_state); checked against the model in the tests
        if index in self.layers:
            states[index] = x

    def _recompute(self, window: torch.Tensor, window_first: int, n_new: int) -> dict:
        x = self._input_states(window, len(window))
        bias = None
        if self.wavlm:
            pos = torch.arange(window_first, window_first + len(window))
            bias = _wavlm_relative_bias(self.rel_attn, pos, pos)
        states = {}
        self._collect(states, 0, x[-n_new:])
        for i, layer in enumerate(self.transformer_layers):
            x, _, _ = _stream_layer_forward(layer, x, None, None, bias, self.stable, self.wavlm)
            self._collect(states, i + 1, x[-n_new:])
        return states

    def _kv_step(self, proj_new: torch.Tensor, before: torch.Tensor, n_new: int) -> dict:
        x = self._input_states(before, n_new)
        past = 0 if self._kv[0][0] is None else len(self._kv[0][0])
        bias = None
        if self.wavlm:
            query = torch.arange(self.emitted, self.emitted + n_new)
            keys = torch.arange(self.emitted - past, self.emitted + n_new)
            bias = _wavlm_relative_bias(self.rel_attn, query, keys)
        states = {}
        self._collect(states, 0, x)
        ctx = self.context_frames
        for i, layer in enumerate(self.transformer_layers):
            k_past, v_past = self._kv[i]
            x, k_new, v_new = _stream_layer_forward(layer, x, k_past, v_past, bias, self.stable, self.wavlm)
            keys = torch.cat([k_past, k_new]) if k_past is not None else k_new
            values = torch.cat([v_past, v_new]) if v_past is not None else v_new
            self._kv[i] = (keys[-ctx:], values[-ctx:]) if ctx > 0 else (None, None)
            self._collect(states, i + 1, x)
        return states


# %% [markdown]
# ## The encoder
#
# `Wav2Vec2StreamEncoder.push(audio, start)` adds audio and returns the hidden states of the
# frames that became complete, on the global 20 ms grid, with each stage's time.


# %%
class Wav2Vec2StreamEncoder(_Wav2Vec2StreamFrontEnd, _Wav2Vec2StreamLayers):
    """Incremental hidden states of chosen layers of a Wav2Vec2-style model, on the global 20 ms grid."""

    def __init__(
        self,
        adapter,
        layers=(2, 6, 10),
        left_context_s: float = 1.0,
        attention: str = "kv",
        cache_conv: bool = True,
        truncate_depth: bool = True,
        quantize: str | None = None,
        norm_horizon_s: float = 10.0,
    ):
        _check_wav2vec2_stream_settings(adapter, attention, quantize, left_context_s)
        self.adapter = adapter
        self.layers = _check_stream_layers(adapter, layers)
        self.sample_rate = adapter.sample_rate
        model = adapter.model
        config = model.config
        self.settings = {
            "left_context_s": float(left_context_s),
            "attention": attention,
            "cache_conv": bool(cache_conv),
            "truncate_depth": bool(truncate_depth),
            "quantize": quantize,
            "norm_horizon_s": float(norm_horizon_s),
        }
        strides = list(config.conv_stride)
        self.field, self.stride = conv_frame_geometry(adapter)
        self.context_frames = int(round(left_context_s * self.sample_rate / self.stride))
        numeric = [x for x in self.layers if x != "conv"]
        self.depth = (max(numeric) if numeric else 0) if truncate_depth else adapter.num_layers
        self.conv_layers = list(model.feature_extractor.conv_layers)
        self.group_norm = isinstance(getattr(self.conv_layers[0], "layer_norm", None), torch.nn.GroupNorm)
        self.normalize_waveform = bool(getattr(adapter.feature_extractor, "do_normalize", False))
        self.projection = model.feature_projection
        encoder = model.encoder
        self.stable = type(encoder).__name__.endswith("StableLayerNorm")
        self.encoder_norm = encoder.layer_norm
        pos = encoder.pos_conv_embed
        self.pos_conv_weight = pos.conv.weight.detach().clone()  # weight norm evaluated once
        self.pos_conv_bias = pos.conv.bias.detach().clone()
        self.pos_conv_groups, self.pos_kernel = pos.conv.groups, pos.conv.kernel_size[0]
        self.pos_activation = pos.activation
        self.wavlm = adapter.family == "wavlm"
        self.transformer_layers = list(encoder.layers[: self.depth])
        if quantize == "int8" and self.transformer_layers:
            self.transformer_layers = _quantized_layers(self.transformer_layers)
        self.rel_attn = encoder.layers[0].attention if self.wavlm else None
        self.hidden_size = adapter.hidden_size
        self.conv_dim = int(config.conv_dim[-1])
        # one conv-0 output per conv_stride[0] samples: the GroupNorm statistics' horizon in those units
        self._wave_stats = _RunningChannelStats(norm_horizon_s * self.sample_rate)
        self._gn_stats = _RunningChannelStats(norm_horizon_s * self.sample_rate / strides[0])
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        self._audio = np.zeros(0, dtype=np.float32)
        self._audio_start = 0  # global index of _audio[0]; a multiple of the stride
        self.received = 0
        self.emitted = 0
        self.start_frame = 0  # first frame of the current contiguous stretch
        self.gaps = 0
        self.updates = 0
        self._proj = torch.zeros(0, self.hidden_size)  # projected features of frames _proj_start..
        self._proj_start = 0
        self._conv = torch.zeros(0, self.conv_dim)
        self._kv = [(None, None) for _ in self.transformer_layers]
        self._kv_start = 0
        self._wave_stats.reset()
        self._gn_stats.reset()

    def info(self) -> dict:
        return {"encoder": type(self).__name__, "depth_run": self.depth, **self.settings}

    @torch.inference_mode()
    def push(self, chunk, first_sample: int | None = None) -> dict:
        """Add audio; return ``{"frames", "times", "states": {layer: [n, D]}, "timings"}`` for the new frames."""
        t0 = time.perf_counter()
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if first_sample is not None and first_sample != self.received:
            start = self._restart_at(first_sample)
            chunk = chunk[max(0, start - first_sample) :]
        self._audio = np.concatenate([self._audio, chunk])
        self.received += len(chunk)
        complete = (self.received - self.field) // self.stride + 1
        if complete <= self.emitted:
            return _empty_stream_output(self.layers, self.hidden_size)
        n_new = complete - self.emitted
        ctx = self.context_frames
        conv_new = None
        if self.settings["cache_conv"]:
            lo = self.emitted * self.stride - self._audio_start
            hi = (complete - 1) * self.stride + self.field - self._audio_start
            fresh = (self.field - self.stride) if self.emitted > self.start_frame else 0
            conv_new = self._conv_frames(self._audio[lo:hi], fresh)
            proj_new = self._project(conv_new)
            proj = torch.cat([self._proj, proj_new])
            window_first = max(self.start_frame, self.emitted - ctx)
            window = proj[window_first - self._proj_start :]
        else:
            window_first, conv_window, window = self._window_features(complete)
            conv_new, proj_new = conv_window[-n_new:], window[-n_new:]
            proj = window
            self._proj_start = window_first
        t1 = time.perf_counter()
        states = {}
        if "conv" in self.layers:
            states["conv"] = conv_new.float().numpy()
        wanted = [x for x in self.layers if x != "conv"]
        if wanted:
            if self.settings["attention"] == "recompute":
                layer_states = self._recompute(window, window_first, n_new)
            else:
                pad = self.pos_kernel // 2
                before = proj[max(0, len(proj) - n_new - pad) :]
                layer_states = self._kv_step(proj_new, before, n_new)
            for layer in wanted:
                states[layer] = layer_states[layer].float().numpy()
        t2 = time.perf_counter()
        # keep what the next update needs: the audio margin, the projected frames of the context
        keep_frames = max(ctx, self.pos_kernel // 2)
        if self.settings["cache_conv"]:
            next_start = complete * self.stride
        else:
            next_start = max(self.start_frame, complete - ctx) * self.stride
        self._audio = self._audio[next_start - self._audio_start :]
        self._audio_start = next_start
        proj_first = max(self._proj_start, complete - keep_frames)
        self._proj = proj[proj_first - self._proj_start :].clone() if self.settings["cache_conv"] else proj
        self._proj_start = proj_first if self.settings["cache_conv"] else self._proj_start
        frames = np.arange(self.emitted, complete)
        self.emitted = complete
        self.updates += 1
        return {
            "frames": frames,
            "times": (frames * self.stride + self.field / 2.0) / self.sample_rate,
            "states": states,
            "timings": {"encoder_ms": (t1 - t0) * 1000.0, "transformer_ms": (t2 - t1) * 1000.0},
        }

    @torch.inference_mode()
    def warm_up(self, seconds: float = 2.0, block_s: float = 0.2) -> float:
        """Run throw-away updates on quiet noise (allocations, kernel choice), then reset; returns seconds spent."""
        return _warm_up_encoder(self, seconds, block_s)


# %% [markdown]
# ## Whisper encoders in clip mode
#
# Whisper's encoder takes log-mel frames every 10 ms; two convolutions (the second with
# stride 2) give one frame per 20 ms, frame `j` centred on sample `320 j`. In clip mode the
# positional embeddings are sliced to the window's length, so a window that starts on a
# multiple of 320 samples keeps the stream's global frame grid. Each update encodes the last
# `left_context_s` seconds plus the new audio and emits the new frames. Layer `"conv"` is the
# convolutional front end, `0` the transformer input (conv + positions), `1..L` the layers;
# the last layer has the final layer norm applied, as in transformers.

# %%


class WhisperStreamEncoder:
    """Incremental hidden states of a Whisper encoder (clip mode: the window alone, no 30 s padding)."""

    def __init__(
        self, adapter, layers=(1, 2, 4), left_context_s: float = 1.0, truncate_depth: bool = True, **other_settings
    ):
        """``other_settings`` (``attention="kv"``, ``cache_conv``, ``quantize``: the Wav2Vec2-style
        encoder's) do not apply to Whisper's clip mode, which recomputes its window: they are
        recorded in ``settings["ignored"]`` and named once when given."""
        if adapter.family != "whisper":
            raise ValueError(f"WhisperStreamEncoder needs a Whisper model, not {adapter.family}")
        self.adapter = adapter
        self.layers = _check_whisper_layers(adapter, layers)
        self.sample_rate = adapter.sample_rate
        model = adapter.model
        self.encoder = model.get_encoder() if hasattr(model, "get_encoder") else model.encoder
        self.hop = int(adapter.feature_extractor.hop_length)
        self.stride = 2 * self.hop  # 320 samples: 20 ms
        self.field = self.stride  # a frame is complete once its centre sample has arrived
        numeric = [x for x in self.layers if x != "conv"]
        self.depth = (max(numeric) if numeric else 0) if truncate_depth else adapter.num_layers
        self.context_frames = int(round(left_context_s * self.sample_rate / self.stride))
        self.max_frames = int(self.encoder.embed_positions.num_embeddings)
        self.hidden_size = adapter.hidden_size
        self.settings = {
            "left_context_s": float(left_context_s),
            "attention": "recompute",
            "cache_conv": False,
            "truncate_depth": bool(truncate_depth),
            "quantize": None,
            "whisper_mode": "clip",
        }
        ignored = {k: v for k, v in other_settings.items() if v not in (None, False, "recompute")}
        if ignored:
            self.settings["ignored"] = ignored
            print(f"Whisper streaming (clip mode) recomputes each window: {ignored} do not apply to it and are ignored")
        self.reset()

    def reset(self) -> None:
        self._audio = np.zeros(0, dtype=np.float32)
        self._audio_start = 0
        self.received = 0
        self.emitted = 0
        self.start_frame = 0
        self.gaps = 0
        self.updates = 0

    def info(self) -> dict:
        return {"encoder": type(self).__name__, "depth_run": self.depth, **self.settings}

    def _mel(self, audio: np.ndarray) -> torch.Tensor:
        fe = self.adapter.feature_extractor
        feats = fe(audio, sampling_rate=self.sample_rate, padding="longest", return_tensors="pt")["input_features"]
        return feats.to(dtype=next(self.encoder.parameters()).dtype)

    def encode_window(self, audio: np.ndarray) -> dict:
        """``{layer: [frames, D]}`` of one window in clip mode (frame ``j`` centred on sample ``320 j``)."""
        enc = self.encoder
        mel = self._mel(audio)
        x = F.gelu(enc.conv1(mel))
        conv = F.gelu(enc.conv2(x)).permute(0, 2, 1)
        self._front_done = time.perf_counter()
        n = min(conv.shape[1], self.max_frames)
        conv = conv[:, :n]
        states = {}
        if "conv" in self.layers:
            states["conv"] = conv[0]
        x = conv + enc.embed_positions.weight[:n][None]
        if 0 in self.layers:
            states[0] = x[0]
        for i, layer in enumerate(enc.layers[: self.depth]):
            out = layer(x, None)
            x = out[0] if isinstance(out, tuple) else out
            if i + 1 in self.layers:
                states[i + 1] = (enc.layer_norm(x) if i + 1 == self.adapter.num_layers else x)[0]
        return states

    @torch.inference_mode()
    def push(self, chunk, first_sample: int | None = None) -> dict:
        t0 = time.perf_counter()
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if first_sample is not None and first_sample != self.received:
            self.gaps += 1
            start = int(math.ceil(first_sample / self.stride) * self.stride)
            chunk = chunk[max(0, start - first_sample) :]
            self._audio = np.zeros(0, dtype=np.float32)
            self._audio_start = self.received = start
            self.emitted = max(self.emitted, start // self.stride)
            self.start_frame = self.emitted
        self._audio = np.concatenate([self._audio, chunk])
        self.received += len(chunk)
        complete = self.received // self.stride
        if complete <= self.emitted:
            return _empty_stream_output(self.layers, self.hidden_size)
        first = max(self.start_frame, self.emitted - self.context_frames, complete - self.max_frames)
        lo = first * self.stride - self._audio_start
        audio = self._audio[lo : complete * self.stride - self._audio_start]
        t1 = time.perf_counter()
        window = self.encode_window(audio)
        n_new = complete - self.emitted
        states = {layer: window[layer][-n_new:].float().cpu().numpy() for layer in self.layers}
        t2 = time.perf_counter()
        t1 = self._front_done  # mel + convolutions count as the feature encoder
        keep = max(self.start_frame, complete - self.context_frames) * self.stride
        self._audio = self._audio[keep - self._audio_start :]
        self._audio_start = keep
        frames = np.arange(self.emitted, complete)
        self.emitted = complete
        self.updates += 1
        return {
            "frames": frames,
            "times": frames * self.stride / self.sample_rate,
            "states": states,
            "timings": {"encoder_ms": (t1 - t0) * 1000.0, "transformer_ms": (t2 - t1) * 1000.0},
        }

    @torch.inference_mode()
    def warm_up(self, seconds: float = 2.0, block_s: float = 0.2) -> float:
        return _warm_up_encoder(self, seconds, block_s)


def _check_whisper_layers(adapter, layers) -> list:
    out = []
    for layer in layers:
        key = "conv" if str(layer) == "conv" else int(layer)
        if key != "conv" and not 0 <= key <= adapter.num_layers:
            raise ValueError(f"{adapter.name} has no layer {layer!r}; it has 'conv' and 0..{adapter.num_layers}")
        out.append(key)
    if not out:
        raise ValueError("no layer requested: pass at least one layer to stream")
    return out


def make_stream_encoder(adapter, layers, **settings):
    """The fast streaming encoder for ``adapter``'s family (Whisper: clip mode; else Wav2Vec2-style)."""
    if adapter.family == "whisper":
        return WhisperStreamEncoder(adapter, layers, **settings)
    return Wav2Vec2StreamEncoder(adapter, layers, **settings)
