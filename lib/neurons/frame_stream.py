# %% [markdown]
# # Frame stream: microphone or file, ring buffers, smoothing, throttling
#
# The live side of the neuron analysis. Audio arrives in blocks, from the microphone
# (`sounddevice`) or from a file played back in real time or as fast as possible. The audio is
# cut into analysis frames (default 40 ms windows with a 20 ms hop, the frame grid of
# Wav2Vec2-style models) and every *update* hands the new audio to a compute function (a
# model, features...). The pieces:
#
# - `StreamRingBuffer`: a fixed-size ring buffer of samples or of rows (features, activity);
#   `clear()` empties it (the live panel's Reset).
# - `ExponentialSmoother`: exponential smoothing of a vector stream (`alpha` = weight of the
#   newest value).
# - `FileBlockSource` (real time or as fast as possible) and `MicrophoneBlockSource`
#   (`sounddevice.InputStream`); `microphone_status()` says whether a microphone can be opened
#   and, if not, why.
# - `FrameStreamRunner`: pulls pending blocks, and when compute lags behind the audio it
#   either **batches** all pending blocks into one update or **skips** the stale ones
#   (counted as dropped frames). Each update records its compute time and its latency: the
#   time from the arrival of the oldest audio in the update to the end of the computation.
#   `summary()` gives p50/p95 latency, the real-time factor (compute seconds per audio second)
#   and the counts of batched updates and dropped frames.

# %%
import queue
import time
from dataclasses import dataclass

import numpy as np


class StreamRingBuffer:
    """Fixed-capacity ring buffer of samples (``width=None``) or of ``[width]`` rows."""

    def __init__(self, capacity: int, width: int | None = None, dtype=np.float32):
        if capacity <= 0:
            raise ValueError(f"ring buffer capacity must be positive, not {capacity}")
        self.capacity = int(capacity)
        self.width = width
        shape = (self.capacity,) if width is None else (self.capacity, int(width))
        self._data = np.zeros(shape, dtype=dtype)
        self._end = 0  # total items ever written
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def total_written(self) -> int:
        return self._end

    def extend(self, items) -> None:
        items = np.asarray(items, dtype=self._data.dtype)
        if self.width is None:
            items = items.reshape(-1)
        elif items.ndim == 1:
            items = items.reshape(1, -1)
        if self.width is not None and items.shape[1] != self.width:
            raise ValueError(f"ring buffer holds rows of width {self.width}, got {items.shape[1]}")
        n = len(items)
        if n == 0:
            return
        items = items[-self.capacity :]
        new_end = self._end + n
        self._data[np.arange(new_end - len(items), new_end) % self.capacity] = items
        self._end = new_end
        self._size = min(self.capacity, self._size + n)

    def latest(self, n: int | None = None) -> np.ndarray:
        """The newest ``n`` items (all held items when ``None``), oldest first (a copy)."""
        n = self._size if n is None else min(int(n), self._size)
        if n == 0:
            return self._data[:0].copy()
        idx = (np.arange(self._end - n, self._end)) % self.capacity
        return self._data[idx].copy()

    def clear(self) -> None:
        self._data[...] = 0
        self._end = 0
        self._size = 0


class ExponentialSmoother:
    """``s <- alpha * x + (1 - alpha) * s`` over a stream of vectors (``alpha=1``: no smoothing)."""

    def __init__(self, alpha: float = 0.3):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"smoothing alpha must be in (0, 1], not {alpha}")
        self.alpha = float(alpha)
        self.state = None

    def update(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        self.state = x.copy() if self.state is None else self.alpha * x + (1.0 - self.alpha) * self.state
        return self.state

    def update_many(self, rows) -> np.ndarray:
        """Smooth each row of ``[n, dims]`` in turn; return the smoothed rows."""
        return np.stack([self.update(r) for r in np.asarray(rows)]) if len(rows) else np.zeros((0,))

    def reset(self) -> None:
        self.state = None


# %% [markdown]
# ## Sources
#
# A source has `pending()`: the blocks that have arrived since the last call, each with its
# arrival time (`time.perf_counter()` seconds), and `exhausted` once no more audio will come.


# %%
@dataclass
class StreamBlock:
    audio: np.ndarray
    arrival: float
    index: int


class FileBlockSource:
    """Play a waveform as blocks of ``block_size`` samples, in real time or as fast as possible.

    In real time (``realtime=True``) block ``i`` "arrives" when its last sample would have been
    played: ``t0 + (i + 1) * block_size / sr``; ``pending()`` returns every block that has arrived
    by now (several when the caller lagged) and, when none has, sleeps until the next one.
    As fast as possible, each call returns the next block, arriving now.
    """

    def __init__(self, waveform, sample_rate: int, block_size: int, realtime: bool = True):
        self.waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
        self.sample_rate = int(sample_rate)
        self.block_size = int(block_size)
        self.realtime = bool(realtime)
        self.n_blocks = int(np.ceil(len(self.waveform) / self.block_size))
        self._next = 0
        self._t0 = None

    @property
    def exhausted(self) -> bool:
        return self._next >= self.n_blocks

    def _block(self, i: int, arrival: float) -> StreamBlock:
        return StreamBlock(self.waveform[i * self.block_size : (i + 1) * self.block_size], arrival, i)

    def pending(self) -> list:
        if self.exhausted:
            return []
        now = time.perf_counter()
        if not self.realtime:
            block = self._block(self._next, now)
            self._next += 1
            return [block]
        if self._t0 is None:
            self._t0 = now
        duration = self.block_size / self.sample_rate
        due = lambda i: self._t0 + (i + 1) * duration  # noqa: E731
        if due(self._next) > now:
            time.sleep(due(self._next) - now)
            now = time.perf_counter()
        blocks = []
        while not self.exhausted and due(self._next) <= now:
            blocks.append(self._block(self._next, due(self._next)))
            self._next += 1
        return blocks

    def close(self) -> None:
        pass


def microphone_status(sample_rate: int = 16000) -> tuple:
    """``(available, message)``: whether a microphone input can be opened here, and why not."""
    try:
        import sounddevice as sd
    except ImportError:
        return False, "sounddevice is not installed: pip install sounddevice (and the PortAudio library)."
    except OSError as error:
        return False, f"sounddevice cannot load PortAudio ({error}); install libportaudio2 / portaudio."
    try:
        device = sd.query_devices(kind="input")
        sd.check_input_settings(samplerate=sample_rate, channels=1)
    except Exception as error:  # noqa: BLE001 -- PortAudio raises many kinds
        return False, f"no usable microphone input: {error}"
    return True, f"microphone: {device['name']}"


class MicrophoneUnavailable(RuntimeError):
    """No microphone could be opened; the message says why."""


class MicrophoneBlockSource:
    """Microphone blocks from ``sounddevice.InputStream``; the audio callback queues them."""

    def __init__(self, sample_rate: int, block_size: int, device=None):
        ok, message = microphone_status(sample_rate)
        if not ok:
            raise MicrophoneUnavailable(message)
        import sounddevice as sd

        self.sample_rate = int(sample_rate)
        self.block_size = int(block_size)
        self._queue = queue.Queue()
        self._count = 0
        self.overflows = 0

        def callback(indata, frames, time_info, status):
            if status and status.input_overflow:
                self.overflows += 1
            self._queue.put((indata[:, 0].copy(), time.perf_counter()))

        self._stream = sd.InputStream(
            samplerate=sample_rate, blocksize=block_size, channels=1, dtype="float32", device=device, callback=callback
        )
        self._stream.start()
        self.exhausted = False

    def pending(self, timeout: float = 1.0) -> list:
        blocks = []
        try:
            audio, arrival = self._queue.get(timeout=timeout)
            blocks.append(StreamBlock(audio, arrival, self._count))
            self._count += 1
            while True:
                audio, arrival = self._queue.get_nowait()
                blocks.append(StreamBlock(audio, arrival, self._count))
                self._count += 1
        except queue.Empty:
            pass
        return blocks

    def close(self) -> None:
        self.exhausted = True
        self._stream.stop()
        self._stream.close()


# %% [markdown]
# ## The runner
#
# `FrameStreamRunner(source, compute, policy="batch" | "skip", max_pending_blocks=...)`:
# `step()` takes the pending blocks and runs one update. When more than `max_pending_blocks`
# are waiting, compute is behind the audio: `"batch"` processes them all in one update
# (counted in `batched_updates`), `"skip"` keeps only the newest block and counts the others'
# frames in `dropped_frames`. `compute(audio, first_sample)` gets the update's audio and the
# index of its first sample in the stream.

# %%
THROTTLE_POLICIES = ("batch", "skip")


class FrameStreamRunner:
    def __init__(
        self,
        source,
        compute,
        sample_rate: int,
        policy: str = "batch",
        max_pending_blocks: int = 1,
        hop_s: float = 0.020,
        window_s: float = 0.040,
        audio_seconds_kept: float = 10.0,
    ):
        if policy not in THROTTLE_POLICIES:
            raise ValueError(f"throttling policy must be one of {THROTTLE_POLICIES}, not {policy!r}")
        self.source = source
        self.compute = compute
        self.sample_rate = int(sample_rate)
        self.policy = policy
        self.max_pending_blocks = max(1, int(max_pending_blocks))
        self.hop = int(round(hop_s * sample_rate))
        self.window = int(round(window_s * sample_rate))
        self.audio = StreamRingBuffer(int(audio_seconds_kept * sample_rate))
        self.reset_counters()

    def reset_counters(self) -> None:
        self.records = []  # one dict per update
        self.dropped_frames = 0
        self.dropped_blocks = 0
        self.batched_updates = 0
        self.samples_in = 0
        self.samples_processed = 0

    def reset(self) -> None:
        """Clear the audio buffer and all counters (the stream position is kept)."""
        self.audio.clear()
        self.reset_counters()

    def step(self):
        """Run one update on the pending audio; return ``compute``'s result (None if no audio came)."""
        blocks = self.source.pending()
        if not blocks:
            return None
        self.samples_in += sum(len(b.audio) for b in blocks)
        batched = False
        if len(blocks) > self.max_pending_blocks:
            if self.policy == "skip":
                stale = blocks[:-1]
                dropped = sum(len(b.audio) for b in stale)
                self.dropped_blocks += len(stale)
                self.dropped_frames += int(round(dropped / self.hop))
                blocks = blocks[-1:]
            else:
                batched = True
                self.batched_updates += 1
        audio = np.concatenate([b.audio for b in blocks])
        first_sample = blocks[0].index * getattr(self.source, "block_size", len(blocks[0].audio))
        self.audio.extend(audio)
        start = time.perf_counter()
        result = self.compute(audio, first_sample)
        done = time.perf_counter()
        self.samples_processed += len(audio)
        self.records.append(
            {
                "latency_s": done - blocks[0].arrival,
                "compute_s": done - start,
                "audio_s": len(audio) / self.sample_rate,
                "blocks": len(blocks),
                "batched": batched,
            }
        )
        return result

    def run(self, max_updates: int | None = None, progress: bool = False):
        """Step until the source is exhausted (or ``max_updates``); return the list of results."""
        from tqdm.auto import tqdm

        results = []
        bar = tqdm(
            total=getattr(self.source, "n_blocks", None),
            desc="streaming",
            unit="block",
            disable=not progress,
            leave=False,
        )
        while not self.source.exhausted and (max_updates is None or len(results) < max_updates):
            result = self.step()
            if result is not None:
                results.append(result)
                bar.update(self.records[-1]["blocks"])
        bar.close()
        return results

    def summary(self) -> dict:
        """p50/p95 latency, mean compute time, real-time factor and throttling counts."""
        return stream_latency_summary(
            self.records,
            dropped_frames=self.dropped_frames,
            dropped_blocks=self.dropped_blocks,
            batched_updates=self.batched_updates,
            samples_in=self.samples_in,
            sample_rate=self.sample_rate,
            policy=self.policy,
        )


def stream_latency_summary(
    records,
    dropped_frames: int = 0,
    dropped_blocks: int = 0,
    batched_updates: int = 0,
    samples_in: int = 0,
    sample_rate: int = 16000,
    policy: str = "batch",
) -> dict:
    """Summarise per-update records (``latency_s``, ``compute_s``, ``audio_s``) into one dict."""
    if not records:
        return {"updates": 0}
    latency = np.array([r["latency_s"] for r in records]) * 1000.0
    compute = np.array([r["compute_s"] for r in records]) * 1000.0
    audio_s = float(sum(r["audio_s"] for r in records))
    return {
        "updates": len(records),
        "latency_ms_p50": float(np.percentile(latency, 50)),
        "latency_ms_p95": float(np.percentile(latency, 95)),
        "latency_ms_max": float(latency.max()),
        "compute_ms_p50": float(np.percentile(compute, 50)),
        "compute_ms_p95": float(np.percentile(compute, 95)),
        "audio_seconds_processed": audio_s,
        "audio_seconds_in": samples_in / sample_rate if samples_in else audio_s,
        "real_time_factor": float(compute.sum() / 1000.0 / audio_s) if audio_s > 0 else float("nan"),
        "throttle_policy": policy,
        "batched_updates": int(batched_updates),
        "dropped_blocks": int(dropped_blocks),
        "dropped_frames": int(dropped_frames),
    }


def frame_grid(n_samples: int, sample_rate: int, window_s: float = 0.040, hop_s: float = 0.020) -> np.ndarray:
    """``[frames, 2]`` start/end sample of each complete analysis window in ``n_samples``."""
    window, hop = int(round(window_s * sample_rate)), int(round(hop_s * sample_rate))
    if n_samples < window:
        return np.zeros((0, 2), dtype=int)
    starts = np.arange(0, n_samples - window + 1, hop)
    return np.stack([starts, starts + window], axis=1)
