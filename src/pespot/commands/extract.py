"""Raw videos -> frame store (JPEG folders or compact mp4s), resumable, with frame counts checked against labels.

    pespot extract VIDEO... --out DIR [--height 224] [--fps F] [--format jpg|mp4] [--labels SPLIT.json [--cut]]
                   [--workers N] [--json]

VIDEO is a video file or a directory searched recursively for videos. Each video becomes ``DIR/<id>/%06d.jpg``
(E2E-Spot layout, ``--format jpg``) or ``DIR/<id>.mp4`` (libx264 crf 20, a keyframe every 16 frames,
``--format mp4``), where ``<id>`` is the file's stem (its path relative to a directory given as input). Frames are
resized to ``--height`` (aspect kept, width even; 0 keeps the size). ``--fps F`` keeps the first frame at or after
each tick k/F of the frame timestamps (never duplicates frames).

An output is written under a hidden ``.partial`` name and renamed when complete: a rerun skips finished videos
and redoes unfinished ones. A video that cannot be read (empty, not a video, no video stream, truncated) is
reported on one line and the others continue (so is a missing path, a folder without videos, or a second
file with the same video id); with ``--labels`` a frame count different from the split's
``num_frames`` is a failure too. The exit status is 1 if any video failed.

With ``--cut``, the outputs are the split's clips rather than whole videos: Tennis and Figure Skating label clips
``<source>_<start>_<end>`` cut from a match or competition video, and each clip is frames ``start..end-1`` of the
input video named ``<source>`` (or, for Figure Skating's ``<video>_<segment>``, the longest prefix that names an
input), decoded after one seek. A clip whose id is not of this form, whose source is not among the inputs, or
whose range disagrees with its ``num_frames`` fails on its own line; the others are cut.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pespot extract``."""
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or directories of videos")
    parser.add_argument("--out", required=True, metavar="DIR", help="frame store to write into")
    parser.add_argument("--height", type=int, default=224, help="frame height; 0 keeps the size (default %(default)s)")
    parser.add_argument("--fps", type=float, help="target frame rate (default: keep every frame)")
    parser.add_argument("--format", default="jpg", choices=["jpg", "mp4"],
                        help="jpg: a folder of %%06d.jpg per video (E2E-Spot); mp4: one compact mp4 per video "
                             "(default %(default)s)")
    parser.add_argument("--labels", metavar="SPLIT_JSON", help="check each video's frame count against the "
                        "num_frames of the same video id in this split")
    parser.add_argument("--cut", action="store_true",
                        help="with --labels: write the split's clips, each cut from the input video its id names "
                             "(<source>_<start>_<end>, source frames start..end-1: Tennis rallies, Figure "
                             "Skating segments)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="videos extracted in parallel, half the CPU cores unless given (default %(default)s here)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Extract, report each failure on one line, and print a summary."""
    from pespot.data.extract import extract_videos
    from pespot.fsutil import check_writable_dir

    check_writable_dir(args.out, "--out frame store")  # before any video is opened
    results = extract_videos(args.videos, args.out, height=args.height or None, fps=args.fps, fmt=args.format,
                             workers=args.workers, labels=args.labels, cut=args.cut)
    counts = {s: sum(r.status == s for r in results) for s in ("extracted", "skipped", "failed")}
    for r in results:
        if r.status == "failed":
            print(f"pespot extract: failed: {r.source}: {r.error}", file=sys.stderr)
        elif r.warning:
            print(f"pespot extract: warning: {r.source}: {r.warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({"out": args.out, "format": args.format, "height": args.height or None, "fps": args.fps,
                          **counts, "videos": [r.to_json() for r in results]}))
    else:
        frames = sum(r.frames or 0 for r in results if r.status != "failed")
        print(f"{len(results)} videos -> {args.out}: {counts['extracted']} extracted, {counts['skipped']} already "
              f"done, {counts['failed']} failed ({frames:,} frames in the store)")
    return 1 if counts["failed"] else 0
