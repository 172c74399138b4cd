"""Losses: hand computations of BCE / CE / focal / SoftIC / IC, memory-bank FIFO rules, gradients, edge cases."""

from __future__ import annotations

import dataclasses
import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F

from pespot.config import LossConfig
from pespot.errors import ConfigError
from pespot.train.losses import (
    MemoryBank,
    bce_loss,
    build_loss,
    ce_loss,
    focal_loss,
    ic_loss,
    softic_loss,
)

torch.set_num_threads(1)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _soft_batch(seed: int = 0, b: int = 2, t: int = 3, k1: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, k1, generator=g) * 2
    lam = torch.rand(b, t, 1, generator=g)
    y1 = F.one_hot(torch.randint(0, k1, (b, t), generator=g), k1).float()
    y2 = F.one_hot(torch.randint(0, k1, (b, t), generator=g), k1).float()
    return logits, lam * y1 + (1 - lam) * y2  # mixup rows


# ------------------------------------------------------------------------------------------------ classification


def test_bce_equals_hand_computation_on_soft_targets():
    logits, targets = _soft_batch()
    total, n = 0.0, 0
    for x, y in zip(logits.flatten().tolist(), targets.flatten().tolist()):
        p = _sigmoid(x)
        total += -(y * math.log(p) + (1 - y) * math.log(1 - p))
        n += 1
    assert bce_loss(logits, targets).item() == pytest.approx(total / n, rel=1e-5)
    # flattened (N, K+1) input gives the same value
    assert bce_loss(logits.reshape(-1, 4), targets.reshape(-1, 4)).item() == pytest.approx(total / n, rel=1e-5)


def test_ce_with_fg_weight_equals_hand_computation_and_torch():
    logits, targets = _soft_batch(1)
    fg = 5.0
    rows_x, rows_t = logits.reshape(-1, 4).tolist(), targets.reshape(-1, 4).tolist()
    total = 0.0
    for x, y in zip(rows_x, rows_t):
        log_z = math.log(sum(math.exp(v) for v in x))
        total += -sum((1.0 if c == 0 else fg) * y[c] * (x[c] - log_z) for c in range(4))
    expected = total / len(rows_x)  # torch's mean for probability targets: over frames, not summed weights
    assert ce_loss(logits, targets, fg).item() == pytest.approx(expected, rel=1e-5)
    weight = torch.tensor([1.0, fg, fg, fg])
    torch_value = F.cross_entropy(logits.reshape(-1, 4), targets.reshape(-1, 4), weight=weight)
    assert ce_loss(logits, targets, fg).item() == pytest.approx(torch_value.item(), rel=1e-6)


def test_ce_renormalises_multi_label_rows():
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.5]])
    multi = torch.tensor([[0.0, 1.0, 1.0, 0.0]])  # a frame carrying two events
    assert ce_loss(logits, multi, 5.0).item() == pytest.approx(ce_loss(logits, multi / 2, 5.0).item(), rel=1e-6)


def test_focal_gamma0_reduces_to_bce_and_alpha_weights_positives():
    logits, targets = _soft_batch(2)
    bce = bce_loss(logits, targets).item()
    assert focal_loss(logits, targets, gamma=0.0, alpha=-1.0).item() == pytest.approx(bce, rel=1e-6)
    assert focal_loss(logits, targets, gamma=0.0, alpha=0.5).item() == pytest.approx(0.5 * bce, rel=1e-6)
    # hand computation with gamma = 2, alpha = 0.25 (alpha on the positive side, torchvision convention)
    total, n = 0.0, 0
    for x, y in zip(logits.flatten().tolist(), targets.flatten().tolist()):
        p = _sigmoid(x)
        ce = -(y * math.log(p) + (1 - y) * math.log(1 - p))
        p_t = p * y + (1 - p) * (1 - y)
        total += (0.25 * y + 0.75 * (1 - y)) * (1 - p_t) ** 2 * ce
        n += 1
    assert focal_loss(logits, targets, gamma=2.0, alpha=0.25).item() == pytest.approx(total / n, rel=1e-5)


# ------------------------------------------------------------------------------------------------ SoftIC


def _unit(*v: float) -> torch.Tensor:
    t = torch.tensor(v, dtype=torch.float32)
    return t / t.norm()


def _fill(bank: MemoryBank, entries: dict[int, list[tuple[torch.Tensor, float]]]) -> None:
    """Write entries directly into the bank buffers (class -> [(z, w), ...])."""
    for c, items in entries.items():
        for j, (z, w) in enumerate(items):
            bank.feats[c, j] = z
            bank.weights[c, j] = w
        bank.count[c] = len(items)
        bank.ptr[c] = len(items) % bank.size


BANK_ENTRIES = {
    1: [(_unit(1, 0, 0, 0), 0.9), (_unit(1, 1, 0, 0), 1.0)],
    2: [(_unit(0, 1, 0, 0), 0.8), (_unit(0, 1, 1, 0), 1.0), (_unit(0, 0, 1, 1), 0.75)],
    3: [(_unit(0, 0, 0, 1), 1.0)],
}
BG_ENTRIES = [(_unit(1, 1, 1, 1), 0.9)]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _hand_softic(z_rows, w_rows, entries, w_anchor, omega_mode, omega_min=1e-3, tau=0.1):
    """Eq. (10) with explicit loops: anchors (i, c >= 1) with w >= w_anchor; negatives = all other classes' entries."""
    losses = []
    for z, w in zip(z_rows, w_rows):
        for c in range(1, len(w)):
            omega = w[c]
            if omega < w_anchor or omega <= 0 or c not in entries:
                continue
            pos = entries[c]
            neg = [e for k, items in entries.items() if k != c for e in items]
            if not pos or not neg:
                continue
            denom = sum(math.exp(_dot(z, [wk * v for v in zk]) / tau) for zk, wk in neg)
            s = sum(math.log(math.exp(_dot(z, [wj * v for v in zj]) / tau) / denom) for zj, wj in pos)
            f = {"divide": max(omega, omega_min), "multiply": 1.0 / omega, "none": 1.0}[omega_mode]
            losses.append(-s / (f * len(pos)))
    return sum(losses) / len(losses), len(losses)


def _anchor_batch():
    z = torch.stack([_unit(1, 0.2, 0, 0), _unit(0.1, 1, 0.3, 0), _unit(0, 0, 0.5, 1), _unit(0.3, 0.3, 0.3, 0.3)])
    w = torch.tensor([
        [0.0, 1.0, 0.0, 0.0],  # class 1, full weight
        [0.4, 0.0, 0.6, 0.0],  # mixup: class 2 with omega 0.6
        [0.0, 0.0, 0.55, 0.45],  # two event classes mixed: only class 2 passes w_anchor 0.5
        [1.0, 0.0, 0.0, 0.0],  # background: never an anchor
    ])
    return z, w


@pytest.mark.parametrize("omega_mode", ["divide", "multiply", "none"])
def test_softic_equals_hand_computation_of_eq10(omega_mode):
    bank = MemoryBank(3, dim=4, size=8)
    _fill(bank, BANK_ENTRIES)
    z, w = _anchor_batch()
    entries = {c: [(e.tolist(), wt) for e, wt in items] for c, items in BANK_ENTRIES.items()}
    expected, pairs = _hand_softic(z.tolist(), w.tolist(), entries, 0.5, omega_mode)
    loss, n = softic_loss(z, w, bank, 0.1, 0.5, omega_mode)
    assert n == pairs == 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_softic_literal_thresholds_include_small_weights():
    bank = MemoryBank(3, dim=4, size=8)
    _fill(bank, BANK_ENTRIES)
    z, w = _anchor_batch()
    entries = {c: [(e.tolist(), wt) for e, wt in items] for c, items in BANK_ENTRIES.items()}
    expected, pairs = _hand_softic(z.tolist(), w.tolist(), entries, 1e-6, "divide")
    loss, n = softic_loss(z, w, bank, 0.1, 1e-6, "divide")
    assert n == pairs == 4  # row 2 now gives two pairs (classes 2 and 3)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_softic_background_negatives_enter_the_denominator_only():
    bank = MemoryBank(3, dim=4, size=8, include_background=True)
    _fill(bank, {**BANK_ENTRIES, 0: BG_ENTRIES})
    z, w = _anchor_batch()
    entries = {c: [(e.tolist(), wt) for e, wt in items] for c, items in {**BANK_ENTRIES, 0: BG_ENTRIES}.items()}
    expected, pairs = _hand_softic(z.tolist(), w.tolist(), entries, 0.5, "divide")
    loss, n = softic_loss(z, w, bank, 0.1, 0.5, "divide")
    assert n == pairs == 3  # background is still never an anchor
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    plain = MemoryBank(3, dim=4, size=8)
    _fill(plain, BANK_ENTRIES)
    without, _ = softic_loss(z, w, plain, 0.1, 0.5)
    assert abs(loss.item() - without.item()) > 1e-3  # the extra negative changes the denominator


def test_softic_gradient_pulls_anchor_toward_its_class():
    bank = MemoryBank(3, dim=4, size=8)
    _fill(bank, BANK_ENTRIES)
    raw = torch.tensor([[0.2, 0.9, 0.4, 0.1]], requires_grad=True)
    target = torch.tensor([[0.0, 1.0, 0.0, 0.0]])  # class 1: positives along e1 and (e1 + e2)
    positives = torch.stack([z for z, _ in BANK_ENTRIES[1]])
    opt = torch.optim.SGD([raw], lr=0.5)

    def mean_cos() -> float:
        return (F.normalize(raw.detach(), dim=1) @ positives.T).mean().item()

    before, losses = mean_cos(), []
    for _ in range(5):
        loss, _ = softic_loss(F.normalize(raw, dim=1), target, bank, 0.1, 0.5)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert mean_cos() > before + 0.05
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("which", ["empty", "one_class"])
def test_softic_without_valid_pairs_is_zero_with_graph(which):
    bank = MemoryBank(3, dim=4, size=8)
    if which == "one_class":
        _fill(bank, {1: BANK_ENTRIES[1]})  # class 1 has positives but no negatives exist
    raw = torch.randn(4, 4, requires_grad=True)
    z, w = F.normalize(raw, dim=1), _anchor_batch()[1]
    loss, n = softic_loss(z, w, bank)
    assert n == 0 and loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert raw.grad is not None and torch.count_nonzero(raw.grad) == 0
    ic, n_ic = ic_loss(z, w, MemoryBank(3, dim=4, size=8, hard=True))
    assert n_ic == 0 and ic.item() == 0.0


def test_softic_is_fp32_under_bf16_autocast():
    bank = MemoryBank(3, dim=4, size=8)
    _fill(bank, BANK_ENTRIES)
    z, w = _anchor_batch()
    ref, _ = softic_loss(z, w, bank)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = softic_loss(z, w, bank)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(ref.item(), rel=1e-6)


# ------------------------------------------------------------------------------------------------ memory bank


def test_bank_fifo_wraparound_capacity_and_step_cap():
    bank = MemoryBank(2, dim=2, size=5, max_enqueue=3, w_bank=0.7)
    # 4 class-1 candidates per step, all in the same direction (equal cosine to the queue), so the stable
    # most-dissimilar-first order is the batch order; the first coordinate tags each row.
    for step in range(3):
        z = torch.tensor([[float(step * 10 + i + 1), 0.0] for i in range(4)])
        w = torch.tensor([[0.0, 0.9, 0.1]] * 4)
        added = bank.update(z, w)
        assert added.tolist() == [0, 3, 0]  # per-step cap; class 2 below w_bank; no background bank
    # 3 + 3 + 3 = 9 writes into 5 slots: ptr = 9 % 5 = 4, count capped at 5
    assert int(bank.ptr[1]) == 4 and int(bank.count[1]) == 5
    assert int(bank.count[2]) == 0 and int(bank.count[0]) == 0
    # step 0 wrote slots 0-2 (1, 2, 3), step 1 slots 3, 4, 0 (11, 12, 13), step 2 slots 1-3 (21, 22, 23)
    assert bank.feats[1, :, 0].tolist() == [13.0, 21.0, 22.0, 23.0, 12.0]
    assert bank.weights[1].tolist() == pytest.approx([0.9] * 5)


def test_bank_threshold_and_stored_weights():
    bank = MemoryBank(2, dim=2, size=8, max_enqueue=16, w_bank=0.7)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    w = torch.tensor([[0.2, 0.8, 0.0], [0.35, 0.0, 0.65], [0.0, 0.25, 0.75]])
    bank.update(z, w)
    assert int(bank.count[1]) == 1 and bank.weights[1, 0].item() == pytest.approx(0.8)
    assert int(bank.count[2]) == 1 and bank.weights[2, 0].item() == pytest.approx(0.75)
    assert torch.equal(bank.feats[2, 0], z[2])
    hard = MemoryBank(2, dim=2, size=8, w_bank=0.7, hard=True)
    hard.update(z, w)
    assert int(hard.count[1]) == 1 and hard.weights[1, 0].item() == 1.0  # IC bank: unweighted entries


def test_bank_most_dissimilar_first():
    bank = MemoryBank(1, dim=2, size=8, max_enqueue=2, w_bank=0.5)
    bank.update(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    cand = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.7071, 0.7071]])  # cos 1, 0, -1, 0.71
    bank.update(cand, torch.tensor([[0.0, 1.0]] * 4))
    assert int(bank.count[1]) == 3
    assert torch.equal(bank.feats[1, 1], cand[2]) and torch.equal(bank.feats[1, 2], cand[1])


def test_bank_update_with_gather_fn_equals_update_on_all_ranks_data():
    other_z, other_w = F.normalize(torch.randn(6, 4), dim=1), torch.tensor([[0.0, 0.8, 0.2]] * 6)
    mine_z, mine_w = F.normalize(torch.randn(5, 4), dim=1), torch.tensor([[0.1, 0.0, 0.9]] * 3 + [[0, 1.0, 0]] * 2)

    def fake_gather(t: torch.Tensor) -> torch.Tensor:  # "rank 0" = other, "rank 1" = mine
        return torch.cat([other_z if t.shape[1] == 4 else other_w, t])

    a = MemoryBank(2, dim=4, size=8, max_enqueue=4)
    b = MemoryBank(2, dim=4, size=8, max_enqueue=4)
    for bank in (a, b):  # a non-empty queue so that the similarity ordering is exercised
        bank.update(F.normalize(torch.ones(1, 4), dim=1), torch.tensor([[0.0, 1.0, 0.0]]))
    a.update(mine_z, mine_w, gather_fn=fake_gather)
    b.update(torch.cat([other_z, mine_z]), torch.cat([other_w, mine_w]))
    for name, buf in a.state_dict().items():
        assert torch.equal(buf, b.state_dict()[name]), name


def _ddp_worker(rank: int, world: int, port: int, queue) -> None:  # pragma: no cover - runs in a subprocess
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(rank)
    n = 3 + rank  # unequal sizes across ranks
    z = F.normalize(torch.randn(n, 4, generator=g), dim=1)
    w = torch.tensor([[0.0, 1.0, 0.0]] * n)
    from pespot.train.distributed import DistInfo, all_gather_cat

    info = DistInfo(rank=rank, world_size=world, device=torch.device("cpu"), backend="gloo")
    bank = MemoryBank(2, dim=4, size=8, max_enqueue=4)
    bank.update(z, w, gather_fn=lambda t: all_gather_cat(t, info))
    bank.update(z.flip(0), w, gather_fn=lambda t: all_gather_cat(t, info))
    # plain lists: torch's shared-memory tensor passing needs the sender alive until the receiver reads
    queue.put((rank, {k: v.tolist() for k, v in bank.state_dict().items()}))
    dist.barrier()
    dist.destroy_process_group()


def test_all_gather_cat_keeps_banks_identical_across_ranks():
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {r: {k: torch.tensor(v) for k, v in d.items()} for r, d in (queue.get(timeout=60) for _ in procs)}
    for p in procs:
        p.join(timeout=30)
    assert int(results[0]["count"][1]) == 8  # 7 gathered rows, capped at 4 per step, twice
    for name in results[0]:
        assert torch.equal(results[0][name], results[1][name]), name
    # and equal to a single process seeing both ranks' rows in rank order
    rows = [F.normalize(torch.randn(3 + r, 4, generator=torch.Generator().manual_seed(r)), dim=1) for r in range(2)]
    ref = MemoryBank(2, dim=4, size=8, max_enqueue=4)
    ref.update(torch.cat(rows), torch.tensor([[0.0, 1.0, 0.0]] * 7))
    ref.update(torch.cat([r.flip(0) for r in rows]), torch.tensor([[0.0, 1.0, 0.0]] * 7))
    assert torch.equal(ref.feats, results[0]["feats"])


# ------------------------------------------------------------------------------------------------ IC


def test_ic_loss_equals_hand_computation():
    bank = MemoryBank(3, dim=4, size=8, hard=True)
    _fill(bank, {c: [(z, 1.0) for z, _ in items] for c, items in BANK_ENTRIES.items()})
    z, w = _anchor_batch()
    flat = [(c, e.tolist()) for c, items in BANK_ENTRIES.items() for e, _ in items]
    tau, losses = 0.1, []
    for zi, wi in zip(z.tolist(), w.tolist()):
        c = max(range(4), key=lambda k: wi[k])
        if c == 0 or wi[c] < 0.5:
            continue
        logits = [sum(a * b for a, b in zip(zi, e)) / tau for _, e in flat]
        log_z = math.log(sum(math.exp(v) for v in logits))
        pos = [v - log_z for (k, _), v in zip(flat, logits) if k == c]
        losses.append(-sum(pos) / len(pos))
    loss, n = ic_loss(z, w, bank, tau, 0.5)
    assert n == len(losses) == 3
    assert loss.item() == pytest.approx(sum(losses) / len(losses), rel=1e-5)


# ------------------------------------------------------------------------------------------------ SpottingLoss


def test_spotting_loss_total_parts_and_decay():
    cfg = LossConfig(softic_weight=0.5, bank_size=8)
    loss_fn = build_loss(cfg, 3, projection_dim=4)
    assert loss_fn.needs_projection and loss_fn.score_activation == "sigmoid"
    _fill(loss_fn.bank, BANK_ENTRIES)
    z, w = _anchor_batch()
    logits = torch.randn(1, 4, 4)
    total, parts = loss_fn(logits, w[None], z)
    expected_sic, _ = softic_loss(z, w, loss_fn.bank)
    assert parts["cls"].item() == pytest.approx(bce_loss(logits, w[None]).item(), rel=1e-6)
    assert parts["contrastive"].item() == pytest.approx(expected_sic.item(), rel=1e-6)
    assert total.item() == pytest.approx(parts["cls"].item() + 0.5 * expected_sic.item(), rel=1e-6)
    assert parts["contrastive_pairs"].item() == 3
    decayed = build_loss(dataclasses.replace(cfg, linear_decay=True), 3, projection_dim=4)
    decayed.load_state_dict(loss_fn.state_dict())
    total_d, _ = decayed(logits, w[None], z, step_fraction=0.75)
    assert total_d.item() == pytest.approx(parts["cls"].item() + 0.125 * expected_sic.item(), rel=1e-6)
    with pytest.raises(ValueError):
        loss_fn(logits, w[None], None)


def test_spotting_loss_variants_and_bank_state_dict():
    ce = build_loss(LossConfig(classification="ce", contrastive="none"), 3)
    assert not ce.needs_projection and ce.score_activation == "softmax" and ce.state_dict() == {}
    logits, targets = _soft_batch(3)
    total, parts = ce(logits, targets)
    assert set(parts) == {"cls", "total"}
    assert total.item() == pytest.approx(ce_loss(logits, targets, 5.0).item())
    assert build_loss(LossConfig(classification="focal"), 3).score_activation == "sigmoid"
    ic = build_loss(LossConfig(contrastive="ic"), 3, projection_dim=4)
    assert ic.bank.hard
    # the bank travels in state_dict (checkpoints) and update_bank fills it
    src = build_loss(LossConfig(), 3, projection_dim=4)
    src.update_bank(torch.eye(4), torch.tensor([[0.0, 1.0, 0.0, 0.0]] * 2 + [[0.0, 0.0, 0.0, 1.0]] * 2))
    dst = build_loss(LossConfig(), 3, projection_dim=4)
    dst.load_state_dict(src.state_dict())
    assert dst.bank.count.tolist() == [0, 2, 0, 2] and torch.equal(dst.bank.feats, src.bank.feats)


def test_bad_loss_config_is_a_config_error():
    with pytest.raises(ConfigError, match="loss.classification"):
        build_loss(LossConfig(classification="hinge"), 3)
    with pytest.raises(ConfigError, match="loss.temperature"):
        build_loss(LossConfig(temperature=0.0), 3)


def test_bce_foreground_weight_matches_hand_computation():
    import math

    from pespot.train.losses import bce_loss

    logits = torch.tensor([[0.3, -1.2, 2.0], [-0.5, 0.7, -0.1]])
    targets = torch.tensor([[0.2, 0.8, 0.0], [1.0, 0.0, 0.5]])
    fg = 3.0
    total = 0.0
    for i in range(2):
        for j in range(3):
            p = 1 / (1 + math.exp(-float(logits[i, j])))
            w = 1.0 if j == 0 else fg
            t = float(targets[i, j])
            total += -(w * t * math.log(p) + (1 - t) * math.log(1 - p))
    assert float(bce_loss(logits, targets, fg)) == pytest.approx(total / 6, rel=1e-6)
    assert float(bce_loss(logits, targets, 1.0)) == pytest.approx(
        float(torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)), rel=1e-7)
