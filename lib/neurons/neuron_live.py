# %% [markdown]
# # Live neuron view: streamed layer activity, spectrogram, traces, speakers and keywords
#
# `LiveNeuronPipeline` turns a stream of audio blocks (microphone, a file played in real
# time, the browser microphone in Colab) into one **payload** per update. Each update runs:
#
# 1. the fast streaming encoder (`make_stream_encoder`: cached convolution features, the
#    transformer only up to the deepest shown layer, a key/value cache over a bounded left
#    context; Whisper in clip mode), warmed up when a source opens;
# 2. analytics: exponential smoothing of each layer on the 20 ms frame grid, a log-mel column
#    per frame (40 ms windows, so the strip lines up with the heatmaps), 3-D PCA traces per
#    layer, the semantic projector's 2-D/3-D point, online speaker clustering per segment, and
#    the keyword thread's new markers and rolling transcript (Whisper never blocks an update);
# 3. the payload: the new columns of every panel plus diagnostics (latency, RTF, dropped and
#    merged updates, `projector_ready`, `whisper_ready`), with each stage's time.
#
# Ring buffers keep the last `history_s` seconds for drawing; `reset()` clears audio, layers,
# traces, clustering and keywords. The notebook panel (`NeuronLivePanel`, Plotly + ipywidgets)
# and the script mode (`run_live_script`: prints a line per update and saves frames) draw the
# same state.

# %%
import time

import numpy as np

from lib.core.ring_buffer import StreamRingBuffer
from lib.neurons.frame_stream import (
    ExponentialSmoother,
    FileBlockSource,
    FrameStreamRunner,
    MicrophoneBlockSource,
    SimulatedRealtimeSource,
)
from lib.neurons.live_analytics import OnlinePCA, OnlineSpeakerClustering, log_mel_columns
from lib.neurons.semantic_projector import projector_status
from lib.neurons.stream_encoders import make_stream_encoder

LIVE_SOURCES = ("microphone", "file (real time)", "browser microphone (Colab)")


# %% [markdown]
# ## Sources, stepping and reset
#
# A pipeline reads from any block source: a file (in real time, as fast as possible, or on a
# simulated clock), the microphone, or the browser microphone in Colab. `warm_up` runs throw-away
# updates through the whole path before the first real one.


# %%
class _LiveSourceControl:
    """Opening sources, warming up and stepping the stream (part of ``LiveNeuronPipeline``)."""

    # ---------------------------------------------------------------- sources
    def open_file(self, waveform, realtime: bool = True, simulated: bool = False) -> None:
        """Stream a waveform: in real time, as fast as possible, or on a simulated real-time clock."""
        if simulated:
            source, name = SimulatedRealtimeSource(waveform, self.sample_rate, self.block_size), "file (simulated)"
        else:
            source = FileBlockSource(waveform, self.sample_rate, self.block_size, realtime=realtime)
            name = "file (real time)" if realtime else "file (as fast as possible)"
        self.open_source(source, name)

    def open_microphone(self, device=None) -> None:
        """Open the microphone; raises ``MicrophoneUnavailable`` with the reason when there is none."""
        self.open_source(MicrophoneBlockSource(self.sample_rate, self.block_size, device=device), "microphone")

    def open_source(self, source, name: str) -> None:
        """Any block source (``pending()``, ``exhausted``, ``close()``)."""
        self.close()
        if self.keywords is not None:
            self.keywords.start()  # Whisper loads before the stream starts, not during its first updates
        if self.do_warm_up and self.warm_up_s is None:
            self.warm_up_s = self.warm_up()
        self.reset()
        self.source_name = name
        self.runner = FrameStreamRunner(
            source,
            self._compute,
            self.sample_rate,
            policy=self.policy,
            max_pending_blocks=self.max_pending_blocks,
            max_merge_blocks=self.max_merge_blocks,
        )

    def warm_up(self, seconds: float = 2.0) -> float:
        """Throw-away updates through the whole path (encoder, analytics, payload), then reset; seconds spent."""
        start = time.perf_counter()
        spotter, self.keywords = self.keywords, None
        noise = (0.01 * np.random.default_rng(0).standard_normal(int(seconds * self.sample_rate))).astype(np.float32)
        for i in range(0, len(noise), self.block_size):
            self._compute(noise[i : i + self.block_size], i)
        self.keywords = spotter
        self.reset()
        return time.perf_counter() - start

    def close(self) -> None:
        if self.runner is not None:
            self.runner.source.close()

    def stop_keywords(self) -> None:
        if self.keywords is not None:
            self.keywords.stop()

    def step(self):
        if self.runner is None:
            raise RuntimeError("no source open: call open_file(...), open_microphone() or open_source(...) first")
        return self.runner.step()

    def run(self, max_updates: int | None = None, progress: bool = False, on_payload=None):
        if self.runner is None:
            raise RuntimeError("no source open: call open_file(...), open_microphone() or open_source(...) first")
        return self.runner.run(max_updates=max_updates, progress=progress, on_result=on_payload)

    def reset(self) -> None:
        """Clear audio, layers, traces, clustering, keywords and counters (the stream position is kept)."""
        self.encoder.reset()
        buffers = [*self.activity.values(), *self.trace.values(), self.mel, self.frame_index, self.projected]
        for buffer in [*buffers, self.audio]:
            buffer.clear()
        for smoother in self.smoothers.values():
            smoother.reset()
        for pca in self.pca.values():
            pca.reset()
        self.speakers.reset()
        if self.keywords is not None:
            self.keywords.reset()
        self.markers, self.transcript, self.tentative = [], "", ""
        self._audio_end = 0
        self.seq = 0
        if self.runner is not None:
            self.runner.reset()


# %% [markdown]
# ## What an update hands to the view
#
# The payload of new columns, the diagnostics (latency, real-time factor, dropped and merged
# updates, readiness of the projector and of Whisper) and the ring-buffer state the panel draws.


# %%
def _latest_summary(runner, records) -> dict:
    """Latency percentiles of the most recent updates (the live numbers), beside the whole-run ones."""
    latency = np.array([r["latency_s"] for r in records]) * 1000.0
    return {
        "recent_updates": len(records),
        "recent_latency_ms_p50": float(np.percentile(latency, 50)),
        "recent_latency_ms_p95": float(np.percentile(latency, 95)),
    }


class _LiveReadout:
    """The payload, diagnostics and drawable state of a pipeline (part of ``LiveNeuronPipeline``)."""

    def _payload(self, out, new) -> dict:
        self.seq += 1
        return {
            "seq": self.seq,
            "frames": out["frames"],
            "times": out["times"],
            "heatmaps": new["heatmaps"],
            "mel": new.get("mel", np.zeros((0, self.n_mels), np.float32)),
            "pca": new["pca"],
            "projector": new["projector"],
            "speaker_segments": new["speaker_segments"],
            "markers": new.get("markers", []),
            "transcript": self.transcript,
            "tentative": self.tentative,
            "diagnostics": self.diagnostics(window=50),
        }

    # ---------------------------------------------------------------- diagnostics
    def diagnostics(self, window: int | None = None) -> dict:
        """Latency (over the last ``window`` updates, or all), RTF, dropped/merged updates, readiness."""
        summary = {"updates": 0}
        if self.runner is not None and self.runner.records:
            records = self.runner.records[-window:] if window else self.runner.records
            summary = {
                **self.runner.summary(),
                **{k: v for k, v in _latest_summary(self.runner, records).items()},
            }
        keyword_status = (
            self.keywords.status() if self.keywords is not None else {"whisper_ready": False, "reason": "off"}
        )
        return {
            "source": self.source_name,
            "update_seconds": self.block_size / self.sample_rate,
            **summary,
            "frames_buffered": len(self.frame_index),
            "context_gaps": self.encoder.gaps,
            "model": self.model_info.get("model", self.model_info.get("name")),
            "weights": self.model_info.get("weights", "pretrained"),
            "encoder": self.encoder.info(),
            "warm_up_s": self.warm_up_s,
            "projector": projector_status(self.projector),
            "projector_ready": self.projector is not None,
            "whisper_ready": bool(keyword_status.get("whisper_ready")),
            "whisper": keyword_status,
            "speaker_clusters": self.speakers.n_clusters,
            "speaker_segments": len(self.speakers.segments),
            "pca_ready": {str(la): self.pca[la].ready for la in self.layers},
        }

    def state(self) -> dict:
        """Everything the view draws, from the ring buffers (copies)."""
        frames = self.frame_index.latest()
        return {
            "times": self._frame_times(frames),
            "heatmaps": {la: self.activity[la].latest() for la in self.layers},
            "mel": self.mel.latest(),
            "pca": {la: self.trace[la].latest() for la in self.layers},
            "projector": self.projected.latest(),
            "speaker_segments": list(self.speakers.segments[-50:]),
            "markers": list(self.markers),
            "transcript": self.transcript,
            "tentative": self.tentative,
        }

    def _frame_times(self, frames) -> np.ndarray:
        if self.adapter.family == "whisper":
            return frames * self.encoder.stride / self.sample_rate
        return (frames * self.encoder.stride + self.encoder.field / 2.0) / self.sample_rate


# %% [markdown]
# ## The pipeline
#
# `LiveNeuronPipeline` wires the streaming encoder, the analytics and the keyword thread together;
# each update feeds the new audio, computes every panel's new columns and returns the payload.


# %%
class LiveNeuronPipeline(_LiveSourceControl, _LiveReadout):
    """Streaming layer activity, analytics and diagnostics; one payload per update."""

    def __init__(
        self,
        adapter,
        layers=(2, 6, 10),
        update_s: float = 0.2,
        left_context_s: float = 1.0,
        attention: str = "kv",
        cache_conv: bool = True,
        truncate_depth: bool = True,
        quantize: str | None = None,
        smoothing_alpha: float = 0.5,
        policy: str = "batch",
        max_pending_blocks: int = 1,
        max_merge_blocks: int = 5,
        history_s: float = 5.0,
        neuron_order: dict | None = None,
        max_neurons: int = 64,
        pca_basis: dict | None = None,
        projector=None,
        projector_layer=None,
        speaker_layer=None,
        speaker_segment_s: float = 1.5,
        speaker_threshold: float = 0.35,
        speaker_ref=None,
        keyword_spotter=None,
        model_info: dict | None = None,
        n_mels: int = 64,
        warm_up: bool = True,
    ):
        self.adapter = adapter
        self.layers = [int(x) for x in layers]
        self.sample_rate = adapter.sample_rate
        self.block_size = int(round(update_s * self.sample_rate))
        self.policy, self.max_pending_blocks, self.max_merge_blocks = policy, max_pending_blocks, max_merge_blocks
        self.encoder = make_stream_encoder(
            adapter,
            self.layers,
            left_context_s=left_context_s,
            attention=attention,
            cache_conv=cache_conv,
            truncate_depth=truncate_depth,
            quantize=quantize,
        )
        self.frame_rate = float(adapter.frame_rate)
        self.history = max(10, int(round(history_s * self.frame_rate)))
        self.max_neurons = int(max_neurons)
        self.neuron_order = {
            la: np.asarray((neuron_order or {}).get(la, np.arange(adapter.hidden_size)))[: self.max_neurons]
            for la in self.layers
        }
        self.activity = {la: StreamRingBuffer(self.history, len(self.neuron_order[la])) for la in self.layers}
        self.mel = StreamRingBuffer(self.history, n_mels)
        self.n_mels = n_mels
        self.frame_index = StreamRingBuffer(self.history)
        self.trace = {la: StreamRingBuffer(self.history, 3) for la in self.layers}
        self.projected = StreamRingBuffer(self.history, 3)
        self.smoothers = {la: ExponentialSmoother(smoothing_alpha) for la in self.layers}
        self.pca = {la: OnlinePCA(3, basis=(pca_basis or {}).get(la)) for la in self.layers}
        self.projector = projector
        self.projector_layer = int(projector_layer) if projector_layer is not None else self.layers[-1]
        self.speaker_layer = int(speaker_layer) if speaker_layer is not None else self.layers[len(self.layers) // 2]
        ref = speaker_ref if speaker_ref is not None else (pca_basis or {}).get(self.speaker_layer, (None,) * 3)[:2]
        self.speakers = OnlineSpeakerClustering(
            speaker_segment_s, speaker_threshold, frame_rate=self.frame_rate, ref=None if ref[0] is None else ref
        )
        self.keywords = keyword_spotter
        self.markers, self.transcript, self.tentative = [], "", ""
        self.model_info = model_info or {"model": adapter.name, "weights": getattr(adapter, "weights", "pretrained")}
        self.audio = StreamRingBuffer(self.sample_rate)  # the last second: log-mel windows
        self._audio_end = 0
        self.do_warm_up = warm_up
        self.warm_up_s = None
        self.runner = None
        self.source_name = None
        self.seq = 0

    # ---------------------------------------------------------------- one update
    def _feed_audio(self, audio, first_sample: int) -> None:
        if first_sample != self._audio_end:
            self.audio.clear()
        self.audio.extend(audio)
        self._audio_end = first_sample + len(audio)
        if self.keywords is not None:
            self.keywords.feed(audio, first_sample)

    def _compute(self, audio, first_sample):
        out = self.encoder.push(audio, first_sample)
        t0 = time.perf_counter()
        self._feed_audio(audio, first_sample)
        n = len(out["frames"])
        new = {"pca": {}, "speaker_segments": [], "projector": None, "heatmaps": {}}
        if n:
            for layer in self.layers:
                smoothed = self.smoothers[layer].update_many(out["states"][layer])
                shown = smoothed[:, self.neuron_order[layer]]
                self.activity[layer].extend(shown)
                new["heatmaps"][layer] = shown.astype(np.float32)
                traced = self.pca[layer].update(smoothed)
                if len(traced):
                    self.trace[layer].extend(traced)
                    new["pca"][layer] = traced.astype(np.float32)
                if self.projector is not None and layer == self.projector_layer:
                    points = self.projector.transform(smoothed)
                    points = np.pad(points, ((0, 0), (0, max(0, 3 - points.shape[1]))))[:, :3]
                    self.projected.extend(points)
                    new["projector"] = points.astype(np.float32)
                if layer == self.speaker_layer:
                    new["speaker_segments"] = self.speakers.add_frames(out["states"][layer], out["times"])
            centres = np.round(out["times"] * self.sample_rate).astype(np.int64)
            mel = log_mel_columns(
                self.audio.latest(), self._audio_end - len(self.audio), centres, self.sample_rate, n_mels=self.n_mels
            )
            self.mel.extend(mel)
            self.frame_index.extend(out["frames"].astype(np.float32))
            new["mel"] = mel
        if self.keywords is not None:
            polled = self.keywords.poll()
            self.markers = (self.markers + polled["markers"])[-200:]
            self.transcript, self.tentative = polled["transcript"], polled["tentative"]
            new["markers"] = polled["markers"]
        t1 = time.perf_counter()
        payload = self._payload(out, new)
        t2 = time.perf_counter()
        payload["timings"] = {
            **out["timings"],
            "analytics_ms": (t1 - t0) * 1000.0,
            "payload_ms": (t2 - t1) * 1000.0,
        }
        return payload
