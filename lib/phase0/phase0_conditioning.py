# %% [markdown]
# # Phase 0 conditioning: coarse clusters of the recent context
#
# A conditioning scheme maps a context window to one of a few discrete cells, the keys a
# lookup memory would use. All are fitted on **train speakers only** and then applied
# unchanged to held-out speakers:
#
# | scheme | context summary | cells |
# |---|---|---|
# | `mean_vq64` | mean of the `W` standardised frames | k-means, 64 clusters |
# | `pca8_vq256` | the `W` standardised frames flattened, PCA to 8 dims | k-means, 256 clusters |
# | `pca8_quartile` | the same PCA 8 | each component cut at its train quartiles (up to 4^8 cells) |
# | random | - | each scheme's own labels shuffled across frames (same cluster sizes): the chance level |
#
# Frames are standardised per latent dimension with means and standard deviations of the
# train speakers' frames; targets (next-step deltas) likewise with train-delta statistics.
# `save_phase0_normalisation` writes both to `normalisation.npz` so that the numbers can be
# reproduced or applied to new data.

# %%
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA

from lib.core.atomic_io import atomic_write_bytes

PHASE0_SCHEMES = {
    "mean_vq64": {"context": "mean", "pca": None, "method": "kmeans", "clusters": 64},
    "pca8_vq256": {"context": "flat", "pca": 8, "method": "kmeans", "clusters": 256},
    "pca8_quartile": {"context": "flat", "pca": 8, "method": "quartile", "bins": 4},
}


@dataclass
class Phase0Normaliser:
    """Per-dimension standardisation fitted on train frames (``latent_*``) and train deltas (``delta_*``)."""

    latent_mean: np.ndarray
    latent_std: np.ndarray
    delta_mean: np.ndarray
    delta_std: np.ndarray

    def deltas(self, deltas):
        return ((np.asarray(deltas, dtype=np.float32) - self.delta_mean) / self.delta_std).astype(np.float32)


def _safe_std(x: np.ndarray) -> np.ndarray:
    std = x.std(axis=0)
    return np.where(std > 1e-8, std, 1.0).astype(np.float32)


def fit_phase0_normaliser(latents, train_rows, train_deltas) -> Phase0Normaliser:
    """Statistics of the train speakers' latent frames (``train_rows``) and next-step deltas."""
    frames = np.asarray(latents)[np.unique(train_rows)].astype(np.float64)
    deltas = np.asarray(train_deltas, dtype=np.float64)
    return Phase0Normaliser(
        frames.mean(axis=0).astype(np.float32),
        _safe_std(frames),
        deltas.mean(axis=0).astype(np.float32),
        _safe_std(deltas),
    )


def save_phase0_normalisation(normaliser: Phase0Normaliser, path) -> Path:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        latent_mean=normaliser.latent_mean,
        latent_std=normaliser.latent_std,
        delta_mean=normaliser.delta_mean,
        delta_std=normaliser.delta_std,
    )
    return atomic_write_bytes(Path(path), buffer.getvalue())


@dataclass
class Phase0Conditioner:
    """A fitted scheme: ``assign(features)`` gives cell ids ``0..n_cells-1`` (``-1``: a cell unseen in training)."""

    name: str
    spec: dict
    pca: object = None
    kmeans: object = None
    edges: np.ndarray | None = None
    cell_ids: dict = field(default_factory=dict)
    n_cells: int = 0

    def _project(self, features):
        features = np.asarray(features, dtype=np.float32)
        return self.pca.transform(features).astype(np.float32) if self.pca is not None else features

    def assign(self, features) -> np.ndarray:
        z = self._project(features)
        if self.spec["method"] == "kmeans":
            return self.kmeans.predict(z).astype(np.int64)
        codes = _quartile_codes(z, self.edges, self.spec["bins"])
        return np.array([self.cell_ids.get(int(c), -1) for c in codes], dtype=np.int64)

    def describe(self) -> dict:
        info = {"scheme": self.name, **{k: v for k, v in self.spec.items()}, "cells": int(self.n_cells)}
        if self.pca is not None:
            info["pca_explained_variance"] = float(np.sum(self.pca.explained_variance_ratio_))
        return info


def _quartile_codes(z: np.ndarray, edges: np.ndarray, bins: int) -> np.ndarray:
    codes = np.zeros(len(z), dtype=np.int64)
    for j in range(z.shape[1]):
        codes = codes * bins + np.searchsorted(edges[j], z[:, j], side="right")
    return codes


def fit_phase0_conditioner(
    name: str,
    train_features,
    seed: int = 0,
    spec: dict | None = None,
    minibatch_above: int = 60000,
    n_init: int = 3,
    max_iter: int = 100,
) -> Phase0Conditioner:
    """Fit scheme ``name`` (a key of ``PHASE0_SCHEMES``, or any name with an explicit ``spec``).

    k-means: ``n_init`` seeded restarts of at most ``max_iter`` iterations (mini-batch above
    ``minibatch_above`` frames).
    """
    spec = dict(spec or PHASE0_SCHEMES.get(name) or {})
    if not spec:
        raise KeyError(f"unknown conditioning scheme {name!r}; known: {', '.join(PHASE0_SCHEMES)}")
    x = np.asarray(train_features, dtype=np.float32)
    conditioner = Phase0Conditioner(name, spec)
    if spec.get("pca"):
        n_components = min(int(spec["pca"]), x.shape[1], len(x))
        solver = "covariance_eigh" if x.shape[1] <= 1024 else "randomized"
        conditioner.pca = PCA(n_components=n_components, random_state=seed, svd_solver=solver).fit(x)
    z = conditioner._project(x)
    if spec["method"] == "kmeans":
        k = min(int(spec["clusters"]), len(np.unique(z, axis=0)))
        if len(z) > minibatch_above:
            model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=n_init, batch_size=8192, max_iter=max_iter)
        else:
            model = KMeans(n_clusters=k, random_state=seed, n_init=n_init, max_iter=max_iter)
        conditioner.kmeans = model.fit(z)
        conditioner.n_cells = k
    elif spec["method"] == "quartile":
        bins = int(spec.get("bins", 4))
        quantiles = np.arange(1, bins) / bins
        conditioner.edges = np.quantile(z, quantiles, axis=0).T  # [components, bins-1]
        codes = _quartile_codes(z, conditioner.edges, bins)
        conditioner.cell_ids = {int(c): i for i, c in enumerate(np.unique(codes))}
        conditioner.n_cells = len(conditioner.cell_ids)
    else:
        raise ValueError(f"{name}: unknown method {spec['method']!r} (kmeans or quartile)")
    return conditioner


def random_same_sizes(labels, seed: int = 0) -> np.ndarray:
    """The same labels shuffled across frames: a random assignment with identical cluster sizes."""
    return np.random.default_rng(seed).permutation(np.asarray(labels))
