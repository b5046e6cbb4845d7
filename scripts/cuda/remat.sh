#!/usr/bin/env bash
# Runs on the GPU machine, call 2 after `on-device.sh stash`: gradient checkpointing's memory
# and speed, this build (`new`) against another one packed beside it as `bin/mlxtune-before`
# in .device/b/bin.tar.xz (`before`, skipped when absent), beside the un-checkpointed step and
# mlx-lm's checkpointed step (WITH_MLXLM=1). Then the training-step and kernel tests on CUDA in
# strict f32 (unless SKIP_TESTS=1). RUNS="which|batch seq [args];..." picks the runs.
# Raw lines in $OUT/remat.jsonl.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$root/scripts/cuda/runtime.sh"
lora_step_setup
default_runs="new|8 2048 --grad-checkpoint;before|8 2048 --grad-checkpoint;new|8 2048;new|16 4096 --grad-checkpoint;before|16 4096 --grad-checkpoint"
IFS=';' read -ra runs <<< "${RUNS:-$default_runs}"
for r in "${runs[@]}"; do
  which=${r%%|*}; read -r b s extra <<< "${r#*|}"
  bin="$rt/bin/mlxtune"
  if [ "$which" = before ]; then bin="$rt/bin/mlxtune-before"; [ -x "$bin" ] || continue; fi
  line=$(timeout 150 "$bin" $bench --batch "$b" --seq "$s" --steps "${STEPS:-5}" \
    --warmup 2 $extra 2>&1 | tail -1)
  echo "{\"run\":\"$which\",\"args\":\"$b $s $extra\",\"result\":${line:-null}}" | tee -a "$out/remat.jsonl" \
    | python3 -c "import json,sys
for l in sys.stdin:
    j=json.loads(l); r=j['result'] or {}
    print(j['run'], j['args'], r.get('tokens_per_second'), 'tok/s', round(r.get('peak_memory_bytes',0)/2**30,2), 'GiB', r.get('loss'))" 2>/dev/null || true
done
if [ -n "${WITH_MLXLM:-}" ]; then
  OUT="$out" PARTS=mlxlm MLXLM="lora,8,2048,1,1" MLXLM_TUNED="lora,8,2048,1,1" bash "$root/scripts/cuda/peers.sh" > "$out/mlxlm.log" 2>&1
  grep -h '^{' "$out"/*mlxlm*.jsonl 2>/dev/null | tail -4
fi
step_tests
