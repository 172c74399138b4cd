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
    assert "unknown config key 'train.epoch'" in err and "did you mean train.epochs?" in err
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
    def interrupted():
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
