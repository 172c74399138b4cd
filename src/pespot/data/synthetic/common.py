"""What every synthetic world shares: anti-aliased drawing, the labelled frame of a contact, writing a dataset.

A *world* is a module of this package (``rally_side``, ``court_top``) that provides ``NAME``, ``CLASSES``,
``LONG_RANGE`` (the classes decided only well after their frame), ``PRESETS`` and ``get_preset``,
``GENERATOR_VERSION``, ``plan_dataset(preset, seed)`` (split -> video specs with ``name``/``num_frames``) and
``simulate_video(spec, preset, render=...)`` (an object with ``frames`` and ``to_video()``). ``generate`` writes
any world in the E2E-Spot layout.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from pespot.data.labels import Video, save_classes, save_split
from pespot.errors import DataError, PespotError
from pespot.fsutil import atomic_path, write_json_atomic

SPLITS = ("train", "val", "test")


def split_id(split: str) -> int:
    """A stable number per split name (the three standard splits first) for seeding a split's planner."""
    return SPLITS.index(split) if split in SPLITS else len(SPLITS) + sum(map(ord, split))


def deal(rng: np.random.Generator, counts: dict[str, int]) -> list[str]:
    """A shuffled deck holding exactly ``counts[name]`` cards of each name: exact class proportions per split."""
    deck = [name for name, n in counts.items() for _ in range(n)]
    return [deck[i] for i in rng.permutation(len(deck))]


# ------------------------------------------------------------------------------------------------------------
# Drawing (float32 RGB in [0, 1], soft-edged shapes so that sub-pixel motion is visible)


class Canvas:
    """Anti-aliased drawing primitives in pixel coordinates (pixel centres at +0.5) on an (H, W, 3) image."""

    def __init__(self, img: np.ndarray):
        self.img = img

    def blend(self, r0: int, r1: int, c0: int, c1: int, alpha: np.ndarray, colour) -> None:
        """Mix ``colour`` into the region with per-pixel weight ``alpha``."""
        if alpha.size == 0:
            return
        region = self.img[r0:r1, c0:c1]
        region += alpha[..., None] * (np.asarray(colour, dtype=np.float32) - region)

    def box(self, cx: float, cy: float, reach: float) -> tuple[int, int, int, int] | None:
        """The pixel rows/columns within ``reach`` of (cx, cy), clipped to the image (None when outside)."""
        h, w = self.img.shape[:2]
        r0, r1 = max(0, int(cy - reach - 1)), min(h, int(cy + reach + 2))
        c0, c1 = max(0, int(cx - reach - 1)), min(w, int(cx + reach + 2))
        if r0 >= r1 or c0 >= c1:
            return None
        return r0, r1, c0, c1

    def disc_px(self, cx: float, cy: float, r: float, colour, opacity: float = 1.0, squash: float = 1.0) -> None:
        """A filled disc of radius ``r`` pixels (an ellipse of vertical radius ``r * squash`` when < 1)."""
        box = self.box(cx, cy, r)
        if box is None:
            return
        r0, r1, c0, c1 = box
        rows = (np.arange(r0, r1, dtype=np.float32) + 0.5 - cy)[:, None] / max(squash, 1e-3)
        cols = (np.arange(c0, c1, dtype=np.float32) + 0.5 - cx)[None, :]
        alpha = np.clip(r + 0.5 - np.sqrt(rows * rows + cols * cols), 0.0, 1.0) * opacity
        self.blend(r0, r1, c0, c1, alpha, colour)

    def segment_px(self, ca: float, ra: float, cb: float, rb: float, hw: float, colour,
                   opacity: float = 1.0) -> None:
        """A thick line from (column, row) a to b with half width ``hw`` pixels."""
        h, w = self.img.shape[:2]
        r0, r1 = max(0, int(min(ra, rb) - hw - 1)), min(h, int(max(ra, rb) + hw + 2))
        c0, c1 = max(0, int(min(ca, cb) - hw - 1)), min(w, int(max(ca, cb) + hw + 2))
        if r0 >= r1 or c0 >= c1:
            return
        py = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
        px = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5
        dx, dy = cb - ca, rb - ra
        length2 = dx * dx + dy * dy
        s = np.clip(((px - ca) * dx + (py - ra) * dy) / length2, 0.0, 1.0) if length2 > 0 else 0.0
        dist = np.hypot(px - (ca + s * dx), py - (ra + s * dy))
        self.blend(r0, r1, c0, c1, np.clip(hw + 0.5 - dist, 0.0, 1.0) * opacity, colour)

    def rect_px(self, c_lo: float, r_lo: float, c_hi: float, r_hi: float, colour) -> None:
        """A filled axis-aligned rectangle with exact fractional coverage at its edges."""
        h, w = self.img.shape[:2]
        r0, r1 = max(0, math.floor(r_lo)), min(h, math.ceil(r_hi))
        c0, c1 = max(0, math.floor(c_lo)), min(w, math.ceil(c_hi))
        if r0 >= r1 or c0 >= c1:
            return
        rows = np.arange(r0, r1, dtype=np.float32)
        cols = np.arange(c0, c1, dtype=np.float32)
        cov_r = np.clip(np.minimum(rows + 1, r_hi) - np.maximum(rows, r_lo), 0, 1)
        cov_c = np.clip(np.minimum(cols + 1, c_hi) - np.maximum(cols, c_lo), 0, 1)
        self.blend(r0, r1, c0, c1, cov_r[:, None] * cov_c[None, :], colour)


def jitter(rng: np.random.Generator, colour, amount: float = 0.06) -> tuple[float, float, float]:
    """``colour`` with each channel moved by up to ``amount`` (clipped to [0, 1])."""
    c = np.clip(np.asarray(colour) + rng.uniform(-amount, amount, 3), 0, 1)
    return tuple(float(v) for v in c)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] image -> uint8 (rounded, clipped)."""
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------------------
# The labelled frame of a contact


def event_frame(time: float, point: Sequence[float], ball_position: Callable, fps: float) -> int:
    """The labelled frame of a contact at continuous ``time`` where the ball's centre is at ``point``: of the two
    frames around it, the one showing the ball nearest to the contact point (the earlier one on a tie; the frame
    itself when a frame falls exactly on it). ``ball_position(t)`` returns one coordinate array per axis."""
    before = math.floor(time * fps)
    if before / fps == time:
        return before
    after = before + 1
    coords = ball_position(np.array([before / fps, after / fps]))
    if len(point) == 2:
        dist = np.hypot(coords[0] - point[0], coords[1] - point[1])
    else:
        dist = np.sqrt(sum((c - p) ** 2 for c, p in zip(coords, point)))
    return before if dist[0] <= dist[1] else after


# ------------------------------------------------------------------------------------------------------------
# Writing a dataset


def write_jpgs(frames: np.ndarray, folder: Path) -> None:
    """All frames as ``%06d.jpg`` (quality 95, 4:4:4) into a temporary folder renamed onto ``folder`` at the end."""
    from PIL import Image

    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for i, frame in enumerate(frames):
            # no chroma subsampling: at 64 px a 4:2:0 JPEG smears the ball and the light into the background
            Image.fromarray(frame).save(tmp / f"{i:06d}.jpg", quality=95, subsampling=0)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_mp4(frames: np.ndarray, path: Path, fps: float) -> None:
    """All frames as an H.264 mp4 (PyAV, crf 17, keyframe every 25 frames), written atomically, with its index
    (moov) first (``faststart``) so that the file also plays from a pipe (``cat x.mp4 | pespot stream RUN -``)."""
    import av

    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4",
                                           options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "17", "g": "25", "bf": "0", "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _complete(path: Path, num_frames: int, fmt: str) -> bool:
    if fmt == "jpg":
        return path.is_dir() and sum(1 for _ in path.glob("*.jpg")) == num_frames
    return path.is_file() and path.stat().st_size > 0


def dataset_info(world: ModuleType, preset: Any, seed: int, fmt: str | None) -> dict:
    """What ``synth.json`` records: the world, its generator version, preset, seed, format, size, fps, classes."""
    info = {"generator": "pespot.data.synthetic", "version": world.GENERATOR_VERSION, "preset": preset.name,
            "seed": int(seed), "format": fmt, "fps": preset.fps, "width": preset.size, "height": preset.size,
            "classes": list(world.classes_of(preset))}
    if world.NAME == "rally-side":  # the first world's synth.json predates worlds: kept as it was
        info["long_range_pair"] = list(world.LONG_RANGE)
    else:
        info.update({"world": world.NAME, "long_range": list(world.LONG_RANGE)})
    return info


def _check_folder(out: Path, info: dict) -> None:
    info_path = out / "synth.json"
    if info_path.is_file():
        try:
            old = json.loads(info_path.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old != info:
            raise DataError(f"{out}: already holds a different synthetic dataset ({info_path}); "
                            f"choose another folder or delete it")
    elif out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: folder exists and is not empty (expected a new or empty folder)")


def generate(world: ModuleType, out_dir: str | os.PathLike, preset: Any, seed: int = 0, fmt: str = "jpg", *,
             labels_only: bool = False, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``world``'s dataset for ``preset`` (a name or a Preset) in E2E-Spot layout; return its folder.

    ``out_dir`` gets ``class.txt``, ``{train,val,test}.json`` and ``frames/<video>/%06d.jpg`` (``fmt='jpg'``)
    or ``frames/<video>.mp4`` (``fmt='mp4'``), plus ``synth.json`` (how it was made). Frames are written first,
    one video at a time (each appears complete or not at all), the label files last, so a folder with
    ``test.json`` is complete. Re-running with the same arguments on an interrupted folder resumes it;
    ``labels_only`` writes the label files without frames (for statistics).
    """
    spec = world.get_preset(preset) if isinstance(preset, str) else preset
    if fmt not in ("jpg", "mp4"):
        raise PespotError(f"unknown frame format '{fmt}' (expected jpg or mp4)")
    out = Path(out_dir)
    info = dataset_info(world, spec, seed, None if labels_only else fmt)
    _check_folder(out, info)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "synth.json", info)
    frames_dir = out / "frames"
    if frames_dir.is_dir():  # leftovers of a killed run: half-written videos under temporary names
        for stale in frames_dir.glob(".*.tmp*"):
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink()

    plans = world.plan_dataset(spec, seed)
    total = sum(len(v) for v in plans.values())
    done = 0
    splits: dict[str, list[Video]] = {}
    for split, specs in plans.items():
        videos = []
        for vs in specs:
            target = out / "frames" / (vs.name if fmt == "jpg" else f"{vs.name}.mp4")
            need_frames = not labels_only and not _complete(target, vs.num_frames, fmt)
            sim = world.simulate_video(vs, spec, render=need_frames)
            if need_frames:
                assert sim.frames is not None
                if fmt == "jpg":
                    write_jpgs(sim.frames, target)
                else:
                    write_mp4(sim.frames, target, spec.fps)
            videos.append(sim.to_video())
            done += 1
            if progress is not None:
                progress(done, total)
        splits[split] = videos
    save_classes(list(world.classes_of(spec)), out / "class.txt")
    for split, videos in splits.items():
        save_split(videos, out / f"{split}.json")
    return out


# ------------------------------------------------------------------------------------------------------------
# Statistics


def class_counts(videos: list[Video], classes: Sequence[str] = ()) -> dict[str, int]:
    """Events per class (every class of ``classes`` present, possibly 0; others as they occur)."""
    counts = {c: 0 for c in classes}
    for v in videos:
        for e in v.events:
            counts[e.label] = counts.get(e.label, 0) + 1
    return counts


def dataset_summary(out_dir: str | os.PathLike) -> dict:
    """Per split and overall: videos, frames, events per class, and the max/min class ratio."""
    from pespot.data.labels import load_dataset

    ds = load_dataset(out_dir)
    summary: dict = {"splits": {}}
    all_videos: list[Video] = []
    for split, videos in ds.splits.items():
        all_videos.extend(videos)
        summary["splits"][split] = _summary(videos, ds.classes)
    summary["all"] = _summary(all_videos, ds.classes)
    return summary


def _summary(videos: list[Video], classes: Sequence[str]) -> dict:
    counts = class_counts(videos, classes)
    total = sum(counts.values())
    nonzero = [c for c in counts.values() if c > 0]
    return {"videos": len(videos), "frames": sum(v.num_frames for v in videos), "events": total,
            "per_class": counts,
            "fraction": {k: (v / total if total else 0.0) for k, v in counts.items()},
            "max_min_ratio": (max(nonzero) / min(nonzero)) if nonzero else None}
