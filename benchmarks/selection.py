"""Model selection: which validation score picks the checkpoint that is best on the test split?

    python benchmarks/selection.py --data DATA --runs RUN [RUN ...] --out docs/results/court-top

Each run must have been trained with ``train.keep_epochs=true`` (every epoch's checkpoint kept as
``checkpoints/epoch-NNN.pt``). For every epoch's checkpoint: the validation split is scored as training scores it
(windows side by side) and its events made two ways, E2E-Spot's (every frame's score, no NMS:
``train.selection_nms: none``) and with the run's own NMS (``eval``, as the test split is scored); the test split
is scored with the run's inference rule (half-overlap windows, its NMS). The selection score is E2E-Spot's, the
mean validation mAP at 1, 2 and 4 frames. Reported per run and criterion: the epoch it selects and that epoch's
test mAP, beside the last epoch's and the best test epoch's (an oracle no criterion can beat); and the rank
correlation between each validation score and test mAP@2 over the epochs.

Writes ``<out>/selection.md`` and ``selection.json``.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pespot.data.frames import find_video_frames
from pespot.data.labels import Video, load_dataset
from pespot.fsutil import write_json_atomic, write_text_atomic
from pespot.infer import load_predictor, predict_scores, scores_to_events
from pespot.metrics import compute_map
from pespot.train.history import SELECTION_TOLERANCES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, machine_section, versions

TOLERANCES = (0, 1, 2, 4)
CRITERIA = {"none": "without NMS (E2E-Spot)", "eval": "with the run's NMS"}


def epoch_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of ``run/checkpoints/epoch-NNN.pt``, in order; a clear error when there are none."""
    found = sorted((int(m.group(1)), p) for p in (run / "checkpoints").glob("epoch-*.pt")
                   if (m := re.fullmatch(r"epoch-(\d+)\.pt", p.name)))
    if not found:
        raise SystemExit(f"{run}: no checkpoints/epoch-NNN.pt (train with --set train.keep_epochs=true)")
    return found


def split_maps(predictor: Any, data: Path, truth: list[Video], overlap: float, rules: dict[str, tuple[str, int]]
               ) -> dict[str, dict[int, float]]:
    """mAP per tolerance of ``truth`` for each named (nms, window) rule, from one scoring pass."""
    classes, ev = predictor.classes, predictor.cfg.eval
    scores = {v.video: predict_scores(predictor, find_video_frames(data / "frames", v.video), overlap=overlap,
                                      batch_size=ev.batch_size, progress=False, num_frames=v.num_frames)
              for v in truth}
    out = {}
    for name, (nms, window) in rules.items():
        preds = [Video(v.video, v.num_frames, v.fps, scores_to_events(scores[v.video], classes, ev.threshold, nms,
                                                                      window, ev.top_k)) for v in truth]
        res = compute_map(truth, preds, classes, sorted(set(TOLERANCES) | set(SELECTION_TOLERANCES)))
        out[name] = {int(t): float(res.mAP[t]) for t in res.mAP}
    return out


def measure(run: Path, data: Path) -> dict:
    """Every kept epoch of ``run``: its two validation selection scores and its test mAP."""
    dataset = load_dataset(data)
    epochs = []
    for epoch, path in epoch_checkpoints(run):
        predictor = load_predictor(path, device="cpu")
        cfg = predictor.cfg
        val = dataset.splits["val"][: cfg.train.val_videos or None]
        own = (cfg.eval.nms, cfg.eval.nms_window)
        v = split_maps(predictor, data, val, 0.0, {"none": ("none", 0), "eval": own})
        t = split_maps(predictor, data, dataset.splits["test"], cfg.eval.overlap, {"test": own})["test"]
        epochs.append({"epoch": epoch, "val": {c: float(np.mean([v[c][s] for s in SELECTION_TOLERANCES]))
                                               for c in CRITERIA},
                       "test": {str(k): t[k] for k in TOLERANCES}})
        print(f"{run} epoch {epoch}: val {epochs[-1]['val']}, test mAP@2 {100 * t[2]:.1f}", flush=True)
    return {"run": str(run), "epochs": epochs, **summarise(epochs)}


def _ranks(values: list[float]) -> np.ndarray:
    return np.argsort(np.argsort(values)).astype(float)


def summarise(epochs: list[dict]) -> dict:
    """Per criterion: the epoch selected (the first of equal scores, as training keeps the first best), its test
    mAP@2, and the Spearman correlation of the criterion with test mAP@2 over the epochs."""
    test2 = [e["test"]["2"] for e in epochs]
    out: dict[str, Any] = {"last": test2[-1], "oracle": max(test2)}
    for c in CRITERIA:
        vals = [e["val"][c] for e in epochs]
        pick = int(np.argmax(vals))
        rho = float(np.corrcoef(_ranks(vals), _ranks(test2))[0, 1]) if len(epochs) > 2 else float("nan")
        out[c] = {"epoch": epochs[pick]["epoch"], "test": test2[pick], "spearman": rho}
    return out


def _label(run: str) -> str:
    """A run's short name: ``.../seed0/run`` -> ``seed0``."""
    path = Path(run)
    return path.parent.name if path.name == "run" else path.name


def _pm(values: list[float]) -> str:
    a = 100 * np.asarray(values, dtype=float)
    return f"{a.mean():.1f} ± {a.std(ddof=1):.1f}" if len(a) > 1 else f"{a.mean():.1f}"


def write_markdown(report: dict, path: Path) -> None:
    runs = report["runs"]
    lines = ["# Model selection: which validation score picks the best test checkpoint", "",
             f"Made by `{report['command']}` ({report['date']}).", "",
             ("Every epoch's checkpoint of each run; the selection score is the mean validation mAP at 1, 2 and 4 "
              "frames, computed from the events of every frame's score (no NMS, E2E-Spot's, `train.selection_nms: "
              "none`) or after the run's own NMS (`eval`). Test: mAP@2 after the run's NMS, half-overlap windows."),
             "", "| test mAP@2, % | " + " | ".join(_label(r["run"]) for r in runs) + " | mean ± sd |",
             "|---|" + "---:|" * (len(runs) + 1)]
    rows = [("selected without NMS (E2E-Spot)", lambda r: r["none"]["test"]),
            ("selected with the run's NMS", lambda r: r["eval"]["test"]),
            ("last epoch", lambda r: r["last"]), ("best test epoch (oracle)", lambda r: r["oracle"])]
    for name, get in rows:
        vals = [get(r) for r in runs]
        lines.append(f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in vals) + f" | {_pm(vals)} |")
    lines += ["", "| per run | epoch selected without NMS | with NMS | Spearman (val, test) without NMS | with NMS |",
              "|---|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(f"| `{r['run']}` | {r['none']['epoch']} | {r['eval']['epoch']} | {r['none']['spearman']:.2f} | "
                     f"{r['eval']['spearman']:.2f} |")
    lines += ["", "## Every epoch", "", "| run | epoch | val score without NMS | with NMS | test mAP δ=0 | δ=1 | δ=2 | δ=4 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        for e in r["epochs"]:
            lines.append(f"| {_label(r['run'])} | {e['epoch']} | {100 * e['val']['none']:.1f} | "
                         f"{100 * e['val']['eval']:.1f} | "
                         + " | ".join(f"{100 * e['test'][str(t)]:.1f}" for t in TOLERANCES) + " |")
    lines += ["", *machine_section(report)]
    write_text_atomic(path, "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="dataset folder (val.json, test.json, frames/)")
    p.add_argument("--runs", nargs="+", required=True, help="run folders trained with train.keep_epochs=true")
    p.add_argument("--out", required=True, help="where selection.md/.json go")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [measure(Path(r), Path(args.data)) for r in args.runs]
    report = {"command": "python benchmarks/selection.py " + shlex.join(argv), "date": time.strftime("%Y-%m-%d %H:%M"),
              "runs": runs, "machine": machine(), "versions": versions()}
    write_json_atomic(out / "selection.json", report)
    write_markdown(report, out / "selection.md")
    print(f"wrote {out / 'selection.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
