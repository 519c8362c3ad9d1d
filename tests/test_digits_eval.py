"""Held-out evaluation of digit models: eval folders, zero-shot Whisper, the pretrained-encoder model, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from lib.digits.digit_features import load_digit_waves
from tests.digit_eval_fixture import build_digit_eval_folder

# ---------------------------------------------------------------- labels and folders


@pytest.mark.parametrize(
    ("text", "loose", "digit"),
    [
        ("seven", False, 7),
        ("Seven", False, 7),
        ("7", False, 7),
        ("zero", False, 0),
        ("seventeen", False, None),
        ("take7", False, None),
        (" Seven.", True, 7),
        ("Two,", True, 2),
        ("to", True, 2),
        ("for", True, 4),
        ("oh", True, 0),
        ("number 9", True, 9),
        ("Lira.", True, None),
        ("", True, None),
    ],
)
def test_digit_words_and_numerals(text, loose, digit):
    from lib.digits.digit_folders import digit_label_from_text

    assert digit_label_from_text(text, loose=loose) == digit


def test_eval_folder_reads_words_numerals_prefixes_stereo_and_reports_bad_files(fsdd_manifest, tmp_path):
    from lib.digits.digit_folders import load_digit_eval_folder

    built = build_digit_eval_folder(fsdd_manifest, tmp_path / "elsewhere", per_digit=2)
    before = {p.name: p.read_bytes() for p in (tmp_path / "elsewhere").rglob("*") if p.is_file()}
    waves, manifest, skipped = load_digit_eval_folder(built["folder"], sample_rate=8000)
    assert len(waves) == len(manifest) == len(built["labels"]) == 20
    assert dict(zip(manifest.path, manifest.label)) == built["labels"]
    assert sorted(manifest.label.value_counts().tolist()) == [2] * 10
    assert {s["path"] for s in skipped} == {built["corrupt"], built["unlabelled"]}
    assert any("no digit label" in s["error"] for s in skipped)
    assert any("not a readable audio file" in s["error"] for s in skipped)
    # 16 kHz files come back at 8 kHz; the stereo file is the mean of its channels
    stereo = next(p for p in manifest.path if "seven" in p and sf.info(p).channels == 2)
    data, rate = sf.read(stereo, dtype="float32")
    wave = waves[list(manifest.path).index(stereo)]
    assert rate == 16000 and abs(len(wave) - len(data) / 2) <= 2
    assert np.isclose(np.abs(wave).max(), np.abs(data.mean(axis=1)).max(), rtol=0.1)
    # a capped, stratified subset and no file touched
    waves, manifest, skipped = load_digit_eval_folder(built["folder"], sample_rate=8000, max_clips=10)
    picked_corrupt = any(s["path"] == built["corrupt"] for s in skipped)
    assert len(manifest) + picked_corrupt == 10 and manifest.label.nunique() + picked_corrupt == 10
    assert before == {p.name: p.read_bytes() for p in (tmp_path / "elsewhere").rglob("*") if p.is_file()}


def test_eval_folder_reads_the_layouts_of_public_digit_corpora(tmp_path):
    """AudioMNIST (speaker folders 01..60, label in the file name) and Speech Commands (word folders,
    other words and background noise beside them): labels right, never a speaker number or a hash."""
    from lib.digits.digit_folders import DIGIT_WORDS, digit_eval_manifest

    tone = np.sin(2 * np.pi * 220 * np.arange(4000) / 8000).astype(np.float32) * 0.3
    audiomnist = tmp_path / "AudioMNIST" / "data"
    expected = {}
    for speaker in ("01", "07", "10", "60"):
        for digit in range(10):
            path = audiomnist / speaker / f"{digit}_{speaker}_{digit % 3}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, tone, 8000)
            expected[str(path)] = digit
    for root in (audiomnist, audiomnist.parent):  # data/ itself or the corpus folder above it
        manifest, unlabelled = digit_eval_manifest(root)
        assert dict(zip(manifest.path, manifest.label)) == expected and not unlabelled
        assert sorted(manifest.source.unique()) == ["01", "07", "10", "60"]  # per-speaker accuracy
        assert set(manifest.source_from) == {"folder"}
    flat = tmp_path / "flat"  # FSDD-style names in one folder: the speaker is the name's second part
    for digit, speaker in ((3, "ann"), (4, "bob"), (5, "ann")):
        flat.mkdir(exist_ok=True)
        sf.write(flat / f"{digit}_{speaker}_0.wav", tone, 8000)
    manifest, _ = digit_eval_manifest(flat)
    assert list(manifest.source) == ["ann", "bob", "ann"] and list(manifest.label) == [3, 4, 5]

    commands = tmp_path / "speech_commands"
    expected = {}
    for digit, word in enumerate(DIGIT_WORDS):
        path = commands / word / f"{digit:x}a7c2a8d_nohash_{digit}.wav"  # hashes may start with a digit
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone, 16000)
        expected[str(path)] = digit
    others = [commands / "yes" / "7d7b5b1a_nohash_0.wav", commands / "no" / "12345678_nohash_1.wav"]
    others.append(commands / "_background_noise_" / "white_noise.wav")
    for path in others:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone, 16000)
    manifest, unlabelled = digit_eval_manifest(commands)
    assert dict(zip(manifest.path, manifest.label)) == expected
    takes = tmp_path / "takes"  # names that give no speaker: take_01_3 (its first part is no digit)
    for digit, word in enumerate(DIGIT_WORDS[:3]):
        (takes / word).mkdir(parents=True)
        sf.write(takes / word / f"take_0{digit}_3.wav", tone, 8000)
    named, _ = digit_eval_manifest(takes)
    assert set(named.source_from) == {"folder"} and sorted(named.label) == [0, 1, 2]
    # the word folders are the labels: per-source accuracy is per speaker, from the file names
    assert list(manifest.source) == [Path(p).name.split("_nohash_")[0] for p in manifest.path]
    assert set(manifest.source_from) == {"file name"}
    assert sorted(u["path"] for u in unlabelled) == sorted(map(str, others))  # listed, not guessed


def test_eval_folder_errors_are_clear(tmp_path):
    from lib.digits.digit_folders import load_digit_eval_folder

    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_digit_eval_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no audio files"):
        load_digit_eval_folder(tmp_path / "empty")
    (tmp_path / "unnamed").mkdir()
    sf.write(tmp_path / "unnamed" / "a.wav", np.zeros(800, np.float32), 8000)
    with pytest.raises(ValueError, match="none of its 1 audio files has a digit label"):
        load_digit_eval_folder(tmp_path / "unnamed")


def test_eval_clips_again_at_16k_keep_their_order_and_rates_are_read_per_file(tmp_path):
    """The zero-shot row and the wideband prior load eval clips a second time at 16 kHz: same order, same clips."""
    from lib.core.audio import files_above_rate
    from lib.digits.digit_folders import load_digit_eval_folder, load_eval_clips_at

    rng = np.random.default_rng(0)
    for digit, rate in (("one", 8000), ("two", 16000), ("three", 44100), ("four", 16000)):
        (tmp_path / digit).mkdir()
        sf.write(tmp_path / digit / "a.wav", 0.1 * rng.standard_normal(rate // 2).astype(np.float32), rate)
    waves, manifest, _ = load_digit_eval_folder(tmp_path, sample_rate=8000)
    rates = [sf.info(p).samplerate for p in manifest.path]
    assert files_above_rate(manifest.path, 8000) == [i for i, r in enumerate(rates) if r > 8000]
    assert files_above_rate(manifest.path, 16000) == [rates.index(44100)]
    rows = [3, 0, 2]
    again = load_eval_clips_at(manifest, rows, 16000)
    assert [len(w) for w in again] == [8000] * 3  # half a second each, at 16 kHz, in the order asked
    np.testing.assert_allclose(
        again[1], load_eval_clips_at(manifest, [0], 16000)[0]
    )  # the same clip whichever rows come with it
    Path(manifest.path[2]).write_bytes(b"")  # a clip changed during the run: reported, None in place, never shifted
    again_now = load_eval_clips_at(manifest, rows, 16000)
    assert again_now[2] is None and [len(w) for w in again_now[:2]] == [8000, 8000]
    np.testing.assert_allclose(again_now[1], again[1])


# ---------------------------------------------------------------- augmentation


def test_augmented_copies_are_reproducible_and_realistic(fsdd_manifest):
    from lib.digits.digit_augment import (
        DigitAugmentConfig,
        digit_augmented_copies,
        digit_coloured_noise,
        digit_speed_perturb,
        digit_synthetic_rir,
    )

    frame = fsdd_manifest.iloc[:4]
    waves, frame, _ = load_digit_waves(frame, 8000, progress=False)
    first = digit_augmented_copies(waves, 8000, copies=2, seed=3, keys=frame.path)
    again = digit_augmented_copies(waves[::-1], 8000, copies=2, seed=3, keys=frame.path[::-1])
    assert all(np.array_equal(a, b) for a, b in zip(first[0], again[-1]))  # keyed by clip, not position
    other = digit_augmented_copies(waves, 8000, copies=2, seed=4, keys=frame.path)
    assert not np.array_equal(first[0][0], other[0][0])
    for wave, copies in zip(waves, first):
        assert len(copies) == 2 and all(np.isfinite(c).all() and np.abs(c).max() <= 0.99 for c in copies)
        assert not any(np.array_equal(c, wave) for c in copies)
    assert len(digit_speed_perturb(waves[0], 8000, 1.25)) == pytest.approx(len(waves[0]) / 1.25, abs=3)
    rng = np.random.default_rng(0)
    rir = digit_synthetic_rir(8000, 0.4, rng)
    assert np.isclose(np.sum(rir**2), 1.0) and np.argmax(np.abs(rir)) == 0
    tail = np.abs(rir[int(0.3 * 8000) :]).mean() / np.abs(rir[1 : int(0.05 * 8000)]).mean()
    assert tail < 0.1  # decays about 60 dB over RT60
    for colour in ("white", "pink", "brown"):
        noise = digit_coloured_noise(8000, colour, rng)
        assert np.isclose(np.sqrt(np.mean(noise**2)), 1.0, rtol=1e-3)
    low = np.abs(np.fft.rfft(digit_coloured_noise(8000, "pink", rng)))[1:400].mean()
    high = np.abs(np.fft.rfft(digit_coloured_noise(8000, "pink", rng)))[3000:4000].mean()
    assert low > 3 * high
    quiet = DigitAugmentConfig(speed_prob=0, noise_prob=0, rir_prob=0, gain_db=0, pad_seconds=(0.0, 0.0), eq_prob=0)
    assert np.allclose(digit_augmented_copies(waves[:1], 8000, 1, config=quiet)[0][0], waves[0])


def test_microphone_colouring_and_real_background_noise(fsdd_manifest, librispeech_dir):
    from lib.core.datasets import load_librispeech
    from lib.digits.digit_augment import (
        DigitAugmentConfig,
        digit_augmented_copies,
        digit_background_noise,
        digit_microphone_colouring,
    )

    waves, frame, _ = load_digit_waves(fsdd_manifest.iloc[:3], 8000, progress=False)
    rng = np.random.default_rng(0)
    white = rng.standard_normal(16000).astype(np.float32)
    coloured = digit_microphone_colouring(white, 8000, rng)
    spectrum = np.abs(np.fft.rfft(coloured)) / np.abs(np.fft.rfft(white))
    hz = np.fft.rfftfreq(16000, 1 / 8000)
    assert np.isfinite(coloured).all() and len(coloured) == len(white)
    assert spectrum[hz < 40].mean() < 0.3 * spectrum[(hz > 500) & (hz < 2000)].mean()  # high-pass: no rumble
    assert spectrum[hz > 3900].mean() < spectrum[(hz > 500) & (hz < 2000)].mean()  # low-pass: band-limited
    speech, _, _ = load_digit_waves(load_librispeech(librispeech_dir, download=False).head(2), 8000, progress=False)
    stretch = digit_background_noise(6000, speech, rng)
    assert len(stretch) == 6000 and np.isclose(np.sqrt(np.mean(stretch**2)), 1.0, rtol=1e-3)
    # noise always on and always from the background clips (here a 440 Hz tone, to be recognisable)
    only_noise = DigitAugmentConfig(
        speed_prob=0, rir_prob=0, eq_prob=0, gain_db=0, pad_seconds=(0.0, 0.0), noise_prob=1, background_prob=1
    )
    tone = [np.sin(2 * np.pi * 440 * np.arange(8000) / 8000).astype(np.float32)]
    copy = digit_augmented_copies(waves[:1], 8000, 1, config=only_noise, background=tone)[0][0]
    residual = copy - waves[0]
    assert len(copy) == len(waves[0]) and np.abs(residual).max() > 0
    power = np.abs(np.fft.rfft(residual)) ** 2
    peak = np.fft.rfftfreq(len(residual), 1 / 8000)[np.argmax(power)]
    assert abs(peak - 440) < 5 and power.max() > 0.3 * power.sum()


def test_onset_crops_keep_the_start_of_the_word_and_leave_other_copies_alone(fsdd_manifest):
    import librosa

    from lib.digits.digit_augment import DigitAugmentConfig, digit_augmented_copies, digit_onset_crop

    waves, frame, _ = load_digit_waves(fsdd_manifest.iloc[:6], 8000, progress=False)
    wave = np.concatenate([np.zeros(2000, np.float32), waves[0], np.zeros(1000, np.float32)])
    _, (start, end) = librosa.effects.trim(wave, top_db=35, frame_length=256, hop_length=64)
    crop = digit_onset_crop(wave, 8000, 0.2)
    assert len(crop) == min(1600, end - start)  # 0.2 s from the onset, the leading silence dropped
    np.testing.assert_allclose(crop[:-80], wave[start : start + len(crop) - 80])
    assert abs(crop[-1]) < 1e-6 < np.abs(crop).max()  # faded out, not cut with a click
    assert len(digit_onset_crop(wave, 8000, 10.0)) == end - start  # a word shorter than asked: kept whole
    # no colouring at all: a cropped copy is exactly the crop; with crop_prob 0 the copies do not change
    quiet = dict(speed_prob=0, noise_prob=0, rir_prob=0, gain_db=0, pad_seconds=(0.0, 0.0), eq_prob=0)
    cropped = digit_augmented_copies(waves, 8000, 2, config=DigitAugmentConfig(crop_prob=1.0, **quiet), keys=frame.path)
    for original, copies in zip(waves, cropped):
        assert all(len(c) <= min(int(0.45 * 8000), len(original)) for c in copies)
    plain = digit_augmented_copies(waves, 8000, 3, seed=5, keys=frame.path)
    some = digit_augmented_copies(waves, 8000, 3, seed=5, keys=frame.path, config=DigitAugmentConfig(crop_prob=0.5))
    same = [np.array_equal(a, b) for p, s in zip(plain, some) for a, b in zip(p, s)]
    assert 0 < sum(same) < len(same)  # about half cropped; the others are exactly the uncropped copies
    for p, s in zip(plain, some):
        for a, b in zip(p, s):
            assert np.array_equal(a, b) or len(b) <= len(a)
    assert DigitAugmentConfig.from_dict({"speed_prob": 0.5}).crop_prob == 0.0  # older saved configs: no crops
    assert DigitAugmentConfig.from_dict(DigitAugmentConfig(crop_seconds=(0.1, 0.3)).to_dict()).crop_seconds == (
        0.1,
        0.3,
    )


@pytest.mark.parametrize("extra", [{"crop_prob": 0.5}, {"crop_prob": 0.3, "voice_prob": 0.5}])
def test_crops_and_revoiced_copies_reuse_the_plain_copies_already_made(fsdd_manifest, extra):
    from lib.digits.digit_augment import DigitAugmentConfig, digit_augmented_copies

    waves, frame, _ = load_digit_waves(fsdd_manifest.iloc[:6], 8000, progress=False)
    plain = digit_augmented_copies(waves, 8000, 3, seed=5, keys=frame.path)
    config = DigitAugmentConfig(**extra)
    fresh = digit_augmented_copies(waves, 8000, 3, seed=5, keys=frame.path, config=config)
    reused = digit_augmented_copies(waves, 8000, 3, seed=5, keys=frame.path, config=config, plain=plain)
    changed = 0
    for p, f, r in zip(plain, fresh, reused):
        for a, b, c in zip(p, f, r):
            assert np.array_equal(b, c)  # the same copies as drawing them all again
            assert (c is a) == np.array_equal(a, b)  # a plain copy is the one given, not a new draw
            changed += not np.array_equal(a, b)
    assert 0 < changed < 18
    with pytest.raises(ValueError, match="plain has 5 entries"):
        digit_augmented_copies(waves, 8000, 3, config=config, plain=plain[:5])


def _median_f0(wave, sample_rate=8000):
    import librosa

    f0, voiced, _ = librosa.pyin(wave, fmin=60, fmax=600, sr=sample_rate, frame_length=512)
    return float(np.median(f0[voiced]))


def _loud_spectrum(wave):
    """Mean magnitude spectrum (129 bins of 31 Hz at 8 kHz) of the word's loud frames."""
    import librosa

    mag = np.abs(librosa.stft(wave, n_fft=256, hop_length=64))
    energy = mag.sum(axis=0)
    return mag[:, energy > 0.1 * energy.max()].mean(axis=1)


def _band_levels(wave):
    """The loud frames' mean spectrum in 16 bands of 250 Hz, dB."""
    return 20 * np.log10(_loud_spectrum(wave)[:128].reshape(16, 8).mean(axis=1) + 1e-9)


def test_revoicing_moves_pitch_and_formants_by_their_own_factors(fsdd_manifest):
    from lib.digits.digit_augment import DigitAugmentConfig, digit_augmented_copies, digit_voice_shift

    frame = fsdd_manifest[fsdd_manifest.path.str.contains("/3_jackson_1.wav")]
    (wave,), frame, _ = load_digit_waves(frame, 8000, progress=False)
    f0 = _median_f0(wave)
    assert 80 < f0 < 170  # a man's voice
    pitch_only = digit_voice_shift(wave, 8000, 1.8, 1.0)
    assert len(pitch_only) == len(wave)  # same duration
    assert abs(np.sqrt(np.mean(pitch_only**2)) / np.sqrt(np.mean(wave**2)) - 1) < 0.01  # same level
    assert abs(_median_f0(pitch_only) / f0 - 1.8) < 0.15  # F0 up by the pitch factor
    # ... while the envelope stays where it was: a plain pitch shift moves it up with the pitch
    import librosa

    moved = librosa.effects.pitch_shift(wave, sr=8000, n_steps=12 * np.log2(1.8))
    levels, kept, shifted = _band_levels(wave), _band_levels(pitch_only), _band_levels(moved)
    assert (
        np.abs((kept - kept.mean()) - (levels - levels.mean())).mean()
        < 0.5 * np.abs((shifted - shifted.mean()) - (levels - levels.mean())).mean()
    )
    formants_only = digit_voice_shift(wave, 8000, 1.0, 1.2)
    assert abs(_median_f0(formants_only) / f0 - 1) < 0.08  # the pitch stays

    def best_stretch(a, b):  # the factor that best maps a's mean log envelope (loud frames) onto b's
        from scipy.ndimage import uniform_filter1d

        # smoothed over ~280 Hz: the envelope, not the harmonics
        spectra = [uniform_filter1d(np.log(_loud_spectrum(w) + 1e-9), 9) for w in (a, b)]
        bins = np.arange(len(spectra[0]))
        factors = np.arange(0.9, 1.5, 0.02)
        fits = [np.corrcoef(np.interp(bins[10:100] / f, bins, spectra[0]), spectra[1][10:100])[0, 1] for f in factors]
        return float(factors[int(np.argmax(fits))])

    assert best_stretch(wave, wave) == pytest.approx(1.0, abs=0.011)
    assert 1.12 <= best_stretch(wave, formants_only) <= 1.28  # the envelope stretched by about 1.2
    assert np.array_equal(digit_voice_shift(wave, 8000, 1.0, 1.0), wave)
    assert DigitAugmentConfig.from_dict({"crop_prob": 0.3}).voice_prob == 0.0  # older saved configs: no re-voicing
    quiet = dict(speed_prob=0, noise_prob=0, rir_prob=0, gain_db=0, pad_seconds=(0.0, 0.0), eq_prob=0)
    (copies,) = digit_augmented_copies([wave], 8000, 4, config=DigitAugmentConfig(voice_prob=1.0, **quiet))
    for copy in copies:  # every copy re-voiced within the configured range
        assert 1.2 < _median_f0(copy) / f0 < 2.15


def test_encoder_input_keeps_the_weak_fricative_at_a_word_edge():
    from lib.digits.encoder_digits import DigitEncoderConfig, digit_encoder_input

    sr, rng = 8000, np.random.default_rng(0)
    vowel = 0.5 * np.sin(2 * np.pi * 300 * np.arange(int(0.25 * sr)) / sr)
    fricative = rng.standard_normal(int(0.12 * sr)) * np.sqrt(np.mean(vowel**2)) * 10 ** (-40 / 20)  # 40 dB down
    silence = rng.standard_normal(int(0.2 * sr)) * 1e-5
    wave = np.concatenate([silence, vowel, fricative, silence]).astype(np.float32)
    config = DigitEncoderConfig(input_sample_rate=sr)
    assert config.trim_db == 50.0
    _, keep = digit_encoder_input(wave, config)
    _, keep_35 = digit_encoder_input(wave, DigitEncoderConfig(input_sample_rate=sr, trim_db=35.0))
    _, keep_all = digit_encoder_input(wave, DigitEncoderConfig(input_sample_rate=sr, trim_db=None))
    assert abs(keep - 0.37 * 50) <= 2  # vowel + fricative, the silence around them dropped
    assert abs(keep_35 - 0.25 * 50) <= 2  # a 35 dB trim cuts the fricative off
    assert keep_all == int(np.ceil(len(wave) / sr * 50))
    # a saved model keeps the trim it was trained with
    assert DigitEncoderConfig.from_dict({**config.to_dict(), "trim_db": 35.0}).trim_db == 35.0


# ---------------------------------------------------------------- zero-shot Whisper


def test_zero_shot_whisper_recognises_real_digits(fsdd_manifest):
    from lib.digits.zero_shot_digits import WhisperZeroShotDigits

    frame = fsdd_manifest[fsdd_manifest.split == "test"].groupby("label").head(1)  # one clip of each digit
    waves, frame, _ = load_digit_waves(frame, 8000, progress=False)
    recogniser = WhisperZeroShotDigits(sample_rate=8000, compute_type="int8", cpu_threads=1)
    predictions, texts = recogniser.predict_with_text(waves)
    hits = int(np.sum(predictions == frame.label.to_numpy()))
    assert hits >= 7, list(zip(frame.label, texts))  # about 0.94 per clip here; chance is 0.1
    words = WhisperZeroShotDigits(
        sample_rate=8000,
        labels=["eight", "five", "four", "nine", "one", "seven", "six", "three", "two", "zero"],
        compute_type="int8",
    )
    assert words.label_of(" Seven.") == "seven" and words.label_of("hello") is None
    assert recogniser.calls == 10 and recogniser.seconds > 0


# ---------------------------------------------------------------- pretrained encoder


@pytest.fixture(scope="module")
def bundled_encoder():
    from lib.digits.encoder_digits import load_digit_encoder_adapter

    return load_digit_encoder_adapter("bundled/whisper-tiny.en", "clip")


def test_encoder_model_learns_digits_of_an_unseen_speaker(bundled_encoder, fsdd_manifest, tmp_path):
    """Real Whisper tiny.en frames + the head: trained on 3 speakers, tested on another one."""
    from lib.digits.encoder_digits import (
        DigitEncoderConfig,
        EncoderDigitModel,
        digit_encoder_features,
        train_digit_encoder_head,
    )
    from lib.digits.model_files import ModelFileError, load_digit_model, save_encoder_digit_model

    train = fsdd_manifest[fsdd_manifest.speaker.isin(["george", "jackson", "lucas"])].groupby(["label", "speaker"])
    test = fsdd_manifest[fsdd_manifest.speaker == "nicolas"].groupby("label").head(2)
    train_waves, train, _ = load_digit_waves(train.head(2), 8000, progress=False)
    test_waves, test, _ = load_digit_waves(test, 8000, progress=False)
    config = DigitEncoderConfig(layers=[3, 4], epochs=30, pooling="attention")
    cache = tmp_path / "cache"
    features = digit_encoder_features(bundled_encoder, train_waves, config, cache_dir=cache, progress=False)
    assert features["pooled"].shape == (60, 6, 768) and features["frames"][0].shape[1:] == (2, 384)
    assert features["cache"]["misses"] == 60
    head, history = train_digit_encoder_head(features["frames"], list(train.label), config, progress=False)
    model = EncoderDigitModel(bundled_encoder, head, config)
    accuracy = float(np.mean(model.predict(test_waves) == test.label.to_numpy()))
    assert accuracy >= 0.75, accuracy  # 6 training clips per digit; chance is 0.1
    assert history["train_accuracy"][-1] > 0.9 and set(history["layer_weights"]) == {"3", "4"}
    # cached frames equal recomputed ones; a corrupt cache file is named, rebuilt, and gives the same frames
    again = digit_encoder_features(bundled_encoder, train_waves[:3], config, cache_dir=cache, progress=False)
    assert again["cache"]["hits"] == 3
    files = sorted(cache.rglob("*.npz"))
    files[0].write_bytes(b"PK\x03\x04 truncated zip")
    rebuilt = digit_encoder_features(bundled_encoder, train_waves, config, cache_dir=cache, progress=False)
    assert rebuilt["cache"]["rebuilt"] == 1 and rebuilt["cache"]["misses"] == 1
    for a, b in zip(rebuilt["frames"], features["frames"]):
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=1e-2)
    # saved and reloaded: the same predictions; a different encoder is refused
    path = save_encoder_digit_model(model, tmp_path / "encoder.pt")
    reloaded = load_digit_model(path, adapter=bundled_encoder)
    np.testing.assert_allclose(reloaded.predict_logits(test_waves[:4]), model.predict_logits(test_waves[:4]), atol=1e-4)
    from lib.core.speech_models import load_speech_model

    random_encoder = load_speech_model("bundled/whisper-tiny.en", whisper_mode="clip", weights="random")
    with pytest.raises(ModelFileError, match="mismatched: the head was trained on encoder weights"):
        load_digit_model(path, adapter=random_encoder)


def test_head_trainer_concat_uneven_copies_and_batched_logits():
    """The vectorised head trainer on synthetic frames: concat/mix, clips with and without copies, order kept."""
    import torch

    from lib.digits.encoder_digits import (
        DigitEncoderConfig,
        DigitFrameBank,
        digit_head_logits,
        train_digit_encoder_head,
    )

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 2, 8)).astype(np.float32)

    def clip(label, length):
        return (centres[label][None] + 0.3 * rng.standard_normal((length, 2, 8))).astype(np.float16)

    labels = [i % 3 for i in range(60)]
    frames = [clip(y, int(rng.integers(3, 30))) for y in labels]
    variants = [[clip(y, 12)] * (i % 3) for i, y in enumerate(labels)]  # 0, 1 or 2 copies per clip
    bank = DigitFrameBank(frames)
    x, mask = bank.batch(torch.tensor([4, 0]))
    assert x.shape == (2, max(len(frames[4]), len(frames[0])), 2, 8) and mask.sum().item() == len(frames[4]) + len(
        frames[0]
    )
    np.testing.assert_allclose(x[1, : len(frames[0])].numpy(), frames[0].astype(np.float32))
    assert not x[1, len(frames[0]) :].any()
    for combine in ("mix", "concat"):
        config = DigitEncoderConfig(
            layers=[3, 4], labels=[0, 1, 2], epochs=25, batch_size=8, combine=combine, hidden=32, dropout=0.1
        )
        head, history = train_digit_encoder_head(frames, labels, config, variants=variants, progress=False)
        assert history["n_items"] == 60 + 60 and history["train_accuracy"][-1] > 0.9, history
        logits = digit_head_logits(head, frames)
        assert logits.shape == (60, 3) and np.mean(logits.argmax(1) == np.array(labels)) > 0.95
        one = digit_head_logits(head, [frames[7]])  # batching by length keeps each clip's own logits
        np.testing.assert_allclose(one[0], logits[7], atol=1e-4)
    with pytest.raises(ValueError, match="combine must be one of"):
        DigitEncoderConfig(combine="sum")
    with pytest.raises(ValueError, match="variants has 2 entries"):
        train_digit_encoder_head(frames, labels, config, variants=variants[:2], progress=False)


def test_encoder_layer_curve_scores_every_layer(bundled_encoder, fsdd_manifest):
    from lib.digits.encoder_digits import DigitEncoderConfig, digit_encoder_features, digit_encoder_layer_curve

    frame = fsdd_manifest[fsdd_manifest.speaker.isin(["theo", "yweweler", "jackson"])].groupby(["label", "speaker"])
    waves, frame, _ = load_digit_waves(frame.head(1), 8000, progress=False)
    features = digit_encoder_features(bundled_encoder, waves, DigitEncoderConfig(layers=[3]), progress=False)
    curve = digit_encoder_layer_curve(features["pooled"], frame.label, frame.speaker, features["layer_names"])
    assert list(curve) == ["0", "1", "2", "3", "4", "conv"]
    for entry in curve.values():
        assert 0.0 <= entry["min_accuracy"] <= entry["mean_accuracy"] <= 1.0 and len(entry["per_speaker_accuracy"]) == 3
    assert max(curve[k]["mean_accuracy"] for k in ("3", "4")) > curve["conv"]["mean_accuracy"]


def test_leave_speakers_out_in_groups_when_there_are_many():
    from lib.digits.classifier_eval import leave_one_speaker_out

    manifest = pd.DataFrame({"speaker": np.repeat([f"s{i:02d}" for i in range(25)], 4), "label": np.tile([0, 1], 50)})
    seen = []

    def fit_predict(train_idx, test_idx):
        held = set(manifest.speaker.iloc[test_idx])
        assert held.isdisjoint(manifest.speaker.iloc[train_idx])  # never trained on a held-out speaker
        seen.append(held)
        return np.where(manifest.speaker.iloc[test_idx] == "s03", 1 - manifest.label.iloc[test_idx], 0)

    result = leave_one_speaker_out(fit_predict, manifest, progress=False, max_folds=10)
    assert result["folds"] == 10 == len(seen) and set().union(*seen) == set(manifest.speaker)
    assert [set(f) for f in result["fold_speakers"]] == seen  # the groups, for the prior's per-fold weights
    assert sorted(len(h) for h in seen) == [2] * 5 + [3] * 5  # 25 speakers dealt into 10 folds
    assert result["per_speaker_accuracy"]["s03"] == 0.0 and result["per_speaker_accuracy"]["s04"] == 0.5
    assert leave_one_speaker_out(fit_predict, manifest.iloc[:20], progress=False, max_folds=10)["folds"] == 5


def test_loso_plot_and_scores_handle_empty_and_missing_answers():
    from lib.core.accuracy import accuracy_interval
    from lib.digits.classifier_eval import held_out_scores, plot_leave_one_speaker_out

    assert plot_leave_one_speaker_out({}) is None and plot_leave_one_speaker_out({"svm": {}}) is None
    figure = plot_leave_one_speaker_out({"svm": {"a": 0.9, "b": 0.8}, "zero-shot": {"a": 0.95, "b": 0.97}})
    assert "mean 0.850, min 0.800" in figure.axes[0].get_legend().get_texts()[0].get_text()
    # with the clips behind each bar: Wilson intervals, wide for 20 clips, narrow for 500
    figure = plot_leave_one_speaker_out(
        {"svm": {"a": 0.9, "b": 0.8}, "zero-shot": {"a": 0.95, "b": 0.9}}, clips={"svm": 500, "zero-shot": {"a": 20}}
    )
    bars = [c for c in figure.axes[0].containers if getattr(c, "errorbar", None) is not None]
    spans = [[np.ptp(seg[:, 1]) for seg in c.errorbar.lines[2][0].get_segments()] for c in bars]
    assert spans[0][0] == pytest.approx(np.subtract(*accuracy_interval(450, 500)[::-1]))
    assert spans[1][0] > 4 * spans[0][0] and spans[1][1] == 0.0  # speaker b: no clip count given, no interval
    scores = held_out_scores([1, 2, 3, 4], [1, None, 3, 5], groups=["x", "x", "y", "y"])
    assert (
        scores["accuracy"] == 0.5 and scores["no_answer"] == 1 and scores["per_group_accuracy"] == {"x": 0.5, "y": 0.5}
    )
    low, high = accuracy_interval(95, 100)
    assert 0.88 < low < 0.95 < high < 0.99


def test_digits_named_in_a_transcript():
    from lib.digits.digit_folders import digit_label_from_text, digits_named_in

    assert digits_named_in("Two, three, two, three, four.") == [2, 3, 2, 3, 4]
    assert digits_named_in(" Seven.") == [7] and digits_named_in("number 7") == [7]
    assert digits_named_in("I went to the shop for eight") == [8]  # homophones are not digits named outright
    assert digits_named_in(None) == [] and digits_named_in("") == []
    assert digit_label_from_text("Two, three, two.", loose=True) == 2  # what the zero-shot row scores
