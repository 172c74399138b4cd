"""The court-top synthetic world: small cues, exact labels, the long-range winner, imbalance, the CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from pespot.cli import main
from pespot.data import synthetic as S
from pespot.data.labels import load_dataset
from pespot.data.synthetic import court_top as C
from pespot.data.synthetic.common import event_frame
from pespot.errors import DataError, PespotError


def _videos(preset: str, split: str, count: int, render: bool = False) -> list[C.SimulatedVideo]:
    return [C.simulate_video(spec, preset, render=render) for spec in C.plan_dataset(preset, 0)[split][:count]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("court") / "tiny"
    assert main(["synth", str(out), "--world", "court-top", "--preset", "tiny"]) == 0
    return out


def test_cli_writes_the_e2e_spot_layout_with_the_world_recorded(tiny, capsys):
    ds = load_dataset(tiny)
    assert ds.classes == C.CLASSES
    info = json.loads((tiny / "synth.json").read_text())
    assert info["world"] == "court-top" and info["version"] == C.GENERATOR_VERSION
    assert info["long_range"] == ["winner"] and info["width"] == info["height"] == 64
    for split, videos in ds.splits.items():
        assert len(videos) == C.PRESETS["tiny"].videos[split]
        for v in videos:
            assert len(list((tiny / "frames" / v.video).glob("*.jpg"))) == v.num_frames
    # the same command resumes; another world in the same folder is refused
    assert main(["synth", str(tiny), "--world", "court-top", "--preset", "tiny"]) == 0
    with pytest.raises(DataError, match="different synthetic dataset"):
        S.generate(tiny, "tiny", world="rally-side")
    assert main(["synth", str(tiny.parent / "x"), "--world", "court-top", "--preset", "tiny", "--labels-only",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["world"] == "court-top" and report["classes"] == C.CLASSES


def test_same_seed_same_bytes_other_seed_other_world():
    spec = C.plan_dataset("tiny", 0)["val"][0]
    a, b = C.simulate_video(spec, "tiny"), C.simulate_video(spec, "tiny")
    assert np.array_equal(a.frames, b.frames) and a.frames.shape == (spec.num_frames, 64, 64, 3)
    other = C.plan_dataset("tiny", 1)["val"][0]
    assert other.seed != spec.seed


def test_labelled_frame_is_the_frame_nearest_the_contact_and_every_contact_is_in_view():
    for video in _videos("small", "train", 4, render=True):
        pixels = video.ball_pixels()
        for c in video.contacts:
            assert c.frame == event_frame(c.time, c.point, video.ball_position, video.fps)
            assert abs(c.frame - c.time * video.fps) <= 1
            col, row = pixels[c.frame]
            assert 0 <= col < 64 and 0 <= row < 64, (video.spec.name, c.label)
        assert [e.frame for e in video.to_video().events] == sorted(c.frame for c in video.contacts)


def test_physics_the_ball_touches_the_ground_only_at_labelled_bounces():
    for video in _videos("small", "train", 16):
        ground = [c.time for c in video.contacts if c.label in ("bounce", "out", "winner")]
        for seg in video.segments:
            t = np.linspace(seg.t0, seg.t1, 200)[1:-1]
            z = seg.position(t)[2]
            assert z.min() > C.BALL_R - 1e-9, video.spec.name  # never through the ground
            if seg.gravity and seg.v[2] - seg.gravity * (seg.t1 - seg.t0) < 0:  # comes down within the segment
                end_z = seg.at(seg.t1)[2]
                if end_z <= C.BALL_R + 1e-6:  # it lands: a labelled ground contact at its end
                    assert min(abs(seg.t1 - g) for g in ground) < 1e-9
        # every bounce is on the ground, inside the singles court for bounce/winner, outside it for out
        for c in video.contacts:
            x, y, z = c.point
            if c.label in ("bounce", "winner", "out"):
                assert z == pytest.approx(C.BALL_R)
                inside = abs(x) <= C.SINGLES / 2 and 0 <= y <= C.LENGTH
                assert inside == (c.label != "out"), (video.spec.name, c.label, x, y)
            if c.label == "net":
                assert y == pytest.approx(C.NET_Y, abs=0.05) and z < C.NET_CENTRE


def test_the_ball_is_one_to_three_pixels_and_drawn_where_the_state_says():
    spec = C.plan_dataset("small", 0)["train"][1]
    preset = C.PRESETS["small"]
    video = C.simulate_video(spec, "small", render=False)
    with_ball = C._render(video, preset, np.random.default_rng([spec.seed, 3]))
    pixels, ball = video.ball_pixels(), video.ball_per_frame()
    video.segments = []
    without = C._render(video, preset, np.random.default_rng([spec.seed, 3]))
    diff = np.abs(with_ball.astype(int) - without.astype(int)).sum(-1)
    shadow_col, shadow_row, _ = video.camera.project(ball[:, 0], ball[:, 1], np.zeros(len(ball)))
    shadows = np.stack([shadow_col, shadow_row], 1) + video.pan
    centre, widths = [], []
    for n, (col, row) in enumerate(pixels):
        if np.isnan(col) or not (2 <= col < 62 and 2 <= row < 62):
            continue
        centre.append(diff[n, int(row), int(col)])  # the ball is at its centre
        ys, xs = np.nonzero(diff[n] > 60)
        near = np.hypot(ys + 0.5 - row, xs + 0.5 - col) < 4
        widths.append(near.sum())
        elsewhere = (diff[n] > 40) & ~_disc(row, col, 4) & ~_disc(shadows[n, 1], shadows[n, 0], 4)
        assert not elsewhere.any(), n  # nothing but the ball and its shadow changed
    assert len(centre) > 100
    # a 1 px ball far away straddles pixels and is faint, a fast one is a streak: 90 % stand out clearly
    assert min(centre) > 10 and np.percentile(centre, 10) > 40
    # 1-3 px across: typically between 1 and about 9 strongly changed pixels (a streak when fast; more where the
    # held ball hides part of the server)
    assert 1 <= np.median(widths) <= 9


def _disc(row: float, col: float, radius: float) -> np.ndarray:
    ys, xs = np.mgrid[0:64, 0:64]
    return np.hypot(ys + 0.5 - row, xs + 0.5 - col) < radius


def test_winner_is_decided_only_by_the_receivers_contact_25_to_40_frames_later():
    flipped_any = 0
    specs = [spec for split in C.plan_dataset("tiny", 0).values() for spec in split]
    for spec in specs:
        base = C.simulate_video(spec, "tiny")
        deep = sorted((c for c in base.contacts if c.deep), key=lambda c: c.time)
        for k, event in enumerate(deep):
            try:
                other = C.simulate_video(spec, "tiny", flip_deep=k)
            except PespotError:
                continue  # the flipped rally is longer than the video: not a valid pair
            decision = min(c.frame for c in base.contacts if c.time > event.time + 1e-9
                           and c.label in ("hit",)) if event.label == "bounce" else None
            partner = [c for c in other.contacts if c.deep and c.frame == event.frame]
            assert len(partner) == 1 and {partner[0].label, event.label} == {"bounce", "winner"}
            differs = np.flatnonzero((base.frames != other.frames).reshape(len(base.frames), -1).any(1))
            first = int(differs.min())
            assert C.LONG_DELAY[0] - 1 <= first - event.frame <= C.LONG_DELAY[1] + 1, (spec.name, k)
            if decision is not None:
                assert first >= decision - 1
            flipped_any += 1
    assert flipped_any >= 6


def test_long_range_class_and_its_look_alike_are_balanced_and_net_is_rare(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "b"), "--world", "court-top", "--preset", "bench", "--labels-only",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    overall = report["all"]
    assert overall["fraction"]["net"] < 0.01
    for split, stats in report["splits"].items():
        assert min(stats["per_class"].values()) > 0, split
    deep_returned = winners = 0
    for split, specs in C.plan_dataset("small", 0).items():
        for spec in specs:
            video = C.simulate_video(spec, "small", render=False)
            deep_returned += sum(c.deep and c.label == "bounce" for c in video.contacts)
            winners += sum(c.label == "winner" for c in video.contacts)
    assert winners > 20 and abs(deep_returned - winners) <= 0.15 * winners


def test_classes_are_configurable():
    preset = replace(C.PRESETS["tiny"], name="fewer", classes=("serve", "bounce", "winner"))
    assert C.classes_of(preset) == ["serve", "bounce", "winner"]
    spec = C.plan_dataset(preset, 0)["train"][0]
    video = C.simulate_video(spec, preset, render=False)
    labels = {e.label for e in video.to_video().events}
    assert labels <= {"serve", "bounce", "winner"} and "serve" in labels
    assert any(c.label == "hit" for c in video.contacts)  # hits still happen, unlabelled
    with pytest.raises(PespotError, match="expected a non-empty subset"):
        C.classes_of(replace(preset, classes=("smash",)))


def test_size_and_fps_are_configurable():
    preset = replace(C.PRESETS["tiny"], name="big", size=96, fps=30.0, num_frames=(260, 270))
    spec = C.plan_dataset(preset, 0)["test"][0]
    video = C.simulate_video(spec, preset)
    assert video.frames.shape == (spec.num_frames, 96, 96, 3) and video.fps == 30.0
    assert all(0 <= c.frame < spec.num_frames for c in video.contacts)
