"""Metrics: E2E-Spot mAP@δ (hand-computed cases of every rule + a naive re-statement on random data), NMS, and
the SoccerNet average-mAP against the official ``SoccerNet`` package."""

from __future__ import annotations

import contextlib
import io
import json
import random

import numpy as np
import pytest

from pespot.data.labels import Event, Video
from pespot.errors import DataError, PespotError
from pespot.metrics import SoccerNetGame, compute_map, soccernet_average_map, soccernet_average_map_games
from pespot.postprocess import (
    apply_nms,
    greedy_keep,
    local_max_keep,
    nms_greedy,
    nms_local_max,
    soft_nms,
    soft_nms_scores,
)


def truth_video(name: str, events: list[tuple[int, str]], num_frames: int = 1000) -> Video:
    return Video(video=name, num_frames=num_frames, fps=25.0, events=[Event(f, c) for f, c in events])


def pred_video(name: str, events: list[tuple[int, str, float]]) -> Video:
    return Video(video=name, num_frames=-1, fps=25.0, events=[Event(f, c, score=s) for f, c, s in events])


def ap(truth, pred, tol, cls="a"):
    return compute_map(truth, pred, tolerances=[tol]).per_class[cls][tol]


# ------------------------------------------------------------------------------------------------------------
# E2E-Spot mAP: hand-computed cases


def test_tolerance_zero_and_one():
    truth = [truth_video("v", [(10, "a"), (20, "a")])]
    pred = [pred_video("v", [(10, "a", 0.9), (21, "a", 0.8), (30, "a", 0.7)])]
    # δ=0: only rank 1 is a hit (p=1), 1 of 2 truths -> 1/2; δ=1: ranks 1 and 2 hit, p=1, 2/2 -> 1
    res = compute_map(truth, pred, tolerances=[0, 1])
    assert res.mAP == {0: 0.5, 1: 1.0}
    assert res.average_mAP == 0.75


def test_interpolated_precision_envelope():
    truth = [truth_video("v", [(10, "a"), (20, "a"), (30, "a"), (40, "a")])]
    # ranks: hit, miss, hit, hit -> p = 1, 2/3, 3/4 -> envelope 1, 3/4, 3/4 -> (1 + .75 + .75) / 4
    pred = [pred_video("v", [(10, "a", 0.9), (99, "a", 0.8), (20, "a", 0.7), (30, "a", 0.6)])]
    assert ap(truth, pred, 0) == pytest.approx(2.5 / 4, abs=1e-15)


def test_prediction_nearest_to_matched_truth_takes_next_unmatched():
    truth = [truth_video("v", [(10, "a"), (13, "a")])]
    pred = [pred_video("v", [(10, "a", 0.9), (11, "a", 0.8)])]
    # rank 2 (frame 11) is nearest to 10, already matched: it looks at 13 (distance 2)
    assert ap(truth, pred, 2) == 1.0
    assert ap(truth, pred, 1) == 0.5


def test_equal_distance_goes_to_the_truth_listed_first():
    # prediction at 12 is 2 away from both 10 and 14: the first listed truth is taken
    pred = [pred_video("v", [(12, "a", 0.9), (9, "a", 0.5)])]
    listed_14_first = [truth_video("v", [(14, "a"), (10, "a")])]
    listed_10_first = [truth_video("v", [(10, "a"), (14, "a")])]
    assert ap(listed_14_first, pred, 2) == 1.0  # 12 -> 14, then 9 -> 10
    assert ap(listed_10_first, pred, 2) == 0.5  # 12 -> 10, then 9 is 5 away from 14


def test_tied_scores_keep_input_order():
    truth = [truth_video("v", [(10, "a"), (20, "a")])]
    # same score: the false positive listed first is ranked first -> the hit has p = 1/2
    assert ap(truth, [pred_video("v", [(50, "a", 0.5), (10, "a", 0.5)])], 0) == 0.25
    assert ap(truth, [pred_video("v", [(10, "a", 0.5), (50, "a", 0.5)])], 0) == 0.5
    # across videos, the order of the prediction list decides
    truth2 = [truth_video("v", [(10, "a")]), truth_video("w", [])]
    assert ap(truth2, [pred_video("w", [(10, "a", 0.5)]), pred_video("v", [(10, "a", 0.5)])], 0) == 0.5
    assert ap(truth2, [pred_video("v", [(10, "a", 0.5)]), pred_video("w", [(10, "a", 0.5)])], 0) == 1.0


def test_duplicated_truth_matches_once_and_duplicated_predictions():
    # two truths on one frame: matched by (video, frame), so only one can be recalled; both count
    truth = [truth_video("v", [(10, "a"), (10, "a")])]
    assert ap(truth, [pred_video("v", [(10, "a", 0.9), (10, "a", 0.8)])], 0) == 0.5
    # two predictions on one frame: the second may take another truth within the tolerance
    truth = [truth_video("v", [(10, "a"), (11, "a")])]
    assert ap(truth, [pred_video("v", [(10, "a", 0.9), (10, "a", 0.8)])], 1) == 1.0
    assert ap(truth, [pred_video("v", [(10, "a", 0.9), (10, "a", 0.8)])], 0) == 0.5


def test_classes_without_predictions_or_truth_and_multi_video():
    truth = [truth_video("v1", [(10, "a"), (5, "b")]), truth_video("v2", [(30, "a")])]
    pred = [pred_video("v1", [(10, "a", 0.9), (7, "c", 1.0)]), pred_video("v2", [(10, "a", 0.8)])]
    res = compute_map(truth, pred, tolerances=[0])
    # a: the v2 prediction at frame 10 must not match v1's truth at 10 -> AP 1/2; b: no predictions -> 0;
    # c has no truth: left out of the mean
    assert res.per_class == {"a": {0: 0.5}, "b": {0: 0.0}}
    assert res.mAP[0] == 0.25
    assert res.num_truth == {"a": 2, "b": 1} and res.num_pred == {"a": 2, "b": 0}
    # with a class list: unknown labels are errors, known classes without truth are reported
    res = compute_map(truth, pred, classes=["b", "a", "c", "d"], tolerances=[0])
    assert list(res.per_class) == ["b", "a"] and res.classes_without_truth == ["c", "d"]
    with pytest.raises(DataError, match="unknown class 'c'"):
        compute_map(truth, pred, classes=["a", "b"])


def test_missing_and_unknown_prediction_videos():
    truth = [truth_video("v1", [(10, "a")]), truth_video("v2", [(10, "a")])]
    res = compute_map(truth, [pred_video("v1", [(10, "a", 1.0)])], tolerances=[0])
    assert res.mAP[0] == 0.5 and res.videos_without_predictions == ["v2"]
    with pytest.raises(DataError, match="'v3' is not in the truth"):
        compute_map(truth, [pred_video("v3", [(10, "a", 1.0)])])
    with pytest.raises(DataError, match="score"):
        compute_map(truth, [Video("v1", -1, None, [Event(10, "a")])])


def test_perfect_predictions_give_one():
    rng = np.random.default_rng(0)
    truth, pred = [], []
    for v in range(4):
        frames = sorted(set(rng.integers(0, 500, 30).tolist()))
        events = [(f, f"c{rng.integers(3)}") for f in frames]
        truth.append(truth_video(f"v{v}", events))
        pred.append(pred_video(f"v{v}", [(f, c, float(rng.random())) for f, c in events]))
    res = compute_map(truth, pred)
    assert all(m == 1.0 for m in res.mAP.values())


def naive_map(truth: list[Video], pred: list[Video], tol: int) -> dict[str, float]:
    """The E2E-Spot rules written out directly (slow), to check the vectorised code on random data."""
    truth_frames: dict[str, dict[str, list[int]]] = {}
    for v in truth:
        for e in v.events:
            truth_frames.setdefault(e.label, {}).setdefault(v.video, []).append(e.frame)
    out = {}
    for label, by_video in truth_frames.items():
        flat = [(v.video, e.frame, e.score) for v in pred for e in v.events if e.label == label]
        flat.sort(key=lambda x: x[2], reverse=True)
        total = sum(len(x) for x in by_video.values())
        recalled: set = set()
        precisions = []
        for i, (video, frame, _score) in enumerate(flat, 1):
            best = None
            for gt in by_video.get(video, []):
                if (video, gt) in recalled:
                    continue
                if best is None or abs(frame - best) > abs(frame - gt):
                    best = gt
            if best is not None and abs(frame - best) <= tol:
                recalled.add((video, best))
                precisions.append(len(recalled) / i)
        interp = [max(precisions[j:]) for j in range(len(precisions))]
        out[label] = sum(interp) / total
    return out


@pytest.mark.parametrize("seed", range(6))
def test_matches_naive_statement_of_the_rules(seed):
    rng = random.Random(seed)
    truth, pred = [], []
    for v in range(3):
        length = rng.randint(20, 80)
        t_events = [(rng.randrange(length), rng.choice("abc")) for _ in range(rng.randint(0, 25))]
        truth.append(truth_video(f"v{v}", t_events))
        p_events = [(min(length - 1, max(0, f + rng.randint(-3, 3))), c, round(rng.random(), 1))
                    for f, c in t_events for _ in range(rng.randint(0, 3))]
        p_events += [(rng.randrange(length), rng.choice("abcd"), round(rng.random(), 1)) for _ in range(10)]
        rng.shuffle(p_events)
        if rng.random() < 0.85:
            pred.append(pred_video(f"v{v}", p_events))
    res = compute_map(truth, pred, tolerances=[0, 1, 2, 4])
    for tol in (0, 1, 2, 4):
        expected = naive_map(truth, pred, tol)
        assert set(res.per_class) == set(expected)
        for label, value in expected.items():
            assert res.per_class[label][tol] == pytest.approx(value, abs=1e-12), (label, tol)


# ------------------------------------------------------------------------------------------------------------
# NMS


def test_nms_local_max_is_e2e_spot_filter():
    events = [Event(10, "a", score=0.5), Event(11, "a", score=0.9), Event(12, "a", score=0.5),
              Event(13, "a", score=0.4), Event(14, "a", score=0.45), Event(11, "b", score=0.1),
              Event(20, "a", score=0.7), Event(21, "a", score=0.7), Event(30, "a", score=0.2),
              Event(30, "a", score=0.6)]
    kept = nms_local_max(events, 1)
    # 10, 12: beaten by 11; 13 beaten by 12 although 12 is itself suppressed; 14 survives (13 is lower);
    # 20/21 tie -> both stay; same-frame events never suppress each other
    assert [(e.frame, e.label, e.score) for e in kept] == [
        (11, "a", 0.9), (11, "b", 0.1), (14, "a", 0.45), (20, "a", 0.7), (21, "a", 0.7), (30, "a", 0.2),
        (30, "a", 0.6)]


def test_nms_greedy_and_soft_hand_cases():
    events = [Event(10, "a", score=0.5), Event(11, "a", score=0.9), Event(12, "a", score=0.5),
              Event(13, "a", score=0.4), Event(14, "a", score=0.3)]
    assert [e.frame for e in nms_greedy(events, 1)] == [11, 13]  # 11 drops 10, 12; 13 drops 14
    assert [e.frame for e in nms_greedy(events, 1, threshold=0.45)] == [11]
    # soft, window 2: keep 11 (0.9); 10, 12 decay by (1/2)^2 -> 0.125; 13 by (2/2)^2 -> 0.4 (kept next, decays
    # 12 by 1/4 -> 0.03125 and 14 by 1/4 -> 0.075); then 10 (0.125), then 14 (0.075); 12 falls below 0.05
    kept = soft_nms(events, 2, threshold=0.05)
    assert [(e.frame, e.score) for e in kept] == [(10, 0.125), (11, 0.9), (13, 0.4), (14, 0.075)]
    gauss = soft_nms([Event(0, "a", score=1.0), Event(1, "a", score=0.8)], 3, sigma=1.0, threshold=0.0)
    assert gauss[1].score == pytest.approx(0.8 * (1 - np.exp(-0.5)))


def _naive_greedy(frames, scores, groups, window, threshold):
    keep = [False] * len(frames)
    for g in set(groups):
        left = [i for i in range(len(frames)) if groups[i] == g]
        while left:
            best = max(left, key=lambda i: scores[i])  # first maximum in input order
            if scores[best] < threshold:
                break
            keep[best] = True
            left = [i for i in left if abs(frames[i] - frames[best]) > window]
    return keep


def _naive_soft(frames, scores, groups, window, threshold):
    kept = {}
    for g in set(groups):
        left = [i for i in range(len(frames)) if groups[i] == g]
        cur = {i: scores[i] for i in left}
        while left:
            best = max(left, key=lambda i: cur[i])
            if cur[best] < threshold:
                break
            kept[best] = cur[best]
            for i in left:
                d = abs(frames[i] - frames[best])
                if d <= window:
                    cur[i] *= d * d / (window * window)
            left.remove(best)
    return kept


@pytest.mark.parametrize("seed", range(20))
def test_vectorised_nms_equals_sequential_definitions(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 60))
    frames, groups = rng.integers(0, 40, n), rng.integers(0, 3, n)
    scores = np.round(rng.random(n), 1)  # many ties
    window = int(rng.integers(1, 4))
    local = [not any(groups[j] == groups[i] and frames[j] != frames[i] and abs(frames[j] - frames[i]) <= window
                     and scores[j] > scores[i] for j in range(n)) for i in range(n)]
    assert local_max_keep(frames, scores, window, groups).tolist() == local
    assert greedy_keep(frames, scores, window, groups, 0.2).tolist() == _naive_greedy(frames, scores, groups,
                                                                                       window, 0.2)
    keep, new_scores = soft_nms_scores(frames, scores, window, groups, threshold=0.05)
    expected = _naive_soft(frames, scores, groups, window, 0.05)
    assert set(np.nonzero(keep)[0].tolist()) == set(expected)
    for i, s in expected.items():
        assert new_scores[i] == pytest.approx(s, abs=1e-12)


def test_apply_nms_videos_and_errors():
    videos = [pred_video("v", [(10, "a", 0.5), (11, "a", 0.9)])]
    assert [e.frame for e in apply_nms(videos, "local_max", 1)[0].events] == [11]
    assert len(videos[0].events) == 2  # input untouched
    with pytest.raises(PespotError, match="unknown NMS method"):
        apply_nms(videos, "max", 1)
    with pytest.raises(PespotError, match="window"):
        apply_nms(videos, "local_max", -1)


# ------------------------------------------------------------------------------------------------------------
# SoccerNet average-mAP vs the official package

SN_CLASSES = ["Penalty", "Kick-off", "Goal", "Substitution", "Offside", "Shots on target", "Shots off target",
              "Clearance", "Ball out of play", "Throw-in", "Foul", "Indirect free-kick", "Direct free-kick",
              "Corner", "Yellow card", "Red card", "Yellow->red card"]


def random_game(rng: np.random.Generator, half_ms: int, n_truth: int, n_noise: int) -> tuple[dict, dict]:
    """Labels and predictions of one game: truth of both halves (some not shown, a few classes frequent),
    jittered predictions near them with rounded (tied) confidences, and uniform false positives."""
    annotations, predictions = [], []
    for half in (1, 2):
        for _ in range(n_truth):
            ms = int(rng.integers(0, half_ms))
            label = SN_CLASSES[int(rng.integers(0, 17 if rng.random() < 0.7 else 4))]
            seconds = ms // 1000
            annotations.append({"gameTime": f"{half} - {seconds // 60:02d}:{seconds % 60:02d}", "label": label,
                                "position": str(ms), "team": "home",
                                "visibility": "not shown" if rng.random() < 0.25 else "visible"})
            for _ in range(int(rng.integers(0, 3))):
                pms = max(0, ms + int(rng.normal(0, 2000)))
                predictions.append({"label": label if rng.random() < 0.85 else SN_CLASSES[int(rng.integers(17))],
                                    "position": str(pms), "half": str(half),
                                    "confidence": str(round(float(rng.random()), int(rng.integers(1, 3))))})
        for _ in range(n_noise):
            predictions.append({"label": SN_CLASSES[int(rng.integers(17))], "position": int(rng.integers(0, half_ms)),
                                "half": half, "confidence": float(rng.random())})
    annotations.append({"gameTime": "1 - 00:01", "label": "not a SoccerNet class", "position": "1000"})
    order = rng.permutation(len(predictions))
    return {"annotations": annotations}, {"predictions": [predictions[i] for i in order]}


def write_games(root, games: list[tuple[dict, dict]]) -> list[str]:
    names = []
    for i, (labels, preds) in enumerate(games):
        name = f"league/2016-2017/game {i}"
        names.append(name)
        (root / "gt" / name).mkdir(parents=True)
        (root / "pred" / name).mkdir(parents=True)
        (root / "gt" / name / "Labels-v2.json").write_text(json.dumps({"UrlLocal": name, **labels}))
        (root / "pred" / name / "results_spotting.json").write_text(json.dumps({"UrlLocal": name, **preds}))
    return names


def official(root, metric: str, framerate: int = 2) -> dict:
    from SoccerNet.Evaluation.ActionSpotting import evaluate
    from SoccerNet.Evaluation.utils import EVENT_DICTIONARY_V2

    with contextlib.redirect_stderr(io.StringIO()), np.errstate(all="ignore"):
        return evaluate(str(root / "gt"), str(root / "pred"), prediction_file="results_spotting.json",
                        label_files="Labels-v2.json", split="test", version=2, framerate=framerate, metric=metric,
                        dataset=None, EVENT_DICTIONARY=EVENT_DICTIONARY_V2)


OFFICIAL_KEYS = ("a_mAP", "a_mAP_per_class", "a_mAP_visible", "a_mAP_per_class_visible", "a_mAP_unshown",
                 "a_mAP_per_class_unshown")


def assert_same(ours: dict, ref: dict):
    for key in OFFICIAL_KEYS:
        np.testing.assert_allclose(np.asarray(ours[key], float), np.asarray(ref[key], float), rtol=0, atol=1e-9,
                                   err_msg=key)


def crowded_game(rng: np.random.Generator) -> tuple[dict, dict]:
    """One-minute halves, three classes, truth a few bins apart and predictions on every nearby bin with three
    confidence levels: chains of competing truth, tied confidences and midpoints between truth of different
    visibility are all common."""
    annotations, predictions = [], []
    for half in (1, 2):
        for _ in range(30):
            ms = int(rng.integers(0, 60_000))
            annotations.append({"gameTime": f"{half} - 00:{ms // 1000:02d}", "label": SN_CLASSES[int(rng.integers(3))],
                                "position": str(ms), "visibility": "not shown" if rng.random() < 0.4 else "visible"})
        for _ in range(120):
            predictions.append({"label": SN_CLASSES[int(rng.integers(3))], "half": half,
                                "position": str(int(rng.integers(0, 60_000))),
                                "confidence": str(float(rng.choice([0.3, 0.6, 0.9])))})
    return {"annotations": annotations}, {"predictions": predictions}


def edge_game(rng: np.random.Generator) -> tuple[dict, dict]:
    """Second-precision truth (no position), positions past 120 min, half 3, a negative confidence that
    overwrites a real one."""
    labels, preds = random_game(rng, 3 * 60 * 1000, n_truth=15, n_noise=10)
    labels["annotations"] += [
        {"gameTime": "2 - 01:07", "label": "Goal", "visibility": "visible"},
        {"gameTime": "2 - 130:07", "label": "Goal", "position": "7900000"},
        {"gameTime": "3 - 01:07", "label": "Goal", "position": "1000"},
    ]
    preds["predictions"] += [
        {"label": "Goal", "half": "2", "position": "67000", "confidence": "0.7"},
        {"label": "Goal", "half": "2", "position": "7900001", "confidence": "0.7"},
        {"label": "Goal", "half": 3, "position": "1000", "confidence": 0.9},
        {"label": "Corner", "half": 1, "position": "1000", "confidence": 0.9},
        {"label": "Corner", "half": 1, "position": "1200", "confidence": -0.5},
    ]
    return labels, preds


# The official evaluator costs about the same per delta whatever the number of games, so each call below
# evaluates several games: random ones (short 4-min halves: overwrites, chains and ties happen), a crowded one
# and one with edge entries.
@pytest.mark.parametrize("seed,metrics", [(0, ("tight", "at1")), (1, ("tight", "at1")), (2, ("loose",))])
def test_soccernet_equals_official(tmp_path, seed, metrics):
    rng = np.random.default_rng(seed)
    games = [random_game(rng, 4 * 60 * 1000, n_truth=25, n_noise=25) for _ in range(2)]
    games += [crowded_game(rng), edge_game(rng)]
    write_games(tmp_path, games)
    for metric in metrics:
        ours = soccernet_average_map(tmp_path / "gt", tmp_path / "pred", metric=metric)
        assert_same(ours, official(tmp_path, metric))


def test_soccernet_tie_and_closest_rules_by_hand():
    def game(annotations, predictions):
        return [SoccerNetGame("g", {"annotations": [
            {"gameTime": "1 - 00:00", "label": "Goal", "position": str(500 * b), "visibility": v}
            for b, v in annotations]}, {"predictions": [
                {"label": "Goal", "half": 1, "position": str(500 * b), "confidence": c} for b, c in predictions]})]

    # at1, 2 fps: a truth matches predictions within 1 bin. Truth at bins 10 and 12, equal confidences at 9 and
    # 11: truth 10 takes the earliest (9), so truth 12 still gets 11 -> recall 1, AP 1.
    res = soccernet_average_map_games(game([(10, "visible"), (12, "visible")], [(11, 0.5), (9, 0.5)]), "at1")
    assert res["a_mAP_per_class"][2] == 1.0
    # closest truth: bins [0, (10+13)//2 = 11) belong to truth 10, [11, ...) to truth 13 (not shown); a hit at
    # bin 11 therefore counts as "unshown": unshown AP 1 (1 of 1, precision 1); visible: 0 of 1
    res = soccernet_average_map_games(game([(10, "visible"), (13, "not shown")], [(11, 0.5)]), "at2")
    assert res["a_mAP_per_class_unshown"][2] == 1.0 and res["a_mAP_per_class_visible"][2] == 0.0
    res = soccernet_average_map_games(game([(10, "visible"), (13, "not shown")], [(10, 0.5)]), "at2")
    assert res["a_mAP_per_class_unshown"][2] == 0.0 and res["a_mAP_per_class_visible"][2] == 1.0


def test_soccernet_perfect_predictions_and_unshown_quirk(tmp_path):
    rng = np.random.default_rng(3)
    # every class in both halves and both visibilities; truth of a class at least 2 bins apart (adjacent truth
    # would shift the official "closest" segments off the truth bin itself)
    annotations = []
    for name in SN_CLASSES:
        for half in (1, 2):
            for k in rng.choice(300, size=4, replace=False):
                annotations.append({"gameTime": f"{half} - 00:00", "label": name, "position": str(2000 * int(k)),
                                    "visibility": "not shown" if rng.random() < 0.4 else "visible"})
            annotations[-1]["visibility"], annotations[-2]["visibility"] = "visible", "not shown"
    labels = {"annotations": annotations}
    preds = {"predictions": [{"label": a["label"], "half": a["gameTime"][0], "position": a["position"],
                              "confidence": "1.0"} for a in annotations]}
    write_games(tmp_path, [(labels, preds)])
    ours = soccernet_average_map(tmp_path / "gt", tmp_path / "pred", metric="tight")
    assert ours["a_mAP"] == 1.0 and ours["a_mAP_visible"] == 1.0 and ours["a_mAP_per_class"] == [1.0] * 17
    assert ours["a_mAP_unshown"] == pytest.approx(17 / 13)  # the official 17/13 rescaling
    at1 = soccernet_average_map(tmp_path / "gt", tmp_path / "pred", metric="at1")
    assert at1["a_mAP_unshown"] == 1.0  # single delta: no rescaling (official behaviour)


def test_soccernet_in_memory_games_and_errors():
    labels = {"annotations": [{"gameTime": "1 - 00:10", "label": "Goal", "position": "10000"}]}
    games = [SoccerNetGame("g", labels, {"predictions": [{"label": "Goal", "half": "1", "position": "10400",
                                                           "confidence": "0.8"}]}),
             SoccerNetGame("h", labels, None)]
    res = soccernet_average_map_games(games, metric="at1")
    # Goal: 2 truths, 1 hit at confidence 0.8 -> recall 1/2 with precision 1 up to the 0.8 threshold:
    # 11-point AP = 6/11 (levels 0..0.5); the other 16 classes have no truth -> 0
    assert res["a_mAP_per_class"][2] == pytest.approx(6 / 11)
    assert res["a_mAP"] == pytest.approx(6 / 11 / 17)
    assert res["games_without_predictions"] == ["h"]
    bad = [SoccerNetGame("g", labels, {"predictions": [{"label": "Goal", "position": "1", "confidence": 1}]},
                         predictions_path="p.json")]
    with pytest.raises(DataError, match=r"p.json: prediction 0: missing key 'half'"):
        soccernet_average_map_games(bad)
    neg = [SoccerNetGame("g", {"annotations": [{"gameTime": "1 - 00:00", "label": "Goal", "position": "-900"}]},
                         None, labels_path="l.json")]
    with pytest.raises(DataError, match="l.json.*negative position"):
        soccernet_average_map_games(neg)
    with pytest.raises(PespotError, match="unknown SoccerNet metric"):
        soccernet_average_map_games(games, metric="medium")
