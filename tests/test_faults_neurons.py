"""Neuron analysis under bad input: damaged projector files, too few utterances, bad parameters."""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pytest

from generator.assemble import parameter_schema
from generator.parameter_check import ParameterError, audiolens_check_parameters
from lib.neurons.neuron_tuning import check_enough_utterances
from lib.neurons.semantic_projector import (
    ProjectorFileError,
    fit_semantic_projector,
    load_or_refit_projector,
    load_projector,
    save_projector,
)


def _projector():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(loc=i, size=(10, 6)) for i in range(4)])
    return fit_semantic_projector(x, np.repeat(list("abcd"), 10), source={"layer": 2})


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _damaged(kind: str, good: bytes) -> bytes:
    p = _projector()
    fields = dict(format=2, mean=p.mean, scale=p.scale, components=p.components, offset=p.offset, method=p.method,
                  labels=p.labels.astype(str), centroids=p.centroids, source="{}")  # fmt: skip
    if kind == "not a zip (BadZipFile)":
        return b"PK\x03\x04 this is not really a zip archive" * 10
    if kind == "empty (EOFError)":
        return b""
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "garbled array header":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.writestr("format.npy", b"\x93NUMPY\x01\x00\x76\x00" + b"{'descr': '<i8', " + b"\xff\xfe\xfa" * 40)
        return buffer.getvalue()
    if kind == "wrong shape":
        return _npz(**{**fields, "components": np.zeros((3, 5))})
    if kind == "missing field":
        return _npz(**{k: v for k, v in fields.items() if k != "centroids"})
    if kind == "foreign format":
        return _npz(**{**fields, "format": 99})
    raise AssertionError(kind)


KINDS = [
    "not a zip (BadZipFile)",
    "empty (EOFError)",
    "truncated",
    "garbled array header",
    "wrong shape",
    "missing field",
    "foreign format",
]


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_projector_is_named_then_refitted_and_left_untouched(tmp_path, kind):
    good = save_projector(_projector(), tmp_path / "good.npz").read_bytes()
    bad = tmp_path / "projector.npz"
    bad.write_bytes(_damaged(kind, good))
    before = hashlib.sha256(bad.read_bytes()).hexdigest()
    with pytest.raises(ProjectorFileError, match="projector.npz") as info:
        load_projector(bad)
    assert "refit" in str(info.value)
    projector, note = load_or_refit_projector(bad, _projector, save_to=tmp_path / "out" / "refitted.npz")
    assert projector.components.shape == (6, 3) and "damaged" in note and "refitted" in note
    assert load_projector(tmp_path / "out" / "refitted.npz").components.shape == (6, 3)
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == before  # the user's file is not changed


def test_good_and_old_format_projectors_load(tmp_path):
    p = _projector()
    assert load_or_refit_projector(save_projector(p, tmp_path / "p.npz"), _projector)[1].startswith("loaded")
    old = tmp_path / "old.npz"  # format 1: two dimensions
    fields = dict(mean=p.mean, scale=p.scale, components=p.components[:, :2], offset=p.offset[:2], method=p.method)
    old.write_bytes(_npz(format=1, labels=p.labels.astype(str), centroids=p.centroids[:, :2], source="{}", **fields))
    assert load_projector(old).transform(np.zeros((1, 6))).shape == (1, 2)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_projector(tmp_path / "missing.npz")


def test_too_few_utterances_stop_before_scikit_learn():
    with pytest.raises(ValueError, match="at least 2 utterances.*n_utterances"):
        check_enough_utterances(1, 8)
    with pytest.raises(ValueError, match="too few for 6 clusters"):
        check_enough_utterances(3, 3, n_frames=8, n_clusters=6)
    check_enough_utterances(2, 2, n_frames=400, n_clusters=6)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"n_utterances": 1}, "n_utterances"),
        ({"n_utterances": 0}, "n_utterances"),
        ({"layers": [2, -1]}, "layers"),
        ({"weights": "checkpoint"}, "weights"),
        ({"throttle_policy": "queue"}, "throttle_policy"),
        ({"stream_attention": "causal"}, "stream_attention"),
        ({"stream_update_s": 0}, "stream_update_s"),
        ({"fdr_alpha": 2}, "fdr_alpha"),
        ({"projector_path": "/nonexistent/projector.npz"}, "projector_path"),
        ({"smoothing_alpha": 0}, "smoothing_alpha"),
    ],
)
def test_bad_parameters_are_rejected_before_any_work(params, message):
    schema = parameter_schema("neuron_analysis")
    with pytest.raises(ParameterError, match=message):
        audiolens_check_parameters(dict(params), schema, notebook="neuron_analysis")


def test_every_parameter_has_a_spec_or_is_free_text():
    schema = parameter_schema("neuron_analysis")
    free_text = {"output_dir", "model_name", "fallback_model", "whisper_model"}
    missing = [name for name, entry in schema.items() if not entry.get("spec") and name not in free_text]
    assert not missing, f"parameters without a spec: {missing}"
