"""E2E-Spot label files: round trips on every real file in shared/data, and one clear error per problem."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED_DATA as DATA

from pespot.data.labels import (
    Event,
    Video,
    load_classes,
    load_dataset,
    load_split,
    save_classes,
    save_split,
    split_problems,
    validate_split,
)
from pespot.errors import DataError

LABELLED = [f"{d}/{s}.json" for d in ("tennis", "fs_comp", "fs_perf", "finediving") for s in ("train", "val", "test")]
LABELLED += ["finegym/val.json", "finegym/test.json"]
LISTS = [f"soccernetv2/tdeed_split_lists/{s}.json" for s in ("train", "val", "test")]
LISTS += [f"soccernet_ball/tdeed_split_lists/{s}.json" for s in ("train", "val", "test", "challenge")]

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data label files not present")


def _class_file(rel: str) -> Path:
    return DATA / rel.split("/")[0] / "class.txt"


@needs_data
@pytest.mark.parametrize("rel", LABELLED + LISTS)
def test_round_trip_real_label_files(rel, tmp_path):
    src = DATA / rel
    raw = json.loads(src.read_text())
    classes = load_classes(_class_file(rel))
    videos = load_split(src, classes)  # validates too: the real files have no problem
    assert len(videos) == len(raw)
    out = tmp_path / "split.json"
    save_split(videos, out)
    again = load_split(out, classes)
    assert again == videos  # same ids, frames, fps, events (frame, label, comment) and extra keys
    written = json.loads(out.read_text())
    for before, after in zip(raw, written):
        if "num_events" in before:
            # The only key allowed to change: it is rewritten as len(events) (4 FineDiving entries disagree).
            assert after["num_events"] == len(before["events"])
            before = {k: v for k, v in before.items() if k != "num_events"}
            after = {k: v for k, v in after.items() if k != "num_events"}
        assert after == before  # every other key (width, height, _source_info, comment...) kept as is


@needs_data
def test_extra_keys_are_kept_in_memory():
    gym = load_split(DATA / "finegym/val.json")
    info = gym[0].extra["_source_info"]
    assert set(info) >= {"start_frame", "end_frame", "pad"}
    assert {"width", "height"} <= set(gym[0].extra)
    assert all(e.comment for e in gym[0].events)  # 'A_xxxx_yyyy;(VT) ...' descriptions
    dive = load_split(DATA / "finediving/train.json")
    assert dive[0].fps == -1  # unknown, allowed
    lists = load_split(DATA / "soccernetv2/tdeed_split_lists/val.json")
    assert not lists[0].labelled and lists[0].events == [] and lists[0].num_frames > 0


@needs_data
@pytest.mark.parametrize("split", ["val", "test"])
def test_finegym_frames_with_two_events_are_kept(split):
    path = DATA / "finegym" / f"{split}.json"
    raw = json.loads(path.read_text())
    raw_pairs = sum(c - 1 for v in raw for c in Counter(e["frame"] for e in v["events"]).values() if c > 1)
    videos = load_split(path)
    pairs = sum(c - 1 for v in videos for c in Counter(e.frame for e in v.events).values() if c > 1)
    assert pairs == raw_pairs and 50 <= pairs <= 120  # about 85-90 such frames per split
    assert sum(len(v.events) for v in videos) == sum(len(v["events"]) for v in raw)


# ------------------------------------------------------------------------------------------------------------
# errors


def _write(tmp_path: Path, obj, name: str = "bad.json") -> Path:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def _video(name="v1", num_frames=100, fps=25.0, events=None, **extra):
    obj = {"video": name, "num_frames": num_frames, "fps": fps,
           "events": events if events is not None else [{"frame": 10, "label": "a", "comment": ""}]}
    obj.update(extra)
    return obj


CLASSES = ["a", "b"]


def test_malformed_json_names_file_and_line(tmp_path):
    path = _write(tmp_path, '[{"video": "v1",\n "num_frames": 10,, }]')
    with pytest.raises(DataError, match=r"bad\.json: not valid JSON \(line 2"):
        load_split(path)
    with pytest.raises(DataError, match=r"missing\.json: file not found"):
        load_split(tmp_path / "missing.json")
    with pytest.raises(DataError, match=r"bad\.json: expected a JSON list of videos, got dict"):
        load_split(_write(tmp_path, {"video": "v1"}))


@pytest.mark.parametrize("entry, message", [
    ({"num_frames": 10, "events": []}, r"entry 1: missing key 'video'"),
    ({"video": "v2", "events": []}, r"entry 1 \(video 'v2'\): missing key 'num_frames'"),
    (_video("v2", events=[{"label": "a"}]), r"entry 1 \(video 'v2'\), event 0: missing key 'frame'"),
    (_video("v2", events=[{"frame": 3, "label": "a"}, {"frame": 4}]),
     r"entry 1 \(video 'v2'\), event 1: missing key 'label'"),
    (_video("v2", events=[{"frame": "12", "label": "a"}]), r"event 0: 'frame' must be an integer, got '12'"),
    (_video("v2", events=[{"frame": 1.5, "label": "a"}]), r"event 0: 'frame' must be an integer, got 1\.5"),
    (_video("v2", events=[{"frame": 1, "label": 3}]), r"event 0: 'label' must be a string, got 3"),
    (_video("v2", events=[{"frame": 1, "label": "a", "comment": 5}]), r"'comment' must be a string, got 5"),
    (_video("v2", events=[5]), r"event 0: expected an object"),
    (_video("v2", num_frames=-3), r"\(video 'v2'\): 'num_frames' must be a non-negative integer, got -3"),
    (_video("v2", num_frames="100"), r"'num_frames' must be a non-negative integer, got '100'"),
    (_video("v2", fps="25"), r"\(video 'v2'\): 'fps' must be a number, got '25'"),
    (_video("v2", num_events="1"), r"'num_events' must be a non-negative integer"),
    ({"video": "v2", "num_frames": 5, "events": {"frame": 1}}, r"'events' must be a list, got dict"),
    ({"video": 7, "num_frames": 5}, r"entry 1: 'video' must be a non-empty string, got 7"),
    ("v2", r"entry 1: expected an object"),
])
def test_wrong_keys_and_types(tmp_path, entry, message):
    path = _write(tmp_path, [_video("v1"), entry])
    if not message.startswith("entry 1"):
        message = r"entry 1 .*" + message  # every message names the entry (and the video when it has an id)
    with pytest.raises(DataError, match=r"bad\.json: " + message):
        load_split(path, CLASSES)


@pytest.mark.parametrize("entry, message", [
    (_video("v2", events=[{"frame": 5, "label": "a"}, {"frame": 7, "label": "zzz"}]),
     r"entry 1 \(video 'v2'\), event 1: unknown class 'zzz' \(classes: a, b\)"),
    (_video("v2", num_frames=50, events=[{"frame": 50, "label": "a"}]),
     r"entry 1 \(video 'v2'\), event 0: frame 50 outside \[0, 50\)"),
    (_video("v2", events=[{"frame": -1, "label": "b"}]), r"event 0: frame -1 outside \[0, 100\)"),
    (_video("v1"), r"entry 1 \(video 'v1'\): duplicated video id \(first at entry 0\)"),
    (_video("v2", fps=0), r"entry 1 \(video 'v2'\): fps must be > 0 \(or -1 for unknown\), got 0"),
    (_video("v2", fps=-2.5), r"fps must be > 0 \(or -1 for unknown\), got -2\.5"),
])
def test_validation_errors_name_file_video_and_event(tmp_path, entry, message):
    path = _write(tmp_path, [_video("v1"), entry])
    if not message.startswith("entry 1"):
        message = r"entry 1 \(video 'v2'\).*" + message
    with pytest.raises(DataError, match=r"bad\.json: " + message):
        load_split(path, CLASSES)
    load_split(path)  # without classes only the parsing checks run: these are validation problems


def test_fps_minus_one_means_unknown_and_predictions_may_omit_num_frames(tmp_path):
    path = _write(tmp_path, [_video("v1", fps=-1), _video("v2", fps=None)])
    videos = load_split(path, CLASSES)
    assert [v.fps for v in videos] == [-1.0, None]
    pred = _write(tmp_path, [{"video": "v1", "events": [{"frame": 3, "label": "a", "score": 0.5}]}], "pred.json")
    videos = load_split(pred, CLASSES, predictions=True)
    assert videos[0].num_frames == -1 and videos[0].events[0].score == 0.5


def test_all_problems_listed_and_first_one_raised(tmp_path):
    videos = [
        Video("v1", 10, 25.0, [Event(3, "a"), Event(12, "a"), Event(4, "nope")]),
        Video("v1", 10, 0.0, []),
    ]
    problems = split_problems(videos, CLASSES, "f.json")
    assert problems == [
        "f.json: entry 0 (video 'v1'), event 1: frame 12 outside [0, 10)",
        "f.json: entry 0 (video 'v1'), event 2: unknown class 'nope' (classes: a, b)",
        "f.json: entry 1 (video 'v1'): duplicated video id (first at entry 0)",
        "f.json: entry 1 (video 'v1'): fps must be > 0 (or -1 for unknown), got 0",
    ]
    with pytest.raises(DataError, match=r"^f\.json: entry 0 \(video 'v1'\), event 1: .*\(and 3 more problems\)$"):
        validate_split(videos, CLASSES, "f.json")


def test_class_file_errors(tmp_path):
    path = tmp_path / "class.txt"
    path.write_text("serve\nswing\n\nserve\n")
    with pytest.raises(DataError, match=r"class\.txt:4: duplicated class 'serve'"):
        load_classes(path)
    path.write_text("\n\n")
    with pytest.raises(DataError, match=r"class\.txt: no class names"):
        load_classes(path)
    with pytest.raises(DataError, match=r"nothere\.txt: class file not found"):
        load_classes(tmp_path / "nothere.txt")
    save_classes(["x", "y z"], path)
    assert load_classes(path) == ["x", "y z"]


def test_dataset_round_trip_with_multi_event_frame(tmp_path):
    root = tmp_path / "ds"
    save_classes(CLASSES, root / "class.txt")
    videos = [Video("clip_0", 40, 29.97, [Event(5, "a", "x"), Event(5, "b", "y")], {"width": 398}),
              Video("clip_1", 30, 25.0, [])]
    save_split(videos, root / "train.json")
    ds = load_dataset(root)
    assert ds.classes == CLASSES and list(ds.splits) == ["train"]
    assert ds.splits["train"] == videos
    assert json.loads((root / "train.json").read_text())[1]["events"] == []  # labelled, just no event


# ------------------------------------------------------------------------------------------------------------
# pespot stats


@needs_data
def test_stats_tennis_numbers(capsys):
    from pespot.cli import main

    assert main(["stats", str(DATA / "tennis"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    train = report["splits"]["train"]
    assert (train["videos"], train["frames"], train["events"]) == (1368, 483071, 10976)
    assert list(report["splits"]) == ["train", "val", "test"]
    assert report["splits"]["test"]["videos"] == 1622
    assert train["events_per_class"] == {"far_court_bounce": 2621, "far_court_swing": 2220, "far_court_serve": 657,
                                         "near_court_bounce": 2606, "near_court_swing": 2199,
                                         "near_court_serve": 673}
    assert train["max_min_class_ratio"] == pytest.approx(2621 / 657)
    # Foreground fraction recomputed here from the raw JSON: distinct (video, frame) pairs with an event / frames.
    raw = json.loads((DATA / "tennis/train.json").read_text())
    fg_frames = sum(len({e["frame"] for e in v["events"]}) for v in raw)
    assert train["foreground_fraction"] == pytest.approx(fg_frames / 483071)
    assert train["classes_without_events"] == []

    assert main(["stats", str(DATA / "tennis")]) == 0
    table = capsys.readouterr().out
    assert "1,368" in table and "483,071" in table and "10,976" in table


def test_stats_single_file_inferred_classes_and_zero_event_class(tmp_path, capsys):
    from pespot.cli import main
    from pespot.commands.stats import collect

    videos = [Video("a", 10, 25.0, [Event(1, "jump"), Event(1, "land"), Event(5, "jump")]),
              Video("b", 30, 25.0, [Event(29, "jump")])]
    save_split(videos, tmp_path / "only.json")
    report = collect(tmp_path / "only.json")
    assert report["classes_from"] == "events" and report["classes"] == ["jump", "land"]
    s = report["splits"]["only"]
    assert (s["videos"], s["frames"], s["events"]) == (2, 40, 4)
    assert s["foreground_fraction"] == pytest.approx(3 / 40)  # frames 1 and 5 of a, 29 of b
    assert s["frames_with_several_events"] == 1
    assert s["max_min_class_ratio"] == pytest.approx(3.0)
    # With a class.txt beside it, a class without events is reported (and left out of the ratio).
    save_classes(["jump", "land", "spin"], tmp_path / "class.txt")
    assert main(["stats", str(tmp_path / "only.json"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["splits"]["only"]
    assert s["events_per_class"] == {"jump": 3, "land": 1, "spin": 0}
    assert s["classes_without_events"] == ["spin"] and s["max_min_class_ratio"] == pytest.approx(3.0)


def test_stats_lists_every_problem(tmp_path, capsys):
    from pespot.cli import main

    save_classes(["a"], tmp_path / "class.txt")
    (tmp_path / "train.json").write_text(json.dumps([_video("v1", num_frames=5, events=[
        {"frame": 9, "label": "a"}, {"frame": 1, "label": "b"}])]))
    assert main(["stats", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("train.json: entry 0 (video 'v1'), event 0: frame 9 outside [0, 5)")
    assert err[1].endswith("train.json: entry 0 (video 'v1'), event 1: unknown class 'b' (classes: a)")
    assert "2 problem(s)" in err[2]


def test_stats_of_a_synth_folder_skips_its_description_file(tiny_dataset, capsys):
    # The README's tour: `pespot synth data/synth --preset tiny` then `pespot stats data/synth`. The folder also
    # holds synth.json (a JSON object describing how it was made), which is not a split.
    from pespot.cli import main

    assert (tiny_dataset / "synth.json").is_file()
    assert main(["stats", str(tiny_dataset), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["splits"]) == ["train", "val", "test"]
