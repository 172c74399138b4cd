"""Checks made before a run starts: nothing is built or written until the config, data and run folder are good."""

from __future__ import annotations

import os
from pathlib import Path

from pespot.config import Config
from pespot.data.labels import Video, drop_duplicate_events, load_classes, load_split, report_duplicate_events
from pespot.errors import ConfigError, DataError
from pespot.fsutil import check_writable_dir
from pespot.train.lock import LOCK_NAME


def load_run_classes(cfg: Config, ckpt: dict | None) -> list[str]:
    """``<data.root>/class.txt``, checked against ``num_classes`` and the resumed checkpoint."""
    if not cfg.data.root:
        raise ConfigError("config key 'data.root': no dataset folder given (e.g. --set data.root=data/tennis)")
    root = Path(cfg.data.root)
    if not root.is_dir():
        # The synthetic presets train on data that one command makes: say which.
        make = f"; make it with: pespot synth {root} --preset small" if cfg.name == "synthetic" else ""
        raise DataError(f"{root}: dataset folder (data.root) not found{make}")
    classes = load_classes(root / "class.txt")
    if cfg.num_classes is not None and cfg.num_classes != len(classes):
        raise ConfigError(f"config key 'num_classes': {cfg.num_classes}, but {root / 'class.txt'} lists "
                          f"{len(classes)} classes")
    if ckpt is not None and list(ckpt["classes"]) != classes:
        raise ConfigError(f"{root / 'class.txt'}: classes differ from the run being resumed "
                          f"({', '.join(ckpt['classes'])})")
    return classes


def load_splits(cfg: Config, classes: list[str]) -> tuple[list[Video], list[Video]]:
    root = Path(cfg.data.root)
    splits = []
    for key in ("train_split", "val_split"):
        name = getattr(cfg.data, key)
        path = root / f"{name}.json"
        if not path.is_file():
            raise DataError(f"{path}: split file not found (config key 'data.{key}' = {name!r})")
        videos = load_split(path, classes)
        if not videos:
            raise DataError(f"{path}: no videos")
        if os.environ.get("RANK", "0") == "0":  # one warning, not one per process
            report_duplicate_events(videos, path)
        else:
            drop_duplicate_events(videos)
        splits.append(videos)
    frames_root = Path(cfg.frames_dir)
    if not frames_root.exists():
        raise DataError(f"{frames_root}: frame store not found (config key 'data.frames'; "
                        "default <data.root>/frames)")
    return splits[0], splits[1]


def check_train_config(cfg: Config) -> None:
    if cfg.train.batch_size * cfg.model.clip_len < 2:
        raise ConfigError(f"config keys 'train.batch_size' x 'model.clip_len': {cfg.train.batch_size} x "
                          f"{cfg.model.clip_len} frames per step; BatchNorm needs at least 2 to train")
    if cfg.clips_per_epoch <= 0:
        raise ConfigError(f"config key 'train.clips_per_epoch': expected a positive value, "
                          f"got {cfg.clips_per_epoch}")
    if cfg.train.val_clips is not None and cfg.train.val_clips < 0:
        raise ConfigError(f"config key 'train.val_clips': expected >= 0, got {cfg.train.val_clips}")
    if cfg.train.log_every <= 0:
        raise ConfigError(f"config key 'train.log_every': expected a positive value, got {cfg.train.log_every}")
    if cfg.train.save_every_steps < 0:
        raise ConfigError(f"config key 'train.save_every_steps': expected >= 0, got {cfg.train.save_every_steps}")
    if cfg.train.criterion == "loss" and cfg.train.val_clips == 0:
        raise ConfigError("config key 'train.val_clips': 0 clips, but train.criterion=loss selects by "
                          "validation loss")


def check_run_folder_path(path: str | Path, resuming: bool) -> Path:
    """The run folder as a Path, when it is (or can be created as) a writable folder; checked before anything."""
    if not str(path).strip():
        raise ConfigError("config key 'out': empty; give a run folder, e.g. --set out=runs/tennis")
    out = check_writable_dir(path, "run folder" if resuming else "run folder (config key 'out')")
    if resuming and not out.is_dir():
        raise DataError(f"{out}: nothing to resume (no checkpoints/last.pt)")
    return out


def check_fresh_run_folder(out: Path, checkpoints_only: bool = False) -> None:
    """A new run starts in a missing or empty folder: it never mixes its files with a finished or foreign run's.
    ``checkpoints_only`` refuses only a folder holding checkpoints (the other ranks of a torchrun run)."""
    for name in ("last.pt", "best.pt"):
        if (out / "checkpoints" / name).exists():
            raise ConfigError(f"{out}: run folder already holds checkpoints/{name}; continue it with "
                              f"--resume {out} or choose another folder with --set out=...")
    if checkpoints_only or not out.is_dir():
        return
    found = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
    if found:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise ConfigError(f"{out}: run folder is not empty ({shown}) and holds no checkpoint to resume; remove "
                          "it or choose another folder with --set out=...")
