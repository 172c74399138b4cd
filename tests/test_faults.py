"""Fault injection, part A of issue 7: bad videos, bad label files and a full disk during extraction.

A user runs pespot on thousands of real files; one broken file must cost one clear line naming it, a non-zero exit
and nothing else: the other inputs of the batch finish, and no temporary or half-written file is left behind.
Valid but unusual videos (one frame, variable frame rate, odd sizes, grayscale, 10-bit, a unicode path) must
come out right, which is checked on the frames themselves (each test frame carries its index, see conftest).

Every test is marked ``fault(kind, cases)``: kind ``video-input``, ``label-input`` or ``disk``.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import frame_pattern, pattern_index, run_cli, write_tiny_run, write_video

from pespot import infer
from pespot.data.frames import open_frames
from pespot.data.labels import Video, load_classes, load_dataset, load_split, save_split
from pespot.data.soccernet import SOCCERNET_V2_CLASSES, format_game_time, load_soccernet, read_labels
from pespot.errors import DataError

CLASSES = ["hit", "bounce"]
HEIGHT = 48  # the model's input height: the test videos' own height


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


# ------------------------------------------------------------------------------------------------------------
# test media


def encode(path: Path, num_frames: int, width: int, height: int, codec: str, pix_fmt: str,
           options: dict[str, str] | None = None) -> Path:
    """Encode ``frame_pattern`` frames with any codec and pixel format PyAV offers (gray, 10-bit...)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options or {}
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def encode_audio_only(path: Path, codec: str) -> Path:
    """A file with one audio stream and no video stream (an mp4/m4a of silence)."""
    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=16000)
        samples = 1152 if codec == "mp2" else 1024
        fmt, dtype = ("s16", np.int16) if codec == "mp2" else ("fltp", np.float32)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), dtype=dtype), format=fmt, layout="mono")
        frame.sample_rate = 16000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            container.mux(packet)
    return path


# Variable frame rate: irregular gaps (40 ms, 120 ms, 20 ms, 200 ms...), 12 frames in 800 ms.
VFR_MS = [0, 40, 80, 200, 240, 260, 400, 440, 500, 700, 720, 800]

# Valid videos: name -> (file name, frames, source size). Each must be read back frame by frame.
VALID = {
    "one_frame": ("one_frame.mp4", 1, (64, 48)),
    "shorter_than_a_clip": ("short.mp4", 3, (64, 48)),  # the tiny model's clip is 8 frames
    "vfr": ("vfr.mp4", len(VFR_MS), (64, 48)),
    "odd_size": ("odd.mp4", 6, (321, 179)),
    "gray_h264": ("gray.mp4", 6, (64, 48)),
    "gray_ffv1": ("gray_ffv1.mkv", 6, (64, 48)),
    "10bit_420": ("ten_bit.mp4", 6, (64, 48)),
    "10bit_444_hevc": ("ten_bit_hevc.mkv", 6, (64, 48)),
    "unicode_path": ("match día 1 – Élite/rally ñ 1.mp4", 8, (64, 48)),
}

# Broken inputs: name -> the text the one-line error must contain (extract, infer).
BROKEN = {
    "zero_bytes": ("empty file (0 bytes)", "empty file (0 bytes)"),
    "truncated_moov_at_end": ("not a readable video", "not a readable video"),
    "truncated_moov_first": ("truncated", "truncated"),
    "text_named_mp4": ("not a readable video", "not a readable video"),
    "audio_only_aac_m4a": ("no video stream", "no video stream"),
    "audio_only_mp2_mp4": ("no video stream", "no video stream"),
    "missing_path": ("no such video file or directory", "no such video file, frame folder or split JSON"),
    "folder_without_frames": ("no video files in this directory", "no frames (expected 000000.jpg"),
}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Every valid and broken input of this file, written once."""
    root = tmp_path_factory.mktemp("media")
    m: dict[str, Path] = {"root": root}
    m["good"] = write_video(root / "good.mp4", 20)
    m["one_frame"] = write_video(root / "one_frame.mp4", 1)
    m["shorter_than_a_clip"] = write_video(root / "short.mp4", 3)
    m["vfr"] = write_video(root / "vfr.mp4", len(VFR_MS), timestamps_ms=VFR_MS)
    m["odd_size"] = write_video(root / "odd.mp4", 6, width=321, height=179, lossless=True)
    m["gray_h264"] = encode(root / "gray.mp4", 6, 64, 48, "libx264", "gray", {"qp": "0"})
    m["gray_ffv1"] = encode(root / "gray_ffv1.mkv", 6, 64, 48, "ffv1", "gray")
    m["10bit_420"] = encode(root / "ten_bit.mp4", 6, 64, 48, "libx264", "yuv420p10le", {"crf": "18"})
    m["10bit_444_hevc"] = encode(root / "ten_bit_hevc.mkv", 6, 64, 48, "libx265", "yuv444p10le",
                                 {"x265-params": "log-level=error:lossless=1"})
    m["unicode_path"] = write_video(root / VALID["unicode_path"][0], 8)

    (root / "zero.mp4").write_bytes(b"")
    m["zero_bytes"] = root / "zero.mp4"
    whole = write_video(root / "src_cut.mp4", 40).read_bytes()  # moov written last: a cut loses the index
    (root / "cut_end.mp4").write_bytes(whole[: len(whole) // 2])
    m["truncated_moov_at_end"] = root / "cut_end.mp4"
    whole = write_video(root / "src_cut_fast.mp4", 40, faststart=True).read_bytes()  # index first: opens
    (root / "cut_first.mp4").write_bytes(whole[: len(whole) // 2])
    m["truncated_moov_first"] = root / "cut_first.mp4"
    (root / "notes.mp4").write_text("a text file, not a video\n")
    m["text_named_mp4"] = root / "notes.mp4"
    m["audio_only_aac_m4a"] = encode_audio_only(root / "speech.m4a", "aac")
    m["audio_only_mp2_mp4"] = encode_audio_only(root / "radio.mp4", "mp2")
    m["missing_path"] = root / "not here.mp4"
    (root / "no_frames").mkdir()
    (root / "no_frames" / "readme.txt").write_text("frames go here\n")
    m["folder_without_frames"] = root / "no_frames"
    return m


def indices(frames) -> list[int]:
    return [pattern_index(f) for f in np.asarray(frames)]


def leftovers(folder: Path) -> list[str]:
    """Hidden entries (``.<id>.partial``, ``.<name>.*.tmp``) anywhere under ``folder``: must be none."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


# ------------------------------------------------------------------------------------------------------------
# pespot extract: broken inputs


@pytest.mark.fault("video-input")
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_extract_reports_a_broken_input_and_finishes_the_batch(case, media, tmp_path, capsys):
    bad, good = media[case], media["good"]
    out = tmp_path / "store"
    code, stdout, stderr = run_cli(capsys, "extract", bad, good, "--out", out, "--height", 0, "--workers", 1,
                                   "--json")
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"pespot extract: failed: {bad}: ") and BROKEN[case][0] in lines[0]
    report = json.loads(stdout)
    assert (report["extracted"], report["failed"]) == (1, 1)
    assert [v["status"] for v in report["videos"]] == ["failed", "extracted"]  # in the order given
    # The good video is complete and right; nothing else, no partial output, is in the store.
    assert sorted(p.name for p in out.iterdir()) == ["good"] and leftovers(out) == []
    assert indices(open_frames(out / "good").read(0, 20)) == list(range(20))


# The batch tests re-try the inputs of the parametrized tests above together (other workers, other format):
# one more scenario, not new inputs, so they count as one case each.
@pytest.mark.fault("video-input")
def test_extract_batch_of_every_broken_input_in_parallel_workers(media, tmp_path, capsys):
    out = tmp_path / "store"
    bad = [media[c] for c in sorted(BROKEN)]
    code, stdout, stderr = run_cli(capsys, "extract", *bad, media["good"], "--out", out, "--format", "mp4",
                                   "--height", 0, "--workers", 2, "--json")
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == len(bad), stderr
    for case, path, line in zip(sorted(BROKEN), bad, lines):  # one line each, in input order
        assert line.startswith(f"pespot extract: failed: {path}: ") and BROKEN[case][0] in line
    assert json.loads(stdout)["extracted"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["good.mp4"] and leftovers(out) == []
    assert indices(open_frames(out / "good.mp4").read(0, 20)) == list(range(20))


@pytest.mark.fault("video-input")
def test_extract_two_files_with_one_video_id_fail_one_and_keep_the_other(media, tmp_path, capsys):
    other = tmp_path / "elsewhere" / "good.mkv"  # the same id 'good' as media['good']
    encode(other, 4, 64, 48, "ffv1", "yuv420p")
    out = tmp_path / "store"
    code, _, stderr = run_cli(capsys, "extract", media["good"], other, "--out", out, "--height", 0,
                              "--workers", 1)
    assert code == 1
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"pespot extract: failed: {other}: would be written as video 'good'")
    assert open_frames(out / "good").num_frames == 20  # the first one, complete
    assert leftovers(out) == []


# ------------------------------------------------------------------------------------------------------------
# pespot extract: valid but unusual videos


@pytest.mark.fault("video-input")
@pytest.mark.parametrize("fmt", ["jpg", "mp4"])
@pytest.mark.parametrize("case", sorted(VALID))
def test_extract_unusual_valid_videos_frame_by_frame(case, fmt, media, tmp_path, capsys):
    _, num_frames, (width, height) = VALID[case]
    src = media[case]
    out = tmp_path / "store"
    code, stdout, stderr = run_cli(capsys, "extract", src, "--out", out, "--height", 0, "--format", fmt,
                                   "--workers", 1, "--json")
    assert code == 0, stderr
    (result,) = json.loads(stdout)["videos"]
    assert result["status"] == "extracted" and result["frames"] == num_frames
    store = open_frames(result["output"])
    assert Path(result["output"]).name == (src.stem if fmt == "jpg" else f"{src.stem}.mp4")
    # JPEG keeps any size; the mp4 store (yuv420p) drops an odd last row/column.
    expected_size = (width, height) if fmt == "jpg" else (width - width % 2, height - height % 2)
    assert (store.width, store.height, store.num_frames) == (*expected_size, num_frames)
    frames = store.read(0, num_frames).numpy()  # (T, H, W, 3)
    assert indices(frames) == list(range(num_frames))
    if case.startswith("gray"):  # gray in, gray out: the three channels are equal
        assert np.abs(frames.astype(int) - frames[..., :1].astype(int)).max() <= 2
    assert leftovers(out) == []


@pytest.mark.fault("video-input")
def test_extract_variable_frame_rate_resampled_by_timestamps(media, tmp_path):
    from pespot.data.extract import extract_videos

    (result,) = extract_videos([media["vfr"]], tmp_path / "store", height=None, fps=5, progress=False)
    # Ticks every 200 ms; the first frame at or after each: 0 ms, 200 ms, 400 ms, 700 ms (tick 600), 800 ms.
    assert result.status == "extracted" and result.frames == 5 and result.fps == 5.0
    assert indices(open_frames(result.output).read(0, 5)) == [0, 3, 6, 9, 11]


@pytest.mark.fault("video-input")
def test_extract_odd_size_resized_to_an_even_width(media, tmp_path):
    from pespot.data.extract import extract_videos

    results = extract_videos([media["odd_size"]], tmp_path / "store", height=90, progress=False)
    store = open_frames(results[0].output)
    assert (store.width, store.height) == (162, 90)  # 321 * 90 / 179 = 161.4 -> nearest even
    assert indices(store.read(0, 6)) == list(range(6))


# ------------------------------------------------------------------------------------------------------------
# pespot infer: a tiny untrained spotter on every input


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder with checkpoints/best.pt of a randomly initialised tiny spotter (clip 8, height 48)."""
    return write_tiny_run(tmp_path_factory.mktemp("run"), CLASSES, height=HEIGHT)


@pytest.fixture(scope="module")
def predictor(tiny_run) -> infer.Predictor:
    return infer.load_predictor(tiny_run, device="cpu")


def array_stream(frames: np.ndarray, fps: float | None) -> infer.FrameStream:
    def chunks(chunk_len: int):
        for s in range(0, len(frames), chunk_len):
            yield frames[s: s + chunk_len]

    return infer.FrameStream(name="reference", fps=fps, num_frames=len(frames), chunks=chunks)


def check_prediction(video: Video, scores_file: Path, src: Path, num_frames: int, predictor: infer.Predictor):
    """The prediction of ``src`` covers its frames, and its scores are the model's on the frames a random-access
    read returns (itself checked frame by frame), not on frames dropped, repeated or misordered."""
    source = open_frames(src, height=HEIGHT)
    frames = source.read(0, source.num_frames).numpy()
    assert indices(frames) == list(range(num_frames)) and frames.shape[1] == HEIGHT
    assert video.num_frames == num_frames and video.fps == pytest.approx(source.fps)
    assert all(0 <= e.frame < num_frames and e.label in CLASSES for e in video.events)
    scores, classes, _ = infer.load_scores_npz(scores_file)
    reference = infer.predict_scores(predictor, array_stream(frames, source.fps), progress=False)
    assert scores.shape == (num_frames, len(CLASSES) + 1) and classes == CLASSES
    np.testing.assert_allclose(scores, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.fault("video-input")
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_infer_reports_a_broken_input_and_finishes_the_batch(case, media, tiny_run, predictor, tmp_path, capsys):
    bad, good = media[case], media["good"]
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(capsys, "infer", tiny_run, good, bad, "--out", out / "pred.json",
                                   "--csv", out / "pred.csv", "--save-scores", out / "scores", "--quiet")
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"pespot infer: error: {bad}: ") and BROKEN[case][1] in lines[0]
    assert "1 failed" in stdout
    (video,) = load_split(out / "pred.json", CLASSES, predictions=True)
    assert video.video == "good"
    check_prediction(video, out / "scores" / "good.npz", good, 20, predictor)
    assert sorted(p.name for p in out.rglob("*")) == ["good.npz", "pred.csv", "pred.json", "scores"]


@pytest.mark.fault("video-input")
@pytest.mark.parametrize("case", sorted(VALID))
def test_infer_unusual_valid_videos(case, media, tiny_run, predictor, tmp_path, capsys):
    _, num_frames, _ = VALID[case]
    src = media[case]
    out = tmp_path / "out"
    code, _, stderr = run_cli(capsys, "infer", tiny_run, src, "--out", out / "pred.json", "--save-scores",
                              out / "scores", "--quiet")
    assert code == 0, stderr
    (video,) = load_split(out / "pred.json", CLASSES, predictions=True)
    assert video.video == src.stem
    check_prediction(video, out / "scores" / f"{src.stem}.npz", src, num_frames, predictor)
    assert leftovers(out) == []


@pytest.mark.fault("video-input")
def test_infer_batch_of_every_broken_and_valid_input(media, tiny_run, tmp_path, capsys):
    bad = [media[c] for c in sorted(BROKEN)]
    good = [media[c] for c in sorted(VALID)]
    inputs = [x for pair in zip(bad, good) for x in pair] + good[len(bad):]  # interleaved
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(capsys, "infer", tiny_run, *inputs, "--out", out / "pred.json", "--quiet",
                                   "--json")
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == len(bad), stderr
    for case, path, line in zip(sorted(BROKEN), bad, lines):
        assert line.startswith(f"pespot infer: error: {path}: ") and BROKEN[case][1] in line
    summary = json.loads(stdout)
    assert [f["input"] for f in summary["failures"]] == [str(p) for p in bad]
    preds = load_split(out / "pred.json", CLASSES, predictions=True)
    assert [(v.video, v.num_frames) for v in preds] == [(p.stem, VALID[c][1]) for c, p in zip(sorted(VALID), good)]
    assert sorted(p.name for p in out.iterdir()) == ["pred.json"]


@pytest.mark.fault("video-input")
def test_infer_all_inputs_broken_writes_nothing(media, tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(capsys, "infer", tiny_run, media["zero_bytes"], media["missing_path"],
                                   "--out", out / "pred.json", "--csv", out / "pred.csv", "--quiet")
    assert code == 1 and len(stderr.strip().splitlines()) == 2
    assert "nothing written" in stdout and not out.exists()


# ------------------------------------------------------------------------------------------------------------
# label files: E2E-Spot splits and class.txt


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def video(name: str, num_frames: int = 20, events=(), **extra) -> dict:
    return {"video": name, "num_frames": num_frames, "fps": 25.0, "num_events": len(events),
            "events": [{"frame": f, "label": label} for f, label in events], **extra}


GOOD_SPLIT = [video("rally_a", events=[(3, "hit"), (7, "bounce")]), video("rally_b", events=[(5, "hit")])]

# A bad train.json: name -> (content, text every error line must contain after the file name).
BAD_SPLITS = {
    "truncated_json": (json.dumps(GOOD_SPLIT)[:40], r"not valid JSON \(line 1, column \d+"),
    "not_json": (b"\x89PNG\r\n\x1a\n\x00\x00", r"(not valid JSON|cannot read)"),
    "object_not_list": ({"videos": GOOD_SPLIT}, r"expected a JSON list of videos, got dict"),
    "frame_as_string": ([GOOD_SPLIT[0], video("rally_b", events=[("5", "hit")])],
                        r"entry 1 \(video 'rally_b'\), event 0: 'frame' must be an integer, got '5'"),
    "num_frames_a_list": ([GOOD_SPLIT[0], {"video": "rally_b", "num_frames": [20], "events": []}],
                             r"entry 1 \(video 'rally_b'\): 'num_frames' must be a non-negative integer"),
    "events_not_a_list": ([{"video": "rally_a", "num_frames": 20, "events": "hit@3"}],
                          r"entry 0 \(video 'rally_a'\): 'events' must be a list, got str"),
    "event_beyond_video": ([GOOD_SPLIT[0], video("rally_b", num_frames=20, events=[(5, "hit"), (20, "hit")])],
                           r"entry 1 \(video 'rally_b'\), event 1: frame 20 outside \[0, 20\)"),
    "negative_frame": ([video("rally_a", events=[(-1, "hit")])],
                       r"entry 0 \(video 'rally_a'\), event 0: frame -1 outside"),
    "unknown_class": ([GOOD_SPLIT[0], video("rally_b", events=[(2, "smash")])],
                      r"entry 1 \(video 'rally_b'\), event 0: unknown class 'smash'"),
    "duplicated_video": ([*GOOD_SPLIT, video("rally_a")],
                         r"entry 2 \(video 'rally_a'\): duplicated video id \(first at entry 0\)"),
    "empty_split": ([], r"empty split"),
}


@pytest.mark.fault("label-input")
@pytest.mark.parametrize("case", sorted(BAD_SPLITS))
def test_bad_split_through_the_loader_and_pespot_stats(case, tmp_path, capsys):
    content, message = BAD_SPLITS[case]
    root = tmp_path / "data"
    write(root / "class.txt", "hit\nbounce\n")
    write(root / "val.json", GOOD_SPLIT)
    bad = write(root / "train.json", content)
    with pytest.raises(DataError, match=f"^{bad}: {message}"):
        load_dataset(root)
    code, stdout, stderr = run_cli(capsys, "stats", root)
    assert code == 1 and stdout == ""
    lines = stderr.strip().splitlines()
    # Parse errors: one line. Validation problems: each problem on its line, then the count.
    assert lines[0].startswith(f"{bad}: ") or lines[0].startswith(f"pespot stats: error: {bad}: ")
    assert len(lines) in (1, 2)
    assert re.search(message, lines[0]), lines[0]


@pytest.mark.fault("label-input")
@pytest.mark.parametrize("case", ["duplicated_video", "event_beyond_video", "unknown_class", "empty_split",
                                  "truncated_json"])
def test_bad_truth_through_pespot_eval_without_a_class_file(case, tmp_path, capsys):
    content, message = BAD_SPLITS[case]
    if case == "unknown_class":  # without class.txt the classes are the truth's own: give them
        write(tmp_path / "classes.txt", "hit\nbounce\n")
    truth = write(tmp_path / "truth.json", content)
    pred = write(tmp_path / "pred.json", [{"video": "rally_a", "events": [{"frame": 3, "label": "hit",
                                                                          "score": 0.9}]}])
    extra = ["--classes", tmp_path / "classes.txt"] if case == "unknown_class" else []
    code, stdout, stderr = run_cli(capsys, "eval", truth, pred, *extra)
    assert code == 1 and stdout == ""
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"pespot eval: error: {truth}: ") and re.search(message, line), line


BAD_PREDICTIONS = {
    "video_not_in_truth": ([{"video": "rally_z", "events": []}], r"entry 0: video 'rally_z' is not in the truth"),
    "duplicated_video": ([{"video": "rally_a", "events": []}, {"video": "rally_a", "events": []}],
                         r"entry 1 \(video 'rally_a'\): duplicated video id"),
    "score_missing": ([{"video": "rally_a", "events": [{"frame": 3, "label": "hit"}]}],
                      r"entry 0 \(video 'rally_a'\), event 0: prediction without a 'score'"),
    "score_nan": ('[{"video": "rally_a", "events": [{"frame": 3, "label": "hit", "score": NaN}]}]',
                  r"entry 0 \(video 'rally_a'\), event 0: 'score' must be a finite number, got nan"),
    "score_string": ([{"video": "rally_a", "events": [{"frame": 3, "label": "hit", "score": "high"}]}],
                     r"entry 0 \(video 'rally_a'\), event 0: 'score' must be a number"),
    "event_beyond_video": ([{"video": "rally_a", "num_frames": 20, "events": [{"frame": 25, "label": "hit",
                                                                            "score": 0.5}]}],
                           r"entry 0 \(video 'rally_a'\), event 0: frame 25 outside \[0, 20\)"),
}


@pytest.mark.fault("label-input")
@pytest.mark.parametrize("case", sorted(BAD_PREDICTIONS))
def test_bad_predictions_through_pespot_eval(case, tmp_path, capsys):
    content, message = BAD_PREDICTIONS[case]
    truth = write(tmp_path / "truth.json", GOOD_SPLIT)  # no class.txt beside it
    pred = write(tmp_path / "pred.json", content)
    code, stdout, stderr = run_cli(capsys, "eval", truth, pred)
    assert code == 1 and stdout == ""
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"pespot eval: error: {pred}: ") and re.search(message, line), line


@pytest.mark.fault("label-input")
def test_extract_labels_with_a_duplicated_video_is_refused_before_extracting(media, tmp_path, capsys):
    labels = write(tmp_path / "val.json", [video("good", num_frames=20), video("good", num_frames=21)])
    out = tmp_path / "store"
    code, _, stderr = run_cli(capsys, "extract", media["good"], "--out", out, "--labels", labels, "--workers", 1)
    assert code == 1
    (line,) = stderr.strip().splitlines()
    assert line == (f"pespot extract: error: {labels}: entry 1 (video 'good'): duplicated video id "
                    "(first at entry 0)")
    assert not out.exists()


CLASS_FILES = {
    "blank_lines": (b"\nhit\n\n   \nbounce\n\n", ["hit", "bounce"]),
    "crlf_and_spaces": (b"hit \r\n\r\n bounce\r\n", ["hit", "bounce"]),
    "utf8_byte_order_mark": (b"\xef\xbb\xbfhit\nbounce\n", ["hit", "bounce"]),
    "duplicate": (b"hit\nbounce\n\nhit\n", r"class\.txt:4: duplicated class 'hit'"),
    "duplicate_after_strip": (b"hit\n hit \n", r"class\.txt:2: duplicated class 'hit'"),
    "only_blank_lines": (b"\n  \n\n", r"class\.txt: no class names"),
    "not_text": (b"\xff\xfe\x00h\x00i", r"class\.txt: cannot read class file"),
}


@pytest.mark.fault("label-input")
@pytest.mark.parametrize("case", sorted(CLASS_FILES))
def test_class_file_through_the_loader_and_pespot_stats(case, tmp_path, capsys):
    content, expected = CLASS_FILES[case]
    root = tmp_path / "data"
    path = write(root / "class.txt", content)
    write(root / "train.json", GOOD_SPLIT)
    code, stdout, stderr = run_cli(capsys, "stats", root, "--json")
    if isinstance(expected, list):  # valid: read exactly, and the events of every class are counted
        assert load_classes(path) == expected
        assert code == 0, stderr
        report = json.loads(stdout)
        assert report["classes"] == expected
        assert report["splits"]["train"]["events_per_class"] == {"hit": 2, "bounce": 1}
        return
    with pytest.raises(DataError, match=expected):
        load_classes(path)
    assert code == 1 and stdout == ""
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"pespot stats: error: {path}") and re.search(expected, line), line


@pytest.mark.fault("label-input")
def test_split_with_a_byte_order_mark_reads_like_without(tmp_path):
    plain = write(tmp_path / "plain.json", GOOD_SPLIT)
    marked = write(tmp_path / "marked.json", b"\xef\xbb\xbf" + plain.read_bytes())
    assert load_split(marked, CLASSES) == load_split(plain, CLASSES)


# ------------------------------------------------------------------------------------------------------------
# SoccerNet Labels-v2.json


GAME = "england_epl/2016-2017/2016-10-01 - 14-30 Swansea 1 - 2 Liverpool"


def annotation(half: int, ms: int, label: str) -> dict:
    return {"gameTime": format_game_time(half, ms), "label": label, "position": str(ms), "team": "home",
            "visibility": "visible"}


def write_game(root: Path, game: str, annotations: list[dict]) -> Path:
    return write(root / game / "Labels-v2.json", {"UrlLocal": game, "annotations": annotations})


@pytest.mark.fault("label-input")
def test_soccernet_event_of_a_half_without_video_names_the_annotation(tmp_path):
    path = write_game(tmp_path, GAME, [annotation(1, 5_000, "Kick-off"), annotation(2, 3_000, "Kick-off")])
    # Only half 1 was downloaded/extracted: its frame count is known, half 2's is not.
    with pytest.raises(DataError, match=f"^{path}: annotation 1: an event of half 2, but the game has no video "
                                        r"of half 2 \(frame counts given for half 1\)$"):
        read_labels(path, fps=2, classes=SOCCERNET_V2_CLASSES, num_frames={1: 5400})
    h1, h2 = read_labels(path, fps=2, classes=SOCCERNET_V2_CLASSES, num_frames={1: 5400, 2: 5400})
    assert [e.frame for e in h1.events] == [10] and [e.frame for e in h2.events] == [6]


@pytest.mark.fault("label-input")
def test_soccernet_event_after_the_end_of_its_half_names_the_annotation(tmp_path):
    path = write_game(tmp_path, GAME, [annotation(1, 5_000, "Goal"), annotation(2, 2_700_000, "Corner")])
    with pytest.raises(DataError, match=f"^{path}: annotation 1: position 2700000 ms is frame 5400 at 2 fps, "
                                        r"after the end of half 2 \(5400 frames\)$"):
        read_labels(path, fps=2, classes=SOCCERNET_V2_CLASSES, num_frames={1: 5400, 2: 5400})


@pytest.mark.fault("label-input")
def test_soccernet_game_listed_twice_is_an_error(tmp_path):
    write_game(tmp_path, GAME, [annotation(1, 5_000, "Goal")])
    with pytest.raises(DataError, match=f"game '{GAME}' is listed more than once"):
        load_soccernet(tmp_path, fps=2, games=[GAME, GAME])


@pytest.mark.fault("label-input")
def test_soccernet_game_with_a_missing_half_converts_and_evaluates(tmp_path, capsys):
    # Labels-v2.json of a game whose second half has no annotations at all: a valid file. The conversion gives
    # an empty half 2, and the official metric counts a prediction there as a false positive.
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    write_game(labels, GAME, [annotation(1, 10_000, "Goal"), annotation(1, 70_000, "Corner")])
    h1, h2 = load_soccernet(labels, fps=2, classes=SOCCERNET_V2_CLASSES)
    assert [(e.frame, e.label) for e in h1.events] == [(20, "Goal"), (140, "Corner")] and h2.events == []
    write(preds / GAME / "results_spotting.json", {"UrlLocal": GAME, "predictions": [
        {**annotation(1, 10_000, "Goal"), "half": "1", "confidence": "0.5"},
        {**annotation(1, 70_000, "Corner"), "half": "1", "confidence": "0.6"},
        {**annotation(2, 10_000, "Corner"), "half": "2", "confidence": "0.9"},  # no truth in half 2
    ]})
    code, stdout, stderr = run_cli(capsys, "eval", "--soccernet", labels, preds, "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    per_class = dict(zip(SOCCERNET_V2_CLASSES, result["a_mAP_per_class"]))
    assert per_class["Goal"] == pytest.approx(1.0)
    # Corner: the half-2 false positive ranks first (0.9), then the hit: precision 1/2 at recall 1.
    assert per_class["Corner"] == pytest.approx(0.5)
    assert result["a_mAP"] == pytest.approx(1.5 / len(SOCCERNET_V2_CLASSES))


# ------------------------------------------------------------------------------------------------------------
# a full disk during extraction


def disk_full(path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def extract_three(media_root: Path) -> list[Path]:
    """Three small videos a (12 frames), b (15), c (9) and the labels that say so."""
    videos = [write_video(media_root / f"{name}.mp4", n) for name, n in (("a", 12), ("b", 15), ("c", 9))]
    save_split([Video(v.stem, n, 25.0) for v, n in zip(videos, (12, 15, 9))], media_root / "labels.json")
    return videos


def check_disk_full_run(code: int, stdout: str, stderr: str, videos: list[Path], out: Path, fmt: str,
                        a_before: dict[str, int]) -> None:
    """After a disk that filled up during b: a untouched, b and c failed with one line each, nothing partial."""
    assert code == 1
    report = json.loads(stdout)
    assert [(v["video"], v["status"]) for v in report["videos"]] == [("a", "skipped"), ("b", "failed"),
                                                                      ("c", "failed")]
    lines = stderr.strip().splitlines()
    assert len(lines) == 2, stderr
    for line, src, name in zip(lines, videos[1:], ("b", "c")):
        final = out / (name if fmt == "jpg" else f"{name}.mp4")
        assert line == (f"pespot extract: failed: {src}: cannot write {final}: disk full (No space left on "
                        "device); nothing of this video was kept")
    assert sorted(p.name for p in out.iterdir()) == (["a"] if fmt == "jpg" else ["a.mp4"])
    assert leftovers(out) == []
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*")} == a_before


def rerun_and_verify(capsys, videos: list[Path], out: Path, fmt: str) -> None:
    """The disk is free again: a rerun skips a, extracts b and c, and every frame count matches the labels."""
    code, stdout, stderr = run_cli(capsys, "extract", *videos, "--out", out, "--height", 0, "--format", fmt,
                                   "--workers", 1, "--labels", videos[0].parent / "labels.json", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert [(v["status"], v["frames"]) for v in report["videos"]] == [("skipped", 12), ("extracted", 15),
                                                                      ("extracted", 9)]
    for v in report["videos"]:
        assert indices(open_frames(v["output"]).read(0, v["frames"])) == list(range(v["frames"]))
    assert leftovers(out) == []


def first_output(out: Path, fmt: str, capsys, videos: list[Path]) -> dict[str, int]:
    code, _, stderr = run_cli(capsys, "extract", videos[0], "--out", out, "--height", 0, "--format", fmt,
                              "--workers", 1)
    assert code == 0, stderr
    return {p.name: p.stat().st_mtime_ns for p in out.rglob("*")}


@pytest.mark.fault("disk")
def test_disk_full_while_writing_jpegs(tmp_path, capsys, monkeypatch):
    from PIL import Image

    videos = extract_three(tmp_path / "in")
    out = tmp_path / "store"
    a_before = first_output(out, "jpg", capsys, videos)
    real_save = Image.Image.save
    written = []

    def save(self, fp, *args, **kwargs):
        if len(written) >= 5:  # the disk fills up at the 6th frame of b and stays full
            raise disk_full(fp)
        written.append(fp)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    code, stdout, stderr = run_cli(capsys, "extract", *videos, "--out", out, "--height", 0, "--workers", 1,
                                   "--json")
    check_disk_full_run(code, stdout, stderr, videos, out, "jpg", a_before)
    assert len(written) == 5 and all(".b.partial" in str(p) for p in written)  # b was really half-way
    monkeypatch.undo()
    rerun_and_verify(capsys, videos, out, "jpg")


@pytest.mark.fault("disk")
def test_disk_full_while_muxing_the_mp4_store(tmp_path, capsys, monkeypatch):
    import av

    videos = extract_three(tmp_path / "in")
    out = tmp_path / "store"
    a_before = first_output(out, "mp4", capsys, videos)
    real_open = av.open
    muxed = []

    class FullDiskOutput:
        """An output container whose writes fail like FFmpeg's on a full disk, after a few packets."""

        def __init__(self, container, name):
            self._container, self._name = container, name

        def __getattr__(self, attr):
            return getattr(self._container, attr)

        def mux(self, packet):
            if len(muxed) >= 4:
                av.error.err_check(-errno.ENOSPC, self._name)  # raises av.error.OSError, as FFmpeg would
            muxed.append(self._name)
            return self._container.mux(packet)

    def open_(file, mode="r", *args, **kwargs):
        container = real_open(file, mode, *args, **kwargs)
        return FullDiskOutput(container, file) if mode == "w" else container

    monkeypatch.setattr(av, "open", open_)
    code, stdout, stderr = run_cli(capsys, "extract", *videos, "--out", out, "--height", 0, "--format", "mp4",
                                   "--workers", 1, "--json")
    check_disk_full_run(code, stdout, stderr, videos, out, "mp4", a_before)
    assert len(muxed) == 4 and all(".b.mp4.partial" in name for name in muxed)
    monkeypatch.undo()
    rerun_and_verify(capsys, videos, out, "mp4")


@pytest.mark.fault("disk")
def test_disk_full_at_the_final_rename(tmp_path, capsys, monkeypatch):
    import os

    from pespot.data import extract

    videos = extract_three(tmp_path / "in")
    out = tmp_path / "store"
    a_before = first_output(out, "jpg", capsys, videos)
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(src).name in (".b.partial", ".c.partial"):
            raise disk_full(src)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(extract.os, "replace", replace)
    code, stdout, stderr = run_cli(capsys, "extract", *videos, "--out", out, "--height", 0, "--workers", 1,
                                   "--json")
    check_disk_full_run(code, stdout, stderr, videos, out, "jpg", a_before)
    monkeypatch.undo()
    rerun_and_verify(capsys, videos, out, "jpg")


@pytest.mark.fault("disk")
def test_disk_full_creating_the_folder_of_a_nested_video(media, tmp_path, capsys, monkeypatch):
    # A video id with a folder (DIR/sub/v.mp4 -> <out>/sub/v/): creating that folder is a write too.
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(media["good"], src / "sub" / "v.mp4")
    shutil.copy(media["good"], src / "first.mp4")
    out = tmp_path / "store"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.name == "sub":
            raise disk_full(self)
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    code, _, stderr = run_cli(capsys, "extract", src, "--out", out, "--height", 0, "--workers", 1)
    monkeypatch.undo()
    assert code == 1
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"pespot extract: failed: {src / 'sub' / 'v.mp4'}: cannot write {out / 'sub' / 'v'}: "
                           "disk full")
    assert sorted(p.name for p in out.iterdir()) == ["first"] and open_frames(out / "first").num_frames == 20



@pytest.mark.fault("disk")
def test_disk_full_writing_the_predictions_of_infer(media, tiny_run, tmp_path, capsys, monkeypatch):
    # Delayed allocation: a full disk often shows only when the file is flushed (fsync), after every write
    # "succeeded". The earlier pred.json must survive, and no temporary file may stay behind.
    from pespot import fsutil

    out = tmp_path / "out" / "pred.json"
    code, _, stderr = run_cli(capsys, "infer", tiny_run, media["good"], "--out", out, "--quiet")
    assert code == 0, stderr
    before = out.read_bytes()

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsutil.os, "fsync", fsync)
    code, _, stderr = run_cli(capsys, "infer", tiny_run, media["shorter_than_a_clip"], "--out", out, "--quiet")
    monkeypatch.undo()
    assert code == 1
    (line,) = stderr.strip().splitlines()
    assert line == f"pespot infer: error: cannot write {out}: disk full (No space left on device)"
    assert out.read_bytes() == before and sorted(p.name for p in out.parent.iterdir()) == ["pred.json"]
