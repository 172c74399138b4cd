"""`pespot demo`: the main job end to end on the embedded default, with no network and no GPU needed.

Generates the `small` synthetic dataset, trains the paper's model on it (reduced clip length 32 and frame size
64x64 so that it fits two CPU cores; BCE's positive term weighted 5, the paper's BCE has 1), runs `pespot infer` on the test split, evaluates it and prints mAP at
tolerances 0, 1, 2, 4 and per-class AP next to a trivial baseline (every frame scored by the class frequency).
Plots, predictions and results.json/results.md go into OUT/run. On a CUDA machine training uses the GPU.

    pespot demo                       # about 20 minutes on 2 CPU cores
    pespot demo --minutes 5 --preset tiny --out runs/demo-tiny
    pespot demo --steps 400 --out runs/demo-400   # a longer run than the default 280 steps
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="demo folder (data/ and run/ go in it); default runs/demo")
    parser.add_argument("--preset", default="small", choices=("tiny", "small", "bench"),
                        help="synthetic dataset preset; default small")
    parser.add_argument("--minutes", type=float, default=None,
                        help="approximate time budget: the training steps are sized to fit it from a short "
                             "calibration (default: a fixed number of steps per preset, ~20 minutes on 2 CPU cores "
                             "for small)")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimiser steps instead of the preset's fixed number (rounded down to a multiple of "
                             "the 5 epochs); not with --minutes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda | cuda:N")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object at the end")


def run(args: argparse.Namespace) -> int:
    from pespot.demo import run_demo

    # With --json, the human-readable report goes to stderr so that stdout holds one JSON object.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        results = run_demo(args.out, preset=args.preset, minutes=args.minutes, seed=args.seed,
                           device=args.device, progress=not args.json, steps=args.steps)
    if args.json:
        print(json.dumps(results))
    return 0
