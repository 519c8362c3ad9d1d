"""Frame stream, streaming activations, semantic projector and the live pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from lib.core.audio import load_audio
from lib.core.datasets import load_librispeech
from lib.core.ring_buffer import StreamRingBuffer
from lib.core.speech_models import ModelLoadError, load_speech_model
from lib.neurons.frame_stream import (
    ExponentialSmoother,
    FileBlockSource,
    FrameStreamRunner,
    StreamBlock,
    frame_grid,
    microphone_status,
    not_real_time,
)
from lib.neurons.neuron_live import LiveNeuronPipeline
from lib.neurons.neuron_panel import NeuronLivePanel, live_figure
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
    conv_frame_geometry,
    load_model_for_analysis,
    streaming_agreement,
)


@pytest.fixture(scope="module")
def adapter(tiny_model):
    return load_speech_model(str(tiny_model("wavlm")), local_files_only=True)


@pytest.fixture(scope="module")
def speech(librispeech_dir):
    manifest = load_librispeech(librispeech_dir, download=False).head(4)
    return [load_audio(p, sr=16000, max_seconds=4.0) for p in manifest.path], list(manifest.speaker)


def test_ring_buffer_keeps_newest_in_order():
    ring = StreamRingBuffer(5)
    ring.extend([1, 2, 3])
    np.testing.assert_array_equal(ring.latest(), [1, 2, 3])
    ring.extend([4, 5, 6, 7])
    np.testing.assert_array_equal(ring.latest(), [3, 4, 5, 6, 7])
    np.testing.assert_array_equal(ring.latest(2), [6, 7])
    ring.extend(np.arange(100, 112))
    np.testing.assert_array_equal(ring.latest(), np.arange(107, 112))
    assert ring.total_written == 19 and len(ring) == 5
    ring.clear()
    assert len(ring) == 0 and ring.latest().shape == (0,)
    rows = StreamRingBuffer(3, width=2)
    rows.extend(np.arange(8).reshape(4, 2))
    np.testing.assert_array_equal(rows.latest(), [[2, 3], [4, 5], [6, 7]])
    with pytest.raises(ValueError, match="width"):
        rows.extend(np.zeros((1, 3)))


def test_exponential_smoother():
    smoother = ExponentialSmoother(alpha=0.5)
    out = smoother.update_many(np.array([[0.0], [2.0], [2.0]]))
    np.testing.assert_allclose(out[:, 0], [0.0, 1.0, 1.5])
    smoother.reset()
    assert smoother.update([4.0])[0] == 4.0
    with pytest.raises(ValueError):
        ExponentialSmoother(alpha=0.0)


def test_frame_grid_is_40ms_windows_20ms_hop():
    grid = frame_grid(16000, 16000)
    assert grid[0].tolist() == [0, 640] and grid[1].tolist() == [320, 960]
    assert len(grid) == 49


class BurstSource:
    """Delivers blocks in fixed bursts, as a lagging consumer would see them."""

    def __init__(self, bursts, block_size=320):
        self.block_size = block_size
        self.bursts = list(bursts)
        self.count = 0

    @property
    def exhausted(self):
        return not self.bursts

    def pending(self):
        n = self.bursts.pop(0)
        blocks = [
            StreamBlock(np.full(self.block_size, self.count + i, np.float32), 0.0, self.count + i) for i in range(n)
        ]
        self.count += n
        return blocks

    def close(self):
        pass


@pytest.mark.parametrize("policy", ["batch", "skip"])
def test_runner_throttling_is_counted(policy):
    seen = []
    runner = FrameStreamRunner(
        BurstSource([1, 3, 1, 4]),
        lambda audio, first: seen.append((len(audio), first)),
        16000,
        policy=policy,
        max_pending_blocks=1,
    )
    runner.run()
    summary = runner.summary()
    assert summary["updates"] == 4
    if policy == "batch":
        assert [n for n, _ in seen] == [320, 960, 320, 1280]
        assert [f for _, f in seen] == [0, 320, 1280, 1600]
        assert summary["batched_updates"] == 2 and summary["dropped_frames"] == 0
    else:
        assert [n for n, _ in seen] == [320] * 4
        assert [f for _, f in seen] == [0, 3 * 320, 4 * 320, 8 * 320]  # only the newest block of a burst
        assert summary["dropped_blocks"] == 5 and summary["dropped_frames"] == 5
    assert summary["latency_ms_p95"] >= summary["latency_ms_p50"] >= 0


def test_file_source_real_time_and_fast():
    y = np.zeros(16000 // 2, np.float32)
    fast = FileBlockSource(y, 16000, 1600, realtime=False)
    assert sum(len(fast.pending()) for _ in range(fast.n_blocks)) == 5 and fast.exhausted
    rt = FileBlockSource(y, 16000, 1600, realtime=True)
    runner = FrameStreamRunner(rt, lambda audio, first: len(audio), 16000)
    runner.run()
    assert runner.samples_processed == len(y)
    # in real time a block never arrives before its audio has been played
    assert all(r["latency_s"] >= 0 for r in runner.records)


def test_streaming_matches_offline_grid(adapter, speech):
    y = speech[0][0]
    field, stride = conv_frame_geometry(adapter)
    assert stride == 320
    offline = adapter.hidden_states(y, layers=[1, 2])
    whole = StreamingLayerActivations(adapter, [1, 2], left_context_s=60).stream_waveform(y, chunk_s=60)
    np.testing.assert_allclose(whole["states"][2], offline[2], atol=1e-4)
    streamed = StreamingLayerActivations(adapter, [1, 2], left_context_s=2.0).stream_waveform(y, chunk_s=0.2)
    np.testing.assert_array_equal(streamed["frames"], np.arange(len(offline[1])))
    assert streamed["states"][1].shape == offline[1].shape
    np.testing.assert_allclose(streamed["times"][:2], [(0 + field / 2) / 16000, (320 + field / 2) / 16000])
    agreement = streaming_agreement(streamed, offline)
    assert all(0.8 < v <= 1.0 + 1e-6 for v in agreement.values()), agreement


def test_streaming_gap_restarts_on_the_frame_grid(adapter, speech):
    y = speech[0][0]
    stream = StreamingLayerActivations(adapter, [1], left_context_s=0.5)
    first = stream.push(y[:3200], 0)
    assert first["frames"][0] == 0
    second = stream.push(y[6500:9700], 6500)  # 3300 samples skipped
    assert stream.gaps == 1
    assert second["frames"][0] == int(np.ceil(6500 / 320))
    with pytest.raises(ValueError, match="no layer"):
        StreamingLayerActivations(adapter, [7])


def test_model_load_failure_is_explained():
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_model_for_analysis("/nonexistent/model-folder", fallback_model=None)
    with pytest.raises(ValueError, match="weights"):
        load_model_for_analysis("/nonexistent/model-folder", weights="checkpoint")


def test_speaker_centroid_p_value_counts_utterances_not_segments():
    from lib.neurons.semantic_projector import fit_semantic_projector, speaker_clustering

    rng = np.random.default_rng(0)
    speakers = np.repeat(["a", "b", "c", "d"], 10)  # 2 utterances per speaker, 5 segments each
    utterances = np.repeat(np.arange(8), 5)
    centres = rng.normal(0, 5, (4, 6))
    emb = centres[np.repeat(np.arange(4), 10)] + rng.normal(0, 0.3, (40, 6))
    projector = fit_semantic_projector(emb, speakers, source={"layer": 0})
    segments = speaker_clustering(emb, speakers, projector)
    grouped = speaker_clustering(emb, speakers, projector, groups=utterances)
    assert segments["nearest_centroid_accuracy"] == grouped["nearest_centroid_accuracy"] == 1.0
    assert segments["nearest_centroid_p"] < 1e-20  # 40 "independent" hits against a 1-in-4 guess
    # 8 utterances, exactly: 2 ** 4 of the 8! = 40,320 orderings of their labels match all of them
    assert grouped["nearest_centroid_p"] == pytest.approx(16 / 40320) and "exact" in grouped["nearest_centroid_test"]
    twenty = np.repeat(np.arange(20), 2)  # 20 utterances of 2 segments: random orderings, the observed one counted in
    sampled = speaker_clustering(emb, speakers, projector, groups=twenty, permutations=400)
    assert sampled["nearest_centroid_p"] == pytest.approx(1 / 401) and "400 random" in sampled["nearest_centroid_test"]
    swapped = emb[(np.arange(40) + 10) % 40]  # every segment looks like the next speaker: always wrong
    wrong = speaker_clustering(swapped, speakers, projector, groups=utterances, permutations=200)
    assert wrong["nearest_centroid_accuracy"] == 0.0 and wrong["nearest_centroid_p"] > 0.5
    with pytest.raises(ValueError, match="several speakers"):
        speaker_clustering(emb, speakers, projector, groups=np.zeros(40, int))


def test_projector_roundtrip_and_speaker_clustering(adapter, speech, tmp_path):
    waves, speakers = speech
    activity = [adapter.hidden_states(w, layers=[2])[2] for w in waves]
    emb, labels, utt, seg = segment_embeddings(activity, speakers, segment_frames=25, min_frames=10)
    assert len(emb) >= 4 * 6 and emb.shape[1] == adapter.hidden_size
    projector = fit_semantic_projector(emb, labels, source={"layer": 2})
    assert projector.method == "lda"
    path = save_projector(projector, tmp_path / "proj")
    assert path.suffix == ".npz"
    loaded = load_projector(path)
    np.testing.assert_allclose(loaded.transform(emb), projector.transform(emb))
    assert projector_status(loaded, path)["loaded"] and projector_status(None)["loaded"] is False
    result = speaker_clustering(emb, labels, loaded)
    assert result["speakers"] == 4 and -1 <= result["ari_full_space"] <= 1
    assert result["nearest_centroid_accuracy"] > 0.5  # fitted on these segments: speakers separate
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="bad.npz"):
        load_projector(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="dim"):
        loaded.transform(np.zeros((1, 5)))


def test_live_pipeline_buffers_reset_and_panel(adapter, speech):
    y = speech[0][0][: 16000 * 2]
    live = LiveNeuronPipeline(
        adapter,
        [1, 2],
        update_s=0.2,
        left_context_s=0.5,
        history_s=1.0,
        pca_basis={1: (np.zeros(32), np.ones(32), np.eye(32)[:3])},
        warm_up=False,
    )
    live.open_file(y, realtime=False)
    payloads = live.run()
    diag = live.diagnostics()
    assert diag["updates"] == 10 and diag["dropped_frames"] == 0
    assert len(live.frame_index) == 50  # 1 s history of 20 ms frames
    assert live.frame_index.latest()[-1] == (len(y) - 325) // 320
    assert live.trace[1].latest().shape == (50, 3)  # given basis: traced from the first frame
    assert len(live.trace[2]) < 50  # fitted on the stream: only after its first 150 frames... of 2 s
    assert np.isfinite(live.mel.latest()).all() and live.mel.latest().shape == (50, 64)
    assert [p["seq"] for p in payloads] == list(range(1, 11))
    frames = np.concatenate([p["frames"] for p in payloads])
    np.testing.assert_array_equal(frames, np.arange(len(frames)))  # ordered, no gap, no repeat
    assert all(set(p["timings"]) >= {"encoder_ms", "transformer_ms", "analytics_ms", "payload_ms"} for p in payloads)
    assert diag["projector_ready"] is False and diag["whisper_ready"] is False
    fig = live_figure(live, performance=True)
    assert len(fig.axes) >= 2 + 2 + 2
    live.reset()
    assert len(live.frame_index) == 0 and len(live.activity[1]) == 0 and live.diagnostics()["updates"] == 0
    assert live.speakers.n_clusters == 0 and len(live.mel) == 0
    panel = NeuronLivePanel(live, file_waveform=y)
    mic_ok, message = microphone_status()
    if not mic_ok:
        assert "No microphone" in panel.status.value
        assert panel.source.value == "file (real time)"
        panel.source.value = "microphone"
        panel.start.value = True  # cannot open: the button springs back and the message says why
        assert panel.start.value is False and "No microphone" in panel.message
    panel.render()
    assert panel.draws == 1
    assert "latency" in panel.sidebar.value or "no updates" in panel.sidebar.value
    panel.reset_button.click()
    assert len(live.frame_index) == 0


@pytest.mark.parametrize("family", ["wav2vec2", "hubert"])
def test_streaming_other_families(tiny_model, speech, family):
    other = load_speech_model(str(tiny_model(family)), local_files_only=True)
    y = speech[0][0][: 16000 * 2]
    offline = other.hidden_states(y, layers=[2])
    streamed = StreamingLayerActivations(other, [2], left_context_s=1.0).stream_waveform(y, chunk_s=0.2)
    np.testing.assert_array_equal(streamed["frames"], np.arange(len(offline[2])))
    assert streaming_agreement(streamed, offline)[2] > 0.5


def test_projector_from_labelled_manifest(adapter, fsdd_manifest, tmp_path):
    subset = fsdd_manifest[fsdd_manifest.label.isin([0, 1, 7])].groupby("label").head(4)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF0000WAVE")
    manifest = subset[["path", "label"]].copy()
    manifest.loc[len(manifest) + 100] = [str(broken), 7]
    projector, info = fit_projector_from_manifest(adapter, manifest, layer=2, progress=False)
    assert info == {"clips": 12, "points": 12, "skipped": 1, "labels": 3, "method": "lda"}
    assert sorted(projector.labels) == ["0", "1", "7"] and projector.source["layer"] == 2
    with pytest.raises(ValueError, match="columns"):
        fit_projector_from_manifest(adapter, manifest.rename(columns={"label": "digit"}), layer=2)


def test_offline_default_analyses_the_bundled_real_whisper(tmp_path):
    from lib.core.bundled_whisper import bundled_whisper_available

    ok, reason = bundled_whisper_available()
    if not ok:
        pytest.skip(f"bundled Whisper not available here: {reason}")
    adapter, info = load_model_for_analysis("/nonexistent/wavlm-folder")  # the hub model cannot be loaded
    assert info["model"] == "bundled/whisper-tiny.en" and info["weights"] == "pretrained"
    assert info["requested_model"] == "/nonexistent/wavlm-folder" and "cannot load" in info["fallback_reason"]
    assert adapter.family == "whisper" and adapter.whisper_mode == "padded"
    random_adapter, random_info = load_model_for_analysis("bundled/whisper-tiny.en", weights="random")
    assert random_info["weights"] == "random" and random_info["weights_label"] == "RANDOM"
    assert random_adapter.fingerprint() != adapter.fingerprint()


def test_not_real_time_names_each_limit_a_stream_broke():
    summary = {"latency_ms_p95": 640.0, "latency_growth_ms_per_min": 12.0, "dropped_frames": 3}
    limits = (
        ("p95 latency (ms)", "latency_ms_p95", 500),
        ("latency growth (ms per min)", "latency_growth_ms_per_min", 100),
        ("frames dropped", "dropped_frames", 0),
    )
    verdict = not_real_time(summary, limits)
    assert verdict.startswith("NOT real time in this run: p95 latency (ms) 640, frames dropped 3")
    assert "latency growth" not in verdict
    assert not_real_time({"latency_ms_p95": 80.0, "dropped_frames": 0}, limits) == ""  # a missing key is no breach
