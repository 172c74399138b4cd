"""A newcomer's first hour: each common mistake gets one line that says what to do, with a non-zero exit, and
training's output reads well in a log file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from pespot import cli
from pespot.cli import main


def one_line_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0, argv
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_unknown_config_key_lists_the_closest(capsys):
    err = one_line_error(capsys, ["train", "--config", "synthetic", "--set", "train.epoch=2"])
    assert "unknown config key 'train.epoch'" in err and "did you mean train.epochs" in err
    err = one_line_error(capsys, ["train", "--config", "synthetic", "--set", "epochs=2"])
    assert "did you mean train.epochs?" in err


def test_unknown_preset_lists_the_closest(capsys):
    err = one_line_error(capsys, ["train", "--config", "synthtic"])
    assert "unknown preset 'synthtic'" in err and "did you mean synthetic?" in err


def test_synthetic_preset_without_its_data_says_how_to_make_it(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the preset's data.root, data/synthetic, is not there
    err = one_line_error(capsys, ["train", "--config", "synthetic"])
    assert "dataset folder (data.root) not found" in err
    assert "pespot synth data/synthetic --preset small" in err
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def write_split(path, scored: bool) -> None:
    events = [{"frame": 10, "label": "serve"}, {"frame": 30, "label": "hit"}]
    if scored:
        events = [dict(e, score=0.9) for e in events]
    path.write_text(json.dumps([{"video": "v0", "num_frames": 50, "fps": 25, "events": events}]))


def test_eval_with_truth_and_predictions_swapped_suggests_the_swap(capsys, tmp_path):
    (tmp_path / "class.txt").write_text("serve\nhit\n")
    truth, pred = tmp_path / "test.json", tmp_path / "pred.json"
    write_split(truth, scored=False)
    write_split(pred, scored=True)
    assert main(["eval", str(truth), str(pred), "--json"]) == 0  # the right order works
    capsys.readouterr()
    err = one_line_error(capsys, ["eval", str(pred), str(truth)])
    assert "swapped" in err and f"pespot eval {truth} {pred}" in err


def test_ctrl_c_while_the_commands_load_is_one_line(capsys, monkeypatch):
    def interrupted(only=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert main(["train", "--config", "synthetic"]) == 130
    assert capsys.readouterr().err.strip() == "pespot: interrupted"


def test_ctrl_c_before_the_first_step_stops_at_once():
    from pespot.train.guards import Interrupt

    interrupt = Interrupt()
    try:
        with pytest.raises(KeyboardInterrupt):  # set-up: nothing to save, stop now
            signal.raise_signal(signal.SIGINT)
        interrupt.immediate = False  # the loop has started: the first Ctrl-C asks for a checkpoint
        signal.raise_signal(signal.SIGINT)
        assert interrupt.requested == "SIGINT"
    finally:
        interrupt.restore()


def test_ctrl_c_does_not_kill_dataloader_workers():
    """Ctrl-C reaches the whole process group; a worker that died of it made the trainer fail with a
    RuntimeError traceback. A forked worker ignores SIGINT and lives on until the trainer ends it."""
    from pespot.train.guards import Interrupt

    interrupt = Interrupt()
    try:
        pid = os.fork()
        if pid == 0:  # the "worker": inherits the trainer's handler
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
            finally:
                os._exit(7)
        _, status = os.waitpid(pid, 0)
    finally:
        interrupt.restore()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7, status


# ------------------------------------------------------------------------------------------------------------
# logs


def test_training_logs_plain_lines_when_stderr_is_a_file(capfd, tiny_dataset, tmp_path):
    """stderr captured to a file (not a terminal): plain progress lines, no tqdm carriage returns; plurals right."""
    out = tmp_path / "run"
    code = main(["train", "--config", "paper", "--set", f"data.root={tiny_dataset}", f"out={out}",
                 "model.pretrained=false", "model.clip_len=8", "model.channels_last=false", "data.height=32",
                 "data.crop=null", "data.num_workers=0", "train.batch_size=2", "train.clips_per_epoch=4",
                 "train.epochs=1", "train.val_clips=2", "train.criterion=loss", "train.log_every=1",
                 "train.threads=1", "optim.sam=none", "optim.warmup_epochs=1"])
    captured = capfd.readouterr()
    assert code == 0, captured.err
    assert "\r" not in captured.err
    progress = re.findall(r"^epoch 1/1: step (\d)/2 \(\d+ %\), loss \S+, lr \S+, \S+ s/step$", captured.err,
                          flags=re.MULTILINE)
    assert progress == ["1", "2"], captured.err  # one line every train.log_every (1) steps
    assert "1 epoch x 2 steps of 2 clips x 1 process on" in captured.err
    assert f"run folder: {out} (1 epoch, 2 steps)" in captured.out


def test_quiet_still_names_the_run_folder_and_map_is_a_percentage(capsys):
    from pespot.commands.train import _print_summary

    summary = {"out": "runs/x", "stopped": False, "best_epoch": 1, "best_score": 0.4567, "criterion": "map",
               "epochs_completed": 1, "steps": 2}
    _print_summary(summary, quiet=True)
    assert capsys.readouterr().out.strip() == "run folder: runs/x (1 epoch, 2 steps)"
    _print_summary(summary)
    assert "mean val mAP@1,2,4 45.67 %" in capsys.readouterr().out


def test_epoch_line_prints_map_as_a_percentage():
    from pespot.train.history import epoch_line

    record = {"epoch": 1, "train_total": 0.5, "val_map": {"0": 0.25, "2": 0.5}, "lr": 1e-3, "seconds": 3,
              "best": True}
    assert "val mAP @0=25.00 @2=50.00 %" in epoch_line(record, 1)


def test_troubleshooting_quotes_messages_the_code_prints():
    """Each heading of docs/troubleshooting.md quotes a fragment of a message that src/pespot/ still prints, and the
    README links the page."""
    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "troubleshooting.md").read_text()
    source = "\n".join(p.read_text() for p in (root / "src" / "pespot").rglob("*.py"))
    quoted = re.findall(r"^### `([^`]+)`", doc, flags=re.MULTILINE)
    assert len(quoted) >= 8
    for fragment in quoted:
        assert fragment in source, fragment
    assert "docs/troubleshooting.md" in (root / "README.md").read_text()


# ------------------------------------------------------------------------------------------------------------
# run folders


TOY_TRAIN = ["model.pretrained=false", "model.clip_len=8", "model.channels_last=false", "data.height=32",
             "data.crop=null", "data.num_workers=0", "train.batch_size=2", "train.clips_per_epoch=2",
             "train.epochs=1", "train.val_clips=2", "train.start_val_epoch=0", "train.threads=1", "optim.sam=none",
             "optim.warmup_epochs=1"]


def folder_contents(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes, but the lock file (its holder line changes with each process)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".pespot.lock"}


def test_run_folder_config_plots_and_resume_lines(capfd, tiny_dataset, tmp_path):
    """config.yaml holds resolved values and resumes; plots/ has the learning curves; --resume says where it
    resumed; a finished run resumed says so in one line and changes nothing; a resume that moves data.root reads
    the frames under the new root."""
    import shutil

    import yaml

    data = shutil.copytree(tiny_dataset, tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "--config", "paper", "--quiet", "--set", f"data.root={data}", f"out={run}",
                 *TOY_TRAIN]) == 0
    capfd.readouterr()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["num_classes"] == len((data / "class.txt").read_text().split()) == 6
    assert saved["data"]["frames"] == str(data / "frames")
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["learning_curve_loss.png",
                                                                  "learning_curve_map.png"]
    assert (run / "plots" / "learning_curve_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    before = folder_contents(run)
    assert main(["train", "--resume", str(run)]) == 0
    captured = capfd.readouterr()
    assert captured.out.strip() == (f"{run} is finished (1 epoch, 1 step): nothing to train; train longer with "
                                    f"--resume {run} --set train.epochs=N")
    assert captured.err == ""
    assert folder_contents(run) == before  # nothing retrained, nothing rewritten

    # killed between its last checkpoint and the metrics.jsonl line after it: the finished run's resume completes
    # metrics.jsonl from the checkpoint and changes nothing else
    metrics = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text("")
    assert main(["train", "--resume", str(run)]) == 0
    capfd.readouterr()
    assert (run / "metrics.jsonl").read_text() == metrics
    assert folder_contents(run) == before

    moved = data.rename(tmp_path / "moved")
    assert main(["train", "--resume", str(run), "--set", f"data.root={moved}", "train.epochs=2"]) == 0
    captured = capfd.readouterr()
    assert f"resumed from {run / 'checkpoints' / 'last.pt'} at epoch 1, step 1\n" in captured.err
    assert f"run folder: {run} (2 epochs, 2 steps)" in captured.out
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["frames"] == str(moved / "frames")


def test_a_resume_keeps_a_frame_store_given_explicitly():
    from pespot.commands.train import follow_moved_root
    from pespot.config import Config

    saved = Config()
    saved.data.root, saved.data.frames = "data/a", "stores/a"  # given by the user, not derived from the root
    now = Config()
    now.data.root, now.data.frames = "data/b", "stores/a"
    follow_moved_root(now, saved)
    assert now.data.frames == "stores/a"
    saved.data.frames = now.data.frames = "data/a/frames"  # derived: follows the new root
    follow_moved_root(now, saved)
    assert now.data.frames == ""
    now.data.root, now.data.frames = "data/a", "data/a/frames"  # same root: unchanged
    follow_moved_root(now, saved)
    assert now.data.frames == "data/a/frames"


# ------------------------------------------------------------------------------------------------------------
# infer: what a newcomer gives it


@pytest.fixture(scope="module")
def tour_run(tmp_path_factory, tiny_dataset) -> Path:
    """A randomly initialised tiny spotter with the tiny dataset's classes."""
    from conftest import write_tiny_run

    classes = (tiny_dataset / "class.txt").read_text().split()
    return write_tiny_run(tmp_path_factory.mktemp("tour") / "run", classes, height=32)


def test_infer_finds_the_frames_beside_a_split(capsys, tiny_dataset, tour_run, tmp_path):
    split = tiny_dataset / "test.json"
    given, found = tmp_path / "given.json", tmp_path / "found.json"
    assert main(["infer", str(tour_run), str(split), "--frames", str(tiny_dataset / "frames"), "--out", str(given),
                 "--quiet", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["infer", str(tour_run), str(split), "--out", str(found), "--quiet", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert f"frames from {tiny_dataset / 'frames'} (beside the split" in err
    assert json.loads(found.read_text()) == json.loads(given.read_text())
    assert len(json.loads(found.read_text())) == 2

    alone = tmp_path / "alone" / "test.json"  # no frames/ beside it, no --frames
    alone.parent.mkdir()
    alone.write_text(split.read_text())
    err = one_line_error(capsys, ["infer", str(tour_run), str(alone), "--out", str(tmp_path / "x.json"),
                                  "--device", "cpu"])
    assert "--frames DIR" in err and str(alone.parent / "frames") in err


def test_infer_logs_no_progress_bar_when_stderr_is_a_file(capfd, tiny_dataset, tour_run, tmp_path):
    """The per-frame bar is for a terminal: a log file gets each video's summary line, not carriage returns."""
    code = main(["infer", str(tour_run), str(tiny_dataset / "test.json"), "--out", str(tmp_path / "p.json"),
                 "--device", "cpu"])
    captured = capfd.readouterr()
    assert code == 0, captured.err
    assert "\r" not in captured.err and "frame/s" not in captured.err  # no bar, not even its last state
    summaries = re.findall(r"^(test_\d+): \d+ frames, \d+ events", captured.out, flags=re.MULTILINE)
    assert summaries == ["test_0000", "test_0001"], captured.out


def test_infer_spots_every_video_of_a_folder_and_reports_the_broken_one(capsys, tour_run, tmp_path):
    from conftest import write_video

    videos = tmp_path / "videos"
    write_video(videos / "rally_a.mp4", 12)
    write_video(videos / "rally_b.mkv", 10)
    (videos / "broken.mov").write_text("not a video\n")
    (videos / "notes.txt").write_text("not a video either, and not one to try\n")
    out = tmp_path / "pred.json"
    code = main(["infer", str(tour_run), str(videos), "--out", str(out), "--quiet", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and str(videos / "broken.mov") in lines[0], captured.err
    assert re.search(r"^rally_a: 12 frames, ", captured.out, flags=re.MULTILINE)
    assert re.search(r"^rally_b: 10 frames, ", captured.out, flags=re.MULTILINE)
    assert sorted(v["video"] for v in json.loads(out.read_text())) == ["rally_a", "rally_b"]

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("videos go here\n")
    code = main(["infer", str(tour_run), str(empty), "--out", str(tmp_path / "none.json"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "no frames (expected 000000.jpg" in err and "no video files (.mp4" in err


# ------------------------------------------------------------------------------------------------------------
# reports that say what their numbers mean


def predictions(scores: list[float], labels: list[str]) -> list:
    import numpy as np

    from pespot.data.labels import Event
    from pespot.infer import VideoPrediction

    events = [Event(frame=i, label=label, score=s) for i, (s, label) in enumerate(zip(scores, labels))]
    return [VideoPrediction(video="v", fps=25.0, scores=np.zeros((len(events), 3)), events=events)]


def test_infer_report_counts_per_class_and_flags_low_scores():
    from pespot.commands.infer import events_report, report_lines

    mixed = predictions([0.01] * 15 + [0.5] * 5, ["serve"] * 12 + ["hit"] * 8)
    summary = {"events": 20, **events_report(mixed, ["serve", "hit"], threshold=0.0, top_k=None)}
    assert summary["events_per_class"] == {"serve": 12, "hit": 8}
    lines = report_lines(summary)
    assert lines[0] == "threshold 0 (every local maximum, whatever its score)"
    assert lines[1] == "events per class: serve 12, hit 8; median score 0.010"
    assert lines[2] == ("most events have low scores: every local maximum is kept, and 5 of 20 score 0.5 or more; "
                        "use --threshold or --top-k to keep fewer")
    weak = predictions([0.01] * 15 + [0.03] * 5, ["serve"] * 12 + ["hit"] * 8)  # none confident
    lines = report_lines({"events": 20, **events_report(weak, ["serve", "hit"], threshold=0.0, top_k=None)})
    assert lines[2] == ("most events have low scores: the model is weak or undertrained; use --threshold or "
                        "--top-k to keep fewer")
    # A floor given, or scores that are not low, or few events: no hint.
    assert len(report_lines(dict(summary, threshold=0.2))) == 2
    strong = predictions([0.9] * 20, ["serve"] * 20)
    assert len(report_lines({"events": 20, **events_report(strong, ["serve", "hit"], 0.0, None)})) == 2
    few = predictions([0.01] * 3, ["hit"] * 3)
    lines = report_lines({"events": 3, **events_report(few, ["serve", "hit"], 0.0, 5)})
    assert lines == [("threshold 0 (every local maximum, whatever its score), at most 5 per class and video "
                      "(--top-k)"), "events per class: serve 0, hit 3; median score 0.010"]


def test_infer_prints_the_threshold_and_the_events_per_class(capsys, tour_run, tmp_path):
    import torch
    from conftest import write_video

    video = write_video(tmp_path / "clip.mp4", 20)
    out = tmp_path / "pred.json"
    assert main(["infer", str(tour_run), str(video), "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "threshold 0 (every local maximum, whatever its score)" in printed
    events = json.loads(out.read_text())[0]["events"]
    assert events  # at threshold 0 every local maximum of a random model's scores is an event
    classes = torch.load(tour_run / "checkpoints" / "best.pt", weights_only=False)["classes"]
    counts = ", ".join(f"{c} {sum(e['label'] == c for e in events)}" for c in classes)
    assert f"events per class: {counts}; median score " in printed  # the counts printed are those written
