"""benchmarks/finetune.py (issue 21): the two arms differ only in their starting weights, the steps to reach a level
are read off the learning curve, and (slow) the whole plumbing on two tiny worlds."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from pespot.config import config_differences, load_config

ROOT = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("finetune_bench", ROOT / "benchmarks" / "finetune.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ft = _load_bench()


def test_steps_to_reach_is_the_first_step_at_or_above_the_level():
    curve = [[40, 0.1], [80, 0.35], [120, 0.3], [160, 0.5]]
    assert ft.steps_to_reach(curve, 0.3) == 80
    assert ft.steps_to_reach(curve, 0.5) == 160
    assert ft.steps_to_reach(curve, 0.6) is None
    assert ft.steps_to_reach([], 0.1) is None


def test_the_arms_differ_only_in_their_starting_weights(tiny_dataset, tmp_path):
    args = ft.parse_args(["--source", str(tiny_dataset), "--target", str(tiny_dataset), "--out", str(tmp_path),
                          "--steps", "60", "--epochs", "6", "--set", "model.clip_len=16"])
    scratch = ft.cell_config(args, "scratch", 1, tmp_path / "a")
    tuned = ft.cell_config(args, "finetune", 1, tmp_path / "b")
    source = ft.cell_config(args, "source", 1, tmp_path / "c")
    assert tuned.model.init == str(tmp_path / "source" / "seed1" / "run") and scratch.model.init is None
    keys = ("model", "data", "loss", "optim", "train", "eval")
    assert [d[0] for d in config_differences(scratch, tuned, keys)] == ["model.init"]
    assert scratch.train.epochs == 6 and scratch.clips_per_epoch == 10 * scratch.train.batch_size
    assert source.train.epochs == 8 and scratch.model.clip_len == 16 and scratch.train.seed == 1
    assert load_config("synthetic").data.height == scratch.data.height  # the from-scratch recipe


@pytest.mark.slow  # three tiny trainings in subprocesses: 2.5-4.5 minutes on the loaded 2-core machine
def test_the_benchmark_runs_end_to_end_on_two_tiny_worlds(tiny_dataset, tmp_path):
    from pespot.data.synthetic import generate

    other = generate(tmp_path / "other", "tiny", seed=1)
    results = tmp_path / "finetune"
    code = ft.main(["--source", str(tiny_dataset), "--target", str(other), "--seeds", "0", "--source-steps", "4",
                    "--source-epochs", "2", "--steps", "4", "--epochs", "2", "--levels", "0.0", "1.01",
                    "--out", str(tmp_path / "runs"), "--results", str(results),
                    "--set", "model.clip_len=16", "data.height=32"])
    assert code == 0
    report = json.loads(results.with_suffix(".json").read_text())
    assert report["seeds"] == [0] and report["classes_same"]
    low, high = report["levels"]
    assert low["scratch_steps"] == [2] and low["finetune_steps"] == [2]  # every run is >= 0 after its first epoch
    assert high["scratch_steps"] == [None] and high["finetune_steps"] == [None]  # mAP never exceeds 1
    assert [len(c) for c in report["curves"]["finetune"].values()] == [2]
    log = (tmp_path / "runs" / "logs" / "finetune-seed0.log").read_text()
    assert "model.init: starting from" in log and "classifier included" in log
    assert "not reached" in results.with_suffix(".md").read_text()
