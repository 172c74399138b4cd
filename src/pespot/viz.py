"""Figures for evaluation and training: per-class AP bars, event timelines and learning curves (PNG, written
atomically).

Uses matplotlib's object API with the Agg canvas, so it never touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import json
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
                  classes: list[str] | None = None, title: str | None = None,
                  scores: np.ndarray | None = None, min_event_score: float = 0.05) -> Path:
    """Timeline of one video: one row per class, with the truth as black triangles and vertical dotted lines.

    ``scores`` (N, K+1), columns 1..K in ``classes`` order (column 0 background): each class's per-frame score is
    drawn as a filled curve in its row (row height = score 1), so a user sees where the model fires and how
    sharply. The kept events of ``pred`` are drawn as coloured dots at their score; events scoring below
    ``min_event_score`` are left out of the picture only (a long tail of tiny local maxima would hide the rest).
    Without ``scores`` the events are drawn as bars whose height and opacity are the score.
    """
    if truth is None and pred is None:
        raise ValueError("plot_timeline needs a truth or a prediction video")
    events_t = truth.events if truth is not None else []
    events_p = pred.events if pred is not None else []
    if classes is None:
        classes = sorted({e.label for e in events_t} | {e.label for e in events_p})
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 2 or scores.shape[1] != len(classes) + 1:
            raise ValueError(f"scores of shape {scores.shape}: expected (num_frames, {len(classes) + 1})")
    row = {c: i for i, c in enumerate(classes)}
    fig = Figure(figsize=(12, max(2.5, (0.8 if scores is not None else 0.45) * len(classes) + 1.2)))
    ax = fig.add_subplot(1, 1, 1)
    colours = [f"C{i % 10}" for i in range(len(classes))]
    height = 0.85  # of a row, for a score of 1

    shown_p = [e for e in events_p if e.label in row]
    if scores is not None:
        x = np.arange(len(scores))
        for r in row.values():
            curve = r + height * np.clip(scores[:, r + 1], 0.0, 1.0)
            ax.fill_between(x, r, curve, color=colours[r], alpha=0.25, linewidth=0)
            ax.plot(x, curve, color=colours[r], linewidth=0.8)
        kept = [e for e in shown_p if (e.score if e.score is not None else 1.0) >= min_event_score]
        if kept:
            ax.scatter([e.frame for e in kept],
                       [row[e.label] + height * float(np.clip(e.score if e.score is not None else 1.0, 0, 1))
                        for e in kept],
                       s=22, color=[colours[row[e.label]] for e in kept], edgecolors="black", linewidths=0.5,
                       zorder=4, label=f"kept events (score >= {min_event_score:g})")
        frames_p = [e.frame for e in kept]
    else:
        segments, seg_colours = [], []
        for e in shown_p:
            score = float(np.clip(e.score if e.score is not None else 1.0, 0.0, 1.0))
            r = row[e.label]
            segments.append([(e.frame, r), (e.frame, r + 0.8 * score)])
            rgba = list(_rgba(colours[r]))
            rgba[3] = 0.25 + 0.75 * score
            seg_colours.append(rgba)
        if segments:
            ax.add_collection(LineCollection(segments, colors=seg_colours, linewidths=1.5))
        frames_p = [s[0][0] for s in segments]
    tx = [e.frame for e in events_t if e.label in row]
    ty = [row[e.label] for e in events_t if e.label in row]
    if tx:
        if scores is not None:
            ax.vlines(tx, [y - 0.05 for y in ty], [y + height for y in ty], colors="black", linestyles="dotted",
                      linewidths=0.8, zorder=3)
        ax.scatter(tx, ty, marker="^", s=36, color="black", zorder=5, label="truth")
    if tx or frames_p:
        ax.legend(loc="upper right", fontsize=8)
    num_frames = max([v.num_frames for v in (truth, pred) if v is not None and v.num_frames > 0], default=0)
    if scores is not None:
        num_frames = max(num_frames, len(scores))
    right = max(num_frames, max(tx + frames_p, default=0) + 1, 1)
    ax.set_xlim(-0.5, right)
    ax.set_ylim(-0.3, max(len(classes), 1) - 0.05)
    ax.set_yticks(np.arange(len(classes)), classes, fontsize=8)
    ax.grid(axis="y", linewidth=0.3)
    ax.set_xlabel("frame")
    video_id = (truth or pred).video  # type: ignore[union-attr]
    what = ("per-frame scores (curves), kept events (dots)" if scores is not None
            else "predictions (height = score)")
    ax.set_title(title or f"{video_id}: truth (triangles) and {what}")
    fig.tight_layout()
    return _save(fig, path)


def _rgba(colour: str) -> tuple[float, float, float, float]:
    from matplotlib.colors import to_rgba

    return to_rgba(colour)


def plot_timelines(truth: list[Video], pred: list[Video], out_dir: str | os.PathLike,
                   videos: list[str] | None = None, classes: list[str] | None = None,
                   max_videos: int = 3, scores: dict[str, np.ndarray] | None = None) -> list[Path]:
    """``<out_dir>/timeline_<video>.png`` for the chosen video ids (default: the first ``max_videos`` of the
    truth); ``scores`` maps a video id to its per-frame scores (N, K+1) to draw them as curves."""
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
        paths.append(plot_timeline(t, p, Path(out_dir) / f"timeline_{name}.png", classes,
                                   scores=(scores or {}).get(vid)))
    return paths



def plot_learning_curves(series: dict[str, list[list[tuple[float, float]]]], path: str | os.PathLike,
                         title: str, ylabel: str = "validation mAP@2 (%)", xlabel: str = "optimiser step",
                         scale: float = 100.0) -> Path:
    """One line per named series against steps; several runs of a series (seeds) give their mean as a line, the
    mean +- sd as a band and each run as a thin line. ``series``: name -> runs -> [(step, value), ...]; values
    are multiplied by ``scale`` (fractions to %)."""
    fig = Figure(figsize=(8, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, runs) in enumerate(series.items()):
        runs = [sorted(r) for r in runs if r]
        if not runs:
            continue
        colour = f"C{i % 10}"
        for run in runs:
            if len(runs) > 1:
                ax.plot([s for s, _ in run], [v * scale for _, v in run], color=colour, alpha=0.3, linewidth=0.7)
        steps = sorted(set.intersection(*({s for s, _ in run} for run in runs)))
        if not steps:
            continue
        values = np.array([[dict(run)[s] * scale for s in steps] for run in runs])  # (runs, steps)
        mean = values.mean(axis=0)
        label = name if len(runs) == 1 else f"{name} (mean of {len(runs)})"
        ax.plot(steps, mean, color=colour, linewidth=2, marker="o", markersize=3, label=label)
        if len(runs) > 1:
            sd = values.std(axis=0, ddof=1)
            ax.fill_between(steps, mean - sd, mean + sd, color=colour, alpha=0.15, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(linewidth=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def plot_training_curves(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Learning curves of a run from its ``metrics.jsonl``: validation mAP@2 and the training loss per step (the
    demo's and ``pespot train``'s ``RUN/plots/``); none for a run without a finished epoch."""
    text = (Path(run_dir) / "metrics.jsonl").read_text()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    val = [(r["step"], r["val_map"]["2"]) for r in records if "2" in r.get("val_map", {})]
    loss = [(r["step"], r["train_cls"]) for r in records if "train_cls" in r]
    paths = []
    if val:
        paths.append(plot_learning_curves({"validation mAP@2": [val]}, Path(out_dir) / "learning_curve_map.png",
                                          title="validation mAP@2 after every epoch"))
    if loss:
        paths.append(plot_learning_curves({"training classification loss": [loss]},
                                          Path(out_dir) / "learning_curve_loss.png", title="training loss (epoch mean)",
                                          ylabel="loss", scale=1.0))
    return paths
