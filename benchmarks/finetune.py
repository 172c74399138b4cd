"""Fine-tuning from a run on one world against training from scratch on another: how many steps each needs to reach
a given validation mAP (issue 21: ``pespot train --set model.init=RUN``).

    python benchmarks/finetune.py --source data/synth-small --target data/synth-unseen [--seeds 0 1 2]
        [--source-steps 480] [--steps 480] [--epochs 12] [--levels 0.1 0.2 0.3 0.4 0.5] [--jobs 2]
        [--source-run RUN] [--out runs/finetune] [--results docs/results/finetune] [--set KEY=VALUE ...]

For every seed S (each a *cell*, trained in its own process, ``--jobs`` at a time; a finished cell is skipped and an
interrupted one resumed, so the script can be stopped and started again):

1. ``source/seedS``: the ``synthetic`` preset (the from-scratch CPU recipe) trained on ``--source`` for
   ``--source-steps`` steps (skipped with ``--source-run``, which every seed then starts from);
2. ``scratch/seedS``: the same recipe on ``--target`` for ``--steps`` steps from random initialisation;
3. ``finetune/seedS``: the same as 2 with ``model.init`` = the source run (its selected checkpoint); the classifier
   is kept when both worlds have the same classes, re-initialised otherwise.

2 and 3 differ only in their starting weights (same seed, data, schedule and budget). Both compute the validation
mAP (first ``VAL_VIDEOS`` videos of the target's val split) after each of ``--epochs`` epochs: the learning curve.
For each level of ``--levels`` the report gives the steps each needed to first reach that val mAP@``TOLERANCE``
(not reached within the budget: shown as such), per seed and as mean ± sd over the seeds that reached it, and in how
many seeds fine-tuning got there in fewer steps; and the test mAP of each run's selected checkpoint. Results:
``<results>.md`` / ``.json`` (machine, versions, command), like every benchmark here.

A quick end-to-end check on a tiny budget (minutes):

    pespot synth /tmp/ft/a --preset tiny && pespot synth /tmp/ft/b --preset tiny --seed 1
    python benchmarks/finetune.py --source /tmp/ft/a --target /tmp/ft/b --seeds 0 --source-steps 8 --steps 8 --source-epochs 2 \\
        --epochs 2 --out /tmp/ft/runs --results /tmp/ft/finetune --set model.clip_len=16 data.height=32
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, mean_sd, versions, write_results

from pespot.config import load_config, to_dict
from pespot.data.labels import load_dataset, load_split
from pespot.errors import PespotError
from pespot.fsutil import write_json_atomic
from pespot.metrics import compute_map

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 2  # the learning curves and the levels use val mAP at this tolerance (frames)
TOLERANCES = (0, 1, 2, 4)
VAL_VIDEOS = 10  # validation mAP on the first this-many videos of the target's val split


def cell_config(args: argparse.Namespace, kind: str, seed: int, run_dir: Path):
    """The ``synthetic`` preset for one cell: the data, budget and seed; ``model.init`` for fine-tuning."""
    data = args.source if kind == "source" else args.target
    steps = args.source_steps if kind == "source" else args.steps
    epochs = args.source_epochs if kind == "source" else args.epochs
    base = load_config("synthetic", [f"data.root={data}"] + list(args.set or []))
    steps_per_epoch = max(1, steps // epochs)
    keys = [f"data.root={data}", f"out={run_dir}", f"train.seed={seed}", f"train.epochs={epochs}",
            f"train.clips_per_epoch={steps_per_epoch * base.train.batch_size}", "train.start_val_epoch=0",
            "train.criterion=map", f"train.val_videos={VAL_VIDEOS}", f"train.save_every_steps={steps_per_epoch}",
            f"train.device={args.device}"]
    if args.threads:
        keys += [f"train.threads={args.threads}", "data.num_workers=0" if args.threads == 1 else "data.num_workers=1"]
    if kind == "finetune":
        keys.append(f"model.init={source_run(args, seed)}")
    cfg = load_config("synthetic", keys + list(args.set or []))
    cfg.name = f"finetune-bench-{kind}-seed{seed}"
    return cfg


def source_run(args: argparse.Namespace, seed: int) -> Path:
    """The run a fine-tuning cell starts from: ``--source-run``, else this seed's source cell."""
    return Path(args.source_run) if args.source_run else Path(args.out) / "source" / f"seed{seed}" / "run"


def learning_curve(run_dir: Path) -> list[list[float]]:
    """[[step, val mAP@TOLERANCE], ...] from the run's ``metrics.jsonl``."""
    path = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return [[r["step"], r["val_map"][str(TOLERANCE)]] for r in records if "val_map" in r]


def steps_to_reach(curve: list[list[float]], level: float) -> int | None:
    """The first step at which the val mAP reached ``level`` (None: not within the budget)."""
    return next((int(step) for step, value in curve if value >= level), None)


def run_cell(args: argparse.Namespace, kind: str, seed: int) -> dict | None:
    """Train one cell (resuming it if interrupted), score its selected checkpoint on the test split."""
    from pespot.infer import load_predictor, predict_videos
    from pespot.train.trainer import train

    cell = Path(args.out) / kind / f"seed{seed}"
    result_path = cell / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    run_dir = cell / "run"
    cfg = cell_config(args, kind, seed, run_dir)
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    started = time.perf_counter()
    summary = train(cfg, resume=run_dir if resume else None, progress=not args.quiet)
    if summary["stopped"] or summary["epochs_completed"] < cfg.train.epochs:
        return None
    data = Path(cfg.data.root)
    predictor = load_predictor(run_dir, device=args.device)
    truth = load_split(data / "test.json", load_dataset(data).classes)
    preds = [p.to_video() for p in predict_videos(predictor, truth, cfg.frames_dir, progress=False)]
    test = compute_map(truth, preds, predictor.classes, TOLERANCES)
    result = {"kind": kind, "seed": seed, "data": str(data), "steps": summary["steps"],
              "init": cfg.model.init, "curve": learning_curve(run_dir), "best_epoch": summary["best_epoch"],
              "test": test.to_json(), "seconds": round(time.perf_counter() - started, 1), "config": to_dict(cfg)}
    write_json_atomic(result_path, result)
    return result


def run_cells(args: argparse.Namespace, cells: list[tuple[str, int]]) -> list[str]:
    """Each cell in its own process, ``--jobs`` at a time; returns the cells that failed."""
    base = [sys.executable, str(Path(__file__).resolve())] + [a for a in args.argv if a != "--report-only"]
    logs = Path(args.out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    queue, running, failed = list(cells), [], []
    while queue or running:
        while queue and len(running) < args.jobs:
            kind, seed = queue.pop(0)
            log = open(logs / f"{kind}-seed{seed}.log", "a")  # noqa: SIM115 - closed when the process ends
            print(f"[{kind} seed {seed}] started (log {log.name})", flush=True)
            proc = subprocess.Popen(base + ["--cell", f"{kind}:{seed}", "--quiet"], stdout=log,
                                    stderr=subprocess.STDOUT)
            running.append((kind, seed, proc, log))
        time.sleep(2)
        for item in list(running):
            kind, seed, proc, log = item
            if proc.poll() is not None:
                running.remove(item)
                log.close()
                done = (Path(args.out) / kind / f"seed{seed}" / "result.json").is_file()
                print(f"[{kind} seed {seed}] {'finished' if done else f'failed (exit {proc.returncode})'}", flush=True)
                if not done:
                    failed.append(f"{kind}:{seed}")
    return failed


def collect(args: argparse.Namespace) -> dict:
    """Every finished cell, the steps to each level per seed, and the summary rows."""
    out = Path(args.out)
    cells = {kind: {s: json.loads(p.read_text()) for s in args.seeds
                    if (p := out / kind / f"seed{s}" / "result.json").is_file()}
             for kind in ("source", "scratch", "finetune")}
    seeds = [s for s in args.seeds if s in cells["scratch"] and s in cells["finetune"]]
    levels = []
    for level in args.levels:
        scratch = [steps_to_reach(cells["scratch"][s]["curve"], level) for s in seeds]
        tuned = [steps_to_reach(cells["finetune"][s]["curve"], level) for s in seeds]
        fewer = sum(1 for a, b in zip(tuned, scratch) if a is not None and (b is None or a < b))
        levels.append({"level": level, "scratch_steps": scratch, "finetune_steps": tuned,
                       "scratch_reached": sum(v is not None for v in scratch),
                       "finetune_reached": sum(v is not None for v in tuned),
                       "scratch_mean_sd": _mean_sd([v for v in scratch if v is not None]),
                       "finetune_mean_sd": _mean_sd([v for v in tuned if v is not None]),
                       "finetune_fewer_steps_in": fewer, "seeds": len(seeds)})
    tests = {kind: {str(t): _mean_sd([cells[kind][s]["test"]["mAP"][str(t)] for s in seeds]) for t in TOLERANCES}
             for kind in ("scratch", "finetune")}
    return {"source": str(args.source), "target": str(args.target), "source_run": args.source_run,
            "seeds": seeds, "budget": {"source_steps": args.source_steps, "steps": args.steps,
                                       "epochs": args.epochs, "set": list(args.set or [])},
            "tolerance": TOLERANCE, "levels": levels, "test_mAP": tests,
            "curves": {kind: {str(s): cells[kind][s]["curve"] for s in seeds} for kind in ("scratch", "finetune")},
            "classes_same": _same_classes(args), "machine": machine(), "versions": versions(),
            "command": "python benchmarks/finetune.py " + " ".join(shlex.quote(a) for a in args.argv),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def _mean_sd(values: list[float]) -> list[float | None] | None:
    if not values:
        return None
    mean, sd = mean_sd(values)
    return [mean, sd]


def _same_classes(args: argparse.Namespace) -> bool:
    return load_dataset(args.source).classes == load_dataset(args.target).classes


def render(result: dict) -> str:
    """The report in markdown."""
    def steps(v: int | None) -> str:
        return "not reached" if v is None else str(v)

    def pm(ms: list | None, scale: float = 1.0, digits: int = 0) -> str:
        if ms is None:
            return "–"
        mean, sd = ms
        return f"{scale * mean:.{digits}f}" + (f" ± {scale * sd:.{digits}f}" if sd is not None else "")

    budget = result["budget"]
    lines = [
        "# Fine-tuning from another world vs training from scratch",
        "",
        f"Source world `{result['source']}`" + (f" (run `{result['source_run']}`)" if result["source_run"] else
                                                f", {budget['source_steps']} steps per seed")
        + f"; target world `{result['target']}`, {budget['steps']} steps in {budget['epochs']} epochs, validation "
        f"mAP@{result['tolerance']} on the first {VAL_VIDEOS} val videos after each epoch; seeds "
        f"{', '.join(map(str, result['seeds']))}. Both arms: the `synthetic` recipe, the same seed, data and schedule; "
        "only the starting weights differ (`model.init`). Classes of the two worlds "
        + ("are the same: the classifier is kept." if result["classes_same"] else
           "differ: the classifier is re-initialised."),
        "",
        (f"| val mAP@{result['tolerance']} level | steps from scratch (per seed) | steps fine-tuned (per seed) | "
        "scratch, mean ± sd (reached) | fine-tuned, mean ± sd (reached) | fine-tuning fewer steps |"),
        "|---|---|---|---|---|---|",
    ]
    for row in result["levels"]:
        lines.append(
            f"| {100 * row['level']:.0f} % | {', '.join(steps(v) for v in row['scratch_steps'])} | "
            f"{', '.join(steps(v) for v in row['finetune_steps'])} | {pm(row['scratch_mean_sd'])} "
            f"({row['scratch_reached']}/{row['seeds']}) | {pm(row['finetune_mean_sd'])} "
            f"({row['finetune_reached']}/{row['seeds']}) | {row['finetune_fewer_steps_in']}/{row['seeds']} seeds |")
    lines += ["", "Test mAP (%) of each run's selected checkpoint, mean ± sd over the seeds:", "",
              "| | " + " | ".join(f"δ={t}" for t in TOLERANCES) + " |", "|---|" + "---|" * len(TOLERANCES)]
    for kind, name in (("scratch", "from scratch"), ("finetune", "fine-tuned")):
        lines.append(f"| {name} | " + " | ".join(pm(result["test_mAP"][kind][str(t)], 100, 1)
                                                  for t in TOLERANCES) + " |")
    lines += ["", "Learning curves (step: val mAP %):", ""]
    for kind in ("scratch", "finetune"):
        for seed, curve in result["curves"][kind].items():
            lines.append(f"- {kind} seed {seed}: " + ", ".join(f"{s}: {100 * v:.1f}" for s, v in curve))
    m = result["machine"]
    lines += ["", f"Command: `{result['command']}` ({result['date']}).",
              f"Machine: {m['cpu']}, {m['cores']} cores, " + (f"GPU {m['gpu']}" if m["gpu"] else "no GPU")
              + f"; pespot {result['versions']['pespot_commit']}, torch {result['versions']['torch']}.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="dataset folder of the world the source run learns")
    p.add_argument("--target", required=True, help="dataset folder of the world both arms are trained on")
    p.add_argument("--source-run", help="start every fine-tuning from this run instead of training one per seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--source-steps", type=int, default=480, help="steps of each source run (default 480)")
    p.add_argument("--source-epochs", type=int, default=8, help="epochs of each source run (default 8)")
    p.add_argument("--steps", type=int, default=480, help="steps of each target run (default 480)")
    p.add_argument("--epochs", type=int, default=12, help="target epochs = points of the learning curve (default 12)")
    p.add_argument("--levels", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5],
                   help="val mAP levels to reach (default 0.1 0.2 0.3 0.4 0.5)")
    p.add_argument("--jobs", type=int, default=2, help="cells trained at once, one process each (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per cell (default 1)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/finetune", help="cells go to <out>/<kind>/seed<S>/")
    p.add_argument("--results", default=str(ROOT / "docs" / "results" / "finetune"),
                   help="report path without suffix (default docs/results/finetune)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="extra config keys for every cell (recorded)")
    p.add_argument("--report-only", action="store_true", help="only gather the finished cells into the report")
    p.add_argument("--cell", help=argparse.SUPPRESS)  # KIND:SEED, run by the scheduler in its own process
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in ("source", "target"):
        load_dataset(getattr(args, name))  # a clear error before anything trains
    if args.steps < args.epochs or args.source_steps < args.source_epochs:
        raise PespotError("--steps / --source-steps: at least one step per epoch")
    if args.cell:
        kind, seed = args.cell.split(":")
        return 0 if run_cell(args, kind, int(seed)) is not None else 1
    failed: list[str] = []
    if not args.report_only:
        first = ([] if args.source_run else [("source", s) for s in args.seeds]) + [("scratch", s) for s in args.seeds]
        failed = run_cells(args, first)
        failed += run_cells(args, [("finetune", s) for s in args.seeds
                                   if (source_run(args, s) / "checkpoints").is_dir()])
    result = collect(args)
    write_results(args.results, result, render)
    if failed:
        print(f"failed cells: {', '.join(failed)} (logs in {Path(args.out) / 'logs'})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PespotError as err:
        print(f"finetune: error: {err}", file=sys.stderr)
        sys.exit(1)
