"""The spotting model (paper Fig. 3): frames -> RegNetY (+ per-block temporal module) -> spatial average pool
-> temporal head -> Dropout -> Linear(K+1), plus the SoftIC projection head used only in training.

    frames (B, T, 3, H, W)
      -> input transform (``model.input``: the frames, or grey + temporal differences; model/inputs.py)
      -> backbone on (B*T, 3, H, W), pooled          (B*T, D)        D = 368 for regnety_002
      -> temporal head                               (B, T, D_h)     D_h = 736 for the Bi-GRU
      -> Dropout(0.5) -> Linear(D_h, K+1)            (B, T, K+1)     output 0 = background
      projection (training): MLP(d, d, 128) then L2-normalise on the temporal-head output (before dropout) or on
      the pooled backbone feature (``model.softic_feature``)  -> (B*T, 128)
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from pespot.config import Config
from pespot.errors import PespotError
from pespot.model.backbone import FEATURE_DIMS, create_backbone, insert_temporal_modules
from pespot.model.inputs import build_input
from pespot.model.temporal import build_temporal_head
from pespot.registry import TEMPORAL_MODULES


class ProjectionHead(nn.Module):
    """OpenDet's contrastive head: Linear(d, d) -> ReLU -> Linear(d, out), then L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int = 128) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, in_dim)
        self.fc2 = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, out) with unit L2 norm."""
        return F.normalize(self.fc2(torch.relu(self.fc1(x))), dim=-1)


class Spotter(nn.Module):
    """Per-frame event classifier over clips; see the module docstring for the data flow."""

    def __init__(self, backbone: nn.Module, temporal_modules: list[nn.Module], temporal_head: nn.Module,
                 num_classes: int, clip_len: int, fixed_clip_len: bool, feature_dim: int, dropout: float = 0.5,
                 projection: nn.Module | None = None, softic_feature: str = "temporal",
                 channels_last: bool = False, input_transform: nn.Module | None = None) -> None:
        super().__init__()
        self.input_transform = input_transform if input_transform is not None else nn.Identity()
        self.backbone = backbone
        # The inserted per-block modules are submodules of the backbone; kept here (unregistered) to tell them apart.
        self._temporal_modules = list(temporal_modules)
        self.temporal_head = temporal_head
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(temporal_head.out_dim, num_classes + 1)
        self.projection = projection
        self.num_classes = num_classes
        self.clip_len = clip_len
        self.fixed_clip_len = fixed_clip_len  # tsm/gsm/astrm are built for exactly clip_len frames
        self.feature_dim = feature_dim
        self.softic_feature = softic_feature
        self.channels_last = channels_last

    def forward(self, frames: torch.Tensor, return_projection: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """frames (B, T, 3, H, W) -> logits (B, T, K+1), or (logits, projections (B*T, 128)).

        With a fixed-length temporal module a clip shorter than ``clip_len`` is zero-padded at the end for the
        backbone and the padding dropped after it (E2E-Spot); a longer one is an error.
        """
        if frames.dim() != 5:
            raise PespotError(f"model input: expected frames (B, T, 3, H, W), got shape {tuple(frames.shape)}")
        batch, length, channels, height, width = frames.shape
        frames = self.input_transform(frames)  # before padding: the padding is not a frame to take differences with
        padded = length
        if self.fixed_clip_len:
            if length > self.clip_len:
                raise PespotError(f"model input: clip of {length} frames but the model was built for at most "
                                  f"{self.clip_len} (model.clip_len)")
            if length < self.clip_len:
                frames = F.pad(frames, (0, 0, 0, 0, 0, 0, 0, self.clip_len - length))
                padded = self.clip_len
        x = frames.reshape(batch * padded, channels, height, width)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feat = self.backbone(x).view(batch, padded, -1)[:, :length]  # (B, T, D)
        hidden = self.temporal_head(feat)  # (B, T, D_h)
        logits = self.classifier(self.dropout(hidden))  # (B, T, K+1)
        if not return_projection:
            return logits
        if self.projection is None:
            raise PespotError("model: built without a projection head (loss.contrastive is none)")
        source = hidden if self.softic_feature == "temporal" else feat
        return logits, self.projection(source.reshape(batch * length, -1))

    @torch.no_grad()
    def init_prior_bias(self, prior: torch.Tensor | list[float], activation: str) -> None:
        """Set the classifier bias so that the initial scores are the class prior (K+1,), column 0 background.

        ``sigmoid`` (BCE, focal): each output's log-odds ``log(p / (1 - p))``; ``softmax`` (CE): ``log p`` of
        the prior renormalised to sum 1. Probabilities are clipped to [1e-6, 1 - 1e-6] (a class absent from the
        training frames would otherwise get an infinite bias). With a random classifier weight the logits start
        near these values instead of 0 (a sigmoid score of 0.5 for every class on frames that are > 95 %%
        background), so the first steps do not go into unlearning the prior.
        """
        p = torch.as_tensor(prior, dtype=torch.float64).flatten()
        if p.numel() != self.num_classes + 1:
            raise PespotError(f"class prior: expected {self.num_classes + 1} values (background + {self.num_classes} "
                              f"classes), got {p.numel()}")
        if activation == "sigmoid":
            p = p.clamp(1e-6, 1 - 1e-6)
            bias = torch.log(p / (1 - p))
        elif activation == "softmax":
            p = p.clamp_min(1e-6)
            bias = torch.log(p / p.sum())
        else:
            raise PespotError(f"class prior: activation must be sigmoid or softmax, got {activation!r}")
        self.classifier.bias.copy_(bias.to(self.classifier.bias.dtype))

    @property
    def temporal_modules(self) -> list[nn.Module]:
        """The per-block modules inserted into the backbone (ASTRM, GSM or TSM), in block order."""
        return list(self._temporal_modules)

    def parts(self) -> OrderedDict[str, list[nn.Parameter]]:
        """Parameters by part: backbone (without the inserted modules), temporal_module, temporal_head,
        classifier, projection (empty when not built)."""
        inserted = [p for m in self._temporal_modules for p in m.parameters()]
        inserted_ids = {id(p) for p in inserted}
        return OrderedDict(
            backbone=[p for p in self.backbone.parameters() if id(p) not in inserted_ids],
            temporal_module=inserted,
            temporal_head=list(self.temporal_head.parameters()),
            classifier=list(self.classifier.parameters()),
            projection=list(self.projection.parameters()) if self.projection is not None else [],
        )


def build_model(cfg: Config, num_classes: int, with_projection: bool | None = None, *,
                load_weights: bool = True) -> Spotter:
    """The spotter described by ``cfg.model`` for ``num_classes`` event classes (K+1 outputs).

    ``with_projection``: build the SoftIC/IC projection head; None = when ``cfg.loss.contrastive != 'none'``.
    ``load_weights``: False skips ImageNet/``model.weights`` loading (and its warning), for a model whose state
    comes from a checkpoint or that is only measured.
    """
    mcfg = cfg.model
    if num_classes <= 0:
        raise PespotError(f"num_classes: expected a positive number of event classes, got {num_classes}")
    backbone = create_backbone(mcfg.backbone, pretrained=mcfg.pretrained and load_weights,
                               weights=mcfg.weights if load_weights else None, residual_init=mcfg.residual_init)
    if mcfg.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)  # before insertion: ASTRM/GSM hold 5D weights
    inserted = insert_temporal_modules(backbone, mcfg.temporal_module, mcfg.clip_len, mcfg.astrm)
    feature_dim = FEATURE_DIMS[mcfg.backbone]
    head = build_temporal_head(mcfg.temporal_head, feature_dim, mcfg.hidden_dim, mcfg.head_layers, mcfg.head_heads)
    if with_projection is None:
        with_projection = cfg.loss.contrastive != "none"
    projection = None
    if with_projection:
        proj_in = head.out_dim if mcfg.softic_feature == "temporal" else feature_dim
        projection = ProjectionHead(proj_in, mcfg.projection_dim)
    fixed = TEMPORAL_MODULES.get(mcfg.temporal_module).where is not None  # built for exactly clip_len frames
    return Spotter(backbone, inserted, head, num_classes, mcfg.clip_len, fixed_clip_len=fixed,
                   feature_dim=feature_dim, dropout=mcfg.dropout,
                   projection=projection, softic_feature=mcfg.softic_feature, channels_last=mcfg.channels_last,
                   input_transform=build_input(mcfg.input))
