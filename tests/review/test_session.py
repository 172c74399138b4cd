"""What `pespot review` loads from its sources and what Save writes (issue 21): labels apart from predictions,
atomic saves of exactly the files named at start-up, the version check between pages, SoccerNet Labels-v2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_run, write_video

from pespot.data.labels import load_split
from pespot.data.soccernet import frame_to_ms
from pespot.errors import ConfigError, DataError
from pespot.infer import VideoPrediction, write_scores_npz
from pespot.review.load import load_session
from pespot.review.session import Conflict

CLASSES = ["serve", "hit", "bounce"]


@pytest.fixture
def labelling(tmp_path) -> Path:
    """A folder with class.txt, two pattern videos (a.mp4: 40 frames, b.mkv: 30) and predictions for a."""
    (tmp_path / "class.txt").write_text("".join(c + "\n" for c in CLASSES))
    write_video(tmp_path / "a.mp4", 40, faststart=True, bframes=0)
    write_video(tmp_path / "b.mkv", 30)
    (tmp_path / "pred.json").write_text(json.dumps([{"video": "a", "fps": 25, "events": [
        {"frame": 5, "label": "serve", "score": 0.9}, {"frame": 12, "label": "hit", "score": 0.6},
        {"frame": 20, "label": "bounce", "score": 0.02}]}]))
    return tmp_path


def page_save(session, edits: dict[str, list[tuple[int, str]]], version: int | None = None,
              reviewed: dict | None = None) -> dict:
    """A save as the page sends it: every video's labels (new uids for new ones)."""
    videos = []
    state = session.state()
    for v in state["videos"]:
        labels = [{"uid": f"n-{v['video']}-{i}", "frame": f, "label": c} for i, (f, c) in
                  enumerate(edits.get(v["video"], []))]
        videos.append({"video": v["video"], "labels": labels, "reviewed": (reviewed or {}).get(v["video"], {})})
    return session.save({"version": state["version"] if version is None else version, "videos": videos})


def test_predictions_and_new_videos_load_apart_from_the_labels(labelling):
    session = load_session([str(labelling / "class.txt"), str(labelling / "pred.json"), str(labelling / "a.mp4"),
                            str(labelling / "b.mkv")], min_score=0.05, progress=False)
    state = session.state()
    assert state["classes"] == CLASSES
    assert [(v["video"], v["num_frames"]) for v in state["videos"]] == [("a", 40), ("b", 30)]
    a, b = state["videos"]
    assert a["labels"] == [] and b["labels"] == []
    assert [(p["frame"], p["label"], p["status"]) for p in a["predictions"]] == [(5, "serve", "open"),
                                                                                  (12, "hit", "open")]
    # the files Save will write, named now: beside the class.txt
    assert session.outputs.split == labelling / "labels.json"
    assert session.outputs.csv == labelling / "labels.csv"


def test_save_writes_the_labels_frame_by_frame_and_a_later_session_continues(labelling):
    sources = [str(labelling / "class.txt"), str(labelling / "pred.json"), str(labelling / "a.mp4"),
               str(labelling / "b.mkv")]
    session = load_session(sources, progress=False)
    pred_uid = session.state()["videos"][0]["predictions"][1]["uid"]
    result = page_save(session, {"a": [(5, "serve"), (13, "hit")], "b": [(29, "bounce"), (0, "serve")]},
                       reviewed={"a": {"accepted": [pred_uid]}})
    assert result["version"] == 1
    saved = {v.video: v for v in load_split(labelling / "labels.json", CLASSES)}
    assert [(e.frame, e.label) for e in saved["a"].events] == [(5, "serve"), (13, "hit")]
    assert [(e.frame, e.label) for e in saved["b"].events] == [(0, "serve"), (29, "bounce")]  # sorted by frame
    assert (saved["a"].num_frames, saved["b"].num_frames) == (40, 30)
    rows = list(csv.reader((labelling / "labels.csv").read_text().splitlines()))
    assert rows[0] == ["video", "frame", "time", "label"]
    assert rows[1:] == [["a", "5", "0.200", "serve"], ["a", "13", "0.520", "hit"], ["b", "0", "0.000", "serve"],
                        ["b", "29", "1.160", "bounce"]]
    assert not list(labelling.glob(".*.tmp"))
    again = load_session(sources, progress=False).state()
    assert [(lab["frame"], lab["label"]) for lab in again["videos"][0]["labels"]] == [(5, "serve"), (13, "hit")]
    assert [p["status"] for p in again["videos"][0]["predictions"]] == ["open", "accepted", "open"]


def test_a_save_from_an_older_version_is_refused_and_writes_nothing(labelling):
    session = load_session([str(labelling / "class.txt"), str(labelling / "a.mp4")], progress=False)
    page_save(session, {"a": [(3, "hit")]}, version=0)
    before = (labelling / "labels.json").read_bytes()
    with pytest.raises(Conflict, match="another page"):
        page_save(session, {"a": [(4, "serve")]}, version=0)
    assert (labelling / "labels.json").read_bytes() == before
    assert page_save(session, {"a": [(3, "hit"), (4, "serve")]}, version=1)["version"] == 2


def test_a_label_file_changed_on_disk_is_not_overwritten(labelling):
    session = load_session([str(labelling / "class.txt"), str(labelling / "a.mp4")], progress=False)
    page_save(session, {"a": [(3, "hit")]})
    (labelling / "labels.json").write_text("[]\n")  # another program (or another pespot review) wrote it
    with pytest.raises(Conflict, match="labels.json was changed on disk"):
        page_save(session, {"a": [(4, "serve")]})
    assert (labelling / "labels.json").read_text() == "[]\n"


@pytest.mark.parametrize("labels, match", [
    ([(40, "hit")], r"frame 40 outside \[0, 40\)"), ([(-1, "hit")], "frame -1"), ([(3, "goal")], "unknown class 'goal'"),
])
def test_a_bad_save_is_refused_before_any_file_is_written(labelling, labels, match):
    session = load_session([str(labelling / "class.txt"), str(labelling / "a.mp4")], progress=False)
    with pytest.raises(DataError, match=match):
        page_save(session, {"a": labels})
    assert not (labelling / "labels.json").exists() and not (labelling / "labels.csv").exists()
    assert session.version == 0


def test_other_videos_of_the_output_split_are_kept(labelling, tmp_path):
    out = tmp_path / "data" / "train.json"
    out.parent.mkdir()
    other = {"video": "old", "num_frames": 10, "num_events": 1, "fps": 25.0,
             "events": [{"frame": 2, "label": "hit", "comment": "by hand"}], "width": 64}
    out.write_text(json.dumps([other, {"video": "a", "num_frames": 40, "num_events": 1, "fps": 25.0,
                                       "events": [{"frame": 7, "label": "serve", "comment": "kept"}]}]))
    session = load_session([str(labelling / "class.txt"), str(labelling / "a.mp4")], out=str(out), progress=False)
    assert [(lab["frame"], lab["label"]) for lab in session.state()["videos"][0]["labels"]] == [(7, "serve")]
    uid = session.state()["videos"][0]["labels"][0]["uid"]
    session.save({"version": 0, "videos": [{"video": "a", "labels": [
        {"uid": uid, "frame": 7, "label": "hit"}, {"uid": "n1", "frame": 9, "label": "bounce"}]}]})
    saved = json.loads(out.read_text())
    assert saved[0] == other  # untouched, in its place
    assert [(e["frame"], e["label"], e["comment"]) for e in saved[1]["events"]] == [(7, "hit", "kept"),
                                                                                     (9, "bounce", "")]
    assert (out.parent / "class.txt").read_text() == "serve\nhit\nbounce\n"


def test_a_split_with_frames_is_reviewed_in_place(tiny_dataset, tmp_path):
    split = tmp_path / "val.json"
    split.write_bytes((tiny_dataset / "val.json").read_bytes())
    (tmp_path / "class.txt").write_bytes((tiny_dataset / "class.txt").read_bytes())
    session = load_session([str(split)], frames=str(tiny_dataset / "frames"), progress=False)
    truth = load_split(split)
    assert session.outputs.split == split
    assert [[(lab["frame"], lab["label"]) for lab in v["labels"]] for v in session.state()["videos"]] == \
           [[(e.frame, e.label) for e in v.events] for v in truth]


@pytest.mark.usefixtures("one_thread")  # conftest: a tiny model gains nothing from more threads
def test_a_run_spots_the_videos_first_with_per_frame_scores(labelling, tmp_path):
    run = write_tiny_run(tmp_path / "run", CLASSES, height=48, clip_len=8)
    session = load_session([str(run), str(labelling / "a.mp4")], out=str(tmp_path / "out" / "l.json"),
                           min_score=0.0, device="cpu", progress=False)
    video = session.videos[0]
    assert video.scores.shape == (40, 3) and np.all((video.scores >= 0) & (video.scores <= 1))
    assert video.predictions and all(e.score is not None for e in video.predictions)
    assert len(session.scores_bytes(0)) == 40 * 3


def test_scores_of_infer_are_attached(labelling, tmp_path):
    scores = np.random.default_rng(0).random((40, 4)).astype(np.float32)
    write_scores_npz(VideoPrediction(video="a", fps=25.0, scores=scores), CLASSES, tmp_path / "scores")
    session = load_session([str(labelling / "class.txt"), str(labelling / "a.mp4")],
                           scores=str(tmp_path / "scores"), progress=False)
    assert np.array_equal(session.videos[0].scores, scores[:, 1:])
    assert session.state()["videos"][0]["scores"] is True


def test_soccernet_labels_are_written_back_exactly(tmp_path):
    game = tmp_path / "england_epl" / "2015-2016" / "game one"
    write_video(game / "1_224p.mp4", 50, fps=25, faststart=True, bframes=0)
    write_video(game / "2_224p.mp4", 50, fps=25, faststart=True, bframes=0)
    original = {"UrlLocal": "england_epl/2015-2016/game one/", "gameHomeTeam": "Home", "annotations": [
        {"gameTime": "1 - 00:01", "label": "Goal", "position": "1234", "team": "home", "visibility": "visible"},
        {"gameTime": "2 - 00:01", "label": "Corner", "position": "1000", "team": "away", "visibility": "not shown"}]}
    (game / "Labels-v2.json").write_text(json.dumps(original))
    session = load_session([str(game / "Labels-v2.json")], out=str(tmp_path / "labels.json"), progress=False)
    state = session.state()
    assert [v["video"] for v in state["videos"]] == ["england_epl/2015-2016/game one/half1",
                                                    "england_epl/2015-2016/game one/half2"]
    goal, corner = state["videos"][0]["labels"][0], state["videos"][1]["labels"][0]
    assert (goal["frame"], corner["frame"]) == (30, 25)  # floor(ms * 25 / 1000)
    session.save({"version": 0, "videos": [
        {"video": state["videos"][0]["video"], "labels": [goal, {"uid": "n1", "frame": 40, "label": "Foul"}]},
        {"video": state["videos"][1]["video"], "labels": [dict(corner, frame=26)]}]})
    written = json.loads((game / "Labels-v2.json").read_text())
    assert written["gameHomeTeam"] == "Home" and written["UrlLocal"] == original["UrlLocal"]
    assert written["annotations"] == [
        original["annotations"][0],  # unchanged: its exact position is kept
        {"gameTime": "1 - 00:01", "label": "Foul", "position": str(frame_to_ms(40, 25)), "team": "not applicable",
         "visibility": "visible"},
        {"gameTime": "2 - 00:01", "label": "Corner", "position": str(frame_to_ms(26, 25)), "team": "away",
         "visibility": "not shown"}]


@pytest.mark.parametrize("make, match", [
    (lambda d: [str(d / "class.txt"), str(d / "nowhere.mp4")], "nowhere.mp4: no such file"),
    (lambda d: [str(d / "class.txt"), str(d / "class.txt"), str(d / "a.mp4")], "a second classes"),
    (lambda d: [str(d / "pred.json")], r"video 'a': no video file or frame folder given"),
    (lambda d: [str(d / "a.mp4")], "no classes"),
    (lambda d: [str(d / "class.txt")], "no videos"),
])
def test_bad_sources_are_one_clear_error(labelling, make, match):
    with pytest.raises((DataError, ConfigError), match=match):
        load_session(make(labelling), progress=False)


def test_a_class_txt_beside_the_output_with_other_classes_is_refused(labelling, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "class.txt").write_text("goal\n")
    with pytest.raises(DataError, match="other/class.txt: lists the classes goal"):
        load_session([str(labelling / "class.txt"), str(labelling / "a.mp4")],
                     out=str(tmp_path / "other" / "train.json"), progress=False)


def test_a_full_disk_during_a_save_keeps_the_labels_file_and_the_next_save_goes_through(labelling, monkeypatch):
    import errno

    from pespot.review import session as session_module

    session = load_session([str(labelling / "class.txt"), str(labelling / "a.mp4")], progress=False)
    page_save(session, {"a": [(3, "hit")]})
    before = (labelling / "labels.json").read_bytes()

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with monkeypatch.context() as m:
        m.setattr(session_module, "write_text_atomic", full)  # the CSV, written before the split JSON
        with pytest.raises(OSError, match="No space"):
            page_save(session, {"a": [(4, "serve")]})
    assert (labelling / "labels.json").read_bytes() == before and session.version == 1
    assert page_save(session, {"a": [(4, "serve")]})["version"] == 2  # not taken for another program's change
    assert [(e.frame, e.label) for e in load_split(labelling / "labels.json")[0].events] == [(4, "serve")]
