"""Benchmark of the FiftyOne explorer's pipeline at scale: ``audiolens bench explorer``.

    audiolens bench explorer [--out DIR] [--clips 2000] [--encoder mfcc|audiomae|NAME] [--checkpoint PT]
                             [--folder DIR] [--workers N] [--maps umap,tsne,pca] [--videos N]

Builds a collection of ``--clips`` clips (the ESC-50 subset, LibriSpeech utterances cut into 4-s crops,
FSDD digits, in that order, from ``$AUDIOLENS_DATA``; or any labelled folder with ``--folder``), runs
the explorer's whole pipeline on it with the lib functions the notebook uses (read + transform +
embed + previews in worker processes, FiftyOne data set, similarity index, UMAP, t-SNE, PCA, quality
report), then runs it again: the second run must come from the caches. Writes ``DIR/bench.json`` and
prints the stage table with the machine's load. Playable MP4s (the App's ``playback`` slice; the
Audio panel plays the clip files without them) are an extra stage, ``--videos N`` for the first N
clips, timed apart from the pipeline.

``--encoder audiomae`` without ``--checkpoint`` first pretrains a small AudioMAE++ (tiny width, 4
blocks: the CPU recipe of ``audiomae_training``) on the collection's own clips and saves it as
``DIR/audiomae-small.pt`` (reused by later runs); its pretraining time is reported apart from the
pipeline. Quality figures (grouped-CV k-NN accuracy, precision@k) are given for the ESC-50 part with
the chosen encoder and with MFCC.

Stage times: ``decode``, ``transform`` and ``media`` are seconds spent in the worker processes (summed
over workers; they run in parallel with ``embed``, which is the encoder's time in this process);
``read+embed (wall)`` is the wall-clock time of that whole pass. Everything else is wall-clock.
Peak RSS: this process and, separately, the largest worker (FiftyOne's MongoDB runs apart and is not
counted).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"total_seconds": 300, "umap": 30, "tsne": 30, "cached_saving": 0.95}


def machine_load() -> dict:
    """Load average, uptime, cores and memory: the context every timing needs."""
    load = os.getloadavg()
    with open("/proc/uptime") as handle:
        uptime = float(handle.read().split()[0])
    try:
        import psutil

        memory = psutil.virtual_memory()
        mem = {"total_gib": round(memory.total / 2**30, 1), "available_gib": round(memory.available / 2**30, 1)}
    except ImportError:
        mem = {}
    return {
        "loadavg_1_5_15": [round(v, 2) for v in load],
        "uptime_hours": round(uptime / 3600, 2),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        **mem,
        "at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def peak_rss_mib() -> dict:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"main": round(own, 1), "largest_child": round(children, 1)}


# ----------------------------------------------------------------------------------- the clips
def bench_collection(n_clips: int, work: Path, data_root=None) -> pd.DataFrame:
    """``n_clips`` clips: the ESC-50 subset, LibriSpeech 4-s crops (up to 30 %), FSDD for the rest."""
    from lib.core.atomic_io import atomic_output
    from lib.core.audio import load_audio
    from lib.core.datasets import find_esc50, load_esc50_folder, load_fsdd, load_librispeech

    parts = []
    esc = load_esc50_folder(find_esc50(data_root / "esc50-subset" if data_root else None, download=False))
    esc = esc.assign(source="esc50", group=esc["src_file"].astype(str), label=esc["category"].astype(str))
    parts.append(esc[["path", "label", "source", "group", "fold"]].head(n_clips))
    remaining = n_clips - len(parts[0])
    n_crops = min(remaining, int(round(0.3 * n_clips)))
    if n_crops > 0:
        import soundfile as sf

        libri = load_librispeech(data_root / "librispeech-sample" if data_root else None)
        folder = work / "librispeech-crops"
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for utterance in libri.itertuples(index=False):
            if len(rows) >= n_crops:
                break
            y = None
            for k in range(4):
                target = folder / f"{Path(utterance.path).stem}_c{k}.wav"
                if not target.exists():
                    y = load_audio(utterance.path, sr=16000) if y is None else y
                    piece = y[k * 64000 : (k + 1) * 64000]
                    if len(piece) < 32000:
                        break
                    with atomic_output(target) as tmp:
                        sf.write(tmp, piece, 16000, format="WAV", subtype="PCM_16")
                rows.append({"path": str(target), "label": f"speech-{utterance.sex}", "group": utterance.speaker})
                if len(rows) >= n_crops:
                    break
        parts.append(pd.DataFrame(rows).assign(source="librispeech", fold=np.nan))
    remaining = n_clips - sum(len(p) for p in parts)
    if remaining > 0:
        fsdd = load_fsdd(data_root / "fsdd" if data_root else None, download=False)
        fsdd = fsdd.sample(frac=1.0, random_state=0).head(remaining)
        fsdd = fsdd.assign(
            label="digit-" + fsdd["label"].astype(str), source="fsdd", group=fsdd["speaker"], fold=np.nan
        )
        parts.append(fsdd[["path", "label", "source", "group", "fold"]])
    clips = pd.concat(parts, ignore_index=True)
    if len(clips) < n_clips:
        print(f"only {len(clips)} clips available (asked for {n_clips})")
    return clips


# ----------------------------------------------------------------------------------- AudioMAE++
def pretrain_small_mae(clips: pd.DataFrame, path: Path, epochs: int, cache: Path, seed: int = 0) -> dict:
    """Pretrain the small AudioMAE++ (tiny width, 4 blocks, 2-s log-mel inputs) on ``clips``; save it at ``path``."""
    import shutil

    import torch

    from lib.mae.audiomae import build_audiomae_model
    from lib.mae.mae_training import mae_pretrain
    from lib.mae.mae_transforms import build_mae_transform, mae_transform_cached

    torch.manual_seed(seed)
    transform = build_mae_transform("log_mel", frames=200)
    start = time.perf_counter()
    x, ok, failed = mae_transform_cached(clips.path, transform, cache_dir=cache, desc="log-mel for pretraining")
    features_seconds = time.perf_counter() - start
    model = build_audiomae_model(
        "audiomae++", "tiny", depth=4, decoder_dim=192, decoder_depth=2, decoder_heads=3, input_size=(80, 200)
    )
    run_dir = path.parent / f".{path.stem}-training"
    start = time.perf_counter()
    history = mae_pretrain(
        model, x, epochs=epochs, batch_size=64, lr=1.5e-3, checkpoint_dir=run_dir, transform_config=transform.config
    )
    seconds = time.perf_counter() - start
    shutil.copy(run_dir / "last.pt", path)
    return {
        "checkpoint": str(path),
        "epochs": epochs,
        "clips": len(ok),
        "features_seconds": round(features_seconds, 1),
        "pretrain_seconds": round(seconds, 1),
        "loss_first_last": [round(history["loss"][0], 4), round(history["loss"][-1], 4)] if history["loss"] else None,
        "model_config": model.config,
    }


# ----------------------------------------------------------------------------------- the pipeline
def run_pipeline(clips, encoder_name, options, dirs, workers, maps_wanted, videos, dataset_name, seed=0) -> dict:
    """One run of the explorer's pipeline; return the stage times, counts and quality."""
    from lib.explorer.audio_embedders import embed_audio_files_cached, make_audio_embedder
    from lib.explorer.embedding_quality import quality_report
    from lib.explorer.explorer_batches import ExplorerAudioReader
    from lib.explorer.fiftyone_audio import (
        fo_build_audio_dataset,
        fo_compute_maps,
        fo_compute_similarity,
        fo_geolocations,
    )
    from lib.explorer.spectrogram_media import (
        explorer_render_previews,
        make_explorer_transform,
        spectrogram_videos,
    )

    stages, started = {}, time.perf_counter()

    def tick(name, since):
        stages[name] = round(time.perf_counter() - since, 3)
        return time.perf_counter()

    t = time.perf_counter()
    embedder = make_audio_embedder(encoder_name, **options).load()
    t = tick("load encoder", t)
    renderer = make_explorer_transform("log_mel", dirs["media"] / "png", clips.path, seed=seed)
    t = tick("preview scale", t)
    reader = ExplorerAudioReader(embedder.sample_rate)
    stats = {}
    embeddings, files, meta = embed_audio_files_cached(
        clips.path,
        embedder,
        dirs["cache"],
        "bench",
        32,
        progress=False,
        workers=workers,
        reader=reader,
        preview=renderer,
        stats=stats,
    )
    t = tick("read+embed (wall)", t)
    for key in ("decode", "transform", "media", "embed"):
        stages[key] = round(stats.get(key, 0.0), 3)
    previews_of, preview_failed = explorer_render_previews(files, renderer, reader, workers, progress=False)
    t = tick("previews left", t)
    keep = [p for p in files if p in previews_of]
    table = clips.set_index("path").loc[keep].reset_index()
    vectors = embeddings[[files.index(p) for p in keep]].astype(np.float64)
    vectors = ((vectors - vectors.mean(0)) / (vectors.std(0) + 1e-8)).astype(np.float32)
    previews = [previews_of[p] for p in keep]
    video_paths = [None] * len(keep)
    if videos:
        made, _failed = spectrogram_videos(keep[:videos], previews[:videos], dirs["media"] / "mp4", progress=False)
        video_paths[: len(made)] = made
        t = tick("videos (extra)", t)
    lonlat, geo_source = fo_geolocations(table, by="label", seed=seed)
    dataset = fo_build_audio_dataset(
        dataset_name,
        table,
        vectors,
        previews,
        video_paths=video_paths,
        lonlat=lonlat,
        geo_source=geo_source,
        progress=False,
    )
    t = tick("dataset build", t)
    fo_compute_similarity(dataset, vectors)
    t = tick("similarity index", t)
    maps = fo_compute_maps(dataset, vectors, methods=maps_wanted, seed=seed, cache_dir=dirs["cache"] / "maps")
    for method, item in maps.items():
        stages[method] = round(item["seconds"], 3)
    t = time.perf_counter()
    esc = (table.source == "esc50").to_numpy()
    quality = {}
    if esc.sum() >= 20:
        quality = quality_report(
            vectors[esc], table.label[esc].to_numpy(), table.group[esc].to_numpy(), table.fold[esc].to_numpy(), 20, 5
        )
    tick("quality", t)
    total = time.perf_counter() - started
    return {
        "encoder": embedder.name,
        "n_clips": len(keep),
        "stages": stages,
        "total_seconds": round(total, 2),
        "pipeline_seconds": round(total - stages.get("quality", 0.0) - stages.get("videos (extra)", 0.0), 2),
        "embedding_dim": int(vectors.shape[1]),
        "cache": {k: meta["cache"][k] for k in ("n_cached", "n_computed", "n_failed")},
        "failed": len(meta["failed"]) + len(meta["encoder_failed"]) + len(preview_failed),
        "dataset": {
            "name": dataset.name,
            "action": dataset.info["audiolens"]["action"],
            "videos": sum(map(bool, video_paths)),
        },
        "maps_cached": {m: item["cached"] for m, item in maps.items()},
        "esc50_quality": _quality_summary(quality),
        "peak_rss_mib": peak_rss_mib(),
    }


def _quality_summary(report: dict) -> dict:
    if not report:
        return {}
    return {
        "precision_at_20": round(report["precision_at_k"], 4),
        "precision_at_20_other_src_file": round(report["precision_at_k_other_groups"], 4)
        if report["precision_at_k_other_groups"] is not None
        else None,
        "silhouette": round(report.get("silhouette", float("nan")), 4),
        "knn_accuracy": round(report["knn"]["accuracy"], 4),
        "knn_std": round(report["knn"]["std"], 4),
        "knn_scheme": report["knn"]["scheme"],
        "knn_chance": round(report["knn"]["chance"], 4),
    }


def esc50_baseline_quality(clips: pd.DataFrame, dirs: dict, workers) -> dict:
    """The same figures for MFCC statistics, computed exactly as for the encoder: all the collection's clips
    embedded and standardised together, then scored on the ESC-50 part."""
    from lib.explorer.audio_embedders import embed_audio_files_cached, make_audio_embedder
    from lib.explorer.embedding_quality import quality_report

    embedder = make_audio_embedder("mfcc").load()
    emb, files, _ = embed_audio_files_cached(
        clips.path, embedder, dirs["cache"], "bench", progress=False, workers=workers
    )
    table = clips.set_index("path").loc[files].reset_index()
    x = ((emb - emb.mean(0)) / (emb.std(0) + 1e-8)).astype(np.float32)
    esc = (table.source == "esc50").to_numpy()
    report = quality_report(
        x[esc], table.label[esc].to_numpy(), table.group[esc].to_numpy(), table.fold[esc].to_numpy(), 20, 5
    )
    return _quality_summary(report) | {"encoder": embedder.name}


# ----------------------------------------------------------------------------------- main
def print_table(bench: dict) -> None:
    runs = bench["runs"]
    stages = list(dict.fromkeys(s for run in runs for s in run["stages"]))
    print(f"\nexplorer benchmark: {runs[0]['n_clips']} clips, encoder {runs[0]['encoder']}")
    print(f"machine: {bench['machine']}")
    print(f"{'stage':<22}" + "".join(f"{run['name']:>12}" for run in runs))
    for stage in stages:
        print(f"{stage:<22}" + "".join(f"{run['stages'].get(stage, float('nan')):>12.2f}" for run in runs))
    print(f"{'PIPELINE':<22}" + "".join(f"{run['pipeline_seconds']:>12.2f}" for run in runs))
    print(f"{'TOTAL':<22}" + "".join(f"{run['total_seconds']:>12.2f}" for run in runs))
    print(f"{'peak RSS main (MiB)':<22}" + "".join(f"{run['peak_rss_mib']['main']:>12.0f}" for run in runs))
    print(f"cached run saves {100 * bench['cached_saving']:.1f}% of the time")
    for name, check in bench["checks"].items():
        print(f"  {'ok  ' if check['ok'] else 'MISS'} {name}: {check['value']} (target {check['target']})")
    if bench.get("esc50_quality"):
        print("ESC-50 part, k-NN accuracy (grouped CV):")
        for name, item in bench["esc50_quality"].items():
            print(f"  {name:<28} {item.get('knn_accuracy')} +- {item.get('knn_std')} ({item.get('knn_scheme')})")
        print(f"  better: {bench['esc50_better']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="audiolens bench explorer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="output folder (default runs/bench_explorer/<timestamp>)")
    parser.add_argument("--clips", type=int, default=2000, help="clips in the collection (default 2000)")
    parser.add_argument("--encoder", default="mfcc", help="mfcc (default), audiomae, speech_model, ...")
    parser.add_argument("--checkpoint", default=None, help="for audiomae/external: the checkpoint")
    parser.add_argument("--model-name", default=None, help="for speech_model: the model id or folder")
    parser.add_argument("--pretrain-epochs", type=int, default=12, help="audiomae without --checkpoint: epochs")
    parser.add_argument("--folder", default=None, help="benchmark any labelled folder instead of the built-in mix")
    parser.add_argument("--workers", default="auto", help="reader processes (auto: one per core)")
    parser.add_argument("--maps", default="umap,tsne,pca", help="maps to compute")
    parser.add_argument("--videos", type=int, default=0, help="also make playable MP4s for the first N clips (extra)")
    parser.add_argument("--fo-db", default=None, help="FiftyOne database folder (default: DIR/fo-db)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch/BLAS threads of the encoder (default 1: the reader processes use the other cores)",
    )
    args = parser.parse_args(argv)
    if args.clips < 1:
        parser.error("--clips must be at least 1")
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    out = Path(args.out or ROOT / "runs" / "bench_explorer" / time.strftime("%Y%m%d-%H%M%S")).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    dirs = {"cache": out / "cache", "media": out / "media"}
    workers = args.workers if args.workers == "auto" else int(args.workers)
    data_root = Path(os.environ["AUDIOLENS_DATA"].split(os.pathsep)[0]) if os.environ.get("AUDIOLENS_DATA") else None

    from lib.core.runtime import limit_cpu_threads
    from lib.explorer import mae_embedders  # noqa: F401 - registers the audiomae / external / transform_stats encoders
    from lib.explorer.fiftyone_audio import fo_connect

    limit_cpu_threads(args.threads)
    bench = {"command": "audiolens bench explorer " + " ".join(argv or sys.argv[1:]), "machine": machine_load()}
    t = time.perf_counter()
    if args.folder:
        from lib.explorer.explorer_data import load_explorer_dataset

        data = load_explorer_dataset("folder", args.folder)
        clips = data.manifest.head(args.clips).assign(
            source="folder", group=lambda m: m[data.group_column] if data.group_column else m.path, fold=np.nan
        )
        clips["label"] = clips[data.label_column].astype(str)
    else:
        clips = bench_collection(args.clips, out / "clips", data_root)
    bench["collection"] = {
        "n_clips": len(clips),
        "by_source": clips.source.value_counts().to_dict(),
        "seconds": round(time.perf_counter() - t, 2),
    }
    print(f"{len(clips)} clips: {bench['collection']['by_source']}")
    options = {"device": "cpu"}
    if args.encoder in ("audiomae", "external"):
        checkpoint = Path(args.checkpoint) if args.checkpoint else out / "audiomae-small.pt"
        if args.encoder == "audiomae" and not checkpoint.exists():
            print(f"no checkpoint: pretraining the small AudioMAE++ on these clips for {args.pretrain_epochs} epochs")
            bench["pretraining"] = pretrain_small_mae(clips, checkpoint, args.pretrain_epochs, out / "logmel-cache")
        options["checkpoint"] = str(checkpoint)
    if args.model_name:
        options["model_name"] = args.model_name
    fo_connect(args.fo_db or out / "fo-db", out / "fo-datasets")
    name = f"bench-explorer-{args.encoder}-{os.getpid()}"
    maps_wanted = [m for m in args.maps.split(",") if m]
    runs = []
    for run_name in ("first", "cached"):
        print(f"run {run_name}...")
        result = run_pipeline(clips, args.encoder, options, dirs, workers, maps_wanted, args.videos, name)
        result["name"] = run_name
        runs.append(result)
    bench["runs"] = runs
    bench["cached_saving"] = round(1 - runs[1]["pipeline_seconds"] / runs[0]["pipeline_seconds"], 4)
    first = runs[0]
    bench["checks"] = {
        "whole pipeline (s)": {"value": first["pipeline_seconds"], "target": TARGETS["total_seconds"]},
        "UMAP (s)": {"value": first["stages"].get("umap"), "target": TARGETS["umap"]},
        "t-SNE (s)": {"value": first["stages"].get("tsne"), "target": TARGETS["tsne"]},
        "cached saving": {"value": bench["cached_saving"], "target": TARGETS["cached_saving"]},
    }
    for key, check in bench["checks"].items():
        value = check["value"]
        check["ok"] = value is not None and (
            value >= check["target"] if key == "cached saving" else value <= check["target"]
        )
    if (clips.source == "esc50").sum() >= 20:
        bench["esc50_quality"] = {first["encoder"]: first["esc50_quality"]}
        if args.encoder != "mfcc":
            bench["esc50_quality"]["mfcc (baseline)"] = esc50_baseline_quality(clips, dirs, workers)
        bench["esc50_better"] = max(bench["esc50_quality"], key=lambda k: bench["esc50_quality"][k]["knn_accuracy"])
    bench["machine_after"] = machine_load()
    from lib.core.atomic_io import atomic_write_text

    atomic_write_text(out / "bench.json", json.dumps(bench, indent=1, default=str))  # as every other bench.json
    print_table(bench)
    print(f"\nwrote {out / 'bench.json'}")
    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
