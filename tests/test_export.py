"""`pespot export` (ONNX, TorchScript) and `pespot infer --engine onnx`: the exported spotter gives PyTorch's scores
(max |difference| <= 1e-4) on random and real clips, for both presets and every temporal head, and the ONNX
engine spots the same events as PyTorch on a raw video.

Models are randomly initialised with BatchNorm statistics set away from (0, 1), so that every normalisation in the
exported graph does something, but with variances >= 1 as a trained network's keep its activations in range: with
smaller ones a random 13-block network amplifies float32 rounding until two PyTorch forms of the same function
(ASTRM's fast path and its reference) differ by 1e-2, and no comparison at 1e-4 means anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_video

from pespot import export, infer
from pespot.config import load_config, to_dict
from pespot.data.frames import open_frames
from pespot.errors import DataError
from pespot.model.temporal import TEMPORAL_HEADS

CLASSES = ["bounce", "hit", "serve"]
CLIP = 8
HEIGHT = 32
TOLERANCE = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


def write_run(run: Path, preset: str = "paper", overrides: tuple[str, ...] = (), seed: int = 0) -> Path:
    """A run folder with checkpoints/best.pt: ``preset`` at clip 8, 32 px high, full frames, random weights."""
    from pespot.model.spotter import build_model

    cfg = load_config(preset, [f"model.clip_len={CLIP}", "model.pretrained=false", f"data.height={HEIGHT}",
                               "data.crop=null", *overrides])
    torch.manual_seed(seed)
    model = build_model(cfg, len(CLASSES), load_weights=False)
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=gen))
            module.running_var.copy_(1.0 + torch.rand(module.running_var.shape, generator=gen))
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"format": infer.CHECKPOINT_FORMAT, "config": to_dict(cfg), "classes": CLASSES,
                "model": model.state_dict()}, run / "checkpoints" / "best.pt")
    return run


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from pespot.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def real_clip(video: Path, width: int) -> torch.Tensor:
    """The first clip of a PyAV-encoded test video at the model's size, normalised: (1, T, 3, H, W)."""
    frames = open_frames(video, height=HEIGHT).read(0, CLIP).numpy()[:, :, :width]  # (T, H, W, 3)
    return infer._normalise(torch.from_numpy(frames)[None], [CLIP]).contiguous()


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "rally.mp4", 40, width=48, height=HEIGHT)


@pytest.mark.parametrize(("fmt", "preset"), [
    ("onnx", "paper"), ("onnx", "e2e-spot"), ("torchscript", "e2e-spot"),
    pytest.param("torchscript", "paper", marks=pytest.mark.slow),  # the longest case (make test <= 4 min)
])
def test_export_gives_pytorchs_scores(fmt, preset, tmp_path, video, capsys):
    run = write_run(tmp_path / "run", preset)
    code, stdout, err = run_cli(["export", str(run), "--format", fmt, "--json"], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    path = Path(report["path"])
    assert path == export.default_export_path(run, fmt) and path.is_file()
    assert report["clip_len"] == CLIP and report["max_abs_diff"] <= TOLERANCE
    assert not list(path.parent.glob(".*.tmp")), "no temporary file left"
    predictor = infer.load_predictor(run, device="cpu")
    # random clips of other batch sizes and widths than the export's example (dynamic axes), and a real clip
    gen = torch.Generator().manual_seed(1)
    clips = [torch.randn(3, CLIP, 3, HEIGHT, 40, generator=gen), torch.randn(1, CLIP, 3, HEIGHT, 56, generator=gen),
             real_clip(video, 48)]
    for clip in clips:
        diff = export.max_abs_diff(predictor, path, fmt, clip)
        assert diff <= TOLERANCE, (clip.shape, diff)
    if fmt == "onnx":  # the metadata says what the model is
        meta = export.OnnxEngine(path, device="cpu").metadata
        assert json.loads(meta["classes"]) == CLASSES and meta["clip_len"] == str(CLIP)
        assert meta["checkpoint_sha256"] == export.file_sha256(run / "checkpoints" / "best.pt")
        assert meta["activation"] == ("softmax" if preset == "e2e-spot" else "sigmoid")


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [("model.temporal_module=tsm",), ("model.temporal_module=none",)]
                         + [(f"model.temporal_head={h}",) for h in TEMPORAL_HEADS],
                         ids=lambda o: o[0].split(".", 1)[1])
def test_every_temporal_head_and_module_exports(overrides, tmp_path):
    """All 8 temporal heads (with ASTRM) and TSM / no per-block module export to ONNX within the tolerance."""
    run = write_run(tmp_path / "run", "paper", overrides)
    predictor = infer.load_predictor(run, device="cpu")
    report = export.export_model(predictor, "onnx", tmp_path / "m.onnx")
    clip = torch.randn(2, CLIP, 3, HEIGHT, 40, generator=torch.Generator().manual_seed(2))
    assert report.max_abs_diff <= TOLERANCE
    assert export.max_abs_diff(predictor, report.path, "onnx", clip) <= TOLERANCE


@pytest.mark.slow  # one of the longest of the default suite (make test <= 4 min)
def test_onnx_engine_spots_the_events_of_torch_on_a_raw_video(tmp_path, video, capsys):
    run = write_run(tmp_path / "run", "paper")
    assert run_cli(["export", str(run), "--format", "onnx", "--json"], capsys)[0] == 0
    outs = {}
    for engine, extra in (("torch", []), ("onnx", []), ("model", ["--model", str(export.default_export_path(
            run, "onnx"))])):
        outs[engine] = tmp_path / f"{engine}.json"
        args = ["infer", str(run), str(video), "--out", str(outs[engine]), "--quiet", "--json"]
        args += ["--engine", "onnx"] if engine != "torch" else []
        code, _, err = run_cli(args + extra, capsys)
        assert code == 0, err
    torch_events = json.loads(outs["torch"].read_text())[0]["events"]
    assert torch_events
    for engine in ("onnx", "model"):
        events = json.loads(outs[engine].read_text())[0]["events"]
        assert [(e["frame"], e["label"]) for e in events] == [(e["frame"], e["label"]) for e in torch_events]
        np.testing.assert_allclose([e["score"] for e in events], [e["score"] for e in torch_events], atol=TOLERANCE)
    # the .onnx file itself as RUN_OR_CKPT
    code, _, err = run_cli(["stream", str(export.default_export_path(run, "onnx")), str(video), "--engine", "onnx",
                            "--out", str(tmp_path / "s.jsonl"), "--quiet"], capsys)
    assert code == 0, err
    streamed = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [(e["frame"], e["label"]) for e in streamed] == [(e["frame"], e["label"]) for e in torch_events]


def test_engine_errors_name_the_file_and_what_to_do(tmp_path, video, capsys):
    run = write_run(tmp_path / "run", "e2e-spot")
    base = ["infer", str(run), str(video), "--out", str(tmp_path / "p.json"), "--quiet"]
    code, _, err = run_cli(base + ["--engine", "onnx"], capsys)
    assert code == 1 and "export/spotter.onnx" in err and "pespot export" in err
    assert run_cli(["export", str(run), "--format", "onnx", "--no-check"], capsys)[0] == 0
    # a newer checkpoint: the export no longer describes the run
    ckpt = run / "checkpoints" / "best.pt"
    state = torch.load(ckpt, weights_only=False)
    state["model"]["classifier.bias"] += 1.0
    torch.save(state, ckpt)
    code, _, err = run_cli(base + ["--engine", "onnx"], capsys)
    assert code == 1 and "exported from another checkpoint" in err
    code, _, err = run_cli(base + ["--model", "x.onnx"], capsys)
    assert code == 1 and "--model: only with --engine onnx" in err
    code, _, err = run_cli(["infer", str(ckpt), str(video), "--out", str(tmp_path / "p.json"), "--engine", "onnx"],
                           capsys)
    assert code == 1 and "not a checkpoint" in err
    code, _, err = run_cli(["export", str(ckpt), "--format", "onnx"], capsys)
    assert code == 1 and "give --out FILE" in err
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(DataError, match="broken.onnx: not a readable ONNX model"):
        export.load_onnx_predictor(broken)


def test_gray_diff_input_is_part_of_the_exported_model(tmp_path):
    """model.input=gray_diff lives in the model: the exported graph gives PyTorch's scores from RGB frames."""
    run = write_run(tmp_path / "run", "synthetic", ("model.input=gray_diff",))
    predictor = infer.load_predictor(run, device="cpu")
    report = export.export_model(predictor, "onnx", tmp_path / "m.onnx")
    clip = torch.randn(2, CLIP, 3, HEIGHT, 40, generator=torch.Generator().manual_seed(3))
    assert report.max_abs_diff <= TOLERANCE
    assert export.max_abs_diff(predictor, report.path, "onnx", clip) <= TOLERANCE
