"""The synthetic benchmark's first world (rally-side): layout, determinism, exact physical event frames, the
long-range pair, imbalance. The court-top world: tests/data/test_court_top.py."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pespot.cli import main
from pespot.data import synthetic as S
from pespot.data.labels import load_dataset
from pespot.data.synthetic import rally_side as R
from pespot.errors import DataError

GROUND = ("bounce", "line_in", "line_out")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, float]:
    """The tiny preset written through the CLI, and how long it took."""
    out = tmp_path_factory.mktemp("synth") / "tiny"
    start = time.perf_counter()
    assert main(["synth", str(out), "--preset", "tiny"]) == 0
    return out, time.perf_counter() - start


def _sample_videos(preset: str = "small", count: int = 12) -> list[S.SimulatedVideo]:
    specs = S.plan_dataset(preset, 0)["train"][:count]
    return [S.simulate_video(spec, preset, render=False) for spec in specs]


def _segment_at(video: S.SimulatedVideo, t: float) -> S.Segment | None:
    return next((s for s in video.segments if s.t0 <= t < s.t1), None)


# ------------------------------------------------------------------------------------------------------------
# Layout written by `pespot synth`


def test_cli_tiny_writes_e2e_layout_quickly(tiny):
    out, seconds = tiny
    assert seconds < 30
    assert (out / "class.txt").read_text().split() == S.CLASSES
    ds = load_dataset(out)  # validates classes, frame ranges, unique ids
    assert set(ds.splits) == {"train", "val", "test"}
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    raw = json.loads((out / "train.json").read_text())
    for entry in raw:
        assert {"video", "num_frames", "num_events", "events", "fps", "width", "height"} <= set(entry)
        assert entry["fps"] == 25.0 and entry["width"] == entry["height"] == 64
        assert entry["num_events"] == len(entry["events"])
        assert all(set(e) == {"frame", "label", "comment"} for e in entry["events"])
    for videos in ds.splits.values():
        for v in videos:
            folder = out / "frames" / v.video
            names = sorted(p.name for p in folder.iterdir())
            assert names == [f"{i:06d}.jpg" for i in range(v.num_frames)]
    with Image.open(out / "frames" / "train_0000" / "000000.jpg") as img:
        assert img.size == (64, 64) and img.mode == "RGB"
    assert not list(out.rglob("*.tmp*"))  # no temporary leftovers


def test_written_frames_are_the_simulated_frames(tiny):
    out, _ = tiny
    spec = S.plan_dataset("tiny", 0)["val"][1]
    sim = S.simulate_video(spec, "tiny")
    for i in (0, spec.num_frames // 2, spec.num_frames - 1):
        with Image.open(out / "frames" / spec.name / f"{i:06d}.jpg") as img:
            decoded = np.asarray(img.convert("RGB")).astype(np.float64)
        assert np.abs(decoded - sim.frames[i]).mean() < 4.0  # JPEG quality 95 of noisy frames


def test_same_seed_same_bytes_other_seed_differs(tmp_path, tiny):
    out, _ = tiny
    again = S.generate(tmp_path / "a", "tiny", seed=0, labels_only=True)
    for name in ("class.txt", "train.json", "val.json", "test.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    other = S.generate(tmp_path / "b", "tiny", seed=1, labels_only=True)
    assert (other / "train.json").read_bytes() != (out / "train.json").read_bytes()
    spec = S.plan_dataset("tiny", 3)["test"][0]
    first, second = S.simulate_video(spec, "tiny"), S.simulate_video(spec, "tiny")
    assert np.array_equal(first.frames, second.frames)


def test_resume_after_interruption_and_refuse_foreign_folders(tmp_path, tiny):
    out, _ = tiny
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(out, copy)
    # an interrupted run: labels not yet written, one video missing, one half-written temp folder
    (copy / "test.json").unlink()
    shutil.rmtree(copy / "frames" / "test_0001")
    (copy / "frames" / ".test_0001.tmp-123").mkdir()
    assert main(["synth", str(copy), "--preset", "tiny", "--json"]) == 0
    assert (copy / "test.json").read_bytes() == (out / "test.json").read_bytes()
    assert not list(copy.rglob("*.tmp*"))
    assert len(list((copy / "frames" / "test_0001").glob("*.jpg"))) == S.plan_dataset("tiny")["test"][1].num_frames
    with pytest.raises(DataError, match="different synthetic dataset"):
        S.generate(copy, "tiny", seed=5)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        S.generate(foreign, "tiny")
    assert main(["synth", str(foreign), "--preset", "tiny"]) == 1  # one-line error, exit code 1


def test_mp4_format_decodes_to_the_simulated_frames(tmp_path):
    from pespot.data.frames import open_frames

    preset = S.Preset("mp4test", {"train": 1}, (100, 100), net_fraction=1.0, noise=(2.0, 2.0))
    out = S.generate(tmp_path / "m", preset, seed=0, fmt="mp4")
    video = load_dataset(out).splits["train"][0]
    sim = S.simulate_video(S.plan_dataset(preset, 0)["train"][0], preset)
    with open_frames(out / "frames" / f"{video.video}.mp4") as source:
        assert source.num_frames == video.num_frames == 100
        frames = source.read(0, 100).numpy().astype(np.float64)
    assert np.abs(frames - sim.frames).mean() < 6.0  # lossy H.264 (yuv420p) of the same frames


# ------------------------------------------------------------------------------------------------------------
# Every labelled frame is the physical event frame, from the generator's own state


def test_every_label_is_the_frame_of_a_physical_contact():
    fps = 25.0
    for video in _sample_videos():
        assert [c.frame for c in video.contacts] == [e.frame for e in video.to_video().events]
        for c in video.contacts:
            before, after = _segment_at(video, c.time - 1e-6), _segment_at(video, c.time)
            assert before is not None and after is not None
            # the ball really is at the contact point at the contact time, coming from both sides
            for seg in (before, after):
                x, y = seg.position(c.time)
                assert math.isclose(float(x), c.x, abs_tol=1e-9) and math.isclose(float(y), c.y, abs_tol=1e-9)
            if c.label in GROUND:
                assert c.y == pytest.approx(S.BALL_R)  # touches the ground
                assert before.velocity_y(c.time) < 0 < after.velocity_y(c.time)  # comes down, goes up
            elif c.label == "hit":
                assert np.sign(before.vx) == -np.sign(after.vx) != 0  # sent back over the net
            elif c.label == "serve":  # the near-vertical toss is struck towards the other side
                assert abs(after.vx) > 3 * abs(before.vx) and np.sign(after.vx) == (1 if c.side == "left" else -1)
            else:  # net: caught in the mesh at the net's face
                assert after.vx == after.vy == after.gravity == 0
                face = R.NET_W / 2 + S.BALL_R
                assert c.x == pytest.approx(R.NET_X - face if c.side == "left" else R.NET_X + face)
            # the labelled frame is one of the two around the contact time, the one nearest the contact
            lo = math.floor(c.time * fps)
            assert c.frame in (lo, lo + 1)
            xs, ys = video.ball_position(np.array([lo, lo + 1]) / fps)
            dist = np.hypot(xs - c.x, ys - c.y)
            assert dist[c.frame - lo] <= dist[1 - (c.frame - lo)]


def test_ground_touches_are_exactly_the_labelled_bounces():
    for video in _sample_videos():
        ball = video.ball_per_frame()
        in_play = ~np.isnan(ball[:, 1])
        assert (ball[in_play, 1] >= S.BALL_R - 1e-9).all()  # never below the ground
        ground_frames = {c.frame for c in video.contacts if c.label in GROUND}
        for f in ground_frames:  # the labelled frame shows the ball lowest among its neighbours
            window = ball[f - 3: f + 4, 1]
            assert ball[f, 1] == np.nanmin(window)
        # any frame where the ball is within 1.5 px of the ground (at 64 px) is next to a labelled ground contact
        low = np.flatnonzero(in_play & (np.nan_to_num(ball[:, 1], nan=1.0) < S.BALL_R + 1.5 / 64))
        for f in low:
            assert min(abs(f - g) for g in ground_frames) <= 1, (video.spec.name, f)
        # every change of motion (segment boundary) is a contact, except the toss leaving the hand
        boundaries = [a.t1 for a, b in zip(video.segments, video.segments[1:])
                      if a.t1 == b.t0 and not (a.gravity == 0 and b.gravity > 0)]
        assert sorted(boundaries) == sorted(c.time for c in video.contacts)


def test_ball_is_drawn_where_the_state_says():
    spec = S.plan_dataset("small", 0)["train"][2]
    preset = S.PRESETS["small"]
    video = S.simulate_video(spec, "small", render=False)
    ball, contacts = video.ball_per_frame(), list(video.contacts)
    with_ball = R._render(video, preset, np.random.default_rng(9))
    video.segments = []  # same scene, same random draws, no ball
    without = R._render(video, preset, np.random.default_rng(9))
    diff = np.abs(with_ball.astype(int) - without.astype(int)).sum(-1)  # (N, H, W)
    shake = R._make_look(np.random.default_rng(9), preset, spec.num_frames, preset.fps).shake
    checked = 0
    for c in contacts:
        f = c.frame
        col = ball[f, 0] * 64 + shake[f, 0]
        row = R.GROUND_ROW * 64 - ball[f, 1] * 64 + shake[f, 1]
        if not (0 <= row < 64 and 0 <= col < 64):
            continue
        assert diff[f, int(row), int(col)] > 60  # the ball is at its centre
        ys, xs = np.nonzero(diff[f] > 30)
        above_ground = ys < R.GROUND_ROW * 64 + shake[f, 1]  # (its shadow lies on the court below)
        assert np.hypot(ys[above_ground] + 0.5 - row, xs[above_ground] + 0.5 - col).max() < 4.5
        checked += 1
    assert checked >= 5


# ------------------------------------------------------------------------------------------------------------
# The long-range pair and the class balance


def test_line_in_and_out_differ_only_32_or_more_frames_after_the_event():
    found = 0
    for spec in S.plan_dataset("tiny", 0)["train"]:
        if not any(e in S.LONG_RANGE_PAIR for e in spec.endings):
            continue
        base = S.simulate_video(spec, "tiny")
        flipped = S.simulate_video(spec, "tiny", flip_call=0)
        calls = [c for c in base.contacts if c.label in S.LONG_RANGE_PAIR]
        event = calls[0]
        other = next(c for c in flipped.contacts if c.time == event.time)
        assert {event.label, other.label} == set(S.LONG_RANGE_PAIR)  # only the class flipped
        assert [(c.frame, c.label) for c in base.contacts if c is not event] == \
               [(c.frame, c.label) for c in flipped.contacts if c.time != event.time]
        differs = np.flatnonzero((base.frames != flipped.frames).reshape(spec.num_frames, -1).any(1))
        assert len(differs) > 0
        assert differs.min() >= event.frame + 32  # identical up to event + 31
        light = next(lg for lg in base.lights if lg.call is not None)
        assert differs.min() == light.start and light.colour == R.LIGHT_COLOURS[event.label]
        found += 1
        if found == 2:
            break
    assert found == 2
    # from the generator's state over many videos: every call's light comes 32+ frames after its bounce,
    # and only calls light up in green or red
    calls = 0
    for video in _sample_videos("small", 48):
        lit = [light for light in video.lights if light.call is not None]
        assert len(lit) == sum(c.label in S.LONG_RANGE_PAIR for c in video.contacts)
        for light in video.lights:
            if light.call is None:
                assert light.colour not in R.LIGHT_COLOURS.values()
        for light in lit:
            event = video.contacts[light.contact_index]
            assert event.label == light.call and light.colour == R.LIGHT_COLOURS[light.call]
            assert light.start - event.frame >= 32
        calls += len(lit)
    assert calls >= 40


def test_bench_class_imbalance_and_every_split_has_every_class(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "bench"), "--preset", "bench", "--labels-only", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == S.CLASSES and report["format"] is None
    assert not (tmp_path / "bench" / "frames").exists()
    assert report == {**report, **S.dataset_summary(tmp_path / "bench")}  # the report is the written labels
    overall = report["all"]
    assert overall["videos"] == sum(S.PRESETS["bench"].videos.values())
    assert overall["max_min_ratio"] >= 30
    assert min(overall["fraction"].values()) < 0.03
    for split, stats in report["splits"].items():
        assert min(stats["per_class"].values()) > 0, split
        assert stats["max_min_ratio"] >= 30, split
    # the long-range pair is balanced, so the light is the only way to tell them apart
    n_in, n_out = overall["per_class"]["line_in"], overall["per_class"]["line_out"]
    assert abs(n_in - n_out) <= 0.1 * (n_in + n_out)
    small = S.dataset_summary(S.generate(tmp_path / "small", "small", labels_only=True))
    for split, stats in small["splits"].items():
        assert min(stats["per_class"].values()) > 0, split
