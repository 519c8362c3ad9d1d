"""Data lookup (explicit path, $AUDIOLENS_DATA, data/, download, offline error) and manifests."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
import urllib.request
from dataclasses import replace

import pandas as pd
import pytest

import lib.core.datasets as ds
import lib.core.labelled_folders as lf


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No $AUDIOLENS_DATA, cwd in an empty temp folder (so data/ is empty)."""
    monkeypatch.delenv("AUDIOLENS_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_fsdd_manifest_official_split(fsdd_manifest):
    m = fsdd_manifest
    assert len(m) == 3000
    assert (m.split == "train").sum() == 2700 and (m.split == "test").sum() == 300
    assert set(m.label) == set(range(10)) and m.speaker.nunique() == 6
    assert set(m[m.split == "test"]["index"]) == {0, 1, 2, 3, 4}
    assert m.gender.notna().all() and {"accent"} <= set(m.columns)


def test_explicit_path_wins_and_must_be_valid(isolated, fsdd_dir, data_root):
    assert ds.find_dataset("fsdd", path=fsdd_dir) == fsdd_dir
    assert ds.find_dataset("fsdd", path=data_root) == data_root / "fsdd"  # a parent folder works too
    with pytest.raises(ds.DatasetNotFoundError, match=f"the path given, {isolated}, is not a usable copy"):
        ds.find_dataset("fsdd", path=isolated)


def test_environment_variable_then_data_folder(isolated, data_root, monkeypatch):
    monkeypatch.setenv("AUDIOLENS_DATA", str(data_root))
    assert ds.find_dataset("fsdd", download=False) == data_root / "fsdd"
    monkeypatch.delenv("AUDIOLENS_DATA")
    (isolated / "data").mkdir()
    (isolated / "data" / "fsdd").symlink_to(data_root / "fsdd")
    assert ds.find_dataset("fsdd", download=False) == isolated / "data" / "fsdd"


def test_incomplete_copy_is_not_accepted(isolated, fsdd_dir):
    partial = isolated / "data" / "fsdd" / "recordings"
    partial.mkdir(parents=True)
    for wav in sorted((fsdd_dir / "recordings").glob("*.wav"))[:10]:
        (partial / wav.name).symlink_to(wav)
    with pytest.raises(ds.DatasetNotFoundError, match="incomplete: 10 audio files, expected at least 3000"):
        ds.find_dataset("fsdd", download=False)


def test_offline_error_names_every_place_and_the_url(isolated, monkeypatch, data_root):
    unreachable = replace(ds.DATASETS["fsdd"], url="http://127.0.0.1:9/fsdd.tar.gz")
    monkeypatch.setitem(ds.DATASETS, "fsdd", unreachable)
    monkeypatch.setenv("AUDIOLENS_DATA", str(isolated / "nowhere"))
    with pytest.raises(ds.DatasetNotFoundError) as info:
        ds.find_dataset("fsdd")
    message = str(info.value)
    assert str(isolated / "nowhere" / "fsdd") in message
    assert str(isolated / "data" / "fsdd") in message
    assert "download from http://127.0.0.1:9/fsdd.tar.gz failed" in message
    assert "Download http://127.0.0.1:9/fsdd.tar.gz by hand" in message
    assert not (isolated / "data" / "fsdd").exists()


def _serve(handler):
    """An HTTP server with ``handler`` on a free local port, in a daemon thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def served_archive(tmp_path, fsdd_dir):
    """A tar.gz of 12 real FSDD clips in the upstream layout, served over HTTP on localhost."""
    site = tmp_path / "site"
    site.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for wav in sorted((fsdd_dir / "recordings").glob("*_theo_1*.wav"))[:12]:
            tar.add(wav, arcname=f"mini-fsdd-1.0/recordings/{wav.name}")
    (site / "mini.tar.gz").write_bytes(buffer.getvalue())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    server = _serve(handler)
    yield f"http://127.0.0.1:{server.server_address[1]}/mini.tar.gz", hashlib.sha256(buffer.getvalue()).hexdigest()
    server.shutdown()


def test_download_checks_checksum_and_extracts_atomically(isolated, monkeypatch, served_archive):
    url, sha = served_archive
    spec = replace(
        ds.DATASETS["fsdd"], url=url, checksum=f"sha256:{'0' * 64}", min_files=12, archive_root="mini-fsdd-1.0"
    )
    monkeypatch.setitem(ds.DATASETS, "fsdd", spec)
    with pytest.raises(ds.DatasetNotFoundError, match="checksum mismatch"):
        ds.find_dataset("fsdd")
    assert not (isolated / "data" / "fsdd").exists()  # nothing half-extracted left behind
    assert not list((isolated / "data" / ".downloads").glob("*"))  # corrupt download removed
    monkeypatch.setitem(ds.DATASETS, "fsdd", replace(spec, checksum=f"sha256:{sha}"))
    folder = ds.find_dataset("fsdd")
    assert folder == isolated / "data" / "fsdd"
    manifest = ds.load_fsdd(download=False)
    assert len(manifest) == 12 and set(manifest.speaker) == {"theo"}
    assert not [p for p in (isolated / "data").iterdir() if p.name.startswith(".fsdd")]  # staging cleaned


def test_librispeech_sample_manifest(librispeech_dir):
    m = ds.load_librispeech(path=librispeech_dir)
    assert len(m) == 251 and m.speaker.nunique() == 251
    assert set(m.sex.dropna()) == {"F", "M"} and m.sex.notna().all()
    assert ds.load_librispeech().shape == m.shape  # via $AUDIOLENS_DATA


def test_librispeech_nested_layout(tmp_path, librispeech_dir):
    for flac in sorted(librispeech_dir.glob("*.flac"))[:3]:
        speaker, chapter, _ = flac.stem.split("-")
        target = tmp_path / speaker / chapter / flac.name
        target.parent.mkdir(parents=True)
        target.symlink_to(flac)
    m = ds.load_librispeech(path=tmp_path)
    assert len(m) == 3 and list(m.columns[:4]) == ["path", "speaker", "chapter", "utterance"]


def test_labelled_folder_from_csv_names_and_subfolders(tmp_path, fsdd_dir):
    wavs = sorted((fsdd_dir / "recordings").glob("5_*.wav"))[:3]
    flat = tmp_path / "flat"
    flat.mkdir()
    for w in wavs:
        (flat / w.name).symlink_to(w)
    by_name = lf.load_labelled_folder(flat)
    assert list(by_name.label) == ["5", "5", "5"] and "speaker" in by_name
    pd.DataFrame({"file": [w.name for w in wavs], "word": ["a", "b", "c"], "site": [1, 2, 3]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    by_csv = lf.load_labelled_folder(flat, tmp_path / "labels.csv", path_column="file", label_column="word")
    assert list(by_csv.label) == ["a", "b", "c"] and list(by_csv.site) == [1, 2, 3]
    pd.DataFrame({"file": ["missing.wav"], "word": ["a"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(FileNotFoundError, match="1 listed file"):
        lf.load_labelled_folder(flat, tmp_path / "bad.csv", path_column="file", label_column="word")
    nested = tmp_path / "nested"
    for label, w in zip(["dog", "cat", "dog"], wavs):
        (nested / label).mkdir(parents=True, exist_ok=True)
        (nested / label / w.name).symlink_to(w)
    assert sorted(lf.load_labelled_folder(nested).label) == ["cat", "dog", "dog"]
    assert sorted(lf.load_labelled_folder(nested).speaker) == sorted(w.name.split("_")[1] for w in wavs)
    commands = tmp_path / "speech_commands"  # Speech Commands' layout: {speaker}_nohash_{n}, _background_noise_
    for folder, name in (("yes", "0a7c2a8d_nohash_0"), ("yes", "1b2c3d4e_nohash_1"), ("no", "0a7c2a8d_nohash_2")):
        (commands / folder).mkdir(parents=True, exist_ok=True)
        (commands / folder / f"{name}.wav").symlink_to(wavs[0])
    for hidden in ("_background_noise_/white_noise.wav", ".ipynb_checkpoints/x.wav"):
        (commands / hidden).parent.mkdir(parents=True, exist_ok=True)
        (commands / hidden).symlink_to(wavs[0])
    audiomnist = tmp_path / "AudioMNIST" / "data"  # speaker folders; the label is in the file name
    for digit in range(10):
        for speaker in ("01", "02", "03"):  # fewer speakers than digits: still the names' labels
            (audiomnist / speaker).mkdir(parents=True, exist_ok=True)
            (audiomnist / speaker / f"{digit}_{speaker}_0.wav").symlink_to(wavs[0])
    for root in (audiomnist, audiomnist.parent):  # data/ itself, or the corpus folder with data/ its only folder
        table = lf.load_labelled_folder(root)
        assert sorted(set(table.label)) == [str(d) for d in range(10)] and set(table.speaker) == {"01", "02", "03"}
    table = lf.load_labelled_folder(fsdd_dir)  # a data set's folder whose clips sit in one folder (recordings/)
    assert table.label.nunique() == 10 and table.speaker.nunique() == 6
    splits = tmp_path / "splits"  # train/ and test/ folders of named clips: labels from the names
    for part, w in zip(("train", "train", "test"), wavs):
        (splits / part).mkdir(parents=True, exist_ok=True)
        (splits / part / w.name).symlink_to(w)
    table = lf.load_labelled_folder(splits)
    assert list(table.label) == ["5", "5", "5"] and sorted(table.split) == ["test", "train", "train"]
    flat_hidden = tmp_path / "flat_hidden"  # a flat folder with a checkpoint folder beside its clips
    flat_hidden.mkdir()
    for w in wavs:
        (flat_hidden / w.name).symlink_to(w)
    (flat_hidden / ".ipynb_checkpoints").mkdir()
    (flat_hidden / ".ipynb_checkpoints" / wavs[0].name).symlink_to(wavs[0])
    (flat_hidden / "__MACOSX").mkdir()  # a zip made on a Mac: its leftovers, and AppleDouble ._ files beside clips
    (flat_hidden / "__MACOSX" / f"._{wavs[0].name}").symlink_to(wavs[0])
    (flat_hidden / f"._{wavs[1].name}").symlink_to(wavs[1])
    assert list(lf.load_labelled_folder(flat_hidden).label) == ["5", "5", "5"]  # labels from the names
    (commands / "_unknown_").mkdir()  # Speech Commands' test set: _unknown_ and _silence_ are labels
    (commands / "_unknown_" / "9f8e7d6c_nohash_0.wav").symlink_to(wavs[0])
    table = lf.load_labelled_folder(commands)
    assert sorted(table.label) == ["_unknown_", "no", "yes", "yes"]
    assert sorted(table.speaker) == ["0a7c2a8d", "0a7c2a8d", "1b2c3d4e", "9f8e7d6c"]


def test_emotion_corpora_take_labels_and_actors_from_their_file_names(tmp_path, fsdd_dir, capsys):
    wav = sorted((fsdd_dir / "recordings").glob("3_*.wav"))[0]
    ravdess = tmp_path / "RAVDESS"  # Actor_NN folders; 03-channel-emotion-intensity-statement-repetition-actor
    for name in ("03-01-05-01-02-01-01", "03-01-01-01-01-02-01", "03-02-03-02-01-01-02", "03-01-08-02-02-02-24"):
        actor = name[-2:]
        (ravdess / f"Actor_{actor}").mkdir(parents=True, exist_ok=True)
        (ravdess / f"Actor_{actor}" / f"{name}.wav").symlink_to(wav)
    table = lf.load_labelled_folder(ravdess).sort_values("path").reset_index(drop=True)
    assert list(table.label) == ["neutral", "angry", "happy", "surprised"]  # not the Actor_NN folders
    assert list(table.speaker) == ["actor01", "actor01", "actor02", "actor24"]
    assert list(table.sex) == ["male", "male", "female", "female"]
    assert list(table.vocal_channel) == ["speech", "speech", "song", "speech"]
    assert list(table.intensity) == ["normal", "normal", "strong", "strong"]
    assert "RAVDESS file names" in capsys.readouterr().out
    cremad = tmp_path / "AudioWAV"  # CREMA-D: one flat folder, actor_sentence_emotion_level
    cremad.mkdir()
    for name in ("1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1091_TSI_NEU_XX", "1002_WSI_SAD_LO"):
        (cremad / f"{name}.wav").symlink_to(wav)
    table = lf.load_labelled_folder(cremad).sort_values("path").reset_index(drop=True)
    assert list(table.label) == ["angry", "happy", "sad", "neutral"]
    assert list(table.speaker) == ["actor1001", "actor1001", "actor1002", "actor1091"]
    assert list(table.intensity) == ["unspecified", "high", "low", "unspecified"]
    (cremad / "7_george_1.wav").symlink_to(wav)  # one clip named otherwise: no scheme, the usual reading
    capsys.readouterr()
    assert list(lf.load_labelled_folder(cremad).label) == ["7"]
    assert "Ignored 4 file(s) not named label_speaker_index" in capsys.readouterr().out


def test_registry_has_the_data_sets_with_checksums():
    for name in ("fsdd", "esc50", "speech_commands", "librispeech-train-clean-100", "librispeech-dev-clean"):
        assert name in ds.DATASETS
    for name, spec in ds.DATASETS.items():
        if spec.url and name != "fsdd":
            algorithm, digest = spec.checksum.split(":")
            assert algorithm in ("md5", "sha256") and len(digest) in (32, 64), name


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one payload and honours ``Range: bytes=N-`` (as GitHub and openslr do); records the ranges asked."""

    payload, ranges = b"", []

    def do_GET(self):  # http.server's name
        asked = self.headers.get("Range")
        type(self).ranges.append(asked)
        start = int(asked.split("=")[1].rstrip("-")) if asked else 0
        body = self.payload[start:]
        self.send_response(206 if asked else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve_payload(base, payload):
    """Serve ``payload`` with a subclass of ``base``: ``(handler class, server, url)``."""
    handler = type("Handler", (base,), {"payload": payload, "ranges": []})
    server = _serve(handler)
    return handler, server, f"http://127.0.0.1:{server.server_address[1]}/mini.tar.gz"


def _use_mini_fsdd(monkeypatch, url, sha):
    """Point the registry's fsdd at the served mini archive."""
    spec = replace(ds.DATASETS["fsdd"], url=url, checksum=f"sha256:{sha}", min_files=12, archive_root="mini-fsdd-1.0")
    monkeypatch.setitem(ds.DATASETS, "fsdd", spec)


@pytest.mark.parametrize("ranges", [True, False])
def test_an_interrupted_download_is_continued(isolated, monkeypatch, served_archive, ranges):
    """The `.part` a killed run left is kept and continued from where it stopped; a server that ignores
    range requests sends the whole file again, which replaces the partial bytes."""
    url, sha = served_archive
    if ranges:
        payload = urllib.request.urlopen(url).read()
        handler, server, url = _serve_payload(_RangeHandler, payload)
    _use_mini_fsdd(monkeypatch, url, sha)
    partial = isolated / "data" / ".downloads" / "mini.tar.gz.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(payload[:1000] if ranges else b"first bytes of a killed download")
    assert ds.find_dataset("fsdd") == isolated / "data" / "fsdd"
    assert ds.file_digest(partial.with_name("mini.tar.gz"), "sha256") == sha and not partial.exists()
    if ranges:
        assert handler.ranges == ["bytes=1000-"]  # only the missing bytes were fetched
        server.shutdown()
    assert len(ds.load_fsdd(download=False)) == 12


class _BrokenOffHandler(_RangeHandler):
    """Announces the whole payload, sends its first 1,000 bytes, then drops the connection."""

    def do_GET(self):  # http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload[:1000])
        self.wfile.flush()
        self.close_connection = True


def test_a_download_that_breaks_off_says_so_and_keeps_what_it_got(isolated, monkeypatch, served_archive):
    url, sha = served_archive
    payload = urllib.request.urlopen(url).read()
    _handler, server, cut = _serve_payload(_BrokenOffHandler, payload)
    _use_mini_fsdd(monkeypatch, cut, sha)
    with pytest.raises(ds.DatasetNotFoundError, match="broke off"):
        ds.find_dataset("fsdd")
    server.shutdown()
    partial = isolated / "data" / ".downloads" / "mini.tar.gz.part"
    assert partial.read_bytes() == payload[:1000]  # kept for the next run to continue
    _use_mini_fsdd(monkeypatch, url, sha)  # the next run, connection fine
    assert ds.find_dataset("fsdd") == isolated / "data" / "fsdd" and not partial.exists()


def test_clip_names_that_do_not_parse_say_where_and_what_to_do(tmp_path, capsys):
    for name in ("hello.wav", "seven.wav"):
        (tmp_path / name).write_bytes(b"")
    expected = r"none of the 2 audio file\(s\) in .* is named \{label\}_\{speaker\}_"
    with pytest.raises(ValueError, match=expected) as error:
        lf.parse_clip_names(sorted(tmp_path.iterdir()))
    assert str(tmp_path) in str(error.value) and "labels CSV" in str(error.value)
    assert "hello.wav" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no audio files to read"):
        lf.parse_clip_names(iter([]))
    manifest = lf.parse_clip_names(iter([tmp_path / "7_george_12.wav", tmp_path / "x.wav"]))  # a generator is fine
    assert manifest.to_dict("records")[0] | {"path": None} == {
        "path": None, "label": "7", "speaker": "george", "index": 12, "split": "train"
    }  # fmt: skip


def test_stratified_subset_and_split_keep_every_class():
    from lib.core.subsets import stratified_split, stratified_subset

    frame = pd.DataFrame({"label": ["a"] * 60 + ["b"] * 30 + ["c"] * 10, "x": range(100)})
    subset = stratified_subset(frame, 20, seed=3)
    assert len(subset) == 20 and subset.label.value_counts().to_dict() == {"a": 12, "b": 6, "c": 2}
    assert subset.x.is_monotonic_increasing  # original order kept
    pd.testing.assert_frame_equal(subset, stratified_subset(frame, 20, seed=3))
    assert not subset.equals(stratified_subset(frame, 20, seed=4))
    assert set(stratified_subset(frame, 3, seed=0).label) == {"a", "b", "c"}  # one of each while the cap allows
    assert len(stratified_subset(frame, None)) == 100 and len(stratified_subset(frame, 500)) == 100
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="whole number >= 1"):
            stratified_subset(frame, bad)
    split = stratified_split(frame.label, 0.2, seed=0)
    tests = frame.label[split == "test"].value_counts().to_dict()
    assert tests == {"a": 12, "b": 6, "c": 2}
    assert list(stratified_split(["x", "x", "y"], 0.2, seed=0)).count("test") == 1  # one x; the single y trains


def test_find_group_column_names_the_column_that_ties_clips_together():
    from lib.core.subsets import find_group_column

    frame = pd.DataFrame({"label": ["a", "b", "a"], "speaker": ["s1", "s1", "s1"], "src_file": ["x", "y", "x"]})
    assert find_group_column(frame) == "src_file"  # one speaker only: it ties nothing apart
    assert find_group_column(frame.assign(speaker=["s1", "s2", "s1"])) == "speaker"
    assert find_group_column(frame[["label"]]) is None


def test_urbansound8k_layout_labels_from_its_metadata_not_its_fold_folders(tmp_path, fsdd_dir, capsys):
    """UrbanSound8K: audio/fold1..fold10/<fsID>-<class>-<n>-<slice>.wav and metadata/UrbanSound8K.csv naming each
    file (slice_file_name), its class and its fold. The fold folders must never become the labels."""
    from lib.core.subsets import find_group_column
    from lib.mae.mae_data import build_mae_data_source

    wavs = sorted((fsdd_dir / "recordings").glob("3_*.wav"))[:8]
    root = tmp_path / "UrbanSound8K"
    rows = []
    for i, w in enumerate(wavs):
        fold, cls, fsid = 1 + i % 2, ["dog_bark", "siren"][i // 4], 100 + i // 2
        name = f"{fsid}-{3 if cls == 'dog_bark' else 8}-0-{i}.wav"
        (root / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
        (root / "audio" / f"fold{fold}" / name).symlink_to(w)
        rows.append({"slice_file_name": name, "fsID": fsid, "fold": fold, "classID": 3 if cls == "dog_bark" else 8})
        rows[-1]["class"] = cls
    (root / "metadata").mkdir()
    pd.DataFrame(rows).to_csv(root / "metadata" / "UrbanSound8K.csv", index=False)
    for where in (root, root / "audio"):  # the data set's folder, or its audio/ folder
        table = lf.load_labelled_folder(where)
        out = capsys.readouterr().out
        assert "are folds, not labels" in out and "'slice_file_name'" in out and "'class'" in out
        assert sorted(table.label) == ["dog_bark"] * 4 + ["siren"] * 4 and set(table.fold) == {1, 2}
        assert all(f"/fold{f}/" in p for p, f in zip(table.path, table.fold))  # found by name in its fold folder
        assert find_group_column(table) == "fsID"  # slices of one recording belong together
    explicit = lf.load_labelled_folder(root / "audio", root / "metadata" / "UrbanSound8K.csv")
    assert list(explicit.label) == [r["class"] for r in rows]
    source = build_mae_data_source("folder", path=root, test_fold=2)
    manifest = source.manifest()
    assert set(manifest[manifest.split == "test"].fold) == {2} and source.class_names == ["dog_bark", "siren"]
    by_fsid = build_mae_data_source("folder", path=root, test_fold=None, test_fraction=0.5).manifest()  # recordings
    assert set(by_fsid[by_fsid.split == "test"].fsID).isdisjoint(by_fsid[by_fsid.split == "train"].fsID)
    # the caller's label column is honoured; a folder above the data set and one fold alone work too
    assert set(lf.load_labelled_folder(root, label_column="classID").label) == {3, 8}
    assert len(lf.load_labelled_folder(tmp_path)) == 8 and len(lf.load_labelled_folder(root / "audio" / "fold2")) == 4
    # a CSV that does not name the clips (a run's export beside them) is neither used nor in the way
    (root / "outputs").mkdir()
    pd.DataFrame({"path": ["x.wav"], "label": ["x"]}).to_csv(root / "outputs" / "predictions.csv", index=False)
    assert sorted(lf.load_labelled_folder(root).label) == ["dog_bark"] * 4 + ["siren"] * 4
    # one name in two folds: the row's fold says which file it is
    twin = root / "audio" / "fold2" / rows[0]["slice_file_name"]
    twin.symlink_to(wavs[-1])
    pd.DataFrame(rows + [dict(rows[0], fold=2, **{"class": "siren"})]).to_csv(
        root / "metadata" / "UrbanSound8K.csv", index=False
    )
    twins = lf.load_labelled_folder(root)
    assert len(twins) == 9 and twins.path.nunique() == 9 and dict(zip(twins.path, twins.label))[str(twin)] == "siren"
    # one fold alone takes its own rows only (the twin's row names the fold2 file), and says it left the others out
    alone = lf.load_labelled_folder(root / "audio" / "fold2")
    assert len(alone) == 5 and dict(zip(alone.path, alone.label))[str(twin)] == "siren"
    assert "row(s) of folds not loaded left out" in capsys.readouterr().out
    # folds written 1.0, 2.0 (a blank cell makes the column float) and paths relative to the data set's folder
    table = pd.read_csv(root / "metadata" / "UrbanSound8K.csv")
    table["fold"] = table["fold"].astype(float)
    table["slice_file_name"] = [f"audio/fold{int(f)}/{n}" for f, n in zip(table.fold, table.slice_file_name)]
    table.to_csv(root / "metadata" / "UrbanSound8K.csv", index=False)
    pd.DataFrame({"path": sorted(map(str, (root / "audio").rglob("*.wav"))), "label": "x"}).to_csv(
        root / "export.csv", index=False
    )  # a run's export beside the data, absolute paths: not metadata
    again = lf.load_labelled_folder(root)
    assert len(again) == 9 and again.path.nunique() == 9 and dict(zip(again.path, again.label))[str(twin)] == "siren"
    # a CSV's own "path" column beside its file column is kept aside, not in the way of the clip paths
    listed = tmp_path / "listed.csv"
    pd.DataFrame({"file_name": [r["slice_file_name"] for r in rows], "path": "elsewhere", "class": "a"}).to_csv(
        listed, index=False
    )
    table = lf.load_labelled_folder(root / "audio", listed, skip_missing=True)
    assert set(table.path_in_csv) == {"elsewhere"} and all(p.startswith(str(root)) for p in table.path)
    for csv in (root / "metadata" / "UrbanSound8K.csv", root / "outputs" / "predictions.csv", root / "export.csv"):
        csv.unlink()
    with pytest.raises(ValueError, match="folds, not labels.*pass labels_csv"):
        lf.load_labelled_folder(root / "audio")
    (root / "audio" / "extra").mkdir()  # beside another folder the folds are read as labels, and said so
    (root / "audio" / "extra" / "x.wav").symlink_to(wavs[0])
    assert "fold1" in set(lf.load_labelled_folder(root / "audio").label)
    assert "look like folds; if so, pass labels_csv" in capsys.readouterr().out
    named = tmp_path / "fold3"  # a fold folder of {label}_{speaker}_{index} clips: labels from the names
    named.mkdir()
    for w in wavs[:2]:
        (named / w.name).symlink_to(w)
    by_names = lf.load_labelled_folder(named)
    assert list(by_names.label) == ["3", "3"] and set(by_names.fold) == {3}
