# %% [markdown]
# # Live analytics: log-mel strip, PCA traces, online speaker clustering
#
# What the live view computes from each update's new frames, cheaply enough to run inside
# the update (the benchmark's `analytics` stage):
#
# - `log_mel_columns`: one log-mel column per model frame, from a 40 ms window centred on the
#   frame (the seed's 40 ms / 20 ms grid), so the spectrogram strip lines up with the heatmaps;
# - `OnlinePCA`: a 3-D PCA basis per layer, given (from the offline analysis) or fitted on the
#   first few seconds of the stream, then fixed so traces stay comparable;
# - `OnlineSpeakerClustering`: per-segment speaker embeddings (the model's mean-pooled layer,
#   standardised with reference statistics, or a real speaker encoder's) assigned online to the
#   nearest cluster by cosine similarity, or to a new cluster below a threshold;
# - `projector_grid`: a lattice over the semantic projector's map, each point coloured by its
#   nearest label centroid (the live view's grid toggle).

# %%
import numpy as np

_MEL_BANKS = {}


def _mel_bank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    key = (sample_rate, n_fft, n_mels)
    if key not in _MEL_BANKS:
        import librosa

        _MEL_BANKS[key] = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).astype(np.float32)
    return _MEL_BANKS[key]


def log_mel_columns(
    audio, audio_start: int, centres, sample_rate: int = 16000, window_s: float = 0.040, n_mels: int = 64
) -> np.ndarray:
    """``[len(centres), n_mels]`` log-mel (dB) of 40 ms Hann windows centred on global sample ``centres``.

    ``audio`` holds the stream's samples from global index ``audio_start``; parts of a window
    outside it count as silence.
    """
    centres = np.asarray(centres, dtype=np.int64)
    window = int(round(window_s * sample_rate))
    if len(centres) == 0:
        return np.zeros((0, n_mels), np.float32)
    audio = np.asarray(audio, dtype=np.float32)
    starts = centres - window // 2 - int(audio_start)
    idx = starts[:, None] + np.arange(window)[None, :]
    valid = (idx >= 0) & (idx < len(audio))
    frames = np.where(valid, audio[np.clip(idx, 0, max(0, len(audio) - 1))] if len(audio) else 0.0, 0.0)
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(window)[None, :], n=window)) ** 2
    mel = spectrum @ _mel_bank(sample_rate, window, n_mels).T
    return (10.0 * np.log10(mel + 1e-10)).astype(np.float32)


class OnlinePCA:
    """3-D PCA traces of one layer: a fixed basis, given or fitted once on the first ``fit_frames`` frames."""

    def __init__(self, n_components: int = 3, fit_frames: int = 150, basis=None):
        self.n_components = int(n_components)
        self.fit_frames = int(fit_frames)
        self._given = basis
        self.reset()

    def reset(self) -> None:
        self._pending = []
        self.mean = self.std = self.components = None
        if self._given is not None:
            mean, std, components = self._given
            self.mean, self.std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
            self.components = np.asarray(components, np.float64)[: self.n_components]
        self.source = "given" if self._given is not None else "fitted on the stream"

    @property
    def ready(self) -> bool:
        return self.components is not None

    def update(self, x) -> np.ndarray:
        """Project new frames ``[n, D]``; ``[0, k]`` until the basis is ready."""
        x = np.asarray(x, dtype=np.float64)
        if not self.ready:
            self._pending.append(x)
            if sum(len(p) for p in self._pending) >= self.fit_frames:
                data = np.concatenate(self._pending)
                self.mean, self.std = data.mean(0), data.std(0) + 1e-8
                _, _, vt = np.linalg.svd((data - self.mean) / self.std, full_matrices=False)
                self.components = vt[: self.n_components]
                self._pending = []
            return np.zeros((0, self.n_components))
        return ((x - self.mean) / self.std) @ self.components.T


def projector_grid(projector, points_per_axis: int = 21, dims: int = 2, margin: float = 0.25) -> dict:
    """A lattice over the projector's map (spanning its label centroids) with each point's nearest label."""
    centroids = np.asarray(projector.centroids, dtype=np.float64)[:, :dims]
    lo, hi = centroids.min(0), centroids.max(0)
    span = np.maximum(hi - lo, 1e-6)
    axes = [np.linspace(a - margin * s, b + margin * s, points_per_axis) for a, b, s in zip(lo, hi, span)]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, dims)
    d = ((mesh[:, None, :] - centroids[None]) ** 2).sum(-1)
    nearest = np.argmin(d, axis=1)
    return {"points": mesh, "label_index": nearest, "labels": np.asarray(projector.labels)[nearest]}


# %% [markdown]
# ## Online speaker clustering
#
# Frames accumulate into segments of `segment_s` seconds; each segment's embedding (mean of
# the layer's frames, or a speaker encoder's vector) is standardised (reference statistics,
# e.g. the offline analysis' per-neuron mean and spread, else the running statistics of the
# segments so far), L2-normalised and compared by cosine similarity with every cluster's
# centroid: the nearest cluster takes it (its centroid becomes the running mean) unless the
# similarity is below `threshold`, which opens a new cluster (up to `max_clusters`).

# %%


class OnlineSpeakerClustering:
    """Leader-style online clustering of per-segment speaker embeddings."""

    def __init__(
        self, segment_s: float = 1.5, threshold: float = 0.35, max_clusters: int = 8, frame_rate: float = 50.0, ref=None
    ):
        if not 0 < segment_s:
            raise ValueError(f"segment_s must be positive, not {segment_s}")
        self.segment_frames = max(1, int(round(segment_s * frame_rate)))
        self.frame_rate = float(frame_rate)
        self.threshold = float(threshold)
        self.max_clusters = int(max_clusters)
        self.ref = None if ref is None else (np.asarray(ref[0], np.float64), np.asarray(ref[1], np.float64) + 1e-8)
        self.reset()

    def reset(self) -> None:
        self._frames, self._times = [], []
        self.centroids, self.counts = [], []
        self.segments = []  # dicts: start, end, cluster, similarity
        self._seen = []  # raw segment embeddings (running statistics when no reference)

    def _standardise(self, e: np.ndarray) -> np.ndarray:
        if self.ref is not None:
            z = (e - self.ref[0]) / self.ref[1]
        elif len(self._seen) < 5:  # too few segments for statistics: plain cosine of the raw embeddings
            z = e
        else:
            seen = np.stack(self._seen)
            z = (e - seen.mean(0)) / (seen.std(0) + 1e-8)
        n = np.linalg.norm(z)
        return z / n if n > 0 else z

    def add_embedding(self, embedding, start: float, end: float) -> dict:
        """Assign one segment embedding; returns the segment record.

        Centroids are running means of the raw embeddings; the embedding and every centroid are
        standardised with the same (current) statistics before the cosine comparison.
        """
        e = np.asarray(embedding, dtype=np.float64).reshape(-1)
        self._seen.append(e)
        if len(self._seen) > 200:
            self._seen = self._seen[-200:]
        z = self._standardise(e)
        if self.centroids:
            sims = np.array([float(z @ self._standardise(c)) for c in self.centroids])
            best = int(np.argmax(sims))
            similarity = float(sims[best])
        else:
            best, similarity = -1, -1.0
        if best < 0 or (similarity < self.threshold and len(self.centroids) < self.max_clusters):
            self.centroids.append(e.copy())
            self.counts.append(1)
            cluster = len(self.centroids) - 1
        else:
            cluster = best
            self.counts[best] += 1
            self.centroids[best] += (e - self.centroids[best]) / self.counts[best]
        record = {"start": float(start), "end": float(end), "cluster": int(cluster), "similarity": similarity}
        self.segments.append(record)
        return record

    def add_frames(self, states, times) -> list:
        """Accumulate ``[n, D]`` frames with their times; return the segments completed by them."""
        done = []
        states, times = np.asarray(states), np.asarray(times, dtype=float)
        for i in range(len(states)):
            self._frames.append(states[i])
            self._times.append(times[i])
            if len(self._frames) >= self.segment_frames:
                emb = np.mean(self._frames, axis=0)
                done.append(self.add_embedding(emb, self._times[0], self._times[-1] + 1.0 / self.frame_rate))
                self._frames, self._times = [], []
        return done

    @property
    def n_clusters(self) -> int:
        return len(self.centroids)


def clustering_agreement(segments, true_labels) -> dict:
    """Adjusted Rand index and purity of online clusters against true speakers (one label per segment)."""
    from sklearn.metrics import adjusted_rand_score

    predicted = [s["cluster"] for s in segments]
    true_labels = list(true_labels)
    if len(predicted) != len(true_labels) or not predicted:
        raise ValueError(f"{len(predicted)} segments but {len(true_labels)} labels")
    table = {}
    for p, t in zip(predicted, true_labels):
        table.setdefault(p, {}).setdefault(t, 0)
        table[p][t] += 1
    purity = sum(max(v.values()) for v in table.values()) / len(predicted)
    return {
        "segments": len(predicted),
        "clusters": len(table),
        "speakers": len(set(true_labels)),
        "ari": float(adjusted_rand_score(true_labels, predicted)),
        "purity": float(purity),
    }
