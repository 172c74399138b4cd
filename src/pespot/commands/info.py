"""Parameters (total and per part) and GFLOPs per clip of a model config.

    pespot info --preset paper --num-classes 17
    pespot info --config my.yaml --clip-len 100 --size 224x398 --json

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` for one clip in eval mode (convolutions, matrix
products, the GRU; element-wise operations such as BN, activations and ASTRM's gating products are not counted),
on the meta device, so no real clip is computed. MACs = FLOPs / 2. ``params_total`` is everything built for
training (with the SoftIC/IC projection head when the loss uses it); ``params_inference`` leaves that head out.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from pespot.errors import PespotError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pespot info``."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", help="a preset name (default: paper)")
    source.add_argument("--config", help="a config YAML file")
    parser.add_argument("--num-classes", type=int, help="event classes K (default: the config's num_classes or "
                        "the classes of data.root)")
    parser.add_argument("--clip-len", type=int, help="frames per clip; the model is built for it "
                        "(default: model.clip_len)")
    parser.add_argument("--size", default="224x224", help="frame size HxW (default %(default)s)")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. model.temporal_head=bilstm (several after one --set, or repeated)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' (or a single number for a square) -> (H, W)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not match or int(match.group(1)) <= 0 or (match.group(2) and int(match.group(2)) <= 0):
        raise PespotError(f"--size {text!r}: expected HxW, e.g. 224x224 or 224x398")
    height = int(match.group(1))
    return height, int(match.group(2) or height)


def _num_classes(cfg, given: int | None) -> int:
    if given is not None:
        if given <= 0:
            raise PespotError(f"--num-classes {given}: expected a positive number of event classes")
        return given
    if cfg.num_classes is not None:
        return cfg.num_classes
    if cfg.data.root:
        from pespot.data.labels import load_classes

        return len(load_classes(Path(cfg.data.root) / "class.txt"))
    raise PespotError("number of event classes unknown: pass --num-classes K, or set num_classes or data.root "
                      "(a dataset folder with class.txt) in the config")


def run(args: argparse.Namespace) -> int:
    """Build the model on the meta device, count, print."""
    from pespot.config import apply_overrides, load_config, validate
    from pespot.model.summary import format_table, model_info  # torch: imported only when the command runs

    cfg = load_config(args.config or args.preset or "paper", args.overrides)
    if args.clip_len is not None:
        if args.clip_len <= 0:
            raise PespotError(f"--clip-len {args.clip_len}: expected a positive number of frames")
        cfg = apply_overrides(cfg, [f"model.clip_len={args.clip_len}"])
        validate(cfg)
    size = parse_size(args.size)
    info = model_info(cfg, _num_classes(cfg, args.num_classes), size)
    print(json.dumps(info) if args.json else format_table(info))
    return 0
