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

from pespot.errors import OutputError


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


def check_writable_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path when a file can be written there (missing parent folders are created by the writers);
    else an ``OutputError`` naming it and what was expected. Called before any work: no model is loaded for
    outputs that cannot be written."""
    path = _output_path(path, what)
    if path.is_dir():
        raise OutputError(f"{path}: {what}: expected a file, found a folder")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise OutputError(f"{path}: {what}: the file is not writable")
    else:
        _check_creatable(path, what)
    return path


def check_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path when files can be written in it (it is created if missing); else an ``OutputError``."""
    path = _output_path(path, what)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: {what}: expected a folder, found a file")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{path}: {what}: the folder is not writable")
    else:
        _check_creatable(path, what)
    return path


def _output_path(path: str | os.PathLike, what: str) -> Path:
    if not str(path).strip():
        raise OutputError(f"{what}: empty path")
    return Path(path)


def _check_creatable(path: Path, what: str) -> None:
    """The nearest existing ancestor of a missing ``path`` must be a writable folder."""
    ancestor = Path(os.path.abspath(path)).parent
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{path}: {what}: cannot be created, {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: {what}: cannot be created, folder {ancestor} is not writable")
