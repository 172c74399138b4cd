"""ASTRM, the Adaptive Spatio-Temporal Refinement Module (paper section 3.2.1, method-spec section 4).

    Psi(x) = ((x ⊙ (1 + Fs(x))) ⊙ (1 + Ft(x))) ⊛ Gt(x)                                          (eq. 1)
    Fs(x)  = σ(conv7x7([AvgPool_c(x); MaxPool_c(x)]))                          local spatial,  (eq. 2)
    Ft(x)  = σ(conv1x1x1(BN(δ(conv3x1x1(x)))))        C -> C/β -> C            local temporal, (eq. 3)
    Gt(x)  = σ(FC(δ(BN(FC(GAP_{H,W}(x))))))            T -> αT -> K, per (clip, channel)  global temporal (eq. 4)

⊛ is a depthwise temporal convolution with Gt's K-tap kernel of each (clip, channel), zero padded (TAM's global
branch). The module sits after ``conv1`` of each RegNetY bottleneck and sees the frame-batched layout
(B*T, C, H, W) with the T frames of a clip contiguous; T is fixed at construction (Gt's first FC has T inputs).

This file is the method as written. Training on a CPU runs the same function through ``astrm_fast`` (hand-written
autograd kernels, much less memory traffic); ``ASTRM.fast = False`` runs the code below instead, which the meta
device (FLOP counting), ONNX export and the equivalence tests use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pespot.config import AstrmConfig
from pespot.model import astrm_fast


def fold(x: torch.Tensor, clip_len: int) -> torch.Tensor:
    """(B*T, C, H, W) -> (B, C, T, H, W)."""
    n, c, h, w = x.shape
    return x.view(n // clip_len, clip_len, c, h, w).permute(0, 2, 1, 3, 4)


def unfold(x5: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W)."""
    b, c, t, h, w = x5.shape
    return x5.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def temporal_conv(y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """⊛: ``out[:, t] = Σ_k θ[:, :, k] · y[:, t + k - K//2]`` (zero outside the clip), written as TAM does: one
    grouped conv over (1, B*C, T, H*W). ``y`` (B, T, C, H, W), ``theta`` (B, C, K) -> (B, T, C, H, W) (a view)."""
    b, t, c, h, w = y.shape
    k = theta.shape[-1]
    y_ct = y.permute(0, 2, 1, 3, 4).reshape(1, b * c, t, h * w)  # (1, B*C, T, H*W)
    out = F.conv2d(y_ct, theta.to(y.dtype).reshape(b * c, 1, k, 1), padding=(k // 2, 0), groups=b * c)
    return out.view(b, c, t, h, w).permute(0, 2, 1, 3, 4)


class LocalSpatial(nn.Module):
    """Fs (eq. 2): one spatial attention map per frame, (N, C, H, W) -> (N, 1, H, W) in (0, 1)."""

    def __init__(self, kernel_size: int = 7, batch_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        # The paper's equation has no BN; the official CBAM code has one (momentum 0.01): model.astrm.fs_bn.
        self.bn = nn.BatchNorm2d(1, momentum=0.01) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (N, 2, H, W)
        return torch.sigmoid(self.bn(self.conv(a)))

    forward_reference = forward  # the name the export and the benchmarks know


class LocalTemporal(nn.Module):
    """Ft (eq. 3): conv3x1x1 (C -> C/β) -> ReLU -> BN -> conv1x1x1 (C/β -> C) -> σ, at full resolution."""

    def __init__(self, channels: int, clip_len: int, beta: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // beta)
        self.clip_len = clip_len
        self.reduce = nn.Conv3d(channels, hidden, kernel_size=(3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn = nn.BatchNorm2d(hidden)  # BN3d's per-channel statistics, kept on the frame layout
        self.expand = nn.Conv3d(hidden, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B*T, C, H, W) -> (B*T, C, H, W)
        h = torch.relu(self.reduce(fold(x, self.clip_len)))  # (B, C/β, T, H, W); paper order: δ, then BN
        h = self.bn(unfold(h))  # (B*T, C/β, H, W)
        return torch.sigmoid(unfold(self.expand(fold(h, self.clip_len))))

    forward_reference = forward


class GlobalTemporal(nn.Module):
    """Gt (eq. 4): GAP_{H,W} -> (B*C, T) -> FC(T, αT) -> BN -> ReLU -> FC(αT, K) -> σ (paper) or softmax (TAM).

    The FCs act along time and are shared by all channels: one K-tap kernel θ per (clip, channel)."""

    def __init__(self, clip_len: int, alpha: int = 2, kernel_size: int = 3, activation: str = "sigmoid",
                 center_init: bool = False, init: str = "torch") -> None:
        super().__init__()
        self.clip_len = clip_len
        self.activation = activation
        self.fc1 = nn.Linear(clip_len, alpha * clip_len, bias=False)
        self.bn = nn.BatchNorm1d(alpha * clip_len)
        # center_init (not in the paper): a bias making the centre tap dominate, so the module starts near identity.
        self.fc2 = nn.Linear(alpha * clip_len, kernel_size, bias=center_init)
        if init == "tam":  # mmaction2's TAM: both FCs N(0, 0.001), so θ starts equal for every tap and every clip
            for fc in (self.fc1, self.fc2):
                nn.init.normal_(fc.weight, 0.0, 0.001)
        if center_init:
            with torch.no_grad():
                nn.init.zeros_(self.fc2.weight)
                self.fc2.bias.fill_(-4.0)
                self.fc2.bias[kernel_size // 2] = 4.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B*T, C, H, W) -> θ (B, C, K)."""
        return self.from_pooled(x.mean(dim=(2, 3)))

    def from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """GAP_{H,W}(x) (B*T, C) -> θ (B, C, K)."""
        n, c = pooled.shape
        b = n // self.clip_len
        s = pooled.view(b, self.clip_len, c).transpose(1, 2).reshape(b * c, self.clip_len)  # (B*C, T)
        g = self.fc2(torch.relu(self.bn(self.fc1(s))))  # (B*C, K)
        theta = torch.softmax(g, dim=-1) if self.activation == "softmax" else torch.sigmoid(g)
        return theta.view(b, c, -1)


class ASTRM(nn.Module):
    """Ψ (eq. 1), shape preserving on (B*T, C, H, W). Fs, Ft, Gt can each be switched off (``AstrmConfig.use_*``):
    a missing Fs or Ft is a factor 1, a missing Gt means no temporal convolution."""

    def __init__(self, channels: int, clip_len: int, cfg: AstrmConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or AstrmConfig()
        self.channels, self.clip_len = channels, clip_len
        self.fast = True  # astrm_fast's kernels (the same function); False: the code below
        self.fs = LocalSpatial(cfg.fs_kernel, cfg.fs_bn) if cfg.use_fs else None
        self.ft = LocalTemporal(channels, clip_len, cfg.beta) if cfg.use_ft else None
        self.gt = (GlobalTemporal(clip_len, cfg.alpha, cfg.kernel_size, cfg.gt_activation, cfg.gt_center_init,
                                  cfg.gt_init) if cfg.use_gt else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % self.clip_len != 0:
            raise ValueError(f"ASTRM built for {self.clip_len} frames got a batch of {x.shape[0]} frames")
        if self.fast and x.device.type != "meta":
            return astrm_fast.forward(self, x)
        return self.forward_reference(x)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 1 as written: all three branches read the same x, then x ⊙ (1 + Fs) ⊙ (1 + Ft) ⊛ Gt."""
        theta = self.gt(x) if self.gt is not None else None  # (B, C, K)
        y = x
        if self.fs is not None:
            y = y * (1 + self.fs(x))  # (B*T, 1, H, W) broadcast over the channels
        if self.ft is not None:
            y = y * (1 + self.ft(x))
        if theta is None:
            return y
        n, c, h, w = y.shape
        y5 = y.view(n // self.clip_len, self.clip_len, c, h, w)  # (B, T, C, H, W)
        out = torch.empty_like(y)  # back to the frame layout, in the input's memory format
        out.view_as(y5).copy_(temporal_conv(y5, theta))
        return out


def set_reference_implementation(model: nn.Module, enabled: bool = True) -> int:
    """Make every ASTRM in ``model`` run the code of this file (``enabled``) or ``astrm_fast``; returns how many."""
    modules = [m for m in model.modules() if isinstance(m, ASTRM)]
    for module in modules:
        module.fast = not enabled
    return len(modules)


# The fast temporal convolutions, under the names the tests and benchmarks know.
dynamic_temporal_conv = astrm_fast.dynamic_temporal_conv
dynamic_temporal_conv_shifted = astrm_fast.dynamic_temporal_conv_shifted
dynamic_temporal_conv_grouped = temporal_conv
