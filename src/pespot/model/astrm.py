"""ASTRM, the Adaptive Spatio-Temporal Refinement Module (paper section 3.2.1, method-spec section 4).

    Psi(x) = ((x * (1 + Fs(x))) * (1 + Ft(x))) conv_t Gt(x)                                   (paper eq. 1)

- Fs, local spatial (eq. 2, CBAM spatial attention): sigmoid(conv7x7([mean_c(x); max_c(x)])), one map per frame.
- Ft, local temporal (eq. 3): sigmoid(conv1x1x1(BN(ReLU(conv3x1x1(x))))) at full resolution, C -> C/beta -> C.
- Gt, global temporal (eq. 4, TAM's global branch): from GAP_{H,W}(x), FCs over time shared by all channels,
  T -> alpha*T -> K, give one K-tap temporal kernel per (clip, channel); the refined features are convolved with
  it along time (depthwise, zero padding).

The module sits after ``conv1`` of each RegNetY bottleneck and sees the frame-batched layout ``(B*T, C, H, W)``
with the T frames of a clip contiguous. Fs, Ft and Gt are computed in that layout (the temporal parts view it as
``(B, T, C, H, W)`` without copying the C-channel input); only the final temporal convolution reorders the data
to (B*C, T, H*W) and back, once each way, and the output keeps the input's memory format (channels_last stays
channels_last). T is fixed at construction (Gt's first FC has T inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pespot.config import AstrmConfig


def dynamic_temporal_conv(y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Depthwise temporal convolution of ``y`` with one kernel per (clip, channel), zero padded.

    ``y``: (B, T, C, H, W); ``theta``: (B, C, K) with K odd. Returns (B, T, C, H, W) (a permuted view) with
    ``out[:, t] = sum_k theta[:, :, k] * y[:, t + k - K//2]`` (a cross-correlation; terms outside the clip are 0).
    Written as one grouped ``conv2d`` over (1, B*C, T, H*W), TAM's formulation: on CPU it is faster than the
    sum of shifted products (:func:`dynamic_temporal_conv_shifted`) in spite of the layout copy, forward and
    backward, and FLOP counters see it as the K MACs per element it costs.
    """
    b, t, c, h, w = y.shape
    k = theta.shape[-1]
    y_ct = y.permute(0, 2, 1, 3, 4).reshape(1, b * c, t, h * w)  # (1, B*C, T, H*W)
    out = F.conv2d(y_ct, theta.to(y.dtype).reshape(b * c, 1, k, 1), padding=(k // 2, 0), groups=b * c)
    return out.view(b, c, t, h, w).permute(0, 2, 1, 3, 4)


def dynamic_temporal_conv_shifted(y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The same as :func:`dynamic_temporal_conv`, computed as a sum of K shifted products in the frame layout."""
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


class LocalSpatial(nn.Module):
    """Fs (eq. 2): per-frame spatial attention map from the channel mean and max, (N, C, H, W) -> (N, 1, H, W)."""

    def __init__(self, kernel_size: int = 7, batch_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        # The paper's equation has no BN; the official CBAM code has one (momentum 0.01).
        self.bn = nn.BatchNorm2d(1, momentum=0.01) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1, H, W) in (0, 1)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (N, 2, H, W)
        return torch.sigmoid(self.bn(self.conv(pooled)))


class LocalTemporal(nn.Module):
    """Ft (eq. 3): Conv3d(C -> C/beta, (3,1,1)) -> ReLU -> BN3d -> Conv3d(C/beta -> C, 1x1x1) -> sigmoid.

    The weights are stored as ``Conv3d`` weights (shapes as in the equation). The computation runs on the
    frame-batched layout: the (3,1,1) conv is one 1x1 conv producing the three taps' contributions, summed with
    a one-frame shift, which equals the Conv3d with zero padding (1, 0, 0) without folding the C-channel input to
    (B, C, T, H, W). BN3d over (B, C/beta, T, H, W) uses the same per-channel statistics as BN2d over
    (B*T, C/beta, H, W), so a BatchNorm2d holds them.
    """

    def __init__(self, channels: int, clip_len: int, beta: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // beta)
        self.clip_len = clip_len
        self.reduce = nn.Conv3d(channels, hidden, kernel_size=(3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.expand = nn.Conv3d(hidden, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B*T, C, H, W) -> (B*T, C, H, W) in (0, 1)."""
        n, _, h, w = x.shape
        hidden = self.reduce.out_channels
        # (hidden, C, 3, 1, 1) -> (3*hidden, C, 1, 1): tap-major, so the output splits as (3, hidden).
        w_taps = self.reduce.weight.permute(2, 0, 1, 3, 4).reshape(3 * hidden, -1, 1, 1)
        z = F.conv2d(x, w_taps)  # (B*T, 3*hidden, H, W)
        z = z.view(n // self.clip_len, self.clip_len, 3, hidden, h, w)  # (B, T, 3, hidden, H, W)
        # Cross-correlation: frame t = w0 . x[t-1] + w1 . x[t] + w2 . x[t+1]
        hid = z[:, :, 1].clone()
        hid[:, 1:] += z[:, :-1, 0]
        hid[:, :-1] += z[:, 1:, 2]
        hid = self.bn(torch.relu(hid.flatten(0, 1)))  # (B*T, hidden, H, W); paper order: ReLU, then BN
        return torch.sigmoid(F.conv2d(hid, self.expand.weight.flatten(2)[..., None]))


class GlobalTemporal(nn.Module):
    """Gt (eq. 4): one K-tap temporal kernel per (clip, channel) from the spatially pooled clip.

    GAP_{H,W} -> (B*C, T) -> Linear(T, alpha*T) -> BN1d -> ReLU -> Linear(alpha*T, K) -> sigmoid (paper) or
    softmax (TAM). The FCs act along time and are shared by all channels (TAM's global branch).
    """

    def __init__(self, clip_len: int, alpha: int = 2, kernel_size: int = 3, activation: str = "sigmoid",
                 center_init: bool = False) -> None:
        super().__init__()
        self.clip_len = clip_len
        self.activation = activation
        self.fc1 = nn.Linear(clip_len, alpha * clip_len, bias=False)
        self.bn = nn.BatchNorm1d(alpha * clip_len)
        # center_init (not in the paper): a bias making the centre tap dominate, so the module starts near identity.
        self.fc2 = nn.Linear(alpha * clip_len, kernel_size, bias=center_init)
        if center_init:
            with torch.no_grad():
                nn.init.zeros_(self.fc2.weight)
                self.fc2.bias.fill_(-4.0)
                self.fc2.bias[kernel_size // 2] = 4.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B*T, C, H, W) -> theta (B, C, K)."""
        n, c = x.shape[:2]
        b = n // self.clip_len
        pooled = x.mean(dim=(2, 3)).view(b, self.clip_len, c).transpose(1, 2).reshape(b * c, self.clip_len)
        g = self.fc2(torch.relu(self.bn(self.fc1(pooled))))  # (B*C, K)
        theta = torch.softmax(g, dim=-1) if self.activation == "softmax" else torch.sigmoid(g)
        return theta.view(b, c, -1)


class ASTRM(nn.Module):
    """Psi(x) = ((x * (1 + Fs)) * (1 + Ft)) conv_t Gt, shape preserving on (B*T, C, H, W).

    Each of Fs, Ft, Gt can be switched off (``AstrmConfig.use_*``): a missing Fs or Ft is a factor 1, a missing
    Gt means no temporal convolution.
    """

    def __init__(self, channels: int, clip_len: int, cfg: AstrmConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or AstrmConfig()
        self.channels = channels
        self.clip_len = clip_len
        self.fs = LocalSpatial(cfg.fs_kernel, cfg.fs_bn) if cfg.use_fs else None
        self.ft = LocalTemporal(channels, clip_len, cfg.beta) if cfg.use_ft else None
        self.gt = (GlobalTemporal(clip_len, cfg.alpha, cfg.kernel_size, cfg.gt_activation, cfg.gt_center_init)
                   if cfg.use_gt else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B*T, C, H, W) -> (B*T, C, H, W)."""
        if x.shape[0] % self.clip_len != 0:
            raise ValueError(f"ASTRM built for {self.clip_len} frames got a batch of {x.shape[0]} frames")
        # All three branches look at the same input x (parallel), then are applied in the order of eq. 1.
        theta = self.gt(x) if self.gt is not None else None  # (B, C, K)
        y = x
        if self.fs is not None:
            y = y * (1 + self.fs(x))  # (B*T, 1, H, W) broadcast over channels
        if self.ft is not None:
            y = y * (1 + self.ft(x))
        if theta is None:
            return y
        n, c, h, w = y.shape
        y5 = y.view(n // self.clip_len, self.clip_len, c, h, w)  # (B, T, C, H, W)
        # One copy back to the frame layout, in the input's memory format (channels_last stays channels_last).
        out = torch.empty_like(y)
        out.view_as(y5).copy_(dynamic_temporal_conv(y5, theta))
        return out
