"""Reliability report: run the fault-injection suite and count, per fault class, the cases tried and handled.

    python benchmarks/reliability.py              # fast + slow fault tests; writes docs/results/reliability.{md,json}
    python benchmarks/reliability.py --fast-only  # only the tests `make test` runs
    python benchmarks/reliability.py --no-write   # print the table only

Every test marked ``@pytest.mark.fault(kind, cases=N)`` (in any ``tests/**/test_*.py``) counts: ``kind`` is the
fault class (video-input, label-input, config, kill, numerics, disk, integrity, inputs, writers, outputs,
live-source) and ``cases`` how many distinct faulty inputs the test tries (1 unless it loops over several). A case counts as *handled* when its test passed: the tests assert
the clear one-line error naming the input (or the correct output for valid-but-unusual input), the exit code,
and that nothing was lost or half-written. Skipped tests are listed with their reason and not counted as handled.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from typing import Any

import pytest
from _common import git_commit

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("video-input", "label-input", "config", "kill", "numerics", "disk", "integrity", "inputs", "writers",
         "outputs", "live-source")
DESCRIPTIONS = {
    "video-input": "bad or unusual videos and frame folders given to `extract` and `infer`",
    "label-input": "malformed label files: E2E-Spot JSON, class.txt, SoccerNet Labels-v2",
    "config": "bad `--set` keys/values, incompatible model settings, mismatched run folders and checkpoints",
    "kill": "SIGKILL/SIGINT of `train` and `extract`, then resume",
    "numerics": "non-finite losses, degenerate clips, degenerate SoftIC memory banks",
    "disk": "a full disk (failed writes) during checkpointing and extraction",
    "integrity": "damaged checkpoints and exports (flipped bytes, NaN weights) given to `infer`, `export` and "
                 "`--resume`",
    "inputs": "inputs once accepted silently: frame counts that disagree, duplicated truth events, a bad "
              "`nms.json`, a missing run, an ONNX model of other classes",
    "writers": "concurrent writers: a second `train`/`--resume` on a run folder in use, a killed holder's lock, "
               "run folders that cannot be a new run (empty `out=`, a file, a non-empty folder)",
    "outputs": "output paths that cannot be written (a folder, a read-only folder, under a file, /proc) given to "
               "`train`, `infer`, `stream`, `export`, `eval --plot`, `extract` and `synth`, refused before any work",
    "live-source": "live sources whose end or middle is misreported: an MPEG-TS cut inside a packet, garbage "
                   "inside a TS stream, an HTTP body without a length, a second Ctrl-C, an mp4 with its index at "
                   "the end on standard input",
}


class FaultCollector:
    """A pytest plugin that records each fault test's class, case count and outcome."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            mark = item.get_closest_marker("fault")
            if mark is None:
                continue
            kind = mark.args[0] if mark.args else mark.kwargs.get("kind", "?")
            cases = int(mark.kwargs.get("cases", mark.args[1] if len(mark.args) > 1 else 1))
            self.items[item.nodeid] = {"kind": kind, "cases": cases, "slow": item.get_closest_marker("slow")
                                       is not None, "outcome": "not run", "reason": ""}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.items.get(report.nodeid)
        if entry is None:
            return
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            entry["outcome"] = report.outcome
            if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
                entry["reason"] = str(report.longrepr[2])
            elif report.outcome == "failed":
                entry["reason"] = str(report.longrepr).strip().splitlines()[-1][:200]
        elif report.when == "teardown" and report.outcome == "failed":
            entry["outcome"] = "failed"


def run_suite(fast_only: bool) -> tuple[dict[str, dict[str, Any]], int, float]:
    """Run the fault tests in-process; return the per-test records, pytest's exit code and the wall time."""
    collector = FaultCollector()
    marker = "not slow" if fast_only else ""
    files = sorted(str(p) for p in (ROOT / "tests").rglob("test_*.py") if "mark.fault(" in p.read_text())
    start = time.perf_counter()
    code = pytest.main(["-q", "-p", "no:cacheprovider", "-m", marker, "-o", "addopts=", *files], plugins=[collector])
    return collector.items, int(code), time.perf_counter() - start


def summarise(items: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per fault class: tests, cases tried, cases handled (tests passed), failed and skipped cases."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: {"tests": 0, "cases": 0, "handled": 0, "failed": 0,
                                                             "skipped": 0})
    for entry in items.values():
        row = table[entry["kind"]]
        row["tests"] += 1
        row["cases"] += entry["cases"]
        key = {"passed": "handled", "failed": "failed", "skipped": "skipped"}.get(entry["outcome"])
        if key:
            row[key] += entry["cases"]
    return dict(table)


def render(report: dict[str, Any]) -> str:
    """The markdown page."""
    lines = ["# Reliability: the fault-injection suite", "",
             (f"Made by `{report['command']}` on {report['date']} ({report['machine']}; commit {report['commit']}); "
             f"{'fast tests only' if report['fast_only'] else 'fast and slow tests'}, {report['seconds']:.0f} s, "
             f"pytest exit code {report['pytest_exit_code']}."), "",
             ("A case is *handled* when its test passed. The tests assert, for each faulty input, a clear one-line "
             "error naming the file, video or key (or the correct output where the input is valid but unusual), a "
             "non-zero exit code where something failed, the other items of a batch processed, and nothing lost "
             "or half-written on disk (previous outputs and checkpoints intact, no temporary files left)."), "",
             "| fault class | what is tried | tests | cases tried | handled | failed | skipped |",
             "|---|---|---|---|---|---|---|"]
    totals = {"tests": 0, "cases": 0, "handled": 0, "failed": 0, "skipped": 0}
    for kind in [*KINDS, *sorted(set(report["summary"]) - set(KINDS))]:
        row = report["summary"].get(kind)
        if row is None:
            continue
        for k in totals:
            totals[k] += row[k]
        lines.append(f"| {kind} | {DESCRIPTIONS.get(kind, '')} | {row['tests']} | {row['cases']} | {row['handled']} "
                     f"| {row['failed']} | {row['skipped']} |")
    lines.append(f"| **total** | | {totals['tests']} | {totals['cases']} | {totals['handled']} | {totals['failed']} "
                 f"| {totals['skipped']} |")
    lines += ["", "## Every test", "", "| test | class | cases | slow | outcome |", "|---|---|---|---|---|"]
    for nodeid, e in sorted(report["tests"].items(), key=lambda kv: (KINDS.index(kv[1]["kind"])
                                                                      if kv[1]["kind"] in KINDS else 99, kv[0])):
        outcome = e["outcome"] + (f" ({e['reason']})" if e["reason"] else "")
        lines.append(f"| `{nodeid}` | {e['kind']} | {e['cases']} | {'yes' if e['slow'] else ''} | {outcome} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast-only", action="store_true", help="skip the tests marked slow")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write docs/results/")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    items, code, seconds = run_suite(args.fast_only)
    cpu = platform.processor() or platform.machine()
    report = {
        "command": "python benchmarks/reliability.py" + (" " + shlex.join(argv or sys.argv[1:])).rstrip(),
        "date": time.strftime("%Y-%m-%d"), "machine": f"{cpu}, {os.cpu_count()} cores, {platform.platform()}",
        "commit": git_commit(), "fast_only": args.fast_only, "seconds": seconds, "pytest_exit_code": code,
        "summary": summarise(items), "tests": items,
    }
    text = render(report)
    print(text)
    if not args.no_write:
        from pespot.fsutil import write_json_atomic, write_text_atomic

        out = ROOT / "docs" / "results"
        write_text_atomic(out / "reliability.md", text)
        write_json_atomic(out / "reliability.json", report)
        print(f"wrote {out / 'reliability.md'} and {out / 'reliability.json'}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
