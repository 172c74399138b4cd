"""Accuracy benchmark: the paper's model, its ablations and E2E-Spot, trained with one budget on synthetic ``bench``.

    python benchmarks/accuracy.py [--data DIR] [--out DIR] [--rows NAME ...] [--minutes-per-row M | --steps N]
                                  [--seed S] [--format mp4|jpg] [--threads N] [--report-only]

1. The synthetic ``bench`` dataset (docs/synthetic.md: 200/40/60 videos of ~520 frames, 64x64, six classes, the
   rare ``net`` and the long-range pair ``line_in``/``line_out``) is generated into ``--data`` unless there.
2. The budget: every row trains the same number of optimiser steps on the same clips (epochs, clips per epoch,
   batch size, clip length, frame size, seed). ``--steps N`` sets it; ``--minutes-per-row M`` (default 20) derives
   it from a short calibration of the most expensive row (``paper``: two passes per step for ASAM, SoftIC) so
   that one row *trains* (optimiser steps + per-epoch validation) in about M minutes on this machine; the
   cheaper rows then finish sooner. Test inference comes on top (printed as an estimate). The budget is saved as
   ``<out>/budget.json`` and reused by later invocations, so rows run at different times share it.
3. Each row (``ROWS``) is the ``synthetic`` preset (64x64 full frames, no ImageNet weights) with the row's keys,
   trained into ``<out>/<row>/run``; then its best checkpoint (validation mAP) spots the test split (half-overlap
   windows, local-maximum NMS over 1 frame, threshold 0.01) and is scored: mAP at tolerances 0/1/2/4 and the AP
   of the rarest class and of the long-range pair. ``<out>/<row>/result.json`` is written (atomically) when the
   row is complete: a rerun skips finished rows and resumes an unfinished one from ``run/checkpoints/last.pt``.
4. Every invocation ends by gathering the finished rows into ``docs/results/accuracy.md`` and ``.json``
   (``--report-only`` does only that); rows without a ``result.json`` are listed as not run yet.

Choices (and why):

* **Clip length 64**, not the ``synthetic`` preset's 32: the lamp that tells ``line_in`` from ``line_out`` lights
  32-40 frames after the ground contact, so a 32-frame window can never hold both. With 64 frames, a clip
  holds both when the contact falls in its first 24-32 frames (64 minus the delay). At inference every frame
  is covered by two half-overlapping windows and its score is their mean; in one of them the contact sits in
  the first 32 frames, which shows the lamp for all delays when the contact is in the first 24.
* **Frame store: mp4** (``pespot synth --format mp4``): decoding mp4 costs the loader workers more CPU than JPEG
  (about 0.1 s per step of 4 items here), but that is ~2% of the model's time per step and hidden when a core
  is free, so both train at the same speed within the noise of this machine; mp4 takes ~86 MB instead of
  1.2 GB for ``bench``. ``--compare-formats`` measures it and the report shows the numbers and the verdict.
* **Model selection**: validation mAP (mean over tolerances 1, 2, 4; E2E-Spot's criterion) on the last
  ``VAL_MAP_EPOCHS`` epochs only: a validation pass over the 40 val videos costs about as much as ten to
  fifteen steps of the paper row on the CPU. Validation loss (32 clips) is computed every epoch.
* **Per-class columns at tolerance 4** (``CLASS_TOLERANCE``): at 4 frames the timing of a contact is rarely the
  question, so the AP of ``net`` and of the pair measures whether the model found and *named* the event (rare
  class; lamp seen 32+ frames later). Every tolerance is in the JSON.
* **BCE positive weight 5** (``loss.bce_fg_weight``, from the ``synthetic`` preset) in every BCE row: from
  random initialisation and a few hundred steps, the paper's plain BCE stays at the class prior (demo diagnostics,
  docs/results/demo.md); the weight matches E2E-Spot's foreground weight for its cross-entropy. The report says so.
* **Threads**: one torch thread by default (``--threads``): the DataLoader workers use the other core, and on the
  shared 2-core machine two threads per process made a paper step 10x slower than one, in one measurement
  (over-subscription). The step
  count does not depend on it; only the wall time does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pespot import __version__ as pespot_version
from pespot.config import Config, load_config, to_dict
from pespot.data.labels import Event, Video, load_dataset, load_split, save_split
from pespot.errors import DataError, PespotError
from pespot.fsutil import write_json_atomic, write_text_atomic
from pespot.metrics import MapResult, compute_map

ROOT = Path(__file__).resolve().parents[1]
TOLERANCES = (0, 1, 2, 4)
CLASS_TOLERANCE = 4  # tolerance of the per-class columns of the table (all tolerances are in the JSON)
EPOCHS = 5
CLIP_LEN = 64
BATCH_SIZE = 4
VAL_CLIPS = 32
VAL_MAP_EPOCHS = 2  # validation mAP (model selection) on the last this-many epochs
LAMP_DELAY_MAX = 40  # the line call's lamp lights up to this many frames after the contact (docs/synthetic.md)
# mp4's extra loader CPU per step, as a fraction of the model's step time, below which mp4 and JPEG count as
# equally fast (the wall times of identical runs on the shared machine differ by more)
FORMAT_SPEED_TOLERANCE = 0.05
DATA_SEED = 0  # the bench dataset is always generated with seed 0 (its counts are in docs/synthetic.md)
# Test-split inference, the same for every row.
INFERENCE = {"overlap": 0.5, "threshold": 0.01, "nms": "local_max", "nms_window": 1}


@dataclass(frozen=True)
class Row:
    """One trained configuration: the config keys that define it, on top of the shared budget."""

    name: str
    summary: str
    keys: dict[str, Any]
    paper_row: str  # the closest row of the paper's Table 3 (SoccerNet-v2 test, tight / loose avg-mAP)


# The paper's method (Santra et al. 2025) and E2E-Spot (Hong et al. 2022), as the presets configs/paper.yaml and
# configs/e2e-spot.yaml define them (tests/test_accuracy_bench.py checks that they still agree).
PAPER_KEYS: dict[str, Any] = {
    "model.temporal_module": "astrm", "model.temporal_head": "bigru", "loss.classification": "bce",
    "loss.contrastive": "softic", "loss.softic_weight": 0.001, "optim.sam": "asam", "optim.rho": 2.0,
    "optim.scheduler": "warmup_cosine", "data.mixup_alpha": 0.1,
}
E2E_SPOT_KEYS: dict[str, Any] = {
    "model.temporal_module": "gsm", "model.temporal_head": "bigru", "loss.classification": "ce",
    "loss.fg_weight": 5.0, "loss.contrastive": "none", "optim.sam": "none", "optim.scheduler": "e2e_chained",
    "data.mixup_alpha": 0.2,
}

ROWS: list[Row] = [
    Row("e2e-spot", "E2E-Spot: GSM + Bi-GRU, CE (fg weight 5), plain AdamW, chained schedule, mixup 0.2",
        E2E_SPOT_KEYS, "Baseline: E2E-Spot (RegNet-Y 200MF + GSM): 61.19 / 73.25"),
    Row("paper", "the paper: ASTRM + Bi-GRU, BCE + SoftIC, ASAM, mixup 0.1",
        PAPER_KEYS, "ASTRM + ASAM + SoftIC loss: 73.74 / 79.11"),
    Row("paper-gsm", "paper with GSM instead of ASTRM (the paper's 'without ASTRM' is E2E-Spot's GSM)",
        {**PAPER_KEYS, "model.temporal_module": "gsm"}, "none (Table 3 swaps GSM for ASTRM only in the baseline)"),
    Row("paper-no-softic", "paper without the SoftIC term (BCE only)",
        {**PAPER_KEYS, "loss.contrastive": "none"}, "ASTRM + ASAM: 72.65 / 78.58"),
    Row("paper-focal", "paper with focal loss instead of BCE, no SoftIC",
        {**PAPER_KEYS, "loss.classification": "focal", "loss.contrastive": "none"},
        "ASTRM + ASAM + Focal Loss: 70.36 / 76.86"),
    Row("paper-sam", "paper with SAM instead of ASAM (rho 2.0), SoftIC kept",
        {**PAPER_KEYS, "optim.sam": "sam"}, "ASTRM + SAM (without SoftIC): 71.89 / 77.50"),
]
ROW_NAMES = [r.name for r in ROWS]


def get_row(name: str) -> Row:
    """The row called ``name``; a PespotError lists the known rows."""
    for row in ROWS:
        if row.name == name:
            return row
    raise PespotError(f"unknown row '{name}' (known: {', '.join(ROW_NAMES)})")


# --------------------------------------------------------------------------------------------------------------
# the budget


IDENTITY_KEYS = ("steps", "epochs", "batch_size", "clip_len", "seed", "preset", "overrides")


@dataclass
class Budget:
    """What every row shares. ``steps`` is a whole number of steps per epoch times ``epochs``."""

    steps: int
    epochs: int = EPOCHS
    batch_size: int = BATCH_SIZE
    clip_len: int = CLIP_LEN
    seed: int = 0
    preset: str = "bench"
    overrides: list[str] = field(default_factory=list)  # extra --set keys applied to every row
    minutes_per_row: float | None = None  # the target the steps were derived from (None: --steps)
    calibration: dict | None = None

    @property
    def steps_per_epoch(self) -> int:
        return self.steps // self.epochs

    @property
    def clips_per_epoch(self) -> int:
        return self.steps_per_epoch * self.batch_size

    def identity(self) -> dict[str, Any]:
        """The fields that must agree between rows (and between invocations on one ``--out``)."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in asdict(self).items() if k in IDENTITY_KEYS}

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(steps_per_epoch=self.steps_per_epoch, clips_per_epoch=self.clips_per_epoch,
                   clips=self.steps * self.batch_size)
        return out


def whole_epochs(steps: int, epochs: int) -> int:
    """``steps`` rounded down to a whole number of steps per epoch (at least one per epoch)."""
    if steps <= 0:
        raise PespotError(f"--steps: expected a positive number of optimiser steps, got {steps}")
    return max(1, steps // epochs) * epochs


def plan_steps(budget_seconds: float, per_step: float, per_window: float, *, epochs: int, val_clips: int,
               val_map_epochs: int, val_windows: int) -> int:
    """Optimiser steps that fit ``budget_seconds`` of training, validation included.

    Training time = steps * per_step + per_window * (epochs * val_clips + val_map_epochs * val_windows): the
    validation loss runs ``val_clips`` clips every epoch, the validation mAP scores the val split's
    non-overlapping windows on the last ``val_map_epochs`` epochs. Rounded down to whole epochs (at least one
    step per epoch).
    """
    overhead = per_window * (epochs * val_clips + val_map_epochs * val_windows)
    per_epoch = int(max(0.0, budget_seconds - overhead) / per_step / epochs)
    return max(1, per_epoch) * epochs


def count_windows(videos: list[Video], clip_len: int, stride: int) -> int:
    """Windows that sliding-window inference runs over ``videos``."""
    from pespot.data.clips import window_starts

    return sum(len(window_starts(v.num_frames, clip_len, stride)) for v in videos)


def seconds_per_window(cfg: Config, classes: list[str], videos: list[Video], frames_root: Path) -> float:
    """Inference time per window, frame decoding included: the model of ``cfg`` scores ``videos`` as the
    validation does (windows without overlap; the first video only warms up)."""
    from pespot.data.frames import find_video_frames
    from pespot.infer import Predictor, predict_scores, resolve_device
    from pespot.train import trainer

    device = resolve_device(cfg.train.device)
    model = trainer.build_model(cfg, len(classes)).to(device).eval()
    predictor = Predictor(model=model, cfg=cfg, classes=classes, device=device, activation="sigmoid")

    def score(video: Video) -> None:
        predict_scores(predictor, find_video_frames(frames_root, video.video), overlap=0.0,
                       batch_size=cfg.eval.batch_size, progress=False, num_frames=video.num_frames)

    score(videos[0])  # warm-up: allocators, decoder, reader thread
    timed = videos[1:] or videos
    start = time.perf_counter()
    for video in timed:
        score(video)
    clip = cfg.model.clip_len
    return (time.perf_counter() - start) / max(1, count_windows(timed, clip, clip))


def calibrate(cfg: Config, dataset: Any, minutes: float) -> tuple[int, dict]:
    """Steps per row for ``minutes`` of training, from timing the ``paper`` row; returns (steps, details)."""
    from pespot.demo import seconds_per_step
    from pespot.infer import window_stride

    classes = dataset.classes
    per_step = seconds_per_step(cfg, len(classes), steps=3)
    per_window = seconds_per_window(cfg, classes, dataset.splits["val"][:5], Path(cfg.frames_dir))
    clip = cfg.model.clip_len
    val_windows = count_windows(dataset.splits["val"], clip, clip)  # validation mAP: no overlap
    test_windows = count_windows(dataset.splits["test"], clip, window_stride(clip, INFERENCE["overlap"]))
    val_clips = cfg.train.val_clips or 0
    val_map_epochs = cfg.train.epochs - cfg.start_val_epoch
    steps = plan_steps(minutes * 60, per_step, per_window, epochs=cfg.train.epochs, val_clips=val_clips,
                       val_map_epochs=val_map_epochs, val_windows=val_windows)
    validation_s = per_window * (cfg.train.epochs * val_clips + val_map_epochs * val_windows)
    details = {
        "row": "paper", "seconds_per_step": round(per_step, 3), "seconds_per_window": round(per_window, 4),
        "val_windows": val_windows, "test_windows": test_windows,
        "estimated_train_minutes": round((steps * per_step + validation_s) / 60, 1),
        "estimated_validation_minutes": round(validation_s / 60, 1),
        "estimated_test_inference_minutes": round(test_windows * per_window / 60, 1),
        "torch_threads": _torch_threads(), "load_average_1min": round(os.getloadavg()[0], 2),
    }
    return steps, details


def resolve_budget(args: argparse.Namespace, out: Path, dataset: Any, data_root: Path) -> Budget:
    """The budget of ``out``: ``budget.json`` when it agrees with the arguments, else a new one.

    A new budget replaces an old one only while no row has started under it: rows must share one budget.
    """
    wanted = Budget(steps=0, epochs=args.epochs, batch_size=args.batch_size, clip_len=args.clip_len,
                    seed=args.seed, preset=args.preset, overrides=list(args.set or []))
    if args.steps is not None:
        wanted.steps = whole_epochs(args.steps, args.epochs)
        if wanted.steps != args.steps:
            print(f"--steps {args.steps} -> {wanted.steps} (a whole number of steps in each of "
                  f"{args.epochs} epochs)", flush=True)
    path = out / "budget.json"
    if path.is_file():
        saved = load_budget(path)
        mine, theirs = wanted.identity(), saved.identity()
        if args.steps is None:  # minutes: the saved calibration stands unless other minutes are asked for
            mine["steps"] = theirs["steps"]
            if args.minutes_per_row is not None and args.minutes_per_row != saved.minutes_per_row:
                mine["minutes_per_row"], theirs["minutes_per_row"] = args.minutes_per_row, saved.minutes_per_row
        if mine == theirs:
            return saved
        started = [r for r in ROW_NAMES if (out / r).exists()]
        if started:
            key = next(k for k in mine if mine[k] != theirs[k])
            raise PespotError(f"{path}: rows here ({', '.join(started)}) were trained with {key} = "
                              f"{theirs[key]!r}, not {mine[key]!r}; rerun with the same settings or use another --out")
    if args.steps is None:
        minutes = args.minutes_per_row if args.minutes_per_row is not None else 20.0
        if minutes <= 0:
            raise PespotError(f"--minutes-per-row must be positive, got {minutes}")
        print(f"calibrating the paper row's step time for a {minutes:g}-minute training budget ...", flush=True)
        cfg = row_config(get_row("paper"), wanted, data_root, out / "calibration", args.threads, args.device)
        wanted.steps, wanted.calibration = calibrate(cfg, dataset, minutes)
        wanted.minutes_per_row = minutes
        c = wanted.calibration
        print(f"  {c['seconds_per_step']:.2f} s/step, {c['seconds_per_window']:.3f} s/window -> {wanted.steps} "
              f"steps ({wanted.epochs} x {wanted.steps_per_epoch}); per row about {c['estimated_train_minutes']} "
              f"min of training + {c['estimated_test_inference_minutes']} min of test inference", flush=True)
    write_json_atomic(path, wanted.to_json())
    return wanted


def load_budget(path: Path) -> Budget:
    """A ``budget.json`` back as a Budget."""
    try:
        data = json.loads(path.read_text())
        names = {"steps", "epochs", "batch_size", "clip_len", "seed", "preset", "overrides", "minutes_per_row",
                 "calibration"}
        return Budget(**{k: v for k, v in data.items() if k in names})
    except (OSError, ValueError, TypeError) as err:
        raise DataError(f"{path}: not a readable budget file ({err})") from None


# --------------------------------------------------------------------------------------------------------------
# one row


def row_config(row: Row, budget: Budget, data_root: Path, run_dir: Path, threads: int | None,
               device: str = "auto", num_workers: int | None = None) -> Config:
    """The ``synthetic`` preset + the shared budget + the row's keys (+ the budget's extra ``--set`` keys)."""
    spe = budget.steps_per_epoch
    shared = [
        f"data.root={data_root}", f"out={run_dir}", f"train.device={device}",
        f"model.clip_len={budget.clip_len}", "data.height=64", "data.crop=null",
        f"train.epochs={budget.epochs}", f"train.batch_size={budget.batch_size}",
        f"train.clips_per_epoch={budget.clips_per_epoch}", f"train.val_clips={VAL_CLIPS}",
        f"train.start_val_epoch={max(0, budget.epochs - VAL_MAP_EPOCHS)}", "train.criterion=map",
        f"train.seed={budget.seed}", f"train.save_every_steps={max(1, spe // 4)}",
        f"eval.overlap={INFERENCE['overlap']}", f"eval.threshold={INFERENCE['threshold']}",
        f"eval.nms={INFERENCE['nms']}", f"eval.nms_window={INFERENCE['nms_window']}",
    ]
    if threads:
        shared.append(f"train.threads={threads}")
    if num_workers is not None:
        shared.append(f"data.num_workers={num_workers}")
    keys = [f"{k}={v}" for k, v in row.keys.items()]
    cfg = load_config("synthetic", shared + keys + list(budget.overrides))
    cfg.name = f"accuracy-{row.name}"
    return cfg


def infer_test(run_dir: Path, data_root: Path, device: str, batch_size: int) -> tuple[list[Video], dict]:
    """Spot the test split with the run's best checkpoint; returns (predictions, timing)."""
    from pespot.data.frames import find_video_frames
    from pespot.infer import load_predictor, predict_scores, scores_to_events

    ckpt = run_dir / "checkpoints" / "best.pt"
    if not ckpt.is_file():
        raise DataError(f"{run_dir}: no checkpoints/best.pt (no epoch with a validation mAP finished)")
    predictor = load_predictor(ckpt, device=device)
    classes = predictor.classes
    truth = load_split(data_root / "test.json", classes)
    start = time.perf_counter()
    preds = []
    for i, video in enumerate(truth):
        source = find_video_frames(data_root / "frames", video.video)
        scores = predict_scores(predictor, source, overlap=INFERENCE["overlap"], batch_size=batch_size,
                                progress=False, num_frames=video.num_frames)  # (N, K+1)
        events = scores_to_events(scores, classes, threshold=INFERENCE["threshold"], nms=INFERENCE["nms"],
                                  nms_window=INFERENCE["nms_window"])
        preds.append(Video(video=video.video, num_frames=len(scores), fps=video.fps, events=events))
        if (i + 1) % 10 == 0 or i + 1 == len(truth):
            print(f"  test inference: {i + 1}/{len(truth)} videos ({time.perf_counter() - start:.0f} s)", flush=True)
    seconds = time.perf_counter() - start
    return preds, {"checkpoint": str(ckpt), "seconds": round(seconds, 1),
                   "frames": sum(v.num_frames for v in truth), **INFERENCE}


def headline(result: dict, rarest: str, pair: tuple[str, ...]) -> dict:
    """The table's numbers of one row: mAP per tolerance and AP of the rarest class and the pair."""
    per_class = result["per_class"]
    return {
        "mAP": {t: result["mAP"][str(t)] for t in TOLERANCES},
        "ap": {c: ({t: per_class[c][str(t)] for t in TOLERANCES} if c in per_class else None)
               for c in (rarest, *pair)},
    }


def epoch_seconds(run_dir: Path) -> float:
    """Sum of the epoch times in ``metrics.jsonl`` (training + validation, across resumes)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0.0
    return float(sum(json.loads(line).get("seconds", 0.0) for line in path.read_text().splitlines() if line))


def run_row(row: Row, budget: Budget, data_root: Path, out: Path, *, threads: int | None, device: str,
            progress: bool, command: str, num_workers: int | None = None) -> dict | None:
    """Train, infer and score one row; returns its result (None when training was interrupted).

    A finished row (``result.json``) is returned as it is; an unfinished one is resumed from its last checkpoint.
    """
    from pespot.train.trainer import train

    row_dir = out / row.name
    result_path = row_dir / "result.json"
    if result_path.is_file():
        print(f"[{row.name}] finished earlier: {result_path}", flush=True)
        return json.loads(result_path.read_text())
    run_dir = row_dir / "run"
    cfg = row_config(row, budget, data_root, run_dir, threads, device, num_workers)
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    print(f"[{row.name}] {'resume' if resume else 'train'}: {row.summary}; {budget.epochs} epochs x "
          f"{budget.steps_per_epoch} steps x {budget.batch_size} clips of {cfg.model.clip_len} frames -> {run_dir}",
          flush=True)
    start = time.perf_counter()
    summary = train(cfg, resume=run_dir if resume else None, progress=progress)
    train_wall = time.perf_counter() - start
    if summary["stopped"] or summary["epochs_completed"] < budget.epochs:
        print(f"[{row.name}] stopped after {summary['steps']} steps; rerun the same command to resume", flush=True)
        return None
    if summary["steps"] != budget.steps:
        raise PespotError(f"{run_dir}: trained {summary['steps']} steps, the budget is {budget.steps}")

    print(f"[{row.name}] test inference with checkpoints/best.pt (epoch {summary['best_epoch']})", flush=True)
    preds, inference = infer_test(run_dir, data_root, device, cfg.eval.batch_size)
    save_split(preds, row_dir / "predictions_test.json")
    dataset = load_dataset(data_root)
    classes = dataset.classes
    truth = load_split(data_root / "test.json", classes)
    res = compute_map(truth, preds, classes, TOLERANCES)
    rarest = rarest_class(dataset)
    result = {
        "row": row.name, "summary": row.summary, "keys": row.keys, "paper_row": row.paper_row,
        "status": "finished", "budget": budget.to_json(), "config": to_dict(cfg),
        "train": {"steps": summary["steps"], "clips": summary["steps"] * budget.batch_size,
                  "epochs": summary["epochs_completed"], "best_epoch": summary["best_epoch"],
                  "best_val_selection_map": summary["best_score"], "resumed": resume,
                  "epoch_seconds": round(epoch_seconds(run_dir), 1),
                  "wall_seconds_last_invocation": round(train_wall, 1)},
        "inference": inference, "test": res.to_json(), "rarest_class": rarest,
        "long_range_pair": list(_pair()), "headline": headline(res.to_json(), rarest, _pair()),
        "command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
        "versions": versions(),
    }
    write_json_atomic(result_path, result)
    m = result["headline"]["mAP"]
    print(f"[{row.name}] test mAP " + ", ".join(f"δ={t}: {100 * m[t]:.1f}" for t in TOLERANCES), flush=True)
    return result


# --------------------------------------------------------------------------------------------------------------
# dataset, machine, references


def ensure_dataset(data_root: Path, preset: str, fmt: str) -> Any:
    """Generate the synthetic ``preset`` into ``data_root`` unless it is there (an interrupted one is resumed)."""
    from pespot.data.synthetic import generate

    info_path = data_root / "synth.json"
    if (data_root / "test.json").is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("preset") != preset or info.get("format") is None:
            raise DataError(f"{info_path}: holds the synthetic '{info.get('preset')}' dataset "
                            f"(format {info.get('format')}), expected '{preset}' with frames")
    else:
        print(f"generating the synthetic '{preset}' dataset ({fmt}) into {data_root} ...", flush=True)
        start = time.perf_counter()

        def report(done: int, total: int) -> None:
            if done % 25 == 0 or done == total:
                print(f"  {done}/{total} videos ({time.perf_counter() - start:.0f} s)", flush=True)

        generate(data_root, preset=preset, seed=DATA_SEED, fmt=fmt, progress=report)
    return load_dataset(data_root)


def _pair() -> tuple[str, ...]:
    from pespot.data.synthetic import LONG_RANGE_PAIR

    return tuple(LONG_RANGE_PAIR)


def rarest_class(dataset: Any) -> str:
    """The class with the fewest events over all splits (``net`` on ``bench``)."""
    counts: dict[str, int] = {c: 0 for c in dataset.classes}
    for videos in dataset.splits.values():
        for v in videos:
            for e in v.events:
                counts[e.label] += 1
    return min((c for c in dataset.classes if counts[c]), key=lambda c: counts[c])


def coin_flip_reference(truth: list[Video], classes: list[str], pair: tuple[str, ...], seed: int = 0) -> MapResult:
    """Exact frames and classes, except that the pair is told apart by a coin: chance level for the pair.

    Every true event is predicted at its frame with score 1; an event of the pair is predicted as each class of
    the pair with independent uniform random scores (what a model that cannot see the lamp can do at best).
    """
    rng = np.random.default_rng(seed)
    preds = []
    for v in truth:
        events = []
        for e in v.events:
            if e.label in pair:
                events += [Event(frame=e.frame, label=c, score=float(rng.uniform())) for c in pair]
            else:
                events.append(Event(frame=e.frame, label=e.label, score=1.0))
        preds.append(Video(video=v.video, num_frames=v.num_frames, fps=v.fps, events=events))
    return compute_map(truth, preds, classes, TOLERANCES)


def references(data_root: Path) -> dict | None:
    """Computed (not trained) reference rows: the class-frequency baseline and the coin-flip pair."""
    from pespot.demo import frequency_baseline

    if not (data_root / "test.json").is_file():
        return None
    dataset = load_dataset(data_root)
    classes, truth = dataset.classes, dataset.splits["test"]
    rarest, pair = rarest_class(dataset), _pair()
    freq = compute_map(truth, frequency_baseline(dataset.splits["train"], truth, classes), classes, TOLERANCES)
    coin = coin_flip_reference(truth, classes, pair)
    return {
        "frequency_baseline": {"summary": "every test frame, every class, scored by its share of training frames",
                               "test": freq.to_json(), "headline": headline(freq.to_json(), rarest, pair)},
        "coin_flip_pair": {"summary": "exact frames and classes, line_in/line_out by a coin flip (seed 0)",
                           "test": coin.to_json(), "headline": headline(coin.to_json(), rarest, pair)},
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, core count, GPU if any, platform and the current load."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu, "platform": platform.platform(),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def git_commit() -> str:
    """The repository's commit, marked when src/ or this script has uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src",
                                "benchmarks/accuracy.py"], capture_output=True, text=True, check=True).stdout.strip()
        return head + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict[str, str]:
    """Versions of what decides the numbers."""
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "pespot": pespot_version, "pespot_commit": git_commit()}
    try:
        import timm

        out["timm"] = timm.__version__
    except ImportError:
        pass
    return out


# --------------------------------------------------------------------------------------------------------------
# frame-format check


def compare_formats(work: Path, *, preset: str = "small", rounds: int = 2, steps: int = 8,
                    threads: int | None = 1) -> dict:
    """Does training read mp4 stores as fast as JPEG folders? Times both on ``preset``, rounds interleaved.

    For each format: generation time and size on disk; the CPU time of making one training item (two 64-frame
    clips read, augmented and mixed, as the DataLoader workers do); and the wall time of ``steps`` training
    steps of the ``paper`` row (one epoch, selection by validation loss on 4 clips, the preset's 2 workers).
    The CPU time per item, against the model's time per step, is the robust part: on this shared machine the
    wall times of two identical runs differ by more than the formats do. Returns ``<out>/formats.json``.
    """
    from pespot.data.clips import ClipDataset
    from pespot.data.synthetic import generate
    from pespot.demo import seconds_per_step
    from pespot.train.trainer import train

    items = 40
    result: dict[str, Any] = {"preset": preset, "rounds": rounds, "steps": steps, "clip_len": CLIP_LEN,
                              "batch_size": BATCH_SIZE, "threads": threads, "formats": {}}
    for fmt in ("mp4", "jpg"):
        root = work / f"{preset}-{fmt}"
        start = time.perf_counter()
        generate(root, preset=preset, seed=DATA_SEED, fmt=fmt)
        size = _folder_bytes(root / "frames")
        result["formats"][fmt] = {"generate_seconds": round(time.perf_counter() - start, 1), "bytes": size,
                                  "item_cpu_ms": [], "train_seconds": []}
    budget = Budget(steps=steps, epochs=1, preset=preset)
    for r in range(rounds):
        for fmt in ("mp4", "jpg"):
            root = work / f"{preset}-{fmt}"
            ds = load_dataset(root)
            clips = ClipDataset(ds.splits["train"], ds.classes, root / "frames", CLIP_LEN, items, height=64,
                                crop=None, augment=True, mixup=True, mixup_alpha=0.1, seed=r)
            start = time.process_time()
            for i in range(items):
                clips[i]
            cpu_ms = 1000 * (time.process_time() - start) / items
            result["formats"][fmt]["item_cpu_ms"].append(round(cpu_ms, 1))
            cfg = row_config(get_row("paper"), budget, root, work / f"run-{fmt}-{r}", threads)
            # select by validation loss (4 clips) and skip the validation mAP: only the steps are compared
            cfg.train.val_clips, cfg.train.criterion, cfg.train.start_val_epoch = 4, "loss", 1
            cfg.train.save_every_steps = 0
            start = time.perf_counter()
            train(cfg, progress=False)
            result["formats"][fmt]["train_seconds"].append(round(time.perf_counter() - start, 1))
            print(f"  {fmt} round {r + 1}: {result['formats'][fmt]}", flush=True)
    result["model_seconds_per_step"] = round(seconds_per_step(cfg, len(ds.classes), steps=3), 3)
    result.update(machine=machine(), date=time.strftime("%Y-%m-%d %H:%M"))
    return result


# --------------------------------------------------------------------------------------------------------------
# the report


def collect_rows(out: Path) -> dict[str, dict]:
    """Every row's ``result.json``, or its status (not run yet, possibly with the epochs done so far)."""
    rows: dict[str, dict] = {}
    for row in ROWS:
        path = out / row.name / "result.json"
        if path.is_file():
            rows[row.name] = json.loads(path.read_text())
            continue
        entry: dict[str, Any] = {"row": row.name, "summary": row.summary, "keys": row.keys,
                                 "paper_row": row.paper_row, "status": "not run yet"}
        metrics = out / row.name / "run" / "metrics.jsonl"
        if metrics.is_file():
            entry["epochs_done"] = sum(1 for line in metrics.read_text().splitlines() if line.strip())
        rows[row.name] = entry
    return rows


def _pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _headline_cells(h: dict, rarest: str, pair: tuple[str, ...]) -> list[str]:
    cells = [_pct(h["mAP"].get(t, h["mAP"].get(str(t)))) for t in TOLERANCES]
    for c in (rarest, *pair):
        ap = h["ap"].get(c)
        cells.append("–" if ap is None else _pct(ap.get(CLASS_TOLERANCE, ap.get(str(CLASS_TOLERANCE)))))
    return cells


def row_changes(row: Row) -> dict[str, Any]:
    """The keys in which a ``paper-*`` row differs from ``paper`` (all keys for the other rows)."""
    if not row.name.startswith("paper-"):
        return dict(row.keys)
    return {k: v for k, v in row.keys.items() if PAPER_KEYS.get(k, object()) != v}


def shared_settings(budget: Budget, data_root: Path) -> dict[str, Any]:
    """The config values every row shares, read from the resolved ``paper`` row config."""
    cfg = row_config(get_row("paper"), budget, data_root, Path("run"), None)
    return {"clip_len": cfg.model.clip_len, "height": cfg.data.height, "crop": cfg.data.crop,
            "pretrained": cfg.model.pretrained, "epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size,
            "clips_per_epoch": cfg.clips_per_epoch, "val_clips": cfg.train.val_clips,
            "val_map_epochs": cfg.train.epochs - cfg.start_val_epoch, "criterion": cfg.train.criterion,
            "warmup_epochs": cfg.optim.warmup_epochs, "lr": cfg.optim.lr, "seed": cfg.train.seed,
            "bce_fg_weight": cfg.loss.bce_fg_weight}


def build_report(out: Path, data_root: Path, command: str, formats: dict | None = None) -> dict:
    """Everything the report shows, as JSON."""
    from pespot.data.synthetic import dataset_summary

    budget_path = out / "budget.json"
    budget = load_budget(budget_path) if budget_path.is_file() else None
    dataset, synth = None, None
    rarest, pair = "net", _pair()
    if (data_root / "test.json").is_file():
        dataset = dataset_summary(data_root)
        rarest = rarest_class(load_dataset(data_root))
        if (data_root / "synth.json").is_file():
            synth = json.loads((data_root / "synth.json").read_text())
    return {
        "command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "out": str(out), "data": str(data_root),
        "budget": budget.to_json() if budget else None,
        "settings": shared_settings(budget, data_root) if budget else None,
        "rows": collect_rows(out), "row_order": ROW_NAMES,
        "changes": {r.name: row_changes(r) for r in ROWS}, "rarest_class": rarest, "long_range_pair": list(pair),
        "class_tolerance": CLASS_TOLERANCE, "tolerances": list(TOLERANCES), "inference": INFERENCE,
        "references": references(data_root), "dataset": dataset, "synth": synth, "formats": formats,
        "frames_bytes": _folder_bytes(data_root / "frames") if dataset else None,
        "machine": machine(), "versions": versions(),
    }


def format_overhead(fm: dict) -> dict[str, float]:
    """From ``formats.json``: mp4's extra loader CPU per step (s, and as a fraction of the model's step time)
    and the largest spread between the training-time rounds of one format."""
    mean = {fmt: float(np.mean(f["item_cpu_ms"])) for fmt, f in fm["formats"].items()}
    per_step = (mean["mp4"] - mean["jpg"]) * fm["batch_size"] / 1000
    spread = max(max(f["train_seconds"]) / min(f["train_seconds"]) - 1 for f in fm["formats"].values())
    return {"seconds_per_step": per_step, "fraction": per_step / fm["model_seconds_per_step"], "spread": spread}


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _table_header(first: str, rarest: str, pair: tuple[str, ...], tol: int, extra: list[str]) -> list[str]:
    names = [first, "mAP δ=0", "δ=1", "δ=2", "δ=4", f"AP {rarest} δ={tol}"] + [f"AP {c} δ={tol}" for c in pair]
    names += extra
    return ["| " + " | ".join(names) + " |", "|---|" + "---:|" * (len(names) - 1)]


def write_markdown(report: dict, path: Path) -> None:
    """``docs/results/accuracy.md`` from the report JSON."""
    rarest, pair, tol = report["rarest_class"], tuple(report["long_range_pair"]), report["class_tolerance"]
    budget, settings, rows = report["budget"], report["settings"], report["rows"]
    preset = budget["preset"] if budget else "bench"
    lines = [f"# Accuracy benchmark: the paper's modules on the synthetic `{preset}` preset", "",
             (f"Made by `{report['command']}` ({report['date']}). Rows may come from separate invocations (each "
              "row's own command and date are in `accuracy.json`); a row has numbers only once its "
              "`result.json` exists."), ""]

    lines += ["## Results (test split, %)", ""]
    lines += _table_header("row", rarest, pair, tol, ["steps", "train min", "test min"])
    for name in report["row_order"]:
        r = rows[name]
        if r["status"] != "finished":
            note = r["status"] + (f" (training: {r['epochs_done']} epochs done)" if r.get("epochs_done") else "")
            lines.append(f"| `{name}` | {note} |" + " |" * (4 + len(pair) + 3))
            continue
        t = r["train"]
        steps = str(t["steps"])
        if budget and any(r["budget"].get(k) != budget.get(k) for k in IDENTITY_KEYS):
            steps += " (another budget than budget.json!)"
        lines.append(f"| `{name}` | " + " | ".join(_headline_cells(r["headline"], rarest, pair))
                     + f" | {steps} | {t['epoch_seconds'] / 60:.1f} | {r['inference']['seconds'] / 60:.1f} |")
    refs = report.get("references")
    if refs:
        lines += ["", "Computed references (no training; the same test split and metric):", ""]
        lines += _table_header("reference", rarest, pair, tol, [])
        for ref in refs.values():
            lines.append(f"| {ref['summary']} | " + " | ".join(_headline_cells(ref["headline"], rarest, pair))
                         + " |")
    lines += ["", (f"mAP: mean over the classes of the AP at each tolerance (δ frames; `pespot.metrics`). The "
                   f"per-class columns are at δ={tol}: there the exact frame of a contact is rarely the question, "
                   f"so they measure whether a row found and named the rare `{rarest}` events and told "
                   f"`{pair[0]}` from `{pair[1]}`, which only the lamp lit 32-40 frames after the contact decides "
                   "(the coin-flip reference is the chance level for that pair). Every tolerance is in "
                   "`accuracy.json`. `train min`: the sum of the epoch times (steps and validation); `test min`: "
                   "test-split inference."), ""]

    lines += ["## Rows", "",
              "| row | what it is | config keys | closest row of the paper's Table 3 (SoccerNet-v2, tight / loose) |",
              "|---|---|---|---|"]
    for name in report["row_order"]:
        changes = report["changes"][name]
        keys = ", ".join(f"`{k}={v}`" for k, v in changes.items())
        if name.startswith("paper-"):
            keys = "`paper` with " + keys
        lines.append(f"| `{name}` | {rows[name]['summary']} | {keys} | {rows[name]['paper_row']} |")
    lines += ["", ("The paper's Table 3 adds its modules one at a time to ASTRM; here each `paper-*` row takes one "
                   "choice out of the full model (leave-one-out), next to E2E-Spot as the baseline."), ""]

    lines += ["## Budget (the same for every row)", ""]
    if budget and settings:
        lines.append(
            f"{budget['steps']} optimiser steps = {budget['epochs']} epochs x {budget['steps_per_epoch']} steps x "
            f"{budget['batch_size']} clips: {budget['clips']} training clips of {settings['clip_len']} frames at "
            f"{settings['height']}x{settings['height']} (full frame), random initialisation, lr {settings['lr']:g} "
            f"with {settings['warmup_epochs']:g} epoch(s) of warm-up, seed {budget['seed']}. Validation loss on "
            f"{settings['val_clips']} clips every epoch; validation mAP (mean over δ = 1, 2, 4) on the last "
            f"{settings['val_map_epochs']} epochs chooses `best.pt`, which spots the test split: windows with "
            f"{report['inference']['overlap']:g} overlap, `{report['inference']['nms']}` NMS over "
            f"{report['inference']['nms_window']} frame, threshold {report['inference']['threshold']}.")
        if settings.get("bce_fg_weight", 1.0) != 1.0:
            lines += ["", (f"Every BCE row weights BCE's positive term on the event columns by "
                           f"{settings['bce_fg_weight']:g} (`loss.bce_fg_weight`, set by the `synthetic` preset): "
                           "with the paper's plain BCE (weight 1) the model stayed at the class prior in the "
                           "demo's budget (docs/results/demo.md). E2E-Spot's cross-entropy uses the same "
                           "foreground weight 5; the focal row is unaffected.")]
        if budget.get("overrides"):
            lines += ["", "Extra keys on every row: " + ", ".join(f"`{o}`" for o in budget["overrides"]) + "."]
        cal = budget.get("calibration")
        if cal:
            lines += ["", (
                f"The step count comes from `--minutes-per-row {budget['minutes_per_row']:g}`: the `paper` row "
                f"(the most expensive: two passes per ASAM step, SoftIC) took {cal['seconds_per_step']} s per step "
                f"and {cal['seconds_per_window']} s per inference window with {cal['torch_threads']} torch "
                f"thread(s) (1-min load average {cal['load_average_1min']}), so {budget['steps']} steps and the "
                f"validation ({cal['estimated_validation_minutes']} min) fill about "
                f"{cal['estimated_train_minutes']} min; test inference adds about "
                f"{cal['estimated_test_inference_minutes']} min. Rows without SAM take less time for the same "
                "clips: the budget is equal in clips, not in seconds.")]
        else:
            lines += ["", "The step count was given with `--steps`."]
        if settings["clip_len"] > LAMP_DELAY_MAX:
            lines += ["", (f"Clip length {settings['clip_len']}, not the `synthetic` preset's 32: the lamp lights "
                           "32-40 frames after the contact, so a 32-frame window never holds both (see "
                           "`benchmarks/accuracy.py`).")]
        else:
            lines += ["", (f"Clip length {settings['clip_len']}: too short for a window to hold a contact and the "
                           f"lamp {LAMP_DELAY_MAX} frames later (a smoke-test budget, not the benchmark).")]
    else:
        lines.append("No budget yet (no row has been started).")

    ds, synth = report.get("dataset"), report.get("synth") or {}
    lines += ["", "## Dataset", ""]
    if ds:
        classes = list(ds["all"]["per_class"])
        lines += ["| split | videos | frames | " + " | ".join(classes) + " | max/min |",
                  "|---|---:|---:|" + "---:|" * (len(classes) + 1)]
        for split, s in list(ds["splits"].items()) + [("all", ds["all"])]:
            ratio = "–" if s["max_min_ratio"] is None else f"{s['max_min_ratio']:.1f}"
            lines.append(f"| {split} | {s['videos']} | {s['frames']:,} | "
                         + " | ".join(str(s["per_class"][c]) for c in classes) + f" | {ratio} |")
        lines += ["", (f"`pespot synth {report['data']} --preset {synth.get('preset', '?')} --format "
                       f"{synth.get('format', '?')} --seed {synth.get('seed', '?')}`; docs/synthetic.md describes "
                       "the classes.")]
    else:
        lines.append(f"{report['data']}: not generated yet.")

    lines += ["", "## Frame store: mp4 or JPEG", ""]
    fm = report.get("formats")
    if fm:
        f_mp4, f_jpg = fm["formats"]["mp4"], fm["formats"]["jpg"]
        lines += [(f"`python benchmarks/accuracy.py --compare-formats` on the `{fm['preset']}` preset ({fm['date']}; "
                   f"{fm['rounds']} interleaved rounds; 1-min load average {fm['machine']['load_average_1min']}):"),
                  "", ("| format | on disk | generation s | CPU ms per training item (2 clips of "
                       f"{fm['clip_len']} frames, augmented, mixed) | s for {fm['steps']} training steps of the "
                       "paper row |"), "|---|---:|---:|---:|---:|"]
        for fmt, f in fm["formats"].items():
            lines.append(f"| {fmt} | {f['bytes'] / 1e6:.1f} MB | {f['generate_seconds']} | "
                         + " / ".join(str(x) for x in f["item_cpu_ms"]) + " | "
                         + " / ".join(str(x) for x in f["train_seconds"]) + " |")
        extra = format_overhead(fm)
        ratio = sum(f_mp4["train_seconds"]) / sum(f_jpg["train_seconds"])
        size = f"{f_jpg['bytes'] / max(f_mp4['bytes'], 1):.0f}x"
        lines += ["", (f"Per training step ({fm['batch_size']} items) the loader workers spend "
                       f"{extra['seconds_per_step']:+.2f} s of CPU on mp4 compared with JPEG, "
                       f"{extra['fraction']:+.1%} of the model's {fm['model_seconds_per_step']} s per step: the "
                       "most the format can change the training time, when no core is free for the workers (with "
                       f"a free core it is hidden). Measured training times: mp4 took {ratio:.2f}x the time of "
                       f"JPEG; the rounds of one format differed by up to {extra['spread']:.0%}. ")
                  + (f"So both train at the same speed within {FORMAT_SPEED_TOLERANCE:.0%}, and the benchmark "
                     f"uses mp4, {size} smaller (`--format jpg` switches)."
                     if abs(extra["fraction"]) <= FORMAT_SPEED_TOLERANCE else
                     f"That is beyond {FORMAT_SPEED_TOLERANCE:.0%}: use `--format "
                     f"{'jpg' if extra['fraction'] > 0 else 'mp4'}` for speed (mp4 is {size} smaller).")]
        if ds:
            lines += ["", (f"The `{synth.get('preset', '?')}` frames in {report['data']} ({synth.get('format')}) "
                           f"take {report['frames_bytes'] / 1e6:.0f} MB (docs/synthetic.md: `bench` as JPEG "
                           "folders, 1.2 GB).")]
    else:
        lines.append("Not measured in this report (`python benchmarks/accuracy.py --compare-formats` measures it).")

    m, v = report["machine"], report["versions"]
    lines += ["", "## Machine and versions", "",
              (f"{m['cpu']}, {m['cores']} cores" + (f", GPU {m['gpu']}" if m.get("gpu") else "")
               + f" ({m['platform']}); torch {v['torch']}, timm {v.get('timm', '?')}, numpy {v['numpy']}, python "
               f"{v['python']}, pespot {v['pespot']} at commit {v['pespot_commit']} (each row's own versions are "
               "in `accuracy.json`). The machine is shared: wall times depend on its load (1-min load average "
               f"{m['load_average_1min']} when this report was written); step counts and results do not."), ""]
    write_text_atomic(path, "\n".join(lines))


def write_report(out: Path, data_root: Path, results: Path, command: str) -> dict:
    """Gather the finished rows into ``<results>/accuracy.md`` and ``accuracy.json``."""
    formats_path = out / "formats.json"
    formats = json.loads(formats_path.read_text()) if formats_path.is_file() else None
    report = build_report(out, data_root, command, formats)
    results.mkdir(parents=True, exist_ok=True)
    write_json_atomic(results / "accuracy.json", report)
    write_markdown(report, results / "accuracy.md")
    done = [n for n, r in report["rows"].items() if r["status"] == "finished"]
    print(f"report: {results / 'accuracy.md'} ({len(done)} of {len(ROWS)} rows finished)", flush=True)
    return report


# --------------------------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synth-bench", help="synthetic dataset folder (generated if absent)")
    p.add_argument("--out", default="runs/accuracy", help="rows' run folders, budget.json, result.json files")
    p.add_argument("--results", default=str(ROOT / "docs" / "results"), help="where accuracy.md/.json go")
    p.add_argument("--rows", nargs="+", metavar="NAME", help=f"rows to run (default all: {' '.join(ROW_NAMES)})")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes-per-row", type=float, help="training minutes per row -> steps (default 20)")
    budget.add_argument("--steps", type=int, help="optimiser steps per row (rounded to whole epochs)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every row (the dataset's is 0)")
    p.add_argument("--format", choices=["mp4", "jpg"], default="mp4", help="frame store of a generated dataset")
    p.add_argument("--preset", default="bench", help="synthetic preset (tiny for smoke tests)")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs of every row (default {EPOCHS})")
    p.add_argument("--clip-len", type=int, default=CLIP_LEN, help=f"clip length (default {CLIP_LEN})")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"clips per step (default {BATCH_SIZE})")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="extra config keys for every row (recorded)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1; see the docstring)")
    p.add_argument("--workers", type=int, help="DataLoader workers (default: the preset's 2)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--report-only", action="store_true", help="only gather finished rows into the report")
    p.add_argument("--plan", action="store_true",
                   help="make the dataset and the budget (calibration), print them and stop before training")
    p.add_argument("--compare-formats", action="store_true",
                   help="measure mp4 vs JPEG training speed on the small preset into <out>/formats.json")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def run(args: argparse.Namespace, command: str) -> int:
    """Do what the arguments say; returns the exit code."""
    out, data_root, results = Path(args.out), Path(args.data), Path(args.results)
    names = args.rows or ROW_NAMES
    rows = [get_row(n) for n in names]
    if args.epochs < 1 or args.clip_len <= 0 or args.batch_size <= 0:
        raise PespotError("--epochs, --clip-len and --batch-size must be positive")
    if args.report_only:
        write_report(out, data_root, results, command)
        return 0
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare_formats:
        work = out / "formats"
        write_json_atomic(out / "formats.json", compare_formats(work, threads=args.threads))
        shutil.rmtree(work)  # two copies of the small dataset and four runs: only the timings are kept
        write_report(out, data_root, results, command)
        return 0
    dataset = ensure_dataset(data_root, args.preset, args.format)
    budget = resolve_budget(args, out, dataset, data_root)
    if args.plan:
        print(json.dumps(budget.to_json(), indent=2))
        return 0
    interrupted = False
    for row in rows:
        result = run_row(row, budget, data_root, out, threads=args.threads, device=args.device,
                         progress=not args.quiet, command=command, num_workers=args.workers)
        if result is None:
            interrupted = True
            break
    write_report(out, data_root, results, command)
    return 130 if interrupted else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors, exit code 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python benchmarks/accuracy.py" + (" " + shlex.join(argv) if argv else "")
    args = parse_args(argv)
    try:
        return run(args, command)
    except PespotError as err:
        print(f"accuracy: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
