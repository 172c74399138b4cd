"""Options that several commands share, defined once so their names, help and defaults cannot drift apart."""

from __future__ import annotations

import argparse


def add_nms_options(parser: argparse.ArgumentParser) -> None:
    """``--nms`` and ``--nms-window`` of the commands that spot events with a run (``infer``, ``stream``): their
    defaults come from the run's ``nms.json`` when present, else from its config."""
    from pespot.config import run_default

    parser.add_argument("--nms", help="per-class NMS, a name of pespot.registry.NMS: local_max (E2E-Spot's), greedy, "
                                      "soft, none or a plug-in's (default: "
                                      f"{run_default('eval.nms', nms_json=True)})")
    parser.add_argument("--nms-window", type=int,
                        help=f"NMS window in frames (default: {run_default('eval.nms_window', nms_json=True)})")
