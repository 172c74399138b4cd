"""Live spotting (`pespot stream`): speed against real time, worst-case latency, and memory over a long stream.

Speed and latency, per preset (`paper`, `e2e-spot`; randomly initialised: weights do not change the speed) and
input size (112 and 224 px square crops, as the presets read them), on a 25 fps H.264 source (FFmpeg's testsrc2,
640x360, encoded once with libx264):

* **speed**: the source read as fast as it decodes, through ``pespot.stream.run_stream`` (decoding in its
  read-ahead thread, windows as they fill, events as they are final); speed = stream seconds per wall second
  (>= 1 keeps up with a live 25 fps source);
* **latency**: the same frames delivered at 25 fps (frame i no earlier than i / 25 s after the start), as a live
  source would; for every frame from the first clip on, the wall time from its arrival to the moment its events
  were final. In frames it is the algorithm's delay (look-ahead + NMS window), in seconds that plus the wait for
  the window's forward pass; when the machine is slower than real time the backlog grows with the stream and the
  worst case is its end (the backlog column says how far behind it was when the last frame came in).

Memory: FFmpeg's testsrc2 generated through PyAV's lavfi input (no file, any length) streamed through the paper
model; the resident set size (VmRSS) is sampled every ``--memory-every`` frames.

    python benchmarks/stream.py                           # default run (< 10 min): docs/results/stream.{md,json}
    python benchmarks/stream.py --memory-minutes 60       # the one-hour stream
    python benchmarks/stream.py --seconds 6 --sizes 112 --memory-minutes 1 --out /tmp/stream   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from pespot import infer, stream
from pespot.config import load_config
from pespot.fsutil import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import machine, write_results

FPS = 25.0
CLASSES = [f"class{i}" for i in range(17)]  # SoccerNet-v2's number of classes


def build_predictor(preset: str, size: int) -> infer.Predictor:
    """A randomly initialised ``preset`` model reading frames at ``size`` px, centre-cropped to size x size."""
    from pespot.model.spotter import build_model

    torch.manual_seed(0)
    cfg = load_config(preset, ["model.pretrained=false", f"data.height={size}", f"data.crop={size}"])
    model = build_model(cfg, len(CLASSES), with_projection=False, load_weights=False).eval()
    return infer.Predictor(model=model, cfg=cfg, classes=CLASSES, device=torch.device("cpu"),
                           activation="softmax" if cfg.loss.classification == "ce" else "sigmoid")


def encode_testsrc(path: Path, seconds: float, size: str = "640x360") -> Path:
    """``seconds`` of FFmpeg's testsrc2 at 25 fps, encoded with libx264 (veryfast, GOP 50) into ``path``."""
    import av

    width, height = (int(v) for v in size.split("x"))
    source = av.open(f"testsrc2=size={size}:rate={FPS:g}:duration={seconds}", format="lavfi")
    with av.open(str(path), mode="w") as out:
        video = out.add_stream("libx264", rate=Fraction(FPS).limit_denominator(1001))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "veryfast", "g": "50", "crf": "23"}
        for frame in source.decode(video=0):
            for packet in video.encode(frame.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    source.close()
    return path


def measure_speed(predictor: infer.Predictor, video: Path, lookahead: int | None) -> dict:
    """The whole file through run_stream as fast as it decodes."""
    source = stream.LiveSource(str(video), height=predictor.height)
    events = []
    report = stream.run_stream(predictor, source, events.append, lookahead=lookahead)
    assert report.error is None, report.error
    return {"frames": report.frames, "seconds": round(report.seconds, 2),
            "fps": round(report.frames / report.seconds, 2), "speed": round(report.frames / report.seconds / FPS, 3),
            "events": report.events, "windows": report.windows}


def measure_latency(predictor: infer.Predictor, video: Path, lookahead: int | None) -> dict:
    """Frames delivered at 25 fps; per frame, wall time from its arrival to its events being final."""
    frames = list(stream.LiveSource(str(video), height=predictor.height).frames())  # decoded up front
    spotter = stream.StreamSpotter(predictor, lookahead=lookahead)
    clip_len = predictor.clip_len
    latencies: list[tuple[int, float]] = []  # (frame, seconds)
    start = time.perf_counter()
    for index, frame in enumerate(frames):
        arrival = start + index / FPS
        wait = arrival - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        before = spotter.decided_upto
        spotter.push(frame)
        now = time.perf_counter()
        for decided in range(max(before, clip_len), spotter.decided_upto):
            latencies.append((decided, now - (start + decided / FPS)))
    # How far behind the source the spotter is when the last frame has been taken in: about 0 (or one window's
    # forward pass) when it keeps up; growing with the stream's length when it does not.
    backlog = time.perf_counter() - (start + (len(frames) - 1) / FPS)
    spotter.finish()
    if len(latencies) < 2:
        raise SystemExit(f"--seconds {len(frames) / FPS:g}: too short to decide frames after the first clip of "
                         f"{clip_len} while the stream runs; give a longer stream")
    steady = [s for _, s in latencies]
    return {"frames": len(frames), "worst_latency_frames": spotter.max_latency,
            "worst_latency_frames_s": round(spotter.max_latency / FPS, 3),
            "worst_latency_s": round(max(steady), 3), "median_latency_s": round(statistics.median(steady), 3),
            "backlog_at_end_s": round(backlog, 2), "decided_frames": len(latencies)}


def rss_mb() -> float:
    """Resident set size of this process (VmRSS), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_memory(preset: str, size: int, minutes: float, every: int) -> dict:
    """FFmpeg's testsrc2 for ``minutes`` of stream through the spotter; RSS every ``every`` frames."""
    predictor = build_predictor(preset, size)
    frames = round(minutes * 60 * FPS)
    source = stream.LiveSource(f"testsrc2=size=320x180:rate={FPS:g}:duration={minutes * 60:g}", fmt="lavfi",
                               height=size)
    spotter = stream.StreamSpotter(predictor)
    samples, events, held = [], 0, 0
    started = time.perf_counter()
    for index, frame in enumerate(source.frames()):
        events += len(spotter.push(frame))
        held = max(held, spotter.held_frames)
        if index % every == 0 or index == frames - 1:
            samples.append((index, round(rss_mb(), 1)))
    events += len(spotter.finish())
    seconds = time.perf_counter() - started
    steady = [(i, r) for i, r in samples if i >= every * 2] or samples  # after the first windows are built
    xs, ys = np.array([i for i, _ in steady], float), np.array([r for _, r in steady], float)
    slope = float(np.polyfit(xs, ys, 1)[0]) * 1000 if len(steady) > 2 else float("nan")  # MB per 1000 frames
    return {"preset": preset, "size": size, "clip_len": predictor.clip_len, "frames": spotter.scorer.received,
            "stream_minutes": minutes, "seconds": round(seconds, 1), "events": events,
            "rss_samples": samples, "rss_first_mb": steady[0][1], "rss_last_mb": steady[-1][1],
            "rss_max_mb": max(r for _, r in samples), "rss_slope_mb_per_1000_frames": round(slope, 4),
            "held_frames_max": held}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "e2e-spot"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--seconds", type=float, default=16.0,
                        help="stream length for speed and latency (default 16 s: 400 frames, 5+ windows)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared 2-core machine)")
    parser.add_argument("--low-latency", action=argparse.BooleanOptionalAction, default=True,
                        help="also run each preset at the smallest size with --lookahead = stride - 1")
    parser.add_argument("--memory-preset", default="paper")
    parser.add_argument("--memory-size", type=int, default=64, help="input size of the memory run (default 64)")
    parser.add_argument("--memory-minutes", type=float, default=4.0,
                        help="stream length of the memory run in minutes (default 4; 60 for the one-hour run)")
    parser.add_argument("--memory-every", type=int, default=250, help="RSS sample every N frames")
    parser.add_argument("--memory-only", metavar="JSON", help=argparse.SUPPRESS)  # the memory run's own process
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "stream"),
                        help="writes OUT.md and OUT.json (default docs/results/stream)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.memory_only:
        write_json_atomic(args.memory_only, measure_memory(args.memory_preset, args.memory_size,
                                                           args.memory_minutes, args.memory_every))
        return 0
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pespot-stream-bench-") as tmp:
        video = encode_testsrc(Path(tmp) / "testsrc2_640x360.mp4", args.seconds)
        cases = [(p, s, None) for p in args.presets for s in args.sizes]
        if args.low_latency:
            for preset in args.presets:
                probe = build_predictor(preset, min(args.sizes))
                stride = infer.window_stride(probe.clip_len, probe.cfg.eval.overlap)
                cases.append((preset, min(args.sizes), stride - 1))
        for preset, size, lookahead in cases:
            predictor = build_predictor(preset, size)
            infer._score_windows(predictor, np.zeros((1, predictor.clip_len, size, size, 3), np.uint8),
                                 [predictor.clip_len])  # warm-up
            row = {"preset": preset, "size": size, "clip_len": predictor.clip_len,
                   "stride": min(infer.window_stride(predictor.clip_len, predictor.cfg.eval.overlap),
                                 (lookahead if lookahead is not None else predictor.clip_len) + 1),
                   "lookahead": predictor.clip_len - 1 if lookahead is None else lookahead,
                   "nms_window": predictor.cfg.eval.nms_window}
            row["speed"] = measure_speed(predictor, video, lookahead)
            row["latency"] = measure_latency(predictor, video, lookahead)
            rows.append(row)
            print(f"{preset} {size}p lookahead {row['lookahead']}: {row['speed']['fps']} frames/s "
                  f"({row['speed']['speed']}x real time), worst latency {row['latency']['worst_latency_frames']} "
                  f"frames, {row['latency']['worst_latency_s']} s", file=sys.stderr)
        # In a fresh process: its memory is the stream's alone, not that of the models measured above.
        memory_json = Path(tmp) / "memory.json"
        subprocess.run([sys.executable, __file__, "--memory-only", str(memory_json), "--threads", str(args.threads),
                        "--memory-preset", args.memory_preset, "--memory-size", str(args.memory_size),
                        "--memory-minutes", str(args.memory_minutes), "--memory-every", str(args.memory_every)],
                       check=True)
        memory = json.loads(memory_json.read_text())
    print(f"memory: {memory['frames']} frames, RSS {memory['rss_first_mb']} -> {memory['rss_last_mb']} MB "
          f"(slope {memory['rss_slope_mb_per_1000_frames']} MB / 1000 frames)", file=sys.stderr)

    import av

    info = {**machine(), "torch_threads": torch.get_num_threads(), "load_average_1min_start": round(load_start, 2)}
    result = {
        "benchmark": "stream",
        "command": ("python benchmarks/stream.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
        .strip(),
        "machine": info,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "av": av.__version__,
                     "numpy": np.__version__},
        "setup": {"fps": FPS, "seconds": args.seconds, "source": "testsrc2 640x360 H.264 (libx264 veryfast, GOP 50)",
                  "classes": len(CLASSES), "nms": "local_max", "threshold": 0.0, "weights": "random"},
        "rows": rows,
        "memory": memory,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_results(args.out, result, render_markdown)
    return 0


def render_markdown(r: dict) -> str:
    s, m, mem = r["setup"], r["machine"], r["memory"]
    lines = [
        "# Live spotting: speed, latency, memory",
        "",
        f"`{r['command']}` ({r['seconds']:.0f} s)",
        "",
        (f"Source: {s['source']}, {s['fps']:g} fps, {s['seconds']:g} s per case; models randomly initialised, "
         f"{s['classes']} classes, NMS {s['nms']} (window 1), threshold {s['threshold']:g}; "
         f"{m['torch_threads']} torch thread(s) on a shared machine (1-minute load average "
         f"{m['load_average_1min_start']} at the start: other jobs were running, so the speeds are lower bounds)."),
        "",
        ("**speed** = stream seconds processed per wall second with the source read as fast as it decodes "
         "(decode + windows + events; >= 1 keeps up with a live 25 fps source). **latency** = frames delivered at "
         "25 fps; per frame (from the first clip on: the first clip_len frames wait for the first window), how "
         "long after its arrival its events were final: in frames, the algorithm's delay (look-ahead + NMS "
         "window); in seconds, measured, which adds the window's forward pass and, when the machine is slower than "
         "real time, the backlog. **backlog** = how far behind the source the spotter was when the last frame "
         "came in: about one forward pass when it keeps up, growing with the stream when it does not (then the "
         "measured latency is that of this stream's length, not a bound)."),
        "",
        ("| preset | input | clip | look-ahead (stride) | frames/s | speed (x real time) | worst latency, frames "
         "(s of stream) | worst latency, measured s | median, s | backlog at the end, s |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        sp, la = row["speed"], row["latency"]
        lines.append(
            f"| `{row['preset']}` | {row['size']}x{row['size']} | {row['clip_len']} | {row['lookahead']} "
            f"({row['stride']}) | {sp['fps']:.1f} | {sp['speed']:.2f} | {la['worst_latency_frames']} "
            f"({la['worst_latency_frames_s']:.2f}) | {la['worst_latency_s']:.2f} | {la['median_latency_s']:.2f} "
            f"| {la['backlog_at_end_s']:.2f} |")
    first, last = mem["rss_samples"][0], mem["rss_samples"][-1]
    lines += [
        "",
        (f"**Memory** over a long generated stream: `{mem['preset']}` at {mem['size']}x{mem['size']} (clip "
         f"{mem['clip_len']}), FFmpeg's testsrc2 (320x180) through PyAV's lavfi input, {mem['frames']:,} frames "
         f"= {mem['frames'] / s['fps'] / 60:.1f} minutes of stream, processed in {mem['seconds']:.0f} s; "
         f"{mem['events']:,} events. Resident memory (VmRSS) after the first windows: {mem['rss_first_mb']} MB, "
         f"at the end: {mem['rss_last_mb']} MB, largest: {mem['rss_max_mb']} MB; fitted slope "
         f"{mem['rss_slope_mb_per_1000_frames']:+.3f} MB per 1,000 frames; at most {mem['held_frames_max']} "
         "frames (pixels or score rows) held by the spotter."),
        "",
        "| frame | " + " | ".join(str(i) for i, _ in _thin(mem["rss_samples"])) + " |",
        "|---|" + "---:|" * len(_thin(mem["rss_samples"])),
        "| RSS, MB | " + " | ".join(f"{v}" for _, v in _thin(mem["rss_samples"])) + " |",
        "",
        (f"(RSS includes the Python process with torch and PyAV loaded; first sample, frame {first[0]}: "
         f"{first[1]} MB, before the model's first forward pass; last, frame {last[0]}: {last[1]} MB)"),
        "",
        (f"Machine: {m['cpu']}, {m['cores']} cores, " + (f"GPU {m['gpu']}" if m["gpu"] else "no GPU")
         + f", {m['platform']}; torch {r['versions']['torch']}, av {r['versions']['av']}."),
        "",
    ]
    return "\n".join(lines)


def _thin(samples: list, most: int = 12) -> list:
    """At most ``most`` samples, evenly spaced, the last included."""
    if len(samples) <= most:
        return samples
    idx = np.linspace(0, len(samples) - 1, most).round().astype(int)
    return [samples[i] for i in idx]


if __name__ == "__main__":
    sys.exit(main())
