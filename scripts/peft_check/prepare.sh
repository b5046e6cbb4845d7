#!/usr/bin/env bash
# Makes what scripts/peft_check/check.py compares against transformers + PEFT: for each
# fixture architecture and LoRA / DoRA, a small training job, its fused model directory
# (`mlxtune fuse`), its PEFT copy (`mlxtune export --format peft`) and mlxtune's own eval loss
# of base + adapter on the same data. Writes everything under OUT (default .device/peft_check).
#   scripts/peft_check/prepare.sh [OUT]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out="${1:-.device/peft_check}"
cargo build -q -p mlxtune-cli
bin=target/debug/mlxtune
rm -rf "$out" && mkdir -p "$out"
python3 - "$out/data.jsonl" <<'PY'
import json, sys
lines = ["The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen liquor jugs.",
         "How vexingly quick daft zebras jump!", "Sphinx of black quartz, judge my vow."]
open(sys.argv[1], "w").write("".join(json.dumps({"text": s}) + "\n" for s in lines))
PY
echo "[" > "$out/cases.json"
sep=""
for arch in lfm2 llama qwen2 qwen3; do
  for kind in lora dora; do
    case="$out/$arch-$kind"
    mkdir -p "$case"
    cat > "$case/job.json" <<JSON
{"baseModel": "tests/fixtures/models/$arch",
 "dataset": {"trainingData": "$out/data.jsonl", "format": "text"},
 "parameters": {"learningRate": 0.01, "batchSize": 2, "epochs": 3, "sequenceLength": 64, "loraRank": 4, "loraAlpha": 8},
 "fineTuneType": "$kind", "schedule": {"type": "constant"}, "seed": 1}
JSON
    "$bin" train --config "$case/job.json" --output "$case/job" > /dev/null
    "$bin" fuse --model "tests/fixtures/models/$arch" --adapter "$case/job" --output "$case/fused" > /dev/null
    "$bin" export --model "tests/fixtures/models/$arch" --adapter "$case/job" --format peft --output "$case/peft" > /dev/null
    loss=$("$bin" eval --model "tests/fixtures/models/$arch" --adapter "$case/job" --data "$out/data.jsonl" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["loss"])')
    base=$("$bin" eval --model "tests/fixtures/models/$arch" --data "$out/data.jsonl" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["loss"])')
    rm -rf "$case/job/checkpoints"
    echo "$sep{\"arch\": \"$arch\", \"kind\": \"$kind\", \"dir\": \"$case\", \"mlxtune_loss\": $loss, \"base_loss\": $base}" >> "$out/cases.json"
    sep=","
  done
done
echo "]" >> "$out/cases.json"
cat "$out/cases.json"
