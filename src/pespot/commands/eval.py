"""mAP at frame tolerances (E2E-Spot definition), or the official SoccerNet average-mAP.

    pespot eval TRUTH.json PRED.json [--classes class.txt] [--tolerances 0 1 2 4] [--nms W] [--plot DIR] [--json]
    pespot eval --soccernet LABELS_ROOT PRED_ROOT [--metric tight|loose|at1..at5] [--framerate 2] [--json]
    pespot eval --soccernet LABELS_ROOT PRED.json --fps 2 [--nms W]
    pespot eval --choose-nms VAL.json PRED.json [--nms-windows 1 2 4 8 16] [--tolerances 0 1 2 4] [--run RUN]

Frame-tolerance mode: classes come from ``--classes``, else a ``class.txt`` next to TRUTH.json, else the truth
events. Every truth video is evaluated; one without predictions has none, and predictions for a video that is
not in the truth are an error, and so is a prediction whose ``num_frames`` differs from the truth's (another version
of the video). Duplicated truth events (same video, frame and class) are counted once, with a warning naming the
file and how many (``pespot.data.labels.drop_duplicate_events``). With ``--nms W`` the table is printed twice, as E2E-Spot's eval.py does: on the
raw predictions and after NMS (``--nms-method``, default E2E-Spot's local maximum); ``--json`` then reports the
NMS numbers at the top level and the raw ones under ``without_nms``.

NMS choice (``--choose-nms``): on a validation split and its predictions (made with ``pespot infer --nms none``,
so that every candidate is still there), evaluate every NMS method (none, local_max, greedy, soft) with every
window of ``--nms-windows``, print the table and pick the method and window with the highest mean mAP over the
tolerances (ties: the smaller window, then that order of methods). Soft-NMS drops events decayed below 0.01, as
``--nms-method soft`` does. With ``--run RUN`` the choice is stored in ``RUN/nms.json``: ``pespot infer`` and
``pespot stream`` then use it for that run unless --nms / --nms-window say otherwise. Training makes the same
choice on its validation split at its end when the config says ``eval.choose_nms: true``.

SoccerNet mode: both roots hold ``<league>/<season>/<game>/`` folders (``Labels-v2.json``;
``results_spotting.json``). A game without a prediction file counts as a game without predictions (a warning
names how many). PRED may also be a pespot prediction JSON whose video ids are ``<game>/half1|half2``: it is
converted in memory at ``--fps`` (default: each video's fps), after optional NMS. The official evaluator keeps
only the last prediction of a class per bin; a warning says how many were overwritten.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from pespot.errors import PespotError
from pespot.fsutil import check_writable_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pespot eval``."""
    from pespot.config import EvalConfig

    tolerances, nms_windows = EvalConfig().tolerances, EvalConfig().nms_windows
    parser.add_argument("truth", metavar="TRUTH", help="truth split JSON (E2E-Spot format), or with --soccernet "
                        "the labels root")
    parser.add_argument("pred", metavar="PRED", help="prediction JSON, or with --soccernet the predictions root "
                        "(or a prediction JSON)")
    parser.add_argument("--soccernet", action="store_true",
                        help="official SoccerNet average-mAP: TRUTH = LABELS_ROOT, PRED = PRED_ROOT or PRED.json")
    parser.add_argument("--classes", metavar="CLASS_TXT", help="class list (default: class.txt next to TRUTH, "
                        "else the truth's labels; with --soccernet: SoccerNet-v2's 17 classes)")
    parser.add_argument("--tolerances", type=int, nargs="+", default=list(tolerances), metavar="T",
                        help=f"tolerances in frames (default {' '.join(map(str, tolerances))})")
    parser.add_argument("--nms", type=int, metavar="W", help="also evaluate after NMS with a window of W frames")
    parser.add_argument("--nms-method", default="local_max", choices=["local_max", "greedy", "soft"],
                        help="NMS used by --nms; local_max is E2E-Spot's (default %(default)s)")
    parser.add_argument("--choose-nms", action="store_true",
                        help="TRUTH = a validation split, PRED = its predictions without NMS: pick the NMS method "
                             "and window with the highest mean mAP over --tolerances; prints the table")
    parser.add_argument("--nms-windows", type=int, nargs="+", default=list(nms_windows), metavar="W",
                        help=f"windows (frames) tried by --choose-nms (default {' '.join(map(str, nms_windows))})")
    parser.add_argument("--run", metavar="RUN", help="with --choose-nms: store the choice in RUN/nms.json, which "
                        "pespot infer and pespot stream then use for that run")
    parser.add_argument("--plot", metavar="DIR", help="write figures: per-class AP bars and event timelines")
    parser.add_argument("--videos", nargs="+", metavar="ID", help="videos for the timelines (default: the first 3)")
    parser.add_argument("--metric", default="tight", choices=["tight", "loose", "at1", "at2", "at3", "at4", "at5"],
                        help="SoccerNet metric (default %(default)s)")
    parser.add_argument("--framerate", type=float, default=2, help="SoccerNet evaluation bins per second "
                        "(default %(default)g)")
    parser.add_argument("--fps", type=float, help="frame rate of a PRED.json given with --soccernet "
                        "(default: each video's fps)")
    parser.add_argument("--label-file", default="Labels-v2.json", help="SoccerNet label file name (default %(default)s)")
    parser.add_argument("--prediction-file", default="results_spotting.json", help="SoccerNet prediction file name (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the report."""
    if args.run is not None and not args.choose_nms:
        raise PespotError("--run: only with --choose-nms (it stores the chosen NMS in the run)")
    if args.plot is not None:
        check_writable_dir(args.plot, "--plot folder")  # before the labels are read
    if args.soccernet:
        if args.choose_nms:
            raise PespotError("--choose-nms works on frame-tolerance mAP, not with --soccernet")
        return _run_soccernet(args)
    if args.choose_nms:
        return _run_choose_nms(args)
    return _run_frames(args)


# ------------------------------------------------------------------------------------------------------------
# mAP at frame tolerances


def _classes_for(truth_path: Path, given: str | None) -> list[str] | None:
    from pespot.data.labels import load_classes

    if given:
        return load_classes(given)
    beside = truth_path.parent / "class.txt"
    return load_classes(beside) if beside.is_file() else None


def _table(result, title: str) -> str:
    tols = result.tolerances
    names = list(result.per_class)
    width = max([len("Avg mAP (across tolerances)")] + [len(n) for n in names])
    lines = [f"{title} (%)", f"{'AP @ tol':<{width}}  " + "  ".join(f"{t:>7}" for t in tols)]
    lines.append("-" * len(lines[-1]))
    for name in names:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{result.per_class[name][t] * 100:7.2f}" for t in tols))
    lines.append("-" * len(lines[1]))
    lines.append(f"{'mAP':<{width}}  " + "  ".join(f"{result.mAP[t] * 100:7.2f}" for t in tols))
    lines.append(f"{'Avg mAP (across tolerances)':<{width}}  {result.average_mAP * 100:7.2f}")
    return "\n".join(lines)


def _load_frames_inputs(args: argparse.Namespace) -> tuple[list, list, list[str] | None]:
    """(truth, predictions, classes) of frame-tolerance mode, checked; errors name the file and entry."""
    from pespot.data.labels import load_split, report_duplicate_events, validate_split

    truth_path, pred_path = Path(args.truth), Path(args.pred)
    if truth_path.is_dir():
        raise PespotError(f"{truth_path}: expected a truth split JSON (for SoccerNet label folders use --soccernet)")
    classes = _classes_for(truth_path, args.classes)
    truth = load_split(truth_path, classes)
    pred = load_split(pred_path, predictions=True)
    _check_not_swapped(truth, pred, truth_path, pred_path)
    # Without a class list the checks that need none still run here, so that a duplicated video or an event
    # outside its video is reported with the file and entry rather than by the metric.
    validate_split(truth, classes, str(truth_path))
    validate_split(pred, classes, str(pred_path), predictions=True)
    report_duplicate_events(truth, truth_path)
    truth_frames = {v.video: v.num_frames for v in truth}
    for vi, v in enumerate(pred):
        if v.video not in truth_frames:
            raise PespotError(f"{pred_path}: entry {vi}: video '{v.video}' is not in the truth {truth_path}")
        if v.num_frames >= 0 and truth_frames[v.video] >= 0 and v.num_frames != truth_frames[v.video]:
            raise PespotError(f"{pred_path}: entry {vi}: video '{v.video}' has {v.num_frames} frames, the truth "
                              f"{truth_path} says {truth_frames[v.video]} (predictions of another version of the "
                              "video?)")
        for i, e in enumerate(v.events):
            if e.score is None:
                raise PespotError(f"{pred_path}: entry {vi} (video '{v.video}'), event {i}: prediction without "
                                  "a 'score'")
            if not math.isfinite(e.score):
                raise PespotError(f"{pred_path}: entry {vi} (video '{v.video}'), event {i}: 'score' must be a "
                                  f"finite number, got {e.score!r}")
    return truth, pred, classes


def _check_not_swapped(truth: list, pred: list, truth_path: Path, pred_path: Path) -> None:
    """TRUTH comes first: a PRED without any score next to a TRUTH whose events all have one was given the other
    way round."""
    truth_events = [e for v in truth for e in v.events]
    pred_events = [e for v in pred for e in v.events]
    pred_scored = any(e.score is not None for e in pred_events)
    truth_scored = bool(truth_events) and all(e.score is not None for e in truth_events)
    if pred_events and not pred_scored and truth_scored:
        raise PespotError(f"{pred_path}: has no scores but {truth_path} does: TRUTH and PRED look swapped; "
                          f"the truth comes first: pespot eval {pred_path} {truth_path}")


def _run_frames(args: argparse.Namespace) -> int:
    from pespot.metrics import compute_map
    from pespot.postprocess import apply_nms

    truth, pred, classes = _load_frames_inputs(args)
    raw = compute_map(truth, pred, classes, args.tolerances)
    final, nms_pred = raw, pred
    if args.nms is not None:
        nms_pred = apply_nms(pred, args.nms_method, args.nms)
        final = compute_map(truth, nms_pred, classes, args.tolerances)

    plots: list[str] = []
    if args.plot:
        from pespot.viz import plot_per_class_ap, plot_timelines

        plots += [str(p) for p in plot_per_class_ap(final, args.plot)]
        plots += [str(p) for p in plot_timelines(truth, nms_pred, args.plot, args.videos, classes)]

    if final.videos_without_predictions and not args.json:
        print(f"note: {len(final.videos_without_predictions)} of {final.videos} truth videos have no predictions "
              "(counted as none)", file=sys.stderr)
    if args.json:
        out = final.to_json()
        if args.nms is not None:
            out["nms"] = {"method": args.nms_method, "window": args.nms}
            raw_json = raw.to_json()
            out["without_nms"] = {k: raw_json[k] for k in ("mAP", "per_class", "average_mAP")}
        if plots:
            out["plots"] = plots
        print(json.dumps(out))
        return 0
    print(_table(raw, "mAP without NMS" if args.nms is not None else "mAP"))
    if args.nms is not None:
        print()
        if (final.mAP, final.per_class) != (raw.mAP, raw.per_class):
            print(_table(final, f"mAP with NMS ({args.nms_method}, window {args.nms})"))
        else:  # e.g. predictions of `pespot infer`, which applied the run's NMS already: no second, equal table
            print(f"mAP with NMS ({args.nms_method}, window {args.nms}): the same as without (predictions of "
                  "`pespot infer` have had an NMS already)")
    for p in plots:
        print(f"wrote {p}")
    return 0


def _run_choose_nms(args: argparse.Namespace) -> int:
    """Every NMS method x window on the validation predictions; print the table and the best."""
    from pespot.postprocess import choose_nms, nms_candidates, write_nms_choice

    if any(w < 0 for w in args.nms_windows):
        raise PespotError(f"--nms-windows: expected non-negative numbers of frames, got {args.nms_windows}")
    if args.run is not None and not (Path(args.run) / "checkpoints").is_dir():
        raise PespotError(f"--run {args.run}: not a run folder (no checkpoints/)")
    truth, pred, classes = _load_frames_inputs(args)
    best, rows = choose_nms(truth, classes, args.tolerances, nms_candidates(pred), args.nms_windows)
    stored = None
    if args.run is not None:
        stored = write_nms_choice(args.run, best, rows, chosen_on=f"{args.truth} (predictions {args.pred})")
    tolerances = [int(t) for t in rows[0]["mAP"]]
    if args.json:
        print(json.dumps({"tolerances": tolerances, "table": rows, "chosen": best,
                          "stored": None if stored is None else str(stored)}))
        return 0
    print(f"NMS on {args.pred} against {args.truth} (mAP %, mean over tolerances {' '.join(map(str, tolerances))})")
    header = f"{'method':<10} {'window':>6}  " + "  ".join(f"{'mAP@' + str(t):>7}" for t in tolerances) + "     mean"
    print(header)
    print("-" * len(header))
    for row in rows:
        window = "-" if row["window"] is None else str(row["window"])
        mark = "  <- chosen" if row is best else ""
        print(f"{row['method']:<10} {window:>6}  " + "  ".join(f"{row['mAP'][str(t)] * 100:7.2f}" for t in tolerances)
              + f"  {row['average_mAP'] * 100:7.2f}{mark}")
    if best["method"] == "none":
        print("chosen: no NMS (--nms none)")
    else:
        print(f"chosen: --nms {best['method']} --nms-window {best['window']} (in a run's config: "
              f"eval.nms={best['method']} eval.nms_window={best['window']})")
    if stored is not None:
        print(f"stored in {stored}: pespot infer and pespot stream use it for this run (--nms and --nms-window "
              "still override it)")
    return 0


# ------------------------------------------------------------------------------------------------------------
# SoccerNet


def _run_soccernet(args: argparse.Namespace) -> int:
    from pespot.data.labels import load_classes, load_split, read_json
    from pespot.data.soccernet import SOCCERNET_V2_CLASSES, find_games, split_video_id, videos_to_results
    from pespot.metrics import SoccerNetGame, soccernet_average_map, soccernet_average_map_games
    from pespot.postprocess import apply_nms

    labels_root, pred_path = Path(args.truth), Path(args.pred)
    if not labels_root.is_dir():
        raise PespotError(f"{labels_root}: expected the SoccerNet labels root (a folder of <league>/<season>/<game>/)")
    classes = load_classes(args.classes) if args.classes else list(SOCCERNET_V2_CLASSES)
    if pred_path.is_dir():
        result = soccernet_average_map(labels_root, pred_path, metric=args.metric, framerate=args.framerate,
                                       classes=classes, label_file=args.label_file,
                                       prediction_file=args.prediction_file)
    elif pred_path.is_file():
        pred = load_split(pred_path, classes, predictions=True)
        if args.nms is not None:
            pred = apply_nms(pred, args.nms_method, args.nms)
        for v in pred:
            split_video_id(v.video)  # clear error for ids that are not <game>/halfN
        results = videos_to_results(pred, args.fps)
        names = find_games(labels_root, args.label_file)
        unknown = sorted(set(results) - set(names))
        if unknown:
            raise PespotError(f"{pred_path}: predictions for game '{unknown[0]}' which has no {args.label_file} "
                              f"under {labels_root}")
        games = []
        for name in names:
            lp = labels_root / name / args.label_file
            games.append(SoccerNetGame(game=name, labels=read_json(lp), labels_path=str(lp),
                                       predictions=results.get(name), predictions_path=f"{pred_path} ({name})"))
        result = soccernet_average_map_games(games, metric=args.metric, framerate=args.framerate, classes=classes)
    else:
        raise PespotError(f"{pred_path}: not found (expected a predictions root or a prediction JSON)")

    plots: list[str] = []
    if args.plot:
        from pespot.viz import plot_class_bars

        values = dict(zip(classes, result["a_mAP_per_class"]))
        path = Path(args.plot) / f"soccernet_{args.metric}_per_class.png"
        plots.append(str(plot_class_bars(values, path, title=f"SoccerNet {args.metric} average-mAP per class",
                                         xlabel="a-mAP (%)", mean=result["a_mAP"])))
        result["plots"] = plots

    missing = result["games_without_predictions"]
    if missing:
        print(f"warning: {len(missing)} of {result['games']} games have no predictions (counted as none), "
              f"e.g. {missing[0]}", file=sys.stderr)
    if result["predictions_overwritten"]:
        print(f"warning: {result['predictions_overwritten']} predictions were overwritten by a later one of the "
              f"same class in the same 1/{args.framerate:g} s bin (the official evaluator keeps the last; "
              "apply NMS first)", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"SoccerNet average-mAP (%) ({args.metric}, deltas {result['deltas']} s, {result['games']} games)")
    print(f"  a_mAP          {result['a_mAP'] * 100:6.2f}")
    print(f"  a_mAP visible  {result['a_mAP_visible'] * 100:6.2f}")
    print(f"  a_mAP unshown  {result['a_mAP_unshown'] * 100:6.2f}")
    width = max(len(c) for c in classes)
    print(f"\n{'class':<{width}}  {'all':>7}  {'visible':>7}  {'unshown':>7}")
    for i, c in enumerate(classes):
        print(f"{c:<{width}}  {result['a_mAP_per_class'][i] * 100:7.2f}  "
              f"{result['a_mAP_per_class_visible'][i] * 100:7.2f}  {result['a_mAP_per_class_unshown'][i] * 100:7.2f}")
    for p in plots:
        print(f"wrote {p}")
    return 0
