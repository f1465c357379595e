"""Data-parallel set-up under ``torchrun``: who this process is, its device, and the collectives.

``torchrun`` puts RANK / WORLD_SIZE / LOCAL_RANK in the environment; without them (or with one
process) the run is single-process and every collective here is a no-op. The process group is
NCCL on CUDA and gloo on the CPU.
"""

from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor

from .config import ConfigError

__all__ = ["DistInfo", "all_reduce", "barrier", "dist_info_from_env", "process_group", "resolve_device"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place among the ``world_size`` processes of one run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info_from_env() -> DistInfo:
    """The process's :class:`DistInfo` from ``torchrun``'s environment variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def _wants_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


@contextlib.contextmanager
def process_group(device: str, info: DistInfo) -> Iterator[None]:
    """A process group for the block when ``info`` has several processes and none exists yet
    (NCCL when ``device`` asks for CUDA and CUDA is there, gloo otherwise); destroyed after it."""
    if not info.enabled or dist.is_initialized():
        yield
        return
    cuda = _wants_cuda(device) and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        yield
    finally:
        # The DDP wrapper sits in reference cycles; collected only at interpreter exit, it takes
        # gloo's threads down with it and the process aborts now and then. Collect it first.
        gc.collect()
        dist.destroy_process_group()


def resolve_device(spec: str, info: DistInfo) -> torch.device:
    """The device of config ``device: spec`` for this process (``auto``: CUDA if available; under
    ``torchrun`` each process takes the GPU of its local rank); ConfigError if it is not there."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} requested but CUDA is not available; use device: cpu or auto")
        if info.enabled:
            return torch.device("cuda", info.local_rank)  # one process per GPU under torchrun
        return torch.device(spec)
    if spec == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but MPS is not available; use device: cpu or auto")
    return torch.device(spec)


def all_reduce(tensor: Tensor, info: DistInfo, op: Any = None) -> Tensor:
    """``tensor`` reduced in place over the processes (a sum unless ``op`` says otherwise)."""
    if info.enabled:
        dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor


def barrier(info: DistInfo) -> None:
    """Wait until every process gets here."""
    if info.enabled:
        dist.barrier()
