"""Atomic writes: the final file appears whole or not at all, with the permissions a plain open() would give."""

from __future__ import annotations

import os
import stat

import pytest

from pespot.fsutil import FILE_MODE, atomic_path, write_json_atomic, write_text_atomic


def test_atomic_file_gets_the_mode_a_plain_open_gives_not_mkstemps_0600(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == FILE_MODE
    mask = os.umask(0)
    os.umask(mask)
    if mask & 0o044 == 0:  # the usual umask (022 or 002): group and others can read the file
        assert mode & 0o044 == 0o044


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed while writing")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_write_text_atomic_replaces(tmp_path):
    target = tmp_path / "sub" / "t.txt"
    write_text_atomic(target, "one")
    write_text_atomic(target, "two")
    assert target.read_text() == "two" and sorted(p.name for p in target.parent.iterdir()) == ["t.txt"]
