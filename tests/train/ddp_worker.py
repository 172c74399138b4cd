"""Train in one torchrun process and record a hash of the state that process trained.

Used by test_ddp.py: ``python -m torch.distributed.run --nproc_per_node 2 tests/train/ddp_worker.py HASH_DIR train
--config PRESET --set KEY=VALUE ...``. The model and the loss are built here and handed to the trainer through its
public ``model``/``loss_fn`` parameters, so this process keeps a reference to them; after training,
``HASH_DIR/rank<R>.json`` gets a SHA-256 per tensor of the model (parameters and buffers) and of the SoftIC memory
bank, so the test can check that every rank ended with the same state. Rank 0 prints the summary as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from pespot.config import load_config
from pespot.data.labels import load_classes
from pespot.model.spotter import build_model
from pespot.train.losses import build_loss
from pespot.train.trainer import train


def tensor_hashes(module: torch.nn.Module) -> dict[str, str]:
    """SHA-256 of every tensor of ``module``'s state dict (exact bytes, on the CPU)."""
    return {key: hashlib.sha256(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for key, value in module.state_dict().items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("hash_dir")
    parser.add_argument("command", choices=["train"])
    parser.add_argument("--config", default="paper")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[])
    args, _ = parser.parse_known_args()
    cfg = load_config(args.config, args.overrides)
    num_classes = len(load_classes(Path(cfg.data.root) / "class.txt"))
    torch.manual_seed(cfg.train.seed)  # every rank builds the same weights, as the trainer itself would
    model = build_model(cfg, num_classes)
    loss_fn = build_loss(cfg.loss, num_classes, cfg.model.projection_dim)
    summary = train(cfg, progress=False, model=model, loss_fn=loss_fn)
    rank = os.environ.get("RANK", "0")
    hash_dir = Path(args.hash_dir)
    hash_dir.mkdir(parents=True, exist_ok=True)
    report = {"code": 0, "model": tensor_hashes(model), "loss": tensor_hashes(loss_fn)}
    (hash_dir / f"rank{rank}.json").write_text(json.dumps(report, sort_keys=True))
    if rank == "0":
        print(json.dumps(summary))
    sys.exit(0)
