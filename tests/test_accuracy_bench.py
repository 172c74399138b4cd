"""benchmarks/accuracy.py: row configs, budget arithmetic and the whole plumbing on the tiny preset.

The end-to-end test trains two rows for 2 steps each (clip length 16) on the ``tiny`` synthetic dataset, one of
them resumed from a checkpoint written by a stopped run, and checks the result files and the report.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from pespot.config import load_config
from pespot.data.labels import Event, Video
from pespot.train.trainer import config_differences

ROOT = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("accuracy_bench", ROOT / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


acc = _load_bench()

# What the benchmark sets for every row (the budget), so it may differ from the named presets.
# loss.bce_fg_weight: the synthetic preset's BCE positive weight (5) for every BCE row; the report states it.
BUDGET_KEYS = {"model.clip_len", "model.pretrained", "model.channels_last", "optim.warmup_epochs",
               "loss.bce_fg_weight"}


def _differences(a, b, sections=("model", "loss", "optim")) -> dict[str, tuple]:
    diffs = {k: (x, y) for k, x, y in config_differences(a, b, sections)}
    if a.data.mixup_alpha != b.data.mixup_alpha:
        diffs["data.mixup_alpha"] = (a.data.mixup_alpha, b.data.mixup_alpha)
    return {k: v for k, v in diffs.items() if k not in BUDGET_KEYS}


@pytest.mark.parametrize(("row", "preset"), [("e2e-spot", "e2e-spot"), ("paper", "paper")])
def test_method_rows_match_their_presets(tmp_path, row, preset):
    budget = acc.Budget(steps=10)
    cfg = acc.row_config(acc.get_row(row), budget, tmp_path, tmp_path / "run", None)
    assert _differences(cfg, load_config(preset)) == {}


def test_ablation_rows_change_only_their_keys(tmp_path):
    budget = acc.Budget(steps=10)
    paper = acc.row_config(acc.get_row("paper"), budget, tmp_path, tmp_path / "run", None)
    expected = {
        "paper-gsm": {"model.temporal_module": ("astrm", "gsm")},
        "paper-no-softic": {"loss.contrastive": ("softic", "none")},
        "paper-focal": {"loss.classification": ("bce", "focal"), "loss.contrastive": ("softic", "none")},
        "paper-sam": {"optim.sam": ("asam", "sam")},
    }
    for name, diff in expected.items():
        cfg = acc.row_config(acc.get_row(name), budget, tmp_path, tmp_path / "run", None)
        assert _differences(paper, cfg) == diff, name
        # and the budget is the same for every row
        assert config_differences(paper, cfg, ("train", "eval")) == []
        assert (cfg.model.clip_len, cfg.data.height, cfg.data.crop) == (acc.CLIP_LEN, 64, None)
    assert acc.row_changes(acc.get_row("paper-focal")) == {"loss.classification": "focal",
                                                            "loss.contrastive": "none"}
    e2e = acc.row_config(acc.get_row("e2e-spot"), budget, tmp_path, tmp_path / "run", None)
    assert config_differences(paper, e2e, ("train", "eval")) == []
    assert (paper.train.epochs, paper.clips_per_epoch, paper.train.batch_size) == (5, 8, 4)  # 10 steps of 4 clips


def test_plan_steps_hand_computed():
    # overhead = 0.5 s * (5 epochs * 32 val clips + 2 mAP epochs * 340 windows) = 420 s; (1200 - 420) / 5 s = 156
    # steps -> 31 whole steps in each of 5 epochs
    steps = acc.plan_steps(1200, 5.0, 0.5, epochs=5, val_clips=32, val_map_epochs=2, val_windows=340)
    assert steps == 155
    assert acc.plan_steps(100, 5.0, 0.5, epochs=5, val_clips=32, val_map_epochs=2, val_windows=340) == 5
    assert acc.whole_epochs(4, 5) == 5 and acc.whole_epochs(12, 5) == 10 and acc.whole_epochs(10, 5) == 10
    with pytest.raises(acc.PespotError, match="--steps"):
        acc.whole_epochs(0, 5)


def test_coin_flip_reference_is_chance_for_the_pair_only():
    classes = ["bounce", "line_in", "line_out"]
    truth = [Video(f"v{i}", 200, 25.0, [Event(10, "bounce"), Event(100, "line_in" if i % 2 else "line_out")])
             for i in range(200)]
    res = acc.coin_flip_reference(truth, classes, ("line_in", "line_out"))
    assert all(res.per_class["bounce"][t] == 1.0 for t in acc.TOLERANCES)
    for c in ("line_in", "line_out"):  # 100 right and 100 wrong predictions in random order: AP near 0.5
        assert 0.35 < res.per_class[c][4] < 0.7


def test_report_only_lists_every_row_as_not_run(tmp_path, capsys):
    results = tmp_path / "results"
    rc = acc.main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--results", str(results),
                   "--report-only"])
    assert rc == 0
    report = json.loads((results / "accuracy.json").read_text())
    assert [r["status"] for r in report["rows"].values()] == ["not run yet"] * len(acc.ROWS)
    assert report["budget"] is None and report["references"] is None
    md = (results / "accuracy.md").read_text()
    assert md.count("not run yet") == len(acc.ROWS)
    assert "mAP δ=0" in md and "--report-only" in md


def test_unknown_row_is_one_line_error(tmp_path, capsys):
    assert acc.main(["--out", str(tmp_path), "--rows", "paper-typo", "--report-only"]) == 1
    err = capsys.readouterr().err
    assert "unknown row 'paper-typo'" in err and "e2e-spot" in err and len(err.strip().splitlines()) == 1


def test_tiny_end_to_end_resume_skip_and_report(tmp_path, capsys):
    data, out, results = tmp_path / "data", tmp_path / "out", tmp_path / "results"
    args = ["--data", str(data), "--out", str(out), "--results", str(results), "--preset", "tiny",
            "--rows", "paper", "e2e-spot", "--steps", "2", "--epochs", "2", "--clip-len", "16", "--batch-size", "2",
            "--set", "train.val_clips=2", "--workers", "0", "--quiet"]
    # A killed paper run: one of its two steps done, a mid-epoch checkpoint left behind.
    acc.ensure_dataset(data, "tiny", "mp4")
    budget = acc.Budget(steps=2, epochs=2, batch_size=2, clip_len=16, preset="tiny", overrides=["train.val_clips=2"])
    from pespot.train.trainer import train

    cfg = acc.row_config(acc.get_row("paper"), budget, data, out / "paper" / "run", 1, num_workers=0)
    assert train(cfg, progress=False, stop_after_steps=1)["steps"] == 1

    assert acc.main(args) == 0
    printed = capsys.readouterr().out
    assert "[paper] resume" in printed and "[e2e-spot] train" in printed
    report = json.loads((results / "accuracy.json").read_text())
    for name in ("paper", "e2e-spot"):
        result = json.loads((out / name / "result.json").read_text())
        assert result["status"] == "finished" and result["train"]["steps"] == 2 and result["train"]["clips"] == 4
        assert result["train"]["resumed"] == (name == "paper")
        history = [json.loads(line) for line in (out / name / "run" / "metrics.jsonl").read_text().splitlines()]
        assert [h["epoch"] for h in history] == [1, 2] and history[-1]["step"] == 2
        assert result["config"]["model"]["clip_len"] == 16 and result["config"]["train"]["val_clips"] == 2
        assert result["budget"] == report["budget"]  # one budget for every row
        assert set(result["headline"]["mAP"]) == {"0", "1", "2", "4"}
        assert all(0.0 <= v <= 1.0 for v in result["test"]["mAP"].values())
        assert set(result["headline"]["ap"]) == {"net", "line_in", "line_out"}
        assert (out / name / "predictions_test.json").is_file()
        assert report["rows"][name]["headline"] == result["headline"]
    assert report["rarest_class"] == "net"
    md = (results / "accuracy.md").read_text()
    paper = json.loads((out / "paper" / "result.json").read_text())
    row_line = next(line for line in md.splitlines() if line.startswith("| `paper` |"))
    assert row_line.split(" | ")[1:5] == [f"{100 * paper['headline']['mAP'][t]:.1f}" for t in ("0", "1", "2", "4")]
    for name in ("paper-gsm", "paper-no-softic", "paper-focal", "paper-sam"):
        assert report["rows"][name]["status"] == "not run yet"
        assert f"| `{name}` | not run yet" in md

    # a rerun skips finished rows; another budget on the same --out is refused
    stamp = (out / "paper" / "result.json").stat().st_mtime_ns
    assert acc.main(args) == 0
    assert "finished earlier" in capsys.readouterr().out
    assert (out / "paper" / "result.json").stat().st_mtime_ns == stamp
    other = list(args)
    other[other.index("--steps") + 1] = "4"
    assert acc.main(other) == 1
    err = capsys.readouterr().err
    assert "budget.json" in err and "steps" in err

    # the default budget path: calibrate on the paper row, then whole epochs that fit the minutes
    dataset = acc.load_dataset(data)
    steps, details = acc.calibrate(cfg, dataset, minutes=0.5)
    assert details["val_windows"] == sum(-(-v.num_frames // 16) for v in dataset.splits["val"])  # no overlap
    assert details["test_windows"] == sum(1 + -(-(v.num_frames - 16) // 8) for v in dataset.splits["test"])
    assert details["seconds_per_step"] > 0 and details["seconds_per_window"] > 0
    assert steps % 2 == 0 and steps >= 2  # whole epochs, at least a step in each
    assert steps == 2 or details["estimated_train_minutes"] <= 0.5 + 0.05  # fits the minutes unless at the floor


def test_format_overhead_hand_computed():
    fm = {"batch_size": 4, "model_seconds_per_step": 5.0,
          "formats": {"mp4": {"item_cpu_ms": [100.0, 120.0], "train_seconds": [50.0, 60.0]},
                      "jpg": {"item_cpu_ms": [80.0, 80.0], "train_seconds": [40.0, 50.0]}}}
    extra = acc.format_overhead(fm)
    # (110 - 80) ms x 4 items = 0.12 s per step = 2.4 % of 5 s; jpg rounds differ by 50 / 40 - 1 = 25 %
    assert extra["seconds_per_step"] == pytest.approx(0.12)
    assert extra["fraction"] == pytest.approx(0.024)
    assert extra["spread"] == pytest.approx(0.25)
