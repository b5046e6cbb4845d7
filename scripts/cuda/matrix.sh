#!/usr/bin/env bash
# Runs on the two-GPU machine (`nvidia-h200-x2`), call 2 after `on-device.sh stash`: the whole
# comparison of docs/benchmarks.md in ONE call, both cards of one host at once, one process
# per card at a time (they share the host's 32 cores):
#   card 0: mlxtune bench train (OURS), real jobs with prefetching on and off (JOBS; empty
#           skips them), then mlx-lm with MLX's defaults (MLXLM) and with our MLX settings
#           (MLXLM_TUNED);
#   card 1: PyTorch + PEFT, eager and torch.compile (TORCH).
# Each side stops at LIMIT seconds (default 540) so that the table is written inside the
# call's 600 s. $OUT gets table.md and raw.tgz (every raw line and log; the device tool
# returns at most 8 files). Needs what peers.sh needs.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${OUT:-/tmp/out}; mkdir -p "$out"
limit=${LIMIT:-540}
lora="--type lora --compile"
export OURS=${OURS:-"$lora --batch 4 --seq 1024;$lora --batch 8 --seq 2048;$lora --batch 16 --seq 4096 --grad-checkpoint;$lora --batch 8 --seq 2048 --grad-checkpoint;$lora --batch 8 --seq 2048 --grad-checkpoint --checkpoint-layers 12;--type full --compile --batch 8 --seq 2048;$lora --batch 8 --seq 2048 --segments 8"}
export MLXLM=${MLXLM-"lora,4,1024,0,1;lora,8,2048,0,1;lora,16,4096,1,1"}
export MLXLM_TUNED=${MLXLM_TUNED-"lora,8,2048,0,1"}
export TORCH=${TORCH-"lora,4,1024,0,1;lora,8,2048,0,1;lora,16,4096,1,1;lora,8,2048,0,0;full,8,2048,0,0"}
export TORCH_TIMEOUT=${TORCH_TIMEOUT:-520}
# Joins libmlx once, before the two sides start.
source "$root/scripts/cuda/runtime.sh"
echo "== card 1: PyTorch, in $out/card1.log"
CUDA_VISIBLE_DEVICES=1 PARTS="torch" timeout "$limit" \
  bash "$root/scripts/cuda/peers.sh" > "$out/card1.log" 2>&1 &
one=$!
echo "== card 0: mlxtune, real jobs, mlx-lm"
CUDA_VISIBLE_DEVICES=0 PARTS="ours jobs mlxlm" timeout "$limit" bash "$root/scripts/cuda/peers.sh"
wait "$one"
cat "$out/card1.log"
python3 "$root/scripts/bench/peers_table.py" "$out" | tee "$out/table.md"
(cd "$out" && tar -czf raw.tgz --remove-files ./*.jsonl ./*.log gpu.txt)
