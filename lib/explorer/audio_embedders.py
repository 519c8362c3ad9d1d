# %% [markdown]
# # Audio embedders: one vector per clip from any encoder
#
# Encoders are looked up by name in `EXPLORER_ENCODERS` (`make_audio_embedder(name, ...)`).
# This module registers the two that need no training:
#
# - `mfcc` (`MfccStatsEmbedder`): the no-model baseline, MFCCs and their deltas averaged over
#   three time segments, plus their standard deviation. Offline, milliseconds per clip.
# - `speech_model` (`SpeechLayerEmbedder`): one layer of a transformers speech model through
#   `lib.core.speech_models`, frames pooled over the clip: the bundled Whisper tiny.en
#   (`bundled/whisper-tiny.en`, a real pretrained model on every machine, no download; in clip
#   mode 2,000 clips cost about a minute on a CPU), or WavLM, Wav2Vec2, HuBERT, any Whisper.
#
# `audiomae` (an AudioMAE++ checkpoint from `audiomae_training`), `external` (an encoder
# state dict saved by another program) and `transform_stats` (IQ recordings) are registered by
# the AudioMAE/RF variant of this notebook, which carries their code.
#
# Every embedder has the same interface: `load()` loads the model **once, before any clip is
# touched**, and raises the model's own error (a bad checkpoint is one clear error, never
# thousands of "audio failures"); `prepare(signal, rate)` is the per-clip work that needs no
# model (run in worker processes); `embed_prepared(items)` runs the model on a batch under
# `torch.inference_mode`; `config()` is what the embedding cache is keyed by; `describe()`
# says in words what the encoder computes. An encoder holding a model also has `preparer()`:
# the light object the worker processes receive instead of the encoder (and its weights).

# %%
import datetime as _dt
import hashlib
import time
from pathlib import Path

import numpy as np

from lib.core.atomic_io import file_sha256
from lib.core.audio import report_audio_failures
from lib.core.features import mfcc_features, pool_frames
from lib.core.speech_models import load_speech_model
from lib.core.vector_cache import embed_cache_update
from lib.explorer.explorer_batches import ExplorerAudioReader, ExplorerWaveformPreparer, explorer_map_chunks

EXPLORER_ENCODERS = {}
# encoders whose code lives in a notebook variant (the default notebook does not carry it)
EXPLORER_VARIANT_ENCODERS = {
    "audiomae": "fiftyone_explorer_mae",
    "external": "fiftyone_explorer_mae",
    "transform_stats": "fiftyone_explorer_mae",
}


class ExplorerEncoderError(RuntimeError):
    """The encoder cannot be used (model, checkpoint, configuration); raised before any clip is embedded."""


def register_explorer_encoder(name: str):
    """Decorator: ``@register_explorer_encoder("name")`` adds ``factory(**options) -> embedder``."""

    def decorate(factory):
        EXPLORER_ENCODERS[name] = factory
        return factory

    return decorate


def make_audio_embedder(encoder: str = "mfcc", **options):
    """Build a registered embedder by name; options it does not take are ignored."""
    import inspect

    if encoder not in EXPLORER_ENCODERS:
        if encoder in EXPLORER_VARIANT_ENCODERS:
            variant = EXPLORER_VARIANT_ENCODERS[encoder]
            raise ExplorerEncoderError(
                f"encoder {encoder!r} needs the AudioMAE/RF code, which this notebook does not carry: open "
                f"notebooks/{variant}.ipynb (same parameters), or run `audiolens run fiftyone_explorer -p encoder "
                f"{encoder}` (it picks that notebook)"
            )
        raise ExplorerEncoderError(f"unknown encoder {encoder!r}; available: {', '.join(sorted(EXPLORER_ENCODERS))}")
    factory = EXPLORER_ENCODERS[encoder]
    accepted = inspect.signature(factory).parameters
    return factory(**{k: v for k, v in options.items() if k in accepted})


# %% [markdown]
# ## MFCC statistics (no model)


# %%
@register_explorer_encoder("mfcc")
class MfccStatsEmbedder:
    """MFCC (+ deltas) statistics: the mean over each of ``segments`` equal time segments, plus the std.

    Leading and trailing silence (``trim_db`` below the peak) is trimmed first, so the segments
    cover the sound itself. Keeping a coarse time order (``segments=3``) separates words much
    better than one global mean: on 200 FSDD clips precision@20 rises from about 0.22 to 0.30.
    ``embedding_dim = n_mfcc * (1 + delta_order) * (segments + 1)``.
    """

    kind = "mfcc"
    signal = "audio"
    weights = "none"

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
        return dict(self.config(), embedding_dim=self.embedding_dim, weights=self.weights)

    def describe(self) -> str:
        trim = f"silence below {self.trim_db:g} dB of the peak trimmed, " if self.trim_db is not None else ""
        return (
            f"**MFCC statistics** (no model): {self.n_mfcc} MFCCs from a {self.n_mels}-band mel spectrogram "
            f"({self.n_fft}-sample window, {1000 * self.hop_length / self.sample_rate:g} ms hop) at "
            f"{self.sample_rate} Hz, with {'deltas' if self.delta_order == 1 else f'{self.delta_order} delta orders'}; "
            f"{trim}averaged over {self.segments} equal time segments plus the standard deviation over the "
            f"clip: {self.embedding_dim} numbers per clip."
        )

    def load(self):
        return self

    def prepare(self, y: np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """The embedding of one waveform at ``self.sample_rate`` (all the work happens here)."""
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
        return np.concatenate(means + [frames.std(axis=0)]).astype(np.float32)

    def embed_prepared(self, items) -> np.ndarray:
        return np.stack(items).astype(np.float32)

    def embed(self, waveforms) -> np.ndarray:
        return self.embed_prepared([self.prepare(y) for y in waveforms])


# %% [markdown]
# ## A layer of a speech model
#
# Hub ids are keyed by name (and revision); a local folder, and the bundled Whisper, by a
# fingerprint of their weights. The model is loaded by `load()` (once, before the loop).


# %%
def _model_folder_hash(path: Path) -> str:
    """Content hash of a local model folder (weights + configs), for cache keys."""
    digest = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json", ".pt", ".pth"):
            digest.update(f.name.encode())
            digest.update(file_sha256(f).encode())
    return digest.hexdigest()


@register_explorer_encoder("speech_model")
class SpeechLayerEmbedder:
    """One hidden layer of a transformers speech model, pooled over frames (``mean`` by default)."""

    kind = "speech_model"
    signal = "audio"

    def __init__(
        self,
        model_name: str = "bundled/whisper-tiny.en",
        layer=4,
        pooling: str = "mean",
        device: str = "cpu",
        local_files_only: bool = False,
        revision: str | None = None,
        whisper_mode: str = "clip",
    ):
        self.name_or_path = str(model_name)
        self.layer = layer
        self.pooling = pooling
        self.device = device
        self.local_files_only = local_files_only
        self.revision = revision
        self.whisper_mode = whisper_mode
        self._adapter = None
        local = Path(self.name_or_path).expanduser()
        self.model_hash = _model_folder_hash(local) if local.is_dir() else None
        self.name = f"{Path(self.name_or_path).name}-L{layer}-{pooling}"
        self.sample_rate = 16000

    def load(self):
        """Load the model once (``ExplorerEncoderError`` with the loader's reason when it cannot)."""
        if self._adapter is None:
            try:
                self._adapter = load_speech_model(
                    self.name_or_path,
                    device=self.device,
                    local_files_only=self.local_files_only,
                    whisper_mode=self.whisper_mode,
                )
                self._adapter._check_layers([self.layer])
            except (OSError, ValueError, RuntimeError) as error:
                raise ExplorerEncoderError(
                    f"encoder 'speech_model' cannot use {self.name_or_path!r} layer {self.layer!r}: {error}"
                ) from None
            self.sample_rate = int(self._adapter.sample_rate)
        return self

    @property
    def adapter(self):
        return self.load()._adapter

    @property
    def weights(self) -> str:
        return getattr(self._adapter, "weights", "pretrained") if self._adapter is not None else "pretrained"

    def config(self) -> dict:
        adapter = self.adapter
        return {
            "kind": self.kind,
            "name": self.name,
            "model": self.name_or_path,
            "model_hash": self.model_hash,
            "fingerprint": adapter.fingerprint(),
            "revision": self.revision,
            "layer": str(self.layer),
            "pooling": self.pooling,
            "whisper_mode": getattr(adapter, "whisper_mode", None),
            "weights": self.weights,
            "sample_rate": self.sample_rate,
        }

    def info(self) -> dict:
        info = dict(self.config())
        if self._adapter is not None:
            info["model_info"] = self._adapter.info()
        return info

    def describe(self) -> str:
        adapter = self.adapter
        mode = getattr(adapter, "whisper_mode", None)
        how = ""
        if adapter.family == "whisper":
            how = " Whisper's own 80-band log-mel of the clip; " + (
                "clip mode: the encoder runs on the clip alone (positional embeddings sliced to its length)."
                if mode == "clip"
                else "padded to 30 s as in training; only the frames covering the clip are pooled."
            )
        return (
            f"**{adapter.family} layer {self.layer}** of `{self.name_or_path}` ({self.weights} weights, "
            f"{adapter.num_parameters / 1e6:.1f} M parameters), {self.pooling}-pooled over the clip's "
            f"{adapter.frame_rate:g} Hz frames at {self.sample_rate} Hz.{how}"
        )

    def prepare(self, y: np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        return np.asarray(y, dtype=np.float32)

    def preparer(self):
        """What worker processes run per clip: light to send, no model inside."""
        return ExplorerWaveformPreparer()

    def embed_prepared(self, items) -> np.ndarray:
        import torch

        adapter = self.adapter
        with torch.inference_mode():
            states = adapter.hidden_states_batch(list(items), layers=[self.layer], batch_size=len(items))
        rows = [pool_frames(next(iter(state.values())), self.pooling) for state in states]
        return np.stack(rows).astype(np.float32)

    def embed(self, waveforms) -> np.ndarray:
        return self.embed_prepared(list(waveforms))


# %% [markdown]
# ## Running an embedder over files
#
# `lib/explorer/explorer_batches.py` reads, prepares and (optionally) renders the previews of
# the clips in worker processes while this process runs the model. A file that cannot be read
# is skipped with its reason (an audio failure, remembered by the cache); a clip the encoder
# rejects is retried alone and listed as an *encoder* failure, which is never cached (a fixed
# encoder will embed it next time). An encoder that fails on every clip of the first batch
# stops the run with its own error instead of failing clip by clip.


# %%
def embed_signal_files(
    paths, embedder, batch_size: int = 32, progress: bool = True, workers=0, reader=None, preview=None, stats=None
):
    """Embed ``paths``; return ``(embeddings [N, D], ok_paths, failures, encoder_failures)``.

    ``failures``: files that could not be read; ``encoder_failures``: clips the encoder
    rejected. ``preview``: also render each clip's preview in the same pass. ``stats`` (a
    dict) receives the seconds spent decoding, preparing, rendering (summed over workers) and
    embedding, and the previews made.
    """
    import torch
    from tqdm.auto import tqdm

    embedder.load()
    reader = reader or ExplorerAudioReader(embedder.sample_rate)
    stats = stats if stats is not None else {}
    for key in ("decode", "transform", "media", "embed"):
        stats.setdefault(key, 0.0)
    stats.setdefault("previews", {})
    stats.setdefault("preview_failures", [])
    vectors, ok_paths, failures, encoder_failures = [], [], [], []
    desc = f"embedding ({embedder.name})"
    with tqdm(total=len(paths), desc=desc, unit="clip", disable=not progress) as bar:
        preparer = embedder.preparer() if hasattr(embedder, "preparer") else embedder.prepare
        for chunk in explorer_map_chunks(paths, reader, preparer, preview, batch_size, workers):
            for key, value in chunk["seconds"].items():
                stats[key] += value
            stats["previews"].update(chunk["previews"])
            stats["preview_failures"].extend(chunk["preview_failures"])
            failures.extend(chunk["failures"])
            encoder_failures.extend(chunk["prepare_failures"])
            items, loaded = chunk["items"], chunk["ok"]
            start = time.perf_counter()
            if items:
                try:
                    with torch.inference_mode():
                        batch = embedder.embed_prepared(items)
                    vectors.extend(batch)
                    ok_paths.extend(loaded)
                except Exception as batch_error:  # any failure: find the clip(s) the encoder rejects
                    for item, path in zip(items, loaded):
                        try:
                            with torch.inference_mode():
                                vectors.append(embedder.embed_prepared([item])[0])
                            ok_paths.append(path)
                        except Exception as error:  # noqa: BLE001 - this clip is the one the encoder rejects
                            encoder_failures.append(
                                {"path": path, "error": f"encoder failed: {type(error).__name__}: {error}"}
                            )
                    if not ok_paths:
                        raise ExplorerEncoderError(
                            f"encoder {embedder.name} failed on every clip of the first batch "
                            f"({type(batch_error).__name__}: {batch_error}); stopping instead of failing clip by clip"
                        ) from batch_error
            stats["embed"] += time.perf_counter() - start
            bar.update(len(chunk["ok"]) + len(chunk["failures"]) + len(chunk["prepare_failures"]))
    dim = len(vectors[0]) if vectors else 0
    embeddings = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    if len(embeddings) and not np.all(np.isfinite(embeddings)):
        keep = np.isfinite(embeddings).all(axis=1)
        for i in np.where(~keep)[0]:
            encoder_failures.append({"path": ok_paths[i], "error": "encoder returned NaN or infinite values"})
        embeddings = embeddings[keep]
        ok_paths = [p for p, k in zip(ok_paths, keep) if k]
    return embeddings, ok_paths, failures, encoder_failures


def embed_audio_files_cached(
    paths,
    embedder,
    cache_dir,
    dataset_name: str,
    batch_size: int = 32,
    progress: bool = True,
    retry_failed: bool = False,
    workers=0,
    reader=None,
    preview=None,
    stats=None,
):
    """``embed_signal_files`` through the incremental cache; return ``(embeddings, files, metadata)``.

    Only unreadable files are remembered as failures by the cache; encoder failures are
    reported (``metadata["encoder_failed"]``) and retried by the next run. ``metadata``:
    files, failures, timestamp, encoder description, the cache report and the stage ``stats``.
    """
    embedder.load()
    stats = stats if stats is not None else {}
    encoder_failed = []

    def compute(todo):
        embeddings, ok_paths, failures, rejected = embed_signal_files(
            todo, embedder, batch_size, progress, workers, reader, preview, stats
        )
        encoder_failed.extend(rejected)
        return embeddings, ok_paths, failures

    embeddings, files, report = embed_cache_update(
        paths,
        compute,
        cache_dir,
        dataset_name,
        embedder.config(),
        model_info=embedder.info(),
        retry_failed=retry_failed,
    )
    if encoder_failed:
        report_audio_failures(encoder_failed, noun="clip the encoder rejected")
    metadata = {
        "files": files,
        "failed": report["failed"],
        "encoder_failed": encoder_failed,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": embedder.config(),
        "model_info": embedder.info(),
        "embedding_dim": int(embeddings.shape[1]) if embeddings.ndim == 2 else 0,
        "cache": report,
        "stats": {k: v for k, v in stats.items() if k not in ("previews", "preview_failures")},
    }
    return embeddings, files, metadata
