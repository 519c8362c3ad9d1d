# %% [markdown]
# # Distributed runs: process group, ranks, data shards
#
# The pieces every multi-process training loop needs, whether it runs alone in a notebook or
# under `torchrun` on several GPUs or nodes:
#
# - `distributed_context(device)` joins the process group that `torchrun` describes in the
#   environment (`WORLD_SIZE` > 1; NCCL on GPUs, gloo on CPUs) or returns a one-process
#   context; each GPU rank gets `cuda:<local rank>`;
# - `distributed_teardown()` leaves the group again (safe when there is none);
# - `distributed_shard(n_items, ctx)`: which items of a list this process (rank *and*
#   DataLoader worker) owns: item `i` goes to shard `i % shards`, so every item is read by
#   exactly one process and no process reads the whole list;
# - `distributed_all_reduce_sum(values, ctx)` and `distributed_barrier(ctx)`.

# %%
import os

import torch
import torch.distributed as dist


def distributed_context(device: str = "cpu") -> dict:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1), or run alone.

    Returns ``{"rank", "world_size", "local_rank", "distributed", "device", "backend"}``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        if str(device).startswith("cuda"):
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(device)
        return {
            "rank": rank,
            "world_size": world,
            "local_rank": local_rank,
            "distributed": True,
            "device": device,
            "backend": dist.get_backend(),
        }
    return {"rank": 0, "world_size": 1, "local_rank": 0, "distributed": False, "device": device, "backend": None}


def distributed_teardown() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def distributed_barrier(ctx: dict) -> None:
    """Wait for every rank (no-op in a one-process run)."""
    if ctx.get("distributed"):
        dist.barrier()


def distributed_all_reduce_sum(values, ctx: dict) -> torch.Tensor:
    """Element-wise sum of ``values`` over ranks (a float64 tensor on the CPU; unchanged alone)."""
    tensor = torch.as_tensor(values, dtype=torch.float64).clone()
    if not ctx.get("distributed"):
        return tensor
    on_device = tensor.to(ctx["device"]) if str(ctx["device"]).startswith("cuda") else tensor
    dist.all_reduce(on_device)
    return on_device.cpu()


def distributed_shard_id(ctx: dict | None = None) -> tuple:
    """``(shard, shards)`` of this process: one shard per (rank, DataLoader worker) pair."""
    ctx = ctx or {"rank": 0, "world_size": 1}
    info = torch.utils.data.get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return ctx["rank"] * workers + worker, ctx["world_size"] * workers


def distributed_shard(n_items: int, ctx: dict | None = None) -> list:
    """Indices ``i`` of ``range(n_items)`` with ``i % shards == shard`` for this rank and worker."""
    shard, shards = distributed_shard_id(ctx)
    return list(range(shard, int(n_items), shards))
