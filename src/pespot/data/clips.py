"""Training clips with per-frame targets (windows for validation and inference are in ``pespot.infer``).

Training clips follow E2E-Spot (reference-codebases.md 1.4) with the paper's settings (method-spec.md 8):

* a clip is ``clip_len`` consecutive frames of one video; the video is chosen with probability proportional to
  its length and the clip starts at ``-pad_len + randint(0, max(0, L - 1 + 2 * pad_len - clip_len))``, so a clip
  may run up to ``pad_len`` frames past either end of the video;
* frames outside the video are **zero in the normalised tensor** (what E2E-Spot's padding and our inference
  windows use), and their targets are background;
* per-frame targets are float (clip_len, K+1): column ``i + 1`` is class ``classes[i]``, column 0 is background
  (1 exactly where no event column is set). A frame may carry several events (all get 1). Label dilation
  ``dilate_len = d`` also marks frames t-d..t+d of an event at t;
* mixup (paper eq. 7-8): a second, independently drawn and augmented clip, ``lambda ~ Beta(alpha, alpha)`` per
  item, frames ``lambda * x1 + (1 - lambda) * x2`` and targets ``lambda * y1 + (1 - lambda) * y2``;
* augmentation with one set of random parameters for all frames of a clip: random square crop, horizontal flip,
  brightness / contrast / saturation jitter (each with p = 0.25, factor in [0.7, 1.2]) and a 5x5 Gaussian blur
  (p = 0.25), then ImageNet normalisation. Evaluation clips and windows use the centre crop.

Item ``i`` of a ``ClipDataset`` is a pure function of ``(seed, epoch, i)``: the same with any number of DataLoader
workers, with a ``DistributedSampler`` and after a resume. Clips leave the loader as uint8 frames with their
augmentation parameters (a quarter of the bytes of float32 to pin and copy); the float work (augmentation,
normalisation, mixup: ``clip_frames``) runs where the batch lands, the GPU in real training, as E2E-Spot does
its colour jitter. The random draws stay in the dataset, so an item is still a function of (seed, epoch, i).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import Dataset

from pespot.data.frames import FrameSource, find_video_frames, open_frames
from pespot.data.labels import Video
from pespot.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB
IMAGENET_STD = (0.229, 0.224, 0.225)

JITTER_P = 0.25  # probability of each colour jitter and of the blur (E2E-Spot)
JITTER_RANGE = (0.7, 1.2)  # brightness / contrast / saturation factor
BLUR_KERNEL = 5
BLUR_SIGMA = (0.1, 2.0)  # torchvision GaussianBlur's default sigma range, made for 224 px inputs (E2E-Spot)
BLUR_REFERENCE = 224  # the input size BLUR_SIGMA is meant for


def blur_max_sigma(input_size: int, configured: float | None = None) -> float:
    """The largest blur sigma for inputs of ``input_size`` pixels: ``configured`` (``data.blur_max_sigma``), or
    E2E-Spot's 2 px at 224 px scaled with the input, so that the blur is the same in the scene at any size."""
    return configured if configured is not None else BLUR_SIGMA[1] * input_size / BLUR_REFERENCE


# ------------------------------------------------------------------------------------------------------------
# Targets


def _event_arrays(video: Video, class_index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(frames, output columns) of a video's events; an unknown label is a DataError naming the video."""
    frames, columns = [], []
    for e in video.events:
        if e.label not in class_index:
            raise DataError(f"video '{video.video}': event at frame {e.frame} has unknown class '{e.label}' "
                            f"(classes: {', '.join(class_index)})")
        frames.append(e.frame)
        columns.append(class_index[e.label])
    return np.asarray(frames, dtype=np.int64), np.asarray(columns, dtype=np.int64)


def _targets(event_frames: np.ndarray, event_columns: np.ndarray, num_outputs: int, start: int, clip_len: int,
             dilate_len: int, num_frames: int) -> np.ndarray:
    """Multi-label per-frame targets (clip_len, K+1) of the window [start, start + clip_len) of a video with
    ``num_frames`` frames (< 0: unknown); dilation never marks frames outside the video (they are padding)."""
    y = np.zeros((clip_len, num_outputs), dtype=np.float32)
    last = num_frames if num_frames >= 0 else np.iinfo(np.int64).max
    for offset in range(-dilate_len, dilate_len + 1):
        frame = event_frames + offset  # (E,)
        t = frame - start  # positions inside the window
        keep = (t >= 0) & (t < clip_len) & (frame >= 0) & (frame < last)
        y[t[keep], event_columns[keep]] = 1.0
    y[:, 0] = (y[:, 1:].sum(axis=1) == 0).astype(np.float32)  # background where no event
    return y


def targets_for_window(video: Video, classes: list[str], start: int, clip_len: int,
                       dilate_len: int = 0) -> torch.Tensor:
    """Per-frame targets float32 (clip_len, K+1) of frames ``start .. start + clip_len - 1`` of ``video``.

    Column 0 is background, column ``i + 1`` is ``classes[i]``; frames outside the video are background.
    """
    class_index = {name: i + 1 for i, name in enumerate(classes)}
    frames, columns = _event_arrays(video, class_index)
    return torch.from_numpy(_targets(frames, columns, len(classes) + 1, start, clip_len, dilate_len,
                                     video.num_frames))


def frame_prior(videos: list[Video], classes: list[str], dilate_len: int = 0) -> np.ndarray:
    """Share of the videos' frames carrying each output (K+1,): column 0 background, column ``i + 1``
    ``classes[i]``, with the training targets' dilation. Multi-label frames count for each of their classes."""
    class_index = {name: i + 1 for i, name in enumerate(classes)}
    counts = np.zeros(len(classes) + 1, dtype=np.float64)
    total = 0
    for video in videos:
        if video.num_frames <= 0:
            continue
        frames, columns = _event_arrays(video, class_index)
        y = _targets(frames, columns, len(classes) + 1, 0, video.num_frames, dilate_len, video.num_frames)
        counts += y.sum(axis=0)
        total += video.num_frames
    if total == 0:
        raise DataError("class prior: no video with frames")
    return counts / total


# ------------------------------------------------------------------------------------------------------------
# Windows


def window_starts(num_frames: int, clip_len: int, stride: int) -> list[int]:
    """Window starts 0, stride, 2*stride, ... up to the first window that reaches the last frame.

    Every frame is covered; the last window may run past the end (its extra frames are padding). A video
    shorter than one window gets the single start 0; an empty video gets none.
    """
    if clip_len <= 0 or stride <= 0:
        raise ConfigError(f"window: clip_len and stride must be positive, got clip_len={clip_len}, stride={stride}")
    if num_frames <= 0:
        return []
    count = 1 + max(0, -(-(num_frames - clip_len) // stride))  # ceil((N - T) / stride) more windows
    return [i * stride for i in range(count)]


# ------------------------------------------------------------------------------------------------------------
# Tensor helpers shared by both datasets


def normalise(frames: torch.Tensor) -> torch.Tensor:
    """Float frames (T, 3, H, W) in [0, 1] -> ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=frames.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=frames.dtype).view(1, 3, 1, 1)
    return (frames - mean) / std


def _to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (T, 3, H, W) in [0, 1]."""
    return frames.permute(0, 3, 1, 2).float().div_(255.0)


def _check_crop(crop: int | None, height: int, width: int, where: str) -> None:
    if crop is not None and (crop > height or crop > width):
        raise ConfigError(f"{where}: frames are {height}x{width}, smaller than the crop {crop} "
                          f"(config key 'data.crop'; set it <= the frame size or null)")


class _Sources:
    """Open frame sources per video, created lazily in the process that reads (never pickled)."""

    def __init__(self, frames_root: str | Path, height: int | None):
        self.frames_root = Path(frames_root)
        self.height = height
        self._open: dict[str, FrameSource] = {}

    def get(self, video_id: str) -> FrameSource:
        source = self._open.get(video_id)
        if source is None:
            source = open_frames(find_video_frames(self.frames_root, video_id), height=self.height)
            self._open[video_id] = source
        return source

    def __getstate__(self) -> dict:
        return {"frames_root": self.frames_root, "height": self.height, "_open": {}}

    def read(self, video: Video, start: int, clip_len: int) -> tuple[torch.Tensor, int, int]:
        """Frames of [start, start + clip_len) that exist: uint8 (n, H, W, 3), and where they go in the clip."""
        source = self.get(video.video)
        length = video.num_frames if video.num_frames >= 0 else source.num_frames
        lo, hi = max(0, start), min(length, start + clip_len)
        if hi > source.num_frames:
            raise DataError(f"video '{video.video}': labels say {length} frames but the frame store "
                            f"{source.path} has {source.num_frames}")
        if hi <= lo:
            return torch.zeros((0, source.height, source.width, 3), dtype=torch.uint8), 0, 0
        return source.read(lo, hi), lo - start, hi - start


# ------------------------------------------------------------------------------------------------------------
# Training clips


class ClipDataset(Dataset):
    """``num_clips`` random training clips; item ``i`` is a pure function of ``(seed, epoch, i)``.

    Items: ``dict(raw=uint8 (M, T, H, W, 3), span=int64 (M, 2), aug=float64 (M, 12), targets=float32 (T, K+1),
    video=str, start=int, lam=float)``: M = 2 clips with mixup (else 1), each as uint8 frames with the rows
    ``span`` = (lo, hi) from the video, its augmentation parameters (``draw_augment``) and the mixed targets;
    ``video``/``start`` describe the first clip and ``lam`` is its mixup weight (1.0 without mixup).
    ``clip_frames`` (on the batch's device, ``pespot.data.loader.to_device``) or ``frames(i)`` make the float
    frames (T, 3, h, w). See the module docstring for the sampling, padding, targets, mixup and augmentation.
    """

    def __init__(self, videos: list[Video], classes: list[str], frames_root: str | Path, clip_len: int,
                 num_clips: int, *, height: int | None = None, crop: int | None = None, augment: bool = True,
                 mixup: bool = True, mixup_alpha: float = 0.1, dilate_len: int = 0, pad_len: int = 5,
                 seed: int = 0, epoch: int = 0, fg_upsample: float | None = None,
                 blur_max_sigma: float | None = None):
        if clip_len <= 0:
            raise ConfigError(f"clips: clip_len must be positive, got {clip_len}")
        if num_clips < 0:
            raise ConfigError(f"clips: num_clips must be >= 0, got {num_clips}")
        if dilate_len < 0 or pad_len < 0:
            raise ConfigError(f"clips: dilate_len and pad_len must be >= 0, got {dilate_len} and {pad_len}")
        if mixup and mixup_alpha <= 0:
            raise ConfigError(f"config key 'data.mixup_alpha': expected > 0, got {mixup_alpha}")
        if crop is not None and crop <= 0:
            raise ConfigError(f"config key 'data.crop': expected a positive size or null, got {crop}")
        if seed < 0:
            raise ConfigError(f"clips: seed must be >= 0, got {seed}")
        if fg_upsample is not None and not 0.0 <= fg_upsample <= 1.0:
            raise ConfigError(f"config key 'data.fg_upsample': expected a probability in [0, 1] or null, "
                              f"got {fg_upsample}")
        self.videos = list(videos)
        self.classes = list(classes)
        self.num_outputs = len(classes) + 1
        self.clip_len, self.num_clips = clip_len, num_clips
        self.crop, self.augment, self.mixup, self.mixup_alpha = crop, augment, mixup, mixup_alpha
        self.blur_max_sigma = blur_max_sigma
        self.dilate_len, self.pad_len = dilate_len, pad_len
        self.seed, self.epoch = seed, epoch
        lengths = np.array([max(0, v.num_frames) for v in self.videos], dtype=np.float64)
        if len(self.videos) == 0 or lengths.sum() == 0:
            raise DataError("clips: no video with frames to sample from (empty split or num_frames all 0)")
        self.weights = lengths / lengths.sum()  # a video is chosen with probability proportional to its length
        class_index = {name: i + 1 for i, name in enumerate(self.classes)}
        self._events = [_event_arrays(v, class_index) for v in self.videos]
        self.fg_upsample = fg_upsample
        # (video index, frame) of every event, for foreground sampling
        self._all_events = np.array([(vi, int(f)) for vi, (frames, _) in enumerate(self._events) for f in frames
                                     if 0 <= f < max(0, self.videos[vi].num_frames)], dtype=np.int64).reshape(-1, 2)
        self._sources = _Sources(frames_root, height)

    def __len__(self) -> int:
        return self.num_clips

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose clips ``__getitem__`` returns."""
        self.epoch = int(epoch)

    def sample_position(self, rng: np.random.Generator) -> tuple[int, int]:
        """(video index, start) as E2E-Spot: video proportional to length, start in [-pad, L - T + pad].

        With ``fg_upsample = p``, a clip is instead, with probability p, placed around an event drawn uniformly
        from all events of the split (its frame at a uniform position of the clip, the start kept in the same
        range). E2E-Spot's ``--fg_upsample p`` does this with probability 1 - p (a quirk of its test); here p is
        the foreground probability.
        """
        if self.fg_upsample is not None and len(self._all_events) and rng.random() < self.fg_upsample:
            vi, frame = (int(v) for v in self._all_events[int(rng.integers(0, len(self._all_events)))])
            length = self.videos[vi].num_frames
            low, high = -self.pad_len, max(-self.pad_len, length - 1 + self.pad_len - self.clip_len)
            start = frame - int(rng.integers(0, self.clip_len))
            return vi, min(max(start, low), high)
        vi = int(rng.choice(len(self.videos), p=self.weights))
        length = self.videos[vi].num_frames
        high = max(0, length - 1 + 2 * self.pad_len - self.clip_len)
        return vi, -self.pad_len + int(rng.integers(0, high + 1))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_clips:
            raise IndexError(f"clip {index} out of range [0, {self.num_clips})")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        vi, start = self.sample_position(rng)
        raw, span, aug, targets = self._clip(vi, start, rng)
        lam = 1.0
        if self.mixup:
            # Drawn in this order so the first clip does not depend on whether mixup is on.
            lam = float(rng.beta(self.mixup_alpha, self.mixup_alpha))
            vi2, start2 = self.sample_position(rng)
            raw2, span2, aug2, targets2 = self._clip(vi2, start2, rng)
            raw, span, aug = torch.stack([raw, raw2]), torch.stack([span, span2]), torch.stack([aug, aug2])
            targets = lam * targets + (1.0 - lam) * targets2
        else:
            raw, span, aug = raw[None], span[None], aug[None]
        return {"raw": raw, "span": span, "aug": aug, "targets": targets, "video": self.videos[vi].video,
                "start": start, "lam": lam}

    def frames(self, index: int) -> torch.Tensor:
        """The float frames (T, 3, h, w) of clip ``index`` (what training sees, made on the CPU)."""
        return item_frames(self[index])

    def _clip(self, vi: int, start: int, rng: np.random.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One clip as it travels: uint8 frames (T, H, W, 3), zero outside the video rows ``span`` = (lo, hi),
        its augmentation parameters (``draw_augment``) and its targets (T, K+1)."""
        video = self.videos[vi]
        raw, lo, hi = self._sources.read(video, start, self.clip_len)  # uint8 (n, H, W, 3), clip rows lo:hi
        height, width = int(raw.shape[1]), int(raw.shape[2])
        _check_crop(self.crop, height, width, f"video '{video.video}'")
        blur = blur_max_sigma(self.crop or min(height, width), self.blur_max_sigma)
        aug = draw_augment(rng, height, width, self.crop, self.augment, blur)
        padded = torch.zeros((self.clip_len, height, width, 3), dtype=torch.uint8)
        padded[lo:hi] = raw
        event_frames, event_columns = self._events[vi]
        targets = _targets(event_frames, event_columns, self.num_outputs, start, self.clip_len, self.dilate_len,
                           video.num_frames)
        return padded, torch.tensor([lo, hi], dtype=torch.int64), aug, torch.from_numpy(targets)


# ------------------------------------------------------------------------------------------------------------
# Augmentation and normalisation, made where the batch lands (the GPU in real training)

# the columns of an augmentation parameter row
AUG_COLUMNS = ("top", "left", "crop", "flip", "use_brightness", "brightness", "use_contrast", "contrast",
               "use_saturation", "saturation", "blur", "sigma")


def draw_augment(rng: np.random.Generator, height: int, width: int, crop: int | None, augment: bool,
                 max_sigma: float = BLUR_SIGMA[1]) -> torch.Tensor:
    """The random parameters of one clip's augmentation, float64 (12,) in ``AUG_COLUMNS`` order (crop 0 = none).

    Random ``crop`` x ``crop`` crop (when set), horizontal flip (p = 0.5), then brightness, contrast and
    saturation factors in [0.7, 1.2] and a 5x5 Gaussian blur of sigma in [0.05, 1] x ``max_sigma`` (0: no blur),
    each with p = 0.25; without ``augment`` the centre crop and nothing else. Every draw is made whether or not it
    is used, so the stream of random numbers (and the second clip of a mixup) does not depend on them.
    """
    if not augment:
        top, left = ((height - crop) // 2, (width - crop) // 2) if crop is not None else (0, 0)
        return torch.tensor([top, left, crop or 0] + [0.0] * 9, dtype=torch.float64)
    top = int(rng.integers(0, height - crop + 1)) if crop is not None else 0
    left = int(rng.integers(0, width - crop + 1)) if crop is not None else 0
    flip = rng.random() < 0.5
    jitter = [(rng.random() < JITTER_P, float(rng.uniform(*JITTER_RANGE))) for _ in range(3)]
    blur, sigma = rng.random() < JITTER_P, float(rng.uniform(0.05 * max_sigma, max_sigma))
    blur = blur and max_sigma > 0
    values = [top, left, crop or 0, flip] + [v for pair in jitter for v in pair] + [blur, sigma]
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


def apply_augment(frames: torch.Tensor, aug: torch.Tensor) -> torch.Tensor:
    """Augment float frames (T, 3, H, W) in [0, 1] with the parameters of ``draw_augment`` (one set per clip)."""
    top, left, crop, flip, use_b, brightness, use_c, contrast, use_s, saturation, blur, sigma = aug.tolist()
    if crop:
        top, left, crop = int(top), int(left), int(crop)
        frames = frames[..., top:top + crop, left:left + crop]
    if frames.shape[0] == 0:
        return frames
    if flip:
        frames = frames.flip(-1)
    # torchvision's tensor ops work on the whole (T, 3, H, W) batch; contrast uses each frame's own mean grey.
    if use_b:
        frames = TF.adjust_brightness(frames, brightness)
    if use_c:
        frames = TF.adjust_contrast(frames, contrast)
    if use_s:
        frames = TF.adjust_saturation(frames, saturation)
    if blur:
        frames = TF.gaussian_blur(frames, [BLUR_KERNEL, BLUR_KERNEL], [sigma, sigma])
    return frames


def clip_frames(raw: torch.Tensor, span: torch.Tensor, aug: torch.Tensor, lam: float) -> torch.Tensor:
    """One item's uint8 clips (M, T, H, W, 3) -> the float frames (T, 3, h, w) the model sees, on raw's device.

    Per clip: the rows ``span`` of the video to float in [0, 1], augmented (``aug``), ImageNet-normalised, the
    rows outside the video 0; with two clips (mixup) ``lam * x1 + (1 - lam) * x2``.
    """
    clips = []
    for m in range(raw.shape[0]):
        lo, hi = (int(v) for v in span[m])
        real = apply_augment(_to_float(raw[m, lo:hi]), aug[m])  # (n, 3, h, w)
        frames = torch.zeros((raw.shape[1], 3, *real.shape[-2:]), dtype=torch.float32, device=raw.device)
        frames[lo:hi] = normalise(real)  # frames outside the video stay 0 after normalisation
        clips.append(frames)
    return clips[0] if len(clips) == 1 else lam * clips[0] + (1.0 - lam) * clips[1]


def item_frames(item: dict[str, Any]) -> torch.Tensor:
    """``clip_frames`` of one ``ClipDataset`` item."""
    return clip_frames(item["raw"], item["span"], item["aug"], float(item["lam"]))
