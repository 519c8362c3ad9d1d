# %% [markdown]
# # Stratified subsets: small, balanced, reproducible slices of a manifest
#
# Quick runs and smoke tests use a slice of a data set; a random slice of a small data set
# can drop a class or a speaker, and then accuracies and per-speaker figures stop meaning
# anything. `stratified_subset` keeps every group (a label, or a label x speaker cell)
# represented in proportion, reproducibly for a seed; `per_group_subset` takes at most N
# rows of every group (e.g. "5 clips of each digit from each speaker").

# %%
import numpy as np
import pandas as pd


def _subset_groups(frame: pd.DataFrame, by) -> pd.Series:
    columns = [by] if isinstance(by, str) else list(by)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"cannot stratify by {missing}: the manifest has columns {list(frame.columns)}")
    return frame[columns].astype(str).agg("|".join, axis=1)


def stratified_subset(frame: pd.DataFrame, cap: int | None, by="label", seed: int = 0) -> pd.DataFrame:
    """At most ``cap`` rows of ``frame``, every group of ``by`` (a column or a list of columns) kept in proportion.

    ``cap=None`` (or ``cap >= len(frame)``) returns ``frame`` unchanged. Each group gets
    ``cap * share`` rows rounded by largest remainder, and at least one row while the cap
    allows it, so a small cap never silently drops a class. Row order is kept. ``cap`` must
    be a positive whole number: 0 or a negative count is an error, not "all".
    """
    if cap is None:
        return frame
    if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 1:
        raise ValueError(f"a subset size must be a whole number >= 1 (or None for all), not {cap!r}")
    if cap >= len(frame):
        return frame
    groups = _subset_groups(frame, by)
    counts = groups.value_counts().sort_index()
    share = counts / counts.sum() * cap
    take = np.floor(share).astype(int)
    if cap >= len(counts):  # at least one row per group
        take = take.clip(lower=1)
    remainder = cap - int(take.sum())
    if remainder > 0:
        order = (share - np.floor(share)).sort_values(ascending=False).index
        for key in order[:remainder]:
            take[key] += 1
    elif remainder < 0:  # the one-per-group floor overshot: trim the largest groups
        for key in take.sort_values(ascending=False).index[:-remainder]:
            take[key] -= 1
    take = take.clip(upper=counts)
    rng = np.random.default_rng(seed)
    keep = []
    for key, n in take.items():
        if n <= 0:
            continue
        positions = np.flatnonzero(groups.to_numpy() == key)
        keep.extend(rng.choice(positions, size=int(n), replace=False).tolist())
    return frame.iloc[sorted(keep)]


def per_group_subset(frame: pd.DataFrame, per_group: int | None, by=("label",), seed: int = 0) -> pd.DataFrame:
    """At most ``per_group`` rows of every group of ``by`` (random, reproducible); None keeps all."""
    if per_group is None:
        return frame
    if isinstance(per_group, bool) or not isinstance(per_group, (int, np.integer)) or per_group < 1:
        raise ValueError(f"rows per group must be a whole number >= 1 (or None for all), not {per_group!r}")
    groups = _subset_groups(frame, by).to_numpy()
    rng = np.random.default_rng(seed)
    keep = []
    for key in sorted(set(groups.tolist())):
        positions = np.flatnonzero(groups == key)
        keep.extend(rng.choice(positions, size=min(per_group, len(positions)), replace=False).tolist())
    return frame.iloc[sorted(keep)]
