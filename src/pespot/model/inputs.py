"""What the backbone sees of a clip: the frames as they are (``rgb``, the paper) or a grey frame with its two
temporal differences (``gray_diff``, ``model.input``).

Why ``gray_diff``: a network trained from random initialisation on a few hundred steps has to find the decisive
cue before it can learn anything else, and in a broadcast of a ball sport that cue is a 1-3 px ball whose
contrast is a small share of a frame's features (docs/results/small_cues.md). Its motion is not: in the difference
of two frames the static court, lines and stands cancel and the ball (with the players) is what remains. This is
the "RGB difference" modality of TSN (Wang et al., 2016), kept to three channels so that the backbone, its stem and
everything after it are the paper's unchanged; the transform has no parameters, lives in the model (so inference,
streaming and the exported ONNX/TorchScript files apply it by themselves) and costs a few element-wise operations.

    frames (B, T, 3, H, W), ImageNet-normalised RGB
      -> grey g_t in [0, 1]                                         (B, T, H, W)
      -> [g_t, g_t - g_{t-1}, g_{t+1} - g_t] (the clip's ends repeat their frame: no motion there)
      -> each channel re-centred and scaled like an ImageNet channel  (B, T, 3, H, W)
"""

from __future__ import annotations

import torch
from torch import nn

from pespot.data.clips import IMAGENET_MEAN, IMAGENET_STD
from pespot.errors import ConfigError

INPUTS = ("rgb", "gray_diff")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601
_GREY_MEAN, _SCALE = 0.449, 0.226  # the mean and std ImageNet normalisation uses for an average channel


class GrayDiff(nn.Module):
    """ImageNet-normalised RGB clips -> [grey, backward difference, forward difference], normalised."""

    def __init__(self) -> None:
        super().__init__()
        # grey = sum_c luma_c * (x_c * std_c + mean_c): a per-channel weight and one offset on normalised input
        weight = torch.tensor([l * s for l, s in zip(_LUMA, IMAGENET_STD)]).view(1, 1, 3, 1, 1)
        offset = sum(l * m for l, m in zip(_LUMA, IMAGENET_MEAN))
        self.register_buffer("weight", weight, persistent=False)
        self.offset = float(offset)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # (B, T, 3, H, W)
        grey = (frames * self.weight.to(frames.dtype)).sum(2) + self.offset  # (B, T, H, W) in [0, 1]
        back = torch.cat([grey[:, :1], grey[:, :-1]], dim=1)  # g_{t-1}, the first frame repeated
        ahead = torch.cat([grey[:, 1:], grey[:, -1:]], dim=1)  # g_{t+1}, the last frame repeated
        return torch.stack([(grey - _GREY_MEAN) / _SCALE, (grey - back) / _SCALE, (ahead - grey) / _SCALE], dim=2)


def build_input(name: str) -> nn.Module:
    """The input transform called ``name`` (``model.input``)."""
    if name == "rgb":
        return nn.Identity()
    if name == "gray_diff":
        return GrayDiff()
    raise ConfigError(f"config key 'model.input': expected one of {', '.join(INPUTS)}, got {name!r}")
