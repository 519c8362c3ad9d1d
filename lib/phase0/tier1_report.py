# %% [markdown]
# # Tier 1 report: the three experiments' tables in one text file
#
# `write_tier1_report` writes `report.txt` (what was run, on what, each experiment's table and
# how to read it) and one CSV per table (`exp1_nll.csv`, `exp1_rollouts.csv`,
# `exp2_injection.csv`, `exp3_representations.csv`, `exp3_schemes.csv`).

# %%
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.atomic_io import atomic_write_text
from lib.phase0.tier1_representations import TIER1_POSITIONAL_SHARE


def _tier1_table_text(frame: pd.DataFrame, columns, digits: int = 3) -> str:
    columns = [c for c in columns if c in frame.columns]
    shown = frame[columns].copy()
    for column in columns:
        if pd.api.types.is_float_dtype(shown[column]):
            values = shown[column].dropna()
            whole = len(values) > 0 and bool((values == values.round()).all()) and values.abs().max() >= 10
            fmt = "{:.0f}" if whole else f"{{:.{digits}f}}"
            shown[column] = shown[column].map(lambda v, f=fmt: "-" if pd.isna(v) else f.format(v))
    return shown.to_string(index=False)


TIER1_EXP1_COLUMNS = (
    "model",
    "k",
    "nll",
    "nll_per_dim",
    "direction_cosine",
    "magnitude_log_error",
    "kappa_median",
    "expected_cosine",
    "calibration_error",
    "magnitude_coverage_80",
)
TIER1_EXP2_COLUMNS = (
    "model",
    "k",
    "nll_exp1",
    "nll_zero",
    "nll_real",
    "nll_shuffled",
    "nll_oracle",
    "gain_real",
    "gain_real_se",
    "gain_oracle",
    "gain_oracle_se",
    "gain_shuffled_control",
    "gain_shuffled_control_se",
    "recovery_real",
    "recovery_shuffled",
    "recovery_shuffled_control",
)
TIER1_EXP3_COLUMNS = (
    "representation",
    "weights",
    "rate",
    "dim",
    "frames",
    "best_scheme",
    "vr_eval",
    "vr_random_eval",
    "degradation",
    "entropy_reduction_eval",
    "position_share",
    "reading",  # the gate's decision, a PASS on positional frames marked (phase0_decision, unmarked, is in the CSV)
    "nll_gain",
    "nll_gain_per_dim",
    "total_seconds",
)
TIER1_TABLE_COLUMNS = {"exp1": TIER1_EXP1_COLUMNS, "exp2": TIER1_EXP2_COLUMNS, "exp3": TIER1_EXP3_COLUMNS}


def tier1_table(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """The columns of experiment ``key``'s table that the report shows (all of them for other tables),
    rounded, for a notebook display that is not cut at pandas' column limit."""
    columns = [c for c in TIER1_TABLE_COLUMNS.get(key, frame.columns) if c in frame.columns]
    if key == "exp3" and "status" in frame:  # the skipped rows were printed with their reason as they failed
        frame = frame[frame["status"] == "ok"]
        frame = frame.astype({c: int for c in ("dim", "frames") if c in frame and frame[c].notna().all()})
    shown = frame[columns].round(3).reset_index(drop=True)
    return shown.astype(object).where(shown.notna(), "-")  # as report.txt: "-" where a figure does not apply


def tier1_report_text(meta: dict, tables: dict) -> str:
    """The text of ``report.txt``; ``tables`` maps exp1 / exp1_rollouts / exp2 / exp3 to DataFrames."""
    lines = [
        "PHASE 0 TIER 1: next-step model, memory injection, representation comparison",
        "=" * 76,
        f"Device       : {meta.get('device')}",
        f"Data         : {meta.get('data')}",
        f"Encoder      : {meta.get('encoder')}",
        f"Config hash  : {meta.get('config_hash')} (resolved config: phase0_tier1_config.yaml)",
        f"Experiments  : {', '.join(meta.get('experiments', []))}",
        "",
    ]
    if "exp1" in tables:
        gains = meta.get("exp1_gains", [])
        lines += [
            "Exp 1: vMF direction x LogNormal magnitude vs a diagonal Gaussian, held-out speakers",
            "  NLL in nats per frame on the scaled target space (both densities over R^D; the vMF side",
            "  includes the (D-1) log r change of variables). Lower is better.",
            _tier1_table_text(tables["exp1"], TIER1_EXP1_COLUMNS),
            "  vMF gain over the Gaussian (nats per frame; +- a standard error clustered by utterance): "
            + ", ".join(
                f"k={g['k']}: {g['nll_gain']:+.3f}"
                + (f" +- {g['nll_gain_se']:.3f}" if np.isfinite(g.get("nll_gain_se", np.nan)) else "")
                for g in gains
            ),
            "",
        ]
    if "exp1_rollouts" in tables:
        lines += [
            "Exp 1 rollouts: drift from the real continuation (standardised latents; energy via a ridge probe)",
            _tier1_table_text(tables["exp1_rollouts"], tables["exp1_rollouts"].columns),
            *(["  " + meta["exp1_rollout_conclusion"]] if meta.get("exp1_rollout_conclusion") else []),
            "",
        ]
    if "exp2" in tables:
        lines += [
            "Exp 2: memory injection (cell-mean next-step delta of the Phase 0 scheme), held-out speakers",
            "  gains are NLL reductions against zero memory; recovery = gain(real) / gain(oracle), shown only",
            "  when the oracle gain exceeds 2 standard errors (otherwise no memory helps and '-' is printed).",
            "  shuffled: cell ids permuted, same model; shuffled control: a copy fine-tuned with uninformative",
            "  memory (its gain is the null level, about 0). nll_exp1: the Exp 1 checkpoint before fine-tuning, on",
            "  these windows (Exp 2 scores its own held-out windows, so its NLLs differ from Exp 1's table).",
            _tier1_table_text(tables["exp2"], TIER1_EXP2_COLUMNS),
            *(["  " + meta["exp2_conclusion"]] if meta.get("exp2_conclusion") else []),
            "",
        ]
    if "exp3" in tables:
        frame = tables["exp3"]
        skipped = frame[frame["status"] != "ok"] if "status" in frame else frame.iloc[0:0]
        lines += [
            "Exp 3: representations at their own frame rate and pooled to 12.5 Hz",
            "  Phase 0 metrics of the best scheme (held-out variance ratio, random baseline, degradation,",
            "  entropy reduction) and the Exp 1 vMF NLL gain over the Gaussian at k = 1.",
            _tier1_table_text(frame[frame["status"] == "ok"], TIER1_EXP3_COLUMNS),
        ]
        for row in skipped.itertuples():
            lines.append(f"  skipped: {row.representation} ({row.reason})")
        if "position_share" in frame:
            positional = frame[(frame["status"] == "ok") & (frame["position_share"] > TIER1_POSITIONAL_SHARE)]
            for row in positional.itertuples():
                lines.append(
                    f"  note: {row.representation} @ {row.rate}: {row.position_share:.0%} of the variance is the "
                    "frame's position in the utterance alone (positional embeddings): its Phase 0 structure may "
                    "be positional."
                )
        if meta.get("exp3_conclusion"):
            lines.append("  " + meta["exp3_conclusion"])
        lines.append("")
    lines += [f"  - {note}" for note in meta.get("notes", [])]
    return "\n".join(lines) + "\n"


def write_tier1_report(output_dir, meta: dict, tables: dict, extra_tables: dict | None = None) -> dict:
    """Write ``report.txt`` and a CSV per table; return their paths."""
    output_dir = Path(output_dir)
    names = {
        "exp1": "exp1_nll.csv",
        "exp1_rollouts": "exp1_rollouts.csv",
        "exp2": "exp2_injection.csv",
        "exp3": "exp3_representations.csv",
    }
    paths = {}
    for key, frame in {**tables, **(extra_tables or {})}.items():
        paths[key] = atomic_write_text(output_dir / names.get(key, f"{key}.csv"), frame.to_csv(index=False))
    paths["report"] = atomic_write_text(output_dir / "report.txt", tier1_report_text(meta, tables))
    return {k: str(v) for k, v in paths.items()}
