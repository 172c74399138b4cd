"""Training data plumbing: the clip datasets of a config, their samplers and DataLoaders, batches on the device.

Exact resume: a training clip is a deterministic function of (seed, epoch, index) (``ClipDataset``); the sampler
yields (epoch, index) pairs, so persistent DataLoader workers need no state; the DataLoader draws its worker seeds
from its own generator, never from the global RNG that dropout (and resume) rely on. Many processes: each rank
takes its share of every epoch's clips (``DistributedSampler``'s split) and of the fixed validation clips.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from pespot.config import Config
from pespot.data.clips import clip_frames
from pespot.data.labels import Video
from pespot.errors import PespotError
from pespot.train.distributed import DistInfo


class EpochClips(Dataset):
    """A ``ClipDataset`` indexed by (epoch, index): the epoch travels with the index, so persistent DataLoader
    workers (which hold their own copy of the dataset) always make the clip of the right epoch."""

    def __init__(self, clips: Any) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        if getattr(self.clips, "epoch", None) != epoch:
            self.clips.set_epoch(epoch)
        return self.clips[index]


class ClipSampler(Sampler):
    """This rank's (epoch, clip index) pairs of one epoch, after the batches already done are skipped.

    The clips themselves are random (a function of seed, epoch and index), so the order is plain; the split
    between ranks is ``DistributedSampler``'s (rank r takes r, r + N, ...; the tail is padded so every rank makes
    the same number of steps).
    """

    def __init__(self, num_clips: int, batch_size: int, info: DistInfo) -> None:
        self.shards = DistributedSampler(range(num_clips), num_replicas=info.world_size, rank=info.rank,
                                         shuffle=False, drop_last=False)
        self.batch_size = batch_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Choose the epoch and how many of its batches (already trained on) to skip."""
        self.epoch, self.skip = epoch, skip_batches
        self.shards.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in list(self.shards)[self.skip * self.batch_size:]:
            yield self.epoch, index

    def __len__(self) -> int:
        return max(0, len(self.shards) - self.skip * self.batch_size)


class ShardSampler(Sampler):
    """The fixed validation clips (always epoch 0): rank r scores clips r, r + N, ... without padding."""

    def __init__(self, num_clips: int, info: DistInfo) -> None:
        self.indices = list(range(num_clips))[info.rank::info.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.indices:
            yield 0, index

    def __len__(self) -> int:
        return len(self.indices)


def clip_dataset(cfg: Config, videos: list[Video], classes: list[str], num_clips: int, train: bool) -> Any:
    """Training clips (augmented, mixup) or the fixed validation-loss clips (neither)."""
    from pespot.data.clips import ClipDataset

    return ClipDataset(
        videos, classes, cfg.frames_dir, cfg.model.clip_len, num_clips,
        height=cfg.data.height, crop=cfg.data.crop,
        augment=cfg.data.augment and train, mixup=cfg.data.mixup and train, mixup_alpha=cfg.data.mixup_alpha,
        dilate_len=cfg.data.dilate_len, pad_len=cfg.data.pad_len,
        fg_upsample=cfg.data.fg_upsample if train else None, blur_max_sigma=cfg.data.blur_max_sigma,
        # Validation clips use another seed stream so they are not the training clips of epoch 0.
        seed=cfg.train.seed if train else cfg.train.seed + 1_000_003, epoch=0,
    )


def make_loader(cfg: Config, dataset: Dataset, sampler: Sampler, batch_size: int, device: torch.device,
            persistent: bool = False) -> DataLoader:
    workers = cfg.data.num_workers
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=persistent and workers > 0, drop_last=False,
        # Worker seeds come from this generator, never from the global RNG that dropout (and resume) rely on.
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )


def batches(loader: DataLoader) -> Iterator[dict]:
    """The batches of ``loader``; a PespotError raised in a DataLoader worker keeps its one-line message (torch
    re-raises it with the worker's whole traceback as the message)."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except PespotError as err:
            raise type(err)(worker_error_message(str(err))) from None
        yield batch


def worker_error_message(message: str) -> str:
    """"Caught DataError in DataLoader worker process 0.\nOriginal Traceback ...\npespot.errors.DataError: msg"
    -> "msg"; any other message as it is."""
    lines = [line for line in message.splitlines() if line.strip()]
    if not message.startswith("Caught ") or len(lines) < 2:
        return message
    name, sep, text = lines[-1].partition(": ")
    return text if sep and " " not in name else message


def to_device(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A collated batch of ``ClipDataset`` items -> float frames (B, T, 3, H, W) and targets (B, T, K+1) on
    ``device``: the uint8 clips are copied (4x fewer bytes than float32), then augmented, normalised and mixed
    there (``clip_frames``), one item at a time."""
    raw = batch["raw"].to(device, non_blocking=True)  # (B, M, T, H, W, 3) uint8
    targets = batch["targets"].to(device, non_blocking=True).float()
    frames = torch.stack([clip_frames(raw[b], batch["span"][b], batch["aug"][b], float(batch["lam"][b]))
                          for b in range(raw.shape[0])])
    return frames, targets
