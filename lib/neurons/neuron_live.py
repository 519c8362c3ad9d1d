# %% [markdown]
# # Live neuron view: streamed layer activity from the microphone or a file
#
# `LiveNeuronPipeline` ties the pieces together: a `FrameStreamRunner` feeds audio blocks to
# `StreamingLayerActivations` (left context kept), the new 20 ms frames of each layer are
# smoothed (`ExponentialSmoother`) and kept in ring buffers (activity, frame energy, a 2-D
# trace from the offline PCA or from a loaded semantic projector). `reset()` clears every
# buffer and counter; `diagnostics()` gives update latency (p50/p95), dropped frames, batched
# updates, the model (and whether its weights are random) and the projector status.
#
# `NeuronLivePanel` is the ipywidgets front end: Start/Stop listening, Reset, a performance
# mode (redraws every 5th update, fewer neurons, no trace), a source selector (microphone or
# a file played in real time), live heatmaps and traces, and the diagnostics. Without a
# microphone, Start says so and why; the file source still works.

# %%
import threading

import numpy as np

from lib.neurons.frame_stream import (
    ExponentialSmoother,
    FileBlockSource,
    FrameStreamRunner,
    MicrophoneBlockSource,
    MicrophoneUnavailable,
    StreamRingBuffer,
    microphone_status,
)
from lib.neurons.semantic_projector import projector_status
from lib.neurons.streaming_activations import StreamingLayerActivations


class LiveNeuronPipeline:
    """Streaming layer activity with ring buffers, smoothing, throttling and diagnostics."""

    def __init__(
        self,
        adapter,
        layers=(2, 6, 10),
        update_s: float = 0.2,
        left_context_s: float = 1.0,
        smoothing_alpha: float = 0.5,
        policy: str = "batch",
        max_pending_blocks: int = 1,
        history_s: float = 5.0,
        neuron_order: dict | None = None,
        pca_basis: dict | None = None,
        projector=None,
        projector_layer: int | None = None,
        model_info: dict | None = None,
    ):
        self.adapter = adapter
        self.layers = [int(x) for x in layers]
        self.sample_rate = adapter.sample_rate
        self.block_size = int(round(update_s * self.sample_rate))
        self.policy = policy
        self.max_pending_blocks = max_pending_blocks
        self.extractor = StreamingLayerActivations(adapter, self.layers, left_context_s=left_context_s)
        history = max(10, int(round(history_s * adapter.frame_rate)))
        self.activity = {layer: StreamRingBuffer(history, adapter.hidden_size) for layer in self.layers}
        self.energy_db = StreamRingBuffer(history)
        self.frame_index = StreamRingBuffer(history)
        self.trace = {layer: StreamRingBuffer(history, 2) for layer in self.layers}
        self.smoothers = {layer: ExponentialSmoother(smoothing_alpha) for layer in self.layers}
        self.neuron_order = neuron_order or {}
        self.pca_basis = pca_basis or {}  # {layer: (mean, std, components [2, D])}
        self.projector = projector
        self.projector_layer = projector_layer if projector_layer is not None else self.layers[-1]
        self.model_info = model_info or adapter.info()
        self.runner = None
        self.source_name = None

    # ---------------------------------------------------------------- streaming
    def open_file(self, waveform, realtime: bool = True) -> None:
        self._open(
            FileBlockSource(waveform, self.sample_rate, self.block_size, realtime=realtime),
            "file (real time)" if realtime else "file (as fast as possible)",
        )

    def open_microphone(self, device=None) -> None:
        """Open the microphone; raises ``MicrophoneUnavailable`` with the reason when there is none."""
        self._open(MicrophoneBlockSource(self.sample_rate, self.block_size, device=device), "microphone")

    def _open(self, source, name: str) -> None:
        self.close()
        self.reset()
        self.source_name = name
        self.runner = FrameStreamRunner(
            source, self._compute, self.sample_rate, policy=self.policy, max_pending_blocks=self.max_pending_blocks
        )

    def close(self) -> None:
        if self.runner is not None:
            self.runner.source.close()

    def _compute(self, audio, first_sample):
        out = self.extractor.push(audio, first_sample)
        n = len(out["frames"])
        if n == 0:
            return out
        stride = self.extractor.stride
        for layer in self.layers:
            smoothed = self.smoothers[layer].update_many(out["states"][layer])
            self.activity[layer].extend(smoothed)
            if self.projector is not None and layer == self.projector_layer:
                self.trace[layer].extend(self.projector.transform(smoothed))
            elif layer in self.pca_basis:
                mean, std, components = self.pca_basis[layer]
                self.trace[layer].extend(((smoothed - mean) / std) @ np.asarray(components)[:2].T)
        # frame energy (dB) of each new frame's receptive field, from the extractor's contiguous buffer
        buffered, buffer_start = self.extractor._buffer, self.extractor._buffer_start
        energies = []
        for k in out["frames"]:
            lo = int(k * stride) - buffer_start
            window = buffered[max(0, lo) : max(0, lo + self.extractor.field)]
            energies.append(10 * np.log10(np.mean(window**2) + 1e-10) if len(window) else -100.0)
        self.energy_db.extend(np.asarray(energies))
        self.frame_index.extend(out["frames"].astype(np.float32))
        return out

    def step(self):
        if self.runner is None:
            raise RuntimeError("no source open: call open_file(...) or open_microphone() first")
        return self.runner.step()

    def run(self, max_updates: int | None = None, progress: bool = False):
        if self.runner is None:
            raise RuntimeError("no source open: call open_file(...) or open_microphone() first")
        return self.runner.run(max_updates=max_updates, progress=progress)

    def reset(self) -> None:
        """Clear every buffer, smoother, the streaming context and the counters."""
        self.extractor.reset()
        for buffer in [*self.activity.values(), *self.trace.values(), self.energy_db, self.frame_index]:
            buffer.clear()
        for smoother in self.smoothers.values():
            smoother.reset()
        if self.runner is not None:
            self.runner.reset()  # the stream goes on; the extractor restarts at the next whole frame

    def diagnostics(self) -> dict:
        summary = self.runner.summary() if self.runner is not None else {"updates": 0}
        return {
            "source": self.source_name,
            "update_seconds": self.block_size / self.sample_rate,
            **summary,
            "frames_buffered": len(self.frame_index),
            "context_gaps": self.extractor.gaps,
            "model": self.model_info.get("model", self.model_info.get("name")),
            "weights": self.model_info.get("weights", "checkpoint"),
            "projector": projector_status(self.projector),
        }

    # ---------------------------------------------------------------- drawing
    def figure(self, performance: bool = False, max_neurons: int = 64):
        """A matplotlib figure of the buffered activity (heatmap per layer), energy and traces."""
        import matplotlib.pyplot as plt

        max_neurons = min(max_neurons, 24) if performance else max_neurons
        show_trace = not performance and any(len(t) for t in self.trace.values())
        rows = len(self.layers) + 1
        cols = 2 if show_trace else 1
        fig, axes = plt.subplots(
            rows,
            cols,
            figsize=(11 if show_trace else 8, 1.6 * rows + 0.6),
            squeeze=False,
            gridspec_kw={"width_ratios": [3, 1]} if show_trace else None,
        )
        frames = self.frame_index.latest()
        t = frames / self.adapter.frame_rate if len(frames) else np.zeros(0)
        for i, layer in enumerate(self.layers):
            ax = axes[i, 0]
            x = self.activity[layer].latest()
            if len(x):
                order = self.neuron_order.get(layer, np.arange(x.shape[1]))[:max_neurons]
                z = (x[:, order] - x[:, order].mean(0)) / (x[:, order].std(0) + 1e-6)
                ax.imshow(
                    z.T,
                    aspect="auto",
                    origin="lower",
                    cmap="RdBu_r",
                    vmin=-3,
                    vmax=3,
                    extent=[t[0], t[-1] + 0.02, 0, len(order)],
                    interpolation="nearest",
                )
            ax.set_ylabel(f"layer {layer}\nneuron")
            if show_trace:
                tr = self.trace[layer].latest()
                axes[i, 1].plot(tr[:, 0], tr[:, 1], lw=0.8) if len(tr) else None
                if len(tr):
                    axes[i, 1].scatter(tr[-1:, 0], tr[-1:, 1], c="red", s=12)
                kind = "projector" if self.projector is not None and layer == self.projector_layer else "PCA"
                axes[i, 1].set_title(f"{kind} trace" + ("" if i else " (newest red)"), fontsize=8)
        axes[-1, 0].plot(t, self.energy_db.latest(), color="k", lw=0.8)
        axes[-1, 0].set_ylabel("energy dB")
        axes[-1, 0].set_xlabel("stream time (s)")
        if show_trace:
            axes[-1, 1].axis("off")
        fig.tight_layout()
        return fig


class NeuronLivePanel:
    """ipywidgets controls over a ``LiveNeuronPipeline``: Start/Stop, Reset, performance mode."""

    def __init__(self, pipeline: LiveNeuronPipeline, file_waveform=None):
        import ipywidgets as widgets

        self.pipeline = pipeline
        self.file_waveform = file_waveform
        self.mic_ok, self.mic_message = microphone_status(pipeline.sample_rate)
        options = ["microphone"] + (["file (real time)"] if file_waveform is not None else [])
        default = "microphone" if self.mic_ok or file_waveform is None else "file (real time)"
        self.source = widgets.Dropdown(options=options, value=default, description="source")
        self.start = widgets.ToggleButton(description="Start listening", icon="microphone", value=False)
        self.reset_button = widgets.Button(description="Reset", icon="refresh")
        self.performance = widgets.Checkbox(description="performance mode (render less)", value=False)
        self.status = widgets.HTML()
        self.plot = widgets.Output()
        self.start.observe(self._toggle, names="value")
        self.reset_button.on_click(lambda _b: self.reset())
        self._thread = None
        self._stop = threading.Event()
        self.updates_drawn = 0
        self.message = (
            ""
            if self.mic_ok
            else f"No microphone: {self.mic_message}"
            + (" Choose the file source to stream a recording instead." if file_waveform is not None else "")
        )
        self._show_status()
        self.widget = widgets.VBox(
            [widgets.HBox([self.source, self.start, self.reset_button, self.performance]), self.status, self.plot]
        )

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def _show_status(self) -> None:
        d = self.pipeline.diagnostics()
        lat = (
            (
                f"latency p50 {d['latency_ms_p50']:.0f} ms, p95 {d['latency_ms_p95']:.0f} ms, "
                f"RTF {d['real_time_factor']:.2f}"
            )
            if d.get("updates")
            else "no updates yet"
        )
        proj = d["projector"]
        self.status.value = (
            (f"<b style='color:#b00'>{self.message}</b><br>" if self.message else "")
            + f"model {d['model']} ({d['weights']} weights) | source {d['source']} | {lat} | "
            f"updates {d.get('updates', 0)} | dropped frames {d.get('dropped_frames', 0)} | "
            f"batched updates {d.get('batched_updates', 0)} | projector "
            + (f"loaded ({proj['method']}, {proj['labels']} labels)" if proj["loaded"] else "not loaded")
        )

    def open_selected_source(self) -> bool:
        """Open the chosen source; False (with the message shown) when it cannot be opened."""
        if self.source.value == "microphone":
            try:
                self.pipeline.open_microphone()
            except MicrophoneUnavailable as error:
                self.message = f"No microphone: {error}"
                self._show_status()
                return False
        else:
            self.pipeline.open_file(self.file_waveform, realtime=True)
        self.message = ""
        return True

    def _toggle(self, change) -> None:
        if change["new"]:
            if not self.open_selected_source():
                self.start.value = False
                return
            self.start.description = "Stop"
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        else:
            self.stop()

    def _loop(self) -> None:
        runner = self.pipeline.runner
        while not self._stop.is_set() and not runner.source.exhausted:
            if self.pipeline.step() is not None:
                self.draw_if_due()
        self.pipeline.close()
        self.draw()
        self.start.description = "Start listening"

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        self.start.description = "Start listening"

    def reset(self) -> None:
        self.pipeline.reset()
        self.updates_drawn = 0
        self.plot.outputs = ()
        self._show_status()

    def draw_if_due(self) -> None:
        every = 5 if self.performance.value else 1
        updates = self.pipeline.runner.summary().get("updates", 0) if self.pipeline.runner else 0
        if updates % every == 0:
            self.draw()
        else:
            self._show_status()

    def draw(self) -> None:
        import base64
        import io

        import matplotlib.pyplot as plt

        fig = self.pipeline.figure(performance=self.performance.value)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=60 if self.performance.value else 90)
        plt.close(fig)
        # replace the Output's content in one assignment: safe from the streaming thread, no flicker
        self.plot.outputs = (
            {
                "output_type": "display_data",
                "metadata": {},
                "data": {
                    "image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
                    "text/plain": "<live neuron view>",
                },
            },
        )
        self.updates_drawn += 1
        self._show_status()
