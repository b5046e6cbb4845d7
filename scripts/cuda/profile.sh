#!/usr/bin/env bash
# Runs on the GPU machine, call 2 instead of `on-device.sh bench` (docs/cuda.md): where a
# LoRA step's GPU time goes. Nsight Compute times every kernel of the timed steps of
# `mlxtune bench train` (captured between cuProfilerStart/Stop: MLXTUNE_PROFILE_STEPS=1),
# then scripts/bench/ncu_groups.py groups them. TYPE=full profiles full fine-tuning,
# NCU_STEPS sets how many steps are captured (2), PROFILE_ARGS adds bench arguments.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$root/scripts/cuda/runtime.sh"
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
args="--shape lfm2-1.2b --precision bf16 --batch 8 --seq 2048 --type ${TYPE:-lora} --compile ${PROFILE_ARGS:-}"
steps=${NCU_STEPS:-2}
echo "== plain step time (no profiler): bench train $args"
"$rt/bin/mlxtune" bench train $args --steps 5 --warmup 2 --peak-tflops 989 --json | tail -1 | tee "$out/plain.jsonl"
echo "== ncu ($ncu), $steps captured steps"
MLXTUNE_PROFILE_STEPS=1 timeout ${NCU_TIMEOUT:-420} "$ncu" --profile-from-start off --clock-control none \
  --metrics gpu__time_duration.sum,launch__grid_size --csv --page raw --print-units base \
  "$rt/bin/mlxtune" bench train $args --steps "$steps" --warmup 2 --json > "$out/ncu.csv" 2> "$out/ncu.err" || echo "ncu exit $?"
tail -3 "$out/ncu.err"
python3 "$root/scripts/bench/ncu_groups.py" "$out/ncu.csv" "$steps" | tee "$out/profile.md"
