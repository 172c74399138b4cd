"""Videos made frame-exact for the browser (issue 21): which files are played as they are, and the transcode of the
rest (variable frame rate, B-frames, other containers, JPEG folders, odd sizes) to a constant-rate H.264 mp4 whose
frame i is the source's decoded frame i, cached."""

from __future__ import annotations

import itertools
import os

import av
import pytest
from conftest import pattern_index, write_jpeg_folder, write_video

from pespot.errors import DataError
from pespot.review import media

# A variable-frame-rate clip: gaps of 40, 120, 20 ms... as a phone records; 20 frames.
VFR_MS = [0, 40, 80, 200, 220, 240, 400, 433, 466, 500, 900, 940, 980, 1020, 1060, 1100, 1500, 1540, 1580, 1620]


def decoded(path) -> list[tuple[int, int, int]]:
    """(pts, dts, index read from the picture) of every frame of ``path``, in decoding order of the output."""
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            out.append((frame.pts, frame.dts if frame.dts is not None else frame.pts,
                        pattern_index(frame.to_ndarray(format="rgb24"))))
    return out


def test_a_constant_rate_faststart_h264_mp4_is_served_as_it_is(tmp_path):
    video = write_video(tmp_path / "cfr.mp4", 30, fps=25, faststart=True, bframes=0)
    assert media.why_not_playable(video) is None
    playable = media.prepare(video, None, tmp_path / "cache")
    assert playable.path == video and not playable.transcoded
    assert playable.rate == 25 and playable.num_frames == 30
    assert not (tmp_path / "cache").exists()  # nothing transcoded, nothing cached


@pytest.mark.parametrize("kind, reason", [
    ("vfr", "variable frame rate"), ("bframes", "B-frames"), ("moov-last", "index (moov) is after"),
    ("mkv", "not an mp4"), ("jpeg", "frame folder"),
])
def test_what_the_browser_cannot_show_frame_exactly_is_named(tmp_path, kind, reason):
    if kind == "vfr":
        path = write_video(tmp_path / "v.mp4", len(VFR_MS), timestamps_ms=VFR_MS, faststart=True, bframes=0)
    elif kind == "bframes":
        path = write_video(tmp_path / "v.mp4", 30, faststart=True, bframes=2)
    elif kind == "moov-last":
        path = write_video(tmp_path / "v.mp4", 30, bframes=0)
    elif kind == "mkv":
        path = write_video(tmp_path / "v.mkv", 30, bframes=0)
    else:
        path = write_jpeg_folder(tmp_path / "frames", 10)
    assert reason in media.why_not_playable(path)


def test_a_variable_frame_rate_video_becomes_constant_rate_with_every_frame_where_it_was(tmp_path):
    source = write_video(tmp_path / "phone.mp4", len(VFR_MS), width=64, height=48, timestamps_ms=VFR_MS,
                         faststart=True, bframes=0)
    playable = media.prepare(source, None, tmp_path / "cache")
    assert playable.transcoded and playable.path.parent == tmp_path / "cache"
    assert playable.num_frames == len(VFR_MS)
    assert media.why_not_playable(playable.path) is None  # h264 yuv420p, faststart, no B-frames, constant rate
    frames = decoded(playable.path)
    # frame i of the output is decoded frame i of the source, shown from i / rate on: the labels' frame numbers
    assert [index for _, _, index in frames] == list(range(len(VFR_MS)))
    steps = {b[0] - a[0] for a, b in itertools.pairwise(frames)}
    assert frames[0][0] == 0 and len(steps) == 1
    assert all(pts == dts for pts, dts, _ in frames)
    with av.open(str(playable.path)) as container:
        time_base = container.streams.video[0].time_base
    assert abs(1 / (steps.pop() * time_base) - float(playable.rate)) < 1e-9


def test_the_transcode_is_made_once_and_again_when_the_source_changes(tmp_path, monkeypatch):
    source = write_video(tmp_path / "v.mkv", 12)
    first = media.prepare(source, None, tmp_path / "cache")
    made = first.path.stat().st_mtime_ns

    def no_second_transcode(*args, **kwargs):
        raise AssertionError("transcoded twice")

    with monkeypatch.context() as m:
        m.setattr(media, "transcode", no_second_transcode)
        again = media.prepare(source, None, tmp_path / "cache")
    assert again.path == first.path and again.path.stat().st_mtime_ns == made
    write_video(source, 14)  # the user replaced the file
    os.utime(source, ns=(made + 10**9, made + 10**9))
    replaced = media.prepare(source, None, tmp_path / "cache")
    assert replaced.path != first.path and replaced.num_frames == 14
    assert [i for _, _, i in decoded(replaced.path)] == list(range(14))
    assert not list((tmp_path / "cache").glob(".*.tmp"))


def test_a_jpeg_folder_and_an_odd_size_are_transcoded_at_the_given_rate(tmp_path):
    folder = write_jpeg_folder(tmp_path / "frames", 9, width=65, height=49)
    playable = media.prepare(folder, 12.5, tmp_path / "cache")
    assert playable.rate == 12.5 and playable.num_frames == 9
    with av.open(str(playable.path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (66, 50)
    assert [i for _, _, i in decoded(playable.path)] == list(range(9))


def test_a_broken_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(DataError, match="bad.mp4"):
        media.prepare(bad, None, tmp_path / "cache")
    with pytest.raises(DataError, match="missing.mp4"):
        media.prepare(tmp_path / "missing.mp4", None, tmp_path / "cache")


def test_index_first_reads_the_top_level_boxes(tmp_path):
    assert media.mp4_index_first(write_video(tmp_path / "a.mp4", 5, faststart=True))
    assert not media.mp4_index_first(write_video(tmp_path / "b.mp4", 5))
    assert not media.mp4_index_first(tmp_path / "none.mp4")
