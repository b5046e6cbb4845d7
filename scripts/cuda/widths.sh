#!/usr/bin/env bash
# Runs on the GPU machine, call 2 after `on-device.sh stash`: a compiled job of bucketed
# batches (no packing; LoRA, LFM2-1.2B shape, bf16, 8 rows of up to 2,048) with each binary in
# BINS (default "mlxtune mlxtune-old": this build and the one before), in turn, ROUNDS times
# (default 2): the first round meets its batch widths cold (MLX compiles their kernels), later
# rounds warm. Writes $OUT/<round>-<binary>/{events,metrics}.jsonl and prints per job the first
# step's and the whole run's time, the padding and the widths it said it would take.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$root/scripts/cuda/runtime.sh"
out=${OUT:-/tmp/out}; mkdir -p "$out"
steps=${STEPS:-48}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
model=/tmp/widths-model
[ -d "$model" ] || "$rt/bin/mlxtune" bench init-model --shape lfm2-1.2b --out "$model" \
  --precision bf16 --tokenizer-from "$root/tests/fixtures/models/lfm2" > /dev/null
for round in $(seq 1 "${ROUNDS:-2}"); do
  for b in ${BINS:-mlxtune mlxtune-old}; do
    MODEL="$model" MLXTUNE_BIN="$rt/bin/$b" KEEP="$out/$round-$b" STEPS=$steps \
      EXTRA='{"packing": false}' timeout 250 bash "$root/scripts/bench/train_job.sh" \
      > "$out/$round-$b.json" 2> "$out/$round-$b.log"
    python3 - "$out/$round-$b" <<'PY'
import json, sys
d = sys.argv[1]
ev = [json.loads(l) for l in open(f"{d}/events.jsonl") if l.strip()]
st = [e for e in ev if e.get("type") == "step"]
said = [e["text"] for e in ev if e.get("type") == "message" and e["text"].startswith("compiled")]
pad = sum(s["padding_waste"] for s in st) / len(st)
print(f"{d.split('/')[-1]}: first step at {st[0]['elapsed_seconds']:.2f} s, last at "
      f"{st[-1]['elapsed_seconds']:.2f} s, steps 2-{len(st)} {st[-1]['elapsed_seconds'] - st[0]['elapsed_seconds']:.2f} s, "
      f"mean padding {pad:.3f}, slowest step after the first "
      f"{max(b['elapsed_seconds'] - a['elapsed_seconds'] for a, b in zip(st, st[1:])):.2f} s; {said[:1]}")
PY
  done
done
