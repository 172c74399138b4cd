"""Plots (per-class AP bars, timelines) and the frame-tolerance ``pespot eval`` command."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from pespot.cli import main
from pespot.data.labels import Event, Video, save_classes, save_split
from pespot.metrics import compute_map
from pespot.postprocess import apply_nms
from pespot.viz import plot_per_class_ap, plot_timeline, plot_timelines, safe_name

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_split(tmp_path):
    """Truth and predictions of three videos, classes a/b/c; predictions hit, miss by one frame, or are noise."""
    rng = np.random.default_rng(0)
    truth, pred = [], []
    for v in range(3):
        frames = sorted(rng.choice(200, size=8, replace=False).tolist())
        events = [Event(int(f), "abc"[i % 3]) for i, f in enumerate(frames)]
        truth.append(Video(f"match {v}/clip", 200, 25.0, events))
        p = [Event(e.frame + int(rng.integers(-1, 2)), e.label, score=float(rng.random())) for e in events]
        p += [Event(e.frame + 1, e.label, score=0.05) for e in events]  # neighbours for NMS to remove
        pred.append(Video(f"match {v}/clip", -1, 25.0, p))
    save_classes(["a", "b", "c"], tmp_path / "class.txt")
    save_split(truth, tmp_path / "test.json")
    save_split(pred, tmp_path / "pred.json")
    return truth, pred


def is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_per_class_ap_bars_one_png_per_tolerance(tmp_path):
    truth, pred = make_split(tmp_path)
    result = compute_map(truth, pred, ["a", "b", "c"], [0, 2])
    paths = plot_per_class_ap(result, tmp_path / "plots")
    assert [p.name for p in paths] == ["ap_tol0.png", "ap_tol2.png"]
    assert all(is_png(p) for p in paths)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["ap_tol0.png", "ap_tol2.png"]  # no temp files
    # the bars differ between tolerances (AP at 2 frames is higher), so the images differ
    a, b = (np.asarray(Image.open(p).convert("L"), dtype=np.int16) for p in paths)
    assert a.shape == b.shape and np.abs(a - b).sum() > 0


def test_timeline_draws_predictions(tmp_path):
    truth, pred = make_split(tmp_path)
    with_pred = plot_timeline(truth[0], pred[0], tmp_path / "t1.png", ["a", "b", "c"])
    truth_only = plot_timeline(truth[0], None, tmp_path / "t2.png", ["a", "b", "c"])
    img1 = np.asarray(Image.open(with_pred).convert("RGB"), dtype=np.int16)
    img2 = np.asarray(Image.open(truth_only).convert("RGB"), dtype=np.int16)
    assert img1.shape == img2.shape
    # predictions are coloured marks: more non-grey pixels than the truth-only plot
    colour = lambda img: int((np.abs(img[..., 0] - img[..., 2]) > 40).sum())
    assert colour(img1) > colour(img2) + 50
    paths = plot_timelines(truth, pred, tmp_path / "tl", videos=[truth[2].video])
    assert [p.name for p in paths] == [f"timeline_{safe_name(truth[2].video)}.png"] and is_png(paths[0])
    assert safe_name("a/b c:d") == "a_b_c_d"


def run_cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eval_cli_json_nms_and_plots(tmp_path, capsys):
    truth, pred = make_split(tmp_path)
    code, out, _ = run_cli(["eval", str(tmp_path / "test.json"), str(tmp_path / "pred.json"), "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    assert set(res["mAP"]) == {"0", "1", "2", "4"}
    assert set(res["per_class"]) == {"a", "b", "c"} and set(res["per_class"]["a"]) == {"0", "1", "2", "4"}
    direct = compute_map(truth, pred, ["a", "b", "c"])
    assert res["mAP"]["1"] == direct.mAP[1]

    plot_dir = tmp_path / "figs"
    code, out, _ = run_cli(["eval", str(tmp_path / "test.json"), str(tmp_path / "pred.json"), "--tolerances", "0",
                            "1", "--nms", "1", "--json", "--plot", str(plot_dir), "--videos", truth[1].video],
                           capsys)
    assert code == 0
    res = json.loads(out)
    assert set(res["mAP"]) == {"0", "1"} and res["nms"] == {"method": "local_max", "window": 1}
    assert set(res["without_nms"]["mAP"]) == {"0", "1"}
    # top level = after NMS, without_nms = raw predictions
    after = compute_map(truth, apply_nms(pred, "local_max", 1), ["a", "b", "c"], [0, 1])
    assert res["mAP"] == {"0": after.mAP[0], "1": after.mAP[1]}
    assert res["without_nms"]["mAP"] == {"0": direct.mAP[0], "1": direct.mAP[1]}
    assert after.mAP != {0: direct.mAP[0], 1: direct.mAP[1]}  # NMS changed something in this data
    names = sorted(p.name for p in plot_dir.iterdir())
    assert names == ["ap_tol0.png", "ap_tol1.png", f"timeline_{safe_name(truth[1].video)}.png"]
    assert all(is_png(plot_dir / n) for n in names)

    # human-readable: both tables, as E2E-Spot prints them
    code, out, _ = run_cli(["eval", str(tmp_path / "test.json"), str(tmp_path / "pred.json"), "--nms", "1"], capsys)
    assert code == 0 and "mAP without NMS" in out and "mAP with NMS (local_max, window 1)" in out
    assert "Avg mAP (across tolerances)" in out
    # predictions that had the NMS already (as infer's have): one table and a line saying so, not two equal tables
    save_split(apply_nms(pred, "local_max", 1), tmp_path / "pred_nms.json")
    code, out, _ = run_cli(["eval", str(tmp_path / "test.json"), str(tmp_path / "pred_nms.json"), "--nms", "1"],
                           capsys)
    assert code == 0 and out.count("AP @ tol") == 1
    assert "mAP with NMS (local_max, window 1): the same as without" in out


def test_eval_cli_errors_are_one_line(tmp_path, capsys):
    make_split(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps([{"video": "elsewhere", "events": [
        {"frame": 1, "label": "a", "score": 0.5}]}]))
    code, _, err = run_cli(["eval", str(tmp_path / "test.json"), str(tmp_path / "bad.json")], capsys)
    assert code == 1 and "'elsewhere' is not in the truth" in err and err.count("\n") == 1
    # class.txt next to the truth is used: a label outside it is an error
    (tmp_path / "bad.json").write_text(json.dumps([{"video": "match 0/clip", "events": [
        {"frame": 1, "label": "z", "score": 0.5}]}]))
    code, _, err = run_cli(["eval", str(tmp_path / "test.json"), str(tmp_path / "bad.json")], capsys)
    assert code == 1 and "unknown class 'z'" in err
    code, _, err = run_cli(["eval", str(tmp_path / "test.json"), str(tmp_path / "missing.json")], capsys)
    assert code == 1 and "missing.json" in err
