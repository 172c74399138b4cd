"""Fault injection around training and extraction (issue 7, part B): the long cases (``pytest -m slow``).

* kill: ``pespot train`` SIGKILLed again and again at seeded moments (during a step, in the middle of a checkpoint
  write, between a checkpoint and metrics.jsonl) and resumed each time: every resume starts from a complete
  checkpoint and the finished run equals one that was never stopped, bit for bit. Ctrl-C (SIGINT), a second
  Ctrl-C and SIGTERM on the real process stop it with a checkpoint that resumes to the same result.
  ``pespot extract`` SIGKILLed (with its worker processes) at seeded moments and rerun: it finishes and every
  output holds exactly the source's frames.
* disk: a real full file system (a small tmpfs, where mounting is allowed) and a real per-process file-size limit
  while a checkpoint is written: one line naming the file and the cause, the previous checkpoint intact, no
  temporary file.

Helpers (toy model, subprocess wrapper, state comparisons) come from ``test_train_faults.py``.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import pattern_index, write_video
from test_train_faults import (
    Trainer,
    assert_same_metrics,
    assert_same_training_state,
    load_ckpt,
    one_error_line,
    read_metrics,
    run_pespot,
    synth,  # noqa: F401 - the session fixture
    temp_files,
    toy_config,
    train_argv,
)

from pespot.config import load_config
from pespot.train import trainer

pytestmark = pytest.mark.slow

# 3 epochs x 3 steps, a checkpoint every 2 steps as well, one DataLoader worker (killed with the trainer).
LOOP = ["train.epochs=3", "train.clips_per_epoch=6", "train.save_every_steps=2", "data.num_workers=1"]


def saved_last_steps(marks: list[str]) -> set[int]:
    """Steps of the last.pt checkpoints this process wrote completely."""
    out = set()
    for mark in marks:
        parts = mark.split()
        if parts[0] == "saved" and parts[2] == "last.pt":
            out.add(int(parts[3]))
    return out


@pytest.fixture(scope="module")
def loop_reference(synth, tmp_path_factory) -> Path:  # noqa: F811
    run = tmp_path_factory.mktemp("faults-slow") / "straight"
    trainer.train(toy_config(synth, run, *LOOP), progress=False)
    return run


@pytest.mark.fault("kill", cases=8)
def test_repeated_sigkills_resume_to_the_unbroken_run(synth, loop_reference, tmp_path):  # noqa: F811
    rng = random.Random(1729)
    run = tmp_path / "run"
    complete: set[int] = set()  # steps of every last.pt written completely, over all attempts
    kills = []
    for attempt in range(12):
        argv = (["train", "--resume", str(run), "--quiet"] if (run / "checkpoints" / "last.pt").exists()
                else train_argv(synth, run, *LOOP))
        kind = ["step", "tear", "history", "step"][attempt % 4] if attempt < 8 else None
        env = {}
        if kind == "tear":  # the 1st or 2nd checkpoint write of this attempt (there is one unless it is done)
            env = {"FAULT_TEAR_WRITE": str(rng.randint(1, 2)),
                   "FAULT_TEAR_FRACTION": f"{rng.uniform(0.01, 0.99):.3f}"}
        elif kind == "history":  # right after this attempt's first end-of-epoch checkpoint
            env = {"FAULT_PAUSE_HISTORY": "2"}
        job = Trainer(tmp_path / f"attempt{attempt}", argv, **env)
        if kind is None:
            code, _, err = job.finish()
            assert code == 0, err
            complete |= saved_last_steps(job.marks())
            break
        if kind == "step":
            nth = rng.randint(1, 3)
            reached = job.wait_for(lambda m, n=nth: sum(x.startswith("step ") for x in m) >= n, allow_exit=True)
            if reached is not None:
                time.sleep(rng.uniform(0.0, 1.0))  # somewhere in the step, its checkpoint or the next step
        else:
            reached = job.wait_for(lambda m, k=kind: any(x.startswith("torn " if k == "tear" else "history ")
                                                         for x in m), allow_exit=True)
        job.proc.kill()
        code, _, err = job.finish()
        complete |= saved_last_steps(job.marks())
        if reached is None:  # the run finished before this fault point
            assert code == 0, err
            break
        assert code == -signal.SIGKILL
        kills.append((kind, job.marks()[-1]))
        last = run / "checkpoints" / "last.pt"
        if last.exists():  # never a torn file: one of the checkpoints written completely
            assert load_ckpt(last)["step"] in complete
        for tmp in temp_files(run):  # what SIGKILL leaves behind is at most the write it interrupted
            assert tmp.parent == run / "checkpoints" or tmp.parent == run, tmp
    else:
        pytest.fail("the run never finished")
    print("kills (kind, last mark):", kills)  # shown by -s or on failure
    assert len(kills) >= 5, kills
    assert {kind for kind, _ in kills} == {"step", "tear", "history"}, kills
    assert temp_files(run) == []
    assert_same_training_state(load_ckpt(loop_reference / "checkpoints" / "last.pt"),
                               load_ckpt(run / "checkpoints" / "last.pt"))
    assert_same_metrics(read_metrics(loop_reference), read_metrics(run))
    best_a, best_b = (load_ckpt(r / "checkpoints" / "best.pt") for r in (loop_reference, run))
    assert best_a["epoch"] == best_b["epoch"]
    for key in best_a["model"]:
        assert torch.equal(best_a["model"][key], best_b["model"][key]), key


@pytest.mark.fault("kill")
@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly_and_resumes_to_the_unbroken_run(signum, code, synth, loop_reference,  # noqa: F811
                                                               tmp_path):
    rng = random.Random(int(signum))
    nth = rng.randint(2, 8)
    run = tmp_path / "run"
    job = Trainer(tmp_path, [a for a in train_argv(synth, run, *LOOP) if a != "--quiet"])
    job.wait_for(lambda m: sum(x.startswith("step ") for x in m) >= nth)
    job.send(signum)
    returncode, _, err = job.finish()
    assert returncode == code, err
    assert "stopping after this step with a checkpoint" in err
    assert f"continue with: pespot train --resume {run}" in err
    steps_done = sum(x.startswith("stepped ") for x in job.marks())
    assert load_ckpt(run / "checkpoints" / "last.pt")["step"] == steps_done == nth  # the step in flight finished
    assert temp_files(run) == []
    returncode, _, err = run_pespot(tmp_path, ["train", "--resume", str(run), "--quiet"])
    assert returncode == 0, err
    assert_same_training_state(load_ckpt(loop_reference / "checkpoints" / "last.pt"),
                               load_ckpt(run / "checkpoints" / "last.pt"))
    assert_same_metrics(read_metrics(loop_reference), read_metrics(run))


@pytest.mark.fault("kill")
def test_second_ctrl_c_aborts_at_once_keeping_the_last_checkpoint(synth, loop_reference, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    job = Trainer(tmp_path, train_argv(synth, run, *LOOP), FAULT_TEAR_WRITE="3", FAULT_TEAR_FRACTION="0.5")
    job.wait_for(lambda m: any(x.startswith("torn ") for x in m))  # stuck in the middle of a checkpoint write
    job.send(signal.SIGINT)
    time.sleep(0.5)
    job.send(signal.SIGINT)
    returncode, _, err = job.finish()
    assert returncode == 130 and err.strip().splitlines()[-1] == "pespot train: interrupted", err
    assert temp_files(run) == []  # the interrupted write removed its temporary file
    assert load_ckpt(run / "checkpoints" / "last.pt")["step"] in saved_last_steps(job.marks())
    returncode, _, err = run_pespot(tmp_path, ["train", "--resume", str(run), "--quiet"])
    assert returncode == 0, err
    assert_same_training_state(load_ckpt(loop_reference / "checkpoints" / "last.pt"),
                               load_ckpt(run / "checkpoints" / "last.pt"))


# ---------------------------------------------------------------------------------------------------------------
# pespot extract


def outputs_hold_the_source_frames(store: Path, fmt: str, lengths: dict[str, int]) -> None:
    from pespot.data.frames import find_video_frames, open_frames

    for video, n in lengths.items():
        source = open_frames(find_video_frames(store, video))
        assert source.num_frames == n, video
        frames = source.read(0, n)
        assert [pattern_index(f) for f in frames.numpy()] == list(range(n)), video


@pytest.mark.fault("kill", cases=2)
@pytest.mark.parametrize("fmt,workers", [("jpg", 1), ("mp4", 2)])
def test_extract_killed_and_rerun_finishes_with_verified_outputs(fmt, workers, tmp_path):
    rng = random.Random(f"{fmt}-{workers}")
    lengths = {f"clip{i}": rng.randint(200, 300) for i in range(6)}
    videos = tmp_path / "videos"
    for video, n in lengths.items():
        write_video(videos / f"{video}.mp4", n, width=96, height=64)
    labels = tmp_path / "split.json"
    labels.write_text(json.dumps([{"video": v, "num_frames": n, "fps": 25.0, "events": []}
                                  for v, n in lengths.items()]))
    store = tmp_path / "store"
    argv = [sys.executable, "-m", "pespot", "extract", str(videos), "--out", str(store), "--format", fmt,
            "--height", "64", "--workers", str(workers), "--labels", str(labels), "--json"]
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def finished() -> int:
        return sum(1 for p in store.iterdir() if not p.name.startswith(".")) if store.is_dir() else 0

    kills = 0
    for _ in range(2):  # two kills, each after a seeded number of finished videos and a seeded delay
        if finished() == len(lengths):
            break
        target = min(len(lengths) - 2, finished() + rng.randint(1, 2))
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + 120
        while finished() < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the command and its worker processes, as a node loss would
            kills += 1
        proc.wait()
    assert kills >= 1 and finished() < len(lengths)
    done = finished()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["failed"] == 0 and summary["skipped"] == done and summary["extracted"] == len(lengths) - done
    assert not [p for p in store.iterdir() if p.name.startswith(".")]  # no partial output left
    outputs_hold_the_source_frames(store, fmt, lengths)


# ---------------------------------------------------------------------------------------------------------------
# real disk faults


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 110 MiB tmpfs: the first toy checkpoint (~75 MB) fits, a second one next to it does not."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=110m", "tmpfs", str(mount)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.fault("disk")
def test_real_full_disk_keeps_the_previous_checkpoint(synth, small_tmpfs, tmp_path):  # noqa: F811
    run = small_tmpfs / "run"
    # Checkpoints: last.pt after step 1 fits; best.pt at the end of epoch 1 finds the disk full.
    job = Trainer(tmp_path, train_argv(synth, run, "train.save_every_steps=1"))
    returncode, _, err = job.finish()
    assert returncode == 1, err
    line = one_error_line(err)
    assert f"{run / 'checkpoints' / 'best.pt'}: cannot write the checkpoint (No space left on device)" in line
    assert "nothing was written; training stopped" in line and f"--resume {run}" in line
    assert temp_files(run) == [] and not (run / "checkpoints" / "best.pt").exists()
    saved = [m.split() for m in job.marks() if m.startswith("saved ")]
    assert [(s[2], int(s[3])) for s in saved] == [("last.pt", 1)]
    last = load_ckpt(run / "checkpoints" / "last.pt")
    assert (last["epoch"], last["step"]) == (0, 1)
    # Room again (the run moved to a roomy disk): it resumes from that checkpoint and finishes.
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    returncode, _, err = run_pespot(tmp_path, ["train", "--resume", str(moved), "--quiet"])
    assert returncode == 0, err


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.fault("disk")
def test_file_size_limit_on_the_first_checkpoint(synth, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "pespot", *train_argv(synth, run)], env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=_file_size_limit(20 << 20), check=False)
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc.stderr)
    assert f"{run / 'checkpoints'}" in line and "cannot write the checkpoint (File too large)" in line
    assert "nothing was written; training stopped" in line
    assert temp_files(run) == [] and not list((run / "checkpoints").glob("*.pt"))
    assert load_config(run / "config.yaml").model.clip_len == 8  # the small files were written whole
