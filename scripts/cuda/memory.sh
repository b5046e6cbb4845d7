#!/usr/bin/env bash
# Runs on the GPU machine, call 2 after `on-device.sh stash`: the LoRA step's peak memory
# and speed under MLX's memory limit (`--memory-limit-gib`), with every decoder layer or
# only some recomputed (`--checkpoint-layers`), and with the chunked loss alone; the
# un-checkpointed step beside them. Then the training-step and kernel tests on CUDA in
# strict f32 (unless SKIP_TESTS=1).
# RUNS="[VAR=V ...|]batch seq [args];..." picks the runs (VAR=V: MLX settings for that run;
# BIN=name runs $rt/bin/name instead of mlxtune, e.g. an older build packed beside it).
# Raw lines in $OUT/memory.jsonl.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$root/scripts/cuda/runtime.sh"
lora_step_setup
ck="8 2048 --grad-checkpoint"
default_runs="8 2048;$ck;$ck --memory-limit-gib 10;$ck --memory-limit-gib 7;\
$ck --checkpoint-layers 12 --memory-limit-gib 10;$ck --checkpoint-layers 10 --memory-limit-gib 10.5;\
MLX_MAX_OPS_PER_BUFFER=20 MLX_BFS_MAX_WIDTH=20|$ck --memory-limit-gib 10;\
8 2048 --chunked-loss true;8 2048 --chunked-loss true --memory-limit-gib 20;\
MLX_MAX_OPS_PER_BUFFER=20 MLX_BFS_MAX_WIDTH=20|8 2048 --chunked-loss true"
IFS=';' read -ra runs <<< "${RUNS:-$default_runs}"
for r in "${runs[@]}"; do
  vars=""; [[ "$r" == *"|"* ]] && { vars=${r%%|*}; r=${r#*|}; }
  read -r b s extra <<< "$r"
  exe=mlxtune; [[ "$vars" =~ BIN=([^ ]+) ]] && exe=${BASH_REMATCH[1]}
  line=$(env $vars timeout "${RUN_TIMEOUT:-120}" "$rt/bin/$exe" $bench --batch "$b" --seq "$s" \
    --steps "${STEPS:-3}" --warmup 2 $extra 2>&1 | tail -1)
  echo "{\"env\":\"$vars\",\"args\":\"$b $s $extra\",\"result\":${line:-null}}" | tee -a "$out/memory.jsonl" \
    | python3 -c "import json,sys
for l in sys.stdin:
    j=json.loads(l); r=j['result'] or {}
    print(j['env'], j['args'], r.get('tokens_per_second'), 'tok/s', round(r.get('peak_memory_bytes',0)/2**30,2), 'GiB', r.get('loss'))" 2>/dev/null || true
done
step_tests
