"""Small helpers for DistributedDataParallel training launched by ``torchrun``.

``torchrun --nproc_per_node N -m pespot train ...`` starts N processes and gives each one the environment
variables ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. ``setup`` reads them and
joins the process group: NCCL when the processes run on GPUs (each rank on ``cuda:LOCAL_RANK``), gloo on CPU.
Without those variables (or with ``WORLD_SIZE=1``) everything here is a no-op, so the trainer has one code path.
"""

from __future__ import annotations

import datetime
import os
import warnings
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from pespot.errors import ConfigError


@dataclass
class DistInfo:
    """Where this process sits: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # "nccl" | "gloo" when a process group is up

    @property
    def distributed(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, evaluates the metrics and writes the run folder."""
        return self.rank == 0


def resolve_device(name: str | torch.device, local_rank: int = 0, what: str = "config key 'train.device'"
                   ) -> torch.device:
    """A device name -> a torch device: auto = CUDA when present (``cuda:LOCAL_RANK``), else the CPU. ``what``
    names the option in errors (``--device`` on the command line)."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{what}: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{what}: {name!r} asked for, but CUDA is not available on this machine")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    elif device.type != "cpu":
        raise ConfigError(f"{what}: expected auto, cpu, cuda or cuda:N, got {name!r}")
    return device


def setup(device_name: str = "auto") -> DistInfo:
    """Join the torchrun process group if there is one, and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(device=resolve_device(device_name))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        # One GPU per process: each rank trains on cuda:LOCAL_RANK whatever train.device named.
        device = torch.device(f"cuda:{local_rank}")
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        # A generous timeout: ranks wait for each other around checkpoint writes and validation.
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=60))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device, backend=backend)


def cleanup(info: DistInfo) -> None:
    """Leave the process group (at the end of training, or on an error)."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op on one process)."""
    if info.distributed:
        if info.backend == "nccl":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP-wrap ``model`` (already on ``info.device``); BatchNorm becomes SyncBatchNorm only on CUDA.

    Returns the module to call in training. The caller keeps ``model`` itself for checkpoints and evaluation:
    its parameters are the same tensors, so its state dict has no ``module.`` prefix.
    """
    if not info.distributed:
        return model
    # Conv3d weights of shape (C, C', 1, 1, 1) in channels_last_3d have strides that differ from the contiguous
    # bucket view only along size-1 dimensions, i.e. the same memory layout; DDP still warns every process.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    if info.device.type == "cuda":
        return nn.parallel.DistributedDataParallel(model, device_ids=[info.device.index])
    return nn.parallel.DistributedDataParallel(model)


def convert_sync_batchnorm(model: nn.Module, info: DistInfo) -> nn.Module:
    """BatchNorm -> SyncBatchNorm when several CUDA processes train (SyncBatchNorm has no CPU/gloo kernel)."""
    if info.distributed and info.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def broadcast_buffers(model: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last training forward of an epoch every
    rank holds statistics updated with its own batch; this makes them identical again before evaluating/saving.
    """
    if not info.distributed:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def all_gather_cat(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate ``tensor`` (N_r, ...) of every rank along dim 0, in rank order; N_r may differ between ranks.

    Used to fill the SoftIC memory bank with the candidates of all ranks, so the bank is identical everywhere.
    """
    if not info.distributed:
        return tensor
    tensor = tensor.contiguous()
    size = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(info.world_size)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    # all_gather needs equal shapes: pad to the longest, then cut each rank's part back to its own length.
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, counts)], dim=0)


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``values`` over ranks (returned; the input is not modified)."""
    if not info.distributed:
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True when ``flag`` is true on at least one rank (every rank gets the same answer)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj: object, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not info.distributed:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
