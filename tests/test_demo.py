"""The demo pipeline end to end at the tiny preset: synth, train a few steps, infer, eval, report."""

import json
import math

import pytest
import torch

from pespot.cli import main
from pespot.data.labels import Event, Video
from pespot.demo import demo_config, fit_steps, frequency_baseline, run_demo
from pespot.metrics import compute_map


def test_frequency_baseline_scores_every_frame_by_class_share():
    train = [Video("a", 100, 25.0, [Event(10, "x"), Event(20, "x"), Event(30, "y")])]
    test = [Video("b", 5, 25.0, [Event(2, "x")])]
    (pred,) = frequency_baseline(train, test, ["x", "y", "z"])
    assert len(pred.events) == 10  # 5 frames x 2 classes with training events
    assert {e.score for e in pred.events if e.label == "x"} == {0.02}
    assert {e.score for e in pred.events if e.label == "y"} == {0.01}
    res = compute_map(test, [pred], ["x", "y", "z"], (0,))
    assert 0 < res.mAP[0] < 1  # one true frame among five equally scored ones


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 7, 8, 13, 97, 480, 487, 500, 1200])
def test_demo_trains_exactly_the_steps_asked(tmp_path, steps):
    # --steps 500 used to train 8 x 62 = 496 steps, --steps 487 (a prime) 480
    cfg = demo_config(tmp_path / "data", tmp_path / "run", "cpu", 0)
    preset_epochs, preset_warmup = cfg.train.epochs, cfg.optim.warmup_epochs
    fit_steps(cfg, steps)
    per_epoch = math.ceil(cfg.clips_per_epoch / cfg.train.batch_size)  # the trainer's steps per epoch
    assert cfg.train.epochs * per_epoch == steps
    assert 1 <= cfg.train.epochs <= preset_epochs
    assert per_epoch >= 4 or cfg.train.epochs == 1
    # the warm-up is the preset's share of the steps (1 epoch of 8), however many epochs the steps are split into
    assert cfg.optim.warmup_epochs * per_epoch == pytest.approx(steps * preset_warmup / preset_epochs)


def test_demo_steps_run_through_the_trainer(tiny_dataset, tmp_path):
    from pespot.train.trainer import train

    cfg = demo_config(tiny_dataset, tmp_path / "run", "cpu", 0,
                      ["model.clip_len=8", "data.height=32", "data.num_workers=0", "train.val_clips=2",
                       "train.threads=1"])
    fit_steps(cfg, 7)  # a prime below the preset's 8 epochs: used to be 7 epochs of 1 step
    summary = train(cfg, progress=False)
    assert (summary["steps"], summary["epochs_completed"]) == (7, 1)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["scheduler"]["last_epoch"] == 7  # the schedule ends with the last step


@pytest.mark.slow  # one of the longest of the default suite (make test <= 4 min)
def test_demo_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    overrides = ["train.epochs=2", "train.clips_per_epoch=4", "train.batch_size=2", "train.val_clips=2",
                 "train.start_val_epoch=1", "model.clip_len=16", "data.num_workers=0", "train.threads=2"]
    results = run_demo(out, preset="tiny", minutes=3, progress=False, overrides=overrides)
    run = out / "run"
    for name in ("results.json", "results.md", "predictions_test.json", "predictions_test.csv",
                 "checkpoints/best.pt", "metrics.jsonl"):
        assert (run / name).is_file(), name
    assert list((run / "plots").glob("ap_model_tol*.png")) and list((run / "plots").glob("timeline_*.png"))
    saved = json.loads((run / "results.json").read_text())
    assert saved["model"]["mAP"].keys() == {"0", "1", "2", "4"}
    assert saved["rarest_class"] in saved["model"]["per_class"]
    # every deviation from the paper's training recipe is named, with the paper's value and the demo's
    deviations = saved["recipe_deviations"]
    assert deviations["optim.sam"] == {"paper": "asam", "here": "none"}
    assert deviations["data.fg_upsample"] == {"paper": None, "here": 1.0}
    assert deviations["model.input"] == {"paper": "rgb", "here": "gray_diff"}
    assert deviations["data.dilate_len"] == {"paper": 0, "here": 2}
    assert deviations["model.pretrained"] == {"paper": True, "here": False}
    assert "optim.sam_start" not in deviations and "loss.classification" not in deviations
    assert {p.name for p in (run / "plots").glob("learning_curve_*.png")} == {"learning_curve_map.png",
                                                                            "learning_curve_loss.png"}
    for res in (results["model"], results["baseline"]):
        assert all(0.0 <= v <= 1.0 for v in res["mAP"].values())
    printed = capsys.readouterr().out
    assert "trivial baseline" in printed and "(rarest)" in printed
    assert "optim.sam: asam -> none" in printed  # the deviations are printed when training starts
    # the same folder again is refused with one clear line, not overwritten
    assert main(["demo", "--out", str(out), "--preset", "tiny"]) == 1
    assert "already there" in capsys.readouterr().err


@pytest.mark.parametrize("minutes", ["0", "-1"])
def test_demo_rejects_bad_budget(tmp_path, capsys, minutes):
    assert main(["demo", "--out", str(tmp_path / "d"), "--minutes", minutes]) == 1
    assert "--minutes" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--steps", "100", "--minutes", "5"]])
def test_demo_rejects_bad_steps(tmp_path, capsys, argv):
    assert main(["demo", "--out", str(tmp_path / "d"), *argv]) == 1
    assert "--steps" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
