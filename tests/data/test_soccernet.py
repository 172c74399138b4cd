"""SoccerNet label and prediction files <-> frame-indexed videos, and our results_spotting.json read by the
official ``SoccerNet`` package."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

from pespot.cli import main
from pespot.data.labels import Event, Video, save_split
from pespot.data.soccernet import (
    SOCCERNET_V2_CLASSES,
    find_games,
    format_game_time,
    frame_to_ms,
    load_soccernet,
    ms_to_frame,
    parse_game_time,
    read_labels,
    read_results,
    split_video_id,
    videos_to_results,
    write_results,
)
from pespot.errors import DataError
from pespot.metrics import soccernet_average_map

SHARED = SHARED_DATA / "soccernetv2"
needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data label files not present")


# ------------------------------------------------------------------------------------------------------------
# time conversions


@pytest.mark.parametrize("fps,period_ms", [(2, 500), (25, 40)])
def test_ms_frame_ms_round_trip_on_frame_period_multiples(fps, period_ms):
    for k in range(0, 2 * 60 * 60 * fps, 7):  # two hours
        ms = k * period_ms
        assert ms_to_frame(ms, fps) == k
        assert frame_to_ms(k, fps) == ms


@pytest.mark.parametrize("fps", [2, 25, 12.5, 29.97, 59.94, 6.25])
def test_frame_ms_frame_round_trip_at_any_fps(fps):
    for frame in range(0, 200_000, 13):
        ms = frame_to_ms(frame, fps)
        assert ms_to_frame(ms, fps) == frame
        assert ms == 0 or ms_to_frame(ms - 1, fps) == frame - 1  # the first millisecond inside the frame


def test_ms_to_frame_is_exact_where_the_float_formula_is_not():
    # 1160 ms is exactly frame 29 at 25 fps; int(1160 / 1000 * 25) gives 28 in floating point
    assert int(1160 / 1000 * 25) == 28
    assert ms_to_frame(1160, 25) == 29
    assert ms_to_frame(24656, 2) == 49 and ms_to_frame(24999, 2) == 49 and ms_to_frame(25000, 2) == 50


def test_game_time_and_ids():
    assert format_game_time(2, 24_656) == "2 - 00:24"
    assert format_game_time(1, 47 * 60_000 + 5_000) == "1 - 47:05"
    assert parse_game_time("1 - 00:24", "x") == (1, 24_000)
    assert parse_game_time("2 - 105:07", "x") == (2, (105 * 60 + 7) * 1000)
    for bad in ("3 - 00:24", "1 - 0024", "", None, "half 1"):
        with pytest.raises(DataError, match="bad gameTime"):
            parse_game_time(bad, "f.json: annotation 3")
    assert split_video_id("england_epl/2014-2015/g/half2") == ("england_epl/2014-2015/g", 2)
    with pytest.raises(DataError, match="half id"):
        split_video_id("england_epl/2014-2015/g/half3")


# ------------------------------------------------------------------------------------------------------------
# Labels-v2.json


def write_labels(root: Path, game: str, annotations: list[dict]) -> Path:
    path = root / game / "Labels-v2.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"UrlLocal": game + "/", "annotations": annotations}))
    return path


def ann(half: int, ms: int, label: str, visibility: str = "visible", team: str = "home") -> dict:
    return {"gameTime": format_game_time(half, ms), "label": label, "position": str(ms), "team": team,
            "visibility": visibility}


def test_read_labels_two_halves_with_team_and_visibility(tmp_path):
    game = "italy_serie-a/2016-2017/2016-09-18 - 21-45 Fiorentina 1 - 0 Roma"
    path = write_labels(tmp_path, game, [
        ann(2, 61_000, "Goal", "not shown", "away"), ann(1, 24_656, "Kick-off"), ann(1, 1_160, "Foul"),
        {"gameTime": "2 - 00:07", "label": "Corner"},  # no position: second precision from gameTime
    ])
    videos = read_labels(path, fps=25, classes=SOCCERNET_V2_CLASSES)
    assert [v.video for v in videos] == [f"{game}/half1", f"{game}/half2"]
    assert all(v.fps == 25.0 and v.num_frames == -1 for v in videos)
    h1, h2 = videos
    assert [(e.frame, e.label) for e in h1.events] == [(29, "Foul"), (616, "Kick-off")]  # sorted by time
    assert [(e.frame, e.label) for e in h2.events] == [(175, "Corner"), (1525, "Goal")]
    goal = h2.events[1]
    assert goal.extra == {"team": "away", "visibility": "not shown", "position_ms": 61_000}
    assert goal.comment == "away; not shown"
    at2 = read_labels(path, fps=2)
    assert [e.frame for e in at2[0].events] == [2, 49]


def test_label_errors_name_file_and_entry(tmp_path):
    cases = [
        ([{"gameTime": "1 - 00:10", "position": "10"}], r"annotation 0: missing key 'label'"),
        ([ann(1, 0, "Goal"), {"gameTime": "1 00:10", "label": "Goal", "position": "1"}],
         r"annotation 1: bad gameTime '1 00:10'"),
        ([ann(1, 0, "Goal"), ann(1, 5, "Gol")], r"annotation 1: unknown label 'Gol'"),
        ([{"gameTime": "1 - 00:10", "label": "Goal", "position": "ten"}], r"annotation 0: 'position' must be"),
        ([{"gameTime": "1 - 00:10", "label": "Goal", "position": "-5"}], r"annotation 0: 'position' must be >= 0"),
    ]
    for i, (entries, message) in enumerate(cases):
        path = write_labels(tmp_path, f"l/s/g{i}", entries)
        with pytest.raises(DataError, match=str(path).replace("\\", "/") + ": " + message):
            read_labels(path, fps=2, classes=SOCCERNET_V2_CLASSES)
    assert read_labels(tmp_path / "l/s/g2/Labels-v2.json", 2, SOCCERNET_V2_CLASSES, skip_unknown=True)[0].events


@needs_data
def test_find_games_and_tdeed_video_ids(tmp_path):
    split = json.loads((SHARED / "tdeed_split_lists" / "test.json").read_text())
    first_game = split[0]["video"].rsplit("/", 1)[0]
    write_labels(tmp_path, first_game, [ann(1, 500, "Goal"), ann(2, 1000, "Corner")])
    write_labels(tmp_path, "spain_laliga/2016-2017/other game", [ann(1, 500, "Goal")])
    (tmp_path / "notes").mkdir()
    assert find_games(tmp_path) == sorted([first_game, "spain_laliga/2016-2017/other game"])
    videos = load_soccernet(tmp_path, fps=2, games=[first_game])
    # the same ids as T-DEED's split lists
    assert [v.video for v in videos] == [split[0]["video"], split[1]["video"]]
    with pytest.raises(DataError, match="no 'Labels-v2.json'"):
        find_games(tmp_path / "notes")


@needs_data
def test_class_list_matches_shared_class_txt():
    from SoccerNet.Evaluation.utils import EVENT_DICTIONARY_V2

    from pespot.data.labels import load_classes

    assert load_classes(SHARED / "class.txt") == SOCCERNET_V2_CLASSES
    assert sorted(EVENT_DICTIONARY_V2, key=EVENT_DICTIONARY_V2.get) == SOCCERNET_V2_CLASSES


# ------------------------------------------------------------------------------------------------------------
# results_spotting.json


def perfect_annotations(rng: np.random.Generator, period_ms: int) -> list[dict]:
    """Truth of every class in both halves, on multiples of the frame period, >= 1 s apart per class."""
    annotations = []
    for i, label in enumerate(SOCCERNET_V2_CLASSES):
        for half in (1, 2):
            for k in rng.choice(400, size=3, replace=False):
                vis = "not shown" if (i + half + int(k)) % 3 == 0 else "visible"
                annotations.append(ann(half, 2000 * int(k) + period_ms * int(rng.integers(0, 3)), label, vis))
    return annotations


def official_evaluate(labels_root: Path, preds_root: Path, metric: str, framerate: int) -> dict:
    from SoccerNet.Evaluation.ActionSpotting import evaluate
    from SoccerNet.Evaluation.utils import EVENT_DICTIONARY_V2

    with contextlib.redirect_stderr(io.StringIO()), np.errstate(all="ignore"):
        return evaluate(str(labels_root), str(preds_root), prediction_file="results_spotting.json",
                        label_files="Labels-v2.json", framerate=framerate, metric=metric, dataset=None,
                        EVENT_DICTIONARY=EVENT_DICTIONARY_V2)


@pytest.mark.parametrize("fps,framerate,metric", [(2, 2, "at2"), (25, 25, "at1")])
def test_our_results_file_is_read_and_scored_by_the_official_package(tmp_path, fps, framerate, metric):
    rng = np.random.default_rng(fps)
    game = "england_epl/2016-2017/a game"
    write_labels(tmp_path / "gt", game, perfect_annotations(rng, 1000 // fps))
    truth = load_soccernet(tmp_path / "gt", fps=fps)
    # predictions: the truth frames with scores; frames -> ms must land in the truth's bins
    pred = [Video(v.video, -1, float(fps), [Event(e.frame, e.label, score=0.5 + 0.5 * rng.random())
                                            for e in v.events]) for v in truth]
    paths = write_results(pred, tmp_path / "pred")
    assert paths == [tmp_path / "pred" / game / "results_spotting.json"]
    obj = json.loads(paths[0].read_text())
    assert obj["UrlLocal"] == game
    first = obj["predictions"][0]
    assert set(first) == {"gameTime", "label", "position", "half", "confidence"}
    assert first["half"] == "1" and first["position"].isdigit()
    ref = official_evaluate(tmp_path / "gt", tmp_path / "pred", metric, framerate)
    assert ref["a_mAP"] == pytest.approx(1.0) and ref["a_mAP_visible"] == pytest.approx(1.0)
    ours = soccernet_average_map(tmp_path / "gt", tmp_path / "pred", metric=metric, framerate=framerate)
    for key in ("a_mAP", "a_mAP_visible", "a_mAP_unshown", "a_mAP_per_class"):
        np.testing.assert_allclose(ours[key], ref[key], rtol=0, atol=1e-9)
    # and back: the same frames, labels and scores
    back = read_results(paths[0], fps=fps, classes=SOCCERNET_V2_CLASSES)
    assert [v.video for v in back] == [v.video for v in pred]
    for b, p in zip(back, pred):
        assert sorted((e.frame, e.label, e.score) for e in b.events) == sorted((e.frame, e.label, e.score)
                                                                              for e in p.events)


def test_results_errors(tmp_path):
    path = tmp_path / "l" / "s" / "g" / "results_spotting.json"
    path.parent.mkdir(parents=True)
    for preds, message in [
        ([{"label": "Goal", "position": "1", "confidence": 1}], r"prediction 0: missing key 'half'"),
        ([{"label": "Goal", "position": "1", "half": "3", "confidence": 1}], r"prediction 0: 'half' must be 1 or 2"),
        ([{"label": "Goal", "position": "1", "half": 1, "confidence": "high"}], r"'confidence' must be a number"),
        ([{"label": "Goalz", "position": "1", "half": 1, "confidence": 1}], r"unknown label 'Goalz'"),
    ]:
        path.write_text(json.dumps({"UrlLocal": "l/s/g", "predictions": preds}))
        with pytest.raises(DataError, match=message):
            read_results(path, 2, SOCCERNET_V2_CLASSES)
    with pytest.raises(DataError, match="half id"):
        videos_to_results([Video("l/s/g/first", -1, 2.0, [Event(1, "Goal", score=1.0)])])
    with pytest.raises(DataError, match="no fps"):
        videos_to_results([Video("l/s/g/half1", -1, None, [Event(1, "Goal", score=1.0)])])


# ------------------------------------------------------------------------------------------------------------
# pespot eval --soccernet


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eval_cli_soccernet_folder_and_prediction_json(tmp_path, capsys):
    game_a, game_b = "l/2016-2017/game a", "l/2016-2017/game b"
    write_labels(tmp_path / "gt", game_a, [ann(1, 10_000, "Goal"), ann(2, 20_000, "Corner", "not shown")])
    write_labels(tmp_path / "gt", game_b, [ann(1, 30_000, "Foul")])
    pred = [Video(f"{game_a}/half1", -1, 2.0, [Event(20, "Goal", score=0.4), Event(22, "Goal", score=0.9)]),
            Video(f"{game_a}/half2", -1, 2.0, [Event(40, "Corner", score=0.8)])]
    write_results(pred, tmp_path / "pred")
    code, out, err = run_cli(["eval", "--soccernet", str(tmp_path / "gt"), str(tmp_path / "pred"), "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    for key in ("a_mAP", "a_mAP_per_class", "a_mAP_visible", "a_mAP_per_class_visible", "a_mAP_unshown",
                "a_mAP_per_class_unshown"):
        assert key in res
    assert len(res["a_mAP_per_class"]) == 17
    assert res["games_without_predictions"] == [game_b] and "1 of 2 games have no predictions" in err
    # the same predictions as a pespot JSON, converted in memory, give the same numbers
    save_split(pred, tmp_path / "pred.json")
    code, out2, _ = run_cli(["eval", "--soccernet", str(tmp_path / "gt"), str(tmp_path / "pred.json"), "--json"],
                            capsys)
    assert code == 0 and json.loads(out2)["a_mAP"] == res["a_mAP"]
    # at1 (±1 bin): only the 0.4 prediction reaches the goal, and the 0.9 one is a false positive: 11-point AP
    # 1/2. NMS with a 2-frame window removes the 0.4 prediction (the 0.9 one is 2 frames away): AP 0.
    goal = SOCCERNET_V2_CLASSES.index("Goal")
    for nms, expected in (([], 0.5), (["--nms", "2"], 0.0)):
        code, out3, _ = run_cli(["eval", "--soccernet", str(tmp_path / "gt"), str(tmp_path / "pred.json"),
                                 "--metric", "at1", "--json", *nms], capsys)
        assert code == 0 and json.loads(out3)["a_mAP_per_class"][goal] == expected
    # human-readable report and a clear error for a bad root
    code, text, _ = run_cli(["eval", "--soccernet", str(tmp_path / "gt"), str(tmp_path / "pred")], capsys)
    assert code == 0 and "a_mAP unshown" in text and "Yellow->red card" in text
    code, _, err = run_cli(["eval", "--soccernet", str(tmp_path / "nowhere"), str(tmp_path / "pred")], capsys)
    assert code == 1 and "nowhere" in err
