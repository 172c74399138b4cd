"""``pespot review SOURCE...``: turn the sources named on the command line into a ``ReviewSession``.

A SOURCE is one of:

* a **video file** or **frame folder** (its id: the file stem or the folder name);
* a **split JSON** (events without scores: the labels), whose videos are found in ``--frames`` or among the videos
  given;
* a **prediction JSON** (events with scores: ``pespot infer --out``), whose videos are found the same way;
* a **run folder** or checkpoint: every video is spotted first (per-frame scores included);
* a **class.txt** (the classes of a new labelling);
* a SoccerNet **Labels-v2.json**: its two halves, found as ``1_*.mkv|mp4`` / ``2_*`` (``1_224p.mkv``) beside it
  or among the videos given.

The classes come from ``--classes`` or a class.txt SOURCE, else the run's, else the ``class.txt`` beside the split
or prediction JSON, else SoccerNet's 17 for Labels-v2 files.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pespot.data import soccernet
from pespot.data.frames import VIDEO_SUFFIXES, find_video_frames, open_frames
from pespot.data.labels import Video, load_classes, load_split, read_json
from pespot.errors import ConfigError, DataError
from pespot.review.session import Outputs, ReviewSession, ReviewVideo, check_classes_file

DEFAULT_FPS = 25.0


@dataclass
class Sources:
    """The SOURCE arguments, sorted by kind."""

    videos: list[Path] = field(default_factory=list)
    split: Path | None = None
    predictions: Path | None = None
    run: Path | None = None
    classes: Path | None = None
    soccernet: list[Path] = field(default_factory=list)


def classify(items: list[str]) -> Sources:
    """Sort the SOURCE arguments by kind; a clear error for anything else."""
    found = Sources()

    def one(kind: str, path: Path) -> None:
        if getattr(found, kind) is not None:
            raise ConfigError(f"{path}: a second {kind.replace('_', ' ')} SOURCE (already {getattr(found, kind)}); "
                              "give one")
        setattr(found, kind, path)

    for item in items:
        path = Path(item)
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        if path.is_dir():
            if (path / "checkpoints").is_dir():
                one("run", path)
            else:
                found.videos.append(path)  # a frame folder
        elif path.suffix == ".pt":
            one("run", path)
        elif path.name == soccernet.LABEL_FILE:
            found.soccernet.append(path)
        elif path.suffix.lower() == ".json":
            videos = load_split(path, predictions=True)
            scored = any(e.score is not None for v in videos for e in v.events)
            one("predictions" if scored else "split", path)
        elif path.suffix.lower() == ".txt":
            one("classes", path)
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            found.videos.append(path)
        else:
            raise DataError(f"{path}: not a video file, frame folder, split or prediction JSON, run folder, "
                            "class.txt or Labels-v2.json")
    return found


def video_id(path: Path) -> str:
    """The id of a video SOURCE: a file's stem, a folder's name."""
    return path.resolve().name if path.is_dir() else path.stem


def _classes(src: Sources, classes_file: str | None, predictor) -> list[str]:
    if classes_file or src.classes:
        return load_classes(classes_file or src.classes)
    if predictor is not None:
        return list(predictor.classes)
    for json_file in (src.split, src.predictions):
        if json_file is not None and (json_file.parent / "class.txt").is_file():
            return load_classes(json_file.parent / "class.txt")
    if src.soccernet:
        return list(soccernet.SOCCERNET_V2_CLASSES)
    raise ConfigError("no classes: give a class.txt (as a SOURCE or with --classes), or a split, prediction "
                      "JSON or run with a class.txt beside it")


def _media_for(vid: str, given: dict[str, Path], frames: str | None, where: str) -> Path:
    if vid in given:
        return given.pop(vid)
    if frames:
        return find_video_frames(frames, vid)
    raise DataError(f"{where}: video '{vid}': no video file or frame folder given for it (give the video as a "
                    "SOURCE, or --frames DIR)")


_HALF_FILE = re.compile(r"^([12])(?:_[^/]*)?\.(?:mkv|mp4|avi|webm|mov)$", re.IGNORECASE)


def _soccernet_halves(label_file: Path, given: dict[str, Path], classes: list[str]
                      ) -> tuple[str, dict, list[ReviewVideo]]:
    """The game id, the Labels-v2 object and the two halves of one SoccerNet game, whose videos are beside the
    labels (``1_224p.mkv``...) or given as SOURCE."""
    obj = read_json(label_file)
    url = obj.get("UrlLocal") if isinstance(obj, dict) else None
    game = url.rstrip("/") if isinstance(url, str) and url.strip("/") else "/".join(label_file.parent.parts[-3:])
    media: dict[int, Path] = {}
    for half in (1, 2):
        for candidate in [p for p in given.values() if p.parent == label_file.parent] + sorted(
                label_file.parent.iterdir()):
            m = _HALF_FILE.match(candidate.name)
            if m and int(m.group(1)) == half and candidate.is_file():
                media[half] = candidate
                given.pop(video_id(candidate), None)
                break
    if not media:
        raise DataError(f"{label_file}: no half videos beside it (expected 1_224p.mkv and 2_224p.mkv or similar)")
    sources = {half: open_frames(path) for half, path in media.items()}
    fps = {half: s.fps or DEFAULT_FPS for half, s in sources.items()}
    counts = {half: s.num_frames for half, s in sources.items()}
    rate = fps[min(fps)]
    halves = soccernet.labels_to_videos(obj, game, rate, classes, where=str(label_file), num_frames=counts)
    out = []
    for v in halves:
        half = int(v.video[-1])
        if half in media:
            out.append(ReviewVideo(video=v.video, media=media[half], num_frames=counts[half], fps=rate,
                                   labels=v.events, soccernet_game=game))
    return game, obj, out


def load_session(items: list[str], *, frames: str | None = None, classes_file: str | None = None,
                 out: str | None = None, csv: str | None = None, fps: float | None = None,
                 scores: str | None = None, min_score: float = 0.0, device: str = "auto",
                 progress: bool = True) -> ReviewSession:
    """Read every SOURCE, spot the videos when a run is given, and name the output files (nothing is written)."""
    src = classify(items)
    if src.run is not None and src.predictions is not None:
        raise ConfigError(f"{src.predictions}: give a run ({src.run}) or a prediction file, not both")
    predictor = None
    if src.run is not None:
        from pespot.infer import load_predictor

        predictor = load_predictor(src.run, device=device)
    classes = _classes(src, classes_file, predictor)
    if predictor is not None and len(predictor.classes) != len(classes):
        raise DataError(f"{src.run}: the model has {len(predictor.classes)} classes, the review {len(classes)}")
    if predictor is not None:
        predictor.classes = list(classes)
    given = {video_id(p): p for p in src.videos}
    if len(given) != len(src.videos):
        raise DataError("two video SOURCEs have the same id (file stem or folder name)")
    videos: list[ReviewVideo] = []
    if src.split is not None:
        for v in load_split(src.split, classes):
            media = _media_for(v.video, given, frames, str(src.split))
            videos.append(_review_video(v, media, fps))
    games: dict[str, tuple[Path, dict]] = {}
    for label_file in src.soccernet:
        game, obj, halves = _soccernet_halves(label_file, given, classes)
        if game in games:
            raise DataError(f"{label_file}: game '{game}' is also {games[game][0]}")
        games[game] = (label_file, obj)
        videos.extend(halves)
    by_id = {v.video: v for v in videos}
    if src.predictions is not None:
        _attach_predictions(src.predictions, classes, videos, by_id, given, frames, fps, min_score)
    for vid, path in given.items():  # videos to label from nothing
        videos.append(_review_video(Video(video=vid, num_frames=-1, fps=None), path, fps))
    if not videos:
        raise ConfigError("no videos: give video files, frame folders, or a split JSON with --frames")
    if predictor is not None:
        _spot(predictor, videos, min_score, progress)
    if scores:
        _attach_scores(Path(scores), classes, videos)
    outputs, others, state = _outputs(src, out, csv, videos, classes)
    for game, (label_file, obj) in games.items():  # written back where they were read
        outputs.soccernet[game], outputs.soccernet_bases[game] = label_file, obj
    return ReviewSession(classes, videos, outputs, other_entries=others, review_state=state)


def _review_video(v: Video, media: Path, fps: float | None) -> ReviewVideo:
    """A split entry (or a new video: ``num_frames`` -1) with the frame count and rate of its media."""
    source = open_frames(media, fps=fps)
    if v.num_frames >= 0 and source.num_frames < v.num_frames:
        raise DataError(f"video '{v.video}': {media} has {source.num_frames} frames, the labels say {v.num_frames}")
    num_frames = v.num_frames if v.num_frames >= 0 else source.num_frames
    rate = v.fps if v.fps and v.fps > 0 else fps or source.fps or DEFAULT_FPS
    return ReviewVideo(video=v.video, media=media, num_frames=num_frames, fps=float(rate), labels=list(v.events),
                       entry=v if v.num_frames >= 0 else None)


def _attach_predictions(path: Path, classes: list[str], videos: list[ReviewVideo], by_id: dict[str, ReviewVideo],
                        given: dict[str, Path], frames: str | None, fps: float | None, min_score: float) -> None:
    for p in load_split(path, classes, predictions=True):
        target = by_id.get(p.video)
        if target is None:
            media = _media_for(p.video, given, frames, str(path))
            target = _review_video(Video(video=p.video, num_frames=-1, fps=p.fps), media, fps)
            videos.append(target)
            by_id[p.video] = target
        beyond = [e.frame for e in p.events if e.frame >= target.num_frames]
        if beyond:
            raise DataError(f"{path}: video '{p.video}': a prediction at frame {beyond[0]}, but the video has "
                            f"{target.num_frames} frames")
        target.predictions = [e for e in p.events if (e.score or 0.0) >= min_score]


def _spot(predictor, videos: list[ReviewVideo], min_score: float, progress: bool) -> None:
    """Per-frame scores and events of every video, as ``pespot infer`` computes them with the run's settings."""
    from pespot import infer

    ev = predictor.cfg.eval
    for v in videos:
        if progress:
            print(f"spotting {v.video} ({v.num_frames} frames) with {predictor.source}", file=sys.stderr)
        source = open_frames(v.media, height=predictor.height)
        scores = infer.predict_scores(predictor, source, overlap=ev.overlap, batch_size=ev.batch_size,
                                      progress=progress, desc=v.video, num_frames=v.num_frames)
        events = infer.scores_to_events(scores, predictor.classes, threshold=max(ev.threshold, min_score),
                                        nms=ev.nms, nms_window=ev.nms_window, top_k=ev.top_k)
        v.predictions, v.scores = events, scores[:, 1:]


def _attach_scores(folder: Path, classes: list[str], videos: list[ReviewVideo]) -> None:
    """``<folder>/<video>.npz`` written by ``pespot infer --save-scores``, where present."""
    from pespot.infer import load_scores_npz

    if not folder.is_dir():
        raise DataError(f"{folder}: scores folder (--scores) not found")
    for v in videos:
        path = folder / f"{v.video}.npz"
        if not path.is_file():
            continue
        scores, names, _ = load_scores_npz(path)
        if names != classes:
            raise DataError(f"{path}: scores of the classes {', '.join(names[:8])}, the review has "
                            f"{', '.join(classes[:8])}")
        if len(scores) < v.num_frames:
            raise DataError(f"{path}: scores for {len(scores)} frames, the video has {v.num_frames}")
        v.scores = scores[: v.num_frames, 1:]


def _outputs(src: Sources, out: str | None, csv: str | None, videos: list[ReviewVideo],
             classes: list[str]) -> tuple[Outputs, list[Video], dict]:
    """The files Save writes; the entries of an existing output split (labels of a previous session are loaded)."""
    if out:
        split = Path(out)
    elif src.split is not None:
        split = src.split
    else:
        anchor = src.classes or src.predictions or (src.soccernet[0] if src.soccernet else None)
        split = (anchor.parent if anchor is not None else Path(".")) / "labels.json"
    if split.suffix.lower() != ".json":
        raise ConfigError(f"--out {split}: expected a .json file (E2E-Spot split)")
    check_classes_file(split.parent / "class.txt", classes)
    others: list[Video] = []
    if split.exists():
        previous = load_split(split, classes)
        by_id = {v.video: v for v in videos}
        for entry in previous:
            v = by_id.get(entry.video)
            if v is not None and split != src.split:
                if entry.num_frames != v.num_frames:
                    raise DataError(f"{split}: video '{entry.video}' has {entry.num_frames} frames there, "
                                    f"{v.num_frames} here")
                v.labels, v.entry = list(entry.events), entry  # continue where the last session saved
        others = previous
    review = split.with_name(split.stem + ".review.json")
    state = read_json(review) if review.is_file() else {}
    state = state.get("videos", {}) if isinstance(state, dict) else {}  # a damaged review file only costs the marks
    outputs = Outputs(split=split, classes=split.parent / "class.txt",
                      csv=Path(csv) if csv else split.with_suffix(".csv"), review=review)
    return outputs, others, state if isinstance(state, dict) else {}
