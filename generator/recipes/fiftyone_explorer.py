# %% [markdown]
# # FiftyOne explorer: audio embeddings, similarity search, maps and playback
#
# Browse a labelled audio collection in the FiftyOne App: every clip is a spectrogram thumbnail
# (one shared colour scale) with its label, metadata, embedding and a map location; open a clip
# and the **Audio** panel plays it. The notebook
#
# 1. loads a data set through one registry of loaders (FSDD, LibriSpeech, any folder in ESC-50's
#    layout, any labelled folder), embeds every clip with the chosen encoder (by default a layer
#    of the bundled Whisper tiny.en, a real pretrained model that needs no download; or any
#    transformers speech model, or MFCC statistics) through an incremental cache, reading and
#    rendering clips in worker processes;
# 2. builds a FiftyOne data set that never deletes your own tags, views or fields, a similarity
#    index (query by clip, by vector, and by any audio file of yours), UMAP / t-SNE / PCA maps,
#    saved views and a geographic map with a bounding-box filter;
# 3. scores the embedding space honestly: precision@k with the query's own speaker (or source
#    recording) excluded next to the plain figure, silhouette, per-class precision and a k-NN
#    accuracy cross-validated by source, against an MFCC baseline;
# 4. exports a table and launches the App when run interactively.
#
# AudioMAE++ checkpoints, encoders saved by other programs and radio IQ recordings are handled
# by the variant `fiftyone_explorer_mae`, which carries that code (`audiolens run
# fiftyone_explorer -p encoder audiomae` picks it).

# %% tags=["parameters"]
data_path = None  # [path] data folder; None: $AUDIOLENS_DATA, data/, then download
dataset = "fsdd"  # [fsdd|librispeech|esc50|folder|custom|rf|iq] loader: ESC-50 layout (full or subset), any folder...
labels_csv = None  # [path] for dataset folder: CSV with filename and label columns (every column becomes a field)
label_column = None  # column used as the label; None: the data set's own (digit, sex, category)
group_column = None  # clips that never count as each other's neighbours; None: the data set's own (speaker, src_file)
max_clips = 600  # [optional int 1..] clips used, balanced by label (None: all)
output_dir = "runs/fiftyone_explorer/latest"  # results.json, figures and the exported table go here
seed = 0  # [int 0..] random seed (sampling, maps, locations)
encoder = "speech_model"  # [mfcc|speech_model|audiomae|external|transform_stats] the last three: fiftyone_explorer_mae
model_name = "bundled/whisper-tiny.en"  # for speech_model: bundled/whisper-tiny.en (offline), a hub id or a folder
model_layer = 4  # for speech_model: hidden layer (0 is the transformer input; Whisper also "conv")
whisper_mode = "clip"  # [clip|padded] Whisper models: the clip alone (fast) or padded to 30 s (reference)
pooling = "mean"  # [mean|max|mean+std|first|last] for speech_model: pooling over the clip's frames
audiomae_checkpoint = None  # [path] for audiomae / external: the checkpoint file
external_config = {}  # for external: what tensor shapes cannot tell (num_heads, use_rope, input_size, sample_rate)
external_min_loaded = 0.9  # [0..1] for external: refuse below this fraction of the encoder's parameters loaded
transform = "log_mel"  # [log_mel|iq_spectrogram|iq_constellation] picture of each clip (iq_*: fiftyone_explorer_mae)
iq_sample_rate = None  # [1..] for rf: the sample rate of IQ files that carry none (their sidecars win)
baseline = "mfcc"  # [mfcc|none] also embed with this no-model baseline and compare in the quality table
local_files_only = False  # True: never try to download the model
device = "auto"  # [auto|cpu|cuda|mps] where the encoder runs
cpu_threads = None  # [int 1..] CPU threads for torch and BLAS (None: the defaults)
batch_size = 32  # [int 1..] clips per batch (reading, encoder)
workers = "auto"  # [str|int] processes that read clips and render previews: "auto" (one per core) or a number (0: none)
standardize = True  # z-score each embedding dimension before similarity, maps and scores
cache_dir = "~/.cache/audiolens/embeddings"  # embedding and map cache (per data set and encoder)
media_dir = "~/.cache/audiolens/media"  # PNG previews and MP4 clips (per data set)
make_videos = True  # make playable MP4s (spectrogram + soundtrack) for the App's playback slice
max_videos = None  # [int 1..] cap on MP4s (None: one per clip)
fo_dataset_name = None  # FiftyOne data set; None: audiolens-<dataset>-<encoder> (kept if it holds your content)
overwrite = False  # True: replace a data set of that name even if it holds your tags, views or fields
fiftyone_db_dir = None  # FiftyOne database folder; None: FiftyOne's default (~/.fiftyone)
coords_csv = None  # [path] CSV of lon,lat per file (path/filename column) or per class (label column)
geo_by = "label"  # column whose categories get clustered synthetic coordinates where no CSV covers a clip
query_audio = None  # audio file(s) to search for (path or list; any format/rate); None: a clip not in the data set
n_neighbours = 20  # [int 1..] neighbours per similarity query and for precision@k
knn_neighbours = 5  # [int 1..] neighbours voting in the cross-validated k-NN accuracy
map_methods = ["umap", "tsne", "pca"]  # [each umap|tsne|pca] 2-D maps to compute
umap_n_neighbours = 15  # [int 2..] UMAP neighbourhood size
umap_min_dist = 0.1  # [0..1] UMAP minimum distance
tsne_perplexity = 30.0  # [1..] t-SNE perplexity
map_color_column = "speaker"  # [optional str] maps coloured by this column too (None or a missing column: skip)
map_threads = "auto"  # [optional str|int] OpenMP threads for the maps: "auto" (1 up to 2,000 clips), None or a number
export_format = "parquet"  # [parquet|csv] table of metadata + embeddings + map coordinates
launch_app = "auto"  # [auto|always|never] auto: only in an interactive notebook
app_port = 5151  # [int 1..65535] App port
bench_json = None  # [path] bench.json of `audiolens bench explorer` to show (None: skip)

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import HTML, Image, Markdown, Video, display

from lib.core.audio import audio_info
from lib.core.outputs import Stopwatch, prepare_output_dir, read_results, save_figure, update_results
from lib.core.runtime import limit_cpu_threads, pick_device, seed_everything
from lib.core.subsets import stratified_subset
from lib.explorer.audio_embedders import embed_audio_files_cached, embed_signal_files, make_audio_embedder
from lib.explorer.embedding_quality import plot_embedding_quality, quality_comparison, quality_report
from lib.explorer.explorer_batches import ExplorerAudioReader
from lib.explorer.explorer_data import load_explorer_dataset
from lib.explorer.explorer_report import (
    explorer_bench_table,
    explorer_contact_sheet,
    explorer_geo_box,
    explorer_geo_figure,
    explorer_query_table,
    write_query_demo,
)
from lib.explorer.fiftyone_audio import (
    FO_PLAYBACK_SLICE,
    fo_build_audio_dataset,
    fo_clips_view,
    fo_compute_maps,
    fo_compute_similarity,
    fo_connect,
    fo_export_table,
    fo_geolocations,
    fo_query_by_sample,
    fo_query_by_vector,
    fo_record_made,
    fo_standard_views,
)
from lib.explorer.fo_app import fo_audio_spaces, fo_execution_context, fo_install_audio_plugin, fo_launch_app
from lib.explorer.spectrogram_media import (
    explorer_render_previews,
    make_explorer_transform,
    spec_media_streams,
    spec_video_metadata,
    spectrogram_colorbar_figure,
    spectrogram_videos,
)

seed_everything(seed)
limit_cpu_threads(cpu_threads)
out = prepare_output_dir(output_dir)
timings = {}

# %% [markdown]
# ## The clips
#
# The data set's loader returns a manifest (one row per clip: `path`, the label and every
# metadata column the data set has), which column groups clips that must not count as each
# other's neighbours, and its folds; it is sampled to `max_clips`, every label keeping its share.

# %%
data = load_explorer_dataset(dataset, data_path, labels_csv, label_column, iq_sample_rate, cache_dir)
label_col = data.label_column
group_col = group_column or data.group_column
if group_col is not None and group_col not in data.manifest.columns:
    raise ValueError(f"group_column {group_col!r} is not a column of {dataset}: {list(data.manifest.columns)}")
manifest = stratified_subset(data.manifest, max_clips, seed=seed, column=label_col)
dataset_key = f"{data.name}-{Path(data_path).name if data_path else 'default'}"
print(
    f"{len(manifest)} of {len(data.manifest)} clips, {manifest[label_col].nunique()} labels ({label_col}); "
    f"group: {group_col}; folds: {data.fold_column}; columns: {list(manifest.columns)}"
)
if data.skipped:
    print("skipped while loading:", data.skipped)
manifest.head()

# %% [markdown]
# ## What this run computes
#
# The encoder is loaded once, here, before any clip is read: a model or checkpoint that cannot
# be used stops the run with its own error. The two paragraphs below are written by the
# encoder and the transform themselves, so they say what this run actually does.

# %%
embedder = make_audio_embedder(
    encoder,
    model_name=model_name,
    layer=model_layer,
    pooling=pooling,
    whisper_mode=whisper_mode,
    checkpoint=audiomae_checkpoint,
    external_config=external_config,
    min_loaded=external_min_loaded,
    transform=transform,
    iq_sample_rate=iq_sample_rate,
    batch_size=batch_size,
    device=pick_device(device),
    local_files_only=local_files_only,
).load()
media_root = Path(media_dir).expanduser() / dataset_key
renderer = make_explorer_transform(
    transform, media_root / transform, manifest.path, seed=seed, sample_rate=embedder.sample_rate
)
if renderer.signal != data.signal:
    raise ValueError(
        f"transform {transform!r} draws {renderer.signal} signals but dataset {dataset!r} holds {data.signal}"
    )
reader = embedder.reader() if hasattr(embedder, "reader") else ExplorerAudioReader(embedder.sample_rate)
display(Markdown(f"**Encoder.** {embedder.describe()}\n\n**Pictures.** {renderer.describe()}"))

# %% [markdown]
# ## Embeddings and previews, through the cache
#
# Worker processes read each clip once, compute the encoder's input (for MFCC, the whole
# embedding) and render its preview, while this process runs the model on finished batches. A
# second pass, with nothing changed, must compute nothing: its time is the cost of reading the
# cache back.

# %%
stats = {}
with Stopwatch() as sw_first:
    embeddings, files, embed_meta = embed_audio_files_cached(
        manifest.path,
        embedder,
        cache_dir,
        dataset_key,
        batch_size,
        workers=workers,
        reader=reader,
        preview=renderer,
        stats=stats,
    )
with Stopwatch() as sw_second:
    embeddings_again, files_again, embed_meta_again = embed_audio_files_cached(
        manifest.path, embedder, cache_dir, dataset_key, batch_size, workers=workers, reader=reader
    )
assert files_again == files and np.array_equal(embeddings_again, embeddings), "cache returned different embeddings"
assert embed_meta_again["cache"]["n_computed"] == 0, "second run recomputed embeddings"
with Stopwatch() as sw_previews:
    previews_of, preview_failed = explorer_render_previews(files, renderer, reader, workers)
timings.update(embeddings=sw_first.seconds, embeddings_cached=sw_second.seconds, previews=sw_previews.seconds)
stage_seconds = {k: round(v, 3) for k, v in embed_meta["stats"].items()}
cache_report = {
    "first_run_seconds": sw_first.seconds,
    "first_run_computed": embed_meta["cache"]["n_computed"],
    "first_run_cold": embed_meta["cache"]["n_cached"] == 0,
    "second_run_seconds": sw_second.seconds,
    "second_run_computed": embed_meta_again["cache"]["n_computed"],
    # only meaningful when the first pass computed something
    "speedup": sw_first.seconds / max(sw_second.seconds, 1e-9) if embed_meta["cache"]["n_computed"] else None,
    "cache_dir": embed_meta["cache"]["cache_dir"],
    "stage_seconds": stage_seconds,
}
if cache_report["speedup"] is None:
    print(
        f"embeddings {embeddings.shape} in {sw_first.seconds:.2f} s, all {len(files)} from the cache of an earlier "
        f"run ({cache_report['cache_dir']}); a cold run's timings: a new cache_dir"
    )
else:
    print(
        f"embeddings {embeddings.shape} in {sw_first.seconds:.2f} s ({cache_report['first_run_computed']} computed; "
        f"seconds per stage, summed over workers: {stage_seconds}); again from the cache in "
        f"{sw_second.seconds:.3f} s ({cache_report['speedup']:.0f}x faster)"
    )
failed = embed_meta["failed"] + embed_meta["encoder_failed"] + preview_failed
if failed:
    print(f"{len(failed)} clip(s) skipped:\n" + pd.DataFrame(failed).head(20).to_string(index=False))
clips = manifest.set_index("path").loc[[f for f in files if f in previews_of]].reset_index()
vectors_raw = embeddings[[files.index(p) for p in clips.path]]
previews = [previews_of[p] for p in clips.path]
if data.signal == "audio":
    clips["duration"] = [audio_info(p)["duration"] for p in clips.path]
save_figure(spectrogram_colorbar_figure(renderer.scale), out, "colour_scale") if hasattr(renderer, "scale") else None
display(Image(filename=previews[0]))

# %% [markdown]
# ## The baseline
#
# The same clips embedded with MFCC statistics (no model), for the quality table below: a
# model's embedding is only worth its cost if it beats this.

# %%
baseline_vectors = None
if baseline == "mfcc" and encoder != "mfcc" and data.signal == "audio":
    baseline_embedder = make_audio_embedder("mfcc").load()
    with Stopwatch() as sw:
        base_emb, base_files, _ = embed_audio_files_cached(
            clips.path, baseline_embedder, cache_dir, dataset_key, batch_size, workers=workers
        )
    timings["baseline"] = sw.seconds
    row_of_base = {p: i for i, p in enumerate(base_files)}
    keep = [p in row_of_base for p in clips.path]
    baseline_vectors = np.full((len(clips), base_emb.shape[1]), np.nan, np.float32)
    baseline_vectors[keep] = base_emb[[row_of_base[p] for p in clips.path if p in row_of_base]]
    print(f"baseline {baseline_embedder.name}: {base_emb.shape} in {sw.seconds:.1f} s")

# %% [markdown]
# ## Playable clips
#
# An MP4 per clip: its spectrogram as the picture, a moving play-head, the clip as soundtrack
# (made by the ffmpeg that `imageio-ffmpeg` ships; several at once). Their video metadata (size,
# frame rate, duration, frame count) is stored with each sample, so the App never has to run
# `ffprobe`.

# %%
videos, video_check = [None] * len(clips), {}
if make_videos and data.signal == "audio":
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
        "metadata": spec_video_metadata(videos[first], previews[first], clips.duration[first]),
    }
    print(
        f"{video_check['n_videos']} playable clips in {sw.seconds:.1f} s; example {Path(videos[first]).name}: {streams}"
    )
    display(Video(videos[first], embed=True, mimetype="video/mp4"))

# %% [markdown]
# ## The FiftyOne data set
#
# Each clip is one **group** holding its spectrogram image and (when made) its playback video:
# the App's grid shows one tile per clip, and counts the samples of the slice it shows. A data
# set of this name made by an earlier run is reused when it holds exactly this content (your
# tags, views and fields stay), replaced when it holds nothing of yours, and otherwise left
# alone with an error that says why (`overwrite=True` replaces it anyway).

# %%
fo_connect(fiftyone_db_dir, Path(fiftyone_db_dir) / "datasets" if fiftyone_db_dir else None)
vectors = vectors_raw.astype(np.float64)
vector_mean, vector_std = vectors.mean(axis=0), vectors.std(axis=0) + 1e-8
if standardize:
    vectors = (vectors - vector_mean) / vector_std
vectors = vectors.astype(np.float32)
lonlat, geo_source = fo_geolocations(
    clips, coords_csv=coords_csv, by=geo_by if geo_by in clips else label_col, seed=seed
)
fo_name = fo_dataset_name or f"audiolens-{dataset}-{encoder}"
with Stopwatch() as sw:
    ds = fo_build_audio_dataset(
        fo_name,
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
n_playback = len(ds.select_group_slices(FO_PLAYBACK_SLICE)) if FO_PLAYBACK_SLICE in (ds.group_slices or []) else 0
print(
    f"{ds.name}: {len(clip_view)} clips = {len(clip_view)} groups; each group holds its spectrogram"
    + (
        f" and, for {n_playback} clips, a playback video: {len(clip_view) + n_playback} samples in all"
        if n_playback
        else ""
    )
    + f" ({ds.info['audiolens']['action']})"
)

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
fig = explorer_contact_sheet(
    by_sample.values("filepath"),
    by_sample.values("ground_truth.label"),
    f"{n_neighbours} nearest clips to a '{query_label}' clip (first: the clip itself)",
)
save_figure(fig, out, "query_by_sample")
plt.show()
pd.DataFrame({q: v for q, v in queries.items() if isinstance(v, dict)}).T

# %% [markdown]
# ## Query by any audio file
#
# `query_audio` (a path or a list; any format and sample rate the audio loader reads) is
# embedded with the same encoder and transform as the data set, standardised with the data
# set's statistics and searched with k = `n_neighbours`. The result is saved as a FiftyOne view
# (`query-<file>`) and shown here with a player per clip. Without `query_audio`, the notebook
# writes a clip the data set does not contain (or, if it contains them all, one of its own
# clips) as 44.1 kHz FLAC and searches with that.

# %%
if query_audio is None:
    unused = data.manifest[~data.manifest.path.isin(set(clips.path))]
    source_clip = (unused if len(unused) else clips).sample(1, random_state=seed).iloc[0]
    query_truth = str(source_clip[label_col])
    query_group = str(source_clip[group_col]) if group_col and group_col in source_clip else None
    query_files = [write_query_demo(source_clip.path, out / "query", reader)]
    print(f"query: {Path(query_files[0]).name} ({'not in' if len(unused) else 'in'} the data set), label {query_truth}")
else:
    query_files = [query_audio] if isinstance(query_audio, (str, Path)) else list(query_audio)
    query_truth = query_group = None
query_vectors, query_ok, query_failed, query_rejected = embed_signal_files(
    query_files, embedder, batch_size, progress=False, workers=0, reader=reader
)
if not query_ok:
    raise ValueError(f"no query file could be embedded: {query_failed + query_rejected}")
query_results = {}
for path, vector in zip(query_ok, query_vectors):
    vector = (vector - vector_mean) / vector_std if standardize else vector
    view = fo_query_by_vector(ds, vector, k=n_neighbours)
    view_name = f"query-{Path(path).stem}".lower().replace("_", "-")[:60]
    ds.save_view(view_name, view, overwrite=True)
    fo_record_made(ds, saved_views=[view_name])
    found = pd.DataFrame(
        {"path": view.values("audio_filepath"), label_col: view.values("ground_truth.label")}
        | {c: view.values(c) for c in dict.fromkeys(("speaker", "src_file", "fold", group_col)) if c in clips.columns}
    )
    index_vectors = vectors[[clips.path.tolist().index(p) for p in found.path]].astype(np.float64)
    q = vector - vectors.mean(axis=0)
    centred = index_vectors - vectors.mean(axis=0)
    found["distance"] = 1 - centred @ q / (np.linalg.norm(centred, axis=1) * np.linalg.norm(q) + 1e-12)
    query_results[Path(path).name] = {
        "view": view_name,
        "n_results": len(found),
        "top_labels": found[label_col].astype(str).head(5).tolist(),
        "same_label_fraction": float((found[label_col].astype(str) == query_truth).mean()) if query_truth else None,
        "truth": query_truth,
    }
    if query_truth and query_group is not None and group_col in found.columns:
        # the demo clip is not in the index, but its speaker (or recording) may be: say how much that helps
        others = found[found[group_col].astype(str) != query_group]
        same_label = float((others[label_col].astype(str) == query_truth).mean()) if len(others) else float("nan")
        query_results[Path(path).name].update(
            same_group_neighbours=int(len(found) - len(others)), same_label_fraction_other_groups=same_label
        )
        print(
            f"{len(found) - len(others)} of the {len(found)} neighbours are {group_col} {query_group}'s own clips"
            + (f"; among the other {len(others)}, {same_label:.0%} have the label {query_truth}" if len(others) else "")
        )
    display(Markdown(f"**{n_neighbours} nearest clips to `{Path(path).name}`** (saved view `{view_name}`)"))
    display(HTML(explorer_query_table(found, label_col)))
if query_failed or query_rejected:
    print("query files skipped:", query_failed + query_rejected)

# %% [markdown]
# ## Maps: UMAP, t-SNE, PCA
#
# Stored as brain runs (the App's Embeddings panel shows them, linked to the grid), and
# plotted here coloured by label. The points are cached beside the embeddings: a rerun on the
# same embeddings only stores them again.

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
    cache_dir=Path(cache_dir).expanduser() / "maps" / dataset_key,
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
# An interactive version of the first map (hover for the file, label and metadata; click the
# legend to hide labels), saved as `map_interactive.html` beside the results.

# %%
if maps:
    import plotly.express as px

    method, item = next(iter(maps.items()))
    hover = [c for c in ("speaker", "split", "fold", "category", "src_file", "duration") if c in clips.columns]
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
# ## Where the clips are
#
# Each clip has a location: from `coords_csv` when it gives one (per file or per class), else
# synthetic coordinates clustered by `geo_by` (one centre per category, as a proof of concept
# for data that has real ones). The map needs no token. The black box is a **geographic
# filter**: FiftyOne's `geo_within` keeps the clips inside it (saved as the view `geo-box`), and
# the table counts their labels. The App's Map panel shows the same field, `location`.

# %%
geo_frame = clips.assign(lon=lonlat[:, 0], lat=lonlat[:, 1], file=clips.path.map(lambda p: Path(p).name))
geo_mask = (clips[label_col].astype(str) == str(query_label)).to_numpy()
geo_box = explorer_geo_box(lonlat, geo_mask)
x0, y0, x1, y1 = geo_box
inside = clip_view.geo_within([[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]])
geo_counts = pd.Series(inside.values("ground_truth.label")).value_counts()
geo_kinds = {"synthetic": f"SYNTHETIC (one centre per {geo_by}, a demo: not where the clips were recorded)"}
geo_title = ", ".join(f"{n} {geo_kinds.get(kind, kind)}" for kind, n in pd.Series(geo_source).value_counts().items())
geo_figure = explorer_geo_figure(
    geo_frame,
    label_col,
    geo_box,
    f"Clip locations: {geo_title}",
    hover=["file"],
)
save_figure(geo_figure, out, "geo_map")
geo_figure.show()
print(f"the box {tuple(round(v, 1) for v in geo_box)} holds {len(inside)} clips:")
geo_counts.to_frame("clips in the box")

# %% [markdown]
# ## Views

# %%
views = fo_standard_views(ds, label=query_label, geo_box=geo_box)
view_sizes = {view_name: len(view) for view_name, view in views.items()}
pd.Series(view_sizes, name="clips").to_frame()

# %% [markdown]
# ## Embedding quality
#
# Computed with the metric of the similarity index (cosine on centred vectors). precision@k
# counts same-label clips among each clip's k nearest neighbours; with the query's own group
# excluded (its speaker, or the recording it was cut from) it asks whether the embedding groups
# the *label* rather than the voice or the recording. When it is *higher* than plain precision@k,
# the embedding's nearest neighbours are mostly the same speaker's other words: taking them away
# leaves more of the same word (compare the two columns in this run's table). The chance columns differ on purpose:
# precision's chance is a random neighbour's (same-label share among the others), k-NN's is the
# largest class's share. The k-NN accuracy is cross-validated with no group in two folds
# (ESC-50's own folds when all five are present).

# %%
groups = clips[group_col].astype(str).to_numpy() if group_col else None
folds = clips[data.fold_column].to_numpy() if data.fold_column else None
with Stopwatch() as sw:
    reports = {embedder.name: quality_report(vectors, labels, groups, folds, n_neighbours, knn_neighbours, seed=seed)}
    if baseline_vectors is not None and np.isfinite(baseline_vectors).all():
        base = baseline_vectors.astype(np.float64)
        base = ((base - base.mean(axis=0)) / (base.std(axis=0) + 1e-8)) if standardize else base
        reports[f"baseline: {baseline_embedder.name}"] = quality_report(
            base, labels, groups, folds, n_neighbours, knn_neighbours, seed=seed
        )
timings["quality"] = sw.seconds
comparison = quality_comparison(reports)
best = comparison[f"k-NN accuracy (k={knn_neighbours})"].idxmax()
fig = plot_embedding_quality(
    vectors, labels, ks=(1, 2, 5, 10, n_neighbours, 50), title=f"{embedder.name}", per_label_k=n_neighbours
)
save_figure(fig, out, "embedding_quality")
plt.show()
print(f"best k-NN accuracy: {best}")
comparison

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
main_report = reports[embedder.name]
update_results(
    out,
    dataset={
        "name": ds.name,
        "source": dataset,
        "action": ds.info["audiolens"]["action"],
        "summary": data.summary(),
        "n_samples": len(clip_view),
        "n_groups": len(clip_view),
        "n_playback": n_playback,
        "n_labels": int(len(set(labels))),
        "label_column": label_col,
        "group_column": group_col,
        "n_failed": len(failed),
        "failed": failed,
        "non_null_embeddings": int(clip_view.exists("embedding").count()),
        "n_with_location": int(clip_view.exists("location").count()),
    },
    encoder={
        "name": embedder.name,
        "kind": encoder,
        "config": embedder.config(),
        "weights": embedder.weights,
        "embedding_dim": int(vectors.shape[1]),
        "standardized": bool(standardize),
        "description": embedder.describe(),
        "transform": transform,
        "transform_description": renderer.describe(),
    },
    timings=timings,
    cache=cache_report,
    queries=queries,
    query_by_file=query_results,
    quality={
        "k": n_neighbours,
        "precision_at_k": main_report["precision_at_k"],
        "chance": main_report["chance"],
        "group_column": group_col,
        "precision_at_k_other_groups": main_report["precision_at_k_other_groups"],
        "silhouette": main_report.get("silhouette"),
        "knn": main_report["knn"],
        "per_class_precision": main_report["per_class_precision"],
        "reports": reports,
        "best_knn": best,
    },
    maps={
        method: {
            "seconds": item["seconds"],
            "cached": item["cached"],
            "options": item["options"],
            "brain_key": item["brain_key"],
            "finite": bool(np.isfinite(item["points"]).all()),
            "n_points": int(len(item["points"])),
        }
        for method, item in maps.items()
    },
    geo={
        "box": geo_box,
        "n_inside": len(inside),
        "labels_inside": geo_counts.to_dict(),
        "sources": list(set(geo_source)),
    },
    views=view_sizes,
    playback=video_check,
    preview_scale=getattr(renderer, "scale", None),
    export={"path": str(export_path), "rows": int(table.shape[0]), "columns": int(table.shape[1])},
)
results = read_results(out)
print(
    f"precision@{n_neighbours} = {main_report['precision_at_k']:.3f} (chance {main_report['chance']:.3f}); timings: "
    + ", ".join(f"{key} {value:.2f}s" for key, value in timings.items())
)

# %% [markdown]
# ## Scale: the benchmark
#
# `audiolens bench explorer --clips 2000 --encoder mfcc` (or `audiomae` with a checkpoint) runs
# this pipeline on 2,000 clips and times every stage, then runs it again from the caches. Point
# `bench_json` at its `bench.json` to show the table here.

# %%
if bench_json is not None:
    bench_table = explorer_bench_table(bench_json)
    update_results(out, bench=bench_table.reset_index().to_dict("records"))
    display(bench_table)

# %% [markdown]
# ## The App
#
# Interactively this installs the **Audio** panel plugin and opens the App beside it. In the App:
#
# - **hear a clip**: click a thumbnail's checkbox (grid) or open the clip (modal, tab *Audio*):
#   the Audio panel shows its label, file and duration and plays it, with a volume control. The
#   `playback` slice of a group is a video of the spectrogram with a play-head; FiftyOne's video
#   player starts muted (press `m` to unmute);
# - **similar clips / maps**: load the saved view `all-clips` (one sample per clip, the view the
#   brain runs were computed on), select a clip and use the similarity button, or open the
#   Embeddings panel and pick `map_umap`, `map_tsne` or `map_pca`; lasso a region to filter;
# - **filters and views**: the sidebar filters by label, speaker, fold...; the saved views (by
#   label, split, speaker, the geo box, your queries) are in the view menu.
#
# Under papermill / `audiolens run` the App is not launched. To serve the App from a remote
# machine, launch it from a Python script (`fo_launch_app(ds, remote=True)`), not a notebook.

# %%
plugin_folder = fo_install_audio_plugin(Path(fiftyone_db_dir) / "plugins" if fiftyone_db_dir else None)
session = fo_launch_app(ds, port=app_port, when=launch_app, spaces=fo_audio_spaces())
update_results(
    out,
    app={
        "context": fo_execution_context(),
        "launched": session is not None,
        "url": session.url if session is not None else None,
        "audio_plugin": str(plugin_folder),
    },
)
