"""Distributed training: two CPU processes (torchrun, gloo) train the toy model with ASAM and SoftIC; both end
with identical weights, BatchNorm statistics and memory bank; only rank 0 writes the run folder."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The ``tiny`` synthetic dataset (the same folder as test_loop's; generated once per session)."""
    from pespot.data.synthetic import generate

    return generate(tmp_path_factory.getbasetemp() / "pespot-synth-tiny", "tiny", seed=0)


@pytest.mark.slow  # two torchrun processes, 4 steps each: ~13 s
def test_two_cpu_processes_train_identically(tiny_data, tmp_path):
    run, hashes = tmp_path / "run", tmp_path / "hashes"
    overrides = [
        f"data.root={tiny_data}", f"out={run}", "model.pretrained=false", "model.clip_len=8", "data.height=32",
        "data.crop=null", "data.num_workers=0", "train.batch_size=2", "train.clips_per_epoch=8", "train.epochs=2",
        "train.val_clips=4", "train.start_val_epoch=1", "train.log_every=1", "optim.warmup_epochs=1",
        "loss.w_bank=0.5",
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(TESTS / "ddp_worker.py"), str(hashes), "train", "--config", "paper", "--json", "--quiet"]
    for item in overrides:
        cmd += ["--set", item]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # Only rank 0 prints the summary; each optimiser step took 2 clips on each of the 2 ranks.
    summary = json.loads(proc.stdout.strip())
    assert summary["steps"] == 2 * 2 and summary["epochs_completed"] == 2

    rank0 = json.loads((hashes / "rank0.json").read_text())
    rank1 = json.loads((hashes / "rank1.json").read_text())
    assert rank0["model"] == rank1["model"]  # parameters and BatchNorm running statistics
    assert rank0["loss"] == rank1["loss"]  # the SoftIC bank was filled with both ranks' candidates

    # The checkpoint holds exactly what the ranks trained, and the bank holds entries.
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    saved = {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest() for k, v in ckpt["model"].items()}
    assert saved == rank0["model"]
    assert int(ckpt["loss"]["bank.count"].sum()) > 0
    assert len(ckpt["rng"]["ranks"]) == 2

    # One writer: a single TensorBoard event file, one line per epoch, no stray files.
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert "val_map" in json.loads(lines[1])  # sharded validation mAP: one video per rank
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
