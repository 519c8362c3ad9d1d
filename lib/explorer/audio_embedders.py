# %% [markdown]
# # Audio embedders: one vector per clip from any encoder
#
# Three interchangeable encoders, each with `sample_rate`, `config()` (what the cache is keyed
# by), `info()` and `embed(waveforms) -> [n, D]`:
#
# - `MfccStatsEmbedder`: the no-model baseline, mean and standard deviation over time of MFCCs
#   and their deltas. Runs anywhere, offline, in milliseconds per clip.
# - `SpeechLayerEmbedder`: one layer of a transformers speech model (WavLM, Wav2Vec2, HuBERT,
#   Whisper's encoder...) through `lib.core.speech_models`, frames pooled with `pool_frames`.
#   The model is loaded lazily, so a run served entirely from the cache never loads it.
# - `AudioMaeCheckpointEmbedder`: the encoder of an AudioMAE++ checkpoint trained by this repository,
#   keyed by the checkpoint's content hash.
#
# `embed_audio_files` runs any of them over a list of files in batches with a progress bar,
# skipping (and listing, with the reason) files that cannot be read or embedded;
# `embed_audio_files_cached` does the same through the incremental cache of
# `lib.core.vector_cache`.

# %%
import datetime as _dt
from pathlib import Path

import numpy as np

from lib.core.atomic_io import file_sha256
from lib.core.audio import load_audio_batch
from lib.core.features import mfcc_features, pool_frames
from lib.core.speech_models import load_speech_model
from lib.core.vector_cache import embed_cache_update
from lib.mae.mae_checkpoints import load_audiomae_encoder


class MfccStatsEmbedder:
    """MFCC (+ deltas) statistics: the mean over each of ``segments`` equal time segments, plus the std.

    Leading and trailing silence (``trim_db`` below the peak) is trimmed first, so the segments
    cover the sound itself. Keeping a coarse time order (``segments=3``) separates words much
    better than one global mean: on 200 FSDD clips precision@20 rises from about 0.22 to 0.30.
    ``embedding_dim = n_mfcc * (1 + delta_order) * (segments + 1)``.
    """

    kind = "mfcc"

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mfcc: int = 20,
        delta_order: int = 1,
        segments: int = 3,
        trim_db: float | None = 30.0,
        n_mels: int = 64,
        n_fft: int = 512,
        hop_length: int = 160,
    ):
        self.sample_rate = int(sample_rate)
        self.n_mfcc, self.delta_order, self.n_mels = int(n_mfcc), int(delta_order), int(n_mels)
        self.segments = int(segments)
        self.trim_db = trim_db
        self.n_fft, self.hop_length = int(n_fft), int(hop_length)
        self.name = f"mfcc{self.n_mfcc}-d{self.delta_order}-seg{self.segments}"

    @property
    def embedding_dim(self) -> int:
        return self.n_mfcc * (1 + self.delta_order) * (self.segments + 1)

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "sample_rate": self.sample_rate,
            "n_mfcc": self.n_mfcc,
            "delta_order": self.delta_order,
            "segments": self.segments,
            "trim_db": self.trim_db,
            "n_mels": self.n_mels,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "pooling": "segment means + std",
        }

    def info(self) -> dict:
        return dict(self.config(), embedding_dim=self.embedding_dim)

    def embed_one(self, y: np.ndarray) -> np.ndarray:
        import librosa

        if self.trim_db is not None:
            trimmed, _ = librosa.effects.trim(y, top_db=self.trim_db)
            y = trimmed if len(trimmed) >= 4 * self.hop_length else y
        frames = mfcc_features(
            y,
            self.sample_rate,
            n_mfcc=self.n_mfcc,
            delta_order=self.delta_order,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
        ).T
        parts = [idx for idx in np.array_split(np.arange(len(frames)), self.segments)]
        means = [pool_frames(frames[idx] if len(idx) else frames, "mean") for idx in parts]
        return np.concatenate(means + [frames.std(axis=0)])

    def embed(self, waveforms) -> np.ndarray:
        return np.stack([self.embed_one(y) for y in waveforms]).astype(np.float32)


def _model_folder_hash(path: Path) -> str:
    """Content hash of a local model folder (weights + configs), for cache keys."""
    import hashlib

    digest = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json", ".pt", ".pth"):
            digest.update(f.name.encode())
            digest.update(file_sha256(f).encode())
    return digest.hexdigest()


class SpeechLayerEmbedder:
    """One hidden layer of a transformers speech model, pooled over frames (``mean`` by default)."""

    kind = "speech_model"

    def __init__(
        self,
        name_or_path: str = "microsoft/wavlm-base-plus",
        layer=6,
        pooling: str = "mean",
        device: str = "cpu",
        local_files_only: bool = False,
        revision: str | None = None,
    ):
        self.name_or_path = str(name_or_path)
        self.layer = layer
        self.pooling = pooling
        self.device = device
        self.local_files_only = local_files_only
        self.revision = revision
        self._adapter = None
        local = Path(self.name_or_path).expanduser()
        # Local folders are keyed by their content; hub ids by name (+ revision).
        self.model_hash = _model_folder_hash(local) if local.is_dir() else None
        self.name = f"{Path(self.name_or_path).name}-L{layer}-{pooling}"

    @property
    def adapter(self):
        if self._adapter is None:
            self._adapter = load_speech_model(
                self.name_or_path, device=self.device, local_files_only=self.local_files_only
            )
            self._adapter._check_layers([self.layer])
        return self._adapter

    @property
    def sample_rate(self) -> int:
        return self.adapter.sample_rate if self._adapter is not None else self._guess_sample_rate()

    def _guess_sample_rate(self) -> int:
        import json

        local = Path(self.name_or_path).expanduser() / "preprocessor_config.json"
        if not local.exists():  # a hub id: read the cached preprocessor config without loading the model
            try:
                from huggingface_hub import try_to_load_from_cache

                found = try_to_load_from_cache(self.name_or_path, "preprocessor_config.json")
                local = Path(found) if isinstance(found, str) else local
            except Exception:  # noqa: BLE001 - fall back to loading the model
                pass
        if local.exists():
            return int(json.loads(local.read_text()).get("sampling_rate", 16000))
        return self.adapter.sample_rate

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "model": self.name_or_path,
            "model_hash": self.model_hash,
            "revision": self.revision,
            "layer": str(self.layer),
            "pooling": self.pooling,
            "sample_rate": self.sample_rate,
        }

    def info(self) -> dict:
        info = dict(self.config())
        if self._adapter is not None:
            info["model_info"] = self._adapter.info()
        return info

    def embed(self, waveforms) -> np.ndarray:
        rows = []
        for y in waveforms:
            states = self.adapter.hidden_states(y, layers=[self.layer])
            rows.append(pool_frames(next(iter(states.values())), self.pooling))
        return np.stack(rows).astype(np.float32)


class AudioMaeCheckpointEmbedder:
    """The encoder of an AudioMAE++ checkpoint (mean-pooled patch tokens), keyed by its content hash."""

    kind = "audiomae"

    def __init__(self, checkpoint_path, device: str = "cpu", batch_size: int = 32, sample_rate: int = 16000):
        self.checkpoint_path = Path(checkpoint_path).expanduser()
        if not self.checkpoint_path.is_file():
            raise FileNotFoundError(
                f"{self.checkpoint_path}: AudioMAE++ checkpoint not found. Train one with the "
                "audiomae_training notebook, or pass the path of its checkpoint file."
            )
        self.device = device
        self.batch_size = int(batch_size)
        self.checkpoint_hash = file_sha256(self.checkpoint_path)
        self.sample_rate = int(sample_rate)  # clips are loaded at this rate; the encoder resamples to its own
        self.name = f"audiomae-{self.checkpoint_path.stem}"
        self._encoder = None

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = load_audiomae_encoder(self.checkpoint_path, device=self.device)
        return self._encoder

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "checkpoint": str(self.checkpoint_path),
            "checkpoint_hash": self.checkpoint_hash,
            "sample_rate": self.sample_rate,
        }

    def info(self) -> dict:
        info = dict(self.config())
        if self._encoder is not None:
            info.update(embedding_dim=int(self._encoder.embedding_dim), model_config=self._encoder.config)
        return info

    def embed(self, waveforms) -> np.ndarray:
        return np.asarray(
            self.encoder.embed(list(waveforms), self.sample_rate, batch_size=self.batch_size), dtype=np.float32
        )


def make_audio_embedder(
    encoder: str = "mfcc",
    model_name: str = "microsoft/wavlm-base-plus",
    layer=6,
    pooling: str = "mean",
    checkpoint=None,
    device: str = "cpu",
    local_files_only: bool = False,
    sample_rate: int = 16000,
):
    """Build an embedder by name: ``"mfcc"``, ``"speech_model"`` (``model_name`` + ``layer``) or ``"audiomae"``."""
    if encoder == "mfcc":
        return MfccStatsEmbedder(sample_rate=sample_rate)
    if encoder == "speech_model":
        return SpeechLayerEmbedder(
            model_name, layer=layer, pooling=pooling, device=device, local_files_only=local_files_only
        )
    if encoder == "audiomae":
        if checkpoint is None:
            raise ValueError("encoder='audiomae' needs checkpoint=<path of an AudioMAE++ checkpoint>")
        return AudioMaeCheckpointEmbedder(checkpoint, device=device)
    raise ValueError(f"unknown encoder {encoder!r}: choose 'mfcc', 'speech_model' or 'audiomae'")


# %% [markdown]
# ## Running an embedder over files
#
# Files are loaded (at the embedder's sample rate) and embedded one batch at a time, so memory
# stays bounded on large collections. A file that cannot be decoded is skipped with the reason
# from `load_audio_batch`; a clip the encoder rejects (too short for its convolutions, say) is
# retried alone so only that clip is lost, and listed with the encoder's error message.


# %%
def embed_audio_files(paths, embedder, batch_size: int = 32, progress: bool = True):
    """Embed ``paths``; return ``(embeddings [N, D], ok_paths, failures)`` (``failures``: path + error)."""
    from tqdm.auto import tqdm

    paths = [str(p) for p in paths]
    vectors, ok_paths, failures = [], [], []
    with tqdm(total=len(paths), desc=f"embedding ({embedder.name})", unit="clip", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            waves, loaded, bad = load_audio_batch(chunk, sr=embedder.sample_rate, progress=False)
            failures.extend(bad)
            if waves:
                try:
                    batch = embedder.embed(waves)
                    vectors.extend(batch)
                    ok_paths.extend(loaded)
                except Exception:  # noqa: BLE001 - find the clip(s) the encoder rejects
                    for wave, path in zip(waves, loaded):
                        try:
                            vectors.append(embedder.embed([wave])[0])
                            ok_paths.append(path)
                        except Exception as error:  # noqa: BLE001
                            failures.append({"path": path, "error": f"encoder failed: {type(error).__name__}: {error}"})
            bar.update(len(chunk))
    dim = len(vectors[0]) if vectors else 0
    embeddings = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    if not np.all(np.isfinite(embeddings)):
        bad_rows = np.where(~np.isfinite(embeddings).all(axis=1))[0]
        for i in bad_rows:
            failures.append({"path": ok_paths[i], "error": "encoder returned NaN or infinite values"})
        keep = np.isfinite(embeddings).all(axis=1)
        embeddings = embeddings[keep]
        ok_paths = [p for p, k in zip(ok_paths, keep) if k]
    return embeddings, ok_paths, failures


def embed_audio_files_cached(
    paths,
    embedder,
    cache_dir,
    dataset_name: str,
    batch_size: int = 32,
    progress: bool = True,
    retry_failed: bool = False,
):
    """``embed_audio_files`` through the incremental cache; return ``(embeddings, files, metadata)``.

    ``metadata``: files, failed files with reasons, timestamp, encoder description, and the
    cache report (how many rows were reused, computed, dropped).
    """

    def compute(todo):
        return embed_audio_files(todo, embedder, batch_size=batch_size, progress=progress)

    embeddings, files, report = embed_cache_update(
        paths,
        compute,
        cache_dir,
        dataset_name,
        embedder.config(),
        model_info=embedder.info(),
        retry_failed=retry_failed,
    )
    metadata = {
        "files": files,
        "failed": report["failed"],
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": embedder.config(),
        "model_info": embedder.info(),
        "embedding_dim": int(embeddings.shape[1]) if embeddings.ndim == 2 else 0,
        "cache": report,
    }
    return embeddings, files, metadata
