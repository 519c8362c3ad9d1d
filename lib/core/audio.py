# %% [markdown]
# # Audio I/O
#
# Load wav / flac / ogg / mp3 to mono float32 at a target sample rate. A file that cannot
# be used raises `AudioLoadError`, whose message names the file, what is wrong with it
# (missing, empty, truncated, not audio, silent-length, NaN samples) and what to do.
# `load_audio_batch` loads many files, skipping and reporting the broken ones, so one
# corrupt clip never loses a whole run. `files_above_rate` says which files were recorded above
# a rate (e.g. above 8 kHz, where a model given `WHISPER_SAMPLE_RATE` audio hears more);
# `resample_block` brings a live stream's blocks to a model's rate.

# %%
import math
from pathlib import Path

import numpy as np
import soundfile as sf

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aiff", ".aif")
WHISPER_SAMPLE_RATE = 16000  # Whisper's input rate: the band its encoder and decoder were trained to hear


class AudioLoadError(ValueError):
    """A file could not be loaded as audio. ``path`` and ``problem`` say which and why."""

    def __init__(self, path, problem: str, hint: str = ""):
        self.path = str(path)
        self.problem = problem
        self.hint = hint
        message = f"{self.path}: {problem}"
        if hint:
            message += f". {hint}"
        super().__init__(message)


def _check_wav_truncation(path: Path, info) -> None:
    """RIFF/WAVE files state their data size in the header; compare it to the file size."""
    with open(path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return
        file_size = path.stat().st_size
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                return
            chunk_id, chunk_size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if chunk_id == b"data":
                available = file_size - handle.tell()
                if chunk_size != 0xFFFFFFFF and available < chunk_size:
                    raise AudioLoadError(
                        path,
                        f"truncated: the header announces {chunk_size} bytes of audio but only {available} are present",
                        "Re-copy or re-download the file",
                    )
                return
            handle.seek(chunk_size + (chunk_size & 1), 1)


def audio_info(path) -> dict:
    """Sample rate, channels, frames and duration of an audio file, without decoding it."""
    path = Path(path)
    info = sf.info(str(path))
    return {
        "path": str(path),
        "sample_rate": int(info.samplerate),
        "channels": int(info.channels),
        "frames": int(info.frames),
        "duration": float(info.frames) / float(info.samplerate) if info.samplerate else 0.0,
        "format": info.format,
    }


def files_above_rate(paths, sample_rate: int) -> list:
    """Positions of the files recorded above ``sample_rate`` (a rate soundfile cannot read counts as above)."""
    above = []
    for i, path in enumerate(paths):
        try:
            rate = audio_info(path)["sample_rate"]
        except RuntimeError:  # a container soundfile does not read (m4a): decoded at its own rate when loaded
            rate = None
        if rate is None or rate > sample_rate:
            above.append(i)
    return above


def _decode(path: Path):
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return data, int(sr)
    except (sf.LibsndfileError, RuntimeError) as sf_error:
        # libsndfile lacks some containers (m4a, old mp3 builds): fall back to audioread.
        try:
            import warnings

            import librosa

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data, sr = librosa.load(str(path), sr=None, mono=False)
        except Exception as other:  # noqa: BLE001 - report both decoders' reasons
            raise AudioLoadError(
                path,
                f"not a readable audio file (soundfile: {sf_error}; audioread: {type(other).__name__}: {other})",
                "Check that it is a wav/flac/ogg/mp3 file and not corrupt",
            ) from None
        data = np.atleast_2d(np.asarray(data, dtype=np.float32))
        return data.T, int(sr)


def resample_block(samples, from_rate, to_rate: int) -> np.ndarray:
    """A block of a live stream (microphone, browser) at ``to_rate``, float32: a polyphase filter over
    the block alone, no look-ahead; the block as it is when the rates match or it is empty."""
    samples = np.array(samples, dtype=np.float32)  # a copy: a decoded buffer may be read-only
    from_rate, to_rate = int(round(float(from_rate))), int(to_rate)
    if from_rate == to_rate or len(samples) == 0:
        return samples
    from scipy.signal import resample_poly

    g = math.gcd(from_rate, to_rate)
    return resample_poly(samples, to_rate // g, from_rate // g).astype(np.float32)


def load_audio(path, sr: int | None = 16000, mono: bool = True, max_seconds: float | None = None) -> np.ndarray:
    """Load ``path`` as float32 in [-1, 1], mono (channel mean) and resampled to ``sr``.

    ``sr=None`` keeps the file's own rate. Raises ``AudioLoadError`` naming the file and the
    problem for a missing, empty, truncated, undecodable or sample-less file.
    """
    path = Path(path)
    if not path.exists():
        raise AudioLoadError(path, "file not found", "Check the path, or the data set location (AUDIOLENS_DATA)")
    if path.is_dir():
        raise AudioLoadError(path, "is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioLoadError(path, "file is empty (0 bytes)", "Re-copy or re-download it, or remove it")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        info = None
    if info is not None:
        _check_wav_truncation(path, info)
    data, file_sr = _decode(path)
    if data.size == 0 or data.shape[0] == 0:
        raise AudioLoadError(path, "contains no audio samples", "Remove it from the data set")
    if not np.all(np.isfinite(data)):
        raise AudioLoadError(path, "contains NaN or infinite samples", "The file is corrupt; re-export it")
    y = data.mean(axis=1) if mono else data.T
    if max_seconds is not None:
        y = y[..., : int(round(max_seconds * file_sr))]
    if sr is not None and sr != file_sr:
        import librosa

        y = librosa.resample(y, orig_sr=file_sr, target_sr=sr, res_type="soxr_hq")
    return np.ascontiguousarray(y, dtype=np.float32)


def load_audio_batch(
    paths, sr: int | None = 16000, mono: bool = True, progress: bool = True, desc: str = "loading audio"
):
    """Load many files; return ``(arrays, ok_paths, failures)``.

    ``failures`` is a list of ``{"path", "error"}`` for files that could not be loaded; they are
    skipped, never fatal. ``arrays[i]`` belongs to ``ok_paths[i]``.
    """
    from tqdm.auto import tqdm

    arrays, ok_paths, failures = [], [], []
    for path in tqdm(list(paths), desc=desc, disable=not progress, leave=False):
        try:
            arrays.append(load_audio(path, sr=sr, mono=mono))
            ok_paths.append(str(path))
        except AudioLoadError as error:
            failures.append({"path": str(path), "error": error.problem})
    report_audio_failures(failures)
    return arrays, ok_paths, failures


def report_audio_failures(failures, noun: str = "file", limit: int = 10) -> None:
    """Print skipped files (``[{"path", "error"}]``), the first ``limit`` of them with reasons."""
    if not failures:
        return
    print(f"Skipped {len(failures)} unreadable {noun}(s):")
    for failure in failures[:limit]:
        print(f"  {failure['path']}: {failure['error']}")
    if len(failures) > limit:
        print(f"  ... and {len(failures) - limit} more")
