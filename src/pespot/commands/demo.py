"""`pespot demo`: the main job end to end on a synthetic dataset, with no network and no GPU needed.

Generates a synthetic dataset, trains the paper's model on it with the ``synthetic`` preset's from-scratch recipe,
runs `pespot infer` on the test split, evaluates it and prints mAP at tolerances 0, 1, 2, 4 and per-class AP next
to a trivial baseline (every frame scored by the class frequency). `pespot demo --help` prints the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys


def describe(steps: dict[str, int], minutes: dict[str, float], epochs: int, clip_len: int, height: int,
             batch_size: int) -> str:
    """The description ``pespot demo --help`` prints, from the demo's and the ``synthetic`` preset's values."""
    return f"""The main job end to end on a synthetic dataset, with no network and no GPU needed.

Generates the synthetic dataset (--preset, default small), trains the paper's model on it from random
initialisation with the `synthetic` preset's from-scratch recipe (clip length {clip_len}, {height}x{height} frames,
batch {batch_size}, {epochs} epochs; configs/synthetic.yaml, and the demo prints how it differs from the paper's
recipe), runs `pespot infer` on the test split, evaluates it and prints mAP at tolerances 0, 1, 2, 4 and per-class
AP next to a trivial baseline (every frame scored by the class frequency). Plots, predictions and
results.json/results.md go into OUT/run. On a CUDA machine training uses the GPU.

    pespot demo                       # {steps['small']} steps, about {round(minutes['small'])} minutes on 2 CPU cores
    pespot demo --minutes 5 --preset tiny --out runs/demo-tiny
    pespot demo --steps {2 * steps['small']} --out runs/demo-long   # a longer run than the default {steps['small']} steps
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pespot demo``; every number in the help comes from the code."""
    from pespot.config import preset_defaults
    from pespot.demo import DEFAULT_STEPS, MEASURED_MINUTES, MIN_STEPS_PER_EPOCH

    train = preset_defaults("synthetic")
    epochs = train.train.epochs
    parser.description = describe(DEFAULT_STEPS, MEASURED_MINUTES, epochs, train.model.clip_len,
                                  train.data.height, train.train.batch_size)
    per_preset = ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items())
    parser.add_argument("--out", default="runs/demo", help="demo folder (data/ and run/ go in it) (default %(default)s)")
    parser.add_argument("--preset", default="small", choices=tuple(DEFAULT_STEPS),
                        help="synthetic dataset preset (default %(default)s)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="approximate time budget: the training steps are sized to fit it from a short "
                             f"calibration (default: a fixed number of steps per preset: {per_preset}; small took "
                             f"about {round(MEASURED_MINUTES['small'])} minutes on 2 CPU cores)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimiser steps instead of the preset's fixed number, exactly that many: in the most "
                             f"epochs (at most the synthetic preset's {epochs}) that split them into equal epochs of "
                             f"at least {MIN_STEPS_PER_EPOCH} steps, else in one epoch; the warm-up stays the "
                             f"preset's share of the steps; not with --minutes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training (default %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA when present) | cpu | cuda | cuda:N (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object at the end")


def run(args: argparse.Namespace) -> int:
    """Run the demo; with ``--json`` the report goes to stderr and one JSON object to stdout."""
    from pespot.demo import run_demo

    # With --json, the human-readable report goes to stderr so that stdout holds one JSON object.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        results = run_demo(args.out, preset=args.preset, minutes=args.minutes, seed=args.seed,
                           device=args.device, progress=not args.json, steps=args.steps)
    if args.json:
        print(json.dumps(results))
    return 0
