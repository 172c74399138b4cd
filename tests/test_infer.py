"""Inference: sliding windows, score aggregation, thresholds + NMS, output files, and `pespot infer` end to end.

The unit tests drive ``predict_scores`` with a small stand-in model whose output depends on the whole window, so
a frame covered by two windows gets two different scores and the test can tell a mean from a sum or from the
last window. The end-to-end tests build the real (tiny, randomly initialised) spotter, save a checkpoint in the
documented format and run the CLI on PyAV-encoded videos and JPEG folders.
"""

from __future__ import annotations

import csv
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WindowModel, write_tiny_run

from pespot import infer
from pespot.config import Config
from pespot.data.labels import Event, load_split
from pespot.errors import DataError, PespotError

MEAN = np.array(infer.IMAGENET_MEAN)
STD = np.array(infer.IMAGENET_STD)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


# ------------------------------------------------------------------------------------------------------------
# helpers


def make_predictor(model: torch.nn.Module, classes: list[str], activation: str = "sigmoid",
                   crop: int | None = None) -> infer.Predictor:
    cfg = Config()
    cfg.model.clip_len = model.clip_len
    cfg.data.crop = crop
    cfg.data.height = 6
    return infer.Predictor(model=model.eval(), cfg=cfg, classes=classes, device=torch.device("cpu"),
                           activation=activation)


def array_stream(frames: np.ndarray, fps: float | None = 25.0) -> infer.FrameStream:
    """A FrameStream over an in-memory uint8 (N, H, W, 3) array."""

    def chunks(chunk_len: int):
        for s in range(0, len(frames), chunk_len):
            yield frames[s: s + chunk_len]

    return infer.FrameStream(name="array", fps=fps, num_frames=len(frames), chunks=chunks)


def random_frames(num_frames: int, height: int = 6, width: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


def reference_window_scores(window: np.ndarray, clip_len: int, num_outputs: int = 3) -> np.ndarray:
    """What WindowDependentModel + sigmoid gives for one uint8 window (t <= clip_len, H, W, 3), computed in
    numpy; a short window is padded with zeros after normalisation (as the model pads)."""
    x = (window.astype(np.float64) / 255.0 - MEAN) / STD  # (t, H, W, 3)
    x = np.concatenate([x, np.zeros((clip_len - len(x), *x.shape[1:]))])  # (T, H, W, 3)
    logits = x.mean() + 0.3 * x.mean(axis=(1, 2, 3))[:, None] + 0.1 * np.arange(num_outputs)[None, :]
    return 1.0 / (1.0 + np.exp(-logits))  # (T, K+1)


# ------------------------------------------------------------------------------------------------------------
# windows


@pytest.mark.parametrize("num_frames, clip_len, stride, starts, valid", [
    (18, 8, 4, [0, 4, 8, 12], [8, 8, 8, 6]),  # last window padded with 2 zero frames
    (16, 8, 4, [0, 4, 8], [8, 8, 8]),  # the window [8, 16) reaches the end: no padded window
    (5, 8, 4, [0], [5]),  # shorter than one clip
    (17, 8, 8, [0, 8, 16], [8, 8, 1]),  # no overlap
    (8, 8, 8, [0], [8]),
])
@pytest.mark.parametrize("chunk", [1, 3, 4, 50])
def test_iter_windows_cover_every_frame_once_per_window(num_frames, clip_len, stride, starts, valid, chunk):
    frames = np.arange(num_frames, dtype=np.uint8)[:, None, None, None].repeat(3, axis=3)  # (N, 1, 1, 3)
    chunks = (frames[s: s + chunk] for s in range(0, num_frames, chunk))
    windows = list(infer.iter_windows(chunks, clip_len, stride))
    assert [w[0] for w in windows] == starts
    assert [w[2] for w in windows] == valid
    for start, window, n_valid in windows:
        assert window.shape == (clip_len, 1, 1, 3)
        np.testing.assert_array_equal(window[:n_valid, 0, 0, 0], np.arange(start, start + n_valid))
        assert (window[n_valid:] == 0).all()  # zero padding after the last frame


def test_windows_are_streamed_with_a_bounded_buffer():
    # A long "video" delivered in chunks: each window must come out as soon as its frames have arrived, so
    # only about one window plus one chunk is ever held (a 90-minute match is never read whole).
    clip_len, stride, chunk, num_frames = 16, 8, 8, 4000
    consumed = []

    def chunks():
        for s in range(0, num_frames, chunk):
            consumed.append(s + chunk)
            yield np.zeros((chunk, 2, 2, 3), np.uint8)

    for start, window, valid in infer.iter_windows(chunks(), clip_len, stride):
        assert consumed[-1] <= start + clip_len + chunk  # read ahead by at most one chunk
        assert window.base is None or window.base.shape[0] <= clip_len + chunk  # view into a small buffer


def test_prefetch_yields_everything_raises_errors_and_stops_early():
    import threading

    assert list(infer.prefetch(iter(range(100)), depth=3)) == list(range(100))

    def failing():
        yield 1
        raise DataError("video.mp4: frame 1 cannot be decoded")

    reader = infer.prefetch(failing(), depth=2)
    assert next(reader) == 1
    with pytest.raises(DataError, match="frame 1 cannot be decoded"):
        next(reader)

    produced = []
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                produced.append(i)
                yield i
                i += 1
        finally:
            closed.set()

    reader = infer.prefetch(endless(), depth=2)
    assert [next(reader) for _ in range(5)] == [0, 1, 2, 3, 4]
    reader.close()  # the producer stops and its generator is closed (its file released)
    assert closed.wait(5.0)
    assert len(produced) <= 5 + 2 + 2  # never more than the read-ahead beyond what was consumed


def test_windows_match_the_validation_windows_of_clips():
    from pespot.data.clips import window_starts

    for num_frames in range(1, 40):
        for clip_len, stride in ((8, 4), (8, 8), (8, 3), (5, 1)):
            frames = np.zeros((num_frames, 1, 1, 3), np.uint8)
            starts = [w[0] for w in infer.iter_windows(iter([frames]), clip_len, stride)]
            assert starts == window_starts(num_frames, clip_len, stride), (num_frames, clip_len, stride)


def test_checkpoint_format_is_the_trainers():
    from pespot.train import checkpoint

    assert infer.CHECKPOINT_FORMAT == checkpoint.CHECKPOINT_FORMAT


def test_window_stride_from_overlap():
    assert infer.window_stride(128, 0.5) == 64
    assert infer.window_stride(100, 0.0) == 100
    assert infer.window_stride(8, 0.75) == 2
    with pytest.raises(PespotError, match="overlap"):
        infer.window_stride(8, 1.0)


# ------------------------------------------------------------------------------------------------------------
# aggregation


def test_frame_covered_by_two_windows_gets_their_mean():
    clip_len, n = 8, 18  # windows [0, 8), [4, 12), [8, 16), [12, 20) (2 frames of zero padding)
    frames = random_frames(n)
    model = WindowModel(clip_len, 3)
    scores = infer.predict_scores(make_predictor(model, ["a", "b"]), array_stream(frames), overlap=0.5,
                                  batch_size=3, progress=False)
    assert scores.shape == (n, 3) and scores.dtype == np.float32

    per_window = {s: reference_window_scores(frames[s: s + clip_len], clip_len) for s in (0, 4, 8, 12)}
    expected = np.zeros((n, 3))
    count = np.zeros(n)
    for s, w in per_window.items():
        stop = min(s + clip_len, n)
        expected[s:stop] += w[: stop - s]
        count[s:stop] += 1
    expected /= count[:, None]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)

    # Frame 5 is in windows 0 and 4, which see it differently: the mean is neither one of them.
    only_first, only_second = per_window[0][5], per_window[4][1]
    assert np.abs(only_first - only_second).min() > 1e-3
    np.testing.assert_allclose(scores[5], (only_first + only_second) / 2, rtol=1e-5)
    # Frames 0-3 are only in the first window; frames 16-17 only in the padded last one.
    np.testing.assert_allclose(scores[:4], per_window[0][:4], rtol=1e-5)
    np.testing.assert_allclose(scores[16:], per_window[12][4:6], rtol=1e-5)


def test_scores_do_not_depend_on_batch_size_and_batches_are_capped():
    frames = random_frames(30, seed=1)
    model = WindowModel(8, 3, record=True)
    pred = make_predictor(model, ["a", "b"])
    one = infer.predict_scores(pred, array_stream(frames), batch_size=1, progress=False)
    model.calls.clear()
    four = infer.predict_scores(pred, array_stream(frames), batch_size=4, progress=False)
    np.testing.assert_allclose(one, four, rtol=1e-6)
    # 30 frames, stride 4: windows at 0..24 (7 windows) -> batches of 4 and 3, each (B, 8, 3, H, W).
    assert model.calls == [(4, 8, 3, 6, 8), (3, 8, 3, 6, 8)]


def test_softmax_for_ce_models_and_centre_crop():
    frames = random_frames(8, height=6, width=10, seed=2)
    model = WindowModel(8, 3, record=True)
    scores = infer.predict_scores(make_predictor(model, ["a", "b"], activation="softmax", crop=4),
                                  array_stream(frames), overlap=0.0, progress=False)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)  # a distribution over K+1 per frame
    assert model.calls == [(1, 8, 3, 4, 4)]
    # The crop is the centre 4x4 of the 6x10 frames: rows 1..4, columns 3..6.
    x = (frames[:, 1:5, 3:7].astype(np.float64) / 255.0 - MEAN) / STD
    logits = x.mean() + 0.3 * x.mean(axis=(1, 2, 3))[:, None] + 0.1 * np.arange(3)[None, :]
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_center_crop_pads_small_frames():
    frames = np.full((2, 4, 6, 3), 7, np.uint8)
    out = infer.center_crop(frames, 5)  # height 4 < 5: padded with zeros like torchvision's CenterCrop
    assert out.shape == (2, 5, 5, 3)
    assert (out == 0).any() and (out == 7).any()
    assert infer.center_crop(frames, None) is frames


# ------------------------------------------------------------------------------------------------------------
# scores -> events


def class_scores(values_a: list[float], values_b: list[float] | None = None) -> np.ndarray:
    n = len(values_a)
    b = values_b if values_b is not None else [0.0] * n
    return np.stack([np.zeros(n), values_a, b], axis=1).astype(np.float32)  # (N, K+1), column 0 background


def frames_of(events: list[Event], label: str) -> list[int]:
    return [e.frame for e in events if e.label == label]


def test_threshold_keeps_every_class_frame_at_or_above_it():
    scores = class_scores([0.005, 0.01, 0.2, 0.0, 0.5], [0.02, 0.009, 0.0, 0.3, 0.01])
    scores[:, 0] = 0.99  # background never becomes an event
    events = infer.scores_to_events(scores, ["a", "b"], threshold=0.01, nms="none")
    assert [(e.frame, e.label) for e in events] == [
        (0, "b"), (1, "a"), (2, "a"), (3, "b"), (4, "a"), (4, "b")]  # sorted by frame, then class order
    assert [e.score for e in events] == pytest.approx([0.02, 0.01, 0.2, 0.3, 0.5, 0.01])
    assert infer.scores_to_events(scores, ["a", "b"], threshold=0.25, nms="none") == [
        Event(frame=3, label="b", score=pytest.approx(0.3)), Event(frame=4, label="a", score=pytest.approx(0.5))]


def test_local_max_nms_keeps_local_maxima_per_class():
    a = [0.1, 0.5, 0.3, 0.3, 0.9, 0.2, 0.4, 0.4, 0.05]
    b = [0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # other classes never suppress
    events = infer.scores_to_events(class_scores(a, b), ["a", "b"], threshold=0.01, nms="local_max",
                                    nms_window=1)
    # 1 (0.5 > 0.1, 0.3) and 4 (0.9) are maxima; 2 and 3 have a higher neighbour; 6 and 7 tie and both stay.
    assert frames_of(events, "a") == [1, 4, 6, 7]
    assert frames_of(events, "b") == [0]


def test_greedy_and_local_max_differ_on_a_chain():
    # Window 2: 0 is suppressed by 2 under local_max (a higher neighbour), but greedy NMS first keeps 4,
    # which suppresses 2 only; 0 is then the best remaining and is kept.
    scores = class_scores([0.5, 0.0, 0.6, 0.0, 0.7, 0.0, 0.0])
    local = infer.scores_to_events(scores, ["a", "b"], threshold=0.01, nms="local_max", nms_window=2)
    greedy = infer.scores_to_events(scores, ["a", "b"], threshold=0.01, nms="greedy", nms_window=2)
    none = infer.scores_to_events(scores, ["a", "b"], threshold=0.01, nms="none", nms_window=2)
    assert frames_of(local, "a") == [4]
    assert frames_of(greedy, "a") == [0, 4]
    assert frames_of(none, "a") == [0, 2, 4]


def test_soft_nms_keeps_events_but_lowers_neighbours():
    scores = class_scores([0.0, 0.8, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.7])
    events = infer.scores_to_events(scores, ["a", "b"], threshold=0.01, nms="soft", nms_window=2)
    by_frame = {e.frame: e.score for e in events}
    assert by_frame[1] == pytest.approx(0.8) and by_frame[10] == pytest.approx(0.7)  # nothing higher nearby
    assert by_frame.get(2, 0.0) < 0.6  # decayed (or dropped) by the better neighbour


def test_scores_to_events_rejects_wrong_shape_and_nms():
    with pytest.raises(DataError, match="expected"):
        infer.scores_to_events(np.zeros((5, 4)), ["a", "b"])
    with pytest.raises(PespotError, match="--nms"):
        infer.scores_to_events(np.zeros((5, 3)), ["a", "b"], nms="median")


# ------------------------------------------------------------------------------------------------------------
# writers


def test_writers_json_csv_npz(tmp_path):
    scores = np.random.default_rng(0).random((12, 3)).astype(np.float32)
    events = [Event(frame=2, label="a", score=0.75), Event(frame=10, label="b", score=0.125)]
    preds = [infer.VideoPrediction(video="v1", fps=25.0, scores=scores, events=events),
             infer.VideoPrediction(video="league/game/1", fps=None, scores=scores[:5], events=[])]

    infer.write_predictions_json(preds, tmp_path / "pred.json")
    raw = json.loads((tmp_path / "pred.json").read_text())
    assert raw[0]["video"] == "v1" and raw[0]["fps"] == 25.0 and raw[0]["num_frames"] == 12
    assert raw[0]["events"] == [{"frame": 2, "label": "a", "score": 0.75},
                                {"frame": 10, "label": "b", "score": 0.125}]
    loaded = load_split(tmp_path / "pred.json", ["a", "b"], predictions=True)
    assert [(v.video, v.num_frames) for v in loaded] == [("v1", 12), ("league/game/1", 5)]

    infer.write_predictions_csv(preds, tmp_path / "pred.csv")
    rows = list(csv.DictReader((tmp_path / "pred.csv").read_text().splitlines()))
    assert rows == [{"video": "v1", "frame": "2", "time": "0.080", "label": "a", "score": "0.75"},
                    {"video": "v1", "frame": "10", "time": "0.400", "label": "b", "score": "0.125"}]

    path = infer.write_scores_npz(preds[1], ["a", "b"], tmp_path / "scores")
    assert path == tmp_path / "scores" / "league" / "game" / "1.npz"
    back, classes, fps = infer.load_scores_npz(path)
    np.testing.assert_array_equal(back, scores[:5])
    assert classes == ["a", "b"] and fps is None
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["pred.json", "pred.csv", "scores", "league", "game", "1.npz"])  # no temporary files left behind


# ------------------------------------------------------------------------------------------------------------
# checkpoints


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        infer.load_predictor(tmp_path / "missing.pt")
    (tmp_path / "run").mkdir()
    with pytest.raises(DataError, match="no checkpoints/best.pt"):
        infer.load_predictor(tmp_path / "run")
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(DataError, match="garbage.pt: not a readable checkpoint"):
        infer.load_predictor(tmp_path / "garbage.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="other.pt: not a pespot checkpoint"):
        infer.load_predictor(tmp_path / "other.pt")


# ------------------------------------------------------------------------------------------------------------
# end to end: a real tiny spotter through `pespot infer`

NUM_FRAMES, FPS = 50, 30.0
CLASSES = ["hit", "bounce"]


def write_rgb_video(path: Path, frames: np.ndarray, fps: float) -> Path:
    """Encode uint8 (N, H, W, 3) frames losslessly in RGB (libx264rgb, qp 0): decoding gives them back exactly."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264rgb", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "rgb24"
        stream.options = {"qp": "0", "g": "12"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder with checkpoints/best.pt of a randomly initialised tiny spotter (ASTRM, Bi-GRU, clip 8),
    at the test videos' own height (48): no resize, so video and JPEG frames are identical."""
    return write_tiny_run(tmp_path_factory.mktemp("run"), CLASSES, height=48)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """The same 50 frames as a JPEG folder and as a lossless RGB video; a corrupt video."""
    from conftest import write_jpeg_folder

    from pespot.data.frames import open_frames

    root = tmp_path_factory.mktemp("media")
    folder = write_jpeg_folder(root / "rally_frames", NUM_FRAMES, width=64, height=48)
    pixels = open_frames(folder).read(0, NUM_FRAMES).numpy()  # what the JPEG reader decodes
    video = write_rgb_video(root / "rally.mp4", pixels, FPS)
    broken = root / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return {"folder": folder, "video": video, "broken": broken, "root": root}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from pespot.cli import main

    code = main(["infer", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_infer_video_and_frame_folder_give_the_same_events(tiny_run, media, tmp_path, capsys):
    out = tmp_path / "pred.json"
    code, stdout, stderr = run_cli([str(tiny_run), str(media["video"]), str(media["folder"]), "--out", str(out),
                                    "--fps", "30", "--csv", str(tmp_path / "pred.csv"), "--save-scores",
                                    str(tmp_path / "scores"), "--quiet", "--json"], capsys)
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["videos"] == 2 and summary["failures"] == [] and summary["frames"] == 2 * NUM_FRAMES
    preds = {v.video: v for v in load_split(out, CLASSES, predictions=True)}
    assert set(preds) == {"rally", "rally_frames"}
    video, folder = preds["rally"], preds["rally_frames"]
    assert video.fps == pytest.approx(FPS) and video.num_frames == NUM_FRAMES
    assert video.events, "a random model scores around 0.5: threshold 0.01 must keep candidates"
    assert all(0 <= e.frame < NUM_FRAMES and e.label in CLASSES for e in video.events)
    assert [e.frame for e in video.events] == sorted(e.frame for e in video.events)
    assert [(e.frame, e.label) for e in video.events] == [(e.frame, e.label) for e in folder.events]
    np.testing.assert_allclose([e.score for e in video.events], [e.score for e in folder.events], rtol=1e-5)
    # local_max NMS with window 1: no kept event has a strictly better same-class neighbour one frame away.
    scores, classes, fps = infer.load_scores_npz(tmp_path / "scores" / "rally.npz")
    assert scores.shape == (NUM_FRAMES, len(CLASSES) + 1) and classes == CLASSES and fps == pytest.approx(FPS)
    for e in video.events:
        column = scores[:, CLASSES.index(e.label) + 1]
        assert e.score == pytest.approx(float(column[e.frame]))
        assert column[max(e.frame - 1, 0): e.frame + 2].max() <= column[e.frame]
    rows = list(csv.DictReader((tmp_path / "pred.csv").read_text().splitlines()))
    assert len(rows) == len(video.events) + len(folder.events)
    assert float(rows[0]["time"]) == pytest.approx(int(rows[0]["frame"]) / FPS, abs=1e-3)


def test_infer_reports_bad_inputs_and_finishes_the_others(tiny_run, media, tmp_path, capsys):
    out = tmp_path / "pred.json"
    missing = media["root"] / "nothing_here.mp4"
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    code, stdout, stderr = run_cli([str(tiny_run), str(media["broken"]), str(media["video"]), str(missing),
                                    str(empty), "--out", str(out), "--quiet"], capsys)
    assert code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 3, stderr
    assert "broken.mp4" in lines[0] and "nothing_here.mp4" in lines[1] and "empty_folder" in lines[2]
    assert all(line.startswith("pespot infer: error: ") for line in lines)
    assert [v.video for v in load_split(out, CLASSES, predictions=True)] == ["rally"]
    assert "3 failed" in stdout


def test_infer_split_json_with_frame_store(tiny_run, media, tmp_path, capsys):
    import shutil

    store = tmp_path / "frames"
    store.mkdir()
    shutil.copytree(media["folder"], store / "a")
    shutil.copy(media["video"], store / "b.mp4")
    split = tmp_path / "test.json"
    split.write_text(json.dumps([
        {"video": "a", "num_frames": NUM_FRAMES - 10, "fps": 25.0, "events": []},  # fewer than stored: truncated
        {"video": "b", "num_frames": NUM_FRAMES, "fps": 29.97, "events": [{"frame": 3, "label": "hit"}]},
        {"video": "c", "num_frames": 10, "fps": 25.0, "events": []},  # not in the store
    ]))
    out = tmp_path / "pred.json"
    code, _, stderr = run_cli([str(tiny_run), str(split), "--frames", str(store), "--out", str(out), "--quiet",
                               "--nms", "none"], capsys)
    assert code == 1 and "video 'c'" in stderr and stderr.count("\n") == 1
    preds = load_split(out, CLASSES, predictions=True)
    assert [(v.video, v.num_frames, v.fps) for v in preds] == [("a", NUM_FRAMES - 10, 25.0), ("b", NUM_FRAMES, 29.97)]
    # No NMS, random model: every (frame, class) is a candidate (scores are far above 0.01).
    assert len(preds[0].events) == (NUM_FRAMES - 10) * len(CLASSES)


def test_classes_option_renames_and_checks_the_count(tiny_run, tmp_path):
    (tmp_path / "class.txt").write_text("serve\nvolley\n")
    from pespot.data.labels import load_classes

    predictor = infer.load_predictor(tiny_run, device="cpu", classes=load_classes(tmp_path / "class.txt"))
    assert predictor.classes == ["serve", "volley"] and not predictor.model.training
    assert predictor.activation == "sigmoid" and predictor.clip_len == 8
    with pytest.raises(DataError, match="2 classes, --classes gives 3"):
        infer.load_predictor(tiny_run, device="cpu", classes=["a", "b", "c"])


def test_infer_writes_soccernet_results_per_game(tiny_run, media, tmp_path, capsys):
    import shutil

    from pespot.data.soccernet import frame_to_ms

    game = "england_epl/2015-2016/2015-08-29 - 17-00 Chelsea 1 - 2 Crystal Palace"
    store = tmp_path / "frames"
    shutil.copytree(media["folder"], store / game / "half2")
    split = tmp_path / "challenge.json"
    split.write_text(json.dumps([{"video": f"{game}/half2", "num_frames": 20, "fps": 2.0, "events": []}]))
    code, _, stderr = run_cli([str(tiny_run), str(split), "--frames", str(store), "--soccernet",
                               str(tmp_path / "sn"), "--out", str(tmp_path / "pred.json"), "--quiet"], capsys)
    assert code == 0, stderr
    results = json.loads((tmp_path / "sn" / game / "results_spotting.json").read_text())
    (video,) = load_split(tmp_path / "pred.json", CLASSES, predictions=True)
    assert results["UrlLocal"] == game and len(results["predictions"]) == len(video.events) > 0
    expected = sorted((frame_to_ms(e.frame, 2.0), e.label) for e in video.events)
    assert sorted((int(p["position"]), p["label"]) for p in results["predictions"]) == expected
    assert {p["half"] for p in results["predictions"]} == {"2"}
