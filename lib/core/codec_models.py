# %% [markdown]
# # Neural codecs in the speech-model adapter: Mimi, EnCodec, DAC
#
# `load_speech_model` loads the neural audio codecs too (`kyutai/mimi`,
# `facebook/encodec_24khz`, `descript/dac_16khz`...), and `SpeechModelAdapter` gives their named
# stages the same `{layer: [frames, dims]}` interface as a transformer's layers. What is
# particular to codecs lives here, so a notebook that never opens a codec does not carry it:
# importing this module (`from lib.core.codec_models import ...`) plugs it into the adapter.
#
# - `codec_layer_names`: Mimi `encoder` (SEANet output, 25 Hz), `transformer` (its encoder
#   transformer, 25 Hz), `latents` (12.5 Hz), `quantized`; EnCodec `latents`, `quantized`,
#   `codebook_<k>`; DAC `encoder` (the continuous latent), `latents` (projected, before
#   quantisation), `quantized` (sum over codebooks) and `codebook_<k>` (one codebook's part).
# - `codec_frame_rate`: frames per second of a stage.
# - `codec_states`: the stages of one clip, read from the codec's encoder and quantiser.

# %%
import numpy as np
import torch

from lib.core.speech_models import CODEC_FAMILIES, CODEC_SUPPORT


def _codec_num_codebooks(adapter) -> int:
    config = adapter.model.config
    return int(getattr(config, "n_codebooks", 0) or getattr(config, "num_quantizers", 0) or 0)


def codec_layer_names(adapter) -> list:
    """The named stages a codec adapter can return (see the module introduction)."""
    names = {
        "mimi": ["encoder", "transformer", "latents", "quantized"],
        "encodec": ["latents", "quantized"],
        "dac": ["encoder", "latents", "quantized"],
    }[adapter.family]
    if adapter.family in ("dac", "encodec"):
        names += [f"codebook_{k}" for k in range(_codec_num_codebooks(adapter))]
    return names


def codec_frame_rate(adapter, layer=None) -> float:
    """Frames per second of ``layer`` (``None``: the latents): Mimi's ``encoder`` and ``transformer``
    stages run before its final 2x downsampling (25 Hz against 12.5 Hz)."""
    config, rate = adapter.model.config, adapter.sample_rate
    if adapter.family == "mimi":
        if str(layer) in ("encoder", "transformer"):
            return rate / float(np.prod(config.upsampling_ratios))
        return float(config.frame_rate)
    if adapter.family == "dac":
        return rate / float(np.prod(config.downsampling_ratios))
    return rate / float(np.prod(config.upsampling_ratios))


@torch.inference_mode()
def codec_states(adapter, waveform: np.ndarray, layers) -> dict:
    """``{layer: float32 [frames, dims]}`` of one mono clip at the codec's sample rate."""
    inputs = adapter.feature_extractor(raw_audio=waveform, sampling_rate=adapter.sample_rate, return_tensors="pt")
    input_values = inputs["input_values"].to(adapter.device)
    model, result = adapter.model, {}
    if adapter.family == "mimi":
        encoder = model.encoder
        seanet = encoder.encoder_seanet(input_values) if hasattr(encoder, "encoder_seanet") else None
        if {"encoder", "transformer"} & set(layers) and seanet is not None:
            result["encoder"] = seanet
            transformer = encoder.encoder_transformer(seanet.transpose(1, 2)).last_hidden_state
            result["transformer"] = transformer.transpose(1, 2)
        latents = encoder(input_values).latents
        result["latents"] = latents
        if "quantized" in layers:
            codes = model.quantizer.encode(latents).transpose(0, 1)
            result["quantized"] = model.quantizer.decode(codes)
    elif adapter.family == "encodec":
        latents = model.encoder(input_values)
        result["latents"] = latents
        if "quantized" in layers or any(str(layer).startswith("codebook_") for layer in layers):
            codes = model.quantizer.encode(latents)  # [n_q, batch, frames]
            result["quantized"] = model.quantizer.decode(codes)
            for k, indices in enumerate(codes):
                result[f"codebook_{k}"] = model.quantizer.layers[k].decode(indices)
    else:  # dac
        encoded = model.encoder(input_values)
        result["encoder"] = encoded
        quantized, codes, projected, _c, _q = model.quantizer(encoded)
        result["latents"] = projected
        result["quantized"] = quantized
        for k in range(codes.shape[1]):
            per_codebook = model.quantizer.quantizers[k].codebook(codes[:, k, :]).transpose(1, 2)
            result[f"codebook_{k}"] = model.quantizer.quantizers[k].out_proj(per_codebook)
    return {layer: result[layer][0].transpose(0, 1).float().cpu().numpy() for layer in layers}


CODEC_SUPPORT.update({family: (codec_layer_names, codec_frame_rate, codec_states) for family in CODEC_FAMILIES})
