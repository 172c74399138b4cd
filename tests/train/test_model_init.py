"""``model.init=RUN`` (issue 21): a training run starts from the weights of a trained run; the classifier is kept when
the classes are the same and re-initialised (said on stderr) when they differ; another architecture is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_tiny_run

from pespot.cli import main
from pespot.config import load_config
from pespot.data.synthetic import CLASSES
from pespot.errors import ConfigError
from pespot.model import build_model
from pespot.train.init import init_from_run

pytestmark = pytest.mark.usefixtures("one_thread")


def fresh_model(clip_len: int = 8, num_classes: int = len(CLASSES)):
    torch.manual_seed(123)  # another draw than the run's (seed 0)
    cfg = load_config(None, ["model.pretrained=false", f"model.clip_len={clip_len}"])
    return build_model(cfg, num_classes, load_weights=False)


def run_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)["model"]


def test_same_classes_copies_every_tensor(tmp_path):
    run = write_tiny_run(tmp_path / "run", CLASSES)
    model = fresh_model()
    result = init_from_run(model, run, list(CLASSES))
    state, own = run_state(run), model.state_dict()
    assert result.classifier_kept and result.loaded == len(state)
    assert all(torch.equal(own[k], state[k]) for k in state)
    assert "classifier included" in result.message(list(CLASSES))


@pytest.mark.parametrize("classes", [["a", "b"], list(reversed(CLASSES))], ids=["fewer", "same-count-other-order"])
def test_other_classes_reinitialise_only_the_classifier(tmp_path, classes):
    run = write_tiny_run(tmp_path / "run", CLASSES)
    model = fresh_model(num_classes=len(classes))
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("classifier.")}
    result = init_from_run(model, run, classes)
    state, own = run_state(run), model.state_dict()
    assert not result.classifier_kept
    body = [k for k in state if not k.startswith("classifier.")]
    assert body and all(torch.equal(own[k], state[k]) for k in body)
    # the classifier is the new model's own draw, not the run's rows
    assert all(torch.equal(own[k], before[k]) for k in before)
    assert not torch.equal(own["classifier.bias"][: len(state["classifier.bias"])][:3], state["classifier.bias"][:3])
    assert "re-initialised" in result.message(classes)


def test_another_architecture_is_refused_naming_the_tensor(tmp_path):
    run = write_tiny_run(tmp_path / "run", CLASSES, clip_len=8)
    model = fresh_model(clip_len=16)  # ASTRM's global temporal block is built for the clip length
    with pytest.raises(ConfigError, match=r"model.init.*another architecture.*tensor '.*'"):
        init_from_run(model, run, list(CLASSES))


def test_a_missing_run_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"'model.init'.*nowhere"):
        init_from_run(fresh_model(), tmp_path / "nowhere", list(CLASSES))


def toy_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", "paper", "--quiet", "--set", f"data.root={root}", f"out={out}",
            "model.pretrained=false", "model.clip_len=8", "data.height=32", "data.crop=null", "data.num_workers=0",
            "train.batch_size=2", "train.clips_per_epoch=2", "train.epochs=1", "train.val_clips=2",
            "train.criterion=loss", "train.start_val_epoch=2", "train.threads=1", "optim.sam=none", *extra]


@pytest.mark.parametrize("run_classes", [["x", "y", "z"], list(CLASSES)], ids=["other-classes", "same-classes"])
def test_train_starts_from_the_run_and_says_so(tiny_dataset, tmp_path, capsys, run_classes):
    run = write_tiny_run(tmp_path / "source", run_classes, height=32)
    out = tmp_path / "finetuned"
    assert main(toy_args(tiny_dataset, out, f"model.init={run}")) == 0
    err = capsys.readouterr().err
    same = run_classes == list(CLASSES)
    assert ("classifier included" in err) == same and ("re-initialised" in err) == (not same)
    # One warm-up step at lr 1e-5 from the run's weights: the trained run stays next to them, far from a new draw.
    trained = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]
    source = run_state(run)
    stem = "backbone.stem.conv.weight"
    assert (trained[stem] - source[stem]).abs().max() < 1e-3
    assert (fresh_model().state_dict()[stem] - source[stem]).abs().max() > 1e-1
    if same:
        assert (trained["classifier.weight"] - source["classifier.weight"]).abs().max() < 1e-3
    else:
        assert trained["classifier.weight"].shape[0] == len(CLASSES) + 1 != source["classifier.weight"].shape[0]


def test_train_refuses_an_init_of_another_architecture_before_writing(tiny_dataset, tmp_path, capsys):
    run = write_tiny_run(tmp_path / "source", list(CLASSES), height=32, clip_len=16)
    out = tmp_path / "finetuned"
    assert main(toy_args(tiny_dataset, out, f"model.init={run}")) == 1
    err = capsys.readouterr().err
    assert "model.init" in err and "another architecture" in err and len(err.strip().splitlines()) == 1
    assert not (out / "checkpoints").exists()
