"""Checkpoints: one format for training, resume and inference.

A checkpoint is a full dict (torchvision's reference scripts): ``format``, ``config``, ``classes``, ``model``,
``optimizer`` (the base AdamW's state), ``scheduler``, ``schedule``, ``loss`` (the SoftIC memory bank), ``epoch``,
``step``, ``step_in_epoch``, ``best``, ``rng`` (every rank's Python/NumPy/torch(/CUDA) states), ``epoch_progress``
(loss sums of a mid-epoch checkpoint), ``history`` (the epoch records it covers), ``pespot_version`` and
``integrity``. Writes are atomic (``save_checkpoint``): a crash, a kill or a full disk never leaves a torn
``last.pt``.

Integrity: ``integrity`` holds the SHA-256 of everything else in the dict (``content_digest``: tensors and arrays
by their bytes, dtype and shape, other values by ``repr``, in the dict's own order, which a pickle keeps). It is
written in the same atomic write as the weights, and every load (``load_checkpoint``: infer, export, stream,
--resume, model.init) recomputes it and checks that every floating tensor is finite, so a damaged file (flipped
bytes, NaN weights) is refused with one line saying which file and what to use instead, never used silently.
Checkpoints written before pespot stored a digest have no ``integrity`` key: they are accepted as they are (only
the finiteness check applies to them).
"""

from __future__ import annotations

import contextlib
import hashlib
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


DIGEST_KEY = "integrity"  # {"sha256": content_digest of the rest of the checkpoint dict}


class CheckpointWriteError(PespotError):
    """A checkpoint could not be written (full disk, quota, I/O error); the previous one is unchanged."""


class CheckpointDamagedError(DataError):
    """A checkpoint whose contents do not match their digest, or with non-finite weights."""


def content_digest(state: dict) -> str:
    """SHA-256 (hex) of every value of a checkpoint dict except its ``integrity`` entry, in the dict's order."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in state.items() if k != DIGEST_KEY})
    return digest.hexdigest()


def _feed(digest: Any, obj: Any) -> None:
    """Add ``obj`` to ``digest``: tensors and arrays by dtype, shape and bytes; containers item by item; other
    values by ``repr`` (objects without a stable repr by their type only)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        digest.update(f"<tensor {t.dtype} {tuple(obj.shape)}>".encode())
        digest.update(t.view(torch.uint8).numpy())
    elif isinstance(obj, np.ndarray) and obj.dtype != object:
        digest.update(f"<array {obj.dtype} {obj.shape}>".encode())
        digest.update(np.ascontiguousarray(obj).reshape(-1).view(np.uint8))
    elif isinstance(obj, dict):
        digest.update(f"<dict {len(obj)}>".encode())
        for key, value in obj.items():
            _feed(digest, key)
            _feed(digest, value)
    elif isinstance(obj, (list, tuple)):
        digest.update(f"<{type(obj).__name__} {len(obj)}>".encode())
        for value in obj:
            _feed(digest, value)
    elif obj is None or isinstance(obj, (str, bytes, bool, int, float, np.generic, torch.dtype, torch.device)):
        digest.update(repr(obj).encode())
    else:
        digest.update(f"<{type(obj).__qualname__}>".encode())


def seal(state: dict) -> dict:
    """``state`` with its ``integrity`` entry (the digest of the rest)."""
    return {**state, DIGEST_KEY: {"sha256": content_digest(state)}}


def non_finite_tensor(obj: Any, where: str = "") -> tuple[str, int, int] | None:
    """(key path, non-finite values, values) of the first floating tensor of ``obj`` that is not all finite."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            values = obj.detach().cpu()
            if values.dtype not in (torch.float16, torch.float32, torch.float64):
                values = values.to(torch.complex128 if values.is_complex() else torch.float32)
            # numpy, not torch: a torch op per tensor wakes its thread pool, which on a busy machine costs
            # milliseconds per tensor (seconds for a checkpoint with its optimizer moments).
            finite = np.isfinite(values.numpy())
            if not finite.all():
                return where, int(finite.size - finite.sum()), obj.numel()
        return None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found = non_finite_tensor(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def verify_checkpoint(ckpt: dict, path: Path) -> None:
    """A ``CheckpointDamagedError`` naming ``path`` when the digest does not match or a weight is not finite.

    A checkpoint without a digest (written before pespot stored one) passes the digest check as it is."""
    stored = ckpt.get(DIGEST_KEY)
    if stored is not None and (not isinstance(stored, dict) or stored.get("sha256") != content_digest(ckpt)):
        raise CheckpointDamagedError(f"{path}: weights do not match their digest (file damaged)")
    found = non_finite_tensor(ckpt)
    if found is not None:
        key, bad, total = found
        raise CheckpointDamagedError(f"{path}: non-finite weights ({key}: {bad} of {total} values NaN or "
                                     "infinite)")


def write_checkpoints(content: dict, out: Path, names: tuple[str, ...], info: DistInfo) -> None:
    """Rank 0 writes ``content`` as ``out/checkpoints/<name>`` for each name, ``last.pt`` last (it is what --resume
    reads, so once it is written everything it refers to is on disk too); a failed write stops every rank with one
    ``CheckpointWriteError``."""
    ddp.barrier(info)
    error: CheckpointWriteError | None = None
    if info.is_main:
        try:
            sealed = seal(content)  # one digest for every copy
            for name in sorted(names, key=lambda n: n == "last.pt"):
                save_checkpoint(sealed, out / "checkpoints" / name)
        except CheckpointWriteError as err:
            error = err
    if ddp.any_rank(error is not None, info):  # also the barrier after the write
        resume = (f" (continue with --resume {out} once there is room)"
                  if (out / "checkpoints" / "last.pt").exists() else "")
        raise CheckpointWriteError(f"{error or 'rank 0 could not write a checkpoint'}; training stopped{resume}")


def save_checkpoint(state: dict, path: str | Path) -> None:
    """``torch.save`` to a temporary file, fsync, rename: ``path`` is always a complete checkpoint, carrying the
    digest of its contents (``seal``; a state already sealed is written as it is).

    A failed write (full disk, quota, I/O error) removes the temporary file, leaves ``path`` as it was and raises
    ``CheckpointWriteError`` naming the file and the cause.
    """
    path = Path(path)
    if DIGEST_KEY not in state:
        state = seal(state)
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


# The parts of a config that a checkpoint's weights, memory bank and optimiser state (its parameter groups) depend on.
RESUME_KEYS = ("model", "loss.contrastive", "loss.bank_size", "optim.gt_lr_scale")


def load_checkpoint(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """Read a pespot checkpoint dict (on the CPU); a one-line DataError if it is not one.

    With ``verify`` (always, except to measure its cost) the digest and the finiteness of the weights are
    checked (``verify_checkpoint``); a damaged file is a ``CheckpointDamagedError`` that says which other
    checkpoint of the run to use. Checkpoints are pickles (they carry optimizer and RNG states): load only
    checkpoints you trust.
    """
    ckpt = _read_checkpoint(Path(path))
    if verify:
        try:
            verify_checkpoint(ckpt, Path(path))
        except CheckpointDamagedError as err:
            raise CheckpointDamagedError(f"{err}; {_instead(Path(path))}") from None
    return ckpt


def _instead(path: Path) -> str:
    """What to use instead of the damaged checkpoint ``path``: the run's other checkpoint if it is sound."""
    other = path.with_name("last.pt" if path.name == "best.pt" else "best.pt")
    if path.parent.name != "checkpoints" or path.name not in ("best.pt", "last.pt") or not other.is_file():
        return "restore it from a backup or retrain"
    epoch = _sound_epoch(other)
    if epoch is None:
        return f"{other} is damaged too: restore them from a backup or retrain"
    return f"use {other} (epoch {epoch}) instead, or retrain"


def _sound_epoch(path: Path) -> Any:
    """The epoch of the checkpoint ``path`` when it loads and verifies, else None."""
    try:
        ckpt = _read_checkpoint(path)
        verify_checkpoint(ckpt, path)
    except DataError:
        return None
    return ckpt.get("epoch", "?")


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load`` of a pespot checkpoint dict, unverified; a one-line DataError if it is not one."""
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
    ckpt = _read_checkpoint(path)
    try:
        verify_checkpoint(ckpt, path)  # before anything is trained or written: a bad last.pt never spreads
    except CheckpointDamagedError as err:
        raise CheckpointDamagedError(f"--resume {run_dir}: {err}; {_resume_advice(path)}") from None
    diffs = config_differences(from_dict(ckpt["config"]), cfg, RESUME_KEYS)
    if diffs:
        shown = "; ".join(f"{k}: run has {a!r}, now {b!r}" for k, a, b in diffs)
        raise ConfigError(f"--resume {run_dir}: the config describes a different model or optimiser than the run ({shown})")
    return ckpt


def _resume_advice(last: Path) -> str:
    """After a damaged ``last``: that nothing was written, and what can be done."""
    best = last.with_name("best.pt")
    epoch = _sound_epoch(best) if best.is_file() else None
    if epoch is not None:
        how = (f"to continue from the best epoch ({epoch}), copy {best} over {last.name} and --resume again, or "
               "train anew")
    else:
        why = "damaged too" if best.is_file() else "there is none"
        how = f"resume from best.pt is not possible either ({why}): train anew"
    return f"nothing was trained or overwritten; {how}"


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
