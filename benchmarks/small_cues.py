"""Why training stays at the prior when the decisive cue is small: measurements, before any fix.

    python benchmarks/small_cues.py [--parts cue network modules spread grads probe] [--runs NAME=RUN_DIR ...]
                                    [--out docs/results/small_cues]

Compares the two synthetic worlds (docs/synthetic.md): ``rally-side`` (a ball of radius 2.6 px at 64 px) and
``court-top`` (a ball of 1-3 px, players a few px tall), each on its ``small`` preset, seed 0, rendered in memory.

* ``cue``: what the data pipeline does to the ball. Per frame, the ball's contrast is the largest luma
  difference (0-255) between the frame and the same frame rendered without the ball, within 2 px of the
  ball's centre. Reported: the contrast as rendered, after the frame store (JPEG q95 4:4:4, H.264 crf 17 4:2:0),
  and the share kept by each augmentation of ``data.augment`` (5x5 Gaussian blur, brightness, contrast,
  saturation, each drawn as in training) and by mixup (its weight).
* ``network``: how much of the ball reaches each stage of the untrained backbone: ||f(frame) - f(frame without
  ball)|| / ||f(frame) - f(next frame without ball)||, the ball's effect on a stage's features against what
  changes anyway from one frame to the next (noise, players, distractors), at the recipe's 64 px and with the
  frames resized to 128 px; live residual initialisation with RGB input (the first recipe) and with the grey
  frame and its differences (``model.input: gray_diff``, the recipe), zero initialisation with RGB; plus the BatchNorm batch-statistics noise at
  batch 2 x clip 64 against batch 8 x clip 64.
* ``modules``: the ``network`` ratio for the recipe's untrained model with each temporal module in the
  bottlenecks (ASTRM, ASTRM with Gt's centre tap at initialisation, GSM, none), and the taps of ASTRM's global
  temporal kernel at initialisation.
* ``spread``: how far in time one frame's ball reaches the pooled feature (what the Bi-GRU reads): the ball drawn in
  the middle frame of a clip only, the effect ||f(clip) - f(clip without that ball)|| on every frame's pooled
  feature; reported as the share of the effect's energy on the ball's own frame, within 1 frame, beyond 4 frames,
  for the recipe's untrained model with each temporal module (ASTRM; without Gt; Gt at TAM's init, with its centre
  tap at init, through a softmax; GSM; none) and each ``--runs`` checkpoint. A module that spreads a one-frame cue over many frames makes "which frame"
  harder to tell.
* ``grads``: per stage (stem, s1-s4, the temporal modules, Bi-GRU, classifier), at random initialisation, the
  gradient's norm and its coherence over 8 training batches, for the first recipe, single changes the exploration
  tried on top of it, and the recipe (the ``synthetic`` preset as it is), on each world.
* ``probe``: a linear probe (ridge regression) from the backbone's pooled feature, and from stage s3's feature
  map, to the ball's position in the frame and to "within one frame of an event", for an untrained model (RGB
  and gray_diff input) and each ``--runs`` checkpoint: R^2 and ROC AUC on validation videos. Whether the
  features hold the ball at all.

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, versions, write_results
from accuracy import FIRST_RECIPE_KEYS

from pespot.data import clips as C
from pespot.data.synthetic import court_top, rally_side

ROOT = Path(__file__).resolve().parents[1]
WORLDS = {"rally-side": rally_side, "court-top": court_top}
VIDEOS_PER_WORLD = 6  # train videos rendered per world for the cue and network parts
STAGES = ("stem", "s1", "s2", "s3", "s4")
STAGE_COLUMNS = ("stem", "s1", "s2", "s3", "s4", "s2 temporal", "s4 temporal", "temporal head", "classifier",
                 "classifier bias")


# --------------------------------------------------------------------------------------------------------------
# rendering with and without the ball, and where the ball is


def render_pair(world: Any, spec: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames with and without the ball (same random draws) and the ball's pixel position (N, 2) (NaN: none)."""
    preset = world.get_preset("small")
    video = world.simulate_video(spec, preset, render=False)
    rng_seed = [spec.seed, 3]
    with_ball = world._render(video, preset, np.random.default_rng(rng_seed))
    pixels = ball_pixels(world, video, preset, rng_seed)
    video.segments = []
    without = world._render(video, preset, np.random.default_rng(rng_seed))
    return with_ball, without, pixels


def ball_pixels(world: Any, video: Any, preset: Any, rng_seed: list[int]) -> np.ndarray:
    """(N, 2) ball centre (column, row) in pixels, NaN where the ball is not in play."""
    if world is court_top:
        return video.ball_pixels()
    ball = video.ball_per_frame()
    shake = rally_side._make_look(np.random.default_rng(rng_seed), preset, video.num_frames, video.fps).shake
    size = preset.size
    return np.stack([ball[:, 0] * size + shake[:, 0], rally_side.GROUND_ROW * size - ball[:, 1] * size + shake[:, 1]], 1)


def luma(frames: np.ndarray) -> np.ndarray:
    f = frames.astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def contrast(with_ball: np.ndarray, without: np.ndarray, pixels: np.ndarray, reach: int = 2) -> np.ndarray:
    """Per frame: the largest luma difference within ``reach`` px of the ball's centre (NaN: ball not visible)."""
    diff = np.abs(luma(with_ball) - luma(without))
    h, w = diff.shape[1:]
    out = np.full(len(diff), np.nan)
    for n, (col, row) in enumerate(pixels):
        if np.isnan(col) or not (0 <= col < w and 0 <= row < h):
            continue
        r, c = int(row), int(col)
        out[n] = diff[n, max(0, r - reach):r + reach + 1, max(0, c - reach):c + reach + 1].max()
    return out


def encode_roundtrip(frames: np.ndarray, fmt: str, fps: float = 25.0) -> np.ndarray:
    """The frames after the frame store: JPEG q95 4:4:4 (as ``pespot synth --format jpg``) or H.264 crf 17 4:2:0
    (``--format mp4``), decoded back."""
    from PIL import Image

    from pespot.data.synthetic.common import write_mp4

    if fmt == "jpg":
        out = []
        for f in frames:
            buf = io.BytesIO()
            Image.fromarray(f).save(buf, format="JPEG", quality=95, subsampling=0)
            out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
        return np.stack(out)
    import av

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        write_mp4(frames, path, fps)
        with av.open(str(path)) as container:
            return np.stack([fr.to_ndarray(format="rgb24") for fr in container.decode(video=0)])


# --------------------------------------------------------------------------------------------------------------
# part: cue


def part_cue(rng: np.random.Generator) -> dict:
    """The ball's contrast as rendered, after the frame stores, and the share each augmentation keeps."""
    report: dict[str, Any] = {}
    for name, world in WORLDS.items():
        specs = world.plan_dataset("small", 0)["train"][:VIDEOS_PER_WORLD]
        rendered, stored_jpg, stored_mp4 = [], [], []
        kept: dict[str, list[float]] = {k: [] for k in ("blur", "brightness", "contrast", "saturation",
                                                        "all augmentations")}
        for spec in specs:
            with_ball, without, pixels = render_pair(world, spec)
            base = contrast(with_ball, without, pixels)
            rendered.append(base)
            for fmt, sink in (("jpg", stored_jpg), ("mp4", stored_mp4)):
                sink.append(contrast(encode_roundtrip(with_ball, fmt), encode_roundtrip(without, fmt), pixels))
            visible = np.flatnonzero(base > 0)
            if len(visible) == 0:
                continue
            frames_w = torch.from_numpy(with_ball[visible]).permute(0, 3, 1, 2).float() / 255
            frames_o = torch.from_numpy(without[visible]).permute(0, 3, 1, 2).float() / 255
            for _ in range(40):
                aug = C.draw_augment(rng, *with_ball.shape[1:3], None, True)
                aug[3] = 0.0  # no flip: it moves the ball, not its contrast
                for op, cols in (("blur", (10,)), ("brightness", (4,)), ("contrast", (6,)), ("saturation", (8,)),
                                 ("all augmentations", (4, 6, 8, 10))):
                    one = aug.clone()
                    for use in (4, 6, 8, 10):
                        one[use] = aug[use] if use in cols else 0.0
                        if op != "all augmentations" and use in cols:
                            one[use] = 1.0  # the op itself, always on, with its drawn strength
                    if op != "all augmentations" and not bool(one[cols[0]]):
                        continue
                    aw = (C.apply_augment(frames_w, one) * 255).permute(0, 2, 3, 1).numpy()
                    ao = (C.apply_augment(frames_o, one) * 255).permute(0, 2, 3, 1).numpy()
                    after = contrast(aw, ao, pixels[visible])
                    kept[op].extend((after / base[visible]).tolist())
        lams = rng.beta(0.1, 0.1, size=4000)
        kept["mixup weight"] = np.minimum(lams, 1 - lams).tolist()  # the weaker clip's share of a mixed clip
        base_all = np.concatenate(rendered)
        report[name] = {
            "frames_with_ball": int(np.sum(base_all > 0)),
            "contrast_rendered": _quantiles(base_all),
            "contrast_jpg": _quantiles(np.concatenate(stored_jpg)),
            "contrast_mp4": _quantiles(np.concatenate(stored_mp4)),
            "kept": {op: {"mean": float(np.nanmean(v)), "share_below_half": float(np.nanmean(np.array(v) < 0.5)),
                          "share_below_quarter": float(np.nanmean(np.array(v) < 0.25))}
                     for op, v in kept.items() if v},
        }
    return report


def _quantiles(values: np.ndarray) -> dict[str, float]:
    v = values[~np.isnan(values) & (values > 0)]
    if v.size == 0:
        return {}
    return {"p10": float(np.percentile(v, 10)), "median": float(np.median(v)), "p90": float(np.percentile(v, 90))}


# --------------------------------------------------------------------------------------------------------------
# part: network


def build(residual_init: str, clip_len: int, checkpoint: Path | None = None, num_classes: int = 7,
          model_input: str = "rgb", extra: tuple[str, ...] = ()) -> torch.nn.Module:
    """The recipe's model (``synthetic`` preset), untrained (``residual_init``, ``model_input``: rgb as the
    first recipe, gray_diff as the recipe) or a run's checkpoint (its own input)."""
    from pespot.config import load_config
    from pespot.model.spotter import build_model

    if checkpoint is not None:
        from pespot.infer import load_predictor

        return load_predictor(checkpoint, device="cpu").model.eval()
    cfg = load_config("synthetic", [f"model.residual_init={residual_init}", f"model.clip_len={clip_len}",
                                    f"model.input={model_input}", *extra])
    torch.manual_seed(0)
    return build_model(cfg, num_classes, load_weights=False).eval()


def stage_outputs(model: torch.nn.Module, frames: np.ndarray, size: int) -> dict[str, torch.Tensor]:
    """Each backbone stage's output (and the pooled feature) for uint8 frames (T, H, W, 3) as one clip."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = C.normalise(x)[None]  # (1, T, 3, H, W)
    outs: dict[str, torch.Tensor] = {}
    hooks = [getattr(model.backbone, s).register_forward_hook(lambda m, i, o, s=s: outs.__setitem__(s, o))
             for s in STAGES]
    hooks.append(model.backbone.register_forward_hook(lambda m, i, o: outs.__setitem__("pooled", o)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return outs


def ball_ratios(model: torch.nn.Module, world: Any, clip_len: int, size: int) -> dict[str, float]:
    """Per stage, ||f(frame) - f(frame without the ball)|| / ||f(frame) - f(next frame without the ball)||: the
    median over a clip's frames, the mean over the first 3 training videos of ``world`` (``small``, seed 0)."""
    ratios: dict[str, list[float]] = {s: [] for s in (*STAGES, "pooled")}
    for spec in world.plan_dataset("small", 0)["train"][:3]:
        with_ball, without, pixels = render_pair(world, spec)
        visible = np.flatnonzero(~np.isnan(pixels[:, 0]))
        if len(visible) < clip_len + 1:
            continue
        lo = int(visible[len(visible) // 2 - clip_len // 2])
        a = stage_outputs(model, with_ball[lo:lo + clip_len], size)
        b = stage_outputs(model, without[lo:lo + clip_len], size)
        c = stage_outputs(model, without[lo + 1:lo + 1 + clip_len], size)
        for s, values in ratios.items():
            ball_effect = (a[s] - b[s]).flatten(1).norm(dim=1)
            change = (c[s] - b[s]).flatten(1).norm(dim=1)
            values.append(float((ball_effect / change.clamp_min(1e-8)).median()))
    return {s: float(np.mean(v)) for s, v in ratios.items() if v}


def part_network(clip_len: int = 64) -> dict:
    """The ball's effect on each stage of the untrained backbone against frame-to-frame change; BN noise."""
    report: dict[str, Any] = {}
    for init, model_input in (("live", "rgb"), ("live", "gray_diff"), ("zero", "rgb")):
        model = build(init, clip_len, model_input=model_input)
        for name, world in WORLDS.items():
            for size in (64, 128):
                report[f"{init}/{name}/{size}px/{model_input}"] = ball_ratios(model, world, clip_len, size)
    report["batchnorm"] = bn_noise(clip_len)
    return report


MODULE_VARIANTS = {"ASTRM (the paper's, the recipe)": ("model.temporal_module=astrm",),
                   "ASTRM, Gt centre tap at init (model.astrm.gt_center_init)": (
                       "model.temporal_module=astrm", "model.astrm.gt_center_init=true"),
                   "GSM (E2E-Spot)": ("model.temporal_module=gsm",),
                   "no temporal module": ("model.temporal_module=none",)}


def part_modules(clip_len: int = 64, size: int = 64) -> dict:
    """The ball through the untrained backbone (the recipe: live init, gray_diff, 64 px) with each temporal module
    in the bottlenecks, and the kernels θ that ASTRM's Gt gives at initialisation (mean over clips, channels and
    blocks, per tap): whether the module starts by mixing neighbouring frames."""
    from pespot.model.astrm import ASTRM, set_reference_implementation

    report: dict[str, Any] = {}
    for variant, keys in MODULE_VARIANTS.items():
        model = build("live", clip_len, model_input="gray_diff", extra=keys)
        set_reference_implementation(model, True)
        thetas: list[torch.Tensor] = []
        hooks = [m.gt.register_forward_hook(lambda mod, i, o, store=thetas: store.append(o.detach()))
                 for m in model.modules() if isinstance(m, ASTRM) and m.gt is not None]
        for name, world in WORLDS.items():
            report[f"{variant} / {name}"] = ball_ratios(model, world, clip_len, size)
        for h in hooks:
            h.remove()
        if thetas:
            taps = torch.cat([t.reshape(-1, t.shape[-1]) for t in thetas])
            report[f"{variant} / theta"] = {"mean": taps.mean(0).tolist(), "sum_mean": float(taps.sum(1).mean())}
    return report


SPREAD_VARIANTS = {"ASTRM (the paper's, the recipe)": ("model.temporal_module=astrm",),
                   "ASTRM without Gt (model.astrm.use_gt false)": ("model.temporal_module=astrm",
                                                                   "model.astrm.use_gt=false"),
                   "ASTRM, Gt's FCs at TAM's init (model.astrm.gt_init tam)": ("model.temporal_module=astrm",
                                                                              "model.astrm.gt_init=tam"),
                   "ASTRM, Gt's centre tap at init (model.astrm.gt_center_init)": (
                       "model.temporal_module=astrm", "model.astrm.gt_center_init=true"),
                   "ASTRM, Gt through a softmax (model.astrm.gt_activation softmax)": (
                       "model.temporal_module=astrm", "model.astrm.gt_activation=softmax"),
                   "GSM (E2E-Spot)": ("model.temporal_module=gsm",),
                   "no temporal module": ("model.temporal_module=none",)}
SPREAD_OFFSETS = 8  # frames either side of the ball's frame in the reported profile


def impulse_spread(model: torch.nn.Module, world: Any, clip_len: int, size: int = 64) -> dict[str, Any]:
    """The ball drawn in one frame (the middle of a clip, every other frame without it): the effect on each frame's
    pooled feature, as shares of its energy (own frame, within 1, beyond 4) and a profile over ±8 frames, mean
    over the first 3 training videos of ``world`` (``small``, seed 0)."""
    from pespot.model.astrm import ASTRM

    profiles: list[np.ndarray] = []
    thetas: list[torch.Tensor] = []  # Gt's kernels on the clips without the ball, every block
    gts = [m for m in model.modules() if isinstance(m, ASTRM) and m.gt is not None]
    for spec in world.plan_dataset("small", 0)["train"][:3]:
        with_ball, without, pixels = render_pair(world, spec)
        visible = np.flatnonzero(~np.isnan(pixels[:, 0]))
        lo = int(visible[len(visible) // 2]) - clip_len // 2
        if lo < 0 or lo + clip_len > len(without):
            continue
        base = without[lo:lo + clip_len]
        impulse = base.copy()
        impulse[clip_len // 2] = with_ball[lo + clip_len // 2]
        a = stage_outputs(model, impulse, size)["pooled"]
        hooks = [m.register_forward_pre_hook(lambda mod, inp: thetas.append(mod.gt(inp[0]).detach())) for m in gts]
        b = stage_outputs(model, base, size)["pooled"]
        for h in hooks:
            h.remove()
        energy = ((a - b).flatten(1).norm(dim=1) ** 2).numpy()
        profiles.append(energy / max(float(energy.sum()), 1e-12))
    share = np.mean(profiles, axis=0)
    centre, offsets = clip_len // 2, np.arange(clip_len) - clip_len // 2
    out = {"own_frame": float(share[centre]), "within_1": float(share[np.abs(offsets) <= 1].sum()),
           "beyond_4": float(share[np.abs(offsets) > 4].sum()),
           "profile": [float(v) for v in share[centre - SPREAD_OFFSETS:centre + SPREAD_OFFSETS + 1]]}
    if thetas:  # mean tap over clips, channels and blocks; the centre tap's share of the kernel (1: identity)
        taps = torch.cat([t.reshape(-1, t.shape[-1]) for t in thetas])
        mid = taps.shape[1] // 2
        out["theta_mean"] = taps.mean(0).tolist()
        out["theta_centre_share"] = float((taps[:, mid] / taps.sum(1).clamp_min(1e-12)).mean())
    return out


def part_spread(runs: dict[str, Path], clip_len: int = 64) -> dict:
    """``impulse_spread`` for the recipe's untrained model with each temporal module and for each run."""
    from pespot.infer import find_checkpoint

    report: dict[str, Any] = {}
    models = {f"untrained, {k}": (None, v) for k, v in SPREAD_VARIANTS.items()}
    models.update({f"trained, {k}": (v, ()) for k, v in runs.items()})
    for label, (run, keys) in models.items():
        model = build("live", clip_len, find_checkpoint(run) if run is not None else None, model_input="gray_diff",
                      extra=keys)
        for name, world in WORLDS.items():
            report[f"{label} / {name}"] = impulse_spread(model, world, clip_len)
    return report


def bn_noise(clip_len: int) -> dict:
    """Spread of the first stage's BatchNorm batch means over batches of 2 and of 8 clips of ``clip_len`` frames
    (court-top, untrained model with RGB input), relative to the spread of single frames: how noisy the statistics that
    normalise a small cue are at the recipe's batch size."""
    model = build("live", clip_len)
    bn = model.backbone.s1.b1.conv2.bn
    frames = []
    for spec in court_top.plan_dataset("small", 0)["train"][:8]:
        video = court_top.simulate_video(spec, "small")
        lo = spec.num_frames // 2 - clip_len // 2
        frames.append(video.frames[lo:lo + clip_len])
    means: list[torch.Tensor] = []
    hook = bn.register_forward_hook(lambda m, i, o: means.append(i[0].mean(dim=(2, 3))))  # (N, C)
    with torch.no_grad():
        for f in frames:
            x = C.normalise(torch.from_numpy(f).permute(0, 3, 1, 2).float() / 255)[None]
            model(x)
    hook.remove()
    per_clip = torch.stack([m.mean(0) for m in means])  # (clips, C)
    per_frame = torch.cat(means)  # (clips * T, C)
    out = {"clips": len(frames), "clip_len": clip_len}
    for batch in (2, 8):
        groups = per_clip[: len(per_clip) // batch * batch].view(-1, batch, per_clip.shape[1]).mean(1)
        spread = per_clip.std(0) / math.sqrt(batch) if len(groups) < 2 else groups.std(0)
        out[f"batch{batch}_spread_over_frame_spread"] = float((spread / per_frame.std(0).clamp_min(1e-8)).mean())
    return out


# --------------------------------------------------------------------------------------------------------------
# part: grads


FIRST_RECIPE = [f"{k}={'null' if v is None else v}" for k, v in FIRST_RECIPE_KEYS.items()]
GRAD_SETTINGS = {  # the first recipe, what the exploration tried on top of it, and the recipe (the preset as is)
    "first recipe": FIRST_RECIPE,
    "gray_diff input": [*FIRST_RECIPE, "model.input=gray_diff"],
    "dilate 2 + fg clips 1.0": [*FIRST_RECIPE, "data.dilate_len=2", "data.fg_upsample=1.0"],
    "dropout 0.1 + no mixup": [*FIRST_RECIPE, "model.dropout=0.1", "data.mixup=false"],
    "the recipe (synthetic preset)": [],
}


def part_grads(batches: int, data: dict[str, Path], work: Path) -> dict:
    """Per stage, at initialisation: the gradient's norm, and its coherence over ``batches`` training batches,
    ||sum_i g_i|| / sum_i ||g_i|| (1: every batch pushes the same way; 1/sqrt(batches) for pure noise). A small
    cue that moves few pixels should give a gradient that is mostly noise from everything else in the frames."""
    from pespot.config import load_config
    from pespot.data import loader as data_io
    from pespot.data.labels import load_classes
    from pespot.train.checks import load_splits
    from pespot.train.distributed import DistInfo
    from pespot.train.trainer import build as build_job

    report: dict[str, Any] = {}
    for name, root in data.items():
        for setting, keys in GRAD_SETTINGS.items():
            cfg = load_config("synthetic", [f"data.root={root}", f"out={work / name}", "train.threads=1",
                                            "data.num_workers=0", f"train.clips_per_epoch={2 * batches}",
                                            "train.val_clips=0", "train.seed=0", *keys])
            classes = load_classes(root / "class.txt")
            train_videos, val_videos = load_splits(cfg, classes)
            job = build_job(cfg, classes, train_videos, val_videos, [], work / name, DistInfo())
            job.model.train()
            groups = stage_groups(job.model)
            grads: dict[str, list[torch.Tensor]] = {g: [] for g in groups}
            job.sampler.set_epoch(0)
            for batch in data_io.batches(job.loader):
                frames, targets = data_io.to_device(batch, torch.device("cpu"))
                logits, proj = job.net(frames, return_projection=True)
                total, _ = job.loss_fn(logits, targets, proj, 0.0)
                total.backward()
                for g, params in groups.items():
                    grads[g].append(torch.cat([p.grad.flatten() for p in params if p.grad is not None]).clone())
                job.model.zero_grad(set_to_none=True)
            report[f"{name} / {setting}"] = {
                g: {"norm": float(np.mean([v.norm() for v in vs])),
                    "coherence": float(torch.stack(vs).sum(0).norm() / sum(v.norm() for v in vs))}
                for g, vs in grads.items() if vs}
    return report


def stage_groups(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """Parameters by stage: stem, s1-s4 (without the inserted temporal modules), the temporal modules of each
    stage, the temporal head, the classifier."""
    inserted = {id(p) for m in model.temporal_modules for p in m.parameters()}
    groups: dict[str, list] = {"stem": list(model.backbone.stem.parameters())}
    for s in ("s1", "s2", "s3", "s4"):
        params = list(getattr(model.backbone, s).parameters())
        groups[s] = [p for p in params if id(p) not in inserted]
        groups[f"{s} temporal"] = [p for p in params if id(p) in inserted]
    groups["temporal head"] = list(model.temporal_head.parameters())
    groups["classifier"] = [model.classifier.weight]
    groups["classifier bias"] = [model.classifier.bias]
    return groups


# --------------------------------------------------------------------------------------------------------------
# part: probe


def part_probe(runs: dict[str, Path], clip_len: int = 64) -> dict:
    """Linear probes on a model's features (the pooled feature, stage s3's map), fitted on 8 train videos and
    scored on 4 validation videos of each world: the ball's position (ridge regression, R^2) and whether a frame
    is within one frame of an event (ridge score, ROC AUC). For an untrained model and each run's checkpoint."""
    from pespot.infer import find_checkpoint

    report: dict[str, Any] = {}
    models: dict[str, tuple[Path | None, str]] = {"untrained, rgb": (None, "rgb"),
                                                  "untrained, gray_diff": (None, "gray_diff"),
                                                  **{k: (v, "") for k, v in runs.items()}}
    for label, (run, model_input) in models.items():
        model = build("live", clip_len, find_checkpoint(run) if run is not None else None,
                      model_input=model_input or "rgb")
        for name, world in WORLDS.items():
            feats: dict[str, dict[str, list]] = {"train": {}, "val": {}}
            for split, count in (("train", 8), ("val", 4)):
                for spec in world.plan_dataset("small", 0)[split][:count]:
                    with_ball, _, pixels = render_pair(world, spec)
                    near_event = np.zeros(spec.num_frames)
                    for e in world.simulate_video(spec, "small", render=False).to_video().events:
                        near_event[max(0, e.frame - 1):e.frame + 2] = 1
                    for lo in range(0, spec.num_frames - clip_len + 1, clip_len):
                        outs = stage_outputs(model, with_ball[lo:lo + clip_len], 64)
                        for key in ("pooled", "s3"):
                            f = outs[key].flatten(1).numpy()
                            feats[split].setdefault(key, []).append(
                                (f, pixels[lo:lo + clip_len] / 64, near_event[lo:lo + clip_len]))
            report[f"{label} / {name}"] = {
                key: {"ball_r2": ridge_r2(feats["train"][key], feats["val"][key]),
                      "event_auc": event_auc(feats["train"][key], feats["val"][key])} for key in ("pooled", "s3")}
    return report


def _fit_ridge(x: np.ndarray, y: np.ndarray, xv: np.ndarray, alpha: float) -> np.ndarray:
    """Standardise with the training features, fit ridge regression, predict ``xv``."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, xv = (x - mu) / sd, (xv - mu) / sd
    ym = y.mean(0)
    w = np.linalg.solve(x.T @ x + alpha * len(x) * np.eye(x.shape[1]), x.T @ (y - ym))
    return xv @ w + ym


def ridge_r2(train: list, val: list, alpha: float = 1.0) -> float:
    """R^2 (mean over the two coordinates) on ``val`` of a ridge regression from features to the ball's position,
    on the frames where the ball is in view."""
    def stack(items: list) -> tuple[np.ndarray, np.ndarray]:
        f, t = np.concatenate([i[0] for i in items]), np.concatenate([i[1] for i in items])
        ok = ~np.isnan(t[:, 0]) & (t >= 0).all(1) & (t < 1).all(1)
        return f[ok], t[ok]

    (x, y), (xv, yv) = stack(train), stack(val)
    pred = _fit_ridge(x, y, xv, alpha)
    r2 = 1 - ((pred - yv) ** 2).sum(0) / ((yv - yv.mean(0)) ** 2).sum(0)
    return float(r2.mean())


def event_auc(train: list, val: list, alpha: float = 1.0) -> float:
    """ROC AUC on ``val`` of a ridge score from features to "within one frame of an event"."""
    x, y = np.concatenate([i[0] for i in train]), np.concatenate([i[2] for i in train])
    xv, yv = np.concatenate([i[0] for i in val]), np.concatenate([i[2] for i in val])
    score = _fit_ridge(x, y[:, None], xv, alpha)[:, 0]
    order = np.argsort(score)
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    pos = yv > 0
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


# --------------------------------------------------------------------------------------------------------------
# report


def markdown(report: dict) -> str:
    lines = ["# Small cues: why training stays at the prior (measurements before any fix)", "",
             f"Made by `{report['command']}` ({report['date']}, {report['machine']['cpu']})"
             + "".join(f"; {part}: `{cmd}`" for part, cmd in report.get("part_commands", {}).items()
                       if cmd and cmd != report["command"]) + ".", ""]
    if "cue" in report:
        lines += ["## The ball through the data pipeline", "",
                  ("Contrast = the largest luma difference (0-255) within 2 px of the ball's centre between the "
                  "frame and the same frame rendered without the ball (10th percentile / median / 90th)."), "",
                  "| world | frames | rendered | JPEG store | mp4 store |", "|---|---:|---|---|---|"]
        for name, r in report["cue"].items():
            q = [" / ".join(f"{r[k].get(p, float('nan')):.0f}" for p in ("p10", "median", "p90"))
                 for k in ("contrast_rendered", "contrast_jpg", "contrast_mp4")]
            lines.append(f"| {name} | {r['frames_with_ball']} | {q[0]} | {q[1]} | {q[2]} |")
        lines += ["", ("Share of the ball's contrast kept by each augmentation, drawn as in training (the op "
                      "applied with its drawn strength; `all augmentations` with the training probabilities, "
                      "0.25 each); mixup: the weight of the weaker of the two clips in a mix, Beta(0.1, 0.1) (the ball and the "
                      "targets of that clip are both scaled by it):"), "",
                  "| world | op | mean kept | kept < 1/2 | kept < 1/4 |", "|---|---|---:|---:|---:|"]
        for name, r in report["cue"].items():
            for op, k in r["kept"].items():
                lines.append(f"| {name} | {op} | {k['mean']:.2f} | {100 * k['share_below_half']:.0f} % | "
                             f"{100 * k['share_below_quarter']:.0f} % |")
        lines.append("")
    if "network" in report:
        lines += ["## The ball through the untrained backbone", "",
                  ("||f(frame) - f(frame without the ball)|| / ||f(frame) - f(next frame without the ball)|| per "
                  "stage (median over 64 frames, mean over 3 clips): the ball's effect against what changes "
                  "anyway between frames. 1 = the ball moves the features as much as a frame step does."), "",
                  "| init / world / size / input | " + " | ".join((*STAGES, "pooled")) + " |",
                  "|---|" + "---:|" * (len(STAGES) + 1)]
        for key, r in report["network"].items():
            if key == "batchnorm":
                continue
            lines.append(f"| {key} | " + " | ".join(f"{r.get(s, float('nan')):.3f}" for s in (*STAGES, "pooled"))
                         + " |")
        bn = report["network"]["batchnorm"]
        lines += ["", (f"BatchNorm (first stage, court-top): the spread of batch means is "
                      f"{bn['batch2_spread_over_frame_spread']:.2f} of the spread of single frames at batch 2 "
                      f"x clip {bn['clip_len']}, {bn['batch8_spread_over_frame_spread']:.2f} at batch 8."), ""]
    if "modules" in report:
        lines += ["## The temporal module in every bottleneck, at initialisation", "",
                  ("The ratio of the section above for the recipe's untrained model (live initialisation, grey frame "
                  "and differences, 64 px) with each temporal module in the bottlenecks (the same 3 clips per world); "
                  "and the K = 3 taps θ of ASTRM's global temporal kernel (eq. 4, σ of an FC) at initialisation, "
                  "mean over clips, channels and the 13 blocks: taps far from (0, 1, 0) mean that each block starts by "
                  "adding its two neighbours' features to every frame's."), "",
                  "| module / world | " + " | ".join((*STAGES, "pooled")) + " |", "|---|" + "---:|" * (len(STAGES) + 1)]
        for key, r in report["modules"].items():
            if not key.endswith("/ theta"):
                lines.append(f"| {key} | " + " | ".join(f"{r.get(s, float('nan')):.3f}" for s in (*STAGES, "pooled"))
                             + " |")
        lines.append("")
        for key, r in report["modules"].items():
            if key.endswith("/ theta"):
                taps = ", ".join(f"{t:.2f}" for t in r["mean"])
                lines.append(f"- {key.removesuffix(' / theta')}: θ at initialisation ({taps}), sum {r['sum_mean']:.2f}")
        lines.append("")
    if "spread" in report:
        lines += ["## How far in time one frame's ball reaches", "",
                  ("The ball drawn in one frame only (the middle of a 64-frame clip); the energy of its effect on "
                   "each frame's pooled feature (what the Bi-GRU reads), as shares: on the ball's own frame, within "
                   "1 frame (the grey-difference input itself reaches ±1), beyond 4 frames; mean over 3 clips per "
                   "world. The profile lists the shares at offsets -8 ... +8. Gt's θ: its mean taps over the clips "
                   "without the ball, every channel and block, and the centre tap's share of each kernel (1: the "
                   "identity, 1/3: equal taps)."), "",
                  ("| model / world | own frame | within 1 | beyond 4 | profile -8 ... +8 (%) | Gt's θ (mean taps) | "
                   "θ centre share |"), "|---|---:|---:|---:|---|---|---:|"]
        for key, r in report["spread"].items():
            profile = " ".join(f"{100 * v:.0f}" for v in r["profile"])
            taps = " ".join(f"{t:.2f}" for t in r["theta_mean"]) if "theta_mean" in r else "–"
            centre = f"{r['theta_centre_share']:.2f}" if "theta_centre_share" in r else "–"
            lines.append(f"| {key} | {r['own_frame']:.2f} | {r['within_1']:.2f} | {r['beyond_4']:.2f} | {profile} "
                         f"| {taps} | {centre} |")
        lines.append("")
    if "grads" in report:
        lines += ["## The gradient at initialisation: how much of it points the same way", "",
                  ("Per stage, over 8 training batches of the recipe (2 clips of 64 frames, seed 0) at random "
                  "initialisation: the mean gradient norm and the coherence ||sum g_i|| / sum ||g_i|| (1: every "
                  f"batch pushes the same way; {1 / math.sqrt(8):.2f} for pure noise)."), "",
                  "| world / setting | " + " | ".join(STAGE_COLUMNS) + " |", "|---|" + "---:|" * len(STAGE_COLUMNS)]
        for key, r in report["grads"].items():
            lines.append(f"| {key} | " + " | ".join(
                f"{r[g]['coherence']:.2f} ({r[g]['norm']:.1e})" if g in r else "–" for g in STAGE_COLUMNS) + " |")
        lines += ["", "Cells: coherence (mean norm).", ""]
    if "probe" in report:
        lines += ["## Do the features hold the ball and the events? (linear probes on validation videos)", "",
                  ("Ridge regression on 8 training videos, scored on 4 validation videos: R^2 of the ball's "
                  "position (frames with the ball in view), ROC AUC of \"within one frame of an event\"."), "",
                  ("| model / world | ball R^2, pooled (368) | ball R^2, s3 map | event AUC, pooled | "
                  "event AUC, s3 map |"), "|---|---:|---:|---:|---:|"]
        for key, r in report["probe"].items():
            lines.append(f"| {key} | {r['pooled']['ball_r2']:.3f} | {r['s3']['ball_r2']:.3f} | "
                         f"{r['pooled']['event_auc']:.3f} | {r['s3']['event_auc']:.3f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", nargs="+", default=["cue", "network", "grads", "probe"],
                   choices=["cue", "network", "modules", "spread", "grads", "probe"])
    p.add_argument("--data", nargs="*", default=[], metavar="WORLD=DIR",
                   help="datasets for the grads part (default: generated under --work)")
    p.add_argument("--runs", nargs="*", default=[], metavar="NAME=RUN_DIR", help="trained runs for the probe and spread parts")
    p.add_argument("--batches", type=int, default=8, help="training batches of the grads part")
    p.add_argument("--work", default="runs/small_cues", help="scratch folder (datasets, runs)")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "small_cues"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    out = Path(args.out)
    previous = {}
    if out.with_suffix(".json").is_file():
        import json

        previous = json.loads(out.with_suffix(".json").read_text())
    report: dict[str, Any] = {k: previous[k] for k in ("cue", "network", "modules", "spread", "grads", "probe")
                              if k in previous}
    # each part keeps the command that measured it (a run of some parts leaves the others as they were)
    previous_command = previous.get("command", "")
    previous_parts = (previous_command.split("--parts", 1)[1].split(" --")[0].split() if "--parts" in previous_command
                      else ["cue", "network", "grads", "probe"])
    part_commands = previous.get("part_commands") or {k: previous_command for k in report if k in previous_parts}
    command = "python benchmarks/small_cues.py " + " ".join(argv if argv is not None else sys.argv[1:])
    part_commands.update({part: command for part in args.parts})
    started = time.time()
    if "cue" in args.parts:
        report["cue"] = part_cue(rng)
    if "network" in args.parts:
        report["network"] = part_network()
    if "modules" in args.parts:
        report["modules"] = part_modules()
    runs = {k: Path(v) for k, v in (item.split("=", 1) for item in args.runs)}
    if "spread" in args.parts:
        report["spread"] = part_spread(runs)
    if "grads" in args.parts:
        work = Path(args.work)
        data = dict(item.split("=", 1) for item in args.data)
        for name in WORLDS:
            if name not in data:
                from pespot.data.synthetic import generate

                root = work / f"data-{name}"
                if not (root / "test.json").is_file():
                    generate(root, "small", 0, "jpg", world=name)
                data[name] = str(root)
        report["grads"] = part_grads(args.batches, {k: Path(v) for k, v in data.items()}, work / "grads")
    if "probe" in args.parts:
        report["probe"] = part_probe(runs)
    report.update({"command": command, "part_commands": part_commands,
                   "date": time.strftime("%Y-%m-%d %H:%M"), "seconds": round(time.time() - started),
                   "machine": machine(), "versions": versions()})
    write_results(out, report, markdown)
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
