"""ONNX Runtime vs PyTorch: inference frames/s of the exported spotter on this machine's CPU, side by side.

For each preset (`paper`, `e2e-spot`, at their own clip lengths) and input size (112 and 224 px square crops):

1. a randomly initialised model (weights do not change the speed; BatchNorm variances are drawn in [1, 2], as
   ``tests/test_export.py`` explains, so that the parity numbers compare two implementations and not the
   float32 rounding a chaotic random network amplifies) is exported to ONNX with ``pespot.export.export_model``;
2. parity: max |score difference| between onnxruntime and PyTorch on a random clip and on a real one (FFmpeg's
   testsrc2 decoded at the model's size);
3. speed: one clip (batch 1, as ``pespot stream`` runs them) through ``pespot.infer._score_windows`` (uint8
   frames in, scores out: normalisation included, the same for both) with the PyTorch engine and with the ONNX
   engine, interleaved, ``--rounds`` times after a warm-up; frames/s = clip length / median seconds per clip.

    python benchmarks/export.py                                   # docs/results/export.{md,json}
    python benchmarks/export.py --sizes 112 --rounds 2 --out /tmp/export   # a quick check
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pespot import export, infer
from pespot.config import load_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import machine, write_results

CLASSES = [f"class{i}" for i in range(17)]


def build_predictor(preset: str, size: int) -> infer.Predictor:
    """Randomly initialised ``preset`` at ``size`` x ``size``, BatchNorm variances in [1, 2]."""
    from pespot.model.spotter import build_model

    torch.manual_seed(0)
    cfg = load_config(preset, ["model.pretrained=false", f"data.height={size}", f"data.crop={size}"])
    model = build_model(cfg, len(CLASSES), with_projection=False, load_weights=False).eval()
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_var.copy_(1.0 + torch.rand(module.running_var.shape, generator=gen))
    return infer.Predictor(model=model, cfg=cfg, classes=CLASSES, device=torch.device("cpu"),
                           activation="softmax" if cfg.loss.classification == "ce" else "sigmoid")


def real_clip(clip_len: int, size: int) -> np.ndarray:
    """``clip_len`` frames of FFmpeg's testsrc2 (640x360) read as pespot reads a video: resized to ``size`` px
    high with swscale, centre-cropped. uint8 (T, size, size, 3)."""
    from pespot.stream import LiveSource

    source = LiveSource(f"testsrc2=size=640x360:rate=25:duration={clip_len / 25 + 1:g}", fmt="lavfi", height=size)
    frames = []
    for frame in source.frames():
        frames.append(frame)
        if len(frames) == clip_len:
            break
    return infer.center_crop(np.stack(frames), size)


def time_clip(predictor: infer.Predictor, clip: np.ndarray) -> float:
    start = time.perf_counter()
    infer._score_windows(predictor, clip[None], [len(clip)])
    return time.perf_counter() - start


def measure(preset: str, size: int, rounds: int, work: Path) -> dict:
    torch_pred = build_predictor(preset, size)
    report = export.export_model(torch_pred, "onnx", work / f"{preset}_{size}.onnx")
    onnx_pred = infer.Predictor(model=None, cfg=torch_pred.cfg, classes=CLASSES, device=torch.device("cpu"),
                                activation=torch_pred.activation,
                                engine=export.OnnxEngine(report.path, device="cpu"))
    clip_len = torch_pred.clip_len
    real = real_clip(clip_len, size)
    random = np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8)
    parity = {}
    for name, clip in (("random", random), ("real", real)):
        a = infer._score_windows(torch_pred, clip[None], [clip_len])
        b = infer._score_windows(onnx_pred, clip[None], [clip_len])
        parity[name] = float(np.abs(a - b).max())
    times = {"torch": [], "onnx": []}
    time_clip(torch_pred, real), time_clip(onnx_pred, real)  # warm-up
    for _ in range(rounds):
        times["torch"].append(time_clip(torch_pred, real))
        times["onnx"].append(time_clip(onnx_pred, real))
    row = {"preset": preset, "size": size, "clip_len": clip_len, "export_seconds": round(report.seconds, 1),
           "onnx_bytes": report.path.stat().st_size, "max_abs_diff": parity,
           "seconds_per_clip": {k: [round(t, 3) for t in v] for k, v in times.items()}}
    for engine, values in times.items():
        row[f"{engine}_fps"] = round(clip_len / statistics.median(values), 2)
    row["onnx_over_torch"] = round(row["onnx_fps"] / row["torch_fps"], 3)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "e2e-spot"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--rounds", type=int, default=3, help="timed clips per engine (median; default 3)")
    parser.add_argument("--threads", type=int, default=1, help="threads for both engines (default 1)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "export"),
                        help="writes OUT.md and OUT.json (default docs/results/export)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)  # OnnxEngine takes the same number of threads
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pespot-export-bench-") as tmp:
        for preset in args.presets:
            for size in args.sizes:
                row = measure(preset, size, args.rounds, Path(tmp))
                rows.append(row)
                print(f"{preset} {size}: torch {row['torch_fps']} frames/s, onnx {row['onnx_fps']} frames/s "
                      f"(x{row['onnx_over_torch']}), max diff {row['max_abs_diff']}", file=sys.stderr)

    import onnx
    import onnxruntime

    result = {
        "benchmark": "export",
        "command": ("python benchmarks/export.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
        .strip(),
        "machine": {**machine(), "threads": args.threads, "load_average_1min_start": round(load_start, 2)},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "opset": export.ONNX_OPSET},
        "setup": {"rounds": args.rounds, "batch": 1, "classes": len(CLASSES), "weights": "random, BN var in [1, 2]"},
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_results(args.out, result, render_markdown)
    return 0


def render_markdown(r: dict) -> str:
    m, v, s = r["machine"], r["versions"], r["setup"]
    lines = [
        "# Exported spotter: onnxruntime vs PyTorch on the CPU",
        "",
        f"`{r['command']}` ({r['seconds']:.0f} s)",
        "",
        (f"One clip at a time (batch {s['batch']}, the preset's clip length, {s['classes']} classes), uint8 frames "
         "in, scores out through `pespot.infer._score_windows` (normalisation included, identical for both "
         f"engines); PyTorch with ASTRM's fast path, onnxruntime's CPU provider; {m['threads']} thread(s) each; "
         f"the two engines alternate, {s['rounds']} clips each after a warm-up; frames/s = clip length / median "
         "time per clip. Parity = max |score difference| over the clip's (frame, class) scores, on a random clip "
         "and on a real one (testsrc2 decoded and resized as `pespot infer` reads videos)."),
        "",
        ("| preset | input | clip | PyTorch frames/s | onnxruntime frames/s | ratio onnx / torch | parity (random) "
         "| parity (real) |"),
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        lines.append(f"| `{row['preset']}` | {row['size']}x{row['size']} | {row['clip_len']} | {row['torch_fps']:.1f} "
                     f"| {row['onnx_fps']:.1f} | {row['onnx_over_torch']:.2f} | {row['max_abs_diff']['random']:.1e} "
                     f"| {row['max_abs_diff']['real']:.1e} |")
    lines += [
        "",
        (f"Machine: {m['cpu']}, {m['cores']} cores, " + (f"GPU {m['gpu']}" if m["gpu"] else "no GPU")
         + f", 1-minute load average {m['load_average_1min_start']} at the start (the machine was shared with "
           "other jobs: absolute speeds are low and noisy, the ratios measured side by side less so); "
           f"{m['platform']}."),
        (f"Versions: python {v['python']}, torch {v['torch']}, onnx {v['onnx']}, onnxruntime {v['onnxruntime']}, "
         f"opset {v['opset']}."),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
