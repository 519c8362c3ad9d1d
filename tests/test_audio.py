"""Audio I/O on the real FSDD / LibriSpeech files and on deliberately broken files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from lib.core.audio import AudioLoadError, audio_info, load_audio, load_audio_batch


@pytest.fixture(scope="module")
def real_wav(fsdd_dir):
    return fsdd_dir / "recordings" / "7_jackson_12.wav"


def test_real_fsdd_clip_loads_and_resamples(real_wav):
    info = audio_info(real_wav)
    assert info["sample_rate"] == 8000 and info["channels"] == 1
    native = load_audio(real_wav, sr=None)
    at16k = load_audio(real_wav, sr=16000)
    assert native.dtype == np.float32 and native.ndim == 1 and len(native) == info["frames"]
    assert abs(len(at16k) - 2 * len(native)) <= 2
    assert 0.01 < np.abs(native).max() <= 1.0
    # resampling keeps the signal: energy per second is preserved within a few percent
    assert np.mean(at16k**2) == pytest.approx(np.mean(native**2), rel=0.05)


def test_real_librispeech_flac_loads(librispeech_dir):
    path = sorted(librispeech_dir.glob("*.flac"))[0]
    y = load_audio(path, sr=16000)
    assert y.ndim == 1 and len(y) > 1.5 * 16000


def test_stereo_is_mixed_to_mono_and_mp3_decodes(tmp_path, real_wav):
    y = load_audio(real_wav, sr=None)
    stereo = np.stack([y, np.zeros_like(y)], axis=1)
    sf.write(tmp_path / "stereo.wav", stereo, 8000)
    mono = load_audio(tmp_path / "stereo.wav", sr=None)
    np.testing.assert_allclose(mono, y / 2, atol=1e-4)
    sf.write(tmp_path / "clip.mp3", np.tile(y, 4), 8000, format="MP3")
    decoded = load_audio(tmp_path / "clip.mp3", sr=16000)
    assert abs(len(decoded) / 16000 - 4 * len(y) / 8000) < 0.1


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p, src: None, "file not found"),
        (lambda p, src: p.write_bytes(b""), "file is empty"),
        (lambda p, src: p.write_text("this is not audio at all\n" * 20), "not a readable audio file"),
        (lambda p, src: p.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2]), "truncated"),
        (lambda p, src: p.write_bytes(src.read_bytes()[:44]), "truncated"),
    ],
)
def test_broken_files_name_the_file_and_the_problem(tmp_path, real_wav, make, problem):
    path = tmp_path / "broken.wav"
    make(path, real_wav)
    with pytest.raises(AudioLoadError) as info:
        load_audio(path)
    message = str(info.value)
    assert str(path) in message and problem in message
    assert info.value.path == str(path)


def test_nan_samples_are_rejected(tmp_path):
    data = np.zeros(800, dtype=np.float32)
    data[10] = np.nan
    sf.write(tmp_path / "nan.wav", data, 8000, subtype="FLOAT")
    with pytest.raises(AudioLoadError, match="NaN"):
        load_audio(tmp_path / "nan.wav")


def test_batch_skips_and_reports_broken_clips(tmp_path, fsdd_dir, capsys):
    good = sorted((fsdd_dir / "recordings").glob("3_*.wav"))[:4]
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.wav"
    junk.write_text("junk")
    arrays, ok, failures = load_audio_batch([good[0], empty, good[1], junk, good[2], good[3]], sr=16000, progress=False)
    assert ok == [str(p) for p in good] and len(arrays) == 4
    assert [f["path"] for f in failures] == [str(empty), str(junk)]
    assert "empty" in failures[0]["error"]
    assert "Skipped 2 unreadable file(s)" in capsys.readouterr().out


def test_a_stream_block_is_resampled_alone_and_keeps_its_tone():
    from lib.core.audio import resample_block

    t = np.arange(4800) / 48000
    block = np.sin(2 * np.pi * 1000 * t).astype(np.float32)  # 0.1 s of 1 kHz at 48 kHz
    down = resample_block(block, 48000, 8000)
    assert down.dtype == np.float32 and len(down) == 800
    spectrum = np.abs(np.fft.rfft(down))
    assert np.argmax(spectrum) * 8000 / len(down) == 1000  # the tone, at the new rate
    read_only = np.frombuffer(block.tobytes(), dtype=np.float32)
    same = resample_block(read_only, 48000.0, 48000)  # same rate (a browser's float): a writable copy
    assert np.array_equal(same, block) and same.flags.writeable
    assert len(resample_block(np.zeros(0), 44100, 16000)) == 0
