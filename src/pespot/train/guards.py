"""What keeps a training run safe: non-finite checks, Ctrl-C/SIGTERM, and one-line disk errors.

A non-finite loss or gradient stops training before the weights change (``NonFiniteLossError``), so the last
checkpoint is never poisoned; the first Ctrl-C or SIGTERM finishes the current step and checkpoints (``Interrupt``);
a full disk while writing a run-folder file is one line naming the file (``disk_errors``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pespot.errors import PespotError
from pespot.train import distributed as ddp
from pespot.train.distributed import DistInfo


class NonFiniteLossError(PespotError):
    """The training loss (or its gradient) became NaN or infinite; training stopped and the last good checkpoint
    was kept."""


def check_finite(value: torch.Tensor, info: DistInfo, where: str, what: str = "loss") -> None:
    """Raise NonFiniteLossError (on every rank at once) if the loss (or gradient norm) is NaN or infinite."""
    bad = not bool(torch.isfinite(value.detach()).item())
    if ddp.any_rank(bad, info):
        shown = float(value.detach()) if bad else float("nan")
        name = "training loss" if what == "loss" else "gradient (norm) of the training loss"
        raise NonFiniteLossError(f"non-finite {name} ({shown}) at {where}" +
                                 ("" if bad else " on another rank") + "; training stopped")


def grad_norm(model: nn.Module) -> torch.Tensor:
    """L2 norm of all gradients, in fp32 (NaN or inf when any gradient is)."""
    norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in model.parameters() if p.grad is not None]
    if not norms:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(norms))


def os_error(err: BaseException) -> OSError | None:
    """``err`` itself or the first OSError among its causes/contexts (torch wraps write failures)."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError):
            return err
        err = err.__cause__ or err.__context__
        seen += 1
    return None


def describe_os_error(err: OSError) -> str:
    return err.strerror or (str(err).strip().splitlines() or [type(err).__name__])[0]


@contextlib.contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """Turn a failed write of a run-folder file into one line naming the file (atomic writes leave it as it was)."""
    try:
        yield
    except OSError as err:
        raise PespotError(f"{path}: cannot write ({describe_os_error(err)}); training stopped") from None


class Interrupt:
    """First Ctrl-C (SIGINT) or SIGTERM (what schedulers send a pre-empted job before killing it): finish the
    current step, write a checkpoint, stop. A second one: stop at once (``KeyboardInterrupt``). While
    ``immediate`` (set-up, before the first step: nothing to save yet) the first one stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None  # name of the signal that asked to stop
        self.immediate = True  # the trainer clears it when the first step starts
        self.previous: dict[int, Any] = {}
        self.pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self.pid:  # a forked DataLoader worker inherited the handler
            if signum == signal.SIGINT:
                # Ctrl-C reaches the whole process group: a worker killed by it makes the main process fail with
                # a RuntimeError traceback instead of stopping cleanly. The main process decides; it ends the
                # workers when it stops.
                signal.signal(signum, signal.SIG_IGN)
                return
            signal.signal(signum, signal.SIG_DFL)  # act as if it had no handler
            os.kill(os.getpid(), signum)
            return
        if self.requested or self.immediate:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        what = "interrupt" if signum == signal.SIGINT else f"{self.requested} received"
        print(f"\n{what}: stopping after this step with a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    def restore(self) -> None:
        for signum, previous in self.previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        self.previous = {}
