#!/usr/bin/env bash
set -euo pipefail
# Throughput of a real job: `mlxtune train` (the trainer the service's workers run, with its
# data pipeline, metrics and checkpoint) on a random-weight model of a named shape and a
# synthetic text dataset packed into full rows. Prints one JSON line with the median tokens/s
# after warm-up and the peak memory from the job's metrics.jsonl, to set beside
# `mlxtune bench train` for the same shape.
#   SHAPE (lfm2-1.2b) BATCH (8) SEQ (2048) STEPS (12) PRECISION (bf16)
#   EXTRA: JSON merged into the job config, e.g. '{"optimization": {"gradientCheckpointing": true}}'
#   MLXTUNE_BIN: a prebuilt binary (the GPU machine); otherwise built here.
#   MODEL: an existing model directory (e.g. from `bench init-model`) instead of a fresh one.
#   KEEP: a directory that receives the job's metrics.jsonl and events.jsonl.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
shape=${SHAPE:-lfm2-1.2b}; batch=${BATCH:-8}; seq=${SEQ:-2048}; steps=${STEPS:-12}
precision=${PRECISION:-bf16}; extra=${EXTRA:-'{}'}
mlxtune=${MLXTUNE_BIN:-./target/release/mlxtune}
if [ -z "${MLXTUNE_BIN:-}" ]; then
  ./scripts/setup.sh
  cargo build --release -q -p mlxtune-cli
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
model=${MODEL:-$dir/model}
if [ -z "${MODEL:-}" ]; then
  "$mlxtune" bench init-model --shape "$shape" --out "$model" --tokenizer-from tests/fixtures/models/lfm2 --precision "$precision" >&2
fi
python3 - "$dir" "$batch" "$seq" "$steps" "$precision" "$extra" "$model" <<'PY'
import json, random, sys
d, batch, seq, steps, precision, extra, model = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], json.loads(sys.argv[6]), sys.argv[7]
rng = random.Random(0)
words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "pack", "my", "box",
         "with", "five", "dozen", "liquor", "jugs", "sphinx", "of", "black", "quartz", "judge", "vow"]
# The fixture's tokenizer gives roughly one token per 2-3 characters: 2x the tokens needed.
chars = 2 * 3 * batch * seq * steps
with open(f"{d}/train.jsonl", "w") as f:
    n = 0
    while n < chars:
        text = " ".join(rng.choice(words) for _ in range(rng.randint(100, 400)))
        f.write(json.dumps({"text": text}) + "\n")
        n += len(text)
cfg = {
    "baseModel": model,
    "dataset": {"trainingData": f"{d}/train.jsonl", "format": "text"},
    "parameters": {"learningRate": 1e-4, "batchSize": batch, "epochs": 1, "sequenceLength": seq,
                   "loraRank": 16, "loraAlpha": 32},
    "optimization": {"gradientCheckpointing": False, "mixedPrecision": precision,
                     "appleSiliconOptimized": False, "compile": True},
    "lora": {"dropout": 0.0},
    "packing": True,
    "maxSteps": steps,
    "schedule": {"type": "constant"},
    "checkpoint": {"everySteps": 100000, "keepLast": 1},
}
def merge(a, b):
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            merge(a[k], v)
        else:
            a[k] = v
merge(cfg, extra)
json.dump(cfg, open(f"{d}/job.json", "w"))
PY
"$mlxtune" train --config "$dir/job.json" --output "$dir/out" --json > "$dir/events.jsonl"
if [ -n "${KEEP:-}" ]; then
  mkdir -p "$KEEP" && cp "$dir/out/metrics.jsonl" "$dir/events.jsonl" "$KEEP/"
fi
python3 - "$dir" "$shape" "$batch" "$seq" "$extra" <<'PY'
import json, statistics, sys
d, shape, batch, seq, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
m = [json.loads(l) for l in open(f"{d}/out/metrics.jsonl") if l.strip()]
steps = [x for x in m if "step" in x and "all_tokens_per_second" in x]
timed = steps[2:] or steps
print(json.dumps({
    "job": "mlxtune train", "shape": shape, "batch": batch, "seq": seq, "extra": extra,
    "steps": len(steps),
    "median_tokens_per_second": round(statistics.median(x["all_tokens_per_second"] for x in timed)),
    "median_loss_tokens_per_second": round(statistics.median(x["tokens_per_second"] for x in timed)),
    "padding_waste": round(statistics.median(x.get("padding_waste", 0) for x in timed), 4),
    "peak_memory_gib": round(max(x.get("peak_memory_bytes", 0) for x in timed) / 2**30, 2),
    "first_step_peak_memory_gib": round(steps[0].get("peak_memory_bytes", 0) / 2**30, 2),
    "first_loss": steps[0]["loss"], "last_loss": steps[-1]["loss"],
}))
PY
