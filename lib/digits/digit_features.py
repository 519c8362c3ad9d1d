# %% [markdown]
# # Digit features: MFCC matrices, fixed-length inputs, train-only standardisation
#
# What the spoken-digit models see. One `DigitFeatureConfig` describes the features
# (sample rate, number of MFCCs, deltas, hop, fixed number of frames, pooling) and travels
# with every saved model, so a model is always fed the features it was trained on.
#
# - `trim_digit_clip`: cut leading/trailing silence (20 dB below the peak by default).
# - `digit_clip_mfcc`: the clip's own frames, with optional per-utterance CMVN.
# - **speaker normalisation** (`cmvn="speaker"`, Kaldi's per-speaker CMVN): every clip's
#   frames are normalised with the mean and standard deviation of all its *speaker's* frames
#   (`speaker_norm_stats`: no labels used), shrunk toward the training frames' statistics
#   (`norm_prior`) for speakers with few clips; a clip alone is mostly normalised by the prior.
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
from collections import defaultdict
from dataclasses import asdict, dataclass

import librosa
import numpy as np
import pandas as pd

from lib.core.audio import load_audio_batch
from lib.core.features import mfcc_features, pad_frames, pool_frames

DIGIT_POOLINGS = ("flat", "segments", "mean", "max", "mean+std")
DIGIT_CMVN_MODES = (False, True, "mean", "mean+var", "speaker")
SPEAKER_NORM_PRIOR_CLIPS = 5.0  # a speaker with n clips weighs n / (n + 5) against the training statistics


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
    cmvn: bool | str = False  # per utterance: True/"mean+var", "mean" (CMN); "speaker": over the speaker's frames
    fmin: float = 0.0  # lowest frequency of the mel filters (Hz)
    norm_prior: dict | None = None  # cmvn="speaker": {"mean", "std"} of the training frames (digit_feature_prior)
    norm_prior_clips: float = SPEAKER_NORM_PRIOR_CLIPS  # cmvn="speaker": the prior's weight, in clips

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
    showed to hurt. ``cmvn="speaker"``: returned as is (`digit_feature_vectors` normalises by
    speaker). ``warp`` != 1 scales the spectrum's frequency axis first (VTLP).
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
    if config.cmvn and config.cmvn != "speaker" and m.shape[1] > 1:
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


def digit_feature_vectors(
    waves, config: DigitFeatureConfig, progress: bool = False, warp: float = 1.0, groups=None
) -> np.ndarray:
    """Feature vectors ``[clips, config.vector_size]`` for scikit-learn models (``warp``: VTLP, training only).

    ``groups`` (``cmvn="speaker"``): one speaker (or session) key per clip, whose frames are
    normalised together (`speaker_norm_stats`); None: every clip alone, shrunk toward the prior.
    """
    from tqdm.auto import tqdm

    mats = [
        digit_clip_mfcc(w, config, warp) for w in tqdm(waves, desc="MFCC features", disable=not progress, leave=False)
    ]
    if config.cmvn == "speaker":
        stats = speaker_norm_stats(
            [frame_moments(m.T) for m in mats], groups, config.norm_prior, config.norm_prior_clips
        )
        mats = [((m.T - mean) / std).T for m, (mean, std) in zip(mats, stats)]
    rows = []
    for m in mats:
        if config.pooling == "flat":
            rows.append(pad_frames(m, config.n_frames).ravel())
        elif config.pooling == "segments":
            rows.append(digit_time_segments(m, config.n_frames).ravel())
        else:  # pool over the clip's real frames only (no padding)
            rows.append(pool_frames(m.T, config.pooling))
    if not rows:
        return np.zeros((0, config.vector_size), dtype=np.float32)
    return np.stack(rows).astype(np.float32)


def digit_mfcc_moments(waves, config: DigitFeatureConfig, progress: bool = False) -> list:
    """`frame_moments` of each clip's MFCC frames before any normalisation (for `norm_prior_from_moments`)."""
    from tqdm.auto import tqdm

    raw = DigitFeatureConfig.from_dict({**config.to_dict(), "cmvn": False})
    waves = tqdm(waves, desc="MFCC statistics", disable=not progress, leave=False)
    return [frame_moments(digit_clip_mfcc(w, raw).T) for w in waves]


def digit_feature_prior(waves, config: DigitFeatureConfig, progress: bool = False) -> dict:
    """The speaker normalisation's prior: mean and std of every MFCC frame of ``waves`` (the training clips)."""
    return norm_prior_from_moments(digit_mfcc_moments(waves, config, progress))


# %% [markdown]
# ## Speaker normalisation: statistics over a speaker's clips
#
# Per-utterance CMVN removes a clip's channel and voice colouring, but over one short word it
# also removes part of the word. Over all of a speaker's clips (Kaldi's per-speaker CMVN) the
# words average out and what stays constant, the voice and the microphone, is removed. No
# labels are used: a held-out speaker is normalised with their own unlabelled clips, as a
# recogniser adapts to a new user. Measured on FSDD, leave one speaker out, without
# augmentation: SVM 0.817 (per-utterance CMN) -> 0.901; CNN 0.816 -> 0.864; a logistic
# regression on Whisper layers 2-4 0.987 -> 0.992 (the mean only; 0.991 with the variance).
# It needs groups that hold a mix of words: a speaker's clips of one digit alone, normalised
# together, lose that digit (see `speaker_norm_stats`). A speaker with few clips is pulled toward
# the training statistics (`norm_prior`), so one clip alone is normalised mostly by those
# (the default notebook run, SVM LOSO: 0.877 with each clip alone, 0.917 by speaker).


# %%
def frame_moments(frames) -> tuple:
    """``(sum, sum of squares, count)`` over the frames (axis 0) of one ``[frames, ...]`` array (float64)."""
    x = np.asarray(frames, dtype=np.float64)
    return x.sum(axis=0), (x * x).sum(axis=0), int(x.shape[0])


def norm_prior_from_moments(moments) -> dict:
    """``{"mean", "std"}`` (lists) over every frame of the clips whose `frame_moments` are given."""
    moments = list(moments)
    if not moments:
        raise ValueError("no clips to compute the normalisation prior from")
    count = max(1, sum(m[2] for m in moments))
    mean = sum(m[0] for m in moments) / count
    std = np.sqrt(np.maximum(sum(m[1] for m in moments) / count - mean**2, 1e-10))
    return {"mean": mean.tolist(), "std": std.tolist()}


def speaker_norm_stats(moments, groups=None, prior=None, prior_clips: float = SPEAKER_NORM_PRIOR_CLIPS) -> list:
    """Per clip, the ``(mean, std)`` (float32) its frames are normalised with: its group's, shrunk toward ``prior``.

    ``moments``: one `frame_moments` per clip; ``groups``: one key per clip (a speaker, a
    recording session), None: every clip its own group. A group of ``n`` clips weighs
    ``n / (n + prior_clips)`` against ``prior`` (``{"mean", "std"}`` of the training frames), in
    the mean and in the second moment; without a prior a group's own statistics are used (a
    group of one frame is then only centred).

    The statistics suit groups that hold a mix of words, as a speaker's clips do: a group of
    clips of one word would have that word normalised away (FSDD LOSO, SVM without copies: one
    group per digit of the held-out speaker 0.66, all their clips 0.90, each clip alone 0.85).
    """
    moments = list(moments)
    groups = list(range(len(moments))) if groups is None else list(groups)
    if len(groups) != len(moments):
        raise ValueError(f"{len(groups)} group keys for {len(moments)} clips")
    members = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    out = [None] * len(moments)
    for idx in members.values():
        count = sum(moments[i][2] for i in idx)
        weight = 1.0 if prior is None else len(idx) / (len(idx) + prior_clips) if count else 0.0
        if prior is None and not count:
            raise ValueError("a group of clips with no frames and no prior to normalise them with")
        mean = sum(moments[i][0] for i in idx) / max(count, 1)
        second = sum(moments[i][1] for i in idx) / max(count, 1)
        if weight < 1.0:
            prior_mean, prior_std = np.asarray(prior["mean"], np.float64), np.asarray(prior["std"], np.float64)
            mean, second = (
                weight * mean + (1 - weight) * prior_mean,
                weight * second + (1 - weight) * (prior_std**2 + prior_mean**2),
            )
        std = np.sqrt(np.maximum(second - mean**2, 1e-10))
        if weight >= 1.0 and count < 2:  # one frame and no prior: no spread to scale by
            std = np.ones_like(std)
        for i in idx:
            out[i] = (mean.astype(np.float32), std.astype(np.float32))
    return out


# %% [markdown]
# ## Standardisation for the CNN


# %%
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
