"""Backbone weights: ImageNet weights through timm (local Hugging Face cache or the hub), or a local state dict.

Offline with neither, one warning and the random initialisation (no network attempt at all when HF_HUB_OFFLINE is
set; a quick TCP check first otherwise, so an offline machine does not sit through the hub client's retries).
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from pespot.errors import PespotError


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connection to the hub, so an offline machine does not sit through the hub client's retries."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # behind a proxy a direct connection says nothing: let the hub client try
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_pretrained_file(name: str) -> str | None:
    """The timm ImageNet weights of ``name`` if they are already in the local Hugging Face cache."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        repo = timm.models.get_pretrained_cfg(name).hf_hub_id
        for filename in ("model.safetensors", "pytorch_model.bin"):
            path = try_to_load_from_cache(repo, filename)
            if isinstance(path, str) and Path(path).is_file():
                return path
    except Exception:  # noqa: BLE001 - a broken cache only means "not cached"
        return None
    return None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``torch.save``d state dict (a ``state_dict``/``model`` entry is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise PespotError(f"{path}: weights file not found (model.weights)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PespotError(f"{path}: cannot read weights ({reason[:200]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PespotError(f"{path}: expected a state dict of tensors (timm format)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights_file(net: nn.Module, path: str | Path, name: str = "backbone") -> None:
    """Load a timm-format state dict into a backbone without temporal modules; the ImageNet head is ignored.

    Every backbone tensor must be present with the right shape, else one PespotError naming the file.
    """
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("head.")}
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        problems = []
        if wrong:
            k = wrong[0]
            problems.append(f"{len(wrong)} shape mismatches, e.g. '{k}' {tuple(state[k].shape)} "
                            f"instead of {tuple(own[k].shape)}")
        if missing:
            problems.append(f"{len(missing)} missing tensors, e.g. '{missing[0]}'")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected tensors, e.g. '{unexpected[0]}'")
        raise PespotError(f"{path}: not a timm {name} state dict ({'; '.join(problems)})")
    net.load_state_dict(state, strict=False)


def load_pretrained(net: nn.Module, name: str) -> nn.Module:
    """ImageNet weights through timm when possible; otherwise one warning and the random initialisation."""
    cached = _cached_pretrained_file(name)
    if cached is not None:
        load_weights_file(net, cached, name)
        return net
    advice = "set model.weights to a local timm state dict or model.pretrained=false to silence this"
    if _hub_offline():
        reason = "HF_HUB_OFFLINE is set and they are not in the local Hugging Face cache"
    elif not _hub_reachable():
        reason = "the Hugging Face hub cannot be reached"
    else:
        import timm

        try:
            return timm.create_model(name, pretrained=True, num_classes=0)
        except Exception as err:  # noqa: BLE001 - any download failure falls back the same way
            reason = f"the download failed ({type(err).__name__})"
    warnings.warn(f"ImageNet weights for {name} are not available ({reason}); the backbone starts from random "
                  f"initialisation; {advice}", UserWarning, stacklevel=3)
    return net
