# %% [markdown]
# # Digit models: a tuned scikit-learn baseline and a small CNN with augmentation
#
# Every model here is wrapped in a class with the same small interface, so evaluation,
# latency, saving and live inference treat them alike:
#
# - `predict_logits(waves, groups=None)` -> `[clips, classes]` scores, `predict_proba(waves,
#   temperature)`, `predict(waves)` -> labels; `labels`, `sample_rate`, `kind`. ``groups``: one
#   speaker (or session) key per clip, for the models that normalise by speaker
#   (`digit_features`: speaker normalisation); None: every clip alone.
#
# **Baseline** (`grid_search_digit_pipeline`): a scikit-learn `Pipeline` of `StandardScaler`,
# optional `PCA` and an RBF `SVC` (or logistic regression), tuned by a stratified K-fold grid
# search over C and gamma. The scaler and PCA sit inside the pipeline, so each CV fold fits
# them on its own training part only.
#
# **CNN** (`train_digit_cnn`): MFCC or log-mel features computed in PyTorch from the
# waveform (so waveform augmentation runs on the fly, on the GPU when there is one),
# waveform augmentation (noise at a random SNR, gain, time shift), SpecAugment (time and
# frequency masks), per-coefficient standardisation fitted on the training clips, a
# stratified validation split, early stopping on validation accuracy, and the best
# checkpoint kept.

# %%
import copy
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field

import librosa
import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from torch import nn

from lib.digits.digit_features import (
    SPEAKER_NORM_PRIOR_CLIPS,
    DigitFeatureConfig,
    digit_feature_vectors,
    norm_prior_from_moments,
    speaker_norm_stats,
    trim_digit_clip,
)


class DigitClassifierBase:
    """Shared interface: subclasses implement ``predict_logits(waves)``."""

    kind = "base"
    labels: list = []
    sample_rate: int = 8000

    def predict_logits(self, waves, groups=None) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_proba(self, waves, temperature: float = 1.0, groups=None, **options) -> np.ndarray:
        """Class probabilities, softmax of the logits divided by ``temperature``; ``options`` go to
        ``predict_logits`` (the encoder model's ``wideband``)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, not {temperature}")
        logits = np.asarray(self.predict_logits(waves, groups=groups, **options), dtype=np.float64) / temperature
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, waves, groups=None, **options) -> np.ndarray:
        """Predicted labels, one per clip."""
        logits = self.predict_logits(waves, groups=groups, **options)
        return np.asarray(self.labels)[np.argmax(logits, axis=1)]


# %% [markdown]
# ## Baseline: scikit-learn pipeline tuned by grid search


# %%
def make_digit_pipeline(classifier: str = "svm", pca_components: int | None = 128, seed: int = 0) -> Pipeline:
    """``StandardScaler -> [PCA] -> SVC(rbf) | LogisticRegression``."""
    steps = [("scale", StandardScaler())]
    if pca_components:
        steps.append(("pca", PCA(n_components=pca_components, random_state=seed)))
    if classifier == "svm":
        steps.append(("clf", SVC(kernel="rbf", C=10.0, gamma="scale")))
    elif classifier in ("logreg", "logistic"):
        steps.append(("clf", LogisticRegression(C=1.0, max_iter=2000)))
    else:
        raise ValueError(f"classifier must be 'svm' or 'logreg', not {classifier!r}")
    return Pipeline(steps)


def grid_search_digit_pipeline(
    X: np.ndarray,
    y: np.ndarray,
    classifier: str = "svm",
    pca_components: int | None = 128,
    C_grid=(1.0, 10.0, 100.0),
    gamma_grid=("scale", 0.001, 0.01),
    cv_folds: int = 5,
    seed: int = 0,
    n_jobs: int = 1,
    verbose: int = 0,
    groups=None,
) -> GridSearchCV:
    """Stratified K-fold grid search over C (and gamma for the SVM); returns the fitted search.

    ``search.best_estimator_`` is refitted on all of ``X``; ``best_score_`` is the mean CV
    accuracy and ``best_params_`` the chosen values. ``groups`` (e.g. the source clip of every
    augmented copy) keeps each group inside one fold (`StratifiedGroupKFold`), so a copy never
    validates its own original. PCA is capped at the size of a fold's training part.
    """
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"a classifier needs at least 2 classes; the training labels are all {classes.tolist()}")
    min_class = int(counts.min())
    folds = max(2, min(cv_folds, min_class))
    if groups is not None:  # grouped folds: no more folds than groups (a nested search has one speaker fewer)
        folds = max(2, min(folds, len(np.unique(groups))))
    # PCA is fitted inside each CV fold: its size cannot exceed the fold's training clips (nor the features)
    fold_train = len(X) - math.ceil(len(X) / folds)
    requested_pca = pca_components
    if pca_components and pca_components > min(fold_train, X.shape[1]):
        pca_components = int(min(fold_train, X.shape[1]))
    pipeline = make_digit_pipeline(classifier, pca_components, seed)
    grid = {"clf__C": list(C_grid)}
    if classifier == "svm":
        grid["clf__gamma"] = list(gamma_grid)
    search = GridSearchCV(
        pipeline,
        grid,
        cv=(
            StratifiedKFold(folds, shuffle=True, random_state=seed)
            if groups is None
            else StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
        ),
        scoring="accuracy",
        n_jobs=n_jobs,
        refit=True,
        verbose=verbose,
    )
    # the scaler and PCA of a fold do not depend on C or gamma: cache them (fitted once per fold, not per grid point)
    with tempfile.TemporaryDirectory(prefix="audiolens-grid-") as cache:
        search.estimator.set_params(memory=cache)
        search.fit(X, y, groups=groups)
        search.estimator.set_params(memory=None)
        search.best_estimator_.set_params(memory=None)
    search.audiolens_info = {"cv_folds": folds, "pca_components": pca_components, "pca_requested": requested_pca}
    return search


class SklearnDigitModel(DigitClassifierBase):
    """A fitted scikit-learn pipeline + the feature config it expects."""

    kind = "sklearn"

    def __init__(self, pipeline, feature_config: DigitFeatureConfig, labels=None):
        self.pipeline = pipeline
        self.feature_config = feature_config
        self.sample_rate = feature_config.sample_rate
        self.labels = list(labels if labels is not None else pipeline.classes_)

    def features(self, waves, groups=None) -> np.ndarray:
        return digit_feature_vectors(list(waves), self.feature_config, groups=groups)

    def predict_logits(self, waves, groups=None) -> np.ndarray:
        """SVC: its one-vs-rest decision scores; other classifiers: log-probabilities."""
        X = self.features(waves, groups)
        if len(X) == 0:
            return np.zeros((0, len(self.labels)))
        if isinstance(self.pipeline[-1], SVC):
            scores = np.asarray(self.pipeline.decision_function(X), dtype=np.float64)
            if scores.ndim == 1:  # a binary SVC gives one score: positive means classes_[1]
                scores = np.stack([-scores / 2, scores / 2], axis=1)
            return scores
        return np.log(np.clip(self.pipeline.predict_proba(X), 1e-9, 1.0))

    def predict(self, waves, groups=None) -> np.ndarray:
        return self.pipeline.predict(self.features(waves, groups))


# %% [markdown]
# ## CNN on MFCC or log-mel, computed in PyTorch


# %%
@dataclass
class DigitCnnConfig:
    """Architecture, front end and training settings of the digit CNN (saved as JSON)."""

    sample_rate: int = 8000
    clip_seconds: float = 0.8  # inputs are padded (at the end) or cut to this length
    features: str = "mfcc"  # mfcc | logmel
    n_mels: int = 64
    n_mfcc: int = 40
    n_fft: int = 512
    hop_length: int = 128
    architecture: str = "temporal"  # temporal: 1-D convolutions over time (features as channels) | 2d
    channels: tuple = (64, 96, 128)
    convs_per_block: int = 2
    dropout: float = 0.3
    labels: list = field(default_factory=lambda: list(range(10)))
    trim_db: float | None = 20.0  # trim leading/trailing audio this far below the peak before cutting/padding
    cmvn: bool | str = True  # per-utterance mean/variance normalisation over the clip's frames; "speaker": by speaker
    norm_prior: dict | None = None  # cmvn="speaker": {"mean", "std"} of the training frames (set by train_digit_cnn)
    norm_prior_clips: float = SPEAKER_NORM_PRIOR_CLIPS  # cmvn="speaker": the prior's weight, in clips
    time_steps: int | None = None  # resample the clip's own frames to this many steps (time normalisation); None: off
    test_warps: tuple | None = None  # prediction: softmax averaged over these spectrum warps (VTLP); None: as is
    # training
    epochs: int = 25
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-3
    patience: int = 6
    val_fraction: float = 0.1
    # waveform augmentation
    noise_snr_db: tuple = (10.0, 40.0)  # noise at a random SNR in this range; None: off
    noise_prob: float = 0.5
    gain_db: float = 6.0  # random gain in +-gain_db
    shift_ms: float = 100.0  # random time shift in +-shift_ms
    # SpecAugment
    freq_masks: int = 2
    freq_mask_width: int = 6
    time_masks: int = 2
    time_mask_width: int = 8

    @property
    def n_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def n_features(self) -> int:
        return self.n_mfcc if self.features == "mfcc" else self.n_mels

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["noise_snr_db"] = list(self.noise_snr_db) if self.noise_snr_db else None
        d["test_warps"] = list(self.test_warps) if self.test_warps else None
        return d

    @classmethod
    def from_dict(cls, values: dict) -> "DigitCnnConfig":
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        if "channels" in known:
            known["channels"] = tuple(known["channels"])
        for key in ("noise_snr_db", "test_warps"):
            if known.get(key):
                known[key] = tuple(known[key])
        return cls(**known)


# %% [markdown]
# ## The CNN: front end and network
#
# Log-mel front end computed on the fly (so waveform augmentation and SpecAugment run on the
# batch), then a small convolutional network with global pooling.


# %%
class DigitFrontend(nn.Module):
    """Waveform ``[batch, samples]`` -> MFCC or log-mel ``[batch, features, frames]`` (librosa's filters)."""

    def __init__(self, config: DigitCnnConfig):
        super().__init__()
        self.n_fft, self.hop_length, self.kind = config.n_fft, config.hop_length, config.features
        mel = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels)
        self.register_buffer("mel_basis", torch.tensor(mel, dtype=torch.float32), persistent=False)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        if config.features == "mfcc":
            n = config.n_mels
            k = np.arange(config.n_mfcc)[:, None]
            dct = np.cos(np.pi / n * (np.arange(n)[None, :] + 0.5) * k) * np.sqrt(2.0 / n)
            dct[0] *= 1.0 / np.sqrt(2.0)
            self.register_buffer("dct", torch.tensor(dct, dtype=torch.float32), persistent=False)
        elif config.features != "logmel":
            raise ValueError(f"features must be 'mfcc' or 'logmel', not {config.features!r}")

    def forward(self, wave: torch.Tensor, warp: torch.Tensor | None = None) -> torch.Tensor:
        """``warp`` (optional, ``[batch]``): scale each example's frequency axis (VTLP): bin ``f`` takes the
        power at ``f / warp``."""
        spec = (
            torch.stft(
                wave,
                self.n_fft,
                self.hop_length,
                window=self.window,
                center=True,
                pad_mode="constant",
                return_complex=True,
            )
            .abs()
            .pow(2)
        )  # zero padding at the edges, as librosa does
        if warp is not None:
            bins = torch.arange(spec.shape[1], device=spec.device, dtype=spec.dtype)
            spec = _digit_interpolate(spec, bins[None, :] / warp[:, None], dim=1)
        logmel = 10.0 * torch.log10(torch.clamp(self.mel_basis @ spec, min=1e-10))
        if self.kind == "mfcc":
            return self.dct @ logmel
        return logmel


def _digit_interpolate(x: torch.Tensor, positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``x [batch, a, b]`` read at fractional ``positions [batch, k]`` along ``dim`` (1 or 2), linearly
    interpolated between the two nearest entries (positions clamped to the axis)."""
    n = x.shape[dim]
    positions = positions.clamp(0, n - 1)
    low = positions.floor().long()
    high = (low + 1).clamp(max=n - 1)
    frac = (positions - low.to(x.dtype)).unsqueeze(3 - dim)
    shape = list(x.shape)
    shape[dim] = positions.shape[1]

    def take(index):
        return torch.gather(x, dim, index.unsqueeze(3 - dim).expand(shape))

    return take(low) * (1 - frac) + take(high) * frac


def _digit_time_resample(x: torch.Tensor, mask: torch.Tensor, steps: int) -> torch.Tensor:
    """``x [batch, features, frames]`` between each row's first and last frame where ``mask [batch, frames]``
    is set, linearly resampled to ``[batch, features, steps]``."""
    b, _, t = x.shape
    idx = torch.arange(t, device=x.device, dtype=x.dtype)[None, :].expand(b, t)
    has = mask > 0
    first = torch.where(has, idx, torch.full_like(idx, float(t))).amin(dim=1).clamp(max=t - 1)
    last = torch.where(has, idx, torch.full_like(idx, -1.0)).amax(dim=1).clamp(min=0)
    last = torch.maximum(last, first)
    frac = torch.linspace(0.0, 1.0, steps, device=x.device, dtype=x.dtype)[None, :]
    return _digit_interpolate(x, first[:, None] + frac * (last - first)[:, None], dim=2)


# %% [markdown]
# ### The network
#
# Front end, normalisation (per utterance, or by speaker with statistics passed in or the
# prior's), the training set's standardisation, SpecAugment, convolutions, pooled head.


# %%
class DigitCnn(nn.Module):
    """Front end -> train-fitted standardisation -> [SpecAugment] -> 3 conv blocks -> linear."""

    def __init__(self, config: DigitCnnConfig):
        super().__init__()
        self.config = config
        self.frontend = DigitFrontend(config)
        self.register_buffer("feat_mean", torch.zeros(config.n_features, 1))
        self.register_buffer("feat_std", torch.ones(config.n_features, 1))
        layers = []
        if config.architecture == "temporal":
            c_in = config.n_features
            for c_out in config.channels:
                for j in range(config.convs_per_block):
                    layers += [
                        nn.Conv1d(c_in, c_out, 5 if j == 0 else 3, padding="same", bias=False),
                        nn.BatchNorm1d(c_out),
                        nn.ReLU(),
                    ]
                    c_in = c_out
                layers.append(nn.MaxPool1d(2))
        elif config.architecture == "2d":
            c_in = 1
            for c_out in config.channels:
                for _ in range(config.convs_per_block):
                    layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
                    c_in = c_out
                layers.append(nn.MaxPool2d(2))
        else:
            raise ValueError(f"architecture must be 'temporal' or '2d', not {config.architecture!r}")
        self.body = nn.Sequential(*layers)
        width = c_in if config.architecture == "temporal" else c_in * (config.n_features // 2 ** len(config.channels))
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(2 * width, len(config.labels)))

    def set_norm_prior(self, prior: dict) -> None:
        """Set the speaker normalisation's prior (``{"mean", "std"}`` of the training frames) in the network's
        config (``train_digit_cnn`` gives each network its own copy; saved with the config)."""
        self.config.norm_prior = {"mean": [float(v) for v in prior["mean"]], "std": [float(v) for v in prior["std"]]}

    def _audio_frames(self, wave: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``[batch, 1, frames]``: 1 where a frame holds audio (not the zero padding)."""
        cfg = self.config
        energy = nn.functional.avg_pool1d(
            wave[:, None].pow(2), cfg.n_fft, cfg.hop_length, padding=cfg.n_fft // 2, count_include_pad=True
        )[:, :, : x.shape[-1]]
        return (energy > 1e-10).float()

    @torch.no_grad()
    def clip_moments(self, wave: torch.Tensor, warp: torch.Tensor | None = None) -> list:
        """`frame_moments` of each clip's front-end frames that hold audio (for `speaker_norm_stats`)."""
        x = self.frontend(wave, warp)
        return self._masked_moments(x, self._audio_frames(wave, x))

    @staticmethod
    def _masked_moments(x: torch.Tensor, mask: torch.Tensor) -> list:
        """``(sum, sum of squares, frames)`` per clip of front-end frames ``x`` where ``mask`` holds audio."""
        x, mask = x.double(), mask.double()
        sums, squares, counts = (x * mask).sum(-1), (x * x * mask).sum(-1), mask.sum((1, 2))
        return [(a.cpu().numpy(), b.cpu().numpy(), int(c)) for a, b, c in zip(sums, squares, counts)]

    def batch_moments(self, waves: torch.Tensor, warp=None, batch_size: int = 256) -> list:
        """`clip_moments` of many clips, ``batch_size`` at a time (``warp``: one factor for all)."""
        moments = []
        for i in range(0, len(waves), batch_size):
            factor = None if warp is None else torch.full((len(waves[i : i + batch_size]),), float(warp))
            moments += self.clip_moments(waves[i : i + batch_size], None if factor is None else factor.to(waves.device))
        return moments

    def stats_from_moments(self, moments, groups=None, device="cpu") -> torch.Tensor:
        """``[clips, 2, features]`` (mean, std) of each clip's speaker group (`speaker_norm_stats`, the prior's)."""
        stats = speaker_norm_stats(moments, groups, self.config.norm_prior, self.config.norm_prior_clips)
        return torch.from_numpy(np.stack([np.stack(pair) for pair in stats])).to(device)

    def group_stats(self, waves: torch.Tensor, groups=None, warp=None, batch_size: int = 256) -> torch.Tensor:
        """`stats_from_moments` of ``waves`` (None: every clip alone)."""
        return self.stats_from_moments(self.batch_moments(waves, warp, batch_size), groups, waves.device)

    def raw_features(
        self, wave: torch.Tensor, warp: torch.Tensor | None = None, stats: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Front-end features, with per-utterance CMVN over the frames that hold audio (not the zero padding).

        ``cmvn="speaker"``: normalised with ``stats`` (``[batch, 2, features]``: the mean and std
        of each clip's speaker, `group_stats`); without them each clip's own, shrunk toward the
        prior. With ``config.time_steps`` the frames from the first to the last that hold audio are
        resampled (linear interpolation) to that many steps: every clip spans the same input
        whatever its speaking rate.
        """
        x = self.frontend(wave, warp)
        cfg = self.config
        steps = getattr(cfg, "time_steps", None)
        if not getattr(cfg, "cmvn", False) and not steps:
            return x
        mask = self._audio_frames(wave, x)  # [batch, 1, frames]
        if getattr(cfg, "cmvn", False) == "speaker":
            if stats is None:  # every clip a group of one: its own frames' moments, shrunk toward the prior
                stats = self.stats_from_moments(self._masked_moments(x, mask), None, wave.device)
            x = (x - stats[:, 0, :, None]) / stats[:, 1, :, None] * mask
        elif getattr(cfg, "cmvn", False):
            count = mask.sum(dim=-1, keepdim=True).clamp(min=1.0)
            mean = (x * mask).sum(dim=-1, keepdim=True) / count
            std = (((x - mean) ** 2 * mask).sum(dim=-1, keepdim=True) / count).clamp(min=1e-6).sqrt()
            x = (x - mean) / std * mask
        if steps:
            x = _digit_time_resample(x, mask[:, 0], int(steps))
        return x

    def features(self, wave: torch.Tensor, warp: torch.Tensor | None = None, stats=None) -> torch.Tensor:
        return (self.raw_features(wave, warp, stats) - self.feat_mean) / self.feat_std

    def spec_augment(self, feats: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        b, f, t = feats.shape
        mask = torch.ones_like(feats)
        for _ in range(cfg.freq_masks):
            width = torch.randint(0, cfg.freq_mask_width + 1, (b,), device=feats.device)
            start = (torch.rand(b, device=feats.device) * (f - width).clamp(min=1)).long()
            idx = torch.arange(f, device=feats.device)[None, :]
            mask = mask * (~((idx >= start[:, None]) & (idx < (start + width)[:, None]))).float()[:, :, None]
        for _ in range(cfg.time_masks):
            width = torch.randint(0, cfg.time_mask_width + 1, (b,), device=feats.device)
            start = (torch.rand(b, device=feats.device) * (t - width).clamp(min=1)).long()
            idx = torch.arange(t, device=feats.device)[None, :]
            mask = mask * (~((idx >= start[:, None]) & (idx < (start + width)[:, None]))).float()[:, None, :]
        return feats * mask  # standardised features: 0 is the mean

    def forward(
        self, wave: torch.Tensor, augment: bool = False, warp: torch.Tensor | None = None, stats=None
    ) -> torch.Tensor:
        """Logits; ``warp`` (optional, ``[batch]``): every example's spectrum warped by its factor first (VTLP);
        ``stats``: speaker normalisation statistics (`group_stats`)."""
        x = self.features(wave, warp, stats)
        if augment:
            x = self.spec_augment(x)
        if self.config.architecture == "temporal":
            x = self.body(x)  # [batch, channels, frames]
        else:
            x = self.body(x[:, None]).flatten(1, 2)  # [batch, channels x freq, frames]
        return self.head(torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1))


# %% [markdown]
# ## Training the CNN
#
# Fixed-length waves, waveform augmentation on the batch, early stopping on a validation split,
# and a learning-rate grid that keeps the best run.


# %%
def fix_wave_length(waves, n_samples: int) -> np.ndarray:
    """Pad with zeros (at the end) or cut clips to ``n_samples``; ``[clips, n_samples]`` float32."""
    out = np.zeros((len(waves), n_samples), dtype=np.float32)
    for i, w in enumerate(waves):
        w = np.asarray(w, dtype=np.float32)[:n_samples]
        out[i, : len(w)] = w
    return out


def augment_waves(batch: torch.Tensor, config: DigitCnnConfig, generator: torch.Generator | None = None):
    """Waveform augmentation on a ``[batch, samples]`` tensor: time shift, gain, additive noise."""
    b, n = batch.shape
    dev = batch.device

    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(dev)

    shift = int(config.shift_ms * config.sample_rate / 1000)
    if shift > 0:
        padded = torch.nn.functional.pad(batch, (shift, shift))
        offsets = (rand(b) * (2 * shift + 1)).long().clamp(max=2 * shift)
        idx = offsets[:, None] + torch.arange(n, device=dev)[None, :]
        batch = torch.gather(padded, 1, idx)
    if config.gain_db:
        gain_db = (rand(b, 1) * 2 - 1) * config.gain_db
        batch = batch * torch.pow(10.0, gain_db / 20.0)
    if config.noise_snr_db and config.noise_prob > 0:
        lo, hi = config.noise_snr_db
        snr = lo + rand(b, 1) * (hi - lo)
        power = batch.pow(2).mean(dim=1, keepdim=True).clamp(min=1e-10)
        noise = torch.randn(b, n, generator=generator).to(dev) * torch.sqrt(power / torch.pow(10.0, snr / 10))
        if getattr(config, "time_steps", None):  # noise only over the clip, so its span stays that of the audio
            audio = (batch != 0).float()
            noise = noise * (torch.cummax(audio, dim=1).values * torch.cummax(audio.flip(1), dim=1).values.flip(1))
        apply = (rand(b, 1) < config.noise_prob).float()
        batch = batch + apply * noise
    return batch


class CnnDigitModel(DigitClassifierBase):
    """A trained `DigitCnn` behind the common interface."""

    kind = "cnn"

    def __init__(self, network: DigitCnn, device: str = "cpu", batch_size: int = 128):
        self.network = network.to(device).eval()
        self.config = network.config
        self.device = device
        self.batch_size = batch_size
        self.sample_rate = network.config.sample_rate
        self.labels = list(network.config.labels)

    @torch.no_grad()
    def predict_logits(self, waves, groups=None) -> np.ndarray:
        """Logits per clip; ``groups`` (speaker normalisation): one speaker or session key per clip."""
        x = fix_wave_length([trim_digit_clip(w, self.config) for w in waves], self.config.n_samples)
        warps = getattr(self.config, "test_warps", None)
        by_speaker = getattr(self.config, "cmvn", False) == "speaker" and groups is not None and len(x)
        stats = {}
        if by_speaker:  # each speaker's statistics, over their clips as each warp sees them
            x_all = torch.from_numpy(x).to(self.device)
            stats = {w: self.network.group_stats(x_all, list(groups), w) for w in (warps or [None])}
        outs = []
        for i in range(0, len(x), self.batch_size):
            batch = torch.from_numpy(x[i : i + self.batch_size]).to(self.device)
            if not warps:
                outs.append(self.network(batch, stats=stats[None][i : i + len(batch)] if stats else None).float().cpu())
                continue
            # softmax averaged over spectrum warps (a longer or shorter vocal tract), as log-probabilities;
            # one forward pass over the batch repeated once per warp
            factors = torch.tensor([float(w) for w in warps], device=self.device).repeat_interleave(len(batch))
            chunk = torch.cat([stats[w][i : i + len(batch)] for w in warps]) if stats else None
            probs = self.network(batch.repeat(len(warps), 1), warp=factors, stats=chunk).softmax(dim=1)
            probs = probs.reshape(len(warps), len(batch), -1).mean(dim=0)
            outs.append(probs.clamp(min=1e-9).log().float().cpu())
        return torch.cat(outs).numpy() if outs else np.zeros((0, len(self.labels)))


@torch.no_grad()
def _cnn_evaluate(network: DigitCnn, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256, stats=None):
    """(accuracy, mean cross-entropy) on a labelled set (``stats``: speaker normalisation, one row per clip)."""
    network.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(x), batch_size):
        logits = network(x[i : i + batch_size], stats=None if stats is None else stats[i : i + batch_size])
        correct += (logits.argmax(1) == y[i : i + batch_size]).sum().item()
        loss += nn.functional.cross_entropy(logits, y[i : i + batch_size], reduction="sum").item()
    return correct / max(1, len(x)), loss / max(1, len(x))


# %%
def train_digit_cnn(
    waves,
    labels,
    config: DigitCnnConfig | None = None,
    device: str = "cpu",
    seed: int = 0,
    val_waves=None,
    val_labels=None,
    progress: bool = True,
    log_every: int = 0,
    variants=None,
    groups=None,
    val_groups=None,
):
    """Train the CNN; return ``(CnnDigitModel, history)``.

    Without ``val_waves`` a stratified ``config.val_fraction`` of the training clips is held
    out. Each epoch reports train loss and validation accuracy; training stops after
    ``config.patience`` epochs without improvement (higher validation accuracy, or equal
    accuracy with a lower validation loss) and the best checkpoint is restored.
    ``history`` has per-epoch lists, ``best_epoch``, ``best_val_accuracy``, ``stopped_early``
    and ``seconds``. ``variants`` (optional, aligned with ``waves``): augmented copies of each
    clip (`digit_augmented_copies`); every epoch each training clip is drawn as itself or one of
    its copies. Validation clips are always the clean ones. ``groups`` / ``val_groups``
    (``config.cmvn="speaker"``): one speaker key per clip; each clip, and its copies, is
    normalised with its speaker's statistics over the clean clips (None: every clip alone).
    """
    from tqdm.auto import tqdm

    config = config or DigitCnnConfig()
    label_index = {label: i for i, label in enumerate(config.labels)}
    unknown = sorted({str(v) for v in labels if v not in label_index})
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not in the CNN's label list {config.labels}")
    y_all = np.array([label_index[v] for v in labels])
    waves = [trim_digit_clip(w, config) for w in waves]
    if variants is not None and len(variants) != len(waves):
        raise ValueError(f"variants has {len(variants)} entries but there are {len(waves)} clips")
    all_pools = (
        [[w] + [trim_digit_clip(v, config) for v in copies] for w, copies in zip(waves, variants)]
        if variants is not None
        else None
    )
    tr_idx = np.arange(len(waves))
    if val_waves is None:
        idx = np.arange(len(waves))
        n_val = max(1, int(round(config.val_fraction * len(waves))))
        counts = np.bincount(y_all)
        stratify = y_all if counts[counts > 0].min() >= 2 and n_val >= (counts > 0).sum() else None
        tr_idx, va_idx = train_test_split(idx, test_size=config.val_fraction, random_state=seed, stratify=stratify)
        train_w, train_y = [waves[i] for i in tr_idx], y_all[tr_idx]
        val_w, val_y = [waves[i] for i in va_idx], y_all[va_idx]
    else:
        train_w, train_y = waves, y_all
        val_w, val_y = [trim_digit_clip(w, config) for w in val_waves], np.array([label_index[v] for v in val_labels])
    pools = [all_pools[i] for i in tr_idx] if all_pools is not None else None
    pick = np.random.default_rng(seed)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    network = DigitCnn(DigitCnnConfig.from_dict(config.to_dict())).to(device)  # its own config: the prior goes in
    x_train = torch.from_numpy(fix_wave_length(train_w, config.n_samples)).to(device)
    y_train = torch.from_numpy(train_y).long().to(device)
    x_val = torch.from_numpy(fix_wave_length(val_w, config.n_samples)).to(device)
    y_val = torch.from_numpy(val_y).long().to(device)
    stats_train = stats_val = None
    if getattr(config, "cmvn", False) == "speaker":  # the prior from every training clip, then each speaker's
        x_all = torch.from_numpy(fix_wave_length(waves, config.n_samples)).to(device)
        moments = network.batch_moments(x_all)
        network.set_norm_prior(norm_prior_from_moments(moments))
        every = network.stats_from_moments(moments, groups, device)
        stats_train, stats_val = every[torch.from_numpy(np.asarray(tr_idx))], None
        if val_waves is None:
            stats_val = every[torch.from_numpy(np.asarray(va_idx))]
        elif len(x_val):
            stats_val = network.group_stats(x_val, val_groups)
    with torch.no_grad():  # standardisation statistics from the TRAINING clips only
        feats = torch.cat(
            [
                network.raw_features(
                    x_train[i : i + 256], stats=None if stats_train is None else stats_train[i : i + 256]
                )
                for i in range(0, len(x_train), 256)
            ]
        )
        network.feat_mean.copy_(feats.mean(dim=(0, 2))[:, None])
        network.feat_std.copy_(feats.std(dim=(0, 2)).clamp(min=1e-5)[:, None])
        del feats

    optimiser = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=max(1, config.epochs * steps_per_epoch), pct_start=0.15
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    history = {
        "epoch": [],
        "train_loss": [],
        "train_accuracy": [],
        "val_accuracy": [],
        "val_loss": [],
        "best_epoch": 0,
        "best_val_accuracy": -1.0,
        "stopped_early": False,
        "n_train": len(x_train),
        "n_val": len(x_val),
    }
    best_state, waited, best_loss = None, 0, float("inf")
    start = time.perf_counter()
    bar = tqdm(range(1, config.epochs + 1), desc="CNN epochs", disable=not progress, leave=False)
    for epoch in bar:
        network.train()
        x_epoch = x_train
        if pools is not None:  # each clip as itself or one of its augmented copies
            chosen = [p[int(pick.integers(len(p)))] for p in pools]
            x_epoch = torch.from_numpy(fix_wave_length(chosen, config.n_samples)).to(device)
        order = torch.randperm(len(x_train), generator=gen).to(device)
        total_loss, correct = 0.0, 0
        for i in range(0, len(order), config.batch_size):
            batch = order[i : i + config.batch_size]
            xb = augment_waves(x_epoch[batch], config, gen)
            logits = network(xb, augment=True, stats=None if stats_train is None else stats_train[batch])
            loss = loss_fn(logits, y_train[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            total_loss += loss.item() * len(batch)
            correct += (logits.argmax(1) == y_train[batch]).sum().item()
        val_acc, val_loss = _cnn_evaluate(network, x_val, y_val, stats=stats_val)
        history["epoch"].append(epoch)
        history["train_loss"].append(total_loss / len(x_train))
        history["train_accuracy"].append(correct / len(x_train))
        history["val_accuracy"].append(val_acc)
        history["val_loss"].append(val_loss)
        bar.set_postfix(loss=f"{total_loss / len(x_train):.3f}", val=f"{val_acc:.3f}")
        if log_every and epoch % log_every == 0:
            print(f"epoch {epoch:3d}  loss {total_loss / len(x_train):.3f}  val acc {val_acc:.3f}")
        # better: higher validation accuracy, or the same accuracy with a lower validation loss
        if (val_acc, -val_loss) > (history["best_val_accuracy"], -best_loss):
            history["best_val_accuracy"], history["best_epoch"], best_loss = val_acc, epoch, val_loss
            best_state, waited = copy.deepcopy(network.state_dict()), 0
        else:
            waited += 1
            if waited >= config.patience:
                history["stopped_early"] = True
                break
    history["seconds"] = time.perf_counter() - start
    if best_state is not None:
        network.load_state_dict(best_state)
    return CnnDigitModel(network.eval(), device=device), history


# %%
def train_digit_cnn_lr_grid(
    waves, labels, config: DigitCnnConfig, lr_grid, device: str = "cpu", seed: int = 0, **kwargs
):
    """Train one CNN per learning rate in ``lr_grid``; keep the best on validation accuracy (then loss).

    Returns ``(model, history, table)``: the best model and its history, and per learning
    rate ``{"learning_rate", "val_accuracy", "val_loss", "best_epoch"}``.
    """
    lr_grid = list(lr_grid) if lr_grid else [config.learning_rate]
    best, table = None, []
    for lr in lr_grid:
        trial = DigitCnnConfig.from_dict({**config.to_dict(), "learning_rate": float(lr)})
        model, history = train_digit_cnn(waves, labels, trial, device=device, seed=seed, **kwargs)
        val_loss = history["val_loss"][history["best_epoch"] - 1] if history["best_epoch"] else float("inf")
        table.append(
            {
                "learning_rate": float(lr),
                "val_accuracy": history["best_val_accuracy"],
                "val_loss": val_loss,
                "best_epoch": history["best_epoch"],
            }
        )
        if best is None or (history["best_val_accuracy"], -val_loss) > (best[1]["best_val_accuracy"], -best[2]):
            best = (model, history, val_loss)
    return best[0], best[1], table
