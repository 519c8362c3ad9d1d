# %% [markdown]
# # Tier 1 evaluation: per-horizon NLL, direction, magnitude, calibration, rollouts
#
# On held-out speakers' windows, for each horizon `k` and each model:
#
# - **NLL per frame** (nats) on the scaled target space, where both models' densities are
#   over the same `R^D` (the vMF model includes the `(D-1) log r` change of variables), and
#   the same NLL in latent units (`+ sum log scale`); the **gain** is Gaussian minus vMF (positive:
#   the vMF x LogNormal model assigns the real next steps more probability);
# - **direction cosine**: cosine between the predicted mean direction and the true delta;
# - **magnitude log-error**: `|log r_hat - log r|` with the LogNormal median `exp(m)` (Gaussian:
#   `sqrt(|mean|^2 + sum sigma^2)`, its expected norm);
# - **concentration calibration** (vMF): binned expected cosine `A_D(kappa)` against the observed
#   cosine, with the frame-weighted error; plus the LogNormal 80% interval coverage.
#
# **Rollouts** (`rollout.enabled`): from real eval contexts, each model generates `steps`
# frames autoregressively by sampling its `k = 1` distribution, and (as "<model> point") by
# taking a point forecast each step (Gaussian: its mean; vMF: `A_D(kappa) exp(m) mu`, the mean
# direction's expected cosine times the median magnitude), which separates sampling noise
# from bias. Against the real continuation
# we track, per generated step, the **energy** drift (dB: frame energy read from the latents by
# a ridge probe fitted on train frames), the **norm** drift (relative, standardised latents) and
# the **cosine** to the real frame (standardised latents). Repeating the last context frame
# ("hold") is the reference a useful model should beat.

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import Ridge

from lib.phase0.tier1_data import Tier1Scaling
from lib.phase0.tier1_model import tier1_nll
from lib.phase0.tier1_vmf import (
    vmf_calibration,
    vmf_lognormal_sample,
    vmf_mean_resultant,
)


@torch.no_grad()
def tier1_predict(model, context, memory=None, device: str = "cpu", batch: int = 2048) -> dict:
    """Model outputs for every window, as float32/float64 numpy arrays."""
    model = model.to(device).eval()
    parts = []
    for start in range(0, len(context), batch):
        c = torch.as_tensor(context[start : start + batch], device=device)
        mem = None if memory is None else torch.as_tensor(memory[start : start + batch], device=device)
        parts.append({k: v.float().cpu().numpy() for k, v in model(c, mem).items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@torch.no_grad()
def tier1_window_nll(model, context, targets, memory=None, device: str = "cpu", batch: int = 2048) -> dict:
    """Per-window, per-horizon NLL terms (numpy ``[n, K]``)."""
    model = model.to(device).eval()
    parts = []
    for start in range(0, len(context), batch):
        c = torch.as_tensor(context[start : start + batch], device=device)
        t = torch.as_tensor(targets[start : start + batch], device=device)
        mem = None if memory is None else torch.as_tensor(memory[start : start + batch], device=device)
        terms = tier1_nll(model.head_kind, model(c, mem), t)
        parts.append({k: v.double().cpu().numpy() for k, v in terms.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def clustered_standard_error(values, groups) -> float:
    """Standard error of the mean of ``values`` whose rows come in correlated groups (windows of one
    utterance): the cluster-robust (sandwich) estimate with the G / (G - 1) correction; with one group, the
    plain one."""
    values, groups = np.asarray(values, dtype=np.float64), np.asarray(groups)
    n = len(values)
    sums = pd.Series(values - values.mean()).groupby(groups).sum().to_numpy()
    if len(sums) < 2:
        return float(values.std() / np.sqrt(max(n, 1)))
    return float(np.sqrt((sums**2).sum() * len(sums) / (len(sums) - 1)) / n)


def tier1_evaluate(models: dict, windows: dict, scaling: Tier1Scaling, horizons, device: str = "cpu") -> dict:
    """``{"rows": [per horizon and model], "calibration": {k: bins}, "table": DataFrame}``."""
    context, targets = windows["context"], windows["targets"]
    dim = targets.shape[-1]
    rows, calibration, window_nll = [], {}, {}
    log_det = scaling.log_det()
    r = np.maximum(np.linalg.norm(targets.astype(np.float64), axis=-1), 1e-6)  # [n, K]
    u = targets / r[..., None]
    for name, model in models.items():
        pred = tier1_predict(model, context, device=device)
        nll = tier1_window_nll(model, context, targets, device=device)
        window_nll[name] = nll["nll"]
        for i, k in enumerate(horizons):
            row = {"model": name, "k": int(k), "windows": int(len(context)), "dim": int(dim)}
            row["nll"] = float(nll["nll"][:, i].mean())
            row["nll_per_dim"] = row["nll"] / dim
            row["nll_latent_units"] = row["nll"] + float(log_det[i])
            if name == "vmf" or model.head_kind == "vmf":
                mu, kappa = pred["mu"][:, i], pred["kappa"][:, i].astype(np.float64)
                m, s = pred["m"][:, i].astype(np.float64), np.exp(pred["log_s"][:, i].astype(np.float64))
                cosine = (mu * u[:, i]).sum(-1)
                expected = vmf_mean_resultant(dim, kappa)
                cal = vmf_calibration(expected, cosine)
                calibration[int(k)] = cal
                log_r = np.log(r[:, i])
                row.update(
                    direction_cosine=float(cosine.mean()),
                    magnitude_log_error=float(np.abs(m - log_r).mean()),
                    kappa_median=float(np.median(kappa)),
                    expected_cosine=float(expected.mean()),
                    calibration_error=float(cal["error"]),
                    magnitude_coverage_80=float((np.abs(log_r - m) <= 1.2816 * s).mean()),
                    nll_direction=float(nll["direction"][:, i].mean()),
                    nll_magnitude=float(nll["magnitude"][:, i].mean()),
                    nll_jacobian=float(nll["jacobian"][:, i].mean()),
                )
            else:
                mean, sigma = pred["mean"][:, i].astype(np.float64), np.exp(pred["log_sigma"][:, i].astype(np.float64))
                norm = np.maximum(np.linalg.norm(mean, axis=-1), 1e-12)
                expected_norm = np.sqrt(norm**2 + (sigma**2).sum(-1))
                row.update(
                    direction_cosine=float(((mean / norm[:, None]) * u[:, i]).sum(-1).mean()),
                    magnitude_log_error=float(np.abs(np.log(expected_norm) - np.log(r[:, i])).mean()),
                )
            rows.append(row)
    table = pd.DataFrame(rows)
    gains = []
    if {"vmf", "gaussian"} <= set(models):
        # windows of one utterance are not independent: the gain's standard error is clustered by utterance
        groups = windows.get("utterance", np.arange(len(context)))
        for i, k in enumerate(horizons):
            v = table[(table.model == "vmf") & (table.k == k)].iloc[0]
            g = table[(table.model == "gaussian") & (table.k == k)].iloc[0]
            per_window = window_nll["gaussian"][:, i] - window_nll["vmf"][:, i]
            gains.append(
                {
                    "k": int(k),
                    "nll_gain": float(g["nll"] - v["nll"]),
                    "nll_gain_per_dim": float((g["nll"] - v["nll"]) / dim),
                    "nll_gain_se": clustered_standard_error(per_window, groups),
                }
            )
    return {"rows": rows, "table": table, "calibration": calibration, "gains": gains}


# %% [markdown]
# ## Rollouts


# %%
def tier1_energy_probe(source, split: str = "train", max_frames: int = 50000, seed: int = 0) -> dict:
    """Ridge from standardised latent frames to frame energy (dB), fitted on ``split``; R^2 on eval.

    Reads parts in a seeded order until ``max_frames`` frames of each split are collected.
    """
    rng = np.random.default_rng([seed, 41])
    frames = {split: ([], []), "eval": ([], [])}
    counts = {split: 0, "eval": 0}
    for unit in rng.permutation(source.n_units):
        for item in source.load(int(unit)):
            if item["split"] in frames and counts[item["split"]] < max_frames:
                frames[item["split"]][0].append(item["latents"])
                frames[item["split"]][1].append(item["energy"])
                counts[item["split"]] += len(item["latents"])
        if all(c >= max_frames for c in counts.values()):
            break
    x, y = np.concatenate(frames[split][0]), np.concatenate(frames[split][1])
    mean, std = x.mean(0), np.where(x.std(0) > 1e-6, x.std(0), 1.0)
    model = Ridge(alpha=1.0).fit((x - mean) / std, y)
    r2 = float("nan")
    if frames["eval"][0]:
        x_eval, y_eval = np.concatenate(frames["eval"][0]), np.concatenate(frames["eval"][1])
        r2 = float(model.score((x_eval - mean) / std, y_eval)) if np.var(y_eval) > 0 else float("nan")
    return {"model": model, "mean": mean, "std": std, "r2_eval": r2}


def _tier1_energy(probe, frames):
    flat = frames.reshape(-1, frames.shape[-1])
    return probe["model"].predict((flat - probe["mean"]) / probe["std"]).reshape(frames.shape[:-1])


@torch.no_grad()
def tier1_rollout(
    models: dict, sequences: dict, scaling: Tier1Scaling, window: int, steps: int, probe, device="cpu", seed=0
) -> dict:
    """Generate ``steps`` frames per sequence with each model (and "hold"); drift per step vs the real frames."""
    horizons = list(scaling.horizons)
    if 1 not in horizons:
        raise ValueError("rollouts need horizon 1 in context.horizons_k")
    i1 = horizons.index(1)
    real = sequences["latents"][:, window : window + steps].astype(np.float64)
    generated = {"hold": np.repeat(sequences["latents"][:, window - 1 : window], steps, axis=1).astype(np.float64)}
    rng = np.random.default_rng([seed, 53])
    for name, model in models.items():
        model = model.to(device).eval()
        for label, sample in ((name, True), (f"{name} point", False)):
            x = sequences["latents"][:, :window].astype(np.float64)
            for _ in range(steps):
                context = ((x[:, -window:] - scaling.latent_mean) / scaling.latent_std).astype(np.float32)
                out = model(torch.as_tensor(context, device=device))
                out = {k: v[:, i1].double().cpu().numpy() for k, v in out.items()}
                if model.head_kind == "vmf":
                    s = np.exp(out["log_s"])
                    if sample:
                        delta = vmf_lognormal_sample(out["mu"], out["kappa"], out["m"], s, rng)
                    else:  # median magnitude times the mean direction's expected cosine: A_D(kappa) exp(m) mu
                        # (the LogNormal mean exp(m + s^2/2) is ruled by its tail where s is large)
                        dim = out["mu"].shape[-1]
                        scale = np.exp(out["m"]) * vmf_mean_resultant(dim, out["kappa"])
                        delta = scale[:, None] * out["mu"]
                else:
                    noise = rng.normal(size=out["mean"].shape) if sample else 0.0
                    delta = out["mean"] + np.exp(out["log_sigma"]) * noise
                nxt = x[:, -1] + delta * scaling.delta_scale[i1]
                x = np.concatenate([x, nxt[:, None]], axis=1)
            generated[label] = x[:, window:]
    std_real = (real - scaling.latent_mean) / scaling.latent_std
    e_real = _tier1_energy(probe, real) if probe is not None else None
    curves, rows = {}, []
    for name, gen in generated.items():
        std_gen = (gen - scaling.latent_mean) / scaling.latent_std
        norm_real, norm_gen = np.linalg.norm(std_real, axis=-1), np.linalg.norm(std_gen, axis=-1)
        cosine = (std_real * std_gen).sum(-1) / np.maximum(norm_real * norm_gen, 1e-12)
        curve = {
            "norm_drift": ((norm_gen - norm_real) / np.maximum(norm_real, 1e-12)).mean(0),
            "cosine": cosine.mean(0),
        }
        if probe is not None:
            curve["energy_drift_db"] = np.abs(_tier1_energy(probe, gen) - e_real).mean(0)
        finite = np.isfinite(gen).all()
        curves[name] = {k: v.tolist() for k, v in curve.items()}
        rows.append(
            {
                "model": name,
                "steps": int(steps),
                "sequences": int(len(real)),
                "finite": bool(finite),
                **{f"{k}_last": float(v[-1]) for k, v in curve.items()},
                **{f"{k}_mean": float(np.mean(v)) for k, v in curve.items()},
            }
        )
    return {"rows": rows, "table": pd.DataFrame(rows), "curves": curves}


def tier1_rollout_conclusion(table: pd.DataFrame) -> str:
    """Which rollouts beat holding the last frame at the last step (higher cosine, less energy drift)."""
    rows = table.set_index("model")
    if "hold" not in rows.index or len(rows) < 2:
        return ""
    hold = rows.loc["hold"]
    has_energy = "energy_drift_db_last" in rows
    verdicts = []
    for name, row in rows.drop(index="hold").iterrows():
        better = ["cosine"] if row["cosine_last"] > hold["cosine_last"] else []
        if has_energy and row["energy_drift_db_last"] < hold["energy_drift_db_last"]:
            better.append("energy drift")
        figures = f"cosine {row['cosine_last']:.2f}" + (f", {row['energy_drift_db_last']:.1f} dB" if has_energy else "")
        verdicts.append(f"{name} ({figures}): " + (f"better on {' and '.join(better)}" if better else "worse on both"))
    reference = f"cosine {hold['cosine_last']:.2f}" + (f", {hold['energy_drift_db_last']:.1f} dB" if has_energy else "")
    return (
        f"At the last of {int(hold['steps'])} steps, against holding the last frame ({reference}): "
        + "; ".join(verdicts)
        + ". A model that does not beat holding the frame has not learnt dynamics it can roll out."
    )


# %% [markdown]
# ## Plots


# %%
def plot_tier1_nll(table: pd.DataFrame, title: str = "Exp 1: held-out NLL per horizon", history: dict | None = None):
    """NLL per frame (nats) per horizon for each model; with a training ``history`` (``step``,
    ``loss`` per model), the training loss beside it, to see whether training had levelled off."""
    colour = {name: f"C{i}" for i, name in enumerate(sorted(table["model"].unique()))}  # one colour per model
    if history and history.get("step"):
        fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(11, 3.5))
        for name, losses in history["loss"].items():
            ax_loss.plot(history["step"][: len(losses)], losses, marker=".", label=name, color=colour.get(name))
        ax_loss.set(xlabel="training step", ylabel="training loss (mean over the logged steps)")
        ax_loss.set_title("training loss (train speakers)")
        ax_loss.legend()
    else:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, rows in table.groupby("model"):
        ax.plot(rows["k"], rows["nll"], marker="o", label=name, color=colour[name])
    ax.set_xlabel("horizon k (frames)")
    ax.set_ylabel("NLL per frame (nats, scaled targets)")
    ax.set_xticks(sorted(table["k"].unique()))
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def tier1_still_learning(history: dict, tolerance: float = 0.01) -> list:
    """Models whose training loss still fell by more than ``tolerance`` (relative) between the last
    two logged steps, or fell at each of the last three and by more than ``tolerance`` over them (a
    steady decline in small steps): more steps would likely change their held-out figures."""
    out = []
    for name, losses in history.get("loss", {}).items():
        if len(losses) >= 2 and losses[-1] < losses[-2] - tolerance * abs(losses[-2]):
            out.append(f"{name} {losses[-2]:.3f} -> {losses[-1]:.3f}")
        elif (
            len(losses) >= 4
            and all(b < a for a, b in zip(losses[-4:-1], losses[-3:]))
            and losses[-1] < losses[-4] - tolerance * abs(losses[-4])
        ):
            out.append(f"{name} {' -> '.join(f'{v:.3f}' for v in losses[-4:])}")
    return out


def plot_tier1_calibration(calibration: dict):
    """Predicted expected cosine A_D(kappa) against the observed cosine, per horizon."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    lim = 0.0
    for k, cal in calibration.items():
        p = [b["predicted"] for b in cal["bins"]]
        o = [b["observed"] for b in cal["bins"]]
        ax.plot(p, o, marker="o", label=f"k = {k} (error {cal['error']:.3f})")
        lim = max(lim, max(p + o))
    ax.plot([0, lim], [0, lim], color="grey", ls=":")
    ax.set_xlabel("predicted E[cos] = A_D(kappa)")
    ax.set_ylabel("observed cosine")
    ax.set_title("Concentration calibration (vMF)")
    ax.legend(fontsize=8)
    return fig


TIER1_ROLLOUT_AXES = {
    "energy_drift_db": "|energy - real energy| (dB)",
    "norm_drift": "(norm - real norm) / real norm",
    "cosine": "cosine to the real frame",
}


def plot_tier1_rollouts(rollout: dict):
    """Drift per generated step: energy (dB), norm (relative), cosine to the real continuation."""
    keys = [k for k in ("energy_drift_db", "norm_drift", "cosine") if k in next(iter(rollout["curves"].values()))]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    axes = np.atleast_1d(axes)
    for ax, key in zip(axes, keys):
        for name, curve in rollout["curves"].items():
            ax.plot(np.arange(1, len(curve[key]) + 1), curve[key], marker=".", label=name)
        ax.set_xlabel("generated step")
        ax.set_ylabel(TIER1_ROLLOUT_AXES[key])
        ax.set_title(key.replace("_", " "))
    axes[0].legend(fontsize=8)
    fig.suptitle("Rollouts from real eval contexts")
    fig.tight_layout()
    return fig
