# %% [markdown]
# # Embedding quality: do neighbours share a label?
#
# Numbers that say whether an embedding space groups clips the way their labels do, before
# anyone browses it:
#
# - **precision@k**: for each clip, the fraction of its `k` nearest neighbours (itself
#   excluded) with the same label, averaged over clips; compared with the chance level of a
#   random neighbour list, `sum_c p_c (n_c - 1) / (N - 1)`.
# - **intra- vs inter-class distance**: mean distance between clips of the same label and of
#   different labels, and their ratio (below 1: classes are tighter than the space).
# - **silhouette**: scikit-learn's silhouette score with the same metric.
#
# Distances are cosine on mean-centred embeddings, which is what FiftyOne's sklearn similarity
# index uses, so these numbers describe the neighbours the App shows.

# %%
import numpy as np
import pandas as pd


def quality_prepare(embeddings, center: bool = True) -> np.ndarray:
    """Float64 copy of ``embeddings``, mean-centred (as FiftyOne's sklearn index does)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need at least two embeddings as [N, D], got shape {x.shape}")
    return x - x.mean(axis=0, keepdims=True) if center else x.copy()


def quality_neighbors(embeddings, k: int, metric: str = "cosine", center: bool = True) -> np.ndarray:
    """Indices ``[N, k]`` of each clip's ``k`` nearest neighbours, the clip itself excluded."""
    from sklearn.neighbors import NearestNeighbors

    x = quality_prepare(embeddings, center)
    k = min(int(k), len(x) - 1)
    nn = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(x)
    _, idx = nn.kneighbors(x)
    rows = []
    for i, row in enumerate(idx):
        row = [j for j in row if j != i][:k]
        rows.append(row)
    return np.asarray(rows)


def same_label_neighbours(embeddings, labels, k: int, metric: str = "cosine", center: bool = True) -> np.ndarray:
    """``[N, k]`` booleans: whether each clip's j-th nearest neighbour (itself excluded) shares its label. Its
    first ``k'`` columns are the answer for any smaller ``k'``."""
    labels = np.asarray(labels)
    return labels[quality_neighbors(embeddings, k, metric, center)] == labels[:, None]


def precision_at_k(
    embeddings, labels, k: int = 20, metric: str = "cosine", center: bool = True, per_class: bool = False
):
    """Mean fraction of same-label clips among each clip's ``k`` neighbours (itself excluded).

    With ``per_class=True`` also returns a Series of the mean per label.
    """
    labels = np.asarray(labels)
    hits = same_label_neighbours(embeddings, labels, k, metric, center).mean(axis=1)
    if per_class:
        return float(hits.mean()), pd.Series(hits).groupby(labels).mean()
    return float(hits.mean())


def precision_at_k_across_groups(
    embeddings, labels, groups, k: int = 20, metric: str = "cosine", center: bool = True, max_points: int = 6000
) -> float:
    """precision@k where neighbours from the query's own group (e.g. the same speaker) are excluded.

    Data sets with many takes per speaker reward recognising voices: a clip's nearest
    neighbours are often the same speaker saying the same word. Excluding the speaker's
    other clips asks whether the embedding groups the *label* across speakers.
    """
    from sklearn.metrics import pairwise_distances

    labels, groups = np.asarray(labels), np.asarray(groups)
    x = quality_prepare(embeddings, center)
    if len(x) > max_points:
        raise ValueError(
            f"{len(x)} points: precision_at_k_across_groups builds the full distance matrix; "
            f"subsample to at most {max_points}"
        )
    d = pairwise_distances(x, metric=metric)
    d[groups[:, None] == groups[None, :]] = np.inf  # also removes the clip itself
    k = min(int(k), int(np.isfinite(d).sum(axis=1).min()))
    if k < 1:
        raise ValueError("every group holds all the clips: nothing to compare across groups")
    idx = np.argsort(d, axis=1)[:, :k]
    return float((labels[idx] == labels[:, None]).mean())


def precision_chance(labels) -> float:
    """Expected precision@k of random neighbours: ``sum_c p_c (n_c - 1) / (N - 1)``."""
    labels = np.asarray(labels)
    counts = pd.Series(labels).value_counts().to_numpy().astype(float)
    n = counts.sum()
    return float((counts / n * (counts - 1) / (n - 1)).sum())


def intra_inter_distances(
    embeddings, labels, metric: str = "cosine", center: bool = True, max_points: int = 3000, seed: int = 0
) -> dict:
    """Mean intra-class and inter-class distance, their ratio, on at most ``max_points`` clips."""
    from sklearn.metrics import pairwise_distances

    x = quality_prepare(embeddings, center)
    labels = np.asarray(labels)
    if len(x) > max_points:
        keep = np.random.default_rng(seed).choice(len(x), max_points, replace=False)
        x, labels = x[keep], labels[keep]
    d = pairwise_distances(x, metric=metric)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(x), dtype=bool)
    intra = float(d[same & off_diagonal].mean()) if (same & off_diagonal).any() else float("nan")
    inter = float(d[~same].mean()) if (~same).any() else float("nan")
    return {"intra": intra, "inter": inter, "ratio": intra / inter if inter else float("nan")}


def plot_embedding_quality(
    embeddings, labels, ks=(1, 2, 5, 10, 20, 50), metric: str = "cosine", title: str = "", per_label_k=None
):
    """Precision@k against k (with chance) and per-class precision at ``per_label_k`` (None: the largest
    ``k``; give the report's ``n_neighbours`` so the bars match its table)."""
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    x = quality_prepare(embeddings)
    ks = [k for k in ks if k < len(x)]
    bar_k = min(int(per_label_k), len(x) - 1) if per_label_k else ks[-1]
    same = same_label_neighbours(x, labels, max(ks + [bar_k]), metric, center=False)  # one search, at the largest k
    values = [float(same[:, :k].mean()) for k in ks]
    per_class = pd.Series(same[:, :bar_k].mean(axis=1)).groupby(labels).mean()
    chance = precision_chance(labels)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax1.plot(ks, values, "o-", label="same-label neighbours")
    ax1.axhline(chance, color="grey", ls="--", label=f"chance ({chance:.2f})")
    ax1.set_xscale("log")
    ax1.set_xlabel("k")
    ax1.set_ylabel("precision@k")
    ax1.set_ylim(0, 1)
    ax1.legend()
    ax1.set_title(title or "neighbour precision")
    per_class.sort_index().plot.bar(ax=ax2, color="tab:blue")
    ax2.axhline(chance, color="grey", ls="--")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel(f"precision@{bar_k}")
    ax2.set_xlabel("label")
    ax2.set_title(f"per label, k={bar_k}")
    fig.tight_layout()
    return fig


# %% [markdown]
# ## A report that means something
#
# precision@k with every neighbour counted flatters data sets with many takes per speaker or
# many clips cut from one recording (FSDD's 50 takes per speaker, ESC-50's clips sharing a
# `src_file`): a clip's nearest neighbours are often its own siblings. The report puts next to
# it precision@k with the query's own group (speaker, source file) excluded, the silhouette,
# per-class precision, and a **k-NN classification accuracy under cross-validation grouped by
# source** (a group's clips are never split between training and test folds; ESC-50's own five
# folds are used when all five are present, as the data set prescribes).


# %%
def knn_accuracy_cv(
    embeddings,
    labels,
    groups=None,
    folds=None,
    k: int = 5,
    n_splits: int = 5,
    metric: str = "cosine",
    center: bool = True,
    seed: int = 0,
) -> dict:
    """Cross-validated k-NN accuracy; return ``{"accuracy", "std", "per_fold", "scheme", "k", "n_folds"}``.

    ``folds``: predefined fold ids (used when they hold at least ``n_splits`` distinct values);
    else ``groups`` (``StratifiedGroupKFold``: no group in two folds); else ``StratifiedKFold``.
    Labels with fewer members than folds still take part (scikit-learn warns and copes).
    """
    import warnings

    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    x = quality_prepare(embeddings, center)
    labels = np.asarray(labels).astype(str)
    splits, scheme = None, ""
    if folds is not None and len(np.unique(folds)) >= n_splits:
        folds = np.asarray(folds)
        splits = [(np.where(folds != f)[0], np.where(folds == f)[0]) for f in np.unique(folds)]
        scheme = f"predefined folds ({len(splits)}, leave one fold out)"
    elif groups is not None and len(np.unique(groups)) >= n_splits:
        groups = np.asarray(groups).astype(str)
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        scheme = f"{n_splits}-fold, grouped (no group in two folds)"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                splits = list(splitter.split(x, labels, groups))
            except ValueError:  # every class smaller than the folds: group without stratifying
                splits = list(GroupKFold(n_splits=n_splits).split(x, labels, groups))
                scheme += ", not stratified (classes smaller than the folds)"
    else:
        n_splits = max(2, min(n_splits, int(pd.Series(labels).value_counts().max())))
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            splits = list(splitter.split(x, labels))
        scheme = f"{n_splits}-fold, stratified (no groups)"
    per_fold = []
    for train, test in splits:
        if len(train) == 0 or len(test) == 0:
            continue
        model = KNeighborsClassifier(n_neighbors=min(int(k), len(train)), metric=metric).fit(x[train], labels[train])
        per_fold.append(float((model.predict(x[test]) == labels[test]).mean()))
    return {
        "accuracy": float(np.mean(per_fold)),
        "std": float(np.std(per_fold)),
        "per_fold": per_fold,
        "scheme": scheme,
        "k": int(k),
        "n_folds": len(per_fold),
        "chance": float(pd.Series(labels).value_counts(normalize=True).max()),
    }


def quality_report(
    embeddings, labels, groups=None, folds=None, k: int = 20, knn_k: int = 5, metric: str = "cosine", seed: int = 0
) -> dict:
    """The figures of the section above for one embedding space (plain numbers, ready for ``results.json``)."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels).astype(str)
    x = quality_prepare(embeddings)
    overall, per_class = precision_at_k(x, labels, k, metric, center=False, per_class=True)
    report = {
        "k": int(k),
        "precision_at_k": overall,
        "chance": precision_chance(labels),
        "per_class_precision": {str(c): float(v) for c, v in per_class.items()},
        "group_column_used": groups is not None,
        "precision_at_k_other_groups": None,
    }
    if groups is not None and len(np.unique(groups)) > 1 and len(x) <= 6000:
        report["precision_at_k_other_groups"] = precision_at_k_across_groups(
            x, labels, np.asarray(groups).astype(str), k, metric, center=False
        )
    report["distances"] = intra_inter_distances(x, labels, metric, center=False, seed=seed)
    if 2 <= len(np.unique(labels)) < len(x):
        report["silhouette"] = float(
            silhouette_score(x, labels, metric=metric, sample_size=min(len(x), 3000), random_state=seed)
        )
    report["knn"] = knn_accuracy_cv(x, labels, groups, folds, k=knn_k, metric=metric, center=False, seed=seed)
    return report


def quality_comparison(reports: dict) -> pd.DataFrame:
    """One row per encoder (``{name: quality_report(...)}``), the headline figures side by side."""
    rows = []
    for name, r in reports.items():
        rows.append(
            {
                "encoder": name,
                f"precision@{r['k']}": r["precision_at_k"],
                f"precision@{r['k']}, own group excluded": r["precision_at_k_other_groups"],
                "precision chance (random neighbours)": r["chance"],
                "silhouette": r.get("silhouette"),
                f"k-NN accuracy (k={r['knn']['k']})": r["knn"]["accuracy"],
                "k-NN chance (largest class)": r["knn"]["chance"],
                "CV": r["knn"]["scheme"],
            }
        )
    return pd.DataFrame(rows).set_index("encoder")
