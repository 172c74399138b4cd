"""Integrity of checkpoints and exports (issue 19): a damaged file is refused with one line, never used.

Damage is what a bad disk, a bad copy or a bad RAM stick leaves: 64 bytes flipped inside the largest tensor of a
checkpoint (the weights change a little and scores change silently), 64 bytes of 0xFF there (NaN weights: no
event at all, silently), and 64 bytes flipped inside the largest initializer of an exported ONNX model. Every
test is marked ``fault("integrity", cases)``; the resume cases are in ``train/test_integrity_faults_resume.py``.
"""

from __future__ import annotations

import hashlib
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import one_line, run_cli, write_tiny_run, write_video

from pespot.train import checkpoint

CLASSES = ["hit", "bounce"]
HEIGHT = 48

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


def largest_record(path: Path) -> tuple[int, int]:
    """(offset, size) of the bytes of the largest tensor storage in a ``torch.save`` file (stored, not
    compressed, in its zip archive)."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        name_len, extra_len = struct.unpack("<HH", f.read(30)[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def damage(path: Path, offset: int, nan: bool = False) -> None:
    """Flip 64 bytes of ``path`` at ``offset`` (or set them to 0xFF: NaN as float32); a new file, so that hard
    links elsewhere keep the sound one."""
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + 64):
        data[i] = 0xFF if nan else data[i] ^ 0xFF
    path.unlink()
    path.write_bytes(bytes(data))


def damage_checkpoint(path: Path, nan: bool = False) -> None:
    offset, size = largest_record(path)
    damage(path, offset + size // 2, nan)


@pytest.fixture(scope="module")
def sealed_run(tmp_path_factory) -> Path:
    """A run folder with best.pt (epoch 3) and last.pt (epoch 4) of the tiny spotter, written by
    ``save_checkpoint`` (so with their digest)."""
    run = write_tiny_run(tmp_path_factory.mktemp("integrity") / "run", CLASSES, height=HEIGHT)
    state = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    checkpoint.save_checkpoint({**state, "epoch": 3}, run / "checkpoints" / "best.pt")
    checkpoint.save_checkpoint({**state, "epoch": 4}, run / "checkpoints" / "last.pt")
    return run


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("integrity-video") / "rally.mp4", 20)


def copy_run(run: Path, dst: Path) -> Path:
    (dst / "checkpoints").mkdir(parents=True)
    for name in ("best.pt", "last.pt"):
        (dst / "checkpoints" / name).write_bytes((run / "checkpoints" / name).read_bytes())
    return dst


# ------------------------------------------------------------------------------------------------------------
# the digest itself


@pytest.mark.fault("integrity")
def test_saved_checkpoints_carry_a_digest_that_every_changed_value_breaks(sealed_run):
    ckpt = torch.load(sealed_run / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    stored = ckpt[checkpoint.DIGEST_KEY]["sha256"]
    assert len(stored) == 64 and stored == checkpoint.content_digest(ckpt)
    name, weight = next((k, v) for k, v in ckpt["model"].items() if v.is_floating_point())
    nudged = weight.clone().contiguous()
    nudged.view(-1)[0] = torch.nextafter(nudged.view(-1)[0], torch.tensor(2.0))  # one unit in the last place
    changed = {**ckpt, "model": {**ckpt["model"], name: nudged}}
    assert checkpoint.content_digest(changed) != stored
    assert checkpoint.content_digest({**ckpt, "classes": ["hit", "bounc3"]}) != stored
    assert checkpoint.content_digest({**ckpt, "epoch": 5}) != stored
    assert checkpoint.load_checkpoint(sealed_run / "checkpoints" / "best.pt")["epoch"] == 3


# ------------------------------------------------------------------------------------------------------------
# infer with a damaged best.pt


@pytest.mark.fault("integrity")
@pytest.mark.parametrize("nan", [False, True], ids=["flipped", "0xff"])
def test_infer_refuses_a_damaged_best_checkpoint_and_names_the_sound_one(nan, sealed_run, video, tmp_path,
                                                                         capsys):
    run = copy_run(sealed_run, tmp_path / "run")
    best, last = run / "checkpoints" / "best.pt", run / "checkpoints" / "last.pt"
    damage_checkpoint(best, nan=nan)
    out = tmp_path / "out" / "pred.json"
    code, _, stderr = run_cli(capsys, "infer", run, video, "--out", out, "--quiet")
    assert code == 1
    line = one_line(stderr, "infer")
    assert line == (f"pespot infer: error: {best}: weights do not match their digest (file damaged); use {last} "
                    "(epoch 4) instead, or retrain")
    assert not out.parent.exists()
    # The sound checkpoint it names works.
    code, _, stderr = run_cli(capsys, "infer", last, video, "--out", out, "--quiet")
    assert code == 0, stderr


@pytest.mark.fault("integrity")
def test_both_checkpoints_damaged_says_so(sealed_run, video, tmp_path, capsys):
    run = copy_run(sealed_run, tmp_path / "run")
    for name in ("best.pt", "last.pt"):
        damage_checkpoint(run / "checkpoints" / name)
    code, _, stderr = run_cli(capsys, "infer", run, video, "--out", tmp_path / "pred.json", "--quiet")
    assert code == 1
    assert one_line(stderr, "infer").endswith(f"(file damaged); {run / 'checkpoints' / 'last.pt'} is damaged too: "
                                              "restore them from a backup or retrain")


@pytest.mark.fault("integrity")
def test_nan_weights_of_a_checkpoint_without_digest_are_refused(tmp_path, video, capsys):
    # A checkpoint written before pespot stored digests is accepted (backwards compatible) unless its weights
    # are not finite: the finiteness check needs no digest.
    run = write_tiny_run(tmp_path / "run", CLASSES, height=HEIGHT)
    best = run / "checkpoints" / "best.pt"
    assert checkpoint.DIGEST_KEY not in torch.load(best, map_location="cpu", weights_only=False)
    code, _, stderr = run_cli(capsys, "infer", run, video, "--out", tmp_path / "a.json", "--quiet")
    assert code == 0, stderr
    damage_checkpoint(best, nan=True)
    code, _, stderr = run_cli(capsys, "infer", run, video, "--out", tmp_path / "b.json", "--quiet")
    assert code == 1
    line = one_line(stderr, "infer")
    assert line.startswith(f"pespot infer: error: {best}: non-finite weights (model.")
    assert line.endswith("values NaN or infinite); restore it from a backup or retrain")
    assert not (tmp_path / "b.json").exists()


@pytest.mark.fault("integrity")
def test_export_refuses_a_damaged_checkpoint(sealed_run, tmp_path, capsys):
    run = copy_run(sealed_run, tmp_path / "run")
    damage_checkpoint(run / "checkpoints" / "best.pt")
    code, _, stderr = run_cli(capsys, "export", run, "--format", "onnx")
    assert code == 1 and "weights do not match their digest (file damaged)" in one_line(stderr, "export")
    assert not (run / "export").exists()


# ------------------------------------------------------------------------------------------------------------
# the ONNX engine with a damaged export


def damage_onnx(path: Path) -> None:
    """Flip 64 bytes in the middle of the largest initializer's raw data."""
    import onnx

    proto = onnx.load(str(path))
    raw = max((t.raw_data for t in proto.graph.initializer), key=len)
    offset = path.read_bytes().find(raw)
    assert offset > 0 and len(raw) > 256
    damage(path, offset + len(raw) // 2)


@pytest.mark.fault("integrity")
def test_onnx_engine_refuses_a_damaged_export(sealed_run, video, tmp_path, capsys):
    run = copy_run(sealed_run, tmp_path / "run")
    code, _, stderr = run_cli(capsys, "export", run, "--format", "onnx", "--no-check")
    assert code == 0, stderr
    model = run / "export" / "spotter.onnx"
    sidecar = run / "export" / "spotter.onnx.sha256"
    assert sidecar.read_text() == f"{hashlib.sha256(model.read_bytes()).hexdigest()}  spotter.onnx\n"
    code, _, stderr = run_cli(capsys, "infer", run, video, "--engine", "onnx", "--out", tmp_path / "a.json",
                              "--quiet")
    assert code == 0, stderr
    damage_onnx(model)
    for given in (run, model):  # the run folder, and the .onnx file itself
        code, _, stderr = run_cli(capsys, "infer", given, video, "--engine", "onnx", "--out", tmp_path / "b.json",
                                  "--quiet")
        assert code == 1
        assert one_line(stderr, "infer") == (
            f"pespot infer: error: {model}: contents do not match spotter.onnx.sha256 (file damaged or changed "
            "after export); export the model again with `pespot export`")
    assert not (tmp_path / "b.json").exists()
