# %% [markdown]
# # Multi-process pretraining with `torchrun`
#
# The command-line entry point for the same pretraining loop the notebook runs, under
# DistributedDataParallel, from a checkout of the repository:
#
# ```bash
# torchrun --nproc_per_node=4 -m scripts.mae_torchrun --dataset esc50 --size base --epochs 100 \
#     --batch-size 64 --checkpoint-dir checkpoints/audiomae
# ```
#
# Each GPU gets one process (`cuda:<local rank>`, NCCL); without GPUs the processes use
# the CPU and the gloo backend. Rank 0 computes the log-mel cache first, the others then read
# it; every rank trains on its shard of each epoch; rank 0 writes `last.pt` every epoch, and
# running the same command again resumes from it. Load the result in the notebook with
# `load_audiomae_encoder(".../last.pt")` or its `resume` parameter.

# %%
import argparse
import json

from lib.core.distributed import distributed_barrier, distributed_context, distributed_teardown
from lib.core.runtime import pick_device, seed_everything
from lib.core.subsets import stratified_subset
from lib.mae.audiomae import build_audiomae_model
from lib.mae.mae_data import build_mae_data_source, mae_load_split
from lib.mae.mae_training import mae_pretrain
from lib.mae.mae_transforms import build_mae_transform


def mae_torchrun_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="AudioMAE pretraining (single process or torchrun/DDP)")
    parser.add_argument("--dataset", default="esc50", help="registered data source: esc50, fsdd, folder")
    parser.add_argument("--data-path", default=None, help="data set folder (None: $AUDIOLENS_DATA, data/, download)")
    parser.add_argument("--labels-csv", default=None, help="labels CSV for --dataset folder")
    parser.add_argument("--test-fold", type=int, default=1, help="ESC-50 fold held out (never pretrained on)")
    parser.add_argument("--model", default="audiomae++", help="registered model: audiomae++, vit_mae")
    parser.add_argument("--size", default="base", help="tiny, small or base")
    parser.add_argument("--overrides", default="{}", help='JSON of config overrides, e.g. {"depth": 4}')
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--n-mels", type=int, default=80)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--max-clips", type=int, default=None, help="cap on pretraining clips")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--checkpoint-dir", required=True)
    parser.add_argument("--cache-dir", default=None, help="log-mel .npy cache (default: <checkpoint-dir>/cache)")
    parser.add_argument(
        "--no-resume", action="store_true", help="start afresh (an existing last.pt is moved aside, not deleted)"
    )
    parser.add_argument(
        "--force-resume", action="store_true", help="resume even if the checkpoint was trained on other data/settings"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def mae_torchrun_main(argv=None) -> dict:
    """Parse ``argv``, load the training split, pretrain, return the history (on every rank)."""
    args = mae_torchrun_parser().parse_args(argv)
    ctx = distributed_context(pick_device(args.device))
    seed_everything(args.seed)  # same seed on every rank: identical initial weights
    source = build_mae_data_source(
        args.dataset, path=args.data_path, labels_csv=args.labels_csv, test_fold=args.test_fold, seed=args.seed
    )
    frame = stratified_subset(source.manifest().query("split == 'train'"), args.max_clips, args.seed)
    transform = build_mae_transform("log_mel", sample_rate=args.sample_rate, n_mels=args.n_mels, frames=args.frames)
    cache_dir = args.cache_dir or f"{args.checkpoint_dir}/cache"
    if ctx["rank"] != 0:
        distributed_barrier(ctx)  # wait for rank 0 to fill the cache
    data = mae_load_split(frame, transform, cache_dir=cache_dir, desc=f"log-mel (rank {ctx['rank']})")
    if ctx["rank"] == 0:
        distributed_barrier(ctx)
    model = build_audiomae_model(
        args.model, args.size, input_size=(args.n_mels, args.frames), **json.loads(args.overrides)
    )
    history = mae_pretrain(
        model,
        data["x"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_epochs=args.warmup_epochs,
        device=ctx["device"],
        checkpoint_dir=args.checkpoint_dir,
        resume="force" if args.force_resume else not args.no_resume,
        seed=args.seed,
        transform_config=transform.config,
    )
    if ctx["rank"] == 0:
        print(
            json.dumps(
                {
                    "loss": history["loss"],
                    "world_size": history["world_size"],
                    "clips": len(data["x"]),
                    "skipped": len(data["failures"]),
                }
            )
        )
    distributed_teardown()
    return history


if __name__ == "__main__":
    mae_torchrun_main()
