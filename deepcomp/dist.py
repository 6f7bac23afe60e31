"""Data-parallel runs under ``torchrun``: PyTorch's own engine, nothing of our own.

A plain single-process run never touches ``torch.distributed``. Under torchrun (``WORLD_SIZE``
> 1 in the environment) the process group starts on first use: NCCL on CUDA, gloo on CPU.
"""
from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist

__all__ = ["setup", "rank", "world_size", "is_main", "all_reduce_sum", "all_reduce_max",
           "broadcast", "barrier", "cleanup", "same_on_all_ranks"]


def setup(device: torch.device) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def broadcast(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    if active():
        dist.broadcast(t, src)
    return t


def barrier() -> None:
    if active():
        dist.barrier()


def cleanup(sync: bool = True) -> None:
    """Tear the process group down: collect garbage, wait for every rank, then destroy it.

    Without the first two steps a gloo rank sometimes aborted in interpreter teardown
    ("terminate called without an active exception"): 5 in 52 runs of the 2-process tests;
    barrier alone, 1 in 21; both, 0 in 80. ``sync=False`` skips the wait after an error, when
    the other ranks may never arrive."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        if sync:
            dist.barrier()
        dist.destroy_process_group()


def same_on_all_ranks(tensors) -> bool:
    """True when every rank holds the same values (compared by a float64 checksum per tensor)."""
    if not active():
        return True
    sums = torch.stack([t.detach().double().sum() + (t.detach().double().reshape(-1)
                        * torch.arange(1, t.numel() + 1, dtype=torch.float64,
                                       device=t.device)).sum() * 1e-6 for t in tensors])
    hi, lo = sums.clone(), sums.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    return bool(torch.equal(hi, lo))
