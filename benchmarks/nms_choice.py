"""The NMS chosen on the validation split against the run's configured NMS: test mAP of trained runs (e.g. three
seeds), mean ± sd over the runs.

Each run's best checkpoint scores the validation and the test split once (per-frame scores). On validation every
NMS method (none, local_max, greedy, soft) x window is tried and the best mean mAP over the tolerances is chosen,
as `pespot eval --choose-nms` and `eval.choose_nms` do; on test, the events of the run's own ``eval.nms`` /
``nms_window`` and those of the chosen NMS are scored, from the same scores, exactly as `pespot infer` makes them.
The runs' folders are not changed (no ``nms.json`` is written).

A difference counts as a gain (or a loss) only when the mean difference is larger than the spread of the runs:
the larger of the two standard deviations across runs.

    python benchmarks/nms_choice.py --data data/synth-small --runs runs/a runs/b runs/c
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from pespot import infer
from pespot.data.labels import load_classes, load_split
from pespot.metrics import compute_map
from pespot.postprocess import DEFAULT_NMS_WINDOWS, choose_nms

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import candidates_line, format_pm, machine, machine_line, paired_summary, versions, write_results


def evaluate_run(run: str, data: Path, classes: list[str], frames: Path, windows: list[int], tolerances: list[int],
                 val_split: str, test_split: str, max_videos: int | None, device: str) -> dict:
    """Choose on validation, score test with the configured and the chosen NMS (one run)."""
    predictor = infer.load_predictor(run, device=device, classes=classes, classes_source="class.txt")
    if predictor.nms_from is not None:  # the configured NMS is the baseline: a stored choice would replace it
        raise SystemExit(f"{run}: has {predictor.nms_from}; compare runs without a stored NMS choice")
    ev = predictor.cfg.eval
    splits = {}
    for name in (val_split, test_split):
        videos = load_split(data / f"{name}.json", classes)
        splits[name] = videos[:max_videos] if max_videos else videos
    started = time.perf_counter()
    preds = {name: infer.predict_videos(predictor, videos, frames, nms="none") for name, videos in splits.items()}
    scoring_s = time.perf_counter() - started
    events = {name: infer.events_with_nms(p, predictor.classes, threshold=ev.threshold, top_k=ev.top_k)
              for name, p in preds.items()}
    best, table = choose_nms(splits[val_split], predictor.classes, tolerances, events[val_split], windows)
    configured = {"method": ev.nms, "window": None if ev.nms == "none" else ev.nms_window}
    out = {"run": str(run), "checkpoint": predictor.source, "scoring_seconds": round(scoring_s, 1),
           "threshold": ev.threshold, "top_k": ev.top_k,
           "chosen": {"method": best["method"], "window": best["window"], "val_average_mAP": best["average_mAP"]},
           "configured": configured, "val_table": table}
    for key, nms in (("configured_test", configured), ("chosen_test", best)):
        result = compute_map(splits[test_split], events[test_split](nms["method"], nms["window"]),
                             predictor.classes, tolerances)
        out[key] = {"mAP": {str(t): result.mAP[t] for t in tolerances}, "average_mAP": result.average_mAP}
    print(f"{run}: chosen {best['method']} {best['window']} on {val_split}; test mean mAP configured "
          f"{100 * out['configured_test']['average_mAP']:.2f}, chosen {100 * out['chosen_test']['average_mAP']:.2f}",
          file=sys.stderr)
    return out


def summarise(runs: list[dict], tolerances: list[int]) -> dict:
    """Per tolerance and for the mean: configured vs chosen NMS on test, paired difference and verdict."""
    return paired_summary(runs, tolerances, "configured_test", "chosen_test", ("configured", "chosen"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset folder (class.txt, <split>.json, frames/)")
    parser.add_argument("--runs", nargs="+", required=True, help="trained run folders (or checkpoints)")
    parser.add_argument("--val-split", default="val", help="split the NMS is chosen on (default val)")
    parser.add_argument("--test-split", default="test", help="split it is measured on (default test)")
    parser.add_argument("--frames", help="frame store (default DATA/frames)")
    parser.add_argument("--windows", type=int, nargs="+", default=list(DEFAULT_NMS_WINDOWS),
                        help="NMS windows tried (default 1 2 4 8 16)")
    parser.add_argument("--tolerances", type=int, nargs="+", help="default: the first run's eval.tolerances")
    parser.add_argument("--max-videos", type=int, help="only the first N videos of each split (quick checks)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "nms_choice"),
                        help="writes OUT.md and OUT.json (default docs/results/nms_choice)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    classes = load_classes(data / "class.txt")
    frames = Path(args.frames) if args.frames else data / "frames"
    tolerances = args.tolerances or list(infer.load_predictor(args.runs[0], device="cpu").cfg.eval.tolerances)
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    runs = [evaluate_run(run, data, classes, frames, args.windows, tolerances, args.val_split, args.test_split,
                         args.max_videos, args.device) for run in args.runs]
    result = {
        "benchmark": "nms_choice",
        "command": "python benchmarks/nms_choice.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "machine": {**machine(), "torch_threads": torch.get_num_threads(), "load_average_1min_start": load_start},
        "versions": versions(),
        "setup": {"data": str(data), "val_split": args.val_split, "test_split": args.test_split,
                  "max_videos": args.max_videos, "windows": sorted(set(args.windows)), "tolerances": tolerances,
                  "rule": "gain/loss only when |mean difference| > the larger sd across runs"},
        "runs": runs,
        "summary": summarise(runs, tolerances),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_results(args.out, result, render_markdown)
    return 0


def _nms_name(nms: dict) -> str:
    return "none" if nms["method"] == "none" else f"{nms['method']} {nms['window']}"


def render_markdown(r: dict) -> str:
    s, m = r["setup"], r["machine"]
    configured = collections.Counter(_nms_name(run["configured"]) for run in r["runs"])
    lines = [
        "# NMS chosen on validation vs the configured NMS",
        "",
        f"`{r['command']}`",
        "",
        (f"{len(r['runs'])} run(s) on `{s['data']}`: the NMS is chosen on split `{s['val_split']}` among none and "
         f"local_max / greedy / soft x windows {' '.join(map(str, s['windows']))} (best mean mAP over tolerances "
         f"{' '.join(map(str, s['tolerances']))}), then measured on split `{s['test_split']}` against the runs' "
         f"configured NMS ({', '.join(f'{k} ({v} runs)' for k, v in configured.items())}); the same per-frame "
         "scores for both. Mean ± sd over the runs; the difference is paired, run by run, and counts as a gain or "
         "a loss only when it exceeds the larger sd across runs."),
        "",
        candidates_line(r["runs"]),
        "",
        "| test mAP, % | configured NMS | chosen on validation | difference | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    for key, row in r["summary"].items():
        name = "mean over tolerances" if key == "average" else f"δ={key}"
        lines.append(f"| {name} | {format_pm(row['configured'])} | {format_pm(row['chosen'])} "
                     f"| {format_pm(row['difference'])} | {row['verdict']} |")
    lines += ["", "| run | chosen | validation mean mAP of the choice | test mean mAP configured / chosen |",
              "|---|---|---:|---|"]
    for run in r["runs"]:
        lines.append(f"| {run['run']} | {_nms_name(run['chosen'])} | {100 * run['chosen']['val_average_mAP']:.2f} "
                     f"| {100 * run['configured_test']['average_mAP']:.2f} / "
                     f"{100 * run['chosen_test']['average_mAP']:.2f} |")
    lines += ["", f"{machine_line(m, r['seconds'])}; pespot {r['versions']['pespot_commit']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
