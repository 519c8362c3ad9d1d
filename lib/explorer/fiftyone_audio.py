# %% [markdown]
# # FiftyOne for audio: data sets, similarity, maps and views
#
# FiftyOne has no audio media type, so each clip becomes a **group** of two samples:
#
# - `spectrogram` (the default slice, an image): the PNG log-mel preview, with the clip's
#   `audio_filepath`, its embedding, an `fo.Classification` label, every metadata column of
#   the manifest and an `fo.GeoLocation`;
# - `playback` (a video): the spectrogram with a moving play-head and the clip as soundtrack,
#   stored with its `fo.VideoMetadata` so the App never needs `ffprobe`.
#
# A data set of N clips with playback videos therefore holds N groups and 2N samples; the App's
# grid shows one tile per group. Brain runs and views use the flattened spectrogram slice
# (`fo_clips_view`). Similarity uses the sklearn backend with explicit embeddings; that backend
# centres its index but not query vectors, so `fo_query_by_vector` centres (and normalises) the
# query itself. Maps (UMAP, t-SNE, PCA) are always computed from explicit embeddings (without
# them FiftyOne would try to download an image model), or stored from points computed before.
#
# **Your data sets are safe.** A data set records what the notebook made (fields, views, brain
# runs) and a fingerprint of its content. A rerun with the same content reuses it as it is (your
# tags, views and fields stay); a rerun with other content replaces it only when it holds
# nothing of yours; otherwise it stops and says what it would lose (`overwrite=True` replaces it
# anyway, explicitly).
#
# `fiftyone` is imported inside the functions: call `fo_connect` first to choose where its
# MongoDB keeps its files (tests point it at a temporary folder).

# %%
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.atomic_io import atomic_output, atomic_save_npy
from lib.core.audio import audio_info
from lib.explorer.spectrogram_media import spec_image_size, spec_video_metadata

FO_SPECTROGRAM_SLICE = "spectrogram"
FO_PLAYBACK_SLICE = "playback"
FO_RESERVED_FIELDS = {
    "id",
    "_id",
    "filepath",
    "tags",
    "metadata",
    "media_type",
    "group",
    "created_at",
    "last_modified_at",
    "ground_truth",
    "embedding",
    "location",
    "audio_filepath",
    "video_filepath",
    "clip_index",
}


def fo_running_database_dirs() -> list:
    """``(pid, --dbpath)`` of every MongoDB (``mongod``) this machine runs that FiftyOne could attach to."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if cmdline and os.path.basename(cmdline[0]) == "mongod" and "--dbpath" in cmdline:
            position = cmdline.index("--dbpath") + 1
            if position < len(cmdline):
                found.append((proc.info["pid"], cmdline[position]))
    return found


def fo_configure(database_dir=None, dataset_dir=None, do_not_track: bool = True):
    """Set FiftyOne's database / media folders (before its first use) and switch tracking off.

    Caveat (checked with fiftyone 1.22): a new FiftyOne process attaches to a FiftyOne database
    service that is already running for the same user, *whatever* ``database_dir`` says; the
    folder only applies when this process starts the database. A note is printed then.
    """
    if do_not_track:
        os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    for variable, value in (("FIFTYONE_DATABASE_DIR", database_dir), ("FIFTYONE_DEFAULT_DATASET_DIR", dataset_dir)):
        if value is not None:
            Path(value).expanduser().mkdir(parents=True, exist_ok=True)
            os.environ[variable] = str(Path(value).expanduser())
    if database_dir is not None:
        wanted = os.path.realpath(os.environ["FIFTYONE_DATABASE_DIR"])
        others = [d for _, d in fo_running_database_dirs() if os.path.realpath(d) != wanted]
        if others and "FIFTYONE_PRIVATE_DATABASE_PORT" not in os.environ:
            print(
                f"Note: a FiftyOne database is already running on {others[0]}; FiftyOne will use it "
                f"rather than {wanted}. Use unique data set names (or stop it) to keep runs apart."
            )
    if "fiftyone" in sys.modules:  # already imported: update its config too (takes effect before the DB starts)
        import fiftyone as fo

        if database_dir is not None:
            fo.config.database_dir = os.environ["FIFTYONE_DATABASE_DIR"]
        if dataset_dir is not None:
            fo.config.default_dataset_dir = os.environ["FIFTYONE_DEFAULT_DATASET_DIR"]
        fo.config.do_not_track = do_not_track


# %% [markdown]
# ## Connecting, one process at a time
#
# `fo_connect` serialises the first connection to a database folder with a lock file, so two
# explorers starting at once share one MongoDB instead of failing inside FiftyOne; when it cannot,
# the error names the folder and the process that holds it.


# %%
class FoDatabaseInUseError(RuntimeError):
    """Another process holds the FiftyOne database folder; the message says which and what to do."""


def fo_connect(database_dir=None, dataset_dir=None, timeout: float = 120.0) -> str:
    """``fo_configure`` then connect to the database, one process at a time per database folder.

    Two explorers starting on one database folder at once would both start a MongoDB on it and
    the second would fail deep inside FiftyOne ("failed to bind", "DBPathInUse"). Here the first
    connection is serialised by a lock file in the folder: the second process waits (up to
    ``timeout`` s) and then attaches to the database the first one started. If it cannot, it
    raises ``FoDatabaseInUseError`` naming the folder and the process that holds it.
    Returns the database folder in use.
    """
    import fcntl

    fo_configure(database_dir, dataset_dir)
    if os.environ.get("FIFTYONE_DATABASE_DIR"):
        folder = Path(os.environ["FIFTYONE_DATABASE_DIR"]).expanduser()
    else:
        import fiftyone as fo

        folder = Path(fo.config.database_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / ".audiolens-connect.lock"
    deadline = time.monotonic() + timeout
    with open(lock_path, "a+") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FoDatabaseInUseError(
                        _fo_in_use_message(folder, lock_path, f"waited {timeout:.0f} s")
                    ) from None
                time.sleep(0.5)
        try:
            lock.seek(0)
            lock.truncate()
            lock.write(f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            lock.flush()
            import fiftyone as fo  # importing it takes seconds: only once the folder is ours

            try:
                _fo_call_within(fo.list_datasets, max(timeout, 60.0), folder)
            except Exception as error:  # FiftyOne raises many kinds here
                text = f"{type(error).__name__}: {error}"
                others = [pid for pid, d in fo_running_database_dirs() if _fo_same_dir(d, folder)]
                if "DBPathInUse" in text or (others and "ServiceListenTimeout" in text):
                    raise FoDatabaseInUseError(_fo_in_use_message(folder, lock_path, text)) from None
                if "ServiceListenTimeout" in text:
                    raise RuntimeError(
                        f"FiftyOne's database on {folder} did not start within FiftyOne's 60 s ({text}). On a busy "
                        "machine MongoDB can take longer: run again, or point fiftyone_db_dir at a fresh folder."
                    ) from None
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return str(folder)


def _fo_call_within(call, seconds: float, folder: Path):
    """``call()`` in a daemon thread, waited for at most ``seconds``: a database that never answers
    (seen on an overloaded machine) becomes a clear error instead of a notebook that hangs."""
    import threading

    box = {}

    def work():
        try:
            box["value"] = call()
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            box["error"] = error

    thread = threading.Thread(target=work, name="fo-connect", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise RuntimeError(
            f"FiftyOne's database on {folder} did not start within {seconds:.0f} s (no answer). On a busy machine "
            "MongoDB can take longer: run again, or point fiftyone_db_dir at a fresh folder."
        )
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _fo_same_dir(a, b) -> bool:
    return os.path.realpath(str(a)) == os.path.realpath(str(b))


def _fo_in_use_message(folder: Path, lock_path: Path, detail: str) -> str:
    holders = [f"mongod pid {pid}" for pid, d in fo_running_database_dirs() if _fo_same_dir(d, folder)]
    try:
        starter = lock_path.read_text().strip()
    except OSError:
        starter = ""
    who = ", ".join(holders + ([f"started by pid {starter}"] if starter else [])) or "another process"
    return (
        f"FiftyOne database folder {folder} is in use ({who}; {detail}). Another explorer or FiftyOne session is "
        "starting or using its database. Wait for it to finish, or give this run its own folder "
        "(fiftyone_db_dir), or stop the other process."
    )


# %% [markdown]
# ## Geographic locations
#
# Users can give coordinates in a CSV: one row per **file** (a `path` or `filename` column) or
# per **class** (a `label` column), with `lon`/`lat` (or `longitude`/`latitude`). Clips the CSV
# does not cover (or all clips, without a CSV) get synthetic coordinates: one centre per
# category spread over the map, points scattered around it, so the map view groups clips by
# category. The `geo_source` field says which applies to each clip.


# %%
def _fo_pick_column(columns, *names):
    lowered = {c.lower(): c for c in columns}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


def fo_geolocations(manifest: pd.DataFrame, coords_csv=None, by: str = "label", seed: int = 0, spread_deg: float = 1.5):
    """``(lonlat [N, 2], source [N])`` for the rows of ``manifest`` (see the section above)."""
    n = len(manifest)
    lonlat = np.full((n, 2), np.nan)
    source = np.array(["synthetic"] * n, dtype=object)
    rng = np.random.default_rng(seed)
    if coords_csv is not None:
        table = pd.read_csv(coords_csv)
        lon_col = _fo_pick_column(table.columns, "lon", "longitude", "lng")
        lat_col = _fo_pick_column(table.columns, "lat", "latitude")
        if lon_col is None or lat_col is None:
            raise ValueError(f"{coords_csv}: needs lon/lat (or longitude/latitude) columns; has {list(table.columns)}")
        bad = table[(table[lon_col].abs() > 180) | (table[lat_col].abs() > 90)]
        if len(bad):
            raise ValueError(
                f"{coords_csv}: {len(bad)} row(s) outside lon [-180, 180] / lat [-90, 90], "
                f"e.g. {bad.head(3).to_dict('records')}"
            )
        file_col = _fo_pick_column(table.columns, "path", "filepath", "filename", "file")
        class_col = _fo_pick_column(table.columns, by, "label", "class", "category")
        if file_col is not None:
            keys = table[file_col].astype(str)
            by_path = dict(zip(keys, zip(table[lon_col], table[lat_col])))
            by_name = dict(zip(keys.map(lambda p: Path(p).name), zip(table[lon_col], table[lat_col])))
            for i, path in enumerate(manifest["path"].astype(str)):
                hit = by_path.get(path) or by_name.get(Path(path).name)
                if hit is not None:
                    lonlat[i], source[i] = hit, "csv-file"
        elif class_col is not None and by in manifest.columns:
            centres = dict(zip(table[class_col].astype(str), zip(table[lon_col], table[lat_col])))
            for i, value in enumerate(manifest[by].astype(str)):
                if value in centres:
                    jitter = rng.normal(0, spread_deg / 4, 2)
                    lonlat[i], source[i] = np.asarray(centres[value]) + jitter, "csv-class"
        else:
            raise ValueError(
                f"{coords_csv}: needs a path/filename column (per file) or a {by!r}/label column "
                f"(per class); has {list(table.columns)}"
            )
        missing = int(np.isnan(lonlat[:, 0]).sum())
        if missing:
            print(f"{coords_csv}: no coordinates for {missing} of {n} clips; they get synthetic ones")
    todo = np.isnan(lonlat[:, 0])
    if todo.any():
        categories = manifest[by].astype(str) if by in manifest.columns else pd.Series(["all"] * n)
        names = sorted(categories[todo].unique())
        golden = np.pi * (3 - np.sqrt(5))
        for j, name in enumerate(names):  # centres on a sunflower spiral over the inhabited latitudes
            radius = np.sqrt((j + 0.5) / len(names))
            centre = np.array([150 * radius * np.cos(j * golden), 50 * radius * np.sin(j * golden) + 10])
            rows = np.where(todo & (categories == name).to_numpy())[0]
            lonlat[rows] = centre + rng.normal(0, spread_deg, (len(rows), 2))
    lonlat[:, 0] = np.clip(lonlat[:, 0], -180, 180)
    lonlat[:, 1] = np.clip(lonlat[:, 1], -89.9, 89.9)
    return lonlat, source


# %% [markdown]
# ## What the user made
#
# Tags, saved views, fields, runs and workspaces that the explorer did not record as its own: a
# rebuild never deletes them silently.


# %%
class FoUserContentError(RuntimeError):
    """A data set holds user content (tags, views, fields...) that rebuilding it would delete."""


def fo_user_content(dataset) -> dict:
    """What in ``dataset`` the explorer did not make: ``{kind: [names or counts]}`` (empty: nothing).

    Sample and label tags, saved views, fields, brain/evaluation/annotation runs and workspaces
    not recorded in ``dataset.info["audiolens"]``, and data set tags.
    """
    made = (dataset.info or {}).get("audiolens")
    if made is None:
        return {"not made by audiolens": [dataset.name]}
    every = dataset.select_group_slices(_allow_mixed=True) if dataset.media_type == "group" else dataset
    found = {}
    sample_tags = every.count_sample_tags()
    if sample_tags:
        found["sample tags"] = [f"{tag} ({n})" for tag, n in sample_tags.items()]
    try:
        label_tags = every.count_label_tags()
    except Exception:  # noqa: BLE001 - no label fields
        label_tags = {}
    if label_tags:
        found["label tags"] = [f"{tag} ({n})" for tag, n in label_tags.items()]
    for kind, names, ours in (
        ("saved views", dataset.list_saved_views(), made.get("saved_views", [])),
        ("fields", list(dataset.get_field_schema(flat=False)), made.get("fields", [])),
        ("brain runs", dataset.list_brain_runs(), made.get("brain_keys", [])),
        ("evaluations", dataset.list_evaluations(), []),
        ("annotation runs", dataset.list_annotation_runs(), []),
        ("workspaces", dataset.list_workspaces(), []),
        ("data set tags", list(dataset.tags), []),
    ):
        extra = [n for n in names if n not in set(ours)]
        if extra:
            found[kind] = extra
    return found


def fo_record_made(dataset, saved_views=(), brain_keys=()) -> None:
    """Add views / brain runs to what ``fo_user_content`` counts as the explorer's own."""
    info = dict(dataset.info or {})
    made = dict(info.get("audiolens") or {})
    made["saved_views"] = sorted(set(made.get("saved_views", [])) | set(saved_views))
    made["brain_keys"] = sorted(set(made.get("brain_keys", [])) | set(brain_keys))
    info["audiolens"] = made
    dataset.info = info
    dataset.save()


# %% [markdown]
# ## Reusing or replacing a data set
#
# A data set records the fingerprint of what it was built from: the same content is reused as it
# is, other content replaces it only when it holds nothing of the user's (or with `overwrite`).


# %%
def fo_content_fingerprint(manifest: pd.DataFrame, embeddings, preview_paths, video_paths=None, lonlat=None) -> str:
    """SHA-256 of what a data set is built from (clips, labels, metadata, embeddings, media, locations)."""
    import hashlib

    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(manifest.astype(str), index=False).values.tobytes())
    digest.update(np.ascontiguousarray(embeddings, dtype=np.float32).tobytes())
    digest.update("\0".join(map(str, preview_paths)).encode())
    digest.update("\0".join(map(str, video_paths or [])).encode())
    if lonlat is not None:
        digest.update(np.ascontiguousarray(lonlat, dtype=np.float64).tobytes())
    return digest.hexdigest()


def fo_open_dataset(name: str, fingerprint: str, overwrite: bool = False):
    """``(dataset or None, action)`` for building data set ``name`` with content ``fingerprint``.

    ``action``: ``"new"`` (no such data set: ``None`` returned), ``"reuse"`` (same content:
    returned as it is), ``"replace"`` (deleted: it held nothing of the user's, or
    ``overwrite``). Raises ``FoUserContentError`` instead of deleting user content.
    """
    import fiftyone as fo

    if not fo.dataset_exists(name):
        return None, "new"
    existing = fo.load_dataset(name)
    made = (existing.info or {}).get("audiolens") or {}
    if made.get("fingerprint") == fingerprint and not overwrite:
        return existing, "reuse"
    user = fo_user_content(existing)
    if user and not overwrite:
        listing = "; ".join(f"{kind}: {', '.join(map(str, names[:5]))}" for kind, names in user.items())
        raise FoUserContentError(
            f"FiftyOne data set {name!r} exists with other content and holds things this notebook did not make "
            f"({listing}). Nothing was changed. Pick another fo_dataset_name (None: a new name), or set "
            "overwrite=True to replace it and lose them."
        )
    if user:
        print(f"overwrite=True: replacing data set {name!r} and its {', '.join(user)}")
    existing.delete()
    return None, "replace"


# %% [markdown]
# ## Building the data set
#
# One group per clip: a spectrogram slice (the PNG preview, carrying the embedding) and, when the
# clip has a video, a playback slice; every manifest column becomes a field of both.


# %%
def _fo_value(value):
    if value is None:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (pd.Timestamp,)):
        return value.to_pydatetime()
    return value


def fo_build_audio_dataset(
    name: str,
    manifest: pd.DataFrame,
    embeddings,
    preview_paths,
    video_paths=None,
    lonlat=None,
    geo_source=None,
    overwrite: bool = False,
    persistent: bool = True,
    label_column: str = "label",
    progress: bool = True,
):
    """Create (or reuse) the grouped FiftyOne data set (see the module notes); return it.

    ``manifest`` rows, ``embeddings`` rows, ``preview_paths`` (and ``video_paths``, entries may
    be ``None``) are aligned; ``manifest`` needs ``path`` and ``label_column`` (and may give the
    clips' ``duration``). Every preview must exist (checked first, with a clear error). Image
    and video metadata are computed here from what made the files, never by probing them.
    ``dataset.info["audiolens"]["action"]`` says whether it was made new, reused or replaced.
    """
    import fiftyone as fo

    embeddings = np.asarray(embeddings, dtype=np.float32)
    n = len(manifest)
    if embeddings.shape[0] != n or len(preview_paths) != n:
        raise ValueError(
            f"manifest ({n}), embeddings ({embeddings.shape[0]}) and previews ({len(preview_paths)}) "
            "must have one row per clip"
        )
    if not np.all(np.isfinite(embeddings)):
        raise ValueError("embeddings contain NaN or infinite values; drop those clips first")
    missing = [p for p in preview_paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} spectrogram preview(s) do not exist, e.g. {missing[:3]}; "
            "render them first (explorer_render_previews)"
        )
    if label_column not in manifest.columns or "path" not in manifest.columns:
        raise ValueError(f"manifest needs 'path' and {label_column!r} columns; has {list(manifest.columns)}")
    fingerprint = fo_content_fingerprint(
        manifest.assign(_label=manifest[label_column]), embeddings, preview_paths, video_paths, lonlat
    )
    existing, action = fo_open_dataset(name, fingerprint, overwrite)
    if existing is not None:
        print(f"FiftyOne data set {name!r} already holds exactly this content: reused as it is")
        info = dict(existing.info or {})
        info["audiolens"] = {**info.get("audiolens", {}), "action": action}  # "reuse", not the run that made it
        existing.info = info
        existing.save()
        return existing
    dataset = fo.Dataset(name)
    dataset.persistent = persistent
    dataset.add_group_field("group", default=FO_SPECTROGRAM_SLICE)
    extra_columns = [c for c in manifest.columns if c not in ("path", label_column)]
    rename = {c: (f"meta_{c}" if c in FO_RESERVED_FIELDS or c.startswith("_") else c) for c in extra_columns}
    samples = []
    records = manifest.to_dict("records")
    for i, row in enumerate(records):
        group = fo.Group()
        common = {rename[c]: _fo_value(row[c]) for c in extra_columns}
        common.update(
            audio_filepath=str(row["path"]), clip_index=i, ground_truth=fo.Classification(label=str(row[label_column]))
        )
        if lonlat is not None:
            common["location"] = fo.GeoLocation(point=[float(lonlat[i][0]), float(lonlat[i][1])])
            if geo_source is not None:
                common["geo_source"] = str(geo_source[i])
        video = video_paths[i] if video_paths is not None else None
        width, height = spec_image_size(preview_paths[i])
        samples.append(
            fo.Sample(
                filepath=str(preview_paths[i]),
                group=group.element(FO_SPECTROGRAM_SLICE),
                embedding=embeddings[i],
                video_filepath=video,
                metadata=fo.ImageMetadata(width=int(width), height=int(height)),
                **common,
            )
        )
        if video:
            duration = row.get("duration") if "duration" in row else audio_info(row["path"])["duration"]
            meta = spec_video_metadata(video, preview_paths[i], duration)
            samples.append(
                fo.Sample(
                    filepath=str(video),
                    group=group.element(FO_PLAYBACK_SLICE),
                    metadata=fo.VideoMetadata(**meta),
                    **common,
                )
            )
    dataset.add_samples(samples, progress=progress)
    n_videos = sum(1 for v in (video_paths or []) if v)
    dataset.info = {
        "source": "audiolens fiftyone_explorer",
        "n_clips": n,
        "n_samples": n + n_videos,
        "embedding_dim": int(embeddings.shape[1]),
        "how_to_listen": "open a clip: the Audio panel plays it (or choose the 'playback' slice in the group carousel)",
        "audiolens": {
            "fingerprint": fingerprint,
            "action": action,
            "fields": sorted(dataset.get_field_schema(flat=False)),
            "saved_views": [],
            "brain_keys": [],
        },
    }
    dataset.save()
    return dataset


def fo_clips_view(dataset):
    """The flattened spectrogram slice (one sample per clip, in clip order): brain runs use it."""
    return dataset.select_group_slices(FO_SPECTROGRAM_SLICE).sort_by("clip_index")


# %% [markdown]
# ## Similarity search and maps


# %%
def fo_compute_similarity(dataset, embeddings, brain_key: str = "audio_sim", metric: str = "cosine"):
    """sklearn similarity index over the clips with explicit ``embeddings`` (rows in clip order)."""
    import fiftyone.brain as fob

    view = fo_clips_view(dataset)
    if dataset.has_brain_run(brain_key):
        dataset.delete_brain_run(brain_key)
    results = fob.compute_similarity(
        view, embeddings=np.asarray(embeddings, dtype=np.float32), backend="sklearn", brain_key=brain_key, metric=metric
    )
    fo_record_made(dataset, brain_keys=[brain_key])
    return results


def fo_query_by_sample(dataset, sample_id: str, brain_key: str = "audio_sim", k: int = 20):
    """The ``k`` clips nearest to sample ``sample_id`` (the sample itself first)."""
    return fo_clips_view(dataset).sort_by_similarity(sample_id, k=k, brain_key=brain_key)


def fo_query_by_vector(dataset, vector, brain_key: str = "audio_sim", k: int = 20):
    """The ``k`` clips nearest to an embedding ``vector``, centred like the index and normalised."""
    results = dataset.load_brain_results(brain_key)
    index = np.asarray(results.embeddings, dtype=np.float64)
    query = np.asarray(vector, dtype=np.float64).ravel()
    if query.shape[0] != index.shape[1]:
        raise ValueError(f"query has {query.shape[0]} dims but the index {brain_key!r} has {index.shape[1]}")
    query = query - index.mean(axis=0)
    query = query / (np.linalg.norm(query) or 1.0)
    return fo_clips_view(dataset).sort_by_similarity(query, k=k, brain_key=brain_key)


def fo_compute_maps(
    dataset,
    embeddings,
    methods=("umap", "tsne", "pca"),
    seed: int = 0,
    umap_n_neighbours: int = 15,
    umap_min_dist: float = 0.1,
    tsne_perplexity: float = 30.0,
    metric: str = "cosine",
    threads="auto",
    cache_dir=None,
):
    """2-D maps of the clips with ``compute_visualization``; return ``{method: {points, seconds, brain_key, cached}}``.

    ``threads``: OpenMP/BLAS threads while mapping. ``"auto"`` uses one thread up to 2,000
    clips: on a busy machine scikit-learn's multi-threaded t-SNE can spin-wait for tens of
    seconds on a few hundred points (measured: 200 points, 2 shared cores, 33-52 s with 2
    threads, 1.6 s with one). ``None`` leaves the libraries' defaults.
    ``cache_dir``: keep each map's points in ``<cache_dir>/<key>.npy`` (key: a hash of the
    embeddings, the method, its options and the seed) and reuse them; a brain run already
    stored from the same points is kept as it is.
    """
    import contextlib
    import hashlib
    import json
    import logging
    import warnings

    import fiftyone.brain as fob
    from threadpoolctl import threadpool_limits

    view = fo_clips_view(dataset)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    made = dict((dataset.info or {}).get("audiolens") or {})
    stored = dict(made.get("maps") or {})
    maps = {}
    for method in methods:
        options = {
            "umap": dict(
                num_neighbors=min(umap_n_neighbours, len(embeddings) - 1), min_dist=umap_min_dist, metric=metric
            ),
            "tsne": dict(
                perplexity=min(tsne_perplexity, (len(embeddings) - 1) / 3),
                metric=metric,
                pca_dims=min(50, len(embeddings), embeddings.shape[1]),
            ),
            "pca": {},
        }.get(method)
        if options is None:
            raise ValueError(f"unknown map method {method!r}; choose umap, tsne or pca")
        brain_key = f"map_{method}"
        digest = hashlib.sha256(embeddings.tobytes())
        digest.update(json.dumps([method, options, seed], sort_keys=True, default=str).encode())
        key = digest.hexdigest()[:24]
        start = time.perf_counter()
        cache_file = Path(cache_dir).expanduser() / f"{method}-{key}.npy" if cache_dir is not None else None
        from_cache = None
        if cache_file is not None and cache_file.exists():
            try:
                from_cache = np.load(cache_file, allow_pickle=False)
                if from_cache.shape != (len(embeddings), 2) or not np.isfinite(from_cache).all():
                    print(f"map cache {cache_file} has the wrong shape or values: recomputing")
                    from_cache = None
            except (OSError, ValueError, EOFError) as error:
                print(f"map cache {cache_file} is unreadable ({type(error).__name__}): recomputing")
                from_cache = None
        if from_cache is not None and stored.get(brain_key) == key and dataset.has_brain_run(brain_key):
            points = from_cache
        else:
            if dataset.has_brain_run(brain_key):
                dataset.delete_brain_run(brain_key)
            limit = 1 if threads == "auto" and len(embeddings) <= 2000 else (None if threads == "auto" else threads)
            extra = {"points": from_cache} if from_cache is not None else {"embeddings": embeddings, **options}
            notes = logging.getLogger("fiftyone.brain.visualization")  # "Generating visualization..." per map
            level = notes.level
            notes.setLevel(logging.WARNING)
            try:
                with threadpool_limits(limit) if limit else contextlib.nullcontext(), warnings.catch_warnings():
                    # umap-learn warns that a seed means one job: one job is what the seed is for
                    warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
                    results = fob.compute_visualization(
                        view, method=method, num_dims=2, seed=seed, brain_key=brain_key, verbose=False, **extra
                    )
            finally:
                notes.setLevel(level)
            points = np.asarray(results.points, dtype=np.float64)
            if cache_file is not None and from_cache is None:
                atomic_save_npy(cache_file, points)
            stored[brain_key] = key
        maps[method] = {
            "points": np.asarray(points, dtype=np.float64),
            "seconds": time.perf_counter() - start,
            "brain_key": brain_key,
            "options": options,
            "cached": from_cache is not None,
        }
    made["maps"] = stored
    info = dict(dataset.info or {})
    info["audiolens"] = made
    dataset.info = info
    dataset.save()
    fo_record_made(dataset, brain_keys=[m["brain_key"] for m in maps.values()])
    return maps


# %% [markdown]
# ## Views
#
# Views filter the clips by label, fold/split, category, speaker, a geographic box, or any
# combination, and are saved with the data set so they appear in the App's view menu.


# %%
def fo_standard_views(
    dataset,
    label: str | None = None,
    fields=("split", "speaker", "gender", "accent", "fold", "category"),
    geo_box=None,
    save: bool = True,
) -> dict:
    """Build (and save) a set of views; return ``{name: view}``.

    ``label``: a label for the by-label views (default: the most frequent). For each field in
    ``fields`` present on the data set, a view of its most frequent value. ``geo_box``:
    ``(lon_min, lat_min, lon_max, lat_max)`` for the geographic view (default: the box around
    the label's clips). Combinations: label x the first field present (its commonest value among
    the label's clips), label x box.
    """
    from fiftyone import ViewField as F

    clips = fo_clips_view(dataset)
    counts = clips.count_values("ground_truth.label")
    label = str(label) if label is not None else max(counts, key=counts.get)
    views = {"all-clips": clips, f"label-{label}": clips.match(F("ground_truth.label") == label)}
    schema = clips.get_field_schema()
    first_field = None
    for field in fields:
        if field not in schema:
            continue
        values = {k: v for k, v in clips.count_values(field).items() if k is not None}
        if not values:
            continue
        value = max(values, key=values.get)
        views[f"{field}-{value}"] = clips.match(F(field) == value)
        if first_field is None:
            first_field = (field, value)
    if first_field is not None:  # a combination that is never empty: the field's commonest value within the label
        field = first_field[0]
        within = {k: v for k, v in views[f"label-{label}"].count_values(field).items() if k is not None}
        if within:
            value = max(within, key=within.get)
            views[f"label-{label}-and-{field}-{value}"] = clips.match(
                (F("ground_truth.label") == label) & (F(field) == value)
            )
    if "location" in schema:
        if geo_box is None:
            points = np.array([p for p in views[f"label-{label}"].values("location.point") if p])
            if len(points):
                lo, hi = points.min(axis=0) - 0.5, points.max(axis=0) + 0.5
                geo_box = (lo[0], lo[1], hi[0], hi[1])
        if geo_box is not None:
            x0, y0, x1, y1 = (float(v) for v in geo_box)
            polygon = [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]
            views["geo-box"] = clips.geo_within(polygon)
            views[f"geo-box-and-label-{label}"] = clips.geo_within(polygon).match(F("ground_truth.label") == label)
    if save:
        ours = set(((dataset.info or {}).get("audiolens") or {}).get("saved_views", []))
        theirs = [name for name in dataset.list_saved_views() if name not in ours and name in views]
        for name, view in views.items():
            if name in theirs:
                print(f"saved view {name!r} exists and is not the notebook's: kept as it is")
                continue
            dataset.save_view(name, view, overwrite=True)
        fo_record_made(dataset, saved_views=[name for name in views if name not in theirs])
    return views


# %% [markdown]
# ## Export


# %%
def fo_export_table(
    manifest: pd.DataFrame, embeddings, maps: dict | None = None, path=None, fmt: str = "parquet"
) -> pd.DataFrame:
    """Metadata + 2-D coordinates (+ embeddings) as one table; written to ``path`` when given.

    Parquet keeps each embedding as a list column ``embedding``; CSV spreads it over
    ``emb_0..emb_{D-1}`` columns.
    """
    table = manifest.reset_index(drop=True).copy()
    for method, item in (maps or {}).items():
        table[f"{method}_x"], table[f"{method}_y"] = item["points"][:, 0], item["points"][:, 1]
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if fmt == "parquet":
        table["embedding"] = list(embeddings)
    elif fmt == "csv":
        table = pd.concat(
            [table, pd.DataFrame(embeddings, columns=[f"emb_{j}" for j in range(embeddings.shape[1])])], axis=1
        )
    else:
        raise ValueError(f"fmt must be 'parquet' or 'csv', not {fmt!r}")
    if path is not None:
        with atomic_output(path) as tmp:
            if fmt == "parquet":
                table.to_parquet(tmp, index=False)
            else:
                table.to_csv(tmp, index=False)
    return table
