# %% [markdown]
# # Phase 0 Tier 1: a vMF next-step model, a memory-injection diagnostic, a representation comparison
#
# The three experiments that follow the Phase 0 gate, driven by one YAML config
# (`configs/phase0_tier1.yaml`; every key can be overridden, see the parameters):
#
# 1. **Exp 1: vMF direction x LogNormal magnitude.** A small causal model over the last `W`
#    latent frames predicts the next-step delta `x[t+k] - x[t]` for each horizon `k` as a
#    von Mises-Fisher direction times a LogNormal magnitude; the same network with a diagonal
#    Gaussian head is the baseline. Held-out speakers: NLL per frame (nats, same target space),
#    direction cosine, magnitude log-error, concentration calibration; optional rollouts.
#    Checkpoints resume and feed Exp 2.
# 2. **Exp 2: injection diagnostic.** The Exp 1 model gets a lookup "memory" (the mean
#    next-step delta of the Phase 0 cell of its context) and is scored with real, shuffled,
#    zero and oracle memory: can it use a lookup memory, and how much of the oracle gain does
#    the real one recover?
# 3. **Exp 3: representation comparison.** Phase 0 metrics and the Exp 1 predictability for
#    log-mel, the bundled Whisper tiny.en encoder (offline) and the codecs whose weights load,
#    at their own frame rate and pooled to 12.5 Hz.
#
# Planted-truth checks run in the test suite (`tests/test_phase0_tier1.py`): known
# vMF x LogNormal deltas are recovered within 10%, isotropic Gaussian deltas favour the
# Gaussian head, and planted memory is recovered while shuffled memory gives nothing.

# %% tags=["parameters"]
experiment = "all"  # [exp1|exp2|exp3|all] which experiment(s) to run
encoder = None  # Exp 1 and 2 latents: logmel, a codec hub id, bundled/whisper-tiny.en (None: the config's encoder.name)
config_path = None  # [path] YAML config (configs/phase0_tier1.yaml lists every key; None: built-in defaults, the same)
overrides = {}  # [dict] any config key, dotted or nested, e.g. {"model.hidden": 128} (after config_path)
checkpoint = None  # [path] Exp 1 checkpoint for Exp 2 (None: this run's exp1/last.pt)
phase0_dir = None  # [path] phase0_latent_structure output folder whose artefacts key the memory (None: fit here)
resume = True  # continue Exp 1 from exp1/last.pt; False moves an existing checkpoint aside first
train_max_steps = None  # [int 1..] train.max_steps (None: from the config)
train_max_eval_samples = None  # [int 1..] train.max_eval_samples, held-out windows scored
train_num_workers = None  # [int 0..] train.num_workers, DataLoader workers (utterances sharded across them)
train_compile = None  # [bool] train.compile, torch.compile the models
train_amp = None  # [bool] train.amp, autocast mixed precision
train_amp_dtype = None  # [bfloat16|float16] train.amp_dtype
context_horizons_k = None  # [each int 1..] context.horizons_k, horizons k of x[t+k] - x[t]
rollout_enabled = None  # [bool] rollout.enabled, autoregressive rollouts in Exp 1
diag_max_train_samples = None  # [int 1..] diag.max_train_samples, train windows for the cell means
diag_n_eval_utterances = None  # [int 1..] diag.n_eval_utterances, held-out utterances in Exp 2
diag_segments_per_utt = None  # [int 1..] diag.segments_per_utt, windows per held-out utterance in Exp 2
subset = None  # [auto|sample|train-clean-100|train-clean-360|train-other-500|dev-clean|test-clean] data.subset
data_path = None  # [path] LibriSpeech folder (None: the subset, looked up or downloaded)
max_utterances = None  # [int 1..] data.max_utterances, cap split proportionally (None: the config's)
max_seconds = None  # [float 0.5..] data.max_seconds, cut each utterance (None: the config's)
store_dir = None  # latent store folder for Exp 1 and 2 (None: output_dir/latents/ENCODER); share it to reuse
output_dir = "runs/phase0_tier1/latest"  # results.json, report.txt, tables, plots and checkpoints go here
seed = None  # [int 0..] random seed (None: the config's seed)
device = "auto"  # [auto|cpu|cuda|mps] where the models run
cpu_threads = None  # [int 1..] cap torch and BLAS threads (None: library defaults; 1 is much faster on a busy CPU)
local_files_only = None  # [bool] never download model weights (None: the config's)

# %%
import os
import platform
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import display

from lib.core.outputs import Stopwatch, prepare_output_dir, save_figure, update_results
from lib.core.runtime import limit_cpu_threads, pick_device, seed_everything
from lib.phase0.phase0_artifacts import load_phase0_artifacts
from lib.phase0.phase0_latents import cap_phase0_utterances, write_phase0_split
from lib.phase0.tier1_config import load_tier1_config, tier1_config_hash, write_tier1_config
from lib.phase0.tier1_data import Tier1Scaling, Tier1StoreSource, tier1_sample_sequences, tier1_sample_windows
from lib.phase0.tier1_injection import (
    plot_tier1_injection,
    tier1_check_artifacts,
    tier1_fit_phase0,
    tier1_injection,
    tier1_injection_conclusion,
)
from lib.phase0.tier1_metrics import (
    plot_tier1_calibration,
    plot_tier1_nll,
    plot_tier1_rollouts,
    tier1_energy_probe,
    tier1_evaluate,
    tier1_rollout,
    tier1_rollout_conclusion,
    tier1_still_learning,
)
from lib.phase0.tier1_pipeline import tier1_encode_store, tier1_exp1, tier1_manifest
from lib.phase0.tier1_report import tier1_table, write_tier1_report
from lib.phase0.tier1_representations import (
    plot_tier1_representations,
    tier1_compare_representations,
    tier1_representation_conclusion,
    tier1_slug,
)
from lib.phase0.tier1_training import (
    load_tier1_checkpoint,
    tier1_identity,
    tier1_models_from_checkpoint,
)

limit_cpu_threads(cpu_threads)
flat = {
    name: globals()[name]
    for name in (
        "train_max_steps",
        "train_max_eval_samples",
        "train_num_workers",
        "train_compile",
        "train_amp",
        "train_amp_dtype",
        "context_horizons_k",
        "rollout_enabled",
        "diag_max_train_samples",
        "diag_n_eval_utterances",
        "diag_segments_per_utt",
        "encoder",
        "subset",
        "data_path",
        "max_utterances",
        "max_seconds",
        "local_files_only",
        "seed",
    )
}
config = load_tier1_config(config_path, overrides, flat)
seed_everything(config["seed"])
out = prepare_output_dir(output_dir)
write_tier1_config(config, out / "phase0_tier1_config.yaml")
run_device = pick_device(device)
load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
device_text = (
    f"{run_device}"
    + (f" ({torch.cuda.get_device_name(run_device)})" if run_device.startswith("cuda") else "")
    + f", torch {torch.__version__}, {torch.get_num_threads()} CPU threads of {os.cpu_count()}, "
    + f"load average {load[0]:.2f} at start"
)
print(f"Device: {device_text}")
experiments = ["exp1", "exp2", "exp3"] if experiment == "all" else [experiment]
timings, tables, notes = {}, {}, []
update_results(
    out,
    config={"resolved": config, "hash": tier1_config_hash(config), "experiments": experiments},
    device={"device": run_device, "text": device_text, "platform": platform.platform(), "load_average": load},
)
print(f"experiments: {experiments}; config hash {tier1_config_hash(config)}")

# %% [markdown]
# ## Data and the latent store
# Whole speakers are held out (seeded; stratified by sex when `SPEAKERS.TXT` gives it). The
# latents of Exp 1 and 2 go into a Phase 0 latent store (resumable; each part's audio is
# hashed, so changed audio is encoded again), read back part by part while training.

# %%
manifest = tier1_manifest(config)
split_files = write_phase0_split(manifest, out)
speaker_counts = manifest.groupby("split")["speaker"].nunique().to_dict()
data_text = (
    f"LibriSpeech {manifest.attrs.get('subset')}: {len(manifest)} utterances, "
    f"{speaker_counts.get('train', 0)} train / {speaker_counts.get('eval', 0)} held-out speakers"
)
print(data_text)
update_results(
    out,
    data={
        "source": str(manifest.attrs.get("subset")),
        "utterances": len(manifest),
        "train_speakers": int(speaker_counts.get("train", 0)),
        "eval_speakers": int(speaker_counts.get("eval", 0)),
        "sex_known": bool("sex" in manifest.columns and manifest["sex"].notna().all()),
        "split_files": split_files,
    },
)
source = None
if {"exp1", "exp2"} & set(experiments):
    store = Path(store_dir) if store_dir else out / "latents" / tier1_slug(config["encoder"]["name"])
    with Stopwatch() as sw:
        encoded = tier1_encode_store(manifest, config, store, device=run_device)
    timings["store_s"] = sw.seconds
    split_of = dict(zip(manifest["utterance"].astype(str), manifest["split"]))
    source = Tier1StoreSource(store, split_of)
    print(
        f"{encoded['encoder']['encoder']}: {source.dim}-d at {source.frame_rate:g} Hz, "
        f"{int(source.table.frames.sum())} frames in {source.n_units} parts "
        f"({encoded['extraction']['parts_reused']} reused)"
    )
    update_results(out, store={"path": str(store), **encoded})

# %% [markdown]
# ## Exp 1: vMF direction x LogNormal magnitude against a diagonal Gaussian
# Both models see the same batches. The table is on held-out speakers; the gain is the
# Gaussian's NLL minus the vMF model's (positive: the vMF x LogNormal model fits better).

# %%
exp1 = None
if "exp1" in experiments:
    with Stopwatch() as sw:
        exp1 = tier1_exp1(source, config, out / "exp1", device=run_device, resume=resume)
    timings["exp1_train_s"] = sw.seconds
    horizons, window = config["context"]["horizons_k"], config["context"]["window"]
    with Stopwatch() as sw:
        eval_windows = tier1_sample_windows(
            source,
            exp1["scaling"],
            window,
            horizons,
            split="eval",
            max_samples=config["train"]["max_eval_samples"],
            seed=config["seed"],
        )
        evaluation = tier1_evaluate(exp1["models"], eval_windows, exp1["scaling"], horizons, device=run_device)
    timings["exp1_eval_s"] = sw.seconds
    tables["exp1"] = evaluation["table"]
    display(tier1_table(evaluation["table"], "exp1"))
    print(
        "vMF gain over the Gaussian (nats per frame):",
        ", ".join(f"k = {g['k']}: {g['nll_gain']:+.2f} +- {g['nll_gain_se']:.2f}" for g in evaluation["gains"]),
        "(standard errors clustered by utterance)",
    )
    learning = tier1_still_learning(exp1["history"])
    if learning:
        print(f"training loss still falling at step {exp1['history']['step'][-1]}: {', '.join(learning)}")
    fig = plot_tier1_nll(evaluation["table"], history=exp1["history"])
    save_figure(fig, out, "exp1_nll")
    plt.show()
    fig = plot_tier1_calibration(evaluation["calibration"])
    save_figure(fig, out, "exp1_calibration")
    plt.show()
    rollout = None
    if config["rollout"]["enabled"] and 1 in horizons:
        with Stopwatch() as sw:
            probe = tier1_energy_probe(source, seed=config["seed"])
            sequences = tier1_sample_sequences(
                source, "eval", window + config["rollout"]["steps"], config["rollout"]["n_contexts"], config["seed"]
            )
            rollout = tier1_rollout(
                exp1["models"],
                sequences,
                exp1["scaling"],
                window,
                config["rollout"]["steps"],
                probe,
                device=run_device,
                seed=config["seed"],
            )
        timings["exp1_rollout_s"] = sw.seconds
        tables["exp1_rollouts"] = rollout["table"]
        display(rollout["table"].round(3))
        rollout_conclusion = tier1_rollout_conclusion(rollout["table"])
        print(f"energy probe R^2 on held-out frames: {probe['r2_eval']:.3f}\n{rollout_conclusion}")
        fig = plot_tier1_rollouts(rollout)
        save_figure(fig, out, "exp1_rollouts")
        plt.show()
    elif config["rollout"]["enabled"]:
        notes.append("rollouts need horizon 1 in context.horizons_k: skipped")
    update_results(
        out,
        exp1={
            "rows": evaluation["rows"],
            "gains": evaluation["gains"],
            "calibration": evaluation["calibration"],
            "rollouts": None
            if rollout is None
            else {
                "rows": rollout["rows"],
                "curves": rollout["curves"],
                "energy_probe_r2": probe["r2_eval"],
                "conclusion": rollout_conclusion,
            },
            "checkpoint": exp1["checkpoint"],
            "config_hash": exp1["config_hash"],
            "resumed_from_step": exp1["start_step"],
            "steps": exp1["history"].get("steps_done"),
            "loss_history": exp1["history"]["loss"],
            "train_windows_per_epoch": exp1["windows_per_epoch"],
            "windows_per_second": exp1["history"]["windows"] / max(exp1["history"]["seconds"], 1e-9),
            "eval_windows": int(len(eval_windows["targets"])),
            "dim": int(source.dim),
        },
    )

# %% [markdown]
# ## Exp 2: can the model use a lookup memory?
# The memory is keyed by the cell of Phase 0's conditioning scheme (`diag.scheme`). With
# `phase0_dir` it comes from a Phase 0 run's artefacts (same encoder and speaker split
# required); otherwise Phase 0 is fitted here on this run's train speakers and its report and
# artefacts are written to `output_dir/phase0/`.

# %%
if "exp2" in experiments:
    checkpoint_file = Path(checkpoint) if checkpoint else out / "exp1" / "last.pt"
    identity = tier1_identity(config, source.fingerprint, ("vmf", "gaussian"))
    state = load_tier1_checkpoint(checkpoint_file, identity)
    models2 = {name: m for name, m in tier1_models_from_checkpoint(state).items() if name in config["diag"]["models"]}
    scaling2 = Tier1Scaling.from_dict(state["scaling"])
    with Stopwatch() as sw:
        if phase0_dir:
            artifacts = load_phase0_artifacts(phase0_dir)
        else:
            artifacts, _ = tier1_fit_phase0(
                source,
                prepare_output_dir(out / "phase0"),
                context_frames=config["diag"]["phase0_context_frames"],
                overrides={
                    "schemes": [config["diag"]["scheme"]],
                    "max_fit_frames": config["diag"]["max_train_samples"],
                },
                seed=config["seed"],
            )
        eval_speakers = manifest.loc[manifest["split"] == "eval", "speaker"].astype(str).unique()
        tier1_check_artifacts(artifacts, source, eval_speakers)
    timings["exp2_phase0_s"] = sw.seconds
    print(f"Phase 0 artefacts: {artifacts.folder} (config {artifacts.manifest['config_hash']})")
    with Stopwatch() as sw:
        injection = tier1_injection(
            models2, source, scaling2, artifacts, config, device=run_device, seed=config["seed"]
        )
    timings["exp2_s"] = sw.seconds
    tables["exp2"] = injection["table"]
    display(tier1_table(injection["table"], "exp2"))
    exp2_conclusion = tier1_injection_conclusion(injection["table"])
    print(exp2_conclusion)
    fig = plot_tier1_injection(injection["table"])
    save_figure(fig, out, "exp2_injection")
    plt.show()
    update_results(
        out,
        exp2={
            **{k: v for k, v in injection.items() if k not in ("table", "history")},
            "checkpoint": str(checkpoint_file),
            "checkpoint_step": int(state["step"]),
            "phase0_artifacts": str(artifacts.folder),
            "phase0_config_hash": artifacts.manifest["config_hash"],
            "scheme": config["diag"]["scheme"],
            "memory_mode": config["diag"]["memory_mode"],
            "conclusion": exp2_conclusion,
        },
    )

# %% [markdown]
# ## Exp 3: which representation?
# Each representation encodes the same seeded subset of utterances (`exp3.max_utterances`).
# Rows whose weights do not load (the codecs, offline) are listed as skipped. The `reading`
# column is the gate's decision as it should be read: a PASS of a representation whose frames
# are mostly their position in the utterance (position share above 0.5, e.g. Whisper with
# random weights) is marked positional. Its vMF gain is not comparable with Exp 1's (fewer
# utterances and steps, frames pooled from 100 Hz): compare the rows with each other.

# %%
if "exp3" in experiments:
    manifest3 = cap_phase0_utterances(manifest, config["exp3"]["max_utterances"], seed=config["seed"])
    with Stopwatch() as sw:
        exp3 = tier1_compare_representations(
            manifest3,
            config,
            out / "exp3",
            device=run_device,
            seed=config["seed"],
            local_files_only=config["encoder"]["local_files_only"],
        )
    timings["exp3_s"] = sw.seconds
    tables["exp3"] = exp3["table"]
    ok = exp3["table"][exp3["table"]["status"] == "ok"]
    display(tier1_table(exp3["table"], "exp3"))
    exp3_conclusion = tier1_representation_conclusion(exp3["table"], config, evaluation if exp1 is not None else None)
    print(exp3_conclusion)
    if len(ok):
        fig = plot_tier1_representations(exp3["table"])
        save_figure(fig, out, "exp3_representations")
        plt.show()
    update_results(
        out,
        exp3={
            "rows": exp3["table"].to_dict(orient="records"),  # NaN is written as null
            "schemes": exp3["schemes"].to_dict(orient="records"),
            "utterances": len(manifest3),
            "conclusion": exp3_conclusion,
        },
    )

# %% [markdown]
# ## Report

# %%
meta = {
    "device": device_text,
    "data": data_text,
    "encoder": config["encoder"]["name"],
    "config_hash": tier1_config_hash(config),
    "experiments": experiments,
    "exp1_gains": evaluation["gains"] if exp1 is not None else [],
    "exp1_rollout_conclusion": rollout_conclusion if exp1 is not None and rollout is not None else None,
    "exp2_conclusion": exp2_conclusion if "exp2" in experiments else None,
    "exp3_conclusion": exp3_conclusion if "exp3" in experiments else None,
    "notes": notes,
}
extra = {"exp3_schemes": exp3["schemes"]} if "exp3" in experiments else {}
outputs = write_tier1_report(out, meta, tables, extra)
load_end = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
update_results(out, timings={**timings, "load_average_end": load_end[0]}, outputs=outputs)
print(f"report (the tables above and the conclusions, as text): {outputs['report']}")
print("timings:", ", ".join(f"{k} {v:.1f} s" if isinstance(v, float) else f"{k} {v}" for k, v in timings.items()))
