"""Evaluation speed: pespot's SoccerNet average-mAP vs the official ``SoccerNet`` package, same files, one run.

    python benchmarks/eval_speed.py                  # 100 games (test-set size), tight/loose/at1; writes docs/results/eval.*
    python benchmarks/eval_speed.py --games 10 --metrics tight --no-write

Generates random SoccerNet-v2-like games (two 45-47 min halves; ~220 truth events per game over the 17 classes
with a skewed class distribution, ~25% "not shown"; a few thousand predictions per game: jittered copies of the
truth plus uniform false positives), writes them as ``Labels-v2.json`` / ``results_spotting.json`` folders,
then times ``pespot.metrics.soccernet_average_map`` (reading included) and the official
``SoccerNet.Evaluation.ActionSpotting.evaluate(..., dataset=None, EVENT_DICTIONARY=EVENT_DICTIONARY_V2)`` on the
same folders, asserts that all six official outputs agree within 1e-9, and also times pespot's E2E-Spot
mAP@{0,1,2,4} on the same data at 2 fps.

It then times the whole command, start-up included, each in a fresh process: ``pespot eval --soccernet GT PRED
--metric M --json`` (as ``python -m pespot``, which is what the ``pespot`` script runs) against ``python -c`` that
imports ``SoccerNet``, calls the same ``evaluate`` and prints its result as JSON, alternating, ``--repeats`` times
each (median wall and CPU seconds, user + system, of that child alone from ``os.wait4``; the outputs of both are
checked against each other too). Start-up alone: ``python -c pass`` (the floor), ``pespot --version``, ``pespot
--help``, ``pespot eval --help`` and the official module's import, median of ``--startup-repeats``, and whether
each pespot command imports torch. Results go to ``docs/results/eval.md`` and ``docs/results/eval.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import pespot
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


# The official evaluator as a user runs it: a fresh Python that imports the package and evaluates two folders.
OFFICIAL_COMMAND = """
import json, sys
import numpy as np
from SoccerNet.Evaluation.ActionSpotting import evaluate
from SoccerNet.Evaluation.utils import EVENT_DICTIONARY_V2
gt, pred, metric = sys.argv[1:]
r = evaluate(gt, pred, prediction_file="results_spotting.json", label_files="Labels-v2.json", split="test",
             version=2, framerate=2, metric=metric, dataset=None, EVENT_DICTIONARY=EVENT_DICTIONARY_V2)
print(json.dumps({k: np.asarray(v, float).tolist() for k, v in r.items() if k.startswith("a_mAP")}))
"""

# Runs the CLI's main in-process, then says on stderr's last line whether torch was imported.
TORCH_PROBE = """
import sys
from pespot.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stdout.flush()
print("torch imported:", "torch" in sys.modules, file=sys.stderr)
"""


def child_env() -> dict:
    """The environment of the timed children: they import the same pespot as this process."""
    src = str(Path(pespot.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}


def run_child(cmd: list[str]) -> dict:
    """Run ``cmd`` to its end: wall seconds and CPU seconds (user + system) of that child alone, its output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=child_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited with {proc.returncode}:\n{stderr[-2000:]}")
    # no peak memory: a forked child's ru_maxrss starts from this (large) process's, so it would say nothing
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "stdout": stdout, "stderr": stderr}


def medians(runs: list[dict]) -> dict:
    """Median wall and CPU seconds over repeated runs, and the single values."""
    return {"wall_s": round(statistics.median(r["wall_s"] for r in runs), 3),
            "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 3),
            "wall_runs_s": [round(r["wall_s"], 3) for r in runs], "cpu_runs_s": [round(r["cpu_s"], 3) for r in runs]}


def imports_torch(args: list[str]) -> bool:
    """Whether ``pespot ARGS`` imports torch (the CLI's main run in a fresh process)."""
    stderr = run_child([sys.executable, "-c", TORCH_PROBE, *args])["stderr"]
    return stderr.strip().splitlines()[-1] == "torch imported: True"


def whole_commands(root: Path, metrics: list[str], repeats: int) -> list[dict]:
    """Each metric's whole command, start-up included, pespot's and the official one alternating."""
    gt, pred = str(root / "gt"), str(root / "pred")
    rows = []
    for metric in metrics:
        ours_cmd = [sys.executable, "-m", "pespot", "eval", "--soccernet", gt, pred, "--metric", metric, "--json"]
        ref_cmd = [sys.executable, "-c", OFFICIAL_COMMAND, gt, pred, metric]
        ours_runs, ref_runs = [], []
        for _ in range(repeats):
            ours_runs.append(run_child(ours_cmd))
            ref_runs.append(run_child(ref_cmd))
        diff = max(max_difference(json.loads(o["stdout"]), json.loads(r["stdout"]))
                   for o, r in zip(ours_runs, ref_runs))
        assert diff <= 1e-9, f"{metric}: the pespot and official commands differ by {diff}"
        ours, ref = medians(ours_runs), medians(ref_runs)
        rows.append({"metric": metric, "pespot": ours, "official": ref,
                     "ratio_cpu": round(ref["cpu_s"] / ours["cpu_s"], 1),
                     "ratio_wall": round(ref["wall_s"] / ours["wall_s"], 1), "max_abs_difference": diff,
                     "pespot_imports_torch": imports_torch(ours_cmd[3:])})
        print(f"{metric}, whole command: pespot {ours['wall_s']:.2f} s ({ours['cpu_s']:.2f} CPU), official "
              f"{ref['wall_s']:.1f} s ({ref['cpu_s']:.1f} CPU), {rows[-1]['ratio_cpu']:.1f}x CPU, "
              f"{rows[-1]['ratio_wall']:.1f}x wall", flush=True)
    return rows


STARTUP = [("python -c pass", ["-c", "pass"], None),
           ("pespot --version", ["-m", "pespot", "--version"], ["--version"]),
           ("pespot --help", ["-m", "pespot", "--help"], ["--help"]),
           ("pespot eval --help", ["-m", "pespot", "eval", "--help"], ["eval", "--help"]),
           ("python -c 'import SoccerNet.Evaluation.ActionSpotting'",
            ["-c", "import SoccerNet.Evaluation.ActionSpotting"], None)]


def startup(repeats: int) -> list[dict]:
    """Start-up alone: each command's median over ``repeats`` fresh processes, and whether it imports torch."""
    rows = []
    for name, args, cli_args in STARTUP:
        row = {"command": name, **medians([run_child([sys.executable, *args]) for _ in range(repeats)]),
               "imports_torch": imports_torch(cli_args) if cli_args is not None else None}
        rows.append(row)
        print(f"start-up, {name}: {row['wall_s']:.3f} s ({row['cpu_s']:.3f} CPU), torch imported: "
              f"{row['imports_torch']}", flush=True)
    return rows


def max_difference(ours: dict, ref: dict) -> float:
    return max(float(np.max(np.abs(np.asarray(ours[k], float) - np.asarray(ref[k], float)))) for k in KEYS)


def machine() -> dict:
    out = {**common_machine(), "python": platform.python_version()}
    out.pop("load_average_1min", None)  # the run records it at its start and end instead
    return out


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
    parser.add_argument("--repeats", type=int, default=3, help="runs of each whole command (median reported)")
    parser.add_argument("--startup-repeats", type=int, default=5, help="runs of each start-up command")
    parser.add_argument("--machine-note", default="",
                        help="what else ran on the machine, for the report (e.g. 'two training jobs')")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/results/eval.*")
    args = parser.parse_args()

    load_start = round(os.getloadavg()[0], 2)
    started = time.perf_counter()
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

        whole = whole_commands(root, args.metrics, args.repeats)
    start_rows = startup(args.startup_repeats)
    load_end = round(os.getloadavg()[0], 2)

    niceness = os.nice(0)
    command = (f"nice -n {niceness} " if niceness else "") + "python benchmarks/eval_speed.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:])
    result = {
        "command": command.strip(), "machine": {**machine(), "load_average_1min_start": load_start,
                                                "load_average_1min_end": load_end, "niceness": niceness,
                                                "note": args.machine_note},
        "versions": versions(), "seconds": round(time.perf_counter() - started),
        "data": {"games": args.games, "halves": 2 * args.games, "truth_per_game": args.truth_per_game,
                 "predictions_per_game": args.preds_per_game, "seed": args.seed, "framerate": 2},
        "json_parse_cpu_s": round(parse_cpu, 3),
        "soccernet": runs,
        "e2e_spot_map": {"tolerances": [0, 1, 2, 4], "predictions": n_pred, "seconds": round(t_e2e, 3),
                         "cpu_seconds": round(c_e2e, 3),
                         "mAP": {str(t): e2e.mAP[t] for t in e2e.tolerances}},
        "whole_command": {"repeats": args.repeats, "runs": whole},
        "startup": {"repeats": args.startup_repeats, "runs": start_rows},
    }
    if not args.no_write:
        out = ROOT / "docs" / "results"
        write_json_atomic(out / "eval.json", result)
        write_text_atomic(out / "eval.md", render(result))
        print(f"wrote {out / 'eval.md'} and {out / 'eval.json'}")
    return 0


def render(r: dict) -> str:
    m, d = r["machine"], r["data"]
    w, st = r["whole_command"], r["startup"]
    loaded = (f"Load: 1-minute load average {m['load_average_1min_start']:.2f} at the start and "
              f"{m['load_average_1min_end']:.2f} at the end on {m['cores']} cores"
              + (f"; {m['note']}" if m["note"] else "")
              + (f"; the benchmark ran under `nice -n {m['niceness']}`" if m["niceness"] else "")
              + ". Wall-clock times depend on what else runs; CPU seconds (user + system) are the comparison to "
              "trust, and the ratios are CPU ratios unless they say wall.")
    lines = [
        "# Evaluation speed: pespot vs the official SoccerNet evaluator",
        "",
        f"Command: `{r['command']}` (from the repository root), {r['seconds']} s in all.",
        "",
        (f"Data: {d['games']} random games ({d['halves']} halves, SoccerNet test-set size), {d['truth_per_game']} "
         f"truth events and {d['predictions_per_game']} predictions per game, 17 classes, seed {d['seed']}, "
         f"{d['framerate']} fps bins. Both evaluators read the same `Labels-v2.json` / `results_spotting.json` "
         "folders. Every run asserts that all six official outputs (a_mAP, visible, unshown, and their per-class "
         "lists) agree within 1e-9."),
        "",
        loaded,
        "",
        "## Whole command, start-up included",
        "",
        (f"Each command in a fresh process, the two alternating, {w['repeats']} times each; median wall-clock "
         "seconds and, in brackets, median CPU seconds of that process alone (`os.wait4`). pespot: `python -m "
         "pespot eval --soccernet GT PRED --metric M --json` (what the `pespot` script runs). Official: `python -c` "
         "that imports `SoccerNet.Evaluation.ActionSpotting`, calls `evaluate(GT, PRED, ..., metric=M, dataset=None, "
         "EVENT_DICTIONARY=EVENT_DICTIONARY_V2)` and prints the result as JSON. Both print their numbers, and the "
         "printed numbers agree within 1e-9."),
        "",
        ("| metric | `pespot eval` (s) | official `python -c` (s) | official / pespot (CPU) | official / pespot (wall) "
         "| pespot imports torch |"),
        "|---|---|---|---|---|---|",
    ]
    for row in w["runs"]:
        o, f = row["pespot"], row["official"]
        lines.append(f"| {row['metric']} | {o['wall_s']:.2f} ({o['cpu_s']:.2f}) | {f['wall_s']:.1f} ({f['cpu_s']:.1f}) "
                     f"| {row['ratio_cpu']:.1f}x | {row['ratio_wall']:.1f}x | {'yes' if row['pespot_imports_torch'] else 'no'} |")
    ratios = [row["ratio_cpu"] for row in w["runs"]]
    cpu = {row["command"]: row["cpu_s"] for row in st["runs"]}
    ours_start, ref_start = cpu.get("pespot eval --help"), cpu.get(STARTUP[-1][0])
    if ratios and ours_start is not None and ref_start is not None:
        verdict = ("pespot pays more up front and wins it back in the computation" if ours_start > ref_start
                   else "pespot also starts with less")
        lines += ["", (f"Start-up included, the official command used {min(ratios):.1f}-{max(ratios):.1f}x the CPU of "
                       f"pespot's. Start-up alone, `pespot eval --help` costs {ours_start:.2f} s CPU and importing "
                       f"the official evaluator {ref_start:.2f} s: {verdict}.")]
    lines += [
        "",
        "## Start-up alone",
        "",
        (f"Median of {st['repeats']} fresh processes each; `python -c pass` is the floor every Python command "
         "pays, the last row is the official evaluator's import alone. Whether torch is imported: the CLI's `main` run with the same arguments in a fresh process, then "
         "`'torch' in sys.modules`."),
        "",
        "| command | wall (s) | CPU (s) | imports torch |",
        "|---|---|---|---|",
    ]
    for row in st["runs"]:
        torch_cell = "-" if row["imports_torch"] is None else ("yes" if row["imports_torch"] else "no")
        lines.append(f"| `{row['command']}` | {row['wall_s']:.3f} | {row['cpu_s']:.3f} | {torch_cell} |")
    lines += [
        "",
        "## Computation alone, in one process",
        "",
        ("pespot's `soccernet_average_map` (reading the files included) and the official `evaluate` called in this "
         "benchmark's process, once each; imports are not counted. Wall-clock seconds and, in brackets, CPU "
         "seconds of the process."),
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
        lines.append(f"| {run['metric']} | {run['pespot_s']:.3f} ({run['pespot_cpu_s']:.3f}) | {off} | {speed} | "
                     f"{run['a_mAP']:.6f} | {run['a_mAP_visible']:.6f} | {run['a_mAP_unshown']:.6f} | {diff} |")
    e = r["e2e_spot_map"]
    lines += [
        "",
        (f"Parsing the {2 * d['games']} JSON files alone (Python's `json`) takes {r['json_parse_cpu_s']:.2f} s CPU "
         "of pespot's time; both evaluators pay it."),
        "",
        f"E2E-Spot mAP at frame tolerances {e['tolerances']} (2 fps) on the same data, {e['predictions']} "
        f"predictions: {e['seconds']:.3f} s ({e['cpu_seconds']:.3f} s CPU); mAP "
        + ", ".join(f"@{k}: {v:.4f}" for k, v in e["mAP"].items()) + ".",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, "
        f"Python {m['python']}. Versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
