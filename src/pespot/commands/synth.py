"""`pespot synth`: not implemented yet (see the open issues); it exits with an error and does nothing."""

from __future__ import annotations

import argparse

from pespot.errors import PespotError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    raise PespotError("'pespot synth' is not implemented yet")
