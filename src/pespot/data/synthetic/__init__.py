"""Procedural precise-event-spotting benchmarks: synthetic *worlds* whose every label is exact by construction.

No sports video can be downloaded on our machines, yet every part of pespot needs datasets whose events sit at an
exact frame. Each world simulates play in continuous time and draws it with numpy; each has events at an exact
frame, classes decided only long after their frame, and strong class imbalance (docs/synthetic.md):

* ``rally-side`` (``rally_side``, the default): a court seen from the side, large cues (a ball of radius 2.6 px at
  64 px, players a quarter of the frame high), an umpire lamp that decides ``line_in``/``line_out`` 32-40 frames
  after the bounce;
* ``court-top`` (``court_top``): a court seen from high behind, as a broadcast camera sees it, with cues of
  broadcast size (a ball of 1-3 px at 64 px, players a few pixels tall), moving distractors, per-video lighting,
  events decided by the ball's motion, ``winner`` decided 25-40 frames after its bounce and the rare ``net``.

Public API: ``WORLDS`` / ``get_world``, ``generate`` (writes a dataset of any world), ``dataset_summary``, and,
for the default world, its names (``CLASSES``, ``PRESETS``, ``plan_dataset``, ``simulate_video`` ...).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from pespot.data.synthetic import common, court_top, rally_side
from pespot.data.synthetic.common import class_counts, dataset_summary, event_frame
from pespot.data.synthetic.rally_side import (
    BALL_R,
    CLASSES,
    GENERATOR_VERSION,
    LONG_RANGE_PAIR,
    PRESETS,
    Contact,
    Light,
    Preset,
    Segment,
    SimulatedVideo,
    VideoSpec,
    get_preset,
    plan_dataset,
    plan_split,
    simulate_video,
)
from pespot.errors import PespotError

WORLDS: dict[str, ModuleType] = {rally_side.NAME: rally_side, court_top.NAME: court_top}
DEFAULT_WORLD = rally_side.NAME


def get_world(name: str) -> ModuleType:
    """The world module called ``name`` (a PespotError lists the known ones)."""
    if name not in WORLDS:
        raise PespotError(f"unknown synthetic world '{name}' (expected one of: {', '.join(WORLDS)})")
    return WORLDS[name]


def generate(out_dir: str | os.PathLike, preset: Any = "tiny", seed: int = 0, fmt: str = "jpg", *,
             world: str = DEFAULT_WORLD, labels_only: bool = False,
             progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the dataset of ``world`` for ``preset`` (a name of that world's presets, or a Preset object) in
    E2E-Spot layout; see ``common.generate``."""
    return common.generate(get_world(world), out_dir, preset, seed, fmt, labels_only=labels_only,
                           progress=progress)


__all__ = ["BALL_R", "CLASSES", "DEFAULT_WORLD", "GENERATOR_VERSION", "LONG_RANGE_PAIR", "PRESETS", "WORLDS",
           "Contact", "Light", "Preset", "Segment", "SimulatedVideo", "VideoSpec", "class_counts", "court_top",
           "dataset_summary", "event_frame", "generate", "get_preset", "get_world", "plan_dataset", "plan_split",
           "rally_side", "simulate_video"]
