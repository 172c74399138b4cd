"""Evaluation metrics: E2E-Spot's mAP at frame tolerances and the official SoccerNet average-mAP.

Both are our own vectorised numpy code, held to the reference definitions by tests (hand-computed cases, a
naive re-statement of the E2E-Spot rules, and equality with the ``SoccerNet`` package's ``evaluate``).

**mAP@δ (E2E-Spot, ``util/score.py``)**, per class over all videos at once:

1. Predictions of the class, from every video, are ranked by score, highest first. Ties keep the input order
   (videos in the order of the prediction list, events in file order), as Python's stable ``sort(reverse=True)``
   on the scores does.
2. For the prediction of rank i = 1, 2, ...: the closest ground-truth event of that class *in the same video*
   not yet matched is found first (equal distances: the one listed first in the truth), and only then checked:
   if ``|frame - truth| <= δ`` it is a true positive, that truth is matched, and the precision
   ``#matched / i`` is recorded. False positives record nothing.
3. Interpolated precision ``interp[j] = max(p[j:])``; ``AP = sum(interp) / #truth events of the class``.
4. mAP@δ = unweighted mean over the classes that have truth events.

Two rules follow E2E-Spot to the letter: truth events are matched by (video, frame), so two truth events of one
class on the same frame can be matched only once (both still count in the denominator); and a class with
predictions but no truth is left out of the mean. Unlike E2E-Spot (which asserts equal video sets), a truth
video with no predictions simply has no predictions, and predictions for a video absent from the truth are an
error. E2E-Spot also asserts scores <= 1; we accept any finite score.

**SoccerNet average-mAP (``SoccerNet.Evaluation.ActionSpotting.evaluate``)**, reproduced exactly:
truth and predictions are rasterised per half into bins of ``1/framerate`` s (``bin = int(framerate *
(position_ms / 1000))``, clipped to 120 min; a later entry on the same (bin, class) overwrites an earlier one,
for predictions too); each prediction carries the visibility of its closest truth event; per truth event in
temporal order, the highest-confidence unmatched prediction with ``|Δbin| <= delta/2`` is its match (ties: the
earliest); precision/recall at 200 thresholds ``linspace(0, 1, 200)``; 11-point interpolated AP; mean over all
classes of the dictionary (a class without truth scores 0); trapezoid over the deltas; the "visible" and
"unshown" variants keep the predictions whose closest truth is visible / not shown (or, for unshown, whose
half has no truth of that class), and the multi-delta unshown a-mAP is multiplied by 17/13.
Deliberate difference: a negative position is an error here (the official code would silently index from the
end of its array).
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pespot.data.labels import Video
from pespot.errors import DataError, PespotError, require_keys

TOLERANCES = (0, 1, 2, 4)


# ============================================================================================================
# E2E-Spot mAP at frame tolerances


@dataclass
class MapResult:
    """mAP at frame tolerances, per class, and the counts behind them."""

    tolerances: list[int]
    mAP: dict[int, float]  # tolerance -> mean AP over the classes with truth
    per_class: dict[str, dict[int, float]]  # class -> tolerance -> AP (classes with truth, in class order)
    num_truth: dict[str, int]  # class -> truth events (duplicates included)
    num_pred: dict[str, int]  # class -> predictions scored for that class
    classes_without_truth: list[str] = field(default_factory=list)  # known classes left out of the mean
    videos: int = 0
    videos_without_predictions: list[str] = field(default_factory=list)

    @property
    def average_mAP(self) -> float:
        """Mean of mAP over the tolerances (E2E-Spot's "Avg mAP (across tolerances)")."""
        return float(np.mean([self.mAP[t] for t in self.tolerances])) if self.tolerances else float("nan")

    def to_json(self) -> dict[str, Any]:
        """JSON form: ``{"mAP": {"0": ...}, "per_class": {cls: {"0": ...}}, "average_mAP", counts...}``."""
        return {
            "mAP": {str(t): self.mAP[t] for t in self.tolerances},
            "per_class": {c: {str(t): ap[t] for t in self.tolerances} for c, ap in self.per_class.items()},
            "average_mAP": self.average_mAP,
            "tolerances": list(self.tolerances),
            "num_truth": dict(self.num_truth),
            "num_pred": dict(self.num_pred),
            "classes_without_truth": list(self.classes_without_truth),
            "videos": self.videos,
            "videos_without_predictions": list(self.videos_without_predictions),
        }


def _check_tolerances(tolerances: Sequence[int]) -> list[int]:
    out = []
    for t in tolerances:
        if isinstance(t, bool) or int(t) != t or t < 0:
            raise PespotError(f"tolerances must be non-negative whole numbers of frames, got {t!r}")
        out.append(int(t))
    if not out:
        raise PespotError("no tolerance given")
    return out


def compute_map(truth: list[Video], pred: list[Video], classes: list[str] | None = None,
                tolerances: Sequence[int] = TOLERANCES) -> MapResult:
    """E2E-Spot mAP at each frame tolerance (see the module docstring for the exact rules).

    ``classes`` (optional) fixes the class order of the report and makes unknown labels an error; without it the
    classes are those of the truth events, sorted by name (E2E-Spot's order).
    """
    tols = _check_tolerances(tolerances)
    video_index: dict[str, int] = {}
    for v in truth:
        if v.video in video_index:
            raise DataError(f"truth: video '{v.video}' appears twice")
        video_index[v.video] = len(video_index)
    seen_pred: set[str] = set()
    for v in pred:
        if v.video not in video_index:
            raise DataError(f"predictions: video '{v.video}' is not in the truth")
        if v.video in seen_pred:
            raise DataError(f"predictions: video '{v.video}' appears twice")
        seen_pred.add(v.video)

    truth_labels = {e.label for v in truth for e in v.events}
    if classes is not None:
        known = set(classes)
        for where, videos in (("truth", truth), ("predictions", pred)):
            for v in videos:
                for i, e in enumerate(v.events):
                    if e.label not in known:
                        raise DataError(f"{where}: video '{v.video}', event {i}: unknown class '{e.label}'")
        eval_classes = [c for c in classes if c in truth_labels]
        without = [c for c in classes if c not in truth_labels]
    else:
        eval_classes = sorted(truth_labels)
        without = []
    class_id = {c: i for i, c in enumerate(eval_classes)}
    num_classes = len(eval_classes)

    # truth, flattened in list order: (class, video, frame)
    t_cls, t_vid, t_frame = [], [], []
    for v in truth:
        vi = video_index[v.video]
        for e in v.events:
            t_cls.append(class_id[e.label])
            t_vid.append(vi)
            t_frame.append(e.frame)
    t_cls_a = np.asarray(t_cls, dtype=np.int64)
    t_vid_a = np.asarray(t_vid, dtype=np.int64)
    t_frame_a = np.asarray(t_frame, dtype=np.int64)
    num_truth = np.bincount(t_cls_a, minlength=num_classes)

    # predictions of the evaluated classes, flattened in input order
    p_cls, p_vid, p_frame, p_score = [], [], [], []
    for v in pred:
        events = v.events
        cls = [class_id.get(e.label, -1) for e in events]  # -1: a class without truth, not evaluated (E2E-Spot)
        scores = np.array([e.score for e in events], dtype=np.float64)  # None -> NaN
        if not np.isfinite(scores).all():
            i = int(np.argmin(np.isfinite(scores)))
            raise DataError(f"predictions: video '{v.video}', event {i}: score must be a finite number, "
                            f"got {events[i].score!r}")
        cls_a = np.asarray(cls, dtype=np.int64)
        keep = cls_a >= 0
        p_cls.append(cls_a[keep])
        p_vid.append(np.full(int(keep.sum()), video_index[v.video], dtype=np.int64))
        p_frame.append(np.asarray([e.frame for e in events], dtype=np.int64)[keep])
        p_score.append(scores[keep])
    p_cls = np.concatenate(p_cls) if p_cls else np.zeros(0, np.int64)
    p_vid = np.concatenate(p_vid) if p_vid else np.zeros(0, np.int64)
    p_frame = np.concatenate(p_frame) if p_frame else np.zeros(0, np.int64)
    p_score = np.concatenate(p_score) if p_score else np.zeros(0, np.float64)
    p_cls_a = np.asarray(p_cls, dtype=np.int64)
    p_score_a = np.asarray(p_score, dtype=np.float64)
    # rank within class: score descending, ties in input order (stable)
    order = np.lexsort((np.arange(p_cls_a.size), -p_score_a, p_cls_a))
    p_cls_a = p_cls_a[order]
    p_vid_a = np.asarray(p_vid, dtype=np.int64)[order]
    p_frame_a = np.asarray(p_frame, dtype=np.int64)[order]
    class_start = np.searchsorted(p_cls_a, np.arange(num_classes + 1), "left")

    # One key line per (class, video): key = group * stride + frame, with gaps wider than any tolerance.
    num_videos = max(len(video_index), 1)
    all_frames = np.concatenate([t_frame_a, p_frame_a]) if t_frame_a.size + p_frame_a.size else np.zeros(1, int)
    fmin = int(all_frames.min())
    stride = int(all_frames.max()) - fmin + 2 * max(tols) + 2
    t_key = (t_cls_a * num_videos + t_vid_a) * stride + (t_frame_a - fmin)
    p_key = (p_cls_a * num_videos + p_vid_a) * stride + (p_frame_a - fmin)
    # Truth is matched by (video, frame): keep each key once, at its first listing (which breaks distance ties).
    gt_key, gt_first = np.unique(t_key, return_index=True)

    mAP: dict[int, float] = {}
    per_class: dict[str, dict[int, float]] = {c: {} for c in eval_classes}
    for tol in tols:
        tp = _match_nearest_unmatched(gt_key, gt_first, p_key, tol)
        aps = []
        for c in range(num_classes):
            s, e = class_start[c], class_start[c + 1]
            hits = tp[s:e]
            if not hits.any():
                ap = 0.0
            else:
                rank = np.nonzero(hits)[0] + 1  # 1-based ranks of the true positives
                precision = np.arange(1, rank.size + 1) / rank  # #matched / i at each true positive
                interp = np.maximum.accumulate(precision[::-1])[::-1]
                ap = float(interp.sum() / num_truth[c])
            per_class[eval_classes[c]][tol] = ap
            aps.append(ap)
        mAP[tol] = float(np.mean(aps)) if aps else float("nan")

    counts_pred = np.bincount(p_cls_a, minlength=num_classes)
    return MapResult(
        tolerances=tols, mAP=mAP, per_class=per_class,
        num_truth={c: int(num_truth[i]) for i, c in enumerate(eval_classes)},
        num_pred={c: int(counts_pred[i]) for i, c in enumerate(eval_classes)},
        classes_without_truth=without, videos=len(truth),
        videos_without_predictions=[v.video for v in truth if v.video not in seen_pred],
    )


def _match_nearest_unmatched(gt_key: np.ndarray, gt_first: np.ndarray, p_key: np.ndarray, tol: int) -> np.ndarray:
    """E2E-Spot matching: bool (P,) true positives for predictions given in rank order.

    ``gt_key`` is sorted and unique; a prediction may only match truth on its own key line (same class and
    video), at most ``tol`` away. Rule: in rank order, each prediction takes the nearest unmatched truth
    (ties: smaller ``gt_first``) if it is within ``tol``.

    Vectorised in rounds. Predictions interact only through truth they can reach, so truth events closer than
    2*tol form independent chains. In each round, for every chain, the first prediction (in rank order) that
    still reaches an unmatched truth of the chain takes its nearest one; predictions ranked before it in the
    chain reached only matched truth, so they are false positives. A round matches one truth per chain.
    """
    tp = np.zeros(p_key.size, dtype=bool)
    if gt_key.size == 0 or p_key.size == 0:
        return tp
    lo = np.searchsorted(gt_key, p_key - tol, "left")
    hi = np.searchsorted(gt_key, p_key + tol, "right")
    count = hi - lo
    # (prediction, truth) pairs within the tolerance
    pair_pred = np.repeat(np.arange(p_key.size), count)
    offsets = np.arange(pair_pred.size) - np.repeat(np.cumsum(count) - count, count)
    pair_gt = lo[pair_pred] + offsets
    if pair_gt.size == 0:
        return tp
    dist = np.abs(p_key[pair_pred] - gt_key[pair_gt])
    chain = np.concatenate(([0], np.cumsum(np.diff(gt_key) > 2 * tol)))
    pair_chain = chain[pair_gt]
    order = np.lexsort((gt_first[pair_gt], dist, pair_pred, pair_chain))
    pp, pg, pc = pair_pred[order], pair_gt[order], pair_chain[order]

    matched = np.zeros(gt_key.size, dtype=bool)
    done_until = np.full(int(chain[-1]) + 1, -1, dtype=np.int64)  # last rank decided per chain
    while pp.size:
        valid = ~matched[pg] & (pp > done_until[pc])
        pp, pg, pc = pp[valid], pg[valid], pc[valid]
        if not pp.size:
            break
        first = np.concatenate(([True], pc[1:] != pc[:-1]))  # best pair of each chain
        tp[pp[first]] = True
        matched[pg[first]] = True
        done_until[pc[first]] = pp[first]
    return tp


# ============================================================================================================
# SoccerNet average-mAP


SOCCERNET_METRICS: dict[str, tuple[int, ...]] = {
    "tight": (1, 2, 3, 4, 5),  # seconds
    "loose": tuple(range(5, 65, 5)),
    "at1": (1,), "at2": (2,), "at3": (3,), "at4": (4,), "at5": (5,),
}
_NUM_THRESHOLDS = 200
_PRED_FIELDS = operator.itemgetter("label", "half", "position", "confidence")


@dataclass
class SoccerNetGame:
    """One game for the SoccerNet metric: parsed ``Labels-v2.json`` and ``results_spotting.json`` (or None)."""

    game: str
    labels: dict
    predictions: dict | None
    labels_path: str = ""  # for error messages
    predictions_path: str = ""


def _vector_size(framerate: float) -> int:
    size = 120 * 60 * framerate
    if size != int(size) or framerate <= 0:
        raise PespotError(f"framerate must be > 0 and give a whole number of bins in 120 min, got {framerate!r}")
    return int(size)


def _whole(value: Any, what: str, where: str) -> int:
    # int() as the official code applies it: strings must be whole numbers, numbers are truncated
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: '{what}' must be a whole number, got {value!r}") from None


def _read_label_entries(game: SoccerNetGame, class_index: dict[str, int], framerate: float) -> tuple:
    """Truth entries of one game in file order: (half, bin, class, value=+1 visible / -1 not shown)."""
    where0 = game.labels_path or f"game '{game.game}' labels"
    obj = game.labels
    if not isinstance(obj, dict) or not isinstance(obj.get("annotations"), list):
        raise DataError(f"{where0}: expected an object with an 'annotations' list")
    halves, positions, classes, values = [], [], [], []
    for i, ann in enumerate(obj["annotations"]):
        where = f"{where0}: annotation {i}"
        require_keys(ann, ("gameTime", "label"), where)
        label = ann["label"]
        if label not in class_index:
            continue  # the official evaluator ignores labels outside its dictionary
        time = ann["gameTime"]
        if not isinstance(time, str) or not time[:1].isdigit():
            raise DataError(f"{where}: bad gameTime {time!r} (expected 'H - MM:SS')")
        half = int(time[0])
        if "position" in ann:
            ms = _whole(ann["position"], "position", where)
            pos = ("ms", ms)
        else:  # second precision, read from the end of gameTime as the official code does
            try:
                pos = ("bin", int(framerate * (int(time[-2:]) + 60 * int(time[-5:-3]))))
            except ValueError:
                raise DataError(f"{where}: bad gameTime {time!r} (expected 'H - MM:SS')") from None
        halves.append(half)
        positions.append(pos)
        classes.append(class_index[label])
        values.append(-1 if ann.get("visibility") == "not shown" else 1)
    return halves, positions, classes, values, where0


def _read_prediction_entries(game: SoccerNetGame, class_index: dict[str, int]) -> tuple:
    """Prediction entries of one game with a known label, in file order: (half, position ms, class, confidence).

    Like the official code, ``half`` and ``position`` must be whole numbers on every entry and ``confidence`` a
    number on the entries that are kept.
    """
    where0 = game.predictions_path or f"game '{game.game}' predictions"
    obj = game.predictions
    if not isinstance(obj, dict) or not isinstance(obj.get("predictions"), list):
        raise DataError(f"{where0}: expected an object with a 'predictions' list")
    entries = obj["predictions"]
    if not entries:
        return [], [], [], [], where0
    try:  # fast path over the whole list; on any problem, walk it entry by entry for a precise message
        labels, halves, positions, confidences = zip(*map(_PRED_FIELDS, entries))
        cls = [class_index.get(label, -1) for label in labels]
        halves_i = list(map(int, halves))
        ms = list(map(int, positions))
        if -1 in cls:
            raise ValueError
        return halves_i, ms, cls, list(map(float, confidences)), where0
    except (KeyError, TypeError, ValueError):
        pass
    out: tuple[list, list, list, list] = ([], [], [], [])
    for i, a in enumerate(entries):
        where = f"{where0}: prediction {i}"
        if not isinstance(a, dict):
            raise DataError(f"{where}: expected an object, got {type(a).__name__}")
        for key in ("label", "half", "position", "confidence"):
            if key not in a:
                raise DataError(f"{where}: missing key '{key}'")
        half = _whole(a["half"], "half", where)
        ms_i = _whole(a["position"], "position", where)
        label = a["label"]
        if not isinstance(label, str) or label not in class_index:
            continue  # the official evaluator skips labels outside its dictionary
        try:
            conf = float(a["confidence"])
        except (TypeError, ValueError):
            raise DataError(f"{where}: 'confidence' must be a number, got {a['confidence']!r}") from None
        for column, value in zip(out, (half, ms_i, class_index[label], conf)):
            column.append(value)
    return (*out, where0)


def _to_bins(ms: np.ndarray, framerate: float) -> np.ndarray:
    # exactly the official float expression: int(framerate * (position / 1000))
    return np.trunc(framerate * (ms / 1000)).astype(np.int64)


def _last_write_wins(keys: np.ndarray) -> np.ndarray:
    """Indices of the last occurrence of each distinct key, in increasing key order."""
    _, rev_index = np.unique(keys[::-1], return_index=True)
    return keys.size - 1 - rev_index


def _rasterise(games: Sequence[SoccerNetGame], classes: list[str], framerate: float):
    """Sparse form of the official per-half arrays, over all games.

    Returns truth (group, bin, value) and predictions (group, bin, score) sorted by (group, bin), where
    group = (2 * game + half - 1) * C + class, plus the number of prediction entries lost to overwriting.
    """
    class_index = {c: i for i, c in enumerate(classes)}
    num_classes = len(classes)
    vsize = _vector_size(framerate)
    t_group, t_bin, t_val, p_group, p_bin, p_score = [], [], [], [], [], []
    for gi, game in enumerate(games):
        halves, positions, cls, vals, where = _read_label_entries(game, class_index, framerate)
        h = np.asarray(halves, dtype=np.int64)
        from_ms = np.asarray([kind == "ms" for kind, _ in positions], dtype=bool)
        raw = np.asarray([value for _, value in positions], dtype=np.int64)
        bins = np.where(from_ms, _to_bins(raw, framerate), raw)
        ok = (h == 1) | (h == 2)  # other halves are ignored, as in the official code
        if (ok & (bins < 0)).any():
            i = int(np.nonzero(ok & (bins < 0))[0][0])
            raise DataError(f"{where}: an annotation of half {halves[i]} has a negative position "
                            "(the official evaluator would wrap it to the end of the half)")
        bins = np.minimum(bins, vsize - 1)
        t_group.append(((2 * gi + h - 1) * num_classes + np.asarray(cls, dtype=np.int64))[ok])
        t_bin.append(bins[ok])
        t_val.append(np.asarray(vals, dtype=np.float64)[ok])
        if game.predictions is None:
            continue
        halves, ms, cls, conf, where = _read_prediction_entries(game, class_index)
        h = np.asarray(halves, dtype=np.int64)
        bins = _to_bins(np.asarray(ms, dtype=np.int64), framerate)
        ok = (h == 1) | (h == 2)
        if (ok & (bins < 0)).any():
            raise DataError(f"{where}: a prediction has a negative position "
                            f"({ms[int(np.argmax(ok & (bins < 0)))]} ms; the official evaluator would wrap it to "
                            "the end of the half)")
        bins = np.minimum(bins, vsize - 1)
        p_group.append(((2 * gi + h - 1) * num_classes + np.asarray(cls, dtype=np.int64))[ok])
        p_bin.append(bins[ok])
        p_score.append(np.asarray(conf, dtype=np.float64)[ok])

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    tg, tb, tv = cat(t_group, np.int64), cat(t_bin, np.int64), cat(t_val, np.float64)
    pg, pb, ps = cat(p_group, np.int64), cat(p_bin, np.int64), cat(p_score, np.float64)
    keep = _last_write_wins(tg * vsize + tb)
    tg, tb, tv = tg[keep], tb[keep], tv[keep]
    keep = _last_write_wins(pg * vsize + pb)
    overwritten = int(pg.size - keep.size)
    pg, pb, ps = pg[keep], pb[keep], ps[keep]
    present = ps >= 0  # the official arrays hold -1 where there is no prediction; it keeps `>= 0`
    return (tg, tb, tv), (pg[present], pb[present], ps[present]), overwritten, vsize


def _closest_visibility(tg, tb, tv, pg, pb, vsize) -> np.ndarray:
    """Visibility (+1/-1) of each prediction's closest truth event of its half and class; -1 if there is none.

    The official segments: truth k owns bins [(b[k-1] + b[k]) // 2, (b[k] + b[k+1]) // 2) of its half.
    """
    out = np.full(pg.size, -1.0)
    if tg.size == 0 or pg.size == 0:
        return out
    first_in_group = np.concatenate(([True], tg[1:] != tg[:-1]))
    start = np.where(first_in_group, 0, (np.concatenate(([0], tb[:-1])) + tb) // 2)
    start_key = tg * vsize + start  # strictly increasing
    k = np.searchsorted(start_key, pg * vsize + pb, "right") - 1
    has = (k >= 0) & (tg[np.maximum(k, 0)] == pg)
    out[has] = tv[k[has]]
    return out


def _match_soccernet(tg, tb, pg, pb, ps, half_window: int, vsize: int) -> np.ndarray:
    """Official matching: bool (P,) true positives, for predictions sorted by (group, bin).

    For each truth event in temporal order, the unmatched prediction of its half and class with
    ``|Δbin| <= half_window`` and the highest score (ties: the earliest) is its match. Truth events further
    apart than 2 * half_window cannot compete, so each round handles the next truth event of every chain of
    closer ones at once.
    """
    tp = np.zeros(pg.size, dtype=bool)
    if tg.size == 0 or pg.size == 0:
        return tp
    stride = vsize + half_window + 1
    p_key = pg * stride + pb
    t_key = tg * stride + tb
    lo = np.searchsorted(p_key, t_key - half_window, "left")
    hi = np.searchsorted(p_key, t_key + half_window, "right")
    new_chain = np.concatenate(([True], (tg[1:] != tg[:-1]) | (np.diff(tb) > 2 * half_window)))
    chain_start = np.maximum.accumulate(np.where(new_chain, np.arange(tg.size), 0))
    rank = np.arange(tg.size) - chain_start
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(int(rank.max()) + 2), "left")
    taken = np.zeros(pg.size, dtype=bool)
    max_cells = 1 << 22  # rows * window width per block, to bound memory
    for r in range(int(rank.max()) + 1):
        active = by_rank[bounds[r]:bounds[r + 1]]
        active = active[hi[active] > lo[active]]
        if active.size == 0:
            continue
        width = int((hi[active] - lo[active]).max())
        step = max(1, max_cells // width)
        for s in range(0, active.size, step):
            rows = active[s:s + step]
            idx = lo[rows, None] + np.arange(width)  # (R, W) candidate predictions
            inside = idx < hi[rows, None]
            idx = np.minimum(idx, pg.size - 1)
            cand = np.where(inside & ~taken[idx], ps[idx], -np.inf)
            best = np.argmax(cand, axis=1)  # first maximum = earliest bin among equal scores
            ok = cand[np.arange(rows.size), best] > -np.inf
            chosen = idx[np.nonzero(ok)[0], best[ok]]
            taken[chosen] = True
            tp[chosen] = True
    return tp


class _ThresholdCounts:
    """Predictions of one variant (all / visible / unshown) binned once by class and confidence threshold."""

    def __init__(self, p_cls: np.ndarray, p_score: np.ndarray, num_classes: int) -> None:
        thresholds = np.linspace(0, 1, _NUM_THRESHOLDS)
        self.nbin = _NUM_THRESHOLDS + 1
        self.num_classes = num_classes
        # a prediction counts at threshold j iff score >= thresholds[j] iff j < t_idx
        self.cell = p_cls * self.nbin + np.searchsorted(thresholds, p_score, "right")
        self.n_pred = self._at_or_above(np.bincount(self.cell, minlength=num_classes * self.nbin))

    def _at_or_above(self, hist: np.ndarray) -> np.ndarray:
        hist = hist.reshape(self.num_classes, self.nbin)
        return np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:].astype(np.float64)  # (C, 200)

    def average_precision(self, tp: np.ndarray, n_gt: np.ndarray) -> np.ndarray:
        """11-point interpolated AP per class (C,), computed as the official code does."""
        n_tp = self._at_or_above(np.bincount(self.cell[tp], minlength=self.num_classes * self.nbin))
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.nan_to_num(n_tp / self.n_pred)
            recall = np.nan_to_num(n_tp / n_gt.astype(np.float64)[:, None])
        ap = np.zeros(self.num_classes)
        for level in np.arange(11) / 10:  # summed in the official order
            best = np.where(recall >= level, precision, -np.inf).max(axis=1)
            ap += np.where(np.isfinite(best), best, 0.0)
        return ap / 11


def soccernet_average_map_games(games: Sequence[SoccerNetGame], metric: str = "tight", framerate: float = 2,
                                classes: list[str] | None = None) -> dict[str, Any]:
    """Official SoccerNet average-mAP of in-memory games.

    Returns the official ``evaluate`` keys (``a_mAP``, ``a_mAP_per_class``, ``a_mAP_visible``,
    ``a_mAP_per_class_visible``, ``a_mAP_unshown``, ``a_mAP_per_class_unshown``; per-class values are lists in
    ``classes`` order) plus ``mAP_per_delta``, ``deltas``, ``metric``, ``framerate``, ``classes``, ``games``,
    ``games_without_predictions`` and ``predictions_overwritten`` (entries lost because a later prediction
    of the same class fell in the same bin).
    """
    if metric not in SOCCERNET_METRICS:
        raise PespotError(f"unknown SoccerNet metric '{metric}' (expected one of: {', '.join(SOCCERNET_METRICS)})")
    if classes is None:
        from pespot.data.soccernet import SOCCERNET_V2_CLASSES
        classes = list(SOCCERNET_V2_CLASSES)
    num_classes = len(classes)
    (tg, tb, tv), (pg, pb, ps), overwritten, vsize = _rasterise(games, classes, framerate)
    closest = _closest_visibility(tg, tb, tv, pg, pb, vsize)
    p_cls = pg % num_classes
    t_cls = tg % num_classes
    n_vis = np.bincount(t_cls[tv > 0], minlength=num_classes)
    n_uns = np.bincount(t_cls[tv < 0], minlength=num_classes)
    visible, unshown = closest > 0.5, closest < -0.5

    variants = {name: (mask, _ThresholdCounts(p_cls[mask], ps[mask], num_classes), n_gt)
                for name, mask, n_gt in (("all", slice(None), n_vis + n_uns), ("visible", visible, n_vis),
                                         ("unshown", unshown, n_uns))}
    deltas = SOCCERNET_METRICS[metric]
    curves: dict[str, list] = {"all": [], "visible": [], "unshown": []}
    for delta_s in deltas:
        delta = delta_s * framerate  # in bins; the official test is |Δbin| <= delta / 2
        half_window = int(np.floor(delta / 2))
        tp = _match_soccernet(tg, tb, pg, pb, ps, half_window, vsize)
        for name, (mask, counts, n_gt) in variants.items():
            per_class = counts.average_precision(tp[mask], n_gt)
            curves[name].append((float(np.mean(per_class)), per_class))

    out: dict[str, Any] = {}
    for name, suffix in (("all", ""), ("visible", "_visible"), ("unshown", "_unshown")):
        maps = [m for m, _ in curves[name]]
        pcs = [pc for _, pc in curves[name]]
        if len(maps) == 1:
            a_map, a_pc = maps[0], [float(x) for x in pcs[0]]
        else:
            a_map = _trapezoid(maps)
            a_pc = [_trapezoid([pc[c] for pc in pcs]) for c in range(num_classes)]
            if name == "unshown":
                a_map = a_map * 17 / 13  # official quirk: rescales by the 13 of 17 classes that have unshown events
        out[f"a_mAP{suffix}"] = float(a_map)
        out[f"a_mAP_per_class{suffix}"] = [float(x) for x in a_pc]
    out["mAP_per_delta"] = [m for m, _ in curves["all"]]
    out["deltas"] = list(deltas)
    out["metric"] = metric
    out["framerate"] = framerate
    out["classes"] = list(classes)
    out["games"] = len(games)
    out["games_without_predictions"] = [g.game for g in games if g.predictions is None]
    out["predictions_overwritten"] = overwritten
    return out


def _trapezoid(values: list[float]) -> float:
    # the official sum, in its order: sum_i (v_i + v_{i+1}) / 2, divided by n - 1
    integral = 0.0
    for i in range(len(values) - 1):
        integral += (values[i] + values[i + 1]) / 2
    return integral / (len(values) - 1)


def soccernet_average_map(labels_root: str | os.PathLike, preds_root: str | os.PathLike, metric: str = "tight",
                          framerate: float = 2, classes: list[str] | None = None,
                          label_file: str = "Labels-v2.json",
                          prediction_file: str = "results_spotting.json") -> dict[str, Any]:
    """Official SoccerNet average-mAP of the games under ``labels_root`` (every folder holding ``label_file``).

    Predictions are read from ``preds_root/<game>/prediction_file``; a game without that file counts as a game
    without predictions (listed in ``games_without_predictions``). See ``soccernet_average_map_games``.
    """
    from pespot.data.labels import read_json
    from pespot.data.soccernet import find_games

    labels_root, preds_root = Path(labels_root), Path(preds_root)
    if not preds_root.is_dir():
        raise DataError(f"{preds_root}: predictions folder not found")
    names = find_games(labels_root, label_file)
    games = []
    for name in names:
        lp = labels_root / name / label_file
        pp = preds_root / name / prediction_file
        games.append(SoccerNetGame(game=name, labels=read_json(lp), labels_path=str(lp),
                                   predictions=read_json(pp) if pp.is_file() else None,
                                   predictions_path=str(pp)))
    return soccernet_average_map_games(games, metric=metric, framerate=framerate, classes=classes)

