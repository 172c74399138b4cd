"""One writer per run folder: ``RunLock`` holds ``RUN/.pespot.lock`` for as long as a training run writes there.

The lock is ``fcntl.flock`` on an open file, so the kernel releases it when the process ends, however it ends
(SIGKILL, a crash, a pre-empted node): a stale lock cannot exist. The file holds the holder's host, PID and start
time, read back to name it when a second writer is refused. Readers (``pespot infer``, ``export``, ``stream``)
never take it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Self

from pespot.errors import PespotError

LOCK_NAME = ".pespot.lock"


class RunFolderBusyError(PespotError):
    """Another process trains in this run folder."""


class RunLock:
    """Exclusive lock of a run folder (created if missing, and removed again on release if it is still empty)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._created: list[Path] = []  # the folders acquire created, deepest first

    def acquire(self) -> None:
        """Take the lock, or raise ``RunFolderBusyError`` naming the holder; nothing is written then."""
        self._created = _missing_folders(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunFolderBusyError(f"{self.folder}: run folder in use by another training run ({holder}); "
                                         "wait for it to finish, or stop it first") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder released and removed the file between our open and flock: try again
        self._fd = fd
        record = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)

    def release(self) -> None:
        """Remove the lock file and release the lock (and the folder, if this lock created it and it is empty)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # before unlocking: a waiting process then re-opens a fresh file
        os.close(self._fd)  # releases the flock
        self._fd = None
        for folder in self._created:  # an error before anything was written leaves no folder behind
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> str:
    """'host H, PID P, since T' from the lock file, or what is known when it is not written yet."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        record = {}
    if not record:
        return "holder not recorded yet"
    return f"host {record.get('host', '?')}, PID {record.get('pid', '?')}, since {record.get('started', '?')}"
