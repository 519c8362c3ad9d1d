"""Benchmark of the bundled Whisper tiny.en: conversion, clip vs padded speed, and a speaker-held-out digit probe.

``audiolens bench bundled_whisper [--probe-clips 600] [--speed-clips 40] [--threads 2] [--out DIR]``

- conversion: seconds to build (or reuse) the cached transformers folder;
- speed: seconds per FSDD clip in ``padded`` and ``clip`` mode, clip by clip and batched;
- probe (``--probe-clips N``, 0 skips it): N FSDD clips balanced over digits and speakers,
  leave-one-speaker-out, standardised features + logistic regression, mean over each clip's
  own frames, accuracy per layer (conv, 0..4) in both modes, against MFCC mean+std.

Prints a table per stage and writes ``DIR/bench.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _balanced_fsdd(n_clips: int):
    from lib.core.datasets import load_fsdd

    manifest = load_fsdd(download=False)
    per_pair = max(1, n_clips // (manifest["label"].nunique() * manifest["speaker"].nunique()))
    rows = manifest[manifest["index"] < per_pair].sort_values(["label", "speaker", "index"])
    return rows.head(n_clips).reset_index(drop=True)


def _probe(features, labels, groups, seed: int) -> float:
    """Leave-one-speaker-out accuracy of standardised features + logistic regression."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneGroupOut
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    correct = 0
    for train, test in LeaveOneGroupOut().split(features, labels, groups):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
        model.fit(features[train], labels[train])
        correct += int(np.sum(model.predict(features[test]) == labels[test]))
    return correct / len(labels)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="audiolens bench bundled_whisper", description=__doc__.split("\n")[0])
    parser.add_argument("--probe-clips", type=int, default=600, help="FSDD clips for the probe (0: skip it)")
    parser.add_argument("--speed-clips", type=int, default=40, help="FSDD clips timed per mode")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch/BLAS threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_bundled_whisper", help="folder for bench.json")
    args = parser.parse_args(argv)

    import numpy as np
    from tqdm.auto import tqdm

    from lib.core.atomic_io import atomic_write_json
    from lib.core.audio import load_audio
    from lib.core.bundled_whisper import BUNDLED_WHISPER_ID, bundled_whisper_folder
    from lib.core.features import mfcc_features, pool_frames
    from lib.core.runtime import limit_cpu_threads, seed_everything
    from lib.core.speech_models import load_speech_model

    seed_everything(args.seed)
    limit_cpu_threads(args.threads)
    report = {"threads": args.threads, "load_average": list(os.getloadavg()), "model": BUNDLED_WHISPER_ID}

    started = time.perf_counter()
    folder = bundled_whisper_folder()
    report["conversion"] = {"folder": str(folder), "seconds": round(time.perf_counter() - started, 2)}
    print(f"conversion (or cache reuse): {report['conversion']['seconds']:.2f} s -> {folder}")
    adapters = {mode: load_speech_model(BUNDLED_WHISPER_ID, whisper_mode=mode) for mode in ("padded", "clip")}

    rows = _balanced_fsdd(max(args.speed_clips, args.probe_clips))
    waves = [load_audio(path, sr=16000) for path in tqdm(rows["path"], desc="load audio", leave=False)]

    speed = {}
    timed = waves[: args.speed_clips]
    adapters["clip"].hidden_states(timed[0])  # warm-up
    for mode, adapter in adapters.items():
        t0 = time.perf_counter()
        for wave in timed:
            adapter.hidden_states(wave)
        single = (time.perf_counter() - t0) / len(timed)
        t0 = time.perf_counter()
        adapter.hidden_states_batch(timed, batch_size=args.batch_size)
        batched = (time.perf_counter() - t0) / len(timed)
        speed[mode] = {"seconds_per_clip": round(single, 4), "seconds_per_clip_batched": round(batched, 4)}
    speed["padded_over_clip"] = round(speed["padded"]["seconds_per_clip"] / speed["clip"]["seconds_per_clip"], 1)
    report["speed"] = dict(speed, clips=len(timed), mean_seconds=float(np.mean([len(w) / 16000 for w in timed])))
    print(f"\n{'mode':8s} {'s/clip':>8s} {'batched':>8s}   ({len(timed)} FSDD clips, {args.threads} threads)")
    for mode in ("padded", "clip"):
        print(f"{mode:8s} {speed[mode]['seconds_per_clip']:8.4f} {speed[mode]['seconds_per_clip_batched']:8.4f}")
    print(f"padded / clip: {speed['padded_over_clip']}x")

    if args.probe_clips > 0:
        probe_waves, probe_rows = waves[: args.probe_clips], rows.head(args.probe_clips)
        labels, groups = probe_rows["label"].to_numpy(), probe_rows["speaker"].to_numpy()
        accuracy, seconds = {}, {}
        mfcc = np.stack([pool_frames(mfcc_features(w, 16000).T, "mean+std") for w in probe_waves])
        accuracy["mfcc mean+std"] = _probe(mfcc, labels, groups, args.seed)
        for mode, adapter in adapters.items():
            t0 = time.perf_counter()
            pooled = {layer: [] for layer in adapter.layer_names}
            for first in tqdm(range(0, len(probe_waves), args.batch_size), desc=f"{mode} states", leave=False):
                for states in adapter.hidden_states_batch(probe_waves[first : first + args.batch_size]):
                    for layer, x in states.items():
                        pooled[layer].append(x.mean(axis=0))
            seconds[mode] = round(time.perf_counter() - t0, 1)
            for layer in ["conv"] + list(range(adapter.num_layers + 1)):
                accuracy[f"{mode} {layer}"] = _probe(np.stack(pooled[layer]), labels, groups, args.seed)
        report["probe"] = {
            "clips": len(probe_waves),
            "speakers": int(len(set(groups))),
            "protocol": "leave-one-speaker-out, StandardScaler + LogisticRegression, mean over the clip's frames",
            "accuracy": {k: round(v, 4) for k, v in accuracy.items()},
            "extraction_seconds": seconds,
        }
        print(f"\nprobe: {len(probe_waves)} FSDD clips, leave-one-speaker-out accuracy")
        print(f"{'layer':8s} {'padded':>8s} {'clip':>8s}")
        for layer in ["conv"] + list(range(adapters["padded"].num_layers + 1)):
            print(f"{layer!s:8s} {accuracy[f'padded {layer}']:8.3f} {accuracy[f'clip {layer}']:8.3f}")
        print(f"MFCC mean+std: {accuracy['mfcc mean+std']:.3f}   extraction seconds: {seconds}")

    out = Path(args.out)
    atomic_write_json(out / "bench.json", report)
    print(f"\nwrote {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
