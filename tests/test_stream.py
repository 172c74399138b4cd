"""`pespot stream`: final scores with a look-ahead, final events equal to the whole-video ones, bounded memory,
parity with `pespot infer` (file, HTTP, pipe), and source faults (stall, drop, truncation, bad URL, Ctrl-C).

The unit tests use a stand-in model whose output depends on the whole window (so a frame's score depends on
which windows were counted); the end-to-end tests use the real tiny spotter and PyAV-encoded videos served over
a local HTTP server or piped into a subprocess.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WindowModel, write_tiny_run, write_video

from pespot import infer, stream
from pespot.config import Config
from pespot.errors import ConfigError, DataError

CLASSES = ["bounce", "hit", "serve"]
CLIP = 8
ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


def stand_in_predictor(clip_len: int = CLIP, overlap: float = 0.5) -> infer.Predictor:
    cfg = Config()
    cfg.model.clip_len = clip_len
    cfg.data.crop = None
    cfg.data.height = 6
    cfg.eval.overlap = overlap
    return infer.Predictor(model=WindowModel(clip_len, 4).eval(), cfg=cfg, classes=CLASSES,
                           device=torch.device("cpu"), activation="sigmoid")


def random_frames(num_frames: int, seed: int = 0, size: tuple[int, int] = (6, 8)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_frames, *size, 3), dtype=np.uint8)


def array_stream(frames: np.ndarray) -> infer.FrameStream:
    return infer.FrameStream(name="array", fps=25.0, num_frames=len(frames),
                             chunks=lambda n: (frames[s: s + n] for s in range(0, len(frames), n)))


def reference_scores(predictor: infer.Predictor, frames: np.ndarray, stride: int, lookahead: int) -> np.ndarray:
    """Brute force: frame f's score is the mean over the windows (starts 0, stride, ...; the last one zero padded
    as pespot.infer) that cover f and end (nominally) at most max(f + lookahead, clip_len - 1)."""
    n, t = len(frames), predictor.clip_len
    starts = list(range(0, max(n - t, 0) + 1, stride)) if n >= t else []
    windows = [(s, frames[s: s + t], t) for s in starts]
    tail = starts[-1] + stride if starts else 0
    if not starts or starts[-1] + t < n:
        padded = np.zeros((t, *frames.shape[1:]), dtype=np.uint8)
        padded[: n - tail] = frames[tail:]
        windows.append((tail, padded, n - tail))
    sums = np.zeros((n, len(CLASSES) + 1))
    counts = np.zeros(n)
    for start, window, valid in windows:
        scores = infer._score_windows(predictor, window[None], [valid])[0]
        end = start + t - 1
        for f in range(start, min(start + valid, n)):
            if end <= max(f + lookahead, t - 1):
                sums[f] += scores[f - start]
                counts[f] += 1
    assert (counts > 0).all()
    return sums / counts[:, None]


# ------------------------------------------------------------------------------------------------------------
# frames -> final scores


@pytest.mark.parametrize("num_frames", [3, 8, 16, 18, 37])
@pytest.mark.parametrize("overlap", [0.5, 0.25, 0.0])
def test_full_lookahead_scores_equal_infer(num_frames, overlap):
    predictor = stand_in_predictor(overlap=overlap)
    frames = random_frames(num_frames, seed=num_frames)
    expected = infer.predict_scores(predictor, array_stream(frames), overlap=overlap, batch_size=1, progress=False)
    scorer = stream.StreamScorer(predictor, overlap=overlap)
    got = np.concatenate([scorer.push(f) for f in frames] + [scorer.finish()])
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("lookahead", [0, 1, 3, 5, 7])
@pytest.mark.parametrize("num_frames", [5, 23, 40])
def test_lookahead_bounds_latency_and_counts_only_windows_within_it(lookahead, num_frames):
    predictor = stand_in_predictor(overlap=0.5)
    frames = random_frames(num_frames, seed=lookahead)
    scorer = stream.StreamScorer(predictor, overlap=0.5, lookahead=lookahead)
    assert scorer.stride == min(4, lookahead + 1)
    got, released = [], 0
    for i, frame in enumerate(frames):
        out = scorer.push(frame)
        got.append(out)
        released += len(out)
        # every frame f with max(f + lookahead, clip_len - 1) <= i is final once frame i has arrived
        if i >= CLIP - 1:
            assert released >= i - lookahead + 1, (i, released)
        assert released <= i + 1
    got.append(scorer.finish())
    expected = reference_scores(predictor, frames, scorer.stride, lookahead)
    np.testing.assert_allclose(np.concatenate(got), expected, rtol=1e-6, atol=1e-7)


def test_lookahead_out_of_range_is_refused():
    predictor = stand_in_predictor()
    for bad in (-1, CLIP):
        with pytest.raises(ConfigError, match="--lookahead"):
            stream.StreamScorer(predictor, lookahead=bad)


# ------------------------------------------------------------------------------------------------------------
# final scores -> final events


def score_series(kind: str, num_frames: int = 240, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "noise":
        scores = rng.random((num_frames, len(CLASSES) + 1))
    else:  # smooth bumps and ramps: long chains of rising scores
        t = np.arange(num_frames)[:, None]
        scores = 0.5 + 0.4 * np.sin(t / rng.uniform(3, 15, size=(1, len(CLASSES) + 1)) + rng.uniform(0, 6))
        scores[rng.random(scores.shape) < 0.1] += 0.05  # some ties broken, some not
    return scores.astype(np.float32)


@pytest.mark.parametrize("nms, window", [("local_max", 0), ("local_max", 1), ("local_max", 3), ("greedy", 1),
                                         ("greedy", 4), ("soft", 2), ("none", 0)])
@pytest.mark.parametrize("threshold", [0.0, 0.6])
@pytest.mark.parametrize("kind", ["noise", "smooth"])
def test_finaliser_events_equal_whole_video_events(nms, window, threshold, kind):
    scores = score_series(kind, seed=window)
    expected = infer.scores_to_events(scores, CLASSES, threshold=threshold, nms=nms, nms_window=window)
    finaliser = stream.EventFinaliser(CLASSES, threshold=threshold, nms=nms, nms_window=window, max_delay=10**6)
    rng = np.random.default_rng(1)
    got, pos, early = [], 0, 0
    while pos < len(scores):
        step = int(rng.integers(1, 9))
        new = finaliser.push(scores[pos: pos + step])
        pos += step
        assert all(e.frame < finaliser.known_end for e in new)
        early += len(new)
        got += new
    got += finaliser.finish()
    assert [(e.frame, e.label, e.score) for e in got] == [(e.frame, e.label, e.score) for e in expected]
    if nms in ("local_max", "none") or threshold > 0:
        assert early > 0.5 * len(expected), "events must come out while the stream runs, not only at its end"


def test_local_max_events_are_final_after_the_nms_window():
    scores = score_series("noise", num_frames=120)
    finaliser = stream.EventFinaliser(CLASSES, threshold=0.0, nms="local_max", nms_window=2)
    for i in range(len(scores)):
        finaliser.push(scores[i: i + 1])
        assert finaliser.emitted_upto >= i + 1 - 2  # a frame is decided once the 2 frames after it are known


def test_open_decisions_are_forced_after_max_delay_and_memory_stays_bounded():
    # A ramp that keeps rising: greedy NMS cannot decide any of it until the stream ends.
    ramp = np.linspace(0.1, 0.9, 3000, dtype=np.float32)[:, None].repeat(len(CLASSES) + 1, axis=1)
    finaliser = stream.EventFinaliser(CLASSES, threshold=0.0, nms="greedy", nms_window=2, max_delay=50)
    held = 0
    for i in range(0, len(ramp), 10):
        finaliser.push(ramp[i: i + 10])
        held = max(held, finaliser.held_frames)
    finaliser.finish()
    assert finaliser.forced > 0
    assert held <= 50 + 2 + 10 + 1
    with pytest.raises(ConfigError, match="--max-delay"):
        stream.EventFinaliser(CLASSES, nms="greedy", nms_window=4, max_delay=4)


# ------------------------------------------------------------------------------------------------------------
# bounded memory on a long generated stream


def test_memory_is_bounded_on_a_long_generated_stream():
    """3,000 frames of FFmpeg's testsrc2 (lavfi) through the decoder, scorer and finaliser: what is held stays
    at a clip's worth of frames and the traced memory does not grow with the stream."""
    predictor = stand_in_predictor(clip_len=16)
    predictor.cfg.data.height = 24
    source = stream.LiveSource("testsrc2=size=32x24:rate=25:duration=120", height=24, fmt="lavfi")
    spotter = stream.StreamSpotter(predictor)
    held, frames, traced = 0, 0, []
    tracemalloc.start()
    try:
        for i, frame in enumerate(source.frames()):
            spotter.push(frame)
            held, frames = max(held, spotter.held_frames), frames + 1
            if i in (500, 1500, 2999):
                traced.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    spotter.finish()
    assert frames == 3000
    assert held <= 16 + 8 + 2 + 1  # one clip of frames, the look-ahead's open scores, the NMS context
    # A frame (2.3 kB) or a row of scores (~50 B) kept per frame would add 115 kB over these 2,500 frames.
    assert traced[2] - traced[0] < 20_000, traced


# ------------------------------------------------------------------------------------------------------------
# end to end: parity with `pespot infer`


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return write_tiny_run(tmp_path_factory.mktemp("run"), CLASSES, height=48, clip_len=CLIP)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {"mp4": write_video(root / "rally.mp4", 60), "mkv": write_video(root / "rally.mkv", 60)}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from pespot.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def infer_events(run: Path, video: Path, tmp_path: Path, capsys, *extra: str) -> list[dict]:
    out = tmp_path / f"infer_{video.stem}.json"
    code, _, err = run_cli(["infer", str(run), str(video), "--out", str(out), "--batch-size", "1", "--quiet",
                            *extra], capsys)
    assert code == 0, err
    return json.loads(out.read_text())[0]["events"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_events(streamed: list[dict], inferred: list[dict]) -> None:
    assert [(e["frame"], e["label"]) for e in streamed] == [(e["frame"], e["label"]) for e in inferred]
    np.testing.assert_allclose([e["score"] for e in streamed], [e["score"] for e in inferred], rtol=1e-6)


@pytest.mark.parametrize("nms", ["local_max", "greedy"])
def test_stream_of_a_file_emits_the_events_of_infer(tiny_run, videos, tmp_path, capsys, nms):
    expected = infer_events(tiny_run, videos["mp4"], tmp_path, capsys, "--nms", nms, "--nms-window", "2")
    out = tmp_path / "events.jsonl"
    code, stdout, err = run_cli(["stream", str(tiny_run), str(videos["mp4"]), "--out", str(out), "--nms", nms,
                                 "--nms-window", "2", "--json"], capsys)
    assert code == 0, err
    events = read_jsonl(out)
    assert events and stdout == ""
    assert_same_events(events, expected)
    assert {e["video"] for e in events} == {"rally"}
    assert all(e["time"] == round(e["frame"] / 25, 3) for e in events)
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["frames"] == 60 and summary["events"] == len(events) and summary["error"] is None
    if nms == "local_max":  # the look-ahead (clip_len - 1) + the NMS window
        assert summary["max_latency_frames"] == CLIP - 1 + 2


def test_stream_writes_json_lines_to_stdout_and_a_short_lookahead_runs(tiny_run, videos, capsys):
    code, stdout, err = run_cli(["stream", str(tiny_run), str(videos["mp4"]), "--lookahead", "2", "--json"], capsys)
    assert code == 0, err
    events = [json.loads(line) for line in stdout.splitlines()]
    assert events and all(set(e) == {"video", "frame", "time", "label", "score"} for e in events)
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["max_latency_frames"] <= 2 + 1  # look-ahead + NMS window (after the first clip)
    assert summary["windows"] == 18 + 1  # windows end at frames 7, 10, ..., 58 (every 3), then the padded tail


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the test folder; /stall/NAME sends 60 % of NAME and then nothing; /drop/NAME closes there."""

    release = threading.Event()

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        for mode in ("stall", "drop"):
            if self.path.startswith(f"/{mode}/"):
                data = (Path(self.directory) / self.path.split("/", 2)[2]).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: int(len(data) * 0.6)])
                self.wfile.flush()
                if mode == "stall":
                    self.release.wait(30)
                return
        super().do_GET()


@pytest.fixture
def http_server(videos):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(videos["mp4"].parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        _Handler.release.set()
        server.shutdown()
        server.server_close()
        _Handler.release.clear()


def test_stream_over_http_equals_infer_on_the_file(tiny_run, videos, http_server, tmp_path, capsys):
    expected = infer_events(tiny_run, videos["mp4"], tmp_path, capsys)
    out = tmp_path / "events.jsonl"
    code, _, err = run_cli(["stream", str(tiny_run), f"{http_server}/rally.mp4", "--out", str(out), "--timeout",
                            "5", "--quiet"], capsys)
    assert code == 0, err
    assert err == ""
    assert_same_events(read_jsonl(out), expected)


def _stream_subprocess(run: Path, *args: str, source: str = "-", **popen) -> subprocess.Popen:
    # pespot installs its own SIGINT handler: these tests pass even where the shell that started pytest made it
    # ignore SIGINT (a background job of a non-interactive shell, which its children inherit).
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    return subprocess.Popen([sys.executable, "-m", "pespot", "stream", str(run), source, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def test_stream_from_a_pipe_equals_infer(tiny_run, videos, tmp_path, capsys):
    expected = infer_events(tiny_run, videos["mkv"], tmp_path, capsys)
    # A whole file through a pipe, written by another process.
    copy = "import shutil, sys; shutil.copyfileobj(open(sys.argv[1], 'rb'), sys.stdout.buffer)"
    writer = subprocess.Popen([sys.executable, "-c", copy, str(videos["mkv"])], stdout=subprocess.PIPE)
    proc = _stream_subprocess(tiny_run, "--video", "rally", "--quiet", stdin=writer.stdout)
    writer.stdout.close()
    stdout, stderr = proc.communicate(timeout=120)
    writer.wait(timeout=10)
    assert proc.returncode == 0, stderr.decode()
    assert_same_events([json.loads(line) for line in stdout.decode().splitlines()], expected)


def _wait_for_exit(proc: subprocess.Popen, failure: str, timeout: float = 45) -> tuple[str, str]:
    """Wait for ``proc`` to end without touching its stdin (a pipe stays open: the writer is idle, not gone);
    its (stdout, stderr). ``failure`` is the assertion's message when it does not end within ``timeout``."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=60)
        raise AssertionError(failure) from None
    out, err = proc.communicate(timeout=60)
    return out.decode(), err.decode()


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_on_an_idle_pipe_scores_the_frames_received(tiny_run, videos, tmp_path, capsys, signum, code):
    expected = infer_events(tiny_run, videos["mkv"], tmp_path, capsys)
    data = videos["mkv"].read_bytes()
    # Ctrl-C while the pipe is open but idle: the frames received are scored and their events written.
    # Unbuffered: communicate() below reads the pipe itself, and must find the lines readline() left there.
    proc = _stream_subprocess(tiny_run, "--video", "rally", "--timeout", "60", stdin=subprocess.PIPE, bufsize=0)
    proc.stdin.write(data[: int(len(data) * 0.7)])
    proc.stdin.flush()
    first = proc.stdout.readline().decode()  # blocks until the first event is final
    assert first, proc.stderr.read().decode()
    time.sleep(1.0)  # let it take in what was written
    proc.send_signal(signum)
    # Ctrl-C (or SIGTERM, as docker stop sends) alone must end the stream, well before --timeout.
    rest, stderr = _wait_for_exit(proc, f"{signum!r} did not end the stream while stdin stayed open and idle")
    assert proc.returncode == code, stderr
    assert "interrupted after" in stderr or "interrupted by SIGTERM after" in stderr
    events = [json.loads(line) for line in (first + rest).splitlines()]
    decoded = int(stderr.split(" after ")[1].split()[0])
    assert 0 < decoded < 60
    # Frames far enough from the cut (all their windows and NMS neighbours before it) match the whole file.
    safe = decoded - CLIP - 1
    assert_same_events([e for e in events if e["frame"] < safe], [e for e in expected if e["frame"] < safe])
    assert events[-1]["frame"] >= safe - 2, "the received frames near the cut were flushed too"


def test_ctrl_c_on_a_stalled_http_source_ends_the_stream(tiny_run, http_server):
    # The server sends 60 % of the file and then nothing for 30 s; --timeout is 60 s. FFmpeg's network read cannot
    # be cut short, so the stream lets go of it (prefetch's join_timeout) instead of waiting for either.
    proc = _stream_subprocess(tiny_run, "--timeout", "60", source=f"{http_server}/stall/rally.mkv",
                              stdin=subprocess.DEVNULL)
    first = proc.stdout.readline().decode()
    assert first, proc.stderr.read().decode()
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = _wait_for_exit(proc, "Ctrl-C did not end a stalled http stream before the server gave up", timeout=25)
    assert proc.returncode == 130, err
    assert "interrupted after" in err


def test_a_stalled_pipe_ends_at_the_timeout_with_a_message_and_keeps_the_events(tiny_run, videos, tmp_path,
                                                                                 capsys):
    expected = infer_events(tiny_run, videos["mkv"], tmp_path, capsys)
    data = videos["mkv"].read_bytes()
    proc = _stream_subprocess(tiny_run, "--video", "rally", "--timeout", "2", stdin=subprocess.PIPE)
    proc.stdin.write(data[: int(len(data) * 0.7)])
    proc.stdin.flush()
    out, err = _wait_for_exit(proc, "--timeout did not end the stream while stdin stayed open and idle")
    errors = [line for line in err.splitlines() if line.startswith("pespot stream: error:")]
    assert proc.returncode == 1, err
    assert len(errors) == 1 and "standard input: no data for 2 s (--timeout): the source stalled after" in errors[0]
    decoded = int(errors[0].split("stalled after ")[1].split()[0])
    assert 0 < decoded < 60
    events = [json.loads(line) for line in out.splitlines()]
    safe = decoded - CLIP - 1
    assert_same_events([e for e in events if e["frame"] < safe], [e for e in expected if e["frame"] < safe])


def test_pipe_reader_reads_data_and_ends_on_interrupt_timeout_or_eof():
    read_fd, write_fd = os.pipe()
    try:
        reader = stream.PipeReader(read_fd, timeout=30.0, poll=0.05)
        os.write(write_fd, b"abc")
        assert reader.read(10) == b"abc" and reader.bytes == 3
        # Idle, open pipe: interrupt() from another thread ends the read long before the 30 s timeout.
        timer = threading.Timer(0.2, reader.interrupt)
        timer.start()
        assert reader.read(10) == b"" and reader.interrupted and not reader.stalled
        timer.join()
        os.write(write_fd, b"more")
        assert reader.read(10) == b"", "after an interrupt the input stays ended"
        stalling = stream.PipeReader(read_fd, timeout=0.2, poll=0.05)
        assert stalling.read(10) == b"more"
        assert stalling.read(10) == b"" and stalling.stalled and not stalling.interrupted
    finally:
        os.close(write_fd)
    closed = stream.PipeReader(read_fd, timeout=30.0, poll=0.05)
    assert closed.read(10) == b"" and not closed.stalled and not closed.interrupted  # the writer went: EOF
    os.close(read_fd)


def test_an_empty_or_silent_stdin_is_a_clear_error(tiny_run):
    empty = _stream_subprocess(tiny_run, stdin=subprocess.DEVNULL)
    _, err = empty.communicate(timeout=60)
    assert empty.returncode == 1
    assert err.decode().strip().splitlines()[-1] == "pespot stream: error: standard input: no data (the input is empty)"
    silent = _stream_subprocess(tiny_run, "--timeout", "1", stdin=subprocess.PIPE)
    _, err = _wait_for_exit(silent, "--timeout did not end the wait for the header on an open, silent stdin")
    assert silent.returncode == 1
    assert err.strip().splitlines()[-1] == ("pespot stream: error: standard input: no data within 1 s "
                                                     "(--timeout) while opening")


# ------------------------------------------------------------------------------------------------------------
# source faults


def fault_run(argv: list[str], capsys) -> tuple[int, list[str]]:
    code, _, err = run_cli(argv, capsys)
    return code, [line for line in err.splitlines() if line.startswith("pespot stream: error:")]


def test_stalled_and_dropped_http_sources_end_with_a_message_and_keep_the_events(
        tiny_run, videos, http_server, tmp_path, capsys):
    expected = infer_events(tiny_run, videos["mkv"], tmp_path, capsys)
    for mode, words in (("stall", "no data for 1 s (--timeout): the source stalled after"),
                        ("drop", "the source dropped after")):
        out = tmp_path / f"{mode}.jsonl"
        started = time.monotonic()
        code, errors = fault_run(["stream", str(tiny_run), f"{http_server}/{mode}/rally.mkv", "--out", str(out),
                                  "--timeout", "1", "--quiet"], capsys)
        assert code == 1
        assert len(errors) == 1 and words in errors[0] and f"/{mode}/rally.mkv" in errors[0], errors
        assert time.monotonic() - started < 20
        decoded = int(errors[0].split("after ")[1].split()[0])
        assert 0 < decoded < 60
        events = read_jsonl(out)
        safe = decoded - CLIP - 1
        assert any(e["frame"] < safe for e in events)
        assert_same_events([e for e in events if e["frame"] < safe], [e for e in expected if e["frame"] < safe])


@pytest.mark.parametrize("kind", ["mkv", "mp4", "ts"])
def test_truncated_file_ends_with_a_message_and_keeps_the_events(tiny_run, tmp_path, capsys, kind):
    full = write_video(tmp_path / f"full.{kind}", 60, faststart=True) if kind == "mp4" else \
        write_video(tmp_path / f"full.{kind}", 60)
    expected = infer_events(tiny_run, full, tmp_path, capsys)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(data[: int(len(data) * 0.6) + 7])  # inside a packet
    out = tmp_path / "events.jsonl"
    code, errors = fault_run(["stream", str(tiny_run), str(cut), "--out", str(out), "--quiet"], capsys)
    assert code == 1
    assert len(errors) == 1 and str(cut) in errors[0] and "ends mid-packet after" in errors[0], errors
    decoded = int(errors[0].split("after ")[1].split()[0])
    safe = decoded - CLIP - 1
    events = read_jsonl(out)
    assert any(e["frame"] < safe for e in events)
    assert_same_events([e for e in events if e["frame"] < safe], [e for e in expected if e["frame"] < safe])


def test_bad_sources_fail_before_writing_anything(tiny_run, http_server, tmp_path, capsys):
    with contextlib.closing(__import__("socket").socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]  # nothing listens there once the socket is closed
    cases = [(f"http://127.0.0.1:{closed_port}/live.ts", "Connection refused"),
             (f"{http_server}/missing.mp4", "404"),
             (str(tmp_path / "missing.mp4"), "no such video file"),
             (str(tmp_path), "is a folder")]
    for source, words in cases:
        out = tmp_path / "never.jsonl"
        code, errors = fault_run(["stream", str(tiny_run), source, "--out", str(out), "--timeout", "2"], capsys)
        assert code == 1 and len(errors) == 1, (source, errors)
        assert source in errors[0] and words in errors[0], errors
        assert not out.exists()
    with pytest.raises(DataError, match="not-a-video.txt: cannot open as a video stream"):
        (tmp_path / "not-a-video.txt").write_text("hello")
        stream.LiveSource(str(tmp_path / "not-a-video.txt"))


def test_source_names():
    assert stream.source_name("-") == "stdin"
    assert stream.source_name("http://host:8080/live/cam1.ts?token=x") == "cam1"
    assert stream.source_name("rtsp://host/feed") == "feed"
    assert stream.source_name("/data/match 1.mp4") == "match 1"
