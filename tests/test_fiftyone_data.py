"""Explorer data loaders: the ESC-50 layout, labelled folders, IQ recordings, the registry, the balanced subset."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from lib.core.datasets import DatasetNotFoundError, find_esc50, is_esc50_layout, load_esc50_folder
from lib.core.iq_files import IqLoadError, load_iq_folder, read_iq, write_iq_npy, write_sigmf
from lib.core.labelled_folders import DatasetWarning
from lib.explorer.explorer_data import load_explorer_dataset


@pytest.fixture(scope="module")
def esc50_dir(data_root):
    folder = data_root / "esc50-subset"
    assert is_esc50_layout(folder), f"{folder} is not in ESC-50's layout"
    return folder


@pytest.fixture
def esc50_copy(tmp_path, esc50_dir):
    """A small ESC-50-layout folder: 30 rows of the real CSV, 2 of their files deleted, 1 file without a row."""
    table = pd.read_csv(esc50_dir / "meta" / "esc50.csv").head(30)
    (tmp_path / "audio").mkdir()
    (tmp_path / "meta").mkdir()
    for name in table.filename[2:]:
        shutil.copy(esc50_dir / "audio" / name, tmp_path / "audio" / name)
    extra = pd.read_csv(esc50_dir / "meta" / "esc50.csv").filename.iloc[40]
    shutil.copy(esc50_dir / "audio" / extra, tmp_path / "audio" / extra)
    table.to_csv(tmp_path / "meta" / "esc50.csv", index=False)
    return tmp_path, table


def test_esc50_subset_loads_with_every_column(esc50_dir):
    manifest = load_esc50_folder(esc50_dir)
    assert len(manifest) == 414 and manifest.label.nunique() == 50
    assert {"path", "label", "filename", "fold", "target", "category", "esc10", "src_file", "take"} <= set(manifest)
    assert (manifest.label == manifest.category).all() and manifest.attrs["missing_files"] == 0
    assert set(manifest.fold) == {2, 3, 4, 5}
    data = load_explorer_dataset("esc50")  # no data_path: the full data set if present, else the subset
    assert data.label_column == "category" and data.group_column == "src_file" and data.fold_column == "fold"
    assert data.signal == "audio" and data.summary()["n_labels"] == 50
    with pytest.raises(ValueError, match="labels_csv is read by dataset 'folder'.*'esc50' takes its labels"):
        load_explorer_dataset("esc50", labels_csv="my_labels.csv")  # silently ignored before


def test_esc50_missing_and_extra_files_warn_once_with_counts(esc50_copy):
    folder, table = esc50_copy
    with pytest.warns(DatasetWarning) as caught:
        manifest = load_esc50_folder(folder)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert any("2 row(s) name files missing" in m and table.filename[0] in m for m in messages)
    assert any("1 audio file(s) have no row" in m for m in messages)
    assert len(manifest) == 28 and manifest.attrs["missing_files"] == 2 and manifest.attrs["extra_files"] == 1
    # a folder in this layout is recognised by the generic loader too
    with pytest.warns(DatasetWarning):
        data = load_explorer_dataset("folder", folder)
    assert data.label_column == "category" and len(data.manifest) == 28 and data.skipped["missing_files"] == 2
    assert find_esc50(folder) == folder


def test_esc50_errors_name_the_columns(esc50_copy, tmp_path):
    folder, table = esc50_copy
    table.drop(columns=["category"]).to_csv(folder / "meta" / "esc50.csv", index=False)
    with pytest.raises(ValueError, match=r"no column 'category'.*'filename', 'fold'"):
        load_esc50_folder(folder)
    with pytest.warns(DatasetWarning):
        assert len(load_esc50_folder(folder, label_column="target")) == 28
    with pytest.raises(DatasetNotFoundError, match="ESC-50's layout"):
        find_esc50(tmp_path / "nowhere")


def test_labelled_folder_errors_name_the_columns(tmp_path, fsdd_dir, monkeypatch):
    from lib.explorer.explorer_data import EXPLORER_DATASETS

    monkeypatch.delitem(EXPLORER_DATASETS, "rf", raising=False)  # as in the default notebook
    wavs = sorted((fsdd_dir / "recordings").glob("*.wav"))[:6]
    folder = tmp_path / "clips"
    folder.mkdir()
    for w in wavs:
        shutil.copy(w, folder / w.name)
    pd.DataFrame({"file": [w.name for w in wavs], "word": list("aabbcc"), "who": list("xyxyxy")}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    # a "file" column is read as the file names (and said so); a CSV naming no files at all is an error
    data = load_explorer_dataset("custom", folder, labels_csv=tmp_path / "labels.csv", label_column="word")
    assert list(data.manifest.label) == list("aabbcc") and list(data.manifest.who) == list("xyxyxy")
    pd.DataFrame({"clip": [w.stem for w in wavs], "word": list("aabbcc")}).to_csv(tmp_path / "ids.csv", index=False)
    with pytest.raises(ValueError, match=r"no column 'filename'.*'clip', 'word'"):
        load_explorer_dataset("custom", folder, labels_csv=tmp_path / "ids.csv", label_column="word")
    nested = tmp_path / "nested"
    for i, w in enumerate(wavs):
        (nested / ("dog" if i % 2 else "cat")).mkdir(parents=True, exist_ok=True)
        shutil.copy(w, nested / ("dog" if i % 2 else "cat") / w.name)
    data = load_explorer_dataset("folder", nested)
    assert sorted(data.manifest.label.unique()) == ["cat", "dog"] and len(data.manifest) == 6
    assert set(data.manifest.speaker) == {w.name.split("_")[1] for w in wavs}  # FSDD names give the speaker
    with pytest.raises(ValueError, match=r"no column 'word'.*columns found are \['path', 'label', 'speaker'\]"):
        load_explorer_dataset("folder", nested, label_column="word")
    with pytest.raises(ValueError, match="needs data_path"):
        load_explorer_dataset("folder")
    with pytest.raises(ValueError, match="fiftyone_explorer_mae"):
        load_explorer_dataset("rf")  # the default notebook does not carry the IQ loader
    with pytest.raises(ValueError, match="unknown dataset 'esc-50'"):
        load_explorer_dataset("esc-50")


# ----------------------------------------------------------------------------------------- IQ
def _tone(n=2048, f=0.05, seed=0):
    rng = np.random.default_rng(seed)
    return (np.exp(2j * np.pi * f * np.arange(n)) + 0.01 * rng.normal(size=n)).astype(np.complex64)


def test_an_emotion_corpus_folder_is_explored_by_emotion_and_actor(tmp_path, fsdd_dir):
    wav = sorted((fsdd_dir / "recordings").glob("*.wav"))[0]
    for name in ("03-01-05-01-02-01-01", "03-01-03-02-01-01-02", "03-01-05-02-01-02-02", "03-01-03-01-02-02-01"):
        (tmp_path / "ravdess" / f"Actor_{name[-2:]}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "ravdess" / f"Actor_{name[-2:]}" / f"{name}.wav").symlink_to(wav)
    data = load_explorer_dataset("folder", tmp_path / "ravdess")
    assert sorted(data.manifest[data.label_column]) == ["angry", "angry", "happy", "happy"]
    assert data.group_column == "speaker" and "RAVDESS file names" in data.description
    by_sex = load_explorer_dataset("folder", tmp_path / "ravdess", label_column="sex")  # another field as label
    assert sorted(by_sex.manifest[by_sex.label_column]) == ["female", "female", "male", "male"]


def test_iq_files_of_every_kind_read_with_their_sample_rate(tmp_path):
    iq = _tone()
    sigmf = write_sigmf(tmp_path / "a" / "rec", iq, 2.4e6, label="tone")
    got, rate, info = read_iq(sigmf)
    assert np.array_equal(got, iq) and rate == 2.4e6 and info["label"] == "tone" and info["format"] == "sigmf-data"
    cfile = tmp_path / "b" / "rec.cfile"
    cfile.parent.mkdir()
    iq.astype("<c8").tofile(cfile)
    with pytest.raises(IqLoadError, match=r"no sample rate.*rec\.cfile\.json"):
        read_iq(cfile)
    assert read_iq(cfile, sample_rate=1e6)[1] == 1e6  # the parameter when the file carries none
    (tmp_path / "b" / "rec.json").write_text(json.dumps({"sample_rate": 5e5}))
    got, rate, _ = read_iq(cfile, sample_rate=1e6)
    assert np.array_equal(got, iq) and rate == 5e5, "a sidecar wins over the parameter"
    npy = write_iq_npy(tmp_path / "c" / "rec.npy", iq, 1e5)
    assert read_iq(npy)[1] == 1e5 and np.array_equal(read_iq(npy)[0], iq)
    pairs = tmp_path / "c" / "pairs.npy"
    np.save(pairs, np.stack([iq.real, iq.imag], axis=1))
    assert np.allclose(read_iq(pairs, sample_rate=1.0)[0], iq)
    bad = tmp_path / "c" / "bad.cfile"
    bad.write_bytes(b"\0" * 12)
    with pytest.raises(IqLoadError, match="12 bytes is not a whole number"):
        read_iq(bad, sample_rate=1.0)
    real = tmp_path / "c" / "real.npy"
    np.save(real, np.zeros(10))
    with pytest.raises(IqLoadError, match="real array"):
        read_iq(real, sample_rate=1.0)
    meta = tmp_path / "a" / "rec.sigmf-meta"
    meta.write_text(json.dumps({"global": {"core:datatype": "cu16_le", "core:sample_rate": 1}}))
    with pytest.raises(IqLoadError, match="cu16_le"):
        read_iq(sigmf)


def test_iq_folder_manifest_labels_and_skips(tmp_path):
    for label, f in (("low", 0.02), ("high", 0.3)):
        for i in range(3):
            write_sigmf(tmp_path / label / f"{label}{i}", _tone(f=f, seed=i), 1e6)
    write_iq_npy(tmp_path / "high" / "extra.npy", _tone(f=0.3), 1e6)
    (tmp_path / "high" / "broken.cfile").write_bytes(b"\0" * 9)
    manifest = load_iq_folder(tmp_path)
    assert sorted(manifest.label.value_counts().items()) == [("high", 4), ("low", 3)]
    assert set(manifest.format) == {"sigmf-data", "npy"} and (manifest.n_samples == 2048).all()
    assert np.allclose(manifest.duration, 2048 / 1e6)
    assert len(manifest.attrs["failed"]) == 1 and "broken.cfile" in manifest.attrs["failed"][0]["path"]
