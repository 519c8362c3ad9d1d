# %% [markdown]
# # Batched, multi-process reading of clips
#
# The slow per-clip work of the explorer (decoding, resampling, MFCCs or an encoder's input
# transform, rendering a spectrogram preview) needs no model, so it runs in worker processes,
# one batch of files at a time, while the main process runs the model on the batches already
# done. Each file is decoded once for everything it is needed for. At most `2 x workers`
# batches are in flight, so memory stays bounded whatever the collection's size: nothing holds
# the whole data set's audio.
#
# `workers`: the number of processes (`"auto"`: one per core, for 64 files or more; 0: all in
# this process). Workers are forked on Linux, so functions and classes defined in a notebook
# work in them.

# %%
import os
import pickle
import time
from concurrent.futures import ProcessPoolExecutor

from lib.core.audio import AudioLoadError, load_audio


class ExplorerAudioReader:
    """Reads one audio file as mono float32 at ``sample_rate``: ``reader(path) -> (waveform, rate)``."""

    signal = "audio"

    def __init__(self, sample_rate: int = 16000):
        self.sample_rate = int(sample_rate)

    def __call__(self, path):
        return load_audio(path, sr=self.sample_rate), self.sample_rate


class ExplorerWaveformPreparer:
    """The per-clip input of encoders that take the waveform itself (speech models): a float32 copy."""

    def __call__(self, signal, sample_rate=None):
        import numpy as np

        return np.asarray(signal, dtype=np.float32)


def explorer_process_chunk(paths, reader, preparer=None, preview=None) -> dict:
    """Read each file once; prepare its encoder input and/or render its preview (runs in a worker)."""
    out = {"items": [], "ok": [], "failures": [], "prepare_failures": [], "previews": {}, "preview_failures": []}
    seconds = {"decode": 0.0, "transform": 0.0, "media": 0.0}
    for path in paths:
        start = time.perf_counter()
        try:
            signal, rate = reader(path)
        except AudioLoadError as error:
            out["failures"].append({"path": str(path), "error": error.problem})
            continue
        finally:
            seconds["decode"] += time.perf_counter() - start
        if preview is not None:
            start = time.perf_counter()
            try:
                out["previews"][str(path)] = preview.render(path, signal, rate)
            except (ValueError, OSError) as error:
                out["preview_failures"].append({"path": str(path), "error": f"preview: {error}"})
            seconds["media"] += time.perf_counter() - start
        if preparer is not None:
            start = time.perf_counter()
            try:
                out["items"].append(preparer(signal, rate))
                out["ok"].append(str(path))
            except (ValueError, RuntimeError) as error:
                out["prepare_failures"].append({"path": str(path), "error": f"encoder input: {error}"})
            seconds["transform"] += time.perf_counter() - start
    out["seconds"] = seconds
    return out


def explorer_workers(workers, n_files: int) -> int:
    """``"auto"``: one process per core (at most 8) for 64 files or more, else 0 (in-process)."""
    if workers == "auto":
        return min(8, os.cpu_count() or 1) if n_files >= 64 else 0
    return max(0, int(workers or 0))


def explorer_map_chunks(paths, reader, preparer=None, preview=None, batch_size: int = 32, workers=0):
    """Yield ``explorer_process_chunk`` results for consecutive batches of ``paths``, in order."""
    paths = [str(p) for p in paths]
    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    n_workers = explorer_workers(workers, len(paths))
    if n_workers > 0 and len(chunks) > 1:
        try:  # what the workers receive must be picklable (functions defined where a worker can find them)
            pickle.dumps((explorer_process_chunk, reader, preparer, preview))
        except (pickle.PicklingError, AttributeError, TypeError) as error:
            print(f"worker processes cannot be used here ({type(error).__name__}: {error}); reading in this process")
            n_workers = 0
    if n_workers <= 0 or len(chunks) <= 1:
        for chunk in chunks:
            yield explorer_process_chunk(chunk, reader, preparer, preview)
        return
    import multiprocessing

    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
        pending, next_chunk = [], 0
        while next_chunk < len(chunks) or pending:
            while next_chunk < len(chunks) and len(pending) < 2 * n_workers:
                pending.append(pool.submit(explorer_process_chunk, chunks[next_chunk], reader, preparer, preview))
                next_chunk += 1
            yield pending.pop(0).result()
