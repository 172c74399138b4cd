"""Training: ``train`` reads as a page: checks, build, then per epoch ``train_one_epoch`` and ``end_of_epoch``.

One optimiser step (``train_step``) is method-spec section 5.4: a first forward/backward pass with the projection
features, the (A)SAM ascent to w + eps, a second pass on the same batch with BatchNorm running statistics frozen,
the AdamW step at the restored w with the second-pass gradient, one scheduler step, then the SoftIC memory bank
takes the first-pass features (both passes saw the bank as it was at the start of the step). Without SAM (or
before ``optim.sam_start``) it is a plain step.

Around the loop, each concern has its own module: ``job`` (``Job``, what a run trains with, and ``TrainState``,
how far it is), ``pespot.data.loader`` (clips, samplers, DataLoaders),
``checkpoint`` (the checkpoint format, exact resume, RNG states, the epoch history), ``guards`` (non-finite
checks, Ctrl-C/SIGTERM, disk errors), ``history`` (loss sums, model selection, progress lines, TensorBoard) and
``checks`` (config, data and run folder, checked before anything is built or written).

Run folder: ``config.yaml``, ``classes.txt``, ``checkpoints/{last,best}.pt``, ``metrics.jsonl`` (one object per
epoch), TensorBoard logs in ``tb/``. ``--resume`` continues bit-identically (on the CPU). Many GPUs (``torchrun``,
``distributed.py``): ranks share each epoch's clips, both SAM passes go through DDP, the SoftIC bank takes every
rank's candidates, validation is sharded, only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pespot import __version__
from pespot.config import Config, save_config, to_dict
from pespot.data import loader as data
from pespot.data.labels import Video, save_classes
from pespot.errors import DataError
from pespot.train import checkpoint as ckpts
from pespot.train import checks
from pespot.train import distributed as ddp
from pespot.train import history as hist
from pespot.train.checks import check_fresh_run_folder, check_train_config, load_run_classes, load_splits
from pespot.train.distributed import DistInfo
from pespot.train.guards import Interrupt, NonFiniteLossError, check_finite, disk_errors, grad_norm
from pespot.train.history import SELECTION_TOLERANCES, LossSums
from pespot.train.init import init_from_run
from pespot.train.job import Job, TrainState, autocast_factory, build_adamw
from pespot.train.lock import RunLock
from pespot.train.validate import evaluate_loss, evaluate_map


def train(cfg: Config, resume: str | Path | None = None, *, progress: bool = True,
          stop_after_steps: int | None = None, model: nn.Module | None = None,
          loss_fn: nn.Module | None = None) -> dict[str, Any]:
    """Train ``cfg`` into the run folder ``cfg.out`` (or continue the run folder ``resume``); return a summary.

    ``stop_after_steps`` stops after that many optimiser steps in total, exactly as a Ctrl-C would (a checkpoint,
    mid-epoch if need be). ``model`` / ``loss_fn`` replace the spotter and the loss ``cfg`` describes (a custom
    model, or an instrumented one). Config and data errors are raised before any work is done.

    The run folder is locked for the whole run (``lock.RunLock``; rank 0 only under torchrun): a second run in
    the same folder is refused with a line naming the holder.
    """
    out = checks.check_run_folder_path(resume if resume is not None else cfg.out, resuming=resume is not None)
    rank0 = os.environ.get("RANK", "0") == "0"  # before the process group exists: torchrun's variable
    with RunLock(out) if rank0 else contextlib.nullcontext():
        return _train(cfg, out, resume is not None, rank0, progress=progress, stop_after_steps=stop_after_steps,
                      model=model, loss_fn=loss_fn)


def _train(cfg: Config, out: Path, resuming: bool, rank0: bool, *, progress: bool, stop_after_steps: int | None,
           model: nn.Module | None, loss_fn: nn.Module | None) -> dict[str, Any]:
    """``train`` in the locked run folder ``out``."""
    ckpt = ckpts.load_resume_checkpoint(out, cfg) if resuming else None
    cfg.out = str(out)
    classes = load_run_classes(cfg, ckpt)
    if ckpt is not None and run_is_finished(ckpt, cfg):
        if rank0:
            complete_history(out, ckpt)
        return finished_summary(ckpt, cfg, out)  # nothing to train: the run folder stays as it is
    resolve_run_config(cfg, classes)
    train_videos, val_videos = load_splits(cfg, classes)
    map_videos = val_videos[: cfg.train.val_videos] if cfg.train.val_videos else val_videos
    check_train_config(cfg)
    if not any(v.events for v in map_videos) and cfg.train.criterion == "map":
        which = f"the first {cfg.train.val_videos} videos of " if cfg.train.val_videos else ""
        raise DataError(f"{Path(cfg.data.root) / (cfg.data.val_split + '.json')}: no events in {which}the split, "
                        "so the validation mAP that train.criterion=map selects by is undefined; use "
                        "train.criterion=loss or a validation split with events")
    if ckpt is None:
        # Other ranks may already see rank 0's first files: only rank 0 looks at more than the checkpoints.
        check_fresh_run_folder(out, checkpoints_only=not rank0)

    info = ddp.setup(cfg.train.device)
    interrupt = Interrupt()
    job = None
    try:
        job = build(cfg, classes, train_videos, val_videos, map_videos, out, info, model, loss_fn,
                    resuming=ckpt is not None)
        state = TrainState(best={"epoch": None, "score": None, "criterion": cfg.train.criterion})
        if ckpt is not None:
            state = restore(job, ckpt)
        open_run_folder(job, state, resumed=ckpt is not None, progress=progress)
        bar = hist.progress_bar(job.total_steps, state.step, progress and info.is_main)
        job.log = hist.logger(bar, progress and info.is_main)
        epochs = cfg.train.epochs
        job.log(f"training {cfg.name}: {hist.plural(epochs, 'epoch')} x {hist.plural(job.steps_per_epoch, 'step')}"
                f" of {hist.plural(cfg.train.batch_size, 'clip')} x {hist.plural(info.world_size, 'process', 'processes')} on "
                f"{info.device}; run folder {out}")
        first_map_epoch = min(cfg.start_val_epoch, epochs - 1)  # a short run still selects by its own mAP
        job.log(hist.selection_line(cfg, first_map_epoch))
        if ckpt is not None:
            job.log(resumed_line(out, state))
        stopped = False
        interrupt.immediate = False  # from the first step on, a Ctrl-C stops after the step with a checkpoint
        while state.epoch < epochs and not stopped:
            finished, stopped = train_one_epoch(job, state, interrupt, stop_after_steps, bar)
            if not finished:
                break  # stopped mid-epoch, with a checkpoint
            end_of_epoch(job, state, validate_map=state.epoch >= first_map_epoch)
        bar.close()
        nms = None
        if cfg.eval.choose_nms and state.epoch >= epochs and not stopped and info.is_main:
            nms = choose_run_nms(job, val_videos)
        return {"out": str(out), "epochs_completed": state.epoch, "steps": state.step, "stopped": stopped,
                "stop_signal": interrupt.requested if stopped else None, "criterion": cfg.train.criterion,
                "best_epoch": state.best["epoch"], "best_score": state.best["score"],
                "last": state.history[-1] if state.history else None, "nms": nms}
    finally:
        interrupt.restore()
        if job is not None and job.writer is not None:
            try:
                job.writer.close()
            except OSError as err:  # the logs are auxiliary: never hide the error (or result) of training
                print(f"warning: {out / 'tb'}: TensorBoard logs incomplete ({err.strerror or err})", file=sys.stderr)
        ddp.cleanup(info)


def resolve_run_config(cfg: Config, classes: list[str]) -> None:
    """Fill in what the config leaves to the data, so that the run folder's ``config.yaml`` says what was used:
    ``num_classes`` from ``class.txt`` and ``data.frames`` as the frame store read (``<data.root>/frames`` when
    not given). Neither is compared on ``--resume`` (``checkpoint.RESUME_KEYS``); ``commands/train.py`` lets a
    resume that moves ``data.root`` follow it."""
    cfg.num_classes = len(classes)
    cfg.data.frames = cfg.frames_dir


def run_is_finished(ckpt: dict, cfg: Config) -> bool:
    """The resumed checkpoint has trained every epoch ``cfg`` asks for (``train.epochs``)."""
    return int(ckpt["epoch"]) >= cfg.train.epochs and not ckpt.get("step_in_epoch")


def complete_history(out: Path, ckpt: dict) -> None:
    """A run killed between its last checkpoint and the metrics.jsonl line that follows it is finished but its
    metrics.jsonl lags: write the checkpoint's epoch records there (only when they differ from the file's)."""
    history = ckpt.get("history")
    path = out / "metrics.jsonl"
    if history is not None and ckpts.read_history(path, upto_epoch=int(ckpt["epoch"])) != list(history):
        ckpts.write_history(path, list(history))


def finished_summary(ckpt: dict, cfg: Config, out: Path) -> dict[str, Any]:
    """The summary of a resumed run that has nothing left to train (``finished``: true)."""
    best = ckpt.get("best") or {}
    history = ckpt.get("history") or []
    return {"out": str(out), "finished": True, "epochs_completed": int(ckpt["epoch"]), "steps": int(ckpt["step"]),
            "stopped": False, "stop_signal": None, "criterion": best.get("criterion", cfg.train.criterion),
            "best_epoch": best.get("epoch"), "best_score": best.get("score"),
            "last": history[-1] if history else None, "nms": None}


def resumed_line(out: Path, state: TrainState) -> str:
    """Where a resumed run continues: the checkpoint, its epoch and step."""
    line = (f"resumed from {out / 'checkpoints' / 'last.pt'} at epoch {state.epoch}, step {state.step}")
    if state.step_in_epoch:
        line += f" ({hist.plural(state.step_in_epoch, 'step')} into epoch {state.epoch + 1})"
    return line


def choose_run_nms(job: Job, val_videos: list[Video]) -> dict:
    """``eval.choose_nms``: the selected checkpoint (the one ``pespot infer`` loads) scores the whole validation
    split once; every NMS method x ``eval.nms_windows`` is tried and the best is stored in ``out/nms.json``."""
    from pespot.infer import choose_nms_on, load_predictor
    from pespot.postprocess import describe_nms, write_nms_choice

    cfg = job.cfg
    predictor = load_predictor(job.out, device=job.info.device, classes=job.classes)
    best, rows = choose_nms_on(predictor, val_videos, cfg.frames_dir, cfg.eval.nms_windows)
    split = Path(cfg.data.root) / f"{cfg.data.val_split}.json"
    path = write_nms_choice(job.out, best, rows, chosen_on=f"{split} ({len(val_videos)} videos), {predictor.source}")
    job.log(f"NMS chosen on the validation split: {describe_nms(best['method'], best['window'])} (mean mAP "
            f"{100 * best['average_mAP']:.2f} % over tolerances {' '.join(map(str, cfg.eval.tolerances))}); stored "
            f"in {path}")
    return {"method": best["method"], "window": best["window"], "average_mAP": best["average_mAP"]}


def build(cfg: Config, classes: list[str], train_videos: list[Video], val_videos: list[Video],
          map_videos: list[Video], out: Path, info: DistInfo, model: nn.Module | None = None,
          loss_fn: nn.Module | None = None, resuming: bool = False) -> Job:
    """Data, model, loss, optimiser (+ SAM/ASAM) and schedule of ``cfg``, in an order that fixes every random draw.

    ``model.init`` (a trained run) replaces the model's initial weights unless ``resuming``."""
    from pespot.data.clips import frame_prior
    from pespot.model.spotter import build_model
    from pespot.train.losses import build_loss
    from pespot.train.sam import build_sam
    from pespot.train.schedule import build_scheduler

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    ckpts.seed_everything(cfg.train.seed)
    device, batch_size = info.device, cfg.train.batch_size
    # One optimiser step consumes batch_size clips on every rank: the global batch is batch_size * world_size.
    steps_per_epoch = math.ceil(cfg.clips_per_epoch / (batch_size * info.world_size))
    train_clips = data.clip_dataset(cfg, train_videos, classes, cfg.clips_per_epoch, train=True)
    val_count = cfg.train.val_clips if cfg.train.val_clips is not None else cfg.clips_per_epoch // 4
    val_clips = data.clip_dataset(cfg, val_videos, classes, val_count, train=False) if val_count else None
    # One clip of each kind now, in this process: a config the frames cannot satisfy fails here with the data
    # code's message, not a DataLoader worker's traceback. Clips are pure functions of (seed, epoch, index).
    _ = train_clips[0]
    if val_clips is not None:
        _ = val_clips[0]
    sampler = data.ClipSampler(len(train_clips), batch_size, info)
    loader = data.make_loader(cfg, data.EpochClips(train_clips), sampler, batch_size, device, persistent=True)
    val_loader = (data.make_loader(cfg, data.EpochClips(val_clips), data.ShardSampler(len(val_clips), info),
                                   batch_size, device) if val_clips is not None else None)

    init = cfg.model.init if not resuming else None  # a resumed run loads its own weights
    if model is None:
        # model.init replaces the ImageNet/model.weights start: never fetch weights only to overwrite them.
        model = build_model(cfg, len(classes), load_weights=init is None)
    model = model.to(device)
    loss_fn = (loss_fn if loss_fn is not None else build_loss(cfg.loss, len(classes), cfg.model.projection_dim))
    loss_fn = loss_fn.to(device)
    kept_classifier = False
    if init:
        started = init_from_run(model, init, classes)
        kept_classifier = started.classifier_kept
        if info.is_main:
            print(started.message(classes), file=sys.stderr)
    # The prior bias starts a new classifier; a classifier taken from model.init keeps its trained bias (and a
    # resumed run loads its own).
    if cfg.model.prior_bias and hasattr(model, "init_prior_bias") and not kept_classifier:
        model.init_prior_bias(frame_prior(train_videos, classes, cfg.data.dilate_len), loss_fn.score_activation)
    model = ddp.convert_sync_batchnorm(model, info)
    optimizer = build_adamw(model, cfg.optim)
    sam = build_sam(model, optimizer, cfg.optim)
    # The schedule drives the base AdamW, one step per (SAM) optimiser step; rho is not scheduled.
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch, cfg.train.epochs)
    net = ddp.wrap_model(model, info)
    if cfg.train.compile:
        net = torch.compile(net)
    # Dropout differs between ranks (as with independent GPUs); the weights were initialised identically.
    torch.manual_seed(cfg.train.seed + info.rank)
    return Job(cfg=cfg, classes=classes, out=out, info=info, model=model, net=net, loss_fn=loss_fn,
               optimizer=optimizer, sam=sam, scheduler=scheduler, autocast=autocast_factory(cfg, device),
               sampler=sampler, loader=loader, val_loader=val_loader, map_videos=map_videos,
               steps_per_epoch=steps_per_epoch,
               schedule={"steps_per_epoch": steps_per_epoch, "epochs": cfg.train.epochs, "optim": to_dict(cfg.optim)},
               gather_fn=(lambda t: ddp.all_gather_cat(t, info)) if info.distributed else None)


def restore(job: Job, ckpt: dict) -> TrainState:
    """Load a resume checkpoint into the freshly built job; the state it was saved in."""
    ckpts.check_resumable_schedule(ckpt, job.schedule, job.out)
    epoch, step, step_in_epoch, best, sums = ckpts.restore_training_state(
        ckpt, job.model, job.optimizer, job.scheduler, job.loss_fn, job.info,
        same_schedule=ckpt.get("schedule") == job.schedule)
    # The checkpoint carries the epoch records it covers; metrics.jsonl is written after it and may lag behind.
    history = (list(ckpt["history"]) if ckpt.get("history") is not None
               else ckpts.read_history(job.out / "metrics.jsonl", upto_epoch=epoch))
    return TrainState(epoch=epoch, step=step, step_in_epoch=step_in_epoch, best=best, sums=sums, history=history)


def open_run_folder(job: Job, state: TrainState, resumed: bool, progress: bool) -> None:
    """Rank 0 writes config.yaml, classes.txt and metrics.jsonl and opens TensorBoard; every rank waits."""
    out = job.out
    if job.info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        ckpts.remove_stale_temp_files(out, log=lambda m: print(m, file=sys.stderr) if progress else None)
        with disk_errors(out / "config.yaml"):
            save_config(job.cfg, out / "config.yaml")
        with disk_errors(out / "classes.txt"):
            save_classes(job.classes, out / "classes.txt")
        ckpts.write_history(out / "metrics.jsonl", state.history)
        from torch.utils.tensorboard import SummaryWriter

        job.writer = SummaryWriter(str(out / "tb"), purge_step=state.step if resumed else None)
    ddp.barrier(job.info)


def train_one_epoch(job: Job, state: TrainState, interrupt: Interrupt, stop_after_steps: int | None,
                    bar: Any) -> tuple[bool, bool]:
    """The optimiser steps of one epoch (after those a checkpoint already holds); returns (epoch finished,
    stop requested). A stop request mid-epoch checkpoints and returns at once; at the end of an epoch the epoch is
    finished (validated, checkpointed) first."""
    cfg, info = job.cfg, job.info
    job.model.train()
    job.sampler.set_epoch(state.epoch, skip_batches=state.step_in_epoch)
    bar.set_description(f"epoch {state.epoch + 1}/{cfg.train.epochs}")
    state.epoch_started = time.time() - state.sums.seconds
    window = LossSums()  # losses since the last progress/TensorBoard update
    stop = False
    for batch in data.batches(job.loader):
        frames, targets = data.to_device(batch, info.device)  # (B, T, 3, H, W), (B, T, K+1)
        where = f"epoch {state.epoch + 1}, step {state.step + 1}"
        sam = job.sam if state.step >= cfg.optim.sam_start * job.total_steps else None  # optim.sam_start
        try:
            parts = train_step(job, sam, frames, targets, state.step / max(job.total_steps, 1), where)
        except NonFiniteLossError as err:
            last = job.out / "checkpoints" / "last.pt"
            kept = (f"the last good checkpoint {last} is kept (epoch {ckpts.checkpoint_epoch(last)})"
                    if last.exists() else "no checkpoint had been written yet")
            raise NonFiniteLossError(f"{err}; {kept}. Try a lower optim.lr, or check the data") from None
        state.step += 1
        state.step_in_epoch += 1
        state.sums.add(parts)
        window.add(parts)
        bar.update(1)
        if state.step % cfg.train.log_every == 0 or state.step_in_epoch == job.steps_per_epoch:
            lr = job.optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{window.mean()['total']:.4f}", lr=f"{lr:.2e}")
            if job.writer is not None:
                for key, value in window.mean().items():
                    job.writer.add_scalar(f"train/{key}", value, state.step)
                job.writer.add_scalar("train/lr", lr, state.step)
            window = LossSums()
        stop = ddp.any_rank(bool(interrupt.requested) or (stop_after_steps is not None
                                                         and state.step >= stop_after_steps), info)
        if state.step_in_epoch < job.steps_per_epoch:  # mid-epoch: maybe a checkpoint, maybe stop here
            state.sums.seconds = time.time() - state.epoch_started
            every = cfg.train.save_every_steps
            if stop or (every and state.step % every == 0):
                save(job, state)
            if stop:
                job.log(f"stopped at {where}: checkpoint {job.out / 'checkpoints' / 'last.pt'} "
                        f"(continue with --resume {job.out})")
                return False, True
    return state.step_in_epoch >= job.steps_per_epoch, stop


def end_of_epoch(job: Job, state: TrainState, validate_map: bool) -> dict:
    """Validation loss and mAP, model selection, checkpoint and metrics of the epoch just trained."""
    cfg, info = job.cfg, job.info
    record: dict[str, Any] = {"epoch": state.epoch + 1, "step": state.step}
    record.update({f"train_{k}": v for k, v in hist.ddp_mean(state.sums, info).items()})
    ddp.broadcast_buffers(job.model, info)  # BN running stats of rank 0 everywhere before validating/saving
    if job.val_loader is not None:
        record.update({f"val_{k}": v for k, v in evaluate_loss(job.model, job.loss_fn, job.val_loader, job.autocast,
                                                                info).items()})
    if validate_map and any(v.events for v in job.map_videos):
        maps = evaluate_map(job.model, cfg, job.classes, job.map_videos, job.loss_fn, info)
        record["val_map"] = {str(t): v for t, v in maps.items()}
        record["val_map_selection"] = float(np.mean([maps[t] for t in SELECTION_TOLERANCES]))
    record["lr"] = job.optimizer.param_groups[0]["lr"]
    record["seconds"] = round(time.time() - state.epoch_started, 3)  # training and validation
    score = hist.selection_score(cfg, record)
    improved = score is not None and (state.best["score"] is None or score > state.best["score"])
    if improved:
        state.best.update({"epoch": state.epoch + 1, "score": score, "metrics": dict(record)})
    record["best"] = improved
    state.history.append(record)
    state.epoch += 1
    state.step_in_epoch = 0
    state.sums = LossSums()
    kept = (f"epoch-{state.epoch:03d}.pt",) if cfg.train.keep_epochs else ()
    save(job, state, ("last.pt", "best.pt") + kept if improved else ("last.pt",) + kept)
    if info.is_main:
        ckpts.write_history(job.out / "metrics.jsonl", state.history)
        with disk_errors(job.out / "tb"):
            hist.log_epoch_tensorboard(job.writer, record)
    job.log(hist.epoch_line(record, cfg.train.epochs))
    return record


def save(job: Job, state: TrainState, names: tuple[str, ...] = ("last.pt",)) -> None:
    """Checkpoint the run (every rank takes part: RNG states and loss sums are gathered; rank 0 writes)."""
    info = job.info
    content = {
        "format": ckpts.CHECKPOINT_FORMAT, "config": to_dict(job.cfg), "classes": list(job.classes),
        "model": job.model.state_dict(), "epoch": state.epoch, "step": state.step,
        "step_in_epoch": state.step_in_epoch, "optimizer": job.optimizer.state_dict(),
        "scheduler": job.scheduler.state_dict(), "schedule": job.schedule, "loss": job.loss_fn.state_dict(),
        "best": dict(state.best), "rng": {"ranks": ddp.gather_objects(ckpts.rng_state(info.device), info)},
        "epoch_progress": ({"ranks": ddp.gather_objects(state.sums.state(), info)} if state.step_in_epoch
                           else None),
        "history": list(state.history), "pespot_version": __version__,
    }
    ckpts.write_checkpoints(content, job.out, names, info)


def train_step(job: Job, sam: Any, frames: torch.Tensor, targets: torch.Tensor, step_fraction: float,
               where: str) -> dict[str, float]:
    """One optimiser step on one batch (method-spec 5.4); returns the first pass's loss parts as floats.

    ``sam`` is the SAM/ASAM wrapper, or None for a plain AdamW step. A non-finite loss or gradient raises
    ``NonFiniteLossError`` before the weights are changed (an AdamW step with a NaN gradient would make every
    weight NaN, and the next checkpoint would save them).
    """
    from pespot.train.sam import disable_running_stats, enable_running_stats

    info, use_projection = job.info, bool(getattr(job.loss_fn, "needs_projection", False))

    def forward_loss() -> tuple[torch.Tensor, dict, torch.Tensor | None]:
        with job.autocast():
            if use_projection:
                logits, proj = job.net(frames, return_projection=True)  # (B, T, K+1), (B*T, D)
            else:
                logits, proj = job.net(frames), None
        total, parts = job.loss_fn(logits, targets, proj, step_fraction)
        return total, parts, proj

    loss1, parts, proj = forward_loss()  # the bank as it was at the start of the step
    check_finite(loss1, info, where)
    loss1.backward()
    if sam is None:
        check_finite(grad_norm(job.model), info, where, what="gradient")
        job.optimizer.step()
    else:
        norm = sam.first_step()  # w <- w + eps(grad), grads cleared; nothing perturbed if the norm is not finite
        check_finite(norm, info, where, what="gradient")
        disable_running_stats(job.model)  # BN running stats frozen: not updated twice per step, nor at w + eps
        try:
            loss2, _, _ = forward_loss()
            check_finite(loss2, info, where + " (second SAM pass)")
            loss2.backward()
            check_finite(grad_norm(job.model), info, where + " (second SAM pass)", what="gradient")
        except NonFiniteLossError:
            sam.second_step()  # restores w; skips the AdamW step on non-finite gradients
            raise
        finally:
            enable_running_stats(job.model)
        sam.second_step()  # w restored, AdamW step with the gradient at w + eps
    job.optimizer.zero_grad(set_to_none=True)
    job.scheduler.step()
    if proj is not None:
        job.loss_fn.update_bank(proj.detach(), targets, job.gather_fn)  # first-pass features, once per step
    return {k: float(v) for k, v in parts.items() if k != "contrastive_pairs"}
