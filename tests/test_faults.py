"""Fault suite (issue 16): reruns, resumes, concurrency, kills and bad input, on real files.

Every case either fails with a clear error (naming the file or parameter and the fix) or
recovers and says what it did, and none changes a file the user owns (hashes before/after).
Areas: run folders and results.json, parameters of ``audiolens run``, the per-clip vector cache
(and the layer and AudioMAE caches built on it), AudioMAE checkpoints, downloads, file modes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import lib.core.datasets as ds
from generator import assemble as asm
from generator import cli
from generator.parameter_check import ParameterError
from lib.core.atomic_io import FileInUseError, atomic_write_text, file_lock
from lib.core.audio import load_audio
from lib.core.outputs import read_results, update_results
from lib.core.vector_cache import (
    embed_cache_update,
    vector_cache_fingerprint,
    vector_cache_folder,
    vector_cache_load,
    vector_cache_update,
)
from lib.mae.audiomae import build_audiomae_model
from lib.mae.mae_checkpoints import MaeCheckpointError, load_mae_checkpoint, save_mae_checkpoint
from lib.mae.mae_data import mae_load_split
from lib.mae.mae_training import mae_pretrain
from lib.mae.mae_transforms import build_mae_transform

ROOT = Path(__file__).resolve().parent.parent


def tree_hashes(folder) -> dict:
    """``{relative path: sha256}`` of every file under ``folder``: the user-data check."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def clips(tmp_path, fsdd_dir):
    """Eight real FSDD clips copied into a user folder the tests may damage or change."""
    folder = tmp_path / "user-clips"
    folder.mkdir()
    sources = sorted((fsdd_dir / "recordings").glob("*_jackson_1*.wav"))[:8]
    return [str(shutil.copy(p, folder / p.name)) for p in sources]


class Stats:
    """A real, cheap per-clip vector (level statistics of the waveform) that counts its calls."""

    def __init__(self):
        self.computed = []

    def __call__(self, paths):
        vectors = []
        for p in paths:
            wave = load_audio(p, sr=8000)
            vectors.append([wave.mean(), wave.std(), np.abs(wave).max(), len(wave) / 8000])
        self.computed.extend(paths)
        return np.array(vectors, dtype=np.float32).reshape(len(paths), 4), list(paths), []


CONFIG = {"kind": "fault-stats", "name": "stats", "version": 1}


# ----------------------------------------------------------------------------- the vector cache
def _npy_bytes(array, allow_pickle=False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, a=np.zeros(3))
    return buffer.getvalue()


CORRUPTIONS = {
    "empty npy (EOFError)": ("embeddings.npy", lambda b: b""),
    "truncated npy": ("embeddings.npy", lambda b: b[: len(b) // 2]),
    "npy of another shape": ("embeddings.npy", lambda b: _npy_bytes(np.zeros((3, 4), np.float32))),
    "npy values changed": ("embeddings.npy", lambda b: _npy_bytes(np.load(io.BytesIO(b)) + 1)),
    "pickled object npy": ("embeddings.npy", lambda b: _npy_bytes(np.array([{"x": 1}], dtype=object), True)),
    "truncated zip (BadZipFile)": ("embeddings.npy", lambda b: _zip_bytes()[:40]),
    "a zip instead of npy": ("embeddings.npy", lambda b: _zip_bytes()),
    "npy deleted": ("embeddings.npy", None),
    "metadata not JSON": ("metadata.json", lambda b: b"{not json"),
    "metadata not UTF-8 (UnicodeDecodeError)": ("metadata.json", lambda b: b"\xff\xfe\x00\x81garbage"),
    "metadata a list": ("metadata.json", lambda b: b"[]"),
    "metadata without files": ("metadata.json", lambda b: b'{"version": 2}'),
    "config empty": ("config.json", lambda b: b""),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_vector_cache_is_named_and_rebuilt(kind, clips, tmp_path, capsys):
    compute = Stats()
    fresh, files, _ = embed_cache_update(clips, compute, tmp_path / "cache", "user", CONFIG, verbose=False)
    folder = vector_cache_folder(tmp_path / "cache", "user", CONFIG)
    name, damage = CORRUPTIONS[kind]
    target = folder / name
    if damage is None:
        target.unlink()
    else:
        target.write_bytes(damage(target.read_bytes()))
    user = tree_hashes(Path(clips[0]).parent)
    compute.computed.clear()
    again, files2, report = embed_cache_update(clips, compute, tmp_path / "cache", "user", CONFIG)
    out = capsys.readouterr().out
    assert "cache rebuilt" in out and str(folder) in out and name in report["rebuilt"], out  # the file is named
    assert compute.computed == clips and files2 == files
    np.testing.assert_array_equal(again, fresh)
    compute.computed.clear()
    embed_cache_update(clips, compute, tmp_path / "cache", "user", CONFIG, verbose=False)
    assert compute.computed == []  # the rebuilt cache is valid
    assert tree_hashes(Path(clips[0]).parent) == user


def test_changed_content_with_same_size_and_mtime_is_recomputed(clips, tmp_path):
    compute = Stats()
    embed_cache_update(clips, compute, tmp_path / "cache", "user", CONFIG, verbose=False)
    victim = Path(clips[2])
    stat = victim.stat()
    data = bytearray(victim.read_bytes())
    data[-200:] = bytes(reversed(data[-200:]))  # same size, other samples
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # a tool that keeps the mtime (cp -p, rsync -t)
    assert victim.stat().st_size == stat.st_size and victim.stat().st_mtime_ns == stat.st_mtime_ns
    compute.computed.clear()
    embed_cache_update(clips, compute, tmp_path / "cache", "user", CONFIG, verbose=False)
    assert compute.computed == [str(victim)]


def test_large_files_are_fingerprinted_by_samples(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    before = vector_cache_fingerprint(big)
    data = bytearray(big.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the middle sample
    big.write_bytes(bytes(data))
    assert vector_cache_fingerprint(big) != before and before.startswith(str(3 << 20))
    assert vector_cache_fingerprint(tmp_path / "missing.wav") == "missing"


def test_staging_folders_of_a_killed_writer_are_removed_on_open(clips, tmp_path):
    compute = Stats()
    embed_cache_update(clips[:3], compute, tmp_path / "cache", "user", CONFIG, verbose=False)
    folder = vector_cache_folder(tmp_path / "cache", "user", CONFIG)
    for leftover in (f".{folder.name}.new-abc", f".{folder.name}.old-123"):
        (folder.parent / leftover).mkdir()
        (folder.parent / leftover / "embeddings.npy").write_bytes(b"partial")
    arrays, metadata = vector_cache_load(folder, CONFIG)
    assert arrays is not None and metadata["files"] == clips[:3]
    assert sorted(p.name for p in folder.parent.iterdir()) == sorted([folder.name, f"{folder.name}.lock"])


CONCURRENT_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from lib.core.vector_cache import vector_cache_update
    folder, paths = sys.argv[1], sys.argv[2:]
    def compute(todo):
        time.sleep(0.05)
        return {"v": np.array([[len(p), i] for i, p in enumerate(todo)], np.float32)}, todo, []
    for i in range(12):  # alternate subsets: every call saves, and the two processes' saves interleave
        subset = paths[: 3 + (i % 3)] if i % 2 else paths[(i % 3):]
        vector_cache_update(subset, compute, folder, {"kind": "race"}, verbose=False)
    print("ok")
    """
)


def test_two_processes_saving_one_cache(clips, tmp_path):
    folder = tmp_path / "shared" / "race"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_WRITER, str(folder), *clips],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [w.communicate(timeout=120) for w in writers]
    for writer, (out, err) in zip(writers, results):
        assert writer.returncode == 0 and out.strip() == "ok", err[-2000:]
    arrays, metadata = vector_cache_load(folder, {"kind": "race"})
    assert arrays is not None, metadata
    assert arrays["v"].shape == (len(metadata["files"]), 2)
    assert not [p for p in folder.parent.iterdir() if ".new-" in p.name or ".old-" in p.name]


KILLED_SAVE = textwrap.dedent(
    """
    import os, shutil, sys
    import numpy as np
    import lib.core.vector_cache as vc
    step, folder, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    name, when, nth = step.split(":")
    counts = {}
    class Proxy:
        def __init__(self, module):
            self._module = module
        def __getattr__(self, attr):
            return getattr(self._module, attr)
    def dying(fn, label):
        def wrapper(*args, **kwargs):
            counts[label] = counts.get(label, 0) + 1
            if label == name and when == "before" and counts[label] == int(nth):
                os._exit(9)
            result = fn(*args, **kwargs)
            if label == name and when == "after" and counts[label] == int(nth):
                os._exit(9)
            return result
        return wrapper
    vc.atomic_save_npy = dying(vc.atomic_save_npy, "npy")
    vc.atomic_write_json = dying(vc.atomic_write_json, "json")
    vc.os = Proxy(os)
    vc.os.replace = dying(os.replace, "replace")
    vc.shutil = Proxy(shutil)
    vc.shutil.rmtree = dying(shutil.rmtree, "rmtree")
    def compute(todo):
        return {"v": np.array([[float(len(p)), 1.0] for p in todo], np.float32)}, todo, []
    vc.vector_cache_update(paths, compute, folder, {"kind": "kill"}, verbose=False)
    print("finished without being killed")
    """
)
SAVE_STEPS = {  # kill point -> which cache the next open must find (old: 4 clips, new: 6)
    "npy:before:1": "old",
    "npy:after:1": "old",
    "json:after:1": "old",  # metadata.json written
    "json:after:2": "old",  # config.json written
    "replace:after:1": "old",  # the old folder moved aside, the new one not yet in place
    "replace:after:2": "new",  # the new folder in place, the old copy not yet deleted
    "rmtree:before:1": "new",
}


@pytest.mark.parametrize("step", list(SAVE_STEPS))
def test_kill_at_each_step_of_a_cache_save(step, clips, tmp_path):
    folder = tmp_path / "cache" / "kill"

    def compute(todo):
        return {"v": np.array([[float(len(p)), 1.0] for p in todo], np.float32)}, todo, []

    vector_cache_update(clips[:4], compute, folder, {"kind": "kill"}, verbose=False)
    user = tree_hashes(Path(clips[0]).parent)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, step, str(folder), *clips[:6]],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == 9, killed.stdout + killed.stderr[-2000:]
    arrays, metadata = vector_cache_load(folder, {"kind": "kill"})
    assert arrays is not None, metadata
    assert metadata["files"] == (clips[:4] if SAVE_STEPS[step] == "old" else clips[:6])
    assert not [p.name for p in folder.parent.iterdir() if ".new-" in p.name or ".old-" in p.name]
    calls = []
    arrays, files, _ = vector_cache_update(
        clips[:6], lambda todo: (calls.extend(todo), compute(todo))[1], folder, {"kind": "kill"}, verbose=False
    )
    assert calls == ([] if SAVE_STEPS[step] == "new" else clips[4:6]) and files == clips[:6]
    np.testing.assert_array_equal(arrays["v"], compute(clips[:6])[0]["v"])
    assert tree_hashes(Path(clips[0]).parent) == user


# ----------------------------------------------------------------------------- the caches built on it
@pytest.fixture(scope="module")
def tiny_wav2vec2(tiny_model):
    from lib.core.speech_models import load_speech_model

    return load_speech_model(str(tiny_model("wav2vec2")), local_files_only=True)


@pytest.mark.parametrize("kind", ["empty npy (EOFError)", "truncated zip (BadZipFile)", "metadata not UTF-8"])
def test_corrupt_layer_cache_is_rebuilt_and_keeps_the_model(kind, tiny_wav2vec2, clips, tmp_path, capsys):
    from lib.layers.layer_extraction import extract_layer_embeddings

    cache = tmp_path / "layers"
    first = extract_layer_embeddings(tiny_wav2vec2, clips[:4], ["0", "2"], cache_dir=cache, progress=False)
    (folder,) = [p for p in cache.glob("*/*") if p.is_dir()]
    target = folder / ("metadata.json" if "metadata" in kind else "2.npy")
    target.write_bytes(
        {"empty npy (EOFError)": b"", "metadata not UTF-8": b"\xff\xfe\x81"}.get(kind, _zip_bytes()[:40])
    )
    again = extract_layer_embeddings(tiny_wav2vec2, clips[:4], ["0", "2"], cache_dir=cache, progress=False)
    out = capsys.readouterr().out
    assert "cache rebuilt" in out and target.name in out
    assert not again.from_cache and again.paths == first.paths  # the model is still there, recomputed
    np.testing.assert_allclose(again.embeddings["2"], first.embeddings["2"], atol=1e-6)
    assert extract_layer_embeddings(tiny_wav2vec2, clips[:4], ["0", "2"], cache_dir=cache, progress=False).from_cache


def test_layer_cache_folder_is_absolute(tiny_wav2vec2, tmp_path, monkeypatch):
    from lib.layers.layer_extraction import layer_cache_path

    monkeypatch.chdir(tmp_path)
    path = layer_cache_path("relative/cache", "m", ["0"], "mean", {"model": "m"})
    assert path.is_absolute() and str(path).startswith(str(tmp_path))


@pytest.mark.parametrize("kind", ["empty npy (EOFError)", "pickled object npy"])
def test_corrupt_mae_input_cache_is_named_and_rebuilt(kind, fsdd_manifest, tmp_path, capsys):
    frame = fsdd_manifest.head(6)
    transform = build_mae_transform("log_mel", frames=32)
    first = mae_load_split(frame, transform, cache_dir=tmp_path / "cache")
    (images,) = (tmp_path / "cache").glob("*/images.npy")
    images.write_bytes(b"" if "empty" in kind else _npy_bytes(np.array([{"x": 1}], dtype=object), True))
    capsys.readouterr()
    second = mae_load_split(frame, transform, cache_dir=tmp_path / "cache")
    out = capsys.readouterr().out
    assert "cache rebuilt" in out and str(images) in out
    np.testing.assert_array_equal(second["x"], first["x"])
    mae_load_split(frame, transform, cache_dir=tmp_path / "cache")
    assert "(6 from cache" in capsys.readouterr().out  # the rebuilt cache is used


# ----------------------------------------------------------------------------- AudioMAE checkpoints
TINY_MAE = dict(depth=1, embed_dim=32, num_heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2)


@pytest.fixture(scope="module")
def mae_inputs(fsdd_manifest, tmp_path_factory):
    """Log-mels of two disjoint sets of 8 real clips: the training data and 'other data'."""
    transform = build_mae_transform("log_mel", frames=16)
    cache = tmp_path_factory.mktemp("mae-cache")
    train = fsdd_manifest[fsdd_manifest.split == "train"]
    a = mae_load_split(train.iloc[:8], transform, cache_dir=cache, desc="a")["x"]
    b = mae_load_split(train.iloc[8:16], transform, cache_dir=cache, desc="b")["x"]
    return a, b


def _pretrain(x, folder, epochs=1, resume=True, seed=0, lr=1e-3, **overrides):
    torch.manual_seed(seed)
    model = build_audiomae_model("audiomae++", "tiny", input_size=(80, 16), **{**TINY_MAE, **overrides})
    history = mae_pretrain(
        model, x, epochs=epochs, batch_size=4, lr=lr, checkpoint_dir=folder, resume=resume, seed=seed, progress=False
    )
    return model, history


def test_resume_false_moves_the_old_checkpoint_aside(mae_inputs, tmp_path, capsys):
    x, _ = mae_inputs
    _pretrain(x, tmp_path, epochs=2)
    first = capsys.readouterr().out  # each epoch says what the rest costs at this run's pace, none after the last
    assert re.search(r"epoch 1/2: .* clips/s; 1 epoch\(s\) left, about \d+ (s|min)", first) and "epoch 2/2" in first
    assert "left" not in first.split("epoch 2/2")[1]
    old = hashlib.sha256((tmp_path / "last.pt").read_bytes()).hexdigest()
    _, history = _pretrain(x, tmp_path, epochs=1, resume=False)
    out = capsys.readouterr().out
    moved = Path(history["moved_aside"])
    assert moved.parent == tmp_path and moved.name.startswith("last.replaced-") and str(moved) in out
    assert hashlib.sha256(moved.read_bytes()).hexdigest() == old  # the 2-epoch checkpoint is intact
    assert load_mae_checkpoint(moved)["epoch"] == 1 and load_mae_checkpoint(tmp_path / "last.pt")["epoch"] == 0


@pytest.mark.parametrize(
    "change, key",
    [
        (dict(data="other"), "data"),
        (dict(seed=1), "seed"),
        (dict(lr=5e-3), "lr"),
    ],
)
def test_resume_with_other_data_or_settings_stops_with_the_differences(change, key, mae_inputs, tmp_path):
    a, b = mae_inputs
    _pretrain(a, tmp_path, epochs=1)
    before = tree_hashes(tmp_path)
    x = b if change.pop("data", None) else a
    with pytest.raises(MaeCheckpointError) as error:
        _pretrain(x, tmp_path, epochs=2, **change)
    message = str(error.value)
    assert f"{key}: checkpoint" in message and "resume='force'" in message and "resume=False" in message
    assert tree_hashes(tmp_path) == before
    _, history = _pretrain(x, tmp_path, epochs=2, resume="force", **change)  # explicit: continues
    assert history["start_epoch"] == 1 and len(history["loss"]) == 2


def test_fewer_epochs_than_done_skips_training_and_says_so(mae_inputs, tmp_path, capsys):
    x, _ = mae_inputs
    trained, _ = _pretrain(x, tmp_path, epochs=2)
    before = tree_hashes(tmp_path)
    model, history = _pretrain(x, tmp_path, epochs=1)
    assert "asks for fewer" in capsys.readouterr().out
    assert history["skipped"] and history["epochs_done"] == 2 and len(history["loss"]) == 2
    for (name, p), q in zip(model.state_dict().items(), trained.state_dict().values()):
        assert torch.equal(p.cpu(), q.cpu()), name
    assert tree_hashes(tmp_path) == before


def test_zero_epochs_without_checkpoint_says_there_is_no_pretraining(mae_inputs, tmp_path, capsys):
    x, _ = mae_inputs
    _, history = _pretrain(x, tmp_path, epochs=0)
    assert "no pretraining" in capsys.readouterr().out
    assert history["loss"] == [] and not (tmp_path / "last.pt").exists()
    with pytest.raises(ValueError, match="epochs must be"):
        _pretrain(x, tmp_path, epochs=-1)


def test_a_checkpoint_saved_before_a_config_key_existed_loads_with_its_old_meaning(tmp_path):
    old = build_audiomae_model("audiomae++", "tiny", input_size=(80, 16), **TINY_MAE)
    del old.config["loss_on_constant_patches"]  # as saved before the key existed, when all patches counted
    save_mae_checkpoint(tmp_path / "last.pt", old, epoch=0, history={"loss": [1.0]})
    today = build_audiomae_model("audiomae++", "tiny", input_size=(80, 16), **TINY_MAE)
    assert load_mae_checkpoint(tmp_path / "last.pt", model=today)["epoch"] == 0  # the default: the same objective
    other = build_audiomae_model("audiomae++", "tiny", input_size=(80, 16), loss_on_constant_patches=False, **TINY_MAE)
    with pytest.raises(MaeCheckpointError, match="loss_on_constant_patches: checkpoint True vs model False"):
        load_mae_checkpoint(tmp_path / "last.pt", model=other)


def test_checkpoint_without_training_record_is_not_resumed_silently(mae_inputs, tmp_path):
    x, _ = mae_inputs
    model = build_audiomae_model("audiomae++", "tiny", input_size=(80, 16), **TINY_MAE)
    save_mae_checkpoint(tmp_path / "last.pt", model, epoch=0, history={"loss": [1.0]})  # older format
    with pytest.raises(MaeCheckpointError, match="no training record"):
        _pretrain(x, tmp_path, epochs=2)


# ----------------------------------------------------------------------------- results.json
def test_results_of_another_run_are_never_merged(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUDIOLENS_RUN_ID", "run-A")
    update_results(tmp_path, accuracy={"svm": 0.9}, data={"n": 100})
    old = (tmp_path / "results.json").read_bytes()
    monkeypatch.setenv("AUDIOLENS_RUN_ID", "run-B")
    update_results(tmp_path, data={"n": 50})
    results = read_results(tmp_path)
    assert "run-A" in capsys.readouterr().out
    assert set(results) == {"run", "data"} and results["run"]["id"] == "run-B"  # no 'accuracy' from run A
    assert (tmp_path / "results.previous.json").read_bytes() == old
    update_results(tmp_path, accuracy={"svm": 0.5})  # the same run adds sections
    assert json.loads((tmp_path / "results.json").read_text())["data"] == {"n": 50}
    (tmp_path / "results.json").write_bytes(b"\xff{broken")
    update_results(tmp_path, data={"n": 1})
    assert set(read_results(tmp_path)) == {"run", "data"}  # unreadable: kept aside, started afresh
    assert (tmp_path / "results.previous.json").read_bytes() == b"\xff{broken"
    with pytest.raises(ValueError, match="run record"):
        update_results(tmp_path, run={"id": "forged"})


# ----------------------------------------------------------------------------- audiolens run
TOY_GOOD = """# %% [markdown]
# # Toy
#
# Records a value.

# %% tags=["parameters"]
output_dir = "runs/toy"  # [str] output folder
seed = 0  # [int 0..] seed
data_path = None  # [path] unused
n = 2  # [int 1..] a count
models = ["a"]  # [each str] model ids
mode = "fast"  # [fast|slow] how

# %%
from lib.core.outputs import prepare_output_dir, update_results

out = prepare_output_dir(output_dir)
update_results(out, toy={"value": n * 21, "models": models})
"""
TOY_FAIL = TOY_GOOD.replace('update_results(out, toy={"value": n * 21, "models": models})', "raise IndexError(n)")
TOY_DIE = TOY_GOOD.replace(
    'update_results(out, toy={"value": n * 21, "models": models})',
    'update_results(out, partial={"n": n})\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)',
)


@pytest.fixture
def toys(toy_recipes_at):
    return toy_recipes_at({"toy_good": TOY_GOOD, "toy_fail": TOY_FAIL, "toy_die": TOY_DIE})


BAD_PARAMETERS = {
    "unknown name, closest suggested": (["-p", "nn", "3"], "nn: not a parameter of toy_good; did you mean 'n'?"),
    "list whose quotes the shell ate": (["-p", "models", "[a/b]"], "looks like a list but does not parse"),
    "not a whole number": (["-p", "n", "ten"], "'ten' is not a whole number"),
    "zero count is not 'all'": (["-p", "n", "0"], "below the smallest allowed value 1"),
    "negative count": (["-p", "n", "-1"], "below the smallest allowed value 1"),
    "not a choice": (["-p", "mode", "fsat"], "did you mean 'fast'?"),
    "missing path": (["-p", "data_path", "/no/such/folder"], "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_PARAMETERS))
def test_bad_parameters_exit_2_before_any_work(case, toys, capsys):
    argv, expected = BAD_PARAMETERS[case]
    out = toys / "out"
    assert cli.main(["run", "toy_good", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Nothing was run" in err
    assert not out.exists()  # refused before the folder, the kernel or any file


def test_audiomae_parameters_are_declared_and_checked():
    schema = asm.parameter_schema("audiomae_training")
    assert all(entry["spec"] for entry in schema.values()), [k for k, e in schema.items() if not e["spec"]]
    assert cli.check_run_parameters("audiomae_training", [("resume", "force"), ("pretrain_epochs", "0")]) == {
        "resume": "force",
        "pretrain_epochs": 0,
    }
    renamed = cli.check_run_parameters("audiomae_training", [("torch_threads", "2")])
    assert renamed == {"cpu_threads": 2}  # the old name maps to the new one
    for key, value, expected in [
        ("max_train_clips", "0", "below the smallest allowed value 1"),
        ("pretrain_epochs", "ten", "not a whole number"),
        ("resume", "maybe", "not one of True, False, force"),
        ("size", "huge", "not one of tiny, small, base"),
        ("mask_ratio", "1.0", "above the largest allowed value 0.95"),
        ("pretrain_epoch", "3", "did you mean 'pretrain_epochs'?"),
    ]:
        with pytest.raises(ParameterError, match=expected):
            cli.check_run_parameters("audiomae_training", [(key, value)])


def test_reused_out_is_refused_and_left_untouched(toys, capsys):
    out = toys / "earlier"
    out.mkdir()
    (out / "results.json").write_text('{"run": {"id": "r1", "notebook": "toy_good", "status": "complete"}}')
    (out / "model.pt").write_bytes(b"weights")
    before = tree_hashes(out)
    assert cli.main(["run", "toy_good", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not empty (run r1 of toy_good, status complete" in err and "--resume" in err and "--overwrite" in err
    assert tree_hashes(out) == before and sorted(p.name for p in out.iterdir()) == ["model.pt", "results.json"]


def test_overwrite_refuses_a_folder_that_is_not_a_run(toys, capsys):
    out = toys / "my-thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    before = tree_hashes(out)
    assert cli.main(["run", "toy_good", "--out", str(out), "--overwrite"]) == 2
    assert "not an audiolens run folder; nothing was deleted" in capsys.readouterr().err
    assert tree_hashes(out) == before


def test_a_folder_in_use_names_the_other_run(toys, capsys):
    out = toys / "busy"
    with file_lock(out / cli.RUN_LOCK_NAME, timeout=0, info={"run_id": "the-other-run"}):
        assert cli.main(["run", "toy_good", "--out", str(out), "--resume"]) == 2
        err = capsys.readouterr().err
        assert f"in use by pid {os.getpid()}" in err and "the-other-run" in err
        with pytest.raises(FileInUseError):
            cli.execute_notebook("toy_good", {}, out, build_first=False)


@pytest.mark.notebook
def test_runs_own_their_folder_and_a_failed_rerun_never_mixes_results(toys, monkeypatch, capsys):
    monkeypatch.setattr(asm, "ROOT", toys)  # default run folders go under the temp folder
    assert cli.main(["run", "toy_good", "-p", "n", "3"]) == 0
    (first,) = (toys / "runs" / "toy_good").iterdir()
    results = json.loads((first / "results.json").read_text())
    run = results["run"]
    assert run["id"] == first.name and run["status"] == "complete" and run["parameters"]["n"] == 3
    assert results["toy"] == {"value": 63, "models": ["a"]}
    # rerun into the same folder (explicitly) with a notebook that fails midway
    assert cli.main(["run", "toy_fail", "--out", str(first), "--resume"]) == 1
    capsys.readouterr()
    failed = json.loads((first / "results.json").read_text())
    assert set(failed) == {"run"}, "no section of the earlier run survives in the failed run's results"
    assert failed["run"]["status"].startswith("failed at cell") and "IndexError" in failed["run"]["status"]
    index = int(re.search(r"failed at cell (\d+)", failed["run"]["status"]).group(1))
    saved = json.loads((first / "toy_fail.ipynb").read_text())["cells"][index]  # the index of the saved notebook
    assert saved["metadata"]["papermill"]["status"] == "failed" and saved["outputs"][-1]["ename"] == "IndexError"
    assert failed["run"]["previous_run"] == run["id"] and failed["run"]["id"] != run["id"]
    assert json.loads((first / "results.previous.json").read_text())["toy"]["value"] == 63
    # --overwrite empties an earlier run's folder
    assert cli.main(["run", "toy_good", "--out", str(first), "--overwrite", "-p", "n", "1"]) == 0
    assert "deleted" in capsys.readouterr().out
    assert not (first / "results.previous.json").exists()
    assert json.loads((first / "results.json").read_text())["toy"]["value"] == 21


@pytest.mark.notebook
def test_a_killed_kernel_is_one_line_with_the_partial_notebook(toys, capsys):
    out = toys / "killed"
    assert cli.main(["run", "toy_die", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert re.search(r"failed at cell \d+ \(out = prepare_output_dir\(output_dir\)\): the kernel died", err), err
    assert str(out / "toy_die.ipynb") in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (out / "toy_die.ipynb").exists()
    run = json.loads((out / "results.json").read_text())
    assert run["partial"] == {"n": 2} and run["run"]["status"].startswith("failed at cell")
    assert "kernel died" in run["run"]["status"]


# ----------------------------------------------------------------------------- downloads
@pytest.fixture
def mini_fsdd_archive(tmp_path, fsdd_dir):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for wav in sorted((fsdd_dir / "recordings").glob("*_theo_2*.wav"))[:12]:
            tar.add(wav, arcname=f"mini-fsdd-1.0/recordings/{wav.name}")
    return buffer.getvalue()


def test_extraction_keeps_the_users_incomplete_folder(tmp_path, monkeypatch, mini_fsdd_archive, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUDIOLENS_DATA", str(tmp_path / "nowhere"))
    spec = replace(
        ds.DATASETS["fsdd"], url="http://127.0.0.1:9/mini.tar.gz", min_files=12, archive_root="mini-fsdd-1.0"
    )
    monkeypatch.setitem(ds.DATASETS, "fsdd", spec)
    data = tmp_path / "data"
    (data / "fsdd" / "recordings").mkdir(parents=True)
    (data / "fsdd" / "my_notes.txt").write_text("labels I fixed by hand")
    (data / "fsdd" / "recordings" / "0_me_0.wav").write_bytes(b"my own take")
    (data / ".downloads").mkdir()
    (data / ".downloads" / "mini.tar.gz").write_bytes(mini_fsdd_archive)  # an earlier download, kept
    (data / ".fsdd.extract-killed").mkdir()  # what a killed extraction left
    user = tree_hashes(data / "fsdd")
    folder = ds.find_dataset("fsdd")
    assert folder == data / "fsdd" and len(list((folder / "recordings").glob("*.wav"))) == 12
    (aside,) = data.glob("fsdd.incomplete-*")
    assert str(aside) in capsys.readouterr().out and tree_hashes(aside) == user  # nothing of the user's lost
    assert sorted(p.name for p in data.iterdir()) == sorted([".downloads", "fsdd", aside.name])


def test_failed_download_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUDIOLENS_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setitem(ds.DATASETS, "fsdd", replace(ds.DATASETS["fsdd"], url="http://127.0.0.1:9/fsdd.tar.gz"))
    with pytest.raises(ds.DatasetNotFoundError, match="download from http://127.0.0.1:9/fsdd.tar.gz failed"):
        ds.find_dataset("fsdd")
    assert not (tmp_path / "data").exists()  # no empty data/ or data/.downloads, no .part file


# ----------------------------------------------------------------------------- file modes
@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_files_follow_the_umask(umask, file_mode, dir_mode, tmp_path, clips):
    previous = os.umask(umask)
    try:
        text = atomic_write_text(tmp_path / "a.txt", "x")
        folder = tmp_path / "cache" / "modes"
        vector_cache_update(clips[:2], Stats(), folder, CONFIG, verbose=False)
        with file_lock(tmp_path / "x.lock"):
            pass
    finally:
        os.umask(previous)
    assert text.stat().st_mode & 0o777 == file_mode
    assert (folder / "embeddings.npy").stat().st_mode & 0o777 == file_mode
    assert folder.stat().st_mode & 0o777 == dir_mode
    assert (tmp_path / "x.lock").stat().st_mode & 0o777 == file_mode


def test_checkpointed_chunks_where_one_chunk_fails_entirely(clips, tmp_path):
    broken = Path(clips[0]).with_name("9_broken_0.wav")
    broken.write_bytes(b"RIFF0000WAVEjunk")

    def compute(todo):  # real audio; an unreadable clip is a failure, not a crash
        ok, rows, failures = [], [], []
        for p in todo:
            try:
                wave = load_audio(p, sr=8000)
            except Exception as error:  # noqa: BLE001 - any failure is the clip's, as in the notebooks
                failures.append({"path": p, "error": str(error)})
                continue
            ok.append(p)
            rows.append([wave.std(), len(wave)])
        return np.array(rows, np.float32).reshape(len(ok), -1 if ok else 0), ok, failures

    paths = [str(broken)] + clips[:3]
    arrays, files, report = vector_cache_update(paths, compute, tmp_path / "c", CONFIG, checkpoint_every=1)
    assert files == clips[:3] and arrays["embeddings"].shape == (3, 2) and report["n_failed"] == 1
    assert report["failed"][0]["path"] == str(broken)
    again, _, report = vector_cache_update(paths, compute, tmp_path / "c", CONFIG, verbose=False)
    assert report["n_computed"] == 0 and np.array_equal(again["embeddings"], arrays["embeddings"])


def test_results_json_is_strict_json(tmp_path, monkeypatch):
    """NaN and infinities (a metric with nothing to measure) are written as null, which any JSON reader takes."""
    monkeypatch.setenv("AUDIOLENS_RUN_ID", "run-strict")
    update_results(tmp_path, exp={"recovery": float("nan"), "gains": [np.inf, 1.5], "n": np.float32("nan"), "k": 3})

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    strict = json.loads((tmp_path / "results.json").read_text(), parse_constant=refuse)
    assert strict["exp"] == {"recovery": None, "gains": [None, 1.5], "n": None, "k": 3}
