"""SAM / ASAM: one step equals a hand-computed step; exact restore; BatchNorm handling; skip on non-finite."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from pespot.train.sam import SAM, disable_running_stats, enable_running_stats

torch.set_num_threads(1)

X = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.3, -0.7], [-0.2, 0.8, 0.1], [1.0, 1.0, -1.0]])
Y = torch.tensor([[1.0, -1.0], [0.0, 2.0], [0.5, 0.5], [-1.0, 0.0]])


def _model() -> nn.Linear:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.bias.copy_(torch.tensor([0.3, -0.4]))  # non-zero: ASAM never perturbs a zero parameter
    return model


def _loss(model: nn.Module) -> torch.Tensor:
    return ((model(X) - Y) ** 2).mean()


def _grads(model: nn.Module, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gradient of the loss at the given parameter values (functional, model untouched)."""
    values = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    loss = ((torch.func.functional_call(model, values, (X,)) - Y) ** 2).mean()
    loss.backward()
    return {k: v.grad for k, v in values.items()}


def _hand_perturbation(params, grads, rho, scale_of):
    """eps = rho T^2 g / ||T g|| with explicit per-parameter T (identity when scale_of returns None)."""
    total = 0.0
    for k, g in grads.items():
        t = scale_of(k, params[k])
        total += float(((g if t is None else t * g) ** 2).sum())
    norm = math.sqrt(total)
    out = {}
    for k, g in grads.items():
        t = scale_of(k, params[k])
        out[k] = rho * (g if t is None else t * t * g) / (norm + 1e-12)
    return out


def _sam_step(model: nn.Module, sam: SAM) -> None:
    _loss(model).backward()
    sam.first_step()
    _loss(model).backward()
    sam.second_step()


ASAM_DAVDA = lambda k, p: p.abs()
ASAM_OFFICIAL = lambda k, p: p.abs() + 0.01 if "weight" in k else None
PLAIN_SAM = lambda k, p: None


@pytest.mark.parametrize(
    "kwargs,scale_of",
    [
        ({"adaptive": True}, ASAM_DAVDA),
        ({"adaptive": True, "eta": 0.01, "weights_only": True}, ASAM_OFFICIAL),
        ({"adaptive": False}, PLAIN_SAM),
    ],
    ids=["asam", "asam_official", "sam"],
)
def test_step_with_sgd_equals_hand_computation(kwargs, scale_of):
    model, lr, rho = _model(), 0.1, 0.5
    w0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    g1 = _grads(model, w0)
    eps = _hand_perturbation(w0, g1, rho, scale_of)
    g2 = _grads(model, {k: w0[k] + eps[k] for k in w0})
    expected = {k: w0[k] - lr * g2[k] for k in w0}

    sam = SAM(model.named_parameters(), torch.optim.SGD(model.parameters(), lr=lr), rho=rho, **kwargs)
    _sam_step(model, sam)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[k], rtol=1e-6, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())


def test_asam_with_adamw_equals_hand_computation():
    model, lr, wd, rho = _model(), 1e-2, 0.01, 2.0
    w0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    g1 = _grads(model, w0)
    eps = _hand_perturbation(w0, g1, rho, ASAM_DAVDA)
    g2 = _grads(model, {k: w0[k] + eps[k] for k in w0})
    # AdamW, first step: bias-corrected m = g, v = g^2; decoupled decay applied to the restored weights
    expected = {k: w0[k] * (1 - lr * wd) - lr * g2[k] / (g2[k].abs() + 1e-8) for k in w0}

    base = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    _sam_step(model, SAM(model.named_parameters(), base, rho=rho))
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[k], rtol=1e-5, atol=1e-6)


def test_rho_zero_equals_plain_optimiser_step():
    a, b = _model(), _model()
    sam = SAM(a.named_parameters(), torch.optim.AdamW(a.parameters(), lr=1e-2), rho=0.0)
    plain = torch.optim.AdamW(b.parameters(), lr=1e-2)
    for _ in range(3):
        _sam_step(a, sam)
        plain.zero_grad()
        _loss(b).backward()
        plain.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


class _RecordingSGD(torch.optim.SGD):
    """SGD that records the parameter values it sees when it steps."""

    def step(self, closure=None):
        self.seen = [p.detach().clone() for g in self.param_groups for p in g["params"]]
        return super().step(closure)


def test_weights_restored_exactly_before_the_base_step():
    model = _model()
    w0 = [p.detach().clone() for p in model.parameters()]
    base = _RecordingSGD(model.parameters(), lr=0.1)
    sam = SAM(model.named_parameters(), base, rho=2.0)
    _loss(model).backward()
    sam.first_step()
    assert not all(torch.equal(p, w) for p, w in zip(model.parameters(), w0))  # perturbed
    _loss(model).backward()
    sam.second_step()
    assert all(torch.equal(s, w) for s, w in zip(base.seen, w0))  # bit-exact, not w + eps - eps


def test_bias_zero_is_not_perturbed_by_asam_but_is_by_sam():
    for adaptive, moved in ((True, False), (False, True)):
        model = _model()
        with torch.no_grad():
            model.bias.zero_()
        sam = SAM(model.named_parameters(), torch.optim.SGD(model.parameters(), lr=0.1), rho=1.0, adaptive=adaptive)
        _loss(model).backward()
        sam.first_step()
        assert bool(model.bias.detach().abs().sum() > 0) == moved


def test_non_finite_gradient_skips_without_perturbing():
    model = _model()
    w0 = [p.detach().clone() for p in model.parameters()]
    base = torch.optim.AdamW(model.parameters(), lr=0.1)
    sam = SAM(model.named_parameters(), base, rho=2.0)
    _loss(model).backward()
    model.weight.grad[0, 0] = float("inf")
    norm = sam.first_step()
    assert not torch.isfinite(norm)
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), w0))
    assert all(p.grad is None for p in model.parameters())
    assert sam.second_step() is False  # no base step, no optimiser state created
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), w0)) and base.state_dict()["state"] == {}
    # a NaN in the second pass also skips the base step (weights restored)
    _loss(model).backward()
    sam.first_step()
    _loss(model).backward()
    model.bias.grad[0] = float("nan")
    assert sam.second_step() is False
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), w0))


def test_state_dict_delegates_and_resume_is_exact():
    a = _model()
    sam_a = SAM(a.named_parameters(), torch.optim.AdamW(a.parameters(), lr=1e-2), rho=2.0)
    for _ in range(2):
        _sam_step(a, sam_a)
    assert sam_a.state_dict()["state"].keys() == sam_a.base_optimizer.state_dict()["state"].keys()
    assert sam_a.param_groups is sam_a.base_optimizer.param_groups
    b = _model()
    b.load_state_dict(a.state_dict())
    sam_b = SAM(b.named_parameters(), torch.optim.AdamW(b.parameters(), lr=1e-2), rho=2.0)
    # deepcopy stands in for torch.save/load: load_state_dict would otherwise share a's moment tensors
    sam_b.load_state_dict(copy.deepcopy(sam_a.state_dict()))
    for _ in range(2):
        _sam_step(a, sam_a)
        _sam_step(b, sam_b)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_weights_only_needs_names():
    model = _model()
    with pytest.raises(ValueError, match="named_parameters"):
        SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), weights_only=True)
    sam = SAM(None, torch.optim.SGD(model.parameters(), lr=0.1))  # all params of the base optimiser
    assert len(sam.params) == 2


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_running_stats_change_only_in_first_pass(momentum):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=momentum), nn.Linear(4, 2))
    bn3d = nn.BatchNorm3d(2, momentum=momentum)
    sam = SAM(model.named_parameters(), torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5)
    bn = model[1]
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    state0 = {k: getattr(bn, k).clone() for k in buffers}

    enable_running_stats(model)
    _loss(model).backward()
    state1 = {k: getattr(bn, k).clone() for k in buffers}
    assert not torch.equal(state1["running_mean"], state0["running_mean"])  # first pass updates
    assert int(state1["num_batches_tracked"]) == 1
    sam.first_step()
    disable_running_stats(model)
    disable_running_stats(model)  # idempotent
    batch_out = model(X)
    _loss(model).backward()
    for k in buffers:
        assert torch.equal(getattr(bn, k), state1[k]), k  # second pass: nothing changes, counter included
    # batch statistics still normalise in the second pass
    h = model[0](X)
    torch.testing.assert_close(model[2]((h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bn.eps)
                                        * bn.weight + bn.bias), batch_out)
    sam.second_step()
    enable_running_stats(model)
    assert bn.momentum == momentum and bn.track_running_stats
    _loss(model).backward()
    assert int(bn.num_batches_tracked) == 2

    # BatchNorm3d (ASTRM's Ft) is covered too
    holder = nn.Sequential(bn3d)
    before = bn3d.running_var.clone()
    disable_running_stats(holder)
    holder(torch.randn(2, 2, 3, 4, 4))
    assert torch.equal(bn3d.running_var, before)
    enable_running_stats(holder)
    holder(torch.randn(2, 2, 3, 4, 4))
    assert not torch.equal(bn3d.running_var, before)


def test_works_under_bf16_autocast():
    model, lr, rho = _model(), 0.1, 2.0

    def loss_bf16(m: nn.Module) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return ((m(X).float() - Y) ** 2).mean()

    # hand computation with the same bf16 forward passes
    ref = _model()
    w0 = {k: v.detach().clone() for k, v in ref.named_parameters()}
    loss_bf16(ref).backward()
    g1 = {k: p.grad.clone() for k, p in ref.named_parameters()}
    eps = _hand_perturbation(w0, g1, rho, ASAM_DAVDA)
    with torch.no_grad():
        for k, p in ref.named_parameters():
            p.add_(eps[k])
            p.grad = None
    loss_bf16(ref).backward()
    expected = {k: w0[k] - lr * p.grad for k, p in ref.named_parameters()}

    sam = SAM(model.named_parameters(), torch.optim.SGD(model.parameters(), lr=lr), rho=rho)
    loss_bf16(model).backward()
    norm = sam.first_step()
    assert norm.dtype == torch.float32 and torch.isfinite(norm)
    loss_bf16(model).backward()
    assert sam.second_step()
    for k, p in model.named_parameters():
        assert p.dtype == torch.float32
        torch.testing.assert_close(p.detach(), expected[k], rtol=1e-5, atol=1e-6)


def test_misuse_is_reported():
    model = _model()
    sam = SAM(model.named_parameters(), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(RuntimeError):
        sam.second_step()
    _loss(model).backward()
    sam.first_step()
    with pytest.raises(RuntimeError):
        sam.first_step()
