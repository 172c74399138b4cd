"""Run ``pespot <args>`` in one torchrun process and record a hash of the state that process trained.

Used by test_ddp.py: ``python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py HASH_DIR train ...``.
The trainer's ``build_model``/``build_loss`` are wrapped to keep a reference to this rank's model and loss; after
training, ``HASH_DIR/rank<R>.json`` gets a SHA-256 per tensor of the model (parameters and buffers) and of the
SoftIC memory bank, so the test can check that every rank ended with the same state.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from pespot.cli import main
from pespot.train import trainer

captured: dict[str, torch.nn.Module] = {}


def _capture(name, build):
    def wrapped(*args, **kwargs):
        captured[name] = build(*args, **kwargs)
        return captured[name]

    return wrapped


def tensor_hashes(module: torch.nn.Module) -> dict[str, str]:
    """SHA-256 of every tensor of ``module``'s state dict (exact bytes, on the CPU)."""
    return {key: hashlib.sha256(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for key, value in module.state_dict().items()}


if __name__ == "__main__":
    hash_dir = Path(sys.argv[1])
    trainer.build_model = _capture("model", trainer.build_model)
    trainer.build_loss = _capture("loss", trainer.build_loss)
    code = main(sys.argv[2:])
    rank = os.environ.get("RANK", "0")
    hash_dir.mkdir(parents=True, exist_ok=True)
    report = {"code": code, "model": tensor_hashes(captured["model"]), "loss": tensor_hashes(captured["loss"])}
    (hash_dir / f"rank{rank}.json").write_text(json.dumps(report, sort_keys=True))
    sys.exit(code)
