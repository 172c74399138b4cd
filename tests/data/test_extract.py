"""pespot extract: JPEG and mp4 stores, fps resampling, resume after a kill, bad inputs, frame-count checks."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from conftest import pattern_index, write_video

from pespot.cli import main
from pespot.data.extract import extract_video, extract_videos, partial_path
from pespot.data.frames import open_frames, video_index
from pespot.data.labels import Video, save_split


def _run_cli(capsys, *argv) -> tuple[int, dict, str]:
    rc = main(["extract", *map(str, argv), "--json"])
    captured = capsys.readouterr()
    return rc, json.loads(captured.out), captured.err


def _indices(source) -> list[int]:
    return [pattern_index(f) for f in source.read(0, source.num_frames)]


def test_jpeg_store_e2e_layout(make_video, tmp_path, capsys):
    src = make_video("rally_01.mp4", num_frames=30, width=96, height=64)
    rc, report, _ = _run_cli(capsys, src, "--out", tmp_path / "store", "--height", 32, "--workers", 1)
    assert rc == 0 and report["extracted"] == 1 and report["failed"] == 0
    folder = tmp_path / "store" / "rally_01"
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:06d}.jpg" for i in range(30)]
    store = open_frames(folder)
    assert (store.width, store.height, store.num_frames) == (48, 32, 30)
    assert _indices(store) == list(range(30))
    assert report["videos"][0]["frames"] == 30 and report["videos"][0]["fps"] == 25.0
    assert not list((tmp_path / "store").glob(".*"))  # no partial left behind


def test_mp4_store_short_gop_even_size(make_video, tmp_path):
    src = make_video("odd.mp4", num_frames=40, width=321, height=179, lossless=True, gop=40)
    (result,) = extract_videos([src], tmp_path / "store", height=90, fmt="mp4", progress=False)
    assert result.status == "extracted" and result.frames == 40
    store = open_frames(tmp_path / "store" / "odd.mp4")
    assert (store.width, store.height, store.num_frames, store.fps) == (162, 90, 40, 25.0)
    assert _indices(store) == list(range(40))
    keys = video_index(store.path).key_pts
    pts = list(video_index(store.path).pts)
    key_frames = [pts.index(k) for k in keys]
    assert key_frames[0] == 0 and max(np.diff(key_frames + [40])) <= 16  # a keyframe at least every 16 frames
    # Keeping the source size (--height 0) with an odd size: yuv420p needs even, so it becomes 320x178.
    (kept,) = extract_videos([src], tmp_path / "full", height=None, fmt="mp4", progress=False)
    assert kept.status == "extracted"
    full = open_frames(kept.output)
    assert (full.width, full.height) == (320, 178)


def test_fps_keeps_first_frame_at_or_after_each_tick(make_video, tmp_path):
    src = make_video("v.mp4", num_frames=50, fps=25)
    (result,) = extract_videos([src], tmp_path / "store", height=None, fps=10, progress=False)
    # Frame i is at i/25 s; tick k is at k/10 s; the first frame at or after it is ceil(2.5 k).
    expected = [math.ceil(2.5 * k) for k in range(20)]
    assert expected[:5] == [0, 3, 5, 8, 10]
    store = open_frames(result.output)
    assert _indices(store) == expected and result.frames == 20 and result.fps == 10
    # A target faster than the source keeps every frame once (no duplicates).
    (same,) = extract_videos([src], tmp_path / "fast", height=None, fps=60, progress=False)
    assert _indices(open_frames(same.output)) == list(range(50))


def test_rerun_skips_finished_and_redoes_partial_outputs(make_video, tmp_path):
    a = make_video("a.mp4", num_frames=12)
    b = make_video("b.mp4", num_frames=15)
    out = tmp_path / "store"
    first = extract_videos([a], out, height=None, progress=False)
    assert first[0].status == "extracted"
    stamp = (out / "a" / "000000.jpg").stat().st_mtime_ns
    # What a kill leaves behind: b's partial folder with a broken frame; an mp4 temp file for the other format.
    partial = partial_path(out / "b")
    partial.mkdir()
    (partial / "000000.jpg").write_bytes(b"broken")
    results = extract_videos([a, b], out, height=None, progress=False)
    assert [(r.video, r.status, r.frames) for r in results] == [("a", "skipped", 12), ("b", "extracted", 15)]
    assert (out / "a" / "000000.jpg").stat().st_mtime_ns == stamp  # untouched
    assert not partial.exists()
    assert _indices(open_frames(out / "b")) == list(range(15))

    partial_mp4 = partial_path(out / "b.mp4")
    partial_mp4.write_bytes(b"\x00" * 100)
    (r,) = extract_videos([b], out, height=None, fmt="mp4", progress=False)
    assert r.status == "extracted" and not partial_mp4.exists() and open_frames(out / "b.mp4").num_frames == 15


def test_killed_extraction_leaves_no_output_and_completes_on_rerun(tmp_path):
    src = write_video(tmp_path / "long.mp4", 600, width=96, height=64, gop=30)
    out = tmp_path / "store"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "pespot", "extract", str(src), "--out", str(out),
                             "--height", "0", "--workers", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = partial_path(out / "long")
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.is_dir() and len(os.listdir(partial)) >= 10:
                break
            time.sleep(0.002)
        assert proc.poll() is None, "the extraction finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert partial.is_dir() and not (out / "long").exists()  # killed mid-way: only the hidden partial exists
    (result,) = extract_videos([src], out, height=None, progress=False)
    assert result.status == "extracted" and result.frames == 600
    assert not partial.exists()
    store = open_frames(out / "long")
    assert store.num_frames == 600 and pattern_index(store.read(599, 600)[0]) == 599


def test_bad_inputs_reported_and_others_finish(make_video, tmp_path, capsys):
    import av

    good = make_video("in/good.mp4", num_frames=10)
    make_video("in/sub/good2.mp4", num_frames=8)
    (tmp_path / "in/zero.mp4").write_bytes(b"")
    (tmp_path / "in/notes.mkv").write_text("this is not a video")
    data = make_video("cut_src.mp4", num_frames=40, faststart=True).read_bytes()
    (tmp_path / "in/cut.mp4").write_bytes(data[: len(data) // 2])
    with av.open(str(tmp_path / "in/sound.mp4"), "w") as container:  # audio only
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            container.mux(packet)
    rc, report, err = _run_cli(capsys, tmp_path / "in", "--out", tmp_path / "store", "--height", 32,
                               "--workers", 2)
    assert rc == 1
    status = {v["video"]: (v["status"], v["error"]) for v in report["videos"]}
    assert status["good"] == ("extracted", None) and status["sub/good2"] == ("extracted", None)
    assert status["zero"] == ("failed", "empty file (0 bytes)")
    assert status["notes"][1].startswith("not a readable video")
    assert status["sound"] == ("failed", "no video stream")
    assert status["cut"][0] == "failed" and "truncated" in status["cut"][1]
    assert (report["extracted"], report["failed"]) == (2, 4)
    lines = err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("pespot extract: failed: ") for line in lines)
    assert any(str(tmp_path / "in/zero.mp4") in line and "empty file" in line for line in lines)
    assert open_frames(tmp_path / "store/sub/good2").num_frames == 8
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["good", "sub"]  # nothing from failures
    assert extract_video(good, tmp_path / "store").status == "skipped"


def test_frame_count_checked_against_labels(make_video, tmp_path, capsys):
    a = make_video("clip_a.mp4", num_frames=12)
    b = make_video("clip_b.mp4", num_frames=9)
    c = make_video("clip_c.mp4", num_frames=5)
    labels = tmp_path / "val.json"
    save_split([Video("clip_a", 12, 25.0), Video("clip_b", 10, 25.0)], labels)
    rc, report, err = _run_cli(capsys, a, b, c, "--out", tmp_path / "store", "--labels", labels, "--workers", 1)
    assert rc == 1
    by_id = {v["video"]: v for v in report["videos"]}
    assert by_id["clip_a"]["status"] == "extracted"
    assert by_id["clip_b"]["status"] == "failed"
    assert "9 frames extracted but" in by_id["clip_b"]["error"] and "num_frames=10" in by_id["clip_b"]["error"]
    assert by_id["clip_c"]["status"] == "extracted" and "not in" in by_id["clip_c"]["warning"]
    assert "clip_b.mp4" in err and "num_frames=10" in err
    # The check also runs on a rerun, where everything is skipped.
    rc, report, _ = _run_cli(capsys, a, b, "--out", tmp_path / "store", "--labels", labels, "--workers", 1)
    assert rc == 1 and [v["status"] for v in report["videos"]] == ["skipped", "failed"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["extract", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")]) == 1
    assert "missing.mp4: no such video file or directory" in capsys.readouterr().err
    (tmp_path / "v.mp4").write_bytes(b"")
    assert main(["extract", str(tmp_path / "v.mp4"), "--out", str(tmp_path / "o"), "--format", "mp4",
                 "--height", "225"]) == 1
    assert "--height 225 must be even for --format mp4" in capsys.readouterr().err
