# ruff: noqa: F811 - the fixtures imported from test_train_faults are parameters of the tests
"""One writer per run folder (issue 19): a training run locks its folder for its whole duration.

A second ``pespot train`` or ``--resume`` on a folder in use is refused with one line naming the holder (host,
PID) and writes nothing; readers (``pespot infer``) are not blocked; a killed holder leaves no stale lock. The
run folder itself is checked first: an empty ``out``, a file, a non-empty folder without a checkpoint are refused.
The holder is a second process (``RunLock`` held by ``python -c``, or a real ``pespot train`` paused at start-up),
synchronised through its pipe or its progress marks, never by sleeping.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_train_faults import (  # noqa: F401 - fixtures
    Trainer,
    finished_run,
    link_copy,
    one_error_line,
    steps,
    synth,
    toy_config,
    train_argv,
)

from pespot.cli import main
from pespot.train import trainer
from pespot.train.lock import LOCK_NAME, RunLock

HOLD = ("import sys\nfrom pespot.train.lock import RunLock\nwith RunLock(sys.argv[1]):\n"
        "    print('locked', flush=True)\n    sys.stdin.read()\n")


@contextlib.contextmanager
def held_elsewhere(folder: Path) -> Iterator[subprocess.Popen]:
    """``folder`` locked by another process until the block ends (it waits on its stdin)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def assert_names_holder(line: str, pid: int) -> None:
    assert "in use by another training run" in line, line
    assert f"host {socket.gethostname()}, PID {pid}" in line, line


@pytest.mark.fault("writers", cases=2)
def test_train_and_resume_on_a_locked_folder_are_refused(synth, finished_run, tmp_path, capsys, steps):
    fresh = tmp_path / "fresh"
    run = link_copy(finished_run, tmp_path / "run")
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*")}
    with held_elsewhere(fresh) as holder_a, held_elsewhere(run) as holder_b:
        assert main(train_argv(synth, fresh)) == 1
        assert_names_holder(one_error_line(capsys.readouterr().err), holder_a.pid)
        assert main(["train", "--resume", str(run), "--quiet", "--set", "train.epochs=2"]) == 1
        assert_names_holder(one_error_line(capsys.readouterr().err), holder_b.pid)
        assert names(fresh) == [LOCK_NAME]
    assert steps == []
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*")} == before


@pytest.mark.fault("writers")
def test_a_reader_works_while_the_run_is_locked(synth, finished_run, tmp_path, capsys):
    run = link_copy(finished_run, tmp_path / "run")
    video = next(p for p in sorted((synth / "frames").iterdir()) if p.is_dir())
    with held_elsewhere(run):
        code = main(["infer", str(run), str(video), "--fps", "25", "--out", str(tmp_path / "pred.json"), "--quiet",
                     "--json"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "pred.json").is_file()


@pytest.mark.fault("writers")
def test_a_killed_holder_leaves_no_stale_lock(synth, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert names(run) == [LOCK_NAME]  # the file stays, its flock went with the process
    summary = trainer.train(trainer_config(synth, run), progress=False)
    assert summary["steps"] == 2 and (run / "checkpoints" / "last.pt").is_file()
    assert LOCK_NAME not in names(run)  # released at the end of the run


def trainer_config(root: Path, out: Path):
    return toy_config(root, out, "train.epochs=1")


@pytest.mark.fault("writers")
def test_a_second_pespot_train_while_one_trains_is_refused(synth, tmp_path, capsys):
    run = tmp_path / "run"
    first = Trainer(tmp_path / "first", train_argv(synth, run), FAULT_PAUSE_HISTORY="1")  # waits at start-up
    try:
        first.wait_for(lambda marks: any(m.startswith("history") for m in marks))
        before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
        assert main(train_argv(synth, run)) == 1
        assert_names_holder(one_error_line(capsys.readouterr().err), first.proc.pid)
        assert main(["train", "--resume", str(run), "--quiet"]) == 1
        assert_names_holder(one_error_line(capsys.readouterr().err), first.proc.pid)
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    finally:
        first.proc.kill()
        first.proc.wait(timeout=60)


@pytest.mark.fault("writers")
def test_only_rank_0_takes_the_lock(tmp_path, monkeypatch):
    """Under torchrun the other ranks train in rank 0's folder: they must not be refused by its lock."""
    run = tmp_path / "run"
    with RunLock(run):
        monkeypatch.setenv("RANK", "1")
        with pytest.raises(Exception) as err:
            trainer.train(trainer_config(tmp_path / "no-data", run), progress=False)
    assert "dataset folder (data.root) not found" in str(err.value)


@pytest.mark.fault("writers", cases=4)
@pytest.mark.parametrize("case", ["empty", "file", "not_empty", "under_file"])
def test_a_run_folder_that_cannot_be_a_new_run_is_refused(case, synth, tmp_path, capsys, steps):
    (tmp_path / "file").write_text("mine\n")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine\n")
    out, expected = {"empty": ("", "config key 'out': empty"),
                     "file": (tmp_path / "file", "expected a folder, found a file"),
                     "not_empty": (tmp_path / "used", "not empty (notes.txt) and holds no checkpoint"),
                     "under_file": (tmp_path / "file" / "run", "is a file, not a folder")}[case]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(train_argv(synth, out)) == 1
    line = one_error_line(capsys.readouterr().err)
    assert expected in line and str(out) in line, line
    assert steps == []
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.fault("writers")
def test_an_existing_empty_folder_is_a_new_run(synth, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert trainer.train(trainer_config(synth, run), progress=False)["steps"] == 2
    assert os.path.isfile(run / "checkpoints" / "last.pt")
