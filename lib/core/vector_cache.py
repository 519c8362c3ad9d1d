# %% [markdown]
# # Per-clip vector cache: one folder per data set and configuration, updated incrementally
#
# Computing embeddings (or any per-clip vectors: pooled layers, log-mel images) is the slow
# step of most notebooks, so they are cached in one folder per data set and configuration,
# `<cache_root>/<dataset>/<label>-<key>/`:
#
# - one `.npy` per named array, `[N, D]` float32, row `i` belongs to `metadata["files"][i]`
#   (the explorer stores one array, `embeddings`; the layer notebook one per layer);
# - `metadata.json`: the files, a content fingerprint per file (size + SHA-256 of the file, or
#   of three 64-KiB samples for files over 1 MiB), the files that failed and why, timestamps,
#   the SHA-256 and shape of every array;
# - `config.json`: the configuration (model name or weights hash, layer, pooling, feature
#   parameters). The folder's `<key>` is a hash of it, so a changed model or setting never
#   reuses stale vectors.
#
# `vector_cache_update` brings a cache up to date with a list of files: unchanged files are read
# back, new or modified files are computed (only those, optionally in checkpointed chunks, so an
# interrupted run resumes), files not asked for this time are kept while they exist (removed files
# are dropped), and files that failed before and have not changed are not retried. A second run
# with nothing changed computes nothing.
#
# Safety: writes go to a staging folder that replaces the old one by rename, so a killed write
# leaves the previous cache readable; one writer at a time (a file lock beside the folder), so two
# processes can share a cache; staging folders left by a killed writer are removed on the next
# open. Any unreadable or inconsistent file (truncated `.npy`, bad JSON, wrong shape or SHA-256,
# another configuration) is a miss: the file is named, and the cache is rebuilt.
#
# `embed_cache_*` are the explorer's names for the single-array case.

# %%
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from lib.core.atomic_io import _current_umask, atomic_save_npy, atomic_write_json, file_lock

VECTOR_CACHE_VERSION = 2
EMBED_CACHE_VERSION = VECTOR_CACHE_VERSION
# every way a damaged cache file can fail to read: all of them mean "recompute"
VECTOR_CACHE_READ_ERRORS = (
    OSError,
    ValueError,  # includes UnicodeDecodeError and json.JSONDecodeError
    EOFError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    zipfile.BadZipFile,
)
_VECTOR_CACHE_FULL_HASH_BYTES = 1 << 20
_VECTOR_CACHE_SAMPLE_BYTES = 1 << 16


def vector_cache_key(config: dict) -> str:
    """Stable 16-hex-digit hash of a configuration (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def vector_cache_fingerprint(path) -> str:
    """Content fingerprint of a file: ``"<size>:<sha256 prefix>"`` (``"missing"`` if unreadable).

    Files up to 1 MiB are hashed whole; larger ones through their first, middle and last 64 KiB
    (plus the size), so a changed file is caught even when its size and modification time are
    kept (``cp -p``, ``rsync -t``, a re-export), at a cost far below decoding the audio.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size <= _VECTOR_CACHE_FULL_HASH_BYTES:
                digest.update(handle.read())
            else:
                for offset in (0, size // 2, size - _VECTOR_CACHE_SAMPLE_BYTES):
                    handle.seek(offset)
                    digest.update(handle.read(_VECTOR_CACHE_SAMPLE_BYTES))
    except OSError:
        return "missing"
    return f"{size}:{digest.hexdigest()[:32]}"


def _vector_cache_slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")
    return slug[-60:] or "encoder"


def vector_cache_folder(cache_root, dataset_name: str, config: dict) -> Path:
    """The folder holding the cache of ``dataset_name`` computed with ``config`` (an absolute path)."""
    label = config.get("name") or config.get("kind") or "encoder"
    return (
        Path(cache_root).expanduser().absolute()
        / _vector_cache_slug(dataset_name)
        / f"{_vector_cache_slug(label)}-{vector_cache_key(config)}"
    )


def _array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _vector_cache_lock(folder: Path) -> Path:
    return folder.parent / f"{folder.name}.lock"


def _vector_cache_array_files(names) -> dict:
    files, used = {}, set()
    for i, name in enumerate(names):
        stem = _vector_cache_slug(name)
        file = f"{stem}.npy" if f"{stem}.npy" not in used and stem not in ("metadata", "config") else f"{i}-{stem}.npy"
        used.add(file)
        files[name] = file
    return files


# %% [markdown]
# ## Reading and writing one cache folder


# %%
def vector_cache_cleanup(folder) -> list:
    """Repair and tidy what killed writers left beside ``folder`` (call with its lock held).

    A folder moved aside but not replaced (killed between the two renames) is restored; other
    staging (``.new-*``) and backup (``.old-*``) folders are removed. Returns what was removed.
    """
    folder = Path(folder)
    if not folder.parent.exists():
        return []
    backups = sorted(folder.parent.glob(f".{folder.name}.old-*"))
    if not folder.exists() and backups:
        os.replace(backups.pop(), folder)
        print(f"Vector cache {folder}: restored the copy a killed write had moved aside")
    removed = []
    for leftover in backups + sorted(folder.parent.glob(f".{folder.name}.new-*")):
        shutil.rmtree(leftover, ignore_errors=True)
        removed.append(leftover.name)
    return removed


def _vector_cache_read(folder: Path, config: dict | None):
    """``(arrays, metadata)`` of a valid folder, else ``(None, reason naming the file)``."""
    if not folder.exists():
        return None, "no cache yet"
    current = folder / "config.json"
    try:
        with open(current, encoding="utf-8") as handle:
            stored_config = json.load(handle)
        current = folder / "metadata.json"
        with open(current, encoding="utf-8") as handle:
            metadata = json.load(handle)
        if config is not None and json.loads(json.dumps(config, default=str)) != stored_config.get("encoder"):
            return None, f"{folder / 'config.json'}: the configuration changed"
        if metadata.get("version") != VECTOR_CACHE_VERSION:
            return None, f"{current}: cache format {metadata.get('version')} != {VECTOR_CACHE_VERSION}"
        files = list(metadata["files"])
        if len(metadata["fingerprints"]) != len(files):
            return None, f"{current}: {len(metadata['fingerprints'])} fingerprints for {len(files)} files"
        arrays = {}
        for name, entry in metadata["arrays"].items():
            current = folder / entry["file"]
            array = np.load(current, allow_pickle=False)
            if array.ndim != 2 or array.shape[0] != len(files) or list(array.shape) != list(entry["shape"]):
                return None, f"{current}: shape {array.shape} does not match {len(files)} files x {entry['shape']}"
            if _array_sha256(array) != entry["sha256"]:
                return None, f"{current}: does not match the SHA-256 recorded in metadata.json"
            arrays[name] = array
    except VECTOR_CACHE_READ_ERRORS as error:
        return None, f"{current} is unreadable ({type(error).__name__}: {str(error)[:200]})"
    return arrays, metadata


def vector_cache_load(folder, config: dict | None = None):
    """Read and validate a cache folder; return ``(arrays, metadata)`` or ``(None, reason)``.

    ``arrays``: ``{name: [N, D] float32}``. Validation: every file exists and parses,
    ``config.json`` equals ``config`` (when given), each array's shape matches the file list
    and its SHA-256 the one recorded. The reason names the file that failed. Leftovers of a
    killed write are repaired or removed first (under the folder's lock).
    """
    folder = Path(folder)
    if folder.parent.exists():
        with file_lock(_vector_cache_lock(folder), what=f"vector cache {folder}"):
            vector_cache_cleanup(folder)
            return _vector_cache_read(folder, config)
    return None, "no cache yet"


def vector_cache_save(folder, arrays: dict, metadata: dict, config: dict) -> Path:
    """Write a complete cache atomically, one writer at a time.

    Under the folder's lock: the arrays and JSON files go to a staging folder, the old folder is
    moved aside, the staging folder renamed into place, the old one deleted. A failure before the
    swap leaves the old cache untouched; a kill between the renames is repaired on the next open.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    arrays = {str(name): np.ascontiguousarray(array, dtype=np.float32) for name, array in arrays.items()}
    files = _vector_cache_array_files(arrays)
    metadata = dict(
        metadata,
        version=VECTOR_CACHE_VERSION,
        n=len(metadata.get("files", [])),
        arrays={
            name: {"file": files[name], "sha256": _array_sha256(array), "shape": list(array.shape)}
            for name, array in arrays.items()
        },
    )
    with file_lock(_vector_cache_lock(folder), what=f"vector cache {folder}"):
        vector_cache_cleanup(folder)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=folder.parent))
        try:
            os.chmod(staging, 0o777 & ~_current_umask())  # mkdtemp makes 0700; a folder follows the umask
            for name, array in arrays.items():
                atomic_save_npy(staging / files[name], array)
            atomic_write_json(staging / "metadata.json", metadata)
            atomic_write_json(
                staging / "config.json",
                {"encoder": config, "key": vector_cache_key(config), "version": VECTOR_CACHE_VERSION},
            )
            backup = None
            if folder.exists():
                backup = folder.parent / f".{folder.name}.old-{time.time_ns()}"
                os.replace(folder, backup)
            os.replace(staging, folder)
            if backup is not None:
                shutil.rmtree(backup, ignore_errors=True)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return folder


# %% [markdown]
# ## Incremental use: reuse what is unchanged, compute the rest


# %%
def vector_cache_open(folder, config: dict, label: str = "Vector", verbose: bool = True) -> dict:
    """The cache's content as a dict (empty when there is none or it is unusable).

    ``{"arrays": {name: [N, D]}, "files", "fingerprints", "failed", "metadata", "reason"}``;
    ``reason`` says why an existing cache was not usable (it was named and will be rebuilt).
    """
    arrays, metadata = vector_cache_load(folder, config)
    if arrays is None:
        if verbose and metadata != "no cache yet":
            print(f"{label} cache rebuilt: {metadata}")
        reason = None if metadata == "no cache yet" else metadata
        return {"arrays": {}, "files": [], "fingerprints": [], "failed": [], "metadata": {}, "reason": reason}
    return {
        "arrays": arrays,
        "files": list(metadata["files"]),
        "fingerprints": list(metadata["fingerprints"]),
        "failed": list(metadata.get("failed", [])),
        "metadata": metadata,
        "reason": None,
    }


def vector_cache_reusable(state: dict, fingerprints: dict, retry_failed: bool = False) -> tuple:
    """``(rows, failed)``: cached row per unchanged file, and earlier failures not to retry.

    ``fingerprints``: ``{path: vector_cache_fingerprint(path)}`` of the files wanted now.
    """
    rows = {f: i for i, (f, fp) in enumerate(zip(state["files"], state["fingerprints"])) if fingerprints.get(f) == fp}
    failed = {
        item["path"]: item
        for item in state["failed"]
        if not retry_failed and fingerprints.get(item["path"]) == item.get("fingerprint")
    }
    return rows, failed


def _vector_cache_as_arrays(result) -> dict:
    return dict(result) if isinstance(result, dict) else {"embeddings": result}


# %% [markdown]
# ## Updating a cache: only new or changed files are computed
#
# `vector_cache_update` reuses the rows of unchanged files, computes the rest in chunks and
# checkpoints after each chunk, so an interrupted run resumes where it stopped.


# %%
def vector_cache_update(
    paths,
    compute_fn,
    folder,
    config: dict,
    model_info: dict | None = None,
    retry_failed: bool = False,
    verbose: bool = True,
    keep_unrequested: bool = False,
    checkpoint_every: int | None = None,
    label: str = "Vectors",
    dataset_name: str | None = None,
):
    """Bring the cache in ``folder`` up to date with ``paths``; return ``(arrays, files, report)``.

    ``compute_fn(paths) -> (arrays, ok_paths, failures)`` computes new rows: ``arrays`` is
    ``{name: [n, D]}`` (or one ``[n, D]`` array, stored as ``"embeddings"``), ``failures``
    ``[{"path", "error"}]``. ``arrays[name][i]`` belongs to ``files[i]`` (the readable ``paths``
    in their given order); ``report`` counts what was reused, computed, dropped and failed.
    ``checkpoint_every``: compute in chunks of that many files and save after each, so an
    interrupted run resumes. Rows of cached files not asked for now are kept while the file is
    still on disk (a 200-clip run does not throw away a 600-clip run's vectors) and dropped once
    it is gone; ``keep_unrequested``: keep them even then (a cache of files that come and go).
    """
    start = time.perf_counter()
    paths = [str(p) for p in paths]
    if len(set(paths)) != len(paths):
        raise ValueError("vector_cache_update: the file list contains duplicates")
    folder = Path(folder)
    state = vector_cache_open(folder, config, label, verbose)
    fingerprints = {p: vector_cache_fingerprint(p) for p in paths}
    rows, old_failed = vector_cache_reusable(state, fingerprints, retry_failed)
    todo = [p for p in paths if p not in rows and p not in old_failed]
    requested = set(paths)
    unrequested = [f for f in state["files"] if f not in requested]
    kept_others = unrequested if keep_unrequested else [f for f in unrequested if os.path.exists(f)]
    removed = [f for f in unrequested if f not in kept_others]
    new_rows, new_arrays, failures = {}, {}, dict(old_failed)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    cached_index = {f: i for i, f in enumerate(state["files"])}
    old_fingerprints = dict(zip(state["files"], state["fingerprints"]))

    def assemble(selection):
        """Arrays for ``selection`` (paths with a cached or a new row), in that order."""
        out = {}
        for name in list(state["arrays"]) or list(new_arrays):
            result = np.zeros((len(selection), _vector_cache_dim(state, new_arrays, name)), np.float32)
            cached = [(j, cached_index[p]) for j, p in enumerate(selection) if p not in new_rows]
            if cached:
                result[[j for j, _ in cached]] = state["arrays"][name][[i for _, i in cached]]
            for j, p in enumerate(selection):
                if p in new_rows:
                    chunk, i = new_rows[p]
                    result[j] = new_arrays[name][chunk][i]
            out[name] = result
        return out

    def contents():
        files = [p for p in paths if p in rows or p in new_rows] + kept_others
        failed = [failures[p] for p in paths if p in failures]
        failed += [
            item
            for item in state["failed"]
            if item["path"] not in requested and (keep_unrequested or os.path.exists(item["path"]))
        ]
        return files, [fingerprints.get(f) or old_fingerprints[f] for f in files], failed

    def save():
        files, file_fingerprints, failed = contents()
        vector_cache_save(
            folder,
            assemble(files),
            {
                "dataset": dataset_name or state["metadata"].get("dataset") or folder.parent.name,
                "files": files,
                "fingerprints": file_fingerprints,
                "failed": failed,
                "created": state["metadata"].get("created") or now,
                "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "model_info": model_info or state["metadata"].get("model_info") or {},
            },
            config,
        )

    step = max(1, int(checkpoint_every)) if checkpoint_every else max(1, len(todo))
    for chunk_index, begin in enumerate(range(0, len(todo), step)):
        chunk = todo[begin : begin + step]
        result, ok_paths, chunk_failures = compute_fn(chunk)
        result = {name: np.asarray(a, dtype=np.float32) for name, a in _vector_cache_as_arrays(result).items()}
        _vector_cache_check_chunk(result, ok_paths, state, new_arrays)
        for name, array in result.items():
            new_arrays.setdefault(name, {})[chunk_index] = array
        for i, p in enumerate(ok_paths):
            new_rows[str(p)] = (chunk_index, i)
        for item in chunk_failures:
            path = str(item["path"])
            failures[path] = {"path": path, "error": item["error"], "fingerprint": fingerprints.get(path)}
        if checkpoint_every and begin + step < len(todo):
            save()
    files = [p for p in paths if p in rows or p in new_rows]
    arrays = assemble(files)
    stored_files, stored_fingerprints, stored_failed = contents()
    changed = (
        bool(todo)
        or state["reason"] is not None
        or stored_files != state["files"]
        or stored_fingerprints != state["fingerprints"]
        or [item["path"] for item in stored_failed] != [item["path"] for item in state["failed"]]
    )
    if changed:
        save()
    report = {
        "cache_dir": str(folder),
        "n_requested": len(paths),
        "n_embedded": len(files),
        "n_cached": sum(1 for p in paths if p in rows),
        "n_computed": len(todo),
        "n_removed": len(removed),
        "n_failed": len(failures),
        "failed": [{"path": p, "error": failures[p]["error"]} for p in paths if p in failures],
        "rebuilt": state["reason"],
        "written": changed,
        "seconds": time.perf_counter() - start,
        "timestamp": now,
    }
    if verbose:
        print(
            f"{label}: {report['n_cached']} from cache, {report['n_computed']} computed, "
            f"{report['n_removed']} dropped, {report['n_failed']} failed  ({folder})"
        )
    return arrays, files, report


def _vector_cache_dim(state: dict, new_arrays: dict, name: str) -> int:
    if name in state["arrays"] and state["arrays"][name].ndim == 2:
        return int(state["arrays"][name].shape[1])
    shaped = [a for a in new_arrays.get(name, {}).values() if a.ndim == 2]
    with_rows = [a for a in shaped if a.shape[0] > 0]  # a chunk where every clip failed may carry no width
    return int((with_rows or shaped)[0].shape[1]) if shaped else 0


def _vector_cache_check_chunk(result: dict, ok_paths, state: dict, new_arrays: dict) -> None:
    names = set(state["arrays"]) or set(new_arrays)
    if names and set(result) != names and ok_paths:
        raise ValueError(f"compute_fn returned arrays {sorted(result)}, the cache holds {sorted(names)}")
    for name, array in result.items():
        rows = 0 if array.size == 0 and array.ndim < 2 else array.shape[0]
        if rows != len(ok_paths) or (rows and array.ndim != 2):
            raise ValueError(f"compute_fn returned {len(ok_paths)} paths but {array.shape} values for {name!r}")
        dim = _vector_cache_dim(state, new_arrays, name)
        if rows and dim and array.shape[1] != dim:
            raise ValueError(f"compute_fn returned {array.shape[1]}-dim {name!r} vectors, the cache holds {dim}")


# %% [markdown]
# ## The explorer's names: one `embeddings` array per data set and encoder


# %%
embed_cache_key = vector_cache_key
embed_cache_fingerprint = vector_cache_fingerprint
embed_cache_dir = vector_cache_folder


def embed_cache_load(folder, config: dict | None = None):
    """``(embeddings [N, D], metadata)`` of a valid single-array cache, else ``(None, reason)``."""
    arrays, metadata = vector_cache_load(folder, config)
    if arrays is None:
        return None, metadata
    if "embeddings" not in arrays:
        return None, f"{folder}: no embeddings array (arrays: {sorted(arrays)})"
    return arrays["embeddings"], metadata


def embed_cache_save(folder, embeddings: np.ndarray, metadata: dict, config: dict) -> Path:
    """Write a single-array cache atomically (``vector_cache_save`` with ``{"embeddings": ...}``)."""
    return vector_cache_save(folder, {"embeddings": embeddings}, metadata, config)


def embed_cache_update(
    paths,
    compute_fn,
    cache_root,
    dataset_name: str,
    config: dict,
    model_info: dict | None = None,
    retry_failed: bool = False,
    verbose: bool = True,
):
    """Bring the cache of ``dataset_name`` x ``config`` up to date with ``paths``.

    ``compute_fn(paths) -> (embeddings [n, D], ok_paths, failures)``. Returns
    ``(embeddings, files, report)`` as ``vector_cache_update`` does, for the one array.
    """
    folder = vector_cache_folder(cache_root, dataset_name, config)
    arrays, files, report = vector_cache_update(
        paths,
        compute_fn,
        folder,
        config,
        model_info=model_info,
        retry_failed=retry_failed,
        verbose=verbose,
        label="Embeddings",
        dataset_name=dataset_name,
    )
    embeddings = arrays.get("embeddings")
    if embeddings is None:
        embeddings = np.zeros((0, 0), np.float32)
    return embeddings, files, report
