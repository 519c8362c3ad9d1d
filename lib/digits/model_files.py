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
# `predict_audio_files` runs a model over a file or a folder of clips.
#
# **A `.joblib` file is a pickle: loading one can run any code.** audiolens therefore signs
# every scikit-learn model it saves: a sidecar `NAME.joblib.sha256` holds the file's SHA-256
# and an HMAC-SHA256 under a key private to this user (`~/.config/audiolens/model-signing.key`,
# created on first save, mode 0600; `AUDIOLENS_SIGNING_KEY` names another key file).
# `load_digit_model` checks the sidecar *before* unpickling and refuses a file without one, a
# file changed since it was saved, or one signed with another key, with a clear
# `ModelFileError`. A model you received from someone you trust can be accepted explicitly with
# `trust_digit_model_file(path)`. The CNN's state dict is read with `weights_only=True`.

# %%
import hashlib
import hmac
import io
import json
import os
import pickle
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import torch

from lib.core.atomic_io import atomic_write_bytes, atomic_write_json
from lib.core.audio import AUDIO_EXTENSIONS, WHISPER_SAMPLE_RATE, files_above_rate, load_audio_batch
from lib.digits.digit_features import DigitFeatureConfig
from lib.digits.digit_models import CnnDigitModel, DigitCnn, DigitCnnConfig, SklearnDigitModel
from lib.digits.encoder_digits import (
    DigitEncoderConfig,
    DigitEncoderHead,
    EncoderDigitModel,
    load_digit_encoder_adapter,
)
from lib.digits.encoder_finetune import DigitFinetunedHead, digit_top_block, digit_top_positions
from lib.digits.wav2vec2_finetune import Wav2Vec2DigitModel, Wav2Vec2Unavailable

SKLEARN_FORMAT = "audiolens-digit-sklearn/1"
CNN_FORMAT = "audiolens-digit-cnn/1"
ENCODER_FORMAT = "audiolens-digit-encoder/1"
SIGNATURE_FORMAT = "audiolens-model-signature/1"


class ModelFileError(ValueError):
    """A saved model cannot be used; the message names the file, the problem and the fix."""

    def __init__(self, path, problem: str, hint: str = ""):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}" + (f". {hint}" if hint else ""))


# %% [markdown]
# ## Signed scikit-learn files


# %%
def digit_signing_key_path() -> Path:
    """The key file that signs saved scikit-learn models (``$AUDIOLENS_SIGNING_KEY`` or the user's config folder)."""
    explicit = os.environ.get("AUDIOLENS_SIGNING_KEY")
    if explicit:
        return Path(explicit).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "audiolens" / "model-signing.key"


def _digit_signing_key(create: bool) -> bytes | None:
    path = digit_signing_key_path()
    if path.exists():
        key = path.read_bytes()
        if len(key) < 32:
            raise ModelFileError(
                path, "signing key file is shorter than 32 bytes", "Delete it; a new one is made on save"
            )
        return key
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(32)
    try:  # create it 0600 and never overwrite a key another process just made
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


def digit_signature_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def sign_digit_model_file(path) -> Path:
    """Write the sidecar of ``path``: its SHA-256 and an HMAC-SHA256 under this user's signing key."""
    path = Path(path)
    data = path.read_bytes()
    key = _digit_signing_key(create=True)
    atomic_write_json(
        digit_signature_path(path),
        {
            "format": SIGNATURE_FORMAT,
            "file": path.name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "hmac_sha256": hmac.new(key, data, hashlib.sha256).hexdigest(),
            "key_id": hashlib.sha256(key).hexdigest()[:16],
        },
    )
    return digit_signature_path(path)


def verify_digit_model_file(path) -> None:
    """Raise `ModelFileError` unless ``path`` carries a valid audiolens signature made with this user's key.

    Nothing of ``path`` is unpickled here: only its bytes are hashed.
    """
    path = Path(path)
    sidecar = digit_signature_path(path)
    trust_hint = (
        "A .joblib file is a pickle and can run code when loaded, so audiolens only loads the ones it saved itself. "
        "If you trust where this file comes from, accept it once with trust_digit_model_file(path); "
        "otherwise retrain the model"
    )
    if not sidecar.exists():
        raise ModelFileError(
            path, f"unsigned: no {sidecar.name} beside it, so it was not saved by audiolens here", trust_hint
        )
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        expected_sha, expected_mac = str(meta["sha256"]), str(meta["hmac_sha256"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ModelFileError(sidecar, f"unreadable signature file ({type(error).__name__})", trust_hint) from None
    data = path.read_bytes()
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), expected_sha):
        raise ModelFileError(
            path, "changed since audiolens saved it (its SHA-256 does not match the sidecar)", trust_hint
        )
    key = _digit_signing_key(create=False)
    if key is None or not hmac.compare_digest(hmac.new(key, data, hashlib.sha256).hexdigest(), expected_mac):
        raise ModelFileError(
            path,
            "signed with another audiolens key (saved by another user or machine, or the sidecar was forged)",
            trust_hint,
        )


def trust_digit_model_file(path) -> Path:
    """Accept a ``.joblib`` file you trust (e.g. your own model from another machine): sign it with this user's key."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "file not found")
    print(f"Signing {path} as trusted: load_digit_model will unpickle it from now on.")
    return sign_digit_model_file(path)


# %% [markdown]
# ## Save


# %%
def save_sklearn_digit_model(model: SklearnDigitModel, path) -> Path:
    """Write ``model`` (pipeline + feature config + labels) to a ``.joblib`` file and sign it (sidecar)."""
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
    atomic_write_bytes(path, buffer.getvalue())
    sign_digit_model_file(path)
    return path


def save_cnn_digit_model(model: CnnDigitModel, path) -> Path:
    """Write the CNN's state dict to ``path`` (``.pt``) and its config to the ``.json`` beside it."""
    path = Path(path).with_suffix(".pt")
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.network.state_dict().items()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_json(path.with_suffix(".json"), {"format": CNN_FORMAT, "config": model.config.to_dict()})
    return path


def save_encoder_digit_model(model: EncoderDigitModel, path) -> Path:
    """The head's state dict (``NAME.pt``) + ``NAME.json``: config, the encoder's name, mode and fingerprint.

    The encoder itself is not copied (it is the bundled or hub model); loading checks that
    the encoder found then has the same fingerprint.
    """
    path = Path(path).with_suffix(".pt")
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.head.state_dict().items()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    inner = model.head.head if isinstance(model.head, DigitFinetunedHead) else model.head  # finetune_top: block + head
    first = inner.layer_logits.shape[0]
    atomic_write_json(
        path.with_suffix(".json"),
        {
            "format": ENCODER_FORMAT,
            "config": model.config.to_dict(),
            "encoder": {
                "name": model.adapter.name,
                "fingerprint": model.adapter.fingerprint(),
                "whisper_mode": getattr(model.adapter, "whisper_mode", model.config.whisper_mode),
            },
            "head": {"layers": int(first), "dims": int(inner.norm.normalized_shape[0])},
        },
    )
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


# %% [markdown]
# ## Loading a model file
#
# Each format is checked before it is used (signature, metadata, shapes), and a bad file is one
# `ModelFileError` naming the file and what to do.


# %%
def _load_sklearn(path: Path) -> SklearnDigitModel:
    verify_digit_model_file(path)  # before any unpickling
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


def _load_cnn(path: Path, device: str = "cpu", adapter=None):
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
    if isinstance(meta, dict) and meta.get("format") == ENCODER_FORMAT:
        return _load_encoder(weights, meta, device, adapter)
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


def _load_encoder(weights: Path, meta: dict, device: str = "cpu", adapter=None) -> EncoderDigitModel:
    try:
        config = DigitEncoderConfig.from_dict(meta.get("config", {}))
        encoder = meta["encoder"]
        head_meta = meta["head"]
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(weights.with_suffix(".json"), f"incomplete encoder-model config ({error})") from None
    if adapter is None:
        try:
            adapter = load_digit_encoder_adapter(
                encoder["name"], encoder.get("whisper_mode", config.whisper_mode), device
            )
        except Exception as error:  # noqa: BLE001 - ModelLoadError, OSError, ValueError from the loader
            raise ModelFileError(
                weights, f"its encoder {encoder['name']!r} cannot be loaded ({error})", "Install or point at that model"
            ) from None
    if adapter.fingerprint() != encoder.get("fingerprint"):
        raise ModelFileError(
            weights,
            f"mismatched: the head was trained on encoder weights {str(encoder.get('fingerprint'))[:12]}, "
            f"but {adapter.name} has {adapter.fingerprint()[:12]}",
            "Use the encoder the model was trained with, or retrain the head",
        )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a damaged file
        raise ModelFileError(weights, f"not a readable PyTorch state dict ({type(error).__name__})") from None
    head = DigitEncoderHead(
        head_meta["layers"],
        head_meta["dims"],
        len(config.labels),
        config.pooling,
        config.hidden,
        config.dropout,
        config.combine,
    )
    try:
        if config.finetune_top:  # the fine-tuned copy of the encoder's top block is in the state dict
            top = digit_top_block(adapter, config.top_context, config.window_seconds, config.max_seconds)
            head = DigitFinetunedHead(top, head, *digit_top_positions(config.layers, top))
        head.load_state_dict(state)
    except (RuntimeError, ValueError) as error:
        raise ModelFileError(weights, f"mismatched: {str(error).splitlines()[0][:200]}") from None
    return EncoderDigitModel(adapter, head, config, device=device)


# %%
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


def load_digit_model(path, device: str = "cpu", adapter=None):
    """Load a saved digit model of any format (``.joblib``, ``.pt``/``.json``, save_pretrained folder).

    ``adapter``: an already loaded encoder for a pretrained-encoder model (else it is loaded).
    """
    path = Path(path).expanduser()
    if not path.exists():
        if path.suffix in (".pt", ".json") and (path.with_suffix(".pt").exists() or path.with_suffix(".json").exists()):
            return _load_cnn(path, device, adapter)
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
        return _load_cnn(path, device, adapter)
    raise ModelFileError(
        path,
        f"unknown model file type {path.suffix!r}",
        "Expected NAME.joblib, NAME.pt (+ NAME.json) or a save_pretrained folder",
    )


def predict_audio_files(
    model, path, temperature: float = 1.0, progress: bool = False, one_speaker: bool = False, wideband: bool = True
) -> pd.DataFrame:
    """Predict one audio file or every audio file under a folder: ``path, prediction, confidence``.

    Unreadable files are skipped and reported (they appear with an ``error``). ``one_speaker``:
    the files are one speaker's (one user, one microphone), normalised together by models with
    speaker normalisation, as a held-out speaker is in the notebook; by default each file alone.
    ``wideband``: where any file is recorded above the model's ``sample_rate``, an encoder
    model's Whisper prior hears the files at 16 kHz, their own band (`EncoderDigitModel.wideband_prior`).
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
        groups = ["one speaker"] * len(waves) if one_speaker else None
        options = {}
        if wideband and getattr(model, "prior_hears_wideband", False) and files_above_rate(ok_paths, model.sample_rate):
            wide, wide_paths, _ = load_audio_batch(ok_paths, sr=WHISPER_SAMPLE_RATE, progress=False)
            if list(wide_paths) == list(ok_paths):
                options["wideband"] = wide
            else:
                print(
                    "predict_audio_files: some files did not load again at 16 kHz; the Whisper prior hears them all "
                    f"at {model.sample_rate} Hz"
                )
        proba = model.predict_proba(waves, temperature=temperature, groups=groups, **options)
        best = proba.argmax(axis=1)
        rows = [
            {"path": p, "prediction": model.labels[b], "confidence": float(proba[i, b]), "error": None}
            for i, (p, b) in enumerate(zip(ok_paths, best))
        ]
    rows += [{"path": f["path"], "prediction": None, "confidence": np.nan, "error": f["error"]} for f in failures]
    return pd.DataFrame(rows)
