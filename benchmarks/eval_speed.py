"""Evaluation speed: pespot's SoccerNet average-mAP vs the official ``SoccerNet`` package, same files, one run.

    python benchmarks/eval_speed.py                  # 100 games (test-set size), tight/loose/at1; writes docs/results/eval.*
    python benchmarks/eval_speed.py --games 10 --metrics tight --no-write

Generates random SoccerNet-v2-like games (two 45-47 min halves; ~220 truth events per game over the 17 classes
with a skewed class distribution, ~25% "not shown"; a few thousand predictions per game: jittered copies of the
truth plus uniform false positives), writes them as ``Labels-v2.json`` / ``results_spotting.json`` folders,
then times ``pespot.metrics.soccernet_average_map`` (reading included) and the official
``SoccerNet.Evaluation.ActionSpotting.evaluate(..., dataset=None, EVENT_DICTIONARY=EVENT_DICTIONARY_V2)`` on the
same folders, asserts that all six official outputs agree within 1e-9, and also times pespot's E2E-Spot
mAP@{0,1,2,4} on the same data at 2 fps. Results go to ``docs/results/eval.md`` and ``docs/results/eval.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pespot.data.soccernet import SOCCERNET_V2_CLASSES, format_game_time, load_soccernet, read_results
from pespot.fsutil import write_json_atomic, write_text_atomic
from pespot.metrics import compute_map, soccernet_average_map

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine as common_machine
from _common import versions as common_versions

ROOT = Path(__file__).resolve().parents[1]

# relative class frequencies, roughly SoccerNet-v2's (ball out of play and throw-ins dominate; cards are rare)
CLASS_WEIGHTS = np.array([0.2, 2.3, 0.4, 2.3, 2.4, 5.0, 5.4, 7.0, 27.0, 17.5, 12.0, 10.0, 2.2, 4.5, 2.0, 0.06,
                          0.05])
KEYS = ("a_mAP", "a_mAP_per_class", "a_mAP_visible", "a_mAP_per_class_visible", "a_mAP_unshown",
        "a_mAP_per_class_unshown")


def generate(root: Path, games: int, truth_per_game: int, preds_per_game: int, seed: int) -> None:
    """Write ``root/gt/<game>/Labels-v2.json`` and ``root/pred/<game>/results_spotting.json``."""
    rng = np.random.default_rng(seed)
    p = CLASS_WEIGHTS / CLASS_WEIGHTS.sum()
    for g in range(games):
        game = f"league_{g % 6}/20{14 + g % 3}-20{15 + g % 3}/game {g:03d}"
        annotations, predictions = [], []
        near = preds_per_game // 3  # a third near the truth, the rest uniform
        for half in (1, 2):
            half_ms = int(rng.integers(45, 48) * 60_000)
            n = truth_per_game // 2
            ms = rng.integers(0, half_ms, n)
            labels = rng.choice(17, n, p=p)
            for t, c in zip(ms.tolist(), labels.tolist()):
                annotations.append({"gameTime": format_game_time(half, t), "label": SOCCERNET_V2_CLASSES[c],
                                    "position": str(t), "team": "home" if rng.random() < 0.5 else "away",
                                    "visibility": "not shown" if rng.random() < 0.25 else "visible"})
            src = rng.integers(0, n, near // 2)
            jitter = np.maximum(0, ms[src] + rng.normal(0, 3000, src.size).astype(np.int64))
            plabels = np.where(rng.random(src.size) < 0.8, labels[src], rng.integers(0, 17, src.size))
            noise = preds_per_game // 2 - src.size
            pms = np.concatenate([jitter, rng.integers(0, half_ms, noise)])
            plab = np.concatenate([plabels, rng.integers(0, 17, noise)])
            conf = np.concatenate([rng.beta(5, 2, src.size), rng.beta(1, 5, noise)])
            for t, c, s in zip(pms.tolist(), plab.tolist(), conf.tolist()):
                predictions.append({"gameTime": format_game_time(half, t), "label": SOCCERNET_V2_CLASSES[c],
                                    "position": str(t), "half": str(half), "confidence": f"{s:.4f}"})
        write_json_atomic(root / "gt" / game / "Labels-v2.json", {"UrlLocal": game, "annotations": annotations},
                          indent=None)
        write_json_atomic(root / "pred" / game / "results_spotting.json",
                          {"UrlLocal": game, "predictions": predictions}, indent=None)


def official(root: Path, metric: str) -> dict:
    from SoccerNet.Evaluation.ActionSpotting import evaluate
    from SoccerNet.Evaluation.utils import EVENT_DICTIONARY_V2

    with contextlib.redirect_stderr(io.StringIO()), np.errstate(all="ignore"):
        return evaluate(str(root / "gt"), str(root / "pred"), prediction_file="results_spotting.json",
                        label_files="Labels-v2.json", split="test", version=2, framerate=2, metric=metric,
                        dataset=None, EVENT_DICTIONARY=EVENT_DICTIONARY_V2)


def max_difference(ours: dict, ref: dict) -> float:
    return max(float(np.max(np.abs(np.asarray(ours[k], float) - np.asarray(ref[k], float)))) for k in KEYS)


def machine() -> dict:
    return {**common_machine(), "python": platform.python_version()}


def versions() -> dict:
    import importlib.metadata as md

    out = common_versions()
    for name in ("SoccerNet",):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=100)
    parser.add_argument("--truth-per-game", type=int, default=220)
    parser.add_argument("--preds-per-game", type=int, default=3000)
    parser.add_argument("--metrics", nargs="+", default=["tight", "loose", "at1"],
                        help="metrics timed against the official code")
    parser.add_argument("--ours-only", nargs="*", default=[], help="metrics timed for pespot only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="do not write docs/results/eval.*")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pespot-eval-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        generate(root, args.games, args.truth_per_game, args.preds_per_game, args.seed)
        print(f"generated {args.games} games in {time.perf_counter() - t0:.1f} s", flush=True)
        c0 = time.process_time()
        for path in sorted(root.rglob("*.json")):
            json.loads(path.read_text())
        parse_cpu = time.process_time() - c0
        print(f"json parsing alone: {parse_cpu:.3f} s CPU", flush=True)
        runs = []
        for metric in args.metrics:
            t0, c0 = time.perf_counter(), time.process_time()
            ours = soccernet_average_map(root / "gt", root / "pred", metric=metric)
            t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
            t0, c0 = time.perf_counter(), time.process_time()
            ref = official(root, metric)
            t_ref, c_ref = time.perf_counter() - t0, time.process_time() - c0
            diff = max_difference(ours, ref)
            assert diff <= 1e-9, f"{metric}: pespot and the official evaluator differ by {diff}"
            runs.append({"metric": metric, "pespot_s": round(t_ours, 3), "official_s": round(t_ref, 2),
                         "pespot_cpu_s": round(c_ours, 3), "official_cpu_s": round(c_ref, 2),
                         "speedup_cpu": round(c_ref / c_ours, 1), "a_mAP": ours["a_mAP"],
                         "a_mAP_visible": ours["a_mAP_visible"], "a_mAP_unshown": ours["a_mAP_unshown"],
                         "max_abs_difference": diff})
            print(f"{metric}: pespot {t_ours:.3f} s ({c_ours:.3f} CPU), official {t_ref:.1f} s ({c_ref:.1f} CPU), "
                  f"{c_ref / c_ours:.0f}x CPU, "
                  f"a_mAP {ours['a_mAP']:.6f}, max |difference| {diff:.1e}", flush=True)
        for metric in args.ours_only:
            t0, c0 = time.perf_counter(), time.process_time()
            ours = soccernet_average_map(root / "gt", root / "pred", metric=metric)
            t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
            runs.append({"metric": metric, "pespot_s": round(t_ours, 3), "official_s": None, "speedup_cpu": None,
                         "pespot_cpu_s": round(c_ours, 3), "official_cpu_s": None,
                         "a_mAP": ours["a_mAP"], "a_mAP_visible": ours["a_mAP_visible"],
                         "a_mAP_unshown": ours["a_mAP_unshown"], "max_abs_difference": None})
            print(f"{metric}: pespot {t_ours:.3f} s (official not run), a_mAP {ours['a_mAP']:.6f}", flush=True)

        # E2E-Spot mAP at frame tolerances on the same data, at 2 fps (conversion not timed)
        truth = load_soccernet(root / "gt", fps=2)
        pred = []
        for game in sorted({v.video.rsplit("/", 1)[0] for v in truth}):
            pred.extend(read_results(root / "pred" / game / "results_spotting.json", fps=2, game=game))
        t0, c0 = time.perf_counter(), time.process_time()
        e2e = compute_map(truth, pred, list(SOCCERNET_V2_CLASSES), [0, 1, 2, 4])
        t_e2e, c_e2e = time.perf_counter() - t0, time.process_time() - c0
        n_pred = sum(len(v.events) for v in pred)
        print(f"E2E-Spot mAP@0,1,2,4 on {n_pred} predictions: {t_e2e:.3f} s", flush=True)

    command = "python benchmarks/eval_speed.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = {
        "command": command.strip(), "machine": machine(), "versions": versions(),
        "data": {"games": args.games, "halves": 2 * args.games, "truth_per_game": args.truth_per_game,
                 "predictions_per_game": args.preds_per_game, "seed": args.seed, "framerate": 2},
        "json_parse_cpu_s": round(parse_cpu, 3),
        "soccernet": runs,
        "e2e_spot_map": {"tolerances": [0, 1, 2, 4], "predictions": n_pred, "seconds": round(t_e2e, 3),
                         "cpu_seconds": round(c_e2e, 3),
                         "mAP": {str(t): e2e.mAP[t] for t in e2e.tolerances}},
    }
    if not args.no_write:
        out = ROOT / "docs" / "results"
        write_json_atomic(out / "eval.json", result)
        write_text_atomic(out / "eval.md", render(result))
        print(f"wrote {out / 'eval.md'} and {out / 'eval.json'}")
    return 0


def render(r: dict) -> str:
    m, d = r["machine"], r["data"]
    lines = [
        "# Evaluation speed: pespot vs the official SoccerNet evaluator",
        "",
        f"Command: `{r['command']}` (from the repository root).",
        "",
        (f"Data: {d['games']} random games ({d['halves']} halves, SoccerNet test-set size), {d['truth_per_game']} "
         f"truth events and {d['predictions_per_game']} predictions per game, 17 classes, seed {d['seed']}, "
         f"{d['framerate']} fps bins. Both evaluators read the same `Labels-v2.json` / `results_spotting.json` "
         "folders; pespot's time includes reading them. The run asserts that all six official outputs "
         "(a_mAP, visible, unshown, and their per-class lists) agree within 1e-9. Times are wall-clock seconds "
         "and, in brackets, CPU seconds of the process (the machine was shared)."),
        "",
        ("| metric | pespot (s) | official `evaluate` (s) | speed-up (CPU) | a_mAP | a_mAP visible | a_mAP unshown "
         "| max abs. difference |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in r["soccernet"]:
        off = (f"{run['official_s']:.1f} ({run['official_cpu_s']:.1f})" if run["official_s"] is not None
               else "not run")
        speed = f"{run['speedup_cpu']:.0f}x" if run["speedup_cpu"] is not None else "-"
        diff = f"{run['max_abs_difference']:.1e}" if run["max_abs_difference"] is not None else "-"
        lines.append(f"| {run['metric']} | {run['pespot_s']:.3f} ({run['pespot_cpu_s']:.3f}) | {off} | {speed} | {run['a_mAP']:.6f} | "
                     f"{run['a_mAP_visible']:.6f} | {run['a_mAP_unshown']:.6f} | {diff} |")
    e = r["e2e_spot_map"]
    lines += [
        "",
        (f"Parsing the {2 * d['games']} JSON files alone (Python's `json`) takes {r['json_parse_cpu_s']:.2f} s CPU "
         "of pespot's time; both evaluators pay it."),
        "",
        f"E2E-Spot mAP at frame tolerances {e['tolerances']} (2 fps) on the same data, {e['predictions']} "
        f"predictions: {e['seconds']:.3f} s ({e['cpu_seconds']:.3f} s CPU); mAP " + ", ".join(f"@{k}: {v:.4f}" for k, v in e["mAP"].items()) + ".",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores (shared with other work while this ran), {m['platform']}, "
        f"Python {m['python']}. Versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
