# %% [markdown]
# # Tier 1 Exp 2: can the model use a lookup memory? (injection diagnostic)
#
# The memory is what a lookup-based model could retrieve: for the cell `c` of the current
# context under a Phase 0 conditioning scheme (k-means over the context, fitted on train
# speakers; `lib.phase0.phase0_artifacts`), the **mean next-step delta of that cell** for
# each horizon, estimated on train speakers (at most `diag.max_train_samples` windows), in
# the model's scaled target space.
#
# Starting from an Exp 1 checkpoint, each model gets a zero-initialised memory pathway
# (`diag.memory_mode`: `input` into the trunk, or `bias` on the predicted mean) and is
# fine-tuned for `diag.finetune_steps` with the real memory, which is zeroed for a share
# `diag.memory_dropout` of the windows, so the same model also knows how to predict without
# memory. On `diag.n_eval_utterances` x `diag.segments_per_utt` windows of held-out speakers
# it is then scored, per horizon, with four memories:
#
# | memory | what it is |
# |---|---|
# | zero | no memory: the baseline |
# | real | the train-speaker mean delta of the window's own cell |
# | shuffled | the same table with the cell ids permuted: right format, wrong content |
# | oracle | the mean delta of the window's cell computed on the eval speakers themselves |
#
# Gains are NLL reductions against zero memory (nats per frame); **recovery** is
# `gain(real) / gain(oracle)`: how much of what a perfect per-cell lookup would give the
# real, train-estimated memory delivers (reported only when the oracle gain exceeds twice its
# standard error: when even the oracle does not help, there is nothing to recover). Standard
# errors are clustered by utterance (`clustered_standard_error`): the windows of one utterance
# are not independent observations. Shuffled
# memory must give no gain; evaluated on the model fine-tuned with real memory it usually
# gives a *loss* (below 0: the model relies on its memory and is misled by another cell's
# delta). The **shuffled control** (`diag.control`) is a copy of the Exp 1 model fine-tuned
# identically, but whose memory is always another random train window's cell (no
# information about the window); its gain over its own zero memory is the null level, about
# 0. A real gain well above it, with a recovery near 1, means the model can use a lookup
# memory.

# %%
import copy

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from lib.phase0.phase0_artifacts import (
    Phase0ArtifactError,
    Phase0CellAssigner,
    load_phase0_artifacts,
    phase0_config_hash,
    write_phase0_artifacts,
)
from lib.phase0.phase0_frames import build_frame_table
from lib.phase0.phase0_metrics import evaluate_phase0, load_phase0_config
from lib.phase0.phase0_report import write_phase0_report
from lib.phase0.tier1_data import Tier1WindowDataset, tier1_sample_windows, tier1_source_arrays
from lib.phase0.tier1_metrics import clustered_standard_error, tier1_window_nll
from lib.phase0.tier1_training import tier1_train

TIER1_MEMORY_CONDITIONS = ("zero", "real", "shuffled", "oracle")


def tier1_check_artifacts(artifacts, source, eval_speakers) -> None:
    """Refuse Phase 0 artefacts of another encoder, dimension, or whose train speakers include eval speakers."""
    theirs = artifacts.manifest.get("encoder", {})
    ours = source.encoder
    if theirs.get("fingerprint") and ours.get("fingerprint") and theirs["fingerprint"] != ours["fingerprint"]:
        raise Phase0ArtifactError(
            f"{artifacts.folder}: Phase 0 was fitted on {theirs.get('encoder')!r} latents (fingerprint "
            f"{str(theirs['fingerprint'])[:12]}), this run uses {ours.get('encoder')!r} "
            f"({str(ours['fingerprint'])[:12]}). Run Phase 0 with the same encoder, or leave phase0_dir None."
        )
    if len(artifacts.normaliser.latent_mean) != source.dim:
        raise Phase0ArtifactError(
            f"{artifacts.folder}: Phase 0 latents have {len(artifacts.normaliser.latent_mean)} dims, "
            f"this store {source.dim}"
        )
    leaked = sorted(set(artifacts.manifest.get("train_speakers", [])) & {str(s) for s in eval_speakers})
    if leaked:
        raise Phase0ArtifactError(
            f"{artifacts.folder}: {len(leaked)} of this run's held-out speakers (e.g. {leaked[:3]}) were train "
            "speakers of that Phase 0 fit, so its cells have seen them. Use the same seed and speaker split "
            "as that Phase 0 run, or leave phase0_dir None to fit Phase 0 on this run's split."
        )


def tier1_fit_phase0(source, output_dir, context_frames: int, overrides: dict, seed: int = 0, meta=None):
    """Run the Phase 0 evaluation on a Tier 1 source and write its report and artefacts; return them loaded.

    Used when no Phase 0 run folder is given: the cells are then fitted on this run's own
    train speakers, so they never saw the held-out speakers.
    """
    index, latents, energy = tier1_source_arrays(source)
    frames = build_frame_table(index, int(context_frames), energy)
    config = load_phase0_config(overrides=overrides)
    result = evaluate_phase0(latents, frames, config, seed=seed, progress=False)
    info = dict(source.encoder)
    meta = {
        "encoder": info.get("encoder"),
        "family": info.get("family"),
        "frame_rate": info.get("frame_rate"),
        "encoder_info": info,
        "seed": seed,
        "store": getattr(source, "store_dir", None),
        "store_key": getattr(source, "header", {}).get("store_key"),
        **(meta or {}),
    }
    config_hash = phase0_config_hash(
        config, {"encoder": info.get("fingerprint"), "context_frames": int(context_frames), "seed": seed}
    )
    write_phase0_report(result, output_dir, meta)
    write_phase0_artifacts(result, frames, output_dir, meta, config_hash)
    return load_phase0_artifacts(output_dir), result


# %% [markdown]
# ## The memory tables


# %%
def tier1_cell_means(targets, cells, n_cells: int) -> tuple:
    """``(table [n_cells + 1, K, D], counts)``: the mean target per cell; row ``n_cells`` (unseen) stays 0."""
    targets = np.asarray(targets, dtype=np.float64)
    cells = np.where(np.asarray(cells) >= 0, cells, n_cells)
    sums = np.zeros((n_cells + 1,) + targets.shape[1:])
    counts = np.zeros(n_cells + 1, dtype=np.int64)
    np.add.at(sums, cells, targets)
    np.add.at(counts, cells, 1)
    table = sums / np.maximum(counts, 1).reshape(-1, *([1] * (targets.ndim - 1)))
    table[n_cells] = 0.0
    return table.astype(np.float32), counts


def tier1_permutation(n_cells: int, seed: int = 0) -> np.ndarray:
    """A seeded permutation of ``0..n_cells-1`` with no fixed point (the unseen row maps to itself)."""
    rng = np.random.default_rng([seed, 61])
    perm = rng.permutation(n_cells)
    if n_cells > 1:
        fixed = np.flatnonzero(perm == np.arange(n_cells))
        for i in fixed:
            j = (i + 1) % n_cells
            perm[i], perm[j] = perm[j], perm[i]
    return np.concatenate([perm, [n_cells]])


# %% [markdown]
# ## Fine-tuning with memory, and the four conditions


# %%
def tier1_injection(
    models: dict,
    source,
    scaling,
    artifacts,
    config: dict,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Run the diagnostic for every model in ``models`` (fine-tuned in place); return tables and memories."""
    diag, window, horizons = config["diag"], config["context"]["window"], config["context"]["horizons_k"]
    assigner = Phase0CellAssigner(artifacts, diag["scheme"])
    n_cells = assigner.n_cells
    common = {"min_history": assigner.window, "cluster_fn": assigner, "seed": seed}
    train = tier1_sample_windows(
        source, scaling, window, horizons, split="train", max_samples=diag["max_train_samples"], **common
    )
    memory_real, train_counts = tier1_cell_means(train["targets"], train["cluster"], n_cells)
    oracle_windows = tier1_sample_windows(
        source, scaling, window, horizons, split="eval", max_samples=diag["max_train_samples"], **common
    )
    memory_oracle, eval_counts = tier1_cell_means(oracle_windows["targets"], oracle_windows["cluster"], n_cells)
    evalw = tier1_sample_windows(
        source,
        scaling,
        window,
        horizons,
        split="eval",
        n_utterances=diag["n_eval_utterances"],
        per_utterance=diag["segments_per_utt"],
        **common,
    )
    cells = np.where(evalw["cluster"] >= 0, evalw["cluster"], n_cells)
    perm = tier1_permutation(n_cells, seed)
    memories = {
        "zero": np.zeros_like(memory_real[cells]),
        "real": memory_real[cells],
        "shuffled": memory_real[perm[cells]],
        "oracle": memory_oracle[cells],
    }
    table_t = torch.as_tensor(memory_real)
    train_cells = np.where(train["cluster"] >= 0, train["cluster"], n_cells)
    rng = torch.Generator().manual_seed(seed * 7 + 3)

    def memory_batch(batch, shuffled_cells: bool):
        cell = batch["cluster"]
        cell = torch.where(cell >= 0, cell, torch.full_like(cell, n_cells))
        if shuffled_cells:  # the control: another (random) train window's cell, independent of this window
            pick = torch.randint(len(train_cells), (len(cell),), generator=rng)
            cell = torch.as_tensor(train_cells)[pick]
        keep = (torch.rand(len(cell), generator=rng) >= diag["memory_dropout"]).float()
        return batch["context"], batch["targets"], table_t[cell] * keep.view(-1, 1, 1)

    base = {
        name: tier1_window_nll(model, evalw["context"], evalw["targets"], device=device)["nll"].mean(0)
        for name, model in models.items()
    }
    controls = {f"{name}:control": copy.deepcopy(model) for name, model in models.items()} if diag["control"] else {}
    histories = {}
    for group, shuffled_cells in ((models, False), (controls, True)):
        if not group:
            continue
        for model in group.values():
            model.add_memory(diag["memory_mode"])
        dataset = Tier1WindowDataset(
            source,
            scaling,
            window,
            horizons,
            split="train",
            batch_size=config["train"]["batch_size"],
            shuffle_buffer=config["train"]["shuffle_buffer"],
            seed=seed + 1000,
            cluster_fn=assigner,
            min_history=assigner.window,
        )
        histories["control" if shuffled_cells else "memory"] = tier1_train(
            group,
            dataset,
            {**config["train"], "compile": False, "checkpoint_every": 10**9},
            diag["finetune_steps"],
            device=device,
            prepare=lambda batch, step, flag=shuffled_cells: memory_batch(batch, flag),
            lr=diag["lr"],
            progress=progress,
            desc="fine-tune, shuffled-memory control" if shuffled_cells else "fine-tune with memory",
        )
    random_cells = train_cells[np.random.default_rng([seed, 67]).integers(len(train_cells), size=len(cells))]
    rows = []
    for name, model in models.items():
        nll = {
            cond: tier1_window_nll(model, evalw["context"], evalw["targets"], memories[cond], device=device)["nll"]
            for cond in TIER1_MEMORY_CONDITIONS
        }
        if controls:
            control = controls[f"{name}:control"]
            nll["control_zero"], nll["control_shuffled"] = (
                tier1_window_nll(control, evalw["context"], evalw["targets"], mem, device=device)["nll"]
                for mem in (memories["zero"], memory_real[random_cells])
            )
        for i, k in enumerate(horizons):
            row = {"model": name, "k": int(k), "windows": int(len(cells)), "nll_exp1": float(base[name][i])}
            row.update({f"nll_{cond}": float(nll[cond][:, i].mean()) for cond in TIER1_MEMORY_CONDITIONS})
            pairs = [("real", "zero", "real"), ("shuffled", "zero", "shuffled"), ("oracle", "zero", "oracle")]
            if controls:
                pairs.append(("shuffled_control", "control_zero", "control_shuffled"))
            for label, reference, cond in pairs:
                diff = nll[reference][:, i] - nll[cond][:, i]
                row[f"gain_{label}"] = float(diff.mean())
                # windows of one utterance are not independent: the standard error is clustered by utterance
                row[f"gain_{label}_se"] = clustered_standard_error(diff, evalw["utterance"])
            oracle_gain = row["gain_oracle"]
            row["oracle_gain_significant"] = bool(oracle_gain > 2 * row["gain_oracle_se"])
            for label in ("real", "shuffled", "shuffled_control"):
                if f"gain_{label}" in row:  # a ratio over an oracle gain within its noise says nothing: nan
                    significant = row["oracle_gain_significant"]
                    row[f"recovery_{label}"] = row[f"gain_{label}"] / oracle_gain if significant else float("nan")
            rows.append(row)
    return {
        "rows": rows,
        "table": pd.DataFrame(rows),
        "history": histories,
        "cells": int(n_cells),
        "cells_with_train_windows": int((train_counts[:n_cells] > 0).sum()),
        "train_windows": int(len(train["targets"])),
        "eval_windows": int(len(cells)),
        "eval_utterances": int(len(np.unique(evalw["utterance"]))),
        "eval_frames_in_unseen_cells": float(np.mean(evalw["cluster"] < 0)),
        "oracle_windows": int(len(oracle_windows["targets"])),
        "oracle_cells_seen": int((eval_counts[:n_cells] > 0).sum()),
    }


# %%
def tier1_injection_conclusion(table: pd.DataFrame) -> str:
    """What Exp 2's table says, in a sentence or two (printed, and written to ``results.json``)."""
    if table.empty:
        return "Exp 2 scored no windows: no conclusion."
    rows = f"{len(table)} rows (model x k)"
    helps = table[table["oracle_gain_significant"]]
    if helps.empty:
        best = table.loc[(table["gain_oracle"] / table["gain_oracle_se"].clip(lower=1e-12)).idxmax()]
        return (
            f"No memory helps, not even the oracle: in all {rows} the oracle's gain is within 2 SE of zero "
            f"(largest {best['gain_oracle']:+.3f} +- {best['gain_oracle_se']:.3f} nats/frame, "
            f"{best['model']} k={best['k']}). "
            "The cells of this scheme carry nothing about the next step that the model does not already read "
            "from its context, so there is nothing for a real memory to recover: the test cannot show whether "
            "the model would use a lookup memory. This is Phase 0's gate seen from the model's side."
        )
    real_helps = helps[helps["gain_real"] > 2 * helps["gain_real_se"]]
    recovery = helps["recovery_real"]
    text = (
        f"The oracle memory helps in {len(helps)} of {rows}; there, the real (train-speaker) memory recovers "
        f"{recovery.min():.2f}-{recovery.max():.2f} of the oracle's gain, and its own gain exceeds 2 SE in "
        f"{len(real_helps)} of them."
    )
    if "gain_shuffled_control" in helps:
        low, high = helps["gain_shuffled_control"].min(), helps["gain_shuffled_control"].max()
        text += f" The shuffled control (the null level) gains {low:+.3f} to {high:+.3f} nats/frame there."
    if (helps["gain_shuffled"] < 0).all():
        text += " Shuffled cell ids cost NLL in every such row: the model follows its memory."
    return text


# %%
def plot_tier1_injection(table: pd.DataFrame):
    """Gain over zero memory (nats per frame) per horizon: real, shuffled and oracle memory, per model."""
    names = list(table["model"].unique())
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = table[table["model"] == name].sort_values("k")
        x = np.arange(len(rows))
        conds = [c for c in ("real", "shuffled", "shuffled_control", "oracle") if f"gain_{c}" in rows]
        width = 0.8 / len(conds)
        for j, cond in enumerate(conds):
            ax.bar(
                x + (j - (len(conds) - 1) / 2) * width,
                rows[f"gain_{cond}"],
                width,
                yerr=2 * rows[f"gain_{cond}_se"],
                label=cond.replace("_", " "),
            )
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(x, [f"k = {k}" for k in rows["k"]])
        ax.set_ylabel("NLL gain over zero memory\n(nats/frame; bars +- 2 SE)")
        if rows["recovery_real"].isna().all():
            ax.set_title(f"{name}: oracle gain within noise, no recovery to report")
        else:
            recovery = ", ".join("-" if np.isnan(r) else f"{r:.2f}" for r in rows["recovery_real"])
            ax.set_title(f"{name}: recovery of the oracle gain {recovery}")
        ax.legend(fontsize=8)
    fig.suptitle("Exp 2: memory injection on held-out speakers")
    fig.tight_layout()
    return fig
