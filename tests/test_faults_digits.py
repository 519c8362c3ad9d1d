"""Fault cases of the digit notebook (issue 16): bad parameters, a 2-class SVM, a tiny custom folder,
crafted and tampered model files. Each asserts the clear error (or the recovery) and that no user file
changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import joblib
import numpy as np
import pytest

from generator.assemble import parameter_schema
from generator.parameter_check import ParameterError, audiolens_check_parameters
from generator.recipes import RENAMED_PARAMETERS
from lib.digits.digit_features import DigitFeatureConfig, digit_feature_vectors, load_digit_waves


def _hashes(folder: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def schema():
    return parameter_schema("digit_classification")


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("cnn_epochs", "ten", "not a whole number"),
        ("cnn_epochs", -1, "below the smallest allowed value 1"),
        ("max_train_clips", 0, "below the smallest allowed value 1"),
        ("max_loso_clips", -5, "below the smallest allowed value 1"),
        ("zero_shot_max_clips", 0, "below the smallest allowed value 1"),
        ("augment_copies", -1, "below the smallest allowed value 0"),
        ("encoder_epochs", 2.5, "not a whole number"),
        ("encoder_whisper_mode", "clips", "did you mean 'clip'"),
        ("encoder_pooling", "max", "not one of mean, mean\\+std, attention"),
        ("loso_models", ["svm", "lstm"], "'lstm' is not one of"),
        ("models", "[svm/cnn]", "(looks like a list|is not one of)"),
        ("eval_folder", "/no/such/folder/of/digits", "does not exist"),
        ("vad_threshold_rms", 0, "below the smallest"),
        ("temperature", 0.0, "below the smallest"),
        ("confidence_threshold", 1.5, "above the largest"),
        ("cnn_lr_grid", [0.002, -1.0], "below the smallest"),
        ("sample_rate", "8k", "not a whole number"),
        ("live_model", "lstm", "not one of best"),
    ],
)
def test_bad_parameter_is_a_clear_error_before_any_work(schema, name, value, message):
    namespace = {key: entry["default"] for key, entry in schema.items()}
    namespace[name] = value
    with pytest.raises(ParameterError, match=f"{name}: .*{message}"):
        audiolens_check_parameters(
            namespace, schema, RENAMED_PARAMETERS["digit_classification"], "digit_classification"
        )


def test_defaults_and_old_names_pass_the_check(schema):
    namespace = {key: entry["default"] for key, entry in schema.items()}
    assert audiolens_check_parameters(dict(namespace), schema) == []
    namespace.update(loso_models=[], threads=1, eval_folder=None)
    messages = audiolens_check_parameters(namespace, schema, RENAMED_PARAMETERS["digit_classification"])
    assert namespace["cpu_threads"] == 1 and "threads" not in namespace
    assert any("'threads' is now 'cpu_threads'" in m for m in messages)


def test_every_digit_parameter_is_declared(schema):
    """Counts and sizes have a range, choices a choice list, optional paths [path]."""
    free = {"output_dir", "encoder_model", "wav2vec2_model", "gamma_grid", "encoder_layers", "stream_digits"}
    for name, entry in schema.items():
        default, spec = entry["default"], entry["spec"]
        if isinstance(default, bool) or name in free:
            continue
        assert spec, f"{name} has no [spec] in its comment"
        if isinstance(default, (int, float)):
            assert ".." in spec or "|" in spec, f"{name}: numbers need a range or choices, got {spec}"


# ---------------------------------------------------------------- two classes, tiny folders


@pytest.fixture(scope="module")
def two_digit_clips(fsdd_manifest):
    frame = fsdd_manifest[fsdd_manifest.label.isin([3, 8])].groupby(["label", "speaker"]).head(3)
    waves, frame, _ = load_digit_waves(frame, 8000, progress=False)
    return waves, frame


def test_two_class_svm_gives_probabilities_and_reloads(two_digit_clips, tmp_path, monkeypatch):
    from lib.digits.digit_models import SklearnDigitModel, grid_search_digit_pipeline
    from lib.digits.live_digits import StreamingDigitRecognizer, stream_audio_file
    from lib.digits.model_files import load_digit_model, save_sklearn_digit_model

    monkeypatch.setenv("AUDIOLENS_SIGNING_KEY", str(tmp_path / "key"))
    waves, frame = two_digit_clips
    config = DigitFeatureConfig(cmvn=True)
    X = digit_feature_vectors(waves, config)
    search = grid_search_digit_pipeline(X, frame.label.to_numpy(), pca_components=128, C_grid=(1.0,), cv_folds=3)
    model = SklearnDigitModel(search.best_estimator_, config)
    proba = model.predict_proba(waves, temperature=2.0)
    assert proba.shape == (len(waves), 2) and np.allclose(proba.sum(axis=1), 1.0)
    # the more probable class is the SVC's own prediction
    np.testing.assert_array_equal(np.asarray(model.labels)[proba.argmax(1)], search.best_estimator_.predict(X))
    assert float(np.mean(model.predict(waves) == frame.label.to_numpy())) > 0.8  # training clips
    reloaded = load_digit_model(save_sklearn_digit_model(model, tmp_path / "two.joblib"))
    np.testing.assert_allclose(reloaded.predict_proba(waves, temperature=2.0), proba)
    events = stream_audio_file(
        np.concatenate([np.zeros(4000), waves[0] / np.abs(waves[0]).max() * 0.5, np.zeros(4000)]).astype(np.float32),
        StreamingDigitRecognizer(model, confidence_threshold=0.0),
    )
    assert len(events) == 1 and events[0]["digit"] in (3, 8)


@pytest.mark.parametrize("n_per_class", [2, 3, 5])
def test_pca_cap_respects_the_cross_validation_fold(two_digit_clips, n_per_class):
    from lib.digits.digit_models import grid_search_digit_pipeline

    waves, frame = two_digit_clips
    keep = frame.groupby("label").head(n_per_class).index
    X = digit_feature_vectors([waves[i] for i in keep], DigitFeatureConfig())
    y = frame.label.to_numpy()[keep]
    search = grid_search_digit_pipeline(X, y, pca_components=128, C_grid=(1.0,), cv_folds=5)
    info = search.audiolens_info
    fold_train = len(X) - int(np.ceil(len(X) / info["cv_folds"]))
    assert info["pca_requested"] == 128 and info["pca_components"] <= fold_train
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_single_class_folder_is_a_clear_error(two_digit_clips):
    from lib.digits.digit_models import grid_search_digit_pipeline

    waves, frame = two_digit_clips
    X = digit_feature_vectors(waves[:4], DigitFeatureConfig())
    with pytest.raises(ValueError, match="at least 2 classes"):
        grid_search_digit_pipeline(X, np.array([3, 3, 3, 3]), cv_folds=2)


# ---------------------------------------------------------------- crafted and tampered .joblib files


class _Payload:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture
def signed_svm(tmp_path, two_digit_clips, monkeypatch):
    from lib.digits.digit_models import SklearnDigitModel, make_digit_pipeline
    from lib.digits.model_files import save_sklearn_digit_model

    monkeypatch.setenv("AUDIOLENS_SIGNING_KEY", str(tmp_path / "keys" / "signing.key"))
    waves, frame = two_digit_clips
    config = DigitFeatureConfig()
    pipeline = make_digit_pipeline(pca_components=8).fit(digit_feature_vectors(waves, config), frame.label)
    folder = tmp_path / "models"
    path = save_sklearn_digit_model(SklearnDigitModel(pipeline, config), folder / "svm.joblib")
    return path


@pytest.mark.parametrize("case", ["unsigned", "forged_sha256_sidecar", "other_key", "tampered", "garbage_sidecar"])
def test_crafted_joblib_never_runs_code(case, signed_svm, tmp_path, monkeypatch):
    from lib.digits.model_files import ModelFileError, digit_signature_path, load_digit_model

    folder = signed_svm.parent
    marker = tmp_path / "code-ran"
    crafted = folder / "crafted.joblib"
    joblib.dump({"format": "audiolens-digit-sklearn/1", "pipeline": _Payload(marker)}, crafted)
    sidecar = digit_signature_path(crafted)
    expected = "unsigned"
    if case == "forged_sha256_sidecar":  # a correct plain SHA-256 is not enough: the HMAC needs the user's key
        digest = hashlib.sha256(crafted.read_bytes()).hexdigest()
        sidecar.write_text(f'{{"sha256": "{digest}", "hmac_sha256": "{digest}"}}')
        expected = "signed with another audiolens key"
    elif case == "other_key":  # signed properly, but by someone else's key
        from lib.digits.model_files import sign_digit_model_file

        monkeypatch.setenv("AUDIOLENS_SIGNING_KEY", str(tmp_path / "attacker.key"))
        sign_digit_model_file(crafted)
        monkeypatch.setenv("AUDIOLENS_SIGNING_KEY", str(tmp_path / "keys" / "signing.key"))
        expected = "signed with another audiolens key"
    elif case == "tampered":  # the real model's bytes replaced, its sidecar kept
        crafted.unlink()
        crafted = signed_svm
        original_sidecar = digit_signature_path(signed_svm).read_text()
        joblib.dump({"format": "audiolens-digit-sklearn/1", "pipeline": _Payload(marker)}, crafted)
        assert digit_signature_path(signed_svm).read_text() == original_sidecar
        expected = "changed since audiolens saved it"
    elif case == "garbage_sidecar":
        sidecar.write_bytes(b"\xff\xfe not json")
        expected = "unreadable signature file"
    before = _hashes(folder)
    with pytest.raises(ModelFileError, match=expected) as error:
        load_digit_model(crafted)
    assert "trust_digit_model_file" in str(error.value) and crafted.name in str(error.value)
    assert not marker.exists(), "unpickling ran the crafted payload"
    assert _hashes(folder) == before  # nothing changed or was deleted


def test_signed_model_loads_and_trusting_is_explicit(signed_svm, tmp_path, two_digit_clips):
    from lib.digits.model_files import (
        ModelFileError,
        digit_signature_path,
        load_digit_model,
        trust_digit_model_file,
    )

    waves, _ = two_digit_clips
    model = load_digit_model(signed_svm)
    assert model.predict(waves[:3]).shape == (3,)
    copy = tmp_path / "elsewhere" / "svm.joblib"  # a model copied without its sidecar
    copy.parent.mkdir()
    copy.write_bytes(signed_svm.read_bytes())
    with pytest.raises(ModelFileError, match="unsigned"):
        load_digit_model(copy)
    trust_digit_model_file(copy)
    assert digit_signature_path(copy).exists()
    np.testing.assert_array_equal(load_digit_model(copy).predict(waves[:3]), model.predict(waves[:3]))


def test_signing_key_is_private(signed_svm):
    from lib.digits.model_files import digit_signing_key_path

    key = digit_signing_key_path()
    assert key.exists() and (key.stat().st_mode & 0o077) == 0 and len(key.read_bytes()) == 32


def test_truncated_signed_model_is_reported_not_unpickled(signed_svm):
    from lib.digits.model_files import ModelFileError, load_digit_model, sign_digit_model_file

    data = signed_svm.read_bytes()
    signed_svm.write_bytes(data[:300])
    sign_digit_model_file(signed_svm)  # signed, but truncated: the unpickler reports it
    with pytest.raises(ModelFileError, match="not a readable joblib file"):
        load_digit_model(signed_svm)
