# %% [markdown]
# # Layer embeddings: which layer of which model separates spoken words best
#
# Speech models (Wav2Vec2, WavLM, HuBERT), Whisper's encoder and neural codecs (DAC, Mimi,
# EnCodec) all turn audio into a stack of representations. Which stage of which model keeps
# spoken words apart? This notebook takes N clips of each word (the ten spoken digits of the
# Free Spoken Digit Dataset offline, Speech Commands words or any labelled folder), pools
# every layer's hidden states to one vector per clip, and measures per model and layer:
#
# - cross-validated **kNN accuracy** and **linear-probe accuracy** (speakers held out of
#   training by default, so a layer cannot score by recognising voices),
# - the **silhouette** of the word clusters,
#
# against an MFCC baseline and chance. PCA / t-SNE / UMAP maps (2-D or 3-D, interactive,
# hover shows word, speaker and file) show the clusters layer by layer. A model that cannot
# be loaded (offline, a typo) is reported in `results.json` and the others go on.

# %% tags=["parameters"]
data_path = (
    None  # word data folder (FSDD, Speech Commands or a labelled folder); None: $AUDIOLENS_DATA, data/, download
)
output_dir = "runs/layer_embeddings/latest"  # results.json and figures go here
seed = 0  # random seed
models = ["facebook/wav2vec2-base", "openai/whisper-tiny", "descript/dac_16khz"]  # hub ids or save_pretrained folders
layers = None  # layers to extract: None (all), one list for every model, or {model: [layers]}
word_source = "fsdd"  # "fsdd" (digits, offline), "speech_commands" (downloaded on demand) or a labelled folder path
words = None  # words to compare; None: the ten digits / ten command words / every word of the folder
samples_per_word = 30  # clips per word, spread over speakers
pooling = "mean"  # how frames become one vector: mean, max, first, last or mean+std
compare_poolings = ["mean", "max", "first", "last", "mean+std"]  # poolings compared at each best layer ([]: skip)
layer_mode = "both"  # "single" (each layer alone), "concat" (chosen layers concatenated) or "both"
reduction = "pca"  # map for the views: pca, tsne or umap
n_components = 2  # 2 or 3 (3-D interactive views)
grid_model = None  # model whose layers fill the view grid; None: the model with the best layer
cv_folds = 5  # cross-validation folds for kNN and the linear probe
group_by_speaker = True  # hold speakers out of training in every fold
n_neighbours = 5  # neighbours for the kNN accuracy
mfcc_baseline = True  # add a model-free MFCC (+ deltas) reference row
max_seconds = 10.0  # cap on clip length in seconds
device = "auto"  # auto, cpu, cuda or mps
local_files_only = False  # True: never download models (hub cache and local folders only)
cache_dir = "runs/layer_embeddings/cache"  # embedding cache per model, layer set and pooling; None: no cache
cpu_threads = None  # cap on CPU threads for torch and BLAS (None: defaults; 1-2 is faster on a busy machine)

# %%
import gc
import traceback

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from lib.core.audio import audio_info
from lib.core.outputs import prepare_output_dir, save_figure, update_results
from lib.core.runtime import limit_cpu_threads, pick_device, seed_everything
from lib.core.speech_models import (
    KNOWN_SPEECH_MODELS,
    ModelLoadError,
    load_speech_model,
    resolve_speech_model_id,
)
from lib.layers.embedding_views import (
    embedding_scatter,
    layer_grid_figure,
    layer_grid_png,
    reduce_layer_embeddings,
    reduce_layer_grid,
)
from lib.layers.layer_extraction import (
    check_extraction_memory,
    extract_layer_embeddings_pooled,
    layer_mode_views,
    mfcc_baseline_embeddings,
    resolve_layer_request,
    speech_model_table,
)
from lib.layers.layer_separability import (
    best_layers,
    layer_separability_table,
    plot_layer_separability,
    plot_layer_separability_interactive,
)
from lib.layers.word_samples import select_word_samples, word_sample_summary

seed_everything(seed)
out = prepare_output_dir(output_dir)
device = pick_device(device)
limit_cpu_threads(cpu_threads)
if isinstance(models, str):
    models = [models]
poolings = list(dict.fromkeys([pooling] + list(compare_poolings or [])))
settings = {
    "models": list(models),
    "layers": layers,
    "word_source": str(word_source),
    "words": words,
    "samples_per_word": samples_per_word,
    "pooling": pooling,
    "compare_poolings": compare_poolings,
    "layer_mode": layer_mode,
    "reduction": reduction,
    "n_components": n_components,
    "cv_folds": cv_folds,
    "group_by_speaker": group_by_speaker,
    "n_neighbours": n_neighbours,
    "seed": seed,
    "device": device,
    "cpu_threads": cpu_threads,
}
update_results(out, settings=settings)

# %% [markdown]
# ## Words and samples
#
# The same clips go through every model. Speakers are spread evenly over the words.

# %%
samples = select_word_samples(
    word_source, words=words, samples_per_word=samples_per_word, data_path=data_path, seed=seed
)
print(f"{len(samples)} clips, {samples.word.nunique()} words, {samples.speaker.nunique()} speakers")
display(word_sample_summary(samples))
longest_clip = max(audio_info(p)["duration"] for p in samples.path)
longest_clip = min(longest_clip, max_seconds) if max_seconds else longest_clip
update_results(
    out,
    data={
        "source": str(word_source),
        "words": list(dict.fromkeys(samples.word)),
        "n_clips": len(samples),
        "n_speakers": int(samples.speaker.nunique()),
    },
)

# %% [markdown]
# ## Models
#
# Published sizes of the models asked for (known hub ids), before anything is downloaded.
# Each model is then loaded, described (layers, hidden size, parameters, sample rate),
# checked against the free memory and run over every clip; its embeddings are cached.

# %%
planned = pd.DataFrame(
    [{"model": m, **KNOWN_SPEECH_MODELS.get(resolve_speech_model_id(m), {"note": "local / other"})} for m in models]
)
display(planned)

# %%
embedding_sets, pooled_sets, adapters_info, model_errors = {}, {}, [], {}
for name in models:
    try:
        adapter = load_speech_model(name, device=device, local_files_only=local_files_only)
    except Exception as error:  # noqa: BLE001 - one model that cannot load must not stop the comparison
        model_errors[name] = str(error) if isinstance(error, ModelLoadError) else f"{type(error).__name__}: {error}"
        print(f"SKIPPED {name}: {model_errors[name]}\n")
        continue
    info_table = speech_model_table([adapter])
    display(info_table)
    adapters_info.append(info_table.iloc[0].to_dict())
    try:
        chosen = resolve_layer_request(adapter, layers)
        memory = check_extraction_memory(
            adapter, len(samples), len(chosen), max_clip_seconds=longest_clip, pooling=pooling, n_poolings=len(poolings)
        )
        print(
            f"layers {chosen}; estimated memory {memory['total'] / 2**20:.0f} MiB "
            f"(free {memory['available'] / 2**30:.1f} GiB)"
        )
        pooled_sets[name] = extract_layer_embeddings_pooled(
            adapter, samples.path, chosen, poolings, cache_dir=cache_dir, max_seconds=max_seconds
        )
        embedding_sets[name] = pooled_sets[name][pooling]
    except Exception as error:  # noqa: BLE001 - out of memory (with advice), a bad layer list, a model bug
        model_errors[name] = f"{type(error).__name__}: {error}"
        print(f"FAILED {name}:")
        traceback.print_exc(limit=2)
    finally:
        del adapter
        gc.collect()

extraction = {}
for name, result in embedding_sets.items():
    # seconds: the model's time over all clips (measured when the cache was built, resumes included);
    # seconds_this_run: what this run spent (0 when everything came from the cache)
    extraction[name] = {
        "seconds": round(result.compute_seconds, 3),
        "seconds_this_run": round(result.seconds, 3),
        "from_cache": result.from_cache,
        "clips": len(result.paths),
        "audio_seconds": round(result.compute_audio_seconds, 2),
        "realtime_factor": round(result.compute_audio_seconds / result.compute_seconds, 1)
        if result.compute_seconds
        else None,
        "layers": result.layers,
        "dims": result.dims(),
        "failures": result.failures,
    }
    print(
        f"{name}: {len(result.paths)} clips, {len(result.layers)} layers, extraction {result.compute_seconds:.1f} s"
        + (" (from the cache)" if result.from_cache else "")
    )
if mfcc_baseline:
    pooled_sets["mfcc"] = mfcc_baseline_embeddings(samples.path, poolings, max_seconds=max_seconds)
    embedding_sets["mfcc"] = pooled_sets["mfcc"][pooling]
    extraction["mfcc"] = {
        "seconds": round(embedding_sets["mfcc"].seconds, 3),
        "seconds_this_run": round(embedding_sets["mfcc"].seconds, 3),
        "from_cache": False,
        "clips": len(embedding_sets["mfcc"].paths),
        "layers": ["mfcc"],
        "dims": embedding_sets["mfcc"].dims(),
    }
update_results(out, models=adapters_info, model_errors=model_errors, extraction=extraction)
if not embedding_sets:
    raise RuntimeError(
        f"no model could be loaded and the MFCC baseline is off: nothing to compare; errors: {model_errors}"
    )

# %% [markdown]
# ## Which layer separates the words?
#
# Every model is scored on the same clips (those every model could read). With
# `group_by_speaker` the folds hold speakers out, the honest test of word identity.


# %%
def nan_to_none(value):
    """NaN (an undefined silhouette, the depth of "concat") -> null, so results.json is strict JSON."""
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    return None if isinstance(value, float) and value != value else value


common = set(samples.path)
for result in embedding_sets.values():
    common &= set(result.paths)
clips = samples[samples.path.isin(common)].reset_index(drop=True)
model_views = {}
for name, result in embedding_sets.items():
    position = {p: i for i, p in enumerate(result.paths)}
    index = [position[p] for p in clips.path]
    aligned = {layer: x[index] for layer, x in result.embeddings.items()}
    model_views[name] = layer_mode_views(aligned, layer_mode if name != "mfcc" else "single")
groups = clips.speaker.to_numpy() if group_by_speaker and clips.speaker.nunique() >= 2 else None
table = layer_separability_table(
    model_views, clips.word.to_numpy(), groups=groups, n_splits=cv_folds, knn_k=n_neighbours, seed=seed
)
pd.set_option("display.max_rows", 200)
display(
    table.style.format(
        {"knn_acc": "{:.3f}", "linear_acc": "{:.3f}", "silhouette": "{:.3f}", "depth": "{:.2f}", "chance": "{:.3f}"}
    ).background_gradient(subset=["knn_acc", "linear_acc", "silhouette"])
)

# %%
best = best_layers(table, "linear_acc")
print("Best layer per model (linear probe):")
display(best[["model", "layer", "knn_acc", "linear_acc", "silhouette"]])
fig = plot_layer_separability(
    table,
    title=f"{clips.word.nunique()} words, {len(clips)} clips, pooling {pooling}"
    + (", speakers held out" if groups is not None else ""),
)
save_figure(fig, out, "separability_by_layer")
plt.show()
interactive = plot_layer_separability_interactive(table, "linear_acc")
save_figure(interactive, out, "separability_by_layer_interactive")
interactive.show()
mfcc_row = table[table.model == "mfcc"]
update_results(
    out,
    separability=nan_to_none(
        table[["model", "layer", "position", "depth", "dims", "knn_acc", "linear_acc", "silhouette"]].to_dict(
            orient="records"
        )
    ),
    chance=float(table.chance.iloc[0]),
    cv={
        "folds": int(min(cv_folds, clips.word.value_counts().min())),
        "speakers_held_out": groups is not None,
        "n_clips": len(clips),
    },
    best_layer=nan_to_none(
        {
            row.model: {
                "layer": row.layer,
                "knn_acc": row.knn_acc,
                "linear_acc": row.linear_acc,
                "silhouette": row.silhouette,
            }
            for row in best.itertuples()
        }
    ),
    mfcc_baseline=nan_to_none(mfcc_row.iloc[0][["knn_acc", "linear_acc", "silhouette"]].to_dict())
    if len(mfcc_row)
    else None,
)

# %% [markdown]
# ## Pooling: how frames become one vector
#
# The best layer of each model (and the MFCC baseline) again, pooled each way. `first` and
# `last` keep a single frame (for Whisper `last` is the last frame of real audio, not of
# the 30 s window); `mean+std` also keeps how the features vary over the word.

# %%
pooling_rows = []
if len(poolings) > 1:
    aligned_index = {}
    for name, sets in pooled_sets.items():
        position = {p: i for i, p in enumerate(sets[pooling].paths)}
        aligned_index[name] = [position[p] for p in clips.path]
    for row in best.itertuples():
        views = {
            f"{row.model}|{p}": {row.layer: pooled_sets[row.model][p].embeddings[row.layer][aligned_index[row.model]]}
            for p in poolings
        }
        scored = layer_separability_table(
            views,
            clips.word.to_numpy(),
            groups=groups,
            n_splits=cv_folds,
            knn_k=n_neighbours,
            seed=seed,
            progress=False,
        )
        for item in scored.itertuples():
            pooling_rows.append(
                {
                    "model": row.model,
                    "layer": row.layer,
                    "pooling": item.model.split("|")[-1],
                    "dims": item.dims,
                    "knn_acc": item.knn_acc,
                    "linear_acc": item.linear_acc,
                    "silhouette": item.silhouette,
                }
            )
    pooling_table = pd.DataFrame(pooling_rows)
    display(
        pooling_table.pivot_table(index=["model", "layer"], columns="pooling", values="linear_acc")
        .style.format("{:.3f}")
        .background_gradient(axis=1)
    )
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(best)), 4))
    pivot = pooling_table.pivot_table(index="model", columns="pooling", values="linear_acc")[poolings]
    pivot.index = [str(m).rstrip("/").split("/")[-1] for m in pivot.index]
    pivot.plot.bar(ax=ax, rot=0)
    ax.axhline(table.chance.iloc[0], color="grey", linestyle=":", label="chance")
    ax.set_ylabel("linear-probe accuracy at the best layer")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=3)
    save_figure(fig, out, "pooling_comparison")
    plt.show()
update_results(out, pooling_comparison=nan_to_none(pooling_rows))

# %% [markdown]
# ## Maps of the layers
#
# One map per layer of one model (the one with the best layer unless `grid_model` says
# otherwise), then the best layer of every model on its own. Hover a point for its word,
# speaker and file.

# %%
model_rows = best[best.model != "mfcc"]
grid_name = grid_model if grid_model is not None else (model_rows.model.iloc[0] if len(model_rows) else "mfcc")
if grid_name not in model_views:
    raise ValueError(f"grid_model {grid_name!r} has no embeddings; choose one of {list(model_views)}")
coords = reduce_layer_grid(model_views[grid_name], reduction, n_components, seed)
short_name = str(grid_name).rstrip("/").split("/")[-1]
grid = layer_grid_figure(coords, clips, title=f"{short_name}: {reduction.upper()} of each layer ({pooling} pooling)")
save_figure(grid, out, "layer_grid")
grid.show()
static = layer_grid_png(coords, clips, title=f"{short_name}: {reduction.upper()} of each layer")
save_figure(static, out, "layer_grid")
plt.show()

# %%
for row in best.itertuples():
    points = reduce_layer_embeddings(model_views[row.model][row.layer], reduction, n_components, seed)
    short = str(row.model).rstrip("/").split("/")[-1]
    scatter = embedding_scatter(
        points, clips, title=f"{short}, layer {row.layer} (linear {row.linear_acc:.2f}, kNN {row.knn_acc:.2f})"
    )
    save_figure(scatter, out, f"best_layer_{short}")
    scatter.show()

# %% [markdown]
# ## Summary

# %%
for row in best.itertuples():
    print(
        f"{row.model:>40}: best layer {row.layer:>8}  linear {row.linear_acc:.3f}  kNN {row.knn_acc:.3f}  "
        f"silhouette {row.silhouette:.3f}"
    )
print(f"chance: {table.chance.iloc[0]:.3f}")
for name, error in model_errors.items():
    print(f"not compared: {name}: {error.splitlines()[0]}")
