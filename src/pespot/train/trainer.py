"""Training: one loop you can read top to bottom in ``train``.

    build data -> build model, loss, AdamW (+ ASAM/SAM), schedule -> for each epoch: optimiser steps,
    validation loss, validation mAP, model selection, checkpoint.

One optimiser step is method-spec section 5.4: a first forward/backward pass with the projection features, the
(A)SAM ascent to w + eps, a second pass on the same batch with BatchNorm running statistics frozen, the AdamW step
at the restored w with the second-pass gradient, one scheduler step, then the SoftIC memory bank takes the
first-pass features (both passes saw the bank as it was at the start of the step). Without SAM it is a plain step.

Run folder (docs/internals.md): ``config.yaml``, ``classes.txt``, ``checkpoints/last.pt`` and ``best.pt``,
``metrics.jsonl`` (one object per epoch) and TensorBoard logs in ``tb/``. Checkpoints are written atomically and
only after a good step (finite loss and gradients), so a crash, a kill, a full disk or a non-finite loss never
leaves a broken or poisoned ``last.pt``. Ctrl-C or SIGTERM (pre-emption) stops after the current step with a
checkpoint.

Exact resume: a training clip is a deterministic function of (seed, epoch, index) (``ClipDataset``), the sampler
yields (epoch, index) pairs so persistent DataLoader workers need no state, the DataLoader draws its worker seeds
from its own generator, and checkpoints hold the model, optimiser (the base AdamW's moments), scheduler, loss
(the memory bank), the Python/NumPy/torch(/CUDA) RNG states of every rank and, for a mid-epoch checkpoint, how
many batches of the epoch are done. ``--resume`` therefore continues with the same weights and losses as a run
that was never stopped (bit-identical on the CPU).

Many GPUs (``torchrun --nproc_per_node N -m pespot train ...``, see ``distributed.py``): each rank trains on its
share of every epoch's clips (``DistributedSampler``), both SAM passes go through the DDP module so both gradients
are all-reduced (the ascent direction is the same on every rank), the SoftIC bank is filled with the candidates of
all ranks, validation is sharded (each rank scores every N-th clip and video; rank 0 computes the metrics from
the gathered predictions), and only rank 0 writes the run folder, between barriers.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from pespot import __version__
from pespot.config import Config, from_dict, save_config, to_dict
from pespot.data.labels import Video, load_classes, load_split, save_classes
from pespot.errors import ConfigError, DataError, PespotError
from pespot.fsutil import atomic_path, write_text_atomic
from pespot.train import distributed as ddp
from pespot.train.distributed import DistInfo

CHECKPOINT_FORMAT = "pespot-checkpoint-v1"
SELECTION_TOLERANCES = (1, 2, 4)  # E2E-Spot's model selection: mean of val mAP at these tolerances (frames)

# ImageNet statistics, in RGB order, for clips delivered as uint8 frames.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NonFiniteLossError(PespotError):
    """The training loss (or its gradient) became NaN or infinite; training stopped and the last good checkpoint
    was kept."""


class CheckpointWriteError(PespotError):
    """A checkpoint could not be written (full disk, quota, I/O error); the previous one is unchanged."""


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    """The spotter of ``cfg`` (a module-level name so tests and tools can wrap it)."""
    from pespot.model.spotter import build_model as build_spotter

    return build_spotter(cfg, num_classes)


def build_loss(cfg: Config, num_classes: int) -> nn.Module:
    """The training loss of ``cfg`` (a module-level name so tests can wrap it)."""
    from pespot.train.losses import build_loss as build_spotting_loss

    return build_spotting_loss(cfg.loss, num_classes, cfg.model.projection_dim)


# --------------------------------------------------------------------------------------------------------------
# the training loop


def train(cfg: Config, resume: str | Path | None = None, *, progress: bool = True,
          stop_after_steps: int | None = None) -> dict[str, Any]:
    """Train ``cfg`` into the run folder ``cfg.out`` (or continue the run folder ``resume``); return a summary.

    ``stop_after_steps`` stops after that many optimiser steps in total, exactly as a Ctrl-C would: a checkpoint
    is written (mid-epoch if need be) and ``--resume`` continues from there. Config and data errors are raised
    before any work is done.
    """
    from pespot.train.sam import build_sam
    from pespot.train.schedule import build_scheduler

    # ---- checks first: nothing is built or written before the config, data and run folder are known good
    out = Path(resume) if resume is not None else Path(cfg.out)
    ckpt = load_resume_checkpoint(out, cfg) if resume is not None else None
    cfg.out = str(out)
    classes = _load_classes(cfg, ckpt)
    train_videos, val_videos = _load_splits(cfg, classes)
    map_videos = val_videos[: cfg.train.val_videos] if cfg.train.val_videos else val_videos  # validation mAP
    _check_train_config(cfg)
    # mAP is undefined without a single event (the mean over no class is NaN): select by loss, never log NaN.
    val_has_events = any(v.events for v in map_videos)
    if not val_has_events and cfg.train.criterion == "map":
        which = f"the first {cfg.train.val_videos} videos of " if cfg.train.val_videos else ""
        raise DataError(f"{Path(cfg.data.root) / (cfg.data.val_split + '.json')}: no events in {which}the split, "
                        "so the validation mAP that train.criterion=map selects by is undefined; use "
                        "train.criterion=loss or a validation split with events")
    if ckpt is None:
        _check_fresh_run_folder(out)

    info = ddp.setup(cfg.train.device)
    device = info.device
    writer = None
    interrupt = _Interrupt()
    try:
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        _seed_everything(cfg.train.seed)
        num_classes = len(classes)
        epochs, batch_size = cfg.train.epochs, cfg.train.batch_size
        # One optimiser step consumes batch_size clips on every rank: the global batch is batch_size * world_size.
        steps_per_epoch = math.ceil(cfg.clips_per_epoch / (batch_size * info.world_size))
        total_steps = steps_per_epoch * epochs
        schedule = {"steps_per_epoch": steps_per_epoch, "epochs": epochs, "optim": to_dict(cfg.optim)}
        if ckpt is not None:
            _check_resumable_schedule(ckpt, schedule, out)

        # ---- data
        train_clips = _clip_dataset(cfg, train_videos, classes, cfg.clips_per_epoch, train=True)
        val_clip_count = cfg.train.val_clips if cfg.train.val_clips is not None else cfg.clips_per_epoch // 4
        val_clips = (_clip_dataset(cfg, val_videos, classes, val_clip_count, train=False)
                     if val_clip_count else None)
        # One clip of each kind is made now, in this process: a config the frames cannot satisfy (a crop larger
        # than the frames, a height of the wrong kind) fails here, before the run folder is written, with the
        # message of the data code rather than a DataLoader worker's traceback. Clips are pure functions of
        # (seed, epoch, index): making one changes no random state.
        _ = train_clips[0]
        if val_clips is not None:
            _ = val_clips[0]
        sampler = ClipSampler(len(train_clips), batch_size, info)
        loader = _loader(cfg, EpochClips(train_clips), sampler, batch_size, device, persistent=True)
        val_loader = (_loader(cfg, EpochClips(val_clips), ShardSampler(len(val_clips), info), batch_size, device)
                      if val_clips is not None else None)

        # ---- model, loss, optimiser, schedule
        model = build_model(cfg, num_classes).to(device)  # channels_last backbone when cfg.model says so
        loss_fn = build_loss(cfg, num_classes).to(device)
        if cfg.model.prior_bias and hasattr(model, "init_prior_bias"):  # (a resumed run loads its own bias)
            from pespot.data.clips import frame_prior

            model.init_prior_bias(frame_prior(train_videos, classes, cfg.data.dilate_len), loss_fn.score_activation)
        model = ddp.convert_sync_batchnorm(model, info)
        use_projection = bool(getattr(loss_fn, "needs_projection", False))
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                      weight_decay=cfg.optim.weight_decay)
        sam = build_sam(model, optimizer, cfg.optim)
        # The schedule drives the base AdamW, one step per (SAM) optimiser step; rho is not scheduled.
        scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch, epochs)
        net = ddp.wrap_model(model, info)  # what training calls; ``model`` (same tensors) is saved and evaluated
        if cfg.train.compile:
            net = torch.compile(net)
        autocast = _autocast_factory(cfg, device)
        gather_fn = (lambda t: ddp.all_gather_cat(t, info)) if info.distributed else None
        # Dropout differs between ranks (as with independent GPUs); the weights were initialised identically.
        torch.manual_seed(cfg.train.seed + info.rank)

        # ---- where to start: a fresh run, or exactly where the checkpoint left off
        epoch, step, step_in_epoch = 0, 0, 0
        best: dict[str, Any] = {"epoch": None, "score": None, "criterion": cfg.train.criterion}
        sums = _LossSums()
        history: list[dict] = []
        if ckpt is not None:
            epoch, step, step_in_epoch, best, sums = _restore(ckpt, model, optimizer, scheduler, loss_fn, info,
                                                              same_schedule=ckpt.get("schedule") == schedule)
            # The checkpoint carries the epoch records it covers; metrics.jsonl is written after it and may lag
            # behind when the process was killed in between.
            history = (list(ckpt["history"]) if ckpt.get("history") is not None
                       else _read_history(out / "metrics.jsonl", upto_epoch=epoch))
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            _remove_stale_temp_files(out, log=lambda m: print(m, file=sys.stderr) if progress else None)
            with _disk_errors(out / "config.yaml"):
                save_config(cfg, out / "config.yaml")
            with _disk_errors(out / "classes.txt"):
                save_classes(classes, out / "classes.txt")
            _write_history(out / "metrics.jsonl", history)
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"), purge_step=step if ckpt is not None else None)
        ddp.barrier(info)

        def checkpoint(epochs_done: int, in_epoch: int, names: tuple[str, ...] = ("last.pt",)) -> None:
            """Write the training state (every rank takes part: RNG states and loss sums are gathered)."""
            state = {
                "format": CHECKPOINT_FORMAT, "config": to_dict(cfg), "classes": list(classes),
                "model": model.state_dict(), "epoch": epochs_done, "step": step, "step_in_epoch": in_epoch,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "schedule": schedule,
                "loss": loss_fn.state_dict(), "best": dict(best),
                "rng": {"ranks": ddp.gather_objects(_rng_state(device), info)},
                "epoch_progress": {"ranks": ddp.gather_objects(sums.state(), info)} if in_epoch else None,
                "history": list(history), "pespot_version": __version__,
            }
            ddp.barrier(info)
            error: CheckpointWriteError | None = None
            if info.is_main:
                # last.pt goes last: it is what --resume reads, so once it is written everything it refers to
                # (best.pt of the same epoch) is on disk too.
                try:
                    for name in sorted(names, key=lambda n: n == "last.pt"):
                        save_checkpoint(state, out / "checkpoints" / name)
                except CheckpointWriteError as err:
                    error = err
            if ddp.any_rank(error is not None, info):  # also the barrier after the write
                resume = (f" (continue with --resume {out} once there is room)"
                          if (out / "checkpoints" / "last.pt").exists() else "")
                raise CheckpointWriteError(f"{error or 'rank 0 could not write a checkpoint'}; training stopped"
                                           f"{resume}")

        # ---- the loop
        bar = _progress_bar(total_steps, step, progress and info.is_main)
        log = _logger(bar, progress and info.is_main)
        log(f"training {cfg.name}: {epochs} epochs x {steps_per_epoch} steps of {batch_size} clips x "
            f"{info.world_size} process(es) on {device}; run folder {out}")
        # A run shorter than train.start_val_epoch still selects by validation mAP: on its last epoch.
        first_map_epoch = min(cfg.start_val_epoch, epochs - 1)
        log(_selection_line(cfg, first_map_epoch))
        window = _LossSums()  # losses since the last progress/TensorBoard update
        stopped = False
        while epoch < epochs and not stopped:
            model.train()
            sampler.set_epoch(epoch, skip_batches=step_in_epoch)
            bar.set_description(f"epoch {epoch + 1}/{epochs}")
            epoch_start = time.time() - sums.seconds
            for batch in _batches(loader):
                frames, targets = _to_device(batch, device)  # (B, T, 3, H, W), (B, T, K+1)
                where = f"epoch {epoch + 1}, step {step + 1}"
                try:
                    sam_now = sam if step >= cfg.optim.sam_start * total_steps else None  # optim.sam_start
                    parts = train_step(net, model, loss_fn, optimizer, sam_now, scheduler, frames, targets,
                                       autocast, use_projection, step / max(total_steps, 1), gather_fn, info, where)
                except NonFiniteLossError as err:
                    last = out / "checkpoints" / "last.pt"
                    kept = (f"the last good checkpoint {last} is kept (epoch {_checkpoint_epoch(last)})"
                            if last.exists() else "no checkpoint had been written yet")
                    raise NonFiniteLossError(f"{err}; {kept}. Try a lower optim.lr, or check the data") from None
                step += 1
                step_in_epoch += 1
                sums.add(parts)
                window.add(parts)
                bar.update(1)
                if step % cfg.train.log_every == 0 or step_in_epoch == steps_per_epoch:
                    lr = optimizer.param_groups[0]["lr"]
                    bar.set_postfix(loss=f"{window.mean()['total']:.4f}", lr=f"{lr:.2e}")
                    if writer is not None:
                        for key, value in window.mean().items():
                            writer.add_scalar(f"train/{key}", value, step)
                        writer.add_scalar("train/lr", lr, step)
                    window = _LossSums()
                stop = ddp.any_rank(bool(interrupt.requested) or (stop_after_steps is not None
                                                                 and step >= stop_after_steps), info)
                if step_in_epoch < steps_per_epoch:  # mid-epoch: maybe a checkpoint, maybe stop here
                    sums.seconds = time.time() - epoch_start
                    every = cfg.train.save_every_steps
                    if stop or (every and step % every == 0):
                        checkpoint(epoch, step_in_epoch)
                    if stop:
                        log(f"stopped at {where}: checkpoint {out / 'checkpoints' / 'last.pt'} "
                            f"(continue with --resume {out})")
                        stopped = True
                        break
                else:
                    stopped = stop  # at the end of an epoch: finish it (validation, checkpoint) first
            if step_in_epoch < steps_per_epoch:
                break  # stopped mid-epoch

            # ---- end of epoch: validation, model selection, checkpoint, metrics
            record = {"epoch": epoch + 1, "step": step}
            record.update({f"train_{k}": v for k, v in ddp_mean(sums, info).items()})
            ddp.broadcast_buffers(model, info)  # BN running stats of rank 0 everywhere before validating/saving
            if val_loader is not None:
                record.update({f"val_{k}": v for k, v in
                               evaluate_loss(model, loss_fn, val_loader, autocast, device, info,
                                             use_projection).items()})
            if epoch >= first_map_epoch and val_has_events:
                maps = evaluate_map(model, cfg, classes, map_videos, loss_fn, info, progress and info.is_main)
                record["val_map"] = {str(t): v for t, v in maps.items()}
                record["val_map_selection"] = float(np.mean([maps[t] for t in SELECTION_TOLERANCES]))
            record["lr"] = optimizer.param_groups[0]["lr"]
            record["seconds"] = round(time.time() - epoch_start, 3)
            score = _selection_score(cfg, record)
            improved = score is not None and (best["score"] is None or score > best["score"])
            if improved:
                best.update({"epoch": epoch + 1, "score": score, "metrics": dict(record)})
            record["best"] = improved
            history.append(record)
            epoch += 1
            step_in_epoch = 0
            sums = _LossSums()
            checkpoint(epoch, 0, ("last.pt", "best.pt") if improved else ("last.pt",))
            if info.is_main:
                _write_history(out / "metrics.jsonl", history)
                with _disk_errors(out / "tb"):
                    _log_epoch_tensorboard(writer, record)
            log(_epoch_line(record, epochs))
        bar.close()
        return {
            "out": str(out), "epochs_completed": epoch, "steps": step, "stopped": stopped,
            "stop_signal": interrupt.requested if stopped else None,
            "criterion": cfg.train.criterion, "best_epoch": best["epoch"], "best_score": best["score"],
            "last": history[-1] if history else None,
        }
    finally:
        interrupt.restore()
        if writer is not None:
            try:
                writer.close()
            except OSError as err:  # the logs are auxiliary: never hide the error (or result) of training
                print(f"warning: {out / 'tb'}: TensorBoard logs incomplete ({_describe_os_error(err)})",
                      file=sys.stderr)
        ddp.cleanup(info)


def train_step(net: nn.Module, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
               sam: Any, scheduler: Any, frames: torch.Tensor, targets: torch.Tensor, autocast: Callable,
               use_projection: bool, step_fraction: float, gather_fn: Callable | None, info: DistInfo,
               where: str) -> dict[str, float]:
    """One optimiser step on one batch (method-spec 5.4); returns the first pass's loss parts as floats.

    ``net`` is what is called (DDP and/or compiled); ``model`` is the plain module whose BatchNorm layers are
    frozen for the second SAM pass. ``sam`` is None for a plain AdamW step. A non-finite loss or gradient raises
    ``NonFiniteLossError`` before the weights are changed (an AdamW step with a NaN gradient would make every
    weight NaN, and the next checkpoint would save them).
    """
    from pespot.train.sam import disable_running_stats, enable_running_stats

    def forward_loss() -> tuple[torch.Tensor, dict, torch.Tensor | None]:
        with autocast():
            if use_projection:
                logits, proj = net(frames, return_projection=True)  # (B, T, K+1), (B*T, D)
            else:
                logits, proj = net(frames), None
        total, parts = loss_fn(logits, targets, proj, step_fraction)
        return total, parts, proj

    loss1, parts, proj = forward_loss()  # the bank as it was at the start of the step
    _check_finite(loss1, info, where)
    loss1.backward()
    if sam is None:
        _check_finite(_grad_norm(model), info, where, what="gradient")
        optimizer.step()
    else:
        norm = sam.first_step()  # w <- w + eps(grad), grads cleared; nothing perturbed if the norm is not finite
        _check_finite(norm, info, where, what="gradient")
        disable_running_stats(model)  # BN running stats frozen: not updated twice per step, nor at w + eps
        try:
            loss2, _, _ = forward_loss()
            _check_finite(loss2, info, where + " (second SAM pass)")
            loss2.backward()
            _check_finite(_grad_norm(model), info, where + " (second SAM pass)", what="gradient")
        except NonFiniteLossError:
            sam.second_step()  # restores w; skips the AdamW step on non-finite gradients
            raise
        finally:
            enable_running_stats(model)
        sam.second_step()  # w restored, AdamW step with the gradient at w + eps
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    if proj is not None:
        loss_fn.update_bank(proj.detach(), targets, gather_fn)  # first-pass features, once per step
    return {k: float(v) for k, v in parts.items() if k != "contrastive_pairs"}


def _check_finite(value: torch.Tensor, info: DistInfo, where: str, what: str = "loss") -> None:
    """Raise NonFiniteLossError (on every rank at once) if the loss (or gradient norm) is NaN or infinite."""
    bad = not bool(torch.isfinite(value.detach()).item())
    if ddp.any_rank(bad, info):
        shown = float(value.detach()) if bad else float("nan")
        name = "training loss" if what == "loss" else "gradient (norm) of the training loss"
        raise NonFiniteLossError(f"non-finite {name} ({shown}) at {where}" +
                                 ("" if bad else " on another rank") + "; training stopped")


def _grad_norm(model: nn.Module) -> torch.Tensor:
    """L2 norm of all gradients, in fp32 (NaN or inf when any gradient is)."""
    norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in model.parameters() if p.grad is not None]
    if not norms:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(norms))


@torch.no_grad()
def evaluate_loss(model: nn.Module, loss_fn: nn.Module, loader: DataLoader, autocast: Callable,
                  device: torch.device, info: DistInfo, use_projection: bool) -> dict[str, float]:
    """Mean loss parts over the fixed validation clips (no augmentation, no mixup; the bank is only read)."""
    model.eval()
    # The same keys on every rank (a rank may have no clip at all), so the all-reduce lines up.
    keys = ["cls", "total"] + (["contrastive"] if use_projection else [])
    sums = dict.fromkeys(keys, 0.0)
    count = 0
    for batch in _batches(loader):
        frames, targets = _to_device(batch, device)
        with autocast():
            if use_projection:
                logits, proj = model(frames, return_projection=True)
            else:
                logits, proj = model(frames), None
        _, parts = loss_fn(logits, targets, proj)
        n = frames.shape[0]
        for key in keys:
            sums[key] += float(parts[key]) * n
        count += n
    model.train()
    totals = ddp.all_reduce_sum(torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64,
                                             device=device), info).tolist()
    return {k: v / max(totals[-1], 1.0) for k, v in zip(keys, totals[:-1])}


@torch.no_grad()
def evaluate_map(model: nn.Module, cfg: Config, classes: list[str], videos: list[Video], loss_fn: nn.Module,
                 info: DistInfo, progress: bool = False) -> dict[int, float]:
    """Validation mAP per tolerance (frames) as E2E-Spot's model selection: windows without overlap, no NMS.

    Each rank scores every ``world_size``-th video; rank 0 computes the mAP and every rank gets the result.
    """
    from pespot.infer import Predictor, predict_videos

    tolerances = sorted(set(cfg.eval.tolerances) | set(SELECTION_TOLERANCES))
    model.eval()
    activation = getattr(loss_fn, "score_activation", "softmax" if cfg.loss.classification == "ce" else "sigmoid")
    predictor = Predictor(model=model, cfg=cfg, classes=classes, device=info.device, activation=activation)
    mine = videos[info.rank::info.world_size]
    # E2E-Spot's selection protocol: windows side by side, every candidate of the run's rule, no NMS
    preds = [p.to_video() for p in predict_videos(predictor, mine, cfg.frames_dir, overlap=0.0, nms="none")]
    model.train()
    gathered = [v for part in ddp.gather_objects(preds, info) for v in part]
    result = None
    if info.is_main:
        by_name = {v.video: v for v in gathered}
        ordered = [by_name[v.video] for v in videos]
        result = compute_map_per_tolerance(videos, ordered, classes, tolerances)
    return ddp.broadcast_object(result, info)


def compute_map_per_tolerance(truth: list[Video], pred: list[Video], classes: list[str],
                              tolerances: list[int]) -> dict[int, float]:
    """mAP at each tolerance (frames) through ``pespot.metrics.compute_map``."""
    from pespot.metrics import compute_map

    result = compute_map(truth, pred, classes, tolerances)
    return {int(t): float(v) for t, v in _map_values(result, tolerances).items()}


def _map_values(result: Any, tolerances: list[int]) -> dict[int, float]:
    """Pull {tolerance: mAP} out of compute_map's result."""
    maps = getattr(result, "mAP", None)
    if maps is None and isinstance(result, dict):
        maps = result.get("mAP", result)
    return {t: maps[t] if t in maps else maps[str(t)] for t in tolerances}


# --------------------------------------------------------------------------------------------------------------
# data


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


def _clip_dataset(cfg: Config, videos: list[Video], classes: list[str], num_clips: int, train: bool) -> Any:
    """Training clips (augmented, mixup) or the fixed validation-loss clips (neither)."""
    from pespot.data.clips import ClipDataset

    return ClipDataset(
        videos, classes, cfg.frames_dir, cfg.model.clip_len, num_clips,
        height=cfg.data.height, crop=cfg.data.crop,
        augment=cfg.data.augment and train, mixup=cfg.data.mixup and train, mixup_alpha=cfg.data.mixup_alpha,
        dilate_len=cfg.data.dilate_len, pad_len=cfg.data.pad_len,
        fg_upsample=cfg.data.fg_upsample if train else None,
        # Validation clips use another seed stream so they are not the training clips of epoch 0.
        seed=cfg.train.seed if train else cfg.train.seed + 1_000_003, epoch=0,
    )


def _loader(cfg: Config, dataset: Dataset, sampler: Sampler, batch_size: int, device: torch.device,
            persistent: bool = False) -> DataLoader:
    workers = cfg.data.num_workers
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=persistent and workers > 0, drop_last=False,
        # Worker seeds come from this generator, never from the global RNG that dropout (and resume) rely on.
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )


def _batches(loader: DataLoader) -> Iterator[dict]:
    """The batches of ``loader``; a PespotError raised in a DataLoader worker keeps its one-line message (torch
    re-raises it with the worker's whole traceback as the message)."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except PespotError as err:
            raise type(err)(_worker_error_message(str(err))) from None
        yield batch


def _worker_error_message(message: str) -> str:
    """"Caught DataError in DataLoader worker process 0.\nOriginal Traceback ...\npespot.errors.DataError: msg"
    -> "msg"; any other message as it is."""
    lines = [line for line in message.splitlines() if line.strip()]
    if not message.startswith("Caught ") or len(lines) < 2:
        return message
    name, sep, text = lines[-1].partition(": ")
    return text if sep and " " not in name else message


def _to_device(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A collated batch -> float frames (B, T, 3, H, W) and targets (B, T, K+1) on ``device``."""
    frames = batch["frames"].to(device, non_blocking=True)
    targets = batch["targets"].to(device, non_blocking=True).float()
    if frames.dtype == torch.uint8:  # normalise on the device: 4x less to copy than float32
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 1, 3, 1, 1)
        frames = (frames.float() / 255.0 - mean) / std
    return frames, targets


def _load_classes(cfg: Config, ckpt: dict | None) -> list[str]:
    """``<data.root>/class.txt``, checked against ``num_classes`` and the resumed checkpoint."""
    if not cfg.data.root:
        raise ConfigError("config key 'data.root': no dataset folder given (e.g. --set data.root=data/tennis)")
    root = Path(cfg.data.root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder (data.root) not found")
    classes = load_classes(root / "class.txt")
    if cfg.num_classes is not None and cfg.num_classes != len(classes):
        raise ConfigError(f"config key 'num_classes': {cfg.num_classes}, but {root / 'class.txt'} lists "
                          f"{len(classes)} classes")
    if ckpt is not None and list(ckpt["classes"]) != classes:
        raise ConfigError(f"{root / 'class.txt'}: classes differ from the run being resumed "
                          f"({', '.join(ckpt['classes'])})")
    return classes


def _load_splits(cfg: Config, classes: list[str]) -> tuple[list[Video], list[Video]]:
    root = Path(cfg.data.root)
    splits = []
    for key in ("train_split", "val_split"):
        name = getattr(cfg.data, key)
        path = root / f"{name}.json"
        if not path.is_file():
            raise DataError(f"{path}: split file not found (config key 'data.{key}' = {name!r})")
        videos = load_split(path, classes)
        if not videos:
            raise DataError(f"{path}: no videos")
        splits.append(videos)
    frames_root = Path(cfg.frames_dir)
    if not frames_root.exists():
        raise DataError(f"{frames_root}: frame store not found (config key 'data.frames'; "
                        "default <data.root>/frames)")
    return splits[0], splits[1]


def _check_train_config(cfg: Config) -> None:
    if cfg.train.batch_size * cfg.model.clip_len < 2:
        raise ConfigError(f"config keys 'train.batch_size' x 'model.clip_len': {cfg.train.batch_size} x "
                          f"{cfg.model.clip_len} frames per step; BatchNorm needs at least 2 to train")
    if cfg.clips_per_epoch <= 0:
        raise ConfigError(f"config key 'train.clips_per_epoch': expected a positive value, "
                          f"got {cfg.clips_per_epoch}")
    if cfg.train.val_clips is not None and cfg.train.val_clips < 0:
        raise ConfigError(f"config key 'train.val_clips': expected >= 0, got {cfg.train.val_clips}")
    if cfg.train.log_every <= 0:
        raise ConfigError(f"config key 'train.log_every': expected a positive value, got {cfg.train.log_every}")
    if cfg.train.save_every_steps < 0:
        raise ConfigError(f"config key 'train.save_every_steps': expected >= 0, got {cfg.train.save_every_steps}")
    if cfg.train.criterion == "loss" and cfg.train.val_clips == 0:
        raise ConfigError("config key 'train.val_clips': 0 clips, but train.criterion=loss selects by "
                          "validation loss")


def _check_fresh_run_folder(out: Path) -> None:
    for name in ("last.pt", "best.pt"):
        if (out / "checkpoints" / name).exists():
            raise ConfigError(f"{out}: run folder already holds checkpoints/{name}; continue it with "
                              f"--resume {out} or choose another folder with --set out=...")


# --------------------------------------------------------------------------------------------------------------
# checkpoints and resume


def save_checkpoint(state: dict, path: str | Path) -> None:
    """``torch.save`` to a temporary file, fsync, rename: ``path`` is always a complete checkpoint.

    A failed write (full disk, quota, I/O error) removes the temporary file, leaves ``path`` as it was and raises
    ``CheckpointWriteError`` naming the file and the cause.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            # Through a Python file object: a failed write raises OSError (errno, e.g. "No space left on device")
            # inside torch's writer, which torch reports as an opaque RuntimeError with the OSError as context.
            torch.save(state, f)
    except (OSError, RuntimeError) as err:
        cause = _os_error(err)
        if cause is None:
            raise  # not an I/O failure: a bug, keep the traceback
        kept = f"the previous {path.name} is unchanged" if path.exists() else "nothing was written"
        raise CheckpointWriteError(f"{path}: cannot write the checkpoint ({_describe_os_error(cause)}); "
                                   f"{kept}") from None


def _os_error(err: BaseException) -> OSError | None:
    """``err`` itself or the first OSError among its causes/contexts (torch wraps write failures)."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError):
            return err
        err = err.__cause__ or err.__context__
        seen += 1
    return None


def _describe_os_error(err: OSError) -> str:
    return err.strerror or (str(err).strip().splitlines() or [type(err).__name__])[0]


@contextlib.contextmanager
def _disk_errors(path: Path) -> Iterator[None]:
    """Turn a failed write of a run-folder file into one line naming the file (atomic writes leave it as it was)."""
    try:
        yield
    except OSError as err:
        raise PespotError(f"{path}: cannot write ({_describe_os_error(err)}); training stopped") from None


# Temporary names of the atomic writes (fsutil.atomic_path): ".<name>.<random>.tmp" next to the file.
_RUN_FILES = {"": ("config.yaml", "classes.txt", "metrics.jsonl"), "checkpoints": ("last.pt", "best.pt")}


def _remove_stale_temp_files(out: Path, log: Callable[[str], Any]) -> None:
    """Delete temporary files that a killed run left behind (a checkpoint's can be as large as the model)."""
    for sub, names in _RUN_FILES.items():
        folder = out / sub
        if not folder.is_dir():
            continue
        for name in names:
            for tmp in folder.glob(f".{name}.*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                    log(f"removed {tmp} (left by an interrupted write)")


# The parts of a config that a checkpoint's weights and memory bank depend on.
_RESUME_KEYS = ("model", "loss.contrastive", "loss.bank_size")


def load_resume_checkpoint(run_dir: Path, cfg: Config) -> dict:
    """``RUN_DIR/checkpoints/last.pt``, after checking that ``cfg`` describes the same model."""
    path = run_dir / "checkpoints" / "last.pt"
    if not path.is_file():
        raise DataError(f"{run_dir}: nothing to resume (no checkpoints/last.pt)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise DataError(f"{path}: not a readable checkpoint ({str(err).strip().splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not a pespot checkpoint (format '{CHECKPOINT_FORMAT}')")
    diffs = config_differences(from_dict(ckpt["config"]), cfg, _RESUME_KEYS)
    if diffs:
        shown = "; ".join(f"{k}: run has {a!r}, now {b!r}" for k, a, b in diffs)
        raise ConfigError(f"--resume {run_dir}: the config describes a different model than the run ({shown})")
    return ckpt


def config_differences(a: Config, b: Config, keys: tuple[str, ...]) -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every leaf under ``keys`` that differs."""
    da, db = to_dict(a), to_dict(b)
    out: list[tuple[str, Any, Any]] = []

    def walk(x: Any, y: Any, key: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                walk(x.get(k), y.get(k), f"{key}.{k}")
        elif x != y:
            out.append((key, x, y))

    for key in keys:
        x, y = da, db
        for part in key.split("."):
            x, y = x[part], y[part]
        walk(x, y, key)
    return out


def _check_resumable_schedule(ckpt: dict, schedule: dict, run_dir: Path) -> None:
    """A mid-epoch checkpoint needs the same steps per epoch (the batches to skip are counted in steps)."""
    old = ckpt.get("schedule") or {}
    if ckpt.get("step_in_epoch") and old.get("steps_per_epoch") != schedule["steps_per_epoch"]:
        raise ConfigError(
            f"--resume {run_dir}: the checkpoint stopped in the middle of epoch {int(ckpt['epoch']) + 1} with "
            f"{old.get('steps_per_epoch')} steps per epoch, now {schedule['steps_per_epoch']} "
            "(train.clips_per_epoch, train.batch_size and the number of processes must stay the same to finish "
            "that epoch)")


def _restore(ckpt: dict, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, loss_fn: nn.Module,
             info: DistInfo, same_schedule: bool) -> tuple[int, int, int, dict, _LossSums]:
    """Load a checkpoint into the freshly built objects; returns (epoch, step, step_in_epoch, best, sums).

    When the schedule changed (e.g. ``--set train.epochs=...`` to train longer), the new schedule is used from the
    checkpoint's step on instead of the saved one.
    """
    model.load_state_dict(ckpt["model"])
    # load_state_dict also restores the saved betas and weight decay: keep the config's (a --set on resume).
    configured = [{k: group[k] for k in ("betas", "weight_decay")} for group in optimizer.param_groups]
    optimizer.load_state_dict(ckpt["optimizer"])
    for group, values in zip(optimizer.param_groups, configured):
        group.update(values)
    if same_schedule:
        scheduler.load_state_dict(ckpt["scheduler"])
    else:
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(int(ckpt["step"])):
                scheduler.step()
    loss_fn.load_state_dict(ckpt["loss"])
    ranks = ckpt["rng"]["ranks"]
    if len(ranks) == info.world_size:
        _set_rng_state(ranks[info.rank], info.device)
    else:  # another number of processes: resume, but the random streams cannot continue exactly
        _seed_everything(int(ckpt["config"]["train"]["seed"]) + 7919 * int(ckpt["step"]) + info.rank)
    sums = _LossSums()
    progress = ckpt.get("epoch_progress")
    if ckpt.get("step_in_epoch") and progress:
        states = progress["ranks"]
        sums.load(states[info.rank] if len(states) == info.world_size else states[0])
    return int(ckpt["epoch"]), int(ckpt["step"]), int(ckpt.get("step_in_epoch") or 0), dict(ckpt["best"]), sums


def _checkpoint_epoch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)["epoch"]
    except Exception:  # noqa: BLE001 - only for a message
        return "?"


def _rng_state(device: torch.device) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------------------------
# bookkeeping: loss sums, metrics, progress, interrupts


class _LossSums:
    """Running sums of the loss parts (for epoch means and the progress bar)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.seconds = 0.0  # time spent in the epoch before a mid-epoch checkpoint

    def add(self, parts: dict[str, float]) -> None:
        for key, value in parts.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def mean(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}

    def state(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count, "seconds": self.seconds}

    def load(self, state: dict) -> None:
        self.sums, self.count, self.seconds = dict(state["sums"]), int(state["count"]), float(state["seconds"])


def ddp_mean(sums: _LossSums, info: DistInfo) -> dict[str, float]:
    """Epoch mean of each loss part over all ranks' steps."""
    keys = sorted(sums.sums)
    values = torch.tensor([sums.sums[k] for k in keys] + [float(sums.count)], dtype=torch.float64,
                          device=info.device)
    totals = ddp.all_reduce_sum(values, info).tolist()
    return {k: v / max(totals[-1], 1.0) for k, v in zip(keys, totals[:-1])}


def _selection_line(cfg: Config, first_map_epoch: int) -> str:
    """Which criterion selects best.pt, and from which epoch on."""
    if cfg.train.criterion == "loss":
        return "model selection: lowest validation loss"
    note = ""
    if first_map_epoch < cfg.start_val_epoch:
        note = f" (train.start_val_epoch={cfg.start_val_epoch} is at or past the end of this {cfg.train.epochs}-epoch run)"
    videos = f"first {cfg.train.val_videos} " if cfg.train.val_videos else ""
    return (f"model selection: mean validation mAP at {', '.join(map(str, SELECTION_TOLERANCES))} frames on the "
            f"{videos}validation videos, from epoch {first_map_epoch + 1}{note}")


def _selection_score(cfg: Config, record: dict) -> float | None:
    """Higher is better: mean val mAP at 1, 2, 4 frames, or minus the validation loss."""
    if cfg.train.criterion == "map":
        return record.get("val_map_selection")
    loss = record.get("val_total")
    return None if loss is None else -loss


def _read_history(path: Path, upto_epoch: int) -> list[dict]:
    """metrics.jsonl lines of the epochs a checkpoint covers (later lines belong to a lost future)."""
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in lines if int(r.get("epoch", 0)) <= upto_epoch]


def _write_history(path: Path, history: list[dict]) -> None:
    with _disk_errors(path):
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in history))


def _log_epoch_tensorboard(writer: Any, record: dict) -> None:
    if writer is None:
        return
    step = record["step"]
    for key, value in record.items():
        if key.startswith("val_") and isinstance(value, (int, float)):
            writer.add_scalar(f"val/{key[4:]}", value, step)
    for tol, value in record.get("val_map", {}).items():
        writer.add_scalar(f"val/mAP@{tol}", value, step)
    writer.flush()


def _epoch_line(record: dict, epochs: int) -> str:
    text = f"epoch {record['epoch']}/{epochs}: train loss {record.get('train_total', float('nan')):.4f}"
    if "val_total" in record:
        text += f", val loss {record['val_total']:.4f}"
    if "val_map" in record:
        text += ", val mAP " + " ".join(f"@{t}={v * 100:.2f}" for t, v in record["val_map"].items())
    text += f", lr {record['lr']:.2e}, {record['seconds']:.0f}s" + (" (best)" if record["best"] else "")
    return text


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", disable=not enabled, dynamic_ncols=True,
                file=sys.stderr)


def _logger(bar: Any, enabled: bool) -> Callable[[str], None]:
    def log(message: str) -> None:
        if enabled:
            bar.write(message, file=sys.stderr)

    return log


def _autocast_factory(cfg: Config, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast for ``train.amp`` bf16, or auto on CUDA (no GradScaler: bf16 has fp32's range)."""
    amp = cfg.train.amp
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


class _Interrupt:
    """First Ctrl-C (SIGINT) or SIGTERM (what schedulers send a pre-empted job before killing it): finish the
    current step, write a checkpoint, stop. A second one: stop at once (``KeyboardInterrupt``)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None  # name of the signal that asked to stop
        self.previous: dict[int, Any] = {}
        self.pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self.pid:  # a forked DataLoader worker inherited the handler: act as if it had none
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        what = "interrupt" if signum == signal.SIGINT else f"{self.requested} received"
        print(f"\n{what}: stopping after this step with a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    def restore(self) -> None:
        for signum, previous in self.previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        self.previous = {}
