#!/usr/bin/env bash
# Runs on the GPU machine, call 2 after `on-device.sh stash`: a real job against `bench train`
# at the job's own attention shape (LoRA, LFM2-1.2B shape, bf16, 8 x 2048 unless BATCH/SEQ).
# The job (`mlxtune train` on packed data, scripts/bench/train_job.sh, STEPS steps) runs first
# and says its attention reach; then `bench train` runs causal rows, packed rows at that reach,
# the same with the next step's graph built in its turn (MLXTUNE_BUILD_AHEAD=0), and causal
# rows for as many steps as the job (clock drift). The GPU's clocks, power and temperature are
# sampled every 500 ms into smi.csv. MORE: ';'-separated further bench configurations (leading
# VAR=value words their environment; '$lora' stands for the LoRA arguments). TESTS: test binaries in $rt/bin to run first (each with
# its filter words after a colon, e.g. "train_runs:built_ahead kept_gradients").
# Writes $OUT/{gpu.txt,tests.log,job/,job.json,bench.jsonl,smi.csv} and prints a summary.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$root/scripts/cuda/runtime.sh"
out=${OUT:-/tmp/out}; mkdir -p "$out"
batch=${BATCH:-8}; seq=${SEQ:-2048}; steps=${STEPS:-24}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
IFS=';' read -ra tests <<< "${TESTS:-}"
for t in "${tests[@]}"; do
  read -ra filters <<< "${t#*:}"
  NVIDIA_TF32_OVERRIDE=0 timeout 120 "$rt/bin/${t%%:*}" --test-threads 1 "${filters[@]}" \
    >> "$out/tests.log" 2>&1; echo "${t%%:*}: exit $?" | tee -a "$out/tests.log"
done
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu \
  --format=csv -lms 500 > "$out/smi.csv" 2>/dev/null &
smi=$!
MLXTUNE_BIN="$rt/bin/mlxtune" KEEP="$out/job" BATCH=$batch SEQ=$seq STEPS=$steps timeout 200 \
  bash "$root/scripts/bench/train_job.sh" 2>"$out/job.log" | tail -1 | tee "$out/job.json"
reach=$(grep -o 'keys from [0-9]* positions before' "$out/job/events.jsonl" | grep -o '[0-9]*' | head -1)
echo "job's attention reach: ${reach:-none}"
lora="--type lora --compile --batch $batch --seq $seq"
runs=("$lora" "$lora --segments 2 ${reach:+--attention-reach $reach}"
  "MLXTUNE_BUILD_AHEAD=0 $lora --segments 2 ${reach:+--attention-reach $reach}"
  "MLXTUNE_BUILD_AHEAD=0 $lora" "$lora --steps $((steps - 2))")
IFS=';' read -ra more <<< "${MORE:-}"
for m in "${more[@]}"; do runs+=("${m//\$lora/$lora}"); done
for args in "${runs[@]}"; do
  read -ra words <<< "$args"; envs=(); rest=()
  for w in "${words[@]}"; do
    if [ ${#rest[@]} -eq 0 ] && [[ "$w" == *=* ]]; then envs+=("$w"); else rest+=("$w"); fi
  done
  [[ " ${rest[*]} " == *" --steps "* ]] || rest+=(--steps 5)
  line=$(timeout 150 env "${envs[@]}" "$rt/bin/mlxtune" bench train --shape lfm2-1.2b \
    --precision bf16 --warmup 2 --json "${rest[@]}" 2>&1 | tail -1)
  echo "{\"env\":\"${envs[*]}\",\"args\":\"${rest[*]}\",\"result\":${line:-null}}" >> "$out/bench.jsonl"
done
kill "$smi" 2>/dev/null
python3 - "$out" <<'PY'
import json, statistics, sys
d = sys.argv[1]
for l in open(f"{d}/bench.jsonl"):
    j = json.loads(l); r = j["result"] or {}
    print(f"bench {j['env']} {j['args']}: {r.get('tokens_per_second', 0):,.0f} tok/s, "
          f"reach {r.get('attention_reach')}, phases {r.get('phase_seconds')}")
m = [json.loads(x) for x in open(f"{d}/job/metrics.jsonl") if '"all_tokens_per_second"' in x]
per_position = [s["all_tokens_per_second"] / (1 - s["padding_waste"]) for s in m[2:]]
print("job per step tok/s:", " ".join(f"{s['all_tokens_per_second']:.0f}" for s in m))
print(f"job median per position (steps 3 on): {statistics.median(per_position):,.0f}")
clocks = [l.split(", ") for l in open(f"{d}/smi.csv").read().splitlines()[1:]]
sm = [int(c[1].split()[0]) for c in clocks if len(c) > 5 and c[5].strip() != "0 %"]
watts = [float(c[3].split()[0]) for c in clocks if len(c) > 5 and c[5].strip() != "0 %"]
if sm:
    print(f"while busy: SM clock {min(sm)}/{statistics.median(sm)}/{max(sm)} MHz, "
          f"power {min(watts):.0f}/{statistics.median(watts):.0f}/{max(watts):.0f} W (min/median/max)")
PY
