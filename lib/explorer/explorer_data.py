# %% [markdown]
# # Explorer data sets: one registry of loaders
#
# `load_explorer_dataset(name, ...)` returns an `ExplorerData`: the manifest (one row per clip,
# `path`, `label` and every metadata column the data set has), which column is the label,
# which column groups clips that must not count as each other's neighbours (the speaker, or
# ESC-50's `src_file`: clips cut from one recording), the predefined folds when there are any,
# and whether the signals are audio or radio IQ. Loaders registered here:
#
# - `fsdd`: spoken digits (label: the digit; group: the speaker);
# - `librispeech`: the LibriSpeech sample (label: the reader's sex; group: the speaker);
# - `esc50`: any folder in ESC-50's layout (`audio/` + `meta/esc50.csv`): every CSV column
#   becomes a field, `category` is the label, `fold` gives the folds, `src_file` the group;
#   missing files and files without a row are skipped with one warning each. Without
#   `data_path` the full data set is used when present, else the `esc50-subset` beside the
#   repository;
# - `folder` (or `custom`): any labelled folder: ESC-50's layout is detected automatically;
#   else labels from a CSV (`labels_csv`, `label_column`) or from sub-folder names;
# - `rf` (radio IQ recordings) is registered by the AudioMAE/RF variant of this notebook.
#
# A new loader is a function decorated with `@register_explorer_dataset("name")`.

# %%
import inspect
from dataclasses import dataclass, field

import pandas as pd

from lib.core.datasets import find_esc50, is_esc50_layout, load_esc50_folder, load_fsdd, load_librispeech
from lib.core.labelled_folders import load_labelled_folder
from lib.core.subsets import find_group_column

EXPLORER_DATASETS = {}
EXPLORER_DATASET_ALIASES = {"custom": "folder", "iq": "rf"}
# names known to the project whose loader lives in a notebook variant, and that variant
EXPLORER_VARIANT_DATASETS = {"rf": "fiftyone_explorer_mae"}


@dataclass
class ExplorerData:
    """A data set ready for the explorer (see the module notes)."""

    name: str
    manifest: pd.DataFrame
    label_column: str = "label"
    group_column: str | None = None
    fold_column: str | None = None
    signal: str = "audio"  # "audio" or "iq"
    description: str = ""
    skipped: dict = field(default_factory=dict)

    def summary(self) -> dict:
        m = self.manifest
        return {
            "name": self.name,
            "signal": self.signal,
            "n_clips": int(len(m)),
            "n_labels": int(m[self.label_column].nunique()),
            "label_column": self.label_column,
            "group_column": self.group_column,
            "n_groups": int(m[self.group_column].nunique()) if self.group_column else None,
            "fold_column": self.fold_column,
            "folds": sorted(int(f) for f in m[self.fold_column].unique()) if self.fold_column else None,
            "columns": list(m.columns),
            "skipped": dict(self.skipped),
            "description": self.description,
        }


def register_explorer_dataset(name: str):
    """Decorator: ``@register_explorer_dataset("name")`` adds a loader ``fn(data_path, **options) -> ExplorerData``."""

    def decorate(fn):
        EXPLORER_DATASETS[name] = fn
        return fn

    return decorate


def _explorer_pick_label(manifest: pd.DataFrame, label_column, default: str, where: str) -> str:
    column = label_column or default
    if column not in manifest.columns:
        raise ValueError(
            f"{where}: no column {column!r} to use as the label; the columns found are {list(manifest.columns)}. "
            "Set label_column to one of them."
        )
    return column


# %% [markdown]
# ## The built-in loaders
#
# FSDD, the LibriSpeech sample, anything in ESC-50's layout and any labelled folder, each saying
# which column is the label, which groups clips and which gives the folds.


# %%
@register_explorer_dataset("fsdd")
def explorer_fsdd(data_path=None, label_column=None, **_options) -> ExplorerData:
    manifest = load_fsdd(data_path)
    label = _explorer_pick_label(manifest, label_column, "label", "fsdd")
    return ExplorerData(
        "fsdd", manifest, label, "speaker", None, "audio", "Free Spoken Digit Dataset: digits 0-9 by 6 speakers"
    )


@register_explorer_dataset("librispeech")
def explorer_librispeech(data_path=None, label_column=None, **_options) -> ExplorerData:
    manifest = load_librispeech(data_path)
    label = _explorer_pick_label(manifest, label_column, "sex", "librispeech")
    return ExplorerData(
        "librispeech", manifest, label, "speaker", None, "audio", "LibriSpeech utterances, one per reader"
    )


def _explorer_esc50(folder, label_column=None, name: str = "esc50") -> ExplorerData:
    manifest = load_esc50_folder(folder, label_column=label_column or "category")
    label = label_column or "category"
    return ExplorerData(
        name,
        manifest,
        label,
        "src_file" if "src_file" in manifest.columns else None,
        "fold" if "fold" in manifest.columns else None,
        "audio",
        f"ESC-50 layout at {folder}: environmental sounds, {manifest[label].nunique()} classes",
        {k: manifest.attrs.get(k, 0) for k in ("missing_files", "extra_files")},
    )


@register_explorer_dataset("esc50")
def explorer_esc50(data_path=None, label_column=None, **_options) -> ExplorerData:
    return _explorer_esc50(find_esc50(data_path), label_column)


@register_explorer_dataset("folder")
def explorer_folder(data_path=None, labels_csv=None, label_column=None, **_options) -> ExplorerData:
    if data_path is None:
        raise ValueError("dataset 'folder' needs data_path: the folder of clips")
    if is_esc50_layout(data_path) and labels_csv is None:
        print(f"{data_path}: ESC-50 layout detected (audio/ + meta/esc50.csv)")
        return _explorer_esc50(data_path, label_column, name="folder")
    manifest = load_labelled_folder(data_path, labels_csv=labels_csv, label_column=label_column or "label")
    label = _explorer_pick_label(manifest, label_column, "label", str(labels_csv or data_path))
    return ExplorerData(
        "folder",
        manifest,
        label,
        find_group_column(manifest),
        "fold" if "fold" in manifest.columns else None,
        "audio",
        f"labelled folder {data_path}"
        + (f" ({manifest.attrs['name_scheme']} file names)" if manifest.attrs.get("name_scheme") else ""),
    )


# %% [markdown]
# ## Loading a data set by name
#
# The one entry point of the notebook: aliases resolved, a data set that lives in the AudioMAE/RF
# variant named with the notebook to open, rows without a label dropped and counted.


# %%
def load_explorer_dataset(
    name: str, data_path=None, labels_csv=None, label_column=None, sample_rate=None, cache_dir=None
) -> ExplorerData:
    """Load data set ``name`` through its registered loader; rows without a label are dropped.

    ``sample_rate``: for recordings that carry none (IQ); ``cache_dir``: where a loader may write a
    generated demo set (the `rf` demo).
    """
    key = EXPLORER_DATASET_ALIASES.get(name, name)
    if key not in EXPLORER_DATASETS:
        if key in EXPLORER_VARIANT_DATASETS:
            variant = EXPLORER_VARIANT_DATASETS[key]
            raise ValueError(
                f"dataset {name!r} is handled by the {variant} notebook (it carries the RF/IQ code this one "
                f"leaves out): open notebooks/{variant}.ipynb, or run `audiolens run fiftyone_explorer -p dataset "
                f"{name}` (it picks that notebook)"
            )
        known = sorted(set(EXPLORER_DATASETS) | set(EXPLORER_DATASET_ALIASES))
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(known)}")
    if labels_csv is not None and "labels_csv" not in inspect.signature(EXPLORER_DATASETS[key]).parameters:
        readers = [n for n, f in EXPLORER_DATASETS.items() if "labels_csv" in inspect.signature(f).parameters]
        raise ValueError(
            f"labels_csv is read by dataset {' or '.join(map(repr, readers))}; {name!r} takes its labels from its "
            f"own files. To label these clips yourself: dataset='folder', data_path=<their folder>, "
            f"labels_csv={str(labels_csv)!r}"
        )
    data = EXPLORER_DATASETS[key](
        data_path=data_path,
        labels_csv=labels_csv,
        label_column=label_column,
        sample_rate=sample_rate,
        cache_dir=cache_dir,
    )
    before = len(data.manifest)
    data.manifest = data.manifest.dropna(subset=[data.label_column]).reset_index(drop=True)
    if len(data.manifest) < before:
        data.skipped["no_label"] = before - len(data.manifest)
        print(f"{before - len(data.manifest)} clip(s) without a {data.label_column!r} value dropped")
    if data.manifest.empty:
        raise ValueError(f"dataset {name!r}: no clip has a {data.label_column!r} value")
    return data
