"""LR schedules: warm-up then cosine by hand, E2E-Spot's chained form, exact state_dict resume."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math

import pytest
import torch
from torch.optim.lr_scheduler import ChainedScheduler, CosineAnnealingLR, LinearLR

from pespot.config import OptimConfig
from pespot.errors import ConfigError
from pespot.train.sam import SAM
from pespot.train.schedule import build_scheduler

LR = 1e-3


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=LR)


def _lrs(optimizer, scheduler, steps: int) -> list[float]:
    """The lr used by each of ``steps`` optimiser steps (scheduler stepped after each)."""
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_warmup_is_linear_then_cosine_to_min():
    cfg = OptimConfig(lr=LR, warmup_epochs=2, warmup_start_factor=0.01, min_lr_factor=0.05)
    spe, epochs = 5, 6  # 10 warm-up steps, 20 cosine steps
    opt = _optimizer()
    sched = build_scheduler(opt, cfg, spe, epochs)
    got = _lrs(opt, sched, spe * epochs) + [opt.param_groups[0]["lr"]]
    for s in range(10):  # linear from 0.01 lr at step 0 towards lr at step 10
        assert got[s] == pytest.approx(LR * (0.01 + 0.99 * s / 10), rel=1e-9)
    for s in range(10, 31):
        expected = LR * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (s - 10) / 20)))
        assert got[s] == pytest.approx(expected, rel=1e-9)
    assert got[10] == pytest.approx(LR)  # peak right after the warm-up
    assert got[30] == pytest.approx(0.05 * LR)  # minimum once the last step is done
    assert all(a > b for a, b in itertools.pairwise(got[10:]))  # strictly decreasing, no overlap with warm-up


def test_scheduler_attaches_to_sam_base_optimizer():
    base = _optimizer()
    sam = SAM(None, base)
    sched = build_scheduler(sam, OptimConfig(lr=LR), 4, 5)
    assert sched.optimizer is base
    assert sam.param_groups[0]["lr"] == pytest.approx(0.01 * LR)


def test_e2e_chained_reproduces_torch_chained_scheduler():
    spe, epochs = 7, 8
    cfg = OptimConfig(lr=LR, scheduler="e2e_chained", warmup_epochs=3)
    opt = _optimizer()
    got = _lrs(opt, build_scheduler(opt, cfg, spe, epochs), spe * epochs)
    # E2E-Spot's own construction
    ref_opt = _optimizer()
    ref = ChainedScheduler([
        LinearLR(ref_opt, start_factor=0.01, end_factor=1.0, total_iters=3 * spe),
        CosineAnnealingLR(ref_opt, spe * (epochs - 3)),
    ])
    assert got == pytest.approx(_lrs(ref_opt, ref, spe * epochs), rel=1e-12)
    # the documented quirk: overlapping, minimum at (E - 3) * S, then it rises again
    t_max = spe * (epochs - 3)
    assert got[0] == pytest.approx(0.01 * LR)
    assert got[3 * spe] < LR  # the cosine has already decayed during the warm-up
    assert min(got) == pytest.approx(got[t_max], abs=1e-15) and got[-1] > got[t_max]


@pytest.mark.parametrize("name", ["warmup_cosine", "e2e_chained"])
def test_state_dict_round_trip_continues_identically(name):
    cfg = OptimConfig(lr=LR, scheduler=name, warmup_epochs=1.5, min_lr_factor=0.0)
    spe, epochs, split = 4, 6, 9
    opt = _optimizer()
    sched = build_scheduler(opt, cfg, spe, epochs)
    _lrs(opt, sched, split)
    saved_opt, saved_sched = copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict())
    rest = _lrs(opt, sched, spe * epochs - split)

    opt2 = _optimizer()
    sched2 = build_scheduler(opt2, cfg, spe, epochs)  # fresh objects, as on resume
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    assert _lrs(opt2, sched2, spe * epochs - split) == rest


def test_bad_schedule_settings_are_config_errors():
    with pytest.raises(ConfigError, match="train.epochs"):
        build_scheduler(_optimizer(), OptimConfig(scheduler="e2e_chained", warmup_epochs=3), 5, 3)
    with pytest.raises(ConfigError, match="optim.scheduler"):
        build_scheduler(_optimizer(), dataclasses.replace(OptimConfig(), scheduler="step"), 5, 3)
    with pytest.raises(ConfigError):
        build_scheduler(_optimizer(), OptimConfig(), 0, 3)


# ------------------------------------------------------------------------------------------ optim.gt_lr_scale


def _gt_model() -> torch.nn.Module:
    """Two ASTRM blocks (their Gt modules named ``*.gt.*``) and a classifier, on CPU."""
    from pespot.config import AstrmConfig
    from pespot.model.astrm import ASTRM

    return torch.nn.ModuleDict({"b1": ASTRM(4, 5, AstrmConfig()), "b2": ASTRM(4, 5, AstrmConfig()),
                                "classifier": torch.nn.Linear(4, 3)})


def test_gt_lr_scale_puts_gt_in_its_own_group_that_follows_the_schedule():
    from pespot.train.job import build_adamw

    model = _gt_model()
    gt_names = {n for n, _ in model.named_parameters() if ".gt." in n}
    assert len(gt_names) == 8  # fc1, bn weight and bias, fc2 of each block
    cfg = OptimConfig(lr=LR, gt_lr_scale=0.1, warmup_epochs=1)
    opt = build_adamw(model, cfg)
    rest, gt = opt.param_groups
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert {by_id[id(p)] for p in gt["params"]} == gt_names
    assert {by_id[id(p)] for p in rest["params"]} == set(by_id.values()) - gt_names
    sched = build_scheduler(opt, cfg, 4, 3)
    for _ in range(7):  # through warm-up into the cosine: the ratio holds at every step
        assert gt["lr"] == pytest.approx(0.1 * rest["lr"], rel=1e-9) and rest["lr"] > 0
        opt.step()
        sched.step()
    # A step moves Gt's weights about a tenth as far as the others under AdamW (equal, unit-size gradients).
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}
    assert max(moved[n] for n in gt_names) < 0.2 * min(v for n, v in moved.items() if n not in gt_names)


def test_gt_lr_scale_one_is_a_single_group_and_negative_is_refused():
    from pespot.train.job import build_adamw

    model = _gt_model()
    opt = build_adamw(model, OptimConfig(lr=LR))
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == len(list(model.parameters()))
    # A model without ASTRM's Gt keeps one group whatever the scale.
    assert len(build_adamw(torch.nn.Linear(3, 2), OptimConfig(lr=LR, gt_lr_scale=0.1)).param_groups) == 1
    with pytest.raises(ConfigError, match=r"optim\.gt_lr_scale"):
        build_adamw(model, OptimConfig(lr=LR, gt_lr_scale=-1.0))


def test_resume_refuses_another_gt_lr_scale():
    from pespot.config import config_differences, load_config
    from pespot.train.checkpoint import RESUME_KEYS

    run = load_config("synthetic")
    now = load_config("synthetic", ["optim.gt_lr_scale=1.0"])
    assert config_differences(run, now, RESUME_KEYS) == [("optim.gt_lr_scale", 0.1, 1.0)]
