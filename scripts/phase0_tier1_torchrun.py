# %% [markdown]
# # Phase 0 Tier 1 Exp 1 training with `torchrun`
#
# The same Exp 1 training the `phase0_tier1` notebook runs, under DistributedDataParallel on
# several GPUs or nodes, from a checkout of the repository:
#
# ```bash
# torchrun --nproc_per_node=4 -m scripts.phase0_tier1_torchrun --config configs/phase0_tier1.yaml \
#     --output-dir runs/phase0_tier1/big -o train.max_steps=20000 -o encoder.name=kyutai/mimi
# ```
#
# Each rank encodes its share of the latent store's parts (`shard_index = rank`), waits for
# the others, then streams its own shard of the utterances (parts `i % shards`, shards being
# ranks x DataLoader workers); gradients are averaged by DDP and rank 0 writes
# `<output-dir>/exp1/last.pt`. Running the command again resumes from it. Then run the
# notebook with the same `output_dir` (and config) for the evaluation, Exp 2 and Exp 3: it
# finds the checkpoint complete and trains nothing.

# %%
import argparse
import json
from pathlib import Path

import yaml

from lib.core.distributed import distributed_context, distributed_teardown
from lib.core.runtime import pick_device, seed_everything
from lib.phase0.tier1_config import load_tier1_config, write_tier1_config
from lib.phase0.tier1_data import Tier1StoreSource
from lib.phase0.tier1_pipeline import tier1_encode_store, tier1_exp1, tier1_manifest
from lib.phase0.tier1_representations import tier1_slug


def tier1_torchrun_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Phase 0 Tier 1 Exp 1 training (single process or torchrun/DDP)")
    parser.add_argument("--config", default=None, help="YAML config (default: the built-in defaults)")
    parser.add_argument(
        "-o", "--override", action="append", default=[], help="KEY=VALUE with a dotted key, VALUE as YAML"
    )
    parser.add_argument("--output-dir", required=True, help="the notebook's output_dir: exp1/last.pt goes here")
    parser.add_argument("--store-dir", default=None, help="latent store (default: <output-dir>/latents/<encoder>)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-resume", action="store_true", help="move an existing checkpoint aside first")
    return parser


def tier1_torchrun_main(argv=None) -> dict:
    """Train Exp 1 on this rank's shard; return a summary (printed as JSON by rank 0)."""
    args = tier1_torchrun_parser().parse_args(argv)
    overrides = {}
    for item in args.override:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--override {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    config = load_tier1_config(args.config, overrides)
    ctx = distributed_context(pick_device(args.device))
    seed_everything(config["seed"])
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if ctx["rank"] == 0:
        write_tier1_config(config, out / "phase0_tier1_config.yaml")
    manifest = tier1_manifest(config)
    store = Path(args.store_dir) if args.store_dir else out / "latents" / tier1_slug(config["encoder"]["name"])
    tier1_encode_store(manifest, config, store, device=ctx["device"], ctx=ctx)
    source = Tier1StoreSource(store, dict(zip(manifest["utterance"].astype(str), manifest["split"])))
    result = tier1_exp1(source, config, out / "exp1", device=ctx["device"], ctx=ctx, resume=not args.no_resume)
    summary = {
        "world_size": ctx["world_size"],
        "steps": result["history"].get("steps_done"),
        "start_step": result["start_step"],
        "loss": result["history"]["loss"],
        "windows": result["history"]["windows"],
        "checkpoint": result["checkpoint"],
        "config_hash": result["config_hash"],
    }
    if ctx["rank"] == 0:
        print(json.dumps(summary))
    distributed_teardown()
    return summary


if __name__ == "__main__":
    tier1_torchrun_main()
