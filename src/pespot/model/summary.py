"""A model config in numbers: parameters per part and FLOPs per clip (what ``pespot info`` prints).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` for one clip in eval mode (convolutions, matrix
products, the GRU; element-wise operations such as BN, activations and ASTRM's gating products are not counted),
on the meta device, so no real clip is computed. MACs = FLOPs / 2. ``params_total`` is everything built for
training (with the SoftIC/IC projection head when the loss uses it); ``params_inference`` leaves that head out.
"""

from __future__ import annotations

PART_LABELS = {
    "backbone": "backbone (without inserted modules)",
    "temporal_module": "temporal module (per block)",
    "temporal_head": "temporal head",
    "classifier": "classifier",
    "projection": "projection head (training only)",
}


def model_info(cfg, num_classes: int, size: tuple[int, int] = (224, 224)) -> dict:
    """Parameters per part and FLOPs for one clip of ``cfg.model.clip_len`` frames of ``size`` (H, W)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pespot.model import build_model

    clip_len = cfg.model.clip_len
    with torch.device("meta"):  # shapes only: nothing is allocated or computed
        model = build_model(cfg, num_classes, load_weights=False).eval()
        frames = torch.zeros(1, clip_len, 3, *size)
    params = {name: sum(p.numel() for p in plist) for name, plist in model.parts().items()}
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(frames)
    flops_by_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    total_flops = counter.get_total_flops()

    root = type(model).__name__
    names = {id(module): name for name, module in model.named_modules()}

    def flops_of(module) -> int:
        return flops_by_module.get(f"{root}.{names[id(module)]}", 0)

    inserted = sum(flops_of(m) for m in model.temporal_modules)
    flops_parts = {
        "backbone": flops_of(model.backbone) - inserted,
        "temporal_module": inserted,
        "temporal_head": flops_of(model.temporal_head),
        "classifier": flops_of(model.classifier),
    }
    mcfg = cfg.model
    return {
        "name": cfg.name,
        "backbone": mcfg.backbone,
        "temporal_module": mcfg.temporal_module,
        "temporal_head": mcfg.temporal_head,
        "num_classes": num_classes,
        "clip_len": clip_len,
        "size": [size[0], size[1]],
        "params": params,
        "params_total": sum(params.values()),
        "params_inference": sum(v for k, v in params.items() if k != "projection"),
        "gflops": total_flops / 1e9,
        "gmacs": total_flops / 2e9,
        "gflops_per_frame": total_flops / 1e9 / clip_len,
        "gflops_by_part": {k: v / 1e9 for k, v in flops_parts.items()},
    }


def format_table(info: dict) -> str:
    """The human-readable report."""
    height, width = info["size"]
    lines = [
        (f"{info['name']}: {info['backbone']} + {info['temporal_module']}, {info['temporal_head']} head, "
         f"{info['num_classes']} classes (+ background), clip {info['clip_len']} x {height}x{width}"),
        "",
        f"{'part':<38}{'params':>12}{'GFLOPs':>10}",
    ]
    for part, count in info["params"].items():
        gflops = info["gflops_by_part"].get(part)
        lines.append(f"{PART_LABELS.get(part, part):<38}{count:>12,}{'' if gflops is None else f'{gflops:.2f}':>10}")
    lines += [
        f"{'total (training)':<38}{info['params_total']:>12,}{info['gflops']:>10.2f}",
        f"{'inference (without projection head)':<38}{info['params_inference']:>12,}",
        "",
        (f"per clip: {info['gflops']:.2f} GFLOPs = {info['gmacs']:.2f} GMACs; "
         f"per frame: {info['gflops_per_frame']:.3f} GFLOPs"),
    ]
    return "\n".join(lines)
