"""Accuracy benchmark: the paper's model, its leave-one-out ablations and E2E-Spot, several seeds each, from scratch.

    python benchmarks/accuracy.py [--data DIR] [--out DIR] [--rows NAME ...] [--seeds 0 1 2] [--steps N]
                                  [--epochs E] [--jobs J] [--threads T] [--device D] [--set KEY=VALUE ...]
                                  [--report-only]

1. The synthetic ``bench`` dataset (docs/synthetic.md: 200/40/60 videos of ~520 frames, 64x64, six classes, the
   rare ``net`` and the long-range pair ``line_in``/``line_out``) is generated into ``--data`` unless there.
2. Every row is the ``synthetic`` preset (the from-scratch CPU recipe: docs/results/recipe.md) with the row's
   keys, trained with every seed of ``--seeds`` for the same budget (``budget.json``: steps, epochs, batch, clip
   length, extra ``--set`` keys). A (row, seed) *cell* trains into ``<out>/<row>/seed<S>/run``; its validation
   mAP is computed after every epoch on the first ``VAL_VIDEOS`` validation videos (the learning curve, and
   E2E-Spot's model selection); the selected checkpoint then spots the test split (half-overlap windows,
   the run's candidate rule and NMS) and ``result.json`` is written. A finished cell is skipped, an unfinished
   one resumed from its last checkpoint, so the benchmark can be stopped and started again at any time.
3. ``--jobs J`` trains J cells at once, each in its own process with ``--threads`` torch threads (one thread per
   process is the most work per second on a small CPU; on a GPU J processes share the device).
4. Every invocation ends by gathering the finished cells into ``docs/results/accuracy.md`` / ``.json`` and
   ``accuracy_curves.png``: per row the mean +- sd over seeds of the test mAP and of the AP of the rarest class
   and the long-range pair, the learning curves, and the verdict on each of the paper's claims (``CLAIMS``).

A claim "reproduces" only when the mean gap is larger than the sum of the two rows' standard deviations; the
opposite gap as large "is contradicted"; anything in between is "no difference beyond the spread".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, versions

from pespot.config import Config, load_config, to_dict
from pespot.data.labels import Event, Video, load_dataset, load_split, save_split
from pespot.errors import DataError, PespotError
from pespot.fsutil import write_json_atomic, write_text_atomic
from pespot.metrics import MapResult, compute_map

ROOT = Path(__file__).resolve().parents[1]
TOLERANCES = (0, 1, 2, 4)
CLASS_TOLERANCE = 4  # tolerance of the per-class columns (the rare class and the pair: found and named?)
CURVE_TOLERANCE = 2  # the learning curves and the headline use mAP at this tolerance
VAL_VIDEOS = 10  # validation mAP (learning curve, model selection) on the first this-many val videos (small: all)
DATA_SEED = 0  # the dataset is always generated with seed 0; --seeds are training seeds


@dataclass(frozen=True)
class Row:
    """One trained configuration: the config keys that define it, on top of the shared recipe and budget."""

    name: str
    summary: str
    keys: dict[str, Any]
    paper_row: str  # the closest row of the paper's Table 3 (SoccerNet-v2 test, tight / loose avg-mAP)


# The paper's method (Santra et al. 2025) and E2E-Spot (Hong et al. 2022), as configs/paper.yaml and
# configs/e2e-spot.yaml define them (tests/test_accuracy_bench.py checks that they still agree).
PAPER_KEYS: dict[str, Any] = {
    "model.temporal_module": "astrm", "model.temporal_head": "bigru", "loss.classification": "bce",
    "loss.contrastive": "softic", "loss.softic_weight": 0.001, "optim.sam": "asam", "optim.rho": None,
    "optim.scheduler": "warmup_cosine", "data.mixup_alpha": 0.1,
    # Gt as the paper starts and trains it (PyTorch's default init, the one learning rate); the synthetic preset
    # starts it at the identity and at 0.1x the learning rate since 2026-12-03 (row recipe-gt-center-lr-0.1)
    "model.astrm.gt_center_init": False, "optim.gt_lr_scale": 1.0,
}
# The first from-scratch recipe (before the small-cue world, docs/results/recipe.md): what the synthetic preset
# set then for the keys it has changed since. Rows measured with it keep it, so their definitions stay what their
# results were trained with.
FIRST_RECIPE_KEYS: dict[str, Any] = {
    "model.input": "rgb", "data.dilate_len": 0, "data.fg_upsample": 0.5, "optim.lr": 0.001, "model.dropout": 0.5,
    "data.mixup": True, "data.blur_max_sigma": 2.0,
}
# E2E-Spot's own training recipe where it has one (RGB frames, no dilation on Tennis, lr 0.001, dropout 0.5, mixup
# 0.2), with the from-scratch necessities every row shares (the first recipe's foreground sampling and blur):
# the same row as before the recipe changed, so its earlier results on the first world still hold.
E2E_SPOT_KEYS: dict[str, Any] = {
    **FIRST_RECIPE_KEYS,
    "model.temporal_module": "gsm", "model.temporal_head": "bigru", "loss.classification": "ce",
    "loss.fg_weight": 5.0, "loss.contrastive": "none", "optim.sam": "none", "optim.scheduler": "e2e_chained",
    "data.mixup_alpha": 0.2, "model.astrm.gt_center_init": False, "optim.gt_lr_scale": 1.0,  # no Gt in GSM: inert
}

ROWS: list[Row] = [
    Row("e2e-spot", "E2E-Spot: GSM + Bi-GRU, CE (fg weight 5), plain AdamW, chained schedule, mixup 0.2",
        E2E_SPOT_KEYS, "Baseline: E2E-Spot (RegNet-Y 200MF + GSM): 61.19 / 73.25"),
    Row("paper", "the paper: ASTRM + Bi-GRU, BCE + SoftIC, ASAM (rho 2; in the last quarter of the steps, "
        "the recipe's optim.sam_start), mixup 0.1",
        PAPER_KEYS, "ASTRM + ASAM + SoftIC loss: 73.74 / 79.11"),
    Row("paper-gsm", "paper with GSM instead of ASTRM",
        {**PAPER_KEYS, "model.temporal_module": "gsm"}, "none (Table 3 swaps GSM for ASTRM only in the baseline)"),
    Row("paper-no-softic", "paper without the SoftIC term (BCE only)",
        {**PAPER_KEYS, "loss.contrastive": "none"}, "ASTRM + ASAM: 72.65 / 78.58"),
    Row("paper-no-asam", "paper with plain AdamW (no ASAM): the from-scratch recipe of the demo until 2026-12-03 "
        "(Gt started and trained as the paper's)",
        {**PAPER_KEYS, "optim.sam": "none"}, "ASTRM + SoftIC, no ASAM: not in Table 3"),
    Row("paper-sam", "paper with SAM (rho 0.05, SAM's own scale) instead of ASAM",
        {**PAPER_KEYS, "optim.sam": "sam"}, "ASTRM + SAM (without SoftIC): 71.89 / 77.50"),
    Row("paper-focal", "paper with focal loss instead of BCE, no SoftIC (not in the default set)",
        {**PAPER_KEYS, "loss.classification": "focal", "loss.contrastive": "none"},
        "ASTRM + ASAM + Focal Loss: 70.36 / 76.86"),
]
# The from-scratch recipe's own rows (``--suite recipe``): the recipe is the synthetic preset as it is, i.e. the
# paper's model with plain AdamW = the row ``paper-no-asam``; each row below undoes one of its choices. The row
# ``paper`` (ASAM in the last quarter) doubles as "the recipe with late ASAM".
FIRST = {**PAPER_KEYS, **FIRST_RECIPE_KEYS, "optim.sam": "none"}  # the first recipe (as paper-no-asam was then)
RECIPE_ROWS: list[Row] = [
    Row("recipe-no-fg-upsample", "the first recipe without foreground clip sampling",
        {**FIRST, "data.fg_upsample": None}, "–"),
    Row("recipe-zero-residual", "the first recipe with timm's zero-initialised residual branches",
        {**FIRST, "model.residual_init": "zero"}, "–"),
    Row("recipe-no-prior-bias", "the first recipe with the classifier bias at 0 instead of the class prior",
        {**FIRST, "model.prior_bias": False}, "–"),
    Row("recipe-asam-from-start", "the first recipe with ASAM (rho 2) from the first step, as the paper",
        {**FIRST, "optim.sam": "asam", "optim.sam_start": 0.0}, "–"),
    Row("recipe-v1", "the first recipe (RGB, no dilation, foreground clips 0.5, lr 0.001, dropout 0.5, mixup, "
        "blur up to 2 px), as before the small-cue world", FIRST, "–"),
]
ROWS += RECIPE_ROWS
# The paper's claims tested within the recipe (plain AdamW): ASTRM vs GSM, SoftIC or not.
RECIPE_CLAIM_ROWS: list[Row] = [
    Row("recipe-gsm", "the recipe with GSM (E2E-Spot's temporal shift) instead of ASTRM",
        {**PAPER_KEYS, "optim.sam": "none", "model.temporal_module": "gsm"}, "–"),
    Row("recipe-no-softic", "the recipe without the SoftIC term (BCE only)",
        {**PAPER_KEYS, "optim.sam": "none", "loss.contrastive": "none"}, "ASTRM + ASAM: 72.65 / 78.58 (with ASAM)"),
]
ROWS += RECIPE_CLAIM_ROWS
# The small-cue recipe (the synthetic preset now) with one of its six keys set back to the first recipe's value
# (``--suite small-cue``), and E2E-Spot's model and loss trained with that recipe instead of its own.
# the recipe until 2026-12-03: the preset's own keys, Gt as the paper's (PAPER_KEYS); the preset now is the row
# recipe-gt-center-lr-0.1
NOW = {**PAPER_KEYS, "optim.sam": "none"}
SMALL_CUE_KEYS = {"rgb": "model.input", "no-dilation": "data.dilate_len", "fg-half": "data.fg_upsample",
                  "lr-0.001": "optim.lr", "dropout-0.5": "model.dropout", "mixup": "data.mixup"}
SMALL_CUE_ROWS: list[Row] = [
    Row(f"recipe-{tag}", f"the recipe with {key} {FIRST_RECIPE_KEYS[key]!r} (the first recipe's) instead of its own",
        {**NOW, key: FIRST_RECIPE_KEYS[key]}, "–") for tag, key in SMALL_CUE_KEYS.items()
] + [
    Row("e2e-spot-recipe", "E2E-Spot's model and loss (GSM, CE fg weight 5, no SoftIC, chained schedule) trained "
        "with the small-cue recipe's six keys instead of its own", {
            **{k: v for k, v in E2E_SPOT_KEYS.items() if k not in FIRST_RECIPE_KEYS}, "optim.sam": "none"}, "–"),
]
ROWS += SMALL_CUE_ROWS
# ASTRM with one of its three branches switched off (``--suite astrm``), within the recipe: which of Fs, Ft, Gt
# makes ASTRM learn slower than GSM from scratch on the small-cue world (docs/results/recipe.md).
ASTRM_BRANCHES = {"fs": "Fs (local spatial attention)", "ft": "Ft (local temporal attention)",
                  "gt": "Gt (the adaptive temporal kernel; no temporal convolution)"}
ASTRM_ROWS: list[Row] = [
    Row(f"recipe-no-{b}", f"the recipe with ASTRM's {text} switched off", {**NOW, f"model.astrm.use_{b}": False},
        "–") for b, text in ASTRM_BRANCHES.items()
] + [
    Row("recipe-gt-tam-init", "the recipe with Gt's FCs initialised as mmaction2's TAM (N(0, 0.001): equal taps, "
        "the same for every clip) instead of PyTorch's default", {**NOW, "model.astrm.gt_init": "tam"}, "–"),
] + [
    Row(f"recipe-gt-lr-{scale}", f"the recipe with Gt's FCs and BatchNorm at {scale} x the learning rate "
        f"(optim.gt_lr_scale {scale}; the architecture unchanged)", {**NOW, "optim.gt_lr_scale": scale}, "–")
    for scale in (0.1, 0.01)
] + [
    Row("recipe-gt-center-lr-0.1", "the recipe with Gt started at the identity (model.astrm.gt_center_init) and "
        "learning at 0.1 x the learning rate (optim.gt_lr_scale 0.1): the synthetic preset since 2026-12-03",
        {**NOW, "model.astrm.gt_center_init": True, "optim.gt_lr_scale": 0.1}, "–"),
]
ROWS += ASTRM_ROWS
ROW_NAMES = [r.name for r in ROWS]
DEFAULT_ROWS = ["e2e-spot", "paper", "paper-gsm", "paper-no-softic", "paper-no-asam", "paper-sam"]


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims as a comparison of two rows on one measure (higher is better)."""

    name: str
    text: str
    better: str  # the row the paper says is better
    worse: str
    measure: str  # "map" (test mAP at CURVE_TOLERANCE) | "pair" (mean AP of the pair) | "rarest" (AP of the rarest)


CLAIMS = [
    Claim("long-range", "ASTRM captures long-range context better than GSM (the classes decided 25-40 frames "
          "after their frame)", "paper", "paper-gsm", "pair"),
    Claim("rare-class", "SoftIC helps the rarest class", "paper", "paper-no-softic", "rarest"),
    Claim("generalisation", "ASAM improves generalisation (test mAP)", "paper", "paper-no-asam", "map"),
    Claim("generalisation-end", "ASAM improves generalisation, models at the end of training (ASAM's steps "
          "included whatever validation selects)", "paper", "paper-no-asam", "map_last"),
    Claim("asam-vs-sam", "ASAM is better than SAM", "paper", "paper-sam", "map"),
    Claim("asam-vs-sam-end", "ASAM is better than SAM, models at the end of training", "paper", "paper-sam",
          "map_last"),
    Claim("overall", "the paper's model beats E2E-Spot", "paper", "e2e-spot", "map"),
]


RECIPE_CLAIMS = [
    Claim("fg-upsample", "foreground clip sampling (data.fg_upsample) speeds learning up", "paper-no-asam",
          "recipe-no-fg-upsample", "map"),
    Claim("live-residual", "live residual branches (model.residual_init=live) beat timm's zero init from scratch",
          "paper-no-asam", "recipe-zero-residual", "map"),
    Claim("prior-bias", "the classifier bias at the class prior (model.prior_bias) helps", "paper-no-asam",
          "recipe-no-prior-bias", "map"),
    Claim("no-asam-vs-late", "plain AdamW beats ASAM in the last quarter of the steps (optim.sam none vs "
          "optim.sam_start 0.75) at this budget", "paper-no-asam", "paper", "map"),
    Claim("no-asam-vs-start", "plain AdamW beats ASAM from the first step (the paper's optimiser) at this budget",
          "paper-no-asam", "recipe-asam-from-start", "map"),
]


COURT_CLAIMS = [
    Claim("long-range", "ASTRM captures long-range context better than GSM (winner: decided 25-40 frames after its "
          "bounce)", "paper-no-asam", "recipe-gsm", "pair"),
    Claim("rare-class", "SoftIC helps the rarest class", "paper-no-asam", "recipe-no-softic", "rarest"),
    Claim("overall", "the paper's model (trained with the recipe) beats E2E-Spot", "paper-no-asam", "e2e-spot",
          "map"),
]


SMALL_CUE_CLAIMS = [
    Claim(tag, f"the recipe's {key} helps", "paper-no-asam", f"recipe-{tag}", "map")
    for tag, key in SMALL_CUE_KEYS.items()
] + [Claim("overall-recipe", "the paper's model beats E2E-Spot, both trained with the recipe", "paper-no-asam",
           "e2e-spot-recipe", "map")]


ASTRM_CLAIMS = [
    Claim(f"{b}-helps", f"ASTRM's {text.split(' (')[0]} helps (the recipe with it beats the recipe without it)",
          "paper-no-asam", f"recipe-no-{b}", "map")
    for b, text in ASTRM_BRANCHES.items()
] + [Claim(f"gsm-vs-no-{b}", f"GSM stays ahead of ASTRM with {text.split(' (')[0]} switched off", "recipe-gsm",
           f"recipe-no-{b}", "map") for b, text in ASTRM_BRANCHES.items()] + [
    Claim("gt-tam-init", "Gt's FCs at TAM's initialisation (model.astrm.gt_init tam) help", "recipe-gt-tam-init",
          "paper-no-asam", "map")] + [
    Claim(f"gt-lr-{scale}", f"Gt at {scale} x the learning rate (optim.gt_lr_scale {scale}) helps",
          f"recipe-gt-lr-{scale}", "paper-no-asam", "map") for scale in (0.1, 0.01)] + [
    Claim("gt-center-lr-0.1", "Gt started at the identity and at 0.1 x the learning rate helps",
          "recipe-gt-center-lr-0.1", "paper-no-asam", "map")]


@dataclass(frozen=True)
class Suite:
    """A set of rows, the claims they test and where their report goes."""

    name: str
    title: str
    rows: list[str]
    claims: list[Claim]
    report: str  # file stem under --results
    preset: str  # synthetic preset of a generated dataset
    fmt: str = "mp4"  # its frame store (the demo's small preset: JPEG, as `pespot demo` writes it)
    world: str = "rally-side"  # synthetic world of a generated dataset


# Both suites train on the demo's world (synthetic `small`, JPEG, seed 0) with the demo's budget, into one --out,
# so the rows they share (paper, paper-no-asam) are trained once.
SUITES = {
    "paper": Suite("paper", "the paper's model, its ablations and E2E-Spot", DEFAULT_ROWS, CLAIMS, "accuracy",
                   "small", "jpg"),
    "recipe": Suite("recipe", "the from-scratch recipe, one of its choices undone at a time",
                    ["paper-no-asam"] + [r.name for r in RECIPE_ROWS] + ["paper"], RECIPE_CLAIMS, "recipe_rows",
                    "small", "jpg"),
    # The small-cue world (docs/synthetic.md, court-top): the recipe, E2E-Spot and the paper's two claims that
    # this world's long-range and rare classes test, within the recipe.
    "court": Suite("court", "the recipe, E2E-Spot and the paper's claims on the small-cue world",
                   ["paper-no-asam", "e2e-spot", "recipe-gsm", "recipe-no-softic"], COURT_CLAIMS, "court",
                   "small", "mp4", "court-top"),
    # The small-cue recipe's keys, one undone at a time, and E2E-Spot trained with it, on the small-cue world.
    "small-cue": Suite("small-cue", "the small-cue recipe, one of its keys undone at a time, and E2E-Spot with it",
                       ["paper-no-asam"] + [r.name for r in SMALL_CUE_ROWS], SMALL_CUE_CLAIMS, "small_cue_rows",
                       "small", "mp4", "court-top"),
    # ASTRM's branches, one switched off at a time, beside ASTRM and GSM, on the small-cue world.
    "astrm": Suite("astrm", "ASTRM's branches, one switched off at a time, on the small-cue world",
                   ["paper-no-asam", "recipe-gsm"] + [r.name for r in ASTRM_ROWS], ASTRM_CLAIMS, "astrm_rows",
                   "small", "mp4", "court-top"),
}


def get_row(name: str) -> Row:
    """The row called ``name``; a PespotError lists the known rows."""
    for row in ROWS:
        if row.name == name:
            return row
    raise PespotError(f"unknown row '{name}' (known: {', '.join(ROW_NAMES)})")


# --------------------------------------------------------------------------------------------------------------
# the budget


@dataclass
class Budget:
    """What every cell shares."""

    steps: int
    epochs: int = 8
    preset: str = "bench"
    overrides: list[str] = field(default_factory=list)  # extra --set keys applied to every row

    @property
    def steps_per_epoch(self) -> int:
        return self.steps // self.epochs

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "steps_per_epoch": self.steps_per_epoch}


def load_budget(path: Path) -> Budget:
    """A ``budget.json`` back as a Budget."""
    try:
        data = json.loads(path.read_text())
        return Budget(steps=int(data["steps"]), epochs=int(data["epochs"]), preset=str(data["preset"]),
                      overrides=list(data["overrides"]))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise DataError(f"{path}: not a readable budget file ({err})") from None


def resolve_budget(args: argparse.Namespace, out: Path) -> Budget:
    """``<out>/budget.json`` when it agrees with the arguments (or they give none), else a new one; a budget
    under which a cell has started is never replaced."""
    path = out / "budget.json"
    saved = load_budget(path) if path.is_file() else None
    wanted = Budget(steps=args.steps or (saved.steps if saved else 480), epochs=args.epochs or
                    (saved.epochs if saved else 8), preset=args.preset,
                    overrides=list(args.set) if args.set is not None else (saved.overrides if saved else []))
    if wanted.steps % wanted.epochs:
        raise PespotError(f"--steps {wanted.steps}: expected a multiple of --epochs {wanted.epochs}")
    if saved is not None and saved.to_json() != wanted.to_json():
        started = sorted(str(p.parent.relative_to(out)) for p in out.glob("*/seed*/run"))
        if started:
            raise PespotError(f"{path}: cells here ({', '.join(started[:3])}...) were trained with "
                              f"{saved.to_json()}, not {wanted.to_json()}; rerun with the same settings or use "
                              "another --out")
    write_json_atomic(path, wanted.to_json())
    return wanted


# --------------------------------------------------------------------------------------------------------------
# one cell (row, seed)


def row_config(row: Row, budget: Budget, data_root: Path, run_dir: Path, seed: int, threads: int | None = None,
               device: str = "auto") -> Config:
    """The ``synthetic`` preset + the row's keys + the shared budget (+ the budget's extra ``--set`` keys)."""
    spe = budget.steps_per_epoch
    keys = [f"{k}={'null' if v is None else v}" for k, v in row.keys.items()]
    cfg0 = load_config("synthetic", [f"data.root={data_root}"] + keys + list(budget.overrides))
    shared = [
        f"data.root={data_root}", f"out={run_dir}", f"train.device={device}", f"train.seed={seed}",
        f"train.epochs={budget.epochs}", f"train.clips_per_epoch={spe * cfg0.train.batch_size}",
        "train.start_val_epoch=0", "train.criterion=map", f"train.val_videos={VAL_VIDEOS}",
        f"train.save_every_steps={max(1, spe // 2)}",
    ]
    if threads:
        shared += [f"train.threads={threads}", "data.num_workers=0" if threads == 1 else "data.num_workers=1"]
    cfg = load_config("synthetic", keys + shared + list(budget.overrides))
    cfg.name = f"accuracy-{row.name}-seed{seed}"
    return cfg


def infer_test(run_dir: Path, data_root: Path, device: str, checkpoint: str | None = None
               ) -> tuple[list[Video], dict]:
    """Spot the test split with the run's selected checkpoint (or ``checkpoints/<checkpoint>``) and its own
    candidate rule; (predictions, timing)."""
    from pespot.infer import find_checkpoint, load_predictor, predict_videos

    ckpt = find_checkpoint(run_dir) if checkpoint is None else run_dir / "checkpoints" / checkpoint
    predictor = load_predictor(ckpt, device=device)
    truth = load_split(data_root / "test.json", predictor.classes)
    start = time.perf_counter()
    preds = predict_videos(predictor, truth, data_root / "frames")
    ev = predictor.cfg.eval
    return [p.to_video() for p in preds], {
        "checkpoint": str(ckpt), "seconds": round(time.perf_counter() - start, 1),
        "frames": sum(v.num_frames for v in truth), "overlap": ev.overlap, "threshold": ev.threshold,
        "top_k": ev.top_k, "nms": ev.nms, "nms_window": ev.nms_window}


def test_last(result: dict, run_dir: Path, data_root: Path, device: str = "cpu") -> dict:
    """The test metrics of the model at the end of training (``last.pt``): the same as the selected checkpoint's
    when validation chose the last epoch. For rows whose optimiser changes late (ASAM in the last quarter), the
    selected checkpoint may predate the change; the last one never does."""
    if result["train"]["best_epoch"] == result["budget"]["epochs"]:
        return result["test"]
    preds, _ = infer_test(run_dir, data_root, device, checkpoint="last.pt")
    truth = load_split(data_root / "test.json", load_dataset(data_root).classes)
    return compute_map(truth, preds, load_dataset(data_root).classes, TOLERANCES).to_json()


def backfill_test_last(out: Path, data_root: Path) -> None:
    """Add ``test_last`` to finished cells written before it existed."""
    for path in sorted(out.glob("*/seed*/result.json")):
        result = json.loads(path.read_text())
        if "test_last" not in result:
            result["test_last"] = test_last(result, path.parent / "run", data_root)
            write_json_atomic(path, result)


def learning_curve(run_dir: Path) -> list[list[float]]:
    """[(step, val mAP@CURVE_TOLERANCE), ...] from ``metrics.jsonl``."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [[r["step"], r["val_map"][str(CURVE_TOLERANCE)]] for r in records if "val_map" in r]


def run_cell(row: Row, seed: int, budget: Budget, data_root: Path, out: Path, *, threads: int | None,
             device: str, progress: bool, command: str) -> dict | None:
    """Train, infer and score one cell; returns its result (None when training was interrupted)."""
    from pespot.train.trainer import train

    cell = out / row.name / f"seed{seed}"
    result_path = cell / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    run_dir = cell / "run"
    cfg = row_config(row, budget, data_root, run_dir, seed, threads, device)
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    print(f"[{row.name} seed {seed}] {'resume' if resume else 'train'}: {budget.epochs} epochs x "
          f"{budget.steps_per_epoch} steps -> {run_dir}", flush=True)
    start = time.perf_counter()
    summary = train(cfg, resume=run_dir if resume else None, progress=progress)
    train_wall = time.perf_counter() - start
    if summary["stopped"] or summary["epochs_completed"] < budget.epochs:
        print(f"[{row.name} seed {seed}] stopped after {summary['steps']} steps; rerun to resume", flush=True)
        return None
    preds, inference = infer_test(run_dir, data_root, device)
    save_split(preds, cell / "predictions_test.json")
    dataset = load_dataset(data_root)
    truth = load_split(data_root / "test.json", dataset.classes)
    res = compute_map(truth, preds, dataset.classes, TOLERANCES)
    result = {
        "row": row.name, "seed": seed, "status": "finished", "budget": budget.to_json(), "config": to_dict(cfg),
        "train": {"steps": summary["steps"], "best_epoch": summary["best_epoch"],
                  "best_val_selection_map": summary["best_score"], "resumed": resume,
                  "epoch_seconds": round(epoch_seconds(run_dir), 1), "wall_seconds_last_invocation":
                  round(train_wall, 1)},
        "curve": learning_curve(run_dir), "inference": inference, "test": res.to_json(),
        "command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "versions": versions(),
    }
    result["test_last"] = test_last(result, run_dir, data_root, device)
    write_json_atomic(result_path, result)
    print(f"[{row.name} seed {seed}] test mAP " + ", ".join(f"δ={t}: {100 * res.mAP[t]:.1f}" for t in TOLERANCES),
          flush=True)
    return result


def epoch_seconds(run_dir: Path) -> float:
    """Sum of the epoch times in ``metrics.jsonl`` (training + validation, across resumes)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0.0
    return float(sum(json.loads(line).get("seconds", 0.0) for line in path.read_text().splitlines() if line))


# --------------------------------------------------------------------------------------------------------------
# dataset and computed references


def ensure_dataset(data_root: Path, preset: str, fmt: str = "mp4", world: str = "rally-side") -> Any:
    """Generate the synthetic ``world``'s ``preset`` (``fmt`` frame store) into ``data_root`` unless it is there;
    any other dataset with frames (a world made elsewhere, a real one) is used as it is."""
    from pespot.data.synthetic import generate

    info_path = data_root / "synth.json"
    if (data_root / "test.json").is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        made = info.get("world", "rally-side")
        if info.get("preset") != preset or info.get("format") is None or made != world:
            raise DataError(f"{info_path}: holds the synthetic {made} '{info.get('preset')}' dataset "
                            f"(format {info.get('format')}), expected {world} '{preset}' with frames")
    elif not (data_root / "test.json").is_file():
        print(f"generating the synthetic {world} '{preset}' dataset into {data_root} ...", flush=True)
        generate(data_root, preset=preset, seed=DATA_SEED, fmt=fmt, world=world)
    return load_dataset(data_root)


def dataset_command(data_root: Path) -> str | None:
    """The command that makes the synthetic dataset in ``data_root`` again, from its ``synth.json`` (preset, seed,
    world, frame store): ``pespot synth`` for a preset of the world, ``benchmarks/heldout_world.py`` for a held-out
    world; None for a dataset not made by pespot's generator."""
    from heldout_world import WORLDS as HELDOUT_WORLDS

    from pespot.data.synthetic import get_world

    info_path = data_root / "synth.json"
    if not info_path.is_file():
        return None
    info = json.loads(info_path.read_text())
    world, preset = info.get("world", "rally-side"), info.get("preset")
    for key, (heldout, seed, _) in HELDOUT_WORLDS.items():
        if preset == heldout.name and info.get("seed") == seed:
            return f"python benchmarks/heldout_world.py {data_root} --world {key}"
    if preset in get_world(world).PRESETS:
        return (f"pespot synth {data_root} --world {world} --preset {preset} --format {info.get('format')} "
                f"--seed {info.get('seed')}")
    return None


def long_range_pair(data_root: Path) -> tuple[str, ...]:
    """The classes decided only long after their frame, as the dataset's ``synth.json`` names them (rally-side:
    line_in/line_out, court-top: winner); none for a dataset without one."""
    path = data_root / "synth.json"
    if not path.is_file():
        return ()
    info = json.loads(path.read_text())
    return tuple(info.get("long_range_pair") or info.get("long_range") or ())


def rarest_class(dataset: Any) -> str:
    """The class with the fewest events over all splits (``net`` on ``bench``)."""
    counts: dict[str, int] = {c: 0 for c in dataset.classes}
    for videos in dataset.splits.values():
        for v in videos:
            for e in v.events:
                counts[e.label] += 1
    return min((c for c in dataset.classes if counts[c]), key=lambda c: counts[c])


def coin_flip_reference(truth: list[Video], classes: list[str], pair: tuple[str, ...], seed: int = 0) -> MapResult:
    """Exact frames and classes, except that the pair is told apart by a coin: chance level for the pair."""
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
    freq = compute_map(truth, frequency_baseline(dataset.splits["train"], truth, classes), classes, TOLERANCES)
    refs = {"frequency_baseline": {"summary": "every test frame, every class, scored by its share of training "
                                              "frames", "test": freq.to_json()}}
    pair = long_range_pair(data_root)
    if len(pair) == 2:  # two classes that only the long-range cue tells apart
        coin = coin_flip_reference(truth, classes, pair)
        refs["coin_flip_pair"] = {"summary": f"exact frames and classes, {pair[0]}/{pair[1]} by a coin flip",
                                  "test": coin.to_json()}
    return refs


# --------------------------------------------------------------------------------------------------------------
# the report


def measures(test: dict, rarest: str, pair: tuple[str, ...]) -> dict[str, float]:
    """The numbers a cell is summarised by (fractions): mAP per tolerance, the rarest class, the pair."""
    per_class = test["per_class"]

    def ap(c: str) -> float:
        return float(per_class[c][str(CLASS_TOLERANCE)]) if c in per_class else float("nan")

    out = {f"map{t}": float(test["mAP"][str(t)]) for t in TOLERANCES}
    out["map"] = out[f"map{CURVE_TOLERANCE}"]
    out["rarest"] = ap(rarest)
    out.update({c: ap(c) for c in pair})
    out["pair"] = float(np.mean([ap(c) for c in pair]))
    return out


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (sd 0 for a single value)."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def verdict(better: list[float], worse: list[float]) -> tuple[str, float, float]:
    """(verdict, mean gap, spread): the gap counts only beyond the sum of the two rows' standard deviations."""
    (mb, sb), (mw, sw) = mean_sd(better), mean_sd(worse)
    gap, spread = mb - mw, sb + sw
    if min(len(better), len(worse)) < 2 or math.isnan(gap):
        return "not enough seeds", gap, spread
    if gap > spread:
        return "reproduces", gap, spread
    if gap < -spread:
        return "contradicted", gap, spread
    return "no difference beyond the spread", gap, spread


def collect(out: Path, rows: list[str], seeds: list[int], rarest: str, pair: tuple[str, ...]) -> dict[str, dict]:
    """Per row: the finished cells, their measures and curves, and mean/sd of every measure."""
    report: dict[str, dict] = {}
    for name in rows:
        cells = {}
        for seed in seeds:
            path = out / name / f"seed{seed}" / "result.json"
            if path.is_file():
                cells[seed] = json.loads(path.read_text())
        per_seed = {s: measures(c["test"], rarest, pair) for s, c in cells.items()}
        for s, c in cells.items():  # the model at the end of training, "_last"
            if "test_last" in c:
                per_seed[s].update({f"{k}_last": v for k, v in measures(c["test_last"], rarest, pair).items()})
        keys = set.intersection(*(set(m) for m in per_seed.values())) if per_seed else set()
        summary = {k: mean_sd([m[k] for m in per_seed.values()]) for k in keys}
        report[name] = {"row": asdict(get_row(name)), "seeds": sorted(cells), "measures": per_seed,
                        "summary": summary, "curves": {s: c["curve"] for s, c in cells.items()},
                        "train_minutes": {s: round(c["train"]["epoch_seconds"] / 60, 1) for s, c in cells.items()},
                        "test_minutes": {s: round(c["inference"]["seconds"] / 60, 1) for s, c in cells.items()}}
    return report


def claim_verdicts(rows: dict[str, dict], claims: list[Claim]) -> list[dict]:
    """Each of ``claims`` whose two rows have results."""
    out = []
    for claim in claims:
        if not (rows.get(claim.better, {}).get("seeds") and rows.get(claim.worse, {}).get("seeds")):
            continue
        b = [m[claim.measure] for m in rows[claim.better]["measures"].values()]
        w = [m[claim.measure] for m in rows[claim.worse]["measures"].values()]
        text, gap, spread = verdict(b, w)
        out.append({**asdict(claim), "verdict": text, "gap": gap, "spread": spread,
                    "better_mean_sd": mean_sd(b), "worse_mean_sd": mean_sd(w), "seeds": [len(b), len(w)]})
    return out


def _pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f}"


def _pm(ms: tuple[float, float]) -> str:
    m, s = ms
    return "–" if math.isnan(m) else f"{100 * m:.1f} ± {100 * s:.1f}"


MEASURE_NAMES = {"map": f"test mAP@{CURVE_TOLERANCE}",
                 "pair": f"mean AP of the long-range classes at δ={CLASS_TOLERANCE}",
                 "rarest": f"AP of the rarest class at δ={CLASS_TOLERANCE}",
                 "map_last": f"test mAP@{CURVE_TOLERANCE} of last.pt"}


def write_report(out: Path, data_root: Path, results: Path, rows: list[str], seeds: list[int],
                 command: str, suite: Suite | None = None) -> dict:
    """``<results>/<report>.md``, ``.json`` and ``<report>_curves.png`` from the finished cells (``<report>``:
    ``accuracy`` for the paper suite, ``recipe_rows`` for the recipe suite)."""
    suite = suite or SUITES["paper"]
    stem = suite.report
    from pespot.data.synthetic import dataset_summary
    from pespot.viz import plot_learning_curves

    budget_path = out / "budget.json"
    budget = load_budget(budget_path) if budget_path.is_file() else None
    dataset = load_dataset(data_root) if (data_root / "test.json").is_file() else None
    rarest, pair = (rarest_class(dataset) if dataset else "net"), long_range_pair(data_root)
    if dataset is not None:
        backfill_test_last(out, data_root)
    table = collect(out, rows, seeds, rarest, pair)
    claims = claim_verdicts(table, suite.claims)
    cfg = row_config(get_row("paper"), budget, data_root, Path("run"), 0) if budget else None
    report = {"suite": suite.name, "title": suite.title, "command": command, "date": time.strftime("%Y-%m-%d %H:%M"),
              "out": str(out), "data": str(data_root),
              "budget": budget.to_json() if budget else None, "seeds": seeds, "rarest_class": rarest,
              "long_range_pair": list(pair), "rows": table, "claims": claims,
              "references": references(data_root),
              "dataset": dataset_summary(data_root) if dataset else None,
              "dataset_command": dataset_command(data_root) if dataset else None,
              "paper_row_config": to_dict(cfg) if cfg else None, "machine": machine(), "versions": versions()}
    results.mkdir(parents=True, exist_ok=True)
    write_json_atomic(results / f"{stem}.json", report)
    curves = {name: list(r["curves"].values()) for name, r in table.items() if r["curves"]}
    if curves:
        plot_learning_curves(curves, results / f"{stem}_curves.png",
                             title=f"validation mAP@{CURVE_TOLERANCE} (first {VAL_VIDEOS} val videos), mean ± sd "
                                   "over seeds", ylabel=f"val mAP@{CURVE_TOLERANCE} (%)")
    write_markdown(report, results / f"{stem}.md", cfg, f"{stem}_curves.png")
    done = sum(len(r["seeds"]) for r in table.values())
    print(f"report: {results / (stem + '.md')} ({done} of {len(rows) * len(seeds)} cells finished)", flush=True)
    return report


def write_markdown(report: dict, path: Path, cfg: Config | None, curves_png: str = "accuracy_curves.png") -> None:
    """The markdown report from the report JSON."""
    rarest, pair, budget = report["rarest_class"], report["long_range_pair"], report["budget"]
    lines = [f"# Accuracy benchmark: {report['title']} on synthetic `{budget['preset'] if budget else '?'}`", "",
             (f"Made by `{report['command']}` ({report['date']}); cells may come from several invocations (each "
             f"cell's command, date and versions are in `{path.with_suffix('.json').name}`)."), ""]
    lines += ["## Results (test split, %, mean ± sd over seeds)", "",
              f"| row | seeds | mAP δ=0 | δ=1 | δ=2 | δ=4 | AP {rarest} δ={CLASS_TOLERANCE} | "
              + " | ".join(f"AP {c} δ={CLASS_TOLERANCE}" for c in pair) + f" | mAP δ={CURVE_TOLERANCE} of last.pt | "
              "train min | test min |",
              "|---|---:|" + "---:|" * (6 + len(pair) + 2)]
    for name, r in report["rows"].items():
        s = r["summary"]
        if not r["seeds"]:
            lines.append(f"| `{name}` | 0 | not run yet |" + " |" * (7 + len(pair)))
            continue
        cells = ([_pm(s[f"map{t}"]) for t in TOLERANCES] + [_pm(s["rarest"])] + [_pm(s[c]) for c in pair]
                 + [_pm(s["map_last"]) if "map_last" in s else "–"])
        train_min = np.mean(list(r["train_minutes"].values()))
        test_min = np.mean(list(r["test_minutes"].values()))
        lines.append(f"| `{name}` | {len(r['seeds'])} | " + " | ".join(cells) + f" | {train_min:.1f} | "
                     f"{test_min:.1f} |")
    if cfg is not None and any(get_row(n).keys.get("optim.sam", "none") != "none" for n in report["rows"]):
        lines += ["", (f"Rows with ASAM or SAM use it in the last {1 - cfg.optim.sam_start:.0%} of the steps "
                       f"(`optim.sam_start {cfg.optim.sam_start:g}`): from the first step it kept the model near "
                       "chance (docs/results/recipe.md). Until then they train exactly as the same seed of "
                       "`paper-no-asam`; when validation selects an earlier epoch, the selected model has seen no "
                       "ASAM/SAM step. The last.pt column and the claims marked \"end of training\" compare the "
                       "models after all their steps.")]
    refs = report.get("references")
    if refs:
        lines += ["", "Computed references (no training; the same test split and metric):", "",
                  "| reference | mAP δ=0 | δ=1 | δ=2 | δ=4 | AP " + rarest + f" δ={CLASS_TOLERANCE} | "
                  + " | ".join(f"AP {c} δ={CLASS_TOLERANCE}" for c in pair) + " |",
                  "|---|" + "---:|" * (5 + len(pair))]
        for ref in refs.values():
            m = measures(ref["test"], rarest, tuple(pair))
            cells = [m[f"map{t}"] for t in TOLERANCES] + [m["rarest"]] + [m[c] for c in pair]
            lines.append(f"| {ref['summary']} | " + " | ".join(_pct(v) for v in cells) + " |")
    lines += ["", (f"Learning curves (validation mAP@{CURVE_TOLERANCE} after every epoch, first {VAL_VIDEOS} val "
              "videos; thin lines: single seeds, band: mean ± sd). Validation scores as E2E-Spot selects models: "
              "windows side by side and no NMS, so every frame near an event is a candidate and the curves read "
              "lower than the test mAP, which uses NMS:"), "", f"![learning curves]({curves_png})",
              ""]
    lines += ["## The claims at this scale" if report["suite"] != "paper" else "## The paper's claims at this scale", ""]
    if report["claims"]:
        lines += ["A gap counts only when it is larger than the sum of the two rows' standard deviations.", "",
                  "| claim | measure | row the claim favours | other row | gap | spread | verdict |",
                  "|---|---|---|---|---:|---:|---|"]
    else:
        lines.append("No claim compares the rows of this report (each claim needs both of its rows).")
    for c in report["claims"]:
        lines.append(f"| {c['text']} | {MEASURE_NAMES[c['measure']]} | `{c['better']}` {_pm(c['better_mean_sd'])} | "
                     f"`{c['worse']}` {_pm(c['worse_mean_sd'])} | {100 * c['gap']:+.1f} | {100 * c['spread']:.1f} "
                     f"| **{c['verdict']}** |")
    lines += ["", "## Rows", "", ("| row | what it is | config keys | closest row of the paper's Table 3 "
              "(SoccerNet-v2 test, tight / loose a-mAP) |"), "|---|---|---|---|"]
    for name, r in report["rows"].items():
        row = get_row(name)
        base = "paper" if name.startswith("paper-") else ("paper-no-asam" if name.startswith("recipe-") else None)
        ref = get_row(base).keys if base else {}
        keys = row.keys if base is None else {k: v for k, v in row.keys.items() if ref.get(k, object()) != v}
        shown = ", ".join(f"`{k}={'null' if v is None else v}`" for k, v in keys.items())
        lines.append(f"| `{name}` | {row.summary} | {f'`{base}` with ' if base else ''}{shown} | {row.paper_row} |")
    lines += ["", "## Budget and recipe (the same for every cell)", ""]
    if budget and cfg:
        lines.append(
            f"{budget['steps']} optimiser steps per cell = {budget['epochs']} epochs x {budget['steps_per_epoch']} "
            f"steps x {cfg.train.batch_size} clips of {cfg.model.clip_len} frames at {cfg.data.height}x"
            f"{cfg.data.height} ({budget['steps'] * cfg.train.batch_size * cfg.model.clip_len:,} training frames), "
            f"random initialisation; seeds {', '.join(str(s) for s in report['seeds'])}. The `synthetic` preset's "
            "from-scratch recipe applies to every row (docs/results/recipe.md): "
            + ", ".join(f"`{k}={v}`" for k, v in recipe_keys(cfg).items())
            + f". Model selection: validation mAP (mean over δ = 1, 2, 4) on the first {VAL_VIDEOS} val videos "
            f"after every epoch; the test split is spotted with windows of overlap {cfg.eval.overlap:g}, "
            f"candidates >= {cfg.eval.threshold:g} and `{cfg.eval.nms}` NMS over {cfg.eval.nms_window} frame. "
            "The threshold was checked against others on a BCE and a CE checkpoint (docs/results/candidates.md: "
            "E2E-Spot's 0.01 cost the BCE model 5.9 points of mAP@2 and the CE model 0.1), so with 0 every row "
            "keeps all its local maxima and the ranking is the scores'.")
        if budget["overrides"]:
            lines += ["", "Extra keys on every row: " + ", ".join(f"`{o}`" for o in budget["overrides"]) + "."]
    ds = report.get("dataset")
    if ds:
        classes = list(ds["all"]["per_class"])
        lines += ["", "## Dataset", "", "| split | videos | frames | " + " | ".join(classes) + " |",
                  "|---|---:|---:|" + "---:|" * len(classes)]
        for split, s in list(ds["splits"].items()) + [("all", ds["all"])]:
            lines.append(f"| {split} | {s['videos']} | {s['frames']:,} | "
                         + " | ".join(str(s["per_class"][c]) for c in classes) + " |")
        if "dataset_command" in report:
            made_by = report["dataset_command"]
        else:  # a report written before the command was recorded: the suite's own preset
            suite = SUITES[report["suite"]]
            made_by = (f"pespot synth {report['data']} --world {suite.world} --preset "
                       f"{budget['preset'] if budget else 'bench'} --format {suite.fmt} --seed {DATA_SEED}")
        lines += ["", (f"`{made_by}`; docs/synthetic.md describes the classes." if made_by
                       else "A dataset not made by pespot's generator (no `synth.json` of a known preset).")]
    m, v = report["machine"], report["versions"]
    lines += ["", "## Machine and versions", "",
              f"{m['cpu']}, {m['cores']} cores" + (f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU")
              + f" ({m['platform']}); torch {v['torch']}, timm {v.get('timm', '?')}, python {v['python']}, pespot "
              f"{v['pespot']} at commit {v['pespot_commit']}. Wall times depend on the machine's load; step counts "
              "and results do not.", ""]
    write_text_atomic(path, "\n".join(lines))


def recipe_keys(cfg: Config) -> dict[str, Any]:
    """The from-scratch recipe's keys that differ from the paper's defaults (shown in the report)."""
    paper = load_config("paper")
    out = {}
    for section, names in {"model": ("pretrained", "residual_init", "prior_bias", "clip_len", "input", "dropout"),
                           "data": ("height", "crop", "fg_upsample", "dilate_len", "mixup", "blur_max_sigma"),
                           "loss": ("bce_fg_weight",), "optim": ("lr", "warmup_epochs", "sam_start"),
                           "train": ("batch_size",)}.items():
        for name in names:
            value = getattr(getattr(cfg, section), name)
            if value != getattr(getattr(paper, section), name):
                out[f"{section}.{name}"] = value
    return out


# --------------------------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="synthetic dataset folder, generated if absent (default data/synth-<preset>)")
    p.add_argument("--out", help="cells' run folders, budget.json, result.json files (default runs/<suite>)")
    p.add_argument("--results", default=str(ROOT / "docs" / "results"), help="where the report goes")
    p.add_argument("--suite", choices=sorted(SUITES), default="paper",
                   help="paper: the paper's rows (accuracy.md); recipe: the from-scratch recipe's rows "
                        "(recipe_rows.md); both share the cells of their common rows")
    p.add_argument("--rows", nargs="+", metavar="NAME",
                   help=f"rows (default: the suite's; paper: {' '.join(DEFAULT_ROWS)}; also paper-focal)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--steps", type=int, help="optimiser steps per cell (default: budget.json's, else the demo's 480)")
    p.add_argument("--epochs", type=int, help="epochs per cell = points of the learning curve (default 8)")
    p.add_argument("--preset", help="synthetic preset of a generated dataset (default: the suite's; tiny for tests)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="extra config keys for every row (recorded)")
    p.add_argument("--jobs", type=int, default=1, help="cells trained at once, one process each (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--report-only", action="store_true", help="only gather finished cells into the report")
    p.add_argument("--cell", help=argparse.SUPPRESS)  # ROW:SEED, run by a --jobs worker
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def run(args: argparse.Namespace, command: str) -> int:
    """Do what the arguments say; returns the exit code."""
    suite = SUITES[args.suite]
    args.rows = args.rows or suite.rows
    args.preset = args.preset or suite.preset
    args.data = args.data or f"data/synth-{args.preset}"
    args.out = args.out or f"runs/accuracy-{args.preset}"
    out, data_root, results = Path(args.out), Path(args.data), Path(args.results)
    for name in args.rows:
        get_row(name)
    if args.report_only:
        write_report(out, data_root, results, args.rows, args.seeds, command, suite)
        return 0
    ensure_dataset(data_root, args.preset, suite.fmt, suite.world)
    budget = resolve_budget(args, out)
    if args.cell:
        import torch

        torch.set_num_threads(args.threads)
        name, seed = args.cell.rsplit(":", 1)
        result = run_cell(get_row(name), int(seed), budget, data_root, out, threads=args.threads,
                          device=args.device, progress=not args.quiet, command=command)
        return 0 if result is not None else 130
    todo = [(r, s) for s in args.seeds for r in args.rows if not (out / r / f"seed{s}" / "result.json").is_file()]
    print(f"{len(todo)} of {len(args.rows) * len(args.seeds)} cells to train, {args.jobs} at a time; budget "
          f"{budget.to_json()}", flush=True)
    failed = run_parallel(todo, args, command)
    write_report(out, data_root, results, args.rows, args.seeds, command, suite)
    return 1 if failed else 0


def run_parallel(todo: list[tuple[str, int]], args: argparse.Namespace, command: str) -> list[str]:
    """Run the cells in worker processes, ``args.jobs`` at a time; returns the cells that failed."""
    base = [sys.executable, str(Path(__file__).resolve()), "--suite", args.suite, "--data", args.data, "--out",
            args.out, "--preset", args.preset, "--threads", str(args.threads), "--device", args.device, "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "ACCURACY_COMMAND": command}
    running: list[tuple[str, subprocess.Popen]] = []
    failed: list[str] = []
    queue = list(todo)
    logs = Path(args.out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # A stop (Ctrl-C, or the SIGTERM of `timeout`) reaches the running cells too: each checkpoints and a rerun
    # resumes it.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    try:
        _run_queue(queue, running, failed, base, env, logs, args.jobs)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for _, proc in running:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in running:
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
    return failed


def _run_queue(queue: list, running: list, failed: list, base: list[str], env: dict, logs: Path, jobs: int) -> None:
    while queue or running:
        while queue and len(running) < max(1, jobs):
            row, seed = queue.pop(0)
            name = f"{row}:{seed}"
            log = open(logs / f"{row}-seed{seed}.log", "a")  # noqa: SIM115 - closed with the process
            proc = subprocess.Popen(base + ["--cell", name], stdout=log, stderr=subprocess.STDOUT, env=env)
            print(f"started {name} (log {log.name})", flush=True)
            running.append((name, proc))
        time.sleep(2)
        for name, proc in list(running):
            if proc.poll() is not None:
                running.remove((name, proc))
                print(f"finished {name} (exit code {proc.returncode})", flush=True)
                if proc.returncode != 0:
                    failed.append(name)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors, exit code 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python benchmarks/accuracy.py" + (" " + shlex.join(argv) if argv else "")
    args = parse_args(argv)
    if args.cell:  # a worker records the command that started the benchmark
        command = os.environ.get("ACCURACY_COMMAND", command)
    try:
        return run(args, command)
    except PespotError as err:
        print(f"accuracy: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
