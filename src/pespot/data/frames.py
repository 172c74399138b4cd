"""Frame sources: read frames ``start..stop`` of one video as a uint8 tensor (T, H, W, 3).

Three kinds of frame store, one interface (``FrameSource``):

* a **JPEG folder** in E2E-Spot layout (``000000.jpg``, ``000001.jpg``...; frame ``f`` is ``f:06d.jpg``) or in
  T-DEED layout (``frame{N}.jpg``, where ``N`` may start at an offset and skip numbers: frames are numbered in
  sorted numeric order, so frame 0 is the smallest ``N``);
* a **video file** decoded with PyAV, with exact frame-index seeking;
* the **compact store**: one short-GOP 224p mp4 per video (``pespot extract --format mp4``), read like any video.

Frame indexing of video files: frame ``i`` is the ``i``-th frame the decoder outputs from the start of the video
stream (presentation order). Timestamps only locate frames for seeking; they never place frames on a time grid,
so a variable-frame-rate video is indexed by its decoded order and ``fps`` is its average rate. A video's index
(presentation timestamps of its packets and where its keyframes are) is built once by demuxing packets, without
decoding, and cached per process.

Sources are cheap to open, picklable and fork-safe: the PyAV container is opened lazily in the process that reads,
so a ``FrameSource`` can be handed to DataLoader workers.
"""

from __future__ import annotations

import abc
import bisect
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pespot.errors import DataError

if TYPE_CHECKING:
    import torch
    from typing_extensions import Self

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")

_E2E_NAME = re.compile(r"^(\d+)\.(?:jpg|jpeg)$", re.IGNORECASE)  # 000123.jpg
_TDEED_NAME = re.compile(r"^frame(\d+)\.(?:jpg|jpeg)$", re.IGNORECASE)  # frame123.jpg


def _tensor(array: np.ndarray) -> torch.Tensor:
    # torch is imported on first use: extraction workers and the CLI do not pay for it.
    import torch

    return torch.from_numpy(array)


def resized_size(width: int, height: int, target_height: int | None) -> tuple[int, int]:
    """(width, height) after resizing to ``target_height`` with the aspect kept and the width rounded to even."""
    if target_height is None or target_height == height:
        return width, height
    if target_height <= 0:
        raise DataError(f"target height must be positive, got {target_height}")
    new_width = max(2, round(width * target_height / height / 2.0) * 2)
    return new_width, int(target_height)


class FrameSource(abc.ABC):
    """Frames of one video. ``read(start, stop)`` -> uint8 tensor (stop - start, height, width, 3)."""

    path: Path
    num_frames: int
    fps: float | None
    height: int  # of the frames returned (after the optional resize)
    width: int

    @abc.abstractmethod
    def read(self, start: int, stop: int) -> torch.Tensor:
        """Frames ``start <= i < stop`` as a uint8 tensor (T, H, W, 3); out-of-range indices are a DataError."""

    def iter_chunks(self, start: int = 0, stop: int | None = None, chunk: int = 64) -> Iterator[torch.Tensor]:
        """Frames ``start..stop`` in order, as tensors of at most ``chunk`` frames, without random access."""
        stop = self.num_frames if stop is None else stop
        self._check_range(start, stop)
        for s in range(start, stop, chunk):
            yield self.read(s, min(stop, s + chunk))

    def close(self) -> None:
        """Release open files (the source reopens them when read again)."""

    def __len__(self) -> int:
        return self.num_frames

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}('{self.path}', num_frames={self.num_frames}, fps={self.fps}, "
                f"size={self.width}x{self.height})")

    def _check_range(self, start: int, stop: int) -> None:
        if not (0 <= start <= stop <= self.num_frames):
            raise DataError(f"{self.path}: frames [{start}, {stop}) outside the video's "
                            f"[0, {self.num_frames})")


# ------------------------------------------------------------------------------------------------------------
# JPEG folders


class JpegFolderSource(FrameSource):
    """A folder of JPEG frames (E2E-Spot ``%06d.jpg`` or T-DEED ``frame{N}.jpg``), decoded with PIL."""

    def __init__(self, path: str | Path, height: int | None = None, fps: float | None = None):
        self.path = Path(path)
        self.fps = fps
        try:
            names = os.listdir(self.path)
        except OSError as err:
            raise DataError(f"{self.path}: cannot list frame folder ({err.strerror})") from None
        e2e, tdeed = _parse_names(names, _E2E_NAME), _parse_names(names, _TDEED_NAME)
        if e2e and tdeed:
            raise DataError(f"{self.path}: mixes '000000.jpg' and 'frame0.jpg' names; expected one layout")
        if not e2e and not tdeed:
            raise DataError(f"{self.path}: no frames (expected 000000.jpg... or frame0.jpg...)")
        if e2e:
            # E2E-Spot: the file number is the frame index; a gap is a missing frame, reported when read.
            self._pattern = "{:06d}.jpg" if all(len(n) == 10 for n in e2e.values()) else None
            self._numbers: np.ndarray | None = None
            self._names: dict[int, str] | None = None if self._pattern else e2e
            self.num_frames = max(e2e) + 1
            first_name = e2e[min(e2e)]
        else:
            # T-DEED: numbers may start anywhere (absolute source frames) and skip (strided extraction).
            numbers = sorted(tdeed)
            self._pattern = None
            self._numbers = np.asarray(numbers, dtype=np.int64)
            self._names = tdeed
            self.num_frames = len(numbers)
            first_name = tdeed[numbers[0]]
        src_w, src_h = _image_size(self.path / first_name)
        self.source_width, self.source_height = src_w, src_h
        self.width, self.height = resized_size(src_w, src_h, height)

    def _file(self, index: int) -> Path:
        if self._numbers is not None:  # T-DEED: the index-th number in sorted order
            return self.path / self._names[int(self._numbers[index])]
        if self._pattern is not None:
            return self.path / self._pattern.format(index)
        name = self._names.get(index)
        return self.path / (name if name is not None else f"{index:06d}.jpg")

    def read(self, start: int, stop: int) -> torch.Tensor:
        self._check_range(start, stop)
        out = np.empty((stop - start, self.height, self.width, 3), dtype=np.uint8)  # (T, H, W, 3)
        for i in range(start, stop):
            out[i - start] = self._load(i)
        return _tensor(out)

    def _load(self, index: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        file = self._file(index)
        try:
            with Image.open(file) as img:
                size = (img.width, img.height)
                if size == (self.width, self.height):
                    return np.asarray(img.convert("RGB"))
                if (self.source_width, self.source_height) == (self.width, self.height):  # no resize asked
                    raise DataError(f"{self.path}: frame {index} ({file.name}) is {size[0]}x{size[1]}, "
                                    f"expected {self.width}x{self.height} like the first frame")
                # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale directly (much faster for 1080p -> 224p);
                # it never goes below the requested size, so the final resize still downsamples.
                img.draft("RGB", (self.width, self.height))
                return np.asarray(img.convert("RGB").resize((self.width, self.height), Image.BILINEAR))
        except FileNotFoundError:
            raise DataError(f"{self.path}: frame {index} is missing ({file.name} not found)") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise DataError(f"{self.path}: frame {index} ({file.name}) cannot be decoded ({err})") from None


def _parse_names(names: list[str], pattern: re.Pattern) -> dict[int, str]:
    found: dict[int, str] = {}
    for name in names:
        m = pattern.match(name)
        if m:
            found[int(m.group(1))] = name
    return found


def _image_size(file: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            return img.width, img.height
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{file}: cannot read JPEG frame ({err})") from None


# ------------------------------------------------------------------------------------------------------------
# Video files (PyAV)


@dataclass(frozen=True)
class _VideoIndex:
    """What a video file holds, found by demuxing packets (no decoding)."""

    pts: np.ndarray | None  # (N,) sorted presentation timestamps; None when the container has no usable pts
    key_pts: list[int]  # presentation timestamps of keyframes, sorted
    num_frames: int
    fps: float | None
    width: int
    height: int
    time_base: float


_INDEX_CACHE: dict[tuple, _VideoIndex] = {}
_INHERITED: list = []  # containers opened before a fork: never freed in the child (see VideoFileSource._stream)
_INDEX_LOCK = threading.Lock()


def open_container(path: Path):
    """Open a video file with PyAV; a clear DataError when it is missing, empty, unreadable or has no video."""
    import av

    if not path.exists():
        raise DataError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as err:
        raise DataError(f"{path}: not a readable video ({av_error_reason(err)})") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"{path}: no video stream")
    return container


def av_error_reason(err: Exception) -> str:
    """The short reason of a PyAV/FFmpeg error (its strerror), for one-line messages."""
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def video_index(path: str | Path) -> _VideoIndex:
    """Frame count, timestamps and keyframes of a video file, by demuxing its packets once (cached)."""
    import av

    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise DataError(f"{path}: video file not found") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _INDEX_LOCK:
        cached = _INDEX_CACHE.get(key)
    if cached is not None:
        return cached
    container = open_container(path)
    try:
        stream = container.streams.video[0]
        pts: list[int] = []
        key_pts: list[int] = []
        missing_pts = False
        demuxed = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the flush packet at the end
                demuxed += 1
                if getattr(packet, "is_discard", False):
                    continue  # a packet the decoder is told to drop (mp4 edit lists): not a frame
                if packet.pts is None:
                    missing_pts = True
                    pts.append(len(pts))
                else:
                    pts.append(int(packet.pts))
                if packet.is_keyframe:
                    key_pts.append(pts[-1])
        except av.FFmpegError as err:
            raise DataError(f"{path}: cannot demux after {len(pts)} frames ({av_error_reason(err)})") from None
        if not pts:
            raise DataError(f"{path}: video stream has no frames (empty or truncated)")
        if stream.frames and demuxed < stream.frames:
            # An mp4 whose index (moov) is intact but whose data was cut: the header promises more frames.
            raise DataError(f"{path}: truncated: the header says {stream.frames} frames but only {demuxed} "
                            f"can be read")
        rate = stream.average_rate or stream.guessed_rate
        index = _VideoIndex(
            pts=None if missing_pts else np.asarray(sorted(pts), dtype=np.int64),
            key_pts=sorted(key_pts),
            num_frames=len(pts),
            fps=float(rate) if rate else None,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            time_base=float(stream.time_base) if stream.time_base else 0.0,
        )
    finally:
        container.close()
    if index.width <= 0 or index.height <= 0:
        raise DataError(f"{path}: video stream has no frame size")
    with _INDEX_LOCK:
        _INDEX_CACHE[key] = index
    return index


class VideoFileSource(FrameSource):
    """A video file decoded with PyAV; ``read`` seeks to the keyframe before ``start`` and decodes forward."""

    def __init__(self, path: str | Path, height: int | None = None, threads: int = 1):
        self.path = Path(path)
        index = video_index(self.path)
        self._index = index
        self.num_frames = index.num_frames
        self.fps = index.fps
        self.source_width, self.source_height = index.width, index.height
        self.width, self.height = resized_size(index.width, index.height, height)
        self._threads = threads
        self._container = None
        self._pid = None

    # Pickling drops the open container: each process (DataLoader worker) opens its own.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_container"] = None
        state["_pid"] = None
        return state

    def _stream(self):
        if self._container is not None and self._pid != os.getpid():
            # Forked (DataLoader worker): the parent's container must not be used here, nor freed, because
            # freeing a codec context whose decoder threads lived in the parent blocks forever. Keep it alive.
            _INHERITED.append(self._container)
            self._container = None
        if self._container is None:
            self._container = open_container(self.path)
            self._pid = os.getpid()
            stream = self._container.streams.video[0]
            # One decoder thread by default: clips are short, workers already run in parallel, and a threaded
            # decoder is not fork-safe. threads=0 lets FFmpeg choose.
            stream.thread_type = "AUTO" if self._threads != 1 else "SLICE"
            stream.thread_count = self._threads
        return self._container, self._container.streams.video[0]

    def close(self) -> None:
        if self._container is not None:
            if self._pid == os.getpid():
                self._container.close()
            else:
                _INHERITED.append(self._container)
        self._container = None

    def _to_array(self, frame) -> np.ndarray:
        if (frame.width, frame.height) != (self.source_width, self.source_height):
            raise DataError(f"{self.path}: frame size changes mid-stream ({frame.width}x{frame.height}, "
                            f"expected {self.source_width}x{self.source_height})")
        if (self.width, self.height) == (frame.width, frame.height):
            return frame.to_ndarray(format="rgb24")
        # swscale resizes and converts to RGB in one pass (faster than decoding full size and resizing in torch).
        return frame.to_ndarray(width=self.width, height=self.height, format="rgb24", interpolation="BILINEAR")

    def read(self, start: int, stop: int) -> torch.Tensor:
        self._check_range(start, stop)
        out = np.empty((stop - start, self.height, self.width, 3), dtype=np.uint8)  # (T, H, W, 3)
        for i, frame in self._decode(start, stop):
            out[i - start] = self._to_array(frame)
        return _tensor(out)

    def iter_chunks(self, start: int = 0, stop: int | None = None, chunk: int = 64) -> Iterator[torch.Tensor]:
        """Frames ``start..stop`` in chunks of at most ``chunk``: one seek, then one forward decode."""
        stop = self.num_frames if stop is None else stop
        self._check_range(start, stop)
        buf: list[np.ndarray] = []
        for _, frame in self._decode(start, stop):
            buf.append(self._to_array(frame))
            if len(buf) == chunk:
                yield _tensor(np.stack(buf))  # (chunk, H, W, 3)
                buf = []
        if buf:
            yield _tensor(np.stack(buf))

    def _decode(self, start: int, stop: int) -> Iterator[tuple[int, object]]:
        """Yield (index, decoded frame) for every ``start <= index < stop`` in order; DataError if one is missing."""
        import av

        if start >= stop:
            return
        expected = start  # the next index the caller must get
        try:
            for i, frame in self._decode_from(start):
                if i < expected:
                    continue
                if i > expected:  # a frame of the index never came out of the decoder
                    break
                yield i, frame
                expected += 1
                if expected == stop:
                    return
        except av.FFmpegError as err:
            self.close()
            raise DataError(f"{self.path}: frame {expected} cannot be decoded ({av_error_reason(err)})") from None
        raise DataError(f"{self.path}: frame {expected} cannot be decoded (the stream ends early or is "
                        f"truncated; its packets say {self.num_frames} frames)")

    def _decode_from(self, start: int) -> Iterator[tuple[int, object]]:
        """Decoded frames with their index, from the last keyframe at or before ``start`` to the end."""
        pts = self._index.pts
        if pts is None:
            # No timestamps in this container: decode from the very start and count frames (slow but exact).
            self.close()
            container, stream = self._stream()
            for i, frame in enumerate(container.decode(stream)):
                yield i, frame
            return
        target = int(pts[start])
        keys = self._index.key_pts
        k = bisect.bisect_right(keys, target) - 1
        # Decoding forward from the last keyframe at or before the wanted frame reaches it exactly. If the
        # demuxer lands after the target anyway (broken keyframe flags), fall back to the start of the stream.
        for seek_pts in ([keys[k]] if k >= 0 else []) + [None]:
            container, stream = self._stream()
            if seek_pts is None:
                self.close()
                container, stream = self._stream()
            else:
                container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
            first = True
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                if first:
                    first = False
                    if frame.pts > target and seek_pts is not None:
                        break
                i = int(np.searchsorted(pts, frame.pts))
                if i < len(pts) and pts[i] == frame.pts:  # frames outside the index are not counted
                    yield i, frame
            else:
                return  # the stream ended


# ------------------------------------------------------------------------------------------------------------
# Entry points


def open_frames(path: str | Path, height: int | None = None, fps: float | None = None,
                threads: int = 1) -> FrameSource:
    """Open a frame store: a JPEG folder, a video file or a compact-store mp4.

    ``height`` resizes every frame to that height (aspect kept, width rounded to even). ``fps`` sets the rate of
    a JPEG folder (which has none of its own; ``None`` means unknown); video files report their own.
    ``threads`` is the number of decoder threads for video files (0: FFmpeg chooses).
    """
    path = Path(path)
    if path.is_dir():
        return JpegFolderSource(path, height=height, fps=fps)
    if path.is_file():
        return VideoFileSource(path, height=height, threads=threads)
    raise DataError(f"{path}: no such frame folder or video file")


def has_frame_images(folder: str | Path) -> bool:
    """``folder`` holds JPEG frames named as a frame folder's (``000000.jpg``... or ``frame0.jpg``...)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return any(_E2E_NAME.match(n) or _TDEED_NAME.match(n) for n in names)


def find_video_frames(frames_root: str | Path, video_id: str) -> Path:
    """Where the frames of ``video_id`` live: the folder ``<root>/<video>/`` or the file ``<root>/<video>.mp4``."""
    root = Path(frames_root)
    folder = root / video_id
    if folder.is_dir():
        return folder
    mp4 = root / f"{video_id}.mp4"
    if mp4.is_file():
        return mp4
    raise DataError(f"video '{video_id}': no frames in {root} (neither the folder {folder} nor the file {mp4})")


def iter_frames(path: str | Path, height: int | None = None, start: int = 0, stop: int | None = None,
                chunk: int = 64, threads: int = 1) -> Iterator[torch.Tensor]:
    """Read a whole video (or ``start..stop``) in order, as uint8 tensors (t <= chunk, H, W, 3).

    For video files this decodes sequentially without seeking, holding at most ``chunk`` frames in memory.
    """
    source = open_frames(path, height=height, threads=threads)
    try:
        yield from source.iter_chunks(start, stop, chunk)
    finally:
        source.close()
