# %% [markdown]
# # Live view: the panel in the notebook, frames in script mode
#
# Two views of one `LiveNeuronPipeline` state:
#
# - `live_figure(pipeline)`: a matplotlib frame of every panel (log-mel strip, layer heatmaps
#   with keyword markers, speaker clusters per segment, transcript, PCA traces per layer, the
#   semantic projector with its label grid, diagnostics). `run_live_script` streams a source,
#   prints one line per update and saves such frames: the script mode.
# - `NeuronLivePanel`: ipywidgets + Plotly in the notebook. Start/Stop, source (microphone,
#   a file in real time, the browser microphone in Colab), performance mode (fewer neurons,
#   slower refresh), Reset, projector 2-D/3-D and grid toggles, a diagnostics sidebar. The
#   audio is processed in one thread and drawn in another at a fixed refresh rate, so drawing
#   never delays an update. Without a microphone, Start says why and the file source works.
#
# The model's name, and RANDOM WEIGHTS when they are, head every frame.

# %%
import base64
import threading
import time

import numpy as np

from lib.core.audio import resample_block
from lib.neurons.frame_stream import MicrophoneUnavailable, QueueBlockSource, microphone_status
from lib.neurons.live_analytics import projector_grid
from lib.neurons.neuron_live import LIVE_SOURCES


def live_title(pipeline) -> str:
    info = pipeline.model_info
    weights = info.get("weights", "pretrained")
    label = "RANDOM WEIGHTS (timing only)" if weights == "random" else f"{weights} weights"
    encoder = getattr(pipeline, "encoder", None)  # the streamed mode (Whisper streams in clip mode)
    mode = (encoder.info().get("whisper_mode") if encoder is not None else None) or getattr(
        pipeline.adapter, "whisper_mode", None
    )
    return f"{info.get('model', pipeline.adapter.name)} ({label}{', ' + mode + ' mode' if mode else ''})"


def _zscore_rows(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / (x.std(0) + 1e-6) if len(x) else x


def live_figure(pipeline, performance: bool = False, max_neurons: int = 64):
    """A matplotlib frame of every panel of the live view."""
    import matplotlib.pyplot as plt

    s, d = pipeline.state(), pipeline.diagnostics(window=50)
    layers, t = pipeline.layers, s["times"]
    max_neurons = min(max_neurons, 24) if performance else max_neurons
    rows = len(layers) + 2
    fig = plt.figure(figsize=(14, 1.5 * rows + 1.2))
    grid = fig.add_gridspec(rows, 3, width_ratios=[3.2, 1, 1])
    extent = [t[0] - 0.01, t[-1] + 0.01] if len(t) else [0, 1]
    ax = fig.add_subplot(grid[0, 0])
    if len(s["mel"]):
        ax.imshow(s["mel"].T, aspect="auto", origin="lower", cmap="magma", extent=[*extent, 0, pipeline.n_mels])
    ax.set_ylabel("log-mel")
    ax.set_title(live_title(pipeline), fontsize=9, loc="left")
    shared = ax
    for i, layer in enumerate(layers):
        ax = fig.add_subplot(grid[1 + i, 0], sharex=shared)
        x = s["heatmaps"][layer][:, :max_neurons]
        if len(x):
            ax.imshow(_zscore_rows(x).T, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-3, vmax=3,
                      extent=[*extent, 0, x.shape[1]], interpolation="nearest")  # fmt: skip
        for m in s["markers"]:
            if len(t) and m["end"] >= t[0]:
                ax.axvspan(m["start"], m["end"], color="cyan", alpha=0.15)
        ax.set_ylabel(f"L{layer}")
    ax = fig.add_subplot(grid[-1, 0], sharex=shared)
    for seg in s["speaker_segments"]:
        ax.axvspan(seg["start"], seg["end"], color=f"C{seg['cluster'] % 10}", alpha=0.6)
        ax.text((seg["start"] + seg["end"]) / 2, 0.5, f"S{seg['cluster']}", ha="center", va="center", fontsize=7)
    for m in s["markers"]:
        if len(t) and m["end"] >= t[0]:
            ax.text(m["start"], 0.9, m["keyword"], fontsize=7, color="teal", va="top")
    ax.set_yticks([])
    ax.set_ylabel("speaker")
    ax.set_xlabel("stream time (s)")
    text = (s["transcript"][-110:] + (" [" + s["tentative"][-40:] + "]" if s["tentative"] else "")) or "(no transcript)"
    ax.set_title(text, fontsize=8, loc="left")
    for i, layer in enumerate(layers):
        ax = fig.add_subplot(grid[1 + i, 1])
        tr = s["pca"][layer]
        if len(tr):
            ax.plot(tr[:, 0], tr[:, 1], lw=0.7)
            ax.scatter(tr[-1:, 0], tr[-1:, 1], c="red", s=10)
        ax.set_title(f"L{layer} PCA trace", fontsize=8)
        ax.tick_params(labelsize=6)
    ax = fig.add_subplot(grid[1:, 2])
    if pipeline.projector is not None:
        g = projector_grid(pipeline.projector)
        ax.scatter(g["points"][:, 0], g["points"][:, 1], c=g["label_index"], cmap="tab20", s=6, alpha=0.25)
        p = s["projector"]
        if len(p):
            ax.plot(p[:, 0], p[:, 1], lw=0.7, color="k")
            ax.scatter(p[-1:, 0], p[-1:, 1], c="red", s=14)
        ax.set_title(f"projector L{pipeline.projector_layer} (grid: nearest label)", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no projector loaded", ha="center")
    ax = fig.add_subplot(grid[0, 1:])
    ax.axis("off")
    ax.text(0, 1, diagnostics_text(d), fontsize=7, va="top", family="monospace")
    fig.tight_layout()
    return fig


def diagnostics_text(d: dict) -> str:
    if not d.get("updates"):
        lat = "no updates yet"
    else:
        lat = (
            f"latency p50 {d['recent_latency_ms_p50']:.0f} / p95 {d['recent_latency_ms_p95']:.0f} ms "
            f"(all: p95 {d['latency_ms_p95']:.0f}, p99 {d['latency_ms_p99']:.0f}) RTF {d['real_time_factor']:.2f}"
        )
    whisper = d.get("whisper", {})
    return (
        f"{lat}\nupdates {d.get('updates', 0)}  merged {d.get('batched_updates', 0)}  dropped frames "
        f"{d.get('dropped_frames', 0)}  source {d.get('source')}\nprojector_ready {d.get('projector_ready')}  "
        f"whisper_ready {d.get('whisper_ready')}"
        + (f" ({whisper.get('reason')})" if not d.get("whisper_ready") and whisper.get("reason") else "")
        + f"  speaker clusters {d.get('speaker_clusters', 0)}"
    )


def run_live_script(pipeline, waveform=None, out_dir=None, save_every: int = 25, realtime: bool = False,
                    max_updates=None, quiet: bool = False) -> dict:  # fmt: skip
    """Script mode: stream ``waveform`` (or the microphone when None), print a line per update, save frames.

    Returns ``{"diagnostics", "frames": [saved PNG paths], "payloads": count}``.
    """
    from pathlib import Path

    import matplotlib.pyplot as plt

    if waveform is None:
        pipeline.open_microphone()
    else:
        pipeline.open_file(waveform, realtime=realtime)
    saved, count = [], [0]
    out = Path(out_dir) if out_dir else None

    def on_payload(payload):
        count[0] += 1
        d = payload["diagnostics"] or {}
        if not quiet:
            p95 = d.get("recent_latency_ms_p95")
            p95 = f"{p95:5.0f}" if p95 is not None and p95 == p95 else "    -"  # none yet after one update
            print(
                f"#{payload['seq']:4d} frames {len(payload['frames']):3d} "
                f"enc {payload['timings']['encoder_ms']:5.1f} tr {payload['timings']['transformer_ms']:5.1f} ms "
                f"p95 {p95} ms | {payload['transcript'][-60:]}"
            )
        if out is not None and save_every and payload["seq"] % save_every == 0:
            out.mkdir(parents=True, exist_ok=True)
            fig = live_figure(pipeline)
            path = out / f"live_frame_{payload['seq']:05d}.png"
            fig.savefig(path, dpi=70)
            plt.close(fig)
            saved.append(str(path))

    pipeline.run(max_updates=max_updates, on_payload=on_payload)
    pipeline.stop_keywords()
    return {"diagnostics": pipeline.diagnostics(), "frames": saved, "payloads": count[0]}


# %% [markdown]
# ## The browser microphone in Colab
#
# Colab's kernel has no sound card. `colab_browser_microphone` runs JavaScript in the page
# that records the browser microphone (Web Audio), sends 200 ms chunks of float32 samples
# into the kernel (`google.colab.kernel.invokeFunction`), where they are resampled to the
# model's rate and put on a `QueueBlockSource`, which the pipeline streams like any source.

# %%
COLAB_MIC_JS = """
(async () => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const ctx = new AudioContext();
  const src = ctx.createMediaStreamSource(stream);
  const proc = ctx.createScriptProcessor(4096, 1, 1);
  let parts = [], length = 0;
  proc.onaudioprocess = (e) => {
    const x = e.inputBuffer.getChannelData(0);
    parts.push(new Float32Array(x)); length += x.length;
    if (length >= ctx.sampleRate * CHUNK_S) {
      const out = new Float32Array(length); let o = 0;
      for (const p of parts) { out.set(p, o); o += p.length; }
      parts = []; length = 0;
      const bytes = new Uint8Array(out.buffer); let bin = "";
      for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
      google.colab.kernel.invokeFunction("audiolens.mic_chunk", [btoa(bin), ctx.sampleRate], {});
    }
  };
  src.connect(proc); proc.connect(ctx.destination);
  window.audiolensStopMic = () => { proc.disconnect(); src.disconnect();
    stream.getTracks().forEach(t => t.stop()); ctx.close(); };
})();
"""


def in_colab() -> bool:
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return True


def decode_browser_chunk(b64: str, browser_rate: float, target_rate: int = 16000) -> np.ndarray:
    """Base64 float32 samples at the browser's rate -> float32 at ``target_rate``."""
    return resample_block(np.frombuffer(base64.b64decode(b64), dtype=np.float32), browser_rate, target_rate)


def colab_browser_microphone(sample_rate: int, block_size: int, chunk_s: float = 0.2) -> QueueBlockSource:
    """Start recording the browser microphone in Colab; returns the source its chunks feed."""
    if not in_colab():
        raise MicrophoneUnavailable("the browser microphone source works in Google Colab only")
    from google.colab import output
    from IPython.display import Javascript, display

    source = QueueBlockSource(sample_rate, block_size)
    output.register_callback("audiolens.mic_chunk", lambda b64, rate: source.put(decode_browser_chunk(b64, rate)))
    display(Javascript(COLAB_MIC_JS.replace("CHUNK_S", str(float(chunk_s)))))
    original_close = source.close

    def close():
        display(Javascript("window.audiolensStopMic && window.audiolensStopMic();"))
        original_close()

    source.close = close
    return source


# %% [markdown]
# ## The panel's controls
#
# The chosen source opens, Start/Stop toggles two background loops (one computes updates, one
# redraws), and Reset clears the pipeline.

# %%


class _NeuronPanelControls:
    """Opening the chosen source, start/stop, the compute and draw loops, reset (part of ``NeuronLivePanel``)."""

    # ---------------------------------------------------------------- controls
    def open_selected_source(self) -> bool:
        """Open the chosen source; False (with the message shown) when it cannot be opened."""
        choice = self.source.value
        try:
            if choice == "microphone":
                self.pipeline.open_microphone()
            elif choice == LIVE_SOURCES[2]:
                p = self.pipeline
                p.open_source(colab_browser_microphone(p.sample_rate, p.block_size), choice)
            else:
                self.pipeline.open_file(self.file_waveform, realtime=True)
        except MicrophoneUnavailable as error:
            self.message = f"No microphone: {error}" + (
                " Choose 'file (real time)' to stream a recording instead." if self.file_waveform is not None else ""
            )
            self._show_status()
            return False
        self.message = ""
        return True

    def _toggle(self, change) -> None:
        if change["new"]:
            if not self.open_selected_source():
                self.start.value = False
                return
            self.start.description = "Stop"
            self._stop.clear()
            self._threads = [
                threading.Thread(target=self._compute_loop, daemon=True),
                threading.Thread(target=self._draw_loop, daemon=True),
            ]
            for thread in self._threads:
                thread.start()
        else:
            self.stop()

    def _compute_loop(self) -> None:
        runner = self.pipeline.runner
        while not self._stop.is_set() and not runner.source.exhausted:
            self.pipeline.step()
        self.pipeline.close()
        self._stop.set()

    def _draw_loop(self) -> None:
        while not self._stop.is_set():
            self.render()
            time.sleep(self.refresh_s * (4 if self.performance.value else 1))
        self.render()
        self.start.value = False
        self.start.description = "Start listening"

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        self._threads = []
        self.pipeline.close()
        self.start.description = "Start listening"

    def reset(self) -> None:
        self.pipeline.reset()
        self.render()


# %% [markdown]
# ## The notebook panel
#
# `NeuronLivePanel(pipeline)` builds the figures and the sidebar and redraws them from the
# pipeline's state every `refresh_s` seconds.


# %%
class NeuronLivePanel(_NeuronPanelControls):
    """ipywidgets + Plotly live view over a ``LiveNeuronPipeline``."""

    def __init__(self, pipeline, file_waveform=None, refresh_s: float = 0.3):
        import ipywidgets as widgets
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        self.pipeline, self.file_waveform, self.refresh_s = pipeline, file_waveform, refresh_s
        self.mic_ok, self.mic_message = microphone_status(pipeline.sample_rate)
        options = ["microphone"]
        if file_waveform is not None:
            options.append(LIVE_SOURCES[1])
        if in_colab():
            options.append(LIVE_SOURCES[2])
        default = "microphone" if self.mic_ok or len(options) == 1 else options[-1]
        self.source = widgets.Dropdown(options=options, value=default, description="source")
        self.start = widgets.ToggleButton(description="Start listening", icon="microphone", value=False)
        self.reset_button = widgets.Button(description="Reset", icon="refresh")
        self.performance = widgets.Checkbox(description="performance mode", value=False)
        self.projection = widgets.ToggleButtons(options=["2-D", "3-D"], value="2-D", description="projector")
        self.grid = widgets.Checkbox(description="label grid", value=True)
        self.status = widgets.HTML()
        self.sidebar = widgets.HTML(layout=widgets.Layout(width="300px"))
        self.transcript = widgets.HTML()
        layers = pipeline.layers
        titles = ["log-mel (40 ms windows, 20 ms hop)"] + [f"layer {la}" for la in layers] + ["speakers / keywords"]
        main = make_subplots(rows=len(layers) + 2, cols=1, shared_xaxes=True, vertical_spacing=0.03,
                             subplot_titles=titles)  # fmt: skip
        main.add_trace(go.Heatmap(z=[[0]], colorscale="Magma", showscale=False), row=1, col=1)
        for i in range(len(layers)):
            main.add_trace(go.Heatmap(z=[[0]], colorscale="RdBu", reversescale=True, zmin=-3, zmax=3,
                                      showscale=False), row=2 + i, col=1)  # fmt: skip
        main.add_trace(go.Scatter(x=[], y=[], mode="markers+text", marker=dict(size=12, symbol="square")),
                       row=len(layers) + 2, col=1)  # fmt: skip
        main.update_layout(height=170 * (len(layers) + 2), margin=dict(l=40, r=10, t=40, b=30), showlegend=False,
                           title=live_title(pipeline))  # fmt: skip
        self.main = go.FigureWidget(main)
        traces = make_subplots(rows=1, cols=len(layers), subplot_titles=[f"L{la} PCA" for la in layers])
        for i in range(len(layers)):
            traces.add_trace(go.Scatter(x=[], y=[], mode="lines", line=dict(width=1)), row=1, col=1 + i)
        traces.update_layout(height=230, margin=dict(l=30, r=10, t=30, b=20), showlegend=False)
        self.traces = go.FigureWidget(traces)
        self.projector_fig = go.FigureWidget()
        self._build_projector()
        self.start.observe(self._toggle, names="value")
        self.reset_button.on_click(lambda _b: self.reset())
        self.projection.observe(lambda _c: self._build_projector(), names="value")
        self.grid.observe(lambda _c: self._build_projector(), names="value")
        self._stop = threading.Event()
        self._threads = []
        self.draws = 0
        self.message = "" if self.mic_ok else f"No microphone: {self.mic_message} Choose another source."
        self._show_status()
        controls = widgets.HBox([self.source, self.start, self.reset_button, self.performance])
        view = widgets.VBox([self.main, self.transcript, self.traces])
        side = widgets.VBox([self.sidebar, widgets.HBox([self.projection]), self.grid, self.projector_fig])
        self.widget = widgets.VBox([controls, self.status, widgets.HBox([view, side])])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def _build_projector(self) -> None:
        import plotly.graph_objects as go

        fig, p = self.projector_fig, self.pipeline.projector
        with fig.batch_update():
            fig.data = ()
            three = self.projection.value == "3-D"
            if p is None:
                fig.update_layout(title="no semantic projector loaded", height=330)
                return
            dims = 3 if three and p.components.shape[1] >= 3 else 2
            if self.grid.value:
                g = projector_grid(p, 9 if dims == 3 else 21, dims=dims)
                kw = dict(mode="markers", marker=dict(size=2 if dims == 3 else 5, color=g["label_index"],
                          colorscale="Turbo", opacity=0.25), text=g["labels"], name="grid")  # fmt: skip
                pts = g["points"]
                fig.add_trace(go.Scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], **kw) if dims == 3
                              else go.Scatter(x=pts[:, 0], y=pts[:, 1], **kw))  # fmt: skip
            c = p.centroids
            kw = dict(mode="markers+text", text=list(p.labels), marker=dict(size=6, color="black"), name="labels")
            fig.add_trace(go.Scatter3d(x=c[:, 0], y=c[:, 1], z=c[:, 2], **kw) if dims == 3
                          else go.Scatter(x=c[:, 0], y=c[:, 1], **kw))  # fmt: skip
            kw = dict(mode="lines+markers", marker=dict(size=3, color="red"), line=dict(color="red"), name="live")
            fig.add_trace(go.Scatter3d(x=[], y=[], z=[], **kw) if dims == 3 else go.Scatter(x=[], y=[], **kw))
            note = "" if dims == 3 or not three else " (projector has 2 dimensions)"
            fig.update_layout(title=f"projector L{self.pipeline.projector_layer} {dims}-D{note}", height=330,
                              showlegend=False, margin=dict(l=10, r=10, t=40, b=10))  # fmt: skip

    # ---------------------------------------------------------------- drawing
    def render(self) -> None:
        """Draw the pipeline's current state into the figures and the sidebar (one refresh)."""
        pipeline = self.pipeline
        s = pipeline.state()
        t = s["times"]
        k = 24 if self.performance.value else pipeline.max_neurons
        with self.main.batch_update():
            self.main.data[0].update(z=s["mel"].T if len(s["mel"]) else [[0]], x=t if len(t) else None)
            for i, layer in enumerate(pipeline.layers):
                x = s["heatmaps"][layer][:, :k]
                self.main.data[1 + i].update(z=_zscore_rows(x).T if len(x) else [[0]], x=t if len(t) else None)
            segs, marks = s["speaker_segments"], [m for m in s["markers"] if len(t) and m["end"] >= t[0]]
            self.main.data[-1].update(
                x=[(g["start"] + g["end"]) / 2 for g in segs] + [m["start"] for m in marks],
                y=[0] * len(segs) + [1] * len(marks),
                text=[f"S{g['cluster']}" for g in segs] + [m["keyword"] for m in marks],
                marker=dict(color=[g["cluster"] for g in segs] + [-1] * len(marks), colorscale="Turbo"),
            )
        if not self.performance.value:
            with self.traces.batch_update():
                for i, layer in enumerate(pipeline.layers):
                    tr = s["pca"][layer]
                    self.traces.data[i].update(x=tr[:, 0] if len(tr) else [], y=tr[:, 1] if len(tr) else [])
            if pipeline.projector is not None and self.projector_fig.data:
                p, live = s["projector"][-100:], self.projector_fig.data[-1]
                update = dict(x=p[:, 0], y=p[:, 1]) if len(p) else dict(x=[], y=[])
                if hasattr(live, "z"):
                    update["z"] = p[:, 2] if len(p) else []
                live.update(**update)
        self.transcript.value = (
            f"<b>transcript</b>: {s['transcript'][-300:]} <i style='color:#888'>{s['tentative'][-80:]}</i>"
        )
        self._show_status()
        self.draws += 1

    def _show_status(self) -> None:
        d = self.pipeline.diagnostics(window=50)
        self.status.value = f"<b style='color:#b00'>{self.message}</b>" if self.message else ""
        self.sidebar.value = "<pre style='font-size:11px'>" + diagnostics_text(d) + "</pre>"
