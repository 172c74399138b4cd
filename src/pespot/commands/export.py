"""Export a trained spotter to ONNX or TorchScript.

    pespot export RUN --format onnx                          # writes RUN/export/spotter.onnx
    pespot export RUN --format torchscript --out spotter.pt
    pespot infer RUN match.mp4 --engine onnx --out pred.json  # then runs it with onnxruntime

The whole spotter is exported (backbone with its ASTRM/GSM/TSM modules, temporal head, classifier and the
activation) for the run's clip length: input normalised frames (batch, T, 3, H, W) float32, output per-frame
scores (batch, T, K+1), column 0 background; batch, height and width are dynamic axes. Reading, resizing,
normalising, sliding windows and NMS stay in pespot (``pespot infer --engine onnx``). The file carries the run's
config, classes and the SHA-256 of the checkpoint it came from. After writing, the exported model is run on a
random clip and compared with PyTorch: a difference above 1e-4 is an error and nothing is kept.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pespot.errors import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pespot export``."""
    parser.add_argument("run", metavar="RUN_OR_CKPT",
                        help="run folder (checkpoints/best.pt, else last.pt) or checkpoint file")
    parser.add_argument("--format", required=True, choices=["onnx", "torchscript"], help="onnx | torchscript")
    parser.add_argument("--out", metavar="FILE",
                        help="output file (default: RUN/export/spotter.onnx or spotter.torchscript.pt, where "
                             "`pespot infer --engine onnx RUN` looks; needed when RUN_OR_CKPT is a file)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the comparison of the exported model with PyTorch on a random clip")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run(args: argparse.Namespace) -> int:
    """Export and print where, the clip length and the measured difference from PyTorch."""
    from pespot import export, infer
    from pespot.fsutil import check_writable_file

    run_path = Path(args.run)
    if args.out:  # outputs first: nothing is read before we know the result can be written
        out = Path(args.out)
        check_writable_file(out, "exported model (--out)")
    if not run_path.exists():
        raise DataError(f"{run_path}: no such run folder or checkpoint file")
    if not args.out:
        if not run_path.is_dir():
            raise DataError(f"{run_path}: give --out FILE when exporting a checkpoint file (a run folder defaults "
                            f"to {export.EXPORT_DIR}/{export.DEFAULT_NAMES[args.format]} inside it)")
        out = export.default_export_path(run_path, args.format)
        check_writable_file(out, "exported model")
    predictor = infer.load_predictor(args.run, device="cpu")
    report = export.export_model(predictor, args.format, out, check=not args.no_check)
    summary = {"path": str(report.path), "format": report.format, "clip_len": report.clip_len,
               "example_input": list(report.input_shape), "max_abs_diff": report.max_abs_diff,
               "tolerance": export.PARITY_TOLERANCE, "seconds": round(report.seconds, 2),
               "checkpoint": predictor.source}
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"wrote {report.format}: {report.path} (clip {report.clip_len} frames; input (batch, {report.clip_len}, "
          f"3, H, W) normalised, output (batch, {report.clip_len}, {len(predictor.classes) + 1}) scores)")
    if report.max_abs_diff is not None:
        print(f"check: max |score difference| from PyTorch on a random clip {tuple(report.input_shape)}: "
              f"{report.max_abs_diff:.2g} (tolerance {export.PARITY_TOLERANCE:g})")
    return 0
