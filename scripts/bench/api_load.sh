#!/usr/bin/env bash
# Loopback load on the job service (wrk from Debian): job listing, and job submission
# rejected at field validation (422) and accepted after full validation (200, model + data
# pre-flight; no workers, so nothing trains). Prints wrk's latency distribution.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 2; }
./scripts/setup.sh
cargo build --release -q -p mlxtune-cli
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
mkdir -p "$dir/config" "$dir/models" "$dir/datasets"
cp -r tests/fixtures/models/lfm2 "$dir/models/lfm2-tiny"
for i in $(seq 1 50); do
  echo '{"messages": [{"role": "user", "content": "Say it."}, {"role": "assistant", "content": "The quick brown fox jumps over the lazy dog."}]}'
done > "$dir/datasets/chat.jsonl"
port=${PORT:-18181}
cat > "$dir/config/default.toml" <<TOML
[server]
host = "127.0.0.1"
port = $port
max_body_bytes = 1048576
cors_origins = []
[storage]
data_dir = "$dir/data"
database_path = ""
[workers]
count = 0
[paths]
model_roots = ["$dir/models"]
dataset_roots = ["$dir/datasets"]
[auth]
api_keys = []
TOML
./target/release/mlxtune serve --config-dir "$dir/config" 2>"$dir/serve.log" &
pid=$!
sleep 2
good='{"baseModel":"lfm2-tiny","dataset":{"trainingData":"chat.jsonl","format":"chat"},"parameters":{"learningRate":0.001,"batchSize":4,"epochs":1,"sequenceLength":128},"optimization":{"gradientCheckpointing":false,"mixedPrecision":"fp32","appleSiliconOptimized":true}}'
bad='{"baseModel":"lfm2-tiny","dataset":{"trainingData":"chat.jsonl"},"parameters":{"learningRate":0,"batchSize":4,"epochs":1,"sequenceLength":128}}'
for i in $(seq 1 200); do
  curl -s -o /dev/null -X POST "http://127.0.0.1:$port/v1/fine_tuning/jobs" -H 'Content-Type: application/json' -d "$good"
done
post() { printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' "$(printf '%s' "$1" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')" > "$dir/$2.lua"; }
post "$good" good
post "$bad" bad
dur=${DURATION:-10s}
echo "== GET /v1/fine_tuning/jobs?limit=20 (200 jobs stored)"
wrk -t2 -c16 -d"$dur" --latency "http://127.0.0.1:$port/v1/fine_tuning/jobs?limit=20"
echo "== POST /v1/fine_tuning/jobs, rejected at field validation (422)"
wrk -t2 -c16 -d"$dur" --latency -s "$dir/bad.lua" "http://127.0.0.1:$port/v1/fine_tuning/jobs"
echo "== POST /v1/fine_tuning/jobs, fully validated and queued (200)"
wrk -t2 -c16 -d"$dur" --latency -s "$dir/good.lua" "http://127.0.0.1:$port/v1/fine_tuning/jobs"
