#!/usr/bin/env bash
# Runs on the GPU machine, call 2 after `on-device.sh stash`: where a real job's tokens/s goes
# against `bench train` at the same shape (LoRA, 8 x 2048 unless BATCH/SEQ): `bench train` on
# random weights and on the same weights loaded from a model directory, causal and packed
# rows; then real jobs (`mlxtune train` on packed data, scripts/bench/train_job.sh, per-step
# metrics kept) with the prefetching batch builder on and off; then, when TORCH is set,
# peers.sh's PyTorch part. Writes $OUT/job-gap.tgz (every raw line) and prints a summary.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$root/scripts/cuda/runtime.sh"
out=${OUT:-/tmp/out}; mkdir -p "$out/gap"
batch=${BATCH:-8}; seq=${SEQ:-2048}
m=/tmp/job-gap-model
"$rt/bin/mlxtune" bench init-model --shape lfm2-1.2b --out "$m" --precision bf16 \
  --tokenizer-from "$root/tests/fixtures/models/lfm2" >&2
bench="bench train --shape lfm2-1.2b --precision bf16 --steps 10 --warmup 3 --type lora --compile"
for extra in "" "--segments 8" "--model $m" "--model $m --segments 8"; do
  line=$(timeout 150 "$rt/bin/mlxtune" $bench --batch "$batch" --seq "$seq" --json $extra 2>&1 | tail -1)
  echo "{\"args\":\"$extra\",\"result\":${line:-null}}" >> "$out/gap/bench.jsonl"
done
for pf in 1 0; do
  line=$(MODEL="$m" KEEP="$out/gap/job-$pf" MLXTUNE_PREFETCH=$pf MLXTUNE_BIN="$rt/bin/mlxtune" \
    BATCH=$batch SEQ=$seq STEPS=${STEPS:-20} timeout 180 bash "$root/scripts/bench/train_job.sh" \
    2>"$out/gap/job-$pf.log" | tail -1)
  echo "{\"prefetch\":$pf,\"result\":${line:-null}}" >> "$out/gap/jobs.jsonl"
done
if [ -n "${TORCH:-}" ]; then
  OUT="$out/gap" PARTS="torch" bash "$root/scripts/cuda/peers.sh" > "$out/gap/torch.log" 2>&1
fi
python3 - "$out/gap" <<'PY'
import json, os, sys
d = sys.argv[1]
def rows(name):
    for l in open(f"{d}/{name}"):
        try:
            yield json.loads(l)
        except ValueError:
            print("not a result:", l.strip()[:300])
for j in rows("bench.jsonl"):
    r = j["result"] or {}
    print(f"bench {j['args'] or '(random weights, causal)':<40} {r.get('tokens_per_second', 0):>9,.0f} tok/s  "
          f"{r.get('peak_memory_bytes', 0) / 2**30:.2f} GiB")
for j in rows("jobs.jsonl"):
    r = j["result"] or {}
    print(f"job prefetch={j['prefetch']}: median {r.get('median_tokens_per_second')} tok/s, "
          f"padding {r.get('padding_waste')}, peak {r.get('peak_memory_gib')} GiB")
    p = f"{d}/job-{j['prefetch']}/metrics.jsonl"
    if os.path.exists(p):
        steps = [json.loads(x) for x in open(p) if '"step"' in x]
        print("  per step tok/s:", " ".join(f"{s['all_tokens_per_second']:.0f}" for s in steps))
        print("  per step padding:", " ".join(f"{s['padding_waste']:.3f}" for s in steps))
PY
tar -C "$out" -czf "$out/job-gap.tgz" gap && rm -rf "$out/gap"
