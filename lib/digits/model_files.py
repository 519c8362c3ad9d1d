# %% [markdown]
# # Saved digit models: save, load, predict files
#
# Three formats, each written atomically and each carrying what is needed to use it again:
#
# | model | on disk |
# |---|---|
# | scikit-learn pipeline | `name.joblib`: the pipeline, its feature config and labels |
# | CNN | `name.pt` (PyTorch state dict) + `name.json` (architecture + front-end config) |
# | Wav2Vec2 | a `save_pretrained` folder (model + feature extractor) |
#
# `load_digit_model(path)` recognises any of them and returns a model with the common
# interface (`predict`, `predict_proba`, `labels`, `sample_rate`). A missing, corrupt or
# mismatched file raises `ModelFileError` saying which file, what is wrong and what to do.
# `predict_audio_files` runs a model over a file or a folder of clips. A `.joblib` file is a
# pickle: load only files you trust (the CNN's state dict is read with `weights_only=True`).

# %%
import io
import json
import pickle
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import torch

from lib.core.atomic_io import atomic_write_bytes, atomic_write_json
from lib.core.audio import AUDIO_EXTENSIONS, load_audio_batch
from lib.digits.digit_features import DigitFeatureConfig
from lib.digits.digit_models import CnnDigitModel, DigitCnn, DigitCnnConfig, SklearnDigitModel
from lib.digits.wav2vec2_finetune import Wav2Vec2DigitModel, Wav2Vec2Unavailable

SKLEARN_FORMAT = "audiolens-digit-sklearn/1"
CNN_FORMAT = "audiolens-digit-cnn/1"


class ModelFileError(ValueError):
    """A saved model cannot be used; the message names the file, the problem and the fix."""

    def __init__(self, path, problem: str, hint: str = ""):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}" + (f". {hint}" if hint else ""))


def save_sklearn_digit_model(model: SklearnDigitModel, path) -> Path:
    """Write ``model`` (pipeline + feature config + labels) to a ``.joblib`` file."""
    path = Path(path)
    buffer = io.BytesIO()
    joblib.dump(
        {
            "format": SKLEARN_FORMAT,
            "pipeline": model.pipeline,
            "feature_config": model.feature_config.to_dict(),
            "labels": list(model.labels),
        },
        buffer,
    )
    return atomic_write_bytes(path, buffer.getvalue())


def save_cnn_digit_model(model: CnnDigitModel, path) -> Path:
    """Write the CNN's state dict to ``path`` (``.pt``) and its config to the ``.json`` beside it."""
    path = Path(path).with_suffix(".pt")
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.network.state_dict().items()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_json(path.with_suffix(".json"), {"format": CNN_FORMAT, "config": model.config.to_dict()})
    return path


def save_wav2vec2_digit_model(model: Wav2Vec2DigitModel, folder) -> Path:
    """``save_pretrained`` folder + ``audiolens.json`` (input sample rate, clip cap)."""
    folder = Path(folder)
    model.save(folder)
    atomic_write_json(
        folder / "audiolens.json",
        {
            "format": "audiolens-digit-wav2vec2/1",
            "input_sample_rate": model.sample_rate,
            "max_seconds": model.max_seconds,
            "labels": model.labels,
        },
    )
    return folder


def _load_sklearn(path: Path) -> SklearnDigitModel:
    try:
        payload = joblib.load(path)
    except (
        EOFError,
        pickle.UnpicklingError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        OSError,
        AttributeError,
        ModuleNotFoundError,
    ) as error:
        raise ModelFileError(
            path,
            f"not a readable joblib file ({type(error).__name__}: {error})",
            "The file is truncated or corrupt; save the model again",
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != SKLEARN_FORMAT:
        raise ModelFileError(
            path,
            f"is a joblib file but not an audiolens digit model (no '{SKLEARN_FORMAT}' marker)",
            "Save it with save_sklearn_digit_model",
        )
    config = DigitFeatureConfig.from_dict(payload["feature_config"])
    pipeline = payload["pipeline"]
    expected = getattr(pipeline, "n_features_in_", None)
    if expected is not None and expected != config.vector_size:
        raise ModelFileError(
            path,
            f"mismatched: the pipeline expects {expected} features but its feature config gives {config.vector_size}",
            "The file was edited or assembled by hand; retrain",
        )
    return SklearnDigitModel(pipeline, config, payload["labels"])


def _load_cnn(path: Path, device: str = "cpu") -> CnnDigitModel:
    weights, config_path = path.with_suffix(".pt"), path.with_suffix(".json")
    for needed in (weights, config_path):
        if not needed.exists():
            raise ModelFileError(
                needed, "file not found (a CNN is saved as NAME.pt + NAME.json side by side)", "Copy both files"
            )
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(config_path, f"corrupt JSON ({error})", "Save the model again") from None
    if not isinstance(meta, dict) or meta.get("format") != CNN_FORMAT:
        raise ModelFileError(config_path, f"not an audiolens CNN config (no '{CNN_FORMAT}' marker)")
    config = DigitCnnConfig.from_dict(meta.get("config", {}))
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a damaged file
        raise ModelFileError(
            weights,
            f"not a readable PyTorch state dict ({type(error).__name__}: {str(error).splitlines()[0][:200]})",
            "The file is truncated or corrupt",
        ) from None
    network = DigitCnn(config)
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs config {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        details = "; ".join(
            filter(
                None,
                [
                    f"missing {missing[:3]}" if missing else "",
                    f"unexpected {unexpected[:3]}" if unexpected else "",
                    f"shape mismatch {shapes[:2]}" if shapes else "",
                ],
            )
        )
        raise ModelFileError(
            weights,
            f"mismatched: the weights do not fit the architecture in {config_path.name} ({details})",
            "Keep each NAME.pt with its own NAME.json",
        )
    network.load_state_dict(state)
    return CnnDigitModel(network, device=device)


def _load_pretrained_folder(folder: Path, device: str = "cpu", input_sample_rate: int = 8000):
    meta_path = folder / "audiolens.json"
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    except json.JSONDecodeError as error:
        raise ModelFileError(meta_path, f"corrupt JSON ({error})", "Delete it or save the model again") from None
    try:
        model, extractor = _load_folder_as_is(folder)
    except Wav2Vec2Unavailable as error:
        raise ModelFileError(folder, str(error)) from None
    labels = meta.get("labels") or [model.config.id2label[i] for i in range(model.config.num_labels)]
    labels = [int(v) if str(v).isdigit() else v for v in labels]
    return Wav2Vec2DigitModel(
        model,
        extractor,
        labels,
        device=device,
        input_sample_rate=meta.get("input_sample_rate", input_sample_rate),
        max_seconds=meta.get("max_seconds", 2.0),
    )


def _load_folder_as_is(folder: Path):
    """Load a fine-tuned save_pretrained folder with its own head (no re-initialisation)."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    try:
        extractor = AutoFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForAudioClassification.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise Wav2Vec2Unavailable(f"not a loadable save_pretrained folder ({type(error).__name__}: {first})") from None
    return model, extractor


def load_digit_model(path, device: str = "cpu"):
    """Load a saved digit model of any format (``.joblib``, ``.pt``/``.json``, save_pretrained folder)."""
    path = Path(path).expanduser()
    if not path.exists():
        if path.suffix in (".pt", ".json") and (path.with_suffix(".pt").exists() or path.with_suffix(".json").exists()):
            return _load_cnn(path, device)
        raise ModelFileError(
            path, "file not found", "Check the path; models are saved under the run's output_dir/models/"
        )
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelFileError(path, "folder has no config.json, so it is not a save_pretrained model")
        return _load_pretrained_folder(path, device)
    if path.stat().st_size == 0:
        raise ModelFileError(path, "file is empty (0 bytes)", "Save the model again")
    if path.suffix == ".joblib":
        return _load_sklearn(path)
    if path.suffix in (".pt", ".json"):
        return _load_cnn(path, device)
    raise ModelFileError(
        path,
        f"unknown model file type {path.suffix!r}",
        "Expected NAME.joblib, NAME.pt (+ NAME.json) or a save_pretrained folder",
    )


def predict_audio_files(model, path, temperature: float = 1.0, progress: bool = False) -> pd.DataFrame:
    """Predict one audio file or every audio file under a folder: ``path, prediction, confidence``.

    Unreadable files are skipped and reported (they appear with an ``error``).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            raise FileNotFoundError(f"{path}: no audio files to predict ({', '.join(AUDIO_EXTENSIONS)})")
    elif path.exists():
        files = [path]
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    waves, ok_paths, failures = load_audio_batch(files, sr=model.sample_rate, progress=progress)
    rows = []
    if waves:
        proba = model.predict_proba(waves, temperature=temperature)
        best = proba.argmax(axis=1)
        rows = [
            {"path": p, "prediction": model.labels[b], "confidence": float(proba[i, b]), "error": None}
            for i, (p, b) in enumerate(zip(ok_paths, best))
        ]
    rows += [{"path": f["path"], "prediction": None, "confidence": np.nan, "error": f["error"]} for f in failures]
    return pd.DataFrame(rows)
