# %% [markdown]
# # Tier 1 Exp 3: which representation has the most reusable, predictable local structure?
#
# The same utterances (a seeded subset, split by speaker as everywhere else) go through each
# representation: the log-mel baseline, the bundled Whisper tiny.en encoder (its last layer,
# offline), and the codecs Mimi, EnCodec and DAC (their continuous pre-quantisation latents)
# when their weights load; `exp3.random_controls` adds the same architecture with random
# weights, labelled as such. Each representation is measured twice:
#
# - at its **own frame rate** (log-mel 100 Hz, Whisper 50 Hz, EnCodec 75 Hz, DAC 50 Hz,
#   Mimi 12.5 Hz), and
# - **mean-pooled to a common 12.5 Hz** (`exp3.common_rate`; frames averaged over each 80 ms
#   bin, energies averaged in power), so that "the next step" means the same time step.
#
# For each, the Phase 0 metrics (every conditioning scheme's held-out variance ratio, entropy
# reduction, cross-speaker degradation and random baseline, with the gate's decision) and the
# Exp 1 predictability: the held-out NLL gain (nats per frame, and per dimension) of the
# vMF x LogNormal model over the diagonal Gaussian at `k = 1`, both trained for
# `exp3.max_steps` steps. Every row names the weights it used; a representation whose weights
# do not load is listed as skipped, with the reason.
#
# **Position share**: the share of a representation's variance that the frame's position in
# the utterance explains by itself (the mean over utterances at each frame index). Whisper's
# encoder adds positional embeddings: with random weights its frames are almost only position
# (share about 1), so their next step is predictable from the position and Phase 0 reports
# "structure" that says nothing about the audio. Read a PASS next to a high share with care.

# %%
import copy
import json
import re
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib.core.atomic_io import atomic_save_npy, atomic_write_json
from lib.phase0.phase0_frames import build_frame_table
from lib.phase0.phase0_latents import (
    _part_paths,
    _write_parquet,
    extract_latents_to_store,
    load_phase0_encoder,
    phase0_store_parts,
    read_phase0_part,
)
from lib.phase0.phase0_metrics import evaluate_phase0, phase0_scheme_figures
from lib.phase0.tier1_data import (
    Tier1StoreSource,
    Tier1WindowDataset,
    fit_tier1_scaling,
    tier1_sample_windows,
    tier1_source_arrays,
)
from lib.phase0.tier1_metrics import tier1_evaluate
from lib.phase0.tier1_model import tier1_build_models
from lib.phase0.tier1_training import tier1_collect_targets, tier1_train


def tier1_pool_frames(latents, rate: float, target_rate: float, power: bool = False) -> np.ndarray:
    """Mean of the frames whose centre falls in each ``1/target_rate`` s bin (complete bins only).

    ``power=True`` averages dB values as powers (for frame energies).
    """
    x = np.asarray(latents, dtype=np.float64)
    if abs(rate - target_rate) < 1e-9:
        return x.astype(np.float32)
    n_bins = int(np.floor(len(x) * target_rate / rate + 1e-9))
    centres = (np.arange(len(x)) + 0.5) / rate
    bins = np.floor(centres * target_rate).astype(np.int64)
    keep = bins < n_bins
    x, bins = x[keep], bins[keep]
    if power:
        x = 10.0 ** (x / 10.0)
    sums = np.zeros((n_bins,) + x.shape[1:])
    np.add.at(sums, bins, x)
    counts = np.maximum(np.bincount(bins, minlength=n_bins), 1).reshape(-1, *([1] * (x.ndim - 1)))
    out = sums / counts
    if power:
        out = 10.0 * np.log10(np.maximum(out, 1e-12))
    return out.astype(np.float32)


def tier1_pooled_store(src_dir, dst_dir, target_rate: float) -> Path:
    """A store of ``src_dir``'s latents mean-pooled to ``target_rate`` (reused when already written)."""
    header, parts = phase0_store_parts(src_dir)
    dst_dir = Path(dst_dir)
    rate = float(header["encoder"]["frame_rate"])
    encoder = dict(header["encoder"])
    encoder.update(
        frame_rate=float(target_rate),
        native_frame_rate=rate,
        fingerprint=f"{encoder.get('fingerprint')}@pooled-{target_rate:g}Hz",
        encoder=f"{encoder.get('encoder')} (pooled to {target_rate:g} Hz)",
    )
    pooled = {**header, "encoder": encoder, "store_key": f"{header.get('store_key')}-pooled-{target_rate:g}"}
    try:
        if json.loads((dst_dir / "store.json").read_text()) == pooled:
            phase0_store_parts(dst_dir)
            return dst_dir
    except (OSError, ValueError, RuntimeError):
        pass
    (dst_dir / "parts").mkdir(parents=True, exist_ok=True)
    for j, paths in enumerate(parts):
        index, latents, energy = read_phase0_part(paths)
        blocks, energies, frames = [], [], []
        for record in index.itertuples(index=False):
            start, stop = int(record.offset), int(record.offset) + int(record.frames)
            blocks.append(tier1_pool_frames(latents[start:stop], rate, target_rate))
            energies.append(tier1_pool_frames(energy[start:stop], rate, target_rate, power=True))
            frames.append(len(blocks[-1]))
        out = _part_paths(dst_dir, j)
        dim = int(encoder["dim"])
        atomic_save_npy(out["latents"], np.concatenate(blocks) if blocks else np.zeros((0, dim), "f4"))
        atomic_save_npy(out["energy"], np.concatenate(energies) if energies else np.zeros(0, "f4"))
        table = index.drop(columns=["offset"]).assign(frames=frames, store_key=pooled["store_key"])
        _write_parquet(out["index"], table)
    atomic_write_json(dst_dir / "store.json", pooled)
    return dst_dir


def tier1_slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_")


# %% [markdown]
# ## One representation, at one rate


# %%
def tier1_position_share(index: pd.DataFrame, latents, min_share: float = 0.1) -> float:
    """Share of the frames' variance explained by their position in the utterance alone.

    For each frame index ``t`` (0 = utterance start), the mean of the *other* utterances at ``t``
    (leave-one-out, so noise is not fitted); ``1 - sum|z - mean_t|^2 / sum|z - mean|^2`` over the
    indices that at least ``min_share`` of the utterances reach. About 0 for frames unrelated to
    position; near 1 when frames are mostly a function of position (positional embeddings), in
    which case "structure" found by Phase 0 may be positional, not acoustic.
    """
    latents = np.asarray(latents, dtype=np.float64)
    frames = index["frames"].to_numpy()
    if len(frames) < 3:
        return float("nan")
    limit = int(np.quantile(frames, 1.0 - min_share))
    blocks = [latents[o : o + min(f, limit)] for o, f in zip(index["offset"], frames)]
    sums = np.zeros((limit, latents.shape[1]))
    counts = np.zeros(limit)
    for block in blocks:
        sums[: len(block)] += block
        counts[: len(block)] += 1
    stacked = np.concatenate(blocks)
    positions = np.concatenate([np.arange(len(block)) for block in blocks])
    keep = counts[positions] >= 2
    others = (sums[positions] - stacked) / np.maximum(counts[positions] - 1, 1)[:, None]
    total = ((stacked[keep] - stacked[keep].mean(axis=0)) ** 2).sum()
    shrink = (counts[positions] - 1) / np.maximum(counts[positions], 1)  # E|z - other mean|^2 = var (n / (n-1))
    residual = (((stacked[keep] - others[keep]) ** 2).sum(axis=1) * shrink[keep]).sum()
    return float(1.0 - residual / total) if total > 0 else float("nan")


def tier1_phase0_on_source(source, context_frames: int, max_fit_frames: int, seed: int = 0) -> dict:
    """The Phase 0 evaluation (all schemes) on a store source; ``{"rows", "decision", "frames", "position_share"}``."""
    index, latents, energy = tier1_source_arrays(source)
    position_share = tier1_position_share(index, latents)
    frames = build_frame_table(index, int(context_frames), energy)
    config = {"max_fit_frames": int(max_fit_frames), "linear_reference": False, "kmeans_n_init": 1}
    result = evaluate_phase0(latents, frames, config, seed=seed, progress=False)
    return {
        "rows": result["rows"],
        "decision": result["decision"],
        "frames": int(len(frames)),
        "position_share": position_share,
    }


def tier1_predictability(source, config: dict, max_steps: int, device: str = "cpu", seed: int = 0) -> dict:
    """Exp 1 at ``k = 1`` only: train both heads, score held-out windows; the vMF gain over the Gaussian."""
    cfg = copy.deepcopy(config)
    cfg["context"]["horizons_k"] = [1]
    window = cfg["context"]["window"]
    scaling = fit_tier1_scaling(source, [1], cfg["model"]["target_scaling"])
    dataset = Tier1WindowDataset(
        source,
        scaling,
        window,
        [1],
        batch_size=cfg["train"]["batch_size"],
        shuffle_buffer=cfg["train"]["shuffle_buffer"],
        seed=seed,
    )
    models = tier1_build_models(source.dim, cfg)
    init = tier1_collect_targets(dataset, 4)
    for model in models.values():
        model.init_from_targets(init)
    history = tier1_train(
        models, dataset, {**cfg["train"], "checkpoint_every": 10**9}, max_steps, device=device, progress=False
    )
    windows = tier1_sample_windows(
        source, scaling, window, [1], split="eval", max_samples=cfg["train"]["max_eval_samples"], seed=seed
    )
    evaluation = tier1_evaluate(models, windows, scaling, [1], device=device)
    table = evaluation["table"].set_index("model")
    return {
        "nll_vmf": float(table.loc["vmf", "nll"]),
        "nll_gaussian": float(table.loc["gaussian", "nll"]),
        "nll_gain": evaluation["gains"][0]["nll_gain"],
        "nll_gain_per_dim": evaluation["gains"][0]["nll_gain_per_dim"],
        "direction_cosine_vmf": float(table.loc["vmf", "direction_cosine"]),
        "kappa_median": float(table.loc["vmf", "kappa_median"]),
        "calibration_error": float(table.loc["vmf", "calibration_error"]),
        "eval_windows": int(len(windows["targets"])),
        "train_seconds": float(history["seconds"]),
    }


def tier1_measure_representation(source, rate_label: str, config: dict, device: str = "cpu", seed: int = 0) -> dict:
    """Phase 0 metrics + Exp 1 predictability of one store; one summary row and the per-scheme rows."""
    exp3 = config["exp3"]
    started = time.perf_counter()
    phase0 = tier1_phase0_on_source(source, exp3["context_frames"], exp3["max_fit_frames"], seed)
    predict = tier1_predictability(source, config, exp3["max_steps"], device, seed)
    # the gate's best scheme: the lowest held-out VR among schemes whose random baseline holds
    best = next((row for row in phase0["rows"] if row["scheme"] == phase0["decision"]["best_scheme"]), None)
    best = best or min(phase0["rows"], key=lambda row: row["vr_eval"])
    summary = {
        "rate": rate_label,
        "frame_rate": float(source.frame_rate),
        "dim": int(source.dim),
        "frames": phase0["frames"],
        "phase0_decision": phase0["decision"]["decision"],
        "best_scheme": best["scheme"],
        "vr_eval": float(best["vr_eval"]),
        "vr_random_eval": float(best["vr_random_eval"]),
        "best_scheme_valid": phase0["decision"]["best_scheme_valid"],
        # with several valid schemes, the one picked on the training speakers and its (unbiased) held-out VR
        "chosen_scheme": phase0["decision"].get("chosen_scheme"),
        "chosen_vr_eval": phase0["decision"].get("chosen_vr_eval"),
        "degradation": float(best["degradation"]),
        "entropy_reduction_eval": float(best["entropy_reduction_eval"]),
        "position_share": phase0["position_share"],
        **predict,
        "seconds": time.perf_counter() - started,
    }
    schemes = [
        {
            "rate": rate_label,
            "scheme": row["scheme"],
            **phase0_scheme_figures(row, slices=False),
        }
        for row in phase0["rows"]
    ]
    return {"summary": summary, "schemes": schemes}


# %% [markdown]
# ## All representations


# %%
def tier1_representation_specs(config: dict) -> list:
    """``[{"name", "weights"}]``: each representation, then the random-weight controls."""
    exp3 = config["exp3"]
    specs = [{"name": name, "weights": "pretrained"} for name in exp3["representations"]]
    specs += [{"name": name, "weights": "random"} for name in exp3["random_controls"]]
    return specs


def tier1_compare_representations(
    manifest: pd.DataFrame,
    config: dict,
    output_dir,
    device: str = "cpu",
    seed: int = 0,
    local_files_only: bool = False,
    progress: bool = True,
) -> dict:
    """Encode ``manifest`` with every representation, measure native and pooled rates; tables and rows."""
    exp3 = config["exp3"]
    output_dir = Path(output_dir)
    split_of = dict(zip(manifest["utterance"].astype(str), manifest["split"]))
    rows, scheme_rows = [], []
    for spec in tier1_representation_specs(config):
        label = spec["name"] + (" (random weights)" if spec["weights"] == "random" else "")
        base = {"representation": label, "requested_weights": spec["weights"]}
        started = time.perf_counter()
        try:
            encoder = load_phase0_encoder(
                spec["name"],
                device=device,
                local_files_only=local_files_only,
                whisper_mode=exp3["whisper_mode"] if "whisper" in spec["name"].lower() else None,
                weights=spec["weights"],
                **({"frame_rate": 100.0} if spec["name"] == "logmel" else {}),
            )
        except Exception as error:  # noqa: BLE001 - a representation that cannot load is reported, not fatal
            reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            print(f"{label}: skipped ({reason})")
            rows.append({**base, "status": "skipped", "reason": reason})
            continue
        info = encoder.info()
        base.update(weights=info.get("weights"), family=info.get("family"), whisper_mode=info.get("whisper_mode"))
        store = output_dir / tier1_slug(label) / "native"
        extraction = extract_latents_to_store(
            manifest, encoder, store, chunk_utterances=16, max_seconds=exp3["max_seconds"], progress=progress
        )
        rtf = extraction["encode_seconds"] / max(extraction["audio_seconds"], 1e-9)
        stores = [("native", store)]
        if abs(encoder.frame_rate - exp3["common_rate"]) > 1e-6:
            pooled = tier1_pooled_store(store, store.parent / f"pooled-{exp3['common_rate']:g}hz", exp3["common_rate"])
            stores.append((f"{exp3['common_rate']:g} Hz", pooled))
        else:
            stores.append((f"{exp3['common_rate']:g} Hz", store))
        first_row = len(rows)
        for rate_label, store_dir in stores:
            source = Tier1StoreSource(store_dir, split_of)
            measured = tier1_measure_representation(source, rate_label, config, device, seed)
            rows.append({**base, "status": "ok", **measured["summary"], "real_time_factor": rtf})
            scheme_rows += [{"representation": label, **row} for row in measured["schemes"]]
            print(
                f"{label} @ {rate_label}: best VR {measured['summary']['vr_eval']:.3f} "
                f"({measured['summary']['best_scheme']}), vMF gain {measured['summary']['nll_gain_per_dim']:+.3f} "
                f"nats per dim ({measured['summary']['nll_gain']:+.2f} per {source.dim}-d frame)"
            )
        del encoder
        total = time.perf_counter() - started
        for row in rows[first_row:]:  # loading, encoding and both rates' measurements: one figure per representation
            row["total_seconds"] = total
    table = pd.DataFrame(rows)
    table["reading"] = table.apply(tier1_representation_reading, axis=1) if len(table) else []
    return {"rows": table.to_dict(orient="records"), "table": table, "schemes": pd.DataFrame(scheme_rows)}


TIER1_POSITIONAL_SHARE = 0.5  # above this share of variance explained by position alone, a PASS is positional
TIER1_POSITIONAL_PASS = "PASS, positional"  # how the reading of such a PASS starts


def tier1_positional_pass(row) -> bool:
    """Whether a measured row PASSES the gate on frames that are mostly their position in the utterance."""
    share = row.get("position_share")
    return (
        row.get("status") == "ok"
        and row.get("phase0_decision") == "PASS"
        and share is not None
        and bool(np.isfinite(share))
        and share > TIER1_POSITIONAL_SHARE
    )


def tier1_representation_reading(row) -> str:
    """The gate's decision as a reader should take it: a PASS on positional frames is flagged."""
    decision = row.get("phase0_decision")
    if row.get("status") != "ok" or not isinstance(decision, str):
        return "-"
    if tier1_positional_pass(row):
        return f"{TIER1_POSITIONAL_PASS} ({row.get('position_share'):.1%} position)"
    return decision


def tier1_representation_conclusion(table: pd.DataFrame, config: dict | None = None, exp1: dict | None = None) -> str:
    """Exp 3 in a few sentences: which rows pass the gate on audio (not position), and how the
    k = 1 vMF gain here relates to Exp 1's (``exp1``: Exp 1's evaluation, its ``gains`` and ``rows``)."""
    exp1 = exp1 or {}
    exp1_gain = next((g["nll_gain"] for g in exp1.get("gains", []) if g["k"] == 1), None)
    exp1_nll = {r["model"]: r["nll"] for r in exp1.get("rows", []) if r["k"] == 1 and r["model"] in ("vmf", "gaussian")}
    ok = table[table["status"] == "ok"] if "status" in table else table
    if ok.empty:
        return "Exp 3: no representation could be measured."
    is_positional = pd.Series([tier1_positional_pass(row) for _, row in ok.iterrows()], index=ok.index, dtype=bool)
    labels = [f"{r.representation} @ {r.rate}" for r in ok.itertuples()]
    passed = (ok["phase0_decision"] == "PASS").to_numpy()
    real = [label for label, p, pos in zip(labels, passed, is_positional) if p and not pos]
    positional = [label for label, pos in zip(labels, is_positional) if pos]
    audio = ok[~is_positional]
    if "best_scheme_valid" in audio:  # a VR whose random baseline does not hold is biased: not quoted as the best
        valid = audio[audio["best_scheme_valid"].fillna(False).astype(bool)]
        audio = valid if len(valid) else audio
    best = (audio if len(audio) else ok).sort_values("vr_eval").iloc[0]  # the lowest VR not due to position
    if real:
        text = f"Exp 3: {len(real)} of {len(ok)} rows pass the gate on their audio: {', '.join(real)}."
    else:
        text = (
            f"Exp 3: no representation passes the gate on its audio (lowest held-out VR "
            f"{best['vr_eval']:.3f}, {best['representation']} @ {best['rate']}"
            + (f", scheme {best['best_scheme']}" if isinstance(best.get("best_scheme"), str) else "")
            + f", {best['phase0_decision']})."
        )
    if positional:
        text += (
            f" {', '.join(positional)} pass only because their frames are mostly the position in the "
            "utterance (positional embeddings): not structure in the audio."
        )
    logmel = ok[(ok["representation"] == "logmel") & (ok["rate"] != "native")] if exp1_gain is not None else ok[:0]
    if len(logmel) and config is not None:
        exp3, train = config["exp3"], config["train"]
        row = logmel.iloc[0]
        nlls = ""
        if {"vmf", "gaussian"} <= set(exp1_nll):
            nlls = (
                f" (NLL vMF / Gaussian: {row['nll_vmf']:.1f} / {row['nll_gaussian']:.1f} here, "
                f"{exp1_nll['vmf']:.1f} / {exp1_nll['gaussian']:.1f} in Exp 1: the gap is mostly the Gaussian's)"
            )
        text += (
            f" The log-mel vMF gain at 12.5 Hz here ({float(row['nll_gain']):+.2f} nats/frame) differs from Exp 1's "
            f"at k = 1 ({exp1_gain:+.2f}){nlls}: Exp 3 trains {exp3['max_steps']} steps (Exp 1: "
            f"{train['max_steps']}) on {exp3['max_utterances']} utterances cut at {exp3['max_seconds']:g} s; "
            "compare rows within Exp 3, not across experiments."
        )
    return text


def plot_tier1_representations(table: pd.DataFrame):
    """Best held-out variance ratio and the vMF NLL gain per dimension, per representation and rate."""
    ok = table[table["status"] == "ok"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.8 + 0.45 * max(len(ok), 2)))
    positional = [tier1_positional_pass(row) for _, row in ok.iterrows()]
    labels = [
        f"{r.representation} @ {r.rate}" + (" (positional)" if pos else "")
        for r, pos in zip(ok.itertuples(), positional)
    ]
    y = np.arange(len(ok))
    axes[0].barh(y, ok["vr_eval"], color="tab:blue")
    axes[0].axvline(0.6, color="k", ls="--", lw=1)
    axes[0].axvline(1.0, color="grey", ls=":", lw=1)
    axes[0].set_yticks(y, labels)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("best held-out variance ratio\n(Phase 0; PASS below 0.6)")
    axes[1].barh(y, ok["nll_gain_per_dim"], color="tab:orange")
    axes[1].axvline(0.0, color="k", lw=0.8)
    axes[1].set_yticks(y, [""] * len(y))
    axes[1].invert_yaxis()
    axes[1].set_xlabel("vMF NLL gain over the Gaussian\nat k = 1 (nats per dim)")
    fig.suptitle("Exp 3: representation comparison (native rate and pooled to 12.5 Hz)")
    fig.tight_layout()
    return fig
