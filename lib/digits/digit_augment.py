# %% [markdown]
# # Speaker-robust augmentation for spoken digits
#
# Six FSDD speakers are far too few to learn what "any voice, any microphone" sounds like,
# so every trained digit model sees altered copies of its training clips:
#
# - **speed perturbation** (0.85-1.15x by resampling): changes tempo and, like vocal-tract
#   length perturbation (VTLP), shifts every formant by the same factor, which is what
#   separates a child's, a woman's and a man's voice most;
# - **additive noise** at a random SNR, white, pink or brown;
# - **synthetic room impulse responses**: exponentially decaying noise with a random
#   reverberation time (RT60), an early direct path, convolved and level-matched;
# - **gain** and **silence/noise padding** before and after the word, so a model does not
#   rely on the clip being cut tightly around the word (recordings from elsewhere are not);
# - **microphone colouring**: a random high-pass (80-300 Hz), low-pass (2.4-3.8 kHz at 8 kHz)
#   and one peaking band (+-6 dB), the response differences between microphones and sound cards;
# - **real background noise** when clips of it are given (`background`: ESC-50 environmental
#   sounds, LibriSpeech speech as babble): a random stretch mixed in at a random SNR instead
#   of the synthetic noise;
# - **onset crops**: a copy keeps only the first 0.2-0.45 s of the word, as a voice-activity
#   detector or a recorder cuts a word short (FSDD has such clips: "th-" of a three, "fo-" of a four).
#
# `augment_digit_wave` draws one altered copy; `digit_augmented_copies` makes `copies`
# copies of every clip, reproducibly (the random stream of copy *k* of clip *i* depends only
# on the seed, *i* and *k*, so caches keyed on it stay valid when the clip set grows).
# SpecAugment (time/frequency masks) and per-utterance CMVN act on features and live with
# the models that use them.

# %%
from dataclasses import asdict, dataclass

import numpy as np

DIGIT_NOISE_COLOURS = ("white", "pink", "brown")


@dataclass
class DigitAugmentConfig:
    """How altered copies of a clip are drawn (probabilities, ranges)."""

    speed_range: tuple = (0.85, 1.15)  # resampling factor (tempo and formants together, VTLP-like)
    speed_prob: float = 0.8
    noise_snr_db: tuple = (5.0, 30.0)
    noise_prob: float = 0.7
    rir_prob: float = 0.4
    rt60_range: tuple = (0.15, 0.7)  # seconds
    gain_db: float = 10.0  # uniform in +-gain_db
    pad_seconds: tuple = (0.0, 0.35)  # silence (with the noise, if any) added before and after
    eq_prob: float = 0.5  # chance of a random microphone colouring (high-pass, low-pass, one peaking band)
    background_prob: float = 0.5  # with background clips given: chance the noise is real background, not synthetic
    crop_prob: float = 0.0  # chance a copy keeps only the start of the word (onset crop); 0: off
    crop_seconds: tuple = (0.2, 0.45)  # how much of the word an onset crop keeps, from its onset

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "DigitAugmentConfig":
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def digit_speed_perturb(wave: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """Play ``wave`` ``factor`` times faster (shorter, higher formants and pitch), same sample rate."""
    import librosa

    if abs(factor - 1.0) < 1e-3:
        return np.asarray(wave, dtype=np.float32)
    return librosa.resample(
        np.asarray(wave, dtype=np.float32), orig_sr=sample_rate * factor, target_sr=sample_rate, res_type="soxr_mq"
    ).astype(np.float32)


def digit_coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of ``n`` samples: white, pink (1/f power) or brown (1/f^2)."""
    if colour not in DIGIT_NOISE_COLOURS:
        raise ValueError(f"noise colour must be one of {DIGIT_NOISE_COLOURS}, not {colour!r}")
    white = rng.standard_normal(max(2, n))
    if colour == "white":
        noise = white
    else:
        spectrum = np.fft.rfft(white)
        f = np.arange(len(spectrum), dtype=np.float64)
        f[0] = 1.0
        spectrum /= np.sqrt(f) if colour == "pink" else f
        noise = np.fft.irfft(spectrum, n=max(2, n))
    noise = noise[:n]
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def digit_synthetic_rir(sample_rate: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response: direct path + exponentially decaying noise tail (-60 dB at ``rt60``)."""
    n = max(8, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)
    delay = int(rng.uniform(0.002, 0.01) * sample_rate)  # first reflections after the direct sound
    rir = np.zeros(n + delay)
    rir[delay:] = tail * rng.uniform(0.2, 0.6)
    rir[0] = 1.0
    return (rir / np.sqrt(np.sum(rir**2))).astype(np.float32)


def digit_microphone_colouring(wave: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """``wave`` through a random microphone-like response: high-pass, low-pass and one peaking band."""
    from scipy.signal import butter, sosfilt

    y = np.asarray(wave, dtype=np.float64)
    nyquist = sample_rate / 2
    sos = [butter(2, float(rng.uniform(80, 300)) / nyquist, "highpass", output="sos")]
    low = float(rng.uniform(0.6, 0.95)) * min(nyquist, 4000.0)
    if low < 0.98 * nyquist:
        sos.append(butter(2, low / nyquist, "lowpass", output="sos"))
    for section in sos:
        y = sosfilt(section, y)
    # one peaking band (RBJ biquad) at 300-3000 Hz, +-6 dB
    f0 = float(rng.uniform(300, min(3000, 0.8 * nyquist)))
    gain = 10 ** (float(rng.uniform(-6, 6)) / 40)
    w0 = 2 * np.pi * f0 / sample_rate
    alpha = np.sin(w0) / (2 * float(rng.uniform(0.7, 2.0)))
    b = np.array([1 + alpha * gain, -2 * np.cos(w0), 1 - alpha * gain])
    a = np.array([1 + alpha / gain, -2 * np.cos(w0), 1 - alpha / gain])
    y = sosfilt(np.concatenate([b / a[0], a / a[0]])[None, :], y)
    return y.astype(np.float32)


def digit_onset_crop(wave: np.ndarray, sample_rate: int, seconds: float, top_db: float = 35.0) -> np.ndarray:
    """The first ``seconds`` of the word in ``wave`` (from its onset, found as in trimming), with a 10 ms fade-out.

    A word shorter than ``seconds`` is returned whole (trimmed of silence).
    """
    import librosa

    y = np.asarray(wave, dtype=np.float32)
    if len(y) < 256:
        return y.copy()
    _, (start, end) = librosa.effects.trim(y, top_db=top_db, frame_length=256, hop_length=64)
    y = y[start : min(end, start + max(1, int(seconds * sample_rate)))].copy()
    fade = min(int(0.01 * sample_rate), len(y) // 4)
    if fade:
        y[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
    return y


def digit_background_noise(n: int, background, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS stretch of ``n`` samples from a random clip of ``background`` (looped when shorter)."""
    clip = np.asarray(background[int(rng.integers(len(background)))], dtype=np.float32)
    if len(clip) < 2:
        return digit_coloured_noise(n, "pink", rng)
    if len(clip) < n:
        clip = np.tile(clip, n // len(clip) + 1)
    start = int(rng.integers(0, len(clip) - n + 1))
    piece = clip[start : start + n]
    rms = float(np.sqrt(np.mean(piece**2)))
    return piece / rms if rms > 1e-6 else digit_coloured_noise(n, "pink", rng)


# %% [markdown]
# ## One augmented copy, and copies of a whole set
#
# The perturbations above chained with the probabilities of `DigitAugmentConfig`, seeded per clip
# and copy so that a rerun makes the same copies.


# %%
def augment_digit_wave(
    wave: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    config: DigitAugmentConfig | None = None,
    background=None,
) -> np.ndarray:
    """One randomly altered copy of ``wave`` (speed, room, colouring, padding, noise, gain, in that order).

    ``background``: optional clips of real noise at ``sample_rate`` (a stretch of one is the
    noise in ``config.background_prob`` of the noisy copies).
    """
    from scipy.signal import fftconvolve

    config = config or DigitAugmentConfig()
    y = np.asarray(wave, dtype=np.float32)
    level = float(np.sqrt(np.mean(y**2)) + 1e-9)
    if config.speed_range and rng.random() < config.speed_prob:
        y = digit_speed_perturb(y, sample_rate, float(rng.uniform(*config.speed_range)))
    if config.rir_prob > 0 and rng.random() < config.rir_prob:
        rir = digit_synthetic_rir(sample_rate, float(rng.uniform(*config.rt60_range)), rng)
        y = fftconvolve(y, rir)[: len(y) + len(rir) // 4].astype(np.float32)
        y *= level / (np.sqrt(np.mean(y**2)) + 1e-9)
    if config.eq_prob > 0 and rng.random() < config.eq_prob:
        y = digit_microphone_colouring(y, sample_rate, rng)
        y *= level / (np.sqrt(np.mean(y**2)) + 1e-9)
    if config.pad_seconds and config.pad_seconds[1] > 0:
        before, after = (int(rng.uniform(*config.pad_seconds) * sample_rate) for _ in range(2))
        y = np.concatenate([np.zeros(before, np.float32), y, np.zeros(after, np.float32)])
    if config.noise_snr_db and rng.random() < config.noise_prob:
        snr = float(rng.uniform(*config.noise_snr_db))
        colour = DIGIT_NOISE_COLOURS[int(rng.integers(len(DIGIT_NOISE_COLOURS)))]
        real = background is not None and len(background) and rng.random() < config.background_prob
        noise = digit_background_noise(len(y), background, rng) if real else digit_coloured_noise(len(y), colour, rng)
        y = y + noise * level / (10 ** (snr / 20))
    if config.gain_db:
        y = y * 10 ** (float(rng.uniform(-config.gain_db, config.gain_db)) / 20)
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if peak > 0.99:  # no clipping: scale down instead
        y = y * (0.99 / peak)
    return y.astype(np.float32)


def digit_augmented_copies(
    waves,
    sample_rate: int,
    copies: int = 2,
    seed: int = 0,
    config: DigitAugmentConfig | None = None,
    keys=None,
    background=None,
    uncropped=None,
) -> list:
    """``copies`` altered versions of every clip: a list (one per clip) of lists (one per copy).

    Copy *k* of a clip is drawn from a generator seeded by ``(seed, key, k)``, where ``key``
    is the clip's entry in ``keys`` (e.g. its file path) or its position: the same clip always
    gets the same copies, whatever else is in the batch. ``background``: optional real noise
    clips at ``sample_rate`` (see `augment_digit_wave`). With ``config.crop_prob`` a copy is an
    onset crop (`digit_onset_crop`) of the clip, then altered as usual; whether and how much to
    crop is drawn from its own generator ``(seed, key, k, 7)``, so the copies that are not
    cropped are exactly those made without cropping (cached features stay valid).
    ``uncropped``: those copies, already made (the same arguments with ``crop_prob`` 0): they
    are reused where a copy is not cropped, and only the crops are drawn.
    """
    import zlib

    from tqdm.auto import tqdm

    if copies < 0:
        raise ValueError(f"copies must be >= 0, not {copies}")
    waves = list(waves)
    keys = list(keys) if keys is not None else list(range(len(waves)))
    config = config or DigitAugmentConfig()

    if uncropped is not None and len(uncropped) != len(waves):
        raise ValueError(f"uncropped has {len(uncropped)} entries but there are {len(waves)} clips")

    def copy(i: int, wave, base: int, k: int):
        crop_rng = np.random.default_rng([seed, base, k, 7]) if config.crop_prob > 0 else None
        if crop_rng is not None and crop_rng.random() < config.crop_prob:
            wave = digit_onset_crop(wave, sample_rate, float(crop_rng.uniform(*config.crop_seconds)))
        elif uncropped is not None:
            return uncropped[i][k]
        return augment_digit_wave(wave, sample_rate, np.random.default_rng([seed, base, k]), config, background)

    out = []
    items = list(enumerate(zip(keys, waves)))
    for i, (key, wave) in tqdm(items, desc="augmented copies", disable=len(waves) < 200, leave=False):
        base = zlib.crc32(str(key).encode())
        out.append([copy(i, wave, base, k) for k in range(copies)])
    return out
