"""Training clips and sliding windows: sampling, padding, targets, dilation, mixup, augmentation, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pespot.data.clips import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipDataset,
    clip_frames,
    item_frames,
    targets_for_window,
    window_starts,
)
from pespot.data.labels import Event, Video
from pespot.errors import ConfigError, DataError

torch.set_num_threads(1)

CLASSES = ["a", "b", "c"]
SIZE = 32


def _frame(video_index: int, frame_index: int) -> np.ndarray:
    """A flat frame whose colour encodes (video, frame): red = 10 + 4 * frame, green = 40 + 60 * video."""
    img = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    img[..., 0] = 10 + 4 * frame_index
    img[..., 1] = 40 + 60 * video_index
    img[..., 2] = 128
    return img


def _decode(frame: torch.Tensor) -> tuple[int, int]:
    """(video, frame) index back from a normalised, un-augmented frame (3, H, W)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = ((frame * std + mean) * 255).mean(dim=(1, 2))
    return round((rgb[1].item() - 40) / 60), round((rgb[0].item() - 10) / 4)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, list[Video]]:
    """Three short videos as E2E-Spot JPEG folders, with events (two on one frame in the first video)."""
    root = tmp_path_factory.mktemp("clips") / "frames"
    lengths = [30, 12, 45]
    events = [
        [Event(4, "a"), Event(4, "b"), Event(20, "c"), Event(29, "a")],
        [Event(0, "b")],
        [Event(10, "c"), Event(11, "a"), Event(40, "b")],
    ]
    videos = []
    for vi, (length, evs) in enumerate(zip(lengths, events)):
        folder = root / f"v{vi}"
        folder.mkdir(parents=True)
        for f in range(length):
            Image.fromarray(_frame(vi, f)).save(folder / f"{f:06d}.jpg", quality=95)
        videos.append(Video(video=f"v{vi}", num_frames=length, fps=25.0, events=evs))
    return root, videos


def _dataset(store, clip_len: int = 16, num_clips: int = 40, **kwargs) -> ClipDataset:
    root, videos = store
    options = {"augment": False, "mixup": False, "seed": 3, **kwargs}
    return ClipDataset(videos, CLASSES, root, clip_len, num_clips, **options)


# ------------------------------------------------------------------------------------------------------------
# Targets and windows


def test_targets_multilabel_background_and_dilation():
    video = Video("v", 10, 25.0, [Event(3, "a"), Event(3, "b"), Event(8, "c"), Event(0, "c")])
    y = targets_for_window(video, CLASSES, start=-2, clip_len=8)  # frames -2..5
    assert y.shape == (8, 4) and y.dtype == torch.float32
    expected = np.zeros((8, 4), dtype=np.float32)
    expected[:, 0] = 1
    expected[2] = [0, 0, 0, 1]  # frame 0: c
    expected[5] = [0, 1, 1, 0]  # frame 3: a and b (multi-label)
    assert np.array_equal(y.numpy(), expected)
    y = targets_for_window(video, CLASSES, start=0, clip_len=10, dilate_len=1)
    assert y[:, 1].nonzero().flatten().tolist() == [2, 3, 4]
    assert y[:, 2].nonzero().flatten().tolist() == [2, 3, 4]
    assert y[:, 3].nonzero().flatten().tolist() == [0, 1, 7, 8, 9]
    assert y[:, 0].nonzero().flatten().tolist() == [5, 6]  # background exactly where nothing else is
    # dilation stops at the video's ends: frames -1 and 10 are padding, so background
    y = targets_for_window(video, CLASSES, start=-1, clip_len=12, dilate_len=1)
    assert y[0].tolist() == [1, 0, 0, 0] and y[11].tolist() == [1, 0, 0, 0]
    assert y[1, 3] == 1 and y[10, 3] == 1
    with pytest.raises(DataError, match="video 'v'.*unknown class 'z'"):
        targets_for_window(Video("v", 10, 25.0, [Event(1, "z")]), CLASSES, 0, 4)


def test_window_starts_cover_every_frame():
    assert window_starts(10, 4, 4) == [0, 4, 8]
    assert window_starts(8, 4, 4) == [0, 4]
    assert window_starts(9, 4, 2) == [0, 2, 4, 6]
    assert window_starts(3, 8, 4) == [0]
    assert window_starts(0, 8, 4) == []
    for n in range(1, 40):
        for clip_len, stride in ((8, 8), (8, 4), (5, 3)):
            starts = window_starts(n, clip_len, stride)
            covered = set()
            for s in starts:
                covered.update(range(s, min(n, s + clip_len)))
            assert covered == set(range(n))
            assert all(s + clip_len < n for s in starts[:-1])  # only the last one reaches the end
    with pytest.raises(ConfigError):
        window_starts(10, 4, 0)


# ------------------------------------------------------------------------------------------------------------
# Training clips


def test_clips_read_the_right_frames_pad_with_zeros_and_carry_targets(store):
    _, videos = store
    ds = _dataset(store, clip_len=16, num_clips=60, pad_len=5, dilate_len=1)
    by_name = {v.video: v for v in videos}
    past_start = past_end = 0
    for i in range(len(ds)):
        item = ds[i]
        frames = item_frames(item)
        video, start = by_name[item["video"]], item["start"]
        vi = videos.index(video)
        assert item["raw"].shape == (1, 16, SIZE, SIZE, 3) and item["raw"].dtype == torch.uint8  # as it travels
        assert frames.shape == (16, 3, SIZE, SIZE) and frames.dtype == torch.float32
        assert item["targets"].shape == (16, 4) and item["lam"] == 1.0
        assert -5 <= start <= max(-5, video.num_frames - 16 + 5)
        for t in range(16):
            f = start + t
            if 0 <= f < video.num_frames:
                assert _decode(frames[t]) == (vi, f)
            else:  # outside the video: zero (normalised) frames and background targets
                assert torch.count_nonzero(frames[t]) == 0
                assert item["targets"][t].tolist() == [1.0, 0.0, 0.0, 0.0]
        assert torch.equal(item["targets"], targets_for_window(video, CLASSES, start, 16, dilate_len=1))
        past_start += start < 0
        past_end += start + 16 > video.num_frames
    assert past_start and past_end  # both ends were exercised


def test_videos_are_drawn_in_proportion_to_their_length(store):
    ds = _dataset(store, clip_len=4, num_clips=1)
    counts = np.zeros(3)
    for i in range(3000):
        vi, _ = ds.sample_position(np.random.default_rng([0, i]))
        counts[vi] += 1
    expected = np.array([30, 12, 45]) / 87
    assert np.abs(counts / counts.sum() - expected).max() < 0.03


def test_mixup_mixes_frames_and_soft_targets_with_lambda(store):
    plain = _dataset(store, mixup=False)
    mixed = _dataset(store, mixup=True, mixup_alpha=0.1)
    lams = []
    for i in range(len(mixed)):
        item, first = mixed[i], plain[i]
        lam = item["lam"]
        lams.append(lam)
        # the second clip exactly as the dataset draws it: after the first clip's position and lambda
        rng = np.random.default_rng([3, 0, i])
        mixed.sample_position(rng)
        assert rng.beta(0.1, 0.1) == lam
        vi2, start2 = mixed.sample_position(rng)
        raw2, span2, aug2, second_targets = mixed._clip(vi2, start2, rng)
        second_frames = clip_frames(raw2[None], span2[None], aug2[None], 1.0)
        assert item["video"] == first["video"] and item["start"] == first["start"]
        assert item["raw"].shape[0] == 2 and torch.equal(item["raw"][1], raw2)  # both clips travel as uint8
        assert torch.allclose(item_frames(item), lam * item_frames(first) + (1 - lam) * second_frames, atol=1e-6)
        assert torch.allclose(item["targets"], lam * first["targets"] + (1 - lam) * second_targets, atol=1e-6)
        # per frame, the soft targets carry the two clips' label mass mixed with lambda
        sums = item["targets"].sum(1)
        assert torch.allclose(sums, lam * first["targets"].sum(1) + (1 - lam) * second_targets.sum(1), atol=1e-6)
        assert (item["targets"] >= 0).all() and (item["targets"] <= 1 + 1e-6).all()
    lams = np.array(lams)
    assert ((lams < 0.05) | (lams > 0.95)).mean() > 0.4  # Beta(0.1, 0.1) is U-shaped
    assert ((lams > 0.05) & (lams < 0.95)).any()


def test_augmentation_uses_one_set_of_parameters_per_clip(tmp_path):
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    texture[:, : SIZE // 2] //= 3  # left-right asymmetric, so a flip is visible
    folder = tmp_path / "frames" / "still"
    folder.mkdir(parents=True)
    for f in range(20):
        Image.fromarray(texture).save(folder / f"{f:06d}.jpg", quality=100)
    video = Video("still", 20, 25.0, [Event(5, "a")])
    aug = ClipDataset([video], CLASSES, tmp_path / "frames", 12, 40, crop=24, augment=True, mixup=False)
    ref = ClipDataset([video], CLASSES, tmp_path / "frames", 12, 1, crop=24, augment=False, mixup=False)
    reference = ref.frames(0)
    centre = next(reference[t] for t in range(12) if reference[t].abs().sum() > 0)
    distinct = set()
    for i in range(len(aug)):
        item = aug[i]
        frames = item_frames(item)
        assert frames.shape == (12, 3, 24, 24)
        start = item["start"]
        real = [t for t in range(12) if 0 <= start + t < 20]
        for t in range(12):
            if t in real:
                assert torch.equal(frames[t], frames[real[0]])  # the same transform for every frame
            else:
                assert torch.count_nonzero(frames[t]) == 0  # padding stays zero through augmentation
        distinct.add(frames[real[0]].numpy().tobytes())
        assert not torch.isnan(frames).any()
    assert len(distinct) > 20  # crops, flips and jitters really vary between clips
    assert centre.numpy().tobytes() in [reference[t].numpy().tobytes() for t in range(12)]


def test_items_are_deterministic_per_seed_epoch_and_index(store):
    root, videos = store
    options = {"crop": 24, "augment": True, "mixup": True, "seed": 11}
    ds = ClipDataset(videos, CLASSES, root, 16, 8, **options)
    first = [ds[i] for i in range(8)]
    again = ClipDataset(videos, CLASSES, root, 16, 8, **options)
    for i in range(8):
        for item in (ds[i], again[i]):
            for key in ("raw", "span", "aug", "targets"):
                assert torch.equal(item[key], first[i][key])
            assert (item["video"], item["start"], item["lam"]) == (first[i]["video"], first[i]["start"],
                                                                   first[i]["lam"])
    ds.set_epoch(1)
    assert not all(torch.equal(ds.frames(i), item_frames(first[i])) for i in range(8))
    ds.set_epoch(0)
    assert torch.equal(ds.frames(5), item_frames(first[5]))
    other = ClipDataset(videos, CLASSES, root, 16, 8, **{**options, "seed": 12})
    assert not all(torch.equal(other.frames(i), item_frames(first[i])) for i in range(8))


def test_dataloader_with_workers_gives_the_same_batches(store):
    root, videos = store
    ds = ClipDataset(videos, CLASSES, root, 16, 12, crop=24, augment=True, mixup=True, seed=5, epoch=2)
    batches = []
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=4, num_workers=workers, shuffle=False)
        batches.append(list(loader))
    assert len(batches[0]) == len(batches[1]) == 3
    for a, b in zip(*batches):
        assert a["raw"].shape == (4, 2, 16, SIZE, SIZE, 3) and a["targets"].shape == (4, 16, 4)
        for key in ("raw", "span", "aug", "targets"):
            assert torch.equal(a[key], b[key])
        assert a["video"] == b["video"] and torch.equal(a["start"], b["start"]) and torch.equal(a["lam"], b["lam"])


def test_batches_travel_as_uint8_and_become_the_items_frames_on_the_device(store):
    from pespot.data.loader import to_device

    root, videos = store
    ds = ClipDataset(videos, CLASSES, root, 16, 6, crop=24, augment=True, mixup=True, seed=7)
    batch = next(iter(DataLoader(ds, batch_size=3, num_workers=0, shuffle=False)))
    assert batch["raw"].dtype == torch.uint8  # a quarter of float32's bytes to pin and copy
    frames, targets = to_device(batch, torch.device("cpu"))
    assert frames.shape == (3, 16, 3, 24, 24) and targets.shape == (3, 16, 4)
    for b in range(3):
        assert torch.equal(frames[b], ds.frames(b))  # the device path is the item's own path, bit for bit
        assert torch.equal(targets[b], ds[b]["targets"])


def test_clear_errors(store):
    root, _ = store
    with pytest.raises(ConfigError, match="smaller than the crop 40"):
        _dataset(store, crop=40)[0]
    too_long = [Video("v1", 50, 25.0, [])]  # the store holds 12 frames
    with pytest.raises(DataError, match="video 'v1'.*50 frames.*has 12"):
        ClipDataset(too_long, CLASSES, root, 16, 50, augment=False, mixup=False, pad_len=0)[0]
    with pytest.raises(DataError, match="video 'nope'"):
        ClipDataset([Video("nope", 20, 25.0, [])], CLASSES, root, 8, 1)[0]
    with pytest.raises(DataError, match="unknown class 'q'"):
        ClipDataset([Video("v0", 30, 25.0, [Event(1, "q")])], CLASSES, root, 8, 1)
    with pytest.raises(DataError, match="no video"):
        ClipDataset([], CLASSES, root, 8, 1)


def test_blur_strength_follows_the_input_size():
    """E2E-Spot's blur (sigma up to 2 px) is meant for 224 px inputs: at 224 the draws are unchanged, at 64 px the
    largest sigma is 2 * 64 / 224, ``data.blur_max_sigma`` sets it, and 0 turns the blur off."""
    from pespot.config import load_config
    from pespot.data.clips import AUG_COLUMNS, BLUR_SIGMA, blur_max_sigma, draw_augment
    from pespot.errors import ConfigError

    blur, sigma = AUG_COLUMNS.index("blur"), AUG_COLUMNS.index("sigma")
    assert blur_max_sigma(224) == BLUR_SIGMA[1] and blur_max_sigma(64) == pytest.approx(2 * 64 / 224)
    assert blur_max_sigma(64, 1.5) == 1.5
    old = np.random.default_rng(3)
    for _ in range(50):
        new = draw_augment(np.random.default_rng(old.integers(1 << 30)), 256, 256, 224, True, blur_max_sigma(224))
        # the same stream of numbers as sigma ~ U(0.1, 2.0)
        assert 0.1 <= float(new[sigma]) <= 2.0
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    a = draw_augment(rng_a, 64, 64, None, True, blur_max_sigma(224))
    b = draw_augment(rng_b, 64, 64, None, True, blur_max_sigma(64))
    assert float(b[sigma]) == pytest.approx(float(a[sigma]) * 64 / 224)  # the same draw, scaled
    sigmas = [float(draw_augment(np.random.default_rng(i), 64, 64, None, True, blur_max_sigma(64))[sigma])
              for i in range(200)]
    assert max(sigmas) <= 2 * 64 / 224 and min(sigmas) >= 0.05 * 2 * 64 / 224
    off = [draw_augment(np.random.default_rng(i), 64, 64, None, True, 0.0) for i in range(50)]
    assert not any(bool(o[blur]) for o in off)
    with pytest.raises(ConfigError, match="data.blur_max_sigma"):
        load_config("paper", ["data.blur_max_sigma=-1"])
