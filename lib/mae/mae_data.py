# %% [markdown]
# # Data sources for masked-autoencoder training
#
# Registered data sources turn a data set into one manifest (`path`, `label` as an integer,
# `label_name`, `split` in train/test) so the training code never needs to know which data
# set it is reading:
#
# - `esc50`: ESC-50 (its CSV: filename, fold, target, category); the test split is one fold
#   (`test_fold`, 1-5), the other four train, as in the official 5-fold cross-validation.
# - `fsdd`: Free Spoken Digit Dataset, two speakers held out as the test split by default
#   (`test_speakers`; 0: the official split, takes 0-4 test, whose speakers are all in training).
# - `folder`: any folder of clips with a labels CSV (or sub-folder / file-name labels); the
#   split comes from a `split` column, else a `fold` column and `test_fold`, else (speakers
#   known: a column, or Speech Commands' and FSDD's file names; or source recordings, such as
#   UrbanSound8K's `fsID`) held-out speakers or recordings, else a stratified random split of
#   `test_fraction`.
#
# Subsets are stratified by class (`lib.core.subsets.stratified_subset`); `mae_load_split` runs
# the input transform through its per-clip cache and returns arrays ready for training; clips
# that fail to load are skipped and listed.

# %%
import numpy as np
import pandas as pd

from lib.core.datasets import load_esc50, load_fsdd
from lib.core.labelled_folders import load_labelled_folder
from lib.core.subsets import find_group_column, stratified_group_split, stratified_split, stratified_subset
from lib.mae.mae_registry import MAE_DATA_SOURCES, MaeDataSourceBase, register_mae_data_source
from lib.mae.mae_transforms import mae_transform_cached


def _mae_index_labels(manifest: pd.DataFrame, names=None) -> tuple:
    """Map ``label`` to 0..K-1 (sorted unique values unless ``names`` fixes the order)."""
    frame = manifest.copy()
    if names is None:
        names = sorted(frame["label"].unique().tolist(), key=lambda v: (str(type(v)), v))
    lookup = {name: i for i, name in enumerate(names)}
    frame["label_name"] = frame["label"].astype(str) if "label_name" not in frame else frame["label_name"]
    frame["label"] = frame["label"].map(lookup).astype(int)
    return frame, [str(n) for n in names]


# The stratified helpers live in lib.core.subsets; the names below keep older code working.
mae_stratified_split = stratified_split
mae_subsample = stratified_subset


@register_mae_data_source("esc50")
class MaeEsc50Source(MaeDataSourceBase):
    """ESC-50 (downloaded on demand): 2,000 5-s clips, 50 classes; test = fold ``test_fold``."""

    def __init__(self, path=None, test_fold: int = 1, download: bool = True):
        if int(test_fold) not in range(1, 6):
            raise ValueError(f"ESC-50 has folds 1-5; test_fold={test_fold}")
        self.path, self.test_fold, self.download = path, int(test_fold), download
        self._manifest = None

    def manifest(self):
        if self._manifest is None:
            table = load_esc50(self.path, download=self.download)
            names = table.sort_values("target").drop_duplicates("target")["category"].tolist()
            split = np.where(table["fold"] == self.test_fold, "test", "train")
            n_test, n_classes = int((split == "test").sum()), table["target"].nunique()
            if n_test < n_classes or n_test == len(table):  # a partial copy (the shared subset: 400 of fold 4)
                split = stratified_group_split(table["target"], table["src_file"], 0.2, seed=0)
                print(
                    f"ESC-50 copy at hand: fold {self.test_fold} has {n_test} of {len(table)} clips ({n_classes} "
                    f"classes), too few to test on; testing instead on a fifth of the clips, stratified by class "
                    f"and grouped by source recording ({int((split == 'test').sum())} clips)"
                )
                self.test_fold = None
            table = table.assign(label_name=table["category"], label=table["target"], split=split)
            self.group_column = "src_file"  # ESC-50's folds keep each source recording in one fold, as does the above
            self._manifest, self._names = table.reset_index(drop=True), names
        return self._manifest

    @property
    def class_names(self) -> list:
        self.manifest()
        return self._names


@register_mae_data_source("fsdd")
class MaeFsddSource(MaeDataSourceBase):
    """Free Spoken Digit Dataset. ``test_speakers`` > 0: that many speakers (drawn with ``seed``) are the test
    split and the others train, so the accuracy is on new voices; 0: the official split (takes 0-4 test,
    5-49 train), whose test takes come from the training speakers."""

    def __init__(self, path=None, download: bool = True, test_speakers: int = 2, seed: int = 0):
        self.path, self.download = path, download
        self.test_speakers, self.seed = int(test_speakers), seed
        self._manifest = None

    def manifest(self):
        if self._manifest is None:
            table = load_fsdd(self.path, download=self.download)
            table = table.assign(label_name=table["label"].astype(str)).reset_index(drop=True)
            if self.test_speakers:
                speakers = sorted(table["speaker"].unique())
                if not 0 < self.test_speakers < len(speakers):
                    raise ValueError(
                        f"fsdd test_speakers must be between 1 and {len(speakers) - 1} (it has {len(speakers)} "
                        f"speakers), or 0 for the official split; got {self.test_speakers}"
                    )
                rng = np.random.default_rng(self.seed)
                self.held_out_speakers = sorted(rng.choice(speakers, self.test_speakers, replace=False).tolist())
                table["split"] = np.where(table["speaker"].isin(self.held_out_speakers), "test", "train")
                self.group_column = "speaker"
            self._manifest = table
        return self._manifest

    @property
    def class_names(self) -> list:
        return [str(d) for d in range(10)]


# %% [markdown]
# ## Any labelled folder
#
# A split from the folder's own `split` or `fold` column wins; else, where the speakers are
# known, whole speakers are held out, so the test accuracy is on new voices.


# %%
@register_mae_data_source("folder")
class MaeFolderSource(MaeDataSourceBase):
    """A folder of clips + labels CSV (``filename``/``label`` columns by default).

    Split: a ``split`` column (train/test) if present; else a ``fold`` column with ``test_fold``;
    else, with a ``speaker`` column (or speakers in the file names) or a source-recording column
    (`find_group_column`), ``test_fraction`` of the clips from held-out speakers or recordings;
    else a stratified random ``test_fraction``.
    """

    def __init__(
        self,
        path=None,
        labels_csv=None,
        path_column: str = "filename",
        label_column: str = "label",
        test_fold=None,
        test_fraction: float = 0.2,
        seed: int = 0,
    ):
        if path is None:
            raise ValueError("the 'folder' data source needs data_path (a folder of clips) and usually labels_csv")
        self.path, self.labels_csv = path, labels_csv
        self.path_column, self.label_column = path_column, label_column
        self.test_fold, self.test_fraction, self.seed = test_fold, float(test_fraction), seed
        self._manifest = None

    def manifest(self):
        if self._manifest is None:
            table = load_labelled_folder(
                self.path, self.labels_csv, path_column=self.path_column, label_column=self.label_column
            )
            # a split from take numbers ({label}_{speaker}_{index} names: FSDD's takes 0-4) puts every speaker on
            # both sides; held-out speakers are the better test where the speakers are known
            if table.attrs.get("split_from") == "take numbers" and "speaker" in table.columns:
                table = table.drop(columns="split")
            table, self._names = _mae_index_labels(table)
            group = find_group_column(table)  # a speaker, or a source recording (UrbanSound8K's fsID)
            if "split" in table.columns and set(table["split"].unique()) <= {"train", "test", "validation"}:
                table["split"] = table["split"].replace({"validation": "train"})
            elif "fold" in table.columns and self.test_fold is not None:
                table["split"] = np.where(table["fold"].astype(str) == str(self.test_fold), "test", "train")
            else:
                held_out = None
                if group and "split" not in table.columns:
                    try:  # whole groups held out, where there are enough of them for the fraction asked
                        held_out = stratified_group_split(table["label"], table[group], self.test_fraction, self.seed)
                    except ValueError:
                        pass
                if held_out is not None:  # speakers (or recordings) known: a column, or named in the file names
                    table["split"] = held_out
                    self.group_column = group
                    test = table[table["split"] == "test"]
                    if group == "speaker":
                        self.held_out_speakers = sorted(test["speaker"].astype(str).unique())
                    print(
                        f"{self.path}: testing on {len(test)} clips of {test[group].nunique()} held-out {group} "
                        f"values (of {table[group].nunique()}), stratified by label; give a split or fold column to "
                        "choose"
                    )
                else:
                    table["split"] = stratified_split(table["label"], self.test_fraction, self.seed)
                    if group:  # too few groups, or too large a fraction, to hold them out
                        print(
                            f"{self.path}: a random stratified split; its {table[group].nunique()} {group} values "
                            "are on both sides (the test accuracy includes known voices or recordings)"
                        )
            self._manifest = table.reset_index(drop=True)
        return self._manifest

    @property
    def class_names(self) -> list:
        self.manifest()
        return self._names


def build_mae_data_source(name: str, **kwargs) -> MaeDataSourceBase:
    """Build a registered data source by name, passing only the arguments it accepts."""
    import inspect

    cls = MAE_DATA_SOURCES.get(name)
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})


def mae_load_split(frame: pd.DataFrame, transform, cache_dir=None, desc: str = "clips") -> dict:
    """Transform the clips of a manifest; skip and list failures.

    Returns ``{"x": [N, 1, F, T] float32, "y": [N] int64, "paths": [...], "failures": [...]}``.
    """
    images, ok_paths, failures = mae_transform_cached(frame["path"], transform, cache_dir=cache_dir, desc=desc)
    labels = frame.drop_duplicates("path").set_index("path").loc[ok_paths, "label"].to_numpy().astype(np.int64)
    return {"x": images, "y": labels, "paths": ok_paths, "failures": failures}
