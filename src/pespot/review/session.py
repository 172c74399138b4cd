"""What ``pespot review`` shows and saves: the videos, the classes, the accepted labels, the predictions (kept apart
from the labels until a person accepts them), the per-frame scores, and the label files that Save writes.

Every file a save writes is named here at start-up (``Outputs``) and nowhere else: the page sends labels, never
paths. A save is checked whole before anything is written (video ids, frames inside the video, known classes),
then each file is written atomically. Two pages (tabs) saving: each save carries the version it started from; a
save from an older version is refused (``Conflict``) and the page merges its edits onto the newer labels and
saves again, so neither tab's edits are lost. A label file changed on disk by another program since it was read
is refused the same way, naming the file.
"""

from __future__ import annotations

import csv
import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pespot.data import soccernet
from pespot.data.labels import Event, Video, load_classes, save_classes, split_to_json
from pespot.errors import DataError, PespotError
from pespot.fsutil import write_json_atomic, write_text_atomic


class Conflict(PespotError):
    """A save made from labels older than the ones on the server or on disk: nothing was written."""


@dataclass
class ReviewVideo:
    """One video under review."""

    video: str  # id, as in the label files
    media: Path  # the video file or frame folder the page shows (transcoded when needed)
    num_frames: int
    fps: float  # frames per second of the labels (times shown on the page, SoccerNet positions)
    labels: list[Event] = field(default_factory=list)  # accepted labels (truth)
    predictions: list[Event] = field(default_factory=list)  # with scores; never written as labels unless accepted
    scores: np.ndarray | None = None  # (num_frames, K) per-frame score of each class, when known
    entry: Video | None = None  # the split entry it came from (its other keys are written back)
    soccernet_game: str | None = None  # game id when the video is a SoccerNet half


@dataclass
class Outputs:
    """The label files Save writes, all fixed at start-up."""

    split: Path  # E2E-Spot split JSON
    classes: Path  # class.txt beside it (written when absent; must match when present)
    csv: Path  # video, frame, time, label
    review: Path  # which predictions were accepted or rejected (so a later session does not ask again)
    soccernet: dict[str, Path] = field(default_factory=dict)  # game -> its Labels-v2.json
    soccernet_bases: dict[str, dict] = field(default_factory=dict)  # game -> the Labels-v2 object read at start

    def paths(self) -> list[Path]:
        """Every file a save may write."""
        return [self.split, self.classes, self.csv, self.review, *self.soccernet.values()]


def _fingerprint(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


class ReviewSession:
    """The server-side state of a review: labels by stable ids, a version, and the save."""

    def __init__(self, classes: list[str], videos: list[ReviewVideo], outputs: Outputs,
                 other_entries: list[Video] | None = None, review_state: dict | None = None) -> None:
        self.classes = list(classes)
        self.videos = videos
        self.outputs = outputs
        self.other_entries = list(other_entries or [])  # entries of the output split not under review: kept
        self.version = 0
        self.lock = threading.Lock()
        self._labels: list[dict[str, Event]] = []  # per video: uid -> label (comment/extra kept across saves)
        self._original_frame: dict[str, int] = {}
        self._status: list[dict[str, str]] = []  # per video: prediction uid -> accepted | rejected
        for vi, v in enumerate(videos):
            self._labels.append({f"s{vi}-{k}": e for k, e in enumerate(v.labels)})
            self._original_frame.update({f"s{vi}-{k}": e.frame for k, e in enumerate(v.labels)})
            self._status.append(_restore_status(vi, v, (review_state or {}).get(v.video, {})))
        self._disk = {p: _fingerprint(p) for p in outputs.paths()}

    # ---------------------------------------------------------------------------------------------------- state

    def state(self) -> dict[str, Any]:
        """Everything the page needs, as JSON."""
        with self.lock:
            return {
                "classes": self.classes, "version": self.version,
                "outputs": [str(p) for p in self.outputs.paths()],
                "videos": [self._video_state(vi, v) for vi, v in enumerate(self.videos)],
            }

    def _video_state(self, vi: int, v: ReviewVideo) -> dict[str, Any]:
        return {
            "index": vi, "video": v.video, "num_frames": v.num_frames, "fps": v.fps,
            "labels": [{"uid": uid, "frame": e.frame, "label": e.label} for uid, e in self._labels[vi].items()],
            "predictions": [{"uid": f"p{vi}-{k}", "frame": e.frame, "label": e.label, "score": e.score,
                             "status": self._status[vi].get(f"p{vi}-{k}", "open")}
                            for k, e in enumerate(v.predictions)],
            "scores": v.scores is not None,
        }

    def scores_bytes(self, vi: int) -> bytes:
        """Per-frame scores of video ``vi`` as uint8 (score * 255, rounded), frame-major (num_frames, K)."""
        scores = self.videos[vi].scores
        if scores is None:
            raise DataError(f"video '{self.videos[vi].video}': no per-frame scores")
        return np.clip(np.rint(scores * 255), 0, 255).astype(np.uint8).tobytes()

    # ---------------------------------------------------------------------------------------------------- save

    def save(self, payload: Any) -> dict[str, Any]:
        """Check a save from the page, write every output file, return the new version and the files written.

        Raises ``Conflict`` (nothing written) when ``payload['version']`` is not the current version or an
        output changed on disk since it was read or last written, ``DataError`` for a malformed payload.
        """
        with self.lock:
            if not isinstance(payload, dict) or not isinstance(payload.get("version"), int):
                raise DataError("save: expected an object with 'version' and 'videos'")
            if payload["version"] != self.version:
                raise Conflict(f"the labels were saved from another page (version {self.version}, this page had "
                               f"version {payload['version']}); nothing was written")
            for path, seen in self._disk.items():
                if _fingerprint(path) != seen:
                    raise Conflict(f"{path} was changed on disk by another program since pespot review read or "
                                   "wrote it; nothing was written (restart pespot review to load it)")
            labels, status = self._parse(payload.get("videos"))
            try:
                self._write(labels, status)
            finally:
                # What this save wrote (all of it, or the files before a full disk stopped it) is ours: the next save
                # must not take it for another program's change.
                self._disk = {p: _fingerprint(p) for p in self.outputs.paths()}
            self._labels, self._status = labels, status
            self.version += 1
            return {"version": self.version, "written": [str(p) for p in self.outputs.paths()]}

    def _parse(self, videos: Any) -> tuple[list[dict[str, Event]], list[dict[str, str]]]:
        """The page's labels checked against the videos and classes; one DataError naming the first problem."""
        if not isinstance(videos, list) or len(videos) != len(self.videos):
            raise DataError(f"save: expected 'videos' to list all {len(self.videos)} videos")
        known = set(self.classes)
        labels: list[dict[str, Event]] = []
        status: list[dict[str, str]] = []
        for vi, (item, v) in enumerate(zip(videos, self.videos)):
            if not isinstance(item, dict) or item.get("video") != v.video:
                raise DataError(f"save: entry {vi}: expected video '{v.video}'")
            own: dict[str, Event] = {}
            for k, lab in enumerate(item.get("labels") or []):
                where = f"save: video '{v.video}', label {k}"
                if not isinstance(lab, dict) or not isinstance(lab.get("uid"), str):
                    raise DataError(f"{where}: expected an object with 'uid', 'frame' and 'label'")
                frame, name = lab.get("frame"), lab.get("label")
                if isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame < v.num_frames:
                    raise DataError(f"{where}: frame {frame!r} outside [0, {v.num_frames})")
                if name not in known:
                    raise DataError(f"{where}: unknown class {name!r}")
                old = self._labels[vi].get(lab["uid"])
                extra = dict(old.extra) if old is not None else {}
                if old is not None and frame != self._original_frame.get(lab["uid"]):
                    extra.pop("position_ms", None)  # a moved SoccerNet event gets the position of its new frame
                own[lab["uid"]] = Event(frame=frame, label=name, comment=old.comment if old else "", extra=extra)
            reviewed = item.get("reviewed") or {}
            preds = {f"p{vi}-{k}" for k in range(len(v.predictions))}
            st = {uid: kind for kind in ("accepted", "rejected") for uid in (reviewed.get(kind) or [])
                  if uid in preds}
            labels.append(own)
            status.append(st)
        return labels, status

    def _write(self, labels: list[dict[str, Event]], status: list[dict[str, str]]) -> None:
        order = {c: i for i, c in enumerate(self.classes)}
        written: list[Video] = []
        for vi, v in enumerate(self.videos):
            events = sorted(labels[vi].values(), key=lambda e: (e.frame, order[e.label]))
            entry = v.entry
            written.append(Video(video=v.video, num_frames=v.num_frames, fps=v.fps, events=events,
                                 extra=dict(entry.extra) if entry else {}))
        by_id = {w.video: w for w in written}
        # The output split keeps its other videos where they were; videos new to it come after them.
        entries = [by_id.pop(e.video, e) for e in self.other_entries] + list(by_id.values())
        out = self.outputs
        if not out.classes.exists():
            save_classes(self.classes, out.classes)
        reviewed: dict[str, dict[str, list]] = {}
        for vi, v in enumerate(self.videos):
            marks: dict[str, list] = {"accepted": [], "rejected": []}
            for uid, kind in status[vi].items():
                e = v.predictions[int(uid.split("-")[1])]
                marks[kind].append([e.frame, e.label])
            reviewed[v.video] = marks
        write_json_atomic(out.review, {"videos": reviewed}, indent=1)
        write_text_atomic(out.csv, labels_csv(written))
        for game, path in out.soccernet.items():
            halves = [w for w, v in zip(written, self.videos) if v.soccernet_game == game]
            write_json_atomic(path, soccernet.videos_to_labels(halves, game, out.soccernet_bases.get(game)))
        write_json_atomic(out.split, split_to_json(entries))


def labels_csv(videos: list[Video]) -> str:
    """One row per label: video, frame, time (seconds, 3 decimals; empty without fps), label."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["video", "frame", "time", "label"])
    for v in videos:
        for e in v.events:
            writer.writerow([v.video, e.frame, f"{e.frame / v.fps:.3f}" if v.fps else "", e.label])
    return buf.getvalue()


def _restore_status(vi: int, video: ReviewVideo, saved: dict) -> dict[str, str]:
    """Prediction uid -> accepted | rejected from a review file's ``[[frame, label], ...]`` lists."""
    out: dict[str, str] = {}
    for kind in ("accepted", "rejected"):
        marks = {(f, lab) for f, lab in (saved.get(kind) or []) if isinstance(f, int) and isinstance(lab, str)}
        for k, e in enumerate(video.predictions):
            if (e.frame, e.label) in marks:
                out[f"p{vi}-{k}"] = kind
    return out


def check_classes_file(path: Path, classes: list[str]) -> None:
    """``path`` (the class.txt beside the output split) must be absent or list exactly ``classes``."""
    if path.exists():
        have = load_classes(path)
        if have != classes:
            raise DataError(f"{path}: lists the classes {', '.join(have[:8])}, but the review uses "
                            f"{', '.join(classes[:8])}; choose --out in another folder or give this class.txt")
