"""Live sources whose end or middle is misreported (issue 19, item 5): an MPEG-TS cut inside a transport packet,
garbage inside a TS stream, an HTTP body without a length that ends normally, a second Ctrl-C during the final
scoring, and an mp4 with its index at the end on standard input.

Each is tried through ``pespot stream`` with the real tiny spotter on PyAV-encoded clips whose frames carry their
index (conftest); the frames kept are compared with ``pespot infer`` on the intact file. Marked
``fault("live-source", cases)``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, write_tiny_run, write_video

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


