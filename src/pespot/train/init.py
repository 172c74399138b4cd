"""``model.init``: start a training run from the weights of a trained run (fine-tuning, e.g. on labels corrected
with ``pespot review``).

Everything but the classifier must match the new model tensor for tensor (same backbone, temporal module, clip
length for the fixed-length modules, head and widths): a mismatch is one ConfigError naming the first tensor that
differs. The classifier (``classifier.weight`` / ``classifier.bias``, one row per output) is kept when the run's
classes are the new dataset's, in the same order; otherwise it is left as built (random weights, and the bias at the
class prior when ``model.prior_bias`` is on) and a line on stderr says so. The SoftIC projection head does not depend
on the classes: it is taken from the run when both have one. The optimiser, schedule and SoftIC memory bank start
afresh: only weights are carried over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pespot.errors import ConfigError

CLASSIFIER_KEYS = ("classifier.weight", "classifier.bias")


@dataclass
class InitResult:
    """What ``init_from_run`` did: the checkpoint read, whether the classifier was kept, the run's classes."""

    checkpoint: Path
    classifier_kept: bool
    run_classes: list[str]
    loaded: int  # tensors copied

    def message(self, classes: list[str]) -> str:
        """One line for stderr."""
        if self.classifier_kept:
            return (f"model.init: starting from {self.checkpoint} ({self.loaded} tensors, classifier included: "
                    f"same {len(classes)} classes)")
        return (f"model.init: starting from {self.checkpoint} ({self.loaded} tensors); its classes "
                f"({_names(self.run_classes)}) differ from the dataset's ({_names(classes)}): the classifier is "
                "re-initialised")


def _names(classes: list[str], limit: int = 6) -> str:
    return ", ".join(classes[:limit]) + (f", ... ({len(classes)} in all)" if len(classes) > limit else "")


def init_from_run(model: nn.Module, run_or_ckpt: str | Path, classes: list[str]) -> InitResult:
    """Copy the weights of a trained run (folder or checkpoint) into ``model`` built for ``classes``."""
    from pespot.infer import find_checkpoint
    from pespot.train.checkpoint import load_checkpoint

    try:
        path = find_checkpoint(run_or_ckpt)
    except Exception as err:  # noqa: BLE001 - name the config key the path came from
        raise ConfigError(f"config key 'model.init': {err}") from None
    ckpt = load_checkpoint(path)
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    run_classes = [str(c) for c in ckpt.get("classes", [])]
    keep_classifier = run_classes == list(classes)
    own = model.state_dict()
    skip = set() if keep_classifier else set(CLASSIFIER_KEYS)
    if not any(k.startswith("projection.") for k in own):
        skip |= {k for k in state if k.startswith("projection.")}  # this run trains without SoftIC/IC
    missing = [k for k in own if k not in state and k not in skip and not k.startswith("projection.")]
    unexpected = [k for k in state if k not in own and k not in skip]
    wrong = [k for k in own if k in state and k not in skip and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        if wrong:
            k = wrong[0]
            what = f"tensor '{k}' is {tuple(state[k].shape)} there, {tuple(own[k].shape)} here"
        elif missing:
            what = f"it has no tensor '{missing[0]}'"
        else:
            what = f"it has a tensor '{unexpected[0]}' this model does not"
        raise ConfigError(f"config key 'model.init': {path} holds another architecture ({what}); the model keys "
                          "(backbone, temporal_module, clip_len for tsm/gsm/astrm, temporal_head, hidden_dim) must "
                          "be the run's")
    chosen = {k: v for k, v in state.items() if k in own and k not in skip}
    with torch.no_grad():
        for key, value in chosen.items():
            own[key].copy_(value.to(own[key].dtype))
    return InitResult(checkpoint=path, classifier_kept=keep_classifier, run_classes=run_classes,
                      loaded=len(chosen))
