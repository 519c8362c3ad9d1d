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
#   detector or a recorder cuts a word short (FSDD has such clips: "th-" of a three, "fo-" of a four);
# - **re-voicing** (`voice_prob`): FSDD's six speakers are all men. A copy's pitch is raised
#   1.3-2x and, separately, its formants 1.05-1.25x (`digit_voice_shift`), the ranges that
#   separate women's and children's voices from men's. Speed perturbation cannot do this: it
#   moves pitch and formants by the same factor, and a woman's F0 is about twice a man's while
#   her formants are only 15-20% higher.
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
    voice_prob: float = 0.0  # chance a copy (not an onset crop) is re-voiced (`digit_voice_shift`); 0: off
    voice_pitch: tuple = (1.3, 2.0)  # re-voicing: F0 factor (FSDD's men at 100-160 Hz -> 130-320 Hz)
    voice_formant: tuple = (1.05, 1.25)  # re-voicing: formant factor (women's formants ~15-20% above men's)

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


def _digit_log_envelope(magnitude: np.ndarray, lifter: int, width: int) -> np.ndarray:
    """Smooth log spectral envelope per frame: a max filter over the harmonics, then cepstral liftering."""
    from scipy.ndimage import maximum_filter1d

    log_mag = np.log(np.maximum(maximum_filter1d(magnitude, width, axis=0), 1e-7))
    n = 2 * (magnitude.shape[0] - 1)
    cepstrum = np.fft.irfft(log_mag, n=n, axis=0)
    cepstrum[lifter : n - lifter + 1] = 0.0
    return np.fft.rfft(cepstrum, n=n, axis=0).real


def digit_voice_shift(wave: np.ndarray, sample_rate: int, pitch_factor: float, formant_factor: float) -> np.ndarray:
    """``wave`` re-voiced: F0 times ``pitch_factor``, formants times ``formant_factor``, same duration and level.

    librosa's pitch shift (phase vocoder, then resampling) moves the whole spectrum, formants
    included, by ``pitch_factor``; each frame is then re-filtered from that shifted envelope to
    the original envelope stretched by ``formant_factor`` (envelopes: max filter over ~400 Hz,
    so the harmonics and not the gaps between them set it, then a 2 ms cepstral lifter).
    Gains are limited to +-24 dB.
    """
    import librosa

    y = np.asarray(wave, dtype=np.float32)
    if (abs(pitch_factor - 1) < 1e-3 and abs(formant_factor - 1) < 1e-3) or len(y) < 64:
        return y.copy()
    n_fft = int(2 ** np.ceil(np.log2(0.032 * sample_rate)))  # 32 ms: 256 at 8 kHz, 512 at 16 kHz
    hop = n_fft // 4
    shifted = librosa.effects.pitch_shift(
        y, sr=sample_rate, n_steps=12 * np.log2(pitch_factor), n_fft=n_fft, hop_length=hop, res_type="soxr_mq"
    )
    lifter = max(8, int(round(0.002 * sample_rate)))
    width = max(3, int(np.ceil(400.0 * n_fft / sample_rate)) | 1)
    source = _digit_log_envelope(np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop)), lifter, width)
    spectrum = librosa.stft(shifted, n_fft=n_fft, hop_length=hop)
    current = _digit_log_envelope(np.abs(spectrum), lifter, width)
    bins = np.arange(source.shape[0], dtype=np.float64)
    position = np.minimum(bins / formant_factor, bins[-1])  # the envelope stretched by formant_factor
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, len(bins) - 1)
    frac = (position - low)[:, None]
    target = source[low] * (1 - frac) + source[high] * frac
    gain = np.exp(np.clip(target - current, -np.log(16.0), np.log(16.0)))
    out = librosa.istft(spectrum * gain, hop_length=hop, n_fft=n_fft, length=len(y))
    level = float(np.sqrt(np.mean(y**2)))
    return (out * (level / (float(np.sqrt(np.mean(out**2))) + 1e-9))).astype(np.float32)


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
    plain=None,
) -> list:
    """``copies`` altered versions of every clip: a list (one per clip) of lists (one per copy).

    Copy *k* of a clip is drawn from a generator seeded by ``(seed, key, k)``, where ``key``
    is the clip's entry in ``keys`` (e.g. its file path) or its position: the same clip always
    gets the same copies, whatever else is in the batch. ``background``: optional real noise
    clips at ``sample_rate`` (see `augment_digit_wave`). With ``config.crop_prob`` a copy is an
    onset crop (`digit_onset_crop`) of the clip, then altered as usual; whether and how much to
    crop is drawn from its own generator ``(seed, key, k, 7)``. With ``config.voice_prob`` a copy
    that is not a crop is re-voiced (`digit_voice_shift`) first, drawn from ``(seed, key, k, 11)``.
    So the copies that are neither are exactly those made without either (cached features stay
    valid). ``plain``: those copies, already made (the same arguments with ``crop_prob`` and
    ``voice_prob`` 0): they are reused where a copy is neither, and only the others are drawn.
    """
    import zlib

    from tqdm.auto import tqdm

    if copies < 0:
        raise ValueError(f"copies must be >= 0, not {copies}")
    waves = list(waves)
    keys = list(keys) if keys is not None else list(range(len(waves)))
    config = config or DigitAugmentConfig()

    if plain is not None and len(plain) != len(waves):
        raise ValueError(f"plain has {len(plain)} entries but there are {len(waves)} clips")

    def copy(i: int, wave, key, k: int):
        kind, values = digit_copy_plan(key, k, seed, config)
        if kind == "crop":
            wave = digit_onset_crop(wave, sample_rate, values[0])
        elif kind == "voice":
            wave = digit_voice_shift(wave, sample_rate, *values)
        elif plain is not None:
            return plain[i][k]
        base = zlib.crc32(str(key).encode())
        return augment_digit_wave(wave, sample_rate, np.random.default_rng([seed, base, k]), config, background)

    items = list(enumerate(zip(keys, waves)))
    return [
        [copy(i, wave, key, k) for k in range(copies)]
        for i, (key, wave) in tqdm(items, desc="augmented copies", disable=len(waves) < 200, leave=False)
    ]


def digit_copy_plan(key, k: int, seed: int = 0, config: DigitAugmentConfig | None = None) -> tuple:
    """What copy ``k`` of clip ``key`` is: ``("crop", (seconds,))``, ``("voice", (pitch, formant))``, ``("plain", ())``.

    Drawn from generators of their own, ``(seed, key, k, 7)`` for crops and ``(seed, key, k, 11)``
    for re-voicing, so turning either on leaves the plain copies as they were.
    """
    import zlib

    config = config or DigitAugmentConfig()
    base = zlib.crc32(str(key).encode())
    if config.crop_prob > 0:
        crop_rng = np.random.default_rng([seed, base, k, 7])
        if crop_rng.random() < config.crop_prob:
            return "crop", (float(crop_rng.uniform(*config.crop_seconds)),)
    if config.voice_prob > 0:
        voice_rng = np.random.default_rng([seed, base, k, 11])
        if voice_rng.random() < config.voice_prob:
            return "voice", tuple(float(voice_rng.uniform(*r)) for r in (config.voice_pitch, config.voice_formant))
    return "plain", ()
