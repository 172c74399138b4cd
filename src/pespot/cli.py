"""The ``pespot`` command. Thin: each sub-command lives in ``pespot.commands.<name>`` with
``add_arguments(parser)`` and ``run(args) -> int``; this file only parses and dispatches."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

# OpenMP threads that spin while waiting make a 2-thread CPU run 5-8x slower as soon as anything else uses a core
# (measured on the shared 2-core development machine; benchmarks/throughput.py). Passive waiting costs little
# when the cores are free. Set before torch is imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# (command, module, one-line help) in the order of the command-line contract.
COMMANDS = [
    ("synth", "synth", "write a synthetic precise-event-spotting dataset (E2E-Spot layout)"),
    ("stats", "stats", "per-split statistics of a dataset folder or a label file"),
    ("extract", "extract", "raw videos -> frame store (JPEG folders or compact mp4), resumable"),
    ("info", "info", "parameters (total and per part) and GFLOPs per clip of a model config"),
    ("train", "train", "train a spotting model from a config (multi-GPU with torchrun)"),
    ("infer", "infer", "spot events in raw videos, frame folders or a split file"),
    ("stream", "stream", "spot events in a live stream (file, URL or stdin) as frames arrive, as JSON lines"),
    ("export", "export", "export a trained spotter to ONNX or TorchScript"),
    ("eval", "eval", "mAP at frame tolerances, or the official SoccerNet average-mAP"),
    ("review", "review", "review and correct events against the video in the browser, or label new videos"),
    ("demo", "demo", "the main job end to end on a synthetic dataset: synth, train, infer, evaluate"),
]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with every sub-command of the contract. With ``only`` (a command's name), only that
    command's module is imported and its options added; the others are listed by name and help, so that
    ``pespot --version``, ``--help`` and each command pay for their own imports only."""
    from pespot import __version__

    parser = argparse.ArgumentParser(prog="pespot", description="Precise event spotting in sports video.")
    parser.add_argument("--version", action="version", version=f"pespot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(f"pespot.commands.{module_name}")
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def chosen_command(argv: list[str]) -> str:
    """The sub-command named on the command line ('' for none): the first argument that is not an option (the
    top-level options, --help and --version, take no value)."""
    first = next((a for a in argv if not a.startswith("-")), "")
    return first if first in {name for name, _, _ in COMMANDS} else ""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pespot`` console script."""
    from pespot.errors import PespotError

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        parser = build_parser(only=chosen_command(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:  # Ctrl-C while the commands load (torch takes seconds): one line, no traceback
        print("pespot: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    if getattr(args, "_module", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except PespotError as err:
        print(f"pespot {args.command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        # A full disk is the user's to fix, not a bug: one line naming the file (the atomic writers have already
        # removed their temporary file). Any other OSError keeps its traceback.
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f"cannot write {err.filename}: " if err.filename else ""
        print(f"pespot {args.command}: error: {where}disk full ({err.strerror or err})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pespot {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
