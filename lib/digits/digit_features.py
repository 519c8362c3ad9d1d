# %% [markdown]
# # Digit features: MFCC matrices, fixed-length inputs, train-only standardisation
#
# What the spoken-digit models see. One `DigitFeatureConfig` describes the features
# (sample rate, number of MFCCs, deltas, hop, fixed number of frames, pooling) and travels
# with every saved model, so a model is always fed the features it was trained on.
#
# - `trim_digit_clip`: cut leading/trailing silence (20 dB below the peak by default).
# - `digit_clip_mfcc`: the clip's own frames, with optional per-utterance CMVN.
# - `digit_mfcc_matrix`: one clip -> `[n_mfcc * (1 + delta_order), n_frames]`, padded or cut.
# - `digit_feature_vectors`: many clips -> `[clips, dims]` for scikit-learn, pooled
#   `flat` (all frames concatenated), `segments` (time-normalised: the clip's frames averaged
#   in `n_frames` equal segments, whatever its length), `mean`, `max` or `mean+std`.
#   `warp` (vocal-tract length perturbation, VTLP) scales the frequency axis of the spectrum
#   before the mel filters: a training clip at warps 0.9 and 1.1 sounds like a speaker with a
#   longer or shorter vocal tract.
# - `fit_standardizer` / `apply_standardizer`: per-coefficient mean and standard deviation
#   fitted on the training clips only, then applied unchanged to validation and test clips.
# - `load_digit_waves`: audio of a manifest at the features' sample rate; broken files are
#   skipped and reported, and the manifest rows that survived are returned with the audio.

# %%
from dataclasses import asdict, dataclass

import librosa
import numpy as np
import pandas as pd

from lib.core.audio import load_audio_batch
from lib.core.features import mfcc_features, pad_frames, pool_frames

DIGIT_POOLINGS = ("flat", "segments", "mean", "max", "mean+std")
DIGIT_CMVN_MODES = (False, True, "mean", "mean+var")


@dataclass
class DigitFeatureConfig:
    """How clips become feature vectors; stored beside every saved model."""

    sample_rate: int = 8000
    n_mfcc: int = 40
    delta_order: int = 1  # 0: MFCC only, 1: + deltas, 2: + delta-deltas
    n_fft: int = 512
    hop_length: int = 128
    n_mels: int = 64
    n_frames: int = 40  # flat: frames kept (zero-padded or cut; 40 x 128 samples = 0.64 s); segments: time steps
    pooling: str = "flat"  # flat | segments | mean | max | mean+std
    trim_db: float | None = 20.0  # trim leading/trailing audio this far below the peak (None: keep all)
    cmvn: bool | str = False  # per-utterance normalisation over the clip's frames: True/"mean+var", "mean" (CMN)
    fmin: float = 0.0  # lowest frequency of the mel filters (Hz)

    def __post_init__(self):
        if self.pooling not in DIGIT_POOLINGS:
            raise ValueError(f"pooling must be one of {DIGIT_POOLINGS}, not {self.pooling!r}")
        if self.cmvn not in DIGIT_CMVN_MODES:
            raise ValueError(f"cmvn must be one of {DIGIT_CMVN_MODES}, not {self.cmvn!r}")
        if self.delta_order not in (0, 1, 2):
            raise ValueError(f"delta_order must be 0, 1 or 2, not {self.delta_order}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DigitFeatureConfig":
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def n_coefficients(self) -> int:
        return self.n_mfcc * (1 + self.delta_order)

    @property
    def vector_size(self) -> int:
        if self.pooling in ("flat", "segments"):
            return self.n_coefficients * self.n_frames
        return self.n_coefficients * (2 if self.pooling == "mean+std" else 1)


# %% [markdown]
# ## From a clip to MFCCs: trimming, vocal-tract warping, normalisation
#
# The clip is trimmed to its sound, optionally warped along the frequency axis (VTLP: a
# different vocal-tract length), turned into MFCCs (+ deltas) and normalised per utterance.


# %%
def trim_digit_clip(wave: np.ndarray, config: DigitFeatureConfig) -> np.ndarray:
    """Cut leading and trailing audio quieter than ``config.trim_db`` below the clip's peak.

    Trimming aligns every clip on its onset, so a clip cut from a stream by a VAD and the
    same clip from a file give the same features.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if config.trim_db is None or len(wave) < 256:
        return wave
    trimmed, _ = librosa.effects.trim(wave, top_db=config.trim_db, frame_length=256, hop_length=64)
    return trimmed if len(trimmed) >= 64 else wave


def digit_clip_mfcc(wave: np.ndarray, config: DigitFeatureConfig, warp: float = 1.0) -> np.ndarray:
    """MFCCs (+ deltas) of the clip's real frames (trimmed), with per-utterance CMVN when ``config.cmvn``.

    CMVN removes what is constant over one utterance (the microphone's and the vocal
    tract's overall colouring, the level), a large part of what differs between speakers
    and recordings; the padding added later is then the clip's mean (zero). ``cmvn="mean"``
    only subtracts the mean (cepstral mean normalisation): scaling every coefficient to unit
    variance over a short clip also scales up the near-silent ones, which held-out speakers
    showed to hurt. ``warp`` != 1 scales the spectrum's frequency axis first (VTLP).
    """
    m = mfcc_features(
        trim_digit_clip(wave, config),
        config.sample_rate,
        n_mfcc=config.n_mfcc,
        delta_order=config.delta_order,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
        fmin=config.fmin,
        warp=warp,
    )
    if config.cmvn and m.shape[1] > 1:
        m = m - m.mean(axis=1, keepdims=True)
        if config.cmvn != "mean":
            m = m / (m.std(axis=1, keepdims=True) + 1e-5)
    return m.astype(np.float32)


# %% [markdown]
# ## From MFCCs to one vector per clip
#
# Fixed time segments (speaking rate drops out), padded frames or pooled statistics, for the SVM;
# standardisation statistics for the CNN; loading the clips.


# %%
def digit_time_segments(matrix: np.ndarray, n_segments: int) -> np.ndarray:
    """``[dims, frames]`` -> ``[dims, n_segments]``: the mean of each of ``n_segments`` equal time segments.

    Time normalisation: a digit said fast or slowly gives the same sequence of segment
    means (a clip with fewer frames than segments repeats frames). Speaking rate is one of
    the largest differences between speakers.
    """
    m = np.asarray(matrix, dtype=np.float32)
    frames = m.shape[1]
    if frames == 0:
        return np.zeros((m.shape[0], n_segments), dtype=np.float32)
    edges = np.linspace(0, frames, n_segments + 1)
    out = np.empty((m.shape[0], n_segments), dtype=np.float32)
    for k in range(n_segments):
        first = int(np.floor(edges[k]))
        last = max(first + 1, int(np.ceil(edges[k + 1])))
        out[:, k] = m[:, first:last].mean(axis=1)
    return out


def digit_mfcc_matrix(wave: np.ndarray, config: DigitFeatureConfig) -> np.ndarray:
    """MFCCs (+ deltas) of one (trimmed) clip, ``[n_coefficients, n_frames]`` (zero-padded or cut)."""
    return pad_frames(digit_clip_mfcc(wave, config), config.n_frames)


def digit_feature_vectors(waves, config: DigitFeatureConfig, progress: bool = False, warp: float = 1.0) -> np.ndarray:
    """Feature vectors ``[clips, config.vector_size]`` for scikit-learn models (``warp``: VTLP, training only)."""
    from tqdm.auto import tqdm

    rows = []
    for wave in tqdm(waves, desc="MFCC features", disable=not progress, leave=False):
        if config.pooling == "flat":
            rows.append(pad_frames(digit_clip_mfcc(wave, config, warp), config.n_frames).ravel())
        elif config.pooling == "segments":
            rows.append(digit_time_segments(digit_clip_mfcc(wave, config, warp), config.n_frames).ravel())
        else:  # pool over the clip's real frames only (no padding)
            rows.append(pool_frames(digit_clip_mfcc(wave, config, warp).T, config.pooling))
    if not rows:
        return np.zeros((0, config.vector_size), dtype=np.float32)
    return np.stack(rows).astype(np.float32)


def fit_standardizer(features: np.ndarray, axis=(0, 2), eps: float = 1e-5) -> dict:
    """Mean and std per coefficient of TRAINING features ``[clips, coefficients, frames]``.

    Fit it on the training clips only; validation and test clips are transformed with the
    training statistics (`apply_standardizer`), never with their own.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"fit_standardizer needs a non-empty [clips, ...] array, got shape {x.shape}")
    mean = x.mean(axis=axis, keepdims=True)[0]
    std = x.std(axis=axis, keepdims=True)[0]
    return {"mean": mean.astype(np.float32), "std": np.maximum(std, eps).astype(np.float32)}


def apply_standardizer(features: np.ndarray, stats: dict) -> np.ndarray:
    """``(features - mean) / std`` with statistics from `fit_standardizer`."""
    x = np.asarray(features, dtype=np.float32)
    if x.shape[1:2] != stats["mean"].shape[0:1]:
        raise ValueError(
            f"features have {x.shape[1]} coefficients but the standardiser was fitted on {stats['mean'].shape[0]}"
        )
    return (x - stats["mean"]) / stats["std"]


def load_digit_waves(manifest: pd.DataFrame, sample_rate: int = 8000, progress: bool = True, desc: str = "audio"):
    """Load the manifest's clips at ``sample_rate``; return ``(waves, kept_manifest, failures)``.

    Broken files are skipped and reported (`load_audio_batch`); ``kept_manifest`` holds the
    rows of the clips that loaded, in the same order as ``waves``.
    """
    waves, ok_paths, failures = load_audio_batch(list(manifest["path"]), sr=sample_rate, progress=progress, desc=desc)
    ok = set(ok_paths)
    kept = manifest[manifest["path"].isin(ok)].reset_index(drop=True)
    order = {p: i for i, p in enumerate(ok_paths)}
    waves = [waves[order[p]] for p in kept["path"]]
    return waves, kept, failures
