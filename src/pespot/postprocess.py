"""Post-processing of spotted events: non-maximum suppression (NMS) along time, per video and per class.

Three variants, each on arrays (for inference over long videos) and on ``list[Event]`` (one video's events):

* ``local_max``: E2E-Spot's filter (``util/eval.py: non_maximum_supression``). An event is kept unless another
  event of the same label at a *different* frame within ``|Δframe| <= window`` has a *strictly* higher score.
  It is not greedy: a suppressed event still suppresses its neighbours, and tied scores all survive.
* ``greedy``: T-DEED's NMS. Repeatedly keep the highest-scoring remaining event (ties: the earlier one in the
  input) and drop every other event of its label within ``|Δframe| <= window`` (same frame included); events
  scoring below ``threshold`` are dropped.
* ``soft``: T-DEED's soft-NMS. Repeatedly keep the highest-scoring remaining event and multiply the score of
  every other event of its label within ``|Δframe| = d <= window`` by a penalty: ``(d / window) ** 2`` (T-DEED's
  parabola) or, with ``sigma``, ``1 - exp(-d² / (2 sigma²))``. Events whose score falls below ``threshold``
  are dropped. Kept events carry the score they had when they were kept.

The sequential definitions are computed in vectorised rounds: an event that is the best of its own window
among the remaining events is kept by the sequential algorithm too (nothing better can reach it, and scores only
ever decrease), so all such events are kept at once, and the round repeats on what is left.

Outputs of the ``list[Event]`` functions are ordered like E2E-Spot's: by frame, then by label (in order of the
label's first appearance in the input), then by input order.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pespot.data.labels import Event, Video
from pespot.errors import ConfigError, PespotError

NMS_METHODS = ("local_max", "greedy", "soft", "none")


# ------------------------------------------------------------------------------------------------------------
# helpers: events of one label as a sorted key line, range max/min queries


def _sorted_keys(frames: np.ndarray, groups: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable order by (group, frame) and int64 keys in that order such that windows never cross groups."""
    if frames.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    fmin = int(frames.min())
    stride = int(frames.max()) - fmin + 2 * window + 2  # a window of one group cannot reach the next group
    keys = groups.astype(np.int64) * stride + (frames.astype(np.int64) - fmin)
    order = np.argsort(keys, kind="stable")
    return order, keys[order]


def _range_reduce(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, op: Callable, empty: float) -> np.ndarray:
    """``op``-reduction of ``values[lo[i]:hi[i]]`` for every i (``empty`` where the range is empty).

    A sparse table with only the levels the longest query needs: O(n log L) for ranges of length <= L.
    """
    out = np.full(lo.shape, empty, dtype=np.float64)
    length = hi - lo
    nonempty = length > 0
    if not nonempty.any():
        return out
    max_len = int(length.max())
    table = [values.astype(np.float64)]
    while (1 << len(table)) <= max_len:
        prev, step = table[-1], 1 << (len(table) - 1)
        nxt = prev.copy()
        nxt[:-step] = op(prev[:-step], prev[step:])
        table.append(nxt)
    lo_n, hi_n, len_n = lo[nonempty], hi[nonempty], length[nonempty]
    level = np.floor(np.log2(len_n)).astype(np.int64)
    # log2 of exact powers of two is exact; guard the float anyway
    level = np.where((1 << (level + 1)) <= len_n, level + 1, level)
    level = np.where((1 << level) > len_n, level - 1, level)
    stacked = np.stack(table)  # (levels, n)
    out[nonempty] = op(stacked[level, lo_n], stacked[level, hi_n - (1 << level)])
    return out


def _window_bounds(keys: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    return np.searchsorted(keys, keys - window, "left"), np.searchsorted(keys, keys + window, "right")


def _check_window(window: int) -> int:
    if isinstance(window, bool) or int(window) != window or window < 0:
        raise PespotError(f"NMS window must be a non-negative whole number of frames, got {window!r}")
    return int(window)


def _as_arrays(frames, scores, groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frames = np.asarray(frames, dtype=np.int64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    groups = np.zeros_like(frames) if groups is None else np.asarray(groups, dtype=np.int64).reshape(-1)
    if not (frames.shape == scores.shape == groups.shape):
        raise ValueError(f"frames, scores and groups differ in length: {frames.shape}, {scores.shape}, "
                         f"{groups.shape}")
    return frames, scores, groups


# ------------------------------------------------------------------------------------------------------------
# array API


def local_max_keep(frames, scores, window: int, groups=None) -> np.ndarray:
    """E2E-Spot NMS on arrays: bool mask (N,) of the events that no other event at a different frame of the same
    group (label) within ``window`` frames beats with a strictly higher score."""
    window = _check_window(window)
    frames, scores, groups = _as_arrays(frames, scores, groups)
    keep = np.ones(frames.shape, dtype=bool)
    if frames.size == 0:
        return keep
    order, keys = _sorted_keys(frames, groups, window)
    s = scores[order]
    lo, hi = _window_bounds(keys, window)
    same_lo, same_hi = np.searchsorted(keys, keys, "left"), np.searchsorted(keys, keys, "right")
    # best score among the other frames of the window: [lo, same_lo) and [same_hi, hi)
    best = np.maximum(_range_reduce(s, lo, same_lo, np.maximum, -np.inf),
                      _range_reduce(s, same_hi, hi, np.maximum, -np.inf))
    keep[order] = ~(best > s)
    return keep


def _input_rank(scores: np.ndarray) -> np.ndarray:
    """Rank 0 = highest score; ties go to the earlier event (as Python's ``max`` over a list picks it)."""
    order = np.lexsort((np.arange(scores.size), -scores))
    rank = np.empty(scores.size, dtype=np.int64)
    rank[order] = np.arange(scores.size)
    return rank


def greedy_keep(frames, scores, window: int, groups=None, threshold: float | None = None) -> np.ndarray:
    """T-DEED's greedy NMS on arrays: bool mask (N,) of the kept events.

    Equivalent to: visit events by decreasing score (ties: input order); keep one unless an event already kept
    in its group lies within ``window`` frames; events scoring below ``threshold`` are never kept.
    """
    window = _check_window(window)
    frames, scores, groups = _as_arrays(frames, scores, groups)
    keep = np.zeros(frames.shape, dtype=bool)
    order, keys = _sorted_keys(frames, groups, window)
    rank = _input_rank(scores)[order].astype(np.float64)
    ids = order
    if threshold is not None:
        alive = scores[order] >= threshold
        ids, keys, rank = ids[alive], keys[alive], rank[alive]
    while ids.size:
        lo, hi = _window_bounds(keys, window)
        picked = _range_reduce(rank, lo, hi, np.minimum, np.inf) == rank  # best of its own window
        keep[ids[picked]] = True
        # drop the picked events and everything within the window of one (a picked event is in its own window)
        covered = np.concatenate(([0], np.cumsum(picked)))
        gone = covered[hi] - covered[lo] > 0
        ids, keys, rank = ids[~gone], keys[~gone], rank[~gone]
    return keep


def soft_nms_scores(frames, scores, window: int, groups=None, sigma: float | None = None,
                    threshold: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Soft-NMS on arrays: (keep mask (N,), score of each kept event when kept (N,), NaN where dropped).

    Penalty for an event at distance d <= window from a kept one of its group: ``(d / window) ** 2`` (T-DEED),
    or ``1 - exp(-d² / (2 sigma²))`` when ``sigma`` is given. Events below ``threshold`` are dropped.
    """
    window = _check_window(window)
    if sigma is not None and not sigma > 0:
        raise PespotError(f"soft-NMS sigma must be > 0, got {sigma!r}")
    frames, scores, groups = _as_arrays(frames, scores, groups)
    keep = np.zeros(frames.shape, dtype=bool)
    kept_scores = np.full(frames.shape, np.nan)
    order, keys = _sorted_keys(frames, groups, window)
    ids, cur = order, scores[order].copy()
    alive = cur >= threshold
    ids, keys, cur = ids[alive], keys[alive], cur[alive]

    def penalty(dist: np.ndarray) -> np.ndarray:
        if sigma is None:
            return (dist / window) ** 2 if window > 0 else np.zeros_like(dist, dtype=np.float64)
        return 1.0 - np.exp(-(dist.astype(np.float64) ** 2) / (2.0 * sigma * sigma))

    while ids.size:
        lo, hi = _window_bounds(keys, window)
        rank = _input_rank_by(cur, ids).astype(np.float64)
        picked = _range_reduce(rank, lo, hi, np.minimum, np.inf) == rank
        keep[ids[picked]] = True
        kept_scores[ids[picked]] = cur[picked]
        # Picked events are more than `window` apart, so any event has at most one picked neighbour on each
        # side (and same-frame duplicates of a picked event count as distance 0).
        pk = keys[picked]
        factor = np.ones(cur.shape)
        left = np.searchsorted(pk, keys, "right") - 1  # nearest picked key <= key
        has_left = left >= 0
        d_left = keys[has_left] - pk[left[has_left]]
        near = d_left <= window
        idx = np.nonzero(has_left)[0][near]
        factor[idx] *= penalty(d_left[near])
        right = np.searchsorted(pk, keys, "right")  # nearest picked key > key
        has_right = right < pk.size
        d_right = pk[right[has_right]] - keys[has_right]
        near = d_right <= window
        idx = np.nonzero(has_right)[0][near]
        factor[idx] *= penalty(d_right[near])
        cur = cur * factor
        rest = ~picked & (cur >= threshold)
        ids, keys, cur = ids[rest], keys[rest], cur[rest]
    return keep, kept_scores


def _input_rank_by(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Rank by decreasing score, ties by input position ``ids``."""
    order = np.lexsort((ids, -scores))
    rank = np.empty(scores.size, dtype=np.int64)
    rank[order] = np.arange(scores.size)
    return rank


# ------------------------------------------------------------------------------------------------------------
# list[Event] API (one video)


def _event_arrays(events: list[Event]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    label_ids: dict[str, int] = {}
    groups = np.fromiter((label_ids.setdefault(e.label, len(label_ids)) for e in events), np.int64, len(events))
    frames = np.fromiter((e.frame for e in events), np.int64, len(events))
    scores = np.empty(len(events))
    for i, e in enumerate(events):
        if e.score is None:
            raise PespotError(f"NMS needs scored events: event {i} (label '{e.label}', frame {e.frame}) has no score")
        scores[i] = e.score
    return frames, scores, groups, list(label_ids)


def _ordered(events: list[Event], frames: np.ndarray, groups: np.ndarray, mask: np.ndarray,
             scores: np.ndarray | None = None) -> list[Event]:
    idx = np.nonzero(mask)[0]
    idx = idx[np.lexsort((idx, groups[idx], frames[idx]))]  # frame, then label first appearance, then input
    out = []
    for i in idx:
        e = copy.deepcopy(events[i])
        if scores is not None:
            e.score = float(scores[i])
        out.append(e)
    return out


def nms_local_max(events: list[Event], window: int) -> list[Event]:
    """E2E-Spot's local-maximum NMS on one video's events (see the module docstring)."""
    frames, scores, groups, _ = _event_arrays(events)
    return _ordered(events, frames, groups, local_max_keep(frames, scores, window, groups))


def nms_greedy(events: list[Event], window: int, threshold: float = 0.0) -> list[Event]:
    """T-DEED's greedy NMS on one video's events (see the module docstring)."""
    frames, scores, groups, _ = _event_arrays(events)
    return _ordered(events, frames, groups, greedy_keep(frames, scores, window, groups, threshold))


def soft_nms(events: list[Event], window: int, sigma: float | None = None, threshold: float = 0.01) -> list[Event]:
    """Soft-NMS on one video's events; kept events get their decayed score (see the module docstring)."""
    frames, scores, groups, _ = _event_arrays(events)
    keep, new_scores = soft_nms_scores(frames, scores, window, groups, sigma, threshold)
    return _ordered(events, frames, groups, keep, new_scores)


def apply_nms(videos: list[Video], method: str, window: int, *, threshold: float | None = None,
              sigma: float | None = None) -> list[Video]:
    """NMS on every video of a prediction split; returns new ``Video`` objects (the input is not changed).

    ``method`` is one of ``NMS_METHODS``; ``threshold`` defaults to 0.0 for greedy and 0.01 for soft.
    """
    if method not in NMS_METHODS:
        raise PespotError(f"unknown NMS method '{method}' (expected one of: {', '.join(NMS_METHODS)})")
    out = []
    for v in videos:
        try:
            if method == "none":
                events = [copy.deepcopy(e) for e in v.events]
            elif method == "local_max":
                events = nms_local_max(v.events, window)
            elif method == "greedy":
                events = nms_greedy(v.events, window, 0.0 if threshold is None else threshold)
            else:
                events = soft_nms(v.events, window, sigma, 0.01 if threshold is None else threshold)
        except PespotError as err:
            raise PespotError(f"video '{v.video}': {err}") from None
        out.append(Video(video=v.video, num_frames=v.num_frames, fps=v.fps, events=events,
                         extra=copy.deepcopy(v.extra)))
    return out


# ------------------------------------------------------------------------------------------------------------
# choosing the NMS on a validation split, and storing the choice in a run

NMS_CHOICE_FILE = "nms.json"  # in a run folder: the NMS that pespot infer / stream use for it
MAX_NMS_WINDOW = 10_000  # frames (400 s at 25 fps): a larger window in nms.json is a damaged or hand-made file
DEFAULT_NMS_WINDOWS = (1, 2, 4, 8, 16)


def choose_nms(truth: list[Video], classes: list[str] | None, tolerances: list[int],
               predictions: Callable[[str, int | None], list[Video]],
               windows: list[int] | tuple[int, ...] = DEFAULT_NMS_WINDOWS) -> tuple[dict, list[dict]]:
    """Every NMS method (none, local_max, greedy, soft) x window, scored by mAP against ``truth``; returns
    (best row, all rows). ``predictions(method, window)`` gives the events after that NMS (window None for
    none): ``nms_candidates`` for predictions made without NMS, ``pespot.infer.events_with_nms`` for scores.

    A row is {method, window, mAP: {tolerance: value}, average_mAP}. The best has the highest mean mAP over
    ``tolerances``; ties keep the smaller window, then the order none, local_max, greedy, soft.
    """
    from pespot.metrics import compute_map

    windows = sorted({int(w) for w in windows})
    if not windows or any(w < 0 for w in windows):
        raise PespotError(f"NMS windows: expected non-negative numbers of frames, got {list(windows)}")
    rows = []
    for method, window in [("none", None)] + [(m, w) for w in windows for m in ("local_max", "greedy", "soft")]:
        result = compute_map(truth, predictions(method, window), classes, tolerances)
        rows.append({"method": method, "window": window, "mAP": {str(t): result.mAP[t] for t in result.tolerances},
                     "average_mAP": result.average_mAP})
    best = rows[0]
    for row in rows[1:]:  # strictly better only: ties keep the smaller window, then the earlier method
        if row["average_mAP"] > best["average_mAP"]:
            best = row
    return best, rows


def nms_candidates(pred: list[Video], soft_threshold: float = 0.01) -> Callable[[str, int | None], list[Video]]:
    """``choose_nms``'s ``predictions`` for events predicted without NMS (every candidate still there): each
    method applied to them (soft-NMS drops events decayed below ``soft_threshold``, as ``apply_nms``)."""
    def predictions(method: str, window: int | None) -> list[Video]:
        if method == "none":
            return pred
        return apply_nms(pred, method, int(window or 0), threshold=soft_threshold if method == "soft" else None)
    return predictions


def write_nms_choice(run_dir: str | Path, best: dict, rows: list[dict], chosen_on: str) -> Path:
    """Store ``best`` (a row of ``choose_nms``) in ``run_dir/nms.json``, with the table it was chosen from and
    what it was chosen on; written atomically. Returns the file."""
    from pespot.fsutil import write_json_atomic

    run_dir = Path(run_dir)
    if not (run_dir / "checkpoints").is_dir():
        raise PespotError(f"{run_dir}: not a run folder (no checkpoints/): the NMS choice is stored in a run")
    path = run_dir / NMS_CHOICE_FILE
    write_json_atomic(path, {"method": best["method"], "window": best["window"],
                             "average_mAP": best["average_mAP"], "chosen_on": chosen_on, "table": rows})
    return path


def read_nms_choice(run_dir: str | Path) -> dict | None:
    """The NMS stored in ``run_dir/nms.json`` as {method, window}, or None when there is none; a file that is
    not a valid choice is an error naming it and the key (validated like a config: a known method, a window of
    0 to ``MAX_NMS_WINDOW`` frames)."""
    import json

    path = Path(run_dir) / NMS_CHOICE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        method, window = data["method"], data["window"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PespotError(f"{path}: not an NMS choice ({err}); make it with `pespot eval --choose-nms ... --run` "
                          "or delete it") from None
    if not isinstance(method, str) or method not in NMS_METHODS:
        raise ConfigError(f"{path}: key 'method': expected one of {', '.join(NMS_METHODS)}, got {method!r}")
    if window is None and method == "none":
        return {"method": method, "window": None}
    if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window <= MAX_NMS_WINDOW:
        raise ConfigError(f"{path}: key 'window': expected a whole number of frames from 0 to {MAX_NMS_WINDOW}, "
                          f"got {window!r}")
    return {"method": method, "window": window}


def describe_nms(method: str, window: int | None) -> str:
    """'local_max, window 2' (or 'none'), for messages."""
    return method if method == "none" or window is None else f"{method}, window {window}"


def run_folder_of(run_or_ckpt: str | Path) -> Path | None:
    """The run folder of a run folder or of a checkpoint inside its ``checkpoints/``; None for a lone file."""
    path = Path(run_or_ckpt)
    if path.is_dir():
        return path
    if path.parent.name == "checkpoints":
        return path.parent.parent
    return None


def use_run_nms_choice(cfg, run_or_ckpt: str | Path) -> str | None:
    """Set ``cfg.eval.nms`` / ``nms_window`` from the run's stored choice, if it has one; returns the file used."""
    run_dir = run_folder_of(run_or_ckpt)
    choice = read_nms_choice(run_dir) if run_dir is not None else None
    if choice is None:
        return None
    cfg.eval.nms = choice["method"]
    if choice["window"] is not None:
        cfg.eval.nms_window = choice["window"]
    return str(run_dir / NMS_CHOICE_FILE)


# ------------------------------------------------------------------------------------------------------------
# the NMS registry (pespot.registry.NMS): what scores_to_events and the eval.nms key use


def _register_nms() -> None:
    from pespot.registry import NMS

    # builder(frames, scores, window, groups, threshold) -> (keep mask, scores of the kept events)
    NMS.register("local_max")(lambda f, s, w, g, t: (local_max_keep(f, s, w, groups=g), s))
    NMS.register("greedy")(lambda f, s, w, g, t: (greedy_keep(f, s, w, groups=g), s))
    NMS.register("soft")(lambda f, s, w, g, t: soft_nms_scores(f, s, w, groups=g, threshold=t))
    NMS.register("none")(lambda f, s, w, g, t: (np.ones(np.shape(f), dtype=bool), s))


_register_nms()
