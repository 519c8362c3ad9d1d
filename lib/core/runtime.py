# %% [markdown]
# # Runtime: seeds, devices, threads
#
# Reproducibility and hardware selection in one place: `seed_everything` seeds Python,
# NumPy and (when installed) PyTorch; `pick_device` chooses CUDA, Apple MPS or CPU;
# `limit_cpu_threads` caps torch's and the BLAS libraries' threads; `hub_reachable` says
# whether model downloads can happen at all, so an offline run loads from the cache at once
# instead of waiting out the hub client's retries (about 45 s a model).

# %%
import os
import random

import numpy as np


def seed_everything(seed: int = 0) -> int:
    """Seed ``random``, NumPy and PyTorch (if importable); return the seed."""
    random.seed(seed)
    np.random.seed(seed)
    # str hashing of this process is fixed at start-up; this seeds only the processes it starts (workers)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch
    except ImportError:
        return seed
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return seed


def pick_device(preference: str = "auto") -> str:
    """Return ``"cuda"``, ``"mps"`` or ``"cpu"``; ``preference`` may force one of them."""
    import torch

    if preference not in ("auto", "cpu", "cuda", "mps"):
        raise ValueError(f"device must be auto, cpu, cuda or mps, not {preference!r}")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'.")
    if preference != "auto":
        return preference
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def limit_cpu_threads(threads: int | None):
    """Cap torch's and the BLAS libraries' CPU threads (None: leave the defaults); returns the cap.

    On a shared or small machine, one or two threads are often much faster than the default
    for small models: idle threads spin while waiting for cores other jobs hold. Call it after
    numpy/scipy/scikit-learn are imported, so every BLAS they load is capped.
    """
    if not threads:
        return None
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(int(threads))
    threadpool_limits(int(threads))
    return int(threads)


_HUB_ANSWERS = {}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be asked for files.

    False when ``HF_HUB_OFFLINE`` is set, or when the hub's host (``HF_ENDPOINT``) does not take a
    connection within ``timeout`` seconds; asked once per process. Behind an HTTPS proxy the
    answer is True (the proxy decides). Loaders use it to go to the local cache only, at once.
    """
    import socket
    from urllib.parse import urlparse
    from urllib.request import getproxies

    if os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("0", "", "false", "no", "off"):
        return False
    if getproxies().get("https") or getproxies().get("all"):
        return True
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    address = (endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443))
    if address not in _HUB_ANSWERS:
        try:
            socket.create_connection(address, timeout=timeout).close()
            _HUB_ANSWERS[address] = True
        except OSError:  # no DNS, no route, refused, timed out
            _HUB_ANSWERS[address] = False
            print(f"Hugging Face hub ({address[0]}) not reachable: models load from the local cache only")
    return _HUB_ANSWERS[address]


def hub_offline_for(name_or_path) -> bool:
    """True when ``name_or_path`` is a hub id (no local file or folder of that name) and the hub cannot be
    reached: load it with ``local_files_only=True``."""
    from pathlib import Path

    return not Path(str(name_or_path)).expanduser().exists() and not hub_reachable()
