"""Learning-rate schedules, stepped once per optimiser step (method-spec 5.3, paper 4.1).

* ``warmup_cosine`` (default): linear warm-up from ``warmup_start_factor * lr`` (the paper: 1e-5 for lr 1e-3) to
  ``lr`` over ``warmup_epochs`` epochs, **then** cosine decay to ``min_lr_factor * lr``, reached when the last
  optimiser step is done (the value after the final ``scheduler.step()``; the last step itself uses a value just
  above the minimum, as torch's ``CosineAnnealingLR`` with ``T_max`` = number of decay steps).
* ``e2e_chained``: E2E-Spot's ``ChainedScheduler([LinearLR(0.01, 3 epochs), CosineAnnealingLR((E - 3) epochs)])``
  reproduced as it is: both run from step 0 and multiply, so the cosine already decays during the warm-up,
  reaches its minimum (E - 3) epochs in and rises slightly over the last 3 epochs.

Both save and restore through ``state_dict()``; on resume also restore the optimiser (the chained form keeps its
current learning rate in the optimiser's parameter groups).
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import ChainedScheduler, CosineAnnealingLR, LambdaLR, LinearLR, LRScheduler

from pespot.config import OptimConfig
from pespot.errors import ConfigError
from pespot.registry import SCHEDULERS


class WarmupCosine:
    """Learning-rate factor of optimiser step ``s``: linear warm-up, then half a cosine down to ``min_factor``.

    A callable object rather than a closure so that ``LambdaLR.state_dict()`` saves its settings.
    """

    def __init__(self, warmup_steps: int, total_steps: int, start_factor: float, min_factor: float) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.start_factor = start_factor
        self.min_factor = min_factor

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / decay_steps) if decay_steps > 0 else 1.0
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim_cfg: OptimConfig, steps_per_epoch: int, epochs: int
) -> LRScheduler:
    """The LR scheduler named by ``optim.scheduler``; pass the base optimiser (a ``SAM`` is unwrapped)."""
    optimizer = getattr(optimizer, "base_optimizer", optimizer)  # SAM keeps the lr in its base optimiser
    if steps_per_epoch <= 0 or epochs <= 0:
        raise ConfigError(f"learning-rate schedule: need positive steps per epoch and epochs, got "
                          f"{steps_per_epoch} and {epochs} (check train.epochs, train.clips_per_epoch)")
    if optim_cfg.warmup_epochs < 0:
        raise ConfigError(f"config key 'optim.warmup_epochs': expected >= 0, got {optim_cfg.warmup_epochs}")
    if not 0.0 < optim_cfg.warmup_start_factor <= 1.0:
        raise ConfigError(f"config key 'optim.warmup_start_factor': expected in (0, 1], "
                          f"got {optim_cfg.warmup_start_factor}")
    if not 0.0 <= optim_cfg.min_lr_factor <= 1.0:
        raise ConfigError(f"config key 'optim.min_lr_factor': expected in [0, 1], got {optim_cfg.min_lr_factor}")
    total = steps_per_epoch * epochs
    warmup = round(optim_cfg.warmup_epochs * steps_per_epoch)
    return SCHEDULERS.get(optim_cfg.scheduler).builder(optimizer, optim_cfg, warmup, total)


@SCHEDULERS.register("warmup_cosine")
def _warmup_cosine(optimizer: torch.optim.Optimizer, optim_cfg: OptimConfig, warmup: int, total: int) -> LRScheduler:
    return LambdaLR(optimizer, WarmupCosine(warmup, total, optim_cfg.warmup_start_factor, optim_cfg.min_lr_factor))


@SCHEDULERS.register("e2e_chained")
def _e2e_chained(optimizer: torch.optim.Optimizer, optim_cfg: OptimConfig, warmup: int, total: int) -> LRScheduler:
    if total - warmup <= 0:
        raise ConfigError(f"config key 'train.epochs': e2e_chained needs more steps ({total}) than "
                          f"optim.warmup_epochs gives the warm-up ({warmup})")
    # constructed in E2E-Spot's order: each constructor applies its step-0 factor to the optimiser's lr
    schedulers: list[LRScheduler] = []
    if warmup > 0:
        schedulers.append(LinearLR(optimizer, start_factor=optim_cfg.warmup_start_factor, end_factor=1.0,
                                   total_iters=warmup))
    schedulers.append(CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=optim_cfg.min_lr_factor * optim_cfg.lr))
    return ChainedScheduler(schedulers)
