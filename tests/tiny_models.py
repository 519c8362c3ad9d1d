"""Tiny random transformers models, saved with ``save_pretrained`` for offline tests.

Tests load them through the same ``from_pretrained`` code path the notebooks use with real
hub ids. Each builder returns the folder it wrote (model + feature extractor).
"""

from __future__ import annotations

from pathlib import Path

FAMILIES = ("wav2vec2", "wavlm", "hubert", "whisper", "mimi", "encodec", "dac", "ast")


def _conv_kwargs():
    # A 2-layer conv feature encoder with the real total stride of 320 (50 Hz at 16 kHz).
    return dict(conv_dim=(32, 32), conv_stride=(5, 64), conv_kernel=(10, 64), num_feat_extract_layers=2)


def build_tiny_model(family: str, folder, num_labels: int | None = None, seed: int = 0) -> Path:
    """Write a tiny random ``family`` model (+ feature extractor) to ``folder``; return it."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    speech = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        **_conv_kwargs(),
    )
    if family in ("wav2vec2", "wavlm", "hubert"):
        config_cls, model_cls = {
            "wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model),
            "wavlm": (tf.WavLMConfig, tf.WavLMModel),
            "hubert": (tf.HubertConfig, tf.HubertModel),
        }[family]
        extra = {}
        if num_labels:
            model_cls = {
                "wav2vec2": tf.Wav2Vec2ForSequenceClassification,
                "wavlm": tf.WavLMForSequenceClassification,
                "hubert": tf.HubertForSequenceClassification,
            }[family]
            extra = dict(num_labels=num_labels, classifier_proj_size=16)
        config = config_cls(**speech, **extra)
        model = model_cls(config)
        extractor = tf.Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
        )
    elif family == "whisper":
        config = tf.WhisperConfig(
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            num_mel_bins=80,
            max_source_positions=1500,
            max_target_positions=64,
            vocab_size=100,
            pad_token_id=1,
            bos_token_id=2,
            eos_token_id=2,
            decoder_start_token_id=3,
            suppress_tokens=None,
            begin_suppress_tokens=None,
        )
        model = tf.WhisperModel(config)
        extractor = tf.WhisperFeatureExtractor(feature_size=80)
    elif family == "mimi":
        config = tf.MimiConfig(
            hidden_size=32,
            num_filters=8,
            num_residual_layers=1,
            upsampling_ratios=[8, 6, 5, 4],
            codebook_size=64,
            codebook_dim=32,
            num_quantizers=4,
            num_semantic_quantizers=1,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=64,
            head_dim=16,
            sliding_window=50,
            upsample_groups=32,
            vector_quantization_hidden_dimension=32,
        )
        model = tf.MimiModel(config)
        extractor = tf.EncodecFeatureExtractor(feature_size=1, sampling_rate=24000)
    elif family == "encodec":
        config = tf.EncodecConfig(
            hidden_size=32,
            num_filters=8,
            num_residual_layers=1,
            codebook_size=64,
            codebook_dim=32,
            num_lstm_layers=1,
            target_bandwidths=[1.5, 3.0],
        )
        model = tf.EncodecModel(config)
        extractor = tf.EncodecFeatureExtractor(feature_size=1, sampling_rate=24000)
    elif family == "dac":
        config = tf.DacConfig(
            encoder_hidden_size=8,
            downsampling_ratios=[2, 4, 8, 8],
            decoder_hidden_size=32,
            n_codebooks=4,
            codebook_size=64,
            codebook_dim=8,
            hidden_size=32,
            sampling_rate=16000,
        )
        model = tf.DacModel(config)
        extractor = tf.DacFeatureExtractor(feature_size=1, sampling_rate=16000, hop_length=512)
    elif family == "ast":
        config = tf.ASTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_length=100,
            num_mel_bins=128,
        )
        model = tf.ASTModel(config)
        extractor = tf.ASTFeatureExtractor(max_length=100)
    else:
        raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    if family == "whisper":
        tiny_whisper_tokenizer(folder)
    return folder


WHISPER_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|transcribe|>",
    "<|startofprev|>",
    "<|notimestamps|>",
)


def tiny_whisper_tokenizer(folder):
    """A ``WhisperTokenizer`` of single characters (no merges) + Whisper's special tokens, saved to ``folder``.

    71 tokens, within the tiny Whisper's vocabulary of 100; every word is several tokens (" zero" is 5).
    """
    import json
    import string
    import tempfile

    import transformers as tf

    chars = ["\u0120", *string.ascii_lowercase, *string.ascii_uppercase, *string.digits, ".", ","]  # \u0120: space
    vocab = {token: i for i, token in enumerate(chars + list(WHISPER_SPECIAL_TOKENS))}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        end = WHISPER_SPECIAL_TOKENS[0]
        tokenizer = tf.WhisperTokenizer(
            str(Path(tmp) / "vocab.json"),
            str(Path(tmp) / "merges.txt"),
            unk_token=end,
            bos_token=end,
            eos_token=end,
            pad_token=end,
        )
    tokenizer.add_special_tokens({"additional_special_tokens": list(WHISPER_SPECIAL_TOKENS[1:])})
    tokenizer.save_pretrained(folder)
    return tokenizer
