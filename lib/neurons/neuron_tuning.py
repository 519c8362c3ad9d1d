# %% [markdown]
# # Neuron tuning: which units of a layer follow pitch, energy, spectral shape
#
# For each layer, every neuron's activity over frames is correlated with each acoustic
# frame feature (`lib.core.features.frame_features`, aligned to the model's 20 ms frames by time):
#
# - `collect_layer_activity`: hidden states of chosen layers and aligned frame features for a
#   list of utterances (one model pass per utterance).
# - `neuron_feature_correlations`: Pearson and Spearman correlation of every neuron with every
#   feature, two-sided p-values, and Benjamini-Hochberg q-values over all neuron x feature
#   tests of the layer (`scipy.stats.false_discovery_control`). Pitch is only defined in voiced
#   frames, so each feature uses the frames where it is finite. Frames are autocorrelated (a
#   20 ms frame says much what the one before said), so n frames are not n independent
#   observations: each test uses an effective number of frames (Bartlett's correction, as in
#   Pyper & Peterman 1998: n / (1 + 2 sum_k rho_neuron(k) rho_feature(k)), lags up to 2 s), so
#   two slow, unrelated signals are not called tuned. `autocorrelation_lags=0` turns it off.
#   By default (`within_utterance`) the correlations are computed within utterances: each
#   utterance's mean is removed from neuron and feature first, so a neuron whose level merely
#   differs between speakers is not called tuned to pitch, which differs between them too
#   (women and men); the pooled share is reported beside it.
# - `top_tuned_neurons` / `tuning_table`: the most tuned neurons per feature.
# - `cluster_tuning_profiles`: neurons clustered (Ward) by their vector of correlations with
#   all features, with each cluster's dominant feature.
# - `activity_pca`: PCA of standardised layer activity and each utterance's trajectory in it.
# - `marked_frame_selectivity`: neurons that respond differently in marked frames (keywords).
# - `heatmap_neuron_order`: neuron orders for heatmaps (by cluster and tuning, by peak time).
# - `layer_tuning_summary`: summary statistics (activity, dead units, share of significantly
#   tuned neurons, and of those with |r| >= 0.3, effective dimensionality).

# %%
import numpy as np
import pandas as pd
from scipy import stats
from sklearn.cluster import AgglomerativeClustering
from sklearn.decomposition import PCA

from lib.core.features import frame_features
from lib.neurons.streaming_activations import model_frame_times

TUNING_FEATURES = ("rms", "f0", "voiced_prob", "centroid", "bandwidth", "rolloff", "flatness", "zcr")


def align_features_to_frames(features: pd.DataFrame, frame_times) -> pd.DataFrame:
    """Rows of a ``frame_features`` table nearest in time to each model frame centre."""
    times = features["time"].to_numpy()
    frame_times = np.asarray(frame_times, dtype=float)
    idx = np.clip(np.searchsorted(times, frame_times), 1, len(times) - 1)
    left_closer = (frame_times - times[idx - 1]) <= (times[idx] - frame_times)
    idx = np.where(left_closer, idx - 1, idx)
    aligned = features.iloc[idx].reset_index(drop=True)
    aligned["time"] = frame_times
    return aligned


def collect_layer_activity(
    adapter, waveforms, layers=(2, 6, 10), names=None, pitch: str = "pyin", progress: bool = True
) -> dict:
    """Hidden states and aligned frame features for each utterance.

    Returns ``{"layers", "names", "activity": {layer: [[T_i, D], ...]}, "features": [DataFrame, ...],
    "frame_rate"}``; ``features[i]`` has one row per model frame of utterance ``i``.
    """
    from tqdm.auto import tqdm

    layers = [int(x) for x in layers]
    names = list(names) if names is not None else [f"utt{i}" for i in range(len(waveforms))]
    activity = {layer: [] for layer in layers}
    features = []
    for wave in tqdm(waveforms, desc="layer activity", disable=not progress, leave=False):
        states = adapter.hidden_states(wave, layers=layers)
        n = min(len(s) for s in states.values())
        table = frame_features(wave, adapter.sample_rate, pitch=pitch)
        features.append(align_features_to_frames(table, model_frame_times(n, adapter)))
        for layer in layers:
            activity[layer].append(np.asarray(states[layer][:n], dtype=np.float32))
    return {
        "layers": layers,
        "names": names,
        "activity": activity,
        "features": features,
        "frame_rate": adapter.frame_rate,
    }


def check_enough_utterances(n_loaded: int, n_requested: int, n_frames: int | None = None, n_clusters: int = 1) -> None:
    """Stop with a clear message before scikit-learn fails on too little data."""
    if n_loaded < 2:
        raise ValueError(
            f"the neuron analysis needs at least 2 utterances (distinct speakers), but {n_loaded} of the "
            f"{n_requested} requested could be loaded; set n_utterances to 2 or more and check data_path"
        )
    if n_frames is not None and n_frames < max(10, 2 * n_clusters):
        raise ValueError(
            f"only {n_frames} frames of activity: too few for {n_clusters} clusters and the correlations; "
            "use longer utterances (max_seconds) or more of them (n_utterances)"
        )


# %% [markdown]
# ## Correlations with autocorrelated frames
#
# Frames 20 ms apart are not independent: the p-value of a correlation uses the effective number
# of frames (Bartlett's correction from both series' autocorrelations), less one degree of freedom
# per utterance when each utterance's mean is removed.


# %%
def _zscore_columns(x: np.ndarray) -> tuple:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    ok = std > 1e-12
    z = np.zeros_like(x, dtype=np.float64)
    z[:, ok] = (x[:, ok] - mean[ok]) / std[ok]
    return z, ok


def _autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """``[max_lag, D]``: each column's autocorrelation at lags 1..max_lag (biased estimator, by FFT)."""
    n = len(x)
    z = x - x.mean(axis=0)
    spectrum = np.fft.rfft(z, n=2 * n, axis=0)
    acov = np.fft.irfft(spectrum * np.conj(spectrum), n=2 * n, axis=0)[: max_lag + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = acov[1:] / acov[0]
    return np.nan_to_num(rho, nan=0.0, posinf=0.0, neginf=0.0)


def effective_frames(activity: np.ndarray, target: np.ndarray, max_lag: int) -> np.ndarray:
    """Per column of ``activity`` [n, D], the effective sample size of its correlation with ``target`` [n].

    Bartlett's formula: ``n / (1 + 2 sum_k rho_a(k) rho_t(k))`` over lags 1..``max_lag``,
    kept within [3, n]. Two white-noise series give n; two slow ones far fewer.
    """
    n = len(target)
    max_lag = min(int(max_lag), n // 4)
    if max_lag < 1:
        return np.full(activity.shape[1], float(n))
    rho_a = _autocorrelation(np.asarray(activity, dtype=np.float64), max_lag)
    rho_t = _autocorrelation(np.asarray(target, dtype=np.float64)[:, None], max_lag)[:, 0]
    inflation = 1.0 + 2.0 * (rho_t @ rho_a)
    return np.clip(n / np.maximum(inflation, 1e-9), 3.0, float(n))


def _center_within(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``x`` ([n] or [n, D]) less each group's mean: what varies within an utterance, not between them."""
    out = np.array(x, dtype=np.float64, copy=True)
    for g in np.unique(groups):
        rows = groups == g
        out[rows] -= out[rows].mean(axis=0)
    return out


def _ranks_within(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Ranks of ``x`` ([n] or [n, D]) within each group, centred per group (within-utterance Spearman)."""
    out = np.empty(np.shape(x), dtype=np.float64)
    for g in np.unique(groups):
        rows = groups == g
        out[rows] = stats.rankdata(x[rows], axis=0)
    return _center_within(out, groups)


def _corr_with_p(activity: np.ndarray, target: np.ndarray, max_lag: int = 0, lost_dof: int = 0) -> tuple:
    """Correlation of each column of ``activity`` [n, D] with ``target`` [n], its two-sided p and the
    effective number of frames the p is computed with (``max_lag`` > 0: corrected for autocorrelation;
    ``lost_dof``: degrees of freedom spent before, e.g. one per utterance mean removed)."""
    n = len(target)
    if n < 3 or np.std(target) < 1e-12:
        return (np.full(activity.shape[1], np.nan),) * 2 + (np.full(activity.shape[1], float(n)),)
    za, ok = _zscore_columns(activity.astype(np.float64))
    zt = (target - target.mean()) / target.std()
    r = np.clip(za.T @ zt / n, -1.0, 1.0)
    r[~ok] = 0.0
    n_eff = effective_frames(za, zt, max_lag) if max_lag else np.full(activity.shape[1], float(n))
    dof = np.maximum(n_eff - 2 - lost_dof, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = r * np.sqrt(dof / np.maximum(1e-300, 1.0 - r**2))
    p = 2.0 * stats.t.sf(np.abs(t), df=dof)
    p[~ok] = 1.0
    return r, p, n_eff


def _benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    q = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        q[finite] = stats.false_discovery_control(p[finite], method="bh")
    return q


# %% [markdown]
# ## Tuning: correlation of each neuron with each acoustic feature
#
# Pearson and Spearman correlations with two-sided p-values, corrected over all neuron x feature
# pairs by Benjamini-Hochberg.


# %%
def neuron_feature_correlations(
    activity,
    features: pd.DataFrame,
    feature_names=TUNING_FEATURES,
    autocorrelation_lags: int = 100,
    groups=None,
    methods=("pearson", "spearman"),
) -> dict:
    """Pearson and Spearman r, p and BH q of each neuron [D] with each feature [F].

    ``groups`` (one utterance id per frame): correlate within utterances only. Each utterance's
    mean is removed from the neuron and the feature (for Spearman, from their ranks within the
    utterance), so a neuron whose level differs between speakers is not called tuned to a
    feature that also differs between them (pitch: women and men); one degree of freedom per
    utterance is spent. None: all frames pooled.

    ``activity``: ``[frames, D]``; ``features``: one row per frame. Returns a dict of ``[D, F]``
    arrays (``pearson_r``, ``pearson_p``, ``pearson_q``, ``spearman_r``...) plus
    ``features`` (names), ``n_frames`` (valid frames per feature) and ``effective_frames``
    (per feature, the median over neurons of the effective frames its Spearman p-values use, or the
    Pearson ones' when Spearman is not computed).
    ``autocorrelation_lags``: lags (frames; 100 = 2 s at 50 Hz) of the autocorrelation correction; 0: off.
    ``methods``: the correlations computed (``("spearman",)`` skips Pearson and its arrays).
    """
    activity = np.asarray(activity, dtype=np.float64)
    if len(activity) != len(features):
        raise ValueError(f"activity has {len(activity)} frames but features have {len(features)} rows")
    groups = None if groups is None else np.asarray(groups)
    if groups is not None and len(groups) != len(activity):
        raise ValueError(f"groups has {len(groups)} entries for {len(activity)} frames: one utterance id per frame")
    feature_names = [f for f in feature_names if f in features.columns]
    if not feature_names:
        raise ValueError(f"none of the features are in the table; it has {list(features.columns)}")
    if not set(methods) <= {"pearson", "spearman"} or not methods:
        raise ValueError(f"methods must name pearson and/or spearman, not {methods!r}")
    d, nf = activity.shape[1], len(feature_names)
    out = {f"{m}_{k}": np.full((d, nf), np.nan) for m in methods for k in ("r", "p")}
    n_frames, n_effective = [], []
    if groups is None:  # pooled frames: each correlation's own transform of the values
        transforms = {"pearson": lambda v, g: v, "spearman": lambda v, g: stats.rankdata(v, axis=0)}
    else:  # within utterances: each utterance's mean (of the values, or of their ranks) removed
        transforms = {"pearson": _center_within, "spearman": _ranks_within}
    on_all = {}  # the activity's transforms over all frames, shared by the features defined on all
    for j, name in enumerate(feature_names):
        target = features[name].to_numpy(dtype=np.float64)
        valid = np.isfinite(target)
        if groups is not None:  # an utterance with fewer than 3 valid frames says nothing within itself
            counts = pd.Series(groups[valid]).value_counts()
            valid &= np.isin(groups, counts.index[counts >= 3])
        n_frames.append(int(valid.sum()))
        g = None if groups is None else groups[valid]
        lost = 0 if g is None else len(np.unique(g)) - 1
        for method in sorted(methods):  # Spearman last: its effective frames are the ones recorded
            transform = transforms[method]
            if valid.all():
                if method not in on_all:
                    on_all[method] = transform(activity, g)
                x = on_all[method]
            else:
                x = transform(activity[valid], g)
            r, p, n_eff = _corr_with_p(x, transform(target[valid], g), autocorrelation_lags, lost)
            out[f"{method}_r"][:, j], out[f"{method}_p"][:, j] = r, p
        n_effective.append(float(np.median(n_eff)))
    for method in methods:
        out[f"{method}_q"] = _benjamini_hochberg(out[f"{method}_p"].ravel()).reshape(d, nf)
    out["features"] = feature_names
    out["n_frames"] = n_frames
    out["effective_frames"] = n_effective
    out["autocorrelation_lags"] = int(autocorrelation_lags)
    out["within"] = "utterance" if groups is not None else "pooled"
    return out


def top_tuned_neurons(
    tuning: dict, feature: str, k: int = 10, method: str = "spearman", alpha: float = 0.05
) -> pd.DataFrame:
    """The ``k`` neurons with the largest |r| for ``feature``: neuron, r, q, significant."""
    j = tuning["features"].index(feature)
    r = tuning[f"{method}_r"][:, j]
    q = tuning[f"{method}_q"][:, j]
    order = np.argsort(-np.nan_to_num(np.abs(r), nan=-1.0), kind="stable")[:k]
    return pd.DataFrame(
        {
            "feature": feature,
            "rank": np.arange(1, len(order) + 1),
            "neuron": order,
            "r": r[order],
            "q": q[order],
            "significant": q[order] < alpha,
        }
    )


def tuning_table(tuning: dict, k: int = 5, method: str = "spearman", alpha: float = 0.05) -> pd.DataFrame:
    """``top_tuned_neurons`` for every feature, stacked."""
    return pd.concat([top_tuned_neurons(tuning, f, k, method, alpha) for f in tuning["features"]], ignore_index=True)


# %% [markdown]
# ## Groups of neurons, trajectories and selectivity
#
# Clusters of neurons with similar tuning, the PCA trajectory of the layer's activity, the neuron
# order of the heatmaps and the neurons that respond to marked frames (keywords).


# %%
def cluster_tuning_profiles(tuning: dict, n_clusters: int = 6, method: str = "spearman") -> tuple:
    """Ward clustering of neurons by their correlation profile over features.

    Returns ``(labels [D], summary DataFrame)``; the summary gives each cluster's size, its mean
    profile and its dominant feature (largest mean |r|).
    """
    profiles = np.nan_to_num(tuning[f"{method}_r"])
    n_clusters = max(1, min(int(n_clusters), len(profiles)))
    labels = (
        AgglomerativeClustering(n_clusters=n_clusters, linkage="ward").fit_predict(profiles)
        if n_clusters > 1
        else np.zeros(len(profiles), dtype=int)
    )
    rows = []
    for c in range(n_clusters):
        members = profiles[labels == c]
        mean = members.mean(axis=0)
        row = {
            "cluster": c,
            "size": int(len(members)),
            "dominant_feature": tuning["features"][int(np.argmax(np.abs(mean)))],
            "mean_abs_r": float(np.abs(members).max(axis=1).mean()),
        }
        row.update({f"r_{f}": float(v) for f, v in zip(tuning["features"], mean)})
        rows.append(row)
    summary = pd.DataFrame(rows).sort_values("mean_abs_r", ascending=False).reset_index(drop=True)
    return labels, summary


def activity_pca(activity_per_utterance, n_components: int = 3, seed: int = 0) -> tuple:
    """PCA of standardised activity over all frames; ``(pca, mean, std, [trajectory [T_i, k], ...])``."""
    stacked = np.concatenate(activity_per_utterance, axis=0).astype(np.float64)
    mean, std = stacked.mean(axis=0), stacked.std(axis=0) + 1e-8
    n_components = min(n_components, stacked.shape[1], len(stacked))
    pca = PCA(n_components=n_components, random_state=seed).fit((stacked - mean) / std)
    trajectories = [pca.transform((np.asarray(a, np.float64) - mean) / std) for a in activity_per_utterance]
    return pca, mean, std, trajectories


def heatmap_neuron_order(
    activity, tuning: dict | None = None, labels=None, by: str = "cluster", method: str = "spearman"
) -> np.ndarray:
    """Neuron order for a heatmap.

    ``by="cluster"``: clusters by tuning strength, then neurons by their strongest |r|;
    ``by="peak"``: by the frame of peak (z-scored) activity; ``by=<feature>``: by r with that feature.
    """
    activity = np.asarray(activity)
    if by == "peak":
        z, _ = _zscore_columns(activity.astype(np.float64))
        return np.argsort(np.argmax(z, axis=0), kind="stable")
    if tuning is None:
        raise ValueError(f"ordering by {by!r} needs the tuning result")
    r = np.nan_to_num(tuning[f"{method}_r"])
    if by in tuning["features"]:
        return np.argsort(-r[:, tuning["features"].index(by)], kind="stable")
    if by != "cluster":
        raise ValueError(f"order by 'cluster', 'peak' or a feature in {tuning['features']}, not {by!r}")
    strength = np.abs(r).max(axis=1)
    if labels is None:
        return np.argsort(-strength, kind="stable")
    cluster_strength = {c: strength[labels == c].mean() for c in np.unique(labels)}
    key = np.array([cluster_strength[c] for c in labels])
    return np.lexsort((-strength, labels, -key))


def marked_frame_selectivity(
    activity_per_utterance,
    masks,
    k: int = 10,
    reference_masks=None,
    autocorrelation_lags: int = 100,
    within_utterance: bool = True,
) -> pd.DataFrame:
    """Neurons whose activity differs most between marked frames (e.g. keywords) and the rest.

    ``masks[i]``: boolean ``[T_i]`` per utterance. ``reference_masks`` (same shapes) limits "the
    rest" to those frames, e.g. the frames of the other words, so a neuron that follows speech
    against pauses is not taken for a keyword neuron. Activity is z-scored per neuron over the
    compared frames; the test is the point-biserial correlation with the marks, its p-value
    computed, as the tuning's are, with Bartlett's effective number of frames (neighbouring
    frames are not independent; ``autocorrelation_lags`` 0 treats them as if they were), and
    Benjamini-Hochberg q over neurons. ``within_utterance`` (default): marked and other frames are
    compared within each utterance (the utterance's mean removed from activity and marks), so a
    neuron whose level differs between speakers is not taken for a keyword neuron because one
    speaker says the keyword more often. Returns the ``k`` neurons with the smallest p:
    ``neuron, diff_z`` (marked minus other, in SDs), ``r, effective_frames, p, q``.
    """
    x = np.concatenate(activity_per_utterance, axis=0).astype(np.float64)
    mask = np.concatenate([np.asarray(m, dtype=bool)[: len(a)] for a, m in zip(activity_per_utterance, masks)])
    groups = np.concatenate([np.full(len(a), i) for i, a in enumerate(activity_per_utterance)])
    if reference_masks is not None:
        reference = np.concatenate(
            [np.asarray(m, dtype=bool)[: len(a)] for a, m in zip(activity_per_utterance, reference_masks)]
        )
        keep = mask | reference
        x, mask, groups = x[keep], mask[keep], groups[keep]
    if mask.sum() < 2 or (~mask).sum() < 2:
        raise ValueError(f"need at least 2 marked and 2 other frames, got {int(mask.sum())} marked of {len(mask)}")
    z, _ = _zscore_columns(x)
    marks, lost = mask.astype(np.float64), 0
    if within_utterance:
        z, marks, lost = _center_within(z, groups), _center_within(marks, groups), len(np.unique(groups)) - 1
    r, p, n_eff = _corr_with_p(z, marks, autocorrelation_lags, lost)
    p = np.where(np.isfinite(p), p, 1.0)
    q = _benjamini_hochberg(p)
    order = np.argsort(p, kind="stable")[:k]
    return pd.DataFrame(
        {
            "neuron": order,
            "diff_z": z[mask][:, order].mean(0) - z[~mask][:, order].mean(0),
            "r": np.nan_to_num(r[order]),
            "effective_frames": n_eff[order],
            "p": p[order],
            "q": q[order],
        }
    )


# %% [markdown]
# ## One layer's whole analysis


# %%
def layer_tuning_summary(
    activity, tuning: dict, alpha: float = 0.05, method: str = "spearman", pooled: dict | None = None
) -> dict:
    """Summary statistics of one layer's activity and tuning. ``pooled``: the same tests on pooled frames
    (between-utterance differences included), reported beside the within-utterance share."""
    x = np.asarray(activity, dtype=np.float64)
    std = x.std(axis=0)
    eig = np.clip(np.linalg.eigvalsh(np.cov(((x - x.mean(0)) / (std + 1e-8)).T)), 0, None)
    r = tuning[f"{method}_r"]
    q = tuning[f"{method}_q"]
    significant = q < alpha
    summary = {
        "frames": int(len(x)),
        "neurons": int(x.shape[1]),
        "mean_activation": float(x.mean()),
        "mean_neuron_std": float(std.mean()),
        "dead_neurons": int((std < 1e-6).sum()),
        "effective_dimensionality": float(eig.sum() ** 2 / max(1e-12, (eig**2).sum())),
        "correlations": tuning.get("within", "pooled"),
        "share_tuned_any_feature": float(significant.any(axis=1).mean()),
        # significance is not size: with hundreds of effective frames |r| of 0.1 passes
        "share_tuned_r_above_0.3": float((significant & (np.abs(np.nan_to_num(r)) >= 0.3)).any(axis=1).mean()),
        "effective_frames": dict(zip(tuning["features"], tuning.get("effective_frames", []))),
        "share_tuned": {f: float(significant[:, j].mean()) for j, f in enumerate(tuning["features"])},
        "max_abs_r": {
            f: float(np.nanmax(np.abs(r[:, j]))) if np.isfinite(r[:, j]).any() else None
            for j, f in enumerate(tuning["features"])
        },
    }
    if pooled is not None:
        summary["share_tuned_any_feature_pooled"] = float((pooled[f"{method}_q"] < alpha).any(axis=1).mean())
    return summary


def analyse_layer_tuning(
    collected: dict,
    feature_names=TUNING_FEATURES,
    n_clusters: int = 6,
    top_k: int = 5,
    alpha: float = 0.05,
    method: str = "spearman",
    within_utterance: bool = True,
) -> dict:
    """Run the whole per-layer analysis on ``collect_layer_activity`` output.

    ``within_utterance``: correlations within utterances (each utterance's mean removed; see
    `neuron_feature_correlations`), with the pooled share beside it in the summary; False: pooled frames.
    """
    features = pd.concat(collected["features"], ignore_index=True)
    groups = np.concatenate([np.full(len(f), i) for i, f in enumerate(collected["features"])])
    results = {}
    for layer in collected["layers"]:
        stacked = np.concatenate(collected["activity"][layer], axis=0)
        tuning = neuron_feature_correlations(
            stacked, features, feature_names, groups=groups if within_utterance else None
        )
        pooled = (  # only the share of the summary's method is reported
            neuron_feature_correlations(stacked, features, feature_names, methods=(method,))
            if within_utterance
            else None
        )
        labels, clusters = cluster_tuning_profiles(tuning, n_clusters=n_clusters, method=method)
        results[layer] = {
            "tuning": tuning,
            "table": tuning_table(tuning, k=top_k, method=method, alpha=alpha),
            "labels": labels,
            "clusters": clusters,
            "summary": layer_tuning_summary(stacked, tuning, alpha=alpha, method=method, pooled=pooled),
        }
    return results
