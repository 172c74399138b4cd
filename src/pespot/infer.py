"""Inference: a trained spotter on a whole video -> per-frame scores -> events -> prediction files.

The pipeline follows E2E-Spot's test procedure (reference-codebases.md §1.7-1.8):

1. the video is cut into sliding windows of the model's clip length with stride
   ``clip_len - overlap * clip_len`` (half overlap by default); the last window is zero-padded;
2. each window gives per-frame scores (sigmoid for BCE/focal models, softmax for CE models);
   the score of a frame is the **mean over the windows that cover it** (sum / count);
3. every (frame, class) with score >= threshold is a candidate event; per-class NMS (E2E-Spot's local maximum
   by default) thins the candidates; optionally only the ``top_k`` best events per class and video are kept.
   The default threshold is 0: every local maximum is kept, whatever its score, so no score floor ever decides
   a ranking. (E2E-Spot's 0.01 was made for softmax scores; calibrated sigmoid scores of a class whose prior is
   under 1 % fall below it and never reach AP: docs/results/candidates.md has the measured mAP-vs-threshold
   curves. AP never decreases when a lower-scored candidate is added, so the only cost of 0 is file size.)

Frames are streamed: a raw video is decoded sequentially with PyAV (``pespot.data.frames``: one seek, then a
forward decode) and resized to the model's height as it is decoded; only a rolling buffer of one window plus one
stride is held in memory, so a 90-minute 720p match never sits in RAM and nothing is written to disk. Frame
folders and compact mp4 stores are read through the same ``FrameSource`` interface.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import queue
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pespot.config import Config, from_dict
from pespot.data.clips import IMAGENET_MEAN, IMAGENET_STD
from pespot.data.labels import Event, Video, save_split
from pespot.errors import ConfigError, DataError
from pespot.fsutil import atomic_path, write_text_atomic
from pespot.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint  # noqa: F401 - part of the API

TTA_CHOICES = ("none", "flip")  # flip: mean of the scores of each window and of its horizontal mirror


# ------------------------------------------------------------------------------------------------------------
# the predictor: a model and everything needed to feed it


@dataclass
class Predictor:
    """A trained spotter ready for inference, with the preprocessing it was trained with."""

    model: torch.nn.Module | None  # eval mode, on ``device``; None when ``engine`` scores the windows
    cfg: Config
    classes: list[str]  # classes[i] is model output i + 1 (0 is background)
    device: torch.device
    activation: str  # "sigmoid" (bce, focal) | "softmax" (ce)
    source: str = ""  # checkpoint path, for messages
    # An exported model (pespot.export.OnnxEngine): normalised frames (B, T, 3, H, W) -> scores (B, T, K+1),
    # activation included. None: ``model`` (PyTorch).
    engine: Any = None
    tta: str = "none"  # test-time augmentation of every window: none | flip (TTA_CHOICES)
    nms_from: str | None = None  # the run's nms.json when it set cfg.eval.nms / nms_window (else the config's)

    @property
    def clip_len(self) -> int:
        """Frames per window (the length fixed-length temporal modules were built for)."""
        return int(getattr(self.model, "clip_len", self.cfg.model.clip_len))

    @property
    def height(self) -> int:
        """Frames are read at this height, aspect kept (``cfg.data.height``)."""
        return int(self.cfg.data.height)

    @property
    def crop(self) -> int | None:
        """Side of the square centre crop (``cfg.data.crop``), or None for the full frame."""
        return self.cfg.data.crop

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """bf16 autocast on CUDA unless the config turns AMP off; full precision on CPU."""
        if self.device.type == "cuda" and self.cfg.train.amp in ("auto", "bf16"):
            return torch.bfloat16
        return None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``--device``: auto (CUDA when present, else the CPU), cpu, cuda or cuda:N."""
    from pespot.train.distributed import resolve_device as resolve

    return resolve(device, what="--device")


def find_checkpoint(run_or_ckpt: str | Path) -> Path:
    """A run folder -> its ``checkpoints/best.pt`` (else ``last.pt``); a file -> itself."""
    path = Path(run_or_ckpt)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise DataError(f"{path}: run folder has no checkpoints/best.pt or checkpoints/last.pt")
    if not path.exists():
        raise DataError(f"{path}: checkpoint or run folder not found")
    return path


def load_predictor(run_or_ckpt: str | Path, device: str | torch.device = "auto",
                   classes: list[str] | None = None, classes_source: str = "--classes",
                   tta: str | None = None) -> Predictor:
    """Rebuild the model of a run folder or checkpoint for inference (eval mode, on ``device``).

    ``classes`` optionally renames the classes (e.g. a dataset's ``class.txt``, named ``classes_source`` in
    messages); it must have as many names as the checkpoint. ``tta``: none | flip (default: the run's
    ``eval.tta``). An NMS chosen on validation and stored in the run (``nms.json``, see
    ``pespot.postprocess.choose_nms``) replaces the config's ``eval.nms`` / ``nms_window``.
    """
    from pespot.model.spotter import build_model
    from pespot.postprocess import use_run_nms_choice

    path = find_checkpoint(run_or_ckpt)
    ckpt = load_checkpoint(path)
    try:
        cfg = from_dict(ckpt["config"])
    except ConfigError as err:
        raise ConfigError(f"{path}: bad config in checkpoint: {err}") from None
    nms_from = use_run_nms_choice(cfg, path)
    ckpt_classes = [str(c) for c in ckpt["classes"]]
    if classes is not None:
        if len(classes) != len(ckpt_classes):
            raise DataError(f"{path}: the model has {len(ckpt_classes)} classes, {classes_source} gives "
                            f"{len(classes)} (use the class.txt of the dataset the model was trained on)")
        ckpt_classes = list(classes)
    dev = resolve_device(device)
    # The trained weights replace any initialisation: never fetch ImageNet weights to throw them away.
    model = build_model(cfg, len(ckpt_classes), load_weights=False)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as err:
        # torch's first line is only "Error(s) in loading state_dict ...": show the first key at fault.
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise DataError(f"{path}: weights do not fit the model its config describes ({len(ckpt_classes)} "
                        f"classes): {detail}") from None
    model.eval().to(dev)  # build_model already put the backbone in channels_last when the config says so
    from pespot.registry import activation as loss_activation

    activation = loss_activation(cfg.loss.classification)
    tta = cfg.eval.tta if tta is None else tta
    if tta not in TTA_CHOICES:
        raise ConfigError(f"--tta '{tta}': expected one of {', '.join(TTA_CHOICES)}")
    return Predictor(model=model, cfg=cfg, classes=ckpt_classes, device=dev, activation=activation,
                     source=str(path), tta=tta, nms_from=nms_from)


# ------------------------------------------------------------------------------------------------------------
# frame streams: every input as a sequence of uint8 (T, H, W, 3) chunks


@dataclass
class FrameStream:
    """Frames of one video, delivered in order as chunks of uint8 arrays (T, H, W, 3).

    ``num_frames`` is the expected count (for the progress bar; None if unknown); the frames actually delivered
    are what counts.
    """

    name: str  # for messages
    fps: float | None
    num_frames: int | None
    chunks: Callable[[int], Iterator[np.ndarray]]  # chunks(chunk_len) -> iterator of (t <= chunk_len, H, W, 3)


def _as_uint8_array(frames: Any) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.cpu().numpy()
    return np.asarray(frames, dtype=np.uint8)


def stream_from_source(source: Any, name: str = "", num_frames: int | None = None,
                       fps: float | None = None) -> FrameStream:
    """A ``FrameSource`` read in order, in chunks (``iter_chunks``: one seek and a forward decode for videos).

    ``num_frames`` reads only the first frames (a split may label fewer frames than the store holds);
    ``fps`` overrides the source's own rate (frame folders have none).
    """
    total = int(source.num_frames) if num_frames is None else min(int(num_frames), int(source.num_frames))
    if total <= 0:
        raise DataError(f"{name or source.path}: no frames")

    def chunks(chunk_len: int) -> Iterator[np.ndarray]:
        if hasattr(source, "iter_chunks"):
            for chunk in source.iter_chunks(0, total, chunk_len):
                yield _as_uint8_array(chunk)
        else:  # any object with read(start, stop)
            for start in range(0, total, chunk_len):
                yield _as_uint8_array(source.read(start, min(start + chunk_len, total)))

    rate = fps if fps is not None else getattr(source, "fps", None)
    return FrameStream(name=name or str(getattr(source, "path", "")), fps=float(rate) if rate else None,
                       num_frames=total, chunks=chunks)


def open_stream(source: Any, height: int | None = None, name: str = "", num_frames: int | None = None,
                fps: float | None = None) -> FrameStream:
    """Any input as a ``FrameStream``: a FrameStream, a FrameSource, or a path that
    ``pespot.data.frames.open_frames`` reads (a video file, decoded sequentially and resized to ``height`` as
    it is decoded; a JPEG frame folder; a compact-store mp4)."""
    if isinstance(source, FrameStream):
        return source
    if not hasattr(source, "read"):
        from pespot.data.frames import open_frames

        source = open_frames(Path(source), height=height)
    return stream_from_source(source, name=name, num_frames=num_frames, fps=fps)


# ------------------------------------------------------------------------------------------------------------
# sliding windows and score aggregation


_END = object()


def prefetch(items: Iterator[Any], depth: int, join_timeout: float = 10.0) -> Iterator[Any]:
    """Yield ``items`` produced by a background thread running up to ``depth`` items ahead.

    Decoding (PyAV, PIL) releases the GIL, so the next frames are decoded while the model scores the current
    windows: on a GPU a raw video then costs max(decode, model) instead of their sum. An exception in the
    producer is raised here; closing this generator early stops the producer, waiting at most ``join_timeout``
    seconds for it to finish the item in hand (a read blocked in FFmpeg cannot be cut short; the daemon thread
    is then left to end on its own).
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put((_END, err))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # in the thread that ran it: releases the decoder (and its open file) now

    thread = threading.Thread(target=produce, name="pespot-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            try:
                # A timeout, not a blocking get: a Ctrl-C delivered to the producer thread (blocked in a read)
                # would never wake a main thread blocked on the queue; returning to Python lets it run.
                item, err = q.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=join_timeout)


def window_stride(clip_len: int, overlap: float) -> int:
    """Stride between window starts: ``clip_len - overlap * clip_len`` frames (at least 1)."""
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"--overlap: expected 0 <= overlap < 1, got {overlap}")
    return max(1, clip_len - round(overlap * clip_len))


def iter_windows(chunks: Iterator[np.ndarray], clip_len: int, stride: int
                 ) -> Iterator[tuple[int, np.ndarray, int]]:
    """Cut a stream of frame chunks into windows: yields (start, frames (clip_len, H, W, 3), valid).

    Windows start at 0, stride, 2*stride, ... and stop at the first one that reaches the last frame; only
    that one may be short: its ``valid`` frames are followed by zero frames (which the scorer sets to 0 after
    normalisation, as the model pads). Only frames from the current window start on are kept, so memory stays
    at about one window plus one chunk.
    """
    buffer: np.ndarray | None = None  # frames [buf_start, buf_start + len(buffer))
    buf_start = 0
    start = 0
    covered = 0  # frames [0, covered) are inside an emitted window
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        buffer = chunk if buffer is None else np.concatenate([buffer, chunk])
        while buf_start + len(buffer) >= start + clip_len:
            offset = start - buf_start
            yield start, buffer[offset: offset + clip_len], clip_len
            covered = start + clip_len
            start += stride
            drop = min(start - buf_start, len(buffer))
            buffer, buf_start = buffer[drop:], buf_start + drop
    if buffer is None:
        return
    end = buf_start + len(buffer)
    if covered < end:  # the tail after the last full window: one zero-padded window
        offset = start - buf_start
        tail = buffer[offset:]
        padded = np.zeros((clip_len, *buffer.shape[1:]), dtype=buffer.dtype)
        padded[: len(tail)] = tail
        yield start, padded, len(tail)


def center_crop(frames: np.ndarray, crop: int | None) -> np.ndarray:
    """Square centre crop of (T, H, W, 3) frames, zero-padding a side shorter than ``crop``."""
    if not crop:
        return frames
    t, h, w, c = frames.shape
    if h < crop or w < crop:  # as torchvision's CenterCrop: pad with zeros, then crop
        padded = np.zeros((t, max(h, crop), max(w, crop), c), dtype=frames.dtype)
        top, left = (padded.shape[1] - h) // 2, (padded.shape[2] - w) // 2
        padded[:, top: top + h, left: left + w] = frames
        frames, h, w = padded, padded.shape[1], padded.shape[2]
    top, left = (h - crop) // 2, (w - crop) // 2  # as the evaluation clips of pespot.data.clips
    return frames[:, top: top + crop, left: left + crop]


def _normalise(batch: torch.Tensor, valid: list[int]) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) on the device -> ImageNet-normalised float (B, T, 3, H, W), channels last in memory.

    Frames past ``valid[b]`` (the padding of a last window) are set to 0 after normalisation, which is how the
    model pads a short clip itself.
    """
    mean = torch.tensor(IMAGENET_MEAN, device=batch.device)
    std = torch.tensor(IMAGENET_STD, device=batch.device)
    x = (batch.float() / 255.0 - mean) / std  # (B, T, H, W, 3)
    for b, n in enumerate(valid):
        if n < x.shape[1]:
            x[b, n:] = 0.0
    # The permuted view keeps channels innermost: flattened to (B*T, 3, H, W) inside the model it is already
    # in channels_last layout, so no copy is made before the first convolution.
    return x.permute(0, 1, 4, 2, 3)


class _ScoreAccumulator:
    """Running per-frame sums and window counts; grows as frames arrive (the length may be unknown)."""

    def __init__(self, num_outputs: int, capacity: int = 1024) -> None:
        self.sums = np.zeros((max(capacity, 1), num_outputs), dtype=np.float64)
        self.counts = np.zeros(max(capacity, 1), dtype=np.int64)
        self.length = 0

    def add(self, start: int, scores: np.ndarray) -> None:
        stop = start + len(scores)
        if stop > len(self.counts):
            capacity = max(stop, 2 * len(self.counts))
            self.sums = np.concatenate([self.sums, np.zeros((capacity - len(self.sums), self.sums.shape[1]))])
            self.counts = np.concatenate([self.counts, np.zeros(capacity - len(self.counts), dtype=np.int64)])
        self.sums[start:stop] += scores
        self.counts[start:stop] += 1
        self.length = max(self.length, stop)

    def mean(self) -> np.ndarray:
        counts = self.counts[: self.length]
        assert (counts > 0).all(), "every frame is covered by a window"
        return (self.sums[: self.length] / counts[:, None]).astype(np.float32)


def predict_scores(predictor: Predictor, source: Any, overlap: float = 0.5, batch_size: int = 4,
                   progress: bool = True, desc: str | None = None,
                   num_frames: int | None = None, tta: str | None = None) -> np.ndarray:
    """Per-frame scores (N, K+1) of a whole video: sliding windows, mean over the windows covering a frame.

    ``source`` is a ``FrameSource``, a ``FrameStream``, a video file (decoded on the fly at the model's
    height) or a frame folder / compact mp4 store. Column 0 is background; column ``i + 1`` is
    ``predictor.classes[i]``. ``num_frames`` limits the frames read (a split may label fewer than stored).
    ``tta``: none | flip (default: ``predictor.tta``).
    """
    if batch_size <= 0:
        raise ConfigError(f"--batch-size: expected a positive integer, got {batch_size}")
    stream = open_stream(source, height=predictor.height, name=desc or "", num_frames=num_frames)
    clip_len = predictor.clip_len
    stride = window_stride(clip_len, overlap)
    acc = _ScoreAccumulator(len(predictor.classes) + 1, capacity=stream.num_frames or 4 * clip_len)

    from tqdm import tqdm

    # None: no bar when stderr is not a terminal (a log file gets the per-video summary line, not bar fragments)
    bar = tqdm(total=stream.num_frames, unit="frame", desc=desc or stream.name or None,
               disable=not progress or None, leave=False, dynamic_ncols=True)
    pending: list[tuple[int, np.ndarray, int]] = []

    def flush() -> None:
        windows = np.stack([frames for _, frames, _ in pending])  # (B, T, H, W, 3)
        scores = _score_windows(predictor, windows, [valid for _, _, valid in pending], tta=tta)  # (B, T, K+1)
        for (start, _, valid), window_scores in zip(pending, scores):
            acc.add(start, window_scores[:valid])
        bar.update(max(acc.length - bar.n, 0))
        pending.clear()

    # Decode chunks of one stride in the background, one batch of windows ahead: with the window kept and the
    # read-ahead, about clip_len + (batch_size + 1) * stride frames are held at any time.
    chunks = prefetch(stream.chunks(stride), depth=batch_size)
    try:
        for window in iter_windows(chunks, clip_len, stride):
            start, frames, valid = window
            pending.append((start, center_crop(frames, predictor.crop), valid))
            if len(pending) == batch_size:
                flush()
        if pending:
            flush()
    finally:
        chunks.close()  # stops the read-ahead thread if scoring failed part-way
        bar.close()
    if acc.length == 0:
        raise DataError(f"{stream.name or source}: no frames decoded")
    return acc.mean()


@torch.inference_mode()
def _score_windows(predictor: Predictor, windows: np.ndarray, valid: list[int], tta: str | None = None
                   ) -> np.ndarray:
    """uint8 windows (B, T, H, W, 3) with ``valid`` real frames each -> per-frame class probabilities
    (B, T, K+1) as float32 numpy.

    ``tta='flip'`` (default: ``predictor.tta``) scores each window and its horizontal mirror in one batch and
    returns the mean of the two probabilities. ``predictor.engine``, when set, runs the network instead of
    ``predictor.model``.
    """
    tta = predictor.tta if tta is None else tta
    if tta not in TTA_CHOICES:
        raise ConfigError(f"--tta '{tta}': expected one of {', '.join(TTA_CHOICES)}")
    batch = torch.from_numpy(np.ascontiguousarray(windows)).to(predictor.device, non_blocking=True)
    num_windows = batch.shape[0]
    if tta == "flip":
        batch = torch.cat([batch, batch.flip(3)])  # (2B, T, H, W, 3): the windows, then their mirrors (W axis)
        valid = list(valid) * 2
    x = _normalise(batch, valid)  # (B, T, 3, H, W)
    if predictor.engine is not None:
        probs = torch.from_numpy(predictor.engine(x))  # the exported model includes the activation
    else:
        amp = predictor.amp_dtype
        ctx = torch.autocast(predictor.device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
        with ctx:
            logits = predictor.model(x)  # (B, T, K+1)
        logits = logits.float()
        probs = torch.softmax(logits, dim=-1) if predictor.activation == "softmax" else torch.sigmoid(logits)
    if tta == "flip":
        probs = (probs[:num_windows] + probs[num_windows:]) / 2
    return probs.cpu().numpy()


# ------------------------------------------------------------------------------------------------------------
# scores -> events


def scores_to_events(scores: np.ndarray, classes: list[str], threshold: float = 0.0, nms: str = "local_max",
                     nms_window: int = 1, top_k: int | None = None) -> list[Event]:
    """Events of one video from its per-frame scores (N, K+1): candidates >= threshold, then per-class NMS, then
    (``top_k``) at most that many events per class, the highest-scoring.

    ``nms`` (``pespot.postprocess``): ``local_max`` (E2E-Spot: drop an event if another of its class within
    ``nms_window`` frames scores strictly higher), ``greedy`` (keep the best, drop its neighbours, repeat),
    ``soft`` (decay the neighbours' scores instead; events falling below the threshold are dropped) or
    ``none``. Events are sorted by frame, then class order.
    """
    from pespot.registry import NMS

    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] != len(classes) + 1:
        raise DataError(f"scores of shape {scores.shape}: expected (num_frames, {len(classes) + 1}) "
                        f"for {len(classes)} classes plus background")
    if nms not in NMS:
        raise ConfigError(f"--nms '{nms}': expected one of {', '.join(NMS.names())}")
    if isinstance(nms_window, bool) or int(nms_window) != nms_window or nms_window < 0:
        raise ConfigError(f"--nms-window: expected a non-negative whole number of frames, got {nms_window!r}")
    # Candidates, row-major: sorted by frame, then class. Column 0 (background) never makes an event.
    frames, columns = np.nonzero(scores[:, 1:] >= threshold)
    values = scores[frames, columns + 1].astype(np.float64)
    keep, kept_scores = NMS.get(nms).builder(frames, values, nms_window, columns, threshold)
    values = np.where(keep, kept_scores, values)  # soft-NMS decays the scores of what it keeps
    if top_k is not None:
        if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
            raise ConfigError(f"--top-k: expected a positive whole number of events per class, got {top_k!r}")
        keep &= _top_k_per_group(values, columns, keep, int(top_k))
    return [Event(frame=int(f), label=classes[c], score=float(v))
            for f, c, v in zip(frames[keep], columns[keep], values[keep])]


def _top_k_per_group(values: np.ndarray, groups: np.ndarray, alive: np.ndarray, k: int) -> np.ndarray:
    """Mask of the ``k`` highest ``values`` among the ``alive`` entries of each group (ties: the earlier entry)."""
    idx = np.flatnonzero(alive)
    order = idx[np.lexsort((idx, -values[idx], groups[idx]))]  # by group, then score descending, then position
    grp = groups[order]
    first = np.searchsorted(grp, grp, side="left")  # where each entry's group starts in ``order``
    rank = np.arange(len(order)) - first
    mask = np.zeros(values.shape, dtype=bool)
    mask[order[rank < k]] = True
    return mask


def predict_videos(predictor: Predictor, videos: list[Video], frames_root: str | Path, *,
                   overlap: float | None = None, threshold: float | None = None, nms: str | None = None,
                   nms_window: int | None = None, top_k: int | None = None, batch_size: int | None = None,
                   progress: bool = False, tta: str | None = None) -> list[VideoPrediction]:
    """Spot the labelled ``videos`` of a split whose frames are in ``frames_root``: per-frame scores over the
    labelled frames, then events. Every option defaults to the predictor's run config (``eval.*``); ``tta``
    defaults to ``predictor.tta``."""
    from pespot.data.frames import find_video_frames

    ev = predictor.cfg.eval
    overlap = ev.overlap if overlap is None else overlap
    threshold = ev.threshold if threshold is None else threshold
    nms = ev.nms if nms is None else nms
    nms_window = ev.nms_window if nms_window is None else nms_window
    top_k = ev.top_k if top_k is None else top_k
    batch_size = ev.batch_size if batch_size is None else batch_size
    preds = []
    for video in videos:
        source = find_video_frames(frames_root, video.video)
        scores = predict_scores(predictor, source, overlap=overlap, batch_size=batch_size, progress=progress,
                                desc=video.video, num_frames=video.num_frames if video.num_frames >= 0 else None,
                                tta=tta)
        events = scores_to_events(scores, predictor.classes, threshold=threshold, nms=nms, nms_window=nms_window,
                                  top_k=top_k)
        preds.append(VideoPrediction(video=video.video, fps=video.fps, scores=scores, events=events))
    return preds


# ------------------------------------------------------------------------------------------------------------
# output writers (all atomic)


@dataclass
class VideoPrediction:
    """Everything inference produced for one video."""

    video: str  # id
    fps: float | None
    scores: np.ndarray  # (N, K+1)
    events: list[Event] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return len(self.scores)

    def to_video(self) -> Video:
        return Video(video=self.video, num_frames=self.num_frames, fps=self.fps, events=list(self.events))


def events_with_nms(preds: list[VideoPrediction], classes: list[str], threshold: float = 0.0,
                    top_k: int | None = None) -> Callable[[str, int | None], list[Video]]:
    """``pespot.postprocess.choose_nms``'s ``predictions`` from per-frame scores: each NMS method and window
    turns the scores into events exactly as ``pespot infer`` would (threshold, NMS, then top_k)."""
    def predictions(method: str, window: int | None) -> list[Video]:
        return [Video(video=p.video, num_frames=p.num_frames, fps=p.fps,
                      events=scores_to_events(p.scores, classes, threshold=threshold, nms=method,
                                              nms_window=int(window or 0), top_k=top_k))
                for p in preds]
    return predictions


def choose_nms_on(predictor: Predictor, videos: list[Video], frames_root: str | Path,
                  windows: list[int] | tuple[int, ...]) -> tuple[dict, list[dict]]:
    """Score ``videos`` (a validation split) once and choose the NMS method and window with the best mean mAP
    over the run's tolerances (``pespot.postprocess.choose_nms``), with its threshold and top_k; returns (best,
    table)."""
    from pespot.postprocess import choose_nms

    ev = predictor.cfg.eval
    preds = predict_videos(predictor, videos, frames_root, nms="none")
    return choose_nms(videos, predictor.classes, list(ev.tolerances),
                      events_with_nms(preds, predictor.classes, threshold=ev.threshold, top_k=ev.top_k), windows)


def write_predictions_json(preds: list[VideoPrediction], path: str | Path) -> None:
    """E2E-Spot prediction JSON: ``[{video, num_frames, fps, events: [{frame, label, score}]}]``."""
    save_split([p.to_video() for p in preds], path)


def write_predictions_csv(preds: list[VideoPrediction], path: str | Path) -> None:
    """One row per event: video, frame, time (seconds; empty when the fps is unknown), label, score."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["video", "frame", "time", "label", "score"])
    for p in preds:
        for e in p.events:
            time = f"{e.frame / p.fps:.3f}" if p.fps and p.fps > 0 else ""
            writer.writerow([p.video, e.frame, time, e.label, f"{e.score:.6g}"])
    write_text_atomic(path, buf.getvalue())


def write_scores_npz(pred: VideoPrediction, classes: list[str], out_dir: str | Path) -> Path:
    """Per-frame scores of one video as ``<out_dir>/<video>.npz`` (compressed): ``scores`` (N, K+1) float32,
    ``classes`` (K,), ``fps`` (NaN when unknown). Ids with '/' (SoccerNet halves) become sub-folders."""
    path = Path(out_dir) / f"{pred.video}.npz"
    # A file object: given a name, np.savez would append ".npz" to the temporary name.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, scores=pred.scores.astype(np.float32), classes=np.array(classes),
                            fps=np.float64(pred.fps if pred.fps else math.nan))
    return path


def load_scores_npz(path: str | Path) -> tuple[np.ndarray, list[str], float | None]:
    """Read a scores file written by ``write_scores_npz``: (scores (N, K+1), classes, fps or None)."""
    path = Path(path)
    try:
        with np.load(path) as data:
            scores, classes, fps = data["scores"], [str(c) for c in data["classes"]], float(data["fps"])
    except FileNotFoundError:
        raise DataError(f"{path}: scores file not found") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a pespot scores file ({err})") from None
    return scores, classes, (None if math.isnan(fps) else fps)


def write_soccernet(preds: list[VideoPrediction], out_dir: str | Path) -> list[Path]:
    """SoccerNet ``results_spotting.json`` per game under ``out_dir`` (ids ``<league>/<season>/<game>/half1``)."""
    from pespot.data import soccernet

    videos = [p.to_video() for p in preds]
    for v in videos:
        if not v.fps or v.fps <= 0:
            raise DataError(f"video '{v.video}': SoccerNet output needs the fps (give --fps for frame folders)")
    return soccernet.write_results(videos, out_dir)

