"""Per-split statistics of a dataset folder or of one label file.

    pespot stats DATA [--classes CLASS_TXT] [--json]

DATA is a dataset folder (``class.txt`` and split JSONs: ``train``, ``val``, ``test``, ``challenge`` first, then any
other ``*.json``) or one split JSON (classes from ``--classes``, else a ``class.txt`` beside it, else the labels
found in its events, sorted). Every label problem (unknown class, frame out of range, duplicated video...) is
listed on stderr, one line each, and the command fails.

Per split: videos, frames, events, events per class (classes without events included), foreground fraction
(frames carrying at least one event / frames), frames carrying several events, the max/min ratio of events per
class over the classes that have events, video lengths and frame rates, and duplicated events (an event repeated
at the same frame with the same class) per video: reported, not an error (``train`` and ``eval`` count each once). Split lists without events (T-DEED's
SoccerNet lists) are reported as unlabelled.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pespot.errors import PespotError

_SPLIT_ORDER = ("train", "val", "test", "challenge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pespot stats``."""
    parser.add_argument("data", metavar="DATA", help="dataset folder (class.txt + split JSONs) or one split JSON")
    parser.add_argument("--classes", metavar="CLASS_TXT", help="class list (default: class.txt in/next to DATA, "
                        "else the labels of the events)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def split_stats(videos: list, classes: list[str]) -> dict[str, Any]:
    """Statistics of one split (a list of ``Video``) as a JSON-ready dict."""
    from pespot.data.labels import duplicate_events

    per_class = Counter({c: 0 for c in classes})
    frames_with_event = 0
    frames_with_several = 0
    known_frames = [v.num_frames for v in videos if v.num_frames >= 0]
    for v in videos:
        per_frame = Counter(e.frame for e in v.events)
        frames_with_event += len(per_frame)
        frames_with_several += sum(1 for n in per_frame.values() if n > 1)
        per_class.update(e.label for e in v.events)
    num_frames = sum(known_frames)
    num_events = sum(len(v.events) for v in videos)
    with_events = {c: n for c, n in per_class.items() if n > 0}
    fps = Counter("unknown" if v.fps is None or v.fps < 0 else f"{v.fps:g}" for v in videos)
    return {
        "videos": len(videos),
        "frames": num_frames,
        "frames_unknown_videos": len(videos) - len(known_frames),
        "events": num_events,
        "labelled": any(v.labelled for v in videos),
        "events_per_class": dict(per_class),
        "classes_without_events": [c for c, n in per_class.items() if n == 0],
        "foreground_fraction": frames_with_event / num_frames if num_frames else None,
        "frames_with_several_events": frames_with_several,
        "max_min_class_ratio": (max(with_events.values()) / min(with_events.values())) if with_events else None,
        "video_frames": ({"min": min(known_frames), "median": statistics.median(known_frames),
                          "max": max(known_frames)} if known_frames else None),
        "fps": dict(sorted(fps.items())),
        "duplicate_events": duplicate_events(videos),  # {video: count}; train and eval count each once
    }


def _split_files(data: Path) -> list[tuple[str, Path]]:
    if data.is_file():
        return [(data.stem, data)]
    if not data.is_dir():
        raise PespotError(f"{data}: no such dataset folder or label file")
    files = {p.stem: p for p in sorted(data.glob("*.json"))}
    # Other JSON files are splits only when they hold a list of videos: a folder also holds files such as
    # pespot synth's synth.json (a description of how it was made), which are not label files.
    names = [s for s in _SPLIT_ORDER if s in files] + [s for s in files
                                                        if s not in _SPLIT_ORDER and _is_video_list(files[s])]
    if not names:
        raise PespotError(f"{data}: no split files (expected train.json, val.json, test.json...)")
    return [(n, files[n]) for n in names]


def _is_video_list(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text()), list)
    except (OSError, ValueError):
        return True  # unreadable: let the split reader report it


def collect(data: str | Path, classes_path: str | Path | None = None) -> dict[str, Any]:
    """Read DATA (folder or split file) and return the full statistics report; label problems raise."""
    from pespot.data.labels import load_classes, load_split, split_problems

    data = Path(data)
    split_files = _split_files(data)
    folder = data if data.is_dir() else data.parent
    if classes_path is None and (folder / "class.txt").is_file():
        classes_path = folder / "class.txt"
    splits = {name: load_split(path) for name, path in split_files}
    if classes_path is not None:
        classes = load_classes(classes_path)
        classes_from = str(classes_path)
    else:
        classes = sorted({e.label for videos in splits.values() for v in videos for e in v.events})
        classes_from = "events"
    problems = [p for (name, path) in split_files
                for p in split_problems(splits[name], classes, str(path))]
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        raise PespotError(f"{len(problems)} problem(s) in the label files of {data} (listed above)")
    return {
        "data": str(data),
        "classes": classes,
        "classes_from": classes_from,
        "splits": {name: split_stats(splits[name], classes) for name, _ in split_files},
    }


def _fmt_int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def format_report(report: dict[str, Any]) -> str:
    """The human-readable tables of a ``collect`` report."""
    splits = report["splits"]
    names = list(splits)
    lines = [f"{report['data']}: {len(report['classes'])} classes (from {report['classes_from']})", ""]
    header = ["split", "videos", "frames", "events", "fg %", "multi", "max/min", "frames/video min/med/max", "fps"]
    rows = []
    for name in names:
        s = splits[name]
        fg = "-" if s["foreground_fraction"] is None or not s["labelled"] else f"{s['foreground_fraction'] * 100:.2f}"
        ratio = "-" if s["max_min_class_ratio"] is None else f"{s['max_min_class_ratio']:.1f}x"
        lengths = s["video_frames"]
        length = "-" if lengths is None else f"{lengths['min']}/{lengths['median']:g}/{lengths['max']}"
        fps = ", ".join(f"{k} ({v})" for k, v in s["fps"].items())
        events = _fmt_int(s["events"]) if s["labelled"] else "unlabelled"
        frames = _fmt_int(s["frames"]) + (f" (+{s['frames_unknown_videos']} unknown)"
                                          if s["frames_unknown_videos"] else "")
        rows.append([name, _fmt_int(s["videos"]), frames, events, fg, str(s["frames_with_several_events"]), ratio,
                     length, fps])
    lines += _table(header, rows, right=set(range(1, 8)))
    if any(splits[n]["labelled"] for n in names):
        lines.append("")
        class_rows = [[c] + [_fmt_int(splits[n]["events_per_class"][c]) for n in names] for c in report["classes"]]
        lines += _table(["events per class"] + names, class_rows, right=set(range(1, len(names) + 1)))
        for name in names:
            missing = splits[name]["classes_without_events"]
            if missing and splits[name]["labelled"]:
                lines.append(f"{name}: {len(missing)} class(es) without events: {', '.join(missing)}")
    for name in names:
        duplicates = splits[name]["duplicate_events"]
        if duplicates:
            shown = ", ".join(f"{video} ({n})" for video, n in duplicates.items())
            lines.append(f"{name}: {sum(duplicates.values())} duplicated events (same video, frame and class; "
                         f"train and eval count each once): {shown}")
    lines.append("")
    lines.append("fg % = frames with at least one event / frames; multi = frames with several events; "
                 "max/min = events of the most / least frequent class (among classes with events)")
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        cells = (f"{c:>{w}}" if i in right else f"{c:<{w}}" for i, (c, w) in enumerate(zip(row, widths)))
        return "  ".join(cells).rstrip()

    return [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]


def run(args: argparse.Namespace) -> int:
    """Print the statistics of DATA."""
    report = collect(args.data, args.classes)
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report))
    return 0
