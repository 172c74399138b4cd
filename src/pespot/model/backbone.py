"""The frame encoder: a timm RegNetY with its ImageNet head removed, and the per-block temporal module.

``create_backbone`` returns a timm RegNet whose forward maps frames (N, 3, H, W) to spatially average-pooled
features (N, D), D = 368 (regnety_002) or 768 (regnety_008). ``insert_temporal_modules`` then puts a temporal
module into every bottleneck of stages s1-s4 (method-spec section 3):
- ``tsm`` / ``gsm`` (E2E-Spot): on the input of ``conv1``, i.e. the shift happens before the first 1x1 conv, on
  the residual branch only;
- ``astrm`` (the paper, "after the first conv"): ``conv1`` becomes ``Sequential(conv1, ASTRM(C_out, T))``, after
  conv1's BN + ReLU and before the strided grouped conv2.
Weights (ImageNet through timm, or a local file) are loaded before the insertion, while the state-dict keys are
still timm's.
"""

from __future__ import annotations

from torch import nn

from pespot.config import AstrmConfig
from pespot.errors import ConfigError
from pespot.model import weights as weights_io
from pespot.registry import TEMPORAL_MODULES

FEATURE_DIMS = {"regnety_002": 368, "regnety_008": 768}
RESIDUAL_INITS = ("live", "zero")


def create_backbone(name: str = "regnety_002", *, pretrained: bool = False, weights: str | None = None,
                    residual_init: str = "live") -> nn.Module:
    """timm RegNetY ``name`` without its classifier (forward: (N, 3, H, W) -> pooled (N, D)).

    ``weights``: a local timm state dict (``.safetensors`` or ``.pth``), wins over ``pretrained``.
    ``pretrained``: ImageNet weights from the local Hugging Face cache or the hub; offline, one warning and
    random initialisation (no network attempt at all when HF_HUB_OFFLINE is set).
    ``residual_init`` (``model.residual_init``): the random initialisation of the BatchNorm after each
    bottleneck's last conv. ``live``: gamma = 1, so every residual branch (and the ASTRM/GSM module inside it)
    contributes and gets a gradient from step 1; ``zero``: timm's ``zero_init_last`` (gamma = 0), under which a
    network trained from scratch starts as the stem plus the strided shortcut convs and the inserted modules get
    exactly zero gradient at first. Loaded weights replace either.
    """
    import timm

    if name not in FEATURE_DIMS:
        raise ConfigError(f"config key 'model.backbone': expected one of {', '.join(FEATURE_DIMS)}, got {name!r}")
    if residual_init not in RESIDUAL_INITS:
        raise ConfigError(f"config key 'model.residual_init': expected one of {', '.join(RESIDUAL_INITS)}, "
                          f"got {residual_init!r}")
    net = timm.create_model(name, pretrained=False, num_classes=0, zero_init_last=residual_init == "zero")
    if weights:
        weights_io.load_weights_file(net, weights, name)
    elif pretrained:
        net = weights_io.load_pretrained(net, name)
    return net


def bottlenecks(net: nn.Module) -> list[nn.Module]:
    """The bottleneck blocks of stages s1-s4, in order."""
    return [block for stage in (net.s1, net.s2, net.s3, net.s4) for block in stage.children()]


@TEMPORAL_MODULES.register("none", where=None)
def _no_module(channels: int, clip_len: int, astrm: AstrmConfig | None) -> nn.Module | None:
    return None


@TEMPORAL_MODULES.register("tsm", where="input")
def _tsm(channels: int, clip_len: int, astrm: AstrmConfig | None) -> nn.Module:
    from pespot.model.shift import TemporalShift

    return TemporalShift(channels, clip_len)


@TEMPORAL_MODULES.register("gsm", where="input")
def _gsm(channels: int, clip_len: int, astrm: AstrmConfig | None) -> nn.Module:
    from pespot.model.shift import GatedShift

    return GatedShift(channels, clip_len)


@TEMPORAL_MODULES.register("astrm", where="output")
def _astrm(channels: int, clip_len: int, astrm: AstrmConfig | None) -> nn.Module:
    from pespot.model.astrm import ASTRM

    return ASTRM(channels, clip_len, astrm)


def insert_temporal_modules(net: nn.Module, kind: str, clip_len: int, astrm: AstrmConfig | None = None
                            ) -> list[nn.Module]:
    """Put a ``kind`` temporal module (``pespot.registry.TEMPORAL_MODULES``) into every bottleneck of s1-s4 (in
    place); returns the inserted modules. A module declared ``where="input"`` acts on conv1's input (E2E-Spot's
    shifts), ``"output"`` after conv1 -> BN -> ReLU (ASTRM); ``None`` inserts nothing."""
    from pespot.model.shift import ShiftThenConv

    entry = TEMPORAL_MODULES.get(kind)
    inserted: list[nn.Module] = []
    if entry.where is None:
        return inserted
    for block in bottlenecks(net):
        conv1 = block.conv1
        if entry.where == "output":
            module = entry.builder(conv1.conv.out_channels, clip_len, astrm)
            block.conv1 = nn.Sequential(conv1, module)  # after conv1 -> BN -> ReLU, before conv2
        else:
            module = entry.builder(conv1.conv.in_channels, clip_len, astrm)
            block.conv1 = ShiftThenConv(conv1, module)  # on conv1's input
        inserted.append(module)
    return inserted
