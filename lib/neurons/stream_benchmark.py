# %% [markdown]
# # Streaming benchmark: latency, stages, real-time factor and fidelity
#
# What `audiolens bench streaming` measures (and what the notebook shows from its
# `bench.json`):
#
# - **audio**: real LibriSpeech speech from several speakers, each utterance padded to the
#   20 ms grid and concatenated into one stream;
# - **latency**: the live pipeline (encoder + analytics + payload) on that stream, played in
#   real time after a warm-up, one update per `update_s`: p50/p95/p99 update latency, per-stage
#   compute (feature encoder, transformer, analytics, payload), real-time factor, merged and
#   dropped updates, peak RSS, and whether latency grows along the stream;
# - **fidelity**: per layer, the mean over neurons of the Pearson correlation over frames
#   between streamed activations and the same layers computed offline on each whole utterance
#   at the same frames;
# - **switches**: each configuration (context length x switch) streamed on a simulated
#   real-time clock (`SimulatedRealtimeSource`) with its latency and fidelity, so the table
#   shows what each switch buys and costs.

# %%
import os
import platform
import resource
import time

import numpy as np
import torch

from lib.core.audio import load_audio
from lib.core.datasets import load_librispeech
from lib.neurons.frame_stream import FrameStreamRunner, SimulatedRealtimeSource
from lib.neurons.stream_encoders import WhisperStreamEncoder, make_stream_encoder
from lib.neurons.streaming_activations import StreamingLayerActivations


def benchmark_speech(data_path=None, seconds: float = 60.0, seed: int = 0, stride: int = 320) -> dict:
    """``{"waveform", "utterances": [(offset, length, speaker, name)], "seconds", "speakers"}``.

    Utterances of distinct LibriSpeech speakers (alternating sexes when known), each zero-padded
    to a multiple of ``stride`` samples, concatenated until ``seconds`` of audio.
    """
    manifest = load_librispeech(data_path, subset="sample").sample(frac=1.0, random_state=seed)
    if "sex" in manifest:
        manifest["_r"] = manifest.groupby("sex").cumcount()
        manifest = manifest.sort_values(["_r", "sex"]).drop(columns="_r")
    pieces, utterances, total = [], [], 0
    for row in manifest.itertuples():
        y = load_audio(row.path, sr=16000)
        y = np.pad(y, (0, (-len(y)) % stride))
        utterances.append((total, len(y), str(row.speaker), str(row.utterance)))
        pieces.append(y)
        total += len(y)
        if total >= seconds * 16000:
            break
    if total < seconds * 16000 * 0.5:
        raise ValueError(f"only {total / 16000:.1f} s of LibriSpeech audio found; the benchmark needs {seconds} s")
    waveform = np.concatenate(pieces)[: int(seconds * 16000)]
    utterances = [u for u in utterances if u[0] < len(waveform)]
    return {
        "waveform": waveform.astype(np.float32),
        "utterances": utterances,
        "seconds": len(waveform) / 16000,
        "speakers": len({u[2] for u in utterances}),
    }


def offline_reference(adapter, speech: dict, layers, max_seconds: float | None = None) -> list:
    """Per utterance ``(offset, {layer: [frames, D]})`` computed on the whole utterance (offline)."""
    out, used = [], 0
    for offset, length, _speaker, _name in speech["utterances"]:
        if max_seconds is not None and used >= max_seconds * 16000:
            break
        y = speech["waveform"][offset : offset + length]
        if len(y) < 16000 // 4:
            continue
        out.append((offset, adapter.hidden_states(y, layers=layers)))
        used += len(y)
    return out


def stream_fidelity(frames, states: dict, reference: list, stride: int = 320, field: int = 400) -> dict:
    """Per layer: mean over neurons of Pearson r (over frames) between streamed and offline activity.

    ``frames``: global frame indices of ``states`` rows; ``reference`` from ``offline_reference``.
    Frames whose receptive field crosses an utterance boundary are left out.
    """
    frames = np.asarray(frames)
    position = {int(f): i for i, f in enumerate(frames)}
    result = {}
    for layer in states:
        a_rows, b_rows = [], []
        for offset, offline in reference:
            o = offline[layer]
            first = offset // stride
            for local in range(len(o)):
                i = position.get(first + local)
                if i is not None:
                    a_rows.append(states[layer][i])
                    b_rows.append(o[local])
        if len(a_rows) < 3:
            result[layer] = float("nan")
            continue
        a, b = np.asarray(a_rows, np.float64), np.asarray(b_rows, np.float64)
        a = (a - a.mean(0)) / (a.std(0) + 1e-8)
        b = (b - b.mean(0)) / (b.std(0) + 1e-8)
        result[layer] = float(np.mean((a * b).mean(0)))
    return result


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine_info() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    uptime = ""
    try:
        import subprocess

        uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return {
        "uptime": uptime,
        "load_average": list(load),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# %% [markdown]
# ## One configuration on a simulated real-time clock

# %%
SWITCH_COLUMNS = ("left_context_s", "attention", "cache_conv", "truncate_depth", "quantize")


def default_switch_configs(full: bool = True) -> list:
    """The rows of the switch table: the old path, then each switch added, then context lengths."""
    fast = dict(attention="kv", cache_conv=True, truncate_depth=True, quantize=None)
    rows = [
        dict(name="whole model on window (old path)", encoder="reference", left_context_s=1.0),
        dict(
            name="recompute window", attention="recompute", cache_conv=False, truncate_depth=False, left_context_s=1.0
        ),
        dict(
            name="+ truncated depth", attention="recompute", cache_conv=False, truncate_depth=True, left_context_s=1.0
        ),
        dict(name="+ cached conv", attention="recompute", cache_conv=True, truncate_depth=True, left_context_s=1.0),
        dict(name="+ kv cache", **fast, left_context_s=1.0),
    ]
    if full:
        rows += [dict(name="kv cache", **fast, left_context_s=c) for c in (0.5, 2.0, 4.0)]
        rows += [dict(name="recompute + cached conv", **{**fast, "attention": "recompute"}, left_context_s=0.5)]
        rows += [dict(name="kv cache + int8", **{**fast, "quantize": "int8"}, left_context_s=2.0)]
    return rows


def switch_configs_for(family: str, full: bool = True, truncation_helps: bool = True) -> tuple:
    """``(configs, skipped)``: the switch-table rows that apply to a model family, and the names
    of those that do not. Whisper streams in clip mode, recomputing its window: the kv cache and
    the cached conv do not apply, and the old path (``StreamingLayerActivations``, the whole
    model on the window) is for Wav2Vec2-style models only; "recompute window" is Whisper's.
    ``truncation_helps=False`` (the deepest layer shown is the model's last) drops the
    "+ truncated depth" row, which would only repeat the row above it with timing noise."""
    configs = default_switch_configs(full=full)
    skipped = set() if truncation_helps else {"+ truncated depth"}
    if family == "whisper":
        skipped |= {
            c["name"]
            for c in configs
            if c.get("encoder") == "reference" or c.get("attention") == "kv" or c.get("cache_conv")
        }
    return [c for c in configs if c["name"] not in skipped], [c["name"] for c in configs if c["name"] in skipped]


def _encoder_for(adapter, layers, config: dict):
    if config.get("encoder") == "reference":
        ref = StreamingLayerActivations(adapter, layers, left_context_s=config["left_context_s"])
        return ref, ref.push
    settings = {k: config[k] for k in SWITCH_COLUMNS if k in config}
    encoder = make_stream_encoder(adapter, layers, **settings)
    return encoder, encoder.push


def run_switch_config(
    adapter,
    speech: dict,
    reference: list,
    layers,
    config: dict,
    update_s: float = 0.2,
    seconds: float = 20.0,
    extra_references: dict | None = None,
) -> dict:
    """Stream ``seconds`` of the benchmark speech with one configuration on a simulated real-time clock."""
    encoder, push = _encoder_for(adapter, layers, config)
    sr = adapter.sample_rate
    block = int(round(update_s * sr))
    warm = (0.01 * np.random.default_rng(0).standard_normal(sr * 2)).astype(np.float32)
    for i in range(0, len(warm), block):  # warm-up (the old path too, for a fair comparison)
        push(warm[i : i + block], i)
    encoder.reset()
    frames, states = [], {la: [] for la in layers}

    def collect(out):
        if len(out["frames"]):
            frames.append(out["frames"])
            for la in layers:
                states[la].append(out["states"][la])

    audio = speech["waveform"][: int(seconds * sr)]
    runner = FrameStreamRunner(SimulatedRealtimeSource(audio, sr, block), push, sr, policy="batch")
    runner.run(on_result=collect)
    summary = runner.summary()
    # fidelity is a property of the algorithm, not of the machine's load: a second pass, one update per
    # block, none merged or dropped (the timed pass above may merge or drop blocks when the machine is busy)
    encoder.reset()
    frames, states = [], {la: [] for la in layers}
    for i in range(0, len(audio), block):
        collect(push(audio[i : i + block], i))
    stacked = {la: np.concatenate(states[la]) for la in layers} if frames else {}
    fidelity = stream_fidelity(np.concatenate(frames), stacked, reference, field=getattr(encoder, "field", 400))
    row = {"name": config["name"], **{k: config.get(k) for k in SWITCH_COLUMNS}, "encoder": config.get("encoder")}
    row.update({k: summary.get(k) for k in ("latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "compute_ms_p95")})
    row.update({k: summary.get(k) for k in ("encoder_ms_mean", "transformer_ms_mean", "real_time_factor")})
    row.update({"merged_updates": summary.get("batched_updates"), "dropped_frames": summary.get("dropped_frames")})
    row["fidelity"] = {str(k): v for k, v in fidelity.items()}
    for name, other in (extra_references or {}).items():
        extra = stream_fidelity(np.concatenate(frames), stacked, other, field=getattr(encoder, "field", 400))
        row[f"fidelity_{name}"] = {str(k): v for k, v in extra.items()}
    row["seconds"] = float(len(audio) / sr)
    return row


def format_switch_table(rows, layers) -> str:
    """A plain-text table: configuration -> latency and fidelity per layer."""
    head = f"{'configuration':<34}{'ctx s':>6}{'p50':>7}{'p95':>7}{'p99':>7}{'enc':>6}{'tr':>6}{'RTF':>6}{'mrg':>5}"
    head += "".join(f"{'r L' + str(la):>8}" for la in layers)
    lines = [head, "-" * len(head)]
    for r in rows:
        enc, tr = r.get("encoder_ms_mean") or float("nan"), r.get("transformer_ms_mean") or float("nan")
        line = (
            f"{r['name'][:33]:<34}{r['left_context_s'] or 0:>6.1f}{r['latency_ms_p50']:>7.0f}"
            f"{r['latency_ms_p95']:>7.0f}{r['latency_ms_p99']:>7.0f}{enc:>6.0f}{tr:>6.0f}"
            f"{r['real_time_factor']:>6.2f}{r['merged_updates']:>5d}"
        )
        line += "".join(f"{r['fidelity'].get(str(la), float('nan')):>8.3f}" for la in layers)
        lines.append(line)
    return "\n".join(lines)


# %% [markdown]
# ## The live pipeline in real time, with and without the keyword thread

# %%


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


def run_live_benchmark(pipeline, speech: dict, seconds: float, wall_clock: bool = True) -> dict:
    """Stream ``seconds`` of speech through a ``LiveNeuronPipeline`` (real time, or a simulated clock)."""
    audio = speech["waveform"][: int(seconds * pipeline.sample_rate)]
    pipeline.open_file(audio, realtime=True, simulated=not wall_clock)
    rss = []

    def on_payload(payload):
        if payload["seq"] % 50 == 1:
            rss.append(_rss_mb())

    start = time.perf_counter()
    pipeline.run(on_payload=on_payload)
    wall = time.perf_counter() - start
    pipeline.stop_keywords()
    summary = pipeline.runner.summary()
    diag = pipeline.diagnostics()
    out = {
        "clock": "wall (file played in real time)" if wall_clock else "simulated real time",
        "seconds": float(len(audio) / pipeline.sample_rate),
        "wall_seconds": wall,
        "warm_up_s": pipeline.warm_up_s,
        **summary,
        "peak_rss_mb": peak_rss_mb(),
        "rss_mb_first": rss[0] if rss else None,
        "rss_mb_last": rss[-1] if rss else None,
        "speaker_clusters": diag["speaker_clusters"],
        "whisper": diag["whisper"],
        "encoder": pipeline.encoder.info(),
    }
    return out


def speaker_truth(segments, speech: dict) -> list:
    """The true speaker of each online segment (the utterance holding its midpoint)."""
    out = []
    for seg in segments:
        mid = (seg["start"] + seg["end"]) / 2 * 16000
        speaker = next((u[2] for u in speech["utterances"] if u[0] <= mid < u[0] + u[1]), "?")
        out.append(speaker)
    return out


def whisper_fidelity(adapter, speech: dict, layers, stream_rows, max_seconds: float) -> dict:
    """Whisper clip mode vs the padded reference, offline per layer, and the stream vs both."""
    padded = offline_reference(adapter, speech, layers, max_seconds=max_seconds)
    clipper = WhisperStreamEncoder(adapter, layers)
    clip = []
    with torch.inference_mode():
        for offset, _ in padded:
            length = next(u[1] for u in speech["utterances"] if u[0] == offset)
            window = clipper.encode_window(speech["waveform"][offset : offset + length])
            clip.append((offset, {la: window[la].float().numpy() for la in layers}))
    pairs = {}
    for la in layers:
        a = np.concatenate([c[1][la][: len(p[1][la])] for c, p in zip(clip, padded)])
        b = np.concatenate([p[1][la][: len(c[1][la])] for c, p in zip(clip, padded)])
        a, b = (a - a.mean(0)) / (a.std(0) + 1e-8), (b - b.mean(0)) / (b.std(0) + 1e-8)
        pairs[str(la)] = float(np.mean((a * b).mean(0)))
    return {"clip_vs_padded_offline": pairs, "padded": padded, "clip": clip}


def speech_from_waves(waves, speakers, names=None, sample_rate: int = 16000, stride: int = 320) -> dict:
    """The benchmark's speech dict from loaded clips (each padded to the 20 ms grid)."""
    pieces, utterances, total = [], [], 0
    names = names or [f"utt{i}" for i in range(len(waves))]
    for y, speaker, name in zip(waves, speakers, names):
        y = np.pad(np.asarray(y, np.float32), (0, (-len(y)) % stride))
        utterances.append((total, len(y), str(speaker), str(name)))
        pieces.append(y)
        total += len(y)
    return {
        "waveform": np.concatenate(pieces),
        "utterances": utterances,
        "seconds": total / sample_rate,
        "speakers": len(set(map(str, speakers))),
    }
