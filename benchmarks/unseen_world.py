"""A synthetic world the from-scratch recipe was not tuned on, for checking that the recipe transfers.

    python benchmarks/unseen_world.py [OUT]     # default data/synth-unseen
    python benchmarks/accuracy.py --suite recipe --rows paper-no-asam --data data/synth-unseen --preset unseen \\
        --out runs/accuracy-unseen --results docs/results/unseen

The recipe (the `synthetic` preset) was chosen on the `small` preset (64x64 frames at 25 fps, seed 0). This world
differs in everything the recipe must not assume: 96x96 frames (read at the recipe's 64 px), 30 fps, another seed,
noisier frames and more camera shake, shorter rallies with fewer returns, three times as many balls in the net.
"""

from __future__ import annotations

import sys

from pespot.data.synthetic import Preset, generate

UNSEEN = Preset("unseen", {"train": 48, "val": 12, "test": 16}, (300, 380), size=96, fps=30.0, mean_returns=2.5,
                net_fraction=0.2, rally_seconds=5.0, shake_px=3, noise=(3.0, 8.0),
                description="recipe check: 96x96 at 30 fps, noisier, shorter rallies, more net")
SEED = 7

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "data/synth-unseen"
    print(generate(out, UNSEEN, seed=SEED, fmt="mp4"))
