"""Random initialisation for training from scratch (issue 11): live residual branches, so every inserted temporal
module learns from step 1; the classifier bias at the class prior; SAM/ASAM's rho per method."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pespot.config import load_config
from pespot.data.clips import ClipDataset, frame_prior
from pespot.data.labels import Event, Video
from pespot.errors import ConfigError, PespotError
from pespot.model import build_model
from pespot.train.losses import build_loss
from pespot.train.sam import build_sam, resolve_rho

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


def first_step_gradients(preset: str, *overrides: str) -> dict[str, torch.Tensor]:
    """Gradients of the inserted temporal modules after one forward/backward of a fresh model on random clips."""
    torch.manual_seed(0)
    cfg = load_config(preset, ["model.pretrained=false", "model.clip_len=8", *overrides])
    model = build_model(cfg, 3).train()
    loss_fn = build_loss(cfg.loss, 3)
    frames = torch.randn(2, 8, 3, 32, 32)
    targets = torch.zeros(2, 8, 4)
    targets[..., 0] = 1
    targets[:, 3, 0], targets[:, 3, 2] = 0, 1
    logits = model(frames)
    loss_fn.classification_loss(logits, targets).backward()
    return {f"{i}.{name}": p.grad for i, module in enumerate(model.temporal_modules)
            for name, p in module.named_parameters()}


def dead(grads: dict[str, torch.Tensor]) -> list[str]:
    return [name for name, g in grads.items() if g is None or not bool(g.abs().sum() > 0)]


def test_every_astrm_parameter_gets_a_gradient_at_step_one():
    grads = first_step_gradients("paper")
    assert len(grads) == 13 * 9  # Fs conv; Ft conv, BN (2), conv; Gt fc, BN (2), fc
    assert not dead(grads), f"zero gradient at step 1: {dead(grads)[:5]}"


def test_gsm_gets_gradients_at_step_one_except_behind_its_zero_gate():
    # E2E-Spot initialises GSM's gate conv to 0 (identity at init): the gate conv gets a gradient at step 1, the
    # BatchNorm in front of it only once the conv is non-zero, i.e. from step 2.
    grads = first_step_gradients("e2e-spot")
    assert len(grads) == 13 * 4
    assert dead(grads) == [f"{i}.{name}" for i in range(13) for name in ("bn.weight", "bn.bias")]
    assert not dead({k: v for k, v in grads.items() if ".gate." in k})


def test_zero_residual_init_is_timms_and_leaves_the_modules_without_gradient():
    # The defect this key fixes, kept as a switch: gamma = 0 after conv3 cuts every residual branch.
    grads = first_step_gradients("paper", "model.residual_init=zero")
    assert all(g is None or float(g.abs().sum()) == 0.0 for g in grads.values())
    model = build_model(load_config("paper", ["model.pretrained=false", "model.residual_init=zero"]), 3)
    assert float(model.backbone.s4.b7.conv3.bn.weight.detach().abs().sum()) == 0.0
    live = build_model(load_config("paper", ["model.pretrained=false"]), 3)
    assert torch.equal(live.backbone.s4.b7.conv3.bn.weight, torch.ones(368))


def test_unknown_residual_init_is_a_config_error():
    with pytest.raises(ConfigError, match="model.residual_init"):
        load_config("paper", ["model.residual_init=half"])


def test_frame_prior_counts_frames_per_output_with_dilation():
    videos = [Video("a", 10, 25.0, [Event(2, "x"), Event(5, "y"), Event(5, "x")]), Video("b", 10, 25.0, [])]
    prior = frame_prior(videos, ["x", "y"])
    assert np.allclose(prior, [18 / 20, 2 / 20, 1 / 20])  # frame 5 carries x and y
    dilated = frame_prior(videos, ["x", "y"], dilate_len=1)
    assert np.allclose(dilated, [(20 - 6) / 20, 6 / 20, 3 / 20])  # x: frames 1-6, y: 4-6 of video a
    # an event on the last frame does not dilate past the video
    assert np.allclose(frame_prior([Video("c", 4, 25.0, [Event(3, "x")])], ["x"], dilate_len=2)[1], 3 / 4)  # 1-3


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_prior_bias_gives_the_prior_as_initial_scores(activation):
    torch.manual_seed(0)
    cfg = load_config("paper", ["model.pretrained=false", "model.clip_len=4"])
    model = build_model(cfg, 3).eval()
    prior = [0.9, 0.05, 0.04, 0.01]
    model.init_prior_bias(prior, activation)
    with torch.no_grad():
        model.classifier.weight.zero_()  # the scores are then the bias alone
        logits = model(torch.randn(1, 4, 3, 32, 32))
    scores = torch.sigmoid(logits) if activation == "sigmoid" else torch.softmax(logits, dim=-1)
    assert torch.allclose(scores[0, 0].double(), torch.tensor(prior, dtype=torch.float64), atol=1e-6)
    expected_bias = math.log(0.01 / 0.99) if activation == "sigmoid" else math.log(0.01)
    assert model.classifier.bias[3].item() == pytest.approx(expected_bias, rel=1e-6)


def test_prior_bias_clips_an_absent_class_and_checks_the_size():
    model = build_model(load_config("paper", ["model.pretrained=false", "model.clip_len=4"]), 2)
    model.init_prior_bias([1.0, 0.0, 0.0], "sigmoid")
    assert torch.isfinite(model.classifier.bias).all()
    with pytest.raises(PespotError, match="expected 3 values"):
        model.init_prior_bias([0.5, 0.5], "sigmoid")
    with pytest.raises(PespotError, match="sigmoid or softmax"):
        model.init_prior_bias([0.8, 0.1, 0.1], "tanh")


def test_training_starts_from_the_prior_bias(tiny_dataset, tmp_path):
    from pespot.train.checkpoint import load_resume_checkpoint
    from pespot.train.trainer import train

    cfg = load_config("synthetic", [f"data.root={tiny_dataset}", f"out={tmp_path / 'run'}", "model.clip_len=8",
                                    "data.height=32", "train.epochs=1", "train.clips_per_epoch=2",
                                    "train.batch_size=2", "train.val_clips=0", "train.criterion=loss",
                                    "train.val_clips=2", "data.num_workers=0", "optim.lr=0",
                                    "optim.sam=none", "loss.contrastive=none", "data.mixup=false"])
    train(cfg, progress=False)
    ckpt = load_resume_checkpoint(tmp_path / "run", cfg)
    from pespot.data.labels import load_dataset

    ds = load_dataset(tiny_dataset)
    prior = torch.tensor(frame_prior(ds.splits["train"], ds.classes, cfg.data.dilate_len), dtype=torch.float64)
    bias = ckpt["model"]["classifier.bias"].double()
    # lr 0: AdamW's weight decay is lr * wd = 0 too, so the bias is exactly the initial one
    assert torch.allclose(torch.sigmoid(bias), prior.clamp(1e-6, 1 - 1e-6), atol=1e-5)


def test_rho_per_method():
    assert resolve_rho("asam", None) == 2.0 and resolve_rho("sam", None) == 0.05
    assert resolve_rho("sam", 0.1) == 0.1
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    for preset, overrides, rho in [("paper", [], 2.0), ("paper", ["optim.sam=sam"], 0.05),
                                   ("paper", ["optim.sam=sam", "optim.rho=0.2"], 0.2)]:
        sam = build_sam(model, opt, load_config(preset, overrides).optim)
        assert sam.rho == rho
    assert build_sam(model, opt, load_config("e2e-spot").optim) is None
    # the SAM ablation preset uses SAM's own scale, never ASAM's 2
    assert build_sam(model, opt, load_config("ablations/modules_astrm_sam").optim).rho == 0.05
    with pytest.raises(ConfigError, match="optim.rho"):
        load_config("paper", ["optim.rho=-1"])


def test_fg_upsample_places_clips_around_events():
    videos = [Video(f"v{i}", 400, 25.0, [Event(200, "x")] if i == 0 else []) for i in range(10)]
    kwargs = {"classes": ["x"], "frames_root": "unused", "clip_len": 16, "num_clips": 200, "pad_len": 5}
    plain = ClipDataset(videos, **kwargs)
    upsampled = ClipDataset(videos, fg_upsample=1.0, **kwargs)

    def holds_event(ds, i):
        vi, start = ds.sample_position(np.random.default_rng([0, 0, i]))
        return vi == 0 and start <= 200 < start + 16

    assert all(holds_event(upsampled, i) for i in range(200))
    assert sum(holds_event(plain, i) for i in range(200)) < 20
    half = ClipDataset(videos, fg_upsample=0.5, **kwargs)
    assert 60 < sum(holds_event(half, i) for i in range(200)) < 140
    # a clip stays inside the padded range even for an event at the very start
    edge = ClipDataset([Video("e", 50, 25.0, [Event(0, "x")])], fg_upsample=1.0, **kwargs)
    starts = {edge.sample_position(np.random.default_rng(i))[1] for i in range(50)}
    assert min(starts) >= -5 and max(starts) <= 0
    with pytest.raises(ConfigError, match="fg_upsample"):
        ClipDataset(videos, fg_upsample=1.5, **kwargs)
