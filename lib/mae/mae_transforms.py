# %% [markdown]
# # Input transforms for masked-autoencoder training
#
# Registered transforms turn one raw signal into a fixed-size `[1, F, T]` float32 image the
# models take:
#
# - `log_mel`: audio -> normalised log-mel (default 80 mel bins x 200 frames of 10 ms = 2 s at
#   16 kHz). Short clips are padded with silence, long clips cropped to their loudest window
#   (or the start / centre). Values: dB relative to the clip's peak, floor -80 dB, mapped to
#   about [-2, 2].
# - `rf_spectrogram` and `rf_constellation`: complex IQ samples (radio baseband) -> a
#   spectrogram of the two-sided spectrum, and a 2-D histogram of the I/Q plane (the
#   constellation diagram). They show that the same models, registries and training loop
#   reach beyond audio.
#
# `mae_transform_cached` computes a transform for many files once and keeps the results in the
# core per-clip vector cache (`lib.core.vector_cache`): one folder per transform config, one row
# per clip keyed by its content; unreadable clips are skipped and listed, and an unreadable
# cache is named and rebuilt.

# %%
from pathlib import Path

import numpy as np

from lib.core.audio import AudioLoadError, load_audio, report_audio_failures
from lib.core.features import log_mel
from lib.core.vector_cache import vector_cache_key, vector_cache_update
from lib.mae.mae_registry import MAE_TRANSFORMS, MaeTransformBase, register_mae_transform


def mae_fit_frames(image: np.ndarray, frames: int, crop: str = "loudest", pad_value: float = 0.0) -> np.ndarray:
    """Pad (with ``pad_value``) or crop ``[F, T]`` to ``frames`` columns.

    ``crop``: ``"loudest"`` keeps the window with the most energy, ``"start"`` or ``"center"``.
    """
    length = image.shape[-1]
    if length < frames:
        return np.pad(image, ((0, 0), (0, frames - length)), constant_values=pad_value)
    if length == frames:
        return image
    if crop == "start":
        start = 0
    elif crop == "center":
        start = (length - frames) // 2
    elif crop == "loudest":
        energy = np.cumsum(np.concatenate([[0.0], image.mean(axis=0)]))
        start = int(np.argmax(energy[frames:] - energy[:-frames]))
    else:
        raise ValueError(f"crop must be 'loudest', 'start' or 'center', not {crop!r}")
    return image[:, start : start + frames]


@register_mae_transform("log_mel")
class MaeLogMelTransform(MaeTransformBase):
    """Waveform -> normalised log-mel ``[1, n_mels, frames]`` (librosa mel, dB re. clip peak)."""

    input_kind = "audio"

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 80,
        frames: int = 200,
        n_fft: int = 400,
        hop_length: int = 160,
        fmin: float = 0.0,
        fmax: float | None = None,
        top_db: float = 80.0,
        crop: str = "loudest",
    ):
        self.sample_rate, self.n_mels, self.frames = int(sample_rate), int(n_mels), int(frames)
        self.n_fft, self.hop_length, self.fmin, self.fmax = int(n_fft), int(hop_length), float(fmin), fmax
        self.top_db, self.crop = float(top_db), crop
        mae_fit_frames(np.zeros((1, 2)), 1, crop)  # validates ``crop``

    @property
    def output_shape(self) -> tuple:
        return (1, self.n_mels, self.frames)

    @property
    def config(self) -> dict:
        return {
            "name": "log_mel",
            "sample_rate": self.sample_rate,
            "n_mels": self.n_mels,
            "frames": self.frames,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "fmin": self.fmin,
            "fmax": self.fmax,
            "top_db": self.top_db,
            "crop": self.crop,
        }

    def normalise(self, db: np.ndarray) -> np.ndarray:
        """dB in ``[-top_db, 0]`` -> about ``[-2, 2]``."""
        return (db + self.top_db / 2) / (self.top_db / 4)

    def __call__(self, signal: np.ndarray, sample_rate: int) -> np.ndarray:
        y = np.asarray(signal, dtype=np.float32).reshape(-1)
        if y.size == 0:
            raise ValueError("log_mel got an empty waveform")
        if int(sample_rate) != self.sample_rate:
            import librosa

            y = librosa.resample(y, orig_sr=int(sample_rate), target_sr=self.sample_rate, res_type="soxr_hq")
        if y.size < self.n_fft:
            y = np.pad(y, (0, self.n_fft - y.size))
        if not np.any(y):
            db = np.full((self.n_mels, 1), -self.top_db, dtype=np.float32)
        else:
            db = log_mel(
                y,
                self.sample_rate,
                n_mels=self.n_mels,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                fmin=self.fmin,
                fmax=self.fmax,
                top_db=self.top_db,
            )
        image = mae_fit_frames(self.normalise(db), self.frames, self.crop, pad_value=self.normalise(-self.top_db))
        return image[None].astype(np.float32)


# %% [markdown]
# ## Radio IQ samples
#
# Complex baseband samples are the raw signal of software-defined radio. The spectrogram is
# the short-time Fourier transform of the complex signal (both sides of the spectrum,
# zero frequency in the middle) in dB; the constellation is a 2-D histogram of the
# (amplitude-normalised) I and Q values, the picture an RF engineer reads modulation from.
# `mae_synthetic_iq` makes labelled test signals (BPSK, QPSK, 8-PSK, 16-QAM with noise).


# %%
def _mae_check_iq(signal) -> np.ndarray:
    iq = np.asarray(signal)
    if not np.iscomplexobj(iq):
        if iq.ndim == 2 and iq.shape[-1] == 2:  # [samples, (I, Q)]
            iq = iq[:, 0] + 1j * iq[:, 1]
        else:
            raise ValueError(
                f"RF transforms take complex IQ samples (or [samples, 2] I/Q pairs), got a real array "
                f"of shape {iq.shape}"
            )
    iq = iq.reshape(-1).astype(np.complex64)
    if iq.size == 0 or not np.all(np.isfinite(iq)):
        raise ValueError("IQ samples are empty or contain NaN/inf")
    return iq


@register_mae_transform("rf_spectrogram")
class MaeRfSpectrogramTransform(MaeTransformBase):
    """Complex IQ -> two-sided spectrogram ``[1, n_fft, frames]`` in dB re. peak, mapped to about [-2, 2]."""

    input_kind = "iq"

    def __init__(self, n_fft: int = 64, hop_length: int = 32, frames: int = 128, top_db: float = 80.0):
        self.n_fft, self.hop_length, self.frames, self.top_db = int(n_fft), int(hop_length), int(frames), float(top_db)

    @property
    def output_shape(self) -> tuple:
        return (1, self.n_fft, self.frames)

    @property
    def config(self) -> dict:
        return {
            "name": "rf_spectrogram",
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "frames": self.frames,
            "top_db": self.top_db,
        }

    def __call__(self, signal, sample_rate: int = 1) -> np.ndarray:
        iq = _mae_check_iq(signal)
        if iq.size < self.n_fft:
            iq = np.pad(iq, (0, self.n_fft - iq.size))
        n_frames = 1 + (iq.size - self.n_fft) // self.hop_length
        index = np.arange(self.n_fft)[None, :] + self.hop_length * np.arange(n_frames)[:, None]
        spectrum = np.fft.fftshift(np.fft.fft(iq[index] * np.hanning(self.n_fft), axis=-1), axes=-1)
        power = np.abs(spectrum.T) ** 2
        db = 10 * np.log10(np.maximum(power, 1e-12) / max(power.max(), 1e-12))
        db = np.maximum(db, -self.top_db)
        image = (db + self.top_db / 2) / (self.top_db / 4)
        return mae_fit_frames(image, self.frames, "start", pad_value=-2.0)[None].astype(np.float32)


@register_mae_transform("rf_constellation")
class MaeRfConstellationTransform(MaeTransformBase):
    """Complex IQ -> constellation image ``[1, bins, bins]``: log-density of (I, Q) after RMS normalisation."""

    input_kind = "iq"

    def __init__(self, bins: int = 64, extent: float = 2.0):
        self.bins, self.extent = int(bins), float(extent)

    @property
    def output_shape(self) -> tuple:
        return (1, self.bins, self.bins)

    @property
    def config(self) -> dict:
        return {"name": "rf_constellation", "bins": self.bins, "extent": self.extent}

    def __call__(self, signal, sample_rate: int = 1) -> np.ndarray:
        iq = _mae_check_iq(signal)
        iq = iq / max(float(np.sqrt(np.mean(np.abs(iq) ** 2))), 1e-12)
        edges = np.linspace(-self.extent, self.extent, self.bins + 1)
        hist, _, _ = np.histogram2d(iq.imag, iq.real, bins=[edges, edges])
        density = np.log1p(hist) / max(np.log1p(hist).max(), 1e-12)
        return (density[::-1] * 4 - 2)[None].astype(np.float32)  # Q up, I right; about [-2, 2]


MAE_IQ_MODULATIONS = ("bpsk", "qpsk", "8psk", "16qam")


def mae_synthetic_iq(
    modulation: str, n_samples: int = 4096, snr_db: float = 20.0, samples_per_symbol: int = 4, seed: int = 0
) -> np.ndarray:
    """A noisy baseband signal of random symbols (rectangular pulses) with a small frequency offset."""
    rng = np.random.default_rng(seed)
    n_symbols = int(np.ceil(n_samples / samples_per_symbol))
    if modulation in ("bpsk", "qpsk", "8psk"):
        order = {"bpsk": 2, "qpsk": 4, "8psk": 8}[modulation]
        symbols = np.exp(1j * (2 * np.pi * rng.integers(order, size=n_symbols) / order + np.pi / order))
    elif modulation == "16qam":
        levels = np.array([-3, -1, 1, 3])
        symbols = (rng.choice(levels, n_symbols) + 1j * rng.choice(levels, n_symbols)) / np.sqrt(10)
    else:
        raise ValueError(f"unknown modulation {modulation!r}; choose one of {MAE_IQ_MODULATIONS}")
    baseband = np.repeat(symbols, samples_per_symbol)[:n_samples]
    baseband = baseband * np.exp(2j * np.pi * rng.uniform(-0.002, 0.002) * np.arange(n_samples))
    noise = (rng.normal(size=n_samples) + 1j * rng.normal(size=n_samples)) / np.sqrt(2) * 10 ** (-snr_db / 20)
    return (baseband + noise).astype(np.complex64)


# %% [markdown]
# ## Cached transforms of audio files


# %%
def mae_transform_cache_folder(cache_dir, transform: MaeTransformBase) -> Path:
    """The cache folder of ``transform``'s config under ``cache_dir`` (an absolute path)."""
    config = dict(transform.config, output_shape=list(transform.output_shape))
    name = str(config.get("name", type(transform).__name__))
    return Path(cache_dir).expanduser().absolute() / f"{name}-{vector_cache_key(config)}"


def mae_transform_cached(
    paths,
    transform: MaeTransformBase,
    cache_dir=None,
    progress: bool = True,
    desc: str = "log-mel",
    checkpoint_every: int = 500,
):
    """Transform many audio files; return ``(images [N, 1, F, T], ok_paths, failures)``.

    With ``cache_dir`` the results are kept in a vector cache (one folder per transform config,
    rows keyed by each file's content, saved every ``checkpoint_every`` files) and reused; clips
    cached earlier but not asked for now (another split) are kept. An unreadable cache is named
    and rebuilt. Files that fail to load are skipped and listed in ``failures`` (path, error).
    """
    from tqdm.auto import tqdm

    if transform.input_kind != "audio":
        raise ValueError(f"{type(transform).__name__} transforms {transform.input_kind} signals, not audio files")
    paths = [str(p) for p in paths]
    shape = tuple(transform.output_shape)

    def compute(todo):
        images, ok_paths, failures = [], [], []
        for path in tqdm(todo, desc=desc, disable=not progress or not todo, leave=False):
            try:
                rate = transform.sample_rate
                image = np.asarray(transform(load_audio(path, sr=rate), rate), dtype=np.float32)
            except (AudioLoadError, ValueError) as error:
                failures.append({"path": path, "error": getattr(error, "problem", str(error))})
                continue
            if image.shape != shape or not np.all(np.isfinite(image)):
                failures.append({"path": path, "error": f"transform gave shape {image.shape} or non-finite values"})
                continue
            images.append(image.reshape(-1))
            ok_paths.append(path)
        flat = np.stack(images) if images else np.zeros((0, int(np.prod(shape))), np.float32)
        return {"images": flat}, ok_paths, failures

    if cache_dir is None:
        arrays, ok_paths, failures = compute(list(dict.fromkeys(paths)))
        hits = 0
    else:
        folder = mae_transform_cache_folder(cache_dir, transform)
        config = dict(transform.config, output_shape=list(shape))
        arrays, ok_paths, report = vector_cache_update(
            list(dict.fromkeys(paths)),
            compute,
            folder,
            config,
            verbose=False,
            keep_unrequested=True,
            checkpoint_every=checkpoint_every,
            label=desc,
            dataset_name="mae-inputs",
        )
        failures, hits = report["failed"], report["n_cached"]
        if report["rebuilt"]:
            print(f"{desc}: cache rebuilt ({report['rebuilt']})")
    report_audio_failures(failures, noun="clip")
    flat = arrays.get("images")
    stacked = flat.reshape(-1, *shape).astype(np.float32) if flat is not None else np.zeros((0, *shape), np.float32)
    if cache_dir is not None:
        print(f"{desc}: {len(ok_paths)} clips ({hits} from cache {folder})")
    return stacked, ok_paths, failures


def build_mae_transform(name: str = "log_mel", **kwargs) -> MaeTransformBase:
    """Build a registered transform by name (``MAE_TRANSFORMS.names()`` lists them)."""
    return MAE_TRANSFORMS.build(name, **kwargs)
