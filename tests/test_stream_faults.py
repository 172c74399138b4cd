"""Live sources whose end or middle is misreported (issue 19, item 5): an MPEG-TS cut inside a transport packet,
garbage inside a TS stream, an HTTP body without a length that ends normally, a second Ctrl-C during the final
scoring, and an mp4 with its index at the end on standard input.

Each is tried through ``pespot stream`` with the real tiny spotter on PyAV-encoded clips whose frames carry their
index (conftest); the frames kept are compared with ``pespot infer`` on the intact file. Marked
``fault("live-source", cases)``.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import pattern_index, run_cli, write_tiny_run, write_video

from pespot import stream

CLASSES = ["bounce", "hit", "serve"]
CLIP = 8
GOP = 12  # write_video's keyframe interval
TS_VIDEO_PID = 0x100  # the PID FFmpeg's MPEG-TS muxer gives the first stream
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return write_tiny_run(tmp_path_factory.mktemp("live") / "run", CLASSES, height=48, clip_len=CLIP)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("live-clips")
    return {"ts": write_video(root / "rally.ts", 60), "mp4": write_video(root / "rally.mp4", 60),
            "faststart": write_video(root / "faststart.mp4", 60, faststart=True)}


def infer_events(run: Path, video: Path, tmp_path: Path, capsys) -> list[dict]:
    out = tmp_path / f"infer_{video.stem}.json"
    code, _, err = run_cli(capsys, "infer", run, video, "--out", out, "--batch-size", "1", "--quiet")
    assert code == 0, err
    return json.loads(out.read_text())[0]["events"]


def read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def lines(stderr: str, kind: str) -> list[str]:
    """The ``pespot stream: KIND: ...`` lines of stderr."""
    return [line for line in stderr.splitlines() if line.startswith(f"pespot stream: {kind}:")]


def assert_same_events(streamed: list[dict], inferred: list[dict], frames: range) -> None:
    """The events of ``frames`` are those of infer on the intact file (frame, label, score)."""
    got = [e for e in streamed if e["frame"] in frames]
    want = [e for e in inferred if e["frame"] in frames]
    assert [(e["frame"], e["label"]) for e in got] == [(e["frame"], e["label"]) for e in want]
    np.testing.assert_allclose([e["score"] for e in got], [e["score"] for e in want], rtol=1e-6)


def stream_subprocess(run: Path, *args: str, data: bytes, env: dict | None = None) -> tuple[int, str, str]:
    """``pespot stream RUN - ARGS`` with ``data`` written to its standard input through a pipe."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"), **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "pespot", "stream", str(run), "-", *args], input=data,
                          capture_output=True, env=env, timeout=180, check=False)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


# ------------------------------------------------------------------------------------------------------------
# an MPEG-TS cut inside a transport packet


def video_pes_starts(data: bytes) -> list[int]:
    """Offsets of the 188-byte transport packets that start a PES packet (a frame) of the video stream."""
    starts = []
    for offset in range(0, len(data) - 187, 188):
        pid = ((data[offset + 1] & 0x1F) << 8) | data[offset + 2]
        if data[offset] == 0x47 and data[offset + 1] & 0x40 and pid == TS_VIDEO_PID:
            starts.append(offset)
    return starts


@pytest.mark.fault("live-source", cases=3)
def test_a_ts_cut_inside_a_packet_is_reported_from_a_file_and_a_pipe(tiny_run, clips, tmp_path, capsys):
    # Cut 100 bytes into the first transport packet of a frame: the demuxer drops the partial packet, and with it
    # the whole frame, without a word (the cut mp4 of test_stream.py is reported; this one ended with exit 0).
    data = clips["ts"].read_bytes()
    starts = video_pes_starts(data)
    cut_at = starts[len(starts) * 6 // 10] + 100
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[:cut_at])
    expected = infer_events(tiny_run, clips["ts"], tmp_path, capsys)
    out = tmp_path / "events.jsonl"
    code, _, err = run_cli(capsys, "stream", tiny_run, cut, "--out", out, "--quiet")
    piped_code, piped_out, piped_err = stream_subprocess(tiny_run, "--video", "rally", "--quiet", data=data[:cut_at])
    for source, status, stderr, events in ((str(cut), code, err, read_jsonl(out.read_text())),
                                           ("standard input", piped_code, piped_err, read_jsonl(piped_out))):
        errors = lines(stderr, "error")
        assert status == 1, stderr
        assert len(errors) == 1, stderr
        assert errors[0].startswith(f"pespot stream: error: {source}: the stream ends mid-packet after "), errors
        assert f"its last MPEG-TS packet is cut: {cut_at} bytes" in errors[0]
        decoded = int(errors[0].split(" after ")[1].split()[0])
        assert 30 <= decoded < 60
        assert errors[0].endswith("were written"), errors
        # The events of the frames before the cut are kept: those whose windows and NMS neighbours all lie
        # before it are the intact file's.
        safe = range(decoded - CLIP - 1)
        assert any(e["frame"] in safe for e in events)
        assert_same_events(events, expected, safe)
    # A named pipe, read as standard input is: the same message, after the same frames.
    fifo = tmp_path / "live.ts"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(data[:cut_at],), daemon=True)
    writer.start()
    source = stream.LiveSource(str(fifo), height=48)
    frames = 0
    with pytest.raises(stream.SourceError, match=f"its last MPEG-TS packet is cut: {cut_at} bytes") as raised:
        for _ in source.frames():
            frames += 1
    writer.join(timeout=30)
    assert raised.value.kind == "truncated" and str(raised.value).startswith(f"{fifo}: the stream ends mid-packet")
    assert frames == raised.value.frames == decoded


# ------------------------------------------------------------------------------------------------------------
# garbage inside a TS stream


@pytest.mark.fault("live-source")
def test_garbage_inside_a_ts_stream_is_reported_and_later_frames_keep_their_numbers(tiny_run, tmp_path, capsys):
    # 100 kB of random bytes over the middle of a 200-frame TS: about 75 frames are lost. Before, frames were
    # counted and every frame after the gap came out about 75 numbers early, without a warning.
    intact = write_video(tmp_path / "intact.ts", 200)
    data = intact.read_bytes()
    at = len(data) // 3
    garbage = np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(data[:at] + garbage + data[at + len(garbage):])

    # The frames themselves: each decoded frame sits at the number its content (its index) says.
    source = stream.LiveSource(str(damaged), height=48)
    indices = [pattern_index(frame) for frame in source.frames()]
    assert len(indices) == 200
    assert source.lost_frames >= 60 and source.gaps
    first_lost = min(start for start, _ in source.gaps)
    last_lost = max(start + count - 1 for start, count in source.gaps)
    assert indices[:first_lost] == list(range(first_lost))
    keyframe = (last_lost // GOP + 1) * GOP  # frames from here on decode as in the intact file
    assert indices[keyframe:] == list(range(keyframe, 200))

    # Through the command: one warning with the count, exit 0, and after the gap the intact file's events.
    expected = infer_events(tiny_run, intact, tmp_path, capsys)
    out = tmp_path / "events.jsonl"
    code, _, err = run_cli(capsys, "stream", tiny_run, damaged, "--out", out, "--json")
    assert code == 0, err
    warnings = lines(err, "warning")
    assert len(warnings) == 1, err
    assert f"{source.lost_frames} frames were missing from the source" in warnings[0]
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["frames"] == 200 and summary["lost_frames"] == source.lost_frames
    events = read_jsonl(out.read_text())
    assert_same_events(events, expected, range(first_lost - CLIP - 2))
    assert_same_events(events, expected, range(keyframe + 2 * CLIP, 200))


@pytest.mark.fault("live-source", cases=2)
def test_variable_rate_and_timestamp_free_streams_are_counted_as_infer_counts_them(tmp_path):
    # Placing frames by timestamps must not invent frames where timestamps are irregular on purpose (variable
    # frame rate) or absent (a raw H.264 stream): those frames are counted, as pespot infer counts them.
    vfr = write_video(tmp_path / "vfr.mp4", 12, timestamps_ms=[0, 40, 80, 200, 240, 250, 260, 400, 440, 480, 600,
                                                                 640])
    raw = tmp_path / "raw.h264"
    import av

    with av.open(str(write_video(tmp_path / "src.ts", 30))) as src, av.open(str(raw), "w", format="h264") as dst:
        video = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = video
                dst.mux(packet)
    for path, num_frames in ((vfr, 12), (raw, 30)):
        source = stream.LiveSource(str(path), height=48)
        assert [pattern_index(frame) for frame in source.frames()] == list(range(num_frames)), path
        assert source.lost_frames == 0


# ------------------------------------------------------------------------------------------------------------
# an HTTP body without a length


class _NoLengthHandler(http.server.BaseHTTPRequestHandler):
    """/plain/NAME: the file with no Content-Length, ended by closing the connection (HTTP/1.0); /chunked/NAME:
    chunked transfer encoding, ended by the last chunk."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        mode, name = self.path.strip("/").split("/", 1)
        data = (Path(self.server.folder) / name).read_bytes()
        if mode == "chunked":
            self.protocol_version = "HTTP/1.1"
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(data), 4096):
                chunk = data[start: start + 4096]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(data)
        self.close_connection = True


@pytest.mark.fault("live-source", cases=2)
def test_an_http_body_without_a_length_ends_normally_and_every_frame_is_scored(tiny_run, clips, tmp_path, capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoLengthHandler)
    server.folder = str(clips["ts"].parent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    expected = infer_events(tiny_run, clips["ts"], tmp_path, capsys)
    try:
        for mode in ("plain", "chunked"):
            out = tmp_path / f"{mode}.jsonl"
            url = f"http://127.0.0.1:{server.server_address[1]}/{mode}/rally.ts"
            code, _, err = run_cli(capsys, "stream", tiny_run, url, "--out", out, "--timeout", "5", "--json")
            assert code == 0, (mode, err)
            assert not lines(err, "error") and not lines(err, "warning"), (mode, err)
            summary = json.loads(err.strip().splitlines()[-1])
            assert summary["frames"] == 60 and summary["error"] is None, mode
            assert_same_events(read_jsonl(out.read_text()), expected, range(60))  # the last frames included
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------------------------
# a second Ctrl-C while the last frames are scored


@pytest.mark.fault("live-source")
def test_a_second_ctrl_c_during_the_final_scoring_is_counted_in_the_summary(tiny_run, clips, tmp_path, capsys,
                                                                            monkeypatch):
    # Ctrl-C after 40 frames, then again while the frames after the last final one are scored: the events stop
    # before frame 40, and the summary says where (it said the events of all 40 frames were written).
    push, finish = stream.StreamSpotter.push, stream.StreamScorer.finish

    def push_then_interrupt(self, frame):
        if self.scorer.received == 40:
            signal.raise_signal(signal.SIGINT)  # pespot stream's handler raises KeyboardInterrupt here
        return push(self, frame)

    def interrupted_finish(self):
        signal.raise_signal(signal.SIGINT)
        return finish(self)

    monkeypatch.setattr(stream.StreamSpotter, "push", push_then_interrupt)
    monkeypatch.setattr(stream.StreamScorer, "finish", interrupted_finish)
    out = tmp_path / "events.jsonl"
    code, _, err = run_cli(capsys, "stream", tiny_run, clips["mp4"], "--out", out, "--quiet")
    monkeypatch.undo()
    assert code == 130, err
    events = read_jsonl(out.read_text())
    message = [line for line in err.splitlines() if line.startswith("pespot stream: interrupted")]
    assert len(message) == 1, err
    assert message[0].startswith(f"pespot stream: interrupted after 40 frames; a second interrupt stopped the "
                                 f"final scoring: the {len(events)} events written cover frames 0 to "), message
    written = int(message[0].split(" cover frames 0 to ")[1].split()[0]) + 1
    assert written < 40 and message[0].endswith(f"only (not frames {written} to 39)")
    assert all(e["frame"] < written for e in events)
    assert_same_events(events, infer_events(tiny_run, clips["mp4"], tmp_path, capsys), range(written))


# ------------------------------------------------------------------------------------------------------------
# an mp4 with its index at the end on standard input


@pytest.mark.fault("live-source", cases=2)
def test_an_mp4_with_its_index_at_the_end_on_stdin_is_spooled_and_spotted(tiny_run, clips, tmp_path, capsys):
    # `cat camera.mp4 | pespot stream RUN -`: most camera files keep their index (moov) after the media data,
    # which FFmpeg must seek back to. It failed with "ends mid-packet ... partial file"; now the input is copied to
    # a temporary file, said in one line, read, and the copy removed. A faststart mp4 still streams as it arrives.
    spool = tmp_path / "tmp"
    spool.mkdir()
    for kind, spooled in (("mp4", True), ("faststart", False)):
        expected = infer_events(tiny_run, clips[kind], tmp_path, capsys)
        code, stdout, err = stream_subprocess(tiny_run, "--video", clips[kind].stem, "--quiet",
                                              data=clips[kind].read_bytes(), env={"TMPDIR": str(spool)})
        assert code == 0, err
        notes = [line for line in err.splitlines() if line.strip()]
        if spooled:
            assert len(notes) == 1 and notes[0].startswith("pespot stream: standard input is an MP4/MOV whose "
                                                           "index (moov) follows its media data"), err
            assert "temporary file" in notes[0] and "deleted" in notes[0]
        else:
            assert notes == [], err
        assert_same_events(read_jsonl(stdout), expected, range(60))
        assert list(spool.iterdir()) == [], "the temporary copy is removed"


def test_mp4_heads_that_need_seeking_are_told_apart(clips, tmp_path):
    assert stream.index_at_end(clips["mp4"].read_bytes()[:4096])
    assert not stream.index_at_end(clips["faststart"].read_bytes()[:4096])
    assert not stream.index_at_end(clips["ts"].read_bytes()[:4096])
    assert not stream.index_at_end(write_video(tmp_path / "a.mkv", 2).read_bytes()[:4096])
    fragmented = b"\x00\x00\x00\x18ftypiso5\x00\x00\x02\x00iso5iso6" + b"\x00\x00\x00\x10moov" + bytes(8)
    assert not stream.index_at_end(fragmented)  # a fragmented (live) mp4: its index comes first
    assert not stream.index_at_end(b"\x00\x00\x00\x18ftypisom")  # too short to tell: read as it comes
