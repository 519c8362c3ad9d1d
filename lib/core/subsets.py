# %% [markdown]
# # Stratified subsets and splits
#
# Smoke runs and capped experiments take a part of a data set; taking it at random can drop or
# over-represent classes. `stratified_subset(frame, max_items, seed)` keeps at most `max_items`
# rows with every class keeping its share (at least one row each while the cap allows), and
# `stratified_split(labels, test_fraction, seed)` marks `test_fraction` of every class as test.
# Both are deterministic for a seed, and a cap of 0 or below is an error, never "all".
#
# Clips that share a speaker or a source recording are not independent: `find_group_column(manifest)`
# names the column that ties them (`GROUP_COLUMNS`, the first with more than one value), for
# grouped splits and for saying whether a test set shares groups with its training set.

# %%
import numpy as np
import pandas as pd


def stratified_subset(frame: pd.DataFrame, max_items, seed: int = 0, column: str = "label") -> pd.DataFrame:
    """At most ``max_items`` rows of ``frame``, stratified by ``column``; None keeps every row.

    Each class keeps about the same fraction (at least one row while the cap allows); rows stay
    in their original order. Raises ``ValueError`` for a cap that is not a whole number >= 1.
    """
    if max_items is None:
        return frame.reset_index(drop=True)
    if isinstance(max_items, bool) or not isinstance(max_items, (int, np.integer)) or max_items < 1:
        raise ValueError(f"a subset size must be a whole number >= 1 (or None for all), not {max_items!r}")
    if len(frame) <= max_items:
        return frame.reset_index(drop=True)
    fraction = max_items / len(frame)
    parts = [
        group.sample(n=max(1, int(round(len(group) * fraction))), random_state=seed)
        for _, group in frame.groupby(column)
    ]
    picked = pd.concat(parts)
    if len(picked) > max_items:
        picked = picked.sample(n=int(max_items), random_state=seed)
    return picked.sort_index().reset_index(drop=True)


def stratified_split(labels, test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """``"train"``/``"test"`` per item, ``test_fraction`` of every class in test (at least one when possible)."""
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), not {test_fraction!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    split = np.full(len(labels), "train", dtype=object)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        n_test = int(round(len(members) * test_fraction))
        if len(members) > 1 and test_fraction > 0:
            n_test = min(max(n_test, 1), len(members) - 1)
        split[members[:n_test]] = "test"
    return split


def stratified_group_split(labels, groups, test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """``"train"``/``"test"`` per item with whole groups (speakers, source recordings) on one side: the first
    fold of scikit-learn's `StratifiedGroupKFold` in ``round(1 / test_fraction)`` folds, so about a fifth for
    0.2, a third for 0.3, half for 0.4 or 0.5, stratified by label as far as the groups allow."""
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0.0 < float(test_fraction) <= 0.5:
        raise ValueError(f"test_fraction of a grouped split must be in (0, 0.5], not {test_fraction!r}")
    labels, groups = np.asarray(labels), np.asarray(groups)
    n_splits = max(2, round(1 / float(test_fraction)))
    if len(np.unique(groups)) < n_splits:
        raise ValueError(f"{len(np.unique(groups))} groups cannot be split in {n_splits} folds; use stratified_split")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, test_rows = next(folds.split(np.zeros(len(labels)), labels, groups=groups))
    split = np.full(len(labels), "train", dtype=object)
    split[test_rows] = "test"
    return split


def speaker_folds(speakers, max_folds: int | None = None, seed: int = 0) -> list:
    """The held-out sets of a leave-speakers-out evaluation: one speaker each, or, with more speakers than
    ``max_folds``, the speakers dealt in a ``seed``-shuffled order into ``max_folds`` groups."""
    unique = sorted(set(np.asarray(speakers).tolist()))
    if max_folds is not None and len(unique) > int(max_folds) >= 2:
        order = np.random.default_rng(seed).permutation(len(unique))
        return [[unique[i] for i in order[k :: int(max_folds)]] for k in range(int(max_folds))]
    return [[speaker] for speaker in unique]


GROUP_COLUMNS = ("speaker", "src_file", "fsID", "source", "recording")  # fsID: UrbanSound8K's source recording


def find_group_column(manifest: pd.DataFrame, names=GROUP_COLUMNS, min_values: int = 2):
    """The first of ``names`` that ``manifest`` has with at least ``min_values`` values (a speaker, a recording),
    or None. ``min_values=1``: any such column, e.g. to say that a test set's one speaker is also in training."""
    return next((c for c in names if c in manifest.columns and manifest[c].nunique() >= min_values), None)
