"""Raw videos -> frame store: JPEG folders (E2E-Spot layout) or compact short-GOP mp4s, resumable and verified.

One output per input video, named by the video's stem (inputs found inside a directory keep their path relative
to it, so ``DIR/a/b.mkv`` becomes the video id ``a/b``):

* ``--format jpg``: ``<out>/<id>/000000.jpg, 000001.jpg...`` (JPEG quality 90), what E2E-Spot reads;
* ``--format mp4``: ``<out>/<id>.mp4``, libx264 (crf 20, yuv420p, a keyframe every 16 frames so that a random
  clip decodes at most 15 frames it does not need), width and height rounded to even.

Frames are resized to ``height`` (aspect kept, width rounded to even) with swscale while decoding. With a target
``fps`` F, frame ``i`` (time ``t_i`` from its timestamp, relative to the first frame) is kept when it is the first
frame at or after the next tick ``k / F``: ticks are exact fractions, so 25 -> 2 fps keeps frames 0, 13, 25, 38...
(2 frames per second on average, not E2E-Spot's every 12th frame), and a source slower than F keeps every frame
(nothing is duplicated). Without ``fps`` every decoded frame is kept, in decode (presentation) order.

Resumable and kill-safe: an output is written under a temporary name (``<out>/.<id>.partial/`` or
``<out>/.<id>.mp4.partial``) and renamed when complete, so the final name always means "finished" and is skipped
on a rerun; a leftover partial output (from a kill) is deleted and redone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from pespot.data.frames import (
    VIDEO_SUFFIXES,
    av_error_reason,
    open_container,
    open_frames,
    resized_size,
)
from pespot.errors import DataError, PespotError

JPEG_QUALITY = 90
MP4_CRF = 20
MP4_GOP = 16
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass
class ExtractResult:
    """What happened to one input video."""

    source: str
    video: str  # the video id: output name relative to the store (no suffix)
    output: str
    status: str  # "extracted", "skipped" (already done), or "failed"
    frames: int | None = None  # frames in the output
    fps: float | None = None  # frame rate of the output
    error: str | None = None  # why it failed, one line
    warning: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


# ------------------------------------------------------------------------------------------------------------
# inputs and outputs


def find_videos(inputs: Iterable[str | Path]) -> list[tuple[Path, str, str | None]]:
    """(video file, video id, problem) for each input, in order; directories are searched recursively for video
    files. ``problem`` is None for a video to extract, else one line saying why this input cannot be (a missing
    path, a directory without videos, a second file with the same video id): the other inputs still run."""
    found: list[tuple[Path, str, str | None]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not files:
                problem = f"no video files in this directory (looked for {', '.join(VIDEO_SUFFIXES)})"
                found.append((path, path.name, problem))
            found += [(p, p.relative_to(path).with_suffix("").as_posix(), None) for p in files]
        elif path.exists():
            found.append((path, path.stem, None))
        else:
            found.append((path, path.stem, "no such video file or directory"))
    by_id: dict[str, Path] = {}
    out: list[tuple[Path, str, str | None]] = []
    for file, video, problem in found:
        if problem is None and video in by_id:
            if by_id[video] == file:
                continue  # the same file given twice
            problem = f"would be written as video '{video}' like {by_id[video]}, which is extracted instead"
        elif problem is None:
            by_id[video] = file
        out.append((file, video, problem))
    return out


def output_path(out_dir: str | Path, video: str, fmt: str) -> Path:
    """The finished output of ``video``: ``<out>/<video>/`` (jpg) or ``<out>/<video>.mp4``."""
    out_dir = Path(out_dir)
    return out_dir / video if fmt == "jpg" else out_dir / f"{video}.mp4"


def partial_path(final: Path) -> Path:
    """The temporary name an output is written under before the rename that finishes it."""
    return final.parent / f".{final.name}.partial"


def count_output_frames(output: Path) -> tuple[int, float | None]:
    """(frames, fps) of a finished output (JPEG folder or mp4)."""
    source = open_frames(output)
    return source.num_frames, source.fps


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# ------------------------------------------------------------------------------------------------------------
# one video


def _frames(container, stream, counts: dict[str, int]):
    """Decoded frames of ``stream`` in order; ``counts['packets']`` counts demuxed packets (discarded ones too)."""
    for packet in container.demux(stream):
        if packet.size > 0:
            counts["packets"] += 1
        yield from packet.decode()  # the empty packet at the end flushes the decoder


def _decode_kept_frames(container, stream, fps: float | None, width: int, height: int,
                        on_frame: Callable[[int, object], None],
                        on_progress: Callable[[int], None] | None = None) -> tuple[int, int, int]:
    """Decode the whole stream, resize, call ``on_frame(index, rgb array)`` for each kept frame.

    Returns (demuxed packets, decoded frames, kept frames).
    """
    import av

    step = Fraction(fps).limit_denominator(1001) if fps else None
    time_base = stream.time_base
    first_pts = None
    next_tick = 0  # index k of the next 1/F tick
    decoded = kept = 0
    counts = {"packets": 0}
    resize = (width, height) != (stream.codec_context.width, stream.codec_context.height)
    try:
        for frame in _frames(container, stream, counts):
            decoded += 1
            if on_progress is not None and decoded % 32 == 0:
                on_progress(32)
            if step is not None:
                if frame.pts is not None and time_base is not None:
                    if first_pts is None:
                        first_pts = frame.pts
                    t = (frame.pts - first_pts) * Fraction(time_base)  # seconds, exact
                else:  # no timestamps: assume the average rate
                    t = Fraction(decoded - 1) / Fraction(stream.average_rate or 25)
                if t * step < next_tick:
                    continue  # before the next tick k / F
                next_tick = int(t * step) + 1  # the first tick after this frame
            if resize:
                rgb = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="BILINEAR")
            else:
                rgb = frame.to_ndarray(format="rgb24")
            on_frame(kept, rgb)
            kept += 1
    except av.FFmpegError as err:
        raise DataError(f"decoding failed at frame {decoded} ({av_error_reason(err)}); the file is damaged or "
                        f"truncated") from None
    return counts["packets"], decoded, kept


def _target_size(src_w: int, src_h: int, height: int | None, fmt: str) -> tuple[int, int]:
    width, out_h = resized_size(src_w, src_h, height or None)
    if fmt == "mp4":
        # yuv420p needs even sizes: an odd source size kept as is loses its last row/column to the scaler.
        if out_h % 2 and height:
            raise DataError(f"--height {out_h} must be even for --format mp4")
        width -= width % 2
        out_h -= out_h % 2
    return width, out_h


class _FrameWriter:
    """Writes RGB frames ``0, 1, 2...`` under the temporary name ``partial``: a JPEG folder or a compact mp4."""

    def __init__(self, partial: Path, fmt: str, width: int, height: int, fps: float | None, threads: int):
        import av

        self.partial, self.fmt = partial, fmt
        self.output = self.stream = None
        if fmt == "jpg":
            partial.mkdir(parents=True)
        else:
            self.output = av.open(str(partial), mode="w", format="mp4")
            self.stream = self.output.add_stream("libx264", rate=Fraction(fps or 25).limit_denominator(1001))
            self.stream.width, self.stream.height = width, height
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": str(MP4_CRF), "g": str(MP4_GOP), "preset": "veryfast",
                                   "threads": str(max(1, threads))}

    def write(self, i: int, rgb) -> None:
        """Frame ``i`` (uint8 (H, W, 3)); frames come in order."""
        if self.output is None:
            from PIL import Image

            Image.fromarray(rgb).save(self.partial / f"{i:06d}.jpg", quality=JPEG_QUALITY)
            return
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = i
        for packet in self.stream.encode(frame):
            self.output.mux(packet)

    def finish(self) -> None:
        """Flush the encoder and close the file (the caller then renames it)."""
        if self.output is not None:
            for packet in self.stream.encode():
                self.output.mux(packet)
            self.output.close()
            self.output = None

    def abort(self) -> None:
        """Close without finishing (the caller removes the partial output)."""
        if self.output is not None:
            with contextlib.suppress(Exception):
                self.output.close()
            self.output = None


def _skip_finished(result: ExtractResult, final: Path) -> bool:
    """True (status ``skipped``, or ``failed`` if unreadable) when ``final`` is already there from an earlier run."""
    if not final.exists():
        return False
    result.status = "skipped"
    try:
        result.frames, result.fps = count_output_frames(final)
    except DataError as err:
        result.status, result.error = "failed", f"existing output is unreadable: {err}"
    return True


def _prepare(final: Path) -> Path:
    """The temporary path of ``final``, cleared of an earlier (killed) run's leftovers, its folder created."""
    partial = partial_path(final)
    _remove(partial)  # an unfinished output of an earlier run is redone from scratch
    final.parent.mkdir(parents=True, exist_ok=True)
    return partial


@contextlib.contextmanager
def _writing(result: ExtractResult, source: Path, final: Path) -> Iterator[list[Callable[[], None]]]:
    """The frame of one output's work: yields a list of closers. An error in the body (which starts with
    ``_prepare``, so that a full disk there fails this output only) becomes ``result.error`` (one line) instead
    of propagating; the closers run at the end, and an output that did not reach ``status='extracted'`` leaves
    nothing behind."""
    import av

    closers: list[Callable[[], None]] = []
    start_time = time.perf_counter()
    try:
        yield closers
    except DataError as err:
        # Strip our own "<path>: " prefix: the report names the file once.
        message = str(err)
        result.error = message[len(str(source)) + 2:] if message.startswith(f"{source}: ") else message
    except (av.FFmpegError, OSError) as err:
        # PyAV's errors are FFmpegErrors (some also OSErrors); any other OSError comes from writing the output.
        if not isinstance(err, av.FFmpegError) or getattr(err, "errno", None) in _DISK_FULL:
            result.error = _write_error(err, final)
        else:
            result.error = f"{type(err).__name__}: {av_error_reason(err)}"
    finally:
        for close in reversed(closers):
            close()
        if result.status != "extracted":
            _remove(partial_path(final))
        result.seconds = time.perf_counter() - start_time


def extract_video(source: str | Path, out_dir: str | Path, video: str | None = None, *, height: int | None = 224,
                  fps: float | None = None, fmt: str = "jpg", threads: int = 1,
                  on_progress: Callable[[int], None] | None = None) -> ExtractResult:
    """Extract one video into the store (or skip it when its output is already there). Never raises on bad
    input: failures come back as ``status='failed'`` with a one-line reason. ``on_progress(n)`` is called as
    every further ``n`` source frames are decoded."""
    source = Path(source)
    video = video or source.stem
    final = output_path(out_dir, video, fmt)
    result = ExtractResult(source=str(source), video=video, output=str(final), status="failed")
    if _skip_finished(result, final):
        return result
    with _writing(result, source, final) as closers:
        partial = _prepare(final)
        if source.is_dir():
            raise DataError("is a directory, not a video file")
        container = open_container(source)
        closers.append(container.close)
        stream = container.streams.video[0]
        if threads > 1:
            stream.thread_type = "AUTO"
            stream.thread_count = threads
        src_w, src_h = stream.codec_context.width, stream.codec_context.height
        if src_w <= 0 or src_h <= 0:
            raise DataError("video stream has no frame size")
        width, out_h = _target_size(src_w, src_h, height, fmt)
        src_rate = stream.average_rate or stream.guessed_rate
        out_fps = float(fps) if fps else (float(src_rate) if src_rate else None)
        output = _FrameWriter(partial, fmt, width, out_h, out_fps, threads)
        closers.append(output.abort)
        packets, decoded, kept = _decode_kept_frames(container, stream, fps, width, out_h, output.write,
                                                     on_progress)
        if decoded == 0:
            raise DataError("no frames could be decoded (empty or truncated video stream)")
        if stream.frames and packets < stream.frames:
            # The container's index (mp4 moov) lists more frames than the file holds: its data was cut.
            raise DataError(f"truncated: the header lists {stream.frames} frames but only {packets} are in the "
                            f"file")
        output.finish()
        os.replace(partial, final)  # the rename that marks the output finished
        result.status, result.frames, result.fps = "extracted", kept, out_fps
    return result


def parse_clip_id(video: str) -> tuple[str, int, int] | None:
    """``<source>_<start>_<end>`` -> (source prefix, start, end), the way Tennis and Figure Skating name a clip cut
    from a longer video (frames ``start <= i < end`` of the source); None when the id does not end in two
    numbers."""
    parts = video.rsplit("_", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


def match_source(prefix: str, sources: dict[str, Path]) -> Path | None:
    """The source video whose id is ``prefix`` or, dropping ``_``-fields from the end, its longest prefix (Figure
    Skating's ``<video>_<segment>`` names a segment of ``<video>``)."""
    fields = prefix.split("_")
    for n in range(len(fields), 0, -1):
        found = sources.get("_".join(fields[:n]))
        if found is not None:
            return found
    return None


def cut_clip(source: str | Path, out_dir: str | Path, video: str, start: int, stop: int, *, height: int | None = 224,
             fmt: str = "jpg", threads: int = 1, on_progress: Callable[[int], None] | None = None) -> ExtractResult:
    """Extract frames ``start <= i < stop`` of ``source`` as the clip ``video`` (or skip it when its output is
    there). Seeks to the keyframe before ``start`` (exact frame indices, see VideoFileSource); never raises on bad
    input: failures come back as ``status='failed'`` with a one-line reason."""
    from pespot.data.frames import VideoFileSource

    source = Path(source)
    final = output_path(out_dir, video, fmt)
    result = ExtractResult(source=f"{source} [{start}:{stop}] (clip {video})", video=video, output=str(final),
                           status="failed")
    if _skip_finished(result, final):
        return result
    with _writing(result, source, final) as closers:
        partial = _prepare(final)
        frames = VideoFileSource(source, threads=threads)
        closers.append(frames.close)
        if not 0 <= start < stop <= frames.num_frames:
            raise DataError(f"frames [{start}, {stop}) are not inside the video's [0, {frames.num_frames})")
        frames.width, frames.height = _target_size(frames.source_width, frames.source_height, height, fmt)
        output = _FrameWriter(partial, fmt, frames.width, frames.height, frames.fps, threads)
        closers.append(output.abort)
        i = 0
        for chunk in frames.iter_chunks(start, stop, chunk=32):
            for rgb in chunk.numpy():
                output.write(i, rgb)
                i += 1
            if on_progress is not None:
                on_progress(len(chunk))
        output.finish()
        os.replace(partial, final)
        result.status, result.frames, result.fps = "extracted", i, frames.fps
    return result


def plan_cuts(entries: list[tuple[Path, str, str | None]], label_videos: list, labels: str | Path
              ) -> tuple[list[tuple[Path, str, int, int]], list[ExtractResult]]:
    """(source, clip id, start, stop) for every labelled clip, and a failure for each clip that cannot be cut (an
    id that is not ``<source>_<start>_<end>``, no such source among the inputs, a range that disagrees with
    ``num_frames``) and for each input that cannot be read as a source."""
    sources = {video: path for path, video, problem in entries if problem is None}
    failed = [ExtractResult(source=str(path), video=video, output="", status="failed", error=problem)
              for path, video, problem in entries if problem is not None]
    jobs = []
    for v in label_videos:
        parsed = parse_clip_id(v.video)
        problem = None
        if parsed is None:
            problem = "the video id is not <source>_<start>_<end>: nothing says where to cut it from"
        else:
            prefix, start, stop = parsed
            path = match_source(prefix, sources)
            if path is None:
                problem = f"no source video '{prefix}' (or a prefix of it) among the inputs"
            elif v.num_frames >= 0 and stop - start != v.num_frames:
                problem = (f"the id says frames {start}-{stop} ({stop - start} frames) but num_frames="
                           f"{v.num_frames}: not a frame range (FineGym's ids are in seconds)")
            else:
                jobs.append((path, v.video, start, stop))
                continue
        failed.append(ExtractResult(source=f"{labels} (clip {v.video})", video=v.video, output="", status="failed",
                                    error=problem))
    return jobs, failed


def _cut_one(args: tuple) -> ExtractResult:
    source, out_dir, video, start, stop, kwargs = args
    return cut_clip(source, out_dir, video, start, stop, **kwargs)


def _write_error(err: OSError, final: Path) -> str:
    """One line for a failed write of ``final`` (a full disk says so); its partial output is already deleted."""
    reason = err.strerror or str(err) or type(err).__name__
    if err.errno in _DISK_FULL:
        reason = f"disk full ({reason})"
    return f"cannot write {final}: {reason}; nothing of this video was kept"


def _extract_one(args: tuple) -> ExtractResult:
    source, out_dir, video, kwargs = args
    return extract_video(source, out_dir, video, **kwargs)


# ------------------------------------------------------------------------------------------------------------
# many videos


def extract_videos(inputs: Iterable[str | Path], out_dir: str | Path, *, height: int | None = 224,
                   fps: float | None = None, fmt: str = "jpg", workers: int = 1, labels: str | Path | None = None,
                   cut: bool = False, progress: bool = True) -> list[ExtractResult]:
    """Extract every input video (files or directories of videos) into ``out_dir``, ``workers`` at a time.

    With ``labels`` (an E2E-Spot split JSON), each output's frame count must equal ``num_frames`` of the video
    with the same id; a mismatch makes that video fail (its output is kept for inspection). With ``cut`` (needs
    ``labels``), the outputs are the split's clips instead, each cut from the input video its id names
    (``<source>_<start>_<end>``: frames ``start <= i < end``; Tennis rallies, Figure Skating segments).
    """
    from tqdm import tqdm

    from pespot.data.labels import load_split, validate_split

    if fmt not in ("jpg", "mp4"):
        raise PespotError(f"--format must be jpg or mp4, got '{fmt}'")
    if height is not None and height < 0:
        raise PespotError(f"--height must be positive (or 0 to keep the size), got {height}")
    if fps is not None and fps <= 0:
        raise PespotError(f"--fps must be > 0, got {fps}")
    if fmt == "mp4" and height and height % 2:
        raise PespotError(f"--height {height} must be even for --format mp4 (yuv420p)")
    if cut and not labels:
        raise PespotError("--cut needs --labels SPLIT.json: the split's video ids say which frames to cut")
    if cut and fps is not None:
        raise PespotError("--cut keeps the source frame rate (the ids count source frames): drop --fps")
    expected = None
    if labels:
        label_videos = load_split(labels)
        validate_split(label_videos, None, str(labels))  # a duplicated id would make the check ambiguous
        expected = {v.video: v.num_frames for v in label_videos}
    entries = find_videos(inputs)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PespotError(f"{out_dir}: cannot create the output folder ({err.strerror or err})") from None
    results: dict[int, ExtractResult] = {}
    if cut:
        cuts, failed = plan_cuts(entries, label_videos, labels)
        results = dict(enumerate(failed))
        todo = list(range(len(failed), len(failed) + len(cuts)))
        workers = max(1, min(workers, len(todo)))
        threads = max(1, (os.cpu_count() or 1) // workers)
        kwargs = {"height": height, "fmt": fmt, "threads": threads}
        worker_fn, one_fn = _cut_one, cut_clip
        jobs = {i: (src, out_dir, video, start, stop, kwargs) for i, (src, video, start, stop) in zip(todo, cuts)}
        total = len(failed) + len(cuts)
    else:
        for i, (src, video, problem) in enumerate(entries):
            if problem is not None:  # reported like a video that failed; the others still run
                results[i] = ExtractResult(source=str(src), video=video, output="", status="failed", error=problem)
        todo = [i for i in range(len(entries)) if i not in results]
        workers = max(1, min(workers, len(todo)))
        threads = max(1, (os.cpu_count() or 1) // workers)
        kwargs = {"height": height, "fps": fps, "fmt": fmt, "threads": threads}
        worker_fn, one_fn = _extract_one, extract_video
        jobs = {i: (entries[i][0], out_dir, entries[i][1], kwargs) for i in todo}
        total = len(entries)
    bar = tqdm(total=len(jobs), unit="video", desc="cut" if cut else "extract", disable=not progress or None)
    try:
        if workers == 1:
            # One video at a time: a second bar counts decoded frames, so a long video shows progress too.
            frame_bar = tqdm(unit="frame", desc="frames", position=1, leave=False,
                             disable=not progress or None)
            try:
                for i, job in jobs.items():
                    r = one_fn(*job[:-1], **job[-1], on_progress=frame_bar.update)
                    results[i] = r
                    bar.update(1)
                    bar.set_postfix_str(f"{r.video}: {r.status}", refresh=False)
            finally:
                frame_bar.close()
        elif jobs:
            # spawn, not fork: a forked child must not inherit the parent's FFmpeg decoder threads.
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = {pool.submit(worker_fn, job): i for i, job in jobs.items()}
                for future in as_completed(futures):
                    r = future.result()
                    results[futures[future]] = r
                    bar.update(1)
                    bar.set_postfix_str(f"{r.video}: {r.status}", refresh=False)
    finally:
        bar.close()
    ordered = [results[i] for i in range(total)]
    if expected is not None:
        for r in ordered:
            if r.status == "failed":
                continue
            if r.video not in expected:
                r.warning = f"not in {labels}: frame count not checked"
            elif expected[r.video] >= 0 and r.frames != expected[r.video]:
                r.status = "failed"
                r.error = (f"{r.frames} frames extracted but {labels} says num_frames={expected[r.video]} "
                           f"(output kept at {r.output})")
    return ordered
