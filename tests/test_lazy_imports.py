"""Commands that need no model do not import torch (issue 19): ``pespot --help``, ``--version``, ``stats``,
``eval`` and ``synth`` answer without paying for it (about 10 s on a busy 2-core machine). Each runs through the
CLI entry in a fresh interpreter, which then reports whether ``torch`` was imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import sys
from pespot.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}), file=sys.stderr)
""".replace("import sys", "import json, sys", 1)


def run_probe(cwd: Path, *argv: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)
    return json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A labels-only tiny synthetic dataset, made by ``pespot synth`` (itself checked), and predictions: the test
    split's events with scores."""
    root = tmp_path_factory.mktemp("lazy")
    assert run_probe(root, "synth", "data", "--labels-only", "--json") == {"code": 0, "torch": False}
    split = json.loads((root / "data" / "test.json").read_text())
    for video in split:
        for event in video["events"]:
            event["score"] = 0.5
    (root / "pred.json").write_text(json.dumps(split))
    return root


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["stats", "data"],
                                  ["eval", "data/test.json", "pred.json", "--json"],
                                  ["eval", "data/test.json", "pred.json", "--nms", "2", "--json"]],
                         ids=["version", "help", "stats", "eval", "eval-nms"])
def test_a_command_without_a_model_does_not_import_torch(argv, dataset):
    assert run_probe(dataset, *argv) == {"code": 0, "torch": False}


NUMPY_PROBE = PROBE.replace('"torch": "torch" in sys.modules',
                            '"numpy": "numpy" in sys.modules, '
                            '"commands": sorted(m for m in sys.modules if m.startswith("pespot.commands."))')


@pytest.mark.parametrize("argv, commands", [(["--version"], []), (["--help"], []),
                                            (["stats", "--help"], ["pespot.commands.stats"])],
                         ids=["version", "help", "stats-help"])
def test_the_parser_imports_only_the_command_it_runs(argv, commands, tmp_path):
    """``--version`` and ``--help`` list the commands by name without importing them (no numpy at all: 0.05 s of
    CPU instead of 0.5 s); a command imports its own module, not the other ten."""
    proc = subprocess.run([sys.executable, "-c", NUMPY_PROBE, *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["code"] == 0
    assert report["commands"] == commands
    if not commands:
        assert report["numpy"] is False
