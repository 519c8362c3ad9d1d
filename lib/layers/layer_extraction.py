# %% [markdown]
# # Layer embeddings: one pooled vector per clip, model and layer
#
# `extract_layer_embeddings(adapter, paths, layers, pooling)` runs a speech or codec model
# (through `lib.core.speech_models`) over each clip once, takes the hidden states of every
# requested layer, pools each `[frames, dims]` matrix to one vector (`mean`, `max`, `first`,
# `last` or `mean+std`, see `lib.core.features.pool_frames`) and returns a `LayerEmbeddingSet`:
# `{layer: [clips, dims]}` plus the clips that were used, the ones that failed and the time
# it took.
#
# - **Cache.** Embeddings are cached per model (id and a hash of its config and weights),
#   layer set and pooling in the core per-clip vector cache (`lib.core.vector_cache`): one
#   row per clip, keyed by the clip's content, so a changed clip is recomputed alone and a
#   different clip list reuses every clip it shares. Writes are atomic and locked (two runs can
#   share a cache); an unreadable cache is named and rebuilt. Partial progress is
#   checkpointed, so an interrupted extraction resumes where it stopped.
# - **Memory.** `estimate_extraction_memory` predicts the bytes needed (weights, activations
#   of the longest clip, the pooled outputs) before anything runs and, when that is more
#   than is free, suggests a smaller model, fewer clips or fewer layers. An out-of-memory
#   error during extraction (RAM or CUDA) is turned into the same advice.
# - **Layer modes.** `layer_mode_views` gives each layer on its own (`"single"`), all chosen
#   layers concatenated (`"concat"`, each layer z-scored first so no layer dominates by
#   scale) or both.
# - **Baseline.** `mfcc_baseline_embeddings` pools MFCCs (+ deltas) the same way: a
#   model-free reference row for every separability table.

# %%
import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib.core.audio import AudioLoadError, load_audio
from lib.core.codec_models import CODEC_FAMILIES
from lib.core.features import POOLING_MODES, mfcc_features, pool_frames
from lib.core.speech_models import KNOWN_SPEECH_MODELS
from lib.core.vector_cache import (
    vector_cache_fingerprint,
    vector_cache_key,
    vector_cache_open,
    vector_cache_reusable,
    vector_cache_save,
)

LAYER_POOLINGS = tuple(m for m in POOLING_MODES if m != "flat")
LAYER_CACHE_VERSION = 2


class ExtractionMemoryError(MemoryError):
    """Extraction ran (or would run) out of memory; the message says what to reduce."""


@dataclass
class LayerEmbeddingSet:
    """Pooled embeddings of one model: ``embeddings[layer]`` is ``[len(paths), dims]``."""

    model: str
    pooling: str
    layers: list
    paths: list
    embeddings: dict
    failures: list = field(default_factory=list)
    seconds: float = 0.0  # wall-clock seconds spent extracting in this call (0 when all came from the cache)
    audio_seconds: float = 0.0  # seconds of audio processed in this call
    compute_seconds: float = 0.0  # seconds the model took over all clips, cached runs and resumes included
    compute_audio_seconds: float = 0.0  # seconds of audio those compute_seconds covered
    from_cache: bool = False
    info: dict = field(default_factory=dict)

    def dims(self) -> dict:
        return {layer: int(x.shape[1]) for layer, x in self.embeddings.items()}


# %% [markdown]
# ## Describing models and layers


# %%
def ordered_layer_names(adapter) -> list:
    """Layer names from the input side to the output side, as strings.

    Transformer families: the raw convolutional encoder output ``"conv"`` first, then
    ``"0"`` (transformer input) ... ``"L"``. Codecs keep the adapter's order.
    """
    names = [str(n) for n in adapter.layer_names]
    if "conv" in names:
        names = ["conv"] + [n for n in names if n != "conv"]
    return names


def speech_model_table(adapters) -> pd.DataFrame:
    """One row per loaded model: family, layers, hidden size, parameters, sample and frame rate,
    weights (pretrained / random), Whisper mode and the label its results carry."""
    rows = []
    for adapter in adapters:
        info = adapter.info()
        rows.append(
            {
                "model": info["name"],
                "family": info["family"],
                "class": info["class"],
                "transformer_layers": info["num_transformer_layers"],
                "hidden_size": info["hidden_size"],
                "parameters_m": round(info["num_parameters"] / 1e6, 2),
                "sample_rate": info["sample_rate"],
                "frame_rate": info["frame_rate"],
                "weights": info.get("weights", "pretrained"),
                "whisper_mode": info.get("whisper_mode"),
                "label": info.get("label", info["name"]),
                "layers": ", ".join(ordered_layer_names(adapter)),
            }
        )
    return pd.DataFrame(rows)


def _slug(text: str, limit: int = 60) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_")[-limit:] or "model"


# %% [markdown]
# ## Memory: estimate before, advise when short


# %%
def available_memory_bytes(device: str = "cpu") -> int:
    """Free memory where the model runs: CUDA free memory, else available system RAM."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil ships with Jupyter
        return 0


def estimate_extraction_memory(
    num_parameters: int,
    hidden_size: int,
    num_layers: int,
    n_clips: int,
    max_clip_seconds: float,
    frame_rate: float = 50.0,
    pooling: str = "mean",
    family: str = "wav2vec2",
    bytes_per_value: int = 4,
    n_poolings: int = 1,
    batch_size: int = 1,
) -> dict:
    """Bytes an extraction needs: weights, activations for the longest clip, pooled outputs.

    ``num_layers``: layers kept. Activations count every hidden state of the forward pass
    (all layers are computed even when few are kept) with a factor 8 for attention and
    feed-forward intermediates, times ``batch_size`` clips run together; Whisper (``family``
    ``"whisper"``, its padded mode) runs 30 s windows (1,500 frames); in clip mode pass
    ``family="whisper-clip"`` (frames of the clip only).
    ``n_poolings``: extra pooled copies kept (``mean`` counts one, ``mean+std`` two).
    """
    frames = (
        1500 * max(1, int(np.ceil(max_clip_seconds / 30)))
        if family == "whisper"
        else int(np.ceil(max_clip_seconds * frame_rate)) + 1
    )
    depth = max(num_layers, 1) + 1
    weights = int(num_parameters) * bytes_per_value
    activations = int(frames * hidden_size * depth * 8 * bytes_per_value) * max(1, int(batch_size))
    if family in CODEC_FAMILIES:  # convolutional encoders: wide early feature maps at audio rate
        activations = int(max_clip_seconds * 24000 * 64 * 4 * bytes_per_value)
    width = 2 if pooling == "mean+std" else 1
    outputs = int(n_clips * max(num_layers, 1) * hidden_size * width * 4 * max(1, n_poolings))
    total = weights + activations + outputs
    return {"weights": weights, "activations": activations, "outputs": outputs, "total": total}


def memory_guidance(model: str, needed: int, available: int, n_clips: int, num_layers: int) -> str:
    """Advice for a run that does not fit: smaller model, fewer clips, fewer layers."""
    lines = [
        f"{model}: the extraction needs about {needed / 2**30:.2f} GiB but only "
        f"{available / 2**30:.2f} GiB is free. To fit:"
    ]
    smaller = [hub_id for hub_id, spec in KNOWN_SPEECH_MODELS.items() if spec["params_m"] <= 100 and hub_id != model][
        :4
    ]
    lines.append(f"  - use a smaller model (e.g. {', '.join(smaller)}), or load it in float16 (dtype)")
    lines.append(f"  - take fewer samples per word (now {n_clips} clips in all) or cap clip length (max_seconds)")
    lines.append(f"  - keep fewer layers (now {num_layers}), e.g. every other layer")
    lines.append("  - on a GPU, close other notebooks; on CPU, free RAM or run on a machine with more")
    return "\n".join(lines)


def _memory_family(adapter) -> str:
    """The ``family`` for the memory estimate: Whisper in clip mode runs the clip's frames only."""
    if adapter.family == "whisper" and getattr(adapter, "whisper_mode", "padded") == "clip":
        return "whisper-clip"
    return adapter.family


def check_extraction_memory(
    adapter,
    n_clips: int,
    num_layers: int,
    max_clip_seconds: float,
    pooling: str = "mean",
    available: int | None = None,
    n_poolings: int = 1,
    batch_size: int = 1,
) -> dict:
    """Estimate the memory of an extraction with ``adapter``; print guidance when it is short.

    Returns the estimate with ``available`` and ``fits`` added. Never raises: the estimate is
    approximate, and a real out-of-memory error is caught during extraction.
    """
    estimate = estimate_extraction_memory(
        adapter.num_parameters,
        adapter.hidden_size or 512,
        num_layers,
        n_clips,
        max_clip_seconds,
        adapter.frame_rate,
        pooling,
        _memory_family(adapter),
        n_poolings=n_poolings,
        batch_size=batch_size if adapter.family == "whisper" else 1,
    )
    available = available_memory_bytes(adapter.device) if available is None else int(available)
    estimate["available"] = available
    estimate["fits"] = bool(available == 0 or estimate["total"] < 0.8 * available)
    if not estimate["fits"]:
        print("WARNING " + memory_guidance(adapter.name, estimate["total"], available, n_clips, num_layers))
    return estimate


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(error, oom):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _extraction_memory_error(
    adapter, error, n_layers: int, n_clips: int, longest: int, pooling: str, batch_size: int, cache_dir
):
    """The ``ExtractionMemoryError`` for an out-of-memory ``error``: what the run needs and what to change."""
    needed = estimate_extraction_memory(
        adapter.num_parameters,
        adapter.hidden_size or 512,
        n_layers,
        n_clips,
        max(longest / adapter.sample_rate, 1.0),
        adapter.frame_rate,
        pooling,
        _memory_family(adapter),
        batch_size=batch_size,
    )["total"]
    return ExtractionMemoryError(
        f"out of memory while extracting {adapter.name} ({type(error).__name__}: {error}).\n"
        + memory_guidance(adapter.name, needed, available_memory_bytes(adapter.device), n_clips, n_layers)
        + ("\nProgress so far is cached; rerun to resume." if cache_dir else "")
    )


# %% [markdown]
# ## The cache
#
# One vector-cache folder per model (name and weights hash), layer set and pooling under
# `cache_dir` (made absolute, and printed): one array per layer, one row per clip, with the
# clip's content fingerprint. Rows are saved every `checkpoint_every` clips, so a checkpoint
# written mid-run is also what a resumed run starts from; clips cached earlier but not asked for
# now are kept for the next run.


# %%
def layer_cache_path(cache_dir, model: str, layers, pooling: str, config: dict | None = None) -> Path:
    """The cache folder of ``model`` x ``layers`` x ``pooling`` (x ``config``'s hash) under ``cache_dir``."""
    layer_key = hashlib.sha256("|".join(map(str, layers)).encode()).hexdigest()[:10]
    suffix = f"-{vector_cache_key(config)}" if config is not None else ""
    return Path(cache_dir).expanduser().absolute() / _slug(model) / f"{_slug(pooling)}__{layer_key}{suffix}"


def _layer_cache_open(folder: Path, config: dict, fingerprints: dict, layers: list) -> dict:
    """The reusable part of a cache: done paths, rows per layer, earlier failures, prior timings."""
    cache = vector_cache_open(folder, config, label=f"Layer {config['model']} {config['pooling']}")
    if cache["files"] and any(layer not in cache["arrays"] for layer in layers):
        print(f"Layer cache {folder} lacks layer arrays {sorted(set(layers) - set(cache['arrays']))}; recomputing")
        cache = dict(cache, arrays={}, files=[], fingerprints=[], failed=[])
    reusable, old_failed = vector_cache_reusable(cache, fingerprints)
    done = [p for p in fingerprints if p in reusable]
    rows = {layer: [cache["arrays"][layer][reusable[p]] for p in done] for layer in layers}
    requested = set(fingerprints)
    others = [(f, fp, i) for i, (f, fp) in enumerate(zip(cache["files"], cache["fingerprints"])) if f not in requested]
    return {
        "done": done,
        "rows": rows,
        "failures": [{"path": p, "error": old_failed[p]["error"]} for p in fingerprints if p in old_failed],
        "others": {
            "files": [f for f, _, _ in others],
            "fingerprints": [fp for _, fp, _ in others],
            "rows": {layer: cache["arrays"][layer][[i for _, _, i in others]] for layer in layers} if others else {},
            "failed": [item for item in cache["failed"] if item["path"] not in requested],
        },
        "meta": cache["metadata"],
    }


def _layer_cache_write(folder: Path, config: dict, st: dict, fingerprints: dict, timings: dict) -> None:
    """Save the clips done so far (plus the kept rows of clips not asked for this time)."""
    others = st["others"]
    arrays = {}
    for layer in config["layers"]:
        kept = others["rows"][layer] if others["files"] else None
        rows = st["rows"][layer]
        block = np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0 if kept is None else kept.shape[1]))
        arrays[layer] = block if kept is None else np.concatenate([block, kept]).astype(np.float32)
    failed = [dict(item, fingerprint=fingerprints.get(item["path"])) for item in st["failures"]]
    vector_cache_save(
        folder,
        arrays,
        {
            "dataset": "layer_embeddings",
            "files": list(st["done"]) + others["files"],
            "fingerprints": [fingerprints[p] for p in st["done"]] + others["fingerprints"],
            "failed": failed + others["failed"],
            **timings,
        },
        config,
    )


def _layer_cache_states(model: str, paths, wanted, poolings, base: dict, cache_dir, fingerprints: dict) -> dict:
    """Per pooling: what its cache already holds (rows, failures, timings) and where it is written."""
    state = {}
    for pooling in poolings:
        config = dict(base, pooling=pooling)
        folder = layer_cache_path(cache_dir, model, wanted, pooling, config) if cache_dir else None
        if folder is not None:
            st = _layer_cache_open(folder, config, fingerprints, wanted)
        else:
            st = {"done": [], "rows": {layer: [] for layer in wanted}, "failures": [], "others": {}, "meta": {}}
        processed = set(st["done"]) | {f["path"] for f in st["failures"]}
        if processed:
            print(f"{model}: {len(processed)} clip(s) from cache {folder.name} ({pooling})")
        state[pooling] = dict(
            st,
            config=config,
            path=folder,
            processed=processed,
            cached=len(processed) == len(paths),
            prior_seconds=float(st["meta"].get("seconds", 0.0)),
            prior_audio=float(st["meta"].get("audio_seconds", 0.0)),
        )
    return state


# %% [markdown]
# ## Extraction


# %%
def extract_layer_embeddings(
    adapter,
    paths,
    layers=None,
    pooling: str = "mean",
    cache_dir=None,
    max_seconds: float | None = None,
    checkpoint_every: int = 100,
    progress: bool = True,
    batch_size: int = 1,
) -> LayerEmbeddingSet:
    """Pooled embeddings of every clip in ``paths`` for the ``layers`` of ``adapter``.

    ``layers``: names as in ``adapter.layer_names`` (ints or strings; None: all). A clip that
    cannot be loaded is skipped and listed in ``failures``. With ``cache_dir`` the result is
    cached (and checkpointed every ``checkpoint_every`` clips) and validated on reuse.
    ``batch_size``: clips per forward pass (Whisper batches them; other families run clip by clip).
    """
    return extract_layer_embeddings_pooled(
        adapter, paths, layers, [pooling], cache_dir, max_seconds, checkpoint_every, progress, batch_size
    )[pooling]


def _check_poolings(poolings) -> list:
    poolings = [poolings] if isinstance(poolings, str) else list(dict.fromkeys(poolings))
    bad = [p for p in poolings if p not in LAYER_POOLINGS]
    if bad or not poolings:
        raise ValueError(f"unknown pooling {bad or poolings!r}; choose one of {LAYER_POOLINGS}")
    return poolings


# %% [markdown]
# ## One pass over the clips for several poolings
#
# Clips are loaded, run through the model in batches and pooled once per pooling; each pooling's
# cache is checkpointed along the way, and an out-of-memory error stops with advice instead of a
# traceback.


# %%
def extract_layer_embeddings_pooled(
    adapter,
    paths,
    layers=None,
    poolings=("mean",),
    cache_dir=None,
    max_seconds: float | None = None,
    checkpoint_every: int = 100,
    progress: bool = True,
    batch_size: int = 1,
) -> dict:
    """``{pooling: LayerEmbeddingSet}`` for several poolings from one pass over the clips.

    Each pooling has its own cache file; a clip is run through the model only if some
    pooling still lacks it. ``batch_size`` clips go through the model together (Whisper
    batches them, each clip's frames trimmed to its own length; other families run clip by
    clip); the pooled vectors do not depend on it.
    """
    from tqdm.auto import tqdm

    poolings = _check_poolings(poolings)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number of at least 1, not {batch_size!r}")
    batch_size = int(batch_size)
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("extract_layer_embeddings got no clips")
    order = ordered_layer_names(adapter)
    wanted = order if layers is None else [str(layer) for layer in layers]
    adapter_keys = adapter._check_layers(wanted)  # raises a clear error for an unknown layer
    layer_of = dict(zip(wanted, adapter_keys))
    wanted = [name for name in order if name in layer_of] + [n for n in wanted if n not in order]
    base = {
        "kind": "layer_embeddings",
        "version": LAYER_CACHE_VERSION,
        "model": adapter.name,
        "model_hash": adapter.fingerprint(),
        "layers": wanted,
        "max_seconds": max_seconds,
    }
    fingerprints = {p: vector_cache_fingerprint(p) for p in paths} if cache_dir else {}
    if cache_dir:
        print(f"{adapter.name}: layer cache in {Path(cache_dir).expanduser().absolute()}")
    state = _layer_cache_states(adapter.name, paths, wanted, poolings, base, cache_dir, fingerprints)
    todo = [p for p in paths if any(p not in st["processed"] for st in state.values())]

    def checkpoint():
        elapsed = time.perf_counter() - start
        for st in state.values():
            if st["path"] and (st["done"] or st["failures"]):
                timings = {"seconds": st["prior_seconds"] + elapsed, "audio_seconds": st["prior_audio"] + audio_seconds}
                _layer_cache_write(st["path"], st["config"], st, fingerprints, timings)

    audio_seconds, since_checkpoint, longest = 0.0, 0, 0
    keys = [layer_of[name] for name in wanted]
    start = time.perf_counter()
    label = "/".join(poolings)
    bar = tqdm(
        total=len(todo), desc=f"{Path(adapter.name).name} ({label})", disable=not progress or not todo, leave=False
    )
    try:
        for first in range(0, len(todo), batch_size):
            group = todo[first : first + batch_size]
            loaded = []
            for path in group:
                try:
                    loaded.append((path, load_audio(path, sr=adapter.sample_rate, max_seconds=max_seconds)))
                except AudioLoadError as error:
                    for st in state.values():
                        if path not in st["processed"]:
                            st["failures"].append({"path": path, "error": error.problem})
            if loaded:
                longest = max([longest] + [len(waveform) for _, waveform in loaded])
                if len(loaded) == 1:
                    batch_states = [adapter.hidden_states(loaded[0][1], keys)]
                else:  # Whisper runs the clips together; other families clip by clip
                    batch_states = adapter.hidden_states_batch([w for _, w in loaded], keys, batch_size=batch_size)
            for (path, waveform), states in zip(loaded, batch_states if loaded else []):
                audio_seconds += len(waveform) / adapter.sample_rate
                for pooling, st in state.items():
                    if path in st["processed"]:
                        continue
                    for name in wanted:
                        st["rows"][name].append(pool_frames(states[layer_of[name]], pooling).astype(np.float32))
                    st["done"].append(path)
                since_checkpoint += 1
            bar.update(len(group))
            if cache_dir and since_checkpoint >= checkpoint_every:
                checkpoint()
                since_checkpoint = 0
    except BaseException as error:  # checkpoint on any stop (Ctrl-C too); out-of-memory errors get advice
        if cache_dir:
            checkpoint()
        if _is_out_of_memory(error):
            raise _extraction_memory_error(
                adapter, error, len(wanted), len(paths), longest, poolings[-1], batch_size, cache_dir
            ) from error
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - start if todo else 0.0
    if cache_dir and (todo or not all(st["cached"] for st in state.values())):
        checkpoint()
    results = {}
    for pooling, st in state.items():
        failures = st["failures"]
        if failures and pooling == poolings[0]:
            print(
                f"{adapter.name}: skipped {len(failures)} unreadable clip(s), e.g. "
                f"{failures[0]['path']}: {failures[0]['error']}"
            )
        position = {p: i for i, p in enumerate(st["done"])}
        kept = [p for p in paths if p in position]
        if not kept:
            raise ValueError(f"{adapter.name}: none of the {len(paths)} clips could be loaded")
        index = [position[p] for p in kept]
        embeddings = {name: np.stack(st["rows"][name])[index] for name in wanted}
        results[pooling] = LayerEmbeddingSet(
            model=adapter.name,
            pooling=pooling,
            layers=wanted,
            paths=kept,
            embeddings=embeddings,
            failures=failures,
            seconds=seconds,
            audio_seconds=audio_seconds,
            from_cache=not todo,
            info=adapter.info(),
            compute_seconds=st["prior_seconds"] + seconds,
            compute_audio_seconds=st["prior_audio"] + audio_seconds,
        )
    return results


# %% [markdown]
# ## A baseline without a model
#
# MFCC statistics of the same clips, pooled the same way, so every layer is compared against what
# plain acoustic features already separate.


# %%
def mfcc_baseline_embeddings(
    paths,
    pooling="mean",
    sr: int = 16000,
    n_mfcc: int = 40,
    delta_order: int = 1,
    max_seconds: float | None = None,
    progress: bool = True,
):
    """MFCCs (+ deltas) pooled like a model layer: the model-free reference, model ``"mfcc"``.

    ``pooling`` a string: one ``LayerEmbeddingSet``; a list: ``{pooling: LayerEmbeddingSet}``.
    """
    from tqdm.auto import tqdm

    poolings = _check_poolings(pooling)
    rows, kept, failures, audio_seconds = {p: [] for p in poolings}, [], [], 0.0
    start = time.perf_counter()
    for path in tqdm([str(p) for p in paths], desc="mfcc", disable=not progress, leave=False):
        try:
            waveform = load_audio(path, sr=sr, max_seconds=max_seconds)
        except AudioLoadError as error:
            failures.append({"path": path, "error": error.problem})
            continue
        audio_seconds += len(waveform) / sr
        frames = mfcc_features(waveform, sr, n_mfcc=n_mfcc, delta_order=delta_order, n_fft=512, hop_length=160).T
        for p in poolings:
            rows[p].append(pool_frames(frames, p).astype(np.float32))
        kept.append(path)
    if not kept:
        raise ValueError(f"mfcc baseline: none of the {len(paths)} clips could be loaded")
    info = {
        "name": "mfcc",
        "family": "mfcc",
        "num_parameters": 0,
        "hidden_size": n_mfcc * (1 + delta_order),
        "sample_rate": sr,
        "frame_rate": sr / 160,
        "layers": ["mfcc"],
        "weights": None,  # no model: nothing trained or random
        "whisper_mode": None,
        "label": "mfcc",
    }
    seconds = time.perf_counter() - start
    sets = {
        p: LayerEmbeddingSet(
            model="mfcc",
            pooling=p,
            layers=["mfcc"],
            paths=kept,
            embeddings={"mfcc": np.stack(rows[p])},
            failures=failures,
            seconds=seconds,
            audio_seconds=audio_seconds,
            info=info,
            compute_seconds=seconds,
            compute_audio_seconds=audio_seconds,
        )
        for p in poolings
    }
    return sets[pooling] if isinstance(pooling, str) else sets


# %% [markdown]
# ## Layer modes: each layer, or layers concatenated


# %%
def concatenate_layer_embeddings(embeddings: dict, layers=None, standardize: bool = True) -> np.ndarray:
    """Concatenate ``[clips, dims]`` layers side by side (each z-scored first when ``standardize``)."""
    layers = list(embeddings) if layers is None else [str(layer) for layer in layers]
    missing = [layer for layer in layers if layer not in embeddings]
    if missing:
        raise KeyError(f"no embeddings for layer(s) {missing}; have {list(embeddings)}")
    blocks = []
    for layer in layers:
        x = np.asarray(embeddings[layer], dtype=np.float32)
        if standardize:
            x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
        blocks.append(x)
    return np.concatenate(blocks, axis=1)


def layer_mode_views(embeddings: dict, mode: str = "single") -> dict:
    """``{name: [clips, dims]}`` for ``mode`` ``"single"`` (each layer), ``"concat"`` or ``"both"``.

    The concatenation of all layers is named ``"concat"``.
    """
    if mode not in ("single", "concat", "both"):
        raise ValueError(f"layer_mode must be 'single', 'concat' or 'both', not {mode!r}")
    views = {} if mode == "concat" else dict(embeddings)
    if mode in ("concat", "both") and len(embeddings) > 1:
        views["concat"] = concatenate_layer_embeddings(embeddings)
    elif mode == "concat":
        views = dict(embeddings)
    return views


def resolve_layer_request(adapter, request=None) -> list:
    """The layers of ``adapter`` asked for by ``request``, as strings in input-to-output order.

    ``request``: None (all layers); a list applied to every model (ints, strings, negative
    ints counting from the last transformer layer; names a model lacks are skipped with a
    note); or a dict ``{model name: list}`` (models missing from it get all layers).
    """
    order = ordered_layer_names(adapter)
    if isinstance(request, dict):
        request = request.get(adapter.name, request.get(Path(str(adapter.name)).name))
    if request is None:
        return order
    if isinstance(request, (str, int)):
        request = [request]
    chosen, skipped = [], []
    for layer in request:
        try:
            key = str(adapter._check_layers([layer])[0])
        except ValueError:
            skipped.append(str(layer))
            continue
        if key not in chosen:
            chosen.append(key)
    if skipped:
        print(f"{adapter.name}: no layer(s) {skipped}; available: {order}")
    if not chosen:
        raise ValueError(f"{adapter.name}: none of the requested layers {list(request)} exist; available: {order}")
    return [name for name in order if name in chosen]
