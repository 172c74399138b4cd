"""The fast form of ASTRM (``pespot.model.astrm``) for training on a CPU: the same function, less memory traffic.

Apart from Ft's two 1x1 convs, ASTRM is memory traffic: at stage s1 a full-size tensor is (B*T, 24, H/2, W/2), and
on the CPU every fresh tensor of that size costs about as much as a pass over it (large blocks go back to the OS
when freed and are page-faulted in again). So the element-wise parts are three autograd Functions with hand-written
backward passes that allocate little beyond what they return and make their other temporaries per block of frames
(``BLOCK_ELEMENTS``):

- ``_ChannelPool``: Fs's channel mean and max, and Gt's spatial mean, with one backward pass for all three (the
  max's gradient is shared by tied maxima exactly as ``amax``'s is: after the ReLU ties at 0 are common);
- ``_TemporalTaps``: the sum over the three taps of Ft's (3,1,1) conv, computed as one 1x1 conv to 3*C/beta
  channels whose tap outputs are added with a one-frame shift (the Conv3d with zero padding (1, 0, 0));
- ``_RefineAndConvolve``: y = x (1 + Fs) (1 + Ft), then the K-tap conv with Gt's kernels as K shifted
  multiply-adds; the backward recomputes y block by block instead of keeping it.

Everything is computed in the frame-batched layout (B*T, C, H, W): the temporal parts read a frame's neighbours
through the (B, T, C, H, W) view, so the C-channel tensors are never transposed or copied, and the output keeps
the input's memory format. ``forward(astrm, x)`` is what ``ASTRM.forward`` runs unless ``ASTRM.fast`` is off;
tests/model/test_astrm_fast.py holds the two forms equal (outputs and gradients).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.autograd import Function
from torch.autograd.function import once_differentiable

if TYPE_CHECKING:
    from pespot.model.astrm import ASTRM

# On the CPU the backward passes make their temporaries per block of frames of about this many elements (4 MB in
# fp32): a block stays in cache and its buffer is reused, instead of a full-size buffer being page-faulted in.
BLOCK_ELEMENTS = 1 << 20


def _frame_blocks(num_frames: int, frame_elements: int, device: torch.device) -> list[tuple[int, int]]:
    """[start, stop) blocks of frames of about ``BLOCK_ELEMENTS``; a single block off the CPU, where a few large
    kernels are better than many small ones."""
    if device.type != "cpu":
        return [(0, num_frames)]
    step = max(1, BLOCK_ELEMENTS // max(1, frame_elements))
    return [(start, min(num_frames, start + step)) for start in range(0, num_frames, step)]


def _add_shifted_taps(out: torch.Tensor, src: torch.Tensor, taps: torch.Tensor, transpose: bool = False
                      ) -> torch.Tensor:
    """In place: ``out[:, t] += taps[..., k] * src[:, t + (k - K//2)]`` for every tap but the centre one, zero
    outside the clip. ``out``, ``src``: (B, T, C, H, W); ``taps``: (B, 1, C, K, 1, 1).

    ``transpose=True`` reads ``src[:, t - (k - K//2)]`` instead: the transposed operator, i.e. the gradient of the
    correlation with respect to its input.
    """
    length = src.shape[1]
    half = taps.shape[3] // 2
    for k in range(taps.shape[3]):
        offset = (half - k) if transpose else (k - half)
        if offset == 0 or abs(offset) >= length:
            continue
        if offset > 0:  # frame t takes src[t + offset]
            out[:, : length - offset].addcmul_(src[:, offset:], taps[:, :, :, k])
        else:
            out[:, -offset:].addcmul_(src[:, : length + offset], taps[:, :, :, k])
    return out


def _refine(x: torch.Tensor, fs: torch.Tensor | None, ft: torch.Tensor | None) -> torch.Tensor:
    """y = x * (1 + fs) * (1 + ft) on (B, T, C, H, W) views (fs has one channel); ``x`` itself when both are None.

    The second product is y + y * ft (``addcmul``), which needs no (1 + ft) temporary.
    """
    y = x if fs is None else x * (1 + fs)  # (1 + fs) is one small map per frame
    if ft is not None:
        y = torch.addcmul(y, y, ft) if y is x else y.addcmul_(y, ft)
    return y


class _RefineAndConvolve(Function):
    """out = (x * (1 + fs) * (1 + ft)) conv_t theta on (B, T, C, H, W) views; fs (B, T, 1, H, W), ft and theta
    (B, C, K) may each be None. The output has x's memory layout. When no input needs a gradient (inference),
    ft's buffer is overwritten (ASTRM passes its own temporary)."""

    @staticmethod
    def forward(ctx, x, fs, ft, theta):  # see the class docstring
        if ft is not None and theta is not None and not any(ctx.needs_input_grad):
            # Inference: ft is ASTRM's own temporary, so y = (1 + ft) x (1 + fs) can take its buffer.
            y = ft.add_(1).mul_(x)
            if fs is not None:
                y.mul_(1 + fs)
        else:
            y = _refine(x, fs, ft)
        ctx.save_for_backward(x, fs, ft, theta)
        if theta is None:
            return y.clone() if y is x else y
        taps = theta.to(y.dtype)[:, None, :, :, None, None]  # (B, 1, C, K, 1, 1)
        out = y * taps[:, :, :, theta.shape[-1] // 2]
        return _add_shifted_taps(out, y, taps)

    @staticmethod
    @once_differentiable  # the hand-written backward is not itself differentiable
    def backward(ctx, grad_out):
        x, fs, ft, theta = ctx.saved_tensors
        need_x, need_fs, need_ft, need_theta = ctx.needs_input_grad
        grad_fs = grad_ft = grad_theta = None
        if theta is None:
            grad_y, own = grad_out, False
        else:
            taps = theta.to(grad_out.dtype)[:, None, :, :, None, None]
            centre = grad_out * taps[:, :, :, theta.shape[-1] // 2]
            grad_y = _add_shifted_taps(centre, grad_out, taps, transpose=True)  # the transposed correlation
            own = True  # grad_y is ours: it may be updated in place below
            if need_theta:
                grad_theta = _tap_correlations(grad_out, x, fs, ft, theta.shape[-1]).to(theta.dtype)
        if ft is not None and need_ft:
            grad_ft = grad_y * x if fs is None else (grad_y * x).mul_(1 + fs)  # dL/dft = g_y * x * (1 + fs)
        if ft is not None:  # u = g_y * (1 + ft)
            grad_y = grad_y.addcmul_(grad_y, ft) if own else torch.addcmul(grad_y, grad_y, ft)
            own = True
        if fs is not None and need_fs:
            grad_fs = _channel_dot(grad_y, x)  # dL/dfs = sum_c u * x
        grad_x = None
        if need_x:
            if fs is None:
                grad_x = grad_y
            else:
                grad_x = grad_y.mul_(1 + fs) if own else grad_y * (1 + fs)
            grad_x = grad_x.to(x.dtype)
        return grad_x, grad_fs, grad_ft, grad_theta


def _tap_correlations(grad_out: torch.Tensor, x: torch.Tensor, fs: torch.Tensor | None, ft: torch.Tensor | None,
                      kernel_size: int) -> torch.Tensor:
    """The kernel's gradient: ``sum_{t,h,w} grad_out[:, t] * y[:, t + k - K//2]`` per (clip, channel, tap),
    summed in fp32 at least, with y = x (1 + fs) (1 + ft) recomputed block by block (with the K//2 neighbouring
    frames). Returns (B, C, K)."""
    batch, length, channels = x.shape[:3]
    half = kernel_size // 2
    acc_dtype = torch.promote_types(grad_out.dtype, torch.float32)  # bf16 products are summed in fp32
    result = torch.zeros(batch, channels, kernel_size, dtype=acc_dtype, device=x.device)
    for start, stop in _frame_blocks(length, x[:, 0].numel(), x.device):
        lo, hi = max(0, start - half), min(length, stop + half)
        y = _refine(x[:, lo:hi], None if fs is None else fs[:, lo:hi], None if ft is None else ft[:, lo:hi])
        for k in range(kernel_size):
            offset = k - half
            first, last = max(start, -offset), min(stop, length - offset)  # frames t whose t + offset is inside
            if first >= last:
                continue
            prod = grad_out[:, first:last] * y[:, first + offset - lo : last + offset - lo]
            result[:, :, k] += prod.sum(dim=(1, 3, 4), dtype=acc_dtype)
    return result


def _channel_dot(u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum_c u * x`` for (B, T, C, H, W) views, block by block -> (B, T, 1, H, W)."""
    length = x.shape[1]
    out = torch.empty(x.shape[0], length, 1, *x.shape[3:], dtype=u.dtype, device=x.device)
    for start, stop in _frame_blocks(length, x[:, 0].numel(), x.device):
        out[:, start:stop] = (u[:, start:stop] * x[:, start:stop]).sum(dim=2, keepdim=True)
    return out


class _ChannelPool(Function):
    """x (N, C, H, W) -> Fs's input [mean_c(x); max_c(x)] (N, 2, H, W), channels_last, and Gt's input
    mean_{H,W}(x) (N, C) (an empty tensor when ``with_spatial`` is False)."""

    @staticmethod
    def forward(ctx, x, with_spatial):  # see the class docstring
        peak = x.amax(dim=1)  # (N, H, W)
        ctx.save_for_backward(x, peak)
        ctx.set_materialize_grads(False)
        # (N, H, W, 2) permuted to (N, 2, H, W): channels_last, which the 7x7 conv runs much faster on the CPU
        pooled = torch.stack([x.mean(dim=1), peak], dim=-1).permute(0, 3, 1, 2)
        spatial = x.mean(dim=(2, 3)) if with_spatial else x.new_empty(0)
        return pooled, spatial

    @staticmethod
    @once_differentiable  # the hand-written backward is not itself differentiable
    def backward(ctx, grad_pooled, grad_spatial):
        x, peak = ctx.saved_tensors
        n, c, h, w = x.shape
        grad = torch.zeros_like(x) if grad_pooled is None else torch.empty_like(x)
        if grad_pooled is not None:
            grad_mean = (grad_pooled[:, 0:1] / c).to(x.dtype)  # d mean_c / dx = 1/C
            grad_peak = grad_pooled[:, 1:2].to(x.dtype)
            for start, stop in _frame_blocks(n, x[0].numel(), x.device):
                # d max_c / dx: 1/(number of tied maxima) at the maxima, 0 elsewhere (as torch.amax)
                at_peak = x[start:stop] == peak[start:stop, None]  # (n, C, H, W) bool
                share = grad_peak[start:stop] / at_peak.sum(dim=1, keepdim=True)
                torch.where(at_peak, grad_mean[start:stop] + share, grad_mean[start:stop], out=grad[start:stop])
        if grad_spatial is not None and grad_spatial.numel():
            grad.add_((grad_spatial / (h * w)).to(x.dtype)[:, :, None, None])  # d mean_{H,W} / dx = 1/(HW)
        return grad, None


class _TemporalTaps(Function):
    """z (B*T, 3*D, H, W), the three taps' 1x1 outputs (tap-major) -> (B*T, D, H, W) with
    ``out[t] = z_0[t-1] + z_1[t] + z_2[t+1]`` (zero outside the clip): a (3,1,1) conv's sum over its taps."""

    @staticmethod
    def forward(ctx, z, clip_len):  # see the class docstring
        n, taps_dim, h, w = z.shape
        hidden, batch = taps_dim // 3, n // clip_len
        channels_last = z.is_contiguous(memory_format=torch.channels_last)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        out = torch.empty((n, hidden, h, w), dtype=z.dtype, device=z.device, memory_format=fmt)
        z6 = z.view(batch, clip_len, 3, hidden, h, w)
        out5 = out.view(batch, clip_len, hidden, h, w)
        out5.copy_(z6[:, :, 1])
        out5[:, 1:] += z6[:, :-1, 0]  # cross-correlation: frame t sees w0 . x[t-1] + w1 . x[t] + w2 . x[t+1]
        out5[:, :-1] += z6[:, 1:, 2]
        ctx.clip_len, ctx.fmt = clip_len, fmt
        return out

    @staticmethod
    @once_differentiable  # the hand-written backward is not itself differentiable
    def backward(ctx, grad_out):
        n, hidden, h, w = grad_out.shape
        clip_len = ctx.clip_len
        batch = n // clip_len
        grad = torch.empty((n, 3 * hidden, h, w), dtype=grad_out.dtype, device=grad_out.device,
                           memory_format=ctx.fmt)
        g6 = grad.view(batch, clip_len, 3, hidden, h, w)
        g5 = grad_out.view(batch, clip_len, hidden, h, w)
        g6[:, :, 1].copy_(g5)
        g6[:, :-1, 0].copy_(g5[:, 1:])  # z_0[s] reached frame s + 1
        g6[:, -1, 0].zero_()
        g6[:, 1:, 2].copy_(g5[:, :-1])  # z_2[s] reached frame s - 1
        g6[:, 0, 2].zero_()
        return grad, None


def dynamic_temporal_conv(y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Depthwise temporal convolution of ``y`` with one kernel per (clip, channel), zero padded.

    ``y``: (B, T, C, H, W), any memory layout; ``theta``: (B, C, K) with K odd. Returns (B, T, C, H, W) in ``y``'s
    layout with ``out[:, t] = sum_k theta[:, :, k] * y[:, t + k - K//2]`` (a cross-correlation; terms outside the
    clip are 0), computed as K shifted multiply-adds with a hand-written backward (no layout copies).
    """
    if y.device.type == "meta":
        from pespot.model.astrm import temporal_conv

        return temporal_conv(y, theta)
    return _RefineAndConvolve.apply(y, None, None, theta)


def dynamic_temporal_conv_shifted(y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The same as :func:`dynamic_temporal_conv`, as K shifted products left to autograd (a plain reference)."""
    length = y.shape[1]
    half = theta.shape[-1] // 2
    taps = theta.to(y.dtype)[:, None, :, :, None, None]  # (B, 1, C, K, 1, 1)
    out = y * taps[:, :, :, half]
    for k in range(theta.shape[-1]):
        offset = k - half
        if offset == 0 or abs(offset) >= length:
            continue
        if offset > 0:  # frame t takes y[t + offset]
            out[:, : length - offset].addcmul_(y[:, offset:], taps[:, :, :, k])
        else:
            out[:, -offset:].addcmul_(y[:, : length + offset], taps[:, :, :, k])
    return out


def local_spatial(fs, pooled: torch.Tensor) -> torch.Tensor:
    """Fs from [mean_c(x); max_c(x)] (N, 2, H, W) -> (N, 1, H, W) in (0, 1)."""
    return torch.sigmoid(fs.bn(fs.conv(pooled)))


def local_temporal(ft, x: torch.Tensor) -> torch.Tensor:
    """Ft (B*T, C, H, W) -> (B*T, C, H, W) in (0, 1): the (3,1,1) conv as one 1x1 conv to the three taps' outputs
    (tap-major), summed with a one-frame shift; BN over (B*T, C/beta, H, W) has BN3d's per-channel statistics."""
    taps = ft.reduce.weight.permute(2, 0, 1, 3, 4).reshape(3 * ft.reduce.out_channels, -1, 1, 1)
    z = F.conv2d(x, taps)  # (B*T, 3*hidden, H, W)
    hid = _TemporalTaps.apply(z, ft.clip_len)  # (B*T, hidden, H, W)
    hid = ft.bn(torch.relu_(hid))  # paper order: ReLU, then BN; in place: nothing else reads hid
    return torch.sigmoid_(F.conv2d(hid, ft.expand.weight.flatten(2)[..., None]))


def forward(astrm: ASTRM, x: torch.Tensor) -> torch.Tensor:
    """``astrm``'s function on (B*T, C, H, W), computed with the kernels above."""
    if astrm.fs is None and astrm.ft is None and astrm.gt is None:
        return x
    n, c, h, w = x.shape
    frames = (n // astrm.clip_len, astrm.clip_len)
    # All three branches look at the same input x (parallel), then are applied in the order of eq. 1.
    fs = theta = None
    if astrm.fs is not None:
        pooled, spatial = _ChannelPool.apply(x, astrm.gt is not None)  # (B*T, 2, H, W), (B*T, C)
        fs = local_spatial(astrm.fs, pooled).view(*frames, 1, h, w)  # (B, T, 1, H, W)
        if astrm.gt is not None:
            theta = astrm.gt.from_pooled(spatial)  # (B, C, K)
    elif astrm.gt is not None:
        theta = astrm.gt(x)
    ft = local_temporal(astrm.ft, x).view(*frames, c, h, w) if astrm.ft is not None else None  # (B, T, C, H, W)
    out = _RefineAndConvolve.apply(x.view(*frames, c, h, w), fs, ft, theta)  # (B, T, C, H, W), x's layout
    return out.view(n, c, h, w)
