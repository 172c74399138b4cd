"""Videos the browser shows frame-exactly: frame ``i`` of pespot (the ``i``-th decoded frame, ``pespot.data.frames``)
is the picture the page shows at time ``(i + 0.5) / rate``.

A browser places frames by their timestamps, pespot counts decoded frames: the two agree only for a constant frame
rate whose timestamps start at 0. A file is served as it is when it is an mp4 holding H.264 in yuv420p (what every
Chromium plays) with its index (moov) before its data (so seeking needs no download of the whole file), timestamps
``k * d`` for ``k = 0, 1, ...`` and no B-frame reordering. Anything else PyAV reads (another container or codec, a
variable frame rate, an edit list, a JPEG folder, a 10-bit or 4:4:4 video) is transcoded once: every decoded
frame ``i``, in order, becomes frame ``i`` of a constant-rate H.264 mp4 with timestamp ``i`` in a time base of
``1 / rate``, keyframes every half second for quick seeks, no B-frames, ``faststart``. The result is cached under a
key of the source (path, size, modification time) and the encoding settings, written under a temporary name and
renamed, so an interrupted transcode never leaves a broken file in the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from pespot.data.frames import open_frames, video_index
from pespot.errors import DataError
from pespot.fsutil import atomic_path, write_json_atomic

ENCODER_VERSION = 1  # bump when the transcoded output for a given input changes
CRF = 18  # near-transparent: labels are judged on these pictures
DEFAULT_RATE = 25.0  # frames per second of a JPEG folder whose rate nobody gave


def default_cache_dir() -> Path:
    """``$PESPOT_CACHE/review``, else ``$XDG_CACHE_HOME/pespot/review``, else ``~/.cache/pespot/review``."""
    if os.environ.get("PESPOT_CACHE"):
        return Path(os.environ["PESPOT_CACHE"]) / "review"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pespot" / "review"


@dataclass(frozen=True)
class Playable:
    """A file the browser plays frame-exactly: frame ``i`` is shown from ``i / rate`` to ``(i + 1) / rate``."""

    path: Path
    rate: Fraction  # frames per second, exact
    num_frames: int
    transcoded: bool


def mp4_index_first(path: Path) -> bool:
    """True when the mp4's top-level ``moov`` box comes before its ``mdat`` box (``faststart``)."""
    try:
        with open(path, "rb") as f:
            size_total = os.fstat(f.fileno()).st_size
            offset = 0
            while offset + 8 <= size_total:
                f.seek(offset)
                header = f.read(16)
                size, kind = int.from_bytes(header[:4], "big"), header[4:8]
                if size == 1:  # 64-bit size follows
                    size = int.from_bytes(header[8:16], "big")
                elif size == 0:  # the box runs to the end of the file
                    size = size_total - offset
                if kind == b"moov":
                    return True
                if kind == b"mdat" or size < 8:
                    return False
                offset += size
    except OSError:
        return False
    return False


def why_not_playable(path: Path) -> str | None:
    """Why the browser would not show ``path`` frame-exactly as it is (None: it would)."""
    import av

    if path.is_dir():
        return "a frame folder"
    if path.suffix.lower() not in (".mp4", ".m4v"):
        return f"a {path.suffix or 'suffix-less'} file, not an mp4"
    index = video_index(path)  # also the clear errors for broken files
    if not mp4_index_first(path):
        return "its index (moov) is after the data"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec, pix_fmt = stream.codec_context.name, stream.codec_context.pix_fmt
        if codec != "h264" or pix_fmt != "yuv420p":
            return f"{codec} {pix_fmt}, not h264 yuv420p"
        reordered = False
        for packet in container.demux(stream):
            if packet.size and packet.pts is not None and packet.dts is not None and packet.pts != packet.dts:
                reordered = True
                break
    if reordered:
        return "B-frames (reordered timestamps)"
    pts = index.pts
    if pts is None or pts[0] != 0:
        return "its timestamps do not start at 0"
    steps = np.diff(pts)
    if len(steps) and (steps.min() != steps.max() or steps[0] <= 0):
        return "a variable frame rate"
    return None


def exact_rate(path: Path) -> Fraction:
    """The frame rate of a constant-rate file whose timestamps are ``k * step`` (``why_not_playable`` is None)."""
    import av

    index = video_index(path)
    with av.open(str(path)) as container:
        time_base = container.streams.video[0].time_base
    if index.num_frames < 2:
        return Fraction(index.fps or DEFAULT_RATE).limit_denominator(1001)
    step = int(index.pts[1] - index.pts[0])
    return 1 / (step * time_base)


def cache_key(source: Path, rate: Fraction, height: int | None) -> str:
    """The cache name of ``source`` transcoded at ``rate`` and ``height``: changes when the source file does."""
    st = source.stat()
    if source.is_dir():  # a JPEG folder: its listing and the newest change inside it
        names = sorted(os.listdir(source))
        newest = max((os.stat(source / n).st_mtime_ns for n in names), default=st.st_mtime_ns)
        identity = [len(names), names[:1], names[-1:], newest]
    else:
        identity = [st.st_size, st.st_mtime_ns]
    raw = json.dumps([str(source.resolve()), identity, str(rate), height, ENCODER_VERSION, CRF])
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def prepare(source: str | Path, fps: float | None, cache_dir: str | Path, *, height: int | None = None,
            progress=None) -> Playable:
    """A file the browser plays frame-exactly for the video ``source`` (a video file or a JPEG folder).

    ``fps``: the rate to show a JPEG folder or a variable-rate video at (default: the video's average rate).
    ``height``: transcode at this height (aspect kept); files played as they are keep theirs.
    ``progress(done, total)`` is called while transcoding.
    """
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such video file or frame folder")
    if height is None and why_not_playable(source) is None:
        return Playable(source, exact_rate(source), video_index(source).num_frames, transcoded=False)
    frames = open_frames(source, height=height, fps=fps)
    rate = Fraction(fps or frames.fps or DEFAULT_RATE).limit_denominator(1001)
    cache_dir = Path(cache_dir)
    key = cache_key(source, rate, height)
    target, meta = cache_dir / f"{key}.mp4", cache_dir / f"{key}.json"
    if target.is_file() and meta.is_file():
        try:
            info = json.loads(meta.read_text())
            if info.get("num_frames") == frames.num_frames:
                return Playable(target, rate, frames.num_frames, transcoded=True)
        except (OSError, ValueError):
            pass  # a damaged note: transcode again
    transcode(frames, target, rate, progress=progress)
    write_json_atomic(meta, {"source": str(source.resolve()), "num_frames": frames.num_frames,
                             "rate": str(rate), "height": height, "encoder_version": ENCODER_VERSION})
    return Playable(target, rate, frames.num_frames, transcoded=True)


def transcode(frames, target: Path, rate: Fraction, progress=None) -> None:
    """Every frame of the ``FrameSource`` ``frames``, in order, into a constant-rate H.264 ``faststart`` mp4."""
    import av

    width, height = frames.width + frames.width % 2, frames.height + frames.height % 2  # yuv420p: even sizes
    gop = max(1, round(float(rate) / 2))
    written = 0
    with atomic_path(target) as tmp, av.open(str(tmp), mode="w", format="mp4",
                                             options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = 1 / rate
        stream.options = {"crf": str(CRF), "g": str(gop), "keyint_min": str(gop), "bf": "0",
                          "sc_threshold": "0", "preset": "veryfast"}
        for chunk in frames.iter_chunks(0, frames.num_frames, 32):
            for rgb in chunk.numpy():  # (H, W, 3)
                if rgb.shape[:2] != (height, width):  # odd sizes: repeat the last row/column
                    rgb = np.pad(rgb, ((0, height - rgb.shape[0]), (0, width - rgb.shape[1]), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame.pts, frame.time_base = written, 1 / rate
                for packet in stream.encode(frame):
                    container.mux(packet)
                written += 1
                if progress is not None:
                    progress(written, frames.num_frames)
        for packet in stream.encode():
            container.mux(packet)
        if written != frames.num_frames:  # (the temporary file is removed: nothing enters the cache)
            raise DataError(f"{frames.path}: {written} frames decoded, {frames.num_frames} expected")
    frames.close()
