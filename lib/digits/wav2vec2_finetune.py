# %% [markdown]
# # Wav2Vec2 fine-tuning for spoken digits
#
# A pretrained Wav2Vec2 (default `facebook/wav2vec2-base`) with a classification head
# (`AutoModelForAudioClassification`: mean-pooled last hidden state -> projection -> labels),
# fine-tuned end to end on 16 kHz audio. The convolutional feature encoder can be frozen
# (`freeze_feature_encoder=True`, the usual choice for small data sets).
#
# `load_wav2vec2_classifier` loads through `from_pretrained`, from a hub id or a local
# `save_pretrained` folder; when the model cannot be loaded (offline with an empty cache,
# a wrong path) it raises `Wav2Vec2Unavailable` with the reason, so a notebook can record
# it and go on. `finetune_wav2vec2` trains with AdamW, linear warm-up and decay, padding
# with attention masks, keeps the checkpoint with the best validation accuracy, and
# returns a `Wav2Vec2DigitModel` with the same interface as the other digit models.

# %%
import copy
import math
import time

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from lib.core.runtime import hub_offline_for
from lib.digits.digit_models import DigitClassifierBase

# %% [markdown]
# ## Loading the model
#
# A hub id or a local folder through `from_pretrained`; a model that cannot be loaded is one
# `Wav2Vec2Unavailable` error with the reason, which the notebook records before going on.


# %%
class Wav2Vec2Unavailable(RuntimeError):
    """The Wav2Vec2 checkpoint could not be loaded; the message says why and what to do."""


def load_wav2vec2_classifier(
    model_name_or_path: str = "facebook/wav2vec2-base",
    labels=tuple(range(10)),
    freeze_feature_encoder: bool = True,
    local_files_only: bool | None = None,
    seed: int | None = None,
):
    """``(model, feature_extractor)``: a Wav2Vec2 with a fresh ``len(labels)``-way head.

    ``seed``: the new head's initialisation (else it draws from torch's global generator, so it
    depends on whatever ran before). ``local_files_only`` defaults to True when the hub cannot be
    reached (``HF_HUB_OFFLINE``, or no connection: `hub_reachable`). Raises `Wav2Vec2Unavailable`
    naming the model and the cause when loading fails.
    """
    import os

    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification
    from transformers.utils import logging as hf_logging

    if local_files_only is None:
        local_files_only = hub_offline_for(model_name_or_path)
    labels = list(labels)
    id2label = {i: str(label) for i, label in enumerate(labels)}
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized head" warnings are expected here
    if seed is not None:
        torch.manual_seed(seed)
    try:
        extractor = AutoFeatureExtractor.from_pretrained(model_name_or_path, local_files_only=local_files_only)
        model = AutoModelForAudioClassification.from_pretrained(
            model_name_or_path,
            num_labels=len(labels),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            local_files_only=local_files_only,
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        name = str(model_name_or_path)
        looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
        if looks_like_path and not os.path.isdir(os.path.expanduser(name)):
            why = "no such folder"
        elif not os.path.isdir(name) and local_files_only:
            why = "it is not in the local Hugging Face cache and the hub cannot be reached (offline)"
        else:
            why = f"{type(error).__name__}: {first[:200]}"
        raise Wav2Vec2Unavailable(
            f"cannot load {model_name_or_path!r}: {why}. Connect to the internet once so it is cached, "
            "or point the notebook's wav2vec2_model parameter at a local save_pretrained folder."
        ) from None
    finally:
        hf_logging.set_verbosity(previous)
    if freeze_feature_encoder and hasattr(model, "freeze_feature_encoder"):
        model.freeze_feature_encoder()
    return model, extractor


# %% [markdown]
# ## The fine-tuned model as a digit classifier
#
# The same interface as the SVM, CNN and encoder models: logits for a batch of waves, `save` to
# a `save_pretrained` folder.


# %%
class Wav2Vec2DigitModel(DigitClassifierBase):
    """A fine-tuned audio-classification model behind the common digit-model interface."""

    kind = "wav2vec2"

    def __init__(
        self,
        model,
        feature_extractor,
        labels,
        device: str = "cpu",
        input_sample_rate: int = 8000,
        max_seconds: float = 2.0,
        batch_size: int = 16,
    ):
        self.model = model.to(device).eval()
        self.extractor = feature_extractor
        self.labels = list(labels)
        self.device = device
        self.sample_rate = input_sample_rate  # rate of the waves given to predict_*
        self.model_rate = int(feature_extractor.sampling_rate)
        self.max_seconds = max_seconds
        self.batch_size = batch_size

    def _inputs(self, waves):
        import librosa

        waves = [np.asarray(w, dtype=np.float32)[: int(self.max_seconds * self.sample_rate)] for w in waves]
        if self.sample_rate != self.model_rate:
            waves = [
                librosa.resample(w, orig_sr=self.sample_rate, target_sr=self.model_rate, res_type="soxr_hq")
                for w in waves
            ]
        return wav2vec2_batch(self.extractor, waves, self.device)

    @torch.no_grad()
    def predict_logits(self, waves, groups=None) -> np.ndarray:
        """Logits per clip (``groups``: accepted for the common interface; this model reads each clip alone)."""
        waves = list(waves)
        outs = []
        for i in range(0, len(waves), self.batch_size):
            outs.append(self.model(**self._inputs(waves[i : i + self.batch_size])).logits.float().cpu())
        return torch.cat(outs).numpy() if outs else np.zeros((0, len(self.labels)))

    def save(self, folder) -> None:
        """``save_pretrained`` of the model and its feature extractor."""
        self.model.save_pretrained(folder)
        self.extractor.save_pretrained(folder)


def wav2vec2_batch(extractor, waves, device: str = "cpu") -> dict:
    """Pad a list of 16 kHz waves with the feature extractor; tensors on ``device``."""
    batch = extractor(
        list(waves),
        sampling_rate=extractor.sampling_rate,
        padding=True,
        return_tensors="pt",
        return_attention_mask=True,
    )
    return {k: v.to(device) for k, v in batch.items() if k in ("input_values", "attention_mask")}


# %% [markdown]
# ## Fine-tuning
#
# AdamW with linear warm-up and decay, padding with attention masks, optional additive noise
# (`noise_prob`), the best validation checkpoint kept; `finetune_wav2vec2_lr_grid` runs it once
# per learning rate and keeps the best.


# %%
def finetune_wav2vec2(
    model,
    extractor,
    waves,
    labels,
    label_list=tuple(range(10)),
    input_sample_rate: int = 8000,
    epochs: int = 3,
    batch_size: int = 16,
    learning_rate: float = 3e-5,
    warmup_fraction: float = 0.1,
    val_fraction: float = 0.1,
    max_seconds: float = 2.0,
    max_steps: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    noise_prob: float = 0.0,
    noise_snr_db=(10.0, 30.0),
    track_train_accuracy: bool = False,
):
    """Fine-tune ``model`` on ``waves`` (at ``input_sample_rate``; resampled to the model's rate).

    A stratified ``val_fraction`` is held out (``0``: none, the training clips themselves
    choose the checkpoint); the checkpoint with the best validation accuracy is kept.
    ``max_steps`` caps the optimiser steps (tests, quick looks). ``noise_prob``: the chance
    that a training clip gets white noise at an SNR drawn from ``noise_snr_db`` (new noise
    every step). Returns ``(Wav2Vec2DigitModel, history)``; with ``track_train_accuracy`` (or
    ``val_fraction=0``) ``history["train_accuracy"]`` is measured on the clean training clips
    after every epoch.
    """
    import librosa
    from tqdm.auto import tqdm

    label_list = list(label_list)
    index = {label: i for i, label in enumerate(label_list)}
    y = np.array([index[v] for v in labels])
    rate = int(extractor.sampling_rate)
    cut = int(max_seconds * input_sample_rate)
    waves = [np.asarray(w, dtype=np.float32)[:cut] for w in waves]
    if input_sample_rate != rate:
        waves = [librosa.resample(w, orig_sr=input_sample_rate, target_sr=rate, res_type="soxr_hq") for w in waves]
    if val_fraction and val_fraction > 0:
        n_val = max(1, int(round(val_fraction * len(waves))))
        stratify = y if np.min(np.bincount(y)) >= 2 and n_val >= len(np.unique(y)) else None
        tr, va = train_test_split(np.arange(len(waves)), test_size=val_fraction, random_state=seed, stratify=stratify)
    else:
        tr = va = np.arange(len(waves))

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(tr) / batch_size)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    warmup = max(1, int(warmup_fraction * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )

    def evaluate(idx):
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(idx), batch_size):
                b = idx[i : i + batch_size]
                logits = model(**wav2vec2_batch(extractor, [waves[j] for j in b], device)).logits
                correct += (logits.argmax(1).cpu().numpy() == y[b]).sum()
        return float(correct / max(1, len(idx)))

    def noisy(indices):
        batch = [waves[j] for j in indices]
        if noise_prob <= 0:
            return batch
        out = []
        for w in batch:
            if rng.random() < noise_prob:
                snr = rng.uniform(*noise_snr_db)
                power = float(np.mean(w.astype(np.float64) ** 2)) + 1e-10
                w = (w + rng.normal(0, np.sqrt(power / 10 ** (snr / 10)), len(w))).astype(np.float32)
            out.append(w)
        return out

    history = {
        "epoch": [],
        "train_loss": [],
        "train_accuracy": [],
        "val_accuracy": [],
        "learning_rate": learning_rate,
        "noise_prob": noise_prob,
        "steps": 0,
        "best_val_accuracy": -1.0,
        "best_epoch": 0,
        "n_train": int(len(tr)),
        "n_val": int(len(va)),
    }
    best_state, step = None, 0
    start = time.perf_counter()
    bar = tqdm(total=total, desc="Wav2Vec2 fine-tuning", disable=not progress, leave=False)
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(tr)
        losses = []
        for i in range(0, len(order), batch_size):
            if step >= total:
                break
            b = order[i : i + batch_size]
            out = model(**wav2vec2_batch(extractor, noisy(b), device), labels=torch.as_tensor(y[b], device=device))
            optimiser.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            scheduler.step()
            losses.append(out.loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        val_acc = evaluate(va)
        if va is tr or track_train_accuracy:
            history["train_accuracy"].append(val_acc if va is tr else evaluate(tr))
        history["epoch"].append(epoch)
        history["train_loss"].append(float(np.mean(losses)) if losses else float("nan"))
        history["val_accuracy"].append(val_acc)
        if val_acc > history["best_val_accuracy"]:
            history["best_val_accuracy"], history["best_epoch"] = val_acc, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        if step >= total:
            break
    bar.close()
    history["steps"] = step
    history["seconds"] = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    wrapped = Wav2Vec2DigitModel(
        model, extractor, label_list, device=device, input_sample_rate=input_sample_rate, max_seconds=max_seconds
    )
    return wrapped, history


# %%
def finetune_wav2vec2_lr_grid(model_factory, extractor, waves, labels, lr_grid, **kwargs):
    """Fine-tune a fresh model (``model_factory()``) per learning rate; keep the best on validation accuracy.

    Returns ``(Wav2Vec2DigitModel, history, table)`` with one ``{"learning_rate", "val_accuracy"}``
    row per rate.
    """
    best, table = None, []
    for lr in list(lr_grid):
        wrapped, history = finetune_wav2vec2(
            model_factory(), extractor, waves, labels, learning_rate=float(lr), **kwargs
        )
        table.append({"learning_rate": float(lr), "val_accuracy": history["best_val_accuracy"]})
        if best is None or history["best_val_accuracy"] > best[1]["best_val_accuracy"]:
            best = (wrapped, history)
    if best is None:
        raise ValueError("lr_grid is empty: give at least one learning rate")
    return best[0], best[1], table
