# %% [markdown]
# # Spectrogram media: PNG previews and playable clips for image-based browsers
#
# FiftyOne (and most data browsers) show images and videos, not audio. Each clip gets:
#
# - a **PNG log-mel preview**. All previews share one colour scale (absolute dB, the range set
#   by percentiles over the whole collection, or given), so a quiet clip looks quiet and two
#   thumbnails can be compared by eye. Time runs left to right at a fixed number of pixels per
#   second, low frequencies at the bottom.
# - a short **MP4** whose picture is that spectrogram with a moving play-head and whose
#   soundtrack is the clip itself (AAC), made with the ffmpeg binary that `imageio-ffmpeg`
#   ships (no system ffmpeg needed). Opening it in the FiftyOne App, or any browser, plays the clip.
#
# Files are named by a hash of the source path and its size/mtime, so re-runs skip what
# exists and a changed clip gets a fresh preview.
#
# The picture a clip gets is the notebook's `transform`, looked up in `EXPLORER_TRANSFORMS`:
# `log_mel` here; `iq_spectrogram` and `iq_constellation` (radio IQ recordings) are registered
# by the AudioMAE/RF variant of the notebook. Each renderer says in words what it draws
# (`describe()`), and the notebook prints that.

# %%
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np

from lib.core.atomic_io import atomic_output, atomic_write_json
from lib.core.audio import AudioLoadError, audio_info, load_audio
from lib.explorer.explorer_batches import explorer_map_chunks


def _spec_media_stem(path, extra: str = "") -> str:
    path = Path(path)
    try:
        stat = path.stat()
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        stamp = "missing"
    digest = hashlib.sha1(f"{path.resolve()}|{stamp}|{extra}".encode()).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', path.stem)[:60]}-{digest}"


def spec_n_fft(sr: int) -> int:
    """FFT size of the previews: the power of two covering 25 ms."""
    return int(2 ** np.ceil(np.log2(max(16, 0.025 * sr))))


def spec_log_mel_db(
    y: np.ndarray, sr: int, n_mels: int = 64, hop_length: int | None = None, fmax: float | None = None
) -> np.ndarray:
    """Log-mel in absolute dB (``ref=1``, no per-clip normalisation), ``[n_mels, frames]``."""
    hop_length = hop_length or max(1, sr // 100)
    n_fft = spec_n_fft(sr)
    import librosa

    mel = librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, power=2.0, fmax=fmax
    )
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None).astype(np.float32)


def spec_preview_scale(
    paths, sr: int = 16000, n_mels: int = 64, percentiles=(1.0, 99.5), max_clips: int = 100, seed: int = 0
) -> dict:
    """The shared colour scale: dB percentiles over (a random sample of at most ``max_clips`` of) the clips.

    ``fmax``: the lowest Nyquist frequency among the sampled files' own sample rates (8 kHz
    recordings upsampled to 16 kHz have nothing above 4 kHz: no empty band).
    """
    paths = [str(p) for p in paths]
    if len(paths) > max_clips:
        picked = np.random.default_rng(seed).choice(len(paths), max_clips, replace=False)
        paths = [paths[i] for i in sorted(picked)]
    rates, values = [], []
    for path in paths:
        try:
            rates.append(audio_info(path)["sample_rate"])
        except Exception:  # noqa: BLE001 - unreadable files are reported where they are used
            pass
    fmax = min([sr] + rates) / 2.0
    failures = []
    for path in paths:
        try:
            mel = spec_log_mel_db(load_audio(path, sr=sr), sr, n_mels=n_mels, fmax=fmax)
        except AudioLoadError as error:  # skipped here; the embedding pass reports every unreadable clip
            failures.append(f"{path}: {error}")
            continue
        values.append(mel.ravel()[:: max(1, mel.size // 4000)])
    if not values:
        raise ValueError(
            f"spectrogram previews: none of the {len(paths)} sampled clips could be read, e.g.\n  "
            + "\n  ".join(failures[:3])
            + "\nCheck that the data folder holds audio files (`ffprobe FILE` names the problem), or point "
            "data_path at another copy."
        )
    vmin, vmax = (float(v) for v in np.percentile(np.concatenate(values), percentiles))
    return {
        "vmin_db": round(vmin, 3),
        "vmax_db": round(max(vmax, vmin + 1.0), 3),
        "n_mels": n_mels,
        "sr": sr,
        "fmax": float(fmax),
        "percentiles": [float(q) for q in percentiles],
        "n_sampled": len(values),
    }


# %% [markdown]
# ## The preview renderer
#
# One PNG per clip on the shared colour scale, named by the file's path, size and time and the
# scale, so an unchanged clip is never drawn twice; picklable, so worker processes can run it.


# %%
class SpecPreviewRenderer:
    """Renders one clip's PNG log-mel preview with a fixed colour ``scale`` (picklable: runs in workers).

    ``render(path, y, sr) -> png path`` reuses an existing PNG made with the same scale.
    """

    def __init__(
        self,
        out_dir,
        scale: dict,
        cmap: str = "magma",
        height: int = 128,
        px_per_second: int = 200,
        min_width: int = 64,
    ):
        self.out_dir = Path(out_dir)
        self.scale = dict(scale, cmap=cmap, height=height, px_per_second=px_per_second)
        self.cmap, self.height, self.px_per_second, self.min_width = cmap, height, px_per_second, min_width
        self._key = json.dumps(self.scale, sort_keys=True)

    signal = "audio"

    def png_path(self, path) -> Path:
        return self.out_dir / f"{_spec_media_stem(path, self._key)}.png"

    def describe(self) -> str:
        s = self.scale
        return (
            f"**log-mel previews**: power mel spectrogram, {s['n_mels']} mel bands up to {s['fmax']:g} Hz, "
            f"{1000 * spec_n_fft(s['sr']) / s['sr']:g} ms windows, 10 ms hop, at {s['sr']} Hz, in absolute dB "
            f"(no per-clip normalisation); one colour scale for every thumbnail, {s['vmin_db']:.1f} to "
            f"{s['vmax_db']:.1f} dB (percentiles {s['percentiles'][0]:g} and {s['percentiles'][1]:g} of the dB "
            f"values of {s['n_sampled']} sampled clips); "
            f"{self.px_per_second} pixels per second, low frequencies at the bottom."
        )

    def render(self, path, y=None, sr=None) -> str:
        import matplotlib
        from PIL import Image

        png = self.png_path(path)
        if png.exists():
            return str(png)
        scale = self.scale
        if y is None or sr != scale["sr"]:
            y = load_audio(path, sr=scale["sr"]) if y is None else _spec_resample(y, sr, scale["sr"])
        mel = spec_log_mel_db(y, scale["sr"], n_mels=scale["n_mels"], fmax=scale["fmax"])
        vmin, vmax = scale["vmin_db"], scale["vmax_db"]
        norm = np.clip((mel - vmin) / (vmax - vmin), 0.0, 1.0)[::-1]  # low frequencies at the bottom
        rgb = (matplotlib.colormaps[self.cmap](norm)[..., :3] * 255).astype(np.uint8)
        seconds = mel.shape[1] / 100.0
        width = max(self.min_width, int(round(seconds * self.px_per_second)))
        image = Image.fromarray(rgb).resize((width, self.height), Image.Resampling.BILINEAR)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_output(png) as tmp:
            image.save(tmp, format="PNG", compress_level=1)  # 3-5x faster than the default, files ~20 % larger
        return str(png)


def spec_image_size(path) -> tuple:
    """``(width, height)`` of an image file, from its header."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def _spec_resample(y, sr_from, sr_to):
    import librosa

    return librosa.resample(np.asarray(y, dtype=np.float32), orig_sr=int(sr_from), target_sr=int(sr_to))


def spectrogram_colorbar_figure(scale: dict):
    """A small matplotlib figure showing the shared dB colour scale of the previews."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 0.6))
    gradient = np.linspace(scale["vmin_db"], scale["vmax_db"], 256)[None, :]
    ax.imshow(gradient, aspect="auto", cmap=scale["cmap"], extent=(scale["vmin_db"], scale["vmax_db"], 0, 1))
    ax.set_yticks([])
    ax.set_xlabel("log-mel power (dB, shared by all previews)")
    return fig


# %% [markdown]
# ## The transform registry


# %%
EXPLORER_TRANSFORMS = {}
# transforms whose code lives in a notebook variant (the default notebook does not carry it)
EXPLORER_VARIANT_TRANSFORMS = {"iq_spectrogram": "fiftyone_explorer_mae", "iq_constellation": "fiftyone_explorer_mae"}


def register_explorer_transform(name: str):
    """Decorator: ``@register_explorer_transform("name")`` adds ``factory(out_dir, paths, **options) -> renderer``."""

    def decorate(factory):
        EXPLORER_TRANSFORMS[name] = factory
        return factory

    return decorate


@register_explorer_transform("log_mel")
def spec_log_mel_renderer(out_dir, paths, seed: int = 0, sample_rate: int = 16000, **_options) -> SpecPreviewRenderer:
    """Log-mel previews with one colour scale estimated from a sample of ``paths``.

    The scale is kept in ``out_dir/scale-<key>.json`` (key: the files, their sizes and times, the
    settings), so a rerun on the same clips does not decode the sample again.
    """
    paths = [str(p) for p in paths]
    digest = hashlib.sha256(json.dumps([sample_rate, seed], sort_keys=True).encode())
    for path in paths:
        digest.update(f"{path}|{_spec_media_stem(path)}".encode())
    cached = Path(out_dir) / f"scale-{digest.hexdigest()[:16]}.json"
    try:
        scale = json.loads(cached.read_text())
        if not {"vmin_db", "vmax_db", "n_mels", "sr", "fmax", "percentiles", "n_sampled"} <= set(scale):
            raise ValueError("incomplete")
    except (OSError, ValueError):
        scale = spec_preview_scale(paths, sr=sample_rate, seed=seed)
        atomic_write_json(cached, scale)
    return SpecPreviewRenderer(out_dir, scale)


def make_explorer_transform(name: str, out_dir, paths, **options):
    """Build the preview renderer of transform ``name`` (a clear error for unknown or variant-only names)."""
    import inspect

    if name not in EXPLORER_TRANSFORMS:
        if name in EXPLORER_VARIANT_TRANSFORMS:
            variant = EXPLORER_VARIANT_TRANSFORMS[name]
            raise ValueError(
                f"transform {name!r} needs the RF code, which this notebook does not carry: open "
                f"notebooks/{variant}.ipynb, or run `audiolens run fiftyone_explorer -p transform {name}` "
                "(it picks that notebook)"
            )
        raise ValueError(f"unknown transform {name!r}; available: {', '.join(sorted(EXPLORER_TRANSFORMS))}")
    factory = EXPLORER_TRANSFORMS[name]
    accepted = inspect.signature(factory).parameters
    return factory(out_dir, paths, **{k: v for k, v in options.items() if k in accepted})


def explorer_render_previews(paths, renderer, reader, workers=0, progress: bool = True):
    """Previews for ``paths`` (existing PNGs reused); return ``({path: png}, failures)``."""
    from tqdm.auto import tqdm

    paths = [str(p) for p in paths]
    done = {p: str(renderer.png_path(p)) for p in paths if renderer.png_path(p).exists()}
    todo = [p for p in paths if p not in done]
    failures = []
    with tqdm(total=len(todo), desc="previews", unit="clip", disable=not progress or not todo) as bar:
        for chunk in explorer_map_chunks(todo, reader, None, renderer, 32, workers):
            done.update(chunk["previews"])
            failures.extend(chunk["failures"] + chunk["preview_failures"])
            bar.update(len(chunk["previews"]) + len(chunk["failures"]) + len(chunk["preview_failures"]))
    return done, failures


# %% [markdown]
# ## Playable clips
#
# `ffmpeg` loops the PNG as a 10 fps picture, overlays a 2-pixel play-head that crosses the
# image over the clip's duration, and muxes the clip as AAC (resampled to 22.05 kHz, which every
# browser plays). Dimensions are rounded to even numbers for H.264.


# %%
def spec_ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by imageio-ffmpeg (clear error if it is missing)."""
    try:
        import imageio_ffmpeg
    except ImportError as error:
        raise RuntimeError("imageio-ffmpeg is needed to make playable clips: pip install imageio-ffmpeg") from error
    return imageio_ffmpeg.get_ffmpeg_exe()


def spectrogram_video(
    audio_path, png_path, mp4_path, fps: int = 10, audio_rate: int = 22050, playhead: bool = True, timeout: float = 60.0
) -> Path:
    """Make one MP4: ``png_path`` as the picture (with a play-head), ``audio_path`` as the soundtrack."""
    duration = max(0.05, audio_info(audio_path)["duration"])
    mp4_path = Path(mp4_path)
    even = "scale=trunc(iw/2)*2:trunc(ih/2)*2"
    if playhead:
        graph = (
            f"color=c=white@0.85:s=2x4096:r={fps}[bar];"
            f"[0:v][bar]overlay=x='(W-2)*t/{duration:.4f}':y=0:shortest=1,{even},format=yuv420p[v]"
        )
    else:
        graph = f"[0:v]{even},format=yuv420p[v]"
    command = [
        spec_ffmpeg_exe(),
        "-y",
        "-loglevel",
        "error",
        "-loop",
        "1",
        "-framerate",
        str(fps),
        "-i",
        str(png_path),
        "-i",
        str(audio_path),
        "-filter_complex",
        graph,
        "-map",
        "[v]",
        "-map",
        "1:a",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "stillimage",
        "-c:a",
        "aac",
        "-b:a",
        "96k",
        "-ar",
        str(audio_rate),
        "-ac",
        "1",
        "-t",
        f"{duration:.4f}",
        "-movflags",
        "+faststart",
    ]
    with atomic_output(mp4_path) as tmp:
        result = subprocess.run(command + [str(tmp)], capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0 or tmp.stat().st_size == 0:
            raise RuntimeError(f"{audio_path}: ffmpeg could not make {mp4_path.name}: {result.stderr.strip()[-400:]}")
    return mp4_path


def spectrogram_videos(audio_paths, png_paths, out_dir, progress: bool = True, workers="auto", **kwargs):
    """One MP4 per (clip, preview) pair, reusing existing ones; return ``(mp4_paths, failures)``.

    ``mp4_paths[i]`` is ``None`` when clip ``i`` failed (listed in ``failures`` with the reason).
    ``workers`` ffmpeg processes run at once (``"auto"``: one per core).
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = list(zip(audio_paths, png_paths))
    n_workers = (os.cpu_count() or 1) if workers == "auto" else max(1, int(workers or 1))

    def make(pair):
        audio_path, png_path = pair
        mp4 = out_dir / f"{Path(png_path).stem}.mp4"
        try:
            if not mp4.exists():
                spectrogram_video(audio_path, png_path, mp4, **kwargs)
            return str(mp4), None
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            return None, {"path": str(audio_path), "error": str(error)}

    mp4_paths, failures = [], []
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        results = pool.map(make, pairs)
        for mp4, failure in tqdm(
            results, total=len(pairs), desc="playable clips (mp4)", unit="clip", disable=not progress
        ):
            mp4_paths.append(mp4)
            if failure:
                failures.append(failure)
    return mp4_paths, failures


def spec_video_metadata(mp4_path, png_path, duration: float, fps: int = 10) -> dict:
    """What FiftyOne's ``VideoMetadata`` needs, from what made the MP4 (no ffprobe).

    Frame size: the preview's size rounded down to even numbers (as the encoder does); frames:
    ``round(duration * fps)`` (what ffmpeg writes for ``-t duration``) and the video stream's
    duration, ``frames / fps``; the tests check both against the file.
    """
    width, height = spec_image_size(png_path)
    frames = max(1, int(round(max(0.05, float(duration)) * fps)))
    return {
        "size_bytes": int(Path(mp4_path).stat().st_size),
        "mime_type": "video/mp4",
        "frame_width": width - width % 2,
        "frame_height": height - height % 2,
        "frame_rate": float(fps),
        "total_frame_count": frames,
        "duration": round(frames / fps, 4),
        "encoding_str": "avc1",
    }


def spec_media_streams(media_path) -> dict:
    """Duration and streams of a media file, parsed from ``ffmpeg -i`` (ffprobe is not shipped)."""
    result = subprocess.run(
        [spec_ffmpeg_exe(), "-hide_banner", "-i", str(media_path)], capture_output=True, text=True, timeout=30
    )
    text = result.stderr
    match = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    duration = None
    if match:
        duration = int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3])
    streams = re.findall(r"Stream #\d+:\d+[^:]*: (Video|Audio): (\w+)", text)
    return {
        "duration": duration,
        "video": [c for kind, c in streams if kind == "Video"],
        "audio": [c for kind, c in streams if kind == "Audio"],
    }
