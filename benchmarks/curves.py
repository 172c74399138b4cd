"""One learning-curve PNG per world from the accuracy benchmark's reports: every row of every report given.

    python benchmarks/curves.py OUT.png --title TITLE REPORT.json[:ROW=LABEL,...] ...

Each REPORT.json is a report of benchmarks/accuracy.py (its rows' learning curves: validation mAP@2 after every
epoch, one run per seed). ``:ROW=LABEL,...`` picks rows and names them in the legend (default: every row, by its
name). Rows from several reports of one world (e.g. the first recipe's cells measured in one session and the
current recipe's in another) end up side by side in one figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pespot.viz import plot_learning_curves


def series_of(spec: str) -> dict[str, list]:
    """``REPORT.json[:ROW=LABEL,...]`` -> {label: [curve per seed]}."""
    path, _, picks = spec.partition(":")
    rows = json.loads(Path(path).read_text())["rows"]
    chosen = dict(p.split("=", 1) for p in picks.split(",")) if picks else {name: name for name in rows}
    out = {}
    for name, label in chosen.items():
        if name not in rows:
            raise SystemExit(f"{path}: no row '{name}' (rows: {', '.join(rows)})")
        curves = [c for c in rows[name]["curves"].values() if c]
        if curves:
            out[label] = curves
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", help="PNG to write")
    p.add_argument("reports", nargs="+", metavar="REPORT.json[:ROW=LABEL,...]")
    p.add_argument("--title", default="validation mAP@2 (first 10 val videos), mean ± sd over seeds")
    args = p.parse_args(argv)
    series: dict[str, list] = {}
    for spec in args.reports:
        series.update(series_of(spec))
    print(plot_learning_curves(series, args.out, title=args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
