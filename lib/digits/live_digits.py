# %% [markdown]
# # Live digits: energy VAD, streaming recogniser, microphone and ipywidgets
#
# One streaming code path serves the microphone and files played as a stream, so it is
# tested without a microphone:
#
# - `EnergyVad` cuts a stream of audio chunks into speech segments: a 20 ms frame is speech
#   when its RMS is above an absolute threshold (`threshold_rms`, 0.02 by default, about
#   -34 dBFS) *and* a margin above the tracked noise floor; a segment ends after
#   `hangover_ms` of silence (175 ms: gaps inside a word are bridged), keeps `pre_roll_ms` of
#   audio before its onset, is cut at `max_segment_ms`, and is kept only when it lasts at
#   least `min_speech_ms` (400 ms, pre-roll + speech + hangover: clicks and blips are dropped).
# - `StreamingDigitRecognizer` classifies each segment with any digit model, with a
#   temperature on the logits and a confidence threshold. Optionally it emits early, in the
#   middle of a segment, once a partial prediction is confident; otherwise at the segment's
#   end, where `force_emit` decides whether a low-confidence segment is still emitted
#   (flagged `forced`) or rejected. Modes: `toggle` (VAD gating while listening: each
#   segment classified once, at its end), `push_to_talk` (the audio between `press()` and
#   `release()` is one utterance) and `continuous` (a sliding window: while a segment is
#   open, the last `window_ms` of audio is classified every `hop_ms`; at the segment's end the
#   window probabilities and the whole segment's are averaged and one digit is emitted per
#   segment).
# - `digit_test_stream` builds a realistic test stream (digits at changing levels, pauses
#   of random length, background speech and noise) with its ground truth, and
#   `score_digit_stream` gives segment-level precision and recall of the emitted digits.
# - `stream_audio_file` plays a file through the recogniser chunk by chunk.
# - `MicrophoneDigitStream` feeds the recogniser from sounddevice; `live_digit_widget` puts
#   Start/Stop and push-to-talk buttons in the notebook. Without PortAudio, sounddevice or
#   an input device they say so in one clear line (`LiveAudioUnavailable`), no traceback.

# %%
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from lib.core.audio import WHISPER_SAMPLE_RATE, files_above_rate, load_audio, resample_block
from lib.core.ring_buffer import StreamRingBuffer

WIDEBAND_KEEP_SECONDS = 10.0  # recent 16 kHz audio kept for the Whisper prior (longer than any segment)

# %% [markdown]
# ## Energy VAD
#
# Speech segments from a stream of chunks: 20 ms frames above an absolute RMS threshold and a
# margin above the tracked noise floor, bridged by a hangover, kept when long enough.


# %%
@dataclass
class VadConfig:
    """Energy VAD settings (milliseconds and dBFS)."""

    frame_ms: float = 20.0
    threshold_rms: float = 0.02  # a speech frame's RMS is above this (0.02 is about -34 dBFS)
    threshold_db: float | None = None  # the same threshold in dBFS (overrides threshold_rms when given)
    margin_db: float = 10.0  # ... and this much louder than the tracked noise floor
    min_speech_ms: float = 400.0  # shortest segment kept (pre-roll + speech + hangover); shorter ones are clicks
    hangover_ms: float = 175.0  # silence that ends a segment
    pre_roll_ms: float = 100.0  # audio kept before the onset
    max_segment_ms: float = 1600.0  # segments are cut at this length

    def __post_init__(self):
        if self.threshold_db is None:
            if not self.threshold_rms or self.threshold_rms <= 0:
                raise ValueError(f"threshold_rms must be > 0, not {self.threshold_rms}")
            self.threshold_db = float(20 * np.log10(self.threshold_rms))


class EnergyVad:
    """Streaming energy VAD: ``process(chunk)`` returns the segments completed by that chunk.

    A segment is a dict ``{"start": sample, "end": sample, "audio": array}`` (sample indices
    in the stream). ``partial()`` is the audio of the segment in progress (or None).
    """

    def __init__(self, sample_rate: int, config: VadConfig | None = None):
        self.sr = int(sample_rate)
        self.config = config or VadConfig()
        self.frame = max(1, int(round(self.config.frame_ms * self.sr / 1000)))
        self.reset()

    def reset(self):
        cfg = self.config
        self._pending = np.zeros(0, dtype=np.float32)
        self._position = 0  # samples consumed as whole frames
        self._pre = deque(maxlen=max(0, int(round(cfg.pre_roll_ms / cfg.frame_ms))))
        self._segment = None  # list of frames
        self._start = 0
        self._speech_frames = 0
        self._silence_run = 0
        self.noise_floor_db = None
        self.frame_db = []  # level of every frame, for plots

    def is_speech(self, level_db: float) -> bool:
        floor = self.noise_floor_db if self.noise_floor_db is not None else -120.0
        return level_db > self.config.threshold_db and level_db > floor + self.config.margin_db

    def process(self, chunk) -> list:
        cfg = self.config
        done = []
        data = np.concatenate([self._pending, np.asarray(chunk, dtype=np.float32).reshape(-1)])
        n_frames = len(data) // self.frame
        self._pending = data[n_frames * self.frame :]
        hang = max(1, int(round(cfg.hangover_ms / cfg.frame_ms)))
        min_frames = max(1, int(round(cfg.min_speech_ms / cfg.frame_ms)))
        max_frames = max(1, int(round(cfg.max_segment_ms / cfg.frame_ms)))
        for i in range(n_frames):
            frame = data[i * self.frame : (i + 1) * self.frame]
            level = float(10 * np.log10(np.mean(frame.astype(np.float64) ** 2) + 1e-12))
            self.frame_db.append(level)
            speech = self.is_speech(level)
            if self._segment is None:
                if speech:
                    self._segment = list(self._pre) + [frame]
                    self._start = self._position - sum(len(f) for f in self._pre)
                    self._pre.clear()
                    self._speech_frames, self._silence_run = 1, 0
                else:
                    self._pre.append(frame)
                    # track the noise floor on non-speech frames only (fast down, slow up)
                    if self.noise_floor_db is None:
                        self.noise_floor_db = level
                    elif level < self.noise_floor_db:
                        self.noise_floor_db = 0.7 * self.noise_floor_db + 0.3 * level
                    else:
                        self.noise_floor_db = 0.98 * self.noise_floor_db + 0.02 * level
            else:
                self._segment.append(frame)
                if speech:
                    self._speech_frames += 1
                    self._silence_run = 0
                else:
                    self._silence_run += 1
                if self._silence_run >= hang or len(self._segment) >= max_frames:
                    enough = len(self._segment) >= min_frames
                    segment = self._finish_segment()
                    if enough:
                        done.append(segment)
            self._position += self.frame
        return done

    def _finish_segment(self) -> dict:
        audio = np.concatenate(self._segment)
        # drop the trailing silence beyond a short tail
        keep_tail = max(0, len(self._segment) - self._silence_run + 2) * self.frame
        audio = audio[: min(len(audio), keep_tail)]
        segment = {"start": int(self._start), "end": int(self._start + len(audio)), "audio": audio}
        self._segment, self._speech_frames, self._silence_run = None, 0, 0
        return segment

    def partial(self):
        """Audio of the segment in progress, or None."""
        return np.concatenate(self._segment) if self._segment else None

    def flush(self) -> list:
        """End of stream: close the open segment if it is long enough (as if the hangover followed)."""
        cfg = self.config
        min_frames = max(1, int(round(cfg.min_speech_ms / cfg.frame_ms)))
        hang = max(1, int(round(cfg.hangover_ms / cfg.frame_ms)))
        if self._segment is not None and len(self._segment) - self._silence_run + hang >= min_frames:
            return [self._finish_segment()]
        self._segment = None
        return []


def vad_segments(wave: np.ndarray, sample_rate: int, config: VadConfig | None = None, chunk_ms: float = 100.0):
    """Run the streaming VAD over a whole wave; ``[(start_s, end_s), ...]``."""
    vad = EnergyVad(sample_rate, config)
    chunk = max(1, int(chunk_ms * sample_rate / 1000))
    segments = []
    for i in range(0, len(wave), chunk):
        segments += vad.process(wave[i : i + chunk])
    segments += vad.flush()
    return [(s["start"] / sample_rate, s["end"] / sample_rate) for s in segments]


# %% [markdown]
# ## The last seconds of a stream at another rate
#
# An encoder model's Whisper prior hears a segment at 16 kHz while the VAD and the head read it
# at the model's rate: `RecentAudio`, a `StreamRingBuffer` of the stream's last seconds at
# 16 kHz, cuts a segment's span from it by stream sample index.


# %%
class RecentAudio(StreamRingBuffer):
    """The last ``seconds`` of a stream at ``rate``: ``append(chunk)``, ``span(a, b)`` by sample index."""

    def __init__(self, rate: int, seconds: float):
        super().__init__(int(seconds * rate))
        self.rate = int(rate)

    def append(self, chunk) -> None:
        self.extend(chunk)

    @property
    def first(self) -> int:
        """The stream index of the oldest kept sample."""
        return self.total_written - len(self)

    @property
    def audio(self) -> np.ndarray:
        return self.latest()

    def span(self, start: int, end: int, slack: int = 2):
        """Samples ``start:end`` of the stream, or None where they are not (all) kept (``slack``: rounding)."""
        a, b = start - self.first, end - self.first
        return self.audio[a:b] if 0 <= a < b <= len(self) + slack else None


# %% [markdown]
# ## The streaming recogniser
#
# Any digit model behind the VAD: temperature, confidence threshold, early or forced emission,
# and the three modes (toggle, push-to-talk, continuous sliding window).


# %%
class StreamingDigitRecognizer:
    """Turns a stream of audio chunks into digit events with any digit model.

    An event is a dict: ``digit``, ``confidence``, ``start_s``, ``end_s``, ``emitted`` (False
    for a rejected low-confidence segment), ``forced`` (emitted below the threshold because
    ``force_emit``), ``early`` (emitted before the segment ended), ``latency_ms`` (model time).
    """

    MODES = ("toggle", "push_to_talk", "continuous")

    def __init__(
        self,
        model,
        vad_config: VadConfig | None = None,
        confidence_threshold: float = 0.6,
        temperature: float = 1.0,
        force_emit: bool = True,
        early_emit_ms: float | None = None,
        mode: str = "toggle",
        on_event=None,
        window_ms: float = 800.0,
        hop_ms: float = 100.0,
        wideband: bool = True,
    ):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, not {mode!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, not {temperature}")
        self.model = model
        self.sample_rate = int(model.sample_rate)
        self.vad = EnergyVad(self.sample_rate, vad_config)
        self.confidence_threshold = confidence_threshold
        self.temperature = temperature
        self.force_emit = force_emit
        self.early_emit_ms = early_emit_ms
        self.mode = mode
        self.on_event = on_event
        self.window_ms = float(window_ms)
        self.hop_ms = float(hop_ms)
        if self.window_ms <= 0 or self.hop_ms <= 0:
            raise ValueError(f"window_ms and hop_ms must be > 0, not {window_ms} / {hop_ms}")
        self._window_probs = []
        self._last_window = 0
        self.events = []
        self._samples_seen = 0
        self._pressed = False
        self._ptt_audio, self._ptt_start = [], 0
        self._early_done = False
        self._last_partial = 0
        # an encoder model's Whisper prior hears a segment at 16 kHz when feed() is given the audio at 16 kHz too
        self.hears_wideband = bool(wideband) and bool(getattr(model, "prior_hears_wideband", False))
        self._wide = RecentAudio(WHISPER_SAMPLE_RATE, WIDEBAND_KEEP_SECONDS)

    @property
    def digits(self) -> list:
        """Digits emitted so far, in order."""
        return [e["digit"] for e in self.events if e["emitted"]]

    def _classify(self, audio: np.ndarray, start: int, end: int, at_end: bool, early: bool = False, extra_probs=None):
        t0 = time.perf_counter()
        scale = WHISPER_SAMPLE_RATE / self.sample_rate  # the segment's span at 16 kHz, where it was fed
        wide = self._wide.span(round(start * scale), round(end * scale)) if self.hears_wideband else None
        options = {"wideband": [wide]} if wide is not None else {}
        proba = self.model.predict_proba([audio], temperature=self.temperature, **options)[0]
        windows = 1
        if extra_probs:  # continuous mode: the windows' probabilities (weighted by their energy) and the segment's
            probs = np.vstack([proba] + [p for p, _ in extra_probs])
            weights = np.array([max(w for _, w in extra_probs)] + [w for _, w in extra_probs]) + 1e-12
            proba = (weights[:, None] * probs).sum(axis=0) / weights.sum()
            windows += len(extra_probs)
        latency = (time.perf_counter() - t0) * 1000
        best = int(np.argmax(proba))
        confident = proba[best] >= self.confidence_threshold
        if early and not confident:
            return None
        emitted = bool(confident or (at_end and self.force_emit))
        event = {
            "digit": self.model.labels[best],
            "confidence": float(proba[best]),
            "start_s": start / self.sample_rate,
            "end_s": end / self.sample_rate,
            "emitted": emitted,
            "forced": bool(emitted and not confident),
            "early": early,
            "latency_ms": latency,
            "windows": windows,
            "wideband": wide is not None,
        }
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)
        return event

    def feed(self, chunk, wide_chunk=None) -> list:
        """Feed a chunk of audio at ``sample_rate``; return the events it completed. ``wide_chunk``: the same
        audio at 16 kHz, for an encoder model's Whisper prior on each segment (not continuous mode's windows)."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if wide_chunk is not None and self.hears_wideband:
            self._wide.append(wide_chunk)
        start_count = len(self.events)
        if self.mode == "push_to_talk":
            if self._pressed:
                self._ptt_audio.append(chunk)
            self._samples_seen += len(chunk)
            return []
        for segment in self.vad.process(chunk):
            if not self._early_done:
                self._classify(
                    segment["audio"], segment["start"], segment["end"], at_end=True, extra_probs=self._window_probs
                )
            self._early_done, self._last_partial = False, 0
            self._window_probs, self._last_window = [], 0
        self._samples_seen += len(chunk)
        if self.mode == "continuous":
            self._slide_window()
        if self.early_emit_ms and not self._early_done:
            partial = self.vad.partial()
            step = int(self.early_emit_ms * self.sample_rate / 1000)
            if partial is not None and len(partial) - self._last_partial >= step:
                self._last_partial = len(partial)
                start = self.vad._start
                if self._classify(partial, start, start + len(partial), at_end=False, early=True):
                    self._early_done = True
        return self.events[start_count:]

    def finish(self) -> list:
        """End of stream (or Stop): close the open segment and return its events."""
        start_count = len(self.events)
        if self.mode == "push_to_talk":
            return self.release()
        for segment in self.vad.flush():
            if not self._early_done:
                self._classify(
                    segment["audio"], segment["start"], segment["end"], at_end=True, extra_probs=self._window_probs
                )
        self._early_done, self._last_partial = False, 0
        self._window_probs, self._last_window = [], 0
        return self.events[start_count:]

    def _slide_window(self):
        """Continuous mode: classify the last ``window_ms`` of the open segment every ``hop_ms``."""
        partial = self.vad.partial()
        if partial is None:
            return
        hop = max(1, int(self.hop_ms * self.sample_rate / 1000))
        window = max(1, int(self.window_ms * self.sample_rate / 1000))
        while len(partial) - self._last_window >= hop:
            self._last_window += hop
            piece = partial[max(0, self._last_window - window) : self._last_window]
            if len(piece) >= int(0.1 * self.sample_rate):
                proba = self.model.predict_proba([piece], temperature=self.temperature)[0]
                self._window_probs.append((proba, float(np.mean(np.square(piece, dtype=np.float64)))))

    def press(self):
        """Push-to-talk: start an utterance."""
        self._pressed, self._ptt_audio, self._ptt_start = True, [], self._samples_seen

    def release(self) -> list:
        """Push-to-talk: end the utterance and classify it (always emitted when ``force_emit``)."""
        if not self._pressed:
            return []
        self._pressed = False
        audio = np.concatenate(self._ptt_audio) if self._ptt_audio else np.zeros(0, dtype=np.float32)
        self._ptt_audio = []
        if len(audio) < int(0.05 * self.sample_rate):
            return []
        # keep the speech part when the VAD finds one; else the whole press
        spans = vad_segments(audio, self.sample_rate, self.vad.config)
        if spans:
            a, b = int(spans[0][0] * self.sample_rate), int(spans[-1][1] * self.sample_rate)
            audio_used = audio[a:b]
        else:
            a, audio_used = 0, audio
        event = self._classify(audio_used, self._ptt_start + a, self._ptt_start + a + len(audio_used), at_end=True)
        return [event] if event else []


# %%
def stream_audio_file(
    path_or_wave,
    recognizer: StreamingDigitRecognizer,
    chunk_ms: float = 100.0,
    sample_rate: int | None = None,
    realtime: bool = False,
) -> list:
    """Play a file (or a wave at ``sample_rate``) through ``recognizer`` chunk by chunk; return its events.

    Audio recorded above the recognizer's rate is also fed at 16 kHz when the recognizer's
    model can use it (``recognizer.hears_wideband``).
    """
    import librosa

    wide = None
    if isinstance(path_or_wave, np.ndarray):
        wave = path_or_wave
        if sample_rate is not None and sample_rate != recognizer.sample_rate:
            wave = librosa.resample(wave, orig_sr=sample_rate, target_sr=recognizer.sample_rate)
        if recognizer.hears_wideband and sample_rate is not None and sample_rate > recognizer.sample_rate:
            wide = librosa.resample(path_or_wave, orig_sr=sample_rate, target_sr=WHISPER_SAMPLE_RATE)
    else:
        wave = load_audio(path_or_wave, sr=recognizer.sample_rate)
        if recognizer.hears_wideband and files_above_rate([path_or_wave], recognizer.sample_rate):
            wide = load_audio(path_or_wave, sr=WHISPER_SAMPLE_RATE)
    chunk = max(1, int(chunk_ms * recognizer.sample_rate / 1000))
    scale = WHISPER_SAMPLE_RATE / recognizer.sample_rate
    events = []
    for i in range(0, len(wave), chunk):
        wide_chunk = None if wide is None else wide[round(i * scale) : round((i + chunk) * scale)]
        events += recognizer.feed(wave[i : i + chunk], wide_chunk)
        if realtime:
            time.sleep(chunk_ms / 1000)
    events += recognizer.finish()
    return events


# %% [markdown]
# ## A realistic test stream and segment-level scores


# %%
def digit_frame_peak_rms(wave: np.ndarray, frame: int) -> float:
    n = max(1, len(wave) // frame)
    frames = np.asarray(wave[: n * frame], dtype=np.float64).reshape(n, -1) if len(wave) >= frame else wave[None, :]
    return float(np.sqrt(np.mean(frames**2, axis=1)).max()) + 1e-9


def digit_test_stream(
    waves,
    labels,
    sample_rate: int,
    background=None,
    seed: int = 0,
    n_digits: int = 20,
    pause_seconds=(0.35, 1.5),
    level_db=(-28.0, -12.0),
    background_db: float = -44.0,
    noise_db: float = -60.0,
):
    """A stream of ``n_digits`` random clips with pauses, level changes and background sound; ``(wave, truth)``.

    Every clip is scaled so that its loudest 20 ms frame has an RMS of a level drawn from
    ``level_db`` (dBFS: a speaker moving nearer and farther), pauses last ``pause_seconds``,
    and ``background`` (e.g. LibriSpeech utterances at the same rate) runs underneath at an
    RMS of ``background_db`` dBFS, with white noise at ``noise_db``: its louder syllables can
    wake the VAD, which is what the precision figure is for. ``truth`` is a list of
    ``{"digit", "start_s", "end_s"}``.
    """
    rng = np.random.default_rng(seed)
    waves, labels = list(waves), list(labels)
    frame = int(0.02 * sample_rate)
    pieces, truth, cursor = [], [], 0
    pieces.append(np.zeros(int(rng.uniform(*pause_seconds) * sample_rate), np.float32))
    cursor += len(pieces[-1])
    for _ in range(n_digits):
        i = int(rng.integers(len(waves)))
        clip = np.asarray(waves[i], dtype=np.float32)
        clip = clip * (10 ** (rng.uniform(*level_db) / 20) / digit_frame_peak_rms(clip, frame))
        truth.append({"digit": labels[i], "start_s": cursor / sample_rate, "end_s": (cursor + len(clip)) / sample_rate})
        pause = np.zeros(int(rng.uniform(*pause_seconds) * sample_rate), np.float32)
        pieces += [clip, pause]
        cursor += len(clip) + len(pause)
    stream = np.concatenate(pieces)
    if background is not None and len(background):
        bed = []
        while sum(len(b) for b in bed) < len(stream):
            bed.append(np.asarray(background[int(rng.integers(len(background)))], dtype=np.float32))
        bed = np.concatenate(bed)[: len(stream)]
        stream = stream + bed * (10 ** (background_db / 20) / (np.sqrt(np.mean(bed.astype(np.float64) ** 2)) + 1e-9))
    stream = stream + rng.normal(0, 10 ** (noise_db / 20), len(stream)).astype(np.float32)
    peak = float(np.abs(stream).max())
    if peak > 0.99:
        stream *= 0.99 / peak
    return stream.astype(np.float32), truth


def score_digit_stream(events, truth, tolerance_s: float = 0.25) -> dict:
    """Segment-level precision and recall of the emitted digits against ``truth``.

    An emitted event matches a true digit when their spans overlap (each widened by
    ``tolerance_s``); each true digit matches at most one event (the most overlapping).
    ``precision``: correct digits / emitted events; ``recall``: correct digits / true digits;
    ``detection_*``: the same ignoring which digit was said (did the VAD find the words?);
    ``forced``: emitted events below the confidence threshold (``force_emit``).
    """
    emitted = [e for e in events if e.get("emitted")]
    used, matched, correct = set(), 0, 0
    for t in truth:
        best, best_overlap = None, 0.0
        for j, e in enumerate(emitted):
            if j in used:
                continue
            overlap = min(t["end_s"], e["end_s"]) + tolerance_s - max(t["start_s"], e["start_s"])
            if overlap > best_overlap:
                best, best_overlap = j, overlap
        if best is not None:
            used.add(best)
            matched += 1
            correct += emitted[best]["digit"] == t["digit"]
    n_emitted, n_truth = len(emitted), len(truth)
    return {
        "true_digits": n_truth,
        "emitted": n_emitted,
        "correct": int(correct),
        "precision": correct / n_emitted if n_emitted else 0.0,
        "recall": correct / n_truth if n_truth else 0.0,
        "detection_precision": matched / n_emitted if n_emitted else 0.0,
        "detection_recall": matched / n_truth if n_truth else 0.0,
        "forced": sum(bool(e.get("forced")) for e in emitted),
    }


# %% [markdown]
# ## Microphone


# %%
class LiveAudioUnavailable(RuntimeError):
    """The microphone cannot be used here; the message says why and what to do."""


def check_microphone(device=None):
    """Return ``(sounddevice_module, device_info)`` or raise `LiveAudioUnavailable` with the reason."""
    try:
        import sounddevice as sd
    except ImportError:
        raise LiveAudioUnavailable(
            "sounddevice is not installed: pip install sounddevice (or pip install 'audiolens[live]')"
        ) from None
    except OSError as error:  # the PortAudio C library is missing
        raise LiveAudioUnavailable(
            f"sounddevice cannot start: {error}. Install PortAudio "
            "(Debian/Ubuntu: apt install libportaudio2; macOS: brew install portaudio). "
            "On Colab or a remote server there is no microphone: use "
            "stream_audio_file on a recording instead."
        ) from None
    try:
        info = sd.query_devices(device, kind="input")
    except Exception as error:  # noqa: BLE001 - PortAudio reports missing devices in several ways
        raise LiveAudioUnavailable(
            f"no audio input device ({error}). Plug in a microphone or pick one with "
            "the device parameter (sounddevice.query_devices() lists them)."
        ) from None
    if not info or int(info.get("max_input_channels", 0)) < 1:
        raise LiveAudioUnavailable("the selected audio device has no input channels; choose another device")
    return sd, info


# %%
class MicrophoneDigitStream:
    """Feed a `StreamingDigitRecognizer` from the microphone (sounddevice) on a worker thread."""

    def __init__(self, recognizer: StreamingDigitRecognizer, device=None, chunk_ms: float = 100.0):
        self.recognizer = recognizer
        self.device = device
        self.chunk_ms = chunk_ms
        self._queue = queue.Queue()
        self._stream = None
        self._worker = None
        self._running = False
        self.input_rate = None
        self.status_messages = []

    def start(self):
        sd, info = check_microphone(self.device)
        self.input_rate = int(info.get("default_samplerate") or self.recognizer.sample_rate)
        blocksize = int(self.chunk_ms * self.input_rate / 1000)

        def callback(indata, frames, time_info, status):
            if status:
                self.status_messages.append(str(status))
            self._queue.put(indata[:, 0].copy())

        try:
            self._stream = sd.InputStream(
                samplerate=self.input_rate,
                channels=1,
                dtype="float32",
                blocksize=blocksize,
                device=self.device,
                callback=callback,
            )
            self._stream.start()
        except Exception as error:  # noqa: BLE001 - PortAudio errors
            raise LiveAudioUnavailable(f"cannot open the microphone: {error}") from None
        self._running = True
        self._worker = threading.Thread(target=self._run, daemon=True)
        self._worker.start()

    def _run(self):
        target = self.recognizer.sample_rate
        feed_wide = self.recognizer.hears_wideband and self.input_rate > target  # the prior hears up to 16 kHz
        while self._running or not self._queue.empty():
            try:
                block = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            wide = resample_block(block, self.input_rate, WHISPER_SAMPLE_RATE) if feed_wide else None
            self.recognizer.feed(resample_block(block, self.input_rate, target), wide)

    def stop(self) -> list:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
        self._running = False
        if self._worker is not None:
            self._worker.join(timeout=2)
        return self.recognizer.finish()


# %%
def live_digit_widget(recognizer: StreamingDigitRecognizer, device=None):
    """ipywidgets panel: Listen (toggle, VAD) and Talk (push-to-talk: click to start, click to stop)."""
    import ipywidgets as widgets

    log = widgets.Output(layout={"border": "1px solid #ccc", "height": "160px", "overflow": "auto"})
    status = widgets.HTML()
    digits = widgets.HTML("<b>digits:</b> ")
    try:
        check_microphone(device)
    except LiveAudioUnavailable as error:
        status.value = f"<span style='color:#b00'>Live microphone unavailable: {error}</span>"
        return widgets.VBox([status])

    def show(event):
        with log:
            flag = " (forced)" if event["forced"] else ("" if event["emitted"] else " rejected")
            print(f"{event['start_s']:7.2f}s  {event['digit']}  p={event['confidence']:.2f}{flag}")
        digits.value = "<b>digits:</b> " + " ".join(str(d) for d in recognizer.digits)

    recognizer.on_event = show
    state = {"stream": None}
    listen = widgets.ToggleButton(
        description="Start listening", icon="microphone", tooltip="toggle mode: VAD-gated listening until Stop"
    )
    talk = widgets.ToggleButton(
        description="Push to talk", icon="circle", tooltip="push-to-talk: click, say one digit, click again"
    )

    def start_stream(mode):
        recognizer.mode = mode
        stream = MicrophoneDigitStream(recognizer, device=device)
        try:
            stream.start()
        except LiveAudioUnavailable as error:
            status.value = f"<span style='color:#b00'>{error}</span>"
            return None
        status.value = f"listening at {stream.input_rate} Hz ({mode})"
        return stream

    def on_listen(change):
        listen.description = "Stop" if change["new"] else "Start listening"
        if change["new"]:
            state["stream"] = start_stream("toggle")
            if state["stream"] is None:
                listen.value = False
        elif state["stream"] is not None:
            state["stream"].stop()
            state["stream"] = None
            status.value = "stopped"

    def on_talk(change):
        talk.description = "Done" if change["new"] else "Push to talk"
        if change["new"]:
            state["stream"] = start_stream("push_to_talk")
            if state["stream"] is None:
                talk.value = False
                return
            recognizer.press()
        elif state["stream"] is not None:
            state["stream"].stop()  # finish() releases the push-to-talk utterance
            state["stream"] = None
            status.value = "stopped"

    listen.observe(on_listen, names="value")
    talk.observe(on_talk, names="value")
    return widgets.VBox([widgets.HBox([listen, talk]), status, digits, log])
