# %% [markdown]
# # Tier 1 pipeline: data, latent store, and Exp 1 training with resume
#
# The steps the notebook and the `torchrun` entry point (`scripts/phase0_tier1_torchrun.py`)
# share:
#
# - `tier1_manifest`: LibriSpeech (`data.subset`; `auto` is the full train-clean-100 when
#   present, else the 251-speaker sample), whole speakers held out (stratified by sex when
#   `SPEAKERS.TXT` gives it, seeded), capped by `data.max_utterances`;
# - `tier1_encode_store`: the encoder's latents in a Phase 0 latent store; under torchrun each
#   rank encodes its own parts (`shard_index = rank`), then all ranks wait for the store;
# - `tier1_exp1`: both heads trained on the same batches from a `Tier1WindowDataset` (sharded
#   over DataLoader workers and ranks), resuming `<dir>/last.pt` when it matches this
#   configuration, skipping training when it already has `train.max_steps` steps.

# %%
import time
from pathlib import Path

import torch

from lib.core.datasets import load_librispeech, resolve_librispeech_subset
from lib.core.distributed import distributed_barrier
from lib.phase0.phase0_latents import (
    cap_phase0_utterances,
    extract_latents_to_store,
    load_phase0_encoder,
    split_phase0_speakers,
)
from lib.phase0.tier1_data import Tier1Scaling, Tier1StoreSource, Tier1WindowDataset, fit_tier1_scaling
from lib.phase0.tier1_model import tier1_build_models
from lib.phase0.tier1_training import (
    load_tier1_checkpoint,
    tier1_collect_targets,
    tier1_identity,
    tier1_identity_hash,
    tier1_models_from_checkpoint,
    tier1_move_aside,
    tier1_train,
)


def tier1_manifest(config: dict):
    """The utterances of this run, with the ``split`` column (train / eval speakers)."""
    data = config["data"]
    subset = resolve_librispeech_subset(data["subset"]) if data["data_path"] is None else data["data_path"]
    manifest = load_librispeech(data["data_path"], subset=data["subset"])
    manifest = split_phase0_speakers(manifest, n_eval=data["n_eval_speakers"], seed=config["seed"])
    manifest = cap_phase0_utterances(manifest, data["max_utterances"], seed=config["seed"])
    manifest.attrs["subset"] = subset
    return manifest


def tier1_encode_store(manifest, config: dict, store_dir, device: str = "cpu", ctx=None, progress=True) -> dict:
    """Encode ``manifest`` into the store (each rank its shard under torchrun); ``{"encoder", "extraction"}``."""
    ctx = ctx or {"rank": 0, "world_size": 1, "distributed": False}
    enc = config["encoder"]
    started = time.perf_counter()
    encoder = load_phase0_encoder(
        enc["name"],
        device=device,
        local_files_only=enc["local_files_only"],
        layer=enc["layer"],
        whisper_mode=enc["whisper_mode"] if "whisper" in str(enc["name"]).lower() else None,
    )
    load_seconds = time.perf_counter() - started
    extraction = extract_latents_to_store(
        manifest,
        encoder,
        store_dir,
        shard_index=ctx["rank"],
        num_shards=ctx["world_size"],
        chunk_utterances=config["data"]["chunk_utterances"],
        max_seconds=config["data"]["max_seconds"],
        progress=progress and ctx["rank"] == 0,
    )
    distributed_barrier(ctx)
    extraction["load_encoder_seconds"] = load_seconds
    extraction["failures"] = extraction["failures"][:20]
    return {"encoder": encoder.info(), "extraction": extraction}


# %% [markdown]
# ## Exp 1 training


# %%
def tier1_exp1(
    source: Tier1StoreSource,
    config: dict,
    checkpoint_dir,
    device: str = "cpu",
    ctx=None,
    resume: bool = True,
    progress: bool = True,
) -> dict:
    """Train (or resume, or reuse) the vMF and Gaussian models; ``{"models", "scaling", "history", ...}``."""
    ctx = ctx or {"rank": 0, "world_size": 1, "local_rank": 0, "distributed": False}
    window, horizons, train = config["context"]["window"], config["context"]["horizons_k"], config["train"]
    checkpoint_path = Path(checkpoint_dir) / "last.pt"
    identity = tier1_identity(config, source.fingerprint, ("vmf", "gaussian"))
    state = None
    if checkpoint_path.exists():
        if resume:
            state = load_tier1_checkpoint(checkpoint_path, identity)
        elif ctx["rank"] == 0:
            tier1_move_aside(checkpoint_path)
    distributed_barrier(ctx)
    if state is not None:
        scaling = Tier1Scaling.from_dict(state["scaling"])
        models = tier1_models_from_checkpoint(state)
        start_step, history = int(state["step"]), state["history"]
        if start_step >= train["max_steps"]:
            print(
                f"{checkpoint_path} already holds {start_step} training steps (train.max_steps is "
                f"{train['max_steps']}): using it as is, no training. Raise train.max_steps to train further."
            )
        else:
            print(f"Resuming from {checkpoint_path} at step {start_step} of {train['max_steps']}")
    else:
        scaling = fit_tier1_scaling(source, horizons, config["model"]["target_scaling"])
        models = tier1_build_models(source.dim, config)
        start_step, history = 0, None
    dataset = Tier1WindowDataset(
        source,
        scaling,
        window,
        horizons,
        batch_size=train["batch_size"],
        shuffle_buffer=train["shuffle_buffer"],
        seed=config["seed"],
        ctx=ctx,
        skip_batches=start_step,
    )
    if state is None:
        init = tier1_collect_targets(
            Tier1WindowDataset(source, scaling, window, horizons, batch_size=train["batch_size"], seed=config["seed"])
        )
        for model in models.values():
            model.init_from_targets(init)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=int(train["num_workers"]), persistent_workers=train["num_workers"] > 0
    )
    payload = {
        "config": config,
        "identity": identity,
        "config_hash": tier1_identity_hash(identity),
        "scaling": scaling.to_dict(),
        "encoder": dict(source.encoder),
        "world_size": ctx["world_size"],
    }
    history = tier1_train(
        models,
        loader,
        train,
        train["max_steps"],
        device=device,
        ctx=ctx,
        checkpoint_path=checkpoint_path,
        payload=payload,
        start_step=start_step,
        optimizer_states=state["optimizers"] if state is not None else None,
        history=history,
        progress=progress,
        desc="Exp 1 training",
    )
    return {
        "models": models,
        "scaling": scaling,
        "history": history,
        "checkpoint": str(checkpoint_path),
        "start_step": start_step,
        "config_hash": payload["config_hash"],
        "windows_per_epoch": dataset.windows_per_epoch,
    }
