"""`pespot stream RUN_OR_CKPT SOURCE`: spot events in a live stream as it arrives, one JSON line per event.

    pespot stream runs/tennis match.mp4                                  # a file, read as a stream
    pespot stream runs/tennis http://camera.local/live.ts --out events.jsonl
    ffmpeg -i rtsp://camera/feed -c copy -f mpegts - | pespot stream runs/tennis - --lookahead 31

SOURCE is a video file, a URL FFmpeg reads (http://, https://, rtsp://, udp://, ...), a named pipe or - (a container
on standard input; give --format when FFmpeg cannot guess it, e.g. mpegts). An mp4 on standard input whose index
(moov) follows its media data, as most camera files, cannot be read as it arrives: it is copied to a temporary file
(said on stderr, deleted afterwards) and spotted once complete (`ffmpeg -movflags faststart` puts the index first).
Frames are decoded as they arrive and windows are run as soon as they are full; each event is written as one JSON
line {"video", "frame", "time", "label", "score"} to stdout (or --out FILE.jsonl, flushed line by line) the moment
it is final: when no later window can change its score or its NMS neighbourhood.

Latency: --lookahead L (frames, 0 to clip_len - 1) is how many frames after a frame the windows that score it
may reach. The default, clip_len - 1, counts every window covering the frame, so the events are exactly those of
`pespot infer` on the same file; smaller values lower the latency to L frames (+ the NMS window) and run more
windows (clip_len / min(stride, L + 1) model frames per frame). Memory is bounded whatever the stream's length.

Threshold, NMS and window overlap come from the run's eval config (or the options); eval.top_k is per video and
is not applied to a stream. --nms greedy or soft can make a decision wait for a chain of candidates; after
--max-delay frames it is forced (counted in the summary; only then may stream and infer differ).

End of stream, Ctrl-C, or a source fault (no data for --timeout seconds, a dropped connection, a stream that ends
mid-packet, an MPEG-TS cut inside a transport packet included) ends the stream where it is: the frames received,
those still in the decoder included, are scored as if the stream ended there, their events are written, and a
one-line message says what happened (exit 0 at a clean end, 1 after a fault, 130 after Ctrl-C; a second Ctrl-C stops
the final scoring, and the message says up to which frame events were written). An HTTP body without a
Content-Length ends normally when the server closes it. Frames follow their timestamps where they are regular:
frames lost inside the stream (damaged or skipped data) are counted in a warning and their numbers kept free (filled
with the frame before), so that later frame numbers stay right. Ctrl-C ends the stream at once, even on a pipe that
is open but idle or a network source that stalls (FFmpeg's blocked network read is left behind after a second);
SIGTERM (docker stop, systemd) does the same and exits 143. A summary goes to stderr (one JSON object with --json).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Self

from pespot.commands.options import add_nms_options
from pespot.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pespot stream``."""
    from pespot.config import run_default
    from pespot.stream import DEFAULT_TIMEOUT, MAX_DELAY_CLIPS

    parser.add_argument("run", metavar="RUN_OR_CKPT",
                        help="run folder (checkpoints/best.pt, else last.pt) or checkpoint file")
    parser.add_argument("source", metavar="SOURCE",
                        help="video file, URL (http://, rtsp://, udp://, ...) or - for standard input")
    parser.add_argument("--out", metavar="FILE.jsonl", help="write the JSON lines here instead of stdout")
    parser.add_argument("--video", metavar="NAME", help="video id in the events (default: the file or URL stem, "
                        "'stdin' for -)")
    parser.add_argument("--lookahead", type=int, metavar="FRAMES",
                        help="frames after a frame that its windows may reach, 0 .. clip_len-1 (default "
                             "clip_len-1: the events of `pespot infer`; smaller = lower latency, more windows)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help="a read (or the opening) waiting longer than this for data ends the stream "
                             "(default %(default)g)")
    parser.add_argument("--format", metavar="FMT", help="FFmpeg input format when it cannot be guessed (e.g. "
                        "mpegts on a pipe, lavfi for a generated test stream)")
    parser.add_argument("--fps", type=float, help="frame rate when the source gives none (for the 'time' field)")
    parser.add_argument("--threshold", type=float, help=f"candidates: scores >= this (default: {run_default('eval.threshold')})")
    add_nms_options(parser)
    parser.add_argument("--overlap", type=float,
                        help=f"window overlap, fraction of the clip (default: {run_default('eval.overlap')})")
    parser.add_argument("--max-delay", type=int, metavar="FRAMES",
                        help="greedy/soft NMS: force a decision still open after this many frames (when not "
                             f"given: {MAX_DELAY_CLIPS} clip lengths)")
    parser.add_argument("--tta", choices=["none", "flip"],
                        help="test-time augmentation: flip = mean of each window's scores and its mirror's (default: "
                             f"{run_default('eval.tta')})")
    parser.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                        help="torch | onnx: the model made by `pespot export --format onnx` (RUN_OR_CKPT "
                             "= that .onnx file or a run folder holding export/spotter.onnx; default %(default)s)")
    parser.add_argument("--model", metavar="FILE.onnx", help="with --engine onnx: this exported model instead")
    parser.add_argument("--classes", metavar="FILE", help="class.txt naming the model's classes (same number)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no summary on stderr (errors still)")
    parser.add_argument("--json", action="store_true", help="print the summary on stderr as one JSON object")


def _check_run_window(args: argparse.Namespace, predictor) -> None:
    """An NMS window that the run set (its nms.json or config), with no --nms-window or --max-delay given, must be
    below --max-delay's default: else the error names where the window came from, not an option nobody gave."""
    from pespot.stream import MAX_DELAY_CLIPS

    if args.max_delay is not None or args.nms_window is not None:
        return
    window, delay = predictor.cfg.eval.nms_window, MAX_DELAY_CLIPS * predictor.clip_len
    if window < delay:
        return
    where = (f"{predictor.nms_from}: key 'window'" if predictor.nms_from
             else f"{predictor.source}: config key 'eval.nms_window'")
    raise ConfigError(f"{where}: {window} frames, not below the stream's --max-delay ({delay} frames, "
                      f"{MAX_DELAY_CLIPS} clip lengths); give --max-delay above {window}, or --nms-window below "
                      f"{delay}")


def run(args: argparse.Namespace) -> int:
    """Stream; returns 0 at a clean end, 1 after a source fault, 130 after Ctrl-C, 143 after SIGTERM."""
    from pespot import stream
    from pespot.commands.infer import load_engine, nms_in_use, nms_note
    from pespot.data.labels import load_classes
    from pespot.export import engine_description
    from pespot.fsutil import check_writable_file

    if args.fps is not None and args.fps <= 0:
        raise ConfigError(f"--fps: expected a positive frame rate, got {args.fps}")
    if args.out is not None:
        check_writable_file(args.out, "--out events file")  # before the model is loaded or the source opened
    classes = load_classes(args.classes) if args.classes else None
    predictor = load_engine(args, classes)
    # Options are checked (and the spotter built) before the source is opened or the output file created.
    _check_run_window(args, predictor)
    stream.StreamSpotter(predictor, overlap=args.overlap, lookahead=args.lookahead, threshold=args.threshold,
                         nms=args.nms, nms_window=args.nms_window, max_delay=args.max_delay)
    with StopSignals() as stop:
        source = stream.LiveSource(args.source, height=predictor.height, timeout=args.timeout, fmt=args.format,
                                   fps=args.fps, name=args.video,
                                   notify=lambda message: print(f"pespot stream: {message}", file=sys.stderr))
        try:
            writer = stream.JsonLinesWriter(args.out)
            try:
                report = stream.run_stream(predictor, source, writer, overlap=args.overlap,
                                           lookahead=args.lookahead, threshold=args.threshold, nms=args.nms,
                                           nms_window=args.nms_window, max_delay=args.max_delay)
            finally:
                writer.close()
        finally:
            source.remove_copy()  # the source removes it when it ends; not if it never started

    for warning in report.warnings:
        print(f"pespot stream: warning: {warning}", file=sys.stderr)
    if report.error:
        written = (f"the {report.events} events of the {report.frames} frames before it were written"
                   if report.written_frames >= report.frames else _partly_written(report))
        print(f"pespot stream: error: {report.error}; {written}", file=sys.stderr)
    if report.interrupted:
        by = "" if stop.received in (None, "SIGINT") else f" by {stop.received}"
        written = (f"their {report.events} events were written" if report.written_frames >= report.frames
                   else _partly_written(report))
        print(f"pespot stream: interrupted{by} after {report.frames} frames; {written}", file=sys.stderr)
    nms = nms_in_use(args, predictor)
    if args.json:
        summary = report.to_json()
        summary.update(engine=engine_description(predictor), out=args.out or "stdout",
                       fps_processed=round(report.frames / report.seconds, 2) if report.seconds > 0 else None,
                       nms=nms)
        print(json.dumps(summary), file=sys.stderr)
    elif not args.quiet:
        speed = report.frames / report.seconds if report.seconds > 0 else 0.0
        line = (f"{report.video}: {report.frames} frames, {report.events} events in {report.seconds:.1f} s "
                f"({speed:.1f} frames/s, {engine_description(predictor)})")
        latency = stream.latency_seconds(report.max_latency_frames, report.fps)
        line += f"; worst latency {report.max_latency_frames} frames"
        if latency is not None:
            line += f" ({latency:.2f} s of stream)"
        print(line, file=sys.stderr)
        note = nms_note(nms, predictor)
        if note:
            print(note, file=sys.stderr)
    if report.interrupted:
        return 143 if stop.received == "SIGTERM" else 130
    return 1 if report.error else 0


def _partly_written(report) -> str:
    """What was written when a second interrupt stopped the scoring of the last frames received."""
    covered = f"frames 0 to {report.written_frames - 1}" if report.written_frames else "no frame"
    return (f"a second interrupt stopped the final scoring: the {report.events} events written cover {covered} "
            f"only (not frames {report.written_frames} to {report.frames - 1})")


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM (``docker stop``, systemd, a scheduler) end the stream the same way: the frames
    received are scored and their events written (exit 130 / 143). Installed in the main thread only, and even
    where the shell started pespot with SIGINT ignored, as training does (``pespot.train.guards.Interrupt``);
    the previous handlers come back on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: str | None = None
        self.previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        self.received = self.received or signal.Signals(signum).name
        raise KeyboardInterrupt  # run_stream stops reading and flushes; a second one stops the flush too

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self.previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self.previous = {}
