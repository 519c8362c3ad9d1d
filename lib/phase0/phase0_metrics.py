# %% [markdown]
# # Phase 0 metrics and the PASS/FAIL decision
#
# For each conditioning scheme, with cells fitted on train speakers (`lib.phase0.phase0_conditioning`)
# and next-step deltas standardised with train statistics:
#
# - **Variance ratio** `VR = sum ||d - m[c]||^2 / sum ||d - m||^2`: the within-cell variance of
#   the next-step delta `d` over its total variance, where `m[c]` is the mean delta of cell
#   `c` and `m` the overall mean, both **estimated on train speakers**. On train speakers it is
#   the classical within/total ratio; on held-out speakers it is out-of-sample (it can exceed
#   1 when train cell means do not transfer). 1.0 means the context cell says nothing about
#   the dynamics, 0 that it determines them. The decision uses the held-out value.
# - **Entropy reduction** `1 - H(Y|C) / H(Y)`, where `Y` is the delta quantised with a
#   k-means "dynamics codebook" (fitted on train deltas) and the probabilities are train
#   counts with add-`alpha` smoothing, evaluated as cross-entropies on each split.
# - **Cross-speaker degradation** `(g_train - g_eval) / g_train` with `g = 1 - VR`: the share of
#   the explained variance lost on unseen speakers.
# - **Confound slices**: the same held-out variance ratio (cell means refitted on the train
#   frames of the slice) on high-energy frames only (energy above the train speakers'
#   quantile `high_energy_quantile`) and on utterance-medial frames only (relative position in
#   `medial_range`). Silence-vs-speech and utterance onsets/offsets give easy, useless
#   structure; it must survive without them.
# - **Random baseline**: the scheme's own labels shuffled (same cell sizes); its variance
#   ratio must be about 1.0, otherwise the estimate itself is biased (too many cells for the
#   data) and the comparison is void.
#
# A scheme PASSES when `VR_eval < variance_ratio_max` (0.6), degradation `< degradation_max`
# (20%), both slices have `VR_eval < slice_variance_ratio_max` (0.6) and
# `|VR_random_eval - 1| <= random_baseline_tolerance`. The gate PASSES when any scheme does
# (`decision_rule: any`; `all`, or one scheme's name, are stricter). All thresholds live in a
# YAML config: the defaults below, overridden by a user's file, and written beside the results.

# %%
import copy
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.linear_model import Ridge
from tqdm.auto import tqdm

from lib.core.atomic_io import atomic_write_text
from lib.phase0.phase0_conditioning import (
    PHASE0_SCHEMES,
    fit_phase0_conditioner,
    fit_phase0_normaliser,
    random_same_sizes,
)
from lib.phase0.phase0_frames import Phase0FrameTable, build_frame_table, context_features, next_step_deltas

PHASE0_DEFAULT_CONFIG = {
    "variance_ratio_max": 0.6,  # held-out variance ratio must be below this
    "degradation_max": 0.20,  # share of explained variance lost on unseen speakers, below this
    "slice_variance_ratio_max": 0.6,  # the same bound on the high-energy and the medial slice
    "random_baseline_tolerance": 0.05,  # |VR of shuffled cells - 1| at most this
    "decision_rule": "any",  # any | all | <scheme name>
    "high_energy_quantile": 0.5,  # high-energy slice: frames above this quantile of train energies
    "medial_range": [0.2, 0.8],  # utterance-medial slice: relative position inside this range
    "schemes": list(PHASE0_SCHEMES),  # conditioning schemes to evaluate
    "dynamics_codes": 32,  # k-means codebook size for the quantised delta (entropy)
    "entropy_smoothing": 0.5,  # add-alpha smoothing of the train counts
    "min_cell_frames": 1,  # cells with fewer train frames predict the overall mean
    "max_fit_frames": 50000,  # train frames used to fit PCA / k-means (sampled, seeded)
    "kmeans_n_init": 3,  # k-means restarts (seeded)
    "kmeans_max_iter": 100,  # k-means iterations per restart, at most
    "linear_reference": True,  # also report a ridge regression from the flat context (not part of the decision)
    "ridge_alpha": 10.0,  # its L2 penalty (standardised features and targets)
}


def phase0_read_yaml(path, what: str = "Phase 0 config", error=ValueError) -> dict:
    """The mapping in the YAML file ``path``; a missing, unreadable or non-mapping file is an error naming it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as failure:
        raise error(f"{path}: not a readable YAML file ({failure})") from None
    if not isinstance(loaded, dict):
        raise error(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    return loaded


def load_phase0_config(path=None, overrides: dict | None = None) -> dict:
    """The defaults, updated by a YAML file (``path``) and then ``overrides``; unknown keys are errors."""
    config = copy.deepcopy(PHASE0_DEFAULT_CONFIG)
    layers = []
    if path is not None:
        layers.append((str(Path(path).expanduser()), phase0_read_yaml(path)))
    if overrides:
        layers.append(("overrides", overrides))
    for source, layer in layers:
        unknown = sorted(set(layer) - set(config))
        if unknown:
            raise ValueError(f"{source}: unknown Phase 0 setting(s) {unknown}; known: {sorted(config)}")
        config.update(layer)
    unknown_schemes = [s for s in config["schemes"] if s not in PHASE0_SCHEMES]
    if unknown_schemes:
        raise ValueError(f"unknown scheme(s) {unknown_schemes}; known: {list(PHASE0_SCHEMES)}")
    rule = config["decision_rule"]
    if rule not in ("any", "all") and rule not in config["schemes"]:
        raise ValueError(f"decision_rule must be 'any', 'all' or one of {config['schemes']}, not {rule!r}")
    return config


def write_phase0_config(config: dict, path) -> Path:
    """Write the config actually used as YAML (so the run can be repeated with ``config_path``)."""
    header = "# Phase 0 gate settings used for this run (pass this file as config_path to repeat it)\n"
    return atomic_write_text(path, header + yaml.safe_dump(dict(config), sort_keys=False))


# %% [markdown]
# ## The measures


# %%
def fit_cell_means(targets, labels, n_cells: int, min_cell_frames: int = 1):
    """``(means [n_cells, D], counts [n_cells])``; cells under ``min_cell_frames`` get the overall mean."""
    targets = np.asarray(targets, dtype=np.float64)
    labels = np.asarray(labels)
    overall = targets.mean(axis=0)
    sums = np.zeros((n_cells, targets.shape[1]))
    counts = np.zeros(n_cells, dtype=np.int64)
    ok = labels >= 0
    np.add.at(sums, labels[ok], targets[ok])
    np.add.at(counts, labels[ok], 1)
    means = np.where(counts[:, None] >= max(min_cell_frames, 1), sums / np.maximum(counts, 1)[:, None], overall)
    return means, counts, overall


def variance_ratio(targets, labels, means, overall) -> float:
    """Squared error of the cell-mean prediction over squared error of the overall mean."""
    targets = np.asarray(targets, dtype=np.float64)
    labels = np.asarray(labels)
    prediction = np.where((labels >= 0)[:, None], means[np.clip(labels, 0, None)], overall)
    total = float(np.sum((targets - overall) ** 2))
    return float(np.sum((targets - prediction) ** 2) / total) if total > 0 else float("nan")


def cross_entropy_reduction(
    codes_train, labels_train, codes, labels, n_codes: int, n_cells: int, alpha: float = 0.5
) -> dict:
    """``1 - H(Y|C)/H(Y)`` in bits, distributions from train counts (add-``alpha``), evaluated on ``codes``."""
    joint = np.zeros((n_cells + 1, n_codes))
    cells_train = np.where(np.asarray(labels_train) >= 0, labels_train, n_cells)
    np.add.at(joint, (cells_train, codes_train), 1)
    marginal = (joint.sum(axis=0) + alpha) / (joint.sum() + alpha * n_codes)
    conditional = (joint + alpha) / (joint.sum(axis=1, keepdims=True) + alpha * n_codes)
    cells = np.where(np.asarray(labels) >= 0, labels, n_cells)
    seen = joint.sum(axis=1)[cells] > 0
    h_y = float(-np.mean(np.log2(marginal[codes])))
    p = np.where(seen, conditional[cells, codes], marginal[codes])
    h_y_c = float(-np.mean(np.log2(p)))
    return {"H_Y_bits": h_y, "H_Y_given_C_bits": h_y_c, "entropy_reduction": 1.0 - h_y_c / h_y if h_y > 0 else 0.0}


def degradation(vr_train: float, vr_eval: float) -> float:
    """Share of the train speakers' explained variance lost on held-out speakers (inf if none explained)."""
    gain = 1.0 - vr_train
    return float((gain - (1.0 - vr_eval)) / gain) if gain > 1e-12 else float("inf")


def _sample_rows(n: int, limit: int, rng) -> np.ndarray:
    return np.sort(rng.choice(n, size=limit, replace=False)) if n > limit else np.arange(n)


def _labels_for(conditioner, latents, frames: Phase0FrameTable, normaliser, batch: int = 8192) -> np.ndarray:
    labels = np.empty(len(frames), dtype=np.int64)
    kind = conditioner.spec["context"]
    for start in range(0, len(frames), batch):
        part = frames.subset(np.arange(start, min(start + batch, len(frames))))
        feats = context_features(latents, part, kind, normaliser.latent_mean, normaliser.latent_std)
        labels[start : start + batch] = conditioner.assign(feats)
    return labels


# %% [markdown]
# ## One scheme's measures and the verdict


# %%
def scheme_metrics(name, labels, y, train, slices, codes, n_cells, config, seed, speakers=None) -> dict:
    """All measures for one scheme's labels (train/eval masks, slice masks, quantised deltas)."""
    rng_seed = seed + 1
    evl = ~train
    means, counts, overall = fit_cell_means(y[train], labels[train], n_cells, config["min_cell_frames"])
    vr_train = variance_ratio(y[train], labels[train], means, overall)
    vr_eval = variance_ratio(y[evl], labels[evl], means, overall)
    shuffled_train = random_same_sizes(labels[train], rng_seed)
    shuffled_eval = random_same_sizes(labels[evl], rng_seed + 1)
    r_means, _, r_overall = fit_cell_means(y[train], shuffled_train, n_cells, config["min_cell_frames"])
    row = {
        "scheme": name,
        "cells": int(n_cells),
        "cells_used_train": int((counts > 0).sum()),
        "median_cell_frames": float(np.median(counts[counts > 0])) if (counts > 0).any() else 0.0,
        "eval_frames_in_unseen_cells": float(np.mean(labels[evl] < 0)) if evl.any() else 0.0,
        "vr_train": vr_train,
        "vr_eval": vr_eval,
        "degradation": degradation(vr_train, vr_eval),
        "vr_random_train": variance_ratio(y[train], shuffled_train, r_means, r_overall),
        "vr_random_eval": variance_ratio(y[evl], shuffled_eval, r_means, r_overall),
    }
    alpha, n_codes = config["entropy_smoothing"], int(codes.max()) + 1
    for split, mask in (("train", train), ("eval", evl)):
        ent = cross_entropy_reduction(codes[train], labels[train], codes[mask], labels[mask], n_codes, n_cells, alpha)
        row[f"entropy_reduction_{split}"] = ent["entropy_reduction"]
        row[f"H_Y_{split}_bits"] = ent["H_Y_bits"]
        row[f"H_Y_given_C_{split}_bits"] = ent["H_Y_given_C_bits"]
    ent_random = cross_entropy_reduction(
        codes[train], shuffled_train, codes[evl], shuffled_eval, n_codes, n_cells, alpha
    )
    row["entropy_reduction_random_eval"] = ent_random["entropy_reduction"]
    for slice_name, mask in slices.items():
        s_train, s_eval = train & mask, evl & mask
        row[f"{slice_name}_eval_frames"] = int(s_eval.sum())
        if s_train.sum() < 2 or s_eval.sum() < 2:
            row[f"vr_eval_{slice_name}"] = float("nan")
            row[f"vr_random_eval_{slice_name}"] = float("nan")
            continue
        s_means, _, s_overall = fit_cell_means(y[s_train], labels[s_train], n_cells, config["min_cell_frames"])
        row[f"vr_train_{slice_name}"] = variance_ratio(y[s_train], labels[s_train], s_means, s_overall)
        row[f"vr_eval_{slice_name}"] = variance_ratio(y[s_eval], labels[s_eval], s_means, s_overall)
        st = random_same_sizes(labels[s_train], rng_seed + 2)
        rs_means, _, rs_overall = fit_cell_means(y[s_train], st, n_cells, config["min_cell_frames"])
        row[f"vr_random_eval_{slice_name}"] = variance_ratio(
            y[s_eval], random_same_sizes(labels[s_eval], rng_seed + 3), rs_means, rs_overall
        )
    per_speaker = {}
    if speakers is not None:
        for speaker in np.unique(speakers[evl]):
            mask = evl & (speakers == speaker)
            per_speaker[str(speaker)] = variance_ratio(y[mask], labels[mask], means, overall)
    return {"row": row, "per_speaker_vr_eval": per_speaker, "cell_counts": counts}


def scheme_verdict(row: dict, config: dict) -> dict:
    """Each criterion's value, bound and pass flag, and the scheme's overall pass."""
    checks = {
        "variance_ratio": (row["vr_eval"], "<", config["variance_ratio_max"]),
        "cross_speaker_degradation": (row["degradation"], "<", config["degradation_max"]),
        "high_energy_slice": (row.get("vr_eval_high_energy", float("nan")), "<", config["slice_variance_ratio_max"]),
        "medial_slice": (row.get("vr_eval_medial", float("nan")), "<", config["slice_variance_ratio_max"]),
        "random_baseline": (abs(row["vr_random_eval"] - 1.0), "<=", config["random_baseline_tolerance"]),
    }
    out = {}
    for key, (value, op, bound) in checks.items():
        ok = bool(np.isfinite(value) and (value < bound if op == "<" else value <= bound))
        out[key] = {"value": float(value), "bound": f"{op} {bound}", "pass": ok}
    return {"criteria": out, "pass": all(c["pass"] for c in out.values())}


def phase0_decision(rows: list, config: dict) -> dict:
    """Apply ``decision_rule`` to the per-scheme verdicts; return the gate's decision."""
    verdicts = {row["scheme"]: scheme_verdict(row, config) for row in rows}
    rule = config["decision_rule"]
    passing = [s for s, v in verdicts.items() if v["pass"]]
    if rule == "any":
        passed = bool(passing)
    elif rule == "all":
        passed = len(passing) == len(verdicts) and bool(verdicts)
    else:
        passed = verdicts.get(rule, {}).get("pass", False)
    finite = [row for row in rows if np.isfinite(row["vr_eval"])]
    # the best figure is quoted only from schemes whose random baseline holds (else their VR is biased)
    valid = [row for row in finite if verdicts[row["scheme"]]["criteria"]["random_baseline"]["pass"]]
    best = min(valid or finite, key=lambda row: row["vr_eval"]) if finite else None
    # the same choice made without the held-out speakers: the lowest training VR, then its held-out VR (unbiased)
    trained = [row for row in valid if np.isfinite(row.get("vr_train", float("nan")))]
    chosen = min(trained, key=lambda row: row["vr_train"]) if len(valid) > 1 and trained else None
    if passed:
        summary = f"PASS: {', '.join(passing)} met every criterion"
    else:
        failing = {s: [k for k, c in v["criteria"].items() if not c["pass"]] for s, v in verdicts.items()}
        summary = (
            "FAIL: no scheme met every criterion ("
            + "; ".join(f"{s}: {', '.join(f)}" for s, f in failing.items() if f)
            + ")"
        )
    if chosen is not None and chosen is best:
        selection = ", and the training speakers pick it too (lowest training VR), so the pick is not optimistic"
    elif chosen is not None:
        selection = (
            ", picked on these held-out speakers: an optimistic figure; picked on the training speakers instead "
            f"(lowest training VR): {chosen['scheme']}, held-out {chosen['vr_eval']:.3f}"
        )
    else:
        selection = ", picked on these held-out speakers: an optimistic figure" if len(valid) > 1 else ""
    if best is not None:
        summary += f". Best held-out variance ratio {best['vr_eval']:.3f} ({best['scheme']}" + (
            f", the lowest of the {len(valid)} schemes whose random baseline holds{selection})"
            if valid
            else "; no scheme's random baseline holds, so every VR here is biased)"
        )
    return {
        "decision": "PASS" if passed else "FAIL",
        "rule": rule,
        "passing_schemes": passing,
        "summary": summary,
        "best_scheme": best["scheme"] if best else None,
        "best_vr_eval": float(best["vr_eval"]) if best else None,
        "best_scheme_valid": bool(valid),  # its random baseline is within tolerance
        "chosen_scheme": chosen["scheme"] if chosen else None,  # picked on the training speakers (several valid)
        "chosen_vr_eval": float(chosen["vr_eval"]) if chosen else None,
        "schemes": verdicts,
    }


def linear_reference(
    latents, frames: Phase0FrameTable, y, train, fit_rows, normaliser, alpha: float = 10.0, batch: int = 16384
) -> dict:
    """Ridge regression from the flattened standardised context to the delta: a continuous reference.

    Not part of the decision: it tells whether the context predicts the next step *at all*
    (linearly), so a FAIL of the coarse cells can be read as "no structure" or "structure
    that coarse cells miss".
    """
    feats = context_features(latents, frames.subset(fit_rows), "flat", normaliser.latent_mean, normaliser.latent_std)
    model = Ridge(alpha=alpha).fit(feats, y[fit_rows])
    del feats
    prediction = np.empty_like(y)
    for start in range(0, len(frames), batch):
        part = frames.subset(np.arange(start, min(start + batch, len(frames))))
        prediction[start : start + batch] = model.predict(
            context_features(latents, part, "flat", normaliser.latent_mean, normaliser.latent_std)
        )
    overall = y[train].mean(axis=0)

    def ratio(mask):
        total = float(np.sum((y[mask] - overall) ** 2))
        return float(np.sum((y[mask] - prediction[mask]) ** 2) / total) if total > 0 else float("nan")

    return {"vr_train": ratio(train), "vr_eval": ratio(~train), "alpha": alpha, "fit_frames": int(len(fit_rows))}


# %% [markdown]
# ## The whole evaluation


# %%
def evaluate_phase0(
    latents, frames: Phase0FrameTable, config: dict | None = None, seed: int = 0, progress: bool = True
) -> dict:
    """Fit normalisation, dynamics codebook and every scheme on train speakers; measure; decide.

    ``frames.table`` needs ``split`` (``train``/``eval``), ``speaker``, ``energy_db`` and
    ``rel_position``. Returns ``{"rows", "decision", "per_speaker", "normaliser",
    "conditioners", "labels", "slices", "config", ...}``.
    """
    config = load_phase0_config(overrides=config)
    table = frames.table
    train = (table["split"] == "train").to_numpy()
    if train.sum() < 2 or (~train).sum() < 2:
        raise ValueError(
            f"need frames from both train and eval speakers; have {train.sum()} train, {(~train).sum()} eval"
        )
    rng = np.random.default_rng(seed)
    raw = next_step_deltas(latents, frames)
    normaliser = fit_phase0_normaliser(latents, frames.context_rows[train].ravel(), raw[train])
    y = normaliser.deltas(raw)
    del raw
    fit_rows = np.flatnonzero(train)[_sample_rows(int(train.sum()), int(config["max_fit_frames"]), rng)]
    n_codes = int(min(config["dynamics_codes"], len(fit_rows)))
    n_init, max_iter = int(config["kmeans_n_init"]), int(config["kmeans_max_iter"])
    code_model = (
        MiniBatchKMeans(n_codes, random_state=seed, n_init=n_init, batch_size=8192, max_iter=max_iter)
        if len(fit_rows) > 60000
        else KMeans(n_codes, random_state=seed, n_init=n_init, max_iter=max_iter)
    ).fit(y[fit_rows])
    codes = code_model.predict(y).astype(np.int64)
    energy = table["energy_db"].to_numpy(dtype=float)
    energy_threshold = (
        float(np.nanquantile(energy[train], config["high_energy_quantile"]))
        if np.isfinite(energy).any()
        else float("nan")
    )
    low, high = config["medial_range"]
    position = table["rel_position"].to_numpy()
    slices = {"high_energy": energy > energy_threshold, "medial": (position >= low) & (position <= high)}
    speakers = table["speaker"].astype(str).to_numpy()
    rows, per_speaker, conditioners, labels_of, cell_counts = [], {}, {}, {}, {}
    fit_frames = frames.subset(fit_rows)
    for name in tqdm(config["schemes"], desc="conditioning schemes", disable=not progress):
        spec = PHASE0_SCHEMES[name]
        feats = context_features(latents, fit_frames, spec["context"], normaliser.latent_mean, normaliser.latent_std)
        conditioner = fit_phase0_conditioner(name, feats, seed=seed, n_init=n_init, max_iter=max_iter)
        del feats
        labels = _labels_for(conditioner, latents, frames, normaliser)
        result = scheme_metrics(name, labels, y, train, slices, codes, conditioner.n_cells, config, seed, speakers)
        rows.append(
            {
                **result["row"],
                **{f"fit_{k}": v for k, v in conditioner.describe().items() if k in ("pca_explained_variance",)},
            }
        )
        per_speaker[name] = result["per_speaker_vr_eval"]
        conditioners[name] = conditioner
        labels_of[name] = labels
        cell_counts[name] = result["cell_counts"]
    decision = phase0_decision(rows, config)
    reference = (
        linear_reference(latents, frames, y, train, fit_rows, normaliser, config["ridge_alpha"])
        if config["linear_reference"]
        else None
    )
    counts = {
        "frames": int(len(frames)),
        "train_frames": int(train.sum()),
        "eval_frames": int((~train).sum()),
        "train_speakers": int(len(np.unique(speakers[train]))),
        "eval_speakers": int(len(np.unique(speakers[~train]))),
        "utterances": int(table["utterance"].nunique()),
        "latent_dim": int(np.asarray(latents).shape[1]),
        "context_frames": int(frames.window),
        "edge": frames.edge,
        "dynamics_codes": n_codes,
        "high_energy_threshold_db": energy_threshold,
        "high_energy_eval_frames": int((slices["high_energy"] & ~train).sum()),
        "medial_eval_frames": int((slices["medial"] & ~train).sum()),
    }
    return {
        "rows": rows,
        "table": pd.DataFrame(rows),
        "decision": decision,
        "per_speaker": per_speaker,
        "normaliser": normaliser,
        "conditioners": conditioners,
        "labels": labels_of,
        "cell_counts": cell_counts,
        "slices": slices,
        "train_mask": train,
        "codes": codes,
        "code_centers": code_model.cluster_centers_,
        "targets": y,
        "counts": counts,
        "config": config,
        "linear_reference": reference,
    }


def phase0_scheme_figures(row: dict, slices: bool = True) -> dict:
    """The headline figures of one scheme's row of ``evaluate_phase0`` (``slices``: with the
    high-energy and medial eval variance ratios)."""
    keys = ["vr_train", "vr_eval", "vr_random_eval", "degradation"]
    keys += ["vr_eval_high_energy", "vr_eval_medial"] if slices else []
    keys += ["entropy_reduction_eval", "entropy_reduction_random_eval"]
    return {k: row[k] for k in keys}


def phase0_context_sweep(
    latents,
    index: pd.DataFrame,
    energy_db,
    windows,
    config: dict | None = None,
    seed: int = 0,
    edge: str = "valid",
    schemes=("mean_vq64", "pca8_vq256"),
) -> pd.DataFrame:
    """The evaluation repeated for several context windows ``W``: one row per (W, scheme)."""
    config = load_phase0_config(overrides={**(config or {}), "schemes": list(schemes), "linear_reference": False})
    rows = []
    for window in tqdm(list(windows), desc="context windows"):
        frames = build_frame_table(index, int(window), energy_db, edge=edge)
        result = evaluate_phase0(latents, frames, config, seed=seed, progress=False)
        for row in result["rows"]:
            rows.append(
                {
                    "context_frames": int(window),
                    "frames": len(frames),
                    "pass": result["decision"]["schemes"][row["scheme"]]["pass"],
                    "scheme": row["scheme"],
                    **phase0_scheme_figures(row),
                }
            )
    return pd.DataFrame(rows)


# %% [markdown]
# ## Planted data: a positive and a negative control
#
# `planted_phase0_data("clusters")` makes latents whose dynamics are driven by a hidden
# state that the recent context reveals (a cycle through `states` centroids plus noise and a
# small per-speaker offset): a working gate must PASS it. `planted_phase0_data("random_walk")`
# makes a structureless Gaussian random walk, whose next step is independent of the past: the
# gate must FAIL it, with the random baseline near 1.0. The notebook runs both before the
# real data, so a reader sees that the measurement can say yes and no.


# %%
def planted_phase0_data(
    kind: str = "clusters",
    speakers: int = 60,
    utterances_per_speaker: int = 3,
    frames: int = 120,
    dims: int = 8,
    states: int = 8,
    noise: float = 0.15,
    eval_speakers: int = 12,
    seed: int = 0,
):
    """``(index, latents, energy_db)`` of planted data; ``index`` has a ``split`` column."""
    rng = np.random.default_rng(seed)
    centroids = rng.normal(0.0, 3.0, size=(states, dims))
    records, blocks, energies, offset = [], [], [], 0
    for s in range(speakers):
        speaker_shift = rng.normal(0.0, 0.2, size=dims)
        for u in range(utterances_per_speaker):
            n = int(rng.integers(frames // 2, frames * 3 // 2))
            if kind == "clusters":
                state = (int(rng.integers(states)) + np.arange(n)) % states
                z = centroids[state] + speaker_shift + rng.normal(0.0, noise, size=(n, dims))
            elif kind == "random_walk":
                z = np.cumsum(rng.normal(0.0, 1.0, size=(n, dims)), axis=0) + speaker_shift
            else:
                raise ValueError(f"kind must be 'clusters' or 'random_walk', not {kind!r}")
            records.append(
                {
                    "utterance": f"spk{s:03d}-{u:02d}",
                    "speaker": f"spk{s:03d}",
                    "frames": n,
                    "offset": offset,
                    "split": "eval" if s < eval_speakers else "train",
                }
            )
            blocks.append(z.astype(np.float32))
            energies.append(rng.uniform(-60.0, -10.0, size=n).astype(np.float32))
            offset += n
    return pd.DataFrame(records), np.concatenate(blocks), np.concatenate(energies)
