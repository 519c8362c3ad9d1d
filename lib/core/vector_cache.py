# %% [markdown]
# # Embedding cache: one folder per data set and model, updated incrementally
#
# Computing embeddings is the slow step of every exploration notebook, so they are cached
# per data set and per encoder in `<cache_dir>/<dataset>/<encoder>-<key>/`:
#
# - `embeddings.npy`: `[N, D]` float32, row `i` belongs to `metadata["files"][i]`;
# - `metadata.json`: the files, a fingerprint per file (size + modification time), the files
#   that failed and why, timestamps, the encoder's description, the SHA-256 of the array;
# - `config.json`: the encoder's configuration (model name or checkpoint content hash, layer,
#   pooling, feature parameters). The folder's `<key>` is a hash of it, so a changed model,
#   checkpoint or feature setting never reuses stale vectors.
#
# `embed_cache_update` brings a cache up to date with a list of files: unchanged files are read
# back, new or modified files are computed (only those), removed files are dropped, and files
# that failed before and have not changed are not retried. A second run with nothing changed
# computes nothing. Writes go to a staging folder that replaces the old one by rename, so a
# killed write leaves the previous cache readable; a cache that fails validation (wrong SHA,
# shapes, config) is reported and rebuilt, never silently used.

# %%
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from lib.core.atomic_io import atomic_save_npy, atomic_write_json

EMBED_CACHE_VERSION = 1


def embed_cache_key(config: dict) -> str:
    """Stable 16-hex-digit hash of an encoder configuration (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def embed_cache_fingerprint(path) -> str:
    """Cheap change detector for a file: ``"<size>:<mtime_ns>"`` (``"missing"`` if absent)."""
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _embed_cache_slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")
    return slug[-60:] or "encoder"


def embed_cache_dir(cache_root, dataset_name: str, config: dict) -> Path:
    """The folder holding the cache of ``dataset_name`` embedded with ``config``."""
    label = config.get("name") or config.get("kind") or "encoder"
    return (
        Path(cache_root).expanduser()
        / _embed_cache_slug(dataset_name)
        / f"{_embed_cache_slug(label)}-{embed_cache_key(config)}"
    )


def _array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def embed_cache_load(folder, config: dict | None = None):
    """Read and validate a cache folder; return ``(embeddings, metadata)`` or ``(None, reason)``.

    Validation: the three files exist and parse, ``config.json`` equals ``config`` (when given),
    the array's shape matches the file list and its SHA-256 matches the one recorded.
    A folder left by a write interrupted between its two renames is recovered first.
    """
    folder = Path(folder)
    if not folder.exists():
        backups = sorted(folder.parent.glob(f".{folder.name}.old-*")) if folder.parent.exists() else []
        if not backups:
            return None, "no cache yet"
        os.replace(backups[-1], folder)  # a write was killed between the two renames: restore the old one
    try:
        with open(folder / "config.json", encoding="utf-8") as handle:
            stored_config = json.load(handle)
        with open(folder / "metadata.json", encoding="utf-8") as handle:
            metadata = json.load(handle)
        embeddings = np.load(folder / "embeddings.npy", allow_pickle=False)
    except (OSError, ValueError) as error:
        return None, f"unreadable cache in {folder} ({type(error).__name__}: {error})"
    if config is not None and json.loads(json.dumps(config, default=str)) != stored_config.get("encoder"):
        return None, f"{folder}: the encoder configuration changed"
    if metadata.get("version") != EMBED_CACHE_VERSION:
        return None, f"{folder}: cache format {metadata.get('version')} != {EMBED_CACHE_VERSION}"
    files = metadata.get("files", [])
    if embeddings.ndim != 2 or embeddings.shape[0] != len(files) or len(metadata.get("fingerprints", [])) != len(files):
        return None, f"{folder}: embeddings shape {embeddings.shape} does not match {len(files)} files"
    if _array_sha256(embeddings) != metadata.get("embeddings_sha256"):
        return None, f"{folder}: embeddings.npy does not match the SHA-256 recorded in metadata.json"
    return embeddings, metadata


def embed_cache_save(folder, embeddings: np.ndarray, metadata: dict, config: dict) -> Path:
    """Write a complete cache atomically: a staging folder, then two renames.

    The old folder is moved aside, the new one renamed into place, and the old one deleted.
    Any failure before the swap leaves the old cache untouched; a kill between the two
    renames is repaired by ``embed_cache_load`` (it restores the moved-aside copy).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    metadata = dict(
        metadata,
        version=EMBED_CACHE_VERSION,
        embeddings_sha256=_array_sha256(embeddings),
        n=int(embeddings.shape[0]),
        dim=int(embeddings.shape[1]) if embeddings.ndim == 2 else 0,
    )
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=folder.parent))
    try:
        atomic_save_npy(staging / "embeddings.npy", embeddings)
        atomic_write_json(staging / "metadata.json", metadata)
        atomic_write_json(
            staging / "config.json", {"encoder": config, "key": embed_cache_key(config), "version": EMBED_CACHE_VERSION}
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

    ``compute_fn(paths) -> (embeddings [n, D], ok_paths, failures)`` computes new rows
    (``failures``: ``[{"path", "error"}]``). Returns ``(embeddings, files, report)``:
    ``embeddings[i]`` belongs to ``files[i]`` (the readable ``paths`` in their given order) and
    ``report`` counts what was reused, computed, dropped and failed, with the failures listed.
    """
    start = time.perf_counter()
    paths = [str(p) for p in paths]
    if len(set(paths)) != len(paths):
        raise ValueError("embed_cache_update: the file list contains duplicates")
    folder = embed_cache_dir(cache_root, dataset_name, config)
    cached, metadata = embed_cache_load(folder, config)
    if cached is None:
        if verbose and metadata != "no cache yet":
            print(f"Embedding cache rebuilt: {metadata}")
        cached, metadata = None, {"files": [], "fingerprints": [], "failed": [], "created": None}
    fingerprints = {p: embed_cache_fingerprint(p) for p in paths}
    rows = {
        f: i for i, (f, fp) in enumerate(zip(metadata["files"], metadata["fingerprints"])) if fingerprints.get(f) == fp
    }
    old_failed = {
        item["path"]: item
        for item in metadata.get("failed", [])
        if not retry_failed and fingerprints.get(item["path"]) == item.get("fingerprint")
    }
    todo = [p for p in paths if p not in rows and p not in old_failed]
    new_embeddings, new_ok, new_failures = None, [], []
    if todo:
        new_embeddings, new_ok, new_failures = compute_fn(todo)
        new_embeddings = np.asarray(new_embeddings, dtype=np.float32)
        if len(new_ok) != (0 if new_embeddings.size == 0 else new_embeddings.shape[0]):
            raise ValueError(f"compute_fn returned {len(new_ok)} paths but {new_embeddings.shape} embeddings")
    new_rows = {p: i for i, p in enumerate(new_ok)}
    failures = {p: item for p, item in old_failed.items()}
    for item in new_failures:
        failures[str(item["path"])] = {
            "path": str(item["path"]),
            "error": item["error"],
            "fingerprint": fingerprints.get(str(item["path"])),
        }
    vectors, files = [], []
    for p in paths:
        if p in rows:
            vectors.append(cached[rows[p]])
        elif p in new_rows:
            vectors.append(new_embeddings[new_rows[p]])
        else:
            continue
        files.append(p)
    dim = vectors[0].shape[0] if vectors else (cached.shape[1] if cached is not None and cached.ndim == 2 else 0)
    embeddings = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    requested = set(paths)
    removed = [f for f in metadata["files"] if f not in requested]
    changed = (
        bool(todo)
        or bool(removed)
        or files != metadata["files"]
        or sorted(failures) != sorted(item["path"] for item in metadata.get("failed", []))
    )
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if changed:
        embed_cache_save(
            folder,
            embeddings,
            {
                "dataset": dataset_name,
                "files": files,
                "fingerprints": [fingerprints[f] for f in files],
                "failed": [failures[p] for p in paths if p in failures],
                "created": metadata.get("created") or now,
                "updated": now,
                "model_info": model_info or metadata.get("model_info") or {},
            },
            config,
        )
    report = {
        "cache_dir": str(folder),
        "n_requested": len(paths),
        "n_embedded": len(files),
        "n_cached": sum(1 for p in paths if p in rows),
        "n_computed": len(todo),
        "n_removed": len(removed),
        "n_failed": len(failures),
        "failed": [{"path": p, "error": failures[p]["error"]} for p in paths if p in failures],
        "written": changed,
        "seconds": time.perf_counter() - start,
        "timestamp": now,
    }
    if verbose:
        print(
            f"Embeddings: {report['n_cached']} from cache, {report['n_computed']} computed, "
            f"{report['n_removed']} dropped, {report['n_failed']} failed  ({folder})"
        )
    return embeddings, files, report
