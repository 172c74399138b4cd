"""Checkpoints: one format for training, resume and inference.

A checkpoint is a full dict (torchvision's reference scripts): ``format``, ``config``, ``classes``, ``model``,
``optimizer`` (the base AdamW's state), ``scheduler``, ``schedule``, ``loss`` (the SoftIC memory bank), ``epoch``,
``step``, ``step_in_epoch``, ``best``, ``rng`` (every rank's Python/NumPy/torch(/CUDA) states), ``epoch_progress``
(loss sums of a mid-epoch checkpoint), ``history`` (the epoch records it covers) and ``pespot_version``. Writes are
atomic (``save_checkpoint``): a crash, a kill or a full disk never leaves a torn ``last.pt``.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import random
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pespot.config import Config, config_differences, from_dict
from pespot.errors import ConfigError, DataError, PespotError
from pespot.fsutil import atomic_path, write_text_atomic
from pespot.train import distributed as ddp
from pespot.train.distributed import DistInfo
from pespot.train.guards import describe_os_error, disk_errors, os_error
from pespot.train.history import LossSums

CHECKPOINT_FORMAT = "pespot-checkpoint-v1"


class CheckpointWriteError(PespotError):
    """A checkpoint could not be written (full disk, quota, I/O error); the previous one is unchanged."""


def write_checkpoints(content: dict, out: Path, names: tuple[str, ...], info: DistInfo) -> None:
    """Rank 0 writes ``content`` as ``out/checkpoints/<name>`` for each name, ``last.pt`` last (it is what --resume
    reads, so once it is written everything it refers to is on disk too); a failed write stops every rank with one
    ``CheckpointWriteError``."""
    ddp.barrier(info)
    error: CheckpointWriteError | None = None
    if info.is_main:
        try:
            for name in sorted(names, key=lambda n: n == "last.pt"):
                save_checkpoint(content, out / "checkpoints" / name)
        except CheckpointWriteError as err:
            error = err
    if ddp.any_rank(error is not None, info):  # also the barrier after the write
        resume = (f" (continue with --resume {out} once there is room)"
                  if (out / "checkpoints" / "last.pt").exists() else "")
        raise CheckpointWriteError(f"{error or 'rank 0 could not write a checkpoint'}; training stopped{resume}")


def save_checkpoint(state: dict, path: str | Path) -> None:
    """``torch.save`` to a temporary file, fsync, rename: ``path`` is always a complete checkpoint.

    A failed write (full disk, quota, I/O error) removes the temporary file, leaves ``path`` as it was and raises
    ``CheckpointWriteError`` naming the file and the cause.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            # Through a Python file object: a failed write raises OSError (errno, e.g. "No space left on device")
            # inside torch's writer, which torch reports as an opaque RuntimeError with the OSError as context.
            torch.save(state, f)
    except (OSError, RuntimeError) as err:
        cause = os_error(err)
        if cause is None:
            raise  # not an I/O failure: a bug, keep the traceback
        kept = f"the previous {path.name} is unchanged" if path.exists() else "nothing was written"
        raise CheckpointWriteError(f"{path}: cannot write the checkpoint ({describe_os_error(cause)}); "
                                   f"{kept}") from None


# Temporary names of the atomic writes (fsutil.atomic_path): ".<name>.<random>.tmp" next to the file.
RUN_FILES = {"": ("config.yaml", "classes.txt", "metrics.jsonl"), "checkpoints": ("last.pt", "best.pt")}


def remove_stale_temp_files(out: Path, log: Callable[[str], Any]) -> None:
    """Delete temporary files that a killed run left behind (a checkpoint's can be as large as the model)."""
    for sub, names in RUN_FILES.items():
        folder = out / sub
        if not folder.is_dir():
            continue
        for name in names:
            for tmp in folder.glob(f".{name}.*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                    log(f"removed {tmp} (left by an interrupted write)")


# The parts of a config that a checkpoint's weights and memory bank depend on.
RESUME_KEYS = ("model", "loss.contrastive", "loss.bank_size")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a pespot checkpoint dict (on the CPU); a one-line DataError if it is not one.

    Checkpoints are pickles (they carry optimizer and RNG states): load only checkpoints you trust.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise DataError(f"{path}: checkpoint not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: expected a checkpoint file, found a directory") from None
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, OSError,
            AttributeError, ImportError, ModuleNotFoundError, IndexError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not a pespot checkpoint (expected a dict with format '{CHECKPOINT_FORMAT}')")
    for key in ("config", "classes", "model"):
        if key not in ckpt:
            raise DataError(f"{path}: pespot checkpoint without '{key}'")
    return ckpt


def load_resume_checkpoint(run_dir: Path, cfg: Config) -> dict:
    """``RUN_DIR/checkpoints/last.pt``, after checking that ``cfg`` describes the same model."""
    path = run_dir / "checkpoints" / "last.pt"
    if not path.is_file():
        raise DataError(f"{run_dir}: nothing to resume (no checkpoints/last.pt)")
    ckpt = load_checkpoint(path)
    diffs = config_differences(from_dict(ckpt["config"]), cfg, RESUME_KEYS)
    if diffs:
        shown = "; ".join(f"{k}: run has {a!r}, now {b!r}" for k, a, b in diffs)
        raise ConfigError(f"--resume {run_dir}: the config describes a different model than the run ({shown})")
    return ckpt


def check_resumable_schedule(ckpt: dict, schedule: dict, run_dir: Path) -> None:
    """A mid-epoch checkpoint needs the same steps per epoch (the batches to skip are counted in steps)."""
    old = ckpt.get("schedule") or {}
    if ckpt.get("step_in_epoch") and old.get("steps_per_epoch") != schedule["steps_per_epoch"]:
        raise ConfigError(
            f"--resume {run_dir}: the checkpoint stopped in the middle of epoch {int(ckpt['epoch']) + 1} with "
            f"{old.get('steps_per_epoch')} steps per epoch, now {schedule['steps_per_epoch']} "
            "(train.clips_per_epoch, train.batch_size and the number of processes must stay the same to finish "
            "that epoch)")


def restore_training_state(ckpt: dict, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, loss_fn: nn.Module,
             info: DistInfo, same_schedule: bool) -> tuple[int, int, int, dict, LossSums]:
    """Load a checkpoint into the freshly built objects; returns (epoch, step, step_in_epoch, best, sums).

    When the schedule changed (e.g. ``--set train.epochs=...`` to train longer), the new schedule is used from the
    checkpoint's step on instead of the saved one.
    """
    model.load_state_dict(ckpt["model"])
    # load_state_dict also restores the saved betas and weight decay: keep the config's (a --set on resume).
    configured = [{k: group[k] for k in ("betas", "weight_decay")} for group in optimizer.param_groups]
    optimizer.load_state_dict(ckpt["optimizer"])
    for group, values in zip(optimizer.param_groups, configured):
        group.update(values)
    if same_schedule:
        scheduler.load_state_dict(ckpt["scheduler"])
    else:
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(int(ckpt["step"])):
                scheduler.step()
    loss_fn.load_state_dict(ckpt["loss"])
    ranks = ckpt["rng"]["ranks"]
    if len(ranks) == info.world_size:
        set_rng_state(ranks[info.rank], info.device)
    else:  # another number of processes: resume, but the random streams cannot continue exactly
        seed_everything(int(ckpt["config"]["train"]["seed"]) + 7919 * int(ckpt["step"]) + info.rank)
    sums = LossSums()
    progress = ckpt.get("epoch_progress")
    if ckpt.get("step_in_epoch") and progress:
        states = progress["ranks"]
        sums.load(states[info.rank] if len(states) == info.world_size else states[0])
    return int(ckpt["epoch"]), int(ckpt["step"]), int(ckpt.get("step_in_epoch") or 0), dict(ckpt["best"]), sums


def checkpoint_epoch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)["epoch"]
    except Exception:  # noqa: BLE001 - only for a message
        return "?"


def rng_state(device: torch.device) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def read_history(path: Path, upto_epoch: int) -> list[dict]:
    """metrics.jsonl lines of the epochs a checkpoint covers (later lines belong to a lost future)."""
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in lines if int(r.get("epoch", 0)) <= upto_epoch]


def write_history(path: Path, history: list[dict]) -> None:
    with disk_errors(path):
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in history))
