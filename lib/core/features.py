# %% [markdown]
# # Features
#
# Frame-level features shared by the notebooks, all thin wrappers over librosa so the
# numbers match what researchers already know:
#
# - `log_mel`: log-mel spectrogram in dB, `[n_mels, frames]`.
# - `mfcc_features`: MFCCs with optional deltas and delta-deltas, `[n * (1 + order), frames]`.
# - `pad_frames`: pad or cut a `[features, frames]` matrix to a fixed number of frames.
# - `pool_frames`: pool `[frames, dims]` into one vector (flat, mean, max, first, last, mean+std).
# - `frame_features`: RMS, pitch with voicing (pYIN or YIN), spectral centroid, bandwidth,
#   roll-off, flatness and zero-crossing rate on one shared frame grid.

# %%
import librosa
import numpy as np
import pandas as pd

POOLING_MODES = ("flat", "mean", "max", "first", "last", "mean+std")


def log_mel(
    y: np.ndarray,
    sr: int,
    n_mels: int = 80,
    n_fft: int = 400,
    hop_length: int = 160,
    fmin: float = 0.0,
    fmax: float | None = None,
    top_db: float | None = 80.0,
) -> np.ndarray:
    """Log-mel spectrogram in dB (relative to the clip's maximum), shape ``[n_mels, frames]``."""
    mel = librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=fmin, fmax=fmax, power=2.0
    )
    return librosa.power_to_db(mel, ref=np.max, top_db=top_db).astype(np.float32)


def warped_power_spectrogram(y: np.ndarray, n_fft: int, hop_length: int, warp: float = 1.0) -> np.ndarray:
    """Power spectrogram ``[bins, frames]`` whose frequency axis is scaled by ``warp`` (VTLP).

    Bin ``f`` of the result takes the (interpolated) power at ``f / warp``: ``warp > 1`` moves
    every formant up (a shorter vocal tract), ``warp < 1`` down.
    """
    power = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length)) ** 2
    if abs(warp - 1.0) < 1e-6:
        return power
    bins = power.shape[0]
    source = np.clip(np.arange(bins, dtype=np.float64) / warp, 0, bins - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, bins - 1)
    frac = (source - low)[:, None]
    return power[low] * (1 - frac) + power[high] * frac


def mfcc_features(
    y: np.ndarray,
    sr: int,
    n_mfcc: int = 40,
    delta_order: int = 0,
    n_fft: int = 512,
    hop_length: int | None = None,
    n_mels: int = 64,
    fmin: float = 0.0,
    warp: float = 1.0,
) -> np.ndarray:
    """MFCCs, optionally stacked with deltas (``delta_order=1``) and delta-deltas (``2``).

    Shape ``[n_mfcc * (1 + delta_order), frames]``. Short clips get deltas too: the delta
    window shrinks to the clip's length. ``fmin``: lowest frequency of the mel filters;
    ``warp`` != 1: vocal-tract length perturbation (``warped_power_spectrogram``) first.
    """
    if delta_order not in (0, 1, 2):
        raise ValueError(f"delta_order must be 0, 1 or 2, not {delta_order}")
    hop_length = hop_length or max(1, n_fft // 4)
    n_fft_eff = min(n_fft, max(16, len(y)))
    if fmin == 0.0 and abs(warp - 1.0) < 1e-6:
        m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=n_mfcc, n_fft=n_fft_eff, hop_length=hop_length, n_mels=n_mels)
    else:  # what librosa.feature.mfcc does, on a warped power spectrum and mel filters from fmin
        power = warped_power_spectrogram(y, n_fft_eff, hop_length, warp)
        mel = librosa.filters.mel(sr=sr, n_fft=n_fft_eff, n_mels=n_mels, fmin=fmin)
        m = librosa.feature.mfcc(S=librosa.power_to_db(mel @ power, top_db=80.0), n_mfcc=n_mfcc)
    blocks = [m]
    frames = m.shape[1]
    width = min(9, frames if frames % 2 == 1 else frames - 1)
    for order in range(1, delta_order + 1):
        if width >= 3:
            blocks.append(librosa.feature.delta(m, order=order, width=width, mode="nearest"))
        else:
            blocks.append(np.zeros_like(m))
    return np.concatenate(blocks, axis=0).astype(np.float32)


def pad_frames(features: np.ndarray, n_frames: int, mode: str = "constant") -> np.ndarray:
    """Pad (zeros, or edge values with ``mode="edge"``) or cut ``[dims, frames]`` to ``n_frames``."""
    return librosa.util.fix_length(features, size=n_frames, axis=-1, mode=mode)


def pool_frames(frames: np.ndarray, mode: str = "mean") -> np.ndarray:
    """Pool a ``[frames, dims]`` matrix into one vector.

    Modes: ``flat`` (concatenate all frames), ``mean``, ``max``, ``first``, ``last`` and
    ``mean+std`` (mean and standard deviation concatenated).
    """
    x = np.asarray(frames)
    if x.ndim != 2:
        raise ValueError(f"pool_frames expects [frames, dims], got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("pool_frames got zero frames")
    if mode == "flat":
        return x.reshape(-1)
    if mode == "mean":
        return x.mean(axis=0)
    if mode == "max":
        return x.max(axis=0)
    if mode == "first":
        return x[0]
    if mode == "last":
        return x[-1]
    if mode in ("mean+std", "meanstd"):
        return np.concatenate([x.mean(axis=0), x.std(axis=0)])
    raise ValueError(f"unknown pooling {mode!r}; choose one of {POOLING_MODES}")


PITCH_SILENCE_GATE = 0.01  # RMS share of the clip's peak (-40 dB) below which no frame has a pitch


def frame_features(
    y: np.ndarray,
    sr: int,
    frame_length: int | None = None,
    hop_length: int | None = None,
    pitch: str = "pyin",
    fmin: float = 65.0,
    fmax: float = 400.0,
) -> pd.DataFrame:
    """Per-frame acoustic features on one grid (default 40 ms windows, 20 ms hop).

    Columns: ``time`` (frame centre, s), ``rms``, ``rms_db``, ``f0`` (Hz, NaN when unvoiced),
    ``voiced`` (bool), ``voiced_prob``, ``centroid``, ``bandwidth``, ``rolloff``,
    ``flatness``, ``zcr``. ``pitch`` is ``"pyin"`` (probabilistic, with voicing; frames 40 dB
    below the clip's peak RMS are unvoiced), ``"yin"`` (faster; voicing from an RMS gate) or
    ``None`` to skip pitch.
    """
    frame_length = frame_length or int(round(0.040 * sr))
    hop_length = hop_length or int(round(0.020 * sr))
    n_fft = int(2 ** np.ceil(np.log2(frame_length)))
    if len(y) < n_fft:
        y = np.pad(y, (0, n_fft - len(y)))
    stft = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length, win_length=frame_length, center=True))
    n = stft.shape[1]
    rms = librosa.feature.rms(S=stft, frame_length=n_fft)[0]
    columns = {
        "time": librosa.frames_to_time(np.arange(n), sr=sr, hop_length=hop_length),
        "rms": rms,
        "rms_db": librosa.amplitude_to_db(rms, ref=1.0, top_db=None),
        "centroid": librosa.feature.spectral_centroid(S=stft, sr=sr)[0],
        "bandwidth": librosa.feature.spectral_bandwidth(S=stft, sr=sr)[0],
        "rolloff": librosa.feature.spectral_rolloff(S=stft, sr=sr)[0],
        "flatness": librosa.feature.spectral_flatness(S=stft)[0],
        "zcr": librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop_length)[0][:n],
    }
    if pitch is not None:
        pitch_frame = max(n_fft, int(2 ** np.ceil(np.log2(2.2 * sr / fmin))))
        if pitch == "pyin":
            f0, voiced, prob = librosa.pyin(
                y, fmin=fmin, fmax=fmax, sr=sr, frame_length=pitch_frame, hop_length=hop_length, center=True
            )
            # pYIN calls some near-silent frames voiced (often at fmin): no pitch 40 dB below the clip's peak
            audible = librosa.util.fix_length(rms > PITCH_SILENCE_GATE * (rms.max() + 1e-12), size=len(f0))
            # and an estimate pinned at the search range's floor is its edge, not a pitch (a tone below fmin
            # reads exactly fmin): dropped; a voice that low needs a lower fmin
            audible &= ~(f0 <= fmin * 1.01)  # NaN (unvoiced) compares False
            voiced, prob = voiced & audible, np.where(audible, prob, 0.0)
            f0 = np.where(voiced, f0, np.nan)
        elif pitch == "yin":
            f0 = librosa.yin(y, fmin=fmin, fmax=fmax, sr=sr, frame_length=pitch_frame, hop_length=hop_length)
            gate = rms[: len(f0)] > 0.1 * (rms.max() + 1e-12)
            voiced = np.zeros(len(f0), dtype=bool)
            voiced[: len(gate)] = gate
            prob = voiced.astype(float)
            f0 = np.where(voiced, f0, np.nan)
        else:
            raise ValueError(f"pitch must be 'pyin', 'yin' or None, not {pitch!r}")
        columns["f0"] = librosa.util.fix_length(np.asarray(f0, dtype=float), size=n, constant_values=np.nan)
        columns["voiced"] = librosa.util.fix_length(np.asarray(voiced, dtype=bool), size=n)
        columns["voiced_prob"] = librosa.util.fix_length(np.nan_to_num(np.asarray(prob, dtype=float)), size=n)
    return pd.DataFrame(columns)
