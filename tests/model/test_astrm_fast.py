"""The fast ASTRM (``astrm_fast``) computes what ASTRM as the paper writes it (``pespot.model.astrm``, the
implementation before the speed work) computes: outputs, input and parameter gradients, BatchNorm running statistics, memory format,
for every part switched on or off, several clips, ties in the channel max, frame blocks of any size, autocast,
and inside the whole paper model. The three hand-written autograd Functions are also checked against numerical
gradients (``gradcheck``, fp64). Tiny tensors throughout."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pespot.config import AstrmConfig, load_config
from pespot.model import astrm_fast, build_model
from pespot.model.astrm import ASTRM, set_reference_implementation, temporal_conv
from pespot.model.astrm_fast import _ChannelPool, _RefineAndConvolve, _TemporalTaps, dynamic_temporal_conv

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


@pytest.fixture(params=[None, 1, 700], ids=["one-block", "frame-blocks", "odd-blocks"])
def blocks(request, monkeypatch):
    """Run a test with the whole tensor as one block, one frame per block, and blocks of a few frames."""
    if request.param is not None:
        monkeypatch.setattr(astrm_fast, "BLOCK_ELEMENTS", request.param)
    return request.param


def pair(channels: int, clip_len: int, cfg: AstrmConfig | None = None, dtype=torch.float64):
    """The same ASTRM twice: fast, and switched to the reference form; BN in train mode, random BN affine."""
    torch.manual_seed(0)
    fast = ASTRM(channels, clip_len, cfg).to(dtype).train()
    with torch.no_grad():  # non-trivial BN affine parameters, so their gradients are not all alike
        for p in fast.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    ref = copy.deepcopy(fast)
    ref.fast = False
    return fast, ref


def run(module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor):
    """Output, input gradient and parameter gradients of one forward/backward pass."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out = module(x)
    out.backward(grad_out)
    return out.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


def assert_same_pass(fast, ref, x, rtol=1e-10, atol=1e-10):
    grad_out = torch.randn_like(x)
    out_f, gx_f, gp_f = run(fast, x, grad_out)
    out_r, gx_r, gp_r = run(ref, x, grad_out)
    torch.testing.assert_close(out_f, out_r, rtol=rtol, atol=atol)
    torch.testing.assert_close(gx_f, gx_r, rtol=rtol, atol=atol)
    assert gp_f.keys() == gp_r.keys()
    for name in gp_r:
        assert gp_r[name] is not None and gp_f[name] is not None, name
        # A parameter gradient is a sum over the whole batch: compare relative to its largest entry.
        scale = gp_r[name].abs().max().clamp_min(1.0)
        torch.testing.assert_close(gp_f[name] / scale, gp_r[name] / scale, rtol=rtol, atol=atol, msg=name)
    for (name, b_f), (_, b_r) in zip(fast.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(b_f, b_r, rtol=rtol, atol=atol, msg=name)  # running stats updated alike
    return out_f


def relu_input(n, c, h, w, dtype=torch.float64, channels_last=True):
    """Post-ReLU features as ASTRM sees them (conv1 -> BN -> ReLU): many exact zeros, so channel-max ties."""
    x = torch.relu(torch.randn(n, c, h, w, dtype=dtype))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ------------------------------------------------------------------------------------------------ whole module


@pytest.mark.parametrize("channels_last", [True, False])
def test_fast_astrm_equals_reference_fp64(blocks, channels_last):
    fast, ref = pair(8, 5)
    x = relu_input(2 * 5, 8, 6, 7, channels_last=channels_last)  # two clips, H != W
    out = assert_same_pass(fast, ref, x)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("cfg", [
    AstrmConfig(use_fs=False), AstrmConfig(use_ft=False), AstrmConfig(use_gt=False),
    AstrmConfig(use_fs=False, use_ft=False), AstrmConfig(use_fs=False, use_gt=False),
    AstrmConfig(use_ft=False, use_gt=False), AstrmConfig(kernel_size=5, gt_activation="softmax"),
    AstrmConfig(fs_bn=True, beta=2, gt_center_init=True),
], ids=["no-fs", "no-ft", "no-gt", "gt-only", "ft-only", "fs-only", "k5-softmax", "fs-bn-beta2-centre"])
def test_fast_astrm_equals_reference_for_every_variant(cfg):
    fast, ref = pair(8, 6, cfg)
    assert_same_pass(fast, ref, relu_input(2 * 6, 8, 5, 5))


def test_kernel_longer_than_the_clip(blocks):
    fast, ref = pair(4, 2, AstrmConfig(kernel_size=5))  # taps +-2 fall outside a 2-frame clip
    assert_same_pass(fast, ref, relu_input(3 * 2, 4, 3, 3))


def test_fast_astrm_fp32_within_fp32_tolerance(blocks):
    fast, ref = pair(24, 16, dtype=torch.float32)
    # fp32: the reference Ft is a Conv3d, the fast one a 1x1 conv to the taps: other summation orders
    assert_same_pass(fast, ref, relu_input(16, 24, 14, 14, dtype=torch.float32), rtol=1e-4, atol=5e-5)


def test_eval_mode_and_inference_mode_match_reference():
    fast, ref = pair(8, 5)
    fast.eval(), ref.eval()
    x = relu_input(2 * 5, 8, 4, 4)
    with torch.inference_mode():
        out_f, out_r = fast(x), ref(x)
    torch.testing.assert_close(out_f, out_r, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), out_r, rtol=1e-12, atol=1e-12)


def test_input_is_not_modified():
    fast, _ = pair(8, 4)
    x = relu_input(4, 8, 3, 3)
    before = x.clone()
    fast(x).sum().backward()
    with torch.inference_mode():
        fast.eval()(x)
    assert torch.equal(x, before)


def test_bf16_autocast_close_to_reference():
    fast, ref = pair(8, 6, dtype=torch.float32)
    x = relu_input(2 * 6, 8, 6, 6, dtype=torch.float32)
    grad_out = torch.randn_like(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_f, gx_f, gp_f = run(fast, x, grad_out)
        out_r, gx_r, gp_r = run(ref, x, grad_out)
    assert out_f.dtype == out_r.dtype and gx_f.dtype == gx_r.dtype == torch.float32
    # bf16 keeps 8 bits: compare relative to the largest value
    assert (out_f.float() - out_r.float()).abs().max() <= 0.05 * out_r.float().abs().max()
    assert (gx_f - gx_r).abs().max() <= 0.05 * gx_r.abs().max()
    for name in gp_r:
        assert (gp_f[name] - gp_r[name]).abs().max() <= 0.05 * gp_r[name].abs().max(), name


# ------------------------------------------------------------------------------------------------ the Functions


def test_refine_and_convolve_gradcheck(blocks):
    torch.manual_seed(1)
    b, t, c, h, w = 2, 4, 3, 2, 3
    x = torch.randn(b, t, c, h, w, dtype=torch.float64, requires_grad=True)
    fs = torch.rand(b, t, 1, h, w, dtype=torch.float64, requires_grad=True)
    ft = torch.rand(b, t, c, h, w, dtype=torch.float64, requires_grad=True)
    theta = torch.rand(b, c, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_RefineAndConvolve.apply, (x, fs, ft, theta))
    assert torch.autograd.gradcheck(_RefineAndConvolve.apply, (x, None, ft, theta))
    assert torch.autograd.gradcheck(_RefineAndConvolve.apply, (x, fs, None, None))


def test_channel_pool_gradcheck_and_ties(blocks):
    torch.manual_seed(2)
    x = torch.randn(3, 5, 2, 4, dtype=torch.float64, requires_grad=True)  # no ties: max is differentiable
    assert torch.autograd.gradcheck(lambda v: _ChannelPool.apply(v, True), (x,))
    # With ties (zeros after ReLU) the max's gradient is shared by the tied entries exactly as amax shares it.
    tied = relu_input(4, 6, 3, 3).requires_grad_()
    pooled, spatial = _ChannelPool.apply(tied, True)
    g_pooled, g_spatial = torch.randn_like(pooled), torch.randn_like(spatial)
    (grad,) = torch.autograd.grad([pooled, spatial], [tied], [g_pooled, g_spatial])
    ref_pooled = torch.cat([tied.mean(1, keepdim=True), tied.amax(1, keepdim=True)], 1)
    ref_spatial = tied.mean(dim=(2, 3))
    (ref_grad,) = torch.autograd.grad([ref_pooled, ref_spatial], [tied], [g_pooled, g_spatial])
    assert (tied == 0).all(dim=1).any()  # the case exists in this input
    torch.testing.assert_close(pooled, ref_pooled, rtol=0, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)
    assert pooled.is_contiguous(memory_format=torch.channels_last)


def test_temporal_taps_equals_conv3d_and_gradcheck():
    torch.manual_seed(3)
    b, t, c, hidden = 2, 5, 4, 3
    x = torch.randn(b * t, c, 2, 3, dtype=torch.float64)
    weight = torch.randn(hidden, c, 3, 1, 1, dtype=torch.float64)
    z = torch.nn.functional.conv2d(x, weight.permute(2, 0, 1, 3, 4).reshape(3 * hidden, c, 1, 1))
    out = _TemporalTaps.apply(z, t)
    x5 = x.view(b, t, c, 2, 3).transpose(1, 2)  # (B, C, T, H, W)
    expected = torch.nn.functional.conv3d(x5, weight, padding=(1, 0, 0))  # (B, hidden, T, H, W)
    expected = expected.transpose(1, 2).reshape(b * t, hidden, 2, 3)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    z = z.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    assert _TemporalTaps.apply(z, t).is_contiguous(memory_format=torch.channels_last)
    assert torch.autograd.gradcheck(lambda v: _TemporalTaps.apply(v, t), (z,))


@pytest.mark.parametrize("k_size", [1, 3, 5])
def test_dynamic_conv_matches_grouped_conv_with_gradients(k_size):
    torch.manual_seed(4)
    y = torch.randn(2, 6, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    theta = torch.rand(2, 5, k_size, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(2, 6, 5, 3, 4, dtype=torch.float64)
    out = dynamic_temporal_conv(y, theta)
    expected = temporal_conv(y, theta)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(out, [y, theta], grad_out)
    expected_grads = torch.autograd.grad(expected, [y, theta], grad_out)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------ whole model


def test_paper_model_fast_equals_reference():
    torch.manual_seed(0)
    cfg = load_config("paper", ["model.pretrained=false", "model.clip_len=8"])
    fast = build_model(cfg, 3, load_weights=False).double().train()
    ref = copy.deepcopy(fast)
    assert set_reference_implementation(ref) == 13  # one ASTRM per bottleneck
    frames = torch.randn(2, 8, 3, 32, 32, dtype=torch.float64)
    results = []
    for model in (fast, ref):
        torch.manual_seed(5)  # the same dropout mask
        logits, proj = model(frames, return_projection=True)
        (logits.square().mean() + proj[:, 0].sum()).backward()
        results.append((logits.detach(), {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-9, atol=1e-9)
    for name, grad in results[1][1].items():
        scale = grad.abs().max().clamp_min(1e-3)
        torch.testing.assert_close(results[0][1][name] / scale, grad / scale, rtol=1e-8, atol=1e-8, msg=name)
    set_reference_implementation(ref, False)
    assert all(m.fast for m in ref.temporal_modules)
