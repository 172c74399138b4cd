"""What every benchmark records next to its numbers: the machine, the versions and the commit."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, core count, GPU if any, platform and the current load."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu, "platform": platform.platform(),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def git_commit(paths: tuple[str, ...] = ("src", "benchmarks")) -> str:
    """The repository's commit, marked when ``paths`` have uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", *paths],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict[str, str]:
    """Versions of what decides the numbers."""
    import numpy as np
    import torch

    from pespot import __version__

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "pespot": __version__, "pespot_commit": git_commit()}
    try:
        import timm

        out["timm"] = timm.__version__
    except ImportError:
        pass
    return out


def write_results(out: str | Path, result: dict, render: Any, note: str = "") -> None:
    """``<out>.json`` (the result) and ``<out>.md`` (``render(result)``), each written atomically; says where."""
    import sys

    from pespot.fsutil import write_json_atomic, write_text_atomic

    out = Path(out)
    write_json_atomic(out.with_suffix(".json"), result)
    write_text_atomic(out.with_suffix(".md"), render(result))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}{note}", file=sys.stderr)


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def paired_verdict(new: list[float], base: list[float]) -> str:
    """'gain', 'loss' or 'no gain (within the spread)' of ``new`` over ``base`` (the same runs, e.g. seeds, in
    both settings); 'no claim (one run, no spread)' for a single run.

    The spread is the larger standard deviation across runs of the two settings; the difference of the means must
    exceed it to count.
    """
    if len(new) != len(base) or not new:
        raise ValueError("paired_verdict: the same runs in both settings are needed")
    if len(new) < 2:
        return "no claim (one run, no spread)"
    diff = statistics.fmean(new) - statistics.fmean(base)
    spread = max(statistics.stdev(new), statistics.stdev(base))
    if diff > spread:
        return "gain"
    if diff < -spread:
        return "loss"
    return "no gain (within the spread)"


def format_pm(value: tuple[float, float | None], scale: float = 100.0) -> str:
    """'mean ± sd' of a ``mean_sd`` pair, scaled (percent by default)."""
    mean, sd = value
    return f"{scale * mean:.2f}" + (f" ± {scale * sd:.2f}" if sd is not None and not math.isnan(sd) else "")


def paired_summary(runs: list[dict], tolerances: list[int], base: str, new: str,
                   labels: tuple[str, str]) -> dict:
    """Per tolerance and for the mean over tolerances (key 'average'): ``runs[i][base]`` and ``runs[i][new]``
    (each {mAP: {tolerance: value}, average_mAP}) as mean ± sd under ``labels``, their paired difference and
    ``paired_verdict``."""
    rows = {}
    for key in [str(t) for t in tolerances] + ["average"]:
        def pick(r: dict, which: str, key: str = key) -> float:
            return r[which]["average_mAP"] if key == "average" else r[which]["mAP"][key]

        before, after = [pick(r, base) for r in runs], [pick(r, new) for r in runs]
        rows[key] = {labels[0]: mean_sd(before), labels[1]: mean_sd(after),
                     "difference": mean_sd([a - b for a, b in zip(after, before)]),
                     "verdict": paired_verdict(after, before)}
    return rows


def machine_line(m: dict, seconds: float) -> str:
    """'Machine: CPU, cores, torch threads, GPU, load; seconds' for a report's last line."""
    return (f"Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
            + (f"GPU {m['gpu']}" if m["gpu"] else "no GPU")
            + f", 1-minute load average {m['load_average_1min_start']:.2f} at the start; {seconds} s in all")


def machine_section(report: dict) -> list[str]:
    """A report's closing '## Machine' section: CPU, cores, torch and the commit of pespot."""
    return ["## Machine", "", (f"{report['machine']['cpu']}, {report['machine']['cores']} cores; torch "
            f"{report['versions']['torch']}, pespot at {report['versions']['pespot_commit']}."), ""]


def candidates_line(runs: list[dict]) -> str:
    """What a report says about its candidates: the runs' ``threshold`` and ``top_k`` and where the threshold
    was checked."""
    thresholds = ", ".join(sorted({format(run["threshold"], "g") for run in runs}))
    top_ks = ", ".join(sorted({str(run["top_k"]) for run in runs}))
    return (f"Candidates: every (frame, class) score >= the runs' eval.threshold ({thresholds}) before NMS, top_k "
            f"{top_ks}. Threshold 0 keeps every local maximum, so no score floor decides the ranking; it was checked "
            "against E2E-Spot's 0.01 and others on a BCE and a CE checkpoint in docs/results/candidates.md.")
