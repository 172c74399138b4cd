"""Fault injection around training and checkpoints (issue 7, part B): the fast cases.

* config: bad ``--set`` keys, types and values, clip lengths a temporal module cannot take, ``--resume`` of a
  run folder from another model or other classes, ``pespot infer`` with classes that do not fit the checkpoint.
  Each is refused with one error line before any work: no training step, no run folder or output file.
* kill: a SIGKILL while a checkpoint is half written, then ``--resume``: the torn file is never read and the
  finished run equals one that was never stopped; a torn ``last.pt`` is refused clearly; SIGTERM stops like Ctrl-C.
* numerics: a non-finite loss (NaN frames) or gradient stops training with the last good checkpoint intact and
  resumable; all-background clips, all-event clips, one class only and a class that never appears train without
  NaN with every loss.
* disk: a full disk while a checkpoint is written leaves the previous one intact, no temporary file, one line
  naming the file and the cause, exit status 1.

Training runs are the paper's model (ASTRM, Bi-GRU, BCE + SoftIC, ASAM) at toy size on the CPU (32x32 frames,
8-frame clips, batch 2, 2 steps per epoch, one thread) on the ``tiny`` synthetic dataset or label variants of it
sharing its frames. The multi-kill loops, ``pespot extract`` kills and real full disks are in
``test_faults_slow.py``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import instrumented_loss

from pespot.cli import main
from pespot.config import load_config, save_config
from pespot.data import loader
from pespot.train import checkpoint, trainer
from pespot.train.guards import NonFiniteLossError

# ---------------------------------------------------------------------------------------------------------------
# helpers shared with test_faults_slow.py

TOY = [
    "model.pretrained=false", "model.clip_len=8", "model.channels_last=false",
    "data.height=32", "data.crop=null", "data.num_workers=0",
    "train.batch_size=2", "train.clips_per_epoch=4", "train.epochs=2", "train.val_clips=2",
    "train.criterion=loss", "train.start_val_epoch=99", "train.log_every=1", "train.threads=1",
    "optim.warmup_epochs=1", "loss.w_bank=0.01",  # any event frame enters the SoftIC bank: it fills at once
]


def toy_sets(root: Path, out: Path, *extra: str) -> list[str]:
    """``--set`` items of the toy paper model on dataset ``root`` into run folder ``out``."""
    return [f"data.root={root}", f"out={out}", *TOY, *extra]


def toy_config(root: Path, out: Path, *extra: str):
    return load_config("paper", toy_sets(root, out, *extra))


def train_argv(root: Path, out: Path, *extra: str) -> list[str]:
    argv = ["train", "--config", "paper", "--quiet"]
    for item in toy_sets(root, out, *extra):
        argv += ["--set", item]
    return argv


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> Path:
    """The ``tiny`` synthetic dataset (10 videos of ~160 frames at 64x64), made once per session."""
    from pespot.data.synthetic import generate

    return generate(tmp_path_factory.getbasetemp() / "faults-synth-tiny", "tiny", seed=0)


def label_variant(synth: Path, dst: Path, kind: str, classes: list[str] | None = None) -> Path:
    """A dataset sharing ``synth``'s frames with other labels: ``background`` (no event at all), ``every`` (an
    event on every frame, classes in turn), ``first`` (every 5th frame is an event of the first class), or
    ``renamed`` (the same events under other class names)."""
    classes = classes or (synth / "class.txt").read_text().split()
    old = (synth / "class.txt").read_text().split()
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "class.txt").write_text("\n".join(classes) + "\n")
    (dst / "frames").symlink_to(synth / "frames", target_is_directory=True)
    for split in ("train", "val", "test"):
        videos = json.loads((synth / f"{split}.json").read_text())
        for v in videos:
            n = v["num_frames"]
            if kind == "background":
                v["events"] = []
            elif kind == "every":
                v["events"] = [{"frame": i, "label": classes[i % len(classes)], "comment": ""} for i in range(n)]
            elif kind == "first":
                v["events"] = [{"frame": i, "label": classes[0], "comment": ""} for i in range(0, n, 5)]
            elif kind == "renamed":
                for e in v["events"]:
                    e["label"] = classes[old.index(e["label"])]
            v["num_events"] = len(v["events"])
        (dst / f"{split}.json").write_text(json.dumps(videos))
    return dst


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder`` (temporary files included)."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_files(run: Path) -> list[Path]:
    return sorted(p for p in run.rglob("*.tmp"))


def assert_same_training_state(a: dict, b: dict) -> None:
    """Same counters, weights, optimiser moments, SoftIC bank and schedule: bit-identical on the CPU."""
    assert (a["epoch"], a["step"], a["step_in_epoch"]) == (b["epoch"], b["step"], b["step_in_epoch"])
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["loss"]:
        assert torch.equal(a["loss"][key], b["loss"][key]), key
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for pid, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][name]), (pid, name)
    assert a["scheduler"] == b["scheduler"]


def assert_same_metrics(a: list[dict], b: list[dict]) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for key in ("step", "train_total", "train_cls", "train_contrastive", "val_total", "lr", "best"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-9), key


def all_finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def one_error_line(stderr: str, command: str = "train") -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"pespot {command}: error: "), lines[0]
    return lines[0]


# A `pespot` entry point for subprocesses that marks its progress in $FAULT_MARKS (one line per event) and can
# tear one checkpoint write: $FAULT_TEAR_WRITE = n writes the first $FAULT_TEAR_FRACTION of the n-th checkpoint
# (counting every torch.save of the run, 1-based) to its temporary file, marks it and waits to be killed.
# $FAULT_PAUSE_HISTORY = n waits to be killed on the n-th write of metrics.jsonl (the first is at start-up).
WRAPPER = r'''
import io, os, sys, time
import torch
from pespot.cli import main
from pespot.train import checkpoint, trainer

marks = open(os.environ["FAULT_MARKS"], "a", buffering=1)
tear_at = int(os.environ.get("FAULT_TEAR_WRITE", "0"))
tear_fraction = float(os.environ.get("FAULT_TEAR_FRACTION", "0.5"))
pause_history = int(os.environ.get("FAULT_PAUSE_HISTORY", "0"))
counts = {"save": 0, "history": 0}
real_save, real_step, real_history = torch.save, trainer.train_step, checkpoint.write_history


def final_name(f):
    name = os.path.basename(getattr(f, "name", str(f)))  # .last.pt.<random>.tmp
    return name[1:].rsplit(".", 2)[0] if name.endswith(".tmp") else name


def save(obj, f, *args, **kwargs):
    counts["save"] += 1
    n = counts["save"]
    if n == tear_at:
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        out = f if hasattr(f, "write") else open(f, "wb")
        out.write(data[: int(len(data) * tear_fraction)])
        out.flush()
        os.fsync(out.fileno())
        marks.write(f"torn {n} {final_name(f)} {obj['step']} {f.name if hasattr(f, 'write') else f}\n")
        time.sleep(600)
    real_save(obj, f, *args, **kwargs)
    marks.write(f"saved {n} {final_name(f)} {obj['step']}\n")


def step(*args, **kwargs):
    marks.write(f"step {args[-1]}\n")
    out = real_step(*args, **kwargs)
    marks.write(f"stepped {args[-1]}\n")
    return out


def history(path, records):
    counts["history"] += 1
    if counts["history"] == pause_history:
        marks.write(f"history {len(records)}\n")
        time.sleep(600)
    real_history(path, records)


torch.save = save
trainer.train_step = step
checkpoint.write_history = history
sys.exit(main(sys.argv[1:]))
'''


class Trainer:
    """``pespot train`` in a subprocess through ``WRAPPER``; ``marks()`` are the lines it wrote so far."""

    def __init__(self, tmp: Path, argv: list[str], **fault_env: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        script = tmp / "fault_wrapper.py"
        script.write_text(WRAPPER)
        self.marks_path = tmp / f"marks-{time.monotonic_ns()}.txt"
        self.marks_path.write_text("")
        env = dict(os.environ, OMP_NUM_THREADS="1", FAULT_MARKS=str(self.marks_path), **fault_env)
        self.proc = subprocess.Popen([sys.executable, str(script), *argv], env=env, cwd=tmp,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def marks(self) -> list[str]:
        return self.marks_path.read_text().splitlines()

    def wait_for(self, predicate, timeout: float = 240.0, allow_exit: bool = False) -> list[str] | None:
        """Poll the marks until ``predicate(marks)``; if the process ends first: None with ``allow_exit``, else
        fail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.marks()
            if predicate(lines):
                return lines
            if self.proc.poll() is not None:
                if allow_exit:
                    return None
                _, err = self.proc.communicate()
                pytest.fail(f"pespot train ended ({self.proc.returncode}) before the fault point:\n{err[-3000:]}")
            time.sleep(0.02)
        self.proc.kill()
        pytest.fail("timed out waiting for the fault point")

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 300.0) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


def run_pespot(tmp: Path, argv: list[str], timeout: float = 300.0) -> tuple[int, str, str]:
    """Run the plain ``pespot`` CLI in a subprocess (one thread)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "pespot", *argv], env=env, cwd=tmp, capture_output=True, check=False,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def steps(monkeypatch) -> list[str]:
    """Every training step attempted in this process (the ``where`` of each ``train_step`` call)."""
    calls: list[str] = []
    real = trainer.train_step

    def spy(*args, **kwargs):
        calls.append(args[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", spy)
    return calls


@pytest.fixture(scope="module")
def finished_run(synth, tmp_path_factory) -> Path:
    """A finished toy run (1 epoch, 2 steps) for the resume and inference refusals; the tests never change it."""
    run = tmp_path_factory.mktemp("faults-train") / "run"
    trainer.train(toy_config(synth, run, "train.epochs=1"), progress=False)
    return run


def link_copy(run: Path, dst: Path) -> Path:
    """A copy of a run folder whose checkpoints are hard links (cheap; atomic writes never modify them)."""
    shutil.copytree(run, dst, copy_function=os.link)
    return dst


# ---------------------------------------------------------------------------------------------------------------
# config: refused with one line before any work


BAD_SETS = {
    # unknown keys
    "unknown-leaf": (["train.epoch=3"], ["train.epoch", "unknown"]),
    "unknown-section": (["nope.x=1"], ["nope", "unknown"]),
    "unknown-nested": (["model.astrm.colour=red"], ["model.astrm.colour", "unknown"]),
    "key-below-a-value": (["train.epochs.max=3"], ["train.epochs", "unknown"]),
    "no-equals": (["train.epochs"], ["train.epochs", "key=value"]),
    # wrong types
    "int-as-word": (["train.epochs=three"], ["train.epochs", "integer"]),
    "bool-as-int": (["model.astrm.use_fs=2"], ["model.astrm.use_fs", "true or false"]),
    "float-as-word": (["optim.lr=fast"], ["optim.lr", "number"]),
    "pair-of-one": (["optim.betas=[0.9]"], ["optim.betas", "2 values"]),
    "list-as-int": (["eval.tolerances=5"], ["eval.tolerances", "list"]),
    "choice": (["model.temporal_head=lstm"], ["model.temporal_head", "bigru"]),
    # values torch would reject deep inside (or silently misread) once training runs
    "negative-lr": (["optim.lr=-1"], ["optim.lr", ">= 0"]),
    "beta-above-one": (["optim.betas=[0.9,2]"], ["optim.betas[1]", "beta < 1"]),
    "dropout-above-one": (["model.dropout=1.5"], ["model.dropout", "dropout < 1"]),
    "zero-projection": (["model.projection_dim=0"], ["model.projection_dim", "positive"]),
    "zero-width": (["model.hidden_dim=0"], ["model.hidden_dim", "positive"]),
    "negative-workers": (["data.num_workers=-1"], ["data.num_workers", ">= 0"]),
    "zero-gt-width": (["model.astrm.alpha=0"], ["model.astrm.alpha", "positive"]),
    "even-fs-kernel": (["model.astrm.fs_kernel=4"], ["model.astrm.fs_kernel", "odd"]),
    "zero-threads": (["train.threads=0"], ["train.threads", "positive"]),
    "zero-height": (["data.height=0"], ["data.height", "positive"]),
    "negative-focal-gamma": (["loss.classification=focal", "loss.focal_gamma=-1"], ["loss.focal_gamma", ">= 0"]),
}

# Clip lengths and widths that a module of the model cannot take (src/pespot/model/): ASTRM's adaptive temporal
# kernel needs at least K frames, BatchNorm in training needs 2 frames per step, the attention heads split the
# width 8 ways; a crop larger than the frames.
BAD_SHAPES = {
    "astrm-shorter-than-kernel": (["model.clip_len=2"], ["model.clip_len", "ASTRM", "3 frames"]),
    "astrm-kernel-5": (["model.clip_len=4", "model.astrm.kernel_size=5"], ["model.clip_len", "5 frames"]),
    "even-kernel": (["model.astrm.kernel_size=4"], ["model.astrm.kernel_size", "odd"]),
    "zero-clip": (["model.clip_len=0"], ["model.clip_len", "positive"]),
    "one-frame-per-step": (["model.clip_len=1", "model.temporal_module=tsm", "train.batch_size=1"],
                           ["train.batch_size", "model.clip_len", "BatchNorm"]),
    "transformer-width": (["model.temporal_head=transformer_l1h8", "model.hidden_dim=100"],
                          ["model.hidden_dim", "multiple of 8"]),
    "deformable-width": (["model.temporal_head=deformable", "model.hidden_dim=12"],
                         ["model.hidden_dim", "multiple of 8"]),
    "crop-larger-than-frames": (["data.crop=64"], ["data.crop", "32x32", "smaller than the crop 64"]),
}


@pytest.mark.fault("config")
@pytest.mark.parametrize("case", list(BAD_SETS) + list(BAD_SHAPES))
def test_bad_config_is_refused_before_any_work(case, synth, tmp_path, capsys, steps):
    items, needles = {**BAD_SETS, **BAD_SHAPES}[case]
    run = tmp_path / "run"
    assert main(train_argv(synth, run, *items)) == 1
    line = one_error_line(capsys.readouterr().err)
    for needle in needles:
        assert needle in line, (needle, line)
    assert steps == [] and not run.exists()


@pytest.mark.fault("config")
def test_val_split_without_events_cannot_select_by_map(synth, tmp_path, capsys, steps):
    root = label_variant(synth, tmp_path / "background", "background")
    run = tmp_path / "run"
    assert main(train_argv(root, run, "train.criterion=map", "train.start_val_epoch=0")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert str(root / "val.json") in line and "train.criterion=loss" in line
    assert steps == [] and not run.exists()


def resume_refusals(synth: Path, run: Path, tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (pespot arguments, needles of the error line) for --resume of a run with another model."""
    other_classes = label_variant(synth, tmp / "renamed", "renamed",
                                  ["ace", "smash", "lob", "let", "in", "out"])
    swapped = link_copy(run, tmp / "swapped")  # another model's config.yaml next to this run's checkpoints
    save_config(load_config("e2e-spot", toy_sets(synth, swapped)), swapped / "config.yaml")
    e2e_argv = ["train", "--resume", str(run), "--config", "e2e-spot", "--quiet"]
    for item in toy_sets(synth, run):
        e2e_argv += ["--set", item]
    return {
        "set-module": (["train", "--resume", str(run), "--set", "model.temporal_module=gsm"],
                       ["--resume", "different model", "model.temporal_module", "'astrm'", "'gsm'"]),
        "set-clip": (["train", "--resume", str(run), "--set", "model.clip_len=16"],
                     ["different model", "model.clip_len"]),
        "set-bank": (["train", "--resume", str(run), "--set", "loss.bank_size=8"],
                     ["different model", "loss.bank_size"]),
        "other-preset": (e2e_argv, ["different model", "model.temporal_module"]),
        "config-of-another-model": (["train", "--resume", str(swapped)], ["different model", str(swapped)]),
        "other-classes": (["train", "--resume", str(run), "--set", f"data.root={other_classes}"],
                          [str(other_classes / "class.txt"), "classes differ"]),
    }


@pytest.mark.fault("config", cases=6)
def test_resume_of_another_model_is_refused(synth, finished_run, tmp_path, capsys, steps):
    cases = resume_refusals(synth, finished_run, tmp_path)
    before = snapshot(finished_run)
    swapped_before = snapshot(tmp_path / "swapped")
    for name, (argv, needles) in cases.items():
        assert main(argv) == 1, name
        line = one_error_line(capsys.readouterr().err)
        for needle in needles:
            assert needle in line, (name, needle, line)
    assert steps == []
    assert snapshot(finished_run) == before and snapshot(tmp_path / "swapped") == swapped_before


@pytest.mark.fault("config")
def test_resume_with_new_optimiser_settings_uses_them(synth, finished_run, tmp_path):
    """--set optim.* on --resume was silently overridden by the betas and weight decay saved with AdamW's state."""
    run = link_copy(finished_run, tmp_path / "run")
    assert main(["train", "--resume", str(run), "--quiet", "--set", "train.epochs=2",
                 "--set", "optim.weight_decay=0.25", "--set", "optim.betas=[0.8,0.99]"]) == 0
    last = load_ckpt(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 2
    for group in last["optimizer"]["param_groups"]:
        assert group["weight_decay"] == 0.25 and tuple(group["betas"]) == (0.8, 0.99)
    assert load_ckpt(finished_run / "checkpoints" / "last.pt")["epoch"] == 1  # the shared original untouched


@pytest.mark.fault("config")
def test_infer_with_a_class_file_of_another_size(synth, finished_run, tmp_path, capsys):
    classes = tmp_path / "class.txt"
    classes.write_text("goal\ncard\nsubstitution\n")
    out = tmp_path / "pred.json"
    code = main(["infer", str(finished_run), str(synth / "test.json"), "--frames", str(synth / "frames"),
                 "--classes", str(classes), "--out", str(out), "--quiet", "--device", "cpu"])
    assert code == 1
    line = one_error_line(capsys.readouterr().err, "infer")
    assert "best.pt" in line and "6 classes" in line and f"{classes} gives 3" in line
    assert not out.exists() and list(tmp_path.iterdir()) == [classes]


@pytest.mark.fault("config")
def test_infer_on_a_split_of_another_dataset(synth, finished_run, tmp_path, capsys):
    other = label_variant(synth, tmp_path / "other", "renamed", ["ace", "smash", "lob", "let", "in", "out"])
    out = tmp_path / "pred.json"
    code = main(["infer", str(finished_run), str(other / "test.json"), "--frames", str(other / "frames"),
                 "--out", str(out), "--quiet", "--device", "cpu"])
    assert code == 1
    line = one_error_line(capsys.readouterr().err, "infer")
    assert str(other / "test.json") in line and "does not know" in line and "serve" in line
    assert not out.exists()


@pytest.mark.fault("config")
def test_infer_with_a_checkpoint_whose_classes_do_not_fit_its_weights(synth, finished_run, tmp_path, capsys):
    ckpt = load_ckpt(finished_run / "checkpoints" / "last.pt")
    ckpt["classes"] = ckpt["classes"] + ["extra"]  # 7 names, weights for 6 classes
    del ckpt[checkpoint.DIGEST_KEY]  # resealed by save_checkpoint: consistent, just wrong
    bad = tmp_path / "seven.pt"
    checkpoint.save_checkpoint(ckpt, bad)
    out = tmp_path / "pred.json"
    code = main(["infer", str(bad), str(synth / "test.json"), "--frames", str(synth / "frames"),
                 "--out", str(out), "--quiet", "--device", "cpu"])
    assert code == 1
    line = one_error_line(capsys.readouterr().err, "infer")
    assert str(bad) in line and "weights do not fit" in line and "classifier.weight" in line
    assert not out.exists()


@pytest.mark.fault("video-input")
def test_a_data_error_in_a_loader_worker_is_one_line(synth, tmp_path, capsys, monkeypatch):
    """A frame that fails to decode in a DataLoader worker: torch re-raises the error with the worker's whole
    traceback as its message; the trainer gives back the one line the data code wrote."""
    from pespot.errors import DataError

    real = loader.EpochClips.__getitem__

    def getitem(self, key):
        if tuple(key) == (0, 2):  # the second batch of epoch 1, made in the (forked) worker process
            raise DataError("video 'train_0003': frame 57 cannot be decoded (corrupt JPEG)")
        return real(self, key)

    monkeypatch.setattr(loader.EpochClips, "__getitem__", getitem)
    assert main(train_argv(synth, tmp_path / "run", "data.num_workers=1")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line == "pespot train: error: video 'train_0003': frame 57 cannot be decoded (corrupt JPEG)"


# ---------------------------------------------------------------------------------------------------------------
# kills


@pytest.mark.slow  # an unbroken run and a run killed and resumed: ~16 s
@pytest.mark.fault("kill")
def test_sigkill_during_a_checkpoint_write_then_resume_equals_an_unbroken_run(synth, tmp_path):
    # Checkpoint writes of this run (save_every_steps=1, 2 epochs x 2 steps): 1 last.pt after step 1; 2 best.pt,
    # 3 last.pt at the end of epoch 1; 4 last.pt after step 3; 5 (best.pt), 6 last.pt at the end.
    rng = random.Random(20240607)
    tear_at, fraction = rng.randint(2, 4), rng.uniform(0.05, 0.95)
    straight = tmp_path / "straight"
    trainer.train(toy_config(synth, straight, "train.save_every_steps=1"), progress=False)

    run = tmp_path / "run"
    argv = train_argv(synth, run, "train.save_every_steps=1")
    job = Trainer(tmp_path, argv, FAULT_TEAR_WRITE=str(tear_at), FAULT_TEAR_FRACTION=f"{fraction:.3f}")
    marks = job.wait_for(lambda lines: any(m.startswith("torn ") for m in lines))
    _, _, name, torn_step, torn_path = next(m for m in marks if m.startswith("torn ")).split()
    job.proc.kill()  # SIGKILL: no handler, no cleanup
    assert job.finish()[0] == -signal.SIGKILL
    assert Path(torn_path).is_file() and temp_files(run) == [Path(torn_path)]  # the torn write is left behind
    saved = [m.split() for m in marks if m.startswith("saved ") and m.split()[2] == "last.pt"]
    last = load_ckpt(run / "checkpoints" / "last.pt")  # the last complete checkpoint, never the torn one
    assert last["step"] == int(saved[-1][3]) and (name, int(torn_step)) != ("last.pt", last["step"])

    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert temp_files(run) == []  # the stale temporary file was removed
    assert_same_training_state(load_ckpt(straight / "checkpoints" / "last.pt"),
                               load_ckpt(run / "checkpoints" / "last.pt"))
    assert_same_metrics(read_metrics(straight), read_metrics(run))
    assert load_ckpt(run / "checkpoints" / "best.pt")["epoch"] == load_ckpt(straight / "checkpoints" / "best.pt")[
        "epoch"]


@pytest.mark.fault("kill", cases=2)
def test_resume_from_a_torn_or_empty_last_checkpoint_is_refused(finished_run, tmp_path, capsys, steps):
    # What a file system without atomic rename (or a copy cut short) could leave: refused, never half-loaded.
    for name, size in (("torn", 1 << 20), ("empty", 0)):
        run = link_copy(finished_run, tmp_path / name)
        last = run / "checkpoints" / "last.pt"
        data = last.read_bytes()[:size]
        last.unlink()
        last.write_bytes(data)
        assert main(["train", "--resume", str(run)]) == 1
        line = one_error_line(capsys.readouterr().err)
        assert str(last) in line and "not a readable checkpoint" in line
    assert steps == []


@pytest.mark.fault("kill")
def test_sigterm_stops_after_the_step_with_a_checkpoint_that_resumes(synth, tmp_path):
    """What a scheduler sends a pre-empted job: handled like Ctrl-C (the trainer's handler, in this process)."""

    def term_during_step_2(call, logits, targets, proj, fraction, total):  # each ASAM step evaluates it twice
        if call == 3:
            signal.raise_signal(signal.SIGTERM)
        return total

    handler = signal.getsignal(signal.SIGTERM)
    run = tmp_path / "run"
    cfg = toy_config(synth, run)
    summary = trainer.train(cfg, progress=False, loss_fn=instrumented_loss(cfg, 6, term_during_step_2))
    assert summary["stopped"] and summary["stop_signal"] == "SIGTERM" and summary["steps"] == 2
    assert signal.getsignal(signal.SIGTERM) is handler
    last = load_ckpt(run / "checkpoints" / "last.pt")
    assert (last["epoch"], last["step"]) == (1, 2)
    final = trainer.train(toy_config(synth, run), resume=run, progress=False)
    assert final["steps"] == 4 and not final["stopped"]


# ---------------------------------------------------------------------------------------------------------------
# numerics


def nan_frames_at(call: int, monkeypatch) -> None:
    """The ``call``-th training batch arrives with NaN frames (as a corrupt decoder or a bad normalisation would)."""
    real, calls = loader.to_device, []

    def poisoned(batch, device):
        frames, targets = real(batch, device)
        if torch.is_grad_enabled():  # a training batch (validation runs under no_grad)
            calls.append(1)
            if len(calls) == call:
                frames = frames * float("nan")
        return frames, targets

    monkeypatch.setattr(loader, "to_device", poisoned)


@pytest.mark.fault("numerics")
def test_nan_frames_stop_training_and_the_last_checkpoint_resumes(synth, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        nan_frames_at(3, patch)  # training batch 3 = the first step of epoch 2
        assert main(train_argv(synth, run, "train.save_every_steps=1")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "non-finite training loss (nan) at epoch 2, step 3" in line
    assert f"last good checkpoint {run / 'checkpoints' / 'last.pt'} is kept (epoch 1)" in line
    last = load_ckpt(run / "checkpoints" / "last.pt")
    assert (last["epoch"], last["step"]) == (1, 2) and all_finite(last["model"])
    assert [r["epoch"] for r in read_metrics(run)] == [1] and temp_files(run) == []
    from pespot.infer import load_predictor

    assert load_predictor(run, device="cpu").clip_len == 8  # loadable by inference
    final = trainer.train(toy_config(synth, run, "train.save_every_steps=1"), resume=run, progress=False)
    assert final["steps"] == 4 and all_finite(load_ckpt(run / "checkpoints" / "last.pt")["model"])


def nan_gradient_from(step_fraction: float):
    """A loss hook whose value stays finite but whose gradient is NaN from ``step_fraction`` on (0 * d sqrt(0))."""

    def hook(call, logits, targets, proj, fraction, total):
        if fraction >= step_fraction:
            total = total + 0.0 * torch.sqrt(logits - logits.detach()).sum()
        return total

    return hook


@pytest.mark.fault("numerics")
@pytest.mark.parametrize("sam", ["none", "asam"])
def test_nan_gradient_with_a_finite_loss_never_reaches_a_checkpoint(sam, synth, tmp_path):
    # Without the check, AdamW turned every weight NaN and the next checkpoint saved them.
    run = tmp_path / "run"
    cfg = toy_config(synth, run, f"optim.sam={sam}", "train.save_every_steps=1")
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradient.*epoch 2, step 3.*is kept \(epoch 1\)"):
        trainer.train(cfg, progress=False, loss_fn=instrumented_loss(cfg, 6, nan_gradient_from(0.5)))
    last = load_ckpt(run / "checkpoints" / "last.pt")
    assert (last["epoch"], last["step"]) == (1, 2) and all_finite(last["model"])
    assert all(torch.isfinite(v).all() for s in last["optimizer"]["state"].values() for v in s.values())


# The classification losses alone with a plain AdamW step (half the cost), and the paper's full loss with ASAM.
LOSSES = {
    "bce": ["loss.classification=bce", "loss.contrastive=none", "optim.sam=none"],
    "ce": ["loss.classification=ce", "loss.contrastive=none", "optim.sam=none"],
    "focal": ["loss.classification=focal", "loss.contrastive=none", "optim.sam=none"],
    "bce+softic+asam": ["loss.classification=bce", "loss.contrastive=softic"],
}


@pytest.mark.fault("numerics")
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("labels", ["background", "every"])
def test_degenerate_labels_train_without_nan(labels, loss, synth, tmp_path):
    root = label_variant(synth, tmp_path / labels, labels)
    run = tmp_path / "run"
    summary = trainer.train(toy_config(root, run, "train.epochs=1", *LOSSES[loss]), progress=False)
    assert summary["steps"] == 2 and not summary["stopped"]
    (record,) = read_metrics(run)
    for key in ("train_total", "train_cls", "val_total", "val_cls"):
        assert torch.isfinite(torch.tensor(record[key])), key
    last = load_ckpt(run / "checkpoints" / "last.pt")
    assert all_finite(last["model"]) and all_finite(last["loss"])
    if loss == "bce+softic+asam":
        # Every frame is an event: the bank holds entries of every class; without events it stays empty.
        counts = last["loss"]["bank.count"]
        assert (counts[1:] > 0).all() if labels == "every" else counts.sum() == 0
        assert torch.isfinite(torch.tensor(record["train_contrastive"]))


@pytest.mark.fault("numerics")
@pytest.mark.parametrize("negatives", ["events-only", "background-negatives"])
def test_softic_with_a_single_class(negatives, synth, tmp_path):
    root = label_variant(synth, tmp_path / "one", "first", ["hit"])
    run = tmp_path / "run"
    extra = ["loss.bg_negatives=true"] if negatives == "background-negatives" else []
    summary = trainer.train(toy_config(root, run, "train.epochs=1", *extra), progress=False)
    assert summary["steps"] == 2
    last = load_ckpt(run / "checkpoints" / "last.pt")
    assert all_finite(last["model"]) and all_finite(last["loss"])
    assert last["loss"]["bank.count"][1] > 0
    records = read_metrics(run)
    assert all(torch.isfinite(torch.tensor(r["train_contrastive"])) for r in records)
    if negatives == "events-only":  # one class: no negatives, so no pair and a zero contrastive term
        assert all(r["train_contrastive"] == 0.0 for r in records)
    else:  # background entries are negatives: pairs exist from step 2 on
        assert last["loss"]["bank.count"][0] > 0 and records[-1]["train_contrastive"] != 0.0


@pytest.mark.fault("numerics")
def test_softic_with_a_class_that_never_appears(synth, tmp_path):
    root = label_variant(synth, tmp_path / "two", "first", ["hit", "never"])
    run = tmp_path / "run"
    trainer.train(toy_config(root, run, "loss.bg_negatives=true", "train.epochs=1"), progress=False)
    last = load_ckpt(run / "checkpoints" / "last.pt")
    counts = last["loss"]["bank.count"]
    assert counts[1] > 0 and counts[2] == 0
    assert all_finite(last["model"]) and all_finite(last["loss"])
    assert torch.isfinite(torch.tensor(read_metrics(run)[0]["train_contrastive"]))


@pytest.mark.fault("numerics")
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_loss_on_confident_frames_has_a_finite_gradient(gamma):
    from pespot.train.losses import focal_loss

    # Saturated sigmoids (p_t == 1 exactly in fp32): (1 - p_t)^gamma had an infinite slope for gamma < 1.
    logits = torch.tensor([[30.0, -30.0, -60.0], [5.0, -40.0, 20.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    loss = focal_loss(logits, targets, gamma=gamma)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert logits.grad[1, 0] < 0  # the one frame that is not confident still learns


@pytest.mark.fault("numerics", cases=2)
@pytest.mark.parametrize("contrastive", ["softic", "ic"])
@pytest.mark.parametrize("bg_negatives", [False, True])
def test_contrastive_bank_with_one_class_and_a_class_never_seen(contrastive, bg_negatives):
    """The memory bank and its loss with K = 1 and with K = 2 where class 2 never occurs, identical projections
    included (all similarities equal): finite losses and gradients, no entry for the absent class."""
    from pespot.config import LossConfig
    from pespot.train.losses import build_loss

    gen = torch.Generator().manual_seed(3)
    for num_classes in (1, 2):
        cfg = LossConfig(contrastive=contrastive, bg_negatives=bg_negatives, w_bank=0.01, bank_size=8)
        loss_fn = build_loss(cfg, num_classes, projection_dim=4)
        for step in range(4):
            targets = torch.zeros(16, num_classes + 1)
            event = torch.rand(16, generator=gen) < 0.4
            targets[event, 1] = 1.0
            targets[~event, 0] = 1.0
            proj = torch.nn.functional.normalize(torch.randn(16, 4, generator=gen), dim=1)
            if step == 3:
                proj = proj[:1].expand(16, 4).clone()  # every frame the same feature
            proj.requires_grad_(True)
            logits = torch.randn(16, num_classes + 1, generator=gen, requires_grad=True)
            total, parts = loss_fn(logits, targets, proj)
            total.backward()
            assert torch.isfinite(total) and torch.isfinite(parts["contrastive"]), (num_classes, step)
            assert torch.isfinite(proj.grad).all() and torch.isfinite(logits.grad).all()
            loss_fn.update_bank(proj.detach(), targets)
        counts = loss_fn.bank.count
        assert counts[1] > 0 and (num_classes == 1 or counts[2] == 0)
        assert (counts[0] > 0) == bg_negatives  # background entries only as negatives, only when asked


# ---------------------------------------------------------------------------------------------------------------
# disk faults during checkpointing


def full_disk_on_write(n: int, monkeypatch, how: str) -> dict:
    """The ``n``-th checkpoint write (1-based) finds the disk full. ``how``: ``save`` (the writer's file reports
    ENOSPC after some bytes: torch turns it into a RuntimeError with the OSError as context, as on a real full
    disk), ``oserror`` (torch.save raises the OSError itself), ``replace`` (the rename fails).
    Returns what the test needs: the sha256 of last.pt just before the failed write."""
    seen: dict = {"writes": 0}
    real_save, real_replace = torch.save, os.replace

    class FullDisk(io.RawIOBase):
        def __init__(self, f, room: int) -> None:
            self.f, self.room = f, room

        def writable(self) -> bool:
            return True

        def write(self, data) -> int:
            if len(data) > self.room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.room -= len(data)
            return self.f.write(data)

    def save(obj, f, *args, **kwargs):
        seen["writes"] += 1
        if seen["writes"] == n:
            last = Path(f.name).parent / "last.pt"
            seen["last_sha"] = sha256(last) if last.exists() else None
            if how == "save":
                return real_save(obj, FullDisk(f, 1 << 20), *args, **kwargs)
            if how == "oserror":
                f.write(b"PK\x03\x04 partial")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            seen["fail_replace"] = True
        return real_save(obj, f, *args, **kwargs)

    def replace(src, dst):
        if seen.pop("fail_replace", False):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(os, "replace", replace)
    return seen


@pytest.mark.fault("disk")
@pytest.mark.parametrize("how", ["save", "oserror", "replace"])
def test_full_disk_while_writing_a_checkpoint(how, synth, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    # Writes: 1 last.pt (step 1), 2 best.pt and 3 last.pt (end of epoch 1). The 3rd finds the disk full.
    with monkeypatch.context() as patch:
        seen = full_disk_on_write(3, patch, how)
        assert main(train_argv(synth, run, "train.save_every_steps=1")) == 1
    line = one_error_line(capsys.readouterr().err)
    last = run / "checkpoints" / "last.pt"
    assert f"{last}: cannot write the checkpoint (No space left on device)" in line
    assert "the previous last.pt is unchanged; training stopped" in line and f"--resume {run}" in line
    assert sha256(last) == seen["last_sha"] and temp_files(run) == []
    ckpt = load_ckpt(last)
    assert (ckpt["epoch"], ckpt["step"], ckpt["step_in_epoch"]) == (0, 1, 1) and all_finite(ckpt["model"])
    if how == "save":  # the run goes on from there once there is room again
        summary = trainer.train(toy_config(synth, run, "train.save_every_steps=1"), resume=run, progress=False)
        assert summary["steps"] == 4 and summary["epochs_completed"] == 2


@pytest.mark.fault("disk")
def test_full_disk_on_the_first_checkpoint(synth, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        full_disk_on_write(1, patch, "save")
        assert main(train_argv(synth, run, "train.save_every_steps=1")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"{run / 'checkpoints' / 'last.pt'}: cannot write" in line and "nothing was written" in line
    assert "--resume" not in line  # nothing to resume from
    assert not (run / "checkpoints" / "last.pt").exists() and temp_files(run) == []


@pytest.mark.fault("disk")
def test_full_disk_while_writing_metrics(synth, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real = checkpoint.write_text_atomic

    def write(path, text):
        if Path(path).name == "metrics.jsonl" and text:  # the first epoch's record
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, text)

    monkeypatch.setattr(checkpoint, "write_text_atomic", write)
    assert main(train_argv(synth, run)) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"{run / 'metrics.jsonl'}: cannot write (No space left on device)" in line
    # The checkpoint of that epoch was complete; it carries the epoch's record, so a resume restores it.
    monkeypatch.setattr(checkpoint, "write_text_atomic", real)
    trainer.train(toy_config(synth, run), resume=run, progress=False)
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2] and temp_files(run) == []
