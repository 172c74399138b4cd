"""Bookkeeping of a run: loss sums, the per-epoch record, model selection, progress lines, TensorBoard."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from pespot.config import Config
from pespot.train import distributed as ddp
from pespot.train.distributed import DistInfo

SELECTION_TOLERANCES = (1, 2, 4)  # E2E-Spot's model selection: mean of val mAP at these tolerances (frames)


class LossSums:
    """Running sums of the loss parts (for epoch means and the progress bar)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.seconds = 0.0  # time spent in the epoch before a mid-epoch checkpoint

    def add(self, parts: dict[str, float]) -> None:
        for key, value in parts.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def mean(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}

    def state(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count, "seconds": self.seconds}

    def load(self, state: dict) -> None:
        self.sums, self.count, self.seconds = dict(state["sums"]), int(state["count"]), float(state["seconds"])


def ddp_mean(sums: LossSums, info: DistInfo) -> dict[str, float]:
    """Epoch mean of each loss part over all ranks' steps."""
    keys = sorted(sums.sums)
    values = torch.tensor([sums.sums[k] for k in keys] + [float(sums.count)], dtype=torch.float64,
                          device=info.device)
    totals = ddp.all_reduce_sum(values, info).tolist()
    return {k: v / max(totals[-1], 1.0) for k, v in zip(keys, totals[:-1])}


def selection_line(cfg: Config, first_map_epoch: int) -> str:
    """Which criterion selects best.pt, and from which epoch on."""
    if cfg.train.criterion == "loss":
        return "model selection: lowest validation loss"
    if cfg.train.criterion == "last":
        return "model selection: none (train.criterion=last): best.pt is the last epoch's checkpoint"
    note = ""
    if first_map_epoch < cfg.start_val_epoch:
        note = f" (train.start_val_epoch={cfg.start_val_epoch} is at or past the end of this {cfg.train.epochs}-epoch run)"
    videos = f"first {cfg.train.val_videos} " if cfg.train.val_videos else ""
    nms = (f"after the run's NMS ({cfg.eval.nms}, window {cfg.eval.nms_window})" if cfg.train.selection_nms == "eval"
           else "without NMS")
    return (f"model selection: mean validation mAP at {', '.join(map(str, SELECTION_TOLERANCES))} frames on the "
            f"{videos}validation videos {nms}, from epoch {first_map_epoch + 1}{note}")


def selection_score(cfg: Config, record: dict) -> float | None:
    """Higher is better: mean val mAP at 1, 2, 4 frames, minus the validation loss, or (``last``) the epoch, so that
    every epoch replaces best.pt."""
    if cfg.train.criterion == "map":
        return record.get("val_map_selection")
    if cfg.train.criterion == "last":
        return float(record["epoch"])
    loss = record.get("val_total")
    return None if loss is None else -loss


def log_epoch_tensorboard(writer: Any, record: dict) -> None:
    if writer is None:
        return
    step = record["step"]
    for key, value in record.items():
        if key.startswith("val_") and isinstance(value, (int, float)):
            writer.add_scalar(f"val/{key[4:]}", value, step)
    for tol, value in record.get("val_map", {}).items():
        writer.add_scalar(f"val/mAP@{tol}", value, step)
    writer.flush()


def epoch_line(record: dict, epochs: int) -> str:
    text = f"epoch {record['epoch']}/{epochs}: train loss {record.get('train_total', float('nan')):.4f}"
    if "val_total" in record:
        text += f", val loss {record['val_total']:.4f}"
    if "val_map" in record:
        text += ", val mAP " + " ".join(f"@{t}={v * 100:.2f}" for t, v in record["val_map"].items()) + " %"
    text += f", lr {record['lr']:.2e}, {record['seconds']:.0f}s" + (" (best)" if record["best"] else "")
    return text


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 epoch``, ``2 epochs`` (``many``: the plural when it is not ``noun + 's'``)."""
    return f"{count} {noun}" if count == 1 else f"{count} {many or noun + 's'}"


class PlainProgress:
    """tqdm's interface for a stderr that is not a terminal (a log file, a pipe, a CI job): no carriage returns,
    one plain line each time the trainer posts the loss (every ``train.log_every`` steps and at each epoch's end)."""

    def __init__(self, total: int, initial: int, file: Any = None) -> None:
        self.total, self.n, self.file = total, initial, file or sys.stderr
        self.desc = ""
        self.started, self.start_n = time.perf_counter(), initial

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        done = self.n - self.start_n
        rate = (time.perf_counter() - self.started) / done if done else float("nan")
        fields = ", ".join(f"{k} {v}" for k, v in values.items())
        head = f"{self.desc}: " if self.desc else ""
        print(f"{head}step {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f} %), {fields}, "
              f"{rate:.2f} s/step", file=self.file, flush=True)

    def write(self, message: str, file: Any = None) -> None:
        print(message, file=file or self.file, flush=True)

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int, enabled: bool) -> Any:
    """A tqdm bar on a terminal; plain progress lines when stderr is a file or a pipe."""
    if enabled and not sys.stderr.isatty():
        return PlainProgress(total, initial)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", disable=not enabled, dynamic_ncols=True,
                file=sys.stderr)


def logger(bar: Any, enabled: bool) -> Callable[[str], None]:
    def log(message: str) -> None:
        if enabled:
            bar.write(message, file=sys.stderr)

    return log
