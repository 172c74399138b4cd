"""Outputs checked before the work (issue 19): every command that writes refuses, before it loads a model, reads
labels or decodes a frame, an output it could not create: a folder where a file is expected or the reverse, a path
under a file, a folder it cannot write. One line naming the path and what was expected, exit status 1, nothing
written.

Each command is given a model/dataset/labels argument that does not exist: had the output not been checked first,
the error would name that argument instead (and the model loader is made to fail loudly as well).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pespot import infer
from pespot.cli import main
from pespot.errors import OutputError
from pespot.fsutil import check_writable_dir, check_writable_file

# command -> (argv with {out} for the output path, kind of output). MISSING is an input that does not exist.
MISSING = "missing"
COMMANDS = {
    "infer --out": (["infer", MISSING, MISSING, "--out", "{out}"], "file"),
    "infer --csv": (["infer", MISSING, MISSING, "--csv", "{out}"], "file"),
    "infer --soccernet": (["infer", MISSING, MISSING, "--soccernet", "{out}"], "dir"),
    "infer --save-scores": (["infer", MISSING, MISSING, "--save-scores", "{out}"], "dir"),
    "stream --out": (["stream", MISSING, MISSING, "--out", "{out}"], "file"),
    "export --out": (["export", MISSING, "--format", "onnx", "--out", "{out}"], "file"),
    "eval --plot": (["eval", MISSING, MISSING, "--plot", "{out}"], "dir"),
    "extract --out": (["extract", MISSING, "--out", "{out}"], "dir"),
    "synth OUT": (["synth", "{out}", "--labels-only"], "dir"),
    "train out=": (["train", "--config", "paper", "--set", "out={out}", f"data.root={MISSING}"], "dir"),
}

# case -> (how to make the bad output path under tmp, what the line says)
CASES = {
    "folder_for_file": "expected a file, found a folder",
    "file_for_folder": "expected a folder, found a file",
    "under_a_file": "is a file, not a folder",
    "read_only_folder": "is not writable",
}


def bad_output(tmp: Path, case: str) -> Path:
    """The output path of ``case`` under ``tmp`` (see ``workdir``)."""
    if case == "read_only_folder":
        (tmp / "read_only").chmod(0o555)
    return {"folder_for_file": tmp / "a_folder", "file_for_folder": tmp / "a_file",
            "under_a_file": tmp / "a_file" / "out", "read_only_folder": tmp / "read_only" / "out"}[case]


# The cases that apply to each command: a folder where a file is expected only for file outputs, and the reverse.
APPLIES = {"file": ("folder_for_file", "under_a_file", "read_only_folder"),
           "dir": ("file_for_folder", "under_a_file", "read_only_folder")}
PAIRS = [(command, case) for command, (_, kind) in COMMANDS.items() for case in APPLIES[kind]]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """tmp_path as the current folder, with a file, a folder and a read-only folder."""
    (tmp_path / "a_file").write_text("mine\n")
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "read_only").mkdir()
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    (tmp_path / "read_only").chmod(0o755)


def tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


@pytest.mark.fault("outputs")
@pytest.mark.parametrize(("command", "case"), PAIRS)
def test_an_output_that_cannot_be_written_is_refused_before_any_work(command, case, workdir, capsys, monkeypatch):
    argv, _ = COMMANDS[command]

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the outputs were checked")

    monkeypatch.setattr(infer, "load_predictor", no_model)
    if case == "read_only_folder" and os.geteuid() == 0:
        # root may write into a folder whatever its mode; what root meets is a read-only mount, where os.access
        # says no: answer as such a mount would for the read-only folder
        real_access, read_only = os.access, (workdir / "read_only").resolve()

        def access(path, mode, *args, **kwargs):
            inside = Path(path).resolve() == read_only or read_only in Path(path).resolve().parents
            return False if inside and mode & os.W_OK else real_access(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)
    out = bad_output(workdir, case)
    before = tree(workdir)
    code = main([a.replace("{out}", str(out)) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, err
    name = command.split()[0]
    assert lines[0].startswith(f"pespot {name}: error: {out}: "), lines[0]
    assert CASES[case] in lines[0], lines[0]
    assert MISSING not in lines[0].replace(str(workdir), "")  # the missing model/data was never looked at
    assert tree(workdir) == before


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_good_output_passes_the_check_and_the_work_starts(command, workdir, capsys):
    """The same commands with an output in a new nested folder get past the check: they fail on the missing input,
    and the output folder is not created by the check."""
    argv, _ = COMMANDS[command]
    if command == "synth OUT":
        pytest.skip("synth has no other input: it would write the dataset")
    out = workdir / "new" / "deeper" / "out"
    code = main([a.replace("{out}", str(out)) for a in argv])
    err = capsys.readouterr().err
    assert code != 0
    assert str(out) not in err.replace(f"--out {out}", ""), err  # not refused because of the output
    assert not (workdir / "new").exists() or command.startswith("extract")


def test_check_writable_accepts_what_the_writers_can_create(tmp_path):
    (tmp_path / "f.json").write_text("{}")
    assert check_writable_file(tmp_path / "f.json", "x") == tmp_path / "f.json"
    assert check_writable_file(tmp_path / "a" / "b" / "f.json", "x") == tmp_path / "a" / "b" / "f.json"
    assert check_writable_dir(tmp_path, "x") == tmp_path
    assert check_writable_dir(tmp_path / "a" / "b", "x") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # a check creates nothing


@pytest.mark.parametrize("check", [check_writable_file, check_writable_dir])
def test_check_writable_refuses_an_empty_path_and_a_path_deep_under_a_file(check, tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match="empty path"):
        check("", "the output")
    with pytest.raises(OutputError, match=r"f/x/y: the output: cannot be created, .*/f is a file, not a folder"):
        check(tmp_path / "f" / "x" / "y", "the output")
