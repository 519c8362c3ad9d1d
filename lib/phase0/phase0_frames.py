# %% [markdown]
# # Phase 0 frame table: context windows, next-step targets, confound columns
#
# The Phase 0 question is whether a coarse summary of the last `W` latent frames predicts
# the *next step's dynamics*. For an utterance with latents `z[0..T-1]` and a target step `t`:
#
# - context: the `W` frames `z[t-W+1], ..., z[t]` (the window ends at the current frame);
# - target: the next-step delta `z[t+1] - z[t]`;
# - `energy_db`: the waveform's RMS energy (dB) over frame `t`, for the high-energy slice;
# - `rel_position`: `t / (T - 1)`, 0 at the first frame and 1 at the last, for the
#   utterance-medial slice.
#
# Edges: with `edge="valid"` (default) only steps with a full context and a successor are
# kept (`W-1 <= t <= T-2`, so an utterance gives `T - W` rows, none when `T <= W`); with
# `edge="pad"` every step with a successor is kept (`0 <= t <= T-2`) and the missing context
# before the first frame repeats frame 0. Contexts never cross an utterance boundary.
# Rows are stored as indices into the concatenated latent array, so the table stays small
# even for 512-d latents.

# %%
from dataclasses import dataclass

import numpy as np
import pandas as pd

PHASE0_EDGE_MODES = ("valid", "pad")


@dataclass
class Phase0FrameTable:
    """Frames of a Phase 0 experiment: one row per target step.

    ``table`` columns: ``utterance, speaker, split, t, n_frames, row, rel_position, energy_db``;
    ``context_rows[i]`` are the ``window`` global latent rows of row ``i``'s context (oldest
    first); ``target_rows[i]`` is the row of the next frame (``row + 1``).
    """

    table: pd.DataFrame
    context_rows: np.ndarray
    target_rows: np.ndarray
    window: int
    edge: str

    def __len__(self) -> int:
        return len(self.table)

    def subset(self, rows) -> "Phase0FrameTable":
        """The rows selected by a boolean mask or an array of row numbers."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return Phase0FrameTable(
            self.table.iloc[rows].reset_index(drop=True),
            self.context_rows[rows],
            self.target_rows[rows],
            self.window,
            self.edge,
        )


def context_window_rows(n_frames: int, window: int, offset: int = 0, edge: str = "valid"):
    """``(steps, context_rows [n, window])`` for one utterance of ``n_frames`` latent frames.

    ``steps`` are the target steps ``t`` (each has a successor ``t+1``); rows are global
    (``offset + t``). See the module text for the edge modes.
    """
    if window < 1:
        raise ValueError(f"context window must be at least 1 frame, got {window}")
    if edge not in PHASE0_EDGE_MODES:
        raise ValueError(f"edge must be one of {PHASE0_EDGE_MODES}, not {edge!r}")
    first = window - 1 if edge == "valid" else 0
    steps = np.arange(first, n_frames - 1, dtype=np.int64)
    if len(steps) == 0:
        return steps, np.zeros((0, window), dtype=np.int64)
    lags = np.arange(-(window - 1), 1, dtype=np.int64)
    local = np.clip(steps[:, None] + lags[None, :], 0, None)
    return steps, local + offset


def build_frame_table(
    index: pd.DataFrame, window: int, energy_db=None, edge: str = "valid", split_column: str = "split"
) -> Phase0FrameTable:
    """Frame table from a latent-store index (``utterance, speaker, frames, offset`` [+ ``split``]).

    ``energy_db`` is the per-frame energy array aligned with the concatenated latents (or
    None: NaN). Utterances too short for one row are skipped and counted in
    ``table.attrs["skipped_short"]``.
    """
    for column in ("utterance", "speaker", "frames", "offset"):
        if column not in index.columns:
            raise ValueError(f"latent index has no column {column!r} (columns: {list(index.columns)})")
    tables, contexts, skipped = [], [], []
    for record in index.itertuples(index=False):
        n, offset = int(record.frames), int(record.offset)
        steps, rows = context_window_rows(n, window, offset, edge)
        if len(steps) == 0:
            skipped.append(record.utterance)
            continue
        tables.append(
            pd.DataFrame(
                {
                    "utterance": record.utterance,
                    "speaker": str(record.speaker),
                    "split": getattr(record, split_column, "all") if split_column in index.columns else "all",
                    "t": steps,
                    "n_frames": n,
                    "row": offset + steps,
                    "rel_position": steps / max(n - 1, 1),
                }
            )
        )
        contexts.append(rows)
    if not tables:
        raise ValueError(
            f"no utterance has more than {window if edge == 'valid' else 1} latent frames: "
            "lower the context window or use longer audio"
        )
    table = pd.concat(tables, ignore_index=True)
    table["energy_db"] = (
        np.asarray(energy_db, dtype=np.float64)[table["row"].to_numpy()] if energy_db is not None else np.nan
    )
    table.attrs["skipped_short"] = skipped
    context_rows = np.concatenate(contexts, axis=0)
    return Phase0FrameTable(table, context_rows, table["row"].to_numpy() + 1, int(window), edge)


def next_step_deltas(latents, frames: Phase0FrameTable, batch: int = 65536) -> np.ndarray:
    """Targets ``z[t+1] - z[t]`` for every row, float32 ``[n, dims]``."""
    latents = np.asarray(latents)
    out = np.empty((len(frames), latents.shape[1]), dtype=np.float32)
    for start in range(0, len(frames), batch):
        rows = frames.table["row"].to_numpy()[start : start + batch]
        out[start : start + batch] = latents[rows + 1] - latents[rows]
    return out


def context_features(
    latents, frames: Phase0FrameTable, kind: str = "mean", mean=None, std=None, batch: int = 16384
) -> np.ndarray:
    """Context summaries: ``"mean"`` (mean-pooled, ``[n, D]``) or ``"flat"`` (``[n, W*D]``).

    ``mean``/``std`` (per latent dim) standardise frames first (statistics fitted on train
    speakers only, see `lib.phase0.phase0_conditioning`).
    """
    latents = np.asarray(latents)
    dims = latents.shape[1]
    width = dims if kind == "mean" else dims * frames.window
    if kind not in ("mean", "flat"):
        raise ValueError(f"context kind must be 'mean' or 'flat', not {kind!r}")
    out = np.empty((len(frames), width), dtype=np.float32)
    for start in range(0, len(frames), batch):
        block = latents[frames.context_rows[start : start + batch]].astype(np.float32)  # [b, W, D]
        if mean is not None:
            block = (block - mean) / std
        out[start : start + batch] = block.mean(axis=1) if kind == "mean" else block.reshape(len(block), -1)
    return out
