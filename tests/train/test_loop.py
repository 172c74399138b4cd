"""The trainer: exact resume after Ctrl-C (mid-epoch and at an epoch boundary, with and without DataLoader
workers), the run folder, a short synthetic training whose loss falls, a non-finite loss that stops training with
the last checkpoint intact, and config errors raised before any work.

Everything runs on the CPU at toy size (32x32 frames, 8-16-frame clips, batch 2, a few steps) on the ``tiny``
synthetic dataset, generated once per session.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from conftest import instrumented_loss

from pespot.cli import main
from pespot.config import load_config
from pespot.errors import ConfigError
from pespot.train.guards import NonFiniteLossError
from pespot.train.history import selection_line
from pespot.train.trainer import train

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "pespot" / "configs"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The ``tiny`` synthetic dataset (10 videos of ~160 frames at 64x64), shared by the session."""
    from pespot.data.synthetic import generate

    return generate(tmp_path_factory.getbasetemp() / "pespot-synth-tiny", "tiny", seed=0)


def toy_config(root: Path, out: Path, *extra: str):
    """The paper's model (ASTRM, Bi-GRU, BCE + SoftIC, ASAM) at toy size: 2 epochs x 2 steps of 2 clips."""
    overrides = [
        f"data.root={root}", f"out={out}", "model.pretrained=false", "model.clip_len=16",
        "model.channels_last=false",  # faster on the CPU
        "data.height=32", "data.crop=null", "data.num_workers=0",
        "train.batch_size=2", "train.clips_per_epoch=4", "train.epochs=2", "train.val_clips=2",
        "train.criterion=loss", "train.start_val_epoch=2", "train.log_every=1", "train.threads=1",
        "optim.warmup_epochs=1", "loss.w_bank=0.01",  # any event frame enters the bank: it fills in a few steps
    ]
    return load_config("paper", overrides + list(extra))


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def load_last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)


def assert_same_state(a: dict, b: dict) -> None:
    """Same weights, optimiser moments, memory bank and counters (bit-identical on the CPU)."""
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["loss"]:
        assert torch.equal(a["loss"][key], b["loss"][key]), key
    for pid, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][name]), (pid, name)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]


def sigint_during_first_loss(cfg):
    """The loss of ``cfg`` (6 synthetic classes) raising SIGINT in this process on its first evaluation."""

    def hook(call, logits, targets, proj, fraction, total):
        if call == 1:
            signal.raise_signal(signal.SIGINT)
        return total

    return instrumented_loss(cfg, 6, hook)


@pytest.mark.slow  # a run, and the same run stopped and resumed twice: ~14 s
def test_resume_continues_exactly(tiny_data, tmp_path):
    straight = tmp_path / "straight"
    summary = train(toy_config(tiny_data, straight), progress=False)
    assert summary["steps"] == 4 and summary["epochs_completed"] == 2 and not summary["stopped"]

    # The same run, killed twice (mid-epoch 1, then at the end of epoch 1), resumed each time, with a DataLoader
    # worker this time: a clip depends only on (seed, epoch, index), not on who loads it.
    # The first stop is a real Ctrl-C (SIGINT) arriving during step 1: the step finishes, a checkpoint is written.
    broken = tmp_path / "broken"
    cfg = toy_config(tiny_data, broken, "data.num_workers=1")
    handler = signal.getsignal(signal.SIGINT)
    first = train(cfg, progress=False, loss_fn=sigint_during_first_loss(cfg))
    assert first["stopped"] and first["steps"] == 1 and first["epochs_completed"] == 0
    assert signal.getsignal(signal.SIGINT) is handler  # the trainer's handler is gone again
    with pytest.raises(ConfigError, match="steps per epoch"):  # a half-done epoch needs the same epoch size
        train(toy_config(tiny_data, broken, "train.clips_per_epoch=8"), resume=broken, progress=False)
    mid = load_last(broken)
    assert (mid["epoch"], mid["step"], mid["step_in_epoch"]) == (0, 1, 1)
    assert not (broken / "metrics.jsonl").read_text()  # no epoch finished yet
    second = train(cfg, resume=broken, progress=False, stop_after_steps=2)
    assert second["stopped"] and second["steps"] == 2 and second["epochs_completed"] == 1
    assert load_last(broken)["step_in_epoch"] == 0
    final = train(cfg, resume=broken, progress=False)
    assert final["steps"] == 4 and not final["stopped"]

    assert_same_state(load_last(straight), load_last(broken))
    assert load_last(broken)["loss"]["bank.count"].sum() > 0  # the bank took part (and was restored)
    a, b = read_metrics(straight), read_metrics(broken)
    assert [r["epoch"] for r in b] == [1, 2]
    for ra, rb in zip(a, b):
        for key in ("train_total", "train_cls", "train_contrastive", "val_total", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-9), key

    # Training longer: the finished run resumes with more epochs and a cosine schedule recomputed for them (the
    # saved schedule had reached lr 0, which would leave the weights unchanged).
    before = load_last(straight)["model"]
    longer = train(toy_config(tiny_data, straight, "train.epochs=3"), resume=straight, progress=False)
    assert longer["steps"] == 6 and [r["epoch"] for r in read_metrics(straight)] == [1, 2, 3]
    assert not torch.equal(before["classifier.weight"], load_last(straight)["model"]["classifier.weight"])

    # Resuming with another model is refused before any work, naming the key.
    with pytest.raises(ConfigError, match=r"model\.clip_len"):
        train(toy_config(tiny_data, broken, "model.clip_len=8"), resume=broken, progress=False)
    # A fresh run into a folder with checkpoints is refused too.
    with pytest.raises(ConfigError, match="--resume"):
        train(toy_config(tiny_data, broken), progress=False)


def test_run_folder_contents(tiny_data, tmp_path):
    """config.yaml, classes.txt, both checkpoints (loadable by inference), metrics.jsonl, TensorBoard logs."""
    from pespot.infer import load_predictor

    run = tmp_path / "run"
    summary = train(toy_config(tiny_data, run, "model.clip_len=8", "train.criterion=map",
                               "train.start_val_epoch=1",
                               "optim.sam=none", "loss.contrastive=none", "train.epochs=2"), progress=False)
    assert summary["best_epoch"] == 2  # the only epoch with a validation mAP
    records = read_metrics(run)
    assert [r["epoch"] for r in records] == [1, 2] and "val_map" not in records[0]
    assert set(records[1]["val_map"]) == {"0", "1", "2", "4"}
    assert all(0.0 <= v <= 1.0 for v in records[1]["val_map"].values())
    assert records[1]["val_map_selection"] == pytest.approx(
        sum(records[1]["val_map"][t] for t in ("1", "2", "4")) / 3)
    for key in ("step", "train_total", "val_total", "lr", "seconds", "best"):
        assert key in records[1]
    assert (run / "classes.txt").read_text().split() == (tiny_data / "class.txt").read_text().split()
    assert load_config(str(run / "config.yaml")).model.clip_len == 8
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    best = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    assert best["format"] == "pespot-checkpoint-v1" and best["epoch"] == 2 and best["best"]["epoch"] == 2
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in best["model"])
    predictor = load_predictor(run, device="cpu")  # inference rebuilds the model and loads it strictly
    assert predictor.clip_len == 8


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    def nan_from_step_3(call, logits, targets, proj, fraction, total):  # the first step of epoch 2 on
        return total * float("nan") if fraction >= 0.5 else total

    run = tmp_path / "run"
    # A checkpoint after every step: a trainer that saved after the bad step would overwrite last.pt with it.
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 3.*last good checkpoint"):
        cfg = toy_config(tiny_data, run, "train.save_every_steps=1")
        train(cfg, progress=False, loss_fn=instrumented_loss(cfg, 6, nan_from_step_3))
    last = load_last(run)
    assert (last["epoch"], last["step"]) == (1, 2)
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert [r["epoch"] for r in read_metrics(run)] == [1]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # no temp file


def test_cli_config_errors_before_any_work(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", "paper", "--set", f"data.root={tiny_data}", "--set", f"out={run}",
                 "--set", "train.epoch=3"]) == 1
    assert "train.epoch" in capsys.readouterr().err
    assert main(["train", "--config", "paper", "--set", f"data.root={tmp_path / 'missing'}",
                 "--set", f"out={run}"]) == 1
    assert "missing" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.slow  # 18 steps of the synthetic preset
def test_synthetic_preset_trains(tiny_data, tmp_path, capsys):
    # The from-scratch recipe at toy size: validation mAP after every epoch, finite losses, and a first epoch that
    # starts at the class prior (a zero classifier bias would start BCE at log 2 = 0.69 per output).
    run = tmp_path / "synthetic"
    code = main(["train", "--config", str(CONFIGS / "synthetic.yaml"), "--json", "--quiet",
                 "--set", f"data.root={tiny_data}", f"out={run}", "model.clip_len=16", "data.height=32",
                 "data.num_workers=0", "train.batch_size=2", "train.clips_per_epoch=12", "train.epochs=3",
                 "train.val_clips=2", "train.threads=1"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 18 and summary["best_epoch"] in (1, 2, 3)
    records = read_metrics(run)
    assert [set(r["val_map"]) for r in records] == [{"0", "1", "2", "4"}] * 3
    # at a zero bias BCE would start at 0.69 per output; at the prior bias of the 5-frame (dilated) labels it
    # starts lower, though above the prior's own entropy because every training clip is placed around an event
    # (data.fg_upsample 1.0: clips hold more positives than the videos): 0.34-0.36 in this toy run
    assert all(0.0 < r["train_cls"] < 0.5 and 0.0 < r["val_cls"] < 0.5 for r in records), records


def test_a_one_epoch_run_selects_by_the_map_it_computed(tiny_data, tmp_path, capsys):
    # The synthetic preset starts validation mAP at its 3rd epoch; `--set train.epochs=1` must still just work:
    # the mAP is computed on the last (only) epoch and the selection line says so.
    run = tmp_path / "short"
    code = main(["train", "--config", "synthetic", "--json", "--set", f"data.root={tiny_data}", f"out={run}",
                 "model.clip_len=8", "data.height=32", "data.num_workers=0", "train.batch_size=2",
                 "train.clips_per_epoch=2", "train.epochs=1", "train.val_clips=2", "train.threads=1",
                 "train.criterion=map"])  # the preset keeps its last epoch (train.criterion last)
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["best_epoch"] == 1 and summary["criterion"] == "map"
    assert "model selection: mean validation mAP" in captured.err and "from epoch 1" in captured.err
    assert "val_map" in read_metrics(run)[0]


def test_criterion_last_keeps_the_last_epoch_and_trains_exactly_as_map_does(tiny_data, tmp_path):
    """train.criterion=last: best.pt is every epoch's checkpoint in turn, so the last one; validation mAP is still
    computed and logged; the training itself (weights, optimiser, bank) is the same as with selection by mAP."""
    extra = ("model.clip_len=8", "train.start_val_epoch=0", "optim.sam=none")
    runs = {}
    for criterion in ("map", "last"):
        runs[criterion] = tmp_path / criterion
        summary = train(toy_config(tiny_data, runs[criterion], *extra, f"train.criterion={criterion}"),
                        progress=False)
        assert summary["criterion"] == criterion
    assert summary["best_epoch"] == 2
    records = read_metrics(runs["last"])
    assert [r["best"] for r in records] == [True, True] and all("val_map" in r for r in records)
    best = torch.load(runs["last"] / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    last = load_last(runs["last"])
    assert best["epoch"] == last["epoch"] == 2
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    assert_same_state(load_last(runs["map"]), last)
    cfg = load_config(str(runs["last"] / "config.yaml"))
    assert selection_line(cfg, 0).startswith("model selection: none (train.criterion=last)")


def test_choose_nms_at_the_end_of_training_is_stored_in_the_run(tiny_data, tmp_path, capsys):
    from pespot.infer import load_predictor

    run = tmp_path / "run"
    code = main(["train", "--config", "synthetic", "--json", "--set", f"data.root={tiny_data}", f"out={run}",
                 "model.clip_len=8", "data.height=32", "data.num_workers=0", "train.batch_size=2",
                 "train.clips_per_epoch=2", "train.epochs=1", "train.val_clips=2", "train.threads=1",
                 "eval.choose_nms=true", "eval.nms_windows=[1,4]"])
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    stored = json.loads((run / "nms.json").read_text())
    assert summary["nms"] == {k: stored[k] for k in ("method", "window", "average_mAP")}
    assert [(r["method"], r["window"]) for r in stored["table"]] == [
        ("none", None), ("local_max", 1), ("greedy", 1), ("soft", 1), ("local_max", 4), ("greedy", 4), ("soft", 4)]
    assert stored["average_mAP"] == max(r["average_mAP"] for r in stored["table"])
    assert "val.json" in stored["chosen_on"] and "best.pt" in stored["chosen_on"]
    assert "NMS chosen on the validation split" in captured.err
    predictor = load_predictor(run, device="cpu")
    assert predictor.nms_from == str(run / "nms.json") and predictor.cfg.eval.nms == stored["method"]


def test_keep_epochs_and_selection_with_the_runs_nms(tiny_data, tmp_path, capsys, monkeypatch):
    # train.keep_epochs keeps every epoch's checkpoint (sound: it loads and verifies); train.selection_nms=eval
    # scores validation with the run's own NMS instead of E2E-Spot's "every frame, no NMS".
    from pespot import infer
    from pespot.train.checkpoint import load_checkpoint

    seen = []
    real = infer.predict_videos

    def recording(*args, **kwargs):
        seen.append(kwargs.get("nms"))
        return real(*args, **kwargs)

    monkeypatch.setattr(infer, "predict_videos", recording)
    run = tmp_path / "kept"
    code = main(["train", "--config", "synthetic", "--json", "--set", f"data.root={tiny_data}", f"out={run}",
                 "model.clip_len=8", "data.height=32", "data.num_workers=0", "train.batch_size=2",
                 "train.clips_per_epoch=2", "train.epochs=2", "train.start_val_epoch=0", "train.val_clips=2",
                 "train.threads=1", "train.keep_epochs=true", "train.selection_nms=eval",
                 "train.criterion=map"])
    assert code == 0
    err = capsys.readouterr().err
    assert "after the run's NMS (local_max, window 1)" in err
    assert sorted(p.name for p in (run / "checkpoints").glob("epoch-*.pt")) == ["epoch-001.pt", "epoch-002.pt"]
    assert [load_checkpoint(run / "checkpoints" / f"epoch-00{e}.pt")["epoch"] for e in (1, 2)] == [1, 2]
    assert seen == [None, None]  # None: the run's eval.nms (the default selection passes "none")
