# %% [markdown]
# # Data sets: registry, lookup and the named data sets' manifests
#
# Every notebook finds its data the same way, in this order:
#
# 1. an explicit path given by the user (a parameter of the notebook);
# 2. `$AUDIOLENS_DATA/<folder>` (CI points it at a shared read-only copy);
# 3. `data/<folder>` under the working directory;
# 4. a download from the data set's canonical URL, with a progress bar, a checksum check
#    and an atomic extraction into `data/<folder>` (`lib/core/downloads.py`).
#
# Offline, the error lists every place that was looked at and the URL to fetch by hand.
# Each loader returns a pandas manifest (one row per clip, `path` and `label` columns plus
# whatever metadata the data set has) that the notebooks filter, split and feed to models;
# folders of a user's own clips are read by `lib/core/labelled_folders.py`.

# %%
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lib.core.atomic_io import file_digest
from lib.core.audio import AUDIO_EXTENSIONS
from lib.core.downloads import (
    clean_download_leftovers,
    dataset_download_lock,
    download_file,
    extract_dataset_archive,
    remove_if_empty,
)
from lib.core.labelled_folders import audio_files_in, load_labelled_folder, nohash_speaker, parse_clip_names


class DatasetNotFoundError(FileNotFoundError):
    """A data set is neither on disk nor downloadable; the message says where we looked."""


@dataclass(frozen=True)
class DatasetSpec:
    """How to find, validate and download one data set."""

    name: str
    description: str
    folders: tuple  # folder names looked for under $AUDIOLENS_DATA and data/ (first one is the download target)
    marker: str  # relative path that exists in a complete copy
    min_files: int = 1  # audio files expected under the marker, at least
    url: str | None = None
    checksum: str | None = None  # "sha256:<hex>" or "md5:<hex>"; None: none published (content checked)
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
            with dataset_download_lock(target.parent, name):
                clean_download_leftovers(spec, target.parent)
                if _validate(spec, target) is None:  # another process finished it while we waited
                    return target
                if not archive.exists():
                    print(f"Downloading {name} from {spec.url}")
                    download_file(spec.url, archive, spec.checksum)
                extract_dataset_archive(archive, spec, target)
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
            remove_if_empty(downloads)
            if created:
                remove_if_empty(target.parent)
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
# ## FSDD
#
# The Free Spoken Digit Dataset: `recordings/{digit}_{speaker}_{take}.wav`, its official split
# (takes 0-4 test, 5-49 train) and `speakers.csv` (gender, accent).


# %%
def load_fsdd(path=None, download: bool = True) -> pd.DataFrame:
    """FSDD manifest: ``path, label (int 0-9), speaker, index, split`` (official split) + speaker metadata."""
    root = find_dataset("fsdd", path=path, download=download)
    manifest = parse_clip_names(audio_files_in(root / "recordings"))
    manifest["label"] = manifest["label"].astype(int)
    speakers_csv = root / "speakers.csv"
    if speakers_csv.exists():
        manifest = manifest.merge(pd.read_csv(speakers_csv), on="speaker", how="left")
    return manifest.sort_values(["split", "label", "speaker", "index"]).reset_index(drop=True)


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
