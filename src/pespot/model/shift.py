"""Temporal shift modules of the E2E-Spot baseline: TSM (Lin et al. 2019) and GSM (Sudhakaran et al. 2020).

Both act on the frame-batched layout of a 2D backbone, ``(B*T, C, H, W)`` with the T frames of a clip contiguous,
and are inserted in front of ``conv1`` of every RegNetY bottleneck (method-spec section 3.2): the shift changes the
input of the residual branch only, the shortcut sees the unshifted features.

Written for any device (E2E-Spot's GSM allocated its zero padding with ``torch.cuda.FloatTensor``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _frames(x: torch.Tensor, clip_len: int) -> torch.Tensor:
    """View ``(B*T, C, H, W)`` as ``(B, T, C, H, W)`` (no copy, also for channels_last tensors)."""
    n, c, h, w = x.shape
    if n % clip_len != 0:
        raise ValueError(f"temporal module built for {clip_len} frames got a batch of {n} frames")
    return x.view(n // clip_len, clip_len, c, h, w)


def shift_time(x: torch.Tensor, offset: int, dim: int = 1) -> torch.Tensor:
    """``out[t] = x[t + offset]`` along ``dim``, zero where ``t + offset`` is outside the clip."""
    if offset == 0:
        return x
    length = x.shape[dim]
    out = torch.zeros_like(x)
    if abs(offset) >= length:
        return out
    if offset > 0:
        out.narrow(dim, 0, length - offset).copy_(x.narrow(dim, offset, length - offset))
    else:
        out.narrow(dim, -offset, length + offset).copy_(x.narrow(dim, 0, length + offset))
    return out


def temporal_shift(x: torch.Tensor, clip_len: int, fold: int) -> torch.Tensor:
    """TSM: channels ``[0, fold)`` take the next frame's values, ``[fold, 2*fold)`` the previous frame's.

    ``x``: (B*T, C, H, W) -> (B*T, C, H, W). Zero padded at the clip ends; the other channels are unchanged.
    """
    x5 = _frames(x, clip_len)  # (B, T, C, H, W)
    out = torch.zeros_like(x5)
    out[:, :-1, :fold] = x5[:, 1:, :fold]  # toward the past: frame t sees t+1
    out[:, 1:, fold : 2 * fold] = x5[:, :-1, fold : 2 * fold]  # toward the future: frame t sees t-1
    out[:, :, 2 * fold :] = x5[:, :, 2 * fold :]
    return out.view_as(x)


class TemporalShift(nn.Module):
    """TSM with ``n_div = 8``: 1/8 of the channels shifted each way, no parameters.

    E2E-Spot used TSM's in-place variant, which (through the shared storage) also shifts the block's shortcut;
    here the shift is out of place, so only the residual branch sees it.
    """

    def __init__(self, in_channels: int, clip_len: int, n_div: int = 8) -> None:
        super().__init__()
        self.clip_len = clip_len
        self.fold = in_channels // n_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B*T, C, H, W) -> (B*T, C, H, W)."""
        return temporal_shift(x, self.clip_len, self.fold)


class GatedShift(nn.Module):
    """GSM with ``n_div = 4`` as used by E2E-Spot: a learned tanh gate decides how much of each feature is shifted.

    Acts on the first ``fold = ceil((C_in // 4) / 4) * 4`` channels; the rest pass unchanged. On those channels
    (layout (B, fold, T, H, W)):
        gate = tanh(Conv3d(fold -> 2, 3x3x3, groups=2)(ReLU(BN3d(x))))    # (B, 2, T, H, W), zero at init
        half 1: g1*x1 shifted toward the past  (frame t gets t+1) + (x1 - g1*x1)
        half 2: g2*x2 shifted toward the future (frame t gets t-1) + (x2 - g2*x2)
    then, as in E2E-Spot's GSM, the channels of each half are re-interleaved (``interleave=True``): within a half
    the channel ``a*fold/4 + b`` (a in {0, 1}) moves to ``2*b + a``. Because the gate conv is zero-initialised the
    module starts as the identity up to that fixed permutation (exactly the identity with ``interleave=False``).
    Parameters: BN 2*fold + conv 27*fold + 2 = 29*fold + 2.
    """

    def __init__(self, in_channels: int, clip_len: int, n_div: int = 4, interleave: bool = True) -> None:
        super().__init__()
        self.clip_len = clip_len
        self.interleave = interleave
        self.fold = math.ceil((in_channels // n_div) / 4) * 4
        self.bn = nn.BatchNorm3d(self.fold)
        self.gate = nn.Conv3d(self.fold, 2, kernel_size=3, padding=1, groups=2)
        nn.init.zeros_(self.gate.weight)  # gate = tanh(0) = 0: nothing shifted at the start
        nn.init.zeros_(self.gate.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B*T, C, H, W) -> (B*T, C, H, W)."""
        fold, half = self.fold, self.fold // 2
        xf = _frames(x[:, :fold], self.clip_len)  # (B, T, fold, H, W)
        gate = torch.tanh(self.gate(torch.relu(self.bn(xf.transpose(1, 2)))))  # (B, 2, T, H, W)
        gate = gate.transpose(1, 2)  # (B, T, 2, H, W)
        x1, x2 = xf[:, :, :half], xf[:, :, half:]
        y1 = gate[:, :, 0:1] * x1
        y2 = gate[:, :, 1:2] * x2
        y1 = shift_time(y1, +1) + (x1 - y1)  # (B, T, fold/2, H, W)
        y2 = shift_time(y2, -1) + (x2 - y2)
        if self.interleave:
            b, t, _, h, w = y1.shape
            y1 = y1.reshape(b, t, 2, fold // 4, h, w).transpose(2, 3).reshape(b, t, half, h, w)
            y2 = y2.reshape(b, t, 2, fold // 4, h, w).transpose(2, 3).reshape(b, t, half, h, w)
        shifted = torch.cat([y1, y2], dim=2).flatten(0, 1)  # (B*T, fold, H, W)
        return torch.cat([shifted, x[:, fold:]], dim=1)


class ShiftThenConv(nn.Module):
    """``conv1`` of a bottleneck with a temporal shift applied to its input (E2E-Spot's wrapper)."""

    def __init__(self, conv: nn.Module, shift: nn.Module) -> None:
        super().__init__()
        self.shift = shift
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B*T, C_in, H, W) -> conv1(shift(x))."""
        return self.conv(self.shift(x))
