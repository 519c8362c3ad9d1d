"""Small helpers shared by the explorer tests (not notebook code: the notebook does these steps inline)."""

from __future__ import annotations

import subprocess

import numpy as np

from lib.explorer.audio_embedders import embed_signal_files
from lib.explorer.explorer_batches import ExplorerAudioReader
from lib.explorer.spectrogram_media import (
    SpecPreviewRenderer,
    explorer_render_previews,
    make_explorer_transform,
    spec_ffmpeg_exe,
)


def render_previews(paths, out_dir, db_range=None, workers=0):
    """``(png_paths, ok_paths, failures, scale)`` of log-mel previews with one colour scale."""
    paths = [str(p) for p in paths]
    renderer = make_explorer_transform("log_mel", out_dir, paths)
    if db_range is not None:
        renderer = SpecPreviewRenderer(out_dir, dict(renderer.scale, vmin_db=db_range[0], vmax_db=db_range[1]))
    done, failures = explorer_render_previews(paths, renderer, ExplorerAudioReader(16000), workers, progress=False)
    ok = [p for p in paths if p in done]
    return [done[p] for p in ok], ok, failures, renderer.scale


def embed_files(paths, embedder, batch_size: int = 32, workers=0):
    """``(embeddings, ok_paths, failures)``: read and encoder failures together."""
    embeddings, ok, failed, rejected = embed_signal_files(
        paths, embedder, batch_size=batch_size, progress=False, workers=workers
    )
    return embeddings, ok, failed + rejected


def decode_soundtrack(media_path, sr: int = 16000) -> np.ndarray:
    """The soundtrack of a media file as mono float32 at ``sr``, decoded by ffmpeg."""
    command = [spec_ffmpeg_exe(), "-v", "error", "-i", str(media_path), "-vn", "-ac", "1", "-ar", str(sr)]
    result = subprocess.run(command + ["-f", "f32le", "-"], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()[-300:]
    return np.frombuffer(result.stdout, dtype=np.float32)
