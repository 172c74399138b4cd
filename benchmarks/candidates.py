"""Candidate rule: test mAP against the candidate score threshold (and a top-k cap) for trained checkpoints.

    python benchmarks/candidates.py --data DATA --runs RUN [RUN ...] [--out docs/results]

Each run's best checkpoint spots the test split once (half-overlap windows, mean scores); the per-frame scores
are then turned into events with each candidate rule (local-maximum NMS over 1 frame in every case):
every (frame, class) score >= threshold for the thresholds in ``THRESHOLDS`` (0 = no floor), and, at threshold
0, at most k events per class and video for the caps in ``TOP_K``. For each rule: mAP at tolerances 0/1/2/4,
the number of events kept and the size of the prediction JSON. Runs trained with a sigmoid loss (BCE, focal)
and with a softmax loss (CE) are both meaningful here: their scores are calibrated differently.

Writes ``<out>/candidates.md`` and ``candidates.json``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from pespot.data.frames import find_video_frames
from pespot.data.labels import Video, load_dataset, save_split
from pespot.fsutil import write_json_atomic, write_text_atomic
from pespot.infer import load_predictor, predict_scores, scores_to_events
from pespot.metrics import compute_map

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, machine_section, versions

ROOT = Path(__file__).resolve().parents[1]
TOLERANCES = (0, 1, 2, 4)
THRESHOLDS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1)
TOP_K = (None, 200, 50, 20, 10)


def json_bytes(videos: list[Video], tmp: Path) -> int:
    """Size of the E2E-Spot prediction JSON of ``videos``."""
    save_split(videos, tmp)
    size = tmp.stat().st_size
    tmp.unlink()
    return size


def measure(run: Path, data: Path, tmp: Path) -> dict:
    """Score the test split with ``run`` and evaluate every candidate rule."""
    predictor = load_predictor(run, device="cpu")
    dataset = load_dataset(data)
    classes, truth = dataset.classes, dataset.splits["test"]
    start = time.perf_counter()
    scores = {v.video: predict_scores(predictor, find_video_frames(data / "frames", v.video), overlap=0.5,
                                      batch_size=4, progress=False, num_frames=v.num_frames) for v in truth}
    seconds = time.perf_counter() - start
    rules = []
    for threshold in THRESHOLDS:
        for top_k in TOP_K if threshold == 0.0 else (None,):
            preds = [Video(v.video, v.num_frames, v.fps,
                           scores_to_events(scores[v.video], classes, threshold=threshold, nms="local_max",
                                            nms_window=1, top_k=top_k)) for v in truth]
            res = compute_map(truth, preds, classes, TOLERANCES)
            rules.append({"threshold": threshold, "top_k": top_k,
                          "mAP": {str(t): res.mAP[t] for t in TOLERANCES},
                          "per_class_at_2": {c: res.per_class[c][2] for c in classes if c in res.per_class},
                          "events": sum(len(p.events) for p in preds), "json_bytes": json_bytes(preds, tmp)})
    return {"run": str(run), "checkpoint": predictor.source, "activation": predictor.activation,
            "loss": predictor.cfg.loss.classification, "test_videos": len(truth),
            "test_frames": sum(v.num_frames for v in truth), "inference_seconds": round(seconds, 1), "rules": rules}


def rule_list(run: dict) -> list[dict]:
    return run["rules"]


def write_markdown(report: dict, path: Path) -> None:
    lines = ["# Candidate rule: test mAP against the score threshold", "",
             f"Made by `{report['command']}` ({report['date']}).", "",
             ("Every run's best checkpoint spots the test split once; the same per-frame scores are then turned into "
             "events by each rule (local-maximum NMS over 1 frame). `top-k`: at most k events per class and video, "
             "the best-scoring, at threshold 0."), ""]
    for r in report["runs"]:
        lines += [(f"## `{r['run']}` ({r['loss']} loss, {r['activation']} scores; {r['test_videos']} test videos, "
                  f"{r['test_frames']:,} frames)"), "",
                  "| threshold | top-k | mAP δ=0 | δ=1 | δ=2 | δ=4 | events | JSON |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for rule in r["rules"]:
            m = rule["mAP"]
            lines.append(f"| {rule['threshold']:g} | {rule['top_k'] or '–'} | "
                         + " | ".join(f"{100 * m[str(t)]:.1f}" for t in TOLERANCES)
                         + f" | {rule['events']:,} | {rule['json_bytes'] / 1e3:.0f} kB |")
        base = next(x for x in rule_list(r) if x["threshold"] == 0.0 and x["top_k"] is None)
        e2e = next((x for x in rule_list(r) if x["threshold"] == 0.01), None)
        if e2e is not None:
            lines += ["", (f"E2E-Spot's threshold 0.01 against 0 (every local maximum): mAP@2 "
                           f"{100 * e2e['mAP']['2']:.1f} vs {100 * base['mAP']['2']:.1f} "
                           f"({100 * (e2e['mAP']['2'] - base['mAP']['2']):+.1f} points), keeping "
                           f"{e2e['events']:,} of {base['events']:,} events.")]
        lines.append("")
    lines += machine_section(report)
    write_text_atomic(path, "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="dataset folder (test.json, frames/)")
    p.add_argument("--runs", nargs="+", help="run folders or checkpoints")
    p.add_argument("--report-only", action="store_true", help="rewrite candidates.md from candidates.json")
    p.add_argument("--out", default=str(ROOT / "docs" / "results"), help="where candidates.md/.json go")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        import json

        write_markdown(json.loads((out / "candidates.json").read_text()), out / "candidates.md")
        return 0
    if not args.runs:
        p.error("--runs is required (unless --report-only)")
    runs = [measure(Path(r), Path(args.data), out / ".candidates-tmp.json") for r in args.runs]
    report = {"command": "python benchmarks/candidates.py " + shlex.join(argv), "date": time.strftime("%Y-%m-%d %H:%M"),
              "thresholds": list(THRESHOLDS), "top_k": list(TOP_K), "runs": runs, "machine": machine(),
              "versions": versions()}
    write_json_atomic(out / "candidates.json", report)
    write_markdown(report, out / "candidates.md")
    print(f"wrote {out / 'candidates.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
