"""benchmarks/curves.py: one learning-curve PNG from rows of several accuracy reports."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("curves_bench", ROOT / "benchmarks" / "curves.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(path: Path, rows: dict[str, dict[str, list]]) -> str:
    path.write_text(json.dumps({"rows": {name: {"curves": curves} for name, curves in rows.items()}}))
    return str(path)


def test_rows_of_two_reports_end_up_in_one_figure_with_their_labels(tmp_path):
    curves = _load()
    first = _report(tmp_path / "a.json", {"paper-no-asam": {"0": [[60, 0.1], [120, 0.2]], "1": [[60, 0.2]]},
                                          "e2e-spot": {"0": [[60, 0.05]]}, "empty": {"0": []}})
    second = _report(tmp_path / "b.json", {"paper-no-asam": {"0": [[60, 0.3], [120, 0.5]]}})
    picked = curves.series_of(first + ":paper-no-asam=first recipe,e2e-spot=E2E-Spot")
    assert picked == {"first recipe": [[[60, 0.1], [120, 0.2]], [[60, 0.2]]], "E2E-Spot": [[[60, 0.05]]]}
    assert set(curves.series_of(first)) == {"paper-no-asam", "e2e-spot"}  # a row without curves is left out
    out = tmp_path / "curves.png"
    assert curves.main([str(out), first + ":paper-no-asam=first recipe", second + ":paper-no-asam=recipe"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_an_unknown_row_names_the_report_and_its_rows(tmp_path):
    curves = _load()
    report = _report(tmp_path / "a.json", {"paper-no-asam": {"0": [[60, 0.1]]}})
    with pytest.raises(SystemExit, match=r"a\.json: no row 'paper' \(rows: paper-no-asam\)"):
        curves.series_of(report + ":paper=the paper")
