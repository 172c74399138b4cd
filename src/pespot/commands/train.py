"""`pespot train --config FILE|PRESET [--set key=value ...] [--resume RUN_DIR]`: train a spotting model.

The run folder (``out`` in the config; ``RUN_DIR`` when resuming) receives ``config.yaml``, ``classes.txt``,
``checkpoints/last.pt`` and ``best.pt``, ``metrics.jsonl`` (one JSON object per epoch), TensorBoard logs in
``tb/`` and, at the end, the learning curves in ``plots/``. ``config.yaml`` holds resolved values (the number of
classes, the frame store read). ``--resume RUN_DIR`` continues from ``RUN_DIR/checkpoints/last.pt`` exactly where it stopped, with the
run's own ``config.yaml`` unless ``--config`` is given; ``--set`` may change anything but the model (e.g.
``train.epochs`` to train longer); a run that has trained all its epochs says so in one line and is left as it
is. Ctrl-C or SIGTERM (a pre-empted job) stops after the current step with a
checkpoint (exit code 130, or 143 for SIGTERM); a checkpoint that cannot be written (full disk) stops training
with one line naming it, the previous checkpoint unchanged.

Fine-tuning: ``--set model.init=RUN`` starts from the weights of a trained run folder or checkpoint (same
architecture), e.g. to train on labels corrected with ``pespot review``; when its classes differ from the dataset's
the classifier is re-initialised, and a line on stderr says which happened.

Many GPUs: ``torchrun --nproc_per_node N -m pespot train ...`` (DDP; ``train.batch_size`` clips per GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pespot.errors import ConfigError

if TYPE_CHECKING:
    from pespot.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pespot train``."""
    parser.add_argument("--config", metavar="FILE|PRESET",
                        help="YAML config file or preset name (e.g. tennis, soccernetv2, synthetic, "
                             "ablations/clip_64)")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="extend", nargs="+", default=[],
                        help="override config keys, e.g. --set train.epochs=10 optim.lr=2e-3 (several after one --set, "
                             "or --set repeated)")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from checkpoints/last.pt")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress or per-epoch lines; the final 'run folder' line is still printed")
    parser.add_argument("--json", action="store_true", help="print the final summary as one JSON object")


def run(args: argparse.Namespace) -> int:
    """Resolve the config (errors before any work), train, print the summary."""
    from pespot.config import load_config
    from pespot.train.trainer import train

    if args.resume is None and args.config is None:
        raise ConfigError("give --config FILE|PRESET (or --resume RUN_DIR)")
    source = args.config
    if args.resume is not None and source is None:
        source = Path(args.resume) / "config.yaml"
        if not source.is_file():
            raise ConfigError(f"--resume {args.resume}: no config.yaml in the run folder")
    cfg = load_config(source, args.overrides)
    if args.resume is not None and args.config is None:
        follow_moved_root(cfg, load_config(source))
    summary = train(cfg, resume=args.resume, progress=not args.quiet)
    code = (143 if summary.get("stop_signal") == "SIGTERM" else 130) if summary["stopped"] else 0
    if os.environ.get("RANK", "0") != "0":
        return code  # under torchrun, rank 0 reports for everyone
    if not summary.get("finished"):
        summary["plots"] = _plot_curves(Path(summary["out"]))
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary, quiet=args.quiet)
    return code


def follow_moved_root(cfg: Config, saved: Config) -> None:
    """A run's ``config.yaml`` stores the frame store it read (``<data.root>/frames`` when ``data.frames`` was not
    given): a resume that moves ``data.root`` with ``--set`` and leaves ``data.frames`` alone reads the frames
    under the new root, as the run itself would have."""
    derived = saved.data.frames == str(Path(saved.data.root) / "frames")
    if derived and cfg.data.root != saved.data.root and cfg.data.frames == saved.data.frames:
        cfg.data.frames = ""


def _plot_curves(out: Path) -> list[str]:
    """The run's learning curves in ``out/plots/`` (as the demo draws them); a figure that cannot be written is
    a warning, never the end of a trained run."""
    from pespot.viz import plot_training_curves

    try:
        return [str(p) for p in plot_training_curves(out, out / "plots")]
    except (OSError, ValueError) as err:
        print(f"warning: {out / 'plots'}: learning curves not drawn ({err})", file=sys.stderr)
        return []


def _print_summary(summary: dict, quiet: bool = False) -> None:
    """The end of a run; with ``quiet`` only the 'run folder' line (a script needs to know where it went)."""
    from pespot.train.history import plural

    out = summary["out"]
    if summary.get("finished"):
        print(f"{out} is finished ({plural(summary['epochs_completed'], 'epoch')}, "
              f"{plural(summary['steps'], 'step')}): nothing to train; train longer with "
              f"--resume {out} --set train.epochs=N")
        return
    if summary["stopped"] and not quiet:
        print(f"stopped after {plural(summary['steps'], 'step')}; continue with: pespot train --resume {out}",
              file=sys.stderr)
    if summary.get("plots") and not quiet:
        print(f"learning curves: {Path(summary['plots'][0]).parent}")
    if summary["best_epoch"] is not None and not quiet:
        if summary["criterion"] == "map":
            what = f"mean val mAP@1,2,4 {100 * summary['best_score']:.2f} %"
        elif summary["criterion"] == "last":
            what = "the last epoch: train.criterion=last"
        else:
            what = f"minus val loss {summary['best_score']:.4f}"
        print(f"best epoch {summary['best_epoch']} ({what}): {out}/checkpoints/best.pt")
    print(f"run folder: {out} ({plural(summary['epochs_completed'], 'epoch')}, {plural(summary['steps'], 'step')})")
