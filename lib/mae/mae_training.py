# %% [markdown]
# # Training loops: masked pretraining, fine-tuning, linear probing, evaluation
#
# - `mae_pretrain`: AdamW (no weight decay on biases, norms and tokens), linear warmup then
#   cosine decay per step, gradient clipping, mixed precision on GPU (bfloat16 where
#   supported, else float16 with a gradient scaler), a validated checkpoint after every epoch
#   (`checkpoint_dir/last.pt`) and resume from it. Shuffling and masks are seeded per epoch,
#   so a resumed run sees the same batches an uninterrupted one would. Resuming checks the
#   checkpoint's training record (data fingerprint, seed, settings) and stops with the
#   differences (`resume="force"` continues anyway); `resume=False` moves an existing
#   checkpoint aside (printed) instead of overwriting it; asking for fewer epochs than the
#   checkpoint holds says so and skips training.
# - The same function runs under `torchrun` with DistributedDataParallel: it joins the
#   process group from the environment torchrun sets, shards each epoch's permutation over the
#   ranks, averages the loss over them, and only rank 0 writes checkpoints (see
#   `scripts/mae_torchrun.py` for the command-line entry point).
# - `mae_train_classifier`: fine-tuning (whole encoder + head) or linear probing (frozen
#   encoder: embeddings computed once, then only the head trains). Fine-tuning augments by
#   dropping a share of each clip's patches (`augment="patch_drop"`, AudioMAE's fine-tuning
#   masking: the encoder sees visible subsets as in pretraining, so a head from the linear
#   probe keeps working) or by SpecAugment-style bands filled with the batch minimum
#   (`"specaugment"`, which moves the embeddings far from what a probe saw);
#   `mae_evaluate`: accuracy, per-class accuracy, confusion matrix.
# - `mae_extract_embeddings`: `[N, D]` embeddings with the throughput in clips/s.

# %%
import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lib.core.accuracy import accuracy_interval
from lib.core.distributed import distributed_all_reduce_sum, distributed_barrier, distributed_context
from lib.mae.mae_checkpoints import (
    MaeCheckpointError,
    load_mae_checkpoint,
    mae_data_fingerprint,
    mae_move_checkpoint_aside,
    mae_training_differences,
    save_mae_checkpoint,
)


def mae_constant_patch_share(model, x, batch_size: int = 256) -> float | None:
    """The share of ``x``'s patches that are constant (padding, floor silence); None for a model that cannot tell."""
    if not hasattr(model, "informative_patches") or not len(x):
        return None
    informative, total = 0.0, 0
    for start in range(0, len(x), batch_size):
        share = model.informative_patches(torch.as_tensor(np.asarray(x[start : start + batch_size])))
        informative, total = informative + float(share.sum()), total + share.numel()
    return 1.0 - informative / total


def mae_optimizer_step(loss, optimizer, params, scaler=None, clip_grad=None) -> None:
    """Backward pass, optional gradient-norm clipping (on unscaled gradients under AMP), one step."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if clip_grad:
        torch.nn.utils.clip_grad_norm_(params, clip_grad)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def mae_lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Linear warmup to ``base_lr`` over ``warmup_steps``, then cosine decay to ``min_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def mae_param_groups(model, weight_decay: float) -> list:
    """AdamW groups: weight decay on matrices only (not biases, norms, CLS / mask tokens)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim <= 1 or name.endswith("_token") else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def mae_amp_setup(device: str, amp: bool = True):
    """``(autocast context factory, GradScaler or None)`` for ``device``; AMP only on CUDA."""
    if not (amp and str(device).startswith("cuda") and torch.cuda.is_available()):
        return nullcontext, None
    if torch.cuda.is_bf16_supported():
        return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)), None
    return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")


def _mae_as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _mae_resume(
    checkpoint_path, resume, training: dict, model, optimizer, scaler, device, epochs: int, rank: int, history: dict
):
    """``(start_epoch, history)`` from ``checkpoint_path`` after checking its training record against ``training``."""
    saved = load_mae_checkpoint(checkpoint_path, map_location="cpu")
    differences = mae_training_differences((saved.get("extra") or {}).get("training"), training)
    if differences and resume != "force":
        raise MaeCheckpointError(
            f"{checkpoint_path}: this run would resume a checkpoint trained differently:\n  - "
            + "\n  - ".join(differences)
            + "\nResume anyway with resume='force' (-p resume force), start afresh with resume=False "
            "(the old checkpoint is moved aside, not deleted), or use another checkpoint_dir."
        )
    if differences and rank == 0:
        print(f"resume='force': resuming {checkpoint_path} despite: " + "; ".join(differences))
    checkpoint = load_mae_checkpoint(
        checkpoint_path, model=model, optimizer=optimizer, scaler=scaler, map_location=device
    )
    start_epoch = int(checkpoint["epoch"]) + 1
    history = {k: list(v) for k, v in checkpoint["history"].items() if k in history}
    if rank == 0 and start_epoch > epochs:
        print(
            f"{checkpoint_path} already holds {start_epoch} epochs; epochs={epochs} asks for fewer, so "
            f"training is skipped and the model is the {start_epoch}-epoch checkpoint (resume=False "
            "starts a new run and moves this checkpoint aside)."
        )
    elif rank == 0 and start_epoch == epochs:
        print(f"{checkpoint_path} already holds all {epochs} epochs: nothing to train (raise epochs to continue).")
    elif rank == 0:
        print(f"Resuming from {checkpoint_path} (epoch {start_epoch} of {epochs} done before)")
    return start_epoch, history


# %% [markdown]
# ## Masked pretraining
#
# One loop for a notebook run and for `torchrun`: resume or move aside, shard each epoch's
# permutation over the ranks, average the loss over them, and checkpoint on rank 0.


# %%
def mae_pretrain(
    model,
    x,
    epochs: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    warmup_epochs: float = 1.0,
    min_lr: float = 1e-6,
    clip_grad: float = 1.0,
    mask_ratio=None,
    device: str = "cpu",
    amp: bool = True,
    checkpoint_dir=None,
    resume: bool | str = True,
    seed: int = 0,
    transform_config: dict | None = None,
    progress: bool = True,
    data_fingerprint: str | None = None,
) -> dict:
    """Masked-autoencoder pretraining of ``model`` on inputs ``x [N, 1, F, T]`` for ``epochs`` epochs in all.

    With ``checkpoint_dir``, ``last.pt`` is written after every epoch with a training record
    (``data_fingerprint``, default a hash of ``x``; seed; optimisation settings). ``resume``:
    True continues from ``last.pt`` (weights, optimiser, scaler, history, epoch) when its record
    matches this run and raises ``MaeCheckpointError`` listing the differences otherwise;
    ``"force"`` continues despite differences (printed); False moves an existing ``last.pt``
    aside (printed) and starts afresh. Returns the history: ``loss``, ``lr``,
    ``clips_per_second``, ``seconds`` per epoch, plus ``start_epoch`` (where this call began),
    ``epochs_done``, ``skipped`` (True when the checkpoint already held ``epochs`` or more),
    ``moved_aside`` (the renamed old checkpoint, or None) and ``world_size``.
    """
    from tqdm.auto import tqdm

    if resume not in (True, False, "force"):
        raise ValueError(f"resume must be True, False or 'force', not {resume!r}")
    resume = resume if resume == "force" else bool(resume)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a whole number >= 0, not {epochs!r}")
    ctx = distributed_context(device)
    device, rank, world = ctx["device"], ctx["rank"], ctx["world_size"]
    x = _mae_as_tensor(x).float()
    if len(x) < world:
        raise ValueError(f"{len(x)} clips cannot be shared over {world} processes")
    training = {
        "data": data_fingerprint or mae_data_fingerprint(x),
        "n_clips": len(x),
        "input_shape": list(x.shape[1:]),
        "seed": seed,
        "lr": lr,
        "min_lr": min_lr,
        "batch_size": batch_size,
        "weight_decay": weight_decay,
        "warmup_epochs": warmup_epochs,
        "clip_grad": clip_grad,
        "mask_ratio": mask_ratio,
    }
    model.to(device)
    optimizer = torch.optim.AdamW(mae_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.95))
    autocast, scaler = mae_amp_setup(device, amp)
    history = {"loss": [], "lr": [], "clips_per_second": [], "seconds": []}
    start_epoch, moved_aside = 0, None
    checkpoint_path = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
    if checkpoint_path is not None and checkpoint_path.exists() and resume is False:
        distributed_barrier(ctx)  # every rank has seen the old file before rank 0 renames it
        if rank == 0:
            moved_aside = mae_move_checkpoint_aside(checkpoint_path)
            print(f"resume=False: moved the existing checkpoint to {moved_aside}; pretraining starts from scratch")
    elif checkpoint_path is not None and checkpoint_path.exists():
        start_epoch, history = _mae_resume(
            checkpoint_path, resume, training, model, optimizer, scaler, device, epochs, rank, history
        )
    if epochs == 0 and start_epoch == 0 and rank == 0:
        print("epochs=0 and no checkpoint to resume: no pretraining; the model keeps its initial (random) weights.")
    wrapped = model
    if ctx["distributed"]:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[ctx["local_rank"]] if device.startswith("cuda") else None)
    per_rank = len(x) // world
    batch_size = max(1, min(batch_size, per_rank))
    steps_per_epoch = math.ceil(per_rank / batch_size)
    total_steps = epochs * steps_per_epoch
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    for epoch in range(start_epoch, epochs):
        wrapped.train()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        shard = order[: per_rank * world][rank::world]
        torch.manual_seed(seed * 7919 + epoch * 131 + rank)  # masks: reproducible per epoch and rank
        loss_sum = torch.zeros(2, dtype=torch.float64)
        started = time.perf_counter()
        batches = range(steps_per_epoch)
        bar = tqdm(batches, desc=f"pretrain epoch {epoch + 1}/{epochs}", disable=not progress or rank != 0, leave=False)
        for i in bar:
            index = shard[i * batch_size : (i + 1) * batch_size]
            batch = x[index].to(device, non_blocking=True)
            lr_now = mae_lr_at(epoch * steps_per_epoch + i, total_steps, warmup_steps, lr, min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr_now
            with autocast():
                loss = wrapped(batch, mask_ratio)["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"pretraining loss became {loss.item()} at epoch {epoch + 1}, step {i}; "
                    "lower the learning rate or enable gradient clipping"
                )
            mae_optimizer_step(loss, optimizer, model.parameters(), scaler, clip_grad)
            loss_sum += torch.tensor([loss.item() * len(index), len(index)], dtype=torch.float64)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        loss_sum = distributed_all_reduce_sum(loss_sum, ctx)
        seconds = time.perf_counter() - started
        history["loss"].append(float(loss_sum[0] / loss_sum[1]))
        history["lr"].append(float(lr_now))
        history["clips_per_second"].append(float(loss_sum[1]) / seconds)
        history["seconds"].append(seconds)
        if rank == 0:
            left = epochs - epoch - 1  # at this run's mean epoch time: on a CPU, say early what the defaults cost
            eta = ""
            if left:  # this run's epochs, not resumed ones (another machine's, perhaps)
                rest = left * float(np.mean(history["seconds"][-(epoch - start_epoch + 1) :]))
                eta = f"; {left} epoch(s) left, about " + (f"{rest / 60:.0f} min" if rest >= 60 else f"{rest:.0f} s")
            print(
                f"epoch {epoch + 1}/{epochs}: loss {history['loss'][-1]:.4f}, "
                f"{history['clips_per_second'][-1]:.1f} clips/s{eta}"
            )
            if checkpoint_path is not None:
                save_mae_checkpoint(
                    checkpoint_path,
                    model,
                    optimizer,
                    epoch=epoch,
                    history=history,
                    transform_config=transform_config,
                    scaler=scaler,
                    extra={
                        "world_size": world,
                        "batch_size": batch_size,
                        "lr": lr,
                        "epochs": epochs,
                        "seed": seed,
                        "training": training,
                    },
                )
        distributed_barrier(ctx)
    history["start_epoch"] = start_epoch
    history["epochs_done"] = max(start_epoch, epochs)
    history["skipped"] = start_epoch >= epochs and start_epoch > 0
    history["moved_aside"] = str(moved_aside) if moved_aside else None
    history["world_size"] = world
    return history


# %% [markdown]
# ## Embeddings, augmentation and layer-wise learning rates


# %%
@torch.no_grad()
def mae_extract_embeddings(model, x, batch_size: int = 64, device: str = "cpu", pooling=None) -> tuple:
    """``(embeddings [N, D] float32, clips per second)`` of ``model.encode`` in eval mode."""
    model = model.module if hasattr(model, "module") else model
    was_training = model.training
    model.to(device).eval()
    x = _mae_as_tensor(x).float()
    out = []
    started = time.perf_counter()
    for start in range(0, len(x), batch_size):
        out.append(model.encode(x[start : start + batch_size].to(device), pooling).float().cpu())
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    model.train(was_training)
    embeddings = torch.cat(out).numpy() if out else np.zeros((0, model.embed_dim), dtype=np.float32)
    return embeddings.astype(np.float32), len(x) / max(seconds, 1e-9)


def mae_spec_augment(batch: torch.Tensor, max_freq=None, max_time=None, fill=None) -> torch.Tensor:
    """One random mel band and one random frame span per clip set to ``fill`` (the batch minimum).

    Widths are drawn up to ``max_freq`` / ``max_time`` (default: a tenth of the bins / frames).
    """
    n, _, f, t = batch.shape
    max_freq = f // 10 if max_freq is None else max_freq
    max_time = t // 10 if max_time is None else max_time
    fill = batch.amin() if fill is None else fill
    out = batch.clone()
    for i in range(n):
        fw = int(torch.randint(0, max_freq + 1, ()))
        tw = int(torch.randint(0, max_time + 1, ()))
        f0 = int(torch.randint(0, max(1, f - fw + 1), ()))
        t0 = int(torch.randint(0, max(1, t - tw + 1), ()))
        out[i, :, f0 : f0 + fw] = fill
        out[i, :, :, t0 : t0 + tw] = fill
    return out


def mae_layer_decay_groups(classifier, weight_decay: float, layer_decay: float = 0.75) -> list:
    """AdamW groups with an ``lr_scale`` per encoder depth: patch embedding/CLS at layer 0,
    block ``i`` at ``i + 1``, final norm and head at ``L + 1`` (scale 1)."""
    encoder = classifier.encoder
    n_layers = len(encoder.blocks) + 1
    groups = {}
    for name, parameter in classifier.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.startswith("encoder.blocks."):
            layer = int(name.split(".")[2]) + 1
        elif name.startswith(("encoder.patch_embed", "encoder.cls_token")):
            layer = 0
        else:
            layer = n_layers
        decay = 0.0 if parameter.ndim <= 1 or name.endswith("_token") else weight_decay
        key = (layer, decay)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": decay, "lr_scale": layer_decay ** (n_layers - layer)}
        groups[key]["params"].append(parameter)
    return list(groups.values())


# %% [markdown]
# ## Fine-tuning and linear probing


# %%
MAE_FINETUNE_AUGMENTS = ("patch_drop", "specaugment", "none")


def mae_train_classifier(
    classifier,
    x,
    y,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 5e-4,
    weight_decay: float = 0.05,
    warmup_epochs: float = 1.0,
    label_smoothing: float = 0.1,
    clip_grad: float = 1.0,
    device: str = "cpu",
    amp: bool = True,
    augment: str = "patch_drop",
    patch_drop: float = 0.3,
    layer_decay: float = 0.75,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train an ``AudioMaeClassifier``: fine-tuning, or a linear probe when its encoder is frozen.

    A frozen encoder's embeddings are computed once, then only the head trains on them. When
    fine-tuning, layer ``i`` of ``L`` learns at ``lr * layer_decay ** (L + 1 - i)`` (the head at
    ``lr``), as in MAE, so the pretrained early layers move least. ``augment`` (fine-tuning
    only): ``"patch_drop"`` (a ``patch_drop`` share of each clip's patches dropped per step),
    ``"specaugment"`` or ``"none"``. Returns
    ``{"loss": [...], "train_accuracy": [...], "clips_per_second": ...}`` per epoch.
    """
    if augment not in MAE_FINETUNE_AUGMENTS:
        raise ValueError(f"augment must be one of {MAE_FINETUNE_AUGMENTS}, not {augment!r}")
    if not 0.0 <= patch_drop < 1.0:
        raise ValueError(f"patch_drop must be in [0, 1), not {patch_drop}")
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    classifier.to(device)
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    frozen = classifier.freeze_encoder
    if frozen:
        features, _ = mae_extract_embeddings(classifier.encoder, x, device=device, pooling=classifier.pooling)
        inputs = torch.from_numpy(features)
        module = classifier.head
    else:
        inputs = _mae_as_tensor(x).float()
        module = classifier
    kept_patch_drop = getattr(classifier, "patch_drop", 0.0)
    classifier.patch_drop = patch_drop if augment == "patch_drop" and not frozen else 0.0
    params = [p for p in module.parameters() if p.requires_grad]
    groups = (
        mae_layer_decay_groups(classifier, weight_decay, layer_decay)
        if not frozen
        else [{"params": params, "weight_decay": weight_decay, "lr_scale": 1.0}]
    )
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    autocast, scaler = mae_amp_setup(device, amp and not frozen)
    steps_per_epoch = math.ceil(len(inputs) / batch_size)
    total = epochs * steps_per_epoch
    warmup = int(round(warmup_epochs * steps_per_epoch))
    history = {"loss": [], "train_accuracy": []}
    started = time.perf_counter()
    step = 0
    for _epoch in tqdm(
        range(epochs), desc="linear probe" if frozen else "fine-tune", disable=not progress, leave=False
    ):
        module.train()
        order = torch.randperm(len(inputs))
        loss_sum, correct = 0.0, 0
        for start in range(0, len(inputs), batch_size):
            index = order[start : start + batch_size]
            if len(index) < 2:  # batch norm needs two samples
                continue
            batch, target = inputs[index].to(device), y[index].to(device)
            if augment == "specaugment" and not frozen:
                batch = mae_spec_augment(batch)
            for group in optimizer.param_groups:
                group["lr"] = mae_lr_at(step, total, warmup, lr, lr * 0.01) * group["lr_scale"]
            with autocast():
                logits = module(batch)
                loss = F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
            mae_optimizer_step(loss, optimizer, params, scaler, clip_grad)
            step += 1
            loss_sum += loss.item() * len(index)
            correct += int((logits.argmax(-1) == target).sum())
        history["loss"].append(loss_sum / len(inputs))
        history["train_accuracy"].append(correct / len(inputs))
    history["seconds"] = time.perf_counter() - started
    history["clips_per_second"] = epochs * len(inputs) / max(history["seconds"], 1e-9)
    classifier.patch_drop = kept_patch_drop
    classifier.eval()
    return history


# %% [markdown]
# ## Prediction and evaluation


# %%
@torch.no_grad()
def mae_predict(classifier, x, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Class probabilities ``[N, K]`` of a classifier in eval mode."""
    classifier.to(device).eval()
    x = _mae_as_tensor(x).float()
    out = [
        torch.softmax(classifier(x[s : s + batch_size].to(device)).float(), -1).cpu()
        for s in range(0, len(x), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, classifier.num_classes), dtype=np.float32)


def mae_evaluate(classifier, x, y, class_names=None, batch_size: int = 64, device: str = "cpu") -> dict:
    """Accuracy, per-class accuracy and confusion matrix (rows: true, columns: predicted)."""
    from sklearn.metrics import confusion_matrix

    y = np.asarray(y)
    probabilities = mae_predict(classifier, x, batch_size, device)
    predicted = probabilities.argmax(-1)
    labels = list(range(classifier.num_classes))
    matrix = confusion_matrix(y, predicted, labels=labels)
    totals = matrix.sum(axis=1)
    names = class_names or [str(i) for i in labels]
    per_class = {names[i]: float(matrix[i, i] / totals[i]) for i in labels if totals[i]}
    correct = int((predicted == y).sum())
    return {
        "accuracy": float((predicted == y).mean()) if len(y) else float("nan"),
        "ci95": list(accuracy_interval(correct, len(y))),
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix.tolist(),
        "predicted": predicted.tolist(),
        "n": int(len(y)),
    }
