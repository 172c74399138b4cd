"""Every preset loads, says what it reproduces, carries the paper's/E2E-Spot's settings for its dataset, and
builds its model; each Table 3 ablation differs from the soccernetv2 preset in exactly its own row's keys."""

from __future__ import annotations

import math

import pytest

from pespot.config import PRESET_DIR, config_differences, list_presets, load_config, to_dict

DATASETS = {  # name: (classes, crop, dilate_len, epochs, start_val_epoch, nms_window)
    "tennis": (6, 224, 0, 50, 30, 1),
    "fs_comp": (4, 224, 1, 50, 30, 1),
    "fs_perf": (4, 224, 1, 50, 30, 1),
    "finegym": (32, 224, 0, 100, 80, 1),
    "finediving": (4, 224, 0, 50, 30, 1),
    "soccernetv2": (17, None, 0, 100, 80, 2),
}

# Table 3 rows: the keys in which each ablation differs from the soccernetv2 preset (besides name and out).
ABLATIONS = {
    "modules_astrm": {"optim.sam": "none", "loss.contrastive": "none"},
    "modules_astrm_sam": {"optim.sam": "sam", "optim.rho": 0.05, "loss.contrastive": "none"},  # SAM at its own scale
    "modules_astrm_asam": {"loss.contrastive": "none"},
    "modules_astrm_asam_focal": {"loss.classification": "focal", "loss.contrastive": "none"},
    "modules_astrm_asam_ic": {"loss.contrastive": "ic"},
    "modules_astrm_asam_softic": {},
    "astrm_fs": {"model.astrm.use_ft": False, "model.astrm.use_gt": False},
    "astrm_ft": {"model.astrm.use_fs": False, "model.astrm.use_gt": False},
    "astrm_gt": {"model.astrm.use_fs": False, "model.astrm.use_ft": False},
    "astrm_fs_ft": {"model.astrm.use_gt": False},
    "astrm_fs_gt": {"model.astrm.use_ft": False},
    "astrm_ft_gt": {"model.astrm.use_fs": False},
    "astrm_full": {},
    "head_bigru": {},
    "head_deformable": {"model.temporal_head": "deformable"},
    "head_bigru2": {"model.temporal_head": "bigru2"},
    "head_transformer_l1h8": {"model.temporal_head": "transformer_l1h8"},
    "head_transformer_l2h8": {"model.temporal_head": "transformer_l2h8"},
    "head_bilstm": {"model.temporal_head": "bilstm"},
    "head_mstcn": {"model.temporal_head": "mstcn"},
    "clip_64": {"model.clip_len": 64},
    "clip_100": {"model.clip_len": 100},
    "clip_128": {},
    "clip_192": {"model.clip_len": 192},
}
E2E_SPOT_ROWS = ("modules_e2e_spot", "head_e2e_spot_bigru")  # the baseline rows: the e2e-spot_soccernetv2 preset
ALL_KEYS = ("model", "data", "loss", "optim", "train", "eval", "num_classes")


def _flat_differences(a, b) -> dict:
    return {key: vb for key, _, vb in config_differences(a, b, ALL_KEYS)}


def test_every_preset_is_listed_and_documented():
    names = list_presets()
    for dataset in DATASETS:
        assert dataset in names and f"e2e-spot_{dataset}" in names
    assert {"paper", "e2e-spot", "paper_4gpu", "synthetic"} <= set(names)
    assert {f"ablations/{row}" for row in list(ABLATIONS) + list(E2E_SPOT_ROWS)} == {
        n for n in names if n.startswith("ablations/")}
    for name in names:
        text = (PRESET_DIR / f"{name}.yaml").read_text()
        assert text.startswith("# "), f"{name}.yaml: no top comment saying what it reproduces"


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_dataset_presets(dataset):
    classes, crop, dilate, epochs, start_val, nms = DATASETS[dataset]
    cfg = load_config(dataset)
    paper = load_config("paper")
    assert cfg.num_classes == classes
    assert (cfg.data.root, cfg.frames_dir) == (f"data/{dataset}", f"data/{dataset}/frames")
    assert (cfg.data.height, cfg.data.crop, cfg.data.dilate_len) == (224, crop, dilate)
    assert (cfg.train.epochs, cfg.start_val_epoch, cfg.eval.nms_window) == (epochs, start_val, nms)
    # The paper's method everywhere: same model, loss and optimiser as the paper preset.
    assert to_dict(cfg.model) == to_dict(paper.model) and cfg.model.clip_len == 128
    assert to_dict(cfg.loss) == to_dict(paper.loss) and to_dict(cfg.optim) == to_dict(paper.optim)
    # The E2E-Spot baseline on the same data: same data/train/eval settings except what E2E-Spot changes.
    base = load_config(f"e2e-spot_{dataset}")
    assert (base.model.temporal_module, base.model.clip_len, base.loss.classification, base.optim.sam) == (
        "gsm", 100, "ce", "none")
    assert base.data.mixup_alpha == 0.2 and base.optim.scheduler == "e2e_chained"
    assert {k: v for k, v in to_dict(base.data).items() if k != "mixup_alpha"} == {
        k: v for k, v in to_dict(cfg.data).items() if k != "mixup_alpha"}
    assert (base.train.epochs, base.start_val_epoch, to_dict(base.eval), base.num_classes) == (
        epochs, start_val, to_dict(cfg.eval), classes)


def test_paper_4gpu_keeps_the_global_batch():
    one, four = load_config("paper"), load_config("paper_4gpu")
    assert four.train.batch_size * 4 == one.train.batch_size == 8
    # Steps per epoch = ceil(clips / (batch * world size)): the schedule is that of one GPU with batch 8.
    assert math.ceil(four.clips_per_epoch / (2 * 4)) == math.ceil(one.clips_per_epoch / 8)


@pytest.mark.parametrize("row", list(ABLATIONS))
def test_ablation_rows_change_only_their_keys(row):
    cfg = load_config(f"ablations/{row}")
    assert _flat_differences(load_config("soccernetv2"), cfg) == ABLATIONS[row]
    assert cfg.out == f"runs/ablations/{row}"


@pytest.mark.parametrize("row", E2E_SPOT_ROWS)
def test_ablation_baseline_rows_are_e2e_spot(row):
    assert _flat_differences(load_config("e2e-spot_soccernetv2"), load_config(f"ablations/{row}")) == {}


def test_synthetic_preset_is_cpu_sized():
    cfg = load_config("synthetic")
    assert cfg.model.pretrained is False and cfg.data.height <= 96 and cfg.model.clip_len <= 64
    assert cfg.train.batch_size <= 4 and cfg.train.epochs <= 10 and cfg.data.num_workers <= 2
    assert cfg.start_val_epoch < cfg.train.epochs


def test_every_preset_builds_its_model():
    """Build each distinct model once (random init, no download) and check its outputs and clip length."""
    from pespot.model.spotter import build_model

    built: dict[str, int] = {}
    for name in list_presets():
        cfg = load_config(name)
        num_classes = cfg.num_classes or 6  # synthetic / paper / e2e-spot read class.txt; any K builds
        key = repr((to_dict(cfg.model), cfg.loss.contrastive, num_classes))
        if key in built:
            continue
        model = build_model(cfg, num_classes, load_weights=False)
        assert model.classifier.out_features == num_classes + 1, name
        assert model.clip_len == cfg.model.clip_len, name
        assert (model.projection is not None) == (cfg.loss.contrastive != "none"), name
        built[key] = sum(p.numel() for p in model.parameters())
    # Sanity of the sizes: E2E-Spot's 200MF model is ~4.45M parameters (reference-codebases 1.5); ASTRM adds more.
    sizes = sorted(built.values())
    assert 4.3e6 < sizes[0] and sizes[-1] < 1.2e7
