"""`pespot info`: parameter totals against the hand counts of method-spec 7, FLOPs against 7.3, errors."""

from __future__ import annotations

import json

import pytest

from pespot.cli import main


def info_json(capsys, *args: str) -> dict:
    assert main(["info", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_e2e_spot_totals_and_flops(capsys):
    info = info_json(capsys, "--preset", "e2e-spot", "--num-classes", "17")
    assert info["params_total"] == info["params_inference"] == 4_458_368  # the paper's 4.46M
    assert info["params"]["temporal_module"] == 21_602 and info["params"]["projection"] == 0
    assert (info["clip_len"], info["size"]) == (100, [224, 224])
    # method-spec 7.3: 199.15 M MACs per 224x224 frame for the backbone -> 20.61 GMACs per 100-frame clip
    assert info["gmacs"] == pytest.approx(20.61, rel=0.005)
    assert info["gflops"] == pytest.approx(2 * info["gmacs"])
    assert sum(info["gflops_by_part"].values()) == pytest.approx(info["gflops"], rel=1e-6)


def test_paper_totals(capsys):
    info = info_json(capsys, "--preset", "paper", "--num-classes", "17", "--clip-len", "128", "--size", "64x64")
    assert abs(info["params_total"] - 6.46e6) / 6.46e6 < 0.03
    assert info["params_total"] == 6_563_160  # method-spec 7.2: base + Fs + Ft(beta 4) + Gt(T=128) + MLP-736 head
    assert info["params_inference"] == 6_563_160 - info["params"]["projection"] == 5_926_392
    assert info["size"] == [64, 64]


def test_flops_ratio_paper_over_e2e_spot(capsys):
    args = ["--num-classes", "17", "--clip-len", "16", "--size", "64x64"]
    paper = info_json(capsys, "--preset", "paper", *args)
    e2e = info_json(capsys, "--preset", "e2e-spot", *args)
    assert paper["clip_len"] == e2e["clip_len"] == 16
    assert 1.4 < paper["gflops"] / e2e["gflops"] < 1.7  # the paper: 60.25 / 39.61 = 1.52
    # the backbone itself is the same network in both
    assert paper["gflops_by_part"]["backbone"] == pytest.approx(e2e["gflops_by_part"]["backbone"])


def test_clip_length_changes_gt_parameters(capsys):
    args = ["--preset", "paper", "--num-classes", "17", "--size", "32x32"]
    short = info_json(capsys, *args, "--clip-len", "100")
    assert short["params_total"] == 6_393_536  # Gt with T = 100 (method-spec 7.2)


def test_table_output_and_overrides(capsys):
    assert main(["info", "--preset", "paper", "--num-classes", "4", "--size", "32x48", "--clip-len", "8",
                 "--set", "model.temporal_head=bilstm", "--set", "loss.contrastive=none"]) == 0
    out = capsys.readouterr().out
    assert "bilstm" in out and "clip 8 x 32x48" in out
    lstm = 2 * 4 * (368 * 368 + 368 * 368 + 2 * 368)
    assert f"{lstm:,}" in out


def test_num_classes_from_the_dataset(tmp_path, capsys):
    (tmp_path / "class.txt").write_text("a\nb\nc\n")
    info = info_json(capsys, "--preset", "e2e-spot", "--set", f"data.root={tmp_path}", "--size", "32x32")
    assert info["num_classes"] == 3 and info["params"]["classifier"] == 736 * 4 + 4


@pytest.mark.parametrize("args,needle", [
    (["--preset", "paper"], "--num-classes"),
    (["--preset", "paper", "--num-classes", "17", "--size", "224by224"], "--size"),
    (["--preset", "nope", "--num-classes", "17"], "unknown preset 'nope'"),
    (["--preset", "paper", "--num-classes", "17", "--clip-len", "2"], "model.clip_len"),
])
def test_errors_are_one_line(args, needle, capsys):
    assert main(["info", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
