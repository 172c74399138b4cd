"""The candidate rule (issue 11): by default every local maximum is a candidate whatever its score, optionally
capped at k events per class and video; E2E-Spot's 0.01 threshold stays available."""

from __future__ import annotations

import numpy as np
import pytest

from pespot.config import load_config
from pespot.data.labels import Event, Video
from pespot.errors import ConfigError
from pespot.infer import scores_to_events
from pespot.metrics import compute_map


def scores_with(frames_a: dict[int, float], frames_b: dict[int, float], n: int = 20) -> np.ndarray:
    scores = np.zeros((n, 3), dtype=np.float32)
    for f, v in frames_a.items():
        scores[f, 1] = v
    for f, v in frames_b.items():
        scores[f, 2] = v
    scores[:, 0] = 1 - scores[:, 1:].max(axis=1)
    return scores


def test_default_threshold_keeps_calibrated_small_scores():
    # A rare class's calibrated sigmoid scores sit far below 0.01; the default rule keeps them, E2E-Spot's drops them.
    scores = scores_with({3: 0.004, 10: 0.002}, {5: 0.3})
    default = {(e.frame, e.label) for e in scores_to_events(scores, ["rare", "common"], nms="none")}
    assert {(3, "rare"), (5, "common"), (10, "rare")} <= default
    assert len(default) == 40  # threshold 0: every (frame, class), however small its score
    e2e = scores_to_events(scores, ["rare", "common"], threshold=0.01, nms="none")
    assert [(e.frame, e.label) for e in e2e] == [(5, "common")]
    assert load_config("paper").eval.threshold == 0.0 and load_config("synthetic").eval.threshold == 0.0


def test_map_never_drops_when_lower_scored_candidates_are_added():
    truth = [Video("v", 20, 25.0, [Event(3, "rare"), Event(10, "rare"), Event(5, "common")])]
    scores = scores_with({3: 0.004, 10: 0.002, 15: 0.001}, {5: 0.3, 12: 0.2})
    maps = [compute_map(truth, [Video("v", 20, 25.0, scores_to_events(scores, ["rare", "common"], threshold=t))],
                        ["rare", "common"], [0]).mAP[0] for t in (0.01, 0.003, 0.0015, 0.0)]
    assert maps == sorted(maps) and maps[-1] == 1.0 and maps[0] == 0.5


def test_top_k_keeps_the_best_events_of_each_class():
    scores = scores_with({1: 0.5, 4: 0.9, 7: 0.1, 12: 0.7}, {2: 0.2, 9: 0.05})
    events = scores_to_events(scores, ["a", "b"], nms="none", top_k=2)
    assert [(e.frame, e.label) for e in events] == [(2, "b"), (4, "a"), (9, "b"), (12, "a")]  # sorted by frame
    # the cap applies after NMS: a suppressed neighbour never takes a slot
    near = scores_with({4: 0.9, 5: 0.8, 9: 0.3}, {})
    kept = scores_to_events(near, ["a", "b"], nms="local_max", nms_window=1, top_k=2)
    assert [(e.frame, e.score) for e in kept if e.label == "a"] == [(4, pytest.approx(0.9)), (9, pytest.approx(0.3))]
    # ties: the earlier frame wins
    tied = scores_with({2: 0.5, 6: 0.5, 8: 0.5}, {})
    assert [e.frame for e in scores_to_events(tied, ["a", "b"], nms="none", top_k=2) if e.label == "a"] == [2, 6]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_top_k_is_refused(bad):
    with pytest.raises(ConfigError, match="--top-k"):
        scores_to_events(scores_with({1: 0.5}, {}), ["a", "b"], top_k=bad)


def test_top_k_config_key_is_checked():
    assert load_config("paper", ["eval.top_k=50"]).eval.top_k == 50
    with pytest.raises(ConfigError, match="eval.top_k"):
        load_config("paper", ["eval.top_k=0"])
    with pytest.raises(ConfigError, match="eval.threshold"):
        load_config("paper", ["eval.threshold=-0.1"])
