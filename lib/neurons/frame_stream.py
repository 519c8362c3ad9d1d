# %% [markdown]
# # Frame stream: microphone or file, ring buffers, smoothing, throttling
#
# The live side of the neuron analysis. Audio arrives in blocks, from the microphone
# (`sounddevice`) or from a file played back in real time or as fast as possible. The audio is
# cut into analysis frames (default 40 ms windows with a 20 ms hop, the frame grid of
# Wav2Vec2-style models) and every *update* hands the new audio to a compute function (a
# model, features...). The pieces:
#
# - `StreamRingBuffer` (from `lib.core.ring_buffer`): a fixed-size ring buffer of samples or of
#   rows (features, activity); `clear()` empties it (the live panel's Reset).
# - `ExponentialSmoother`: exponential smoothing of a vector stream (`alpha` = weight of the
#   newest value).
# - `FileBlockSource` (real time or as fast as possible), `SimulatedRealtimeSource` (real-time
#   queueing on a virtual clock), `MicrophoneBlockSource` (`sounddevice.InputStream`) and
#   `QueueBlockSource` (audio pushed by a callback: the browser microphone in Colab);
#   `microphone_status()` says whether a microphone can be opened and, if not, why.
# - `FrameStreamRunner`: pulls pending blocks, and when compute lags behind the audio it
#   either **merges** the pending blocks into one update (policy `"batch"`) or **skips** the
#   stale ones (counted as dropped frames); nothing ever queues. Each update records its
#   compute time, its stage times and its latency: the time from the arrival of the oldest
#   audio in the update to the end of the computation. `summary()` gives latency p50/p95/p99,
#   stage times, the real-time factor (compute seconds per audio second), merged and dropped
#   counts, and whether latency grows along the stream.

# %%
import os
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from lib.core.ring_buffer import StreamRingBuffer


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


# %% [markdown]
# ## Live sources: microphone and pushed audio
#
# A microphone through `sounddevice` (when one can be opened here) and a queue that another thread
# or a browser callback fills.


# %%
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


class QueueBlockSource:
    """Blocks from audio pushed by another thread or a callback (``put(samples)``), cut to ``block_size``.

    Used for the browser microphone in Colab (JavaScript sends chunks into the kernel) and for
    tests. ``pending(timeout)`` waits up to ``timeout`` seconds for the first complete block.
    ``close()`` (or ``finish()``) marks the end: the last partial block is delivered, then ``exhausted``.
    """

    def __init__(self, sample_rate: int, block_size: int, max_seconds_buffered: float = 30.0):
        self.sample_rate = int(sample_rate)
        self.block_size = int(block_size)
        self._cond = threading.Condition()
        self._buffer = np.zeros(0, dtype=np.float32)
        self._count = 0
        self._finished = False
        self.max_samples = int(max_seconds_buffered * sample_rate)
        self.overflow_samples = 0

    def put(self, samples) -> None:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        with self._cond:
            self._buffer = np.concatenate([self._buffer, samples])
            if len(self._buffer) > self.max_samples:  # a stalled consumer never makes the buffer grow
                cut = len(self._buffer) - self.max_samples
                cut -= cut % self.block_size
                self.overflow_samples += cut
                self._count += cut // self.block_size
                self._buffer = self._buffer[cut:]
            self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    @property
    def exhausted(self) -> bool:
        with self._cond:
            return self._finished and len(self._buffer) == 0

    def pending(self, timeout: float = 1.0) -> list:
        with self._cond:
            if len(self._buffer) < self.block_size and not self._finished:
                self._cond.wait(timeout)
            now = time.perf_counter()
            n = len(self._buffer) // self.block_size
            if self._finished and len(self._buffer) % self.block_size:
                n += 1
            blocks = []
            for _ in range(n):
                audio, self._buffer = self._buffer[: self.block_size], self._buffer[self.block_size :]
                blocks.append(StreamBlock(audio, now, self._count))
                self._count += 1
            return blocks

    def close(self) -> None:
        self.finish()


# %% [markdown]
# ## Simulated real time
#
# `SimulatedRealtimeSource` replays a waveform on a virtual clock: block `i` arrives at
# `(i + 1) * block / sr` virtual seconds, and the runner advances the clock by each update's
# measured compute time. The queueing (what arrived while an update was computing, merged
# or dropped) is then exactly that of a real-time run, without waiting in wall-clock time for
# the idle part of every update: a 5-minute stream is measured in its compute time.


# %%
class SimulatedRealtimeSource:
    """Blocks of a waveform on a virtual clock (``clock()``), advanced by the runner after each update."""

    def __init__(self, waveform, sample_rate: int, block_size: int):
        self.waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
        self.sample_rate = int(sample_rate)
        self.block_size = int(block_size)
        self.n_blocks = int(np.ceil(len(self.waveform) / self.block_size))
        self._next = 0
        self.now = 0.0

    @property
    def exhausted(self) -> bool:
        return self._next >= self.n_blocks

    def clock(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += float(seconds)

    def _due(self, i: int) -> float:
        return (i + 1) * self.block_size / self.sample_rate

    def pending(self) -> list:
        if self.exhausted:
            return []
        self.now = max(self.now, self._due(self._next))  # idle until the next block arrives
        blocks = []
        while not self.exhausted and self._due(self._next) <= self.now + 1e-12:
            i = self._next
            audio = self.waveform[i * self.block_size : (i + 1) * self.block_size]
            blocks.append(StreamBlock(audio, self._due(i), i))
            self._next += 1
        return blocks

    def close(self) -> None:
        pass


# %% [markdown]
# ## The runner
#
# `FrameStreamRunner(source, compute, policy="batch" | "skip", max_pending_blocks=1,
# max_merge_blocks=5)`: `step()` takes the pending blocks and runs one update. Blocks never
# queue up: when more than `max_pending_blocks` are waiting, compute is behind the audio, and
# `"batch"` **merges** them into one update (counted in `batched_updates`, `merged_blocks`),
# `"skip"` keeps only the newest block (the others' frames count as `dropped_frames`). Either
# way at most `max_merge_blocks` blocks go into one update; older ones are dropped, so the
# work per update, and so the latency, stays bounded however long the stream runs.
# `compute(audio, first_sample)` gets the update's audio and the index of its first sample in
# the stream; when it returns a dict with `"timings"` (milliseconds per stage), those are
# recorded per update. Latency is measured on the source's clock (`perf_counter`, or the
# virtual clock of a simulated source).

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
        max_merge_blocks: int = 5,
    ):
        if policy not in THROTTLE_POLICIES:
            raise ValueError(f"throttling policy must be one of {THROTTLE_POLICIES}, not {policy!r}")
        self.source = source
        self.compute = compute
        self.sample_rate = int(sample_rate)
        self.policy = policy
        self.max_pending_blocks = max(1, int(max_pending_blocks))
        self.max_merge_blocks = max(self.max_pending_blocks, int(max_merge_blocks))
        self.hop = int(round(hop_s * sample_rate))
        self.window = int(round(window_s * sample_rate))
        self.audio = StreamRingBuffer(int(audio_seconds_kept * sample_rate))
        self.clock = getattr(source, "clock", time.perf_counter)
        self.reset_counters()

    def reset_counters(self) -> None:
        self.records = []  # one dict per update
        self.dropped_frames = 0
        self.dropped_blocks = 0
        self.batched_updates = 0
        self.merged_blocks = 0
        self.samples_in = 0
        self.samples_processed = 0
        self.max_blocks_waiting = 0

    def reset(self) -> None:
        """Clear the audio buffer and all counters (the stream position is kept)."""
        self.audio.clear()
        self.reset_counters()

    def _drop(self, stale) -> None:
        dropped = sum(len(b.audio) for b in stale)
        self.dropped_blocks += len(stale)
        self.dropped_frames += int(round(dropped / self.hop))

    def step(self):
        """Run one update on the pending audio; return ``compute``'s result (None if no audio came)."""
        blocks = self.source.pending()
        if not blocks:
            return None
        self.samples_in += sum(len(b.audio) for b in blocks)
        self.max_blocks_waiting = max(self.max_blocks_waiting, len(blocks))
        batched = False
        if len(blocks) > self.max_pending_blocks:
            if self.policy == "skip":
                self._drop(blocks[:-1])
                blocks = blocks[-1:]
            else:
                if len(blocks) > self.max_merge_blocks:
                    self._drop(blocks[: -self.max_merge_blocks])
                    blocks = blocks[-self.max_merge_blocks :]
                batched = len(blocks) > 1
                if batched:
                    self.batched_updates += 1
                    self.merged_blocks += len(blocks) - 1
        audio = np.concatenate([b.audio for b in blocks])
        first_sample = blocks[0].index * getattr(self.source, "block_size", len(blocks[0].audio))
        self.audio.extend(audio)
        start = time.perf_counter()
        result = self.compute(audio, first_sample)
        compute_s = time.perf_counter() - start
        if hasattr(self.source, "advance"):
            self.source.advance(compute_s)
        done = self.clock()
        self.samples_processed += len(audio)
        record = {
            "latency_s": done - blocks[0].arrival,
            "compute_s": compute_s,
            "audio_s": len(audio) / self.sample_rate,
            "blocks": len(blocks),
            "batched": batched,
            "stream_s": (first_sample + len(audio)) / self.sample_rate,
        }
        if isinstance(result, dict) and isinstance(result.get("timings"), dict):
            record.update({f"{k}": float(v) for k, v in result["timings"].items()})
        self.records.append(record)
        return result

    def run(self, max_updates: int | None = None, progress: bool = False, on_result=None):
        """Step until the source is exhausted (or ``max_updates``); return the list of results.

        ``on_result(result)`` is called after each update (instead of keeping the results, when given).
        """
        from tqdm.auto import tqdm

        results = []
        bar = tqdm(
            total=getattr(self.source, "n_blocks", None),
            desc="streaming",
            unit="block",
            disable=not progress,
            leave=False,
        )
        updates = 0
        while not self.source.exhausted and (max_updates is None or updates < max_updates):
            result = self.step()
            if result is not None:
                updates += 1
                if on_result is not None:
                    on_result(result)
                else:
                    results.append(result)
                bar.update(self.records[-1]["blocks"])
        bar.close()
        return results

    def summary(self, skip_updates: int = 0) -> dict:
        """Latency percentiles, per-stage compute, real-time factor and throttling counts."""
        return stream_latency_summary(
            self.records[skip_updates:],
            dropped_frames=self.dropped_frames,
            dropped_blocks=self.dropped_blocks,
            batched_updates=self.batched_updates,
            samples_in=self.samples_in,
            sample_rate=self.sample_rate,
            policy=self.policy,
            merged_blocks=self.merged_blocks,
            max_blocks_waiting=self.max_blocks_waiting,
        )


# %% [markdown]
# ## Latency summaries and the frame grid
#
# What the runner's per-update records say: latency percentiles, whether latency grows over the
# stream, drops and merges; and the global 20 ms frame grid.


# %%
STREAM_STAGES = ("encoder_ms", "transformer_ms", "analytics_ms", "payload_ms")


def _percentiles(values, prefix: str) -> dict:
    values = np.asarray(values, dtype=float)
    return {
        f"{prefix}_p50": float(np.percentile(values, 50)),
        f"{prefix}_p95": float(np.percentile(values, 95)),
        f"{prefix}_p99": float(np.percentile(values, 99)),
        f"{prefix}_max": float(values.max()),
    }


def latency_growth(records, min_span_s: float = 60.0) -> dict:
    """Does latency grow with stream length? p95 of the first and last third, and the fitted slope
    (per minute; None for a stream shorter than ``min_span_s``: a slope over seconds extrapolates noise)."""
    if len(records) < 9:
        return {"latency_growth_ms_per_min": None}
    latency = np.array([r["latency_s"] for r in records]) * 1000.0
    t = np.array([r.get("stream_s", i) for i, r in enumerate(records)], dtype=float)
    third = len(latency) // 3
    slope = float(np.polyfit(t / 60.0, latency, 1)[0]) if np.ptp(t) >= min_span_s else None
    return {
        "latency_ms_p95_first_third": float(np.percentile(latency[:third], 95)),
        "latency_ms_p95_last_third": float(np.percentile(latency[-third:], 95)),
        "latency_growth_ms_per_min": slope,
    }


def stream_latency_summary(
    records,
    dropped_frames: int = 0,
    dropped_blocks: int = 0,
    batched_updates: int = 0,
    samples_in: int = 0,
    sample_rate: int = 16000,
    policy: str = "batch",
    merged_blocks: int = 0,
    max_blocks_waiting: int = 0,
) -> dict:
    """Summarise per-update records (``latency_s``, ``compute_s``, ``audio_s``, stage ms) into one dict."""
    if not records:
        return {"updates": 0}
    latency = np.array([r["latency_s"] for r in records]) * 1000.0
    compute = np.array([r["compute_s"] for r in records]) * 1000.0
    audio_s = float(sum(r["audio_s"] for r in records))
    out = {"updates": len(records), **_percentiles(latency, "latency_ms"), **_percentiles(compute, "compute_ms")}
    for stage in STREAM_STAGES:
        values = [r[stage] for r in records if stage in r]
        if values:
            out[f"{stage[:-3]}_ms_mean"] = float(np.mean(values))
            out[f"{stage[:-3]}_ms_p95"] = float(np.percentile(values, 95))
    out.update(
        {
            "audio_seconds_processed": audio_s,
            "audio_seconds_in": samples_in / sample_rate if samples_in else audio_s,
            "real_time_factor": float(compute.sum() / 1000.0 / audio_s) if audio_s > 0 else float("nan"),
            "throttle_policy": policy,
            "batched_updates": int(batched_updates),
            "merged_blocks": int(merged_blocks),
            "dropped_blocks": int(dropped_blocks),
            "dropped_frames": int(dropped_frames),
            "max_blocks_waiting": int(max_blocks_waiting),
            **latency_growth(records),
        }
    )
    return out


def not_real_time(summary, limits) -> str:
    """What kept a stream from real time (``limits``: (label, key, limit) rows), with the load; '' if nothing."""
    behind = [f"{label} {summary[key]:.0f}" for label, key, limit in limits if (summary.get(key) or 0) > limit]
    if not behind:
        return ""
    load = f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores" if hasattr(os, "getloadavg") else ""
    return f"NOT real time in this run: {', '.join(behind)}{load}"


def frame_grid(n_samples: int, sample_rate: int, window_s: float = 0.040, hop_s: float = 0.020) -> np.ndarray:
    """``[frames, 2]`` start/end sample of each complete analysis window in ``n_samples``."""
    window, hop = int(round(window_s * sample_rate)), int(round(hop_s * sample_rate))
    if n_samples < window:
        return np.zeros((0, 2), dtype=int)
    starts = np.arange(0, n_samples - window + 1, hop)
    return np.stack([starts, starts + window], axis=1)
