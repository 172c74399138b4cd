"""benchmarks/accuracy.py: row configs, the claim verdicts and the whole plumbing (seeds, parallel cells, resume,
report with learning curves) on the tiny preset.

The end-to-end test trains two rows x two seeds for 2 steps each (clip length 8) on the ``tiny`` synthetic
dataset, in two worker processes, one cell resumed from a checkpoint written by a stopped run.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from pespot.config import config_differences, load_config
from pespot.data.labels import Event, Video

ROOT = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("accuracy_bench", ROOT / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


acc = _load_bench()

# What the from-scratch recipe (the synthetic preset) sets for every row, so rows may differ from the named
# presets there; the report lists these keys.
RECIPE_SECTIONS = ("model", "loss", "optim")


def _differences(a, b) -> dict[str, tuple]:
    recipe = set(acc.recipe_keys(a)) | set(acc.recipe_keys(b)) | {"model.channels_last", "model.pretrained",
                                                                   "optim.warmup_epochs"}
    diffs = {k: (x, y) for k, x, y in config_differences(a, b, RECIPE_SECTIONS)}
    if a.data.mixup_alpha != b.data.mixup_alpha:
        diffs["data.mixup_alpha"] = (a.data.mixup_alpha, b.data.mixup_alpha)
    return {k: v for k, v in diffs.items() if k not in recipe}


@pytest.mark.parametrize(("row", "preset"), [("e2e-spot", "e2e-spot"), ("paper", "paper")])
def test_method_rows_match_their_presets(tmp_path, row, preset):
    budget = acc.Budget(steps=16, epochs=8)
    cfg = acc.row_config(acc.get_row(row), budget, tmp_path, tmp_path / "run", seed=0)
    assert _differences(cfg, load_config(preset)) == {}


def test_ablation_rows_change_only_their_keys(tmp_path):
    budget = acc.Budget(steps=16, epochs=8)
    paper = acc.row_config(acc.get_row("paper"), budget, tmp_path, tmp_path / "run", seed=0)
    expected = {
        "paper-gsm": {"model.temporal_module": ("astrm", "gsm")},
        "paper-no-softic": {"loss.contrastive": ("softic", "none")},
        "paper-no-asam": {"optim.sam": ("asam", "none")},
        "paper-focal": {"loss.classification": ("bce", "focal"), "loss.contrastive": ("softic", "none")},
        "paper-sam": {"optim.sam": ("asam", "sam")},  # rho null: SAM's own 0.05
    }
    for name, diff in expected.items():
        cfg = acc.row_config(acc.get_row(name), budget, tmp_path, tmp_path / "run", seed=0)
        assert {k: (x, y) for k, x, y in config_differences(paper, cfg, RECIPE_SECTIONS)} == diff, name
        assert config_differences(paper, cfg, ("train", "eval", "data")) == []  # the same budget and data
    e2e = acc.row_config(acc.get_row("e2e-spot"), budget, tmp_path, tmp_path / "run", seed=0)
    assert config_differences(paper, e2e, ("train", "eval")) == []
    assert (paper.train.epochs, paper.clips_per_epoch) == (8, 2 * paper.train.batch_size)  # 16 steps
    assert paper.train.val_videos == acc.VAL_VIDEOS and paper.train.start_val_epoch == 0
    seed2 = acc.row_config(acc.get_row("paper"), budget, tmp_path, tmp_path / "run", seed=2)
    assert config_differences(paper, seed2, ("train",)) == [("train.seed", 0, 2)]


def test_astrm_branch_rows_switch_off_one_branch_of_the_recipe(tmp_path):
    budget = acc.Budget(steps=16, epochs=8)
    recipe = acc.row_config(acc.get_row("paper-no-asam"), budget, tmp_path, tmp_path / "run", seed=0)
    assert (recipe.model.astrm.use_fs, recipe.model.astrm.use_ft, recipe.model.astrm.use_gt) == (True, True, True)
    for branch in ("fs", "ft", "gt"):
        cfg = acc.row_config(acc.get_row(f"recipe-no-{branch}"), budget, tmp_path, tmp_path / "run", seed=0)
        assert config_differences(recipe, cfg, ("model", "loss", "optim", "data", "train")) == [
            (f"model.astrm.use_{branch}", True, False)]
    tam = acc.row_config(acc.get_row("recipe-gt-tam-init"), budget, tmp_path, tmp_path / "run", seed=0)
    assert config_differences(recipe, tam, ("model",)) == [("model.astrm.gt_init", "torch", "tam")]
    center = acc.row_config(acc.get_row("recipe-gt-center-lr-0.1"), budget, tmp_path, tmp_path / "run", seed=0)
    assert config_differences(recipe, center, ("model", "loss", "optim", "data", "train")) == [
        ("model.astrm.gt_center_init", False, True), ("optim.gt_lr_scale", 1.0, 0.1)]
    # that row is the synthetic preset (the demo's recipe) as it is now, apart from the budget the rows share
    preset = load_config("synthetic", ["optim.sam=none"])
    assert config_differences(preset, center, ("model", "loss", "optim")) == []
    assert set(acc.SUITES["astrm"].rows) >= {"paper-no-asam", "recipe-gsm", "recipe-no-gt"}


def test_verdict_needs_a_gap_beyond_the_spread():
    assert acc.verdict([0.5, 0.6, 0.7], [0.2, 0.3, 0.4])[0] == "reproduces"  # gap 0.3 > 0.1 + 0.1
    assert acc.verdict([0.2, 0.3, 0.4], [0.5, 0.6, 0.7])[0] == "contradicted"
    text, gap, spread = acc.verdict([0.40, 0.5, 0.60], [0.35, 0.45, 0.55])
    assert text == "no difference beyond the spread"
    assert gap == pytest.approx(0.05) and spread == pytest.approx(0.2)
    assert acc.verdict([0.9], [0.1])[0] == "not enough seeds"
    assert acc.mean_sd([1.0, float("nan"), 3.0]) == (2.0, pytest.approx(2 ** 0.5))


def test_coin_flip_reference_is_chance_for_the_pair_only():
    classes = ["bounce", "line_in", "line_out"]
    truth = [Video(f"v{i}", 200, 25.0, [Event(10, "bounce"), Event(100, "line_in" if i % 2 else "line_out")])
             for i in range(200)]
    res = acc.coin_flip_reference(truth, classes, ("line_in", "line_out"))
    assert all(res.per_class["bounce"][t] == 1.0 for t in acc.TOLERANCES)
    for c in ("line_in", "line_out"):  # 100 right and 100 wrong predictions in random order: AP near 0.5
        assert 0.35 < res.per_class[c][4] < 0.7


def test_report_only_lists_every_row_as_not_run(tmp_path):
    results = tmp_path / "results"
    rc = acc.main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--results", str(results),
                   "--report-only"])
    assert rc == 0
    report = json.loads((results / "accuracy.json").read_text())
    assert all(r["seeds"] == [] for r in report["rows"].values()) and list(report["rows"]) == acc.DEFAULT_ROWS
    assert report["budget"] is None and report["references"] is None and report["claims"] == []
    md = (results / "accuracy.md").read_text()
    assert md.count("not run yet") == len(acc.DEFAULT_ROWS)


def test_dataset_command_remakes_each_kind_of_dataset(tmp_path):
    """The report's command for its dataset comes from the dataset's synth.json: `pespot synth` with the seed it was
    made with for a world's preset, benchmarks/heldout_world.py for a held-out world, none for anything else."""
    def made(name, info):
        (tmp_path / name).mkdir()
        (tmp_path / name / "synth.json").write_text(json.dumps(info))
        return acc.dataset_command(tmp_path / name)

    assert made("court", {"world": "court-top", "preset": "small", "seed": 3, "format": "mp4"}) == (
        f"pespot synth {tmp_path / 'court'} --world court-top --preset small --format mp4 --seed 3")
    assert made("rally", {"preset": "tiny", "seed": 0, "format": "jpg"}) == (  # no world key: the first world
        f"pespot synth {tmp_path / 'rally'} --world rally-side --preset tiny --format jpg --seed 0")
    assert made("b", {"world": "court-top", "preset": "heldout-b", "seed": 29, "format": "mp4"}) == (
        f"python benchmarks/heldout_world.py {tmp_path / 'b'} --world b")
    assert made("other", {"world": "court-top", "preset": "heldout-b", "seed": 5, "format": "mp4"}) is None
    assert acc.dataset_command(tmp_path / "no-synth-json") is None


def test_unknown_row_is_one_line_error(tmp_path, capsys):
    assert acc.main(["--out", str(tmp_path), "--rows", "paper-typo", "--report-only"]) == 1
    err = capsys.readouterr().err
    assert "unknown row 'paper-typo'" in err and "e2e-spot" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # four cells in two worker processes: about 30 s
def test_tiny_end_to_end_seeds_jobs_resume_and_report(tmp_path, capsys):
    data, out, results = tmp_path / "data", tmp_path / "out", tmp_path / "results"
    args = ["--data", str(data), "--out", str(out), "--results", str(results), "--preset", "tiny",
            "--rows", "paper", "e2e-spot", "--seeds", "0", "1", "--steps", "2", "--epochs", "2", "--jobs", "2",
            "--set", "model.clip_len=8", "data.height=32", "train.val_clips=2", "train.batch_size=2"]
    acc.ensure_dataset(data, "tiny")
    budget = acc.Budget(steps=2, epochs=2, preset="tiny",
                        overrides=["model.clip_len=8", "data.height=32", "train.val_clips=2", "train.batch_size=2"])
    # A killed paper/seed 1 cell: one of its two steps done, a mid-epoch checkpoint left behind.
    from pespot.train.trainer import train

    out.mkdir()
    (out / "budget.json").write_text(json.dumps(budget.to_json()))
    cfg = acc.row_config(acc.get_row("paper"), budget, data, out / "paper" / "seed1" / "run", seed=1, threads=1)
    assert train(cfg, progress=False, stop_after_steps=1)["steps"] == 1

    assert acc.main(args) == 0
    printed = capsys.readouterr().out
    assert "3 of 4 cells to train" not in printed and "4 of 4 cells to train" in printed
    assert "resume" in (out / "logs" / "paper-seed1.log").read_text()
    report = json.loads((results / "accuracy.json").read_text())
    for name in ("paper", "e2e-spot"):
        for seed in (0, 1):
            result = json.loads((out / name / f"seed{seed}" / "result.json").read_text())
            assert result["status"] == "finished" and result["train"]["steps"] == 2 and result["seed"] == seed
            assert result["train"]["resumed"] == (name == "paper" and seed == 1)
            assert [step for step, _ in result["curve"]] == [1, 2]  # a validation mAP after each epoch
            assert result["config"]["train"]["seed"] == seed and result["config"]["model"]["clip_len"] == 8
            assert result["budget"] == report["budget"]
            assert (out / name / f"seed{seed}" / "predictions_test.json").is_file()
            assert "python benchmarks/accuracy.py" in result["command"] and "--cell" not in result["command"]
        row = report["rows"][name]
        assert row["seeds"] == [0, 1]
        maps = [row["measures"][str(s)]["map"] if str(s) in row["measures"] else row["measures"][s]["map"]
                for s in (0, 1)]
        mean, _ = row["summary"]["map"]
        assert mean == pytest.approx(sum(maps) / 2)
    assert {c["name"] for c in report["claims"]} == {"overall"}  # the only claim whose two rows ran
    assert (results / "accuracy_curves.png").stat().st_size > 0
    md = (results / "accuracy.md").read_text()
    assert "| `paper` | 2 |" in md and "± " in md and "accuracy_curves.png" in md

    # a rerun trains nothing; another budget on the same --out is refused
    stamp = (out / "paper" / "seed0" / "result.json").stat().st_mtime_ns
    assert acc.main(args) == 0
    assert "0 of 4 cells to train" in capsys.readouterr().out
    assert (out / "paper" / "seed0" / "result.json").stat().st_mtime_ns == stamp
    other = list(args)
    other[other.index("--steps") + 1] = "4"
    assert acc.main(other) == 1
    assert "budget.json" in capsys.readouterr().err
