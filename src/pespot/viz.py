"""Figures for evaluation: per-class AP bars and event timelines (PNG, written atomically).

Uses matplotlib's object API with the Agg canvas, so it never touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from pespot.data.labels import Video
from pespot.errors import DataError
from pespot.fsutil import atomic_path
from pespot.metrics import MapResult


def _save(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def safe_name(text: str) -> str:
    """A file-name-safe form of a video id (``a/b c`` -> ``a_b_c``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "video"


def plot_class_bars(values: dict[str, float], path: str | os.PathLike, title: str,
                    xlabel: str = "AP (%)", mean: float | None = None) -> Path:
    """Horizontal bar chart of one value per class (as a percentage), with an optional mean line."""
    names = list(values)
    vals = np.array([values[n] for n in names], dtype=np.float64) * 100
    height = max(2.5, 0.28 * len(names) + 1.2)
    fig = Figure(figsize=(7, height))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(names))
    ax.barh(y, vals, color="tab:blue")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()  # first class on top
    for yi, v in zip(y, vals):
        ax.text(min(v, 100) + 1, yi, f"{v:.1f}", va="center", fontsize=7)
    if mean is not None:
        ax.axvline(mean * 100, color="tab:red", linestyle="--")
        title = f"{title} (mean {mean * 100:.2f}, dashed)"
    ax.set_xlim(0, max(105.0, float(vals.max(initial=0)) + 10))
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_per_class_ap(result: MapResult, out_dir: str | os.PathLike, prefix: str = "ap") -> list[Path]:
    """One PNG per tolerance, ``<out_dir>/<prefix>_tol<δ>.png``: per-class AP bars and the mAP line."""
    out_dir = Path(out_dir)
    paths = []
    for tol in result.tolerances:
        values = {c: aps[tol] for c, aps in result.per_class.items()}
        paths.append(plot_class_bars(values, out_dir / f"{prefix}_tol{tol}.png",
                                     title=f"AP per class at tolerance {tol} frame(s)", mean=result.mAP[tol]))
    return paths


def plot_timeline(truth: Video | None, pred: Video | None, path: str | os.PathLike,
                  classes: list[str] | None = None, title: str | None = None) -> Path:
    """Timeline of one video: one row per class; truth events as black triangles, predictions as coloured
    bars whose height and opacity are the score."""
    if truth is None and pred is None:
        raise ValueError("plot_timeline needs a truth or a prediction video")
    events_t = truth.events if truth is not None else []
    events_p = pred.events if pred is not None else []
    if classes is None:
        classes = sorted({e.label for e in events_t} | {e.label for e in events_p})
    row = {c: i for i, c in enumerate(classes)}
    fig = Figure(figsize=(12, max(2.5, 0.45 * len(classes) + 1.2)))
    ax = fig.add_subplot(1, 1, 1)
    colours = [f"C{i % 10}" for i in range(len(classes))]

    segments, seg_colours = [], []
    for e in events_p:
        if e.label not in row:
            continue
        score = float(np.clip(e.score if e.score is not None else 1.0, 0.0, 1.0))
        r = row[e.label]
        segments.append([(e.frame, r), (e.frame, r + 0.8 * score)])
        rgba = list(_rgba(colours[r]))
        rgba[3] = 0.25 + 0.75 * score
        seg_colours.append(rgba)
    if segments:
        ax.add_collection(LineCollection(segments, colors=seg_colours, linewidths=1.5))
    tx = [e.frame for e in events_t if e.label in row]
    ty = [row[e.label] for e in events_t if e.label in row]
    if tx:
        ax.scatter(tx, ty, marker="^", s=28, color="black", zorder=3, label="truth")
        ax.legend(loc="upper right", fontsize=8)
    frames = tx + [s[0][0] for s in segments]
    num_frames = max([v.num_frames for v in (truth, pred) if v is not None and v.num_frames > 0], default=0)
    right = max(num_frames, max(frames, default=0) + 1, 1)
    ax.set_xlim(-0.5, right)
    ax.set_ylim(-0.3, max(len(classes), 1) - 0.1)
    ax.set_yticks(np.arange(len(classes)), classes, fontsize=8)
    ax.set_xlabel("frame")
    video_id = (truth or pred).video  # type: ignore[union-attr]
    ax.set_title(title or f"{video_id}: truth (triangles) and predictions (height = score)")
    fig.tight_layout()
    return _save(fig, path)


def _rgba(colour: str) -> tuple[float, float, float, float]:
    from matplotlib.colors import to_rgba

    return to_rgba(colour)


def plot_timelines(truth: list[Video], pred: list[Video], out_dir: str | os.PathLike,
                   videos: list[str] | None = None, classes: list[str] | None = None,
                   max_videos: int = 3) -> list[Path]:
    """``<out_dir>/timeline_<video>.png`` for the chosen video ids (default: the first ``max_videos`` of the
    truth)."""
    by_id_t = {v.video: v for v in truth}
    by_id_p = {v.video: v for v in pred}
    chosen = videos if videos else [v.video for v in truth[:max_videos]]
    paths: list[Path] = []
    used: set[str] = set()
    for vid in chosen:
        t, p = by_id_t.get(vid), by_id_p.get(vid)
        if t is None and p is None:
            raise DataError(f"--videos: video '{vid}' is neither in the truth nor in the predictions")
        name = safe_name(vid)
        if name in used:  # two ids with the same safe form
            name = f"{name}_{len(used)}"
        used.add(name)
        paths.append(plot_timeline(t, p, Path(out_dir) / f"timeline_{name}.png", classes))
    return paths

