# %% [markdown]
# # Data sets: registry, lookup, download, manifests
#
# Every notebook finds its data the same way, in this order:
#
# 1. an explicit path given by the user (a parameter of the notebook);
# 2. `$AUDIOLENS_DATA/<folder>` (CI points it at a shared read-only copy);
# 3. `data/<folder>` under the working directory;
# 4. a download from the data set's canonical URL, with a progress bar, a checksum check
#    and an atomic extraction into `data/<folder>`.
#
# A download never deletes anything a user put in `data/`: an incomplete `data/<folder>` is
# renamed `data/<folder>.incomplete-<time>` (printed) before the fresh copy is moved in, the
# archive is kept in `data/.downloads/` for a later re-extraction, an interrupted download is
# continued by the next run (from its `.part` file), a refused connection or a bad checksum leaves
# no file or empty folder, and one process at a time downloads a data set (a lock), so staging
# folders a killed extraction left behind are removed by the next one.
#
# Offline, the error lists every place that was looked at and the URL to fetch by hand.
# Each loader returns a pandas manifest (one row per clip, `path` and `label` columns plus
# whatever metadata the data set has) that the notebooks filter, split and feed to models.

# %%
import datetime as _dt
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lib.core.atomic_io import FileInUseError, file_digest, file_lock
from lib.core.audio import AUDIO_EXTENSIONS


class DatasetNotFoundError(FileNotFoundError):
    """A data set is neither on disk nor downloadable; the message says where we looked."""


class DownloadChecksumError(OSError):
    """A downloaded file does not match its published checksum (corrupt, or the upstream file changed)."""


@dataclass(frozen=True)
class DatasetSpec:
    """How to find, validate and download one data set."""

    name: str
    description: str
    folders: tuple  # folder names looked for under $AUDIOLENS_DATA and data/ (first one is the download target)
    marker: str  # relative path that exists in a complete copy
    min_files: int = 1  # audio files expected under the marker, at least
    url: str | None = None
    checksum: str | None = None  # "sha256:<hex>" or "md5:<hex>"; None: unpublished upstream (see `verify`)
    archive_root: str = ""  # folder inside the archive that becomes data/<folder>
    homepage: str = ""
    license: str = ""
    notes: str = ""
    extra: dict = field(default_factory=dict)


# %% [markdown]
# ## The registry
#
# One `DatasetSpec` per data set: the folders it may sit in, the file that marks a complete copy,
# the download URL and its checksum. Every LibriSpeech subset is an entry of its own.


# %%
LIBRISPEECH_SHA256 = {
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
}

DATASETS = {
    "fsdd": DatasetSpec(
        name="fsdd",
        description="Free Spoken Digit Dataset: digits 0-9, 6 speakers x 50 takes, 8 kHz wav",
        folders=("fsdd", "free-spoken-digit-dataset"),
        marker="recordings",
        min_files=3000,
        url="https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz",
        checksum=None,
        archive_root="free-spoken-digit-dataset-1.0.10",
        homepage="https://github.com/Jakobovski/free-spoken-digit-dataset",
        license="CC BY-SA 4.0",
        notes="Upstream publishes no checksum: the download is pinned to release v1.0.10 and validated "
        "by its content (3,000 wavs named digit_speaker_take.wav).",
    ),
    "esc50": DatasetSpec(
        name="esc50",
        description="ESC-50: 2,000 environmental sound clips, 50 classes, 5 folds, 44.1 kHz",
        folders=("esc50", "ESC-50", "ESC-50-master"),
        marker="meta/esc50.csv",
        min_files=2000,
        url="https://github.com/karoldvl/ESC-50/archive/master.zip",
        checksum="md5:629e8e9ebc1592bcceb06da6bec40275",
        archive_root="ESC-50-master",
        homepage="https://github.com/karolpiczak/ESC-50",
        license="CC BY-NC 3.0",
    ),
    "speech_commands": DatasetSpec(
        name="speech_commands",
        description="Speech Commands v0.02: 105,829 one-second words, 35 words, 16 kHz",
        folders=("speech_commands", "speech_commands_v0.02", "SpeechCommands"),
        marker="yes",
        min_files=1000,
        url="http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
        checksum="sha256:af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
        archive_root="",
        homepage="https://arxiv.org/abs/1804.03209",
        license="CC BY 4.0",
    ),
    "librispeech-sample": DatasetSpec(
        name="librispeech-sample",
        description="One utterance from each of the 251 LibriSpeech train-clean-100 speakers (flat layout)",
        folders=("librispeech-sample",),
        marker="",
        min_files=50,
        url=None,
        homepage="https://www.openslr.org/12",
        license="CC BY 4.0",
        notes="A local sample (provided beside the repository); use 'librispeech-train-clean-100' to download.",
    ),
}
DATASETS["esc50-subset"] = DatasetSpec(
    name="esc50-subset",
    description="A part of ESC-50 in the data set's own layout (audio/ + meta/esc50.csv), e.g. the 414-clip "
    "16 kHz subset beside the repository",
    folders=("esc50-subset",),
    marker="meta/esc50.csv",
    min_files=1,
    url=None,
    homepage="https://github.com/karolpiczak/ESC-50",
    license="CC BY-NC 3.0",
    notes="Local only; 'esc50' is the full, downloadable data set. load_esc50_folder reads either.",
)
for _subset, _sha in LIBRISPEECH_SHA256.items():
    DATASETS[f"librispeech-{_subset}"] = DatasetSpec(
        name=f"librispeech-{_subset}",
        description=f"LibriSpeech {_subset}, 16 kHz flac, speaker/chapter/ layout",
        folders=(f"librispeech-{_subset}", f"LibriSpeech/{_subset}"),
        marker="",
        min_files=100,
        url=f"https://www.openslr.org/resources/12/{_subset}.tar.gz",
        checksum=f"sha256:{_sha}",
        archive_root=f"LibriSpeech/{_subset}",
        homepage="https://www.openslr.org/12",
        license="CC BY 4.0",
        # metadata beside the subset folder in the archive, kept inside data/<folder> (sex per speaker)
        extra={"keep_files": ("LibriSpeech/SPEAKERS.TXT", "LibriSpeech/CHAPTERS.TXT", "LibriSpeech/LICENSE.TXT")},
    )


# %% [markdown]
# ## Where a data set is looked for
#
# The search roots (`$AUDIOLENS_DATA`, then `data/`) and the check that a folder holds a complete
# copy: its marker file and at least the expected number of audio files.


# %%
def data_roots(explicit_root=None) -> list:
    """The folders searched for data sets, in order: ``$AUDIOLENS_DATA`` then ``data/``."""
    roots = []
    if explicit_root:
        roots.append(Path(explicit_root).expanduser())
    env = os.environ.get("AUDIOLENS_DATA")
    if env:
        roots.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p)
    roots.append(Path.cwd() / "data")
    return roots


def _count_audio(folder: Path, limit: int) -> int:
    count = 0
    for _root, _dirs, files in os.walk(folder):
        count += sum(1 for f in files if f.lower().endswith(AUDIO_EXTENSIONS))
        if count >= limit:
            break
    return count


def _validate(spec: DatasetSpec, folder: Path) -> str | None:
    """None if ``folder`` holds a complete copy of ``spec``, else the reason it does not."""
    if not folder.is_dir():
        return "not found"
    marker = folder / spec.marker if spec.marker else folder
    if not marker.exists():
        return f"incomplete: {spec.marker} is missing"
    audio_dir = marker if marker.is_dir() else folder
    n = _count_audio(audio_dir if spec.name != "esc50" else folder / "audio", spec.min_files)
    if n < spec.min_files:
        return f"incomplete: {n} audio files, expected at least {spec.min_files}"
    return None


# %% [markdown]
# ## Download and extraction
#
# A download goes to a `.part` file (continued if a run was interrupted) and is checked before it
# takes its name; an extraction goes to a staging folder renamed into place, and an incomplete copy
# already there is set aside, never deleted.
# One process at a time downloads into a data folder (a lock on the folder).


# %%
def download_file(url: str, target: Path, checksum: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target`` with a progress bar and verify ``checksum`` (``"sha256:..."``).

    The bytes go to ``target.part``; a ``.part`` left by an interrupted run is continued (an HTTP
    range request; a server that ignores it sends the whole file again). ``target`` appears only
    complete and verified; a checksum mismatch removes the partial file (`DownloadChecksumError`).
    Raises ``OSError``; a connection that breaks off keeps the ``.part`` for the next run.
    """
    import http.client
    import urllib.error
    import urllib.request

    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    done = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # the registry's https/http URLs
    except (urllib.error.URLError, OSError) as error:
        raise OSError(f"cannot download {url}: {getattr(error, 'reason', error)}") from None
    with response:
        resumed = response.status == 206
        announced = int(response.headers.get("Content-Length") or 0)
        total = announced + (done if resumed else 0)
        received = 0
        with (
            open(partial, "ab" if resumed else "wb") as out,
            tqdm(
                total=total or None, initial=done if resumed else 0, unit="B", unit_scale=True, desc=target.name
            ) as bar,
        ):
            broken = False
            try:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
                    received += len(block)
            except http.client.HTTPException:  # a chunked response cut short (IncompleteRead)
                broken = True
    if broken or received < announced:  # the connection dropped: keep the part for the next run, do not verify it
        of = f" of {announced}" if announced else ""
        raise OSError(f"download of {url} broke off after {received}{of} bytes; the next run continues {partial}")
    if checksum:
        algorithm, expected = checksum.split(":", 1)
        actual = file_digest(partial, algorithm)
        if actual != expected:
            partial.unlink(missing_ok=True)
            raise DownloadChecksumError(
                f"{url}: {algorithm} checksum mismatch (expected {expected}, got {actual}). "
                "The download is corrupt or the upstream file changed; retry, or fetch it by hand."
            )
    os.replace(partial, target)
    return target


def _extract(archive: Path, spec: DatasetSpec, destination: Path) -> Path:
    """Extract into a staging folder beside ``destination``, then rename it into place.

    An existing ``destination`` (an incomplete copy, possibly holding files a user put there) is
    never deleted: it is renamed ``<name>.incomplete-<time>`` first, and the new name printed.
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.extract-", dir=destination.parent))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(staging, filter="data")
        source = staging / spec.archive_root if spec.archive_root else staging
        if not source.is_dir():
            raise OSError(f"{archive}: expected folder {spec.archive_root!r} inside the archive")
        for kept in spec.extra.get("keep_files", ()):  # files outside archive_root that the loader needs
            if (staging / kept).is_file() and not (source / Path(kept).name).exists():
                shutil.copy2(staging / kept, source / Path(kept).name)
        if source == staging:  # the archive's top level is the data set: move it out of the staging folder
            source = staging.with_name(staging.name + "-root")
            os.replace(staging, source)
            staging = source
        if destination.exists() or destination.is_symlink():
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            aside = destination.with_name(f"{destination.name}.incomplete-{stamp}")
            os.replace(destination, aside)
            print(f"{destination} was incomplete; kept it as {aside} (nothing deleted) and extracted a fresh copy")
        os.replace(source, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def _clean_download_leftovers(spec: DatasetSpec, data_dir: Path) -> None:
    """Remove what a killed extraction left (call with the data set's lock held); a partial download is kept:
    ``download_file`` continues it."""
    for leftover in data_dir.glob(f".{spec.folders[0]}.extract-*"):
        shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def _dataset_download_lock(data_dir: Path, name: str):
    """One download or extraction at a time in ``data_dir`` (a lock on the folder itself: no lock file)."""
    try:
        with file_lock(data_dir, timeout=0):
            pass
    except FileInUseError:  # only to say why we wait
        print(f"{name}: another process is downloading into {data_dir}; waiting for it")
    with file_lock(data_dir, what=f"{data_dir} (a download)"):
        yield


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only succeeds when empty
    except OSError:
        pass


# %% [markdown]
# ## Finding a data set
#
# `find_dataset` tries the explicit path, the search roots and then the download, and when all
# fail its error lists every place it looked and the URL to fetch by hand.


# %%
def find_dataset(name: str, path=None, download: bool = True, data_dir=None) -> Path:
    """Locate data set ``name`` (a key of ``DATASETS``) and return its folder.

    Looks at ``path`` (if given it must be valid: no silent fallback), then
    ``$AUDIOLENS_DATA/<folder>``, then ``data/<folder>``, then downloads (if ``download``).
    """
    if name not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    if path is not None:
        path = Path(path).expanduser()
        problem = _validate(spec, path)
        if problem is None:
            return path
        for folder in spec.folders:  # a parent folder holding the data set is fine too
            if _validate(spec, path / folder) is None:
                return path / folder
        raise DatasetNotFoundError(
            f"{name}: the path given, {path}, is not a usable copy ({problem}). "
            f"Expected {spec.marker or 'audio files'} inside it ({spec.description})."
        )
    looked = []
    for root in data_roots(data_dir):
        for folder in spec.folders:
            candidate = root / folder
            problem = _validate(spec, candidate)
            if problem is None:
                return candidate
            looked.append(f"{candidate} ({problem})")
    target = (Path(data_dir) if data_dir else Path.cwd() / "data") / spec.folders[0]
    if download and spec.url:
        downloads = target.parent / ".downloads"
        archive = downloads / Path(spec.url).name
        created = not target.parent.exists()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with _dataset_download_lock(target.parent, name):
                _clean_download_leftovers(spec, target.parent)
                if _validate(spec, target) is None:  # another process finished it while we waited
                    return target
                if not archive.exists():
                    print(f"Downloading {name} from {spec.url}")
                    download_file(spec.url, archive, spec.checksum)
                _extract(archive, spec, target)
        except OSError as error:
            looked.append(f"download from {spec.url} failed: {error}")
        else:
            problem = _validate(spec, target)
            if problem is None:
                if spec.checksum is None:
                    print(
                        f"{name}: upstream publishes no checksum; content validated instead. "
                        f"sha256 of the archive: {file_digest(archive, 'sha256')}"
                    )
                return target
            looked.append(f"{target} after download ({problem})")
        finally:
            _remove_if_empty(downloads)
            if created:
                _remove_if_empty(target.parent)
    how = (
        f"Download {spec.url} by hand and extract it to {target}"
        if spec.url
        else "This data set is not downloadable; pass its folder explicitly"
    )
    raise DatasetNotFoundError(
        f"{name} ({spec.description}) was not found. Looked in:\n  - "
        + "\n  - ".join(looked)
        + f"\n{how}, or set AUDIOLENS_DATA to a folder that contains {spec.folders[0]}/."
    )


# %% [markdown]
# ## Manifests
#
# FSDD files are named `{digit}_{speaker}_{take}.wav`; the official split puts takes 0-4 in
# test (300 clips) and 5-49 in train (2,700). The same naming works for any folder of
# `{label}_{speaker}_{index}.wav` clips, and `load_labelled_folder` also reads a CSV of
# labels or uses sub-folder names as labels.

# %%
CLIP_NAME = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<index>\d+)$")
NOHASH_NAME = re.compile(r"^(?P<speaker>.+)_nohash_\d+$")  # Speech Commands: {speaker}_nohash_{n}


def _audio_files(folder: Path) -> list:
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


def load_fsdd(path=None, download: bool = True) -> pd.DataFrame:
    """FSDD manifest: ``path, label (int 0-9), speaker, index, split`` (official split) + speaker metadata."""
    root = find_dataset("fsdd", path=path, download=download)
    manifest = parse_clip_names(_audio_files(root / "recordings"))
    manifest["label"] = manifest["label"].astype(int)
    speakers_csv = root / "speakers.csv"
    if speakers_csv.exists():
        manifest = manifest.merge(pd.read_csv(speakers_csv), on="speaker", how="left")
    return manifest.sort_values(["split", "label", "speaker", "index"]).reset_index(drop=True)


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
        extra = sorted(p.name for p in (files if files is not None else _audio_files(folder)) if p.name not in listed)
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
    ``{label}_{speaker}_{index}`` names.
    Missing files listed in the CSV raise an error naming them, or with ``skip_missing`` are
    skipped and reported (with the folder's audio files that have no row) in a ``DatasetWarning``.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: labelled folder not found")
    if labels_csv is not None:
        return _labels_csv_manifest(labels_csv, folder, path_column, label_column, skip_missing)
    files = _audio_files(folder)
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


# %% [markdown]
# ## ESC-50, Speech Commands and LibriSpeech
#
# The manifests of the downloadable data sets, each from the data set's own metadata: ESC-50's
# `meta/esc50.csv`, Speech Commands' official validation and test lists, LibriSpeech's
# `speaker-chapter-utterance` file names and `SPEAKERS.TXT` (the sex of each speaker).


# %%
def load_esc50(path=None, download: bool = True) -> pd.DataFrame:
    """ESC-50 manifest: ``path, label (target 0-49), category, fold (1-5), esc10, src_file, take``.

    Any copy in ESC-50's layout: the full data set, a subset of it (`esc50-subset/`, as in
    `$AUDIOLENS_DATA`), else a download (``find_esc50``)."""
    table = load_esc50_folder(find_esc50(path, download=download), label_column="target")
    table["label"] = table["target"]
    return table


def load_speech_commands(path=None, words=None, download: bool = True) -> pd.DataFrame:
    """Speech Commands manifest: ``path, label (word), speaker, split`` from the official lists."""
    root = find_dataset("speech_commands", path=path, download=download)
    lists = {}
    for split, fname in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        list_path = root / fname
        if list_path.exists():
            lists.update({line.strip(): split for line in list_path.read_text().splitlines() if line.strip()})
    rows = []
    word_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("_"))
    for word_dir in word_dirs:
        if words is not None and word_dir.name not in words:
            continue
        for wav in sorted(word_dir.glob("*.wav")):
            rel = f"{word_dir.name}/{wav.name}"
            rows.append(
                {
                    "path": str(wav),
                    "label": word_dir.name,
                    "speaker": nohash_speaker(wav.stem) or wav.stem,
                    "split": lists.get(rel, "train"),
                }
            )
    if not rows:
        raise FileNotFoundError(f"{root}: no clips for words {words}")
    return pd.DataFrame(rows)


def resolve_librispeech_subset(subset: str = "auto", prefer: str = "train-clean-100") -> str:
    """``"auto"``: ``prefer`` (the full train-clean-100) when a copy is found without downloading,
    else the local ``"sample"``; any other value is returned unchanged."""
    if subset != "auto":
        return subset
    try:
        find_dataset(f"librispeech-{prefer}", download=False)
    except DatasetNotFoundError:
        return "sample"
    return prefer


LIBRISPEECH_NAME = re.compile(r"^(?P<speaker>\d+)-(?P<chapter>\d+)-(?P<utterance>\d+)$")


def load_librispeech(path=None, subset: str = "sample", download: bool = True) -> pd.DataFrame:
    """LibriSpeech manifest: ``path, speaker, chapter, utterance, sex`` for either layout.

    ``subset="sample"`` is the local 251-speaker sample; any official subset name
    (``train-clean-100``, ``dev-clean``...) is looked up and downloaded on demand;
    ``"auto"`` is train-clean-100 when a copy is present, else the sample. ``path``
    may point at a folder in the nested ``speaker/chapter/`` or the flat layout.
    """
    subset = resolve_librispeech_subset(subset) if path is None else subset
    name = "librispeech-sample" if subset == "sample" else f"librispeech-{subset}"
    if path is not None and name not in DATASETS:
        name = "librispeech-sample"
    if path is not None:
        root = Path(path).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: LibriSpeech folder not found")
    else:
        root = find_dataset(name, download=download)
    rows = []
    for f in sorted(root.rglob("*.flac")):
        m = LIBRISPEECH_NAME.match(f.stem)
        if m:
            rows.append({"path": str(f), "speaker": m["speaker"], "chapter": m["chapter"], "utterance": f.stem})
    if not rows:
        raise FileNotFoundError(f"{root}: no LibriSpeech files named speaker-chapter-utterance.flac")
    manifest = pd.DataFrame(rows)
    speakers_txt = next(iter(root.rglob("SPEAKERS.TXT")), None) or next(iter(root.parent.glob("SPEAKERS.TXT")), None)
    if speakers_txt is not None:
        sexes = {}
        for line in speakers_txt.read_text(errors="replace").splitlines():
            if line.startswith(";") or "|" not in line:
                continue
            parts = [p.strip() for p in line.split("|")]
            sexes[parts[0]] = parts[1]
        manifest["sex"] = manifest["speaker"].map(sexes)
    return manifest


# %% [markdown]
# ## Any folder in ESC-50's layout
#
# ESC-50 keeps its clips in `audio/` and one row per clip in `meta/esc50.csv` (`filename,
# fold, target, category, esc10, src_file, take`). `load_esc50_folder` reads any folder with
# that layout (the full data set, a subset, a user's own collection laid out the same way):
# every CSV column is kept, `label` is the `category` (the class name), folds are kept.
# Rows whose file is missing and audio files without a row are skipped and reported once, in
# one warning each with a count, never a crash. `find_esc50` prefers a full copy, then a
# subset (`esc50-subset`), then the download.


# %%
def is_esc50_layout(folder) -> bool:
    """True when ``folder`` holds ``meta/esc50.csv`` and an ``audio/`` folder."""
    folder = Path(folder).expanduser()
    return (folder / "meta" / "esc50.csv").is_file() and (folder / "audio").is_dir()


def load_esc50_folder(folder, label_column: str = "category") -> pd.DataFrame:
    """Manifest of a folder in ESC-50's layout: ``path``, ``label`` (= ``label_column``) + every CSV column.

    The counts of skipped rows/files are in ``manifest.attrs`` (``missing_files``, ``extra_files``).
    """
    folder = Path(folder).expanduser()
    if not is_esc50_layout(folder):
        raise FileNotFoundError(f"{folder}: not in ESC-50's layout (needs meta/esc50.csv and an audio/ folder)")
    try:
        manifest = load_labelled_folder(
            folder / "audio", folder / "meta" / "esc50.csv", "filename", label_column, skip_missing=True
        )
    except ValueError as error:
        raise ValueError(f"{error}. Pick the label with label_column.") from None
    manifest["label"] = manifest[label_column].astype(str)
    manifest.attrs["source"] = str(folder)
    return manifest


def find_esc50(path=None, download: bool = True) -> Path:
    """An ESC-50-layout folder: ``path`` (or a folder inside it), else the full data set, the subset, a download."""
    if path is not None:
        path = Path(path).expanduser()
        for candidate in (path, path / "esc50-subset", *(path / f for f in DATASETS["esc50"].folders)):
            if is_esc50_layout(candidate):
                return candidate
        raise DatasetNotFoundError(
            f"{path}: not in ESC-50's layout (expected meta/esc50.csv and audio/ inside it, or in its "
            "esc50-subset/ or ESC-50-master/ sub-folder)"
        )
    reasons = []
    for name, may_download in (("esc50", False), ("esc50-subset", False), ("esc50", download)):
        try:
            return find_dataset(name, download=may_download)
        except DatasetNotFoundError as error:
            reasons.append(str(error))
    raise DatasetNotFoundError("ESC-50 was not found, neither in full nor as a subset:\n" + "\n".join(reasons[1:]))
