"""``audiolens bench streaming``: real-time neuron streaming, latency per stage and fidelity.

Streams real LibriSpeech speech (several speakers) through the live neuron pipeline and
writes ``DIR/bench.json`` and a table:

- the live pipeline (encoder + analytics + payload) on a file played in real time after a
  warm-up: update latency p50/p95/p99, per-stage compute, real-time factor, merged/dropped
  updates, peak RSS, latency growth along the stream; again with the Whisper keyword thread;
- the switch table: each configuration (context length x switch) on a simulated real-time
  clock, with its latency and its fidelity (streamed vs offline per-layer correlation);
- the bundled Whisper tiny.en in clip mode: latency, and fidelity against the padded
  offline reference per layer (and clip vs padded offline).

Rerun on a quiet machine: ``audiolens bench streaming --out runs/bench-streaming``
(``--seconds 300`` for the 5-minute growth check). Timings depend on the machine's load:
``bench.json`` records ``uptime`` before and after.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

RANDOM_WAVLM = "random-wavlm-base"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audiolens bench streaming", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="output folder (default runs/bench/streaming/<timestamp>)")
    p.add_argument(
        "--model",
        default=RANDOM_WAVLM,
        help=f"hub id or folder of a WavLM/Wav2Vec2/HuBERT model; {RANDOM_WAVLM!r} (default): full-size WavLM "
        "base with RANDOM weights (timing; labelled as such)",
    )
    p.add_argument("--seconds", type=float, default=60.0, help="seconds streamed in real time (default 60)")
    p.add_argument("--update-s", type=float, default=0.2, help="audio per update (default 0.2 s)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads, pinned (default 2)")
    p.add_argument("--layers", type=int, nargs="+", default=[2, 6, 10], help="layers streamed (default 2 6 10)")
    p.add_argument("--context", type=float, default=None, help="left context s of the live run (default: chosen)")
    p.add_argument(
        "--quantize",
        choices=("auto", "none", "int8"),
        default="auto",
        help="live run: float or int8 transformer (auto: the fastest switch-table row whose fidelity holds)",
    )
    p.add_argument("--sweep-seconds", type=float, default=20.0, help="seconds per switch-table row (0: no table)")
    p.add_argument("--quick-sweep", action="store_true", help="only the switch rows, not the context lengths")
    p.add_argument("--fidelity-seconds", type=float, default=None, help="offline reference span (default sweep)")
    p.add_argument("--keywords-seconds", type=float, default=None, help="real-time run with Whisper keywords (0: skip)")
    p.add_argument(
        "--keywords-in",
        choices=["process", "thread"],
        default="process",
        help="where Whisper runs: an idle-class child process (default, as in the notebook) or a thread of this one",
    )
    p.add_argument("--whisper-model", default="bundled/whisper-tiny.en", help="Whisper for the clip-mode run ('none')")
    p.add_argument("--whisper-seconds", type=float, default=30.0, help="seconds of the Whisper run")
    p.add_argument("--simulated", action="store_true", help="live runs on a simulated clock instead of wall time")
    p.add_argument("--data", default=None, help="LibriSpeech sample folder (default: $AUDIOLENS_DATA)")
    return p


def _load_model(name: str):
    from lib.core.speech_models import load_speech_model
    from lib.neurons.streaming_activations import load_model_for_analysis

    if name == RANDOM_WAVLM:
        return load_model_for_analysis("microsoft/wavlm-base-plus", weights="random")
    adapter = load_speech_model(name)
    return adapter, {**adapter.info(), "model": name, "weights": getattr(adapter, "weights", "pretrained")}


def _projector_from_reference(reference, speech, layer):
    """A speaker projector fitted on the offline reference (the analytics stage then includes it)."""
    import numpy as np

    from lib.neurons.semantic_projector import fit_semantic_projector, segment_embeddings

    speakers = {u[0]: u[2] for u in speech["utterances"]}
    acts = [ref[layer] for _, ref in reference]
    labels = [speakers[offset] for offset, _ in reference]
    if len(set(labels)) < 3:
        return None
    emb, seg_labels, _, _ = segment_embeddings(acts, labels, segment_frames=50, min_frames=15)
    return (
        fit_semantic_projector(emb, seg_labels, source={"layer": layer, "labels": "speaker"})
        if len(np.unique(seg_labels)) >= 3
        else None
    )


def _live(adapter, info, speech, layers, args, context, reference, keywords: bool, seconds: float, quantize=None):
    import numpy as np

    from lib.neurons.neuron_live import LiveNeuronPipeline
    from lib.neurons.stream_benchmark import run_live_benchmark
    from lib.neurons.whisper_keywords import BackgroundKeywordSpotter, load_keyword_transcriber

    spotter = None
    if keywords:
        in_child = args.keywords_in == "process"
        spotter = BackgroundKeywordSpotter(loader=lambda: load_keyword_transcriber(cpu_threads=1, process=in_child))
    pca_basis = {}
    for layer in layers if reference else []:  # PCA traces on a basis fitted offline, as the notebook does
        stacked = np.concatenate([ref[layer] for _, ref in reference]).astype(np.float64)
        mean, std = stacked.mean(0), stacked.std(0) + 1e-8
        pca_basis[layer] = (mean, std, np.linalg.svd((stacked - mean) / std, full_matrices=False)[2][:3])
    pipeline = LiveNeuronPipeline(
        adapter,
        layers,
        pca_basis=pca_basis,
        update_s=args.update_s,
        left_context_s=context,
        quantize=quantize,
        projector=_projector_from_reference(reference, speech, layers[-1]) if reference else None,
        keyword_spotter=spotter,
        model_info=info,
    )
    return run_live_benchmark(pipeline, speech, seconds, wall_clock=not args.simulated), pipeline


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    import numpy as np
    import torch

    from lib.core.atomic_io import atomic_write_json
    from lib.core.runtime import limit_cpu_threads
    from lib.neurons.live_analytics import clustering_agreement
    from lib.neurons.stream_benchmark import (
        benchmark_speech,
        format_switch_table,
        machine_info,
        offline_reference,
        run_switch_config,
        speaker_truth,
        switch_configs_for,
    )

    limit_cpu_threads(args.threads)
    torch.set_num_interop_threads(1) if torch.get_num_interop_threads() != 1 else None
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or Path("runs") / "bench" / "streaming" / stamp)
    out.mkdir(parents=True, exist_ok=True)
    result = {"command": "audiolens bench streaming " + " ".join(argv or []), "machine_before": machine_info()}
    print(f"machine: {result['machine_before']['uptime']}")
    layers = list(args.layers)
    adapter, info = _load_model(args.model)
    layers = [la for la in layers if la <= adapter.num_layers]
    label = "RANDOM WEIGHTS (timing only)" if info.get("weights") == "random" else info.get("weights")
    result["model"] = {k: info.get(k) for k in ("model", "weights", "family", "num_parameters", "hidden_size")}
    result["model"]["label"] = label
    print(f"model: {info.get('model')} [{label}], {adapter.num_parameters / 1e6:.0f}M parameters, layers {layers}")
    longest = max(args.seconds, args.sweep_seconds, args.whisper_seconds, args.keywords_seconds or 0)
    speech = benchmark_speech(args.data, seconds=longest)
    result["audio"] = {
        "seconds": speech["seconds"],
        "utterances": len(speech["utterances"]),
        "speakers": speech["speakers"],
    }
    fid_s = args.fidelity_seconds or args.sweep_seconds or 20.0
    reference = offline_reference(adapter, speech, layers, max_seconds=fid_s)
    rows = []
    if args.sweep_seconds > 0:
        configs, skipped = switch_configs_for(
            adapter.family, full=not args.quick_sweep, truncation_helps=max(layers) < adapter.num_layers
        )
        if skipped:
            print(f"rows {skipped} do not apply to {adapter.family} (layers {layers}): left out")
        for config in configs:
            row = run_switch_config(adapter, speech, reference, layers, config, args.update_s, args.sweep_seconds)
            rows.append(row)
            print(format_switch_table([row], layers).splitlines()[-1], flush=True)
        print(
            "\nswitch table (simulated real time, "
            + f"{args.sweep_seconds:.0f} s each)\n"
            + format_switch_table(rows, layers)
        )
    result["switch_table"] = rows
    context, quantize = _live_settings(rows, args)
    result["default_context_s"], result["default_quantize"] = context, quantize
    live, pipeline = _live(adapter, info, speech, layers, args, context, reference, False, args.seconds, quantize)
    truth = speaker_truth(pipeline.speakers.segments, speech)
    if len(set(truth)) > 1:
        live["speaker_clustering"] = clustering_agreement(pipeline.speakers.segments, truth)
    result["live"] = live
    kw_s = args.seconds if args.keywords_seconds is None else args.keywords_seconds
    if kw_s > 0:
        with_kw, _ = _live(adapter, info, speech, layers, args, context, reference, True, kw_s, quantize)
        no_kw = (
            live
            if kw_s == args.seconds
            else _live(adapter, info, speech, layers, args, context, reference, False, kw_s, quantize)[0]
        )
        with_kw["p95_added_ms"] = with_kw["latency_ms_p95"] - no_kw["latency_ms_p95"]
        with_kw["keywords_in"] = args.keywords_in
        result["live_with_keywords"] = with_kw
    if args.whisper_model.lower() != "none":
        result["whisper"] = _whisper_section(args, speech)
    result["machine_after"] = machine_info()
    result["targets"] = _targets(result, layers)
    atomic_write_json(out / "bench.json", result)
    print(_summary_text(result, layers))
    print(f"\nwrote {out / 'bench.json'}")
    return 0 if np.isfinite(live.get("latency_ms_p95", float("nan"))) else 1


def _live_settings(rows, args) -> tuple:
    """``(left context s, quantize)`` of the live run. Only key/value-cache rows whose fidelity holds
    (>= 0.85 at every layer) qualify; ``--quantize auto`` takes the one with the lowest p95, ``none``
    / ``int8`` the shortest qualifying context of that kind; ``--context`` fixes the context."""
    ok = [r for r in rows if r["attention"] == "kv" and r["left_context_s"]]
    ok = [r for r in ok if min(r["fidelity"].values()) >= 0.85]
    if args.context is not None:
        ok = [r for r in ok if r["left_context_s"] == args.context]
    if args.quantize != "auto":
        ok = [r for r in ok if (r.get("quantize") or "none") == args.quantize]
    wanted = None if args.quantize in ("auto", "none") else args.quantize
    if not ok:
        return (args.context if args.context is not None else 1.0), wanted
    if args.quantize == "auto":
        best = min(ok, key=lambda r: r["latency_ms_p95"])
    else:
        best = min(ok, key=lambda r: r["left_context_s"])
    return best["left_context_s"], best.get("quantize")


def _whisper_section(args, speech) -> dict:
    from lib.core.speech_models import load_speech_model
    from lib.neurons.stream_benchmark import format_switch_table, run_switch_config, whisper_fidelity

    try:
        adapter = load_speech_model(args.whisper_model, whisper_mode="padded")
    except Exception as error:  # noqa: BLE001 -- report why the Whisper part was skipped
        print(f"Whisper run skipped: cannot load {args.whisper_model!r}: {type(error).__name__}: {error}")
        return {"skipped": f"{type(error).__name__}: {error}"}
    info = {**adapter.info(), "model": args.whisper_model, "weights": getattr(adapter, "weights", "pretrained")}
    layers = list(range(1, adapter.num_layers + 1))
    fid_s = min(args.whisper_seconds, args.fidelity_seconds or args.whisper_seconds)
    wf = whisper_fidelity(adapter, speech, layers, None, max_seconds=fid_s)
    rows = []
    for context in (0.5, 1.0, 2.0):
        config = {"name": f"Whisper clip mode, ctx {context}", "left_context_s": context, "attention": "recompute"}
        rows.append(
            run_switch_config(
                adapter,
                speech,
                wf["padded"],
                layers,
                config,
                args.update_s,
                args.whisper_seconds,
                extra_references={"vs_clip_offline": wf["clip"]},
            )  # fmt: skip
        )
    print("\nWhisper (fidelity vs the padded offline reference)\n" + format_switch_table(rows, layers))
    live, _ = _live(adapter, info, speech, layers, args, 1.0, wf["padded"], False, args.whisper_seconds)
    return {
        "model": {k: info.get(k) for k in ("model", "weights", "family", "num_parameters", "hidden_size")},
        "whisper_mode_streamed": "clip",
        "reference": "padded (30 s input, frames trimmed to the clip)",
        "clip_vs_padded_offline": wf["clip_vs_padded_offline"],
        "switch_table": rows,
        "live": live,
    }


def _targets(result: dict, layers) -> list:
    def row(name, value, limit, ok):
        return {"target": name, "value": value, "limit": limit, "met": bool(ok) if value is not None else None}

    live = result.get("live", {})
    out = [
        row("p95 update latency (ms)", live.get("latency_ms_p95"), "< 100", (live.get("latency_ms_p95") or 1e9) < 100),
        row("p99 update latency (ms)", live.get("latency_ms_p99"), "< 150", (live.get("latency_ms_p99") or 1e9) < 150),
    ]
    growth = live.get("latency_growth_ms_per_min")
    out.append(row("latency growth along the stream (ms/min)", growth, "< 5 (no growth)", (growth or 0) < 5))
    ctx = result.get("default_context_s")
    quantize = result.get("default_quantize")
    default = [r for r in result.get("switch_table", []) if r["attention"] == "kv" and r.get("quantize") == quantize]
    default = [r for r in default if r["left_context_s"] == ctx]
    if default:
        for la in layers:
            value = default[0]["fidelity"].get(str(la))
            out.append(row(f"fidelity L{la} at the default settings", value, ">= 0.85", (value or 0) >= 0.85))
    kw = result.get("live_with_keywords")
    if kw:
        out.append(row("keyword thread adds to p95 (ms)", kw.get("p95_added_ms"), "< 10", kw["p95_added_ms"] < 10))
    wl = (result.get("whisper") or {}).get("live")
    if wl:
        out.append(row("Whisper clip mode p95 (ms)", wl.get("latency_ms_p95"), "< 50", wl["latency_ms_p95"] < 50))
    return out


def _summary_text(result: dict, layers) -> str:
    live = result["live"]
    lines = [
        "",
        f"live pipeline, {result['model']['model']} [{result['model']['label']}], "
        f"context {result['default_context_s']} s, {result.get('default_quantize') or 'float'}, "
        f"{live['clock']}, {live['seconds']:.0f} s:",
        f"  latency p50 {live['latency_ms_p50']:.0f} / p95 {live['latency_ms_p95']:.0f} / p99 "
        f"{live['latency_ms_p99']:.0f} ms; stages (mean ms) encoder {live.get('encoder_ms_mean', 0):.1f}, "
        f"transformer {live.get('transformer_ms_mean', 0):.1f}, analytics {live.get('analytics_ms_mean', 0):.1f}, "
        f"payload {live.get('payload_ms_mean', 0):.1f}; RTF {live['real_time_factor']:.2f}; merged "
        f"{live['batched_updates']}, dropped frames {live['dropped_frames']}; peak RSS {live['peak_rss_mb']:.0f} MB",
    ]
    if "live_with_keywords" in result:
        kw = result["live_with_keywords"]
        lines.append(
            f"  with the keyword thread (Whisper in a {kw.get('keywords_in', 'thread')}): p95 "
            f"{kw['latency_ms_p95']:.0f} ms ({kw['p95_added_ms']:+.0f} ms); Whisper runs {kw['whisper'].get('runs')}"
            f" (mean {kw['whisper'].get('mean_run_ms') or float('nan'):.0f} ms), "
            f"ready {kw['whisper'].get('whisper_ready')}"
        )
    if "speaker_clustering" in live:
        sc = live["speaker_clustering"]
        lines.append(
            f"  online speaker clustering: ARI {sc['ari']:.2f}, purity {sc['purity']:.2f} "
            f"({sc['clusters']} clusters, {sc['speakers']} speakers)"
        )
    w = result.get("whisper") or {}
    if "live" in w:
        lines.append(
            f"Whisper clip mode live: p50 {w['live']['latency_ms_p50']:.0f} / "
            f"p95 {w['live']['latency_ms_p95']:.0f} ms; "
            f"clip vs padded offline r: {', '.join(f'L{k} {v:.2f}' for k, v in w['clip_vs_padded_offline'].items())}"
        )
    lines.append("\ntargets:")
    for t in result["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.3g}"
        lines.append(f"  {'MET ' if t['met'] else 'MISS'} {t['target']}: {value} (target {t['limit']})")
    lines.append(f"machine: {result['machine_before']['uptime']} | after: {result['machine_after']['uptime']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
