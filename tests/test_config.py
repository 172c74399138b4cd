"""Config: defaults are the paper's settings, presets, YAML round trip, --set overrides and their errors."""

import pytest

from pespot.cli import COMMANDS, build_parser, main
from pespot.config import Config, apply_overrides, list_presets, load_config, save_config
from pespot.errors import ConfigError


def test_defaults_are_the_papers_settings():
    cfg = Config()
    assert cfg.model.backbone == "regnety_002"
    assert cfg.model.temporal_module == "astrm" and cfg.model.temporal_head == "bigru"
    assert cfg.model.clip_len == 128
    assert (cfg.model.astrm.beta, cfg.model.astrm.kernel_size, cfg.model.astrm.gt_activation) == (4, 3, "sigmoid")
    assert cfg.loss.classification == "bce" and cfg.loss.contrastive == "softic"
    assert (cfg.loss.softic_weight, cfg.loss.bank_size, cfg.model.projection_dim) == (0.001, 256, 128)
    from pespot.train.sam import resolve_rho

    assert cfg.optim.sam == "asam" and resolve_rho(cfg.optim.sam, cfg.optim.rho) == 2.0  # rho null: ASAM's 2
    assert cfg.optim.sam_start == 0.0  # ASAM from the first step
    assert cfg.data.mixup_alpha == 0.1
    assert cfg.optim.warmup_epochs == 3 and cfg.optim.lr * cfg.optim.warmup_start_factor == pytest.approx(1e-5)
    assert cfg.eval.overlap == 0.5


def test_e2e_spot_preset():
    cfg = load_config("e2e-spot")
    assert (cfg.model.temporal_module, cfg.model.clip_len) == ("gsm", 100)
    assert (cfg.loss.classification, cfg.loss.contrastive, cfg.optim.sam) == ("ce", "none", "none")
    assert cfg.clips_per_epoch == 5000  # E2E-Spot: 500,000 frames per epoch


def test_overrides_and_types():
    cfg = load_config("paper", ["train.epochs=7", "data.root=/x/y", "model.astrm.use_fs=false", "data.crop=null",
                                "eval.tolerances=[1,2]", "optim.lr=5e-4"])
    assert cfg.train.epochs == 7 and cfg.data.root == "/x/y" and cfg.model.astrm.use_fs is False
    assert cfg.data.crop is None and cfg.eval.tolerances == [1, 2] and cfg.optim.lr == 5e-4
    assert cfg.frames_dir == "/x/y/frames"


@pytest.mark.parametrize("item,needle", [
    ("train.epoch=3", "train.epoch"),
    ("nope.x=1", "nope"),
    ("train.epochs=three", "train.epochs"),
    ("model.astrm.use_fs=2", "model.astrm.use_fs"),
    ("model.temporal_head=lstm", "model.temporal_head"),
    ("train.epochs", "key=value"),
])
def test_bad_overrides_name_the_key(item, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config("paper", [item])


def test_yaml_round_trip_and_base(tmp_path):
    cfg = apply_overrides(load_config("e2e-spot"), ["train.epochs=3", "model.astrm.beta=8"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    (tmp_path / "child.yaml").write_text("base: e2e-spot\ntrain:\n  batch_size: 2\n")
    child = load_config(tmp_path / "child.yaml")
    assert child.train.batch_size == 2 and child.model.temporal_module == "gsm"


def test_bad_config_files(tmp_path):
    (tmp_path / "bad.yaml").write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "unknown.yaml").write_text("model:\n  colour: red\n")
    with pytest.raises(ConfigError, match="model.colour"):
        load_config(tmp_path / "unknown.yaml")
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("no-such-preset")


def test_presets_listed():
    names = list_presets()
    assert "paper" in names and "e2e-spot" in names


def test_help_lists_every_command(capsys):
    names = {name for name, _, _ in COMMANDS}
    assert names == {"synth", "stats", "extract", "info", "train", "infer", "stream", "export", "eval", "review",
                     "demo"}
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in names:
        assert name in out
    assert build_parser() is not None
