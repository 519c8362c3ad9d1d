"""Benchmark of the digit notebook: a run's stage times, and per-clip latency of its saved models, stage by stage.

``audiolens bench digits [--run-dir DIR] [--runs 30] [--threads 2] [--out DIR]``

- run: the stage seconds the notebook wrote to ``DIR/results.json`` (``timings``) and its wall
  time, against issue 12's 15-minute budget. Make the run first, e.g.
  ``audiolens run digit_classification -p eval_folder /tmp/espeak-digits --out DIR``;
- latency: p50/p95 milliseconds per 1 s clip (a real FSDD test clip, padded), warm, with
  ``--threads`` threads, of every saved model in ``DIR/models`` (``predict``, as the notebook
  times it), and of the encoder model's parts: the frozen encoder pass, the head, Whisper's
  decoder prior, and the second encoder pass that lets the prior hear a 16 kHz clip
  (``wideband``, what the live recogniser and ``predict_audio_files`` add for audio
  recorded above 8 kHz).

Prints both tables and writes ``OUT/bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

RUN_BUDGET_SECONDS = 15 * 60  # issue 12: the default run on 2 CPU cores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="audiolens bench digits", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/digit_classification/latest", help="a digit_classification run")
    parser.add_argument("--runs", type=int, default=30, help="warm runs timed per model and stage")
    parser.add_argument("--threads", type=int, default=2, help="torch/BLAS threads")
    parser.add_argument("--out", default="runs/bench_digits", help="folder for bench.json")
    args = parser.parse_args(argv)

    run_dir = Path(args.run_dir).expanduser()
    results_path = run_dir / "results.json"
    if not results_path.exists():
        raise FileNotFoundError(
            f"{results_path}: no results of a digit run; make one first: "
            f"audiolens run digit_classification -p eval_folder /tmp/espeak-digits --out {run_dir}"
        )
    results = json.loads(results_path.read_text())

    import numpy as np

    from lib.core.atomic_io import atomic_write_json
    from lib.core.audio import WHISPER_SAMPLE_RATE, load_audio
    from lib.core.datasets import load_fsdd
    from lib.core.runtime import limit_cpu_threads
    from lib.digits.classifier_eval import measure_latency
    from lib.digits.model_files import load_digit_model

    limit_cpu_threads(args.threads)
    report = {"run_dir": str(run_dir), "threads": args.threads, "load_average": list(os.getloadavg())}

    run = results.get("run", {})
    timings = results.get("timings", {})
    stages = {k: v for k, v in timings.items() if isinstance(v, (int, float)) and k not in ("threads", "total_seconds")}
    report["run"] = {
        "status": run.get("status"),
        "seconds": run.get("seconds"),
        "budget_seconds": RUN_BUDGET_SECONDS,
        "within_budget": run.get("seconds") is not None and run["seconds"] <= RUN_BUDGET_SECONDS,
        "eval_folder": run.get("parameters", {}).get("eval_folder"),
        "notebook_seconds": timings.get("total_seconds"),
        "stages": stages,
    }
    print(
        f"load average {report['load_average']}; run {run.get('id')} ({run.get('status')}), eval_folder "
        f"{report['run']['eval_folder']}"
    )
    print(f"{'stage':22s} {'seconds':>9s}")
    for stage, seconds in stages.items():
        print(f"{stage:22s} {seconds:9.1f}")
    if run.get("seconds") is not None:
        verdict = "within" if report["run"]["within_budget"] else "OVER"
        print(f"{'wall':22s} {run['seconds']:9.1f}   ({verdict} the {RUN_BUDGET_SECONDS // 60}-minute budget)")

    files = {"svm": "svm.joblib", "cnn": "cnn.pt", "encoder": "encoder.pt"}
    models = {
        name: load_digit_model(run_dir / "models" / f) for name, f in files.items() if (run_dir / "models" / f).exists()
    }
    if not models:
        raise FileNotFoundError(f"{run_dir / 'models'}: no saved digit models (svm.joblib, cnn.pt, encoder.pt)")
    test = load_fsdd(download=False)
    source = test[test["split"] == "test"].sort_values("path")["path"].iloc[0]
    rate = next(iter(models.values())).sample_rate
    clip = load_audio(source, sr=rate)
    clip = np.pad(clip, (0, max(0, rate - len(clip))))[:rate]  # 1 s, as the notebook times it
    clip16 = load_audio(source, sr=WHISPER_SAMPLE_RATE)
    clip16 = np.pad(clip16, (0, max(0, WHISPER_SAMPLE_RATE - len(clip16))))[:WHISPER_SAMPLE_RATE]

    timed = {}
    for name, model in models.items():
        timed[name] = measure_latency(lambda w, m=model: m.predict([w]), clip, runs=args.runs)
    encoder = models.get("encoder")
    if encoder is not None:
        frames, finals = encoder.encoder_outputs([clip])
        timed["encoder: encoder pass"] = measure_latency(encoder.encoder_outputs, [clip], runs=args.runs)
        timed["encoder: head"] = measure_latency(encoder.head_logits, frames, runs=args.runs)
        if encoder.uses_prior:
            timed["encoder: decoder prior"] = measure_latency(encoder.prior_log_probs, finals, runs=args.runs)
            timed["encoder: 16 kHz pass + prior"] = measure_latency(encoder.wideband_prior, [clip16], runs=args.runs)
            timed["encoder, prior at 16 kHz"] = measure_latency(
                lambda w: encoder.predict([w], wideband=[clip16]), clip, runs=args.runs
            )
    report["latency"] = {"clip": str(source), "clip_seconds": 1.0, "sample_rate": rate, "ms": timed}
    print(f"\nlatency per 1 s clip, {args.threads} threads, {args.runs} warm runs ({Path(source).name})")
    print(f"{'model or stage':28s} {'p50 ms':>8s} {'p95 ms':>8s}")
    for name, row in timed.items():
        print(f"{name:28s} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f}")

    out = Path(args.out)
    atomic_write_json(out / "bench.json", report)
    print(f"\nwrote {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
