# %% [markdown]
# # Radio IQ recordings: read complex baseband files with their sample rate
#
# Software-defined radios record complex baseband samples (I + jQ). Three common file forms
# are read to `complex64`, each with its sample rate:
#
# - `.sigmf-data` + its `.sigmf-meta` JSON (the SigMF standard): the datatype (`cf32_le`,
#   `cf32_be`, `ci16_le`, `ci8`) and `core:sample_rate` come from the metadata, a label from
#   the first annotation's `core:label` when there is one;
# - `.cfile`: raw interleaved little-endian float32 I/Q (GNU Radio's complex64 file sink);
# - `.npy`: a complex array, or a real `[samples, 2]` array of I/Q pairs.
#
# Raw files carry no sample rate: it comes from a sidecar (`<file>.json` or `<stem>.json`
# with `sample_rate`, or a `<stem>.sigmf-meta`) or from the `sample_rate` argument, in that
# order. A file that cannot be used raises `IqLoadError` (an `AudioLoadError`, so batch code
# that skips unreadable audio skips unreadable IQ too) naming the file and the problem.
# `load_iq_folder` makes a manifest of a folder of recordings, labelled by sub-folder, a CSV
# or the SigMF annotations.

# %%
import json
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.atomic_io import atomic_save_npy, atomic_write_bytes, atomic_write_json
from lib.core.audio import AudioLoadError
from lib.core.labelled_folders import read_labels_csv

IQ_EXTENSIONS = (".sigmf-data", ".cfile", ".npy")
IQ_SIGMF_DTYPES = {"cf32_le": "<c8", "cf32_be": ">c8", "ci16_le": "<i2", "ci8": "i1"}


class IqLoadError(AudioLoadError):
    """An IQ recording could not be read; ``path`` and ``problem`` say which and why."""


def _iq_suffix(path: Path) -> str:
    name = path.name.lower()
    return ".sigmf-data" if name.endswith(".sigmf-data") else path.suffix.lower()


def _iq_stem(path: Path) -> str:
    return path.name[: -len(".sigmf-data")] if path.name.lower().endswith(".sigmf-data") else path.stem


def iq_sidecar_rate(path) -> float | None:
    """The sample rate written beside a raw IQ file (``<file>.json``, ``<stem>.json``, ``<stem>.sigmf-meta``)."""
    path = Path(path)
    stem = _iq_stem(path)
    for candidate in (path.with_name(path.name + ".json"), path.with_name(stem + ".json")):
        if candidate.is_file():
            try:
                meta = json.loads(candidate.read_text())
            except (OSError, ValueError) as error:
                raise IqLoadError(path, f"its sidecar {candidate.name} is not readable JSON ({error})") from None
            rate = meta.get("sample_rate", meta.get("core:sample_rate"))
            if rate is not None:
                return float(rate)
    meta_path = path.with_name(stem + ".sigmf-meta")
    if meta_path.is_file():
        return _iq_sigmf_meta(path, meta_path)["sample_rate"]
    return None


def _iq_sigmf_meta(data_path: Path, meta_path: Path) -> dict:
    try:
        meta = json.loads(meta_path.read_text())
        glob = meta["global"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise IqLoadError(data_path, f"its metadata {meta_path.name} is not valid SigMF ({error})") from None
    datatype = glob.get("core:datatype")
    if datatype not in IQ_SIGMF_DTYPES:
        raise IqLoadError(
            data_path,
            f"SigMF datatype {datatype!r} is not supported (supported: {', '.join(IQ_SIGMF_DTYPES)})",
            "Convert the recording to cf32_le",
        )
    labels = [a.get("core:label") for a in meta.get("annotations", []) if a.get("core:label")]
    rate = glob.get("core:sample_rate")
    return {
        "datatype": datatype,
        "sample_rate": float(rate) if rate is not None else None,
        "label": labels[0] if labels else None,
        "description": glob.get("core:description"),
    }


# %% [markdown]
# ## Reading one recording
#
# `read_iq` decodes each file form to `complex64`, takes the sample rate from the file, a sidecar or
# the argument, and rejects truncated files, empty recordings and non-finite samples by name.


# %%
def read_iq(path, sample_rate: float | None = None, max_samples: int | None = None):
    """``(iq complex64 [n], sample_rate, info)`` of one recording (see the module notes).

    ``sample_rate`` is used when the file and its sidecars give none.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise IqLoadError(path, "file not found", "Check the path")
    suffix = _iq_suffix(path)
    info = {"format": suffix.lstrip("."), "label": None}
    if suffix == ".sigmf-data":
        meta_path = path.with_name(_iq_stem(path) + ".sigmf-meta")
        if not meta_path.is_file():
            raise IqLoadError(path, f"no {meta_path.name} beside it (SigMF keeps the datatype and rate there)")
        meta = _iq_sigmf_meta(path, meta_path)
        raw = np.fromfile(path, dtype=IQ_SIGMF_DTYPES[meta["datatype"]])
        if meta["datatype"] in ("ci16_le", "ci8"):
            if raw.size % 2:
                raise IqLoadError(path, f"odd number of {meta['datatype']} values: the file is truncated")
            scale = 32768.0 if meta["datatype"] == "ci16_le" else 128.0
            pairs = raw.astype(np.float32).reshape(-1, 2) / scale
            iq = pairs[:, 0] + 1j * pairs[:, 1]
        else:
            iq = raw
        rate = meta["sample_rate"]
        info.update(label=meta["label"], datatype=meta["datatype"])
    elif suffix == ".cfile":
        size = path.stat().st_size
        if size % 8:
            raise IqLoadError(
                path, f"{size} bytes is not a whole number of complex64 samples (8 bytes each): truncated"
            )
        iq = np.fromfile(path, dtype="<c8")
        rate = None
    elif suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise IqLoadError(path, f"not a readable .npy array ({error})") from None
        if np.iscomplexobj(array):
            iq = array.reshape(-1)
        elif array.ndim == 2 and array.shape[1] == 2:
            iq = array[:, 0] + 1j * array[:, 1]
        else:
            raise IqLoadError(
                path, f"holds a real array of shape {array.shape}: expected complex samples or [samples, 2] I/Q pairs"
            )
        rate = None
    else:
        raise IqLoadError(path, f"unknown IQ file type {suffix!r} (known: {', '.join(IQ_EXTENSIONS)})")
    if rate is None:
        rate = iq_sidecar_rate(path)
    if rate is None:
        rate = sample_rate
    if rate is None or not rate > 0:
        raise IqLoadError(
            path,
            "no sample rate: the file has none",
            f'Write {path.name}.json with {{"sample_rate": <Hz>}} beside it, or pass sample_rate',
        )
    iq = np.ascontiguousarray(iq[:max_samples] if max_samples else iq, dtype=np.complex64)
    if iq.size == 0:
        raise IqLoadError(path, "contains no samples")
    if not np.all(np.isfinite(iq)):
        raise IqLoadError(path, "contains NaN or infinite samples")
    info.update(sample_rate=float(rate), n_samples=int(iq.size), duration=float(iq.size / rate))
    return iq, float(rate), info


# %% [markdown]
# ## Writing recordings
#
# SigMF (`cf32_le` data + metadata with the label as an annotation) or `.npy` with a JSON sidecar
# for the sample rate, both written atomically and both read back by `read_iq`.


# %%
def write_sigmf(base_path, iq, sample_rate: float, label: str | None = None, description: str = "") -> Path:
    """Write ``<base>.sigmf-data`` (cf32_le) and ``<base>.sigmf-meta``; return the data path."""
    base = Path(base_path)
    data_path = base.with_name(base.name + ".sigmf-data")
    atomic_write_bytes(data_path, np.ascontiguousarray(iq, dtype="<c8").tobytes())
    meta = {
        "global": {
            "core:datatype": "cf32_le",
            "core:sample_rate": float(sample_rate),
            "core:version": "1.0.0",
            "core:description": description,
        },
        "captures": [{"core:sample_start": 0}],
        "annotations": [{"core:sample_start": 0, "core:sample_count": int(len(iq)), "core:label": label}]
        if label is not None
        else [],
    }
    atomic_write_json(base.with_name(base.name + ".sigmf-meta"), meta)
    return data_path


def write_iq_npy(path, iq, sample_rate: float) -> Path:
    """Save complex samples as ``.npy`` with a ``<file>.json`` sidecar holding the sample rate."""
    path = Path(path)
    atomic_save_npy(path, np.asarray(iq, dtype=np.complex64))
    atomic_write_json(path.with_name(path.name + ".json"), {"sample_rate": float(sample_rate)})
    return path


# %% [markdown]
# ## A folder of recordings


# %%
def iq_files(folder) -> list:
    """Every IQ recording under ``folder`` (sorted), by extension."""
    folder = Path(folder)
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and any(p.name.lower().endswith(e) for e in IQ_EXTENSIONS)
    )


def load_iq_folder(
    folder, labels_csv=None, label_column: str = "label", path_column: str = "filename", sample_rate=None
) -> pd.DataFrame:
    """Manifest of a folder of IQ recordings: ``path, label, sample_rate, n_samples, duration, format``.

    Labels: ``labels_csv`` (``path_column`` relative to ``folder``, ``label_column``, every other
    column kept), else sub-folder names, else SigMF annotation labels. Unreadable files are
    skipped and listed in ``manifest.attrs["failed"]``.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: IQ folder not found")
    if labels_csv is not None:
        table, files = read_labels_csv(labels_csv, folder, path_column, label_column)
        extra = table.drop(columns=[path_column]).to_dict("records")
    else:
        files = iq_files(folder)
        extra = [{} for _ in files]
    if not files:
        raise FileNotFoundError(f"{folder}: no IQ recordings ({', '.join(IQ_EXTENSIONS)})")
    rows, failed = [], []
    for path, more in zip(files, extra):
        try:
            iq, rate, info = read_iq(path, sample_rate=sample_rate, max_samples=1)
            n_samples = _iq_count(path, info)
        except IqLoadError as error:
            failed.append({"path": str(path), "error": error.problem + (f". {error.hint}" if error.hint else "")})
            continue
        row = {"path": str(path), **more}
        if label_column not in more:
            label = path.parent.name if path.parent != folder else info.get("label")
            row[label_column] = label
        row.update(sample_rate=rate, n_samples=n_samples, duration=n_samples / rate, format=info["format"])
        rows.append(row)
    if failed:
        print(f"Skipped {len(failed)} unreadable IQ file(s), e.g. {failed[0]['path']}: {failed[0]['error']}")
    if not rows:
        raise FileNotFoundError(f"{folder}: no readable IQ recording; first problem: {failed[0]['error']}")
    manifest = pd.DataFrame(rows)
    if manifest[label_column].isna().all():
        raise ValueError(
            f"{folder}: no labels: put recordings in one sub-folder per class, give a labels CSV, "
            "or use SigMF annotations with core:label"
        )
    if label_column != "label":
        manifest["label"] = manifest[label_column]
    manifest.attrs["failed"] = failed
    return manifest.reset_index(drop=True)


def _iq_count(path: Path, info: dict) -> int:
    """Number of complex samples in a file, from its size (no full read)."""
    suffix = _iq_suffix(path)
    if suffix == ".npy":
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        return int(array.size if np.iscomplexobj(array) else array.shape[0])
    bytes_per_sample = {"cf32_le": 8, "cf32_be": 8, "ci16_le": 4, "ci8": 2}.get(info.get("datatype"), 8)
    return int(path.stat().st_size // bytes_per_sample)
