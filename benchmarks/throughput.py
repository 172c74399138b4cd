"""Throughput of the paper's model vs the E2E-Spot baseline: training steps and inference, side by side.

Variants, all at the same clip length, frame size and batch (random weights and frames; speed does not depend on
them):

* ``train paper``: the paper's optimiser step as the trainer runs it (``pespot.train.trainer.train_step``,
  method-spec 5.4): BCE + SoftIC, the ASAM ascent, a second forward/backward pass, the AdamW step, the SoftIC
  bank update;
* ``train paper, no ASAM``: the same model and loss with one pass and plain AdamW, so the model's own cost
  relative to the baseline is visible;
* ``train paper, no ASAM, reference ASTRM``: the same with ASTRM's plain autograd form (the implementation
  before the speed work, ``ASTRM.forward_reference``): the "before" of the before/after comparison;
* ``train e2e-spot``: E2E-Spot's own step: GSM + Bi-GRU, soft-target CE, plain AdamW, one pass;
* ``infer paper`` / ``infer paper, reference ASTRM`` / ``infer e2e-spot``: eval mode, ``torch.inference_mode``,
  channels_last (the presets' default), bf16 autocast on CUDA.

Each round runs every variant once, one after the other (interleaved), so load from other processes hits all of
them alike and the ratios stay meaningful on a busy machine; the first ``--warmup`` rounds are not counted and
the median of ``--steps`` rounds is reported. Peak memory is measured per variant in a fresh subprocess over one
step (AdamW's moments are made before it, as they exist from the second training step on): the peak RSS of that
process on the CPU (``VmHWM``; ``getrusage``'s ``ru_maxrss`` where there is no /proc),
``torch.cuda.max_memory_allocated`` on CUDA. The ratios paper/baseline are set next to the FLOP ratio of
``pespot.model.summary.model_info``. A per-stage table times each of ASTRM's input shapes alone (fast vs
reference, forward+backward and inference) and lists the top operators of stage s1 from ``torch.profiler``.

On a CPU shared with other work, OpenMP's default busy-waiting makes a 2-thread run several times slower than a
1-thread run; the script therefore sets ``OMP_WAIT_POLICY=PASSIVE`` unless it is already set (recorded in the
results).

    python benchmarks/throughput.py                  # 112 and 224, clip 128, batch 1: docs/results/throughput.*
    python benchmarks/throughput.py --sizes 112 --clip-len 32 --steps 2 --out /tmp/throughput
    python benchmarks/throughput.py --device cuda --batch 8
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the first OpenMP use (torch import)

import argparse
import contextlib
import json
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pespot.config import Config, load_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, versions, write_results

ROOT = Path(__file__).resolve().parents[1]

TRAIN_VARIANTS = {  # name -> (preset, ASAM as in the preset?, reference ASTRM?)
    "paper": ("paper", True, False),
    "paper-noasam": ("paper", False, False),
    "paper-ref-noasam": ("paper", False, True),
    "e2e-spot": ("e2e-spot", True, False),
}
INFER_VARIANTS = {"paper": ("paper", False), "paper-ref": ("paper", True), "e2e-spot": ("e2e-spot", False)}
LABELS = {
    "train:paper": "train, paper (BCE + SoftIC, ASAM: 2 passes)",
    "train:paper-noasam": "train, paper without ASAM (1 pass)",
    "train:paper-ref-noasam": "train, paper without ASAM, reference ASTRM (before)",
    "train:e2e-spot": "train, E2E-Spot (CE, AdamW, 1 pass)",
    "infer:paper": "inference, paper",
    "infer:paper-ref": "inference, paper, reference ASTRM (before)",
    "infer:e2e-spot": "inference, E2E-Spot",
    "train:paper-noasam-compiled": "train, paper without ASAM, torch.compile",
    "infer:paper-compiled": "inference, paper, torch.compile",
}


# ------------------------------------------------------------------------------------------------ the variants


def variant_config(preset: str, args: argparse.Namespace, asam: bool = True) -> Config:
    overrides = [f"model.clip_len={args.clip_len}", "model.pretrained=false"]
    if not asam:
        overrides.append("optim.sam=none")
    return load_config(preset, overrides)


def autocast_for(device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast on CUDA (the trainer's ``train.amp: auto``), none on the CPU."""
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def make_batch(args: argparse.Namespace, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised frames (B, T, 3, S, S) and per-frame targets (B, T, K+1): background, with an event on about
    one frame in ten (so the SoftIC bank fills up during the warm-up)."""
    gen = torch.Generator().manual_seed(0)
    frames = torch.randn(args.batch, args.clip_len, 3, size, size, generator=gen)
    targets = torch.zeros(args.batch, args.clip_len, args.classes + 1)
    labels = torch.randint(1, args.classes + 1, (args.batch, args.clip_len), generator=gen)
    events = torch.rand(args.batch, args.clip_len, generator=gen) < 0.1
    targets[..., 0] = 1.0
    targets[events] = 0.0
    targets[events, labels[events]] = 1.0
    return frames.to(device), targets.to(device)


def build_variant(name: str, size: int, args: argparse.Namespace, device: torch.device) -> Callable[[], None]:
    """A function running one step of variant ``name`` (``train:...`` or ``infer:...``), synchronised on CUDA."""
    from pespot.model import build_model
    from pespot.model.astrm import set_reference_implementation

    kind, _, short = name.partition(":")
    compiled = short.endswith("-compiled")
    short = short.removesuffix("-compiled")
    autocast = autocast_for(device)
    frames, targets = make_batch(args, size, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    if kind == "infer":
        preset, reference = INFER_VARIANTS[short]
        cfg = variant_config(preset, args)
        model = build_model(cfg, args.classes, load_weights=False).to(device).eval()
        if reference:
            set_reference_implementation(model)
        net = torch.compile(model) if compiled else model

        def infer_step() -> None:
            with torch.inference_mode(), autocast():
                net(frames)
            sync()

        return infer_step

    from pespot.train.job import step_job
    from pespot.train.trainer import train_step

    preset, asam, reference = TRAIN_VARIANTS[short]
    cfg = variant_config(preset, args, asam)
    model = build_model(cfg, args.classes, load_weights=False).to(device).train()
    if reference:
        set_reference_implementation(model)
    job = step_job(cfg, args.classes, device, model=model)
    if compiled:
        job.net = torch.compile(model)
    optimizer = job.optimizer

    def train_one_step() -> None:
        train_step(job, job.sam, frames, targets, 0.0, "benchmark")
        sync()

    train_one_step.optimizer = optimizer  # for the memory measurement
    return train_one_step


def variant_names(args: argparse.Namespace) -> list[str]:
    names = [f"train:{n}" for n in TRAIN_VARIANTS] + [f"infer:{n}" for n in INFER_VARIANTS]
    if args.compile:
        names += ["train:paper-noasam-compiled", "infer:paper-compiled"]
    return names


# ------------------------------------------------------------------------------------------------ measurements


def time_side_by_side(size: int, args: argparse.Namespace, device: torch.device) -> dict[str, dict]:
    """Interleaved rounds over all variants; returns per variant the times (s) of the counted rounds."""
    steps = {}
    first = {}
    for name in variant_names(args):
        steps[name] = build_variant(name, size, args, device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(args.warmup + args.steps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            elapsed = time.perf_counter() - start
            if round_index == 0:
                first[name] = elapsed  # includes torch.compile's compilation for compiled variants
            if round_index >= args.warmup:
                times[name].append(elapsed)
        print(f"  {size}px round {round_index + 1}/{args.warmup + args.steps}: "
              + ", ".join(f"{n} {times[n][-1] if times[n] else first[n]:.2f}s" for n in steps), file=sys.stderr)
    frames = args.batch * args.clip_len
    out = {}
    for name, values in times.items():
        median = statistics.median(values)
        out[name] = {"label": LABELS[name], "median_s": round(median, 4), "min_s": round(min(values), 4),
                     "times_s": [round(v, 4) for v in values], "frames_per_s": round(frames / median, 2),
                     "first_call_s": round(first[name], 2)}
    return out


def measure_memory(name: str, size: int, args: argparse.Namespace) -> dict:
    """Peak memory of two steps of ``name`` in a fresh Python process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-of", name, "--sizes", str(size),
           "--clip-len", str(args.clip_len), "--batch", str(args.batch), "--classes", str(args.classes),
           "--device", args.device, "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": tail[:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB: ``VmHWM`` of /proc/self/status where there is one.

    ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` would do elsewhere, but on Linux it keeps the parent's peak
    across fork + exec, so a subprocess of a large benchmark would report the benchmark's own peak.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def memory_child(args: argparse.Namespace) -> int:
    """The subprocess side of :func:`measure_memory`: prints one JSON line."""
    device = torch.device(args.device)
    step = build_variant(args.memory_of, args.sizes[0], args, device)
    optimizer = getattr(step, "optimizer", None)
    if optimizer is not None:  # AdamW's moments exist from the first step on: make them before measuring
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    before_mb = peak_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step()
    result = {"rss_before_mb": round(before_mb, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}
    if device.type == "cuda":
        result["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(result))
    return 0


def astrm_shapes(args: argparse.Namespace, size: int) -> list[tuple[tuple[int, int, int, int], int]]:
    """The distinct input shapes (B*T, C, H, W) of the 13 ASTRMs of the paper model, with how many share each."""
    from pespot.model import build_model

    cfg = variant_config("paper", args)
    seen: dict[tuple[int, ...], int] = {}
    with torch.device("meta"):
        model = build_model(cfg, args.classes, load_weights=False).eval()
        hooks = [m.register_forward_pre_hook(lambda _m, inp: seen.__setitem__(
            tuple(inp[0].shape), seen.get(tuple(inp[0].shape), 0) + 1)) for m in model.temporal_modules]
        with torch.no_grad():
            model(torch.zeros(args.batch, args.clip_len, 3, size, size))
    for hook in hooks:
        hook.remove()
    return list(seen.items())


def astrm_stages(size: int, args: argparse.Namespace, device: torch.device) -> dict:
    """Each distinct ASTRM input shape alone: fast vs reference, forward+backward and inference, interleaved;
    plus the top operators of the first (largest) one from torch.profiler."""
    import copy

    from pespot.model.astrm import ASTRM

    rows = []
    profile = {}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for index, (shape, count) in enumerate(astrm_shapes(args, size)):
        torch.manual_seed(0)
        fast = ASTRM(shape[1], args.clip_len).to(device).train()
        ref = copy.deepcopy(fast)
        ref.fast = False
        x = torch.relu(torch.randn(shape, device=device)).contiguous(memory_format=torch.channels_last)
        grad = torch.randn_like(x)
        autocast = autocast_for(device)

        def train(module: torch.nn.Module, x=x, grad=grad, autocast=autocast) -> None:
            with autocast():
                out = module(x.detach().requires_grad_())
            out.backward(grad.to(out.dtype))
            sync()

        def infer(module: torch.nn.Module, x=x, autocast=autocast) -> None:
            with torch.inference_mode(), autocast():
                module(x)
            sync()

        times: dict[str, list[float]] = {k: [] for k in ("train_ref", "train_fast", "infer_ref", "infer_fast")}
        for round_index in range(1 + args.stage_steps):
            for key, fn, module in (("train_ref", train, ref), ("train_fast", train, fast),
                                    ("infer_ref", infer, ref), ("infer_fast", infer, fast)):
                module.train(fn is train)
                start = time.perf_counter()
                fn(module)
                if round_index:
                    times[key].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"shape": list(shape), "count": count,
                     **{f"{k}_ms": round(v * 1e3, 1) for k, v in med.items()}})
        if index == 0 and device.type == "cpu":
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            for key, module in (("reference", ref.train()), ("fast", fast.train())):
                with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                    train(module)
                ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
                profile[key] = [{"op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1e3, 1)}
                                for e in ops]
    totals = {k: round(sum(r[f"{k}_ms"] * r["count"] for r in rows), 1)
              for k in ("train_ref", "train_fast", "infer_ref", "infer_fast")}
    return {"shapes": rows, "total_ms": totals, "profile_s1_train": profile}


def flop_ratio(args: argparse.Namespace, size: int) -> dict:
    """Forward FLOPs per clip (``model_info``, meta device) of both models and their ratio."""
    from pespot.model.summary import model_info

    paper = model_info(variant_config("paper", args), args.classes, (size, size))
    base = model_info(variant_config("e2e-spot", args), args.classes, (size, size))
    return {"paper_gflops": round(paper["gflops"], 2), "e2e_spot_gflops": round(base["gflops"], 2),
            "ratio": round(paper["gflops"] / base["gflops"], 3)}


def ratios(variants: dict[str, dict], stat: str = "median_s") -> dict:
    """paper / E2E-Spot time ratios (>1: the paper's model is slower), and reference / fast ASTRM, of the median
    times (``stat="min_s"``: of the best times, which bursts of load from other processes affect least)."""
    t = {name: v[stat] for name, v in variants.items()}
    out = {
        "train_step": t["train:paper"] / t["train:e2e-spot"],
        "train_model": t["train:paper-noasam"] / t["train:e2e-spot"],
        "train_model_before": t["train:paper-ref-noasam"] / t["train:e2e-spot"],
        "inference": t["infer:paper"] / t["infer:e2e-spot"],
        "inference_before": t["infer:paper-ref"] / t["infer:e2e-spot"],
        "speedup_train_model": t["train:paper-ref-noasam"] / t["train:paper-noasam"],
        "speedup_inference": t["infer:paper-ref"] / t["infer:paper"],
    }
    if "infer:paper-compiled" in t:
        out["inference_compiled"] = t["infer:paper-compiled"] / t["infer:e2e-spot"]
        out["train_model_compiled"] = t["train:paper-noasam-compiled"] / t["train:e2e-spot"]
    return {k: round(v, 3) for k, v in out.items()}


def machine_info(device: torch.device) -> dict:
    return {**machine(), **versions(), "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None}


# ------------------------------------------------------------------------------------------------ report


NOTES = [
    ("The baseline is this repository's E2E-Spot model (GSM as in `pespot.model.shift`, eager PyTorch), not "
     "E2E-Spot's own code; both models run the same RegNetY-200MF (timm), Bi-GRU and classifier."),
    ("The paper's training step costs about twice its model-only step: ASAM runs a second forward/backward "
     "pass on every batch (method-spec 5.4). The model-only ratio is the one to hold against the FLOP ratio."),
    ("FLOPs are the forward pass of `pespot info` (meta device: convolutions and matrix products). ASTRM's "
     "element-wise products, not counted there, are most of what its reference form spends in the early, "
     "large stages (see the profiler lines)."),
    ("torch.compile (`--compile`, not part of the default run because compiling takes minutes) works on this "
     "CPU with the ASTRM Functions. `python benchmarks/throughput.py --sizes 112 --steps 2 --compile "
     "--no-memory --stage-steps 0`: compiled inference 1.06 s vs 1.45 s eager (ratio to E2E-Spot 1.12 vs "
     "1.53 in that run); compiled training step without ASAM 5.16 s vs 4.60 s eager (no gain). The first call "
     "took 18 s (inference) and 114 s (training) with the inductor cache already filled, 176 s and 373 s on a "
     "cold cache (same model, 112 px, clip 128, 2 threads)."),
    ("OMP_WAIT_POLICY=PASSIVE: with OpenMP's default (active) waiting, a 2-thread run on this shared 2-core "
     "machine was 5-8x slower than a 1-thread run of the same model, for every variant."),
]


def verdict(median: float, best: float, flops: float) -> str:
    """Words for a measured time ratio (of the medians and of the best times) against the FLOP ratio."""
    words = {(True, True): "reached", (False, False): "not reached"}.get(
        (median <= flops, best <= flops), "unclear: the two statistics disagree")
    return f"{median:.2f} ({best:.2f}): {words}"


def render_markdown(r: dict) -> str:
    s, m = r["setup"], r["machine"]
    lines = [
        "# Throughput: the paper's model vs E2E-Spot",
        "",
        f"`{r['command']}`",
        "",
        (f"Clip {s['clip_len']} frames, batch {s['batch']}, {s['classes']} classes, random weights and frames, "
         f"device `{s['device']}`" + (" (bf16 autocast)" if s["device"] == "cuda" else " (fp32)")
         + f", channels_last. Each round runs every variant once, interleaved; {s['warmup']} warm-up round(s) "
         f"excluded, median of {s['steps']} rounds. Frames/s = batch x clip length / median step time."),
        (f"Machine: {m['cpu'] or 'unknown CPU'}, {m['cores']} cores, {m['torch_threads']} torch threads, "
         f"OMP_WAIT_POLICY={m['omp_wait_policy']}, load average {m['load_average_1min']} at the end"
         + (f", GPU {m['gpu']}" if m["gpu"] else ", no GPU") + f"; {m['platform']}."),
        (f"Versions: python {m['python']}, torch {m['torch']}, timm {m['timm']}, numpy {m['numpy']}, "
         f"pespot {m['pespot']}."),
        "",
    ]
    for size_key, block in r["sizes"].items():
        fl = block["flops"]
        ra = block["ratios"]
        rm = block.get("ratios_min", ra)
        mem_key = "cuda_max_allocated_mb" if s["device"] == "cuda" else "peak_rss_mb"
        lines += [
            f"## {size_key} x {size_key}",
            "",
            "| variant | median s/step | best s/step | frames/s (median) | peak memory (MB) |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, v in block["variants"].items():
            mem = block.get("memory", {}).get(name, {})
            mem_text = f"{mem[mem_key]:.0f}" if mem_key in mem else mem.get("error", "-")
            lines.append(f"| {v['label']} | {v['median_s']:.3f} | {v['min_s']:.3f} | {v['frames_per_s']:.1f} | "
                         f"{mem_text} |")

        def cell(key: str, ra=ra, rm=rm) -> str:
            return f"{ra[key]:.2f} ({rm[key]:.2f})"

        lines += [
            "",
            (f"Ratios paper / E2E-Spot of the time per step, from the medians (and from the best times, which "
             f"bursts of load from other processes affect least). FLOP ratio of the forward pass: "
             f"**{fl['ratio']:.2f}** ({fl['paper_gflops']:.1f} vs {fl['e2e_spot_gflops']:.1f} GFLOPs per clip)."),
            "",
            "| | now | before (reference ASTRM) |",
            "|---|---:|---:|",
            f"| training step, model only (no ASAM) | **{cell('train_model')}** | {cell('train_model_before')} |",
            f"| training step as in the paper (ASAM, 2 passes) vs E2E-Spot's step | {cell('train_step')} | |",
            f"| inference | **{cell('inference')}** | {cell('inference_before')} |",
            "",
            (f"ASTRM speed-up (reference / fast, whole model): training step {cell('speedup_train_model')}x, "
             f"inference {cell('speedup_inference')}x."),
            (f"Goal (the paper's model costs no more than its FLOP ratio {fl['ratio']:.2f}), from the medians "
             f"(best times): training (model only) {verdict(ra['train_model'], rm['train_model'], fl['ratio'])}, "
             f"inference {verdict(ra['inference'], rm['inference'], fl['ratio'])}."),
        ]
        if "inference_compiled" in ra:
            comp = {n: v["first_call_s"] for n, v in block["variants"].items() if n.endswith("-compiled")}
            lines.append(f"torch.compile: inference ratio {ra['inference_compiled']:.2f}, training (no ASAM) "
                         f"ratio {ra['train_model_compiled']:.2f}; first call (compilation) "
                         + ", ".join(f"{n} {t:.0f} s" for n, t in comp.items()) + ".")
        if mem_key == "peak_rss_mb" and block.get("memory"):
            before = {n: v.get("rss_before_mb") for n, v in block["memory"].items() if "rss_before_mb" in v}
            if before:
                lines.append(f"Peak RSS is the whole process (Python + torch + model: "
                             f"{min(before.values()):.0f}-{max(before.values()):.0f} MB before the first step), "
                             "one step in a fresh process (AdamW's moments made before it).")
        stages = block.get("astrm_stages")
        if stages:
            lines += [
                "",
                f"ASTRM alone per input shape (B*T, C, H, W), ms, median of {s['stage_steps']}:",
                "",
                "| input shape | modules | train ref | train fast | infer ref | infer fast |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for row in stages["shapes"]:
                lines.append(f"| {tuple(row['shape'])} | {row['count']} | {row['train_ref_ms']:.1f} | "
                             f"{row['train_fast_ms']:.1f} | {row['infer_ref_ms']:.1f} | "
                             f"{row['infer_fast_ms']:.1f} |")
            tot = stages["total_ms"]
            lines.append(f"| all 13 (sum) | 13 | {tot['train_ref']:.0f} | {tot['train_fast']:.0f} | "
                         f"{tot['infer_ref']:.0f} | {tot['infer_fast']:.0f} |")
            prof = stages.get("profile_s1_train") or {}
            if prof:
                lines += ["", "Top operators (self CPU ms) of one forward+backward of the first ASTRM (s1):", ""]
                for key in ("reference", "fast"):
                    lines.append(f"- {key}: " + ", ".join(f"{o['op']} x{o['calls']} {o['self_ms']:.0f}"
                                                          for o in prof.get(key, [])))
        lines.append("")
    lines += ["## Notes", ""] + [f"- {n}" for n in NOTES] + [""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224], help="square frame sizes (112 224)")
    parser.add_argument("--clip-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--classes", type=int, default=17, help="event classes K (default 17)")
    parser.add_argument("--steps", type=int, default=4, help="counted rounds (median of them)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted first rounds")
    parser.add_argument("--stage-steps", type=int, default=2,
                        help="rounds of the per-stage ASTRM table (0: skip it)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile'd paper variants (inference, training without ASAM)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "throughput"),
                        help="writes OUT.md and OUT.json (default docs/results/throughput)")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # internal: the memory subprocess
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.memory_of:
        return memory_child(args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    started = time.perf_counter()
    result_sizes = {}
    for size in args.sizes:
        print(f"size {size}: timing {len(variant_names(args))} variants side by side", file=sys.stderr)
        block: dict = {"flops": flop_ratio(args, size), "variants": time_side_by_side(size, args, device)}
        block["ratios"] = ratios(block["variants"])
        block["ratios_min"] = ratios(block["variants"], "min_s")
        if not args.no_memory:
            print(f"size {size}: peak memory, one fresh process per variant", file=sys.stderr)
            block["memory"] = {name: measure_memory(name, size, args) for name in variant_names(args)
                               if not name.endswith("-compiled")}
        if args.stage_steps:
            print(f"size {size}: ASTRM per input shape", file=sys.stderr)
            block["astrm_stages"] = astrm_stages(size, args, device)
        result_sizes[str(size)] = block
        print(f"size {size}: ratios {block['ratios']}, FLOP ratio {block['flops']['ratio']}", file=sys.stderr)

    command = "python benchmarks/throughput.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    result = {
        "benchmark": "throughput", "command": command.strip(), "machine": machine_info(device),
        "setup": {"sizes": args.sizes, "clip_len": args.clip_len, "batch": args.batch, "classes": args.classes,
                  "steps": args.steps, "warmup": args.warmup, "stage_steps": args.stage_steps,
                  "device": device.type, "amp": "bf16" if device.type == "cuda" else None,
                  "channels_last": True},
        "sizes": result_sizes, "wall_s": round(time.perf_counter() - started, 1),
    }
    write_results(args.out, result, render_markdown, note=f" in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
