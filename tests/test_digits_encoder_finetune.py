"""Fine-tuning a copy of Whisper's top encoder block on cached frames (digit model, `finetune_top`)."""

import json

import numpy as np
import pytest
import torch

from lib.digits.digit_features import load_digit_waves


def _window_states(adapter, seconds, seed):
    rng = np.random.default_rng(seed)
    wave = np.zeros(int(1.5 * 16000), dtype=np.float32)
    wave[: int(seconds * 16000)] = 0.1 * rng.standard_normal(int(seconds * 16000))
    return adapter.hidden_states(wave, layers=[1, 2])


def test_top_block_reproduces_the_final_layer_and_masks_padding(tiny_whisper):
    from lib.digits.encoder_finetune import digit_top_block

    _folder, adapter = tiny_whisper
    block = digit_top_block(adapter)
    assert (block.source_layer, block.target_layer) == (1, 2)
    states = [_window_states(adapter, s, seed) for seed, s in enumerate((0.5, 1.0))]
    lengths = [len(st[1]) - 20 * k for k, st in enumerate(states)]  # the second clip is padded in the batch
    x = torch.zeros(2, max(lengths), 32)
    mask = torch.zeros(2, max(lengths), dtype=torch.bool)
    for k, (st, n) in enumerate(zip(states, lengths)):
        x[k, :n], mask[k, :n] = torch.from_numpy(st[1][:n]), True
    with torch.no_grad():
        out = block(x, mask).numpy()
        alone = block(x[1:, : lengths[1]], mask[1:, : lengths[1]]).numpy()
    # the full window's states: exactly the encoder's final layer (top block + final layer norm)
    np.testing.assert_allclose(out[0], states[0][2], atol=1e-5)
    # padding is masked out: a shorter clip in the batch gives its own single-clip result
    np.testing.assert_allclose(out[1, : lengths[1]], alone[0], atol=1e-5)
    assert np.abs(out[1, : lengths[1]] - states[1][2][: lengths[1]]).max() > 1e-3  # less context, other states


def test_silence_context_is_attended_at_the_positions_after_the_clip(tiny_whisper):
    from lib.digits.encoder_finetune import digit_top_block

    _folder, adapter = tiny_whisper
    block = digit_top_block(adapter, context=True, window_seconds=1.5, max_seconds=1.0)
    assert block.context.shape == (75, 32) and block.window_frames == 75  # max(window, max_seconds + 0.2 s)
    st = _window_states(adapter, 0.3, 3)
    n = 15
    clip = torch.from_numpy(st[1][:n])[None]
    with torch.no_grad():
        out = block(clip, torch.ones(1, n, dtype=torch.bool))[0].numpy()
        # the same as the plain block (no context) on the clip followed by context frames n..window-1
        plain = digit_top_block(adapter)
        joined = torch.cat([clip[0], block.context[n : block.window_frames]])[None]
        expected = plain(joined, torch.ones(1, len(joined[0]), dtype=torch.bool))[0, :n].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_finetuned_model_trains_the_copy_keeps_the_prior_frozen_and_reloads(tiny_whisper, fsdd_manifest, tmp_path):
    from lib.digits.encoder_digits import DigitEncoderConfig, EncoderDigitModel, train_digit_encoder_head
    from lib.digits.encoder_finetune import DigitFinetunedHead, digit_top_block
    from lib.digits.model_files import load_digit_model, save_encoder_digit_model

    folder, adapter = tiny_whisper
    frame = fsdd_manifest[fsdd_manifest.speaker == "george"].groupby("label").head(2)
    waves, frame, _ = load_digit_waves(frame, 8000, progress=False)
    config = DigitEncoderConfig(
        model=str(folder), layers=[1, 2], epochs=3, whisper_prior=True, prior_weight=0.5, finetune_top=True
    )
    config.top_learning_rate = 1e-2
    frozen = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    plain = EncoderDigitModel(adapter, torch.nn.Identity(), config)  # only for its frames and the prior
    frames, finals = plain.encoder_outputs(waves)
    prior_before = plain.prior_log_probs(finals)
    head, history = train_digit_encoder_head(
        frames, list(frame.label), config, progress=False, top_block=digit_top_block(adapter)
    )
    assert isinstance(head, DigitFinetunedHead) and len(history["train_loss"]) == 3
    original = adapter._whisper_encoder().layers[-1].state_dict()
    changed = [k for k, v in head.top.layer.state_dict().items() if not torch.allclose(v, original[k])]
    assert changed, "the fine-tuned copy of the top block did not change"
    assert all(torch.equal(v, adapter.model.state_dict()[k]) for k, v in frozen.items()), "the frozen encoder changed"
    model = EncoderDigitModel(adapter, head, config)
    fused = model.predict_logits(waves)
    frames2, finals2 = model.encoder_outputs(waves)
    # the prior reads the frozen encoder's final layer, not the fine-tuned copy
    np.testing.assert_allclose(model.prior_log_probs(finals2), prior_before, atol=1e-5)
    np.testing.assert_allclose(fused, fuse(model, frames2, prior_before), atol=1e-4)
    path = save_encoder_digit_model(model, tmp_path / "encoder.pt")
    reloaded = load_digit_model(path, adapter=adapter)
    assert reloaded.config.finetune_top and isinstance(reloaded.head, DigitFinetunedHead)
    np.testing.assert_allclose(reloaded.predict_logits(waves[:4]), fused[:4], atol=1e-4)
    # a file saved before finetune_top existed has a plain head: it loads with the option off
    config_plain = DigitEncoderConfig(model=str(folder), layers=[1, 2], epochs=1)
    plain_head, _ = train_digit_encoder_head(frames, list(frame.label), config_plain, progress=False)
    old_path = save_encoder_digit_model(EncoderDigitModel(adapter, plain_head, config_plain), tmp_path / "old.pt")
    meta = json.loads(old_path.with_suffix(".json").read_text())
    for key in ("finetune_top", "top_learning_rate", "top_context"):
        meta["config"].pop(key)
    old_path.with_suffix(".json").write_text(json.dumps(meta))
    old = load_digit_model(old_path, adapter=adapter)
    assert not old.config.finetune_top and not isinstance(old.head, DigitFinetunedHead)


def fuse(model, frames, prior):
    from lib.digits.whisper_digit_scores import fuse_digit_prior

    return fuse_digit_prior(model.head_logits(frames), prior, model.config.prior_weight)


def test_finetune_needs_the_blocks_input_and_output_among_the_layers(tiny_whisper):
    from lib.digits.encoder_digits import DigitEncoderConfig, train_digit_encoder_head
    from lib.digits.encoder_finetune import digit_top_block

    folder, adapter = tiny_whisper
    config = DigitEncoderConfig(model=str(folder), layers=[2], epochs=1, finetune_top=True)
    frames = [np.zeros((5, 1, 32), dtype=np.float32)] * 2
    with pytest.raises(ValueError, match="needs layers 1 .its input. and 2"):
        train_digit_encoder_head(frames, [0, 1], config, progress=False, top_block=digit_top_block(adapter))
