# %% [markdown]
# # Phase 0 report: decision, metrics, tables, plots
#
# `write_phase0_report` turns `evaluate_phase0`'s result into the gate's deliverables in the
# output folder:
#
# - `report.txt`: human-readable, the decision first, then every criterion of every scheme
#   with its value and bound, the data and the caveats;
# - `decision.json`: the decision, the rule and the per-scheme verdicts;
# - `metrics.json`: every number (per scheme, per slice, per held-out speaker, counts);
# - `tables.csv`: one row per scheme;
# - `normalisation.npz`: the train-speaker statistics used to standardise frames and deltas;
# - plots: variance ratios against the threshold, per-speaker variance ratios, cell sizes.

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from lib.core.atomic_io import atomic_write_json, atomic_write_text
from lib.core.outputs import save_figure
from lib.phase0.phase0_conditioning import save_phase0_normalisation


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not np.isfinite(value):
            return "inf" if value == float("inf") else "nan"
        return f"{value:.{digits}f}"
    return str(value)


def phase0_report_text(result: dict, meta: dict) -> str:
    """The text of ``report.txt``."""
    decision, counts, config = result["decision"], result["counts"], result["config"]
    lines = [
        "PHASE 0 GATE: do the latents show reusable local structure?",
        "=" * 64,
        f"DECISION: {decision['decision']}   (rule: {decision['rule']}; passing schemes: "
        f"{', '.join(decision['passing_schemes']) or 'none'})",
        decision.get("summary", ""),
        "",
        f"Encoder      : {meta.get('encoder', '?')} ({meta.get('family', '?')}, {counts['latent_dim']}-d at "
        f"{_fmt(meta.get('frame_rate'), 2)} Hz)",
        f"Data         : {meta.get('data', '?')}; {counts['utterances']} utterances, "
        f"{counts['train_speakers']} train / {counts['eval_speakers']} held-out speakers",
        f"Frames       : {counts['frames']} ({counts['train_frames']} train, {counts['eval_frames']} eval); context "
        f"W = {counts['context_frames']} frames, edge = {counts['edge']}; target: next-step delta",
        f"Slices (eval): high-energy (> {_fmt(counts['high_energy_threshold_db'], 1)} dB, the train "
        f"{config['high_energy_quantile']:.0%} quantile) {counts['high_energy_eval_frames']} frames; medial "
        f"(relative position {config['medial_range'][0]}-{config['medial_range'][1]}) "
        f"{counts['medial_eval_frames']} frames",
        "",
        "Criteria (all must hold for a scheme to pass):",
        f"  variance ratio on held-out speakers < {config['variance_ratio_max']}",
        f"  cross-speaker degradation (share of explained variance lost) < {config['degradation_max']:.0%}",
        f"  high-energy and medial slices: held-out variance ratio < {config['slice_variance_ratio_max']}",
        f"  random baseline (shuffled cells, same sizes): |VR - 1| <= {config['random_baseline_tolerance']}",
        "",
    ]
    for row in result["rows"]:
        verdict = decision["schemes"][row["scheme"]]
        lines.append(
            f"[{'PASS' if verdict['pass'] else 'FAIL'}] {row['scheme']}  ({row['cells']} cells, "
            f"{row['cells_used_train']} used by train frames, median {row['median_cell_frames']:.0f} "
            "frames per cell)"
        )
        lines.append(
            f"    variance ratio       train {_fmt(row['vr_train'])}   eval {_fmt(row['vr_eval'])}   "
            f"random eval {_fmt(row['vr_random_eval'])}"
        )
        lines.append(
            f"    entropy reduction    train {_fmt(row['entropy_reduction_train'])}   eval "
            f"{_fmt(row['entropy_reduction_eval'])}   random eval {_fmt(row['entropy_reduction_random_eval'])}"
        )
        lines.append(
            f"    slices (eval VR)     high-energy {_fmt(row.get('vr_eval_high_energy'))}   medial "
            f"{_fmt(row.get('vr_eval_medial'))}"
        )
        for key, criterion in verdict["criteria"].items():
            mark = "ok  " if criterion["pass"] else "FAIL"
            lines.append(f"      {mark} {key:<26} {_fmt(criterion['value'])} (needs {criterion['bound']})")
        if not verdict["criteria"]["random_baseline"]["pass"]:
            lines.append(
                f"    note: shuffled cells of the same sizes give VR {_fmt(row['vr_random_eval'])}, not 1.0: with "
                f"a median of {row['median_cell_frames']:.0f} train frames per cell the cell means are mostly "
                "noise, so this scheme's numbers are not interpretable at this data size (use more audio)."
            )
        lines.append("")
    reference = result.get("linear_reference")
    if reference:
        vr = reference["vr_eval"]
        reading = (
            "near 1: the context does not predict the next step even linearly"
            if vr >= 0.9
            else f"a linear map from the context explains {1 - vr:.0%} of the next step's variance on held-out "
            "speakers: a bound the cell lookups above can be compared with"
        )
        lines += [
            "Reference, not part of the decision: ridge regression from the whole flattened context",
            f"    variance ratio       train {_fmt(reference['vr_train'])}   eval {_fmt(vr)}   ({reading})",
            "",
        ]
    lines += [
        "How to read this",
        "  VR = within-cell variance of the next-step delta / its total variance, with cell means fitted on",
        "  train speakers. 1.0: the context cell tells nothing about the next step; 0.0: it determines it.",
        "  A FAIL is a valid negative result: coarse clusters of the recent context do not predict the next",
        "  step's dynamics well enough (or not across speakers) for a lookup memory to reuse them.",
        "",
        "Caveats",
        f"  - {counts['utterances']} utterances; the numbers carry sampling noise (see the per-speaker spread in",
        "    metrics.json and per_speaker_variance_ratio.png). Fit sizes: up to "
        f"{config['max_fit_frames']} train frames.",
        "  - Entropies are plug-in cross-entropies with add-alpha smoothing on a "
        f"{counts['dynamics_codes']}-code quantisation of the delta.",
    ]
    lines += [f"  - {note}" for note in meta.get("notes", [])]
    return "\n".join(lines) + "\n"


# %% [markdown]
# ## Plots


# %%
def plot_phase0_variance_ratios(result: dict):
    """Grouped bars: train / eval / slices / random variance ratio per scheme, with the threshold."""
    rows, config = result["rows"], result["config"]
    keys = [
        ("vr_train", "train"),
        ("vr_eval", "eval (held-out)"),
        ("vr_eval_high_energy", "eval, high-energy"),
        ("vr_eval_medial", "eval, medial"),
        ("vr_random_eval", "random cells, eval"),
    ]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(keys)
    x = np.arange(len(rows))
    for i, (key, label) in enumerate(keys):
        ax.bar(x + (i - len(keys) / 2 + 0.5) * width, [row.get(key, np.nan) for row in rows], width, label=label)
    ax.axhline(
        config["variance_ratio_max"], color="k", ls="--", lw=1, label=f"PASS below {config['variance_ratio_max']}"
    )
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.set_xticks(x, [row["scheme"] for row in rows])
    ax.set_ylabel("variance ratio (within / total)")
    ax.set_title(f"Phase 0: next-step variance explained by context cells - {result['decision']['decision']}")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.set_ylim(0, max(1.15, np.nanmax([[row.get(k, 0) for k, _ in keys] for row in rows]) + 0.05))
    return fig


def plot_phase0_per_speaker(result: dict):
    """Held-out variance ratio per eval speaker, one box per scheme."""
    names = list(result["per_speaker"])
    data = [list(result["per_speaker"][n].values()) for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(np.arange(1, len(names) + 1), names)
    ax.axhline(result["config"]["variance_ratio_max"], color="k", ls="--", lw=1)
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.set_ylabel("variance ratio per held-out speaker")
    ax.set_title("Does the structure transfer to each unseen speaker?")
    return fig


def plot_phase0_cell_sizes(result: dict):
    """Train frames per cell, sorted, per scheme (log scale): are the cells balanced or degenerate?"""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, counts in result["cell_counts"].items():
        counts = np.sort(np.asarray(counts))[::-1]
        ax.plot(np.arange(1, len(counts) + 1), np.maximum(counts, 0.8), label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cell rank")
    ax.set_ylabel("train frames in cell")
    ax.legend(fontsize=8)
    ax.set_title("Cell sizes (train speakers)")
    return fig


def plot_phase0_context_sweep(sweep, config: dict):
    """Held-out (solid) and shuffled-cell (dotted) variance ratio against the context window W."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for scheme, rows in sweep.groupby("scheme"):
        rows = rows.sort_values("context_frames")
        (line,) = ax.plot(rows["context_frames"], rows["vr_eval"], marker="o", label=f"{scheme} (eval)")
        ax.plot(
            rows["context_frames"],
            rows["vr_random_eval"],
            ls=":",
            color=line.get_color(),
            label=f"{scheme} (random cells)",
        )
    ax.axhline(config["variance_ratio_max"], color="k", ls="--", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(sweep["context_frames"].unique()), [str(w) for w in sorted(sweep["context_frames"].unique())])
    ax.set_xlabel("context window W (frames)")
    ax.set_ylabel("held-out variance ratio")
    ax.set_title("Does a longer context help?")
    ax.legend(fontsize=7)
    return fig


# %% [markdown]
# ## Writing the deliverables


# %%
def write_phase0_report(result: dict, output_dir, meta: dict | None = None) -> dict:
    """Write report.txt, decision.json, metrics.json, tables.csv, normalisation.npz and the plots."""
    output_dir = Path(output_dir)
    meta = dict(meta or {})
    paths = {}
    table = result["table"]
    paths["tables_csv"] = output_dir / "tables.csv"
    atomic_write_text(paths["tables_csv"], table.to_csv(index=False))
    paths["decision_json"] = output_dir / "decision.json"
    atomic_write_json(
        paths["decision_json"],
        {
            **result["decision"],
            "encoder": meta.get("encoder"),
            "thresholds": {
                k: result["config"][k]
                for k in (
                    "variance_ratio_max",
                    "degradation_max",
                    "slice_variance_ratio_max",
                    "random_baseline_tolerance",
                )
            },
        },
    )
    paths["metrics_json"] = output_dir / "metrics.json"
    atomic_write_json(
        paths["metrics_json"],
        json.loads(
            json.dumps(
                {
                    "counts": result["counts"],
                    "schemes": result["rows"],
                    "per_speaker_vr_eval": result["per_speaker"],
                    "linear_reference": result.get("linear_reference"),
                    "config": result["config"],
                    "meta": meta,
                },
                default=lambda v: v.item() if hasattr(v, "item") else str(v),
            )
        ),
    )
    paths["normalisation"] = save_phase0_normalisation(result["normaliser"], output_dir / "normalisation.npz")
    paths["report_txt"] = output_dir / "report.txt"
    atomic_write_text(paths["report_txt"], phase0_report_text(result, meta))
    for name, plot in (
        ("variance_ratios", plot_phase0_variance_ratios),
        ("per_speaker_variance_ratio", plot_phase0_per_speaker),
        ("cell_sizes", plot_phase0_cell_sizes),
    ):
        fig = plot(result)
        paths[name] = save_figure(fig, output_dir, name)
        plt.close(fig)
    return {k: str(v) for k, v in paths.items()}
