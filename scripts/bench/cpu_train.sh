#!/usr/bin/env bash
# Training throughput on this CPU: mlxtune and PyTorch on the same shapes, f32, in one run.
#   scripts/bench/cpu_train.sh [PYTHON]   PYTHON: an interpreter with torch, transformers, peft
# Each configuration runs in its own process (peak memory per process).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
py=${1:-python3}
./scripts/setup.sh
cargo build --release -q -p mlxtune-cli
batch=${BATCH:-4}; seq=${SEQ:-256}; steps=${STEPS:-5}
for shape in llama-20m lfm2-20m; do
  for mode in lora full; do
    ./target/release/mlxtune bench train --shape "$shape" --type "$mode" --batch "$batch" --seq "$seq" \
      --precision f32 --steps "$steps" --warmup 2 --json
    "$py" scripts/bench/torch_cpu_train.py "$shape" "$mode" "$batch" "$seq" "$steps"
  done
  ./target/release/mlxtune bench train --shape "$shape" --type lora --batch "$batch" --seq "$seq" \
    --precision f32 --steps "$steps" --warmup 2 --grad-checkpoint --json
done
