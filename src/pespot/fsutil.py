"""Atomic file writes: nothing half-written ever appears under the final name."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _file_mode() -> int:
    """The mode ``open()`` gives a new file under the process umask (mkstemp's own is 0600, owner only)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe to do per call.
FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsynced and renamed onto ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, FILE_MODE)  # the final file gets the usual permissions, not mkstemp's 0600
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(err, OSError) and (str(err.filename) == str(tmp_path)
                                         or (err.filename is None and err.errno in (errno.ENOSPC, errno.EDQUOT))):
            # The temporary name is gone (and a failed write() names no file): say which file was not written.
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")
