# %% [markdown]
# # Atomic file I/O
#
# Caches, checkpoints and `results.json` must never be left half-written: an interrupted
# run (a killed kernel, a full disk) has to leave the previous version readable. Every
# writer here writes to a temporary file in the same folder, flushes it to disk, then
# renames it over the target, which is atomic on POSIX and Windows; `atomic_output` does the
# same for writers that need a file path (PIL, pandas, ffmpeg). `file_sha256` gives
# the content hashes that caches and checkpoints are keyed by. `file_lock` serialises
# processes that write one cache or one output folder (an exclusive lock that the
# operating system releases when its holder dies, so a killed run never leaves a stale lock).

# %%
import datetime as _dt
import hashlib
import json
import os
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def _current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path`` for any writer (PIL, pandas, ffmpeg...).

    The temporary file keeps ``path``'s suffix (writers pick the format from it). When the
    block succeeds it is flushed to disk and renamed over ``path``; when it fails it is
    deleted and ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; a normal file follows the umask
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + rename); return the path."""
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_plain(value):
    """``value`` in plain JSON types: numpy scalars and arrays, paths and tuples converted, dict keys
    made strings, recursively; anything else is returned as it is."""
    if isinstance(value, dict):
        return {str(k): json_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def _json_default(value):
    plain = json_plain(value)
    if plain is value:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
    return plain


def atomic_write_json(path, obj, indent: int = 2) -> Path:
    """Write ``obj`` as JSON atomically; numpy scalars/arrays and paths are converted."""
    text = json.dumps(obj, indent=indent, sort_keys=False, default=_json_default, allow_nan=True)
    return atomic_write_text(path, text + "\n")


def atomic_save_npy(path, array) -> Path:
    """Save a numpy array as ``.npy`` atomically."""
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.asarray(array), allow_pickle=False)
    return Path(path)


def file_sha256(path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path, algorithm: str = "sha256", chunk_size: int = 1 << 20) -> str:
    """Hex digest of a file with any hashlib algorithm (``md5``, ``sha256``, ...)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


# %% [markdown]
# ## Locks: one writer at a time
#
# `file_lock(path)` takes an exclusive `flock` on `path` (a file, created if needed, into which it
# writes who holds it: process id, host, start time; or an existing folder, which it leaves
# untouched); a second process either waits for it
# (`timeout` seconds, None: forever) or, with `timeout=0`, fails at once with `FileInUseError`
# naming the holder. The lock belongs to the open file: it is released when the block ends or
# the process dies (a killed kernel leaves the file but not the lock). Where `fcntl` is
# missing (Windows) the lock is a no-op.


# %%
class FileInUseError(RuntimeError):
    """Another process holds the lock; the message names it (pid, host, since when) and what to do."""


def lock_owner(path) -> dict:
    """What a lock file says about its holder (``{}`` when unreadable or empty)."""
    try:
        with open(path, encoding="utf-8") as handle:
            owner = json.loads(handle.read() or "{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def describe_lock_owner(owner: dict) -> str:
    """``"pid 123 on host since 2025-01-01T10:00:00"`` (plus the run id when known)."""
    text = f"pid {owner.get('pid', '?')}"
    if owner.get("host") and owner.get("host") != socket.gethostname():
        text += f" on {owner['host']}"
    text += f" since {owner.get('since', '?')}"
    if owner.get("run_id"):
        text += f" (run {owner['run_id']})"
    return text


@contextmanager
def file_lock(path, timeout: float | None = None, what: str | None = None, info: dict | None = None):
    """Hold an exclusive lock on ``path`` for the block; yield the owner record written into it.

    ``timeout``: seconds to wait for another holder (None: wait; 0: fail at once).
    ``what``: how the error names the locked thing (default: the lock file). ``info``: extra
    fields recorded in the lock file (a run id, a notebook name).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, run unlocked
        yield {}
        return
    path = Path(path)
    is_dir = path.is_dir()  # a folder can be locked too (nothing is written into it)
    if not is_dir:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY) if is_dir else os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    owner = lock_owner(path)
                    raise FileInUseError(
                        f"{what or path} is in use by {describe_lock_owner(owner)}; wait for that process "
                        f"to finish (or stop it), or use another folder. Lock file: {path}"
                    ) from None
                time.sleep(0.05)
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": _dt.datetime.now().isoformat(timespec="seconds"),
            **(info or {}),
        }
        if not is_dir:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(owner).encode("utf-8"), 0)
        try:
            yield owner
        finally:
            if not is_dir:
                os.ftruncate(fd, 0)  # released: the file no longer names a holder
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
