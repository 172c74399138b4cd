"""SoccerNet-v2 labels and predictions <-> pespot's frame-indexed ``Video``s.

Files (one folder per game, ``<league>/<season>/<game>/``):

* ``Labels-v2.json``: ``{"UrlLocal", ..., "annotations": [{"gameTime": "1 - 00:24", "label", "position":
  "24656", "team", "visibility"}]}``; ``position`` is milliseconds from the start of the half given by the first
  character of ``gameTime``.
* ``results_spotting.json``: ``{"UrlLocal": game, "predictions": [{"gameTime", "label", "position", "half",
  "confidence"}]}``; the official evaluator reads ``label``, ``half``, ``position`` and ``confidence``.

A game becomes two videos, ``<game>/half1`` and ``<game>/half2`` (the ids of T-DEED's split lists).

Time <-> frame at ``fps`` frames per second, both exact in integer arithmetic:

* ``ms_to_frame(ms) = floor(ms * fps / 1000)``: the frame showing that instant. (E2E-Spot and T-DEED compute
  ``int(ms / 1000 * fps)`` in floating point, which at 25 fps puts 1160 ms on frame 28 instead of 29; at 2 fps
  both agree.)
* ``frame_to_ms(frame) = ceil(frame * 1000 / fps)``: the first whole millisecond inside the frame, so
  ``ms_to_frame(frame_to_ms(f)) == f`` for every frame at any fps below 1000, and a position that is a multiple
  of the frame period (500 ms at 2 fps, 40 ms at 25 fps) goes ms -> frame -> ms unchanged.
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from pespot.data.labels import Event, Video, read_json
from pespot.errors import DataError, require_keys
from pespot.fsutil import write_json_atomic

# SoccerNet's EVENT_DICTIONARY_V2 order (the class.txt of T-DEED in ../shared/data/soccernetv2/).
SOCCERNET_V2_CLASSES = [
    "Penalty", "Kick-off", "Goal", "Substitution", "Offside", "Shots on target", "Shots off target",
    "Clearance", "Ball out of play", "Throw-in", "Foul", "Indirect free-kick", "Direct free-kick", "Corner",
    "Yellow card", "Red card", "Yellow->red card",
]

LABEL_FILE = "Labels-v2.json"
PREDICTION_FILE = "results_spotting.json"
_GAME_TIME = re.compile(r"^\s*([12])\s*-\s*(\d+):(\d{1,2})\s*$")
_HALF_ID = re.compile(r"^(.+)/half([12])$")


# ------------------------------------------------------------------------------------------------------------
# time conversions


def _check_fps(fps: float) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < 1000:
        raise DataError(f"fps must be a number in (0, 1000), got {fps!r}")
    return float(fps)


def ms_to_frame(ms: int, fps: float) -> int:
    """The frame (0-based) showing the instant ``ms`` milliseconds after the start: ``floor(ms * fps / 1000)``."""
    # ms * fps is exact in float64 for integer ms and the usual fps (2, 25, 12.5...); one rounding in the division
    # cannot cross an integer, so the floor is exact.
    return math.floor(ms * _check_fps(fps) / 1000)


def frame_to_ms(frame: int, fps: float) -> int:
    """The first whole millisecond inside ``frame``: ``ceil(frame * 1000 / fps)`` (inverse of ``ms_to_frame``)."""
    fps = _check_fps(fps)
    ms = math.ceil(frame * 1000 / fps)
    # guard against a division rounded just above a whole number
    if ms > 0 and ms_to_frame(ms - 1, fps) == frame:
        ms -= 1
    return ms


def format_game_time(half: int, ms: int) -> str:
    """``"H - MM:SS"`` as in ``Labels-v2.json`` (minutes from the start of the half)."""
    seconds = ms // 1000
    return f"{half} - {seconds // 60:02d}:{seconds % 60:02d}"


def parse_game_time(text: Any, where: str) -> tuple[int, int]:
    """``"1 - 00:24"`` -> (half 1, 24000 ms); a clear error naming ``where`` otherwise."""
    m = _GAME_TIME.match(text) if isinstance(text, str) else None
    if m is None:
        raise DataError(f"{where}: bad gameTime {text!r} (expected 'H - MM:SS' with half 1 or 2)")
    return int(m.group(1)), (int(m.group(2)) * 60 + int(m.group(3))) * 1000


def half_video_id(game: str, half: int) -> str:
    """``<game>/half<h>``: the video id of one half."""
    return f"{game.rstrip('/')}/half{half}"


def split_video_id(video: str) -> tuple[str, int]:
    """``"<game>/half2"`` -> (game, 2); a clear error for ids of another form."""
    m = _HALF_ID.match(video)
    if m is None:
        raise DataError(f"video '{video}': expected a SoccerNet half id '<league>/<season>/<game>/half1|half2'")
    return m.group(1), int(m.group(2))


# ------------------------------------------------------------------------------------------------------------
# Labels-v2.json


def _position_ms(value: Any, where: str) -> int:
    bad = DataError(f"{where}: 'position' must be whole milliseconds, got {value!r}")
    if isinstance(value, bool):
        raise bad
    try:
        ms = int(value)
    except (TypeError, ValueError):
        raise bad from None
    if ms < 0:
        raise DataError(f"{where}: 'position' must be >= 0, got {ms}")
    return ms


def labels_to_videos(obj: Any, game: str, fps: float, classes: list[str] | None = None, *,
                     where: str = "", num_frames: dict[int, int] | None = None,
                     skip_unknown: bool = False) -> list[Video]:
    """Convert a parsed ``Labels-v2.json`` into two videos (``<game>/half1``, ``<game>/half2``) at ``fps``.

    Each event keeps ``team``, ``visibility`` and the exact ``position_ms`` in ``extra``; ``comment`` is
    ``"<team>; <visibility>"`` as in E2E-Spot's converted files. ``num_frames`` maps half -> frame count (default
    -1, unknown); when given, an event of a half missing from it, or at or after the half's last frame, is an
    error. Labels outside ``classes`` are an error unless ``skip_unknown``.
    """
    fps = _check_fps(fps)
    where = where or f"game '{game}'"
    if not isinstance(obj, dict) or not isinstance(obj.get("annotations"), list):
        raise DataError(f"{where}: expected an object with an 'annotations' list")
    known = set(classes) if classes is not None else None
    events: dict[int, list[Event]] = {1: [], 2: []}
    for i, ann in enumerate(obj["annotations"]):
        w = f"{where}: annotation {i}"
        require_keys(ann, ("gameTime", "label"), w)
        label = ann["label"]
        if not isinstance(label, str):
            raise DataError(f"{w}: 'label' must be a string, got {label!r}")
        if known is not None and label not in known:
            if skip_unknown:
                continue
            raise DataError(f"{w}: unknown label '{label}' (classes: {', '.join(classes or [])})")
        half, clock_ms = parse_game_time(ann["gameTime"], w)
        ms = _position_ms(ann["position"], w) if "position" in ann else clock_ms
        frame = ms_to_frame(ms, fps)
        if num_frames is not None:
            # The frame counts say which half videos exist and how long they are: an event of a half without
            # a video, or after its end, could never be shown to the model.
            n = num_frames.get(half)
            if n is None:
                raise DataError(f"{w}: an event of half {half}, but the game has no video of half {half} "
                                f"(frame counts given for half {', '.join(map(str, sorted(num_frames)))})")
            if n >= 0 and frame >= n:
                raise DataError(f"{w}: position {ms} ms is frame {frame} at {fps:g} fps, after the end of "
                                f"half {half} ({n} frames)")
        team = str(ann.get("team", ""))
        visibility = str(ann.get("visibility", "visible"))
        events[half].append(Event(frame=frame, label=label, comment=f"{team}; {visibility}",
                                  extra={"team": team, "visibility": visibility, "position_ms": ms}))
    out = []
    for half in (1, 2):
        evs = sorted(events[half], key=lambda e: e.extra["position_ms"])  # stable: file order for ties
        n = (num_frames or {}).get(half, -1)
        out.append(Video(video=half_video_id(game, half), num_frames=n, fps=fps, events=evs))
    return out


def read_labels(path: str | os.PathLike, fps: float, classes: list[str] | None = None, *,
                game: str | None = None, num_frames: dict[int, int] | None = None,
                skip_unknown: bool = False) -> list[Video]:
    """Read one game's ``Labels-v2.json`` into two videos at ``fps`` (see ``labels_to_videos``).

    ``game`` defaults to the file's ``UrlLocal`` (trailing slash removed), else the folder's last three parts.
    """
    path = Path(path)
    obj = read_json(path)
    if game is None:
        url = obj.get("UrlLocal") if isinstance(obj, dict) else None
        game = url.rstrip("/") if isinstance(url, str) and url.strip("/") else "/".join(path.parent.parts[-3:])
    return labels_to_videos(obj, game, fps, classes, where=str(path), num_frames=num_frames,
                            skip_unknown=skip_unknown)


def find_games(root: str | os.PathLike, filename: str = LABEL_FILE) -> list[str]:
    """Relative paths (``<league>/<season>/<game>``, '/'-separated, sorted) of the folders under ``root``
    holding ``filename``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    games = []
    for folder, _dirs, files in os.walk(root):
        if filename in files:
            rel = Path(folder).relative_to(root)
            games.append(rel.as_posix() if rel.parts else ".")
    if not games:
        raise DataError(f"{root}: no '{filename}' found in its game folders")
    return sorted(games)


def load_soccernet(labels_root: str | os.PathLike, fps: float, classes: list[str] | None = None, *,
                   games: list[str] | None = None, label_file: str = LABEL_FILE,
                   skip_unknown: bool = False) -> list[Video]:
    """All halves of the games under ``labels_root`` (or of ``games``) as videos at ``fps``."""
    labels_root = Path(labels_root)
    names = games if games is not None else find_games(labels_root, label_file)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{labels_root}: game '{repeated[0]}' is listed more than once")
    videos: list[Video] = []
    for name in names:
        videos.extend(read_labels(labels_root / name / label_file, fps, classes, game=name,
                                  skip_unknown=skip_unknown))
    return videos


# ------------------------------------------------------------------------------------------------------------
# results_spotting.json


def videos_to_results(videos: list[Video], fps: float | None = None) -> dict[str, dict]:
    """Group predicted halves by game: game -> ``results_spotting.json`` object.

    Frames become milliseconds with ``frame_to_ms`` at ``fps`` (default: each video's own fps). Predictions are
    listed by half, then time, then class. The official evaluator keeps only the *last* prediction of a class
    in each of its bins (0.5 s at 2 fps): apply NMS first if several may fall in one bin.
    """
    games: dict[str, list[tuple]] = defaultdict(list)
    for v in videos:
        game, half = split_video_id(v.video)
        video_fps = fps if fps is not None else v.fps
        if video_fps is None or video_fps <= 0:
            raise DataError(f"video '{v.video}': no fps to turn frames into milliseconds (give fps)")
        for i, e in enumerate(v.events):
            if e.score is None:
                raise DataError(f"video '{v.video}', event {i}: prediction without a score")
            if e.frame < 0:
                raise DataError(f"video '{v.video}', event {i}: negative frame {e.frame}")
            ms = frame_to_ms(e.frame, video_fps)
            games[game].append((half, ms, e.label, float(e.score)))
    out = {}
    for game, preds in games.items():
        preds.sort(key=lambda p: (p[0], p[1]))
        out[game] = {"UrlLocal": game, "predictions": [
            {"gameTime": format_game_time(h, ms), "label": label, "position": str(ms), "half": str(h),
             "confidence": repr(score)} for h, ms, label, score in preds]}
    return out


def write_results(videos: list[Video], out_root: str | os.PathLike, fps: float | None = None,
                  filename: str = PREDICTION_FILE) -> list[Path]:
    """Write ``<out_root>/<game>/results_spotting.json`` for every game (atomically); returns the paths."""
    out_root = Path(out_root)
    paths = []
    for game, obj in sorted(videos_to_results(videos, fps).items()):
        path = out_root / game / filename
        write_json_atomic(path, obj)
        paths.append(path)
    return paths


def results_to_videos(obj: Any, game: str, fps: float, classes: list[str] | None = None, *,
                      where: str = "") -> list[Video]:
    """Convert a parsed ``results_spotting.json`` into two prediction videos at ``fps`` (events with scores)."""
    fps = _check_fps(fps)
    where = where or f"game '{game}' predictions"
    if not isinstance(obj, dict) or not isinstance(obj.get("predictions"), list):
        raise DataError(f"{where}: expected an object with a 'predictions' list")
    known = set(classes) if classes is not None else None
    events: dict[int, list[Event]] = {1: [], 2: []}
    for i, p in enumerate(obj["predictions"]):
        w = f"{where}: prediction {i}"
        if not isinstance(p, dict):
            raise DataError(f"{w}: expected an object, got {type(p).__name__}")
        for key in ("label", "position", "half", "confidence"):
            if key not in p:
                raise DataError(f"{w}: missing key '{key}'")
        label = p["label"]
        if not isinstance(label, str) or (known is not None and label not in known):
            raise DataError(f"{w}: unknown label {label!r}")
        try:
            half = int(p["half"])
        except (TypeError, ValueError):
            half = 0
        if half not in (1, 2) or isinstance(p["half"], bool):
            raise DataError(f"{w}: 'half' must be 1 or 2, got {p['half']!r}")
        try:
            score = float(p["confidence"])
        except (TypeError, ValueError):
            raise DataError(f"{w}: 'confidence' must be a number, got {p['confidence']!r}") from None
        ms = _position_ms(p["position"], w)
        events[half].append(Event(frame=ms_to_frame(ms, fps), label=label, score=score,
                                  extra={"position_ms": ms}))
    return [Video(video=half_video_id(game, h), num_frames=-1, fps=fps, events=events[h]) for h in (1, 2)]


def read_results(path: str | os.PathLike, fps: float, classes: list[str] | None = None, *,
                 game: str | None = None) -> list[Video]:
    """Read one ``results_spotting.json`` into two prediction videos (see ``results_to_videos``)."""
    path = Path(path)
    obj = read_json(path)
    if game is None:
        url = obj.get("UrlLocal") if isinstance(obj, dict) else None
        game = url.rstrip("/") if isinstance(url, str) and url.strip("/") else "/".join(path.parent.parts[-3:])
    return results_to_videos(obj, game, fps, classes, where=str(path))



# ------------------------------------------------------------------------------------------------------------
# Labels-v2.json from videos (the labels written back by `pespot review`)


def videos_to_labels(videos: list[Video], game: str, base: dict | None = None) -> dict:
    """One game's ``Labels-v2.json`` object from its half videos (``<game>/half1``, ``<game>/half2``).

    An event keeps its exact ``position_ms`` (in ``extra``) while it still falls in the same frame, else gets
    ``frame_to_ms`` of its frame at the video's fps; ``team`` and ``visibility`` come from ``extra`` ("not
    applicable" and "visible" for new events). Every top-level key of ``base`` (the file read at start:
    ``UrlLocal``, team names...) is kept; the annotations are listed by half, then time.
    """
    out = {k: v for k, v in (base or {}).items() if k != "annotations"}
    out.setdefault("UrlLocal", game.rstrip("/") + "/")
    annotations = []
    for v in videos:
        video_game, half = split_video_id(v.video)
        if video_game != game:
            raise DataError(f"video '{v.video}': not a half of game '{game}'")
        if v.fps is None or v.fps <= 0:
            raise DataError(f"video '{v.video}': no fps to turn frames into milliseconds")
        for e in v.events:
            ms = e.extra.get("position_ms")
            if not isinstance(ms, int) or ms_to_frame(ms, v.fps) != e.frame:
                ms = frame_to_ms(e.frame, v.fps)
            annotations.append((half, ms, {
                "gameTime": format_game_time(half, ms), "label": e.label, "position": str(ms),
                "team": str(e.extra.get("team", "not applicable")),
                "visibility": str(e.extra.get("visibility", "visible"))}))
    annotations.sort(key=lambda a: (a[0], a[1]))
    out["annotations"] = [a for _, _, a in annotations]
    return out


def write_labels(videos: list[Video], out_root: str | os.PathLike, bases: dict[str, dict] | None = None,
                 filename: str = LABEL_FILE) -> list[Path]:
    """Write ``<out_root>/<game>/Labels-v2.json`` for every game of ``videos`` (atomically); returns the paths."""
    games: dict[str, list[Video]] = defaultdict(list)
    for v in videos:
        games[split_video_id(v.video)[0]].append(v)
    paths = []
    for game, halves in sorted(games.items()):
        path = Path(out_root) / game / filename
        write_json_atomic(path, videos_to_labels(halves, game, (bases or {}).get(game)))
        paths.append(path)
    return paths
