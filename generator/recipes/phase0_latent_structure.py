# %% [markdown]
# # Phase 0: do codec latents show reusable local structure?
#
# A gate experiment, run before any modelling. If coarse clusters of the recent context
# (the last `W` latent frames) predict the next step's dynamics much better than chance, and
# they do so for speakers never seen while fitting, a lookup memory could reuse that local
# structure and the research goes on. If not, that is a valid negative result.
#
# Pipeline: LibriSpeech utterances, split by speaker (seeded) -> encoder latents (Mimi's
# continuous pre-quantisation latents by default; EnCodec, DAC or a log-mel baseline) in a
# resumable, shardable zarr store -> a frame table (context window, next-step delta, energy,
# relative position) -> conditioning schemes fitted on train speakers -> variance ratio,
# entropy reduction, cross-speaker degradation, confound slices and a random baseline ->
# **PASS/FAIL** with thresholds from a YAML config, written to `report.txt`,
# `decision.json`, `metrics.json`, `tables.csv` and plots.
#
# Planted controls run first: data with cluster-driven dynamics must PASS and a
# structureless random walk must FAIL, so the reader sees that the measurement can say both.

# %% tags=["parameters"]
data_path = None  # [path] LibriSpeech folder (speaker/chapter/ or flat layout); None: look up `subset`
subset = "auto"  # [auto|sample|train-clean-100|train-clean-360|dev-clean|test-clean] auto: train-clean-100 if present
output_dir = "runs/phase0_latent_structure/latest"  # results.json, report, artefacts and figures go here
seed = 0  # [int 0..] random seed (split, subsampling, k-means, PCA, shuffles)
encoder = "kyutai/mimi"  # logmel, a codec (kyutai/mimi, facebook/encodec_24khz ...) or bundled/whisper-tiny.en
encoder_layer = None  # speech models such as Whisper: hidden-state layer (None: the last)
whisper_mode = "padded"  # [padded|clip] bundled Whisper: the reference 30 s input, or sliced to the clip
device = "auto"  # [auto|cpu|cuda|mps] where the encoder runs
local_files_only = False  # [bool] True: never download the model (use the local cache or a folder)
context_frames = 4  # [int 1..] context window W in latent frames; 4 frames is 320 ms at 12.5 Hz
edge = "valid"  # [valid|pad] valid: only steps with a full context; pad: repeat the first frame
n_eval_speakers = None  # [int 1..] held-out speakers (None: 51 of 251, proportionally for other sets)
max_utterances = None  # [int 1..] cap on utterances, split proportionally (None: all)
max_seconds = None  # [float 0.1..] cut each utterance to this many seconds (None: whole utterances)
store_dir = None  # latent store folder (None: <output_dir>/latents); share it to reuse or to split work
shard_index = 0  # [int 0..] this machine's shard, 0-based
num_shards = 1  # [int 1..] machines sharing the extraction; analysis runs once all parts are in store_dir
chunk_utterances = 16  # [int 1..] utterances per stored part (the unit of resumption)
config_path = None  # [path] YAML with parameters and gate thresholds (configs/phase0.yaml); -p values win over it
run_controls = True  # [bool] run the planted positive / negative controls first
control_speakers = 30  # [int 5..] speakers in each planted control data set (a fifth held out)
sweep_context_frames = [1, 2, 8]  # [each int 1..] extra context windows beside context_frames ([]: skip)

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, display

from lib.core.datasets import load_librispeech, resolve_librispeech_subset
from lib.core.outputs import Stopwatch, prepare_output_dir, save_figure, update_results
from lib.core.runtime import pick_device, seed_everything
from lib.phase0.phase0_artifacts import phase0_config_hash, write_phase0_artifacts
from lib.phase0.phase0_config import apply_phase0_run_config, write_phase0_run_config
from lib.phase0.phase0_frames import build_frame_table
from lib.phase0.phase0_latents import (
    cap_phase0_utterances,
    consolidate_latent_store,
    extract_latents_to_store,
    load_phase0_encoder,
    open_latent_store,
    phase0_store_header,
    split_phase0_speakers,
    write_phase0_split,
)
from lib.phase0.phase0_metrics import (
    evaluate_phase0,
    load_phase0_config,
    phase0_context_sweep,
    phase0_scheme_figures,
    planted_phase0_data,
)
from lib.phase0.phase0_report import (
    plot_phase0_context_sweep,
    plot_phase0_variance_ratios,
    write_phase0_report,
)

# config_path: the file's values apply to the parameters left at their defaults (from the parameters cell)
phase0_defaults = {name: entry["default"] for name, entry in _audiolens_parameter_schema.items()}
gate_settings, config_sources = apply_phase0_run_config(globals(), phase0_defaults, config_path)
if config_sources:
    print("from", config_path, ":", config_sources)
seed_everything(seed)
out = prepare_output_dir(output_dir)
config = load_phase0_config(overrides=gate_settings)
run_parameters = {name: globals()[name] for name in phase0_defaults}
write_phase0_run_config(out / "phase0_config.yaml", run_parameters, config)
timings = {}
print(json.dumps(config, indent=1))

# %% [markdown]
# ## Data and the speaker split
# Whole speakers are held out: every number on "eval" comes from voices the clusters never saw.

# %%
resolved_subset = resolve_librispeech_subset(subset) if data_path is None else subset
manifest = load_librispeech(data_path, subset=resolved_subset)
manifest = split_phase0_speakers(manifest, n_eval=n_eval_speakers, seed=seed)
manifest = cap_phase0_utterances(manifest, max_utterances, seed=seed)
split_files = write_phase0_split(manifest, out)
speaker_counts = manifest.groupby("split")["speaker"].nunique().to_dict()
print(f"{len(manifest)} utterances; speakers: {speaker_counts}")
update_results(
    out,
    data={
        "source": str(data_path or resolved_subset),
        "sex_stratified": bool("sex" in manifest.columns and manifest["sex"].notna().all()),
        "utterances": len(manifest),
        "train_speakers": int(speaker_counts.get("train", 0)),
        "eval_speakers": int(speaker_counts.get("eval", 0)),
        "train_utterances": int((manifest.split == "train").sum()),
        "eval_utterances": int((manifest.split == "eval").sum()),
        "split_files": split_files,
    },
)

# %% [markdown]
# ## Latents: extraction into the resumable store
# Parts already in the store are reused (an interrupted run resumes where it stopped). With
# `num_shards > 1` this machine encodes only its share; run the other shards into copies of
# the same folder, bring the parts together, and run again (any shard) to analyse.
# The analysis holds all latents in memory: full train-clean-100 through Mimi is about
# 4.5 M frames x 512 dims (9 GB in float32, twice that with the deltas); cap it with
# `max_utterances` (2,000 utterances are about 7 h, 300 k frames) on a small machine.

# %%
store = Path(store_dir) if store_dir else out / "latents"
with Stopwatch() as sw:
    phase0_encoder = load_phase0_encoder(
        encoder,
        device=pick_device(device),
        local_files_only=local_files_only,
        layer=encoder_layer,
        whisper_mode=whisper_mode if "whisper" in str(encoder).lower() else None,
    )
timings["load_encoder_s"] = sw.seconds
print(phase0_encoder.info())
with Stopwatch() as sw:
    extraction = extract_latents_to_store(
        manifest,
        phase0_encoder,
        store,
        shard_index=shard_index,
        num_shards=num_shards,
        chunk_utterances=chunk_utterances,
        max_seconds=max_seconds,
    )
timings["extract_s"] = sw.seconds
ready = extraction["store_complete"]
if ready:
    with Stopwatch() as sw:
        consolidate_latent_store(store)
        index, latents, energy, encoder_info = open_latent_store(store)
    timings["consolidate_s"] = sw.seconds
    index = index.merge(manifest[["utterance", "split"]], on="utterance", how="left", suffixes=("_stored", ""))
    print(
        f"{len(index)} utterances, {latents.shape[0]} frames of {latents.shape[1]}-d latents at "
        f"{encoder_info['frame_rate']:.2f} Hz"
    )
else:
    print(
        f"Shard {shard_index + 1} of {num_shards} done: {extraction['parts_complete']} of "
        f"{extraction['parts_total']} parts in {store}. The analysis runs once every part is there."
    )
rtf = extraction["encode_seconds"] / extraction["audio_seconds"] if extraction["audio_seconds"] else None
update_results(
    out,
    extraction={
        **{k: v for k, v in extraction.items() if k != "failures"},
        "failures": len(extraction["failures"]),
        "real_time_factor": rtf,
        "encoder": phase0_encoder.info(),
        "store": str(store),
        "ready": ready,
    },
)

# %% [markdown]
# ## Controls: can the measurement say yes and no?
# The same evaluation on planted data whose answer is known.

# %%
controls = {}
if ready and run_controls:
    for kind, expected in (("clusters", "PASS"), ("random_walk", "FAIL")):
        p_index, p_latents, p_energy = planted_phase0_data(
            kind, speakers=control_speakers, eval_speakers=max(2, control_speakers // 5), seed=seed
        )
        p_frames = build_frame_table(p_index, context_frames, p_energy, edge=edge)
        with Stopwatch() as sw:
            p_result = evaluate_phase0(p_latents, p_frames, {**config, "kmeans_n_init": 1}, seed=seed, progress=False)
        best = p_result["table"].sort_values("vr_eval").iloc[0]
        controls[kind] = {
            "expected": expected,
            "decision": p_result["decision"]["decision"],
            "as_expected": p_result["decision"]["decision"] == expected,
            "best_scheme": best["scheme"],
            "vr_eval": float(best["vr_eval"]),
            "vr_random_eval": float(best["vr_random_eval"]),
            "seconds": sw.seconds,
        }
    display(pd.DataFrame(controls).T)
    update_results(out, controls=controls)

# %% [markdown]
# ## Frames, conditioning, metrics and the decision

# %%
if ready:
    frames = build_frame_table(index, context_frames, energy, edge=edge)
    skipped = frames.table.attrs["skipped_short"]
    print(f"{len(frames)} frames; {len(skipped)} utterance(s) too short for W = {context_frames}")
    with Stopwatch() as sw:
        result = evaluate_phase0(latents, frames, config, seed=seed)
    timings["evaluate_s"] = sw.seconds
    meta = {
        "encoder": encoder_info["encoder"],
        "family": encoder_info["family"],
        "frame_rate": encoder_info["frame_rate"],
        "data": str(data_path or f"LibriSpeech {resolved_subset}"),
        "seed": seed,
        "store": str(store),
        "controls": controls,
        "notes": [f"planted controls: {k} -> {v['decision']} (expected {v['expected']})" for k, v in controls.items()],
    }
    if encoder_info["family"] == "logmel":
        meta["notes"].append(
            "log-mel is the no-learning baseline, not a codec: its answer says how much "
            "structure the signal itself has at this frame rate"
        )
    outputs = write_phase0_report(result, out, meta)
    store_header = phase0_store_header(store)
    artifact_hash = phase0_config_hash(
        config,
        {
            "encoder": encoder_info.get("fingerprint"),
            "context_frames": int(context_frames),
            "edge": edge,
            "seed": seed,
            "store_key": store_header.get("store_key"),
        },
    )
    outputs.update(
        write_phase0_artifacts(
            result,
            frames,
            out,
            {**meta, "encoder_info": encoder_info, "store_key": store_header.get("store_key")},
            artifact_hash,
        )
    )
    decision = result["decision"]
    scheme_figures = {row["scheme"]: {**phase0_scheme_figures(row), "cells": row["cells"]} for row in result["rows"]}
    update_results(
        out,
        decision={
            k: decision[k]
            for k in (
                "decision",
                "rule",
                "passing_schemes",
                "summary",
                "best_scheme",
                "best_vr_eval",
                "chosen_scheme",
                "chosen_vr_eval",
            )
        },
        schemes=scheme_figures,
        counts=result["counts"],
        outputs=outputs,
        linear_reference=result["linear_reference"],
        timings={**timings, "frames_per_second_evaluated": len(frames) / timings["evaluate_s"]},
    )
    display(result["table"].set_index("scheme").T.round(3))
    print(Path(outputs["report_txt"]).read_text())
else:
    update_results(out, timings=timings)

# %% [markdown]
# ## Plots
# Bars below the dashed line pass the variance criterion; the random-cell bars must sit at 1.0.

# %%
if ready:
    fig = plot_phase0_variance_ratios(result)
    plt.show()
    for name in ("per_speaker_variance_ratio", "cell_sizes"):
        display(Image(filename=outputs[name]))

# %% [markdown]
# ## Context window sweep
# The same measures (k-means schemes) for other context lengths. The decision above uses
# `context_frames` only; this shows whether the answer hinges on that choice.

# %%
if ready and sweep_context_frames:
    windows = sorted(set(int(w) for w in sweep_context_frames) | {int(context_frames)})
    with Stopwatch() as sw:
        sweep = phase0_context_sweep(latents, index, energy, windows, config, seed=seed, edge=edge)
    sweep.to_csv(out / "context_sweep.csv", index=False)
    fig = plot_phase0_context_sweep(sweep, config)
    save_figure(fig, out, "context_sweep")
    plt.show()
    display(sweep.round(3))
    update_results(
        out, context_sweep={"windows": windows, "seconds": sw.seconds, "rows": sweep.round(5).to_dict(orient="records")}
    )
