"""Smoke run of the neuron_analysis notebook on real LibriSpeech utterances with a tiny WavLM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SMALL = dict(
    layers=[1, 2], pitch_method="yin", n_transcribe=1, segment_seconds=1.0, heatmap_neurons=16, bench_seconds=2.0
)


@pytest.mark.notebook
def test_neuron_analysis_notebook(run_notebook, tiny_model, librispeech_dir):
    results = run_notebook(
        "neuron_analysis",
        data_path=str(librispeech_dir),
        model_name=str(tiny_model("wavlm")),
        n_utterances=3,
        max_seconds=4.0,
        stream_seconds=3.0,
        **SMALL,
    )
    out = Path(results["_out"])
    model = results["model"]
    assert model["weights"] == "pretrained" and model["hidden_size"] == 32 and model["layers"] == [1, 2]
    assert "RANDOM" not in model["label"]

    tuning = results["tuning"]
    assert tuning["frames"] > 3 * 3.5 * 49  # three ~4 s clips at 49-50 frames per second
    for layer in ("1", "2"):
        top = tuning["layers"][layer]["top_correlations"]
        assert {t["feature"] for t in top} >= {"rms", "f0", "centroid", "zcr"}
        assert all(0 <= t["neuron"] < 32 and -1 <= t["spearman_r"] <= 1 for t in top)
        # energy drives even a random network: its strongest rms correlation is clearly non-zero
        rms = next(t for t in top if t["feature"] == "rms")
        assert abs(rms["spearman_r"]) > 0.1 and rms["q"] < 0.05
        assert sum(c["size"] for c in tuning["layers"][layer]["clusters"]) == 32

    keywords = results["keywords"]
    if keywords["whisper"]["available"]:
        assert len(keywords["transcripts"]) == 1 and keywords["n_found"] >= 1
        assert all(0 <= k["start"] <= k["end"] <= 4.1 and k["start_frame"] <= k["end_frame"] for k in keywords["found"])
        assert set(results["keyword_neurons"]) == {"1", "2"}
    else:
        assert keywords["whisper"]["reason"] and keywords["n_found"] == 0

    assert results["projector"]["status"]["loaded"] and (out / "semantic_projector.npz").exists()

    streaming = results["streaming"]
    assert streaming["weights"] == "pretrained" and streaming["num_parameters"] > 0
    for key in ("latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "real_time_factor", "encoder_ms_mean"):
        assert np.isfinite(streaming[key]) and streaming[key] > 0, key
    assert streaming["latency_ms_p99"] >= streaming["latency_ms_p95"] >= streaming["latency_ms_p50"]
    assert streaming["encoder"]["attention"] == "kv" and streaming["encoder"]["depth_run"] == 2
    assert all(0.5 < v <= 1.0 + 1e-6 for v in streaming["streamed_vs_offline_correlation"].values())

    table = results["switch_table"]
    names = [r["name"] for r in table]  # layers 1-2 of 2: truncating the depth would change nothing
    assert names == ["whole model on window (old path)", "recompute window", "+ cached conv", "+ kv cache"]
    assert all(set(r["fidelity"]) == {"1", "2"} for r in table)

    live = results["live"]
    assert live["updates"] >= 5 and live["frames_buffered"] > 0 and live["projector_ready"]  # merged when busy
    assert live["speaker_segments"] >= 1 and live["speaker_clusters"] >= 1 and live["panel_traces"] >= 6
    assert live["saved_frames"] and all(Path(p).stat().st_size > 1000 for p in live["saved_frames"])
    # the live view's Whisper runs in a child process: it loads wherever the in-process one does
    assert live["whisper"]["whisper_ready"] == keywords["whisper"]["available"], live["whisper"]
    if live["whisper"]["whisper_ready"]:
        assert live["whisper"]["runs"] >= 1 and live["whisper"]["errors"] == 0
    for name in (
        "tuning_correlations.png",
        "utterance_heatmaps.png",
        "pca_trajectories.png",
        "pca_trajectories_3d.html",
        "streaming_latency.png",
        "live_snapshot.png",
    ):
        assert (out / name).stat().st_size > 1000, name


@pytest.mark.notebook
def test_neuron_analysis_notebook_with_whisper(run_notebook, tiny_model, librispeech_dir):
    """The default model family (Whisper): streamed in clip mode, its switch table keeps the rows that apply."""
    results = run_notebook(
        "neuron_analysis",
        data_path=str(librispeech_dir),
        model_name=str(tiny_model("whisper")),
        n_utterances=2,
        max_seconds=3.0,
        stream_seconds=2.0,
        **SMALL,
    )
    assert results["model"]["family"] == "whisper" and results["model"]["layers"] == [1, 2]
    table = results["switch_table"]
    assert [r["name"] for r in table] == ["recompute window"]  # no old path, kv or conv cache; layers 1-2 of 2
    assert all(set(r["fidelity"]) == {"1", "2"} for r in table)
    streaming = results["streaming"]
    assert np.isfinite(streaming["latency_ms_p50"])
    # results.json says what ran: the notebook asks for kv + cached conv, a Whisper stream recomputes its window
    assert streaming["attention"] == "recompute" and streaming["cache_conv"] is False
    assert streaming["encoder"]["ignored"] == {"attention": "kv", "cache_conv": True}
