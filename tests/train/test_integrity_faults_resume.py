"""Integrity on ``--resume`` (issue 19): a damaged ``last.pt`` is refused before any step, nothing is written
over the run's checkpoints, and the line says whether ``best.pt`` can take its place.

Before digests, 64 flipped bytes in ``last.pt`` were resumed and written on into every later checkpoint, and NaN
weights were blamed on the learning rate with the damaged file called "the last good checkpoint".
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_integrity_faults import damage_checkpoint
from test_train_faults import (
    finished_run,  # noqa: F401 - the module fixture
    link_copy,
    one_error_line,
    snapshot,
    steps,  # noqa: F401 - the fixture
    synth,  # noqa: F401 - the session fixture
)

from pespot.cli import main


def resume(run: Path) -> int:
    return main(["train", "--resume", str(run), "--quiet", "--set", "train.epochs=2"])


@pytest.mark.fault("integrity")
@pytest.mark.parametrize("nan", [False, True], ids=["flipped", "0xff"])
def test_damaged_last_pt_is_refused_and_best_resumes(nan, finished_run, tmp_path, capsys, steps):  # noqa: F811
    run = link_copy(finished_run, tmp_path / "run")
    last, best = run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt"
    damage_checkpoint(last, nan=nan)
    before = snapshot(run)
    assert resume(run) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line == (f"pespot train: error: --resume {run}: {last}: weights do not match their digest (file "
                    f"damaged); nothing was trained or overwritten; to continue from the best epoch (1), copy "
                    f"{best} over last.pt and --resume again, or train anew")
    assert steps == [] and snapshot(run) == before
    # The advice works: best.pt in last.pt's place resumes and finishes the run.
    last.unlink()
    shutil.copyfile(best, last)
    assert resume(run) == 0
    assert len(steps) == 2


@pytest.mark.fault("integrity")
def test_resume_with_both_checkpoints_damaged(finished_run, tmp_path, capsys, steps):  # noqa: F811
    run = link_copy(finished_run, tmp_path / "run")
    for name in ("last.pt", "best.pt"):
        damage_checkpoint(run / "checkpoints" / name, nan=True)
    before = snapshot(run)
    assert resume(run) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.endswith("(file damaged); nothing was trained or overwritten; resume from best.pt is not possible "
                         "either (damaged too): train anew")
    assert "learning rate" not in line and "optim.lr" not in line
    assert steps == [] and snapshot(run) == before
