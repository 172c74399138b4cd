"""What a training run holds: ``Job`` (everything it trains with, built once) and ``TrainState`` (how far it is,
what a checkpoint saves besides the model, optimiser, scheduler and loss); ``step_job`` builds a job without data
(to time ``train_step`` on given tensors) and ``autocast_factory`` the mixed-precision context."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pespot.config import Config, OptimConfig
from pespot.data import loader as data
from pespot.data.labels import Video
from pespot.errors import ConfigError
from pespot.train.distributed import DistInfo
from pespot.train.history import LossSums


@dataclass
class TrainState:
    """How far a run is: what a checkpoint saves besides the model, optimiser, scheduler and loss."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps completed
    step_in_epoch: int = 0  # steps of the current epoch done (non-zero only in a mid-epoch checkpoint)
    best: dict[str, Any] = field(default_factory=dict)  # epoch, score, criterion, metrics of best.pt
    sums: LossSums = field(default_factory=LossSums)  # loss sums of the current epoch
    history: list[dict] = field(default_factory=list)  # one record per finished epoch (metrics.jsonl)
    epoch_started: float = 0.0  # time.time() when the current epoch started (earlier sessions' time included)


@dataclass
class Job:
    """Everything a run trains with, built once by ``build``."""

    cfg: Config
    classes: list[str]
    out: Path
    info: DistInfo
    model: nn.Module  # the plain module: saved, evaluated, its BatchNorm frozen in SAM's second pass
    net: nn.Module  # what training calls: ``model``, or its DDP wrapper and/or torch.compile of it
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    sam: Any  # SAM/ASAM around ``optimizer``, or None
    scheduler: Any
    autocast: Callable[[], contextlib.AbstractContextManager]
    steps_per_epoch: int
    schedule: dict[str, Any]  # what a mid-epoch checkpoint needs to stay valid
    sampler: data.ClipSampler | None = None
    loader: Any = None
    val_loader: Any = None
    map_videos: list[Video] = field(default_factory=list)  # the validation videos of the mAP
    gather_fn: Callable | None = None
    writer: Any = None
    log: Callable[[str], None] = print

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.train.epochs


def step_job(cfg: Config, num_classes: int, device: torch.device, model: nn.Module | None = None) -> Job:
    """``cfg``'s model (or ``model``), loss, AdamW (+ SAM/ASAM) and a constant learning rate, without data: what
    ``train_step`` needs to be timed on given tensors (benchmarks, the demo's calibration)."""
    from pespot.model.spotter import build_model
    from pespot.train.losses import build_loss
    from pespot.train.sam import build_sam

    model = (model if model is not None else build_model(cfg, num_classes)).to(device).train()
    optimizer = build_adamw(model, cfg.optim)
    return Job(cfg=cfg, classes=[str(i) for i in range(num_classes)], out=Path(cfg.out), info=DistInfo(device=device),
               model=model, net=model, loss_fn=build_loss(cfg.loss, num_classes, cfg.model.projection_dim).to(device),
               optimizer=optimizer, sam=build_sam(model, optimizer, cfg.optim),
               scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
               autocast=autocast_factory(cfg, device), steps_per_epoch=1, schedule={})


def build_adamw(model: nn.Module, optim_cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters: one group at ``optim.lr``, and with ``optim.gt_lr_scale`` != 1 a second
    group, ASTRM's Gt modules (``*.gt.*``), at ``lr * gt_lr_scale`` (the scheduler scales both alike)."""
    if optim_cfg.gt_lr_scale < 0:
        raise ConfigError(f"config key 'optim.gt_lr_scale': expected >= 0, got {optim_cfg.gt_lr_scale}")
    named = list(model.named_parameters())
    gt = [p for name, p in named if ".gt." in f".{name}"] if optim_cfg.gt_lr_scale != 1.0 else []
    groups: list[dict[str, Any]] = [{"params": [p for name, p in named if not gt or ".gt." not in f".{name}"]}]
    if gt:
        groups.append({"params": gt, "lr": optim_cfg.lr * optim_cfg.gt_lr_scale})
    return torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=tuple(optim_cfg.betas),
                             weight_decay=optim_cfg.weight_decay)


def autocast_factory(cfg: Config, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast for ``train.amp`` bf16, or auto on CUDA (no GradScaler: bf16 has fp32's range)."""
    amp = cfg.train.amp
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext
