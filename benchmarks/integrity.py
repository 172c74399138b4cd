"""What checkpoint verification costs: loading the paper model's checkpoint with and without it, side by side.

The checkpoint is a full training checkpoint of the ``paper`` preset (17 classes, random weights, AdamW moments
after one step with random gradients: what ``last.pt`` holds), written by ``pespot.train.checkpoint
.save_checkpoint`` (so with its digest). Each round loads it with ``load_checkpoint(verify=False)`` and with
``load_checkpoint(verify=True)`` (SHA-256 of every value + finiteness of every floating tensor), in alternating
order, file already in the page cache; the digest alone (``content_digest``, paid once per checkpoint save) is
timed too. Medians over ``--rounds`` rounds.

    python benchmarks/integrity.py                      # docs/results/integrity.{md,json}
    python benchmarks/integrity.py --rounds 3 --out /tmp/integrity
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from pespot.config import load_config, to_dict
from pespot.train import checkpoint

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import machine, versions, write_results

CLASSES = [f"class{i}" for i in range(17)]


def paper_checkpoint(path: Path, preset: str) -> dict:
    """Write a full checkpoint of ``preset`` (random weights, AdamW state after one step); returns its sizes."""
    from pespot.model.spotter import build_model

    torch.manual_seed(0)
    cfg = load_config(preset, ["model.pretrained=false"])
    model = build_model(cfg, len(CLASSES), load_weights=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    state = {"format": checkpoint.CHECKPOINT_FORMAT, "config": to_dict(cfg), "classes": CLASSES,
             "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1, "step": 1}
    checkpoint.save_checkpoint(state, path)
    weights = sum(t.numel() for t in model.state_dict().values())
    return {"parameters_and_buffers": weights, "file_bytes": path.stat().st_size}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(path: Path, rounds: int) -> dict[str, list[float]]:
    """Seconds per round: load without / with verification (alternating order), and the digest alone."""
    times: dict[str, list[float]] = {"load": [], "load_verified": [], "digest": []}
    checkpoint.load_checkpoint(path)  # warm-up: page cache, imports
    for i in range(rounds):
        order = [("load", False), ("load_verified", True)]
        for key, verify in order if i % 2 == 0 else order[::-1]:
            times[key].append(timed(lambda v=verify: checkpoint.load_checkpoint(path, verify=v)))
        ckpt = checkpoint.load_checkpoint(path, verify=False)
        times["digest"].append(timed(lambda c=ckpt: checkpoint.content_digest(c)))
    return times


def render(result: dict) -> str:
    m, med = result["machine"], result["median_seconds"]
    lines = [
        "# Checkpoint verification: what it costs",
        "",
        (f"Made by `{result['command']}`: a full `{result['preset']}` checkpoint (model and AdamW moments, random "
        f"weights; {result['checkpoint']['parameters_and_buffers']:,} model values, "
        f"{result['checkpoint']['file_bytes'] / 2**20:.1f} MiB on disk), loaded {result['rounds']} times each "
        "way in alternating order from the page cache. Medians."),
        "",
        "| load | median s | ratio |",
        "|---|---|---|",
        f"| without verification (`load_checkpoint(verify=False)`) | {med['load']:.3f} | 1.00 |",
        (f"| with verification (digest + finite weights, every load) | {med['load_verified']:.3f} | "
        f"{result['ratio']:.2f} |"),
        (f"| the digest alone (also paid once per checkpoint save) | {med['digest']:.3f} | "
        f"{med['digest'] / med['load']:.2f} |"),
        "",
        (f"Machine: {m['cpu']}, {m['cores']} cores, {result['torch_threads']} torch threads, 1-minute load average "
        f"{m['load_average_1min']:.2f} at the start (the machine was shared: times and "
        f"their ratio are noisy; an earlier run on the busy machine gave 1.58x for the same ratio); torch {result['versions']['torch']}, commit {result['versions']['pespot_commit']}."),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", help="model preset (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=7, help="loads of each kind (default %(default)s)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "integrity"),
                        help="results path without suffix (default docs/results/integrity)")
    args = parser.parse_args(argv)
    started = machine()
    with tempfile.TemporaryDirectory(prefix="pespot-integrity-") as tmp:
        path = Path(tmp) / "last.pt"
        sizes = paper_checkpoint(path, args.preset)
        times = measure(path, args.rounds)
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {"command": "python benchmarks/integrity.py" + (" " + shlex.join(argv or sys.argv[1:])).rstrip(),
              "preset": args.preset, "rounds": args.rounds, "checkpoint": sizes, "seconds": times,
              "median_seconds": median, "ratio": median["load_verified"] / median["load"],
              "torch_threads": torch.get_num_threads(), "machine": started, "versions": versions()}
    write_results(args.out, result, render)
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
