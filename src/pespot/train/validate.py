"""Validation during training: the loss on fixed clips and E2E-Spot's model-selection mAP on whole videos."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pespot.config import Config
from pespot.data import loader as data
from pespot.data.labels import Video
from pespot.train import distributed as ddp
from pespot.train.distributed import DistInfo
from pespot.train.history import SELECTION_TOLERANCES


@torch.no_grad()
def evaluate_loss(model: nn.Module, loss_fn: nn.Module, loader: Any, autocast: Callable,
                  info: DistInfo) -> dict[str, float]:
    """Mean loss parts over the fixed validation clips (no augmentation, no mixup; the bank is only read)."""
    use_projection = bool(getattr(loss_fn, "needs_projection", False))
    model.eval()
    keys = ["cls", "total"] + (["contrastive"] if use_projection else [])  # the same keys on every rank
    sums = dict.fromkeys(keys, 0.0)
    count = 0
    for batch in data.batches(loader):
        frames, targets = data.to_device(batch, info.device)
        with autocast():
            logits, proj = model(frames, return_projection=True) if use_projection else (model(frames), None)
        _, parts = loss_fn(logits, targets, proj)
        for key in keys:
            sums[key] += float(parts[key]) * frames.shape[0]
        count += frames.shape[0]
    model.train()
    totals = ddp.all_reduce_sum(torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64,
                                             device=info.device), info).tolist()
    return {k: v / max(totals[-1], 1.0) for k, v in zip(keys, totals[:-1])}


@torch.no_grad()
def evaluate_map(model: nn.Module, cfg: Config, classes: list[str], videos: list[Video], loss_fn: nn.Module,
                 info: DistInfo) -> dict[int, float]:
    """Validation mAP per tolerance (frames) as E2E-Spot's model selection: windows side by side, every candidate
    of the run's rule, no NMS (``train.selection_nms: none``) or the run's NMS (``eval``). Each rank scores every
    ``world_size``-th video; every rank gets the result."""
    from pespot.infer import Predictor, predict_videos
    from pespot.metrics import compute_map

    tolerances = sorted(set(cfg.eval.tolerances) | set(SELECTION_TOLERANCES))
    model.eval()
    predictor = Predictor(model=model, cfg=cfg, classes=classes, device=info.device, tta=cfg.eval.tta,
                          activation=loss_fn.score_activation)
    mine = videos[info.rank::info.world_size]
    preds = [p.to_video() for p in predict_videos(predictor, mine, cfg.frames_dir, overlap=0.0,
                                                    nms=None if cfg.train.selection_nms == "eval" else "none")]
    model.train()
    gathered = {v.video: v for part in ddp.gather_objects(preds, info) for v in part}
    result = None
    if info.is_main:
        res = compute_map(videos, [gathered[v.video] for v in videos], classes, tolerances)
        result = {int(t): float(res.mAP[t]) for t in tolerances}
    return ddp.broadcast_object(result, info)
