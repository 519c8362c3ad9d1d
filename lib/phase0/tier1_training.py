# %% [markdown]
# # Tier 1 training: one loop for both heads, checkpoints that resume and refuse a mismatch
#
# `tier1_train` trains several models (the vMF and the Gaussian head) on the *same* batches:
# AdamW, linear warmup then cosine decay, gradient clipping, optional `torch.compile` and
# autocast mixed precision (`train.amp`, `train.amp_dtype`; float16 on CUDA uses a gradient
# scaler). Under `torchrun` every rank streams its own shard of utterances
# (`Tier1WindowDataset`), DistributedDataParallel averages the gradients, and rank 0 writes
# the checkpoints; `scripts/phase0_tier1_torchrun.py` is the command-line entry point.
#
# **Checkpoints** (`last.pt`, written atomically every `train.checkpoint_every` steps and at
# the end) hold the models, optimisers, step, history, the target scaling, the resolved
# config, its *identity* (the keys that must match to resume or to reuse the models: data
# and encoder fingerprint, context, model, optimiser settings, seed) with its hash, and each
# model's architecture fingerprint and weights digest. `load_tier1_checkpoint` turns a
# missing, unreadable or foreign file into a `Tier1CheckpointError` naming the file and, for
# another configuration, every key that differs. A resumed run continues at the saved step
# with the data stream fast-forwarded to the same batch; asking for fewer steps than done
# says so and trains nothing; `resume=False` moves an existing checkpoint aside (printed).

# %%
import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lib.core.distributed import distributed_all_reduce_sum, distributed_barrier
from lib.core.torch_files import atomic_torch_save, load_marked_torch_file
from lib.phase0.tier1_config import tier1_config_hash, tier1_flatten
from lib.phase0.tier1_model import (
    Tier1NextStepModel,
    tier1_model_fingerprint,
    tier1_nll,
    tier1_weights_digest,
)

TIER1_CHECKPOINT_FORMAT = "audiolens-phase0-tier1"
TIER1_CHECKPOINT_VERSION = 1
TIER1_IDENTITY_KEYS = (
    "context",
    "model",
    "seed",
    "train.batch_size",
    "train.lr",
    "train.weight_decay",
    "train.warmup_steps",
    "train.grad_clip",
    "train.shuffle_buffer",
)


class Tier1CheckpointError(RuntimeError):
    """A Tier 1 checkpoint is missing, unreadable or from another configuration (the message says which)."""


def tier1_identity(config: dict, data_fingerprint: str, heads) -> dict:
    """The settings a checkpoint must share with a run that resumes it or reuses its models."""
    flat = tier1_flatten(config)
    identity = {k: v for k, v in flat.items() if any(k == s or k.startswith(s + ".") for s in TIER1_IDENTITY_KEYS)}
    identity["data_fingerprint"] = data_fingerprint
    identity["heads"] = sorted(heads)
    return identity


def tier1_identity_hash(identity: dict) -> str:
    return tier1_config_hash({"identity": identity})


def save_tier1_checkpoint(path, models: dict, optimizers: dict, step: int, payload: dict) -> Path:
    """Write a checkpoint atomically (``payload``: config, identity, scaling, history...)."""
    state = {
        "format": TIER1_CHECKPOINT_FORMAT,
        "version": TIER1_CHECKPOINT_VERSION,
        "step": int(step),
        "models": {name: _tier1_unwrap(m).state_dict() for name, m in models.items()},
        "specs": {name: dict(_tier1_unwrap(m).spec) for name, m in models.items()},
        "model_fingerprints": {name: tier1_model_fingerprint(m) for name, m in models.items()},
        "weights_digests": {name: tier1_weights_digest(m) for name, m in models.items()},
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "torch_version": str(torch.__version__),
        **payload,
    }
    return atomic_torch_save(path, state)


# %% [markdown]
# ## Loading, rebuilding and moving checkpoints aside


# %%
def load_tier1_checkpoint(path, identity: dict | None = None) -> dict:
    """Read and validate a checkpoint; with ``identity``, refuse one from another configuration."""
    path = Path(path).expanduser()
    if not path.exists():
        raise Tier1CheckpointError(
            f"{path}: no such Tier 1 checkpoint. Run Exp 1 first (-p experiment exp1, it writes "
            "<output_dir>/exp1/last.pt) or pass the path of one with -p checkpoint PATH."
        )
    state = load_marked_torch_file(
        path,
        TIER1_CHECKPOINT_FORMAT,
        "a Phase 0 Tier 1 checkpoint",
        error=Tier1CheckpointError,
        unreadable_advice="The file is truncated or corrupt: delete it and run Exp 1 again.",
    )
    if state.get("version") != TIER1_CHECKPOINT_VERSION:
        raise Tier1CheckpointError(
            f"{path}: checkpoint version {state.get('version')}, expected {TIER1_CHECKPOINT_VERSION}"
        )
    missing = [k for k in ("models", "specs", "identity", "scaling", "config", "step") if k not in state]
    if missing:
        raise Tier1CheckpointError(f"{path}: incomplete checkpoint, missing {missing}")
    for name, model_state in state["models"].items():
        model = Tier1NextStepModel(**{k: v for k, v in state["specs"][name].items() if k != "memory_mode"})
        if state["specs"][name].get("memory_mode"):
            model.add_memory(state["specs"][name]["memory_mode"])
        try:
            model.load_state_dict(model_state)
        except RuntimeError as error:
            raise Tier1CheckpointError(f"{path}: model {name!r} does not match its spec ({error})") from None
        if tier1_model_fingerprint(model) != state["model_fingerprints"][name]:
            raise Tier1CheckpointError(f"{path}: model {name!r} fingerprint mismatch (the file was altered)")
        if tier1_weights_digest(model) != state["weights_digests"][name]:
            raise Tier1CheckpointError(f"{path}: model {name!r} weights digest mismatch (the file was altered)")
    if identity is not None and state["identity"] != identity:
        keys = sorted(set(identity) | set(state["identity"]))
        diff = [
            f"{k}: checkpoint {state['identity'].get(k)!r} vs this run {identity.get(k)!r}"
            for k in keys
            if state["identity"].get(k) != identity.get(k)
        ]
        raise Tier1CheckpointError(
            f"{path} was trained with another configuration:\n  "
            + "\n  ".join(diff)
            + "\nUse the same settings (the checkpoint's config is inside it), another output folder, "
            "or -p resume False to move it aside and train afresh."
        )
    return state


def tier1_models_from_checkpoint(state: dict) -> dict:
    """Rebuild the models of a validated checkpoint (CPU, eval mode)."""
    models = {}
    for name, model_state in state["models"].items():
        spec = dict(state["specs"][name])
        mode = spec.pop("memory_mode", None)
        model = Tier1NextStepModel(**spec)
        if mode:
            model.add_memory(mode)
        model.load_state_dict(model_state)
        models[name] = model.eval()
    return models


def tier1_move_aside(path) -> Path | None:
    """Rename an existing checkpoint to ``<name>.<time>.bak`` and return the new path (None if absent)."""
    path = Path(path)
    if not path.exists():
        return None
    target = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
    path.rename(target)
    print(f"resume False: moved the existing checkpoint aside to {target}")
    return target


def _tier1_unwrap(model):
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


# %% [markdown]
# ## The loop


# %%
def tier1_lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def tier1_autocast(device: str, amp: bool, amp_dtype: str):
    """An autocast context for ``device`` (a null context when ``amp`` is off)."""
    if not amp:
        return nullcontext()
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    return torch.autocast(device_type=device_type, dtype=getattr(torch, amp_dtype))


def tier1_train(
    models: dict,
    batches,
    train_config: dict,
    max_steps: int,
    device: str = "cpu",
    ctx: dict | None = None,
    checkpoint_path=None,
    payload: dict | None = None,
    start_step: int = 0,
    optimizer_states: dict | None = None,
    history: dict | None = None,
    prepare=None,
    lr: float | None = None,
    progress: bool = True,
    desc: str = "train",
) -> dict:
    """Train every model in ``models`` on the same ``batches`` up to ``max_steps``; return the history.

    ``batches`` yields ``{"context", "targets", ...}``; ``prepare(batch, step)`` may return
    ``(context, targets, memory)`` (Exp 2 uses it to look up and drop out the memory).
    """
    ctx = ctx or {"rank": 0, "world_size": 1, "distributed": False}
    cfg = train_config
    base_lr = float(lr if lr is not None else cfg["lr"])
    history = history or {"step": [], "loss": {name: [] for name in models}, "seconds": 0.0, "windows": 0}
    if start_step >= max_steps:
        history["steps_done"] = start_step
        return history
    for model in models.values():
        model.to(device).train()
    optimizers = {
        name: torch.optim.AdamW(model.parameters(), lr=base_lr, weight_decay=cfg["weight_decay"])
        for name, model in models.items()
    }
    for name, state in (optimizer_states or {}).items():
        if name in optimizers:
            optimizers[name].load_state_dict(state)
    runners = dict(models)
    if ctx.get("distributed"):
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx["local_rank"]] if str(device).startswith("cuda") else None
        runners = {name: DistributedDataParallel(m, device_ids=ids) for name, m in runners.items()}
    if cfg.get("compile"):
        runners = {name: torch.compile(m) for name, m in runners.items()}
    use_scaler = cfg.get("amp") and cfg.get("amp_dtype") == "float16" and str(device).startswith("cuda")
    scalers = {name: torch.amp.GradScaler("cuda") for name in models} if use_scaler else {}
    step, started = start_step, time.perf_counter()
    sums = torch.zeros(len(models) + 1, dtype=torch.float64)
    bar = tqdm(total=max_steps, initial=start_step, desc=desc, disable=not progress or ctx["rank"] != 0)
    iterator = iter(batches)
    while step < max_steps:
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(batches)
            continue
        context, targets, memory = prepare(batch, step) if prepare else (batch["context"], batch["targets"], None)
        context, targets = context.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        memory = memory.to(device) if memory is not None else None
        now = tier1_lr_at(step, max_steps, int(cfg["warmup_steps"]), base_lr)
        for i, (name, runner) in enumerate(runners.items()):
            for group in optimizers[name].param_groups:
                group["lr"] = now
            with tier1_autocast(device, cfg.get("amp"), cfg.get("amp_dtype", "bfloat16")):
                params = runner(context, memory)
            loss = tier1_nll(models[name].head_kind, params, targets)["nll"].mean() / targets.shape[-1]
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{name} loss became {loss.item()} at step {step}; lower train.lr or check the data"
                )
            optimizers[name].zero_grad(set_to_none=True)
            scaler = scalers.get(name)
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.unscale_(optimizers[name])
            if cfg.get("grad_clip"):
                torch.nn.utils.clip_grad_norm_(models[name].parameters(), cfg["grad_clip"])
            if scaler:
                scaler.step(optimizers[name])
                scaler.update()
            else:
                optimizers[name].step()
            sums[i] += loss.item()
        sums[-1] += 1
        history["windows"] += len(context) * ctx.get("world_size", 1)
        step += 1
        bar.update(1)
        if step % int(cfg["log_every"]) == 0 or step == max_steps:
            reduced = distributed_all_reduce_sum(sums, ctx)
            history["step"].append(step)
            for i, name in enumerate(models):
                history["loss"][name].append(float(reduced[i] / max(reduced[-1], 1)))
            bar.set_postfix({name: f"{history['loss'][name][-1]:.3f}" for name in models})
            sums.zero_()
        if checkpoint_path is not None and (step % int(cfg["checkpoint_every"]) == 0 or step == max_steps):
            history["seconds"] += time.perf_counter() - started
            started = time.perf_counter()
            if ctx["rank"] == 0:
                save_tier1_checkpoint(
                    checkpoint_path, models, optimizers, step, {**(payload or {}), "history": history}
                )
            distributed_barrier(ctx)
    bar.close()
    history["seconds"] += time.perf_counter() - started
    history["steps_done"] = step
    for model in models.values():
        model.eval()
    return history


def tier1_collect_targets(batches, n_batches: int = 8) -> np.ndarray:
    """Targets of the first ``n_batches`` batches (to initialise the heads)."""
    out = []
    for i, batch in enumerate(batches):
        out.append(batch["targets"].numpy())
        if i + 1 >= n_batches:
            break
    return np.concatenate(out)
