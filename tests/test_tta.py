"""Flip test-time augmentation (`--tta flip` in infer and stream, `eval.tta`), the NMS choice of
`pespot eval --choose-nms`, and benchmarks/tta.py on tiny untrained runs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_tiny_run, write_video

from pespot import infer
from pespot.config import load_config
from pespot.data.labels import Event, Video, load_classes, save_split
from pespot.errors import ConfigError, PespotError

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["bounce", "hit", "serve"]
CLIP = 8


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny spotter with BatchNorm variances in [1, 2] instead of 1: a random network with unit variances
    grows its activations block after block (to ~1e4 here), so that the few float32 roundings by which a batch of
    4 differs from a batch of 2 reach 6e-5 in the scores; trained networks keep their activations in range."""
    run = write_tiny_run(tmp_path_factory.mktemp("run"), CLASSES, height=32, clip_len=CLIP)
    ckpt = run / "checkpoints" / "best.pt"
    state = torch.load(ckpt, weights_only=False)
    gen = torch.Generator().manual_seed(0)
    for key, value in state["model"].items():
        if key.endswith("running_var"):
            value.copy_(1.0 + torch.rand(value.shape, generator=gen))
    torch.save(state, ckpt)
    return run


@pytest.fixture(scope="module")
def predictor(tiny_run) -> infer.Predictor:
    return infer.load_predictor(tiny_run, device="cpu")


def windows(batch: int = 2, width: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, CLIP, 32, width, 3), dtype=np.uint8)


def test_flip_leaves_the_scores_of_a_mirror_symmetric_clip_unchanged(predictor):
    clip = windows()
    symmetric = np.concatenate([clip[:, :, :, :20], clip[:, :, :, :20][:, :, :, ::-1]], axis=3)  # (B, T, H, W, 3)
    assert not np.array_equal(symmetric, symmetric[:, :, ::-1])  # not symmetric in height, time or colour
    plain = infer._score_windows(predictor, symmetric, [CLIP, 5], tta="none")
    flipped = infer._score_windows(predictor, symmetric, [CLIP, 5], tta="flip")
    np.testing.assert_allclose(flipped, plain, rtol=0, atol=1e-6)
    # An asymmetric clip does change: the test above could fail (e.g. if the wrong axis were mirrored).
    assert np.abs(infer._score_windows(predictor, clip, [CLIP, 5], tta="flip")
                  - infer._score_windows(predictor, clip, [CLIP, 5], tta="none")).max() > 1e-3


def test_flip_is_the_mean_of_the_clip_and_its_mirror(predictor):
    clip = windows(seed=1)
    valid = [CLIP, 6]
    plain = infer._score_windows(predictor, clip, valid, tta="none")
    mirror = infer._score_windows(predictor, np.ascontiguousarray(clip[:, :, :, ::-1]), valid, tta="none")
    both = infer._score_windows(predictor, clip, valid, tta="flip")
    np.testing.assert_allclose(both, (plain + mirror) / 2, rtol=0, atol=1e-6)
    predictor.tta = "flip"  # the predictor's own setting is the default
    try:
        np.testing.assert_array_equal(infer._score_windows(predictor, clip, valid), both)
    finally:
        predictor.tta = "none"
    with pytest.raises(ConfigError, match="--tta 'mirror'"):
        infer._score_windows(predictor, clip, valid, tta="mirror")


def test_tta_in_infer_and_stream_cli(tiny_run, tmp_path, capsys):
    from pespot.cli import main

    video = write_video(tmp_path / "rally.mp4", 30, width=48, height=32)
    outs = {}
    for tta in ("none", "flip"):
        outs[tta] = tmp_path / f"{tta}.json"
        assert main(["infer", str(tiny_run), str(video), "--out", str(outs[tta]), "--tta", tta,
                     "--save-scores", str(tmp_path / tta), "--batch-size", "1", "--quiet"]) == 0
    plain = infer.load_scores_npz(tmp_path / "none" / "rally.npz")[0]
    flipped = infer.load_scores_npz(tmp_path / "flip" / "rally.npz")[0]
    assert np.abs(plain - flipped).max() > 1e-4  # TTA reached the scores
    assert main(["stream", str(tiny_run), str(video), "--tta", "flip", "--out", str(tmp_path / "s.jsonl"),
                 "--quiet"]) == 0
    capsys.readouterr()
    streamed = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    expected = json.loads(outs["flip"].read_text())[0]["events"]
    assert [(e["frame"], e["label"]) for e in streamed] == [(e["frame"], e["label"]) for e in expected]
    np.testing.assert_allclose([e["score"] for e in streamed], [e["score"] for e in expected], rtol=1e-6)


def test_eval_tta_config_key():
    assert load_config("paper").eval.tta == "none"
    assert load_config("paper", ["eval.tta=flip"]).eval.tta == "flip"
    with pytest.raises(ConfigError, match="eval.tta"):
        load_config("paper", ["eval.tta=mirror"])


# ------------------------------------------------------------------------------------------------------------
# pespot eval --choose-nms


def _duplicate_case(folder: Path) -> tuple[str, str]:
    """Video a: truth at 10, predictions 10 (0.9) and a duplicate at 12 (0.8); video b: truth at 20, prediction
    0.7. Returns the paths of the truth and prediction JSON."""
    truth = [Video("a", 40, 25.0, [Event(10, "hit")]), Video("b", 40, 25.0, [Event(20, "hit")])]
    pred = [Video("a", 40, 25.0, [Event(10, "hit", score=0.9), Event(12, "hit", score=0.8)]),
            Video("b", 40, 25.0, [Event(20, "hit", score=0.7)])]
    save_split(truth, folder / "val.json")
    save_split(pred, folder / "pred.json")
    return str(folder / "val.json"), str(folder / "pred.json")


def test_choose_nms_picks_the_smallest_window_that_removes_the_duplicate(tmp_path, capsys):
    """_duplicate_case ranked: TP, FP, TP -> AP (1 + 2/3) / 2 = 0.833 at every tolerance < 2 without NMS; an NMS
    window >= 2 (local max or greedy) drops the duplicate: AP 1. Soft-NMS's penalty (d / w)^2 is 1 at d = w = 2,
    so it needs a wider window. Ties go to the smaller window, then local_max."""
    from pespot.cli import main

    _duplicate_case(tmp_path)
    assert main(["eval", "--choose-nms", str(tmp_path / "val.json"), str(tmp_path / "pred.json"), "--tolerances",
                 "0", "1", "--nms-windows", "1", "2", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chosen"]["method"] == "local_max" and out["chosen"]["window"] == 2
    table = {(row["method"], row["window"]): row["average_mAP"] for row in out["table"]}
    assert len(table) == 1 + 3 * 3
    assert table[("none", None)] == pytest.approx((1 + 2 / 3) / 2)
    assert table[("local_max", 1)] == pytest.approx((1 + 2 / 3) / 2)
    assert table[("greedy", 2)] == pytest.approx(1.0) and table[("local_max", 4)] == pytest.approx(1.0)
    assert table[("soft", 2)] == pytest.approx((1 + 2 / 3) / 2)  # no decay at d = w
    assert main(["eval", "--choose-nms", str(tmp_path / "val.json"), str(tmp_path / "pred.json")]) == 0
    printed = capsys.readouterr().out
    assert "chosen: --nms local_max --nms-window 2" in printed and "<- chosen" in printed


def test_an_nms_choice_stored_in_a_run_is_what_infer_uses(tmp_path, capsys):
    from pespot.cli import main

    val, pred = _duplicate_case(tmp_path)
    run = write_tiny_run(tmp_path / "run", ["hit"], height=32, clip_len=CLIP)
    assert infer.load_predictor(run, device="cpu").nms_from is None  # no choice yet: the config's NMS
    assert main(["eval", "--choose-nms", val, pred, "--tolerances", "0", "1", "--nms-windows", "1", "2",
                 "--run", str(run)]) == 0
    assert f"stored in {run / 'nms.json'}" in capsys.readouterr().out
    stored = json.loads((run / "nms.json").read_text())
    assert (stored["method"], stored["window"]) == ("local_max", 2) and len(stored["table"]) == 7
    predictor = infer.load_predictor(run / "checkpoints" / "best.pt", device="cpu")  # a run's checkpoint too
    assert (predictor.cfg.eval.nms, predictor.cfg.eval.nms_window) == ("local_max", 2)
    assert predictor.nms_from == str(run / "nms.json")
    # pespot infer: the run's choice by default, equal to giving it explicitly; --nms still overrides it.
    video = write_video(tmp_path / "v.mp4", 30, width=40, height=32)
    outputs = {}
    for name, extra in (("stored", []), ("explicit", ["--nms", "local_max", "--nms-window", "2"]),
                        ("none", ["--nms", "none"])):
        # One window per forward pass, as the stream runs them (a random network amplifies batch roundings).
        assert main(["infer", str(run), str(video), "--out", str(tmp_path / f"{name}.json"), "--quiet",
                     "--batch-size", "1", *extra]) == 0
        outputs[name] = json.loads((tmp_path / f"{name}.json").read_text())[0]["events"]
    assert outputs["stored"] == outputs["explicit"]
    assert len(outputs["none"]) > len(outputs["stored"])  # without NMS every frame of every class is an event
    capsys.readouterr()
    assert main(["infer", str(run), str(video), "--out", str(tmp_path / "j.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nms"] == {"method": "local_max", "window": 2,
                                                          "from": str(run / "nms.json")}
    # pespot stream too: the same events as infer with the stored choice, and its summary says where it came from.
    assert main(["stream", str(run), str(video), "--out", str(tmp_path / "s.jsonl"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["nms"] == {"method": "local_max", "window": 2, "from": str(run / "nms.json")}
    streamed = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [(e["frame"], e["label"]) for e in streamed] == [(e["frame"], e["label"]) for e in outputs["stored"]]


def test_nms_choice_errors_name_the_file_or_option(tmp_path, capsys):
    from pespot.cli import main

    val, pred = _duplicate_case(tmp_path)
    run = write_tiny_run(tmp_path / "run", ["hit"], height=32, clip_len=CLIP)
    assert main(["eval", val, pred, "--run", str(run)]) == 1
    assert "--run: only with --choose-nms" in capsys.readouterr().err
    assert main(["eval", "--choose-nms", val, pred, "--run", str(tmp_path)]) == 1
    assert f"--run {tmp_path}: not a run folder" in capsys.readouterr().err
    (run / "nms.json").write_text('{"method": "widest", "window": 2}')
    with pytest.raises(PespotError, match=r"nms\.json: key 'method': expected one of local_max"):
        infer.load_predictor(run, device="cpu")
    (run / "nms.json").write_text("{")
    with pytest.raises(PespotError, match=r"nms\.json: not an NMS choice"):
        infer.load_predictor(run, device="cpu")
    with pytest.raises(ConfigError, match="eval.nms_windows"):
        load_config("paper", ["eval.nms_windows=[]"])


# ------------------------------------------------------------------------------------------------------------
# benchmarks/tta.py


def _load_bench():
    spec = importlib.util.spec_from_file_location("tta_bench", ROOT / "benchmarks" / "tta.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_tta_verdict_counts_a_gain_only_outside_the_spread():
    bench = _load_bench()
    # means 0.50 vs 0.52: sd of [0.49, 0.50, 0.51] is 0.01 -> a 0.02 difference is a gain, 0.005 is not
    assert bench.verdict([0.51, 0.52, 0.53], [0.49, 0.50, 0.51]) == "gain"
    assert bench.verdict([0.495, 0.505, 0.515], [0.49, 0.50, 0.51]) == "no gain (within the spread)"
    assert bench.verdict([0.47, 0.48, 0.49], [0.49, 0.50, 0.51]) == "loss"
    assert bench.verdict([0.9], [0.1]) == "no claim (one run, no spread)"


def test_tta_benchmark_on_tiny_untrained_runs(tiny_dataset, tmp_path):
    bench = _load_bench()
    classes = load_classes(tiny_dataset / "class.txt")
    runs = [str(write_tiny_run(tmp_path / f"run{i}", classes, height=32, clip_len=CLIP)) for i in range(2)]
    assert bench.main(["--data", str(tiny_dataset), "--runs", *runs, "--max-videos", "1", "--tolerances", "1", "4",
                       "--out", str(tmp_path / "tta")]) == 0
    result = json.loads((tmp_path / "tta.json").read_text())
    assert result["setup"]["videos"] == 1 and len(result["runs"]) == 2
    for run in result["runs"]:
        assert set(run["none"]["mAP"]) == {"1", "4"} and 0 <= run["flip"]["average_mAP"] <= 1
    # write_tiny_run seeds every run alike: identical runs have no spread, and the paired difference is exact
    row = result["summary"]["average"]
    assert row["without"][1] == 0 and row["with"][1] == 0
    assert row["difference"][0] == pytest.approx(result["runs"][0]["flip"]["average_mAP"]
                                                 - result["runs"][0]["none"]["average_mAP"])
    assert "| mean over tolerances |" in (tmp_path / "tta.md").read_text()


def test_nms_choice_benchmark_on_tiny_untrained_runs(tiny_dataset, tmp_path):
    spec = importlib.util.spec_from_file_location("nms_choice_bench", ROOT / "benchmarks" / "nms_choice.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    classes = load_classes(tiny_dataset / "class.txt")
    runs = [str(write_tiny_run(tmp_path / f"run{i}", classes, height=32, clip_len=CLIP)) for i in range(2)]
    assert bench.main(["--data", str(tiny_dataset), "--runs", *runs, "--max-videos", "1", "--tolerances", "1", "4",
                       "--windows", "1", "4", "--out", str(tmp_path / "nms")]) == 0
    result = json.loads((tmp_path / "nms.json").read_text())
    for run in result["runs"]:
        assert run["configured"] == {"method": "local_max", "window": 1}  # the default config's
        table = {(row["method"], row["window"]): row["average_mAP"] for row in run["val_table"]}
        assert len(table) == 1 + 3 * 2 and run["chosen"]["val_average_mAP"] == max(table.values())
        # the configured NMS is one of the candidates: on validation the choice cannot be worse than it
        assert run["chosen"]["val_average_mAP"] >= table[("local_max", 1)]
    assert not any((Path(r) / "nms.json").exists() for r in runs), "the benchmark leaves the runs unchanged"
    row = result["summary"]["average"]  # identical runs (write_tiny_run seeds alike): no spread
    assert row["configured"][1] == 0 and row["chosen"][1] == 0
    assert "| mean over tolerances |" in (tmp_path / "nms.md").read_text()
