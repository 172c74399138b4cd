"""Write a synthetic precise-event-spotting dataset (E2E-Spot layout) from a world and a preset.

    pespot synth data/synth-tiny --preset tiny
    pespot synth data/synth-small --preset small --seed 1 --format mp4
    pespot synth data/court-small --world court-top --preset small
    pespot synth data/synth-bench --preset bench --labels-only --json

The folder gets class.txt, train.json, val.json, test.json and frames/<video>/%06d.jpg (or frames/<video>.mp4),
written video by video with the label files last; re-running the same command on an interrupted folder resumes
it. The worlds, their classes and what decides each one are described in docs/synthetic.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pespot.data import synthetic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pespot synth``."""
    parser.add_argument("out", metavar="OUT", help="dataset folder to write (new or empty, or an interrupted run)")
    parser.add_argument("--world", default=synthetic.DEFAULT_WORLD, choices=list(synthetic.WORLDS),
                        help="rally-side (a side view with large cues) or court-top (seen from high behind, "
                             "broadcast-sized cues) (default %(default)s)")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "bench"],
                        help="tiny (tests), small (the demo's size), bench (ablations) (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes) (default %(default)s)")
    parser.add_argument("--format", dest="fmt", default="jpg", choices=["jpg", "mp4"],
                        help="jpg: frames as JPEG folders; mp4: one H.264 mp4 per video (default %(default)s)")
    parser.add_argument("--labels-only", action="store_true",
                        help="write class.txt and the split files without frames (statistics only)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Generate the dataset and print a summary (events per class per split)."""
    from tqdm import tqdm

    from pespot.fsutil import check_writable_dir

    check_writable_dir(args.out, "dataset folder (OUT)")
    start = time.perf_counter()
    bar = None
    if not args.json:
        bar = tqdm(total=0, unit="video", desc="synth", file=sys.stderr, leave=False,
                   disable=not sys.stderr.isatty())

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    world = synthetic.get_world(args.world)
    out = synthetic.generate(args.out, preset=args.preset, seed=args.seed, fmt=args.fmt, world=args.world,
                             labels_only=args.labels_only, progress=progress)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    summary = synthetic.dataset_summary(out)
    preset = world.get_preset(args.preset)
    classes = world.classes_of(preset)
    report = {"out": str(out), "world": args.world, "preset": args.preset, "seed": args.seed,
              "format": None if args.labels_only else args.fmt, "fps": preset.fps,
              "width": preset.size, "height": preset.size, "classes": classes,
              "seconds": round(seconds, 2), **summary}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"wrote {out} (world {args.world}, preset {args.preset}, seed {args.seed}, "
          f"{'labels only' if args.labels_only else args.fmt}, {preset.size}x{preset.size} at "
          f"{preset.fps:g} fps) in {seconds:.1f} s")
    names = list(summary["splits"]) + ["all"]
    header = f"{'class':<10}" + "".join(f"{n:>8}" for n in names)
    print(header)
    for cls in classes:
        row = [summary["splits"][n]["per_class"][cls] if n != "all" else summary["all"]["per_class"][cls]
               for n in names]
        print(f"{cls:<10}" + "".join(f"{c:>8}" for c in row))
    for key in ("videos", "frames", "events"):
        row = [summary["splits"][n][key] if n != "all" else summary["all"][key] for n in names]
        print(f"{key:<10}" + "".join(f"{c:>8}" for c in row))
    ratio = summary["all"]["max_min_ratio"]
    rarest = min(summary["all"]["fraction"].items(), key=lambda kv: kv[1])
    print(f"max/min class ratio {ratio:.1f}; rarest class {rarest[0]} ({100 * rarest[1]:.1f}% of events)")
    return 0
