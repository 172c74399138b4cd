#!/usr/bin/env bash
# The GPU checks in one command, about 8 minutes on one GPU (run it whenever a GPU machine is lent):
#
#   1. CUDA, bf16 autocast, NCCL: a 2-step DDP training with the nccl backend when the machine has >= 2 GPUs, a
#      1-process nccl group otherwise (tests/test_ddp.py's worker), and the bf16 forward of the paper's model;
#   2. the throughput table at 224x224, clip 128, both presets (paper, e2e-spot), bf16: benchmarks/throughput.py;
#   3. the accuracy rows at >= 10x the CPU budget in training frames, bf16 (benchmarks/accuracy.py with
#      --device cuda; cells are resumable, so a run cut short by the time limit still leaves finished cells).
#
# Results go to docs/results/gpu/ (with the GPU's name); commit them. GPU_SH_DRY=1 runs the same plumbing on
# the CPU at a toy size (what the tests do), to check the script without a GPU.
#
#   bash benchmarks/gpu.sh            # on the GPU machine, from the repository root, after `make .venv/.installed`
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${GPU_OUT:-docs/results/gpu}
RUNS=${GPU_RUNS:-runs/gpu}
mkdir -p "$OUT" "$RUNS"
export HF_HUB_OFFLINE=1
if [ "${GPU_SH_DRY:-0}" = "1" ]; then
  DEVICE=cpu; SIZES="32"; CLIP=8; STEPS=16; EPOCHS=2; JOBS=1; PRESET=tiny; SEEDS="0"; ROWS="paper e2e-spot"
  BATCH=2; THR_STEPS=1
else
  DEVICE=cuda; SIZES="224"; CLIP=128; STEPS=1600; EPOCHS=8; JOBS=6; PRESET=bench; SEEDS="0 1 2"
  ROWS="e2e-spot paper paper-gsm paper-no-softic paper-no-asam paper-sam"
  # 10x the CPU budget in frames: batch 16 instead of 4 (4x the frames per step) and 1600 steps instead of 600
  BATCH=16; THR_STEPS=4
fi
start=$(date +%s)
{
  echo "# GPU checks"
  echo
  echo "Made by \`bash benchmarks/gpu.sh\` on $(date -u '+%Y-%m-%d %H:%M') UTC, commit $(git rev-parse --short=12 HEAD)."
  $PY - "$DEVICE" <<'PYEOF'
import sys, torch
device = sys.argv[1]
print()
if device == "cuda":
    print(f"GPU: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, bf16 supported: {torch.cuda.is_bf16_supported()}, NCCL available: "
          f"{torch.distributed.is_nccl_available()}")
else:
    print("dry run on the CPU (GPU_SH_DRY=1): plumbing only, no GPU numbers")
PYEOF
} > "$OUT/gpu.md"

# 1. bf16 forward + nccl (or gloo on the dry run) DDP smoke test
$PY - "$DEVICE" >> "$OUT/gpu.md" <<'PYEOF'
import sys, time, torch
from pespot.config import load_config
from pespot.model import build_model
device = sys.argv[1]
cfg = load_config("paper", ["model.pretrained=false", "model.clip_len=16"])
model = build_model(cfg, 17, load_weights=False).to(device).eval()
x = torch.randn(2, 16, 3, 224 if device == "cuda" else 32, 224 if device == "cuda" else 32, device=device)
with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
    logits = model(x)
print(f"\nbf16 forward of the paper's model: logits {tuple(logits.shape)} {logits.dtype}, finite: "
      f"{bool(torch.isfinite(logits.float()).all())}")
PYEOF
NPROC=1
if [ "$DEVICE" = cuda ]; then NPROC=$($PY -c "import torch; print(min(2, torch.cuda.device_count()))"); fi
DDP_DIR=$(mktemp -d)
$PY -m pespot synth "$DDP_DIR/data" --preset tiny > /dev/null
if $PY -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m pespot train --config paper --json --quiet \
     --set "data.root=$DDP_DIR/data" "out=$DDP_DIR/run" model.pretrained=false model.clip_len=8 data.height=32 \
     data.crop=null data.num_workers=0 train.batch_size=2 train.clips_per_epoch=8 train.epochs=2 \
     train.val_clips=4 train.start_val_epoch=1 "train.device=$DEVICE" > "$RUNS/ddp.log" 2>&1; then
  echo "DDP training ($NPROC process(es), backend $([ "$DEVICE" = cuda ] && echo nccl || echo gloo), ASAM + SoftIC): ok" >> "$OUT/gpu.md"
else
  echo "DDP training ($NPROC process(es)): FAILED, see $RUNS/ddp.log" >> "$OUT/gpu.md"
fi
rm -rf "$DDP_DIR"

# 2. throughput, both presets, 224 / clip 128 (bf16 on CUDA)
$PY benchmarks/throughput.py --device "$DEVICE" --sizes $SIZES --clip-len "$CLIP" --batch 2 --steps "$THR_STEPS" \
    --warmup 1 --stage-steps 1 --out "$OUT/throughput" > "$RUNS/throughput.log" 2>&1 \
  && echo "throughput: $OUT/throughput.md" >> "$OUT/gpu.md" \
  || echo "throughput: FAILED, see $RUNS/throughput.log" >> "$OUT/gpu.md"

# 3. accuracy rows at 10x the CPU budget, time-boxed so the whole script stays within about 8 minutes
left=$(( 480 - ($(date +%s) - start) ))
[ "$left" -lt 60 ] && left=60
timeout "$left" $PY benchmarks/accuracy.py --device "$DEVICE" --preset "$PRESET" --data "$RUNS/data-$PRESET" \
    --out "$RUNS/accuracy" --results "$OUT" --rows $ROWS --seeds $SEEDS --steps "$STEPS" --epochs "$EPOCHS" \
    --jobs "$JOBS" --threads 2 --set train.amp=$([ "$DEVICE" = cuda ] && echo bf16 || echo none) \
    "train.batch_size=$BATCH" model.clip_len=$([ "$DEVICE" = cuda ] && echo 64 || echo "$CLIP") \
    > "$RUNS/accuracy.log" 2>&1 || true
$PY benchmarks/accuracy.py --report-only --data "$RUNS/data-$PRESET" --out "$RUNS/accuracy" --results "$OUT" \
    --rows $ROWS --seeds $SEEDS >> "$RUNS/accuracy.log" 2>&1 || true
echo "accuracy (10x the CPU budget in frames, bf16): $OUT/accuracy.md ($(( $(date +%s) - start )) s in all)" >> "$OUT/gpu.md"
cat "$OUT/gpu.md"
