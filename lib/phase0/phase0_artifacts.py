# %% [markdown]
# # Phase 0 artefacts: the fitted frame table, PCA, k-means, quartile bins and normalisation
#
# What a follow-up experiment needs from a Phase 0 run, beside the report:
#
# - `phase0_frames.parquet`: the frame table (utterance, speaker, split, t, row, relative
#   position, energy) with each scheme's cell (`cell_<scheme>`) and the quantised dynamics code;
# - `phase0_normalisation.npz`: train-speaker means and standard deviations of frames and deltas;
# - `phase0_pca.npz`: per PCA scheme, components, mean and explained variance ratio;
# - `phase0_kmeans.npz`: per k-means scheme, the cluster centres; the dynamics codebook;
# - `phase0_quartile_bins.npz`: per quartile scheme, the bin edges per component and the cell
#   code of each cell id;
# - `phase0_artifacts.json`: the manifest: config hash, encoder (fingerprint), context window,
#   schemes, train speakers, and the SHA-256 of every file above.
#
# Plain `npz` arrays (no pickle: loading never runs code) and one JSON manifest. Every array
# file also stores the config hash. `load_phase0_artifacts` checks each file against the
# manifest's hash and rebuilds conditioners that assign cells exactly as the fitted ones
# (PCA: `(x - mean) @ components.T`; k-means: nearest centre), so Exp 2 can key its memory on
# Phase 0's cells without refitting anything.

# %%
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lib.core.atomic_io import atomic_write_bytes, atomic_write_json, file_sha256
from lib.phase0.phase0_conditioning import Phase0Conditioner, Phase0Normaliser
from lib.phase0.phase0_latents import _write_parquet

PHASE0_ARTIFACTS_VERSION = 1


class Phase0ArtifactError(RuntimeError):
    """Phase 0 artefacts are missing, altered, unreadable or from another configuration."""


def phase0_config_hash(config: dict, extra: dict | None = None) -> str:
    """SHA-256 (16 hex digits) of the gate config plus run settings (encoder, window, seed...)."""
    text = json.dumps({"config": config, **(extra or {})}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Phase0FittedPCA:
    """A fitted PCA's projection, rebuilt from its arrays (same result as scikit-learn's ``transform``)."""

    def __init__(self, components, mean, explained_variance_ratio):
        self.components_ = np.asarray(components, dtype=np.float64)
        self.mean_ = np.asarray(mean, dtype=np.float64)
        self.explained_variance_ratio_ = np.asarray(explained_variance_ratio, dtype=np.float64)

    def transform(self, x):
        return (np.asarray(x, dtype=np.float64) - self.mean_) @ self.components_.T


class Phase0FittedKMeans:
    """Nearest-centre assignment, rebuilt from k-means centres."""

    def __init__(self, centers):
        self.cluster_centers_ = np.asarray(centers, dtype=np.float64)

    def predict(self, x):
        x = np.asarray(x, dtype=np.float64)
        d = (x**2).sum(1)[:, None] - 2 * x @ self.cluster_centers_.T + (self.cluster_centers_**2).sum(1)[None, :]
        return d.argmin(axis=1)


def _phase0_npz(path: Path, arrays: dict, config_hash: str) -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, config_hash=np.array(config_hash), **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


# %% [markdown]
# ## Writing


# %%
def write_phase0_artifacts(result: dict, frames, output_dir, meta: dict, config_hash: str) -> dict:
    """Write the artefact files and their manifest; return ``{name: path}``."""
    out = Path(output_dir)
    table = frames.table.copy()
    table.attrs = {}
    for scheme, labels in result["labels"].items():
        table[f"cell_{scheme}"] = labels
    table["dynamics_code"] = result["codes"]
    table["context_rows_first"] = frames.context_rows[:, 0]
    paths = {"frames": out / "phase0_frames.parquet"}
    _write_parquet(paths["frames"], table)
    norm = result["normaliser"]
    paths["normalisation"] = _phase0_npz(
        out / "phase0_normalisation.npz",
        {
            "latent_mean": norm.latent_mean,
            "latent_std": norm.latent_std,
            "delta_mean": norm.delta_mean,
            "delta_std": norm.delta_std,
        },
        config_hash,
    )
    pca, kmeans, quartile = {}, {}, {}
    for scheme, cond in result["conditioners"].items():
        if cond.pca is not None:
            pca[f"{scheme}.components"] = cond.pca.components_
            pca[f"{scheme}.mean"] = cond.pca.mean_
            pca[f"{scheme}.explained_variance_ratio"] = cond.pca.explained_variance_ratio_
        if cond.kmeans is not None:
            kmeans[f"{scheme}.centers"] = cond.kmeans.cluster_centers_
        if cond.edges is not None:
            quartile[f"{scheme}.edges"] = cond.edges
            quartile[f"{scheme}.cell_codes"] = np.array(sorted(cond.cell_ids, key=cond.cell_ids.get), dtype=np.int64)
    if result.get("code_centers") is not None:
        kmeans["dynamics_codebook.centers"] = result["code_centers"]
    paths["pca"] = _phase0_npz(out / "phase0_pca.npz", pca, config_hash)
    paths["kmeans"] = _phase0_npz(out / "phase0_kmeans.npz", kmeans, config_hash)
    paths["quartile_bins"] = _phase0_npz(out / "phase0_quartile_bins.npz", quartile, config_hash)
    table_train = table[table["split"] == "train"]
    manifest = {
        "format": "audiolens-phase0-artifacts",
        "version": PHASE0_ARTIFACTS_VERSION,
        "config_hash": config_hash,
        "encoder": meta.get("encoder_info", {}),
        "context_frames": int(frames.window),
        "edge": frames.edge,
        "schemes": {name: dict(cond.spec, cells=int(cond.n_cells)) for name, cond in result["conditioners"].items()},
        "train_speakers": sorted(table_train["speaker"].astype(str).unique().tolist()),
        "eval_speakers": sorted(table[table["split"] != "train"]["speaker"].astype(str).unique().tolist()),
        "frames": int(len(table)),
        "seed": meta.get("seed"),
        "store": meta.get("store"),
        "store_key": meta.get("store_key"),
        "files": {name: {"path": Path(p).name, "sha256": file_sha256(p)} for name, p in paths.items()},
    }
    paths["manifest"] = atomic_write_json(out / "phase0_artifacts.json", manifest)
    return {k: str(v) for k, v in paths.items()}


# %% [markdown]
# ## Reading, verified


# %%
@dataclass
class Phase0Artifacts:
    """Loaded Phase 0 artefacts: normaliser, conditioners per scheme, and the manifest."""

    folder: Path
    manifest: dict
    normaliser: Phase0Normaliser
    conditioners: dict = field(default_factory=dict)

    @property
    def context_frames(self) -> int:
        return int(self.manifest["context_frames"])

    def frames(self):
        """The frame table (``phase0_frames.parquet``)."""
        import pandas as pd

        return pd.read_parquet(self.folder / self.manifest["files"]["frames"]["path"])


def _phase0_load_npz(folder: Path, manifest: dict, name: str) -> dict:
    entry = manifest["files"].get(name)
    if entry is None:
        raise Phase0ArtifactError(f"{folder}/phase0_artifacts.json lists no {name!r} file")
    path = folder / entry["path"]
    if not path.exists():
        raise Phase0ArtifactError(f"{path}: missing (listed in phase0_artifacts.json); run Phase 0 again")
    if file_sha256(path) != entry["sha256"]:
        raise Phase0ArtifactError(
            f"{path}: content differs from its hash in phase0_artifacts.json (altered or corrupt)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as error:  # noqa: BLE001 - BadZipFile, EOFError, ValueError...: name the file
        raise Phase0ArtifactError(f"{path}: unreadable ({type(error).__name__}: {error})") from None
    if str(arrays.pop("config_hash", "")) != manifest["config_hash"]:
        raise Phase0ArtifactError(
            f"{path}: written for config {arrays.get('config_hash')}, not {manifest['config_hash']}"
        )
    return arrays


def load_phase0_artifacts(folder) -> Phase0Artifacts:
    """Read and verify the artefacts of a Phase 0 run folder (``phase0_artifacts.json`` and its files)."""
    folder = Path(folder).expanduser()
    path = folder / "phase0_artifacts.json"
    if not path.exists():
        raise Phase0ArtifactError(
            f"{path}: not found. Point phase0_dir at the output folder of a phase0_latent_structure run "
            "(it writes phase0_artifacts.json), or leave it None to fit Phase 0 here."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise Phase0ArtifactError(f"{path}: not a readable Phase 0 artefact manifest ({error})") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != "audiolens-phase0-artifacts"
        or manifest.get("version") != PHASE0_ARTIFACTS_VERSION
        or not isinstance(manifest.get("files"), dict)
        or not isinstance(manifest.get("schemes"), dict)
    ):
        raise Phase0ArtifactError(
            f"{path}: not a Phase 0 artefact manifest of version {PHASE0_ARTIFACTS_VERSION} "
            "(run phase0_latent_structure again to rewrite it)"
        )
    norm = _phase0_load_npz(folder, manifest, "normalisation")
    pca = _phase0_load_npz(folder, manifest, "pca")
    kmeans = _phase0_load_npz(folder, manifest, "kmeans")
    quartile = _phase0_load_npz(folder, manifest, "quartile_bins")
    normaliser = Phase0Normaliser(norm["latent_mean"], norm["latent_std"], norm["delta_mean"], norm["delta_std"])
    conditioners = {}
    for name, spec in manifest["schemes"].items():
        spec = {k: v for k, v in spec.items() if k != "cells"}
        cond = Phase0Conditioner(name, spec, n_cells=int(manifest["schemes"][name]["cells"]))
        if f"{name}.components" in pca:
            cond.pca = Phase0FittedPCA(
                pca[f"{name}.components"], pca[f"{name}.mean"], pca[f"{name}.explained_variance_ratio"]
            )
        if spec["method"] == "kmeans":
            cond.kmeans = Phase0FittedKMeans(kmeans[f"{name}.centers"])
        else:
            cond.edges = quartile[f"{name}.edges"]
            cond.cell_ids = {int(c): i for i, c in enumerate(quartile[f"{name}.cell_codes"])}
        conditioners[name] = cond
    return Phase0Artifacts(folder, manifest, normaliser, conditioners)


# %% [markdown]
# ## Cells of new windows


# %%
class Phase0CellAssigner:
    """``assigner(latents [T, D], steps [n]) -> cells [n]``: a Phase 0 scheme's cell of each step's context.

    The context is the ``context_frames`` frames ending at ``t`` (the first frame repeated
    before the utterance start), standardised with Phase 0's train statistics.
    """

    def __init__(self, artifacts: Phase0Artifacts, scheme: str):
        if scheme not in artifacts.conditioners:
            raise Phase0ArtifactError(
                f"scheme {scheme!r} is not in the artefacts (have {list(artifacts.conditioners)})"
            )
        self.conditioner = artifacts.conditioners[scheme]
        self.window = artifacts.context_frames
        self.mean, self.std = artifacts.normaliser.latent_mean, artifacts.normaliser.latent_std
        self.n_cells = int(self.conditioner.n_cells)

    def __call__(self, latents, steps) -> np.ndarray:
        steps = np.asarray(steps, dtype=np.int64)
        rows = np.clip(steps[:, None] + np.arange(-(self.window - 1), 1)[None, :], 0, None)
        block = (np.asarray(latents, dtype=np.float32)[rows] - self.mean) / self.std
        kind = self.conditioner.spec["context"]
        features = block.mean(axis=1) if kind == "mean" else block.reshape(len(block), -1)
        return self.conditioner.assign(features)
