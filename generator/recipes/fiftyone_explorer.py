# %% [markdown]
# # FiftyOne explorer: audio embeddings, similarity search, maps and playback
#
# Browse a labelled audio collection in the FiftyOne App: every clip is a log-mel spectrogram
# thumbnail (one shared colour scale) with its label, metadata, embedding and a map location;
# open a clip and pick its `playback` slice to hear it. The notebook
#
# 1. embeds every clip with the chosen encoder (MFCC statistics without a model, a layer of a
#    transformers speech model, or an AudioMAE++ checkpoint) through an incremental cache, and
#    measures the cache by embedding a second time;
# 2. makes PNG previews and playable MP4s (spectrogram picture + the clip as soundtrack);
# 3. builds a persistent FiftyOne data set, a similarity index (query by clip and by vector),
#    UMAP / t-SNE / PCA maps and saved views (label, split, speaker, a map box, combinations);
# 4. scores the embedding space (precision@k of same-label neighbours, intra/inter-class
#    distances, silhouette), exports a table, and launches the App when run interactively.

# %% tags=["parameters"]
data_path = None  # data folder; None: $AUDIOLENS_DATA, data/, then download (FSDD)
dataset = "fsdd"  # "fsdd", "librispeech" (sample) or "folder" (data_path is then any labelled folder)
labels_csv = (
    None  # for dataset "folder": CSV with filename,label(,more columns); None: sub-folders or label_speaker_index names
)
label_column = None  # manifest column used as the label; None: "label" ("sex" for librispeech)
max_clips = 600  # clips used, stratified by label (None: all)
output_dir = "runs/fiftyone_explorer/latest"  # results.json, figures and the exported table go here
seed = 0  # random seed (sampling, maps)
encoder = "mfcc"  # "mfcc" (no model, offline), "speech_model" or "audiomae"
model_name = "microsoft/wavlm-base-plus"  # for encoder "speech_model": hub id or save_pretrained folder
model_layer = 6  # for encoder "speech_model": hidden layer (0 is the transformer input)
pooling = "mean"  # for encoder "speech_model": pooling over frames (mean, max, mean+std...)
audiomae_checkpoint = None  # for encoder "audiomae": path of an AudioMAE++ checkpoint (audiomae_training notebook)
local_files_only = False  # True: never try to download the model
device = "auto"  # "auto", "cpu", "cuda" or "mps"
batch_size = 32  # clips per embedding batch
standardize = True  # z-score each embedding dimension before similarity, maps and scores
cache_dir = "~/.cache/audiolens/embeddings"  # embedding cache (per data set and encoder)
media_dir = "~/.cache/audiolens/media"  # PNG previews and MP4 clips (per data set)
make_videos = True  # make playable MP4s (spectrogram + soundtrack) for the App's playback slice
max_videos = None  # cap on MP4s (None: one per clip)
fo_dataset_name = None  # FiftyOne data set name; None: audiolens-<dataset>-<encoder>
overwrite = True  # replace a data set of the same name (False: pick a unique new name)
fiftyone_db_dir = None  # FiftyOne database folder; None: FiftyOne's default (~/.fiftyone)
coords_csv = None  # CSV of lon,lat per file (path/filename column) or per class (label column)
geo_by = "label"  # column whose categories get clustered synthetic coordinates when no CSV covers a clip
n_neighbours = 20  # neighbours per similarity query and for precision@k
map_methods = ["umap", "tsne", "pca"]  # 2-D maps to compute
umap_n_neighbours = 15  # UMAP neighbourhood size
umap_min_dist = 0.1  # UMAP minimum distance
tsne_perplexity = 30.0  # t-SNE perplexity
quality_group_column = "speaker"  # also score precision@k with the query's own speaker excluded (None: skip)
map_color_column = "speaker"  # a second row of maps coloured by this column (None or a missing column: skip)
map_threads = (
    "auto"  # OpenMP threads for the maps: "auto" (1 up to 2,000 clips: avoids spin-wait stalls), None or a number
)
export_format = "parquet"  # table of metadata + embeddings + map coordinates: "parquet" or "csv"
launch_app = "auto"  # "auto" (only in an interactive notebook), "always" or "never"
app_port = 5151  # App port
remote = False  # True: print the URL to open through an SSH tunnel instead of opening the App inline

# %%
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib.core.audio import audio_info
from lib.core.datasets import load_fsdd, load_labelled_folder, load_librispeech
from lib.core.outputs import Stopwatch, prepare_output_dir, save_figure, update_results
from lib.core.runtime import pick_device, seed_everything
from lib.explorer.audio_embedders import embed_audio_files_cached, make_audio_embedder
from lib.explorer.embedding_quality import (
    embedding_quality_table,
    plot_embedding_quality,
    precision_at_k,
    precision_at_k_across_groups,
    precision_chance,
)
from lib.explorer.fiftyone_audio import (
    fo_build_audio_dataset,
    fo_clips_view,
    fo_compute_maps,
    fo_compute_similarity,
    fo_configure,
    fo_execution_context,
    fo_export_table,
    fo_geolocations,
    fo_launch_app,
    fo_play_clips,
    fo_query_by_sample,
    fo_query_by_vector,
    fo_standard_views,
)
from lib.explorer.spectrogram_media import (
    spec_media_streams,
    spectrogram_colorbar_figure,
    spectrogram_previews,
    spectrogram_videos,
)

seed_everything(seed)
out = prepare_output_dir(output_dir)
timings = {}

# %% [markdown]
# ## The clips
#
# A manifest (one row per clip: `path`, the label, and every metadata column the data set
# has), sampled to `max_clips` with the labels balanced.

# %%
if dataset == "fsdd":
    manifest = load_fsdd(data_path)
elif dataset == "librispeech":
    manifest = load_librispeech(data_path)
elif dataset == "folder":
    if data_path is None:
        raise ValueError("dataset='folder' needs data_path = the folder of clips")
    manifest = load_labelled_folder(data_path, labels_csv=labels_csv)
else:
    raise ValueError(f"dataset must be 'fsdd', 'librispeech' or 'folder', not {dataset!r}")
label_col = label_column or ("sex" if dataset == "librispeech" else "label")
if label_col not in manifest.columns:
    raise ValueError(f"label_column {label_col!r} is not a manifest column: {list(manifest.columns)}")
manifest = manifest.dropna(subset=[label_col]).reset_index(drop=True)
if max_clips and len(manifest) > max_clips:
    n_labels = manifest[label_col].nunique()
    per_label = math.ceil(max_clips / n_labels)
    shuffled = manifest.sample(frac=1.0, random_state=seed)
    manifest = shuffled.groupby(label_col, group_keys=False).head(per_label).head(max_clips)
    manifest = manifest.sort_values([label_col, "path"]).reset_index(drop=True)
dataset_key = f"{dataset}-{Path(data_path).name if data_path else 'default'}"
print(f"{len(manifest)} clips, {manifest[label_col].nunique()} labels ({label_col}); columns: {list(manifest.columns)}")
manifest.head()

# %% [markdown]
# ## Embeddings, through the cache
#
# The first call computes what the cache lacks; the second call, with nothing changed,
# must compute nothing: its time is the cost of reading the cache back.

# %%
embedder = make_audio_embedder(
    encoder,
    model_name=model_name,
    layer=model_layer,
    pooling=pooling,
    checkpoint=audiomae_checkpoint,
    device=pick_device(device),
    local_files_only=local_files_only,
)
with Stopwatch() as sw_first:
    embeddings, files, embed_meta = embed_audio_files_cached(
        manifest.path, embedder, cache_dir, dataset_key, batch_size=batch_size
    )
with Stopwatch() as sw_second:
    embeddings_again, files_again, embed_meta_again = embed_audio_files_cached(
        manifest.path, embedder, cache_dir, dataset_key, batch_size=batch_size
    )
assert files_again == files and np.array_equal(embeddings_again, embeddings), "cache returned different embeddings"
assert embed_meta_again["cache"]["n_computed"] == 0, "second run recomputed embeddings"
timings["embeddings"] = sw_first.seconds
timings["embeddings_cached"] = sw_second.seconds
cache_report = {
    "first_run_seconds": sw_first.seconds,
    "first_run_computed": embed_meta["cache"]["n_computed"],
    "first_run_cold": embed_meta["cache"]["n_cached"] == 0,
    "second_run_seconds": sw_second.seconds,
    "second_run_computed": embed_meta_again["cache"]["n_computed"],
    "speedup": sw_first.seconds / max(sw_second.seconds, 1e-9),
    "cache_dir": embed_meta["cache"]["cache_dir"],
}
print(
    f"embeddings {embeddings.shape} in {sw_first.seconds:.2f} s; again from the cache in {sw_second.seconds:.3f} s "
    f"({cache_report['speedup']:.0f}x faster)"
)
if embed_meta["failed"]:
    print("Skipped clips:", pd.DataFrame(embed_meta["failed"]).to_string(index=False))

# %% [markdown]
# ## Spectrogram previews and playable clips

# %%
media_root = Path(media_dir).expanduser() / dataset_key
with Stopwatch() as sw:
    png_paths, png_ok, png_failed, colour_scale = spectrogram_previews(files, media_root / "png")
timings["previews"] = sw.seconds
keep = set(png_ok)
clips = manifest.set_index("path").loc[[f for f in files if f in keep]].reset_index()
row_of = {f: i for i, f in enumerate(files)}
embeddings = embeddings[[row_of[f] for f in clips.path]]
png_of = dict(zip(png_ok, png_paths))
previews = [png_of[p] for p in clips.path]
clips["duration"] = [audio_info(p)["duration"] for p in clips.path]
print(f"{len(previews)} previews, colour scale {colour_scale['vmin_db']:.1f} .. {colour_scale['vmax_db']:.1f} dB")
save_figure(spectrogram_colorbar_figure(colour_scale), out, "colour_scale")

videos = [None] * len(clips)
video_check = {}
if make_videos:
    n_videos = len(clips) if max_videos is None else min(max_videos, len(clips))
    with Stopwatch() as sw:
        made, video_failed = spectrogram_videos(list(clips.path[:n_videos]), previews[:n_videos], media_root / "mp4")
    timings["videos"] = sw.seconds
    videos[:n_videos] = made
    first = next(i for i, v in enumerate(videos) if v)
    streams = spec_media_streams(videos[first])
    video_check = {
        "n_videos": int(sum(v is not None for v in videos)),
        "failed": video_failed,
        "example": videos[first],
        "audio_codec": streams["audio"],
        "video_codec": streams["video"],
        "container_seconds": streams["duration"],
        "clip_seconds": float(clips.duration[first]),
    }
    print(f"{video_check['n_videos']} playable clips; example {Path(videos[first]).name}: {streams}")

# %% [markdown]
# An example preview and its playable clip (the soundtrack is the clip itself):

# %%
from IPython.display import Image, Video, display  # noqa: E402

display(Image(filename=previews[0]))
if make_videos and videos[0]:
    display(Video(videos[0], embed=True, mimetype="video/mp4"))

# %% [markdown]
# ## The FiftyOne data set

# %%
if fiftyone_db_dir is not None:
    fo_configure(database_dir=fiftyone_db_dir, dataset_dir=Path(fiftyone_db_dir) / "datasets")
else:
    fo_configure()
vectors = embeddings.astype(np.float64)
if standardize:
    vectors = (vectors - vectors.mean(axis=0)) / (vectors.std(axis=0) + 1e-8)
vectors = vectors.astype(np.float32)
lonlat, geo_source = fo_geolocations(
    clips, coords_csv=coords_csv, by=geo_by if geo_by in clips else label_col, seed=seed
)
name = fo_dataset_name or f"audiolens-{dataset}-{encoder}"
with Stopwatch() as sw:
    ds = fo_build_audio_dataset(
        name,
        clips,
        vectors,
        previews,
        video_paths=videos,
        lonlat=lonlat,
        geo_source=geo_source,
        overwrite=overwrite,
        label_column=label_col,
    )
timings["dataset"] = sw.seconds
clip_view = fo_clips_view(ds)
print(ds)

# %% [markdown]
# ## Similarity search
#
# Query by a clip (its sample id) and by a vector (that clip's embedding, centred like the
# index): both must return the clip itself first. A third query uses a label's mean embedding.

# %%
with Stopwatch() as sw:
    fo_compute_similarity(ds, vectors, brain_key="audio_sim")
timings["similarity"] = sw.seconds
rng = np.random.default_rng(seed)
query_row = int(rng.integers(len(clips)))
sample_ids = clip_view.values("id")
labels = np.asarray(clip_view.values("ground_truth.label"))
query_label = labels[query_row]


def describe_query(view, query_id=None, label=None):
    ids, found = view.values("id"), np.asarray(view.values("ground_truth.label"))
    return {
        "n_results": len(ids),
        "first_is_query": bool(query_id is not None and ids and ids[0] == query_id),
        "same_label_fraction": float((found == label).mean()) if len(found) else float("nan"),
    }


by_sample = fo_query_by_sample(ds, sample_ids[query_row], k=n_neighbours)
by_vector = fo_query_by_vector(ds, vectors[query_row], k=n_neighbours)
centroid_label = pd.Series(labels).value_counts().index[0]
by_centroid = fo_query_by_vector(ds, vectors[labels == centroid_label].mean(axis=0), k=n_neighbours)
queries = {
    "by_sample": describe_query(by_sample, sample_ids[query_row], query_label),
    "by_vector": describe_query(by_vector, sample_ids[query_row], query_label),
    "by_label_centroid": describe_query(by_centroid, None, centroid_label),
}
queries["query_label"], queries["centroid_label"] = str(query_label), str(centroid_label)
pd.DataFrame({q: v for q, v in queries.items() if isinstance(v, dict)}).T


# %%
def contact_sheet(view, title, columns=5):
    paths, found = view.values("filepath"), view.values("ground_truth.label")
    rows = math.ceil(len(paths) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 1.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, path, label in zip(axes.ravel(), paths, found):
        ax.imshow(plt.imread(path), aspect="auto")
        ax.set_title(str(label), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


fig = contact_sheet(by_sample, f"{n_neighbours} nearest clips to a '{query_label}' clip (first: the clip itself)")
save_figure(fig, out, "query_by_sample")
plt.show()
fo_play_clips(by_sample, max_clips=3)

# %% [markdown]
# ## Maps: UMAP, t-SNE, PCA
#
# Stored as brain runs (the App's Embeddings panel shows them, linked to the grid), and
# plotted here coloured by label.

# %%
maps = fo_compute_maps(
    ds,
    vectors,
    methods=map_methods,
    seed=seed,
    umap_n_neighbours=umap_n_neighbours,
    umap_min_dist=umap_min_dist,
    tsne_perplexity=tsne_perplexity,
    threads=map_threads,
)
for method, item in maps.items():
    timings[method] = item["seconds"]
    assert np.all(np.isfinite(item["points"])) and item["points"].shape == (len(clips), 2)
if maps:
    colour_columns = [label_col] + (
        [map_color_column] if map_color_column in clips.columns and map_color_column != label_col else []
    )
    fig, axes = plt.subplots(
        len(colour_columns), len(maps), figsize=(5 * len(maps), 4.4 * len(colour_columns)), squeeze=False
    )
    for row, column in enumerate(colour_columns):
        values = clips[column].astype(str).to_numpy()
        names = sorted(set(values))
        colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
        for ax, (method, item) in zip(axes[row], maps.items()):
            for j, value in enumerate(names):
                pts = item["points"][values == value]
                ax.scatter(pts[:, 0], pts[:, 1], s=8, color=colours(j % colours.N), label=value)
            ax.set_title(f"{method.upper()} ({item['seconds']:.1f} s), colour: {column}")
            ax.set_xticks([])
            ax.set_yticks([])
        if len(names) <= 20:
            axes[row][-1].legend(markerscale=2, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5), title=column)
    fig.tight_layout()
    save_figure(fig, out, "maps")
    plt.show()

# %% [markdown]
# An interactive version of the first map (hover for the file, label and speaker; click the
# legend to hide labels), saved as `map_interactive.html` beside the results. Plotly comes with
# FiftyOne.

# %%
if maps:
    import plotly.express as px

    method, item = next(iter(maps.items()))
    hover = [c for c in ("speaker", "split", "fold", "category", "duration") if c in clips.columns]
    frame = clips.assign(
        x=item["points"][:, 0],
        y=item["points"][:, 1],
        file=clips.path.map(lambda p: Path(p).name),
        label_text=clips[label_col].astype(str),
    )
    interactive = px.scatter(
        frame,
        x="x",
        y="y",
        color="label_text",
        hover_name="file",
        hover_data=hover,
        title=f"{method.upper()} of {len(clips)} clips ({embedder.name})",
        width=850,
        height=600,
        labels={"label_text": label_col},
    )
    interactive.update_traces(marker={"size": 6})
    save_figure(interactive, out, "map_interactive")
    interactive.show()

# %% [markdown]
# ## Views

# %%
views = fo_standard_views(ds, label=query_label)
view_sizes = {view_name: len(view) for view_name, view in views.items()}
pd.Series(view_sizes, name="clips").to_frame()

# %% [markdown]
# ## Embedding quality
#
# Computed with the metric of the similarity index (cosine on centred vectors).

# %%
with Stopwatch() as sw:
    quality = embedding_quality_table(vectors, labels, ks=(1, 5, 10, n_neighbours), seed=seed)
timings["quality"] = sw.seconds
p_at_k = precision_at_k(vectors, labels, n_neighbours)
chance = precision_chance(labels)
p_other_group = None
if quality_group_column in clips.columns and clips[quality_group_column].nunique() > 1 and len(clips) <= 6000:
    p_other_group = precision_at_k_across_groups(vectors, labels, clips[quality_group_column].astype(str), n_neighbours)
    print(
        f"precision@{n_neighbours} = {p_at_k:.3f}; "
        f"with the query's own {quality_group_column} excluded: {p_other_group:.3f}"
    )
fig = plot_embedding_quality(
    vectors, labels, ks=(1, 2, 5, 10, n_neighbours, 50), title=f"{embedder.name}: neighbour precision"
)
save_figure(fig, out, "embedding_quality")
plt.show()
quality

# %% [markdown]
# ## Export and results

# %%
export_path = out / f"clips.{export_format}"
export_maps = {method: {"points": item["points"]} for method, item in maps.items()}
table = fo_export_table(
    clips.assign(sample_id=sample_ids, lon=lonlat[:, 0], lat=lonlat[:, 1]),
    vectors,
    export_maps,
    export_path,
    fmt=export_format,
)
print(f"exported {table.shape[0]} rows x {table.shape[1]} columns to {export_path}")
results = update_results(
    out,
    dataset={
        "name": ds.name,
        "source": dataset,
        "n_samples": len(clip_view),
        "n_groups": len(clip_view),
        "n_playback": int(len(ds.select_group_slices("playback"))) if make_videos else 0,
        "n_labels": int(len(set(labels))),
        "label_column": label_col,
        "n_failed": len(embed_meta["failed"]) + len(png_failed),
        "failed": embed_meta["failed"] + png_failed,
        "non_null_embeddings": int(clip_view.exists("embedding").count()),
        "n_with_location": int(clip_view.exists("location").count()),
    },
    encoder={
        "name": embedder.name,
        "config": embedder.config(),
        "embedding_dim": int(vectors.shape[1]),
        "standardized": bool(standardize),
    },
    timings=timings,
    cache=cache_report,
    queries=queries,
    quality={
        "k": n_neighbours,
        "precision_at_k": p_at_k,
        "chance": chance,
        "group_column": quality_group_column,
        "precision_at_k_other_groups": p_other_group,
        "table": dict(zip(quality.metric, quality.value)),
    },
    maps={
        method: {
            "seconds": item["seconds"],
            "options": item["options"],
            "brain_key": item["brain_key"],
            "finite": bool(np.isfinite(item["points"]).all()),
            "n_points": int(len(item["points"])),
        }
        for method, item in maps.items()
    },
    views=view_sizes,
    playback=video_check,
    preview_scale=colour_scale,
    export={"path": str(export_path), "rows": int(table.shape[0]), "columns": int(table.shape[1])},
)
print(
    f"precision@{n_neighbours} = {p_at_k:.3f} (chance {chance:.3f}); timings: "
    + ", ".join(f"{key} {value:.2f}s" for key, value in timings.items())
)

# %% [markdown]
# ## The App
#
# Interactively this opens the App on the data set (in remote mode it prints the URL to
# forward through SSH). In the App:
#
# - **hear a clip**: click a thumbnail, then the `playback` slice in the group carousel (a video
#   of the spectrogram with a play-head, whose soundtrack is the clip);
# - **similar clips / maps**: load the saved view `all-clips` (one sample per clip, the view the
#   brain runs were computed on), select a clip and use the similarity button, or open the
#   Embeddings panel and pick `map_umap`, `map_tsne` or `map_pca`; lasso a region to filter;
# - **filters and views**: the sidebar filters by label, speaker, split...; the saved views
#   (by label, split, speaker, a map box and combinations) are in the view menu; the Map panel
#   shows `location`.
#
# `fo_play_clips(fo_clips_view(ds).select(session.selected))` plays the clips selected in the App
# right here in the notebook. Under papermill / `audiolens run` the App is not launched.

# %%
session = fo_launch_app(ds, port=app_port, remote=remote, when=launch_app)
update_results(
    out,
    app={
        "context": fo_execution_context(),
        "launched": session is not None,
        "url": session.url if session is not None else None,
    },
)
