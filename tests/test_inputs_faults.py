"""Inputs that were accepted and should not be (issue 19): each is refused with one line naming the file, video or
key (or, for duplicated truth events, counted once with one warning line). Marked ``fault("inputs", cases)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import one_line, run_cli, write_tiny_run, write_video

from pespot.data.labels import load_split

CLASSES = ["hit", "bounce"]
HEIGHT = 48
MAX_NMS_WINDOW = 10_000  # pespot.postprocess.MAX_NMS_WINDOW: the largest window nms.json may hold

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def video(name: str, num_frames: int, events: list[tuple[int, str]], scored: bool = False) -> dict:
    return {"video": name, "num_frames": num_frames, "fps": 25.0,
            "events": [{"frame": f, "label": label, **({"score": 0.9} if scored else {})} for f, label in events]}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return write_tiny_run(tmp_path_factory.mktemp("inputs") / "run", CLASSES, height=HEIGHT)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("inputs-video") / "rally.mp4", 12)


# ------------------------------------------------------------------------------------------------------------
# eval: predictions of another version of a video


@pytest.mark.fault("inputs")
def test_eval_refuses_predictions_with_another_frame_count(tmp_path, capsys):
    truth = write(tmp_path / "truth.json", [video("a", 100, [(10, "hit")]), video("b", 50, [(5, "bounce")])])
    pred = write(tmp_path / "pred.json", [video("a", 100, [(10, "hit")], True), video("b", 75, [(5, "bounce")], True)])
    code, stdout, stderr = run_cli(capsys, "eval", truth, pred, "--json")
    assert code == 1 and stdout == ""
    assert one_line(stderr, "eval") == (f"pespot eval: error: {pred}: entry 1: video 'b' has 75 frames, the truth "
                                        f"{truth} says 50 (predictions of another version of the video?)")


# ------------------------------------------------------------------------------------------------------------
# duplicated truth events


DUPLICATED = [video("a", 100, [(10, "hit"), (10, "hit"), (10, "bounce"), (40, "hit")]),
              video("b", 100, [(5, "bounce"), (5, "bounce"), (5, "bounce")]), video("c", 100, [(7, "hit")])]


@pytest.mark.fault("inputs")
def test_stats_reports_duplicated_events_per_video(tmp_path, capsys):
    write(tmp_path / "data" / "class.txt", "hit\nbounce\n")
    write(tmp_path / "data" / "train.json", DUPLICATED)
    code, stdout, stderr = run_cli(capsys, "stats", tmp_path / "data", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["splits"]["train"]["duplicate_events"] == {"a": 1, "b": 2}
    code, stdout, _ = run_cli(capsys, "stats", tmp_path / "data")
    assert "train: 3 duplicated events (same video, frame and class; train and eval count each once): a (1), " \
           "b (2)" in stdout


@pytest.mark.fault("inputs")
def test_eval_counts_a_duplicated_truth_event_once_with_one_warning(tmp_path, capsys):
    truth = write(tmp_path / "truth.json", DUPLICATED)
    # Every distinct truth event predicted exactly: mAP 1 once each is counted once (a duplicate could never be
    # matched and would halve the recall of its class).
    pred = write(tmp_path / "pred.json", [video(v["video"], 100, sorted({(e["frame"], e["label"])
                                                                         for e in v["events"]}), True)
                                          for v in DUPLICATED])
    code, stdout, stderr = run_cli(capsys, "eval", truth, pred, "--json", "--tolerances", "0")
    assert code == 0, stderr
    assert json.loads(stdout)["average_mAP"] == pytest.approx(1.0)
    (line,) = stderr.strip().splitlines()
    assert line == (f"warning: {truth}: 3 duplicated events (same video, frame and class) counted once, in 2 videos "
                    "(first: 'a')")


@pytest.mark.fault("inputs")
def test_train_splits_drop_duplicated_events_with_one_warning(tmp_path, capsys):
    from pespot.config import load_config
    from pespot.train.checks import load_splits

    root = tmp_path / "data"
    write(root / "class.txt", "hit\nbounce\n")
    train = write(root / "train.json", DUPLICATED)
    write(root / "val.json", DUPLICATED[2:])
    (root / "frames").mkdir()
    cfg = load_config("paper", [f"data.root={root}"])
    videos, val = load_splits(cfg, CLASSES)
    assert [[(e.frame, e.label) for e in v.events] for v in videos] == [
        [(10, "hit"), (10, "bounce"), (40, "hit")], [(5, "bounce")], [(7, "hit")]]
    assert len(val) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"warning: {train}: 3 duplicated events")
    assert len(load_split(train)[1].events) == 3  # the file itself is not changed


# ------------------------------------------------------------------------------------------------------------
# nms.json, the run's NMS choice: validated like a config in infer and stream


BAD_CHOICES = {
    "text_window": ({"method": "local_max", "window": "3"}, "key 'window'", "'3'"),
    "negative_window": ({"method": "greedy", "window": -2}, "key 'window'", "-2"),
    "absurd_window": ({"method": "local_max", "window": 10**30}, "key 'window'", str(10**30)),
    "boolean_window": ({"method": "soft", "window": True}, "key 'window'", "True"),
    "unknown_method": ({"method": "fancy", "window": 2}, "key 'method'", "'fancy'"),
}


@pytest.mark.fault("inputs")
@pytest.mark.parametrize("case", sorted(BAD_CHOICES))
def test_a_bad_nms_json_names_the_file_and_key_in_infer_and_stream(case, tiny_run, clip, tmp_path, capsys):
    content, key, value = BAD_CHOICES[case]
    choice = write(tiny_run / "nms.json", content)
    try:
        for command, extra in (("infer", ["--out", tmp_path / "p.json", "--quiet"]),
                               ("stream", ["--out", tmp_path / "s.jsonl", "--quiet"])):
            code, _, stderr = run_cli(capsys, command, tiny_run, clip, *extra)
            assert code == 1
            line = one_line(stderr, command)
            assert line.startswith(f"pespot {command}: error: {choice}: {key}: expected ") and line.endswith(value)
            if key == "key 'window'":
                assert f"from 0 to {MAX_NMS_WINDOW}" in line
    finally:
        choice.unlink()
    assert not (tmp_path / "p.json").exists() and not (tmp_path / "s.jsonl").exists()


@pytest.mark.fault("inputs")
def test_stream_blames_nms_json_for_a_window_above_the_delay_limit(tiny_run, clip, tmp_path, capsys):
    choice = write(tiny_run / "nms.json", {"method": "greedy", "window": 700})
    try:
        code, _, stderr = run_cli(capsys, "stream", tiny_run, clip, "--out", tmp_path / "s.jsonl", "--quiet")
        assert code == 1
        assert one_line(stderr, "stream") == (
            f"pespot stream: error: {choice}: key 'window': 700 frames, not below the stream's --max-delay (80 "
            "frames, 10 clip lengths); give --max-delay above 700, or --nms-window below 80")
        code, _, stderr = run_cli(capsys, "stream", tiny_run, clip, "--out", tmp_path / "s.jsonl", "--quiet",
                                  "--max-delay", "701")
        assert code == 0, stderr
    finally:
        choice.unlink()


# ------------------------------------------------------------------------------------------------------------
# export and the ONNX engine


@pytest.mark.fault("inputs")
def test_export_of_a_missing_run_says_it_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "runs" / "not-there"
    code, _, stderr = run_cli(capsys, "export", missing, "--format", "onnx")
    assert code == 1
    assert one_line(stderr, "export") == f"pespot export: error: {missing}: no such run folder or checkpoint file"


@pytest.mark.fault("inputs")
def test_onnx_model_with_other_classes_than_the_run_is_refused(tiny_run, clip, tmp_path, capsys):
    other = write_tiny_run(tmp_path / "other", ["hit", "serve"], height=HEIGHT)
    code, _, stderr = run_cli(capsys, "export", other, "--format", "onnx", "--no-check")
    assert code == 0, stderr
    model = other / "export" / "spotter.onnx"
    code, _, stderr = run_cli(capsys, "infer", tiny_run, clip, "--engine", "onnx", "--model", model,
                              "--out", tmp_path / "p.json", "--quiet")
    assert code == 1
    assert one_line(stderr, "infer") == (
        f"pespot infer: error: {model}: its classes are not those of {tiny_run / 'checkpoints' / 'best.pt'} "
        "(only in the model: serve; only in the run: bounce); give --model the export of this run, or RUN the run "
        "the model comes from")
    assert not (tmp_path / "p.json").exists()
    # Its own run is accepted.
    code, _, stderr = run_cli(capsys, "infer", other, clip, "--engine", "onnx", "--model", model,
                              "--out", tmp_path / "p.json", "--quiet")
    assert code == 0, stderr
