"""lib.core.speech_models: one adapter over every family, tiny random models on real FSDD clips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lib.core.codec_models  # noqa: F401 - plugs the codecs into the adapter
from lib.core.audio import load_audio
from lib.core.speech_models import (
    CODEC_SUPPORT,
    KNOWN_SPEECH_MODELS,
    ModelLoadError,
    load_speech_model,
    resolve_speech_model_id,
)

FAMILIES = ("wav2vec2", "wavlm", "hubert", "whisper", "mimi", "encodec", "dac")
EXPECTED_LAYERS = {
    "wav2vec2": ["0", "1", "2", "conv"],
    "wavlm": ["0", "1", "2", "conv"],
    "hubert": ["0", "1", "2", "conv"],
    "whisper": ["0", "1", "2", "conv"],
    "mimi": ["encoder", "transformer", "latents", "quantized"],
    "dac": ["encoder", "latents", "quantized", "codebook_0", "codebook_1", "codebook_2", "codebook_3"],
}


@pytest.fixture(scope="module")
def fsdd_clip(fsdd_dir):
    return fsdd_dir / "recordings" / "7_george_12.wav"


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gives_layer_states_on_a_real_clip(family, tiny_model, fsdd_clip):
    adapter = load_speech_model(str(tiny_model(family)), local_files_only=True)
    info = adapter.info()
    assert info["family"] == family
    assert info["num_parameters"] > 10_000 and info["hidden_size"] == 32
    assert info["sample_rate"] in (16000, 24000)
    if family in EXPECTED_LAYERS:
        assert info["layers"] == EXPECTED_LAYERS[family]
    else:  # encodec: latents, quantized and one entry per codebook
        assert info["layers"][:2] == ["latents", "quantized"] and "codebook_0" in info["layers"]
    waveform = load_audio(fsdd_clip, sr=adapter.sample_rate)
    duration = len(waveform) / adapter.sample_rate
    states = adapter.hidden_states(waveform)
    assert [str(k) for k in states] == info["layers"]
    for layer, x in states.items():
        assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 32, (layer, x.shape)
        assert np.all(np.isfinite(x)), layer
        expected_frames = duration * adapter.layer_frame_rate(layer)
        assert abs(x.shape[0] - expected_frames) <= 2, (layer, x.shape[0], expected_frames)
    if adapter.num_layers:  # transformer layers differ from one another
        assert not np.allclose(states[0], states[adapter.num_layers])


def test_whisper_keeps_only_real_audio_frames(tiny_model, fsdd_dir):
    adapter = load_speech_model(str(tiny_model("whisper")), local_files_only=True)
    clip = load_audio(fsdd_dir / "recordings" / "0_jackson_0.wav", sr=16000)
    short = adapter.hidden_states(clip, [0, 2])
    assert short[2].shape[0] == math.ceil(len(clip) * 50 / 16000) < 1500
    # a clip longer than Whisper's 30 s window: two windows, still one frame per 20 ms
    long_clip = np.tile(clip, math.ceil(31 * 16000 / len(clip)))[: 31 * 16000]
    long = adapter.hidden_states(long_clip, [-1])
    assert set(long) == {2}
    assert long[2].shape == (1500 + 50, 32)


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm", "hubert", "whisper"])
def test_layer_states_are_the_saved_models_own(family, tiny_model, fsdd_clip):
    """Layer i is transformers' hidden_states[i] of the saved weights (loaded independently here), cut to the clip."""
    import transformers

    folder = str(tiny_model(family))
    adapter = load_speech_model(folder, local_files_only=True)
    waveform = load_audio(fsdd_clip, sr=16000)
    states = adapter.hidden_states(waveform)
    extractor = transformers.AutoFeatureExtractor.from_pretrained(folder)
    inputs = extractor(waveform, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        if family == "whisper":  # padded mode: the 30 s window, frames of the clip kept
            model = transformers.WhisperModel.from_pretrained(folder).eval()
            reference = model.encoder(inputs["input_features"], output_hidden_states=True).hidden_states
        else:
            model = transformers.AutoModel.from_pretrained(folder).eval()
            reference = model(inputs["input_values"], output_hidden_states=True).hidden_states
    for layer in range(adapter.num_layers + 1):
        expected = reference[layer][0, : len(states[layer])].numpy()
        np.testing.assert_allclose(states[layer], expected, atol=1e-5, err_msg=f"{family} layer {layer}")
    if family == "whisper":  # only the frames that cover the clip, not the 30 s window's 1,500
        assert len(states[0]) == math.ceil(len(waveform) * 50 / 16000) < reference[0].shape[1]
    else:
        assert len(states[0]) == reference[0].shape[1]


def test_layer_selection_and_bad_layers(tiny_model, fsdd_clip):
    adapter = load_speech_model(str(tiny_model("wav2vec2")), local_files_only=True)
    waveform = load_audio(fsdd_clip, sr=16000)
    picked = adapter.hidden_states(waveform, ["1", -1, "conv"])
    assert list(picked) == [1, 2, "conv"]
    full = adapter.hidden_states(waveform)
    np.testing.assert_allclose(picked[1], full[1], atol=1e-5)
    with pytest.raises(ValueError, match="has no layer 'nope'.*available"):
        adapter.hidden_states(waveform, ["nope"])
    with pytest.raises(ValueError, match="has no layer 7"):
        adapter.hidden_states(waveform, [7])
    with pytest.raises(ValueError, match="one mono clip"):
        adapter.hidden_states(np.stack([waveform, waveform]))
    with pytest.raises(ValueError, match="empty"):
        adapter.hidden_states(np.zeros(0, dtype=np.float32))
    codec = load_speech_model(str(tiny_model("dac")), local_files_only=True)
    with pytest.raises(ValueError, match="available"):
        codec.hidden_states(waveform, [3])


def test_codec_without_its_module_is_a_clear_error(monkeypatch, tiny_model):
    # a notebook that does not carry lib/core/codec_models.py has no codec support: say where it is
    monkeypatch.setattr("lib.core.speech_models.CODEC_SUPPORT", {})
    with pytest.raises(ModelLoadError, match="(?s)dac is a neural codec.*codec_models.*layer_embeddings"):
        load_speech_model(str(tiny_model("dac")), local_files_only=True)
    assert set(CODEC_SUPPORT) == {"mimi", "encodec", "dac"}


def test_load_errors_are_clear(tmp_path, tiny_model):
    with pytest.raises(ModelLoadError, match="(?s)cannot load model.*no such folder.*save_pretrained"):
        load_speech_model(str(tmp_path / "no-such-model"), local_files_only=True)
    with pytest.raises(ModelLoadError, match="facebook/wav2vec2-base"):
        load_speech_model("wav2vec2-base", local_files_only=True)  # short name resolved, not cached offline
    with pytest.raises(ModelLoadError, match="not supported"):
        load_speech_model(str(tiny_model("ast")), local_files_only=True)


def test_known_variants_registry():
    for hub_id in (
        "facebook/wav2vec2-base",
        "facebook/wav2vec2-large-960h",
        "openai/whisper-tiny",
        "openai/whisper-tiny.en",
        "openai/whisper-large-v3",
        "descript/dac_16khz",
        "descript/dac_24khz",
        "descript/dac_44khz",
        "microsoft/wavlm-base-plus",
        "facebook/hubert-base-ls960",
        "kyutai/mimi",
        "facebook/encodec_24khz",
    ):
        spec = KNOWN_SPEECH_MODELS[hub_id]
        assert {"family", "layers", "hidden", "params_m", "sample_rate"} <= set(spec)
    assert KNOWN_SPEECH_MODELS["descript/dac_44khz"]["sample_rate"] == 44100
    assert resolve_speech_model_id("whisper-base.en") == "openai/whisper-base.en"
    assert resolve_speech_model_id("dac_24khz") == "descript/dac_24khz"
    assert resolve_speech_model_id("my/own-model") == "my/own-model"


def test_fingerprint_follows_the_weights(tiny_model):
    folder = tiny_model("wavlm")
    first = load_speech_model(str(folder), local_files_only=True)
    second = load_speech_model(str(folder), local_files_only=True)
    assert first.fingerprint() == second.fingerprint()
    with torch.no_grad():
        next(second.model.parameters()).add_(0.01)
    second._fingerprint = None  # weights changed in place: forget the cached value
    assert first.fingerprint() != second.fingerprint()


def test_random_weights_follow_the_seed(tiny_model, fsdd_clip):
    folder = str(tiny_model("whisper"))
    waveform = load_audio(fsdd_clip, sr=16000)
    a, again, other = (
        load_speech_model(folder, local_files_only=True, weights="random", seed=s).hidden_states(waveform, [2])[2]
        for s in (0, 0, 1)
    )
    np.testing.assert_array_equal(a, again)
    assert not np.allclose(a, other, atol=1e-3)
