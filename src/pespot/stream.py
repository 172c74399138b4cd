"""Live spotting: frames in as they arrive (a file, a URL FFmpeg reads, or standard input), events out the moment
they are final.

Three stages, each holding a bounded amount of data whatever the stream's length:

1. ``LiveSource`` decodes the source in order with PyAV (one frame at a time, resized to the model's height as
   ``pespot infer`` does) and turns source faults into one-line errors: a read that waits longer than the
   timeout (a stall), a connection that breaks (a drop), a stream that ends inside a packet (a truncation,
   an MPEG-TS cut inside a transport packet included). The frames still in the decoder are decoded however the
   input ends; an HTTP body without a length ends when its connection closes, normally. Frames are numbered
   by their timestamps while these are regular: frames lost to damaged or skipped data leave a gap, filled
   with copies of the frame before it and reported, so that later frames keep their numbers (frames without
   timestamps, or with a variable frame rate, are counted as ``pespot infer`` counts them). An mp4 whose
   index follows its media data cannot be read from a pipe: standard input is then copied to a temporary
   file first.
2. ``StreamScorer`` keeps the last clip of frames and runs a window each time one is full: windows start at 0,
   s, 2s, ... (``s`` from the run's ``eval.overlap``, as ``pespot infer``). A frame's score is the mean over the
   windows that cover it **and end at most ``lookahead`` frames after it**; once no later window can add to
   it, it is final. With the full look-ahead (``clip_len - 1``, the default) every covering window counts and
   the scores are those of ``pespot infer``. A smaller look-ahead L lowers the latency to L frames (the first
   ``clip_len`` frames wait for the first window) and runs windows every ``min(s, L + 1)`` frames, so that
   every frame has one; it costs ``clip_len / min(s, L + 1)`` model frames per frame.
3. ``EventFinaliser`` turns final scores into events exactly as ``pespot.infer.scores_to_events`` does on the
   whole video (threshold, then per-class NMS), emitting an event once nothing later can change it:
   ``local_max`` decides a frame when the ``nms_window`` frames after it are final; ``greedy`` decides an event
   once every higher-scoring neighbour is decided (a chain of rising scores can delay it); ``soft`` decides a
   run of candidates of a class once ``nms_window`` frames without a candidate follow it. A decision still
   open after ``max_delay`` frames (``greedy``/``soft`` with a low threshold) is forced as if the stream ended
   there (``forced`` counts them; only then can stream and ``pespot infer`` differ). ``top_k`` is per video
   and has no streaming form: it is not applied.

When the stream ends, fails, or is interrupted, the frames received are scored as if the stream had ended
there (the last, zero-padded window as in ``pespot infer``) and their events are emitted: nothing already
received is lost (a second interrupt stops that scoring; the report says up to which frame the events were
written).
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from pespot.data.labels import Event
from pespot.errors import ConfigError, DataError

# greedy/soft NMS in a stream: a decision still open after this many clip lengths is forced (--max-delay)
MAX_DELAY_CLIPS = 10

NOT_CANDIDATE, UNDECIDED, KEPT, DROPPED = -1, 0, 1, 2
NETWORK_SCHEMES = ("http://", "https://", "rtsp://", "rtsps://", "rtmp://", "udp://", "tcp://", "srt://", "rtp://")
DEFAULT_TIMEOUT = 10.0  # seconds without data before a source counts as stalled
DAMAGED_TAIL = 8  # a frame decoded with errors among the last this many frames means the stream was cut
HEAD_BYTES = 4096  # the first bytes of a pipe read ahead: enough to tell an mp4's layout, a TS packet size
TS_PACKET_SIZES = (188, 192, 204)
GRID_TOLERANCE = 0.25  # frames: a timestamp further than this from the constant-rate grid means a variable rate
MAX_GAP_SECONDS = 60.0  # a timestamp jump longer than this is a discontinuity, not frames lost
LISTED_GAPS = 5  # gaps kept for the warning (the others are counted): memory stays bounded


# The NMS methods of pespot.registry.NMS that this module decides incrementally (a plug-in NMS runs in `infer`).
STREAM_NMS = ("local_max", "greedy", "soft", "none")

class SourceError(DataError):
    """The source failed after it was opened: ``kind`` is stall, drop, truncated or format (the frame size changed);
    ``frames`` were decoded."""

    def __init__(self, message: str, kind: str, frames: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.frames = frames


# ------------------------------------------------------------------------------------------------------------
# 1. the source


def source_name(source: str) -> str:
    """The video id of a source: a file's stem, a URL's last path element (without suffix), 'stdin' for '-'."""
    if source == "-":
        return "stdin"
    if source.startswith(NETWORK_SCHEMES):
        tail = source.split("://", 1)[1].split("?", 1)[0].rstrip("/")
        last = tail.rsplit("/", 1)[-1] if "/" in tail else tail
        return Path(last).stem or last or "stream"
    return Path(source).stem or source


class PipeReader:
    """Standard input (or a named pipe) as a file object for PyAV, read in Python so that a read can be given up.

    FFmpeg's own ``pipe:0`` blocks in ``read(2)`` until data or end of input, and nothing (not Ctrl-C, not a
    timeout) can end that wait: on an open but idle pipe, Ctrl-C would wait for the writer. Here each read waits
    in ``select`` at most ``poll`` seconds at a time, so it can stop when ``interrupt()`` is called (from
    another thread) or when no data came for ``timeout`` seconds. Either ends the input as an end of file;
    ``stalled`` / ``interrupted`` say which, so the source can report it (an exception raised inside PyAV's read
    callback would be printed and dropped by PyAV, not raised). ``peek`` reads the first bytes ahead (to tell
    the container) and hands them out again.
    """

    def __init__(self, fd: int, timeout: float, poll: float = 0.1) -> None:
        self.fd = fd
        self.timeout = timeout
        self.poll = poll
        self.stalled = False
        self.interrupted = False
        self.bytes = 0
        self._ahead = b""  # read by peek(), not yet by read()
        try:
            import select

            select.select([fd], [], [], 0)
            self._select = select.select
        except (OSError, ValueError, AttributeError):  # select() does not take pipes on Windows: plain reads
            self._select = None

    def interrupt(self) -> None:
        """End the input at the next poll (callable from any thread)."""
        self.interrupted = True

    def peek(self, size: int) -> bytes:
        """The first ``size`` bytes of what is left (fewer at the end of the input, a stall or an interrupt);
        the next reads return them again."""
        while len(self._ahead) < size:
            data = self._read(size - len(self._ahead))
            if not data:
                break
            self._ahead += data
        return self._ahead[:size]

    def read(self, size: int) -> bytes:
        if self._ahead:
            data, self._ahead = self._ahead[:size], self._ahead[size:]
            return data
        return self._read(size)

    def _read(self, size: int) -> bytes:
        if self.stalled or self.interrupted:
            return b""
        waited = 0.0
        while self._select is not None:
            try:
                ready, _, _ = self._select([self.fd], [], [], self.poll)
            except KeyboardInterrupt:  # Ctrl-C in the main thread while opening: PyAV would print and drop it
                self.interrupted = True
                return b""
            if self.interrupted:
                return b""
            if ready:
                break
            waited += self.poll
            if waited >= self.timeout:
                self.stalled = True
                return b""
        data = os.read(self.fd, size)
        self.bytes += len(data)
        return data


def index_at_end(head: bytes) -> bool:
    """Whether ``head``, the first bytes of an input, starts an MP4/MOV (ISO BMFF) whose media data (``mdat``)
    comes before its index (``moov``): FFmpeg must then seek back, which a pipe cannot. False for other
    containers, for a faststart or fragmented (live) mp4, and when ``head`` ends before either box."""
    if head[4:8] not in (b"ftyp", b"wide", b"free", b"skip", b"mdat", b"moov", b"pnot"):
        return False
    offset = 0
    while offset + 8 <= len(head):
        size, kind = int.from_bytes(head[offset: offset + 4], "big"), head[offset + 4: offset + 8]
        if kind in (b"moov", b"moof"):
            return False
        if kind == b"mdat":
            return True
        if size == 1 and offset + 16 <= len(head):  # a 64-bit size follows the type
            size = int.from_bytes(head[offset + 8: offset + 16], "big")
        if size < 8:  # 0: the box runs to the end of the file; < 8: not a box
            return False
        offset += size
    return False


def _ts_packet_size(head: bytes) -> int | None:
    """The MPEG-TS packet size whose sync bytes (0x47) line up at the start of ``head``: 188, 192 (M2TS: a
    4-byte time code before each packet) or 204 (with Reed-Solomon parity); None if none does."""
    for size, offset in ((188, 0), (192, 4), (204, 0)):
        if len(head) >= offset + 2 * size + 1 and all(head[offset + k * size] == 0x47 for k in range(3)):
            return size
    return None


class LiveSource:
    """A video source read once, in order: a file, a URL FFmpeg reads (http, rtsp, udp...), '-' (a container
    on standard input) or a named pipe. ``frames()`` yields uint8 (H, W, 3) frames at ``height`` (aspect kept,
    as ``pespot infer`` reads videos), numbered by their timestamps where the stream has regular ones.

    ``timeout``: seconds a read (and the opening) may wait for data. ``fmt``: FFmpeg's input format when it
    cannot be guessed (e.g. ``mpegts`` on a pipe, ``lavfi`` for a generated test stream). ``notify(message)``
    is told what the source does that the user should know of (standard input spooled to a temporary file).
    """

    def __init__(self, source: str, height: int | None = None, timeout: float = DEFAULT_TIMEOUT,
                 fmt: str | None = None, fps: float | None = None, name: str | None = None,
                 notify: Callable[[str], None] | None = None) -> None:
        from pespot.data.frames import resized_size

        if not timeout > 0:
            raise ConfigError(f"--timeout: expected a positive number of seconds, got {timeout}")
        self.source = source
        self.name = name or source_name(source)
        self.timeout = float(timeout)
        self.label = "standard input" if source == "-" else source  # for messages
        self.notify = notify or (lambda message: None)
        self.reader: PipeReader | None = None  # standard input or a named pipe, read in Python
        self.head = b""  # the first bytes of a pipe (which cannot be read again)
        self.spool: Path | None = None  # the temporary copy of a pipe that must be seeked
        self._fd: int | None = None  # a named pipe opened here
        self.container = None
        try:
            self.container = self._open(self._input(fmt), fmt)
            if not self.container.streams.video:
                raise DataError(f"{self.label}: no video stream")
            self.stream = self.container.streams.video[0]
            ctx = self.stream.codec_context
            if ctx.width <= 0 or ctx.height <= 0:
                raise DataError(f"{self.label}: video stream has no frame size")
        except BaseException:
            self.close()
            raise
        self.stream.thread_type = "SLICE"  # frame threading would hold frames back: latency
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.rate = float(rate) if rate else None  # the stream's own frame rate: frames are placed on its grid
        self.fps = float(fps) if fps else self.rate
        self.source_width, self.source_height = ctx.width, ctx.height
        self.width, self.height = resized_size(self.source_width, self.source_height, height)
        self.declared_frames = int(self.stream.frames or 0)  # 0 when the container does not say (live, ts, mkv)
        self.decoded = 0  # frames yielded, the copies filling gaps included
        self.corrupt_frames = 0  # decoded with errors (concealed): counted and reported
        self.skipped_packets = 0  # undecodable packets followed by good ones: counted and reported
        self.lost_frames = 0  # frames missing by their timestamps, filled with copies of the frame before
        self.gaps: list[tuple[int, int]] = []  # (first frame, frames) of the first LISTED_GAPS gaps
        self.gap_count = 0
        self.discontinuities = 0  # timestamps that went back or jumped too far: the grid starts again there
        self.timed = self.rate is not None  # frames placed by timestamps; False once they turn out irregular
        self._anchor: tuple[float, int] | None = None  # (seconds, frame number) the grid is counted from
        self._previous: np.ndarray | None = None  # the last frame yielded (fills a gap)
        self._last_corrupt = -(10**9)  # index of the last frame decoded with errors
        self._pending: str | None = None  # the error of the last undecodable packets, until good data follows
        self._last_log = ""  # FFmpeg's last error message before the last good packet
        self._body_bytes: int | None = None  # an HTTP body of unknown length: the bytes it had at its end

    def _input(self, fmt: str | None):
        """What FFmpeg opens: the URL or path; a ``PipeReader`` for standard input or a named pipe; the path of
        a temporary copy of the pipe for an mp4 with its index at the end."""
        import stat

        if self.source == "-":
            fd = 0
        elif fmt is not None or self.source.startswith(NETWORK_SCHEMES):
            return self.source
        else:
            path = Path(self.source)
            if not path.exists():
                raise DataError(f"{self.source}: no such video file (expected a file, a URL such as http://, "
                                "rtsp://, udp://, or - for standard input)")
            if path.is_dir():
                raise DataError(f"{self.source}: is a folder; pespot stream reads one video (a file, URL or -)")
            if not stat.S_ISFIFO(path.stat().st_mode):
                return self.source
            self._fd = fd = os.open(path, os.O_RDONLY)  # waits for a writer, as FFmpeg would
        self.reader = PipeReader(fd, self.timeout)
        self.head = self.reader.peek(HEAD_BYTES)
        return str(self._spool()) if index_at_end(self.head) else self.reader

    def _spool(self) -> Path:
        """Copy the rest of the pipe to a temporary file (removed by ``close()``); its path."""
        import tempfile

        self.notify(f"{self.label} is an MP4/MOV whose index (moov) follows its media data, which cannot be "
                    "decoded as it arrives: it is copied to a temporary file (deleted afterwards) and spotted "
                    "once it has ended")
        fd, name = tempfile.mkstemp(prefix="pespot-stream-", suffix=".mp4")
        self.spool = Path(name)
        try:
            with os.fdopen(fd, "wb") as copy:
                while data := self.reader.read(1 << 20):
                    copy.write(data)
        except OSError as err:
            raise DataError(f"{self.label}: cannot copy it to the temporary file {name} "
                            f"({err.strerror or err}); give the mp4 as a file, or remux it with "
                            "`ffmpeg -i IN -c copy -movflags faststart OUT.mp4` to stream it") from None
        if self.reader.interrupted:
            raise KeyboardInterrupt
        if self.reader.stalled:
            raise DataError(f"{self.label}: no data for {self.timeout:g} s (--timeout) while copying an mp4 with "
                            "its index at the end (it is spotted once it has ended)")
        return self.spool

    def _open(self, url, fmt: str | None):
        """``av.open`` with its failures as one-line errors."""
        import av

        from pespot.data.frames import av_error_reason

        timeout = None if self.reader is not None else (self.timeout, self.timeout)
        try:
            return av.open(url, format=fmt, timeout=timeout, metadata_errors="ignore")
        except av.ExitError:
            raise DataError(f"{self.label}: no data within {self.timeout:g} s (--timeout) while opening") from None
        except av.FFmpegError as err:
            if self.reader is not None and self.reader.interrupted:
                raise KeyboardInterrupt from None  # Ctrl-C while waiting for the header (PipeReader.read)
            if self.reader is not None and self.reader.stalled:
                raise DataError(f"{self.label}: no data within {self.timeout:g} s (--timeout) while opening"
                                ) from None
            if self.reader is not None and self.reader.bytes == 0:
                raise DataError(f"{self.label}: no data (the input is empty)") from None
            raise DataError(f"{self.label}: cannot open as a video stream ({av_error_reason(err)})") from None
        except (OSError, ValueError) as err:  # ConnectionRefusedError and friends come through as OSError
            reason = getattr(err, "strerror", None) or str(err)
            raise DataError(f"{self.label}: cannot open as a video stream ({reason})") from None

    def close(self) -> None:
        """Release the container (and its connection), the named pipe and the temporary copy; ``frames()`` does
        it when it ends."""
        if self.container is not None:
            self.container.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.remove_copy()

    def remove_copy(self) -> None:
        """Delete the temporary copy of standard input, if any (safe while it is still being read)."""
        if self.spool is not None:
            with contextlib.suppress(OSError):
                self.spool.unlink()
            self.spool = None

    def interrupt(self) -> None:
        """Make ``frames()`` end soon, from another thread (Ctrl-C). Standard input stops at once, whatever
        the writer does; FFmpeg's own network reads cannot be interrupted and end at their next data or at the
        timeout (``run_stream`` does not wait for them more than a second)."""
        if self.reader is not None:
            self.reader.interrupt()

    @property
    def interrupted(self) -> bool:
        return self.reader is not None and self.reader.interrupted

    def frames(self) -> Iterator[np.ndarray]:
        """Decoded frames in order (placed by their timestamps, see ``_place``); a ``SourceError`` when the
        source stalls, drops or ends mid-packet, after the frames decoded before the fault (those still in the
        decoder included) have been yielded."""
        import av.logging

        level = av.logging.get_level()
        av.logging.set_level(av.logging.ERROR)  # FFmpeg's own account of a truncation ("File ended prematurely")
        try:
            # All threads: the decoder's slice threads log too (and would otherwise print to stderr).
            with av.logging.Capture(local=False) as logs:
                for frame in self._decode(logs):
                    yield from self._place(frame)
                self._check_end(logs)
        finally:
            av.logging.set_level(level)
            self.close()  # in the thread that decodes (run_stream's read-ahead thread)

    def _decode(self, logs: list) -> Iterator[Any]:
        """PyAV's decoded frames in order, the frames left in the decoder included however the demuxer stops;
        then the stall or drop that stopped it, if any, as a ``SourceError``."""
        import av

        from pespot.data.frames import av_error_reason

        failed = 0  # how many packets in a row could not be decoded
        fault: tuple[str, str] | None = None  # (kind, reason) of a stall or a drop
        try:
            for packet in self.container.demux(self.stream):
                try:
                    decoded = packet.decode()
                except av.ExitError:
                    raise
                except av.FFmpegError as err:
                    self._pending, failed = av_error_reason(err), failed + 1
                    continue
                if decoded and packet.size > 0:  # good data (the empty last packet only flushes)
                    if self._pending is not None:  # a glitch inside the stream, not its end
                        self.skipped_packets += failed
                        self._pending, failed = None, 0
                    if logs:  # only what FFmpeg says after the last good packet can be about the end
                        self._last_log = str(logs[-1][2]).strip()
                        logs.clear()
                yield from decoded
            return  # the demuxer's last (empty) packet has flushed the decoder
        except av.ExitError:
            fault = ("stall", "")
        except av.InvalidDataError as err:
            self._pending = av_error_reason(err)  # the container itself is cut or corrupt
        except (av.FFmpegError, OSError) as err:
            self._body_bytes = _unknown_length_end(str(err), logs)
            if self._body_bytes is None:
                fault = ("drop", getattr(err, "strerror", None) or str(err) or type(err).__name__)
        # The frames the decoder still holds (reordering) were received whole: they are decoded and kept.
        with contextlib.suppress(av.FFmpegError):
            yield from self.stream.codec_context.decode(None)
        if fault is not None and fault[0] == "stall":
            raise SourceError(f"{self.label}: no data for {self.timeout:g} s (--timeout): the source stalled "
                              f"after {self.decoded} frames", "stall", self.decoded)
        if fault is not None:
            raise SourceError(f"{self.label}: the source dropped after {self.decoded} frames ({fault[1]})", "drop",
                              self.decoded)

    def _check_end(self, logs: list) -> None:
        """At the end of the input: a ``SourceError`` if it stalled or ended inside a packet."""
        if self.reader is not None and self.reader.stalled:
            raise SourceError(f"{self.label}: no data for {self.timeout:g} s (--timeout): the source "
                              f"stalled after {self.decoded} frames", "stall", self.decoded)
        if self.interrupted:
            return  # Ctrl-C: the input was cut on purpose, not truncated
        truncation = _truncation_message(logs) or self._pending
        if truncation is None and self.declared_frames and self.decoded - self.lost_frames < self.declared_frames:
            truncation = f"the header says {self.declared_frames} frames"
        if truncation is None and self._last_corrupt >= self.decoded - DAMAGED_TAIL:
            # A clean stream has no damaged frame; one among the last few (the decoder reorders a few
            # frames) is the partial last packet of a cut stream (MPEG-TS, raw H.264 say nothing else).
            self.corrupt_frames -= 1
            last = str(logs[-1][2]).strip() if logs else self._last_log
            truncation = "its last frames are damaged" + (f": {last}" if last else "")
        if truncation is None:
            truncation = self._cut_ts_packet()
        if truncation is not None:
            raise SourceError(f"{self.label}: the stream ends mid-packet after {self.decoded} frames "
                              f"({truncation.strip()})", "truncated", self.decoded)

    def _cut_ts_packet(self) -> str | None:
        """For MPEG-TS, whether the input ended inside a transport packet: FFmpeg drops a partial last packet
        (and the frame it began) without a word. Known where the bytes read are: a pipe, a file, an HTTP body
        of unknown length."""
        if self.container.format.name != "mpegts":
            return None
        head, total = self.head, None
        if self.reader is not None:
            total = self.reader.bytes
        elif self._body_bytes is not None:
            total = self._body_bytes
        elif Path(self.source).is_file():
            total = os.path.getsize(self.source)
            with open(self.source, "rb") as file:
                head = file.read(HEAD_BYTES)
        if total is None:
            return None
        # Where the start was seen, the packet size is known (and a stream joined mid-packet is not judged);
        # an HTTP body is whole only if it holds whole packets of some size.
        sizes = [_ts_packet_size(head)] if head else list(TS_PACKET_SIZES)
        if None in sizes or any(total % size == 0 for size in sizes):
            return None
        size = sizes[0] if len(sizes) == 1 else 188
        return f"its last MPEG-TS packet is cut: {total} bytes is not a whole number of {size}-byte packets"

    def _place(self, frame) -> Iterator[np.ndarray]:
        """``frame`` as an array, after a copy of the frame before it for each frame its timestamp says is
        missing (see ``_missing_before``)."""
        missing = self._missing_before(frame)
        if missing:
            if len(self.gaps) < LISTED_GAPS:
                self.gaps.append((self.decoded, missing))
            self.gap_count += 1
            self.lost_frames += missing
            for _ in range(missing):
                self.decoded += 1
                yield self._previous
        self._previous = self._to_array(frame)
        yield self._previous

    def _missing_before(self, frame) -> int:
        """How many frames are missing before ``frame`` by its timestamp.

        Frame n is due ``n / rate`` seconds after the first (``rate``: the stream's own frame rate). While every
        timestamp lies on that grid (within a quarter of a frame), a frame later than the next number is placed
        at its own, the numbers between being frames lost to damaged or skipped data, so that the numbers after
        a gap stay right. Timestamps off the grid (a variable frame rate) switch to counting frames, as ``pespot
        infer`` does, for the rest of the stream; a frame without a timestamp is counted; a timestamp that goes
        back or jumps more than ``MAX_GAP_SECONDS`` (a restarted encoder, a wrap) starts the grid again there."""
        if not self.timed or frame.pts is None or frame.time_base is None:
            self._anchor = None
            return 0
        seconds = float(frame.pts * frame.time_base)
        if self._anchor is None:
            self._anchor = (seconds, self.decoded)
            return 0
        position = self._anchor[1] + (seconds - self._anchor[0]) * self.rate
        number = math.floor(position + 0.5)
        if abs(position - number) > GRID_TOLERANCE:
            self.timed = False
            return 0
        missing = number - self.decoded
        if missing < 0 or missing > MAX_GAP_SECONDS * self.rate:
            self.discontinuities += 1
            self._anchor = (seconds, self.decoded)
            return 0
        return missing

    def _to_array(self, frame) -> np.ndarray:
        if (frame.width, frame.height) != (self.source_width, self.source_height):
            raise SourceError(f"{self.label}: frame size changes mid-stream ({frame.width}x{frame.height}, "
                              f"expected {self.source_width}x{self.source_height})", "format", self.decoded)
        if getattr(frame, "is_corrupt", False):
            self.corrupt_frames += 1
            self._last_corrupt = self.decoded
        self.decoded += 1
        if (self.width, self.height) == (frame.width, frame.height):
            return frame.to_ndarray(format="rgb24")
        # The same swscale call as pespot.data.frames.VideoFileSource: stream and infer see the same pixels.
        return frame.to_ndarray(width=self.width, height=self.height, format="rgb24", interpolation="BILINEAR")


def _unknown_length_end(error: str, logs: list) -> int | None:
    """The bytes of an HTTP body that had no declared length when its connection closed: FFmpeg reports it as
    an input/output error, the stream ending "prematurely" short of an unknown size, but it is the only way such
    a body can end. None for any other error (a body cut short of its Content-Length is a drop). ``error``:
    the error's text (PyAV appends FFmpeg's last error message); the message is taken out of ``logs``."""
    import re

    pattern = re.compile(r"ends prematurely at (\d+), should be (?:18446744073709551615|-1)\b")
    found = None
    for i in range(len(logs) - 1, -1, -1):
        if found := pattern.search(str(logs[i][2])):
            del logs[i]
            break
    found = found or pattern.search(error)
    return int(found.group(1)) if found else None


def _truncation_message(logs: list) -> str | None:
    """FFmpeg's last error message when it says the data ended early, else None."""
    words = ("prematurely", "truncat", "end of file", "partial", "incomplete")
    for entry in reversed(logs):
        message = str(entry[2]).strip()
        if any(w in message.lower() for w in words):
            return message
    return None


# ------------------------------------------------------------------------------------------------------------
# 2. frames -> final per-frame scores


class StreamScorer:
    """Frames in (one at a time), final per-frame scores (n, K+1) out; see the module docstring."""

    def __init__(self, predictor, overlap: float = 0.5, lookahead: int | None = None, tta: str | None = None
                 ) -> None:
        from pespot.infer import window_stride

        self.predictor = predictor
        self.tta = tta
        self.clip_len = clip_len = predictor.clip_len
        self.lookahead = clip_len - 1 if lookahead is None else int(lookahead)
        if not 0 <= self.lookahead <= clip_len - 1:
            raise ConfigError(f"--lookahead: expected 0 to {clip_len - 1} frames (the clip length minus one), got "
                              f"{lookahead}")
        self.stride = min(window_stride(clip_len, overlap), self.lookahead + 1)
        self.num_outputs = len(predictor.classes) + 1
        self.frames: collections.deque[np.ndarray] = collections.deque(maxlen=clip_len)  # the last clip_len
        self.received = 0
        self.next_end = clip_len - 1  # last frame of the next window
        self.last_end: int | None = None  # last frame of the last window run
        self.final_upto = 0  # frames < final_upto have been returned
        self.sums = np.zeros((0, self.num_outputs))  # frames [final_upto, final_upto + len)
        self.counts = np.zeros(0, dtype=np.int64)
        self.windows_run = 0

    @property
    def held_frames(self) -> int:
        """Frames and score rows held (for the bounded-memory check)."""
        return len(self.frames) + len(self.counts)

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Add the next frame (H, W, 3) uint8; returns the scores of the frames that became final (n, K+1)."""
        from pespot.infer import center_crop

        self.frames.append(center_crop(frame[None], self.predictor.crop)[0])
        index = self.received
        self.received += 1
        if index != self.next_end:
            return np.zeros((0, self.num_outputs), dtype=np.float32)
        start = index - self.clip_len + 1
        scores = self._score(np.stack(self.frames), self.clip_len)  # (T, K+1)
        # Window [start, index] counts for frame f if it ends within f's look-ahead (the first window counts
        # for every frame it covers: nothing earlier can).
        first = start if index == self.clip_len - 1 else max(start, index - self.lookahead)
        self._add(first, scores[first - start:])
        self.last_end = index
        self.next_end += self.stride
        # The next window ends at index + stride: frames it cannot count for (f + lookahead < index + stride)
        # are final now.
        return self._release(index + self.stride - self.lookahead)

    def finish(self) -> np.ndarray:
        """The stream ended: the frames after the last window get one zero-padded window (as ``pespot infer``);
        returns the scores of every frame not yet returned."""
        if self.received == 0:
            return np.zeros((0, self.num_outputs), dtype=np.float32)
        if self.last_end is None or self.last_end < self.received - 1:
            start = self.next_end - self.clip_len + 1
            tail = list(self.frames)[start - (self.received - len(self.frames)):]  # frames [start, received)
            window = np.zeros((self.clip_len, *tail[0].shape), dtype=np.uint8)
            window[: len(tail)] = np.stack(tail)
            scores = self._score(window, len(tail))[: len(tail)]
            first = max(start, self.final_upto)  # the stream ended: the window counts for every open frame
            self._add(first, scores[first - start:])
        return self._release(self.received)

    def _score(self, window: np.ndarray, valid: int) -> np.ndarray:
        from pespot.infer import _score_windows

        self.windows_run += 1
        return _score_windows(self.predictor, window[None], [valid], tta=self.tta)[0]

    def _add(self, first: int, scores: np.ndarray) -> None:
        stop = first + len(scores)
        grow = stop - self.final_upto - len(self.counts)
        if grow > 0:
            self.sums = np.concatenate([self.sums, np.zeros((grow, self.num_outputs))])
            self.counts = np.concatenate([self.counts, np.zeros(grow, dtype=np.int64)])
        lo = first - self.final_upto
        self.sums[lo: lo + len(scores)] += scores  # float64 sums of float32 scores, as pespot.infer
        self.counts[lo: lo + len(scores)] += 1

    def _release(self, upto: int) -> np.ndarray:
        n = max(0, min(upto, self.received) - self.final_upto)
        counts = self.counts[:n]
        if (counts == 0).any():
            raise AssertionError("stream scorer: a final frame has no window")  # a bug, not bad input
        out = (self.sums[:n] / counts[:, None]).astype(np.float32)
        self.sums, self.counts = self.sums[n:], self.counts[n:]
        self.final_upto += n
        return out


# ------------------------------------------------------------------------------------------------------------
# 3. final scores -> final events


class EventFinaliser:
    """Final per-frame scores in, final events out: the events ``scores_to_events`` (``top_k=None``) gives on the
    whole video, each returned once nothing after it can change it. See the module docstring."""

    def __init__(self, classes: list[str], threshold: float = 0.0, nms: str = "local_max", nms_window: int = 1,
                 max_delay: int = 1000) -> None:
        if nms not in STREAM_NMS:
            raise ConfigError(f"--nms '{nms}': expected one of {', '.join(STREAM_NMS)} (the NMS methods with an "
                              "incremental form)")
        if isinstance(nms_window, bool) or int(nms_window) != nms_window or nms_window < 0:
            raise ConfigError(f"--nms-window: expected a non-negative whole number of frames, got {nms_window!r}")
        if max_delay <= nms_window:
            raise ConfigError(f"--max-delay: expected more frames than the NMS window ({nms_window}), got "
                              f"{max_delay}")
        self.classes = list(classes)
        self.threshold = float(threshold)
        self.nms = nms
        self.window = int(nms_window)
        self.max_delay = int(max_delay)
        k = len(classes)
        self.start = 0  # frame of row 0
        self.scores = np.zeros((0, k))  # (n, K) event-class scores, float64 of the float32 scores
        self.status = np.zeros((0, k), dtype=np.int8)
        self.value = np.zeros((0, k))  # the score an event is reported with (soft-NMS: decayed)
        self.emitted_upto = 0  # events of frames < emitted_upto have been returned
        self.forced = 0  # decisions forced by max_delay
        self._final = False

    @property
    def known_end(self) -> int:
        """Frames < known_end have final scores."""
        return self.start + len(self.scores)

    @property
    def held_frames(self) -> int:
        """Frames held (for the bounded-memory check)."""
        return len(self.scores)

    def push(self, scores: np.ndarray) -> list[Event]:
        """Add the final scores (n, K+1) of the next frames; returns the events that became final."""
        if len(scores):
            cols = np.asarray(scores)[:, 1:].astype(np.float64)
            status = np.where(cols >= self.threshold, UNDECIDED, NOT_CANDIDATE).astype(np.int8)
            self.scores = np.concatenate([self.scores, cols])
            self.status = np.concatenate([self.status, status])
            self.value = np.concatenate([self.value, cols])
        return self._step()

    def finish(self) -> list[Event]:
        """The stream ended: every remaining event is final."""
        self._final = True
        return self._step()

    def _step(self) -> list[Event]:
        self._decide(forced=False)
        if not self._final and self.known_end - self._frontier() > self.max_delay:
            self.forced += 1
            self._decide(forced=True)
        frontier = self._frontier()
        events = self._emit(frontier)
        drop = max(0, frontier - self.window - self.start)  # keep the window before the first open frame
        if drop:
            self.scores, self.status, self.value = self.scores[drop:], self.status[drop:], self.value[drop:]
            self.start += drop
        return events

    def _frontier(self) -> int:
        """The first frame with an undecided candidate (known_end if none)."""
        rows = np.flatnonzero((self.status == UNDECIDED).any(axis=1))
        return self.start + int(rows[0]) if len(rows) else self.known_end

    def _emit(self, frontier: int) -> list[Event]:
        lo, hi = self.emitted_upto - self.start, frontier - self.start
        if hi <= lo:
            return []
        rows, cols = np.nonzero(self.status[lo:hi] == KEPT)  # row-major: by frame, then class (as infer)
        self.emitted_upto = frontier
        return [Event(frame=int(self.start + lo + r), label=self.classes[c], score=float(self.value[lo + r, c]))
                for r, c in zip(rows, cols)]

    def _decide(self, forced: bool) -> None:
        final = self._final or forced
        if self.nms == "none":
            self.status[self.status == UNDECIDED] = KEPT
        elif self.nms == "local_max":
            self._decide_local_max(final)
        elif self.nms == "greedy":
            self._decide_greedy(final)
        else:
            self._decide_soft(final)

    def _decide_local_max(self, final: bool) -> None:
        # Kept unless another candidate of the class within the window, at another frame, scores strictly
        # higher; decidable once the window after the frame is known.
        n, w = len(self.scores), self.window
        decidable = n if final else n - w
        if decidable <= 0:
            return
        masked = np.where(self.status != NOT_CANDIDATE, self.scores, -np.inf)  # (n, K)
        best = np.full((decidable, masked.shape[1]), -np.inf)  # best other candidate within the window
        for d in range(1, w + 1):
            if d < decidable:  # the frame d before
                np.maximum(best[d:], masked[: decidable - d], out=best[d:])
            after = min(decidable, n - d)  # rows whose frame d after is known
            if after > 0:
                np.maximum(best[:after], masked[d: d + after], out=best[:after])
        open_ = self.status[:decidable] == UNDECIDED
        beaten = best > self.scores[:decidable]
        self.status[:decidable][open_ & beaten] = DROPPED
        self.status[:decidable][open_ & ~beaten] = KEPT

    def _decide_greedy(self, final: bool) -> None:
        # Greedy NMS visits candidates by decreasing score (ties: the earlier frame): a candidate is kept unless a
        # kept one of its class lies within the window. Its decision is final once every higher-ranked neighbour
        # is decided and no unknown frame lies within its window.
        n, w = len(self.scores), self.window
        rows, cols = np.nonzero(self.status == UNDECIDED)
        if not len(rows):
            return
        scores = self.scores
        for i in np.lexsort((rows, -scores[rows, cols])):
            r, c = int(rows[i]), int(cols[i])
            s = scores[r, c]
            undecided_above = False
            dropped = False
            for q in range(max(0, r - w), min(n, r + w + 1)):
                st = self.status[q, c]
                if q == r or st == NOT_CANDIDATE:
                    continue
                if scores[q, c] > s or (scores[q, c] == s and q < r):  # ranks above r
                    if st == KEPT:
                        dropped = True
                        break
                    if st == UNDECIDED:
                        undecided_above = True
            if dropped:
                self.status[r, c] = DROPPED
            elif not undecided_above and (final or r + w < n):
                self.status[r, c] = KEPT

    def _decide_soft(self, final: bool) -> None:
        # Soft-NMS acts within runs of candidates of a class closer than the window to each other; a run is
        # decided as a whole once the window after its last candidate is known and holds no candidate.
        from pespot.postprocess import soft_nms_scores

        n, w = len(self.scores), self.window
        for c in range(self.scores.shape[1]):
            rows = np.flatnonzero(self.status[:, c] == UNDECIDED)
            if not len(rows):
                continue
            breaks = np.flatnonzero(np.diff(rows) > w) + 1
            for run in np.split(rows, breaks):
                if not final and run[-1] + w >= n:
                    continue  # may still grow
                keep, decayed = soft_nms_scores(run, self.scores[run, c], w, threshold=self.threshold)
                self.status[run, c] = np.where(keep, KEPT, DROPPED)
                self.value[run[keep], c] = decayed[keep]


# ------------------------------------------------------------------------------------------------------------
# putting it together


@dataclass
class StreamReport:
    """What a stream run did."""

    video: str
    fps: float | None
    frames: int = 0
    events: int = 0
    windows: int = 0
    seconds: float = 0.0
    error: str | None = None  # the source fault (stall, drop, truncation) that ended the stream, if any
    error_kind: str | None = None
    interrupted: bool = False
    forced: int = 0  # NMS decisions forced by max_delay
    corrupt_frames: int = 0
    skipped_packets: int = 0
    lost_frames: int = 0  # missing by their timestamps (damaged or skipped data), filled with the frame before
    # frames < written_frames have all their events written: ``frames`` unless a second interrupt stopped the
    # scoring of the last ones
    written_frames: int = 0
    # most frames received after a frame before its events were final (from frame clip_len on: the first
    # clip_len frames wait for the first window)
    max_latency_frames: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A plain dict."""
        return dict(self.__dict__)


class StreamSpotter:
    """Scorer + finaliser: ``push(frame)`` and ``finish()`` return the events that became final."""

    def __init__(self, predictor, overlap: float | None = None, lookahead: int | None = None,
                 threshold: float | None = None, nms: str | None = None, nms_window: int | None = None,
                 max_delay: int | None = None, tta: str | None = None) -> None:
        ev = predictor.cfg.eval
        self.scorer = StreamScorer(predictor, ev.overlap if overlap is None else overlap, lookahead, tta)
        self.finaliser = EventFinaliser(
            predictor.classes, ev.threshold if threshold is None else threshold, ev.nms if nms is None else nms,
            ev.nms_window if nms_window is None else nms_window,
            MAX_DELAY_CLIPS * predictor.clip_len if max_delay is None else max_delay)
        self.max_latency = 0

    @property
    def decided_upto(self) -> int:
        """Frames < decided_upto have all their events returned."""
        return self.finaliser.emitted_upto

    @property
    def held_frames(self) -> int:
        """Frames (pixels or scores) held by the stages."""
        return self.scorer.held_frames + self.finaliser.held_frames

    def push(self, frame: np.ndarray) -> list[Event]:
        """The next frame; returns the events that became final."""
        # Latency in the steady state: the first clip_len frames all wait for the first window.
        oldest = max(self.decided_upto, self.scorer.clip_len)
        events = self.finaliser.push(self.scorer.push(frame))
        if self.decided_upto > oldest:  # frame `oldest` waited until frame `received - 1` arrived
            self.max_latency = max(self.max_latency, self.scorer.received - 1 - oldest)
        return events

    def finish(self) -> list[Event]:
        """End of stream: the remaining events."""
        return self.finaliser.push(self.scorer.finish()) + self.finaliser.finish()


def event_record(video: str, event: Event, fps: float | None) -> dict[str, Any]:
    """One JSON line: video, frame, time (seconds, null when the fps is unknown), label, score."""
    time_s = round(event.frame / fps, 3) if fps and fps > 0 else None
    return {"video": video, "frame": event.frame, "time": time_s, "label": event.label, "score": event.score}


def run_stream(predictor, source: LiveSource, emit: Callable[[dict[str, Any]], None], *,
               overlap: float | None = None, lookahead: int | None = None, threshold: float | None = None,
               nms: str | None = None, nms_window: int | None = None, max_delay: int | None = None,
               tta: str | None = None, prefetch_frames: int | None = None) -> StreamReport:
    """Spot events in ``source`` as it is decoded, calling ``emit(record)`` for each final event.

    Options default to the run's ``eval.*`` config. A source fault or Ctrl-C ends the stream where it is: the
    frames received are scored, their events emitted, and the report says what happened (``error``,
    ``interrupted``; ``written_frames`` when a second Ctrl-C stopped the scoring of the last frames).
    """
    from pespot.infer import prefetch

    spotter = StreamSpotter(predictor, overlap=overlap, lookahead=lookahead, threshold=threshold, nms=nms,
                            nms_window=nms_window, max_delay=max_delay, tta=tta)
    report = StreamReport(video=source.name, fps=source.fps)
    started = time.perf_counter()
    pending: collections.deque[Event] = collections.deque()  # final events not yet written

    def send(events: list[Event]) -> None:
        # An event leaves ``pending`` once written: an interrupt between two writes loses none of the rest.
        pending.extend(events)
        while pending:
            emit(event_record(source.name, pending[0], source.fps))
            pending.popleft()
            report.events += 1

    interrupted = False
    # Decoding runs a little ahead in a thread (PyAV releases the GIL), at most one stride of frames; the
    # thread closes the source when it stops.
    # Stopped early (Ctrl-C, a failing --out), the decoder gets a second to let go: a network read blocked in
    # FFmpeg would otherwise hold the exit until its --timeout.
    frames = prefetch(source.frames(), depth=prefetch_frames or spotter.scorer.stride, join_timeout=1.0)
    try:
        for frame in frames:
            send(spotter.push(frame))
    except SourceError as err:
        report.error, report.error_kind = str(err), err.kind
    except KeyboardInterrupt:
        interrupted = True
        source.interrupt()  # a decoder waiting on an idle pipe stops now (closing waits for it)
    finally:
        frames.close()
    try:
        send(spotter.finish())
    except KeyboardInterrupt:  # a second Ctrl-C: stop now
        interrupted = True
    report.frames = spotter.scorer.received
    report.written_frames = pending[0].frame if pending else spotter.decided_upto
    report.windows = spotter.scorer.windows_run
    report.seconds = time.perf_counter() - started
    report.forced = spotter.finaliser.forced
    report.corrupt_frames = source.corrupt_frames
    report.skipped_packets = source.skipped_packets
    report.lost_frames = source.lost_frames
    report.max_latency_frames = spotter.max_latency
    report.interrupted = interrupted = interrupted or source.interrupted
    report.warnings += source_warnings(source)
    if report.forced:
        report.warnings.append(f"{report.forced} times an NMS decision waited more than --max-delay frames and "
                               "was forced (events near those points may differ from pespot infer)")
    if report.frames == 0 and report.error is None and not interrupted:
        report.error, report.error_kind = f"{source.label}: no frames decoded", "truncated"
    return report


def source_warnings(source: LiveSource) -> list[str]:
    """One line for each kind of damage the source showed: frames decoded with errors, packets skipped, frames
    missing by their timestamps, timestamps that jumped."""
    warnings = []
    if source.corrupt_frames:
        warnings.append(f"{source.corrupt_frames} frames were decoded with errors (damaged data)")
    if source.skipped_packets and not source.lost_frames:
        shifted = "" if source.timed else " (the stream has no regular timestamps: later frame numbers may be shifted)"
        warnings.append(f"{source.skipped_packets} packets could not be decoded and were skipped{shifted}")
    if source.lost_frames:
        spans = [f"{first}" if count == 1 else f"{first}-{first + count - 1}" for first, count in source.gaps]
        more = source.gap_count - len(spans)
        listed = ", ".join(spans) + (f" and {more} more gaps" if more else "")
        skipped = f"; {source.skipped_packets} packets could not be decoded" if source.skipped_packets else ""
        warnings.append(f"{source.lost_frames} frames were missing from the source (frames {listed}: damaged or "
                        f"lost data{skipped}); each gap holds copies of the frame before it, so later frames keep "
                        "the numbers their timestamps give")
    if source.discontinuities:
        warnings.append(f"the timestamps went back or jumped more than {MAX_GAP_SECONDS:g} s {source.discontinuities} "
                        "times; frames were counted across those points")
    return warnings


class JsonLinesWriter:
    """Writes each record as one JSON line and flushes it at once (a reader sees events as they are final);
    every line is written whole."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._file: IO[str]
        if self.path is None:
            self._file = sys.stdout
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def __call__(self, record: dict[str, Any]) -> None:
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except BrokenPipeError:
            # The reader of stdout went away (`| head`): stop, and keep Python from failing again at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._file.fileno())
            raise DataError("standard output was closed by its reader (broken pipe); stopping") from None

    def close(self) -> None:
        """Close the file (not stdout)."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                self._file.close()


def latency_seconds(frames: int, fps: float | None) -> float | None:
    """Frames of latency as seconds of stream time."""
    return frames / fps if fps and fps > 0 and math.isfinite(fps) else None
