"""Live digit inference without a microphone: VAD, streaming a recording, push-to-talk, mic errors."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import soundfile as sf

from lib.digits.digit_features import DigitFeatureConfig, digit_feature_vectors, load_digit_waves
from lib.digits.live_digits import (
    EnergyVad,
    LiveAudioUnavailable,
    StreamingDigitRecognizer,
    VadConfig,
    check_microphone,
    digit_frame_peak_rms,
    digit_test_stream,
    live_digit_widget,
    score_digit_stream,
    stream_audio_file,
    vad_segments,
)

SR = 8000
STREAM_DIGITS = [3, 8, 0, 5, 1, 9]


def _noise(seconds, rng, level_db=-65.0):
    return (rng.normal(0, 10 ** (level_db / 20), int(seconds * SR))).astype(np.float32)


@pytest.fixture(scope="module")
def svm_model(fsdd_manifest):
    """A real SVM digit model on 30 training clips per digit and speaker-balanced picks (fast)."""
    from lib.digits.digit_models import SklearnDigitModel, make_digit_pipeline

    train = fsdd_manifest[fsdd_manifest.split == "train"].groupby(["label", "speaker"], group_keys=False).head(8)
    waves, train, _ = load_digit_waves(train, SR, progress=False)
    config = DigitFeatureConfig()
    pipeline = make_digit_pipeline(pca_components=128).fit(digit_feature_vectors(waves, config), train.label)
    return SklearnDigitModel(pipeline, config)


@pytest.fixture(scope="module")
def recording(fsdd_manifest, svm_model, tmp_path_factory):
    """A wav of real test-set clips of STREAM_DIGITS with pauses; the clips the model gets right alone."""
    rng = np.random.default_rng(0)
    test = fsdd_manifest[(fsdd_manifest.split == "test")]
    pieces, spans, cursor = [_noise(0.4, rng)], [], 0.4
    for digit in STREAM_DIGITS:
        candidates = test[test.label == digit]
        # take the first clip (in a fixed order) that the model classifies correctly on its own:
        # this test is about streaming, not about the model's test accuracy
        for path in candidates.sort_values(["speaker", "index"]).path:
            waves, _, _ = load_digit_waves(candidates[candidates.path == path], SR, progress=False)
            wave = waves[0]
            if np.abs(wave).max() > 0.1 and svm_model.predict([wave])[0] == digit:
                break
        wave = wave * (0.1 / digit_frame_peak_rms(wave, int(0.02 * SR)))  # a microphone level: loudest 20 ms at RMS 0.1
        pieces += [wave, _noise(0.7, rng)]
        spans.append((cursor, cursor + len(wave) / SR))
        cursor += len(wave) / SR + 0.7
    path = tmp_path_factory.mktemp("stream") / "digits.wav"
    sf.write(path, np.concatenate(pieces), SR, subtype="PCM_16")
    return path, spans


def test_vad_finds_each_digit_between_known_boundaries(recording):
    path, spans = recording
    wave, _ = sf.read(path, dtype="float32")
    segments = vad_segments(wave, SR, VadConfig())
    assert len(segments) == len(spans), (segments, spans)
    for (a, b), (start, end) in zip(segments, spans):
        assert start - 0.15 <= a < end and start < b <= end + 0.35, ((a, b), (start, end))
        assert (b - a) >= 0.1
    # chunk size does not change the segmentation
    assert vad_segments(wave, SR, VadConfig(), chunk_ms=37) == segments
    # a 40 ms click makes a segment shorter than min_speech_ms (pre-roll + click + hangover): dropped
    blip = np.concatenate([np.zeros(4000), 0.3 * np.sin(np.arange(320) / 3.0), np.zeros(4000)]).astype(np.float32)
    assert vad_segments(blip, SR, VadConfig()) == []
    assert len(vad_segments(blip, SR, VadConfig(min_speech_ms=100))) == 1
    # the seed's defaults: RMS 0.02, 400 ms, hangover 175 ms; a word quieter than the threshold is not speech
    config = VadConfig()
    assert config.threshold_db == pytest.approx(20 * np.log10(0.02)) and config.hangover_ms == 175
    assert vad_segments(wave * 0.05, SR, config) == []
    assert vad_segments(np.zeros(SR, dtype=np.float32), SR) == []
    assert len(EnergyVad(SR).frame_db) == 0


def test_streamed_recording_emits_the_digits_in_order(recording, svm_model):
    path, spans = recording
    emitted = []
    recognizer = StreamingDigitRecognizer(svm_model, confidence_threshold=0.0, on_event=emitted.append)
    events = stream_audio_file(path, recognizer, chunk_ms=100)
    assert recognizer.digits == STREAM_DIGITS
    assert [e["digit"] for e in emitted] == STREAM_DIGITS
    for event, (start, end) in zip(events, spans):
        assert event["emitted"] and not event["forced"]
        assert start - 0.15 <= event["start_s"] < end
        assert 0.0 <= event["confidence"] <= 1.0


def test_recent_audio_keeps_the_last_seconds_by_stream_index():
    from lib.digits.live_digits import RecentAudio

    recent = RecentAudio(rate=10, seconds=2.0)  # keeps 20 samples
    stream = np.arange(35, dtype=np.float32)
    for i in range(0, 35, 7):
        recent.append(stream[i : i + 7])
    assert recent.first == 15 and len(recent.audio) == 20
    np.testing.assert_array_equal(recent.span(20, 30), stream[20:30])  # stream indices, not buffer ones
    assert recent.span(10, 20) is None  # partly dropped: no half span
    assert recent.span(30, 36) is not None and recent.span(30, 40) is None  # rounding slack of 2, not more


class _WidebandSpy:
    """A digit model whose Whisper prior could hear 16 kHz: it answers with the SVM and records what it is given."""

    prior_hears_wideband = True

    def __init__(self, model):
        self.model, self.labels, self.sample_rate, self.calls = model, model.labels, model.sample_rate, []

    def predict_proba(self, waves, temperature=1.0, groups=None, wideband=None):
        self.calls.append((list(waves), wideband))
        return self.model.predict_proba(waves, temperature=temperature)


@pytest.mark.parametrize("mode", ["toggle", "push_to_talk"])
def test_a_16k_stream_lets_the_prior_hear_each_segment_at_16k(recording, svm_model, tmp_path, mode):
    """Audio recorded above the model's rate is fed at 16 kHz too; a segment's 16 kHz audio is the same span."""
    import librosa

    from lib.digits.live_digits import MicrophoneDigitStream

    path, spans = recording
    wave8, _ = sf.read(path, dtype="float32")
    wave16 = librosa.resample(wave8, orig_sr=SR, target_sr=16000)
    sf.write(tmp_path / "digits16.wav", wave16, 16000)
    model = _WidebandSpy(svm_model)
    recognizer = StreamingDigitRecognizer(model, confidence_threshold=0.0, mode=mode)
    if mode == "push_to_talk":  # one press over the third digit
        start, end = spans[2]
        wide = sf.read(tmp_path / "digits16.wav", dtype="float32")[0]
        eight = librosa.resample(wide, orig_sr=16000, target_sr=SR)
        a, b = int((start - 0.2) * SR), int((end + 0.2) * SR)
        recognizer.feed(eight[:a], wide[: 2 * a])
        recognizer.press()
        recognizer.feed(eight[a:b], wide[2 * a : 2 * b])
        events = recognizer.release()
    else:
        events = stream_audio_file(tmp_path / "digits16.wav", recognizer, chunk_ms=100)
    assert recognizer.hears_wideband and events and all(e["wideband"] for e in events)
    reference = sf.read(tmp_path / "digits16.wav", dtype="float32")[0]
    assert len(model.calls) == len(events)  # one classification per segment
    for ((audio,), (wide,)), event in zip(model.calls, events):
        assert abs(len(wide) - 2 * len(audio)) <= 2  # the same span, twice the samples
        a = round(event["start_s"] * 16000)
        np.testing.assert_allclose(wide, reference[a : a + len(wide)], atol=1e-4)  # the 16 kHz file's own samples
    if mode == "toggle":
        assert [e["digit"] for e in events] == STREAM_DIGITS
    # the same stream at the model's rate, or with wideband=False: nothing at 16 kHz
    for recognizer in (
        StreamingDigitRecognizer(model, confidence_threshold=0.0),
        StreamingDigitRecognizer(model, confidence_threshold=0.0, wideband=False),
    ):
        model.calls.clear()
        stream_audio_file(path if recognizer.hears_wideband else tmp_path / "digits16.wav", recognizer)
        assert model.calls and all(w is None for _, w in model.calls)
    assert not StreamingDigitRecognizer(svm_model).hears_wideband  # a model without the prior
    # the microphone path: 48 kHz blocks become 8 kHz for the VAD and the head, 16 kHz for the prior
    recognizer = StreamingDigitRecognizer(model, confidence_threshold=0.0)
    mic = MicrophoneDigitStream(recognizer)
    mic.input_rate = 48000
    block = np.zeros(4800, np.float32)
    for _ in range(3):
        mic._queue.put(block)
    mic._run()
    assert recognizer._samples_seen == 3 * 800 and len(recognizer._wide.audio) == 3 * 1600


def test_confidence_threshold_force_emit_and_temperature(recording, svm_model):
    path, _ = recording
    strict = StreamingDigitRecognizer(svm_model, confidence_threshold=1.01, force_emit=False)
    events = stream_audio_file(path, strict)
    assert len(events) == len(STREAM_DIGITS) and not any(e["emitted"] for e in events)
    assert strict.digits == []
    forced = StreamingDigitRecognizer(svm_model, confidence_threshold=1.01, force_emit=True)
    stream_audio_file(path, forced)
    assert forced.digits == STREAM_DIGITS and all(e["forced"] for e in forced.events)
    hot = StreamingDigitRecognizer(svm_model, confidence_threshold=0.0, temperature=100.0)
    cold = StreamingDigitRecognizer(svm_model, confidence_threshold=0.0, temperature=0.5)
    stream_audio_file(path, hot)
    stream_audio_file(path, cold)
    assert hot.digits == cold.digits == STREAM_DIGITS
    assert max(e["confidence"] for e in hot.events) < min(e["confidence"] for e in cold.events)
    with pytest.raises(ValueError, match="temperature"):
        StreamingDigitRecognizer(svm_model, temperature=0)


def test_push_to_talk_classifies_the_pressed_span(recording, svm_model):
    path, spans = recording
    wave, _ = sf.read(path, dtype="float32")
    recognizer = StreamingDigitRecognizer(svm_model, mode="push_to_talk", confidence_threshold=0.0)
    chunk = 800
    start, end = spans[1]
    a, b = int((start - 0.2) * SR) // chunk * chunk, int((end + 0.2) * SR)
    recognizer.feed(wave[:a])  # not pressed: ignored
    recognizer.press()
    for i in range(a, b, chunk):
        assert recognizer.feed(wave[i : i + chunk]) == []
    events = recognizer.release()
    assert [e["digit"] for e in events] == [STREAM_DIGITS[1]]
    assert events[0]["start_s"] == pytest.approx(start, abs=0.15)
    assert recognizer.release() == []


def test_microphone_problems_are_one_clear_message(monkeypatch, svm_model):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # not installed
    with pytest.raises(LiveAudioUnavailable, match="sounddevice is not installed"):
        check_microphone()

    fake = types.ModuleType("sounddevice")

    def no_device(device=None, kind=None):
        raise ValueError("No input device matching")

    fake.query_devices = no_device
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    with pytest.raises(LiveAudioUnavailable, match="no audio input device"):
        check_microphone()
    panel = live_digit_widget(StreamingDigitRecognizer(svm_model))
    assert "Live microphone unavailable" in panel.children[0].value


def test_early_emission_fires_once_per_segment(recording, svm_model):
    path, spans = recording
    recognizer = StreamingDigitRecognizer(svm_model, confidence_threshold=0.0, early_emit_ms=200)
    events = stream_audio_file(path, recognizer)
    # a confident partial prediction is emitted mid-segment, and the segment's end adds nothing
    assert len(events) == len(STREAM_DIGITS)
    assert all(e["early"] and e["emitted"] for e in events)
    for event, (start, end) in zip(events, spans):
        assert start - 0.15 <= event["start_s"] and event["end_s"] <= end + 0.35


def test_continuous_mode_emits_one_digit_per_segment(recording, svm_model):
    path, spans = recording
    recognizer = StreamingDigitRecognizer(
        svm_model, confidence_threshold=0.0, mode="continuous", window_ms=500, hop_ms=100
    )
    events = stream_audio_file(path, recognizer, chunk_ms=100)
    assert recognizer.digits == STREAM_DIGITS and len(events) == len(spans)
    assert all(e["windows"] > 1 for e in events)  # sliding windows were averaged in
    toggle = StreamingDigitRecognizer(svm_model, confidence_threshold=0.0)
    stream_audio_file(path, toggle)
    assert all(e["windows"] == 1 for e in toggle.events)
    with pytest.raises(ValueError, match="mode"):
        StreamingDigitRecognizer(svm_model, mode="sliding")


def test_realistic_stream_precision_and_recall(fsdd_manifest, librispeech_dir):
    """Digits at changing levels with pauses, LibriSpeech speech underneath: segment-level precision/recall."""
    from lib.core.datasets import load_librispeech
    from lib.digits.digit_models import SklearnDigitModel, make_digit_pipeline

    train = fsdd_manifest[fsdd_manifest.split == "train"].groupby(["label", "speaker"], group_keys=False).head(8)
    train_waves, train, _ = load_digit_waves(train, SR, progress=False)
    config = DigitFeatureConfig(cmvn=True)  # level-independent features: the stream's levels change by 16 dB
    pipeline = make_digit_pipeline(pca_components=128).fit(digit_feature_vectors(train_waves, config), train.label)
    svm_model = SklearnDigitModel(pipeline, config)

    test = fsdd_manifest[fsdd_manifest.split == "test"].groupby(["label", "speaker"]).head(1)
    waves, test, _ = load_digit_waves(test, SR, progress=False)
    libri = load_librispeech(librispeech_dir, download=False).iloc[:4]
    background, _, _ = load_digit_waves(libri, SR, progress=False)
    stream, truth = digit_test_stream(waves, list(test.label), SR, background=background, seed=1, n_digits=16)
    assert len(truth) == 16 and len(stream) / SR > 16 * 0.6
    levels = [
        20 * np.log10(digit_frame_peak_rms(stream[int(t["start_s"] * SR) : int(t["end_s"] * SR)], 160)) for t in truth
    ]
    assert max(levels) - min(levels) > 6  # the level changes
    scores = {}
    for mode in ("toggle", "continuous"):
        recognizer = StreamingDigitRecognizer(svm_model, confidence_threshold=0.0, mode=mode)
        scores[mode] = score_digit_stream(stream_audio_file(stream, recognizer), truth)
        # the VAD finds most words (the quietest ones, 6 dB above the threshold, can be too short) and
        # nothing else; this small SVM (0.85 on clean single clips) names about half of them right
        assert scores[mode]["detection_recall"] >= 0.8 and scores[mode]["detection_precision"] >= 0.8, scores
        assert scores[mode]["recall"] >= 0.35 and scores[mode]["precision"] >= 0.35, scores
    # scoring: a perfect list scores 1, a shifted one 0, an extra event lowers precision only
    perfect = [{**t, "emitted": True} for t in truth]
    assert score_digit_stream(perfect, truth)["precision"] == score_digit_stream(perfect, truth)["recall"] == 1.0
    extra = perfect + [{"digit": 1, "start_s": 1000.0, "end_s": 1000.5, "emitted": True}]
    assert score_digit_stream(extra, truth)["recall"] == 1.0 and score_digit_stream(extra, truth)["precision"] < 1.0
    wrong = [{**t, "digit": "x", "emitted": True} for t in truth]
    assert (
        score_digit_stream(wrong, truth)["recall"] == 0.0
        and score_digit_stream(wrong, truth)["detection_recall"] == 1.0
    )
