"""SAM / ASAM around any torch optimiser (method-spec section 5).

One SAM step on a mini-batch (Foret et al. 2021; ASAM: Kwon et al. 2021):

1. ascent: ``eps = rho * T_w^2 g / ||T_w g||_2`` (one global norm over all parameters), ``w <- w + eps``;
2. the loss of the **same batch** at ``w + eps`` gives ``g'``;
3. ``w`` is restored exactly (a saved copy, not ``w - eps``), then the base optimiser steps with ``g'``.

``T_w`` is the identity for SAM (``adaptive=False``) and ``|w| + eta`` for ASAM. Default = davda54/sam's adaptive
mode (``eta = 0``, every parameter scaled), whose ``rho = 2`` is the paper's setting; ``weights_only=True`` is the
official SamsungLabs/ASAM operator (only parameters whose name contains ``weight`` are scaled, the others use
``T = 1`` but still share the global norm; use ``eta = 0.01`` there).

Intended call order in the training loop (the learning-rate scheduler is attached to ``sam.base_optimizer`` and
stepped once per SAM step)::

    enable_running_stats(model)
    loss1 = loss_fn(model(x), y); loss1.backward()
    norm = sam.first_step()                  # perturbs w, zeroes grads
    if not torch.isfinite(norm):             # nothing was perturbed: skip this batch
        sam.zero_grad()                      # (second_step() would also just return False)
    else:
        disable_running_stats(model)         # BatchNorm running stats must not see the perturbed weights
        loss2 = loss_fn(model(x), y); loss2.backward()
        sam.second_step()                    # restore w, base_optimizer.step(), zero grads
        enable_running_stats(model)
    scheduler.step()

With fp16 and a ``GradScaler``: ``scaler.scale(loss).backward()`` in both passes (the ascent direction does not
depend on the loss scale) and ``sam.second_step(step_fn=lambda: scaler.step(sam.base_optimizer))``, then
``scaler.update()``. bf16 autocast needs no scaler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

NamedOrPlain = Iterable[Tensor] | Iterable[tuple[str, Tensor]]


class SAM:
    """Sharpness-aware minimisation wrapper: ``first_step()`` ascends to ``w + eps``, ``second_step()`` descends.

    ``params``: ``model.named_parameters()`` (names are needed for ``weights_only``), a list of ``(name, p)``,
    plain parameters, or ``None`` for every parameter of ``base_optimizer``. Only parameters holding a gradient
    are perturbed. ``state_dict()``/``load_state_dict()`` and ``param_groups`` are the base optimiser's, so an
    LR scheduler and checkpoints work exactly as without SAM.
    """

    def __init__(
        self,
        params: NamedOrPlain | None,
        base_optimizer: torch.optim.Optimizer,
        rho: float = 2.0,
        adaptive: bool = True,
        eta: float = 0.0,
        weights_only: bool = False,
        eps: float = 1e-12,
    ) -> None:
        if rho < 0:
            raise ValueError(f"SAM rho must be >= 0, got {rho}")
        if eta < 0:
            raise ValueError(f"ASAM eta must be >= 0, got {eta}")
        self.base_optimizer = base_optimizer
        self.rho = float(rho)
        self.adaptive = adaptive
        self.eta = float(eta)
        self.weights_only = weights_only
        self.eps = eps
        self.params: list[tuple[str | None, Tensor]] = _named(params, base_optimizer)
        if adaptive and weights_only and any(name is None for name, _ in self.params):
            raise ValueError("ASAM weights_only needs parameter names: pass model.named_parameters()")
        self._old: list[tuple[Tensor, Tensor]] = []  # (param, saved value) of the last first_step
        self._state = "idle"  # idle | perturbed | skipped

    # -- passthroughs ------------------------------------------------------------------------------------------

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The base optimiser's parameter groups (learning rates live there)."""
        return self.base_optimizer.param_groups

    def state_dict(self) -> dict[str, Any]:
        """The base optimiser's state (SAM itself keeps nothing across steps)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a base-optimiser state saved by ``state_dict()``."""
        self.base_optimizer.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter (the perturbed set and the base optimiser's)."""
        self.base_optimizer.zero_grad(set_to_none=set_to_none)
        for _, p in self.params:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    # -- the two steps -----------------------------------------------------------------------------------------

    def _scale(self, name: str | None, p: Tensor) -> Tensor | None:
        """T_w of one parameter in fp32, or None for the identity."""
        if not self.adaptive or (self.weights_only and "weight" not in (name or "")):
            return None
        return p.detach().float().abs() + self.eta

    @torch.no_grad()
    def grad_norm(self) -> Tensor:
        """||T_w g||_2 over all parameters with a gradient, in fp32 (a 0-dim tensor; 0 when there is none)."""
        norms = []
        for name, p in self.params:
            if p.grad is None:
                continue
            g = p.grad.detach().float()
            scale = self._scale(name, p)
            norms.append(torch.linalg.vector_norm(g if scale is None else scale * g))
        if not norms:
            return torch.zeros(())
        device = norms[0].device
        return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))

    @torch.no_grad()
    def first_step(self) -> Tensor:
        """Ascent ``w <- w + rho T^2 g / ||T g||``; saves ``w`` and zeroes the gradients. Returns ``||T g||``.

        A non-finite norm (inf/NaN gradients, e.g. fp16 overflow) perturbs nothing: the gradients are cleared,
        the norm is returned for the caller to report, and the following ``second_step()`` is a no-op.
        """
        if self._state == "perturbed":
            raise RuntimeError("SAM.first_step() called twice without second_step()")
        norm = self.grad_norm()
        self._old = []
        if not torch.isfinite(norm):
            self._state = "skipped"
            self.zero_grad()
            return norm
        factor = self.rho / (norm + self.eps)
        for name, p in self.params:
            if p.grad is None:
                continue
            self._old.append((p, p.detach().clone()))
            e_w = p.grad.detach().float() * factor.to(p.device)
            scale = self._scale(name, p)
            if scale is not None:
                e_w = e_w * scale * scale
            p.add_(e_w.to(p.dtype))
        self._state = "perturbed"
        self.zero_grad()
        return norm

    @torch.no_grad()
    def second_step(self, step_fn: Callable[[], Any] | None = None) -> bool:
        """Restore ``w`` exactly, step the base optimiser with the gradient taken at ``w + eps``, zero grads.

        ``step_fn`` replaces ``base_optimizer.step()`` (e.g. ``lambda: scaler.step(sam.base_optimizer)``, which
        then does its own inf check). Without it, non-finite second-pass gradients skip the base step. Returns
        whether the base optimiser stepped.
        """
        if self._state == "idle":
            raise RuntimeError("SAM.second_step() called without first_step()")
        for p, old in self._old:
            p.copy_(old)
        self._old = []
        stepped = False
        if self._state == "perturbed":
            if step_fn is not None:
                step_fn()
                stepped = True
            elif self._grads_finite():
                self.base_optimizer.step()
                stepped = True
        self._state = "idle"
        self.zero_grad()
        return stepped

    def _grads_finite(self) -> bool:
        flags = [torch.isfinite(p.grad).all() for group in self.param_groups for p in group["params"]
                 if p.grad is not None]
        return bool(torch.stack([f.to(flags[0].device) for f in flags]).all()) if flags else True


def _named(params: NamedOrPlain | None, base_optimizer: torch.optim.Optimizer) -> list[tuple[str | None, Tensor]]:
    """Normalise the ``params`` argument to a list of (name or None, parameter)."""
    if params is None:
        items: list[Any] = [p for group in base_optimizer.param_groups for p in group["params"]]
    else:
        items = list(params)
    out: list[tuple[str | None, Tensor]] = []
    for item in items:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            out.append((item[0], item[1]))
        elif isinstance(item, Tensor):
            out.append((None, item))
        else:
            raise TypeError(f"SAM params: expected tensors or (name, tensor) pairs, got {type(item).__name__}")
    return out


# ------------------------------------------------------------------------------------------------------------
# BatchNorm running statistics during the second pass


def disable_running_stats(model: nn.Module) -> None:
    """Freeze BatchNorm running statistics (all ``_BatchNorm``: 1d/2d/3d, SyncBatchNorm) for the second pass.

    davda54 sets ``momentum = 0``; we switch ``track_running_stats`` off instead, which in train mode has the
    same effect on the running mean/var (batch statistics still normalise) and also leaves
    ``num_batches_tracked`` alone, which matters for ``momentum=None`` (cumulative average). Idempotent.
    """
    for module in model.modules():
        if isinstance(module, _BatchNorm) and not hasattr(module, "_pespot_tracking"):
            module._pespot_tracking = module.track_running_stats
            module.track_running_stats = False


def enable_running_stats(model: nn.Module) -> None:
    """Undo ``disable_running_stats`` (no-op for modules it did not touch)."""
    for module in model.modules():
        if isinstance(module, _BatchNorm) and hasattr(module, "_pespot_tracking"):
            module.track_running_stats = module._pespot_tracking
            del module._pespot_tracking


# The usual neighbourhood size of each method. They are not interchangeable: ASAM's rho bounds the *relative*
# perturbation (||eps / |w|||_2 = rho), SAM's the absolute one (||eps||_2 = rho). SAM at ASAM's 2 moves small
# weights by many times their own size (measured from scratch: loss 0.69 -> 5.2 after one step).
DEFAULT_RHO = {"asam": 2.0, "sam": 0.05}


def resolve_rho(method: str, rho: float | None) -> float:
    """``optim.rho`` as given, or the method's usual value when it is null (ASAM 2.0 as the paper, SAM 0.05)."""
    if rho is not None:
        return float(rho)
    if method not in DEFAULT_RHO:
        raise ValueError(f"no default rho for optim.sam={method!r}")
    return DEFAULT_RHO[method]


def build_sam(model: nn.Module, optimizer: torch.optim.Optimizer, optim_cfg: Any) -> SAM | None:
    """The SAM/ASAM wrapper ``optim_cfg`` describes (``sam``, ``rho``, ``asam_eta``, ``asam_weights_only``) around
    ``optimizer`` for ``model``'s parameters, or None for ``optim.sam: none``."""
    if optim_cfg.sam == "none":
        return None
    return SAM(list(model.named_parameters()), optimizer, rho=resolve_rho(optim_cfg.sam, optim_cfg.rho),
               adaptive=optim_cfg.sam == "asam", eta=optim_cfg.asam_eta, weights_only=optim_cfg.asam_weights_only)

