#!/usr/bin/env bash
# Runs on the GPU machine, call 2 instead of `on-device.sh bench` (docs/cuda.md): the fused
# kernels' tests on CUDA (f32 and bf16 against the unfused references), the model tests that
# run them (fidelity against transformers in strict f32, the training-step equalities), then
# `bench train` with the kernels on and off (MLXTUNE_FUSED_KERNELS=0) in the same call, and
# (PROFILE=1) the Nsight Compute step profile of the fused step. Logs in $OUT.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$root/scripts/cuda/runtime.sh"
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
for t in kernels fidelity train_step; do
  [ -x "$rt/bin/$t" ] || continue
  echo "== $t (CUDA, strict f32 where f32)"
  NVIDIA_TF32_OVERRIDE=0 timeout 200 "$rt/bin/$t" --test-threads 1 2>&1 | tee "$out/test-$t.log" | grep -E "^test |test result|panicked|error" || true
done
echo "== bench train, fused kernels on / off (LFM2-1.2B shape, bf16)"
IFS=';' read -ra list <<< "${AB_CONFIGS:---type lora --compile;--type full --compile}"
for a in "${list[@]}"; do
  for fused in 1 0; do
    MLXTUNE_FUSED_KERNELS=$fused timeout 150 "$rt/bin/mlxtune" bench train --shape lfm2-1.2b --precision bf16 \
      --steps 5 --warmup 2 --peak-tflops 989 --json $a 2>&1 | tail -1 | sed "s/^{/{\"fused_kernels\":$fused,/" | tee -a "$out/ab.jsonl"
  done
done
if [ -n "${PROFILE:-}" ]; then
  MLXTUNE_PROFILE_STEPS=1 timeout 300 ncu --profile-from-start off --clock-control none \
    --metrics gpu__time_duration.sum,launch__grid_size --csv --page raw --print-units base \
    "$rt/bin/mlxtune" bench train --shape lfm2-1.2b --precision bf16 --batch 8 --seq 2048 --type lora --compile \
    --steps 2 --warmup 2 --json > "$out/ncu-fused.csv" 2> "$out/ncu-fused.err"
  python3 "$root/scripts/bench/ncu_groups.py" "$out/ncu-fused.csv" 2 | tee "$out/profile-fused.md" | head -20
fi
