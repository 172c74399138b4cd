"""model.input: the frames as they are (the paper) or a grey frame with its temporal differences (gray_diff)."""

from __future__ import annotations

import pytest
import torch

from pespot.config import load_config
from pespot.data.clips import normalise
from pespot.errors import ConfigError
from pespot.model.inputs import GrayDiff, build_input


def _clip(frames01: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) in [0, 1] -> ImageNet-normalised, as the data pipeline gives them."""
    b, t = frames01.shape[:2]
    return normalise(frames01.flatten(0, 1)).view(b, t, *frames01.shape[2:])


def test_gray_diff_is_grey_and_its_two_temporal_differences():
    rgb = torch.rand(2, 5, 3, 6, 7)
    out = GrayDiff()(_clip(rgb))
    grey = 0.299 * rgb[:, :, 0] + 0.587 * rgb[:, :, 1] + 0.114 * rgb[:, :, 2]
    assert out.shape == rgb.shape
    assert torch.allclose(out[:, :, 0], (grey - 0.449) / 0.226, atol=1e-5)
    assert torch.allclose(out[:, 1:, 1], (grey[:, 1:] - grey[:, :-1]) / 0.226, atol=1e-5)
    assert torch.allclose(out[:, :-1, 2], (grey[:, 1:] - grey[:, :-1]) / 0.226, atol=1e-5)
    assert torch.all(out[:, 0, 1] == 0) and torch.all(out[:, -1, 2] == 0)  # no motion at the clip's ends


def test_a_static_scene_has_no_motion_and_a_moving_dot_shows_where_it_went():
    scene = torch.rand(1, 1, 3, 8, 8).expand(1, 4, 3, 8, 8).clone()
    still = GrayDiff()(_clip(scene))
    assert still[:, :, 1:].abs().max() < 1e-5
    moving = scene.clone()
    moving[0, 1, :, 2, 2] = 1.0  # a white dot at (2, 2) in frame 1, at (2, 3) in frame 2
    moving[0, 2, :, 2, 3] = 1.0
    out = GrayDiff()(_clip(moving))[0]
    assert out[2, 1, 2, 3] > 0 and out[2, 1, 2, 2] < 0  # frame 2 - frame 1: it arrived at (2, 3), left (2, 2)
    assert out[2, 1].abs().flatten().topk(3).values[-1] < 1e-5  # and nothing else moved


def test_the_model_applies_it_and_keeps_the_papers_parameters():
    from pespot.model.spotter import build_model

    rgb_cfg = load_config("synthetic", ["model.clip_len=8", "model.input=rgb"])
    diff_cfg = load_config("synthetic", ["model.clip_len=8", "model.input=gray_diff"])
    torch.manual_seed(0)
    rgb_model = build_model(rgb_cfg, 3, load_weights=False).eval()
    torch.manual_seed(0)
    diff_model = build_model(diff_cfg, 3, load_weights=False).eval()
    assert rgb_model.state_dict().keys() == diff_model.state_dict().keys()  # no parameter, no buffer saved
    clip = _clip(torch.rand(1, 8, 3, 32, 32))
    with torch.no_grad():
        expected = rgb_model(GrayDiff()(clip))
        assert torch.allclose(diff_model(clip), expected, atol=1e-5)
        assert not torch.allclose(rgb_model(clip), expected, atol=1e-3)


def test_unknown_input_is_one_clear_error():
    with pytest.raises(ConfigError, match="model.input"):
        load_config("paper", ["model.input=depth"])
    with pytest.raises(ConfigError, match="model.input"):
        build_input("depth")
