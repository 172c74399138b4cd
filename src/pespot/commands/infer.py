"""`pespot infer RUN_OR_CKPT INPUT... --out PRED.json`: spot events in raw videos, frame folders or a split.

INPUT is a raw video file (mp4, mkv, avi...: fps from the container), a folder of video files (each is spotted),
a frame folder (fps from --fps, else unknown), a compact-store mp4, or a split JSON (every video of the split; fps
from the JSON) whose frame store is --frames DIR or, without it, the frames/ folder beside the JSON.
Video ids: the file stem of a video, the folder name of a frame folder, the JSON's ids for a split.

An input that fails (missing path, corrupt video, empty folder) is reported on stderr in one line naming it;
the others still run, the exit code is non-zero, and the output files hold the videos that succeeded. Outputs
are written atomically once all inputs are done (per-video score files as each video finishes).

Engines: ``--engine torch`` (default) rebuilds the model from the checkpoint; ``--engine onnx`` runs the model
exported by ``pespot export RUN --format onnx`` with onnxruntime (RUN_OR_CKPT = the run folder, whose
export/spotter.onnx must come from its current checkpoint, or the .onnx file; or ``--model FILE.onnx``).
Both cut the same windows and apply the same NMS. ``--tta flip`` averages each window's scores with those of
its horizontal mirror.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pespot.commands.options import add_nms_options
from pespot.errors import ConfigError, PespotError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pespot infer``."""
    from pespot.config import run_default

    parser.add_argument("run", metavar="RUN_OR_CKPT",
                        help="run folder (checkpoints/best.pt, else last.pt) or checkpoint file")
    parser.add_argument("inputs", metavar="INPUT", nargs="+",
                        help="video file, folder of videos, frame folder, compact-store mp4, or split JSON (frames: --frames "
                             "or frames/ beside it)")
    parser.add_argument("--out", metavar="PRED.json", help="E2E-Spot prediction JSON")
    parser.add_argument("--frames", metavar="DIR", help="frame store of split JSON inputs (<DIR>/<video>/ or .mp4; default: frames/ beside the JSON)")
    parser.add_argument("--fps", type=float, help="frame rate of frame-folder inputs (videos use their own)")
    parser.add_argument("--classes", metavar="FILE", help="class.txt naming the model's classes (same number)")
    parser.add_argument("--csv", metavar="FILE", help="also write events as CSV: video, frame, time, label, score")
    parser.add_argument("--soccernet", metavar="DIR",
                        help="also write SoccerNet results_spotting.json per game (video ids <league>/<season>/<game>/half1|half2)")
    parser.add_argument("--save-scores", metavar="DIR",
                        help="also write per-frame scores as <DIR>/<video>.npz (for ensembles)")
    parser.add_argument("--overlap", type=float, help=f"window overlap, fraction of the clip (default: {run_default('eval.overlap')})")
    parser.add_argument("--threshold", type=float,
                        help="candidates: (frame, class) scores >= this (default: "
                             f"{run_default('eval.threshold')}; 0 = every local maximum whatever its score, so no floor decides a ranking; 0.01 = "
                             "E2E-Spot's softmax setting, which drops calibrated sigmoid scores of rare classes)")
    parser.add_argument("--top-k", type=int,
                        help="keep at most this many events per class and video, the best-scoring (default: "
                             f"{run_default('eval.top_k')}); bounds the output of long videos")
    add_nms_options(parser)
    parser.add_argument("--batch-size", type=int,
                        help=f"windows per forward pass (default: {run_default('eval.batch_size')})")
    parser.add_argument("--tta", choices=["none", "flip"],
                        help="test-time augmentation: flip = mean of the scores of each window and its horizontal "
                             f"mirror (twice the compute; default: {run_default('eval.tta')})")
    parser.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                        help="torch | onnx: onnxruntime (CUDA provider when present, else CPU) on the "
                             "model made by `pespot export --format onnx`: RUN_OR_CKPT is then that .onnx file or "
                             "a run folder holding export/spotter.onnx (default %(default)s)")
    parser.add_argument("--model", metavar="FILE.onnx", help="with --engine onnx: this exported model instead")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the final summary as one JSON object")


def load_engine(args: argparse.Namespace, classes: list[str] | None):
    """The predictor ``--engine`` (and ``--model``, ``--tta``, ``--device``) ask for; shared with ``pespot stream``."""
    from pespot import infer

    if args.model and args.engine != "onnx":
        raise ConfigError("--model: only with --engine onnx (the torch engine reads RUN_OR_CKPT)")
    if args.engine == "onnx":
        from pespot.export import load_onnx_predictor

        predictor = load_onnx_predictor(args.model or args.run, device=args.device, classes=classes,
                                        classes_source=args.classes or "--classes",
                                        run=args.run if args.model else None)
    else:
        predictor = infer.load_predictor(args.run, device=args.device, classes=classes,
                                         classes_source=args.classes or "--classes")
    if args.tta is not None:
        predictor.tta = args.tta
    return predictor


def nms_in_use(args: argparse.Namespace, predictor) -> dict:
    """The NMS that --nms / --nms-window and the run ask for: {method, window, from}, where ``from`` is
    'options', the run's nms.json, or 'config' (the run's eval.nms); shared with ``pespot stream``."""
    ev = predictor.cfg.eval
    given = args.nms is not None or args.nms_window is not None
    return {"method": ev.nms if args.nms is None else args.nms,
            "window": ev.nms_window if args.nms_window is None else args.nms_window,
            "from": "options" if given else predictor.nms_from or "config"}


def nms_note(nms: dict, predictor) -> str | None:
    """A line saying the NMS was chosen on validation, when the run's nms.json decided it."""
    from pespot.postprocess import describe_nms

    if predictor.nms_from is None or nms["from"] != predictor.nms_from:
        return None
    return f"NMS {describe_nms(nms['method'], nms['window'])}: chosen on validation ({predictor.nms_from})"


def check_outputs(args: argparse.Namespace) -> None:
    """Every output can be written (checked before the model is loaded or a frame decoded)."""
    from pespot.fsutil import check_writable_dir, check_writable_file

    for path, what in ((args.out, "--out prediction JSON"), (args.csv, "--csv events file")):
        if path is not None:
            check_writable_file(path, what)
    for path, what in ((args.soccernet, "--soccernet results folder"), (args.save_scores, "--save-scores folder")):
        if path is not None:
            check_writable_dir(path, what)


@dataclass
class _Job:
    """One video to run: its id, what it came from (for messages) and how to open its frames."""

    video: str
    origin: str  # the INPUT it came from
    open: Callable[[int], object]  # height -> FrameStream
    in_split: bool = False  # one of several videos of a split JSON: messages name the video too


def run(args: argparse.Namespace) -> int:
    """Run inference on every input; returns 1 if any input failed, else 0."""
    from pespot import infer
    from pespot.data.labels import load_classes

    if not (args.out or args.csv or args.soccernet or args.save_scores):
        raise ConfigError("nothing to write: give --out PRED.json (and/or --csv, --soccernet, --save-scores)")
    if args.fps is not None and args.fps <= 0:
        raise ConfigError(f"--fps: expected a positive frame rate, got {args.fps}")
    check_outputs(args)
    classes = load_classes(args.classes) if args.classes else None
    predictor = load_engine(args, classes)
    ev = predictor.cfg.eval
    overlap = ev.overlap if args.overlap is None else args.overlap
    threshold = ev.threshold if args.threshold is None else args.threshold
    top_k = ev.top_k if args.top_k is None else args.top_k
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k: expected a positive number of events per class, got {top_k}")
    used = nms_in_use(args, predictor)
    nms, nms_window = used["method"], used["window"]
    from pespot.registry import NMS

    if nms not in NMS:
        raise ConfigError(f"--nms '{nms}': expected one of {', '.join(NMS.names())}")
    batch_size = ev.batch_size if args.batch_size is None else args.batch_size
    infer.window_stride(predictor.clip_len, overlap)  # bad option values fail before any video is read
    if batch_size <= 0:
        raise ConfigError(f"--batch-size: expected a positive integer, got {batch_size}")
    if nms_window < 0:
        raise ConfigError(f"--nms-window: expected a non-negative number of frames, got {nms_window}")

    failures: list[dict[str, str]] = []

    def fail(origin: str, err: Exception, video: str | None = None) -> None:
        # One line naming the input (and the video of a split), without repeating what the message says.
        line = str(err)
        if video is not None and f"'{video}'" not in line:
            line = f"video '{video}': {line}"
        if origin not in line:
            line = f"{origin}: {line}"
        print(f"pespot infer: error: {line}", file=sys.stderr)
        failures.append({"input": origin, "error": line})

    preds: list[infer.VideoPrediction] = []
    seen: dict[str, str] = {}
    total_frames = 0
    started = time.perf_counter()
    for item in args.inputs:  # in the order given, so messages and outputs follow the command line
        try:
            jobs = _expand_input(item, args, predictor.classes)
        except PespotError as err:
            fail(item, err)
            continue
        for job in jobs:
            if job.video in seen:
                fail(job.origin, PespotError(f"{job.origin}: duplicated video id '{job.video}' (already read from "
                                              f"{seen[job.video]})"))
                continue
            seen[job.video] = job.origin
            t0 = time.perf_counter()
            try:
                stream = job.open(predictor.height)
                scores = infer.predict_scores(predictor, stream, overlap=overlap, batch_size=batch_size,
                                              progress=not args.quiet, desc=job.video)
                events = infer.scores_to_events(scores, predictor.classes, threshold=threshold, nms=nms,
                                                nms_window=nms_window, top_k=top_k)
                pred = infer.VideoPrediction(video=job.video, fps=stream.fps, scores=scores, events=events)
                if args.save_scores:
                    infer.write_scores_npz(pred, predictor.classes, args.save_scores)
            except PespotError as err:
                fail(job.origin, err, job.video if job.in_split else None)
                continue
            seconds = time.perf_counter() - t0
            total_frames += pred.num_frames
            preds.append(pred)
            if not args.json:
                print(f"{job.video}: {pred.num_frames} frames, {len(events)} events "
                      f"({pred.num_frames / max(seconds, 1e-9):.1f} frames/s)")
    elapsed = time.perf_counter() - started

    outputs = _write_outputs(args, preds, fail) if preds else {}

    summary = {
        "videos": len(preds),
        "events": sum(len(p.events) for p in preds),
        "frames": total_frames,
        "seconds": round(elapsed, 3),
        "fps": round(total_frames / elapsed, 2) if elapsed > 0 else None,
        "failures": failures,
        "outputs": outputs,
        "nms": used,
        **events_report(preds, predictor.classes, threshold, top_k),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        line = (f"{summary['videos']} videos, {summary['events']} events, {total_frames} frames in "
                f"{elapsed:.1f} s ({summary['fps'] or 0:.1f} frames/s)")
        if failures:
            line += f"; {len(failures)} failed"
        print(line)
        for line in report_lines(summary):
            print(line)
        note = nms_note(used, predictor)
        if note:
            print(note)
        if not preds:
            print("no video succeeded: nothing written")
        for kind, path in outputs.items():
            print(f"wrote {kind}: {path}")
    return 1 if failures else 0


# The low-score hint: at threshold 0, this many events or more whose median score is below LOW_SCORE. A model
# that learned has low-scoring candidates too (every local maximum of every class), and a few events at
# CONFIDENT or more; a weak one has none (the tour's 20-step run: 117 events on a video, the best 0.03).
LOW_SCORE, LOW_SCORE_MIN_EVENTS, CONFIDENT = 0.05, 10, 0.5


def events_report(preds: list, classes: list[str], threshold: float, top_k: int | None) -> dict:
    """What the numbers of a summary mean: the threshold and top-k in force, the events per class (in the
    model's class order) and the median score of the events kept."""
    import numpy as np

    per_class = dict.fromkeys(classes, 0)
    scores = []
    for pred in preds:
        for event in pred.events:
            per_class[event.label] = per_class.get(event.label, 0) + 1
            if event.score is not None:
                scores.append(float(event.score))
    median = float(np.median(scores)) if scores else None
    return {"threshold": threshold, "top_k": top_k, "events_per_class": per_class, "median_score": median,
            "confident_events": sum(score >= CONFIDENT for score in scores)}


def report_lines(summary: dict) -> list[str]:
    """The lines after the totals of ``pespot infer``: threshold, events per class and, when most of many events
    score low at threshold 0, what that means and what to do."""
    threshold = summary["threshold"]
    kept = "every local maximum, whatever its score" if threshold <= 0 else "scores below it dropped"
    top_k = f", at most {summary['top_k']} per class and video (--top-k)" if summary["top_k"] else ""
    lines = [f"threshold {threshold:g} ({kept}){top_k}"]
    if summary["events"]:
        counts = ", ".join(f"{label} {n}" for label, n in summary["events_per_class"].items())
        median = summary["median_score"]
        lines.append(f"events per class: {counts}" + (f"; median score {median:.3f}" if median is not None else ""))
        if (threshold <= 0 and median is not None and median < LOW_SCORE
                and summary["events"] >= LOW_SCORE_MIN_EVENTS):
            confident = summary["confident_events"]
            why = ("the model is weak or undertrained" if not confident else
                   f"every local maximum is kept, and {confident} of {summary['events']} score {CONFIDENT:g} or more")
            lines.append(f"most events have low scores: {why}; use --threshold or --top-k to keep fewer")
    return lines


def _write_outputs(args: argparse.Namespace, preds: list, fail: Callable[[str, Exception], None]) -> dict[str, str]:
    """Write the outputs the options ask for (the per-video score files are already there); {kind: path}."""
    from pespot import infer

    outputs: dict[str, str] = {}
    if args.out:
        infer.write_predictions_json(preds, args.out)
        outputs["json"] = args.out
    if args.csv:
        infer.write_predictions_csv(preds, args.csv)
        outputs["csv"] = args.csv
    if args.soccernet:
        try:
            infer.write_soccernet(preds, args.soccernet)
            outputs["soccernet"] = args.soccernet
        except PespotError as err:
            fail("--soccernet", err)
    if args.save_scores:
        outputs["scores"] = args.save_scores
    return outputs


def _expand_input(item: str, args: argparse.Namespace, classes: list[str]) -> list[_Job]:
    """One INPUT -> the videos it holds (a split JSON or a folder of video files holds many); a split's labels
    must be the model's ``classes``."""
    from pespot import infer
    from pespot.data.frames import VIDEO_SUFFIXES, find_video_frames, has_frame_images, open_frames
    from pespot.data.labels import load_split
    from pespot.errors import DataError

    path = Path(item)
    if not path.exists():
        raise DataError(f"{path}: no such video file, frame folder or split JSON")
    if path.is_file() and path.suffix.lower() == ".json":
        frames_root = split_frames(path, args.frames)
        videos = load_split(path, predictions=True)  # num_frames may be absent; then the store decides
        unknown = sorted({e.label for v in videos for e in v.events} - set(classes))
        if unknown:  # a split of another dataset: its predictions would carry the wrong class names
            raise DataError(f"{path}: labels of class(es) {', '.join(unknown[:5])} that the model does not know "
                            f"(its {len(classes)} classes: {', '.join(classes[:8])}"
                            f"{', ...' if len(classes) > 8 else ''}); use the model of this dataset, or "
                            "--classes to rename the model's classes")
        jobs = []
        for v in videos:
            def open_video(height: int, v=v) -> object:
                source = open_frames(find_video_frames(frames_root, v.video), height=height)
                if v.num_frames >= 0 and source.num_frames < v.num_frames:
                    raise DataError(f"video '{v.video}': the frame store has {source.num_frames} frames, "
                                    f"{path} says {v.num_frames}")
                limit = v.num_frames if v.num_frames >= 0 else None  # E2E-Spot reads the labelled frames only
                return infer.stream_from_source(source, name=v.video, num_frames=limit, fps=v.fps)

            jobs.append(_Job(video=v.video, origin=str(path), open=open_video, in_split=True))
        return jobs
    if path.is_dir() and not has_frame_images(path):
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                       and not p.name.startswith("."))
        if not files:
            raise DataError(f"{path}: no frames (expected 000000.jpg... or frame0.jpg...) and no video files "
                            f"({', '.join(VIDEO_SUFFIXES[:4])}...): give a frame folder, a folder of videos, "
                            "video files or a split JSON")
        return [_video_file_job(f) for f in files]  # a folder of videos: each its own video
    if path.is_dir():
        video_id = path.resolve().name

        def open_folder(height: int) -> object:
            return infer.stream_from_source(open_frames(path, height=height, fps=args.fps), name=video_id)

        return [_Job(video=video_id, origin=str(path), open=open_folder)]
    return [_video_file_job(path)]


def _video_file_job(path: Path) -> _Job:
    """A video file (or compact-store mp4) to spot; its id is the file stem."""
    from pespot import infer
    from pespot.data.frames import open_frames

    def open_file(height: int) -> object:
        return infer.stream_from_source(open_frames(path, height=height), name=path.stem)

    return _Job(video=path.stem, origin=str(path), open=open_file)


def split_frames(split: Path, frames: str | None) -> Path:
    """The frame store of a split JSON input: ``--frames``, else the ``frames/`` folder beside the JSON (the
    layout of ``pespot synth`` and of E2E-Spot's datasets; a line on stderr says it was taken)."""
    from pespot.errors import DataError

    if frames:
        return Path(frames)
    beside = split.parent / "frames"
    if not beside.is_dir():
        raise DataError(f"{split}: a split JSON input needs its frame store: give --frames DIR (no {beside} "
                        "beside it)")
    print(f"pespot infer: {split}: frames from {beside} (beside the split; --frames DIR to choose)", file=sys.stderr)
    return beside
