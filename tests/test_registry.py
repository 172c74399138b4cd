"""The registries of pluggable parts, and the three ways to extend pespot shown end to end, each with a toy part
defined in this one file (docs/architecture.md): a temporal head, a classification loss, a dataset format."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from pespot import registry
from pespot.config import load_config
from pespot.errors import ConfigError
from pespot.model import build_model
from pespot.train.losses import build_loss


def test_every_choice_key_reads_its_registry():
    assert registry.TEMPORAL_MODULES.names() == ["none", "tsm", "gsm", "astrm"]
    assert registry.TEMPORAL_HEADS.names(aliases=False) == ["bigru", "bilstm", "transformer", "deformable", "mstcn",
                                                            "none"]
    assert {"bigru2", "transformer_l1h8", "transformer_l2h8"} <= set(registry.TEMPORAL_HEADS.names())
    assert [(n, registry.activation(n)) for n in registry.LOSSES.names()] == [
        ("bce", "sigmoid"), ("ce", "softmax"), ("focal", "sigmoid")]
    assert registry.NMS.names() == ["local_max", "greedy", "soft", "none"]
    assert registry.SCHEDULERS.names() == ["warmup_cosine", "e2e_chained"]
    for key, reg in registry.ALL.items():
        with pytest.raises(ConfigError, match=rf"config key '{key}': expected one of {reg.names()[0]}"):
            load_config("paper", [f"{key}=nope"])


def test_old_head_names_are_aliases_with_their_settings():
    cfg = load_config("paper", ["model.pretrained=false", "model.clip_len=8"])
    for old, new, keys in [("bigru2", "bigru", ["model.head_layers=2"]),
                           ("transformer_l2h8", "transformer", ["model.head_layers=2", "model.head_heads=8"])]:
        with torch.device("meta"):
            a = build_model(load_config("paper", [f"model.temporal_head={old}", "model.clip_len=8"]), 3, load_weights=False)
            b = build_model(load_config("paper", [f"model.temporal_head={new}", "model.clip_len=8", *keys]), 3,
                            load_weights=False)
        assert [tuple(p.shape) for p in a.temporal_head.parameters()] == [
            tuple(p.shape) for p in b.temporal_head.parameters()]
    assert cfg.model.head_layers is None
    with pytest.raises(ConfigError, match="multiple of 6"):
        load_config("paper", ["model.temporal_head=transformer", "model.head_heads=6", "model.hidden_dim=64"])


# ---------------------------------------------------------------------------------------------------------------
# How to add a temporal head: one decorated builder (here, a mean over a sliding window of frames)


class WindowMean(nn.Module):
    """A toy head: each frame's feature averaged with its neighbours (no parameters)."""

    def __init__(self, in_dim: int, radius: int) -> None:
        super().__init__()
        self.radius, self.out_dim = radius, in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        k = 2 * self.radius + 1
        return nn.functional.avg_pool1d(x.transpose(1, 2), k, stride=1, padding=self.radius,
                                        count_include_pad=False).transpose(1, 2)


@pytest.fixture
def toy_head():
    registry.TEMPORAL_HEADS.register("window_mean")(
        lambda in_dim, width, layers, heads: WindowMean(in_dim, radius=layers or 2))
    yield "window_mean"
    registry.TEMPORAL_HEADS.unregister("window_mean")


def test_a_new_temporal_head_is_one_registration(toy_head):
    cfg = load_config("paper", ["model.pretrained=false", "model.clip_len=8", f"model.temporal_head={toy_head}",
                                "model.head_layers=1", "loss.contrastive=none"])
    model = build_model(cfg, 3).eval()
    assert isinstance(model.temporal_head, WindowMean) and model.temporal_head.radius == 1
    logits = model(torch.randn(2, 8, 3, 32, 32))
    assert logits.shape == (2, 8, 4)


# ---------------------------------------------------------------------------------------------------------------
# How to add a loss: one decorated function that declares how its logits become scores


@pytest.fixture
def toy_loss():
    @registry.LOSSES.register("soft_margin", activation="sigmoid")
    def soft_margin(logits, targets, cfg):
        x, t = logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1, targets.shape[-1]).float()
        return nn.functional.soft_margin_loss(x, 2 * t - 1)

    yield "soft_margin"
    registry.LOSSES.unregister("soft_margin")


def test_a_new_loss_is_one_registration_and_inference_scores_it_as_declared(toy_loss, tmp_path):
    from pespot.infer import CHECKPOINT_FORMAT, load_predictor

    cfg = load_config("paper", ["model.pretrained=false", "model.clip_len=8", f"loss.classification={toy_loss}",
                                "loss.contrastive=none", "data.crop=null", "data.height=32"])
    loss = build_loss(cfg.loss, 3)
    logits = torch.zeros(2, 8, 4, requires_grad=True)
    targets = torch.zeros(2, 8, 4)
    targets[..., 0] = 1
    total, _ = loss(logits, targets)
    total.backward()
    assert total.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())  # soft margin at 0: log 2
    assert loss.score_activation == "sigmoid" and logits.grad is not None
    from pespot.config import to_dict

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"format": CHECKPOINT_FORMAT, "config": to_dict(cfg), "classes": ["a", "b", "c"],
                "model": build_model(cfg, 3).state_dict()}, tmp_path / "run" / "checkpoints" / "best.pt")
    assert load_predictor(tmp_path / "run", device="cpu").activation == "sigmoid"


# ---------------------------------------------------------------------------------------------------------------
# How to add a dataset format: convert it to pespot's Video/Event form (then every command reads it)


def read_toy_csv(path) -> list:
    """A toy label format: one row per event, ``video,num_frames,frame,label``."""
    from pespot.data.labels import Event, Video

    videos: dict[str, Video] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            video = videos.setdefault(row["video"], Video(row["video"], int(row["num_frames"]), 25.0, []))
            video.events.append(Event(int(row["frame"]), row["label"]))
    return list(videos.values())


def test_a_new_dataset_format_is_one_converter(tmp_path, capsys):
    from pespot.cli import main
    from pespot.data.labels import save_classes, save_split

    src = tmp_path / "labels.csv"
    src.write_text("video,num_frames,frame,label\nmatch1,100,10,goal\nmatch1,100,60,card\nmatch2,50,5,goal\n")
    out = tmp_path / "dataset"
    out.mkdir()
    save_classes(["goal", "card"], out / "class.txt")
    save_split(read_toy_csv(src), out / "train.json")
    assert main(["stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)["splits"]["train"]
    assert (stats["videos"], stats["frames"], stats["events"]) == (2, 150, 3)
