"""Flip test-time augmentation: test mAP of trained runs with and without it (the same checkpoints), mean ± sd over
the runs (e.g. three seeds).

Each run's best checkpoint spots the events of the test split twice: once as ``pespot infer`` does by default,
once with ``--tta flip`` (every window scored with its horizontal mirror, scores averaged); everything else (the
run's eval config: overlap, threshold, NMS) is the same. mAP is E2E-Spot's at the run's tolerances.

A difference counts as a gain (or a loss) only when the mean difference is larger than the spread of the runs:
the larger of the two standard deviations across runs. Inside that it is reported as no gain; with one run there
is no spread and nothing is claimed.

    python benchmarks/tta.py --data data/tennis --runs runs/tennis_s0 runs/tennis_s1 runs/tennis_s2
    python benchmarks/tta.py --data data/synth --runs runs/a --max-videos 2 --out /tmp/tta   # a quick check
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from pespot import infer
from pespot.data.labels import load_classes, load_split
from pespot.metrics import compute_map

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import candidates_line, machine, machine_line, paired_summary, write_results
from _common import format_pm as _pm
from _common import paired_verdict as verdict  # noqa: F401 - this benchmark's verdict rule (tests use it)


def evaluate_run(run: str, videos, classes: list[str], frames: Path, tolerances: list[int], device: str,
                 batch_size: int | None) -> dict:
    """mAP of one run's checkpoint on ``videos`` without and with flip TTA."""
    predictor = infer.load_predictor(run, device=device, classes=classes, classes_source="class.txt")
    out = {"run": str(run), "checkpoint": predictor.source, "threshold": predictor.cfg.eval.threshold,
           "top_k": predictor.cfg.eval.top_k}
    for tta in ("none", "flip"):
        started = time.perf_counter()
        preds = infer.predict_videos(predictor, videos, frames, batch_size=batch_size, tta=tta)
        result = compute_map(videos, [p.to_video() for p in preds], classes, tolerances)
        out[tta] = {"mAP": {str(t): result.mAP[t] for t in tolerances}, "average_mAP": result.average_mAP,
                    "seconds": round(time.perf_counter() - started, 2)}
        print(f"{run}: tta={tta}: mean mAP {100 * result.average_mAP:.2f} "
              f"({out[tta]['seconds']:.1f} s)", file=sys.stderr)
    return out


def summarise(runs: list[dict], tolerances: list[int]) -> dict:
    """Per tolerance and for the mean over tolerances: mean ± sd without / with TTA, paired difference, verdict."""
    return paired_summary(runs, tolerances, "none", "flip", ("without", "with"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset folder (class.txt, <split>.json, frames/)")
    parser.add_argument("--runs", nargs="+", required=True, help="trained run folders (or checkpoints)")
    parser.add_argument("--split", default="test", help="split to evaluate (default test)")
    parser.add_argument("--frames", help="frame store (default DATA/frames)")
    parser.add_argument("--tolerances", type=int, nargs="+", help="default: the first run's eval.tolerances")
    parser.add_argument("--max-videos", type=int, help="only the first N videos of the split (quick checks)")
    parser.add_argument("--batch-size", type=int, help="windows per forward pass (default: each run's eval config)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "tta"),
                        help="writes OUT.md and OUT.json (default docs/results/tta)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    classes = load_classes(data / "class.txt")
    videos = load_split(data / f"{args.split}.json", classes)
    if args.max_videos:
        videos = videos[: args.max_videos]
    frames = Path(args.frames) if args.frames else data / "frames"
    tolerances = args.tolerances or list(infer.load_predictor(args.runs[0], device="cpu").cfg.eval.tolerances)
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    runs = [evaluate_run(run, videos, classes, frames, tolerances, args.device, args.batch_size)
            for run in args.runs]
    result = {
        "benchmark": "tta",
        "command": "python benchmarks/tta.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "machine": {**machine(), "torch_threads": torch.get_num_threads(), "load_average_1min_start": load_start},
        "setup": {"data": str(data), "split": args.split, "videos": len(videos), "tolerances": tolerances,
                  "rule": "gain/loss only when |mean difference| > the larger sd across runs"},
        "runs": runs,
        "summary": summarise(runs, tolerances),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_results(args.out, result, render_markdown)
    return 0


def render_markdown(r: dict) -> str:
    s, m = r["setup"], r["machine"]
    lines = [
        "# Flip test-time augmentation",
        "",
        f"`{r['command']}`",
        "",
        (f"Test mAP (%) on `{s['data']}` split `{s['split']}` ({s['videos']} videos) of {len(r['runs'])} run(s), "
         "each checkpoint run without and with `--tta flip` (mean ± sd over the runs; the difference is paired, "
         "run by run). A difference is a gain or a loss only when it exceeds the larger sd across runs; inside it "
         "the row says no gain."),
        "",
        candidates_line(r["runs"]),
        "",
        "| tolerance | without TTA | with flip TTA | difference | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    for key, row in r["summary"].items():
        name = "mean over tolerances" if key == "average" else f"δ={key}"
        lines.append(f"| {name} | {_pm(row['without'])} | {_pm(row['with'])} | {_pm(row['difference'])} "
                     f"| {row['verdict']} |")
    lines += ["", "| run | checkpoint | mean mAP without | with | seconds without / with |", "|---|---|---:|---:|---|"]
    for run in r["runs"]:
        lines.append(f"| {run['run']} | {run['checkpoint']} | {100 * run['none']['average_mAP']:.2f} "
                     f"| {100 * run['flip']['average_mAP']:.2f} | {run['none']['seconds']} / {run['flip']['seconds']} |")
    lines += ["", machine_line(m, r["seconds"]) + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
