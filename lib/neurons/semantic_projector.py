# %% [markdown]
# # Semantic projector: a 2-D / 3-D map of layer features, saved and reloaded
#
# A fixed 2-D or 3-D projection of one layer's features, fitted once on a labelled manifest
# (e.g. speakers) and reused to place live frames on the same map:
#
# - `fit_projector_from_manifest(adapter, manifest, layer)`: the same from a manifest of
#   labelled audio files (`path` and `label` columns, e.g. `lib.core.datasets.load_fsdd()`): layer
#   activity mean-pooled per clip (or per segment of long clips) becomes the fitting data.
# - `fit_semantic_projector(features, labels)`: standardise, then linear discriminant analysis
#   to 3-D (2-D with 3 labels) when there are at least 3 labels (directions that separate the
#   labels), else PCA to 3-D; `transform` gives every dimension, the live view shows the first
#   two or all three.
# - `save_projector` / `load_projector`: a `.npz` with the standardisation, the projection,
#   the label centroids and where it came from (model, layer); `projector_status` says whether
#   one is loaded, for the pipeline's diagnostics. A damaged or foreign file (not a zip,
#   truncated, undecodable text, wrong shapes) raises `ProjectorFileError` naming it;
#   `load_or_refit_projector` then refits and saves a new one elsewhere, leaving the file as it is.
# - `segment_embeddings`: mean-pooled layer activity over fixed windows (e.g. 2 s), so one
#   utterance per speaker still gives several labelled points.
# - `speaker_clustering`: k-means on embeddings (full space and projected) scored against the
#   true speakers by adjusted Rand index.

# %%
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binomtest
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import adjusted_rand_score

from lib.core.atomic_io import atomic_write_bytes
from lib.core.audio import load_audio_batch

PROJECTOR_FORMAT = 2  # 2: up to 3 dimensions; format 1 (2 dimensions) still loads
PROJECTOR_FORMATS_READ = (1, 2)


class ProjectorFileError(ValueError):
    """A projector file is unreadable or not a projector; the message names it and says what to do."""


@dataclass
class SemanticProjector:
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # [dims, k], k = 2 or 3
    offset: np.ndarray  # [k]
    method: str
    labels: np.ndarray  # label names
    centroids: np.ndarray  # [labels, 2]
    source: dict

    def transform(self, features) -> np.ndarray:
        """``[n, dims]`` -> ``[n, k]`` (k = 2 or 3 projected dimensions)."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if x.shape[1] != len(self.mean):
            raise ValueError(
                f"projector expects {len(self.mean)}-dim features (fitted on {self.source}), got {x.shape[1]}"
            )
        return ((x - self.mean) / self.scale) @ self.components - self.offset

    def nearest_label(self, points) -> np.ndarray:
        """Label of the nearest centroid for each projected point."""
        d = ((np.asarray(points)[:, None, :] - self.centroids[None]) ** 2).sum(-1)
        return self.labels[np.argmin(d, axis=1)]


def fit_semantic_projector(features, labels, method: str = "auto", source: dict | None = None) -> SemanticProjector:
    """Fit a 2-D or 3-D projection of ``features [n, dims]``; ``method`` ``"lda"``, ``"pca"`` or ``"auto"``."""
    x = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    if len(x) != len(labels):
        raise ValueError(f"{len(x)} feature rows but {len(labels)} labels")
    names = np.unique(labels)
    if method == "auto":
        method = "lda" if len(names) >= 3 else "pca"
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-8
    z = (x - mean) / scale
    if method == "lda":
        if len(names) < 3:
            raise ValueError("an LDA projection to 2-D needs at least 3 labels; use method='pca'")
        # the SVD solver copes with fewer segments than dimensions (a singular within-class scatter)
        k = min(3, len(names) - 1)
        lda = LinearDiscriminantAnalysis(n_components=k, solver="svd").fit(z, labels)
        components = lda.scalings_[:, :k]
        if components.shape[1] < 2:
            raise ValueError("the labelled features span fewer than 2 discriminant directions; use method='pca'")
    elif method == "pca":
        components = PCA(n_components=min(3, z.shape[1], len(z)), random_state=0).fit(z).components_.T
    else:
        raise ValueError(f"method must be 'auto', 'lda' or 'pca', not {method!r}")
    projected = z @ components
    offset = projected.mean(axis=0)
    projected -= offset
    centroids = np.stack([projected[labels == n].mean(axis=0) for n in names])
    return SemanticProjector(mean, scale, components, offset, method, names, centroids, dict(source or {}))


# %% [markdown]
# ## Saving and loading a projector
#
# A projector file is validated on load; a damaged file is named and, where the notebook can,
# refitted.


# %%
def save_projector(projector: SemanticProjector, path) -> Path:
    """Write the projector to ``path`` (.npz) atomically."""
    import io
    import json

    buffer = io.BytesIO()
    np.savez(
        buffer,
        format=PROJECTOR_FORMAT,
        mean=projector.mean,
        scale=projector.scale,
        components=projector.components,
        offset=projector.offset,
        method=projector.method,
        labels=projector.labels.astype(str),
        centroids=projector.centroids,
        source=json.dumps(projector.source, default=str),
    )
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    return atomic_write_bytes(path, buffer.getvalue())


def load_projector(path) -> SemanticProjector:
    """Read a projector written by ``save_projector``; a damaged or foreign file raises ``ProjectorFileError``."""
    import json

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: projector file not found; fit one with fit_semantic_projector and save it")
    try:
        with np.load(path, allow_pickle=False) as data:
            version = int(data["format"])
            if version not in PROJECTOR_FORMATS_READ:
                raise ValueError(f"format {version}, this version reads {PROJECTOR_FORMATS_READ}")
            projector = SemanticProjector(
                data["mean"],
                data["scale"],
                data["components"],
                data["offset"],
                str(data["method"]),
                data["labels"],
                data["centroids"],
                json.loads(str(data["source"])),
            )
    except (KeyError, ValueError, OSError, EOFError, UnicodeDecodeError, zipfile.BadZipFile, TypeError) as error:
        raise ProjectorFileError(
            f"{path}: not a valid semantic projector file ({type(error).__name__}: {error}); "
            "refit it (fit_semantic_projector + save_projector) or pass another file"
        ) from None
    except Exception as error:  # noqa: BLE001 -- numpy's header parser raises tokenize/syntax errors too
        raise ProjectorFileError(
            f"{path}: not a valid semantic projector file ({type(error).__name__}: {error}); "
            "refit it (fit_semantic_projector + save_projector) or pass another file"
        ) from None
    dims, k = len(projector.mean), projector.components.shape[-1] if projector.components.ndim == 2 else 0
    problems = []
    if projector.components.ndim != 2 or projector.components.shape[0] != dims or k not in (2, 3):
        problems.append(f"components have shape {projector.components.shape}, expected ({dims}, 2 or 3)")
    if projector.scale.shape != (dims,):
        problems.append(f"scale has shape {projector.scale.shape}, expected ({dims},)")
    if projector.offset.shape != (k,) or projector.centroids.shape != (len(projector.labels), k):
        problems.append(f"offset {projector.offset.shape} / centroids {projector.centroids.shape} do not match k={k}")
    if problems:
        raise ProjectorFileError(f"{path}: projector file is inconsistent: {'; '.join(problems)}; refit it")
    return projector


def load_or_refit_projector(path, refit, save_to=None) -> tuple:
    """``(projector, note)``: load ``path``; if it is damaged, say so and use ``refit()`` instead.

    ``refit``: a function returning a fresh ``SemanticProjector``; it is saved to ``save_to``
    (never over the damaged file, which stays for the user to inspect).
    """
    try:
        return load_projector(path), f"loaded from {path}"
    except ProjectorFileError as error:
        print(f"{error}\nRefitting the projector on this run's data instead.")
        projector = refit()
        note = f"{path} is damaged ({str(error).split(': ', 1)[1][:160]}); refitted on this run's data"
        if save_to is not None:
            saved = save_projector(projector, save_to)
            note += f" and saved to {saved}"
        return projector, note


def projector_status(projector: SemanticProjector | None, path=None) -> dict:
    """Diagnostics: whether a projector is loaded, from where, for which model/layer."""
    if projector is None:
        return {"loaded": False, "path": str(path) if path else None}
    return {
        "loaded": True,
        "path": str(path) if path else None,
        "method": projector.method,
        "labels": int(len(projector.labels)),
        "dims": int(len(projector.mean)),
        **projector.source,
    }


# %% [markdown]
# ## Speaker structure and fitting from a manifest


# %%
def segment_embeddings(activity_per_utterance, labels, segment_frames: int = 100, min_frames: int = 25) -> tuple:
    """Mean-pool each utterance's ``[T, D]`` activity over windows of ``segment_frames``.

    Returns ``(embeddings [n, D], segment labels [n], utterance index [n], segment index [n])``;
    a trailing window shorter than ``min_frames`` is dropped.
    """
    rows, out_labels, utt, seg = [], [], [], []
    for i, (activity, label) in enumerate(zip(activity_per_utterance, labels)):
        for k, start in enumerate(range(0, len(activity), segment_frames)):
            window = activity[start : start + segment_frames]
            if len(window) < min_frames:
                continue
            rows.append(window.mean(axis=0))
            out_labels.append(label)
            utt.append(i)
            seg.append(k)
    if not rows:
        raise ValueError(f"no segment of at least {min_frames} frames; use shorter segments or longer clips")
    return np.stack(rows), np.asarray(out_labels).astype(str), np.asarray(utt), np.asarray(seg)


def speaker_clustering(
    embeddings,
    speakers,
    projector: SemanticProjector | None = None,
    seed: int = 0,
    groups=None,
    permutations: int = 10000,
) -> dict:
    """k-means with k = number of speakers; adjusted Rand index vs the true speakers; with a projector fitted on
    these speakers, its nearest-centroid accuracy and a one-sided p-value against a guess.

    ``groups`` (e.g. the utterance of every segment; one speaker each): segments of one group are not
    independent, so the p-value comes from orderings of the speaker labels over the groups (every segment of
    a group keeps the group's label): all of them for up to 9 groups, else ``permutations`` random ones.
    Without groups: a binomial test over segments.
    """
    speakers = np.asarray(speakers).astype(str)
    k = len(np.unique(speakers))
    x = np.asarray(embeddings, dtype=np.float64)
    z = (x - x.mean(0)) / (x.std(0) + 1e-8)
    result = {"segments": int(len(x)), "speakers": int(k)}
    if k < 2 or len(x) <= k:
        result["note"] = "need at least 2 speakers and more segments than speakers"
        return result
    full = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(z)
    result["ari_full_space"] = float(adjusted_rand_score(speakers, full))
    if projector is not None:
        projected = projector.transform(x)
        labels2d = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(projected)
        result["ari_projected_2d"] = float(adjusted_rand_score(speakers, labels2d))
        if set(np.unique(speakers)) <= set(projector.labels):  # the projector was fitted on these speakers
            predicted = np.asarray(projector.nearest_label(projected)).astype(str)
            hits = int((predicted == speakers).sum())
            chance = 1.0 / len(projector.labels)  # a guess among the fitted speakers
            result["nearest_centroid_accuracy"] = hits / len(x)
            result["nearest_centroid_chance"] = chance
            if groups is None:  # one-sided binomial test over independent segments: is the accuracy above a guess?
                result["nearest_centroid_p"] = float(binomtest(hits, len(x), chance, alternative="greater").pvalue)
                result["nearest_centroid_test"] = "binomial over segments"
            else:
                p, how = _group_permutation_p(predicted, speakers, groups, permutations, seed)
                result["nearest_centroid_p"], result["nearest_centroid_test"] = p, how
    return result


def _group_permutation_p(predicted, speakers, groups, permutations: int, seed: int) -> tuple:
    """One-sided p of ``predicted == speakers`` hits against the speaker labels shuffled over ``groups``, and how it
    was computed: exactly, over every ordering of the groups' labels, for up to 9 groups; else from ``permutations``
    random orderings (the observed one counted in)."""
    from itertools import permutations as orderings

    groups = np.asarray(groups)
    if len(groups) != len(speakers):
        raise ValueError(f"groups has {len(groups)} entries for {len(speakers)} segments")
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    group_speaker = speakers[first]
    if not (group_speaker[inverse] == speakers).all():
        raise ValueError("a group (utterance) has segments of several speakers; give one speaker per group")
    names, label_of = np.unique(group_speaker, return_inverse=True)
    n_groups = len(group_speaker)
    # hits[g, s]: segments of group g predicted as speaker s; an ordering's hits sum hits[g, its label of g]
    hits = np.zeros((n_groups, len(names)))
    known = np.isin(predicted, names)
    np.add.at(hits, (inverse[known], np.searchsorted(names, predicted[known])), 1)
    rows = np.arange(n_groups)
    observed = hits[rows, label_of].sum()
    if n_groups <= 9:
        shuffled = label_of[np.array(list(orderings(range(n_groups))))]
        p = float((hits[rows, shuffled].sum(axis=1) >= observed - 1e-9).mean())
        return p, f"exact, over all {len(shuffled):,} orderings of the speaker labels of {n_groups} utterances"
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(label_of) for _ in range(permutations)])
    as_high = int((hits[rows, shuffled].sum(axis=1) >= observed - 1e-9).sum())
    return (1 + as_high) / (1 + permutations), (
        f"{permutations:,} random orderings of the speaker labels of {n_groups} utterances"
    )


def fit_projector_from_manifest(
    adapter,
    manifest,
    layer: int,
    label_column: str = "label",
    method: str = "auto",
    segment_seconds: float | None = None,
    max_seconds: float | None = 30.0,
    progress: bool = True,
) -> tuple:
    """Fit a projector on a labelled manifest (``path`` + ``label_column``); return ``(projector, info)``.

    Each clip's ``layer`` activity is mean-pooled, per clip or per ``segment_seconds`` window.
    Unreadable clips are skipped and counted in ``info["skipped"]``.
    """
    from tqdm.auto import tqdm

    if "path" not in manifest or label_column not in manifest:
        raise ValueError(f"the manifest needs 'path' and {label_column!r} columns; it has {list(manifest.columns)}")
    waves, paths, failures = load_audio_batch(manifest["path"], sr=adapter.sample_rate, progress=progress)
    labels_by_path = dict(zip(manifest["path"].astype(str), manifest[label_column].astype(str)))
    activity, labels = [], []
    for wave, path in tqdm(list(zip(waves, paths)), desc=f"layer {layer} activity", disable=not progress, leave=False):
        if max_seconds is not None:
            wave = wave[: int(max_seconds * adapter.sample_rate)]
        activity.append(adapter.hidden_states(wave, layers=[layer])[layer])
        labels.append(labels_by_path[str(path)])
    if not activity:
        raise ValueError("no clip of the manifest could be loaded; see the skipped files above")
    if segment_seconds:
        frames = max(1, int(round(segment_seconds * adapter.frame_rate)))
        embeddings, seg_labels, _, _ = segment_embeddings(
            activity, labels, segment_frames=frames, min_frames=max(1, frames // 4)
        )
    else:
        embeddings, seg_labels = np.stack([a.mean(axis=0) for a in activity]), np.asarray(labels).astype(str)
    source = {"model": adapter.name, "layer": int(layer), "labels": label_column, "clips": len(activity)}
    projector = fit_semantic_projector(embeddings, seg_labels, method=method, source=source)
    return projector, {
        "clips": len(activity),
        "points": int(len(embeddings)),
        "skipped": len(failures),
        "labels": int(len(projector.labels)),
        "method": projector.method,
    }
