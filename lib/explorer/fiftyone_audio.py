# %% [markdown]
# # FiftyOne for audio: data sets, similarity, maps, views and the App
#
# FiftyOne has no audio media type, so each clip becomes a **group** with two slices:
#
# - `spectrogram` (the default slice, an image): the PNG log-mel preview, with the clip's
#   `audio_filepath`, its embedding, an `fo.Classification` label, every metadata column of
#   the manifest and an `fo.GeoLocation`;
# - `playback` (a video): the spectrogram with a moving play-head and the clip as soundtrack.
#   In the App, open a sample and pick the `playback` slice in the group carousel to hear it.
#
# Brain runs and views use the flattened spectrogram slice (`fo_clips_view`). Similarity uses
# the sklearn backend with explicit embeddings; that backend centres its index but not query
# vectors, so `fo_query_by_vector` centres (and normalises) the query itself, and a clip's own
# embedding returns that clip first. Maps (UMAP, t-SNE, PCA) are always computed from explicit
# embeddings: without them FiftyOne would try to download an image model.
#
# `fiftyone` is imported inside the functions: call `fo_configure` first to choose where its
# MongoDB keeps its files (tests point it at a temporary folder).

# %%
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.atomic_io import atomic_output

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
    """The ``--dbpath`` of every FiftyOne MongoDB (``mongod`` started by FiftyOne) running now."""
    import psutil

    dirs = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if cmdline and os.path.basename(cmdline[0]) == "mongod" and "--dbpath" in cmdline:
            position = cmdline.index("--dbpath") + 1
            if position < len(cmdline):
                dirs.append(cmdline[position])
    return dirs


def fo_configure(database_dir=None, dataset_dir=None, do_not_track: bool = True):
    """Set FiftyOne's database / media folders (before its first use) and switch tracking off.

    Caveat (checked with fiftyone 1.22): a new FiftyOne process attaches to a FiftyOne database
    service that is already running for the same user, *whatever* ``database_dir`` says; the
    folder only applies when this process starts the database. A warning is printed then.
    """
    if do_not_track:
        os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    for variable, value in (("FIFTYONE_DATABASE_DIR", database_dir), ("FIFTYONE_DEFAULT_DATASET_DIR", dataset_dir)):
        if value is not None:
            Path(value).expanduser().mkdir(parents=True, exist_ok=True)
            os.environ[variable] = str(Path(value).expanduser())
    if database_dir is not None:
        wanted = os.path.realpath(os.environ["FIFTYONE_DATABASE_DIR"])
        others = [d for d in fo_running_database_dirs() if os.path.realpath(d) != wanted]
        if others:
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
# ## Building the data set


# %%
def fo_unique_dataset_name(name: str, overwrite: bool = False) -> str:
    """``name`` itself when free (or when ``overwrite``), else ``name-2``, ``name-3``..."""
    import fiftyone as fo

    if overwrite or not fo.dataset_exists(name):
        return name
    k = 2
    while fo.dataset_exists(f"{name}-{k}"):
        k += 1
    print(f"A data set named {name!r} exists; using {name}-{k!r} (pass overwrite=True to replace it)")
    return f"{name}-{k}"


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
    """Create the grouped FiftyOne data set (see the module notes); return it.

    ``manifest`` rows, ``embeddings`` rows, ``preview_paths`` (and ``video_paths``, entries may
    be ``None``) are aligned; ``manifest`` needs ``path`` and ``label_column``. Every preview
    must exist (checked first, with a clear error). The name is made unique unless ``overwrite``.
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
            f"{len(missing)} spectrogram preview(s) do not exist, e.g. {missing[:3]}; run spectrogram_previews first"
        )
    if label_column not in manifest.columns or "path" not in manifest.columns:
        raise ValueError(f"manifest needs 'path' and {label_column!r} columns; has {list(manifest.columns)}")
    name = fo_unique_dataset_name(name, overwrite)
    dataset = fo.Dataset(name, overwrite=overwrite)
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
        samples.append(
            fo.Sample(
                filepath=str(preview_paths[i]),
                group=group.element(FO_SPECTROGRAM_SLICE),
                embedding=embeddings[i].tolist(),
                video_filepath=video,
                **common,
            )
        )
        if video:
            samples.append(fo.Sample(filepath=str(video), group=group.element(FO_PLAYBACK_SLICE), **common))
    dataset.add_samples(samples, progress=progress)
    dataset.info = {
        "source": "audiolens fiftyone_explorer",
        "n_clips": n,
        "embedding_dim": int(embeddings.shape[1]),
        "how_to_listen": "open a sample, choose the 'playback' slice in the group carousel",
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
    return fob.compute_similarity(
        view, embeddings=np.asarray(embeddings, dtype=np.float32), backend="sklearn", brain_key=brain_key, metric=metric
    )


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
):
    """2-D maps of the clips with ``compute_visualization``; return ``{method: {points, seconds, brain_key}}``.

    ``threads``: OpenMP/BLAS threads while mapping. ``"auto"`` uses one thread up to 2,000
    clips: on a busy machine scikit-learn's multi-threaded t-SNE can spin-wait for tens of
    seconds on a few hundred points (measured: 200 points, 2 shared cores, 33-52 s with 2
    threads, 1.6 s with one). ``None`` leaves the libraries' defaults.
    """
    import contextlib

    import fiftyone.brain as fob
    from threadpoolctl import threadpool_limits

    view = fo_clips_view(dataset)
    embeddings = np.asarray(embeddings, dtype=np.float32)
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
        if dataset.has_brain_run(brain_key):
            dataset.delete_brain_run(brain_key)
        limit = 1 if threads == "auto" and len(embeddings) <= 2000 else (None if threads == "auto" else threads)
        start = time.perf_counter()
        with threadpool_limits(limit) if limit else contextlib.nullcontext():
            results = fob.compute_visualization(
                view,
                embeddings=embeddings,
                method=method,
                num_dims=2,
                seed=seed,
                brain_key=brain_key,
                verbose=False,
                **options,
            )
        points = np.asarray(results.points, dtype=np.float64)
        maps[method] = {
            "points": points,
            "seconds": time.perf_counter() - start,
            "brain_key": brain_key,
            "options": options,
        }
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
        for name, view in views.items():
            dataset.save_view(name, view, overwrite=True)
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


# %% [markdown]
# ## The App
#
# The App is launched only in an interactive notebook (Jupyter, VS Code, Colab), never under
# papermill or `audiolens run` (a batch run would hang or leave a server behind).
# `fo_execution_context` tells them apart: papermill/nbclient kernels are children of a process
# that is not a notebook server. In remote mode (a notebook on a server you reach over SSH) the
# App's URL is printed for port forwarding. `fo_stop_app` stops the App's service process
# *and* its web-server child (killing only the first can leave the second running).


# %%
def _fo_parent_cmdlines(levels: int = 3) -> list:
    lines, pid = [], os.getppid()
    for _ in range(levels):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                lines.append(handle.read().replace(b"\0", b" ").decode(errors="replace"))
            with open(f"/proc/{pid}/stat") as handle:
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return lines


def fo_execution_context() -> str:
    """``"papermill"`` (batch: papermill, nbclient, nbconvert, pytest, audiolens run), ``"notebook"``
    (an interactive notebook front end), or ``"script"`` (plain Python)."""
    if os.environ.get("AUDIOLENS_BATCH") or os.environ.get("PAPERMILL_EXECUTION"):
        return "papermill"
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return "script"
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return "notebook"
    parent_lines = _fo_parent_cmdlines()
    parents = " ".join(parent_lines)
    batch_markers = ("papermill", "nbconvert", "nbclient", "pytest", "audiolens run", "bin/audiolens")
    if any(marker in parents for marker in batch_markers):
        return "papermill"
    if parent_lines and "ipykernel" in parent_lines[0]:  # started from another kernel (papermill in a notebook)
        return "papermill"
    if (
        os.environ.get("JPY_SESSION_NAME")
        or os.environ.get("VSCODE_PID")
        or os.environ.get("VSCODE_CWD")
        or any(m in parents for m in ("jupyter", "vscode", "code-server", "spyder", "nteract"))
    ):
        return "notebook"
    return "papermill"  # a kernel started by an unknown driver: treat it as batch, never block it


def fo_launch_app(
    dataset_or_view, port: int = 5151, remote: bool = False, address: str | None = None, when: str = "auto"
):
    """Launch the App (``when``: ``"auto"`` = only interactively, ``"always"``, ``"never"``).

    Returns the session, or ``None`` when not launched (and says why).
    """
    import fiftyone as fo

    context = fo_execution_context()
    if when == "never" or (when == "auto" and context != "notebook"):
        print(
            f"FiftyOne App not launched ({'disabled' if when == 'never' else context + ' run'}). "
            f"Interactively: fo.launch_app(fo.load_dataset({dataset_or_view._dataset.name!r}))"
        )
        return None
    session = fo.launch_app(
        dataset_or_view, port=port, remote=remote, address=address, auto=context == "notebook" and not remote
    )
    if remote:
        print(
            f"The App is served at {session.url}. From your computer: ssh -N -L {port}:localhost:{port} <server>, "
            f"then open http://localhost:{port}"
        )
    return session


def fo_stop_app(session=None, port: int | None = None, timeout: float = 10.0) -> list:
    """Close ``session`` and stop the App server on ``port``: the service process and its children."""
    import psutil
    from fiftyone.core.session import session as fos

    port = port or (session.server_port if session is not None else None)
    service = fos._server_services.pop(port, None) if port is not None else None
    procs = []
    if service is not None and getattr(service, "child", None) is not None:
        try:
            procs = [psutil.Process(service.child.pid)] + psutil.Process(service.child.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            procs = []
    if session is not None:
        try:
            session.plots.disconnect()
        except Exception:  # noqa: BLE001 - best effort
            pass
        if fos._session is session:
            fos._session = None
    if service is not None:
        try:
            service.stop()
        except Exception:  # noqa: BLE001 - we terminate below anyway
            pass
    stopped = []
    for proc in procs:
        try:
            if proc.is_running():
                proc.terminate()
            stopped.append(proc.pid)
        except psutil.NoSuchProcess:
            stopped.append(proc.pid)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        proc.kill()
    return stopped


def fo_play_clips(view, max_clips: int = 5, field: str = "audio_filepath"):
    """Notebook audio players for the first ``max_clips`` clips of a view (e.g. a query result).

    With an App session: ``fo_play_clips(fo_clips_view(ds).select(session.selected))`` plays
    the clips selected in the App.
    """
    from IPython.display import HTML, Audio, display

    paths = view.limit(max_clips).values(field)
    labels = view.limit(max_clips).values("ground_truth.label")
    for path, label in zip(paths, labels):
        display(HTML(f"<b>{label}</b> <code>{Path(path).name}</code>"))
        display(Audio(filename=path))
    return paths
