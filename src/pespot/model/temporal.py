"""Temporal heads: per-frame features (B, T, D_in) -> long-range features (B, T, D_out).

The paper's choice is a 1-layer Bi-GRU (section 3.2.2); the others are the alternatives of its ablation and of
E2E-Spot. Every head exposes ``out_dim``; the classifier (dropout + linear) lives in the spotter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pespot.errors import ConfigError
from pespot.registry import TEMPORAL_HEADS as HEADS

MAX_RNN_HIDDEN = 768  # E2E-Spot caps the GRU width at RegNetY-800MF's feature size


class Identity(nn.Module):
    """No temporal modelling: the classifier sees each frame's pooled feature alone."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        return x


class BiRNN(nn.Module):
    """Bidirectional GRU or LSTM; output = concatenated directions, ``2 * hidden``."""

    def __init__(self, in_dim: int, hidden: int, num_layers: int = 1, cell: str = "gru") -> None:
        super().__init__()
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(in_dim, hidden, num_layers=num_layers, batch_first=True, bidirectional=True)
        self.out_dim = 2 * hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D_in) -> (B, T, 2*hidden)."""
        return self.rnn(x)[0]


def sinusoidal_encoding(length: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """The fixed positional encoding of Vaswani et al.: (length, dim), sin on even and cos on odd channels."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    enc = torch.zeros(length, dim, device=device, dtype=torch.float32)
    enc[:, 0::2] = torch.sin(position * freq)
    enc[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return enc.to(dtype) if dtype is not None else enc


class _InputProjection(nn.Module):
    """Linear to the model width when it differs from the feature width, then + sinusoidal positions."""

    def __init__(self, in_dim: int, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ConfigError(f"config key 'model.hidden_dim': {dim} is not divisible by the {heads} attention heads")
        self.proj = nn.Linear(in_dim, dim) if in_dim != dim else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D_in) -> (B, T, D)."""
        x = self.proj(x)
        return x + sinusoidal_encoding(x.shape[1], x.shape[2], x.device, x.dtype)


class TransformerHead(nn.Module):
    """Transformer encoder (pre-norm, 8 heads, FFN 4*D, dropout 0.1) over the frames, sinusoidal positions."""

    def __init__(self, in_dim: int, dim: int, num_layers: int, heads: int = 8) -> None:
        super().__init__()
        self.embed = _InputProjection(in_dim, dim, heads)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.1, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D_in) -> (B, T, D)."""
        return self.encoder(self.embed(x))


class TemporalDeformableAttention(nn.Module):
    """Temporal deformable attention (after TadTR / Deformable DETR, one scale).

    Each frame t predicts, per head, ``points`` fractional sampling positions ``t + offset`` and softmax weights;
    the head's values are read there by linear interpolation (zero outside the clip) and averaged with the
    weights. The offsets start at fixed positions around the frame, wider for later heads
    (head h: +-(h+1), +-2(h+1), ...), so the heads cover several ranges from the start.
    """

    def __init__(self, dim: int, heads: int = 8, points: int = 4) -> None:
        super().__init__()
        self.heads, self.points, self.head_dim = heads, points, dim // heads
        self.offsets = nn.Linear(dim, heads * points)
        self.weights = nn.Linear(dim, heads * points)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.offsets.weight)
        nn.init.zeros_(self.weights.weight)  # uniform attention over the points at the start
        nn.init.zeros_(self.weights.bias)
        with torch.no_grad():
            steps = torch.arange(1, points // 2 + 1, dtype=torch.float32)
            pattern = torch.cat([-steps.flip(0), steps])  # e.g. [-2, -1, 1, 2]
            if points % 2:
                pattern = torch.cat([pattern, torch.zeros(1)])
            grid = pattern[None, :] * torch.arange(1, heads + 1, dtype=torch.float32)[:, None]  # (heads, points)
            self.offsets.bias.copy_(grid.flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        b, t, d = x.shape
        h, p, dh = self.heads, self.points, self.head_dim
        value = self.value(x).view(b, t, h, dh).transpose(1, 2)  # (B, h, T, dh)
        # Positions in fp32 even under autocast: bf16 cannot hold fractions of frame indices near 128.
        where = torch.arange(t, device=x.device, dtype=torch.float32)[None, :, None, None] + \
            self.offsets(x).float().view(b, t, h, p)  # (B, T, h, P), in frames
        attn = torch.softmax(self.weights(x).view(b, t, h, p), dim=-1)  # (B, T, h, P)
        where = where.permute(0, 2, 1, 3).reshape(b, h, t * p)  # (B, h, T*P)
        lo = torch.floor(where)
        frac = where - lo  # the gradient reaches the offsets through the interpolation weights
        lo = lo.long()
        sampled = 0
        for idx, weight in ((lo, 1 - frac), (lo + 1, frac)):
            inside = (idx >= 0) & (idx < t)
            gathered = torch.gather(value, 2, idx.clamp(0, t - 1)[..., None].expand(-1, -1, -1, dh))
            sampled = sampled + gathered * (weight * inside).to(value.dtype)[..., None]  # (B, h, T*P, dh)
        sampled = sampled.view(b, h, t, p, dh)
        out = (sampled * attn.permute(0, 2, 1, 3).to(value.dtype)[..., None]).sum(dim=3)  # (B, h, T, dh)
        return self.out(out.transpose(1, 2).reshape(b, t, d))


class DeformableLayer(nn.Module):
    """Encoder layer: deformable attention + residual + LayerNorm, then FFN + residual + LayerNorm (TadTR order)."""

    def __init__(self, dim: int, heads: int = 8, points: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn = TemporalDeformableAttention(dim, heads, points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        x = self.norm1(x + self.drop(self.attn(x)))
        return self.norm2(x + self.drop(self.ffn(x)))


class DeformableHead(nn.Module):
    """Two temporal deformable attention layers (TadTR's encoder depth), 8 heads x 4 points."""

    def __init__(self, in_dim: int, dim: int, num_layers: int = 2, heads: int = 8, points: int = 4) -> None:
        super().__init__()
        self.embed = _InputProjection(in_dim, dim, heads)
        self.layers = nn.ModuleList(DeformableLayer(dim, heads, points) for _ in range(num_layers))
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D_in) -> (B, T, D)."""
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return x


class DilatedResidual(nn.Module):
    """MS-TCN layer: x + Dropout(Conv1x1(ReLU(Conv3(x, dilation d, zero padding d))))."""

    def __init__(self, dim: int, dilation: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv_dilated = nn.Conv1d(dim, dim, 3, padding=dilation, dilation=dilation)
        self.conv_1x1 = nn.Conv1d(dim, dim, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, T) -> (B, D, T)."""
        return x + self.drop(self.conv_1x1(F.relu(self.conv_dilated(x))))


class MSTCNHead(nn.Module):
    """Multi-stage temporal conv net (MS-TCN, as used by E2E-Spot: 3 stages x 5 layers, 256 wide).

    Each stage is a 1x1 conv followed by dilated residual layers with dilations 1, 2, 4, 8, 16 (receptive field
    63 frames per stage). E2E-Spot's stages 2-3 refine the previous stage's class probabilities and each stage has
    its own loss; here the head outputs features for the shared classifier, so the stages refine features.
    """

    def __init__(self, in_dim: int, dim: int = 256, num_stages: int = 3, num_layers: int = 5) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        for stage in range(num_stages):
            layers = [nn.Conv1d(in_dim if stage == 0 else dim, dim, 1)]
            layers += [DilatedResidual(dim, 2**i) for i in range(num_layers)]
            self.stages.append(nn.Sequential(*layers))
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D_in) -> (B, T, dim)."""
        y = x.transpose(1, 2)  # (B, D_in, T)
        for stage in self.stages:
            y = stage(y)
        return y.transpose(1, 2)


@HEADS.register("bigru", aliases={"bigru2": {"layers": 2}})
def _bigru(in_dim: int, width: int | None, layers: int | None, heads: int | None) -> nn.Module:
    # E2E-Spot: the width is the feature width, capped at 768
    return BiRNN(in_dim, width or min(in_dim, MAX_RNN_HIDDEN), num_layers=layers or 1, cell="gru")


@HEADS.register("bilstm")
def _bilstm(in_dim: int, width: int | None, layers: int | None, heads: int | None) -> nn.Module:
    return BiRNN(in_dim, width or min(in_dim, MAX_RNN_HIDDEN), num_layers=layers or 1, cell="lstm")


@HEADS.register("transformer", aliases={"transformer_l1h8": {"layers": 1, "heads": 8},
                                        "transformer_l2h8": {"layers": 2, "heads": 8}})
def _transformer(in_dim: int, width: int | None, layers: int | None, heads: int | None) -> nn.Module:
    return TransformerHead(in_dim, width or in_dim, num_layers=layers or 1, heads=heads or 8)


@HEADS.register("deformable")
def _deformable(in_dim: int, width: int | None, layers: int | None, heads: int | None) -> nn.Module:
    return DeformableHead(in_dim, width or in_dim, num_layers=layers or 2, heads=heads or 8)


@HEADS.register("mstcn")
def _mstcn(in_dim: int, width: int | None, layers: int | None, heads: int | None) -> nn.Module:
    return MSTCNHead(in_dim, width or 256, num_stages=layers or 3)  # model.head_layers = stages


@HEADS.register("none")
def _none(in_dim: int, width: int | None, layers: int | None, heads: int | None) -> nn.Module:
    return Identity(in_dim)


TEMPORAL_HEADS = tuple(HEADS.registered())  # every name a config may use (aliases included)


def build_temporal_head(name: str, in_dim: int, hidden_dim: int | None = None, layers: int | None = None,
                        heads: int | None = None) -> nn.Module:
    """The temporal head ``name`` (``pespot.registry.TEMPORAL_HEADS``) for ``in_dim``-wide frame features.

    ``hidden_dim`` (``model.hidden_dim``) sets the width: None = the feature width capped at 768 for the RNNs
    (E2E-Spot), the feature width for the attention heads, 256 for MS-TCN. ``layers`` / ``heads``
    (``model.head_layers`` / ``model.head_heads``): None = the head's default or what an alias such as
    ``transformer_l2h8`` fixes.
    """
    entry = HEADS.get(name)
    layers = layers if layers is not None else entry.settings.get("layers")
    heads = heads if heads is not None else entry.settings.get("heads")
    return entry.builder(in_dim, hidden_dim, layers, heads)
