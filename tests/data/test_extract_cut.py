"""pespot extract --cut: clips named <source>_<start>_<end> (Tennis rallies, Figure Skating segments) cut from the
input videos, with exact frame indices, one line per clip that cannot be cut, resumable."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED_DATA, pattern_index

from pespot.cli import main
from pespot.data.extract import match_source, parse_clip_id
from pespot.data.frames import open_frames
from pespot.data.labels import Video, load_split, save_split


def _cli(capsys, *argv) -> tuple[int, dict, list[str]]:
    rc = main(["extract", *map(str, argv), "--json"])
    captured = capsys.readouterr()
    return rc, json.loads(captured.out), [line for line in captured.err.splitlines() if line.strip()]


def test_clip_ids_parse_like_the_datasets_name_them():
    assert parse_clip_id("usopen_2020_womens_final_osaka_azarenka_166072_166372") == (
        "usopen_2020_womens_final_osaka_azarenka", 166072, 166372)
    assert parse_clip_id("men_olympic_short_program_2010_01_00011475_00015700") == (
        "men_olympic_short_program_2010_01", 11475, 15700)
    assert parse_clip_id("rally") is None and parse_clip_id("a_b_12") is None and parse_clip_id("_1_2") is None
    sources = {"men_olympic_short_program_2010": "fs.mp4", "usopen": "x.mp4"}
    assert match_source("men_olympic_short_program_2010_01", sources) == "fs.mp4"
    assert match_source("usopen_2020_final", sources) == "x.mp4"
    assert match_source("wimbledon_2019", sources) is None


@pytest.mark.parametrize("split", ["tennis/train.json", "fs_comp/train.json", "fs_perf/val.json"])
def test_every_real_clip_id_is_a_frame_range_matching_num_frames(split):
    """The real label files: every Tennis/FS clip id names a source and a range exactly num_frames long."""
    videos = load_split(SHARED_DATA / split)
    for v in videos:
        prefix, start, stop = parse_clip_id(v.video)
        assert stop - start == v.num_frames, v.video
        assert prefix


@pytest.mark.parametrize(("fmt", "workers"), [("jpg", 1), ("mp4", 2)])
def test_cut_clips_from_match_videos(make_video, tmp_path, capsys, fmt, workers):
    match = make_video("match_a.mp4", num_frames=60, width=64, height=48, gop=12)
    comp = make_video("comp_b.mp4", num_frames=30, width=64, height=48)
    labels = tmp_path / "train.json"
    save_split([
        Video("match_a_10_30", 20, 25.0),  # a rally in the middle of the match (after a keyframe seek)
        Video("match_a_40_60", 20, 25.0),  # up to the last frame
        Video("comp_b_01_5_15", 10, 25.0),  # a Figure Skating segment: <video>_<segment>_<start>_<end>
        Video("rally7", 10, 25.0),  # no range in the id
        Video("match_a_0_10", 12, 25.0),  # range and num_frames disagree
        Video("other_0_5", 5, 25.0),  # no such source among the inputs
        Video("match_a_50_70", 20, 25.0),  # beyond the end of the source
    ], labels)
    store = tmp_path / "store"
    rc, report, err = _cli(capsys, match, comp, "--out", store, "--labels", labels, "--cut", "--format", fmt,
                           "--height", 0, "--workers", workers)
    assert rc == 1
    by_id = {v["video"]: v for v in report["videos"]}
    for video, start, count in (("match_a_10_30", 10, 20), ("match_a_40_60", 40, 20), ("comp_b_01_5_15", 5, 10)):
        assert by_id[video]["status"] == "extracted", by_id[video]
        frames = open_frames(store / video if fmt == "jpg" else store / f"{video}.mp4")
        assert frames.num_frames == count
        assert [pattern_index(f) for f in frames.read(0, count)] == list(range(start, start + count))
    failed = {"rally7": "is not <source>_<start>_<end>", "match_a_0_10": "num_frames=12",
              "other_0_5": "no source video 'other'", "match_a_50_70": "not inside the video's [0, 60)"}
    for video, text in failed.items():
        assert by_id[video]["status"] == "failed" and text in by_id[video]["error"], by_id[video]
    assert len(err) == len(failed) and all(any(v in line for line in err) for v in failed)
    assert report["extracted"] == 3 and report["failed"] == 4
    # nothing half-written, and failed clips leave nothing
    assert sorted(p.name for p in store.iterdir()) == sorted(
        v if fmt == "jpg" else f"{v}.mp4" for v in ("match_a_10_30", "match_a_40_60", "comp_b_01_5_15"))
    # a rerun skips the finished clips
    rc, report, _ = _cli(capsys, match, comp, "--out", store, "--labels", labels, "--cut", "--format", fmt,
                         "--height", 0, "--workers", workers)
    assert rc == 1 and report["skipped"] == 3 and report["extracted"] == 0


def test_cut_needs_labels_and_keeps_the_frame_rate(make_video, tmp_path, capsys):
    match = make_video("m.mp4", num_frames=10)
    assert main(["extract", str(match), "--out", str(tmp_path / "s"), "--cut"]) == 1
    assert "--cut needs --labels" in capsys.readouterr().err
    labels = tmp_path / "l.json"
    save_split([Video("m_0_5", 5, 25.0)], labels)
    assert main(["extract", str(match), "--out", str(tmp_path / "s"), "--cut", "--labels", str(labels),
                 "--fps", "5"]) == 1
    assert "drop --fps" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
