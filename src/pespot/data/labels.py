"""Labels: one in-memory form for every dataset, read from and written to the field's formats.

A dataset is a list of class names (index 0 of the model's outputs is background, so class ``i`` of
``classes`` is output ``i + 1``) and splits; a split is a list of ``Video``; a video has frame-indexed
``Event``s. Predictions use the same types with ``Event.score`` set.

Formats: E2E-Spot JSON splits + ``class.txt`` (tennis, fs_comp, fs_perf, finegym, finediving and pespot's own
synthetic data). Keys that pespot does not interpret (``_source_info``, ``width``...) are kept in ``extra``
and written back unchanged. Split lists without events (T-DEED's SoccerNet ``{video, num_frames}`` lists) are
read as unlabelled videos and written back without ``events``.

Round trips keep everything except ``num_events``, which is always written as ``len(events)``: four FineDiving
entries upstream state one more event than they list, and the list is what every tool reads.

Frames carrying several events (FineGym: the end of one element and the start of the next) are kept as separate
events; nothing here collapses them. An event that repeats another of its video at the same frame with the same
class is a duplicate: a label can only be found once, so a duplicate would count as a miss in every mAP and as a
doubled target in training. ``pespot stats`` reports them per video; ``train`` and ``eval`` keep the first of each
and warn once per file with the count (``drop_duplicate_events``, ``report_duplicate_events``), rather than
refusing a dataset that is otherwise fine.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pespot.errors import DataError, require_keys
from pespot.fsutil import write_json_atomic, write_text_atomic


@dataclass
class Event:
    """One event at an exact frame (0-based, counted from the start of the video)."""

    frame: int
    label: str
    comment: str = ""
    score: float | None = None  # set on predictions
    extra: dict[str, Any] = field(default_factory=dict)  # other keys of the source format, kept on a round trip


@dataclass
class Video:
    """One video (or clip of a longer one) with its events."""

    video: str  # id; the frame store holds <frames>/<video>/ (JPEG) or <frames>/<video>.mp4
    num_frames: int
    fps: float | None
    events: list[Event] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # other keys (width, height, _source_info, ...)
    # False for split lists without an "events" key (T-DEED's SoccerNet lists): written back without one.
    labelled: bool = True


@dataclass
class Dataset:
    """Class names plus named splits."""

    classes: list[str]
    splits: dict[str, list[Video]] = field(default_factory=dict)
    root: Path | None = None

    @property
    def class_index(self) -> dict[str, int]:
        """Class name -> model output index (1-based; 0 is background)."""
        return {name: i + 1 for i, name in enumerate(self.classes)}


# ------------------------------------------------------------------------------------------------------------
# class.txt


def load_classes(path: str | Path) -> list[str]:
    """Read ``class.txt``: one class name per line (blank lines ignored, duplicates are an error)."""
    path = Path(path)
    try:
        # utf-8-sig: a byte-order mark (Windows editors) must not become part of the first class name.
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: class file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read class file ({err})") from None
    classes: list[str] = []
    for lineno, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            continue
        if name in classes:
            raise DataError(f"{path}:{lineno}: duplicated class '{name}'")
        classes.append(name)
    if not classes:
        raise DataError(f"{path}: no class names")
    return classes


def save_classes(classes: list[str], path: str | Path) -> None:
    """Write ``class.txt`` atomically."""
    write_text_atomic(path, "".join(f"{c}\n" for c in classes))


# ------------------------------------------------------------------------------------------------------------
# E2E-Spot JSON

_VIDEO_KEYS = ("video", "num_frames", "num_events", "events", "fps")
_EVENT_KEYS = ("frame", "label", "comment", "score")


def _event_from_json(obj: Any, where: str) -> Event:
    require_keys(obj, ("frame", "label"), where)
    frame = obj["frame"]
    if isinstance(frame, bool) or not isinstance(frame, (int, float)) or int(frame) != frame:
        raise DataError(f"{where}: 'frame' must be an integer, got {frame!r}")
    label = obj["label"]
    if not isinstance(label, str):
        raise DataError(f"{where}: 'label' must be a string, got {label!r}")
    score = obj.get("score", obj.get("confidence"))
    if score is not None:
        try:
            score = float(score)
        except (TypeError, ValueError):
            raise DataError(f"{where}: 'score' must be a number, got {score!r}") from None
    comment = obj.get("comment", "")
    if comment is None:
        comment = ""
    if not isinstance(comment, str):
        raise DataError(f"{where}: 'comment' must be a string, got {comment!r}")
    extra = {k: v for k, v in obj.items() if k not in _EVENT_KEYS and k != "confidence"}
    return Event(frame=int(frame), label=label, comment=comment, score=score, extra=extra)


def _video_from_json(obj: Any, where: str, require_num_frames: bool) -> Video:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected an object with 'video' and 'events', got {type(obj).__name__}")
    if "video" not in obj:
        raise DataError(f"{where}: missing key 'video'")
    name = obj["video"]
    if not isinstance(name, str) or not name:
        raise DataError(f"{where}: 'video' must be a non-empty string, got {name!r}")
    where = f"{where} (video '{name}')"
    num_frames = obj.get("num_frames")
    if num_frames is None:
        if require_num_frames:
            raise DataError(f"{where}: missing key 'num_frames'")
        num_frames = -1
    elif isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 0:
        raise DataError(f"{where}: 'num_frames' must be a non-negative integer, got {num_frames!r}")
    fps = obj.get("fps")
    if fps is not None:
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps):
            raise DataError(f"{where}: 'fps' must be a number, got {fps!r}")
        fps = float(fps)
    num_events = obj.get("num_events")
    if num_events is not None and (isinstance(num_events, bool) or not isinstance(num_events, int)
                                   or num_events < 0):
        raise DataError(f"{where}: 'num_events' must be a non-negative integer, got {num_events!r}")
    labelled = "events" in obj
    events_obj = obj.get("events", [])
    if not isinstance(events_obj, list):
        raise DataError(f"{where}: 'events' must be a list, got {type(events_obj).__name__}")
    events = [_event_from_json(e, f"{where}, event {i}") for i, e in enumerate(events_obj)]
    extra = {k: v for k, v in obj.items() if k not in _VIDEO_KEYS}
    return Video(video=name, num_frames=num_frames, fps=fps, events=events, extra=extra, labelled=labelled)


def read_json(path: str | Path) -> Any:
    """Parse a JSON file, with a one-line error naming the file on failure."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig") as f:  # JSON is UTF-8; tolerate a byte-order mark
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: expected a JSON file, found a directory") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None


def load_split(path: str | Path, classes: list[str] | None = None, *, predictions: bool = False) -> list[Video]:
    """Read an E2E-Spot split (or prediction) JSON: a list of videos with events.

    With ``classes``, the split is validated (see ``validate_split``). Prediction files may omit
    ``num_frames`` (set to -1).
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of videos, got {type(data).__name__}")
    videos = [_video_from_json(v, f"{path}: entry {i}", not predictions) for i, v in enumerate(data)]
    if classes is not None:
        validate_split(videos, classes, str(path), predictions=predictions)
    return videos


def split_problems(videos: list[Video], classes: list[str] | None, where: str, *,
                   predictions: bool = False) -> list[str]:
    """Every problem of a parsed split, one line each naming the file, entry, video and event.

    Checks: a split without videos (predictions may be empty), duplicated video ids, fps <= 0 (fps -1 is allowed and means unknown), event frames outside
    ``[0, num_frames)``, unknown class names (when ``classes`` is given).
    """
    problems: list[str] = []
    if not videos and not predictions:
        problems.append(f"{where}: empty split (expected a list of videos, got none)")
    known = set(classes) if classes is not None else None
    first_entry: dict[str, int] = {}
    for vi, v in enumerate(videos):
        at = f"{where}: entry {vi} (video '{v.video}')"
        if v.video in first_entry:
            problems.append(f"{at}: duplicated video id (first at entry {first_entry[v.video]})")
        else:
            first_entry[v.video] = vi
        if v.fps is not None and v.fps <= 0 and not _fps_unknown_ok(v):
            problems.append(f"{at}: fps must be > 0 (or -1 for unknown), got {v.fps:g}")
        for ei, e in enumerate(v.events):
            if known is not None and e.label not in known:
                shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
                problems.append(f"{at}, event {ei}: unknown class '{e.label}' (classes: {shown})")
            if e.frame < 0 or (v.num_frames >= 0 and e.frame >= v.num_frames):
                problems.append(f"{at}, event {ei}: frame {e.frame} outside [0, {v.num_frames})")
    return problems


def duplicate_events(videos: list[Video]) -> dict[str, int]:
    """{video: events repeating an earlier event of the video at the same frame with the same class}, for the
    videos that have any."""
    counts: dict[str, int] = {}
    for v in videos:
        pairs = [(e.frame, e.label) for e in v.events]
        if len(set(pairs)) < len(pairs):
            counts[v.video] = len(pairs) - len(set(pairs))
    return counts


def drop_duplicate_events(videos: list[Video]) -> int:
    """Keep the first of each (frame, class) in every video, in place; returns how many events were dropped."""
    dropped = 0
    for v in videos:
        seen: set[tuple[int, str]] = set()
        kept = []
        for e in v.events:
            if (e.frame, e.label) not in seen:
                seen.add((e.frame, e.label))
                kept.append(e)
        dropped += len(v.events) - len(kept)
        v.events = kept
    return dropped


def report_duplicate_events(videos: list[Video], path: str | Path) -> int:
    """``drop_duplicate_events``, then one warning line on stderr naming ``path`` and the count (if any)."""
    per_video = duplicate_events(videos)
    dropped = drop_duplicate_events(videos)
    if dropped:
        first = next(iter(per_video))
        print(f"warning: {path}: {dropped} duplicated events (same video, frame and class) counted once, in "
              f"{len(per_video)} videos (first: '{first}')", file=sys.stderr)
    return dropped


def validate_split(videos: list[Video], classes: list[str] | None, where: str, *,
                   predictions: bool = False) -> None:
    """Raise one clear DataError for the first problem found by ``split_problems`` (and say how many more)."""
    problems = split_problems(videos, classes, where, predictions=predictions)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)


def _fps_unknown_ok(video: Video) -> bool:
    # FineDiving ships pre-extracted frames with fps = -1: the frame index is all that matters there.
    return video.fps == -1


def split_to_json(videos: list[Video]) -> list[dict]:
    """The E2E-Spot JSON form of a split (or of predictions, when events carry scores)."""
    out = []
    for v in videos:
        obj: dict[str, Any] = {"video": v.video}
        if v.num_frames >= 0:
            obj["num_frames"] = v.num_frames
        if not v.labelled and not v.events:  # a plain list entry: keep it so
            if v.fps is not None:
                obj["fps"] = v.fps
            obj.update(v.extra)
            out.append(obj)
            continue
        obj["num_events"] = len(v.events)
        events = []
        for e in v.events:
            ev: dict[str, Any] = {"frame": e.frame, "label": e.label}
            if e.comment or e.score is None:
                ev["comment"] = e.comment
            if e.score is not None:
                ev["score"] = e.score
            ev.update(e.extra)
            events.append(ev)
        obj["events"] = events
        if v.fps is not None:
            obj["fps"] = v.fps
        obj.update(v.extra)
        out.append(obj)
    return out


def save_split(videos: list[Video], path: str | Path) -> None:
    """Write an E2E-Spot split or prediction JSON atomically."""
    write_json_atomic(path, split_to_json(videos))


def load_dataset(root: str | Path, splits: list[str] | None = None) -> Dataset:
    """Read ``<root>/class.txt`` and the split files present (``train``, ``val``, ``test``, ``challenge``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    classes = load_classes(root / "class.txt")
    names = splits or [s for s in ("train", "val", "test", "challenge") if (root / f"{s}.json").is_file()]
    if not names:
        raise DataError(f"{root}: no split files (expected train.json, val.json or test.json)")
    ds = Dataset(classes=classes, root=root)
    for name in names:
        ds.splits[name] = load_split(root / f"{name}.json", classes)
    return ds
