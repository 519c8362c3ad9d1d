# %% [markdown]
# # Phase 0 latents: encoders, speaker split, a resumable sharded latent store
#
# **Encoders.** `load_phase0_encoder(name)` gives one interface over what Phase 0 compares:
#
# - `"logmel"`: an 80-band log-mel spectrogram (`lib.core.features.log_mel`, 10 ms hop) mean-pooled
#   to the codec frame rate (12.5 Hz by default), the no-learning baseline;
# - any codec that `lib.core.speech_models.load_speech_model` loads (`kyutai/mimi`,
#   `facebook/encodec_24khz`, `descript/dac_16khz`, or a `save_pretrained` folder): its
#   continuous latents *before quantisation* (`"latents"` stage; Mimi: 512-d at 12.5 Hz);
# - any other speech model it loads (the bundled Whisper tiny.en encoder, WavLM...): one
#   layer's hidden states at the model's own frame rate (Whisper: 384-d at 50 Hz).
#
# Each encoder maps a mono waveform at `encoder.sample_rate` to `[frames, dims]` float32;
# `frame_energy_db` gives the waveform's RMS energy on the same frame grid.
#
# **Speaker split.** `split_phase0_speakers` holds out whole speakers (seeded; 51 of 251 on
# train-clean-100 and on the local sample, proportionally elsewhere, stratified by sex when
# `SPEAKERS.TXT` gives it); the utterance lists are written out so a run can be audited.
#
# **Store.** `extract_latents_to_store` encodes utterances in fixed chunks; each chunk is a
# *part* (`parts/part-XXXXXX.latents.npy`, `.energy.npy`, then `.parquet`, each written
# atomically; the Parquet file is written last and marks the part complete). A rerun skips
# complete parts, so an interrupted extraction resumes, and `shard_index`/`num_shards`
# split the chunks between machines (chunk `j` belongs to shard `j % num_shards`) that write
# into copies of the same store folder. `consolidate_latent_store` then merges the parts into
# one zarr group (`latents.zarr`: `latents [frames, dims]`, `energy_db [frames]`) with a
# Parquet index (`index.parquet`: utterance, speaker, chapter, frames, offset, ...).
# `store.json` records the encoder and the utterance list; reusing a store with another
# encoder or other utterances is refused with a clear message.

# %%
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib.core.atomic_io import (
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
)
from lib.core.audio import AudioLoadError, load_audio
from lib.core.codec_models import CODEC_FAMILIES
from lib.core.features import log_mel
from lib.core.speech_models import load_speech_model

PHASE0_STORE_VERSION = 2
# The continuous latents right before quantisation, per codec family (adapter stage names):
# Mimi and EnCodec call them "latents"; DAC's encoder output ("encoder") is what its
# residual quantiser receives (its "latents" stage is the per-codebook projections).
PHASE0_CODEC_STAGES = {"mimi": "latents", "encodec": "latents", "dac": "encoder"}


# %% [markdown]
# ## Encoders


# %%
class Phase0LogMelEncoder:
    """Log-mel baseline: ``n_mels`` bands at 100 Hz, mean-pooled to ``frame_rate`` Hz."""

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80, frame_rate: float = 12.5):
        self.sample_rate = int(sample_rate)
        self.n_mels = int(n_mels)
        self.hop_length = self.sample_rate // 100
        self.pool = int(round(100 / float(frame_rate)))
        if self.pool < 1:
            raise ValueError(f"frame_rate {frame_rate} is above the log-mel rate (100 Hz)")
        self.frame_rate = 100.0 / self.pool
        self.dim = self.n_mels
        self.name = "logmel"

    def latents(self, waveform) -> np.ndarray:
        mel = log_mel(
            np.asarray(waveform, dtype=np.float32),
            self.sample_rate,
            n_mels=self.n_mels,
            n_fft=int(0.025 * self.sample_rate),
            hop_length=self.hop_length,
        ).T
        n = len(mel) // self.pool
        return mel[: n * self.pool].reshape(n, self.pool, -1).mean(axis=1).astype(np.float32)

    def info(self) -> dict:
        return {
            "encoder": "logmel",
            "family": "logmel",
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "dim": self.dim,
            "n_mels": self.n_mels,
            "pool": self.pool,
            "weights": "none (signal processing)",
            "fingerprint": f"logmel-{self.n_mels}-{self.pool}-{self.sample_rate}",
        }


def _phase0_weights_label(adapter) -> str:
    """``"pretrained"`` / ``"random"`` when the adapter says so, else where the weights came from."""
    label = getattr(adapter, "weights", None)
    if label:
        return str(label)
    return "local folder" if Path(str(adapter.name)).expanduser().exists() else "pretrained"


def _phase0_load_adapter(name_or_path, device="cpu", local_files_only=False, whisper_mode=None, weights=None):
    """`load_speech_model` with the bundled-Whisper options passed only when they are set."""
    kwargs = {"device": device, "local_files_only": local_files_only}
    if whisper_mode is not None:
        kwargs["whisper_mode"] = whisper_mode
    if weights is not None and weights != "pretrained":
        kwargs["weights"] = weights
    return load_speech_model(name_or_path, **kwargs)


class _Phase0AdapterEncoder:
    """One layer or stage of a loaded adapter as Phase 0 latents (the codec and speech encoders)."""

    def _probe_dim(self) -> int:
        return int(self.latents(np.zeros(self.sample_rate, dtype=np.float32)).shape[1])

    def latents(self, waveform) -> np.ndarray:
        key = self._layer_key
        return self.adapter.hidden_states(np.asarray(waveform, dtype=np.float32), layers=[key])[key]

    def _info_extra(self) -> dict:
        return {}

    def info(self) -> dict:
        info = self.adapter.info()
        return {
            "encoder": self.name,
            "family": info["family"],
            "stage": self._stage_label,
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "dim": self.dim,
            "num_parameters": info["num_parameters"],
            "weights": _phase0_weights_label(self.adapter),
            **self._info_extra(),
            "fingerprint": self.adapter.fingerprint(),
        }


class Phase0CodecEncoder(_Phase0AdapterEncoder):
    """Continuous pre-quantisation latents of a codec loaded by `load_speech_model`."""

    def __init__(
        self, name_or_path: str, device: str = "cpu", local_files_only: bool = False, stage=None, adapter=None
    ):
        self.adapter = adapter or _phase0_load_adapter(name_or_path, device, local_files_only)
        if self.adapter.family not in CODEC_FAMILIES:
            raise ValueError(
                f"{name_or_path} is a {self.adapter.family} model; Phase 0 encoders are the codecs "
                f"({', '.join(CODEC_FAMILIES)}) or 'logmel'"
            )
        stage = stage or PHASE0_CODEC_STAGES[self.adapter.family]
        if stage not in self.adapter.layer_names:
            raise ValueError(f"{name_or_path} has no stage {stage!r}; available: {self.adapter.layer_names}")
        self.stage = self._layer_key = self._stage_label = stage
        self.sample_rate = self.adapter.sample_rate
        self.frame_rate = float(self.adapter.frame_rate)
        self.name = str(name_or_path)
        self.dim = self._probe_dim()


# %%
class Phase0SpeechEncoder(_Phase0AdapterEncoder):
    """One layer of a speech model's hidden states (the Whisper encoder, WavLM, ...) as Phase 0 latents.

    ``layer`` defaults to the last transformer layer. Whisper's ``whisper_mode`` (``"padded"``:
    the reference 30 s input; ``"clip"``: positional embeddings sliced to the clip) is part
    of the adapter's fingerprint, so stores never mix the two.
    """

    def __init__(self, adapter, name: str, layer=None):
        self.adapter = adapter
        self.layer = adapter.num_layers if layer is None else (int(layer) if str(layer).isdigit() else layer)
        if self.layer not in adapter.layer_names:
            raise ValueError(f"{name} has no layer {layer!r}; available: {adapter.layer_names}")
        self.sample_rate = adapter.sample_rate
        self.frame_rate = float(adapter.layer_frame_rate(self.layer))
        self.name = str(name)
        self.stage = str(self.layer)
        self._layer_key, self._stage_label = self.layer, f"layer {self.layer}"
        self.dim = self._probe_dim()

    def _info_extra(self) -> dict:
        return {"whisper_mode": getattr(self.adapter, "whisper_mode", None)}


def load_phase0_encoder(
    name: str = "logmel",
    device: str = "cpu",
    local_files_only: bool = False,
    layer=None,
    whisper_mode=None,
    weights=None,
    **kwargs,
):
    """``"logmel"`` (kwargs: ``n_mels``, ``frame_rate``), a codec (its pre-quantisation latents),
    or any other speech model `load_speech_model` knows (one ``layer`` of its hidden states;
    ``whisper_mode`` and ``weights="random"`` for the bundled Whisper)."""
    if str(name).lower() in ("logmel", "log-mel", "log_mel", "mel"):
        return Phase0LogMelEncoder(**kwargs)
    adapter = _phase0_load_adapter(name, device, local_files_only, whisper_mode, weights)
    if adapter.family in CODEC_FAMILIES:
        return Phase0CodecEncoder(name, device=device, local_files_only=local_files_only, adapter=adapter, **kwargs)
    return Phase0SpeechEncoder(adapter, name, layer=layer)


def frame_energy_db(waveform, sample_rate: int, frame_rate: float, n_frames: int, floor_db: float = -100.0):
    """RMS energy (dB re full scale) of the waveform over each of ``n_frames`` frames of ``1/frame_rate`` s.

    Frame ``i`` covers samples ``[i*hop, (i+1)*hop)``; frames past the end of the audio (codec
    padding) get ``floor_db``.
    """
    y = np.asarray(waveform, dtype=np.float64)
    hop = sample_rate / float(frame_rate)
    bounds = np.minimum(np.round(np.arange(n_frames + 1) * hop).astype(np.int64), len(y))
    power = np.concatenate([[0.0], np.cumsum(y**2)])
    lengths = np.diff(bounds)
    energy = (power[bounds[1:]] - power[bounds[:-1]]) / np.maximum(lengths, 1)
    db = 10.0 * np.log10(np.maximum(energy, 0.0) + 1e-12)
    return np.where(lengths > 0, np.maximum(db, floor_db), floor_db).astype(np.float32)


# %% [markdown]
# ## Speaker split


# %%
def split_phase0_speakers(
    manifest: pd.DataFrame, n_eval: int | None = None, eval_fraction: float = 51 / 251, seed: int = 0
) -> pd.DataFrame:
    """Add a ``split`` column (``train``/``eval``) holding out whole speakers.

    ``n_eval`` speakers (default: ``round(eval_fraction * speakers)``, i.e. 51 of 251) are
    drawn with ``seed``, proportionally within each ``sex`` when that column is known.
    """
    speakers = pd.Series(sorted(manifest["speaker"].astype(str).unique()))
    if len(speakers) < 2:
        raise ValueError(f"a speaker split needs at least 2 speakers, the manifest has {len(speakers)}")
    n_eval = int(round(eval_fraction * len(speakers))) if n_eval is None else int(n_eval)
    n_eval = min(max(n_eval, 1), len(speakers) - 1)
    rng = np.random.default_rng(seed)
    groups = {"all": list(speakers)}
    if "sex" in manifest.columns and manifest["sex"].notna().all():
        sex_of = manifest.assign(speaker=manifest["speaker"].astype(str)).groupby("speaker")["sex"].first()
        groups = {sex: sorted(sex_of.index[sex_of == sex]) for sex in sorted(sex_of.unique())}
    quotas = {g: n_eval * len(members) / len(speakers) for g, members in groups.items()}
    counts = {g: int(math.floor(q)) for g, q in quotas.items()}
    for g in sorted(quotas, key=lambda g: quotas[g] - counts[g], reverse=True)[: n_eval - sum(counts.values())]:
        counts[g] += 1
    eval_speakers = set()
    for g, members in groups.items():
        eval_speakers.update(rng.choice(members, size=min(counts[g], len(members)), replace=False).tolist())
    out = manifest.copy()
    out["speaker"] = out["speaker"].astype(str)
    out["split"] = np.where(out["speaker"].isin(eval_speakers), "eval", "train")
    return out


def cap_phase0_utterances(manifest: pd.DataFrame, max_utterances: int | None, seed: int = 0) -> pd.DataFrame:
    """Keep at most ``max_utterances`` (seeded), in proportion to the train/eval split, each side >= 1."""
    if not max_utterances or len(manifest) <= max_utterances:
        return manifest.reset_index(drop=True)
    parts = []
    n_eval_total = int((manifest["split"] == "eval").sum())
    n_eval = max(1, int(round(max_utterances * n_eval_total / len(manifest))))
    for split, n in (("train", max(1, max_utterances - n_eval)), ("eval", n_eval)):
        rows = manifest[manifest["split"] == split]
        parts.append(rows.sample(n=min(n, len(rows)), random_state=seed))
    return pd.concat(parts).sort_values("utterance").reset_index(drop=True)


def write_phase0_split(manifest: pd.DataFrame, output_dir) -> dict:
    """Write ``split.csv`` and ``{train,eval}_utterances.txt``; return their paths."""
    output_dir = Path(output_dir)
    paths = {"split_csv": output_dir / "split.csv"}
    columns = [c for c in ("utterance", "speaker", "chapter", "sex", "split", "path") if c in manifest.columns]
    atomic_write_text(paths["split_csv"], manifest[columns].to_csv(index=False))
    for split in ("train", "eval"):
        paths[f"{split}_utterances"] = output_dir / f"{split}_utterances.txt"
        names = manifest.loc[manifest["split"] == split, "utterance"].tolist()
        atomic_write_text(paths[f"{split}_utterances"], "\n".join(names) + "\n")
    return {k: str(v) for k, v in paths.items()}


# %% [markdown]
# ## The resumable, sharded store


# %%
def _utterance_digest(manifest: pd.DataFrame) -> str:
    return hashlib.sha256("\n".join(manifest["utterance"].astype(str)).encode()).hexdigest()[:20]


def phase0_audio_digests(paths, progress: bool = False) -> list:
    """SHA-256 of each audio file's bytes (``"unreadable: <why>"`` for a file that cannot be read).

    Store parts record the digest of every utterance they encoded: changed audio (same name,
    other content) makes its part stale, and only that part is encoded again.
    """
    digests = []
    for path in tqdm(list(paths), desc="hashing audio", disable=not progress, leave=False):
        try:
            digests.append(file_sha256(path))
        except OSError as error:
            digests.append(f"unreadable: {error.strerror or error}")
    return digests


# %%
def _store_header(manifest, encoder_info, chunk_utterances, max_seconds) -> dict:
    header = {
        "version": PHASE0_STORE_VERSION,
        "encoder": encoder_info,
        "utterances": len(manifest),
        "utterance_digest": _utterance_digest(manifest),
        "chunk_utterances": int(chunk_utterances),
        "max_seconds": max_seconds,
        "n_parts": int(math.ceil(len(manifest) / chunk_utterances)),
    }
    key_fields = [header[k] for k in ("version", "utterance_digest", "chunk_utterances", "max_seconds")]
    key_fields.append(encoder_info.get("fingerprint"))
    header["store_key"] = hashlib.sha256(json.dumps(key_fields, default=str).encode()).hexdigest()[:20]
    return header


def _read_store_header(path: Path):
    """``(header dict or None, problem or None)``: an unreadable or malformed file is a named problem."""
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return None, f"{type(error).__name__}: {error}"
    required = ("version", "encoder", "utterance_digest", "chunk_utterances", "n_parts")
    if not isinstance(header, dict) or not isinstance(header.get("encoder"), dict):
        return None, f"expected a JSON object with an 'encoder' mapping, got {type(header).__name__}"
    missing = [k for k in required if k not in header]
    if missing:
        return None, f"missing field(s) {missing}"
    return header, None


def _check_store_header(store_dir: Path, header: dict) -> None:
    """Write ``store.json``, or check the existing one describes this configuration.

    A corrupt or malformed header is named and rewritten (parts carry their own store key, so
    parts of another configuration are never reused); a readable header of another
    configuration is refused.
    """
    path = store_dir / "store.json"
    if not path.exists():
        atomic_write_json(path, header)
        return
    existing, problem = _read_store_header(path)
    if problem is not None:
        print(
            f"{path} is unreadable ({problem}): rewriting it. Each part is checked against this run's "
            "configuration and audio; parts that do not match are encoded again."
        )
        atomic_write_json(path, header)
        return
    keys = ("version", "utterance_digest", "chunk_utterances", "max_seconds", "utterances")
    mismatched = [k for k in keys if existing.get(k) != header.get(k)]
    if existing.get("encoder", {}).get("fingerprint") != header["encoder"].get("fingerprint"):
        mismatched.append("encoder")
    if mismatched:
        raise ValueError(
            f"{store_dir} holds latents of another configuration (differs in: {', '.join(mismatched)}; "
            f"stored encoder {existing.get('encoder', {}).get('encoder')!r}). Use another store folder, "
            "or delete this one to recompute."
        )
    if existing != header:  # same configuration, header from an older run (e.g. without store_key)
        atomic_write_json(path, header)


# %% [markdown]
# ### Parts: complete, current, or to encode again


# %%
def _part_paths(store_dir: Path, part: int) -> dict:
    stem = store_dir / "parts" / f"part-{part:06d}"
    return {
        "latents": Path(f"{stem}.latents.npy"),
        "energy": Path(f"{stem}.energy.npy"),
        "index": Path(f"{stem}.parquet"),
    }


def _part_problem(paths: dict, dim: int, store_key: str | None = None, expected=None):
    """Why a stored part cannot be reused (None: it is complete and current).

    ``expected`` (the manifest rows of the part, with ``audio_sha256``) also checks that the
    part holds these utterances and that their audio has not changed.
    """
    if not all(p.exists() for p in paths.values()):
        return "missing"
    try:
        index = pd.read_parquet(paths["index"])
        latents = np.load(paths["latents"], mmap_mode="r", allow_pickle=False)
        energy = np.load(paths["energy"], mmap_mode="r", allow_pickle=False)
        total = int(index["frames"].sum())
    except Exception as error:  # noqa: BLE001 - any unreadable file (EOFError, ArrowInvalid, ...) is a miss
        return f"corrupt ({type(error).__name__}: {str(error)[:120]})"
    if latents.shape != (total, dim) or energy.shape != (total,):
        return f"wrong shape (latents {latents.shape}, energy {energy.shape}; index says {total} frames of {dim})"
    if store_key is not None and ("store_key" not in index.columns or (index["store_key"] != store_key).any()):
        return "written for another configuration"
    if expected is not None:
        if index["utterance"].astype(str).tolist() != expected["utterance"].astype(str).tolist():
            return "holds other utterances"
        if "audio_sha256" not in index.columns:
            return "has no audio hashes (written by an older version)"
        changed = index["utterance"][index["audio_sha256"].to_numpy() != expected["audio_sha256"].to_numpy()]
        if len(changed):
            return f"audio changed for {len(changed)} utterance(s), e.g. {changed.iloc[0]}"
    return None


def _part_complete(paths: dict, dim: int, store_key: str | None = None, expected=None) -> bool:
    return _part_problem(paths, dim, store_key, expected) is None


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())


# %% [markdown]
# ### Extraction


# %%
def extract_latents_to_store(
    manifest: pd.DataFrame,
    encoder,
    store_dir,
    shard_index: int = 0,
    num_shards: int = 1,
    chunk_utterances: int = 16,
    max_seconds: float | None = None,
    progress: bool = True,
) -> dict:
    """Encode this shard's missing or stale parts into ``store_dir``; return counts and timings.

    ``manifest`` needs ``path, utterance, speaker`` (its order fixes the chunks: pass the same
    manifest on every machine). Every audio file is hashed: a part whose audio changed is
    encoded again, as is a corrupt part (both are named). Unreadable audio is skipped and
    reported, never fatal.
    """
    import time

    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in 0..{num_shards - 1}, got {shard_index}")
    store_dir = Path(store_dir)
    (store_dir / "parts").mkdir(parents=True, exist_ok=True)
    manifest = manifest.reset_index(drop=True).copy()
    started = time.perf_counter()
    manifest["audio_sha256"] = phase0_audio_digests(manifest["path"], progress=progress)
    hash_seconds = time.perf_counter() - started
    header = _store_header(manifest, encoder.info(), chunk_utterances, max_seconds)
    _check_store_header(store_dir, header)
    mine = [j for j in range(header["n_parts"]) if j % num_shards == shard_index]
    todo, stale = [], []
    for j in mine:
        rows = manifest.iloc[j * chunk_utterances : (j + 1) * chunk_utterances]
        problem = _part_problem(_part_paths(store_dir, j), encoder.dim, header["store_key"], rows)
        if problem is not None:
            todo.append(j)
            if problem != "missing":
                stale.append(f"part {j} ({_part_paths(store_dir, j)['index'].name}): {problem}")
    if stale:
        print(f"Encoding {len(stale)} stored part(s) again:\n  " + "\n  ".join(stale[:10]))
    stats = {
        "parts_total": header["n_parts"],
        "parts_in_shard": len(mine),
        "parts_reused": len(mine) - len(todo),
        "parts_stale": len(stale),
        "utterances_encoded": 0,
        "audio_seconds": 0.0,
        "encode_seconds": 0.0,
        "hash_seconds": hash_seconds,
        "failures": [],
    }
    keep = [
        c for c in ("utterance", "speaker", "chapter", "sex", "split", "path", "audio_sha256") if c in manifest.columns
    ]
    bar = tqdm(
        total=sum(len(manifest.iloc[j * chunk_utterances : (j + 1) * chunk_utterances]) for j in todo),
        desc=f"encoding (shard {shard_index + 1} of {num_shards})",
        disable=not progress,
    )
    for j in todo:
        rows = manifest.iloc[j * chunk_utterances : (j + 1) * chunk_utterances]
        latents, energies, records = [], [], []
        for record in rows.itertuples(index=False):
            entry = {c: getattr(record, c) for c in keep}
            try:
                y = load_audio(record.path, sr=encoder.sample_rate, max_seconds=max_seconds)
                start = time.perf_counter()
                z = np.asarray(encoder.latents(y), dtype=np.float32)
                stats["encode_seconds"] += time.perf_counter() - start
                stats["audio_seconds"] += len(y) / encoder.sample_rate
                stats["utterances_encoded"] += 1
                entry.update(frames=len(z), duration=len(y) / encoder.sample_rate, error="")
                latents.append(z)
                energies.append(frame_energy_db(y, encoder.sample_rate, encoder.frame_rate, len(z)))
            except AudioLoadError as error:
                entry.update(frames=0, duration=0.0, error=error.problem)
                stats["failures"].append({"path": str(record.path), "error": error.problem})
            entry["store_key"] = header["store_key"]
            records.append(entry)
            bar.update(1)
        paths = _part_paths(store_dir, j)
        atomic_save_npy(paths["latents"], np.concatenate(latents) if latents else np.zeros((0, encoder.dim), "f4"))
        atomic_save_npy(paths["energy"], np.concatenate(energies) if energies else np.zeros(0, "f4"))
        _write_parquet(paths["index"], pd.DataFrame(records))  # written last: marks the part complete
    bar.close()
    done = [
        j
        for j in range(header["n_parts"])
        if _part_complete(_part_paths(store_dir, j), encoder.dim, header["store_key"])
    ]
    stats["parts_complete"] = len(done)
    stats["store_complete"] = len(done) == header["n_parts"]
    if stats["failures"]:
        print(f"Skipped {len(stats['failures'])} unreadable file(s), e.g. {stats['failures'][:3]}")
    return stats


# %% [markdown]
# ### Reading: part by part, or consolidated


# %%
def phase0_store_header(store_dir) -> dict:
    """The ``store.json`` of a store folder; a clear error when it is missing or unreadable."""
    path = Path(store_dir) / "store.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no latent store here (run the extraction into this folder first)")
    header, problem = _read_store_header(path)
    if problem is not None:
        raise ValueError(f"{path} is unreadable ({problem}); run the extraction again to rebuild it")
    return header


def phase0_store_parts(store_dir) -> tuple:
    """``(header, [part paths...])`` of a complete store; names the missing or stale parts otherwise.

    Readers that stream the store part by part (Tier 1's datasets) use this instead of the
    consolidated zarr, so no process holds the whole store in memory.
    """
    store_dir = Path(store_dir)
    header = phase0_store_header(store_dir)
    dim = int(header["encoder"]["dim"])
    paths = [_part_paths(store_dir, j) for j in range(header["n_parts"])]
    problems = {j: _part_problem(p, dim, header.get("store_key")) for j, p in enumerate(paths)}
    missing = {j: why for j, why in problems.items() if why is not None}
    if missing:
        first = list(missing.items())[:5]
        raise RuntimeError(
            f"{store_dir}: {len(missing)} of {len(paths)} parts are not extracted yet or are stale "
            f"(e.g. {', '.join(f'part {j}: {why}' for j, why in first)}). Run the remaining shards "
            "(or num_shards=1) into this folder first."
        )
    return header, paths


def read_phase0_part(paths: dict) -> tuple:
    """``(index with a part-local 'offset', latents [frames, D], energy_db [frames])`` of one part (memory-mapped)."""
    index = pd.read_parquet(paths["index"])
    index = index[index["frames"] > 0].reset_index(drop=True)
    index["offset"] = np.concatenate([[0], np.cumsum(index["frames"].to_numpy())[:-1]]).astype(np.int64)
    latents = np.load(paths["latents"], mmap_mode="r", allow_pickle=False)
    energy = np.load(paths["energy"], mmap_mode="r", allow_pickle=False)
    return index, latents, energy


def consolidate_latent_store(store_dir, chunk_frames: int = 8192) -> Path:
    """Merge all parts into ``latents.zarr`` + ``index.parquet`` (atomically); return the zarr path.

    Reuses an existing consolidation made from the same parts (and rebuilds one whose index
    or arrays are unreadable). Fails, naming the missing parts, when some shard has not
    finished.
    """
    import zarr

    store_dir = Path(store_dir)
    header, paths = phase0_store_parts(store_dir)
    dim = int(header["encoder"]["dim"])
    digest = hashlib.sha256()
    for p in paths:
        digest.update(p["index"].read_bytes())
    digest = digest.hexdigest()[:20]
    target = store_dir / "latents.zarr"
    index_path = store_dir / "index.parquet"
    if target.exists() and index_path.exists():
        try:
            group = zarr.open_group(str(target), mode="r")
            frames = int(pd.read_parquet(index_path)["frames"].sum())
            if group.attrs.get("parts_digest") == digest and group["latents"].shape == (frames, dim):
                return target
            reason = "its parts changed"
        except Exception as error:  # noqa: BLE001 - a broken consolidation is rebuilt below
            reason = f"unreadable: {type(error).__name__}: {str(error)[:100]}"
        print(f"{target}: rebuilding the consolidated store ({reason})")
    indices = [pd.read_parquet(p["index"]) for p in paths]
    index = pd.concat(indices, ignore_index=True)
    index = index[index["frames"] > 0].reset_index(drop=True)
    index["offset"] = np.concatenate([[0], np.cumsum(index["frames"].to_numpy())[:-1]]).astype(np.int64)
    total = int(index["frames"].sum())
    staging = Path(tempfile.mkdtemp(prefix=".latents.zarr.", dir=store_dir))
    try:
        group = zarr.open_group(str(staging), mode="w")
        latents = group.create_array("latents", shape=(total, dim), chunks=(chunk_frames, dim), dtype="float32")
        energy = group.create_array("energy_db", shape=(total,), chunks=(chunk_frames * 8,), dtype="float32")
        position = 0
        for p in paths:
            block = np.load(p["latents"])
            latents[position : position + len(block)] = block
            energy[position : position + len(block)] = np.load(p["energy"])
            position += len(block)
        group.attrs.update({"parts_digest": digest, "encoder": header["encoder"], "frames": total})
        _write_parquet(index_path, index)  # before the zarr: a matching zarr digest implies a matching index
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def open_latent_store(store_dir, in_memory: bool = True):
    """``(index DataFrame, latents [frames, dims], energy_db [frames], encoder info)`` of a consolidated store."""
    import zarr

    store_dir = Path(store_dir)
    if not (store_dir / "latents.zarr").exists():
        raise FileNotFoundError(f"{store_dir}: no latents.zarr; run consolidate_latent_store first")
    try:
        group = zarr.open_group(str(store_dir / "latents.zarr"), mode="r")
        index = pd.read_parquet(store_dir / "index.parquet")
        latents, energy = group["latents"], group["energy_db"]
        if in_memory:
            latents, energy = np.asarray(latents[:]), np.asarray(energy[:])
        encoder = dict(group.attrs["encoder"])
    except Exception as error:  # any failure: name the folder and the fix
        raise ValueError(
            f"{store_dir}: the consolidated store is unreadable ({type(error).__name__}: {error}); "
            "run consolidate_latent_store again (it rebuilds it from the parts)"
        ) from error
    return index, latents, energy, encoder
