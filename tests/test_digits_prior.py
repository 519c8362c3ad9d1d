"""Whisper's own decoder as a digit prior: forced-choice scores, fusion with the encoder head, weight fitting."""

import json

import numpy as np
import pytest
import torch

from lib.digits.digit_features import load_digit_waves
from lib.digits.whisper_digit_scores import (
    WhisperDigitScorer,
    digit_prior_columns,
    digit_prior_loso,
    fuse_digit_prior,
    load_whisper_digit_tokenizer,
    pick_digit_prior_weight,
)


def test_tiny_whisper_scores_have_the_right_shape_and_match_teacher_forcing(tiny_whisper):
    folder, adapter = tiny_whisper
    tokenizer = load_whisper_digit_tokenizer(str(folder))
    scorer = WhisperDigitScorer(adapter.model, tokenizer)
    assert scorer.info()["multi_token_spellings"] > 0  # a character tokenizer: every word is several tokens
    rng = np.random.default_rng(0)
    states = [rng.normal(size=(n, 32)).astype(np.float32) for n in (7, 12, 7, 3)]
    scores = scorer.log_probs(states)
    assert scores.shape == (4, 10) and np.isfinite(scores).all()
    assert (np.logaddexp.reduce(scores, axis=1) <= 1e-5).all()  # probabilities of distinct spellings sum to <= 1
    assert not np.allclose(scores[0], scores[1])  # the scores depend on the audio
    np.testing.assert_allclose(scorer.log_probs(states[1:2]), scores[1:2], atol=1e-5)  # batching changes nothing
    # digit 1 by hand: each spelling's teacher-forced token log-probs, summed, then log-sum-exp over spellings
    decoder, weight = adapter.model.decoder, adapter.model.decoder.embed_tokens.weight
    by_hand = []
    with torch.inference_mode():
        for spelling in scorer.spellings[1]:
            ids = torch.tensor([scorer.prefix + list(spelling)])
            hidden = decoder(input_ids=ids, encoder_hidden_states=torch.from_numpy(states[0])[None]).last_hidden_state
            log_probs = torch.log_softmax(hidden[0] @ weight.T, dim=-1)
            p = len(scorer.prefix)
            by_hand.append(sum(float(log_probs[p - 1 + j, t]) for j, t in enumerate(spelling)))
    assert scores[0, 1] == pytest.approx(float(np.logaddexp.reduce(by_hand)), abs=1e-4)
    assert len(WhisperDigitScorer(adapter.model, tokenizer, prompt=None).prefix) == 2  # <|sot|><|notimestamps|>


def test_prior_weight_fusion_and_loso_use_only_other_speakers():
    rng = np.random.default_rng(1)
    n = 600
    targets = rng.integers(0, 10, n)
    speakers = np.repeat(np.array(["a", "b", "c"]), n // 3)
    onehot = np.eye(10)[targets]
    head = 3 * onehot + rng.normal(scale=1.6, size=(n, 10))  # a decent head...
    prior = 3 * onehot + rng.normal(scale=1.6, size=(n, 10))  # ... and an independent, equally good prior
    fit = pick_digit_prior_weight(head, prior, targets)
    assert 0.4 < fit["weight"] < 2.5 and fit["accuracy"] > fit["head_accuracy"] + 0.03
    useless = pick_digit_prior_weight(head, rng.normal(size=(n, 10)), targets)
    assert useless["weight"] < 0.15  # noise earns (almost) no weight
    np.testing.assert_allclose(fuse_digit_prior(head, prior, 0.0).argmax(1), head.argmax(1))
    loso = digit_prior_loso(head, prior, targets, speakers)
    assert set(loso["per_speaker_accuracy"]) == {"a", "b", "c"} and set(loso["weights"]) == {"a", "b", "c"}
    assert loso["min_accuracy"] <= loso["mean_accuracy"] <= 1.0
    # a fold's weight is fitted without the held-out speaker: scrambling its prior leaves its weight alone
    scrambled = prior.copy()
    scrambled[speakers == "a"] = rng.normal(size=(n // 3, 10))
    again = digit_prior_loso(head, scrambled, targets, speakers)
    assert again["weights"]["a"] == pytest.approx(loso["weights"]["a"])
    assert again["weights"]["b"] != pytest.approx(loso["weights"]["b"])
    grouped = digit_prior_loso(head, scrambled, targets, speakers, folds=[["a", "b"], ["c"]])
    assert grouped["weights"]["a"] == grouped["weights"]["b"] != pytest.approx(again["weights"]["a"])  # one per fold
    assert set(grouped["per_speaker_accuracy"]) == {"a", "b", "c"}
    assert grouped["weights"]["c"] == pytest.approx(again["weights"]["c"])  # the same held-out set as before
    fixed = digit_prior_loso(head, prior, targets, speakers, weight=0.0)
    assert fixed["pooled_accuracy"] == pytest.approx(float(np.mean(head.argmax(1) == targets)))
    assert digit_prior_columns([0, 1, 2]) == [0, 1, 2]
    assert digit_prior_columns(["eight", "five", "zero"]) == [8, 5, 0]
    assert digit_prior_columns(["yes", "no"]) is None


def test_encoder_model_with_prior_predicts_saves_and_old_files_load(tiny_whisper, fsdd_manifest, tmp_path):
    from lib.digits.encoder_digits import DigitEncoderConfig, EncoderDigitModel, train_digit_encoder_head
    from lib.digits.model_files import load_digit_model, save_encoder_digit_model

    folder, adapter = tiny_whisper
    frame = fsdd_manifest[fsdd_manifest.speaker == "george"].groupby("label").head(2)
    waves, frame, _ = load_digit_waves(frame, 8000, progress=False)
    for layers in ([1, 2], [1]):  # the final layer (2) among the head's layers, or computed on the side
        config = DigitEncoderConfig(model=str(folder), layers=layers, epochs=2, whisper_prior=True, prior_weight=0.5)
        plain = EncoderDigitModel(adapter, torch.nn.Identity(), config)  # only for its frames
        frames = plain.frames(waves)
        head, _ = train_digit_encoder_head(frames, list(frame.label), config, progress=False)
        model = EncoderDigitModel(adapter, head, config)
        fused = model.predict_logits(waves)
        assert fused.shape == (20, 10) and np.isfinite(fused).all()
        frames, finals = model.encoder_outputs(waves)
        prior = model.prior_log_probs(finals)
        np.testing.assert_allclose(fused, fuse_digit_prior(model.head_logits(frames), prior, 0.5), atol=1e-4)
        np.testing.assert_allclose(model.logits_from_frames(frames, prior=prior), fused, atol=1e-4)
    with pytest.raises(ValueError, match="do not include the final layer"):
        model.logits_from_frames(frames)  # layers [1]: the final states must be passed
    path = save_encoder_digit_model(model, tmp_path / "encoder.pt")
    reloaded = load_digit_model(path, adapter=adapter)
    assert reloaded.config.whisper_prior and reloaded.config.prior_weight == 0.5
    np.testing.assert_allclose(reloaded.predict_logits(waves[:4]), fused[:4], atol=1e-4)
    # a model saved before the prior existed: no prior fields -> the head alone
    meta = json.loads(path.with_suffix(".json").read_text())
    for key in ("whisper_prior", "prior_weight", "prior_prompt"):
        meta["config"].pop(key)
    path.with_suffix(".json").write_text(json.dumps(meta))
    old = load_digit_model(path, adapter=adapter)
    assert not old.uses_prior
    np.testing.assert_allclose(old.predict_logits(waves[:4]), model.head_logits(frames[:4]), atol=1e-4)


def test_wideband_prior_hears_the_clip_at_16k_while_the_head_reads_8k(
    tiny_whisper, fsdd_manifest, tmp_path, monkeypatch
):
    """``wideband``: the Whisper prior is scored from the clips at 16 kHz; the head still reads them at 8 kHz."""
    import soundfile as sf

    from lib.core.audio import load_audio_batch
    from lib.digits.encoder_digits import DigitEncoderConfig, EncoderDigitModel, train_digit_encoder_head
    from lib.digits.model_files import predict_audio_files

    folder, adapter = tiny_whisper
    frame = fsdd_manifest[fsdd_manifest.speaker == "theo"].groupby("label").head(1)
    waves, frame, _ = load_digit_waves(frame, 8000, progress=False)
    wide, _, _ = load_digit_waves(frame, 16000, progress=False)
    t = np.arange(max(len(w) for w in wide)) / 16000
    wide = [w + 0.3 * np.sin(2 * np.pi * 6000 * t[: len(w)]).astype(np.float32) for w in wide]  # above 4 kHz
    config = DigitEncoderConfig(model=str(folder), layers=[1, 2], epochs=2, whisper_prior=True, prior_weight=0.5)
    frames = EncoderDigitModel(adapter, torch.nn.Identity(), config).frames(waves)
    head, _ = train_digit_encoder_head(frames, list(frame.label), config, progress=False)
    model = EncoderDigitModel(adapter, head, config)
    assert model.prior_hears_wideband and model.config.wideband().input_sample_rate == 16000
    prior = model.wideband_prior(wide)
    assert prior.shape == (10, 10) and np.isfinite(prior).all()
    narrow_prior = model.prior_log_probs(model.encoder_outputs(waves)[1])
    assert np.abs(prior - narrow_prior).max() > 1e-3  # the 6 kHz tone reaches the prior only through wideband
    fused = model.predict_logits(waves, wideband=wide)
    np.testing.assert_allclose(fused, fuse_digit_prior(model.head_logits(frames), prior, 0.5), atol=1e-4)
    np.testing.assert_allclose(
        model.predict_logits(waves), fuse_digit_prior(model.head_logits(frames), narrow_prior, 0.5), atol=1e-4
    )
    with pytest.raises(ValueError, match="wideband clips for"):
        model.predict_logits(waves, wideband=wide[:3])
    # predict_audio_files reads 16 kHz files twice: at the model's rate for the head, at 16 kHz for the prior
    wide_dir, narrow_dir = tmp_path / "wide", tmp_path / "narrow"
    wide_dir.mkdir(), narrow_dir.mkdir()
    for i in range(3):
        sf.write(wide_dir / f"clip{i}.wav", wide[i], 16000)
        sf.write(narrow_dir / f"clip{i}.wav", waves[i], 8000)
    files_8k, _, _ = load_audio_batch(sorted(wide_dir.iterdir()), sr=8000, progress=False)
    files_16k, _, _ = load_audio_batch(sorted(wide_dir.iterdir()), sr=16000, progress=False)
    expected = model.predict_proba(files_8k, wideband=files_16k).max(1)
    narrow_expected = model.predict_proba(files_8k).max(1)
    heard = []  # every call of the 16 kHz pass from here on
    real_wideband_prior = model.wideband_prior
    monkeypatch.setattr(model, "wideband_prior", lambda clips: heard.append(list(clips)) or real_wideband_prior(clips))
    table = predict_audio_files(model, wide_dir)
    assert len(heard) == 1 and [len(c) for c in heard[0]] == [len(w) for w in files_16k]  # the 16 kHz clips
    np.testing.assert_allclose(table.confidence.to_numpy(), expected, atol=1e-6)
    assert np.abs(expected - narrow_expected).min() > 1e-5  # the two settings differ far beyond the tolerance
    narrow_table = predict_audio_files(model, wide_dir, wideband=False)
    np.testing.assert_allclose(narrow_table.confidence.to_numpy(), narrow_expected, atol=1e-6)
    assert len(heard) == 1  # wideband=False: no 16 kHz pass
    predict_audio_files(model, narrow_dir)  # files recorded at the model's rate: nothing above it to hear
    assert len(heard) == 1
    # a model that reads 16 kHz already, or has no prior, has nothing more for the prior to hear
    assert not EncoderDigitModel(
        adapter, head, DigitEncoderConfig(model=str(folder), input_sample_rate=16000, whisper_prior=True)
    ).prior_hears_wideband
    assert not EncoderDigitModel(adapter, head, DigitEncoderConfig(model=str(folder))).prior_hears_wideband


def test_bundled_whisper_forced_choice_gets_real_digits_right(fsdd_manifest):
    """The real Whisper tiny.en decoder, nothing trained: clips of an FSDD speaker, forced choice over ten words."""
    from lib.digits.encoder_digits import (
        DigitEncoderConfig,
        digit_encoder_states_batch,
        load_digit_encoder_adapter,
        load_digit_prior_scorer,
    )

    adapter = load_digit_encoder_adapter("bundled/whisper-tiny.en", "clip")
    frame = fsdd_manifest[fsdd_manifest.speaker == "jackson"].groupby("label").head(2)
    waves, frame, _ = load_digit_waves(frame, 8000, progress=False)
    config = DigitEncoderConfig(whisper_prior=True)
    states = digit_encoder_states_batch(adapter, waves, config, layers=[adapter.num_layers])
    scores = load_digit_prior_scorer(adapter, config).log_probs([s[adapter.num_layers] for s in states])
    hits = int(np.sum(scores.argmax(1) == frame.label.to_numpy()))
    assert hits >= 16, hits  # 0.99 on this speaker's 500 clips here; chance is 2 of 20
    # the same 8 kHz clips given at 16 kHz (nothing above 4 kHz): the wideband path hears the same words
    wide, _, _ = load_digit_waves(frame, 16000, progress=False)
    wide_states = digit_encoder_states_batch(adapter, wide, config.wideband(), layers=[adapter.num_layers])
    wide_scores = load_digit_prior_scorer(adapter, config).log_probs([s[adapter.num_layers] for s in wide_states])
    assert int(np.sum(wide_scores.argmax(1) == scores.argmax(1))) >= 18
