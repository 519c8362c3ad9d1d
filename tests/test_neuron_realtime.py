"""Real-time neuron streaming: fast encoders, merged updates under overload, sources, analytics, keywords."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest

from lib.core.audio import load_audio
from lib.core.datasets import load_librispeech
from lib.core.speech_models import load_speech_model
from lib.neurons.frame_stream import FrameStreamRunner, QueueBlockSource, SimulatedRealtimeSource
from lib.neurons.live_analytics import (
    OnlinePCA,
    OnlineSpeakerClustering,
    clustering_agreement,
    log_mel_columns,
    projector_grid,
)
from lib.neurons.neuron_live import LiveNeuronPipeline
from lib.neurons.neuron_panel import decode_browser_chunk
from lib.neurons.semantic_projector import fit_semantic_projector
from lib.neurons.stream_benchmark import speech_from_waves, stream_fidelity
from lib.neurons.stream_encoders import Wav2Vec2StreamEncoder, WhisperStreamEncoder, make_stream_encoder
from lib.neurons.whisper_keywords import BackgroundKeywordSpotter, KeywordTranscriber


@pytest.fixture(scope="module")
def speech(librispeech_dir):
    manifest = load_librispeech(librispeech_dir, download=False).head(3)
    return [load_audio(p, sr=16000, max_seconds=4.0) for p in manifest.path], list(manifest.speaker)


@pytest.fixture(scope="module")
def wavlm(tiny_model):
    return load_speech_model(str(tiny_model("wavlm")), local_files_only=True)


def _trim_to_grid(y, field, stride=320):
    return y[: ((len(y) - field) // stride) * stride + field]


def _stream(encoder, y, block=3200):
    outs = [encoder.push(y[i : i + block], i) for i in range(0, len(y), block)]
    frames = np.concatenate([o["frames"] for o in outs])
    return frames, {la: np.concatenate([o["states"][la] for o in outs]) for la in encoder.layers}, outs


@pytest.mark.parametrize("family", ["wavlm", "wav2vec2", "hubert"])
@pytest.mark.parametrize("attention", ["kv", "recompute"])
def test_fast_encoder_is_exact_on_a_whole_utterance_and_faithful_streamed(tiny_model, speech, family, attention):
    adapter = load_speech_model(str(tiny_model(family)), local_files_only=True)
    probe = Wav2Vec2StreamEncoder(adapter, [1])
    y = _trim_to_grid(speech[0][0], probe.field)
    offline = adapter.hidden_states(y, layers=[0, 1, 2, "conv"])
    whole = Wav2Vec2StreamEncoder(adapter, [0, 1, 2, "conv"], left_context_s=60, attention=attention, cache_conv=False)
    out = whole.push(y, 0)
    for layer in (0, 1, 2, "conv"):
        np.testing.assert_allclose(out["states"][layer], offline[layer], atol=2e-4, err_msg=str(layer))
    streamed = Wav2Vec2StreamEncoder(adapter, [1, 2], left_context_s=1.0, attention=attention, cache_conv=True)
    frames, states, outs = _stream(streamed, y)
    np.testing.assert_array_equal(frames, np.arange(len(offline[1])))  # ordered, complete, global grid
    ref = [(0, {la: offline[la] for la in (1, 2)})]
    fidelity = stream_fidelity(frames, states, ref, field=probe.field)
    assert all(v > 0.9 for v in fidelity.values()), fidelity
    assert streamed.depth == 2 and all(o["timings"]["transformer_ms"] >= 0 for o in outs)


def test_stable_layer_norm_model_and_truncated_depth(tmp_path, speech):
    import transformers as tf

    config = tf.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, conv_dim=(32, 32), conv_stride=(5, 64), conv_kernel=(10, 64),
        num_feat_extract_layers=2, do_stable_layer_norm=True, feat_extract_norm="layer",
    )  # fmt: skip
    tf.Wav2Vec2Model(config).save_pretrained(tmp_path)
    tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True).save_pretrained(tmp_path)
    adapter = load_speech_model(str(tmp_path), local_files_only=True)
    y = _trim_to_grid(speech[0][1], 325)
    offline = adapter.hidden_states(y, layers=[1, 3])
    for layers, depth in (([1, 3], 3), ([1], 1)):
        enc = Wav2Vec2StreamEncoder(adapter, layers, left_context_s=60, cache_conv=False)
        out = enc.push(y, 0)
        assert enc.depth == depth
        for layer in layers:  # the last layer carries the final layer norm, as in transformers
            np.testing.assert_allclose(out["states"][layer], offline[layer], atol=2e-4)
    full = Wav2Vec2StreamEncoder(adapter, [1], truncate_depth=False)
    assert full.depth == 3


def test_gap_restarts_on_grid_and_int8_stays_close(wavlm, speech):
    y = speech[0][0]
    enc = Wav2Vec2StreamEncoder(wavlm, [1], left_context_s=0.5)
    assert enc.push(y[:3200], 0)["frames"][0] == 0
    second = enc.push(y[6500:9700], 6500)
    assert enc.gaps == 1 and second["frames"][0] == int(np.ceil(6500 / 320))
    with pytest.raises(ValueError, match="no layer"):
        Wav2Vec2StreamEncoder(wavlm, [7])
    with pytest.raises(ValueError, match="attention"):
        Wav2Vec2StreamEncoder(wavlm, [1], attention="causal")
    y = _trim_to_grid(y, enc.field)
    f32 = _stream(Wav2Vec2StreamEncoder(wavlm, [2], left_context_s=1.0), y)
    q8 = _stream(Wav2Vec2StreamEncoder(wavlm, [2], left_context_s=1.0, quantize="int8"), y)
    np.testing.assert_array_equal(f32[0], q8[0])
    r = np.corrcoef(f32[1][2].ravel(), q8[1][2].ravel())[0, 1]
    assert r > 0.95


def test_whisper_clip_stream_matches_padded_at_30s_and_streams_in_order(tiny_model, speech):
    adapter = load_speech_model(str(tiny_model("whisper")), local_files_only=True)
    y = np.tile(np.concatenate(speech[0]), 3)[: 30 * 16000]
    padded = adapter.hidden_states(y, layers=[1, 2])
    enc = make_stream_encoder(adapter, ["conv", 1, 2], left_context_s=1.0)
    assert isinstance(enc, WhisperStreamEncoder) and enc.depth == 2
    import torch

    with torch.inference_mode():
        window = enc.encode_window(y)  # a 30 s window in clip mode is the padded input
    for layer in (1, 2):
        np.testing.assert_allclose(window[layer].numpy(), padded[layer], atol=1e-4)
    frames, states, outs = _stream(enc, y[: 16000 * 3])
    np.testing.assert_array_equal(frames, np.arange(150))
    np.testing.assert_allclose(outs[0]["times"][:2], [0.0, 0.02])
    assert states["conv"].shape == (150, adapter.hidden_size)


class CostlySource(SimulatedRealtimeSource):
    """Simulated real time where each update costs ``fixed + per_second * audio seconds`` (virtual)."""

    def __init__(self, waveform, block, fixed, per_second):
        super().__init__(waveform, 16000, block)
        self.fixed, self.per_second, self.last_audio = fixed, per_second, 0

    def advance(self, seconds):
        self.now += self.fixed + self.per_second * self.last_audio / 16000


@pytest.mark.parametrize("fixed, per_second, merges, drops", [(0.05, 0.2, False, False), (0.3, 0.5, True, False),
                                                              (0.5, 1.2, True, True)])  # fmt: skip
def test_overload_merges_updates_and_latency_does_not_grow(fixed, per_second, merges, drops):
    y = np.zeros(16000 * 120, np.float32)  # two minutes
    source = CostlySource(y, 3200, fixed, per_second)
    seen = []

    def compute(audio, first):
        source.last_audio = len(audio)
        seen.append((first, len(audio)))
        return {"timings": {"encoder_ms": 1.0}}

    runner = FrameStreamRunner(source, compute, 16000, policy="batch", max_merge_blocks=5)
    runner.run()
    s = runner.summary()
    assert (s["batched_updates"] > 0) == merges and (s["dropped_blocks"] > 0) == drops
    assert s["max_blocks_waiting"] <= 20  # never a queue growing with the stream
    assert s["latency_ms_p95_last_third"] <= s["latency_ms_p95_first_third"] + 50
    assert abs(s["latency_growth_ms_per_min"]) < 0.1 * s["latency_ms_p95"]
    starts = [first for first, _ in seen]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # in order, never twice
    if not drops:
        assert sum(n for _, n in seen) == len(y)
        assert all(first + n == nxt for (first, n), (nxt, _) in zip(seen, seen[1:]))  # contiguous


def test_queue_source_cuts_blocks_and_stays_bounded():
    source = QueueBlockSource(16000, 3200, max_seconds_buffered=1.0)
    feeder = threading.Thread(target=lambda: [source.put(np.ones(1000, np.float32) * i) for i in range(10)])
    feeder.start()
    feeder.join()
    blocks = source.pending(timeout=0.1)
    assert [b.index for b in blocks] == [0, 1, 2] and all(len(b.audio) == 3200 for b in blocks)
    source.put(np.zeros(16000 * 5, np.float32))  # a stalled consumer: older audio is dropped, not kept
    assert len(source._buffer) <= 16000 + 3200 and source.overflow_samples > 0
    source.finish()
    rest = source.pending(timeout=0.1)
    assert rest[-1].index > blocks[-1].index and source.exhausted


def test_browser_chunk_is_resampled_to_the_model_rate():
    import base64

    x = np.sin(np.arange(48000) / 48000 * 2 * np.pi * 440).astype(np.float32)
    y = decode_browser_chunk(base64.b64encode(x.tobytes()).decode(), 48000, 16000)
    assert y.dtype == np.float32 and len(y) == 16000 and 0.6 < np.abs(y).max() < 1.1


def test_log_mel_columns_are_time_aligned():
    y = np.zeros(16000, np.float32)
    y[8000:8320] = np.sin(np.arange(320) * 2 * np.pi * 1000 / 16000)
    centres = np.arange(0, 16000, 320)
    mel = log_mel_columns(y, 0, centres)
    assert mel.shape == (50, 64) and abs(int(np.argmax(mel.max(1))) - 8160 // 320) <= 1


def test_online_pca_and_speaker_clustering():
    rng = np.random.default_rng(0)
    pca = OnlinePCA(3, fit_frames=30)
    assert pca.update(rng.normal(size=(20, 8))).shape == (0, 3) and not pca.ready
    assert pca.update(rng.normal(size=(20, 8))).shape == (0, 3) and pca.ready
    assert pca.update(rng.normal(size=(5, 8))).shape == (5, 3)
    centres = rng.normal(size=(3, 16)) * 3
    truth = [0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2]
    segments = [centres[label] + rng.normal(size=(10, 16)) * 0.3 for label in truth]
    ref = (np.zeros(16), np.full(16, 3.0))
    for reference in (ref, None):  # with reference statistics (the offline pass), and from the stream alone
        clustering = OnlineSpeakerClustering(segment_s=0.2, threshold=0.3, frame_rate=50, ref=reference)
        for k, frames in enumerate(segments):
            clustering.add_frames(frames, np.arange(10) * 0.02 + k * 0.2)
        score = clustering_agreement(clustering.segments, truth)
        assert score["clusters"] == 3 and score["ari"] > 0.9, (reference is None, score)
    clustering.reset()
    assert clustering.n_clusters == 0 and clustering.segments == []
    x = np.concatenate([centres[i] + rng.normal(size=(8, 16)) for i in range(3)])
    projector = fit_semantic_projector(x, np.repeat(["a", "b", "c"], 8))
    grid = projector_grid(projector, 5)
    assert grid["points"].shape == (25, 2) and set(grid["labels"]) <= {"a", "b", "c"}


def _fake_transcriber(calls, entered=None, gate=None):
    """A transcriber that records each call; after the warm-up it signals ``entered`` and waits for ``gate``."""

    class Fake:
        available, reason = True, ""

        def transcribe(self, waveform, sample_rate=16000, **options):
            calls.append(len(waveform))
            if gate is not None and len(calls) > 1:  # a stream transcription, not the warm-up
                entered.set()
                gate.wait(60)
            n = len(waveform) / sample_rate
            return {"words": pd.DataFrame({"word": [" hello", " there"], "start": [0.1, n - 0.3], "end": [0.5, n - 0.1],
                                           "probability": [0.9, 0.9]})}  # fmt: skip

    return Fake()


def test_keyword_thread_never_blocks_and_places_words_on_the_stream_clock():
    calls, entered, gate = [], threading.Event(), threading.Event()
    spotter = BackgroundKeywordSpotter(transcriber=_fake_transcriber(calls, entered, gate), keywords=["hello"],
                                       window_s=2.0, every_s=0.5)  # fmt: skip
    spotter.start()
    block = np.zeros(1600, np.float32)  # 100 ms blocks
    for i in range(10):
        spotter.feed(block, i * 1600)
    assert entered.wait(60), "no transcription started after 1 s of stream"
    fed = threading.Event()

    def feed_rest():  # fed while the transcription above is still running (held by the gate)
        for i in range(10, 30):
            spotter.feed(block, i * 1600)
        fed.set()

    threading.Thread(target=feed_rest, daemon=True).start()
    assert fed.wait(60), "feed() waited for a running transcription"
    assert not gate.is_set() and len(calls) == 2  # all 20 blocks went in during the one held transcription
    gate.set()
    for _ in range(600):  # let the thread catch up with the 3 s fed (a run every 0.5 s of stream)
        if spotter.status()["runs"] >= 2:
            break
        time.sleep(0.05)
    spotter.stop()
    polled = spotter.poll()
    assert polled["markers"] and all(m["keyword"] == "hello" for m in polled["markers"])
    assert all(m["start"] >= 0 and m["start_frame"] == int(m["start"] * 50) for m in polled["markers"])
    status = spotter.status()
    # the first call is the 1 s warm-up before the stream (not counted as a run)
    assert calls[0] == 16000 and status["whisper_ready"] and status["runs"] == len(calls) - 1 and status["errors"] == 0
    spotter.reset()
    assert spotter.poll()["transcript"] == ""


def test_pipeline_degrades_when_whisper_is_unavailable(wavlm, speech):
    missing = KeywordTranscriber("faster-whisper", "nowhere", False, "model folder not found")
    spotter = BackgroundKeywordSpotter(transcriber=missing)
    live = LiveNeuronPipeline(wavlm, [1, 2], keyword_spotter=spotter, warm_up=False, speaker_segment_s=0.5)
    live.open_file(speech[0][0][:32000], realtime=False)
    payloads = live.run()
    d = live.diagnostics()
    assert d["updates"] == 10 and d["whisper_ready"] is False and d["whisper"]["reason"] == "model folder not found"
    assert payloads[-1]["transcript"] == "" and sum(len(p["speaker_segments"]) for p in payloads) >= 2
    live.stop_keywords()


def test_speech_from_waves_on_the_grid(speech):
    s = speech_from_waves(speech[0], speech[1])
    assert all(offset % 320 == 0 and length % 320 == 0 for offset, length, _, _ in s["utterances"])
    assert s["speakers"] == len(set(speech[1])) and len(s["waveform"]) == sum(u[1] for u in s["utterances"])


def test_bench_streaming_command_writes_the_table_and_json(tiny_model, librispeech_dir, tmp_path, capsys):
    import json

    from generator.cli import main as cli_main

    out = tmp_path / "bench"
    argv = ["bench", "streaming", "--out", str(out), "--model", str(tiny_model("wavlm")), "--layers", "1", "2",
            "--seconds", "2", "--sweep-seconds", "2", "--quick-sweep", "--keywords-seconds", "0",
            "--whisper-model", "none", "--simulated", "--threads", "1", "--data", str(librispeech_dir)]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "switch table" in printed and "targets:" in printed and "+ kv cache" in printed
    bench = json.loads((out / "bench.json").read_text())
    assert bench["audio"]["speakers"] >= 1 and bench["machine_before"]["uptime"]
    names = [r["name"] for r in bench["switch_table"]]  # layers 1-2 of 2: no "+ truncated depth" row
    assert names == ["whole model on window (old path)", "recompute window", "+ cached conv", "+ kv cache"]
    assert "rows ['+ truncated depth'] do not apply" in printed
    assert all(set(r["fidelity"]) == {"1", "2"} for r in bench["switch_table"])
    live = bench["live"]
    assert live["updates"] >= 5 and live["peak_rss_mb"] > 0 and live["clock"] == "simulated real time"
    assert {"encoder_ms_mean", "transformer_ms_mean", "analytics_ms_mean", "payload_ms_mean"} <= set(live)
    assert any(t["target"].startswith("fidelity L1") for t in bench["targets"])
