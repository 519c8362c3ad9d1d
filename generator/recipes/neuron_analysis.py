# %% [markdown]
# # Neuron analysis: streamed layer activity, tuned neurons, trajectories, Whisper keywords
#
# How do the layers of a self-supervised speech model (default `microsoft/wavlm-base-plus`;
# Wav2Vec2 and HuBERT work too) respond to speech? Offline, on real LibriSpeech utterances:
# which neurons of layers 2, 6 and 10 follow energy, pitch, voicing and spectral shape
# (Pearson and Spearman with FDR-corrected p-values), how neurons group by tuning profile,
# how the layer's activity moves through its principal components, and where Whisper finds
# words (keyword markers on the spectrogram and heatmaps). A 2-D semantic projector fitted on
# speakers is saved and reloaded. Then streaming: the same model run incrementally with left
# context on 200 ms updates, with update latency (p50/p95) and the real-time factor measured,
# and an ipywidgets live view (microphone or a file played in real time).
#
# If the model's weights cannot be downloaded (offline) and `random_weights_if_unavailable`
# is set, a model of the same architecture and size with RANDOM weights is used: timings are
# then meaningful, tuning results are not those of the trained model (results.json says so).

# %% tags=["parameters"]
data_path = None  # LibriSpeech sample folder; None: $AUDIOLENS_DATA, data/
output_dir = "runs/neuron_analysis/latest"  # results.json and figures go here
seed = 0  # random seed (utterance choice, PCA, clustering)
model_name = "microsoft/wavlm-base-plus"  # hub id or local folder (WavLM, Wav2Vec2, HuBERT)
random_weights_if_unavailable = True  # offline without the weights: same-size model with random weights
device = "cpu"  # cpu, cuda, mps or auto
cpu_threads = None  # CPU threads for torch and BLAS (None: the defaults)
layers = [2, 6, 10]  # transformer layers to analyse (0: the transformer input)
n_utterances = 8  # LibriSpeech utterances analysed offline (distinct speakers)
max_seconds = 12.0  # crop each utterance to this many seconds (None: whole)
pitch_method = "pyin"  # pitch tracker: pyin (with voicing) or yin (faster)
top_k = 5  # most tuned neurons listed per feature
n_clusters = 6  # clusters of neurons by tuning profile
fdr_alpha = 0.05  # false discovery rate for significance (Benjamini-Hochberg)
heatmap_neurons = 96  # neurons shown in each heatmap
whisper_model = None  # faster-whisper name or local folder; None: local tiny.en if installed, else "tiny.en"
whisper_backend = "faster-whisper"  # faster-whisper or transformers
keywords = None  # words to mark; None: most frequent words (4+ letters) in the transcripts
n_transcribe = None  # utterances transcribed (None: all analysed)
projector_path = None  # saved semantic projector (.npz) to load; None: fit one and save it
projector_manifest = None  # CSV of labelled clips (path, label) to fit the projector on; None: these speakers
projector_layer = None  # layer the projector maps (None: last of layers)
segment_seconds = 2.0  # segment length for speaker embeddings
stream_seconds = 10.0  # audio streamed for the latency measurement
stream_update_s = 0.2  # audio per streaming update (s); frames stay 40 ms windows / 20 ms hop
left_context_s = 1.0  # left context kept by the streaming model (s)
throttle_policy = "batch"  # when compute lags: batch pending audio or skip stale blocks
smoothing_alpha = 0.5  # exponential smoothing of live activity (1: none)

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from IPython.display import display

from lib.core.audio import load_audio
from lib.core.datasets import load_librispeech
from lib.core.features import log_mel
from lib.core.outputs import Stopwatch, prepare_output_dir, save_figure, update_results
from lib.core.runtime import limit_cpu_threads, pick_device, seed_everything
from lib.neurons.frame_stream import FileBlockSource, FrameStreamRunner, microphone_status
from lib.neurons.neuron_live import LiveNeuronPipeline, NeuronLivePanel
from lib.neurons.neuron_tuning import (
    TUNING_FEATURES,
    activity_pca,
    analyse_layer_tuning,
    collect_layer_activity,
    heatmap_neuron_order,
    marked_frame_selectivity,
)
from lib.neurons.semantic_projector import (
    fit_projector_from_manifest,
    fit_semantic_projector,
    load_projector,
    projector_status,
    save_projector,
    segment_embeddings,
    speaker_clustering,
)
from lib.neurons.streaming_activations import (
    StreamingLayerActivations,
    load_model_for_analysis,
    streaming_agreement,
)
from lib.neurons.whisper_keywords import (
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
    model_name, random_weights_if_unavailable=random_weights_if_unavailable, device=device, seed=seed
)
layers = [int(x) for x in layers if int(x) <= adapter.num_layers]
if not layers:
    raise ValueError(f"none of the requested layers exist: {adapter.name} has layers 0..{adapter.num_layers}")
projector_layer = int(projector_layer) if projector_layer is not None else layers[-1]
print(adapter)
print("weights:", model_info["weights"], "-", model_info.get("fallback_reason", "as saved in the checkpoint"))
update_results(
    out,
    model={
        k: model_info[k]
        for k in ("model", "weights", "family", "num_transformer_layers", "hidden_size", "num_parameters", "device")
        if k in model_info
    }
    | {"fallback_reason": model_info.get("fallback_reason")},
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
waves, names, speakers = [], [], []
for row in chosen.itertuples():
    y = load_audio(row.path, sr=adapter.sample_rate, max_seconds=max_seconds)
    waves.append(y)
    names.append(row.utterance)
    speakers.append(row.speaker)
total_seconds = sum(len(w) for w in waves) / adapter.sample_rate
print(f"{len(waves)} utterances, {total_seconds:.1f} s of speech")
display(
    chosen.assign(seconds=[len(w) / adapter.sample_rate for w in waves])[
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
with Stopwatch() as sw_analyse:
    analysis = analyse_layer_tuning(collected, TUNING_FEATURES, n_clusters=n_clusters, top_k=top_k, alpha=fdr_alpha)
n_frames = sum(len(a) for a in collected["activity"][layers[0]])
print(f"{n_frames} frames; activity + features {sw_collect.seconds:.1f} s, tuning analysis {sw_analyse.seconds:.1f} s")

# %% [markdown]
# ## Tuned neurons per layer
#
# Spearman r (rank correlation) of each neuron with each feature over all frames; q is the
# Benjamini-Hochberg adjusted p-value over all neuron x feature tests of the layer. Frames
# are not independent, so treat q as a ranking aid rather than an exact error rate.

# %%
tuning_results = {}
for layer in layers:
    res = analysis[layer]
    print(
        f"\n=== layer {layer}: {res['summary']['share_tuned_any_feature']:.0%} of neurons tuned to at least one "
        f"feature (q < {fdr_alpha}); effective dimensionality {res['summary']['effective_dimensionality']:.1f}"
    )
    display(res["table"].round(4))
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
# Per layer, the neurons whose activity differs most between keyword frames and all other
# frames of the transcribed utterances (Welch's t-test, BH-corrected over neurons).

# %%
keyword_neurons = {}
if len(markers):
    transcribed_idx = [names.index(n) for n in words_per_utt]
    masks = [
        keyword_frame_mask(markers[markers.utterance == names[i]], len(collected["activity"][layers[0]][i]))
        for i in transcribed_idx
    ]
    for layer in layers:
        table = marked_frame_selectivity([collected["activity"][layer][i] for i in transcribed_idx], masks, k=top_k)
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
axes[0].set_title(f"{name}: " + (transcripts.get(name, "")[:120] or "(no transcript)"), fontsize=9)
for m in markers[markers.utterance == name].itertuples():
    for ax in axes:
        ax.axvspan(m.start, m.end, color="cyan", alpha=0.15)
    axes[0].text(m.start, 60, m.keyword, color="cyan", fontsize=8, va="top")
for ax, layer in zip(axes[1:], layers):
    x = collected["activity"][layer][focus]
    order = heatmap_neuron_order(x, analysis[layer]["tuning"], analysis[layer]["labels"])[:heatmap_neurons]
    z = (x[:, order] - x[:, order].mean(0)) / (x[:, order].std(0) + 1e-6)
    ax.imshow(
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
    title=f"Layer {layer} trajectories (colour: RMS dB)",
    height=550,
    scene=dict(xaxis_title="PC1", yaxis_title="PC2", zaxis_title="PC3"),
)
save_figure(pfig, out, "pca_trajectories_3d")
pfig.show()

# %% [markdown]
# ## Semantic projector: a 2-D speaker map of one layer
#
# Mean layer activity over 2 s segments; the projector (LDA to 2-D over speakers) is fitted on
# the even segments of each utterance and evaluated on the odd ones (clustering by speaker,
# adjusted Rand index; nearest speaker centroid), then saved to `.npz` and reloaded.

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
if projector_path:
    projector = load_projector(projector_path)
    projector_file = projector_path
    projector_fit = {"data": f"loaded from {projector_path}"}
elif projector_manifest:
    projector, projector_fit = fit_projector_from_manifest(
        adapter, pd.read_csv(projector_manifest), projector_layer, segment_seconds=segment_seconds
    )
    projector_fit["data"] = str(projector_manifest)
    projector_file = save_projector(projector, out / "semantic_projector.npz")
    projector = load_projector(projector_file)
elif len(np.unique(seg_labels[fit_mask])) >= 2:
    projector = fit_semantic_projector(
        emb[fit_mask],
        seg_labels[fit_mask],
        source={
            "model": model_info["model"],
            "weights": model_info["weights"],
            "layer": projector_layer,
            "labels": "speaker",
        },
    )
    projector_file = save_projector(projector, out / "semantic_projector.npz")
    projector = load_projector(projector_file)  # what a later session would load
else:
    projector = None
status = projector_status(projector, projector_file)
print("projector:", status)
clustering = (
    speaker_clustering(emb[eval_mask], seg_labels[eval_mask], projector, seed=seed)
    if eval_mask.sum() > len(np.unique(seg_labels))
    else {"note": "too few held-out segments"}
)
print("speaker clustering on held-out segments:", clustering)
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
        ax.scatter(points[m & fit_mask, 0], points[m & fit_mask, 1], s=18, marker="o", label=s)
        ax.scatter(points[m & eval_mask, 0], points[m & eval_mask, 1], s=30, marker="x", color="k", alpha=0.6)
    ax.set_title(f"layer {projector_layer} speaker map (o fit, x held out)")
    ax.legend(fontsize=6, ncol=2)
    save_figure(fig, out, "semantic_projector")
    plt.show()

# %% [markdown]
# ## Streaming: latency and real-time factor
#
# The utterances are concatenated into `stream_seconds` of audio and played in real time
# through the frame stream; every update runs the model on left context + new audio and
# returns the new 20 ms frames. Latency = end of the update's computation minus the arrival
# of the oldest audio in it; RTF = compute seconds per second of audio (< 1: keeps up).
# A second pass as fast as possible checks that streamed activity matches the offline pass.

# %%
stream_audio = np.concatenate(waves)[: int(stream_seconds * adapter.sample_rate)]
extractor = StreamingLayerActivations(adapter, layers, left_context_s=left_context_s)
block = int(round(stream_update_s * adapter.sample_rate))
runner = FrameStreamRunner(
    FileBlockSource(stream_audio, adapter.sample_rate, block, realtime=True),
    lambda audio, first: extractor.push(audio, first),
    adapter.sample_rate,
    policy=throttle_policy,
)
runner.run(progress=True)
realtime_summary = runner.summary()
fast_runner = FrameStreamRunner(
    FileBlockSource(stream_audio, adapter.sample_rate, block, realtime=False),
    lambda audio, first: extractor.push(audio, first),
    adapter.sample_rate,
)
extractor.reset()
streamed = fast_runner.run(progress=True)
fast_summary = fast_runner.summary()
one = waves[0][: int(min(len(waves[0]), stream_seconds * adapter.sample_rate))]
agreement = streaming_agreement(
    StreamingLayerActivations(adapter, layers, left_context_s=left_context_s).stream_waveform(one, stream_update_s),
    adapter.hidden_states(one, layers),
)
print("real time:", {k: round(v, 3) if isinstance(v, float) else v for k, v in realtime_summary.items()})
print("as fast as possible:", {k: round(v, 3) if isinstance(v, float) else v for k, v in fast_summary.items()})
print("streamed vs offline activity (mean per-neuron correlation):", agreement)
streaming = {
    "model": model_info["model"],
    "weights": model_info["weights"],
    "weights_note": (
        "RANDOM weights (same architecture and size; timing only)"
        if model_info["weights"] == "random"
        else "weights as loaded from the checkpoint"
    ),
    "num_parameters": adapter.num_parameters,
    "hidden_size": adapter.hidden_size,
    "num_transformer_layers": adapter.num_layers,
    "device": device,
    "layers": layers,
    "update_s": stream_update_s,
    "left_context_s": left_context_s,
    "window_ms": 40,
    "hop_ms": 20,
    "latency_ms_p50": realtime_summary.get("latency_ms_p50"),
    "latency_ms_p95": realtime_summary.get("latency_ms_p95"),
    "real_time_factor": fast_summary.get("real_time_factor"),
    "real_time_factor_note": "compute s per audio s, one update per block (fast pass); the real-time pass batches "
    "pending blocks when it lags, see realtime_pass",
    "cpu_count": os.cpu_count(),
    "torch_threads": torch.get_num_threads(),
    "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    "realtime_pass": realtime_summary,
    "fast_pass": fast_summary,
    "streamed_vs_offline_correlation": {str(k): v for k, v in agreement.items()},
}
update_results(out, streaming=streaming)

fig, ax = plt.subplots(figsize=(7, 3))
ax.hist([r["latency_s"] * 1000 for r in runner.records], bins=30, alpha=0.7, label="real-time latency")
ax.hist(
    [r["compute_s"] * 1000 for r in fast_runner.records], bins=30, alpha=0.7, label="compute per update (fast pass)"
)
ax.set_xlabel("ms")
ax.set_title(
    f"{adapter.num_parameters / 1e6:.0f}M-parameter {adapter.family} ({model_info['weights']} weights), "
    f"{stream_update_s * 1000:.0f} ms updates"
)
ax.legend()
save_figure(fig, out, "streaming_latency")
plt.show()

# %% [markdown]
# ## Live view
#
# Start listening streams the microphone (or a LibriSpeech file in real time) through the
# model: heatmaps of the layers' most tuned neurons, energy, the 2-D trace (projector for the
# projector's layer, PCA for the others) and diagnostics. Reset clears all buffers;
# performance mode redraws less. Without a microphone the panel says so; below, a snapshot
# from a file streamed as fast as possible shows what the panel draws.

# %%
mic_ok, mic_message = microphone_status(adapter.sample_rate)
print("microphone:", mic_message)
live = LiveNeuronPipeline(
    adapter,
    layers,
    update_s=stream_update_s,
    left_context_s=left_context_s,
    smoothing_alpha=smoothing_alpha,
    policy=throttle_policy,
    neuron_order={
        la: heatmap_neuron_order(collected["activity"][la][0], analysis[la]["tuning"], analysis[la]["labels"])
        for la in layers
    },
    pca_basis=pca_basis,
    projector=projector,
    projector_layer=projector_layer,
    model_info=model_info,
)
panel = NeuronLivePanel(live, file_waveform=waves[0])
display(panel)
live.open_file(waves[0][: int(4 * adapter.sample_rate)], realtime=False)
live.run()
snapshot = live.figure()
save_figure(snapshot, out, "live_snapshot")
plt.show()
live_diag = live.diagnostics()
print(live_diag)
update_results(
    out,
    live={
        "microphone_available": mic_ok,
        "microphone_message": mic_message,
        "snapshot_updates": live_diag.get("updates"),
        "frames_buffered": live_diag["frames_buffered"],
        "projector_loaded": live_diag["projector"]["loaded"],
    },
)
live.reset()
