# %% [markdown]
# # Torch files: atomic saves and validated, safe loads
#
# Checkpoints of the training notebooks are `torch.save` dicts that carry a `format` marker.
# `atomic_torch_save` writes one atomically (a crash never leaves half a file);
# `load_marked_torch_file` reads one with `weights_only=True` (no pickled code runs) and
# fails with a message naming the file and what to do when the file is unreadable
# (truncated, corrupt, not a torch file) or is another kind of file (a different marker).

# %%
import io
from pathlib import Path

import torch

from lib.core.atomic_io import atomic_write_bytes


def atomic_torch_save(path, obj) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; return the path."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(Path(path), buffer.getvalue())


def load_marked_torch_file(
    path,
    file_format: str,
    description: str,
    error=ValueError,
    unreadable_advice: str = "",
    wrong_format_advice: str = "",
    map_location="cpu",
    noun: str = "checkpoint",
) -> dict:
    """The dict saved at ``path`` whose ``"format"`` is ``file_format``, loaded with ``weights_only=True``.

    Raises ``error`` naming the file: ``"not a readable <noun>"`` (+ ``unreadable_advice``) when
    torch cannot read it, ``"not <description>"`` (+ ``wrong_format_advice``) when it holds
    something else.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as failure:  # noqa: BLE001 - any failure here means an unreadable file
        reason = (str(failure).splitlines() or [""])[0][:200]
        message = f"{path}: not a readable {noun} ({type(failure).__name__}: {reason}). {unreadable_advice}"
        raise error(message.rstrip()) from None
    if not isinstance(state, dict) or state.get("format") != file_format:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise error(
            f"{path}: not {description} (format {found!r}, expected {file_format!r}). {wrong_format_advice}".rstrip()
        )
    return state
