# %% [markdown]
# # A ring buffer of the latest samples or rows
#
# Live code keeps the last seconds of a stream: the neuron panel its audio, log-mel columns and
# activity; the digit recogniser the last seconds at 16 kHz for Whisper's prior.
# `StreamRingBuffer(capacity, width=None)` holds the newest `capacity` samples (or `[width]`
# rows): `extend(items)`, `latest(n)` (oldest first, a copy), `total_written` (items ever
# written, so a held item's stream index is known) and `clear()`.

# %%
import numpy as np


class StreamRingBuffer:
    """Fixed-capacity ring buffer of samples (``width=None``) or of ``[width]`` rows."""

    def __init__(self, capacity: int, width: int | None = None, dtype=np.float32):
        if capacity <= 0:
            raise ValueError(f"ring buffer capacity must be positive, not {capacity}")
        self.capacity = int(capacity)
        self.width = width
        shape = (self.capacity,) if width is None else (self.capacity, int(width))
        self._data = np.zeros(shape, dtype=dtype)
        self._end = 0  # total items ever written
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def total_written(self) -> int:
        return self._end

    def extend(self, items) -> None:
        items = np.asarray(items, dtype=self._data.dtype)
        if self.width is None:
            items = items.reshape(-1)
        elif items.ndim == 1:
            items = items.reshape(1, -1)
        if self.width is not None and items.shape[1] != self.width:
            raise ValueError(f"ring buffer holds rows of width {self.width}, got {items.shape[1]}")
        n = len(items)
        if n == 0:
            return
        items = items[-self.capacity :]
        new_end = self._end + n
        self._data[np.arange(new_end - len(items), new_end) % self.capacity] = items
        self._end = new_end
        self._size = min(self.capacity, self._size + n)

    def latest(self, n: int | None = None) -> np.ndarray:
        """The newest ``n`` items (all held items when ``None``), oldest first (a copy)."""
        n = self._size if n is None else min(int(n), self._size)
        if n == 0:
            return self._data[:0].copy()
        idx = (np.arange(self._end - n, self._end)) % self.capacity
        return self._data[idx].copy()

    def clear(self) -> None:
        self._data[...] = 0
        self._end = 0
        self._size = 0
