"""`pespot review SOURCE...`: look at events against the video in the browser, correct them, save the labels.

Starts a local web server (127.0.0.1 unless --host; a free port unless --port) and prints the page's address.
SOURCE: video files or frame folders; a split JSON (its labels; videos from --frames or given as SOURCE); a
prediction JSON from `pespot infer` (events with scores); a run folder or checkpoint (the videos are spotted
first, per-frame scores included); a class.txt (label new videos from nothing); a SoccerNet Labels-v2.json (its
half videos 1_*.mkv / 2_*.mkv beside it). Examples:

  pespot review data/mysport/class.txt videos/*.mp4 --out data/mysport/train.json     # label from nothing
  pespot review runs/tennis match.mp4 --out data/tennis_new/train.json                # spot, then correct
  pespot review data/synth/test.json pred.json --frames data/synth/frames --scores scores/

On the page: step frame by frame (arrow keys, Shift for one second), play at several speeds, see one timeline
lane per class with the labels, the predictions and the per-frame scores, and accept, reject, move, relabel, add
and delete events (keys listed on the page), with undo and redo. Predictions stay apart from the labels until
accepted. Save writes, each atomically and only these files: the split JSON (--out), class.txt beside it (when
absent), a CSV beside it (--csv), <out>.review.json (which predictions were accepted or rejected), and for
Labels-v2.json sources those files. A page saving over labels another page saved first is told so and merges.
Videos the browser cannot show frame-exactly (other containers and codecs, variable frame rate, frame folders)
are transcoded once to a constant-rate H.264 mp4 in --cache; frame N on the page is frame N of the labels.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from pespot.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pespot review``."""
    from pespot.review.load import DEFAULT_FPS

    parser.add_argument("sources", metavar="SOURCE", nargs="+",
                        help="video file, frame folder, split or prediction JSON, run folder, class.txt or "
                             "Labels-v2.json")
    parser.add_argument("--frames", metavar="DIR", help="frame store of the split/prediction JSON's videos "
                                                        "(<DIR>/<video>/ or <DIR>/<video>.mp4)")
    parser.add_argument("--classes", metavar="FILE", help="class.txt (default: a class.txt SOURCE, the run's "
                                                          "classes, or the class.txt beside the JSON)")
    parser.add_argument("--out", metavar="SPLIT.json",
                        help="the split JSON Save writes (class.txt goes beside it); when it exists, its labels "
                             "are loaded (default: the split SOURCE, else labels.json beside the class.txt or "
                             "prediction JSON, else in the current folder)")
    parser.add_argument("--csv", metavar="FILE", help="the CSV Save writes (default: --out with .csv)")
    parser.add_argument("--scores", metavar="DIR", help="per-frame scores from `pespot infer --save-scores DIR`")
    parser.add_argument("--fps", type=float, metavar="F",
                        help=f"frame rate of frame folders and of videos whose labels give none (when not given: "
                             f"{DEFAULT_FPS:g})")
    parser.add_argument("--min-score", type=float, default=0.05, metavar="S",
                        help="predictions scoring below this are not loaded (default %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.5, metavar="S",
                        help="the page's score threshold at start: predictions below it are hidden (default %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 127.0.0.1 is this machine only (default %(default)s)")
    parser.add_argument("--port", type=int, default=0, metavar="N", help="port; 0 = a free one (default %(default)s)")
    parser.add_argument("--cache", metavar="DIR",
                        help="where transcoded videos are kept (default $PESPOT_CACHE/review, else "
                             "~/.cache/pespot/review)")
    parser.add_argument("--height", type=int, metavar="H", help="transcode every video to this height (default: as it is)")
    parser.add_argument("--device", default="auto", help="for a run SOURCE: auto | cpu | cuda | cuda:N (default %(default)s)")
    parser.add_argument("--open", action="store_true", help="open the page in the default browser")
    parser.add_argument("--log", action="store_true", help="log every request on stderr")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true",
                        help="print {url, videos, outputs} as one JSON line on stdout once the server is up")


def run(args: argparse.Namespace) -> int:
    """Load the sources, start the server, serve until Ctrl-C or SIGTERM."""
    from pespot.review.load import load_session
    from pespot.review.server import ReviewServer

    if args.fps is not None and args.fps <= 0:
        raise ConfigError(f"--fps: expected a positive frame rate, got {args.fps}")
    if args.height is not None and (args.height <= 0 or args.height % 2):
        raise ConfigError(f"--height: expected a positive even number of rows, got {args.height}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port: expected 0..65535, got {args.port}")
    session = load_session(args.sources, frames=args.frames, classes_file=args.classes, out=args.out,
                           csv=args.csv, fps=args.fps, scores=args.scores, min_score=args.min_score,
                           device=args.device, progress=not args.quiet)
    try:
        server = ReviewServer(session, args.host, args.port, cache_dir=args.cache, height=args.height,
                              threshold=args.threshold, log=args.log)
    except OSError as err:
        raise ConfigError(f"--host {args.host} --port {args.port}: cannot listen ({err.strerror or err})") from None
    # The first video is made playable while the page loads.
    threading.Thread(target=_warm, args=(server,), daemon=True).start()
    counts = (len(session.videos), sum(len(v.labels) for v in session.videos),
              sum(len(v.predictions) for v in session.videos))
    if args.json:
        print(json.dumps({"url": server.url, "videos": counts[0], "labels": counts[1], "predictions": counts[2],
                          "outputs": [str(p) for p in session.outputs.paths()]}), flush=True)
    else:
        print(f"{counts[0]} videos, {len(session.classes)} classes, {counts[1]} labels, {counts[2]} predictions")
        print("Save writes: " + ", ".join(str(p) for p in session.outputs.paths()))
        print(f"open {server.url}  (Ctrl-C to stop)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"pespot review: warning: listening on {args.host}: anyone who can reach it and has the page's "
              "token can save labels", file=sys.stderr)
    if args.open:
        import webbrowser

        webbrowser.open(server.url)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("pespot review: stopped", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    return 0


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _warm(server) -> None:
    try:
        server.playable(0)
    except Exception as err:  # noqa: BLE001 - the page asks again and shows the error; here it is only a head start
        print(f"pespot review: {err}", file=sys.stderr)
