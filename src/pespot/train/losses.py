"""Training losses: the classification loss (BCE, CE, focal) plus a contrastive term (SoftIC or IC).

The paper (Santra et al. 2025, eq. 11) trains with ``L = L_BCE + lambda_SIC * L_SIC``. Everything here follows
method-spec sections 6 and 8:

* ``bce_loss``  - BCE-with-logits on all K+1 outputs with the (mixup) soft targets, mean reduction (the paper).
* ``ce_loss``   - soft-target cross-entropy with class weights [1, fg, fg, ...] (E2E-Spot), exactly torch's
  ``F.cross_entropy(logits, probs, weight=w)``: ``-(1/N) sum_i sum_c w_c p_ic log softmax(x_i)_c``.
* ``focal_loss`` - sigmoid focal loss on soft targets (the ablation row "+ Focal Loss").
* ``softic_loss`` - the proposed Soft Instance Contrastive loss (eqs. 9-10) against a ``MemoryBank``.
* ``ic_loss``   - OpenDet's Instance Contrastive loss with hard labels (the ablation row "+ IC Loss").

Layout: ``logits`` and ``targets`` are (B, T, K+1) or (N, K+1), column 0 = background; targets rows are mixup
mixtures (two clips' one-hot labels) and may carry several classes (multi-label frames). ``proj`` are the
L2-normalised projections (N = B*T, D=128) from the model's projection head.

Memory-bank protocol (the trainer follows it once per optimiser step):

1. ``total, parts = loss_fn(logits, targets, proj)`` for the first pass (and again for the second SAM pass:
   both see the same bank, and the current batch is never in the bank, so there are no self-pairs);
2. after the optimiser step, ``loss_fn.update_bank(proj_first_pass, targets)`` enqueues the first-pass features.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pespot.config import LossConfig
from pespot.errors import ConfigError
from pespot.registry import LOSSES

GatherFn = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------------------------------------------
# shapes


def _flatten(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T, C) or (N, C) logits/targets -> fp32 (N, C) pair; shapes must match."""
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape")
    if logits.dim() not in (2, 3):
        raise ValueError(f"expected logits of shape (B, T, K+1) or (N, K+1), got {tuple(logits.shape)}")
    num_outputs = logits.shape[-1]
    return logits.reshape(-1, num_outputs).float(), targets.reshape(-1, num_outputs).float()


# --------------------------------------------------------------------------------------------------------------
# classification losses


def bce_loss(logits: Tensor, targets: Tensor, fg_weight: float = 1.0) -> Tensor:
    """Mean BCE-with-logits over every frame and every one of the K+1 outputs (soft targets allowed).

    ``fg_weight`` multiplies the positive term of the K event columns (torch's ``pos_weight``; background keeps
    1). The paper's loss is ``fg_weight = 1``; a larger value is a documented option for training from scratch
    on a small budget, where events are 1-3 % of frames.
    """
    x, t = _flatten(logits, targets)
    if fg_weight == 1.0:
        return F.binary_cross_entropy_with_logits(x, t, reduction="mean")
    pos_weight = torch.full((x.shape[1],), float(fg_weight), dtype=x.dtype, device=x.device)
    pos_weight[0] = 1.0
    return F.binary_cross_entropy_with_logits(x, t, pos_weight=pos_weight, reduction="mean")


def ce_loss(logits: Tensor, targets: Tensor, fg_weight: float = 5.0) -> Tensor:
    """E2E-Spot's soft-target cross-entropy with class weights [1, fg_weight, ...].

    Same value as ``F.cross_entropy(x, p, weight=w)`` with probability targets: the mean is over frames (not
    divided by the summed weights, unlike the hard-label form). Multi-label rows (sum > 1) are renormalised to a
    distribution first; mixup rows (sum 1) are used exactly as given.
    """
    x, t = _flatten(logits, targets)
    row_sum = t.sum(dim=1, keepdim=True)
    t = torch.where(row_sum > 1.0 + 1e-6, t / row_sum, t)
    weight = torch.full((x.shape[1],), float(fg_weight), dtype=x.dtype, device=x.device)
    weight[0] = 1.0  # background
    return F.cross_entropy(x, t, weight=weight)  # probability targets: -(1/N) sum_i sum_c w_c t_ic log p_ic


def focal_loss(logits: Tensor, targets: Tensor, gamma: float = 2.0, alpha: float = 0.25) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017, torchvision convention) on soft targets, mean over all outputs.

    ``loss = a_t * (1 - p_t)^gamma * BCE(x, t)`` with ``p_t = p t + (1 - p)(1 - t)`` and
    ``a_t = alpha t + (1 - alpha)(1 - t)``: ``alpha`` weights the positive side (RetinaNet's 0.25); a negative
    ``alpha`` disables the weighting, so ``gamma = 0, alpha < 0`` is exactly ``bce_loss``.
    """
    x, t = _flatten(logits, targets)
    p = torch.sigmoid(x)
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1.0 - p) * (1.0 - t)
    # (1 - p_t)^gamma has an infinite derivative at p_t = 1 for gamma < 1, which a confident fp32 sigmoid reaches
    # exactly: 0 * inf = NaN gradient from a finite loss. The floor changes no loss value above 1e-30.
    loss = bce * (1.0 - p_t).clamp_min(1e-30) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1.0 - alpha) * (1.0 - t)) * loss
    return loss.mean()


# --------------------------------------------------------------------------------------------------------------
# memory bank


class MemoryBank(nn.Module):
    """One FIFO queue per class of detached unit features and their label weights (OpenDet-style).

    Row ``c`` of the buffers is class ``c`` (model output ``c``); row 0 (background) is only filled when
    ``include_background`` (SoftIC's ``bg_negatives`` option), and is then used as negatives only.
    Buffers (saved in ``state_dict``, moved by ``.to()``):
    ``feats`` (K+1, size, D) fp32, ``weights`` (K+1, size) fp32, ``count`` (K+1,) valid entries,
    ``ptr`` (K+1,) next slot to write. Valid entries of a class are always its slots ``[0, count)``.

    ``hard=True`` is the IC form: a frame enters the queue of its dominant class (argmax over K+1) with weight 1.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int = 128,
        size: int = 256,
        max_enqueue: int = 16,
        w_bank: float = 0.7,
        include_background: bool = False,
        hard: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes  # event classes K
        self.dim = dim
        self.size = size
        self.max_enqueue = max_enqueue
        self.w_bank = w_bank
        self.include_background = include_background
        self.hard = hard
        rows = num_classes + 1
        self.register_buffer("feats", torch.zeros(rows, size, dim))
        self.register_buffer("weights", torch.zeros(rows, size))
        self.register_buffer("count", torch.zeros(rows, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros(rows, dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"classes={self.num_classes}, dim={self.dim}, size={self.size}, max_enqueue={self.max_enqueue}, "
                f"w_bank={self.w_bank}, background={self.include_background}, hard={self.hard}")

    def _bank_classes(self) -> list[int]:
        return list(range(0 if self.include_background else 1, self.num_classes + 1))

    def entry_weights(self, targets: Tensor) -> Tensor:
        """(N, K+1) weight each frame would be stored with in each class queue (0 = not a candidate)."""
        if self.hard:
            value, dominant = targets.max(dim=1)
            keep = (value >= self.w_bank) & (value > 0)
            out = torch.zeros_like(targets)
            out[keep, dominant[keep]] = 1.0
        else:
            out = torch.where((targets >= self.w_bank) & (targets > 0), targets, torch.zeros_like(targets))
        if not self.include_background:
            out[:, 0] = 0.0
        return out

    def entries(self) -> tuple[Tensor, Tensor, Tensor]:
        """Flattened valid entries: features (Nb, D), class ids (Nb,), weights (Nb,), class-major order."""
        slots = torch.arange(self.size, device=self.count.device)
        valid = slots[None, :] < self.count[:, None]  # (K+1, size)
        if not self.include_background:
            valid[0] = False
        classes = torch.arange(self.num_classes + 1, device=self.count.device)[:, None].expand_as(valid)
        return self.feats[valid], classes[valid], self.weights[valid]

    def class_counts(self) -> Tensor:
        """(K+1,) number of valid entries per class (background counted only if it is in use)."""
        counts = self.count.clone()
        if not self.include_background:
            counts[0] = 0
        return counts

    @torch.no_grad()
    def update(self, proj: Tensor, targets: Tensor, gather_fn: GatherFn | None = None) -> Tensor:
        """Enqueue this step's candidates; returns (K+1,) how many entries each class received.

        ``gather_fn`` (distributed training) maps a local (n, ...) tensor to the concatenation over all ranks in
        rank order (e.g. ``distributed.all_gather_cat``); every rank then runs the same deterministic selection on the same
        data, so the banks stay identical without broadcasting them.
        """
        z = proj.detach().reshape(-1, proj.shape[-1]).float()  # (N, D)
        w = targets.detach().reshape(-1, targets.shape[-1]).float()  # (N, K+1)
        if z.shape[1] != self.dim:
            raise ValueError(f"projection dim {z.shape[1]} does not match the memory bank's {self.dim}")
        if w.shape[1] != self.num_classes + 1 or w.shape[0] != z.shape[0]:
            raise ValueError(f"targets {tuple(w.shape)} do not match {z.shape[0]} frames x {self.num_classes + 1}")
        if gather_fn is not None:
            z, w = gather_fn(z), gather_fn(w)
        z = z.to(self.feats.device)
        w = self.entry_weights(w.to(self.feats.device))
        added = torch.zeros_like(self.count)
        cap = min(self.max_enqueue, self.size)
        if cap <= 0:
            return added
        for c in self._bank_classes():
            rows = torch.nonzero(w[:, c] > 0).flatten()
            if rows.numel() == 0:
                continue
            n_valid = int(self.count[c])
            if n_valid > 0:
                # OpenDet's novelty rule: most dissimilar to the class's current queue first. A stable sort keeps
                # ties in batch order, so every rank picks the same rows.
                cand = F.normalize(z[rows], dim=1)
                queue = F.normalize(self.feats[c, :n_valid], dim=1)
                mean_sim = (cand @ queue.T).mean(dim=1)  # (n_cand,)
                rows = rows[torch.sort(mean_sim, stable=True).indices]
            rows = rows[:cap]
            n = rows.numel()
            ptr = int(self.ptr[c])
            slots = (ptr + torch.arange(n, device=rows.device)) % self.size  # wrap-around
            self.feats[c, slots] = z[rows]
            self.weights[c, slots] = w[rows, c]
            self.ptr[c] = (ptr + n) % self.size
            self.count[c] = min(n_valid + n, self.size)
            added[c] = n
        return added


def _zero_like_graph(proj: Tensor) -> Tensor:
    # A zero that keeps proj in the graph: backward works and leaves zero gradients (no special case for callers).
    return proj.float().sum() * 0.0


def softic_loss(
    proj: Tensor,
    targets: Tensor,
    bank: MemoryBank,
    temperature: float = 0.1,
    w_anchor: float = 0.5,
    omega_mode: str = "divide",
    omega_min: float = 1e-3,
) -> tuple[Tensor, int]:
    """Soft Instance Contrastive loss (paper eqs. 9-10, method-spec 6.2); returns (loss, number of anchor pairs).

    Anchors are the pairs (frame i, event class c >= 1) with ``omega = W[i, c] >= w_anchor`` (and > 0) whose
    class has positives M(c) and negatives A(c) = M minus M(c) in the bank. For a pair,
    ``l = -1 / (|M(c)| f(omega)) * sum_{j in M(c)} [ z_i.(w_j z_j)/tau - log sum_{k in A(c)} exp(z_i.(w_k z_k)/tau) ]``
    with ``f(omega) = max(omega, omega_min)`` (divide, the paper's 1/omega), ``1/omega`` (multiply) or 1 (none);
    the loss is the mean over pairs (eq. 9's count). The sign makes it a quantity to minimise. Computed in fp32.
    """
    num_outputs = bank.num_classes + 1
    with torch.autocast(device_type=proj.device.type, enabled=False):
        z = proj.reshape(-1, proj.shape[-1]).float()  # (N, D)
        w = targets.reshape(-1, num_outputs).float().to(z.device)  # (N, K+1)
        bank_z, bank_c, bank_w = bank.entries()  # (Nb, D), (Nb,), (Nb,)
        n_pos = bank.class_counts()  # (K+1,)
        n_neg = bank_c.numel() - n_pos  # (K+1,) |A(c)|, background entries included when present
        event_w = w[:, 1:]
        frame_idx, cls_idx = torch.nonzero((event_w >= w_anchor) & (event_w > 0), as_tuple=True)
        cls_idx = cls_idx + 1  # back to output indices
        valid = (n_pos[cls_idx] > 0) & (n_neg[cls_idx] > 0)
        frame_idx, cls_idx = frame_idx[valid], cls_idx[valid]
        num_pairs = int(frame_idx.numel())
        if num_pairs == 0:
            return _zero_like_graph(proj), 0

        omega = w[frame_idx, cls_idx]  # (P,)
        anchors = z[frame_idx]  # (P, D)
        sim = anchors @ (bank_w[:, None] * bank_z).T / temperature  # (P, Nb): z_i . (w_j z_j) / tau
        pos = bank_c[None, :] == cls_idx[:, None]  # (P, Nb) M(c)
        log_denominator = torch.logsumexp(sim.masked_fill(pos, -math.inf), dim=1)  # (P,) over A(c) only
        log_ratio = torch.where(pos, sim - log_denominator[:, None], torch.zeros_like(sim))
        if omega_mode == "divide":
            factor = omega.clamp_min(omega_min)
        elif omega_mode == "multiply":
            factor = 1.0 / omega
        elif omega_mode == "none":
            factor = torch.ones_like(omega)
        else:
            raise ConfigError(f"config key 'loss.omega_mode': expected divide, multiply or none, got {omega_mode!r}")
        per_pair = -log_ratio.sum(dim=1) / (n_pos[cls_idx].float() * factor)  # (P,)
        return per_pair.mean(), num_pairs


def ic_loss(
    proj: Tensor,
    targets: Tensor,
    bank: MemoryBank,
    temperature: float = 0.1,
    w_anchor: float = 0.5,
) -> tuple[Tensor, int]:
    """OpenDet's Instance Contrastive loss with hard labels; returns (loss, number of anchors).

    Anchors: frames whose dominant class (argmax over K+1) is an event class with weight >= ``w_anchor``.
    Bank entries are unweighted (``MemoryBank(hard=True)``). SupCon form as in OpenDet's code: per anchor the
    mean over same-class entries of ``log softmax`` over **all** bank entries (positives included in the
    denominator, unlike eq. 6), loss = minus the mean over anchors. Two deliberate differences from the code: our
    bank is updated after the loss, so the anchor has no copy in the bank and OpenDet's "mask the row maximum"
    step (meant to remove that copy) is not applied; and anchors with no positive in the bank are skipped rather
    than turning the whole loss into NaN -> 0.
    """
    num_outputs = bank.num_classes + 1
    with torch.autocast(device_type=proj.device.type, enabled=False):
        z = proj.reshape(-1, proj.shape[-1]).float()  # (N, D)
        w = targets.reshape(-1, num_outputs).float().to(z.device)  # (N, K+1)
        bank_z, bank_c, _ = bank.entries()  # (Nb, D), (Nb,)
        n_pos = bank.class_counts()
        value, dominant = w.max(dim=1)
        keep = (dominant >= 1) & (value >= w_anchor) & (value > 0)
        keep &= n_pos[dominant] > 0
        frame_idx = torch.nonzero(keep).flatten()
        num_anchors = int(frame_idx.numel())
        if num_anchors == 0:
            return _zero_like_graph(proj), 0
        cls_idx = dominant[frame_idx]
        sim = z[frame_idx] @ bank_z.T / temperature  # (P, Nb)
        log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
        pos = bank_c[None, :] == cls_idx[:, None]  # (P, Nb)
        mean_log_prob_pos = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(1) / pos.sum(1)
        return -mean_log_prob_pos.mean(), num_anchors


@LOSSES.register("bce", activation="sigmoid")
def _bce(logits: Tensor, targets: Tensor, cfg: LossConfig) -> Tensor:
    return bce_loss(logits, targets, cfg.bce_fg_weight)


@LOSSES.register("ce", activation="softmax")
def _ce(logits: Tensor, targets: Tensor, cfg: LossConfig) -> Tensor:
    return ce_loss(logits, targets, cfg.fg_weight)


@LOSSES.register("focal", activation="sigmoid")
def _focal(logits: Tensor, targets: Tensor, cfg: LossConfig) -> Tensor:
    return focal_loss(logits, targets, cfg.focal_gamma, cfg.focal_alpha)


# --------------------------------------------------------------------------------------------------------------
# the training loss


class SpottingLoss(nn.Module):
    """``total = cls + softic_weight * contrastive`` (paper eq. 11), with the contrastive memory bank as state.

    ``state_dict()`` holds the bank (empty when ``contrastive == 'none'``); save it in checkpoints.
    """

    def __init__(self, cfg: LossConfig, num_classes: int, projection_dim: int = 128) -> None:
        super().__init__()
        _check_config(cfg, num_classes)
        self.cfg = cfg
        self.num_classes = num_classes
        self.bank: MemoryBank | None = None
        if cfg.contrastive != "none":
            self.bank = MemoryBank(
                num_classes,
                dim=projection_dim,
                size=cfg.bank_size,
                max_enqueue=cfg.max_enqueue,
                w_bank=cfg.w_bank,
                include_background=cfg.bg_negatives,
                hard=cfg.contrastive == "ic",
            )

    @property
    def needs_projection(self) -> bool:
        """Whether ``forward`` needs the projection-head features."""
        return self.bank is not None

    @property
    def score_activation(self) -> str:
        """How inference turns logits into scores, as the classification loss declares it (``sigmoid``/``softmax``)."""
        return LOSSES.get(self.cfg.classification).activation

    def classification_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The classification term alone (``pespot.registry.LOSSES``)."""
        return LOSSES.get(self.cfg.classification).builder(logits, targets, self.cfg)

    def forward(
        self, logits: Tensor, targets: Tensor, proj: Tensor | None = None, step_fraction: float = 0.0
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of one batch -> (total, parts); parts are detached fp32 scalars for logging.

        ``step_fraction`` = optimiser step / total steps, used only by ``linear_decay`` (OpenDet's weight decay).
        """
        if logits.shape[-1] != self.num_classes + 1:
            raise ValueError(f"logits have {logits.shape[-1]} outputs, expected {self.num_classes + 1} (K+1)")
        cls = self.classification_loss(logits, targets)
        parts = {"cls": cls.detach()}
        total = cls
        if self.bank is not None:
            if proj is None:
                raise ValueError(f"loss.contrastive={self.cfg.contrastive} needs the projection features (proj)")
            if self.cfg.contrastive == "ic":
                contrastive, pairs = ic_loss(proj, targets, self.bank, self.cfg.temperature, self.cfg.w_anchor)
            else:
                contrastive, pairs = softic_loss(
                    proj, targets, self.bank, self.cfg.temperature, self.cfg.w_anchor,
                    self.cfg.omega_mode, self.cfg.omega_min)
            weight = self.cfg.softic_weight
            if self.cfg.linear_decay:
                weight *= 1.0 - min(max(float(step_fraction), 0.0), 1.0)
            total = total + weight * contrastive
            parts["contrastive"] = contrastive.detach()
            parts["contrastive_pairs"] = torch.tensor(float(pairs))
        parts["total"] = total.detach()
        return total, parts

    @torch.no_grad()
    def update_bank(self, proj: Tensor | None, targets: Tensor, gather_fn: GatherFn | None = None) -> None:
        """Enqueue first-pass features once per optimiser step, after the loss (no-op without a bank)."""
        if self.bank is None:
            return
        if proj is None:
            raise ValueError(f"loss.contrastive={self.cfg.contrastive} needs the projection features (proj)")
        self.bank.update(proj, targets, gather_fn)


def _check_config(cfg: LossConfig, num_classes: int) -> None:
    LOSSES.get(cfg.classification)  # a ConfigError naming loss.classification and the registered losses
    choices = {
        "contrastive": ("softic", "ic", "none"),
        "omega_mode": ("divide", "multiply", "none"),
    }
    for key, allowed in choices.items():
        value = getattr(cfg, key)
        if value not in allowed:
            raise ConfigError(f"config key 'loss.{key}': expected one of {', '.join(allowed)}, got {value!r}")
    if num_classes <= 0:
        raise ConfigError(f"num_classes: expected a positive number of event classes, got {num_classes}")
    if cfg.temperature <= 0:
        raise ConfigError(f"config key 'loss.temperature': expected > 0, got {cfg.temperature}")
    if cfg.bank_size <= 0:
        raise ConfigError(f"config key 'loss.bank_size': expected a positive value, got {cfg.bank_size}")
    if cfg.max_enqueue < 0:
        raise ConfigError(f"config key 'loss.max_enqueue': expected >= 0, got {cfg.max_enqueue}")
    for key in ("w_anchor", "w_bank"):
        value = getattr(cfg, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"config key 'loss.{key}': expected a weight in [0, 1], got {value}")
    if cfg.focal_gamma < 0:
        raise ConfigError(f"config key 'loss.focal_gamma': expected >= 0, got {cfg.focal_gamma}")
    if cfg.omega_min <= 0:
        raise ConfigError(f"config key 'loss.omega_min': expected > 0, got {cfg.omega_min}")


def build_loss(loss_cfg: LossConfig, num_classes: int, projection_dim: int = 128) -> SpottingLoss:
    """The training loss for ``num_classes`` event classes (K+1 outputs); ``projection_dim`` = model's head dim."""
    return SpottingLoss(loss_cfg, num_classes, projection_dim)
