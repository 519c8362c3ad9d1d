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

# %%
import hashlib
import json
import re
import subprocess
from pathlib import Path

import numpy as np

from lib.core.atomic_io import atomic_output, atomic_write_json
from lib.core.audio import AudioLoadError, audio_info, load_audio


def _spec_media_stem(path, extra: str = "") -> str:
    path = Path(path)
    try:
        stat = path.stat()
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        stamp = "missing"
    digest = hashlib.sha1(f"{path.resolve()}|{stamp}|{extra}".encode()).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', path.stem)[:60]}-{digest}"


def spec_log_mel_db(
    y: np.ndarray, sr: int, n_mels: int = 64, hop_length: int | None = None, fmax: float | None = None
) -> np.ndarray:
    """Log-mel in absolute dB (``ref=1``, no per-clip normalisation), ``[n_mels, frames]``."""
    hop_length = hop_length or max(1, sr // 100)
    n_fft = int(2 ** np.ceil(np.log2(max(16, 0.025 * sr))))
    import librosa

    mel = librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, power=2.0, fmax=fmax
    )
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None).astype(np.float32)


def spectrogram_previews(
    paths,
    out_dir,
    sr: int = 16000,
    n_mels: int = 64,
    fmax: float | None = None,
    db_range=None,
    percentiles=(1.0, 99.5),
    cmap: str = "magma",
    height: int = 128,
    px_per_second: int = 200,
    min_width: int = 64,
    progress: bool = True,
):
    """Write one PNG log-mel preview per clip with a shared colour scale.

    ``db_range=(vmin, vmax)`` fixes the scale; ``None`` takes ``percentiles`` of all clips'
    dB values. ``fmax=None``: the lowest Nyquist frequency among the files' own sample rates
    (8 kHz recordings upsampled to 16 kHz have nothing above 4 kHz: no empty band).
    Returns ``(png_paths, ok_paths, failures, scale)``: ``png_paths[i]`` belongs to
    ``ok_paths[i]``; unreadable clips are listed in ``failures``; ``scale`` is the colour
    scale used. Existing PNGs made with the same scale are reused.
    """
    import matplotlib
    from PIL import Image
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [str(p) for p in paths]
    if fmax is None:
        rates = []
        for path in paths:
            try:
                rates.append(audio_info(path)["sample_rate"])
            except Exception:  # noqa: BLE001 - unreadable files are reported below
                pass
        fmax = min([sr] + rates) / 2.0
    mels, ok_paths, failures = [], [], []
    for path in tqdm(paths, desc="log-mel previews", unit="clip", disable=not progress):
        try:
            y = load_audio(path, sr=sr)
        except AudioLoadError as error:
            failures.append({"path": path, "error": error.problem})
            continue
        mels.append(spec_log_mel_db(y, sr, n_mels=n_mels, fmax=fmax))
        ok_paths.append(path)
    if not mels:
        raise ValueError("spectrogram_previews: no clip could be read")
    if db_range is None:
        sample = np.concatenate([m.ravel()[:: max(1, m.size // 4000)] for m in mels])
        vmin, vmax = (float(v) for v in np.percentile(sample, percentiles))
    else:
        vmin, vmax = float(db_range[0]), float(db_range[1])
    if not vmax > vmin:
        vmax = vmin + 1.0
    scale = {
        "vmin_db": round(vmin, 3),
        "vmax_db": round(vmax, 3),
        "cmap": cmap,
        "n_mels": n_mels,
        "sr": sr,
        "fmax": float(fmax),
        "height": height,
        "px_per_second": px_per_second,
    }
    colormap = matplotlib.colormaps[cmap]
    png_paths = []
    for path, mel in zip(ok_paths, mels):
        png = out_dir / f"{_spec_media_stem(path, json.dumps(scale, sort_keys=True))}.png"
        if not png.exists():
            norm = np.clip((mel - vmin) / (vmax - vmin), 0.0, 1.0)[::-1]  # low frequencies at the bottom
            rgb = (colormap(norm)[..., :3] * 255).astype(np.uint8)
            seconds = mel.shape[1] / 100.0
            width = max(min_width, int(round(seconds * px_per_second)))
            image = Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR)
            with atomic_output(png) as tmp:
                image.save(tmp)
        png_paths.append(str(png))
    atomic_write_json(out_dir / "colour_scale.json", scale)
    return png_paths, ok_paths, failures, scale


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


def spectrogram_videos(audio_paths, png_paths, out_dir, progress: bool = True, **kwargs):
    """One MP4 per (clip, preview) pair, reusing existing ones; return ``(mp4_paths, failures)``.

    ``mp4_paths[i]`` is ``None`` when clip ``i`` failed (listed in ``failures`` with the reason).
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mp4_paths, failures = [], []
    pairs = list(zip(audio_paths, png_paths))
    for audio_path, png_path in tqdm(pairs, desc="playable clips (mp4)", unit="clip", disable=not progress):
        mp4 = out_dir / f"{Path(png_path).stem}.mp4"
        try:
            if not mp4.exists():
                spectrogram_video(audio_path, png_path, mp4, **kwargs)
            mp4_paths.append(str(mp4))
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            failures.append({"path": str(audio_path), "error": str(error)})
            mp4_paths.append(None)
    return mp4_paths, failures


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


def spec_decode_audio(media_path, sr: int = 16000) -> np.ndarray:
    """Decode the soundtrack of a media file to mono float32 at ``sr`` with ffmpeg."""
    result = subprocess.run(
        [
            spec_ffmpeg_exe(),
            "-v",
            "error",
            "-i",
            str(media_path),
            "-vn",
            "-ac",
            "1",
            "-ar",
            str(sr),
            "-f",
            "f32le",
            "-",
        ],
        capture_output=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{media_path}: ffmpeg could not decode its audio: {result.stderr.decode()[-300:]}")
    return np.frombuffer(result.stdout, dtype=np.float32)
