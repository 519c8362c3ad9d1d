# %% [markdown]
# # Labelled folders: clips and their labels in any common layout
#
# A folder of clips becomes a manifest (one row per clip: `path`, `label`, and `speaker`, `split`
# or `fold` where the layout says them) from `{label}_{speaker}_{index}` file names (FSDD's),
# sub-folder names, or a labels CSV with the columns public data sets use (UrbanSound8K's,
# ESC-50's), fold folders beside their metadata CSV included. The named data sets' loaders in
# `lib/core/datasets.py` and every notebook's "your own folder" option read folders here.

# %%
import os
import re
from pathlib import Path

import pandas as pd

from lib.core.audio import AUDIO_EXTENSIONS

# %% [markdown]
# ## Labels in file names
#
# FSDD names its files `{digit}_{speaker}_{take}.wav`, and its official split puts takes 0-4 in
# test (300 clips) and 5-49 in train (2,700). The same naming works for any folder of
# `{label}_{speaker}_{index}.wav` clips (AudioMNIST's, a user's own recordings).

# %%
CLIP_NAME = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<index>\d+)$")
NOHASH_NAME = re.compile(r"^(?P<speaker>.+)_nohash_\d+$")  # Speech Commands: {speaker}_nohash_{n}


def audio_files_in(folder: Path) -> list:
    """Every audio file below ``folder`` (any depth), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def parse_clip_names(paths, test_indices=range(5)) -> pd.DataFrame:
    """Manifest from ``{label}_{speaker}_{index}`` file names; files not matching are reported."""
    rows, bad = [], []
    test_indices = set(test_indices)
    paths = list(paths)
    for p in paths:
        p = Path(p)
        m = CLIP_NAME.match(p.stem)
        if not m:
            bad.append(p.name)
            continue
        index = int(m["index"])
        rows.append(
            {
                "path": str(p),
                "label": m["label"],
                "speaker": m["speaker"],
                "index": index,
                "split": "test" if index in test_indices else "train",
            }
        )
    if bad:
        print(f"Ignored {len(bad)} file(s) not named label_speaker_index: {bad[:5]}")
    if not paths:
        raise ValueError(f"no audio files to read ({', '.join(sorted(AUDIO_EXTENSIONS))}); check the folder")
    if not rows:
        folders = sorted({str(Path(p).parent) for p in paths})[:3]
        raise ValueError(
            f"none of the {len(bad)} audio file(s) in {', '.join(folders)} is named {{label}}_{{speaker}}_{{index}}"
            ".<ext> (e.g. 7_george_12.wav); rename them, put them in one sub-folder per label, or pass a labels CSV"
        )
    table = pd.DataFrame(rows)
    table.attrs["split_from"] = "take numbers"  # FSDD's convention; a caller with better knowledge may replace it
    return table


# %% [markdown]
# ## Labels CSVs
#
# One row per clip: its file and its label. Public data sets' metadata name those columns in
# their own way (UrbanSound8K's `slice_file_name` and `class`) and may list bare file names of
# clips kept in sub-folders (its `audio/fold3/`); `read_labels_csv` reads both.


# %%
# what metadata CSVs call their file and label columns (UrbanSound8K: slice_file_name, class)
FILE_COLUMN_NAMES = ("filename", "file_name", "slice_file_name", "fname", "file", "path", "filepath", "audio")
LABEL_COLUMN_NAMES = ("label", "class", "category", "class_name", "classname", "word", "target", "classID")


CSV_COLUMNS = {"file": ("filename", FILE_COLUMN_NAMES), "label": ("label", LABEL_COLUMN_NAMES)}  # default, aliases


def _find_csv_column(table: pd.DataFrame, wanted: str, what: str):
    """``wanted`` if the CSV has it; for the default name only (`CSV_COLUMNS`), the first of its aliases the CSV
    has (for files, else a column of audio file names); None if none."""
    if wanted in table.columns:
        return wanted
    default, names = CSV_COLUMNS[what]
    if wanted != default:
        return None
    lowered = {str(c).lower(): c for c in table.columns}
    found = next((lowered[n.lower()] for n in names if n.lower() in lowered), None)
    if found is None and what == "file":
        audio_suffixes = tuple(AUDIO_EXTENSIONS)
        found = next(
            (c for c in table.columns if table[c].astype(str).str.lower().str.endswith(audio_suffixes).mean() >= 0.9),
            None,
        )
    return found


def _csv_column(table: pd.DataFrame, wanted: str, labels_csv, what: str) -> str:
    """`_find_csv_column`, or an error naming the columns found; a column other than ``wanted`` is said."""
    found = _find_csv_column(table, wanted, what)
    if found is None:
        raise ValueError(f"{labels_csv}: no column {wanted!r}; the columns found are {list(table.columns)}")
    if found != wanted:
        print(f"{Path(labels_csv).name}: {what}s from its column {found!r} (no {wanted!r} column)")
    return found


def _fold_number(name):
    """``3`` for a fold folder's name (``fold3``, ``fold_3``), else None."""
    match = re.match(r"^fold[ _-]?(\d+)$", str(name).strip(), re.IGNORECASE)
    return int(match[1]) if match else None


def _fold_value(value):
    """A ``fold`` cell as a number: ``3``, ``3.0``, ``"3"`` or ``"fold3"`` give 3; a blank gives None."""
    if pd.isna(value):
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return _fold_number(value)


def _find_by_name(names, paths, row_folds, missing, files, folder, labels_csv) -> list:
    """``paths`` with the ``missing`` rows found by file name in ``folder``'s sub-folders (``files``, else a walk):
    a row with a fold (``row_folds``) takes only a file of that fold folder; names still ambiguous are said."""
    by_name = {}
    for candidate in files if files is not None else (p for p in folder.rglob("*") if p.is_file()):
        by_name.setdefault(Path(candidate).name, []).append(Path(candidate))
    found, ambiguous = {}, []
    for i in missing:
        matches = by_name.get(paths[i].name, [])
        if row_folds[i] is not None:  # a file in another fold folder is another clip of the same name
            matches = [m for m in matches if _fold_number(m.parent.name) in (None, row_folds[i])]
        if len(matches) == 1:
            found[i] = matches[0]
        elif matches:
            ambiguous.append(names[i])
    if found:
        example = next(iter(found.values())).relative_to(folder)
        print(f"{Path(labels_csv).name}: {len(found)} file(s) found by name below {folder} (e.g. {example})")
    if ambiguous:
        print(
            f"{Path(labels_csv).name}: {len(ambiguous)} file name(s) stand in several sub-folders of {folder}, "
            f"e.g. {ambiguous[:3]}: give their paths relative to {folder} (or a fold column)"
        )
    return [found.get(i, p) for i, p in enumerate(paths)]


def read_labels_csv(
    labels_csv, folder, path_column: str = "filename", label_column: str = "label", files=None, folds=None
):
    """``(table, paths)`` of a labels CSV: ``path_column`` made absolute under ``folder``; a clear error naming
    the columns found when ``path_column`` or ``label_column`` is not one of them.

    Metadata CSVs of public data sets name these columns otherwise: with the default names, the
    CSV's own (`FILE_COLUMN_NAMES`, `LABEL_COLUMN_NAMES`; said so) are used instead, copied under
    the default names. A listed file that is not where the CSV says is looked up by its name below
    ``folder`` (``files``: the folder's files, if already listed), e.g. UrbanSound8K's bare names
    of clips in ``audio/fold3/``. ``folds``: keep only the rows of these folds (said so)."""
    table = pd.read_csv(labels_csv)
    file_column = _csv_column(table, path_column, labels_csv, "file")
    label_from = _csv_column(table, label_column, labels_csv, "label")
    if file_column != path_column:
        table[path_column] = table[file_column]
    if label_from != label_column:
        table[label_column] = table[label_from]
    row_folds = [_fold_value(v) for v in table["fold"]] if "fold" in table.columns else [None] * len(table)
    if folds is not None and "fold" in table.columns:
        keep = [f in folds for f in row_folds]
        if not all(keep):
            print(f"{Path(labels_csv).name}: {len(keep) - sum(keep)} row(s) of folds not loaded left out")
            table, row_folds = table[keep].reset_index(drop=True), [f for f, k in zip(row_folds, keep) if k]
    folder = Path(folder)
    names = table[path_column].astype(str).tolist()
    paths = [Path(p) if Path(p).is_absolute() else folder / p for p in names]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        paths = _find_by_name(names, paths, row_folds, missing, files, folder, labels_csv)
    return table, paths


def _labels_csv_manifest(
    labels_csv, folder: Path, path_column: str, label_column: str, skip_missing: bool, files=None, folds=None
):
    """The manifest of a labels CSV: missing files an error, or (``skip_missing``) skipped with a
    ``DatasetWarning`` each for missing rows and for audio files without a row; counts in ``attrs``.
    ``files``: the folder's audio files, if already listed; ``folds``: only these folds' rows."""
    import warnings

    table, paths = read_labels_csv(labels_csv, folder, path_column, label_column, files=files, folds=folds)
    present = [p.is_file() for p in paths]
    missing = [str(p) for p, ok in zip(paths, present) if not ok]
    extra = []
    if missing and not skip_missing:
        raise FileNotFoundError(
            f"{labels_csv}: {len(missing)} listed file(s) do not exist under {folder}, e.g. {missing[:3]}"
        )
    if skip_missing:
        listed = {p.name for p in paths}
        extra = sorted(p.name for p in (files if files is not None else audio_files_in(folder)) if p.name not in listed)
        if missing:
            names = [Path(m).name for m in missing[:3]]
            warnings.warn(
                f"{labels_csv}: {len(missing)} row(s) name files missing from {folder} (skipped), e.g. {names}",
                DatasetWarning,
                stacklevel=3,
            )
        if extra:
            warnings.warn(
                f"{folder}: {len(extra)} audio file(s) have no row in {Path(labels_csv).name} (skipped), "
                f"e.g. {extra[:3]}",
                DatasetWarning,
                stacklevel=3,
            )
    manifest = table[present].copy()
    if "path" in manifest.columns:  # the CSV's own "path" column, kept aside for the clips' full paths
        manifest = manifest.rename(columns={"path": "path_in_csv"})
    manifest.insert(0, "path", [str(p) for p, ok in zip(paths, present) if ok])
    if label_column != "label":
        manifest["label"] = manifest[label_column]
    manifest = manifest.reset_index(drop=True)
    manifest.attrs.update(missing_files=len(missing), extra_files=len(extra), source=str(folder))
    if manifest.empty:
        raise FileNotFoundError(f"{labels_csv}: none of its {len(table)} rows names a file present in {folder}")
    return manifest


class DatasetWarning(UserWarning):
    """A data set loaded, but some of it was skipped (missing files, files without metadata)."""


# %% [markdown]
# ## Labelled folders
#
# Labels from sub-folder names, a labels CSV, or `{label}_{speaker}_{index}` file names;
# speakers from the names where every name gives one (Speech Commands' `{speaker}_nohash_{n}`),
# so that neighbours, folds and test splits can keep speakers apart. Folders that are not labels
# (`.x`, Speech Commands' `_background_noise_`) are left out, and said so.


# %%
def nohash_speaker(stem: str):
    """The speaker of a Speech Commands clip name, ``{speaker}_nohash_{n}``; None for other names."""
    match = NOHASH_NAME.match(stem)
    return match["speaker"] if match else None


def _not_a_label_folder(name: str) -> bool:
    """Hidden folders (``.ipynb_checkpoints``), macOS archive leftovers (``__MACOSX``) and Speech Commands' noise
    recordings (its test set's ``_silence_`` and ``_unknown_`` are labels)."""
    return name.startswith(".") or name in ("_background_noise_", "__MACOSX")


SPLIT_FOLDER_NAMES = {"train", "test", "validation", "valid", "val", "dev", "eval"}


def _metadata_csv(base: Path, files: list, path_column: str = "filename", label_column: str = "label"):
    """The metadata CSV of clips kept in fold folders below ``base``: of the CSVs in ``base``, its parent and one
    level below each, one with a label column whose file column names at least 90% of the clips by relative
    paths or bare names (a run's export, with absolute paths, is not metadata); one in a ``metadata/`` or
    ``meta/`` folder first. None if none; an error naming them if several remain."""
    names = {p.name for p in files}
    candidates = sorted({c for place in (base, base.parent) for c in (*place.glob("*.csv"), *place.glob("*/*.csv"))})
    matching = []
    for csv in candidates:
        try:
            head = pd.read_csv(csv, nrows=50)
            column = _find_csv_column(head, path_column, "file")
            if column is None or _find_csv_column(head, label_column, "label") is None:
                continue
            listed = pd.read_csv(csv, usecols=[column])[column].astype(str)
        except (OSError, ValueError, pd.errors.ParserError):
            continue
        if listed.map(os.path.isabs).mean() > 0.5:
            continue
        if len(names & set(listed.map(lambda v: Path(v).name))) >= 0.9 * len(names):
            matching.append(csv)
    in_meta = [c for c in matching if c.parent.name.lower() in ("metadata", "meta")]
    matching = in_meta or matching
    if len(matching) > 1:
        raise ValueError(f"several CSVs name these clips ({', '.join(map(str, matching[:4]))}); pass labels_csv")
    return matching[0] if matching else None


def _subfolder_manifest(files: list, test_indices) -> pd.DataFrame:
    """Clips in sub-folders: the folder is the label, unless the folders are speakers of ``{label}_{speaker}_{index}``
    clips (AudioMNIST's ``01/0_01_0.wav``: every name's speaker is its folder; said so). A ``speaker`` column when
    every name gives one: Speech Commands' ``{speaker}_nohash_{n}``, or ``{label}_{speaker}_{index}`` with one such
    label per folder."""
    named = [CLIP_NAME.match(p.stem) for p in files]
    one_label_per_folder = False
    if all(named):
        if all(m["speaker"] == p.parent.name for m, p in zip(named, files)):
            print("labels from the file names: the sub-folders are the speakers of {label}_{speaker}_{index} clips")
            return parse_clip_names(files, test_indices=test_indices)
        labels_in = {}
        for m, p in zip(named, files):
            labels_in.setdefault(p.parent, set()).add(m["label"])
        one_label_per_folder = all(len(v) == 1 for v in labels_in.values())
    table = pd.DataFrame({"path": [str(p) for p in files], "label": [p.parent.name for p in files]})
    # one name label per folder: every name matched CLIP_NAME, so its middle part is the speaker
    speakers = [
        nohash_speaker(p.stem) or (m["speaker"] if one_label_per_folder else None) for m, p in zip(named, files)
    ]
    if all(speakers):  # per-speaker grouping and held-out speakers work
        table["speaker"] = speakers
    return table


# %% [markdown]
# ## Corpora that name their labels in the file name
#
# Emotional-speech corpora put every label in the file name, and their folders are actors (RAVDESS's
# `Actor_01/03-01-05-01-02-01-01.wav`) or absent (CREMA-D's `1001_DFA_ANG_XX.wav`). When every clip of a
# folder is named by one of these schemes, the label is the emotion, the speaker the actor, and every other
# field a column (pick another label with the notebook's `label_column`).


# %%
_RAVDESS_EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
_CREMAD_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
_CREMAD_LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified", "X": "unspecified"}


def _ravdess_fields(m) -> dict:
    actor = int(m["actor"])
    return {
        "label": _RAVDESS_EMOTIONS[int(m["emotion"]) - 1],
        "speaker": f"actor{actor:02d}",
        "sex": "male" if actor % 2 else "female",
        "vocal_channel": {"01": "speech", "02": "song"}[m["channel"]],
        "intensity": {"01": "normal", "02": "strong"}[m["intensity"]],
        "statement": int(m["statement"]),
        "repetition": int(m["repetition"]),
    }


def _cremad_fields(m) -> dict:
    return {
        "label": _CREMAD_EMOTIONS[m["emotion"]],
        "speaker": f"actor{m['actor']}",
        "sentence": m["sentence"],
        "intensity": _CREMAD_LEVELS[m["level"]],
    }


# name, stem pattern, fields from a match
NAME_SCHEMES = (
    (
        "RAVDESS",
        re.compile(
            r"^03-(?P<channel>0[12])-(?P<emotion>0[1-8])-(?P<intensity>0[12])-(?P<statement>0[12])"
            r"-(?P<repetition>0[12])-(?P<actor>\d{2})$"
        ),
        _ravdess_fields,
    ),
    (
        "CREMA-D",
        re.compile(
            r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>ANG|DIS|FEA|HAP|NEU|SAD)_(?P<level>LO|MD|HI|XX|X)$"
        ),
        _cremad_fields,
    ),
)


def name_scheme_manifest(files: list):
    """The manifest of clips that all follow one of ``NAME_SCHEMES`` (``path``, ``label``, ``speaker`` and the
    scheme's other fields), said so; None when they do not."""
    for name, pattern, fields in NAME_SCHEMES:
        matches = [pattern.match(Path(p).stem) for p in files]
        if files and all(matches):
            table = pd.DataFrame([{"path": str(p), **fields(m)} for p, m in zip(files, matches)])
            print(
                f"{name} file names: labels are the emotions ({table['label'].nunique()}), speakers the actors "
                f"({table['speaker'].nunique()}); other fields: {', '.join(table.columns[3:])}"
            )
            table.attrs["name_scheme"] = name
            return table
    return None


def load_labelled_folder(
    folder,
    labels_csv=None,
    path_column: str = "filename",
    label_column: str = "label",
    test_indices=range(5),
    skip_missing: bool = False,
) -> pd.DataFrame:
    """Manifest of any labelled folder of clips.

    With ``labels_csv``: one row per file, ``path_column`` relative to ``folder`` (or absolute),
    ``label_column`` the label, every other column kept. Without it: labels from sub-folder
    names when clips sit in sub-folders (`_subfolder_manifest`: AudioMNIST's speaker folders, speakers from
    the file names; ``.x`` folders and Speech Commands' ``_background_noise_`` left out), else from
    ``{label}_{speaker}_{index}`` names; clips named by a corpus's scheme (``NAME_SCHEMES``: RAVDESS,
    CREMA-D) take their labels and speakers from the names, wherever they sit.
    Missing files listed in the CSV raise an error naming them, or with ``skip_missing`` are
    skipped and reported (with the folder's audio files that have no row) in a ``DatasetWarning``.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: labelled folder not found")
    if labels_csv is not None:
        return _labels_csv_manifest(labels_csv, folder, path_column, label_column, skip_missing)
    files = audio_files_in(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    hidden, kept = [], []
    for p in files:  # .x files and folders, __MACOSX, _background_noise_
        (hidden if any(_not_a_label_folder(part) for part in p.relative_to(folder).parts) else kept).append(p)
    if hidden:
        files = kept
        print(
            f"{folder}: left out {len(hidden)} file(s) that are not clips of a label (.x files and folders, "
            f"__MACOSX, Speech Commands' _background_noise_), e.g. {hidden[0].relative_to(folder)}"
        )
        if not files:
            raise FileNotFoundError(f"{folder}: no audio files outside .x, __MACOSX and _background_noise_ folders")
    by_name = name_scheme_manifest(files)  # RAVDESS, CREMA-D: the name says the label, the folder the actor
    if by_name is not None:
        return by_name
    root = Path(os.path.commonpath([p.parent for p in files]))  # inside a shared folder (FSDD's recordings/)
    folders = {p.parent.relative_to(root).as_posix() for p in files}
    if folders == {"."} and _fold_number(root.name) is not None:  # one fold folder alone
        root, folders = root.parent, {root.name}
    if all(_fold_number(f) is not None for f in folders):  # clips right inside fold1, fold2, ...: folds, not labels
        ordered = sorted(folders, key=_fold_number)
        shown = ", ".join(ordered[:3]) + (", ..." if len(ordered) > 3 else "")
        csv = _metadata_csv(root, files, path_column, label_column)
        if csv is not None:
            print(f"{folder}: {shown} are folds, not labels: labels from {csv}")
            return _labels_csv_manifest(
                csv,
                root,
                path_column,
                label_column,
                skip_missing=True,
                files=files,
                folds={*map(_fold_number, folders)},
            )
        if all(CLIP_NAME.match(p.stem) for p in files):  # {label}_{speaker}_{index} names say the labels
            table = parse_clip_names(files, test_indices=test_indices)
            table["fold"] = [_fold_number(p.parent.name) for p in files]
            return table
        raise ValueError(
            f"{folder}: its clips sit in {shown}: folds, not labels, and no metadata CSV beside them names the "
            "clips and their labels; pass labels_csv (a CSV naming each file and its label)"
        )
    if folders == {"."}:
        return parse_clip_names(files, test_indices=test_indices)
    if folders <= SPLIT_FOLDER_NAMES and all(CLIP_NAME.match(p.stem) for p in files):  # train/ and test/ folders
        table = parse_clip_names(files, test_indices=test_indices)
        table["split"] = ["test" if p.parent.name in ("test", "eval") else "train" for p in files]
        table.attrs["split_from"] = "folders"
        return table
    fold_like = sorted({p.parent.name for p in files if _fold_number(p.parent.name) is not None}, key=_fold_number)
    if fold_like:  # beside other folders: read as labels, but say what they look like
        print(f"{folder}: {', '.join(fold_like[:3])} are read as labels but look like folds; if so, pass labels_csv")
    return _subfolder_manifest(files, test_indices)
