#!/usr/bin/env bash
set -euo pipefail
# Training tokens/s of one job on the tiny LFM2 fixture with 0 and with $CLIENTS (1,000)
# WebSocket clients on its stream, alternating 0 / N / 0 / N / 0 so that drift on this
# shared machine shows. The clients are the Rust load generator
# (crates/mlxtune-server/examples/ws_clients.rs), in another process on the same machine.
# INTERVAL_MS sets server.stream_update_interval_ms (default 100; 0 = every step live).
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
clients=${CLIENTS:-1000}; interval=${INTERVAL_MS:-100}; steps=${STEPS:-300}
# MLXTUNE_BIN + WS_CLIENTS_BIN: prebuilt binaries (the GPU machine); otherwise build here.
mlxtune=${MLXTUNE_BIN:-./target/release/mlxtune}
clients_bin=${WS_CLIENTS_BIN:-./target/release/examples/ws_clients}
if [ -z "${MLXTUNE_BIN:-}" ]; then
  ./scripts/setup.sh
  cargo build --release -q -p mlxtune-cli
  cargo build --release -q -p mlxtune-server --example ws_clients
fi
dir=$(mktemp -d); port=18282
mkdir -p "$dir/config" "$dir/models" "$dir/datasets"
cp -r tests/fixtures/models/lfm2 "$dir/models/lfm2-tiny"
for i in $(seq 1 64); do echo '{"text": "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs."}'; done > "$dir/datasets/t.jsonl"
printf '[server]\nhost = "127.0.0.1"\nport = %s\nmax_body_bytes = 1048576\ncors_origins = []\nstream_update_interval_ms = %s\n[storage]\ndata_dir = "%s/data"\ndatabase_path = ""\n[workers]\ncount = 1\n[paths]\nmodel_roots = ["%s/models"]\ndataset_roots = ["%s/datasets"]\n[auth]\napi_keys = []\n' $port "$interval" "$dir" "$dir" "$dir" > "$dir/config/default.toml"
ulimit -n 8192
"$mlxtune" serve --config-dir "$dir/config" 2>"$dir/serve.log" &
pid=$!; trap 'kill $pid' EXIT; sleep 2
cfg='{"baseModel":"lfm2-tiny","dataset":{"trainingData":"t.jsonl","format":"text"},"parameters":{"learningRate":0.001,"batchSize":8,"epochs":1,"sequenceLength":64},"optimization":{"gradientCheckpointing":false,"mixedPrecision":"fp32","appleSiliconOptimized":false},"maxSteps":'$steps'}'
status() { curl -s localhost:$port/v1/fine_tuning/jobs/$1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])'; }
run() {
  # Submitted while a blocker job holds the worker, so the clients are attached from step 1.
  blocker=$(curl -s -X POST localhost:$port/v1/fine_tuning/jobs -H 'Content-Type: application/json' -d "${cfg/\"maxSteps\":$steps/\"maxSteps\":100000}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  id=$(curl -s -X POST localhost:$port/v1/fine_tuning/jobs -H 'Content-Type: application/json' -d "$cfg" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  if [ "$1" -gt 0 ]; then
    rm -f "$dir/ready"
    "$clients_bin" "ws://127.0.0.1:$port/v1/fine_tuning/jobs/$id/stream" "$1" "$dir/ready" > "$dir/clients.json" & cpid=$!
    # Measure after the connection phase: wait until every client is connected.
    for _ in $(seq 1 600); do [ -f "$dir/ready" ] && break; sleep 0.1; done
    sleep 1
  fi
  curl -s -X POST localhost:$port/v1/fine_tuning/jobs/$blocker/cancel > /dev/null
  while [ "$(status $id)" != succeeded ]; do sleep 0.5; done
  received=null
  if [ "$1" -gt 0 ]; then wait $cpid; received=$(cat "$dir/clients.json"); fi
  curl -s localhost:$port/v1/fine_tuning/jobs/$id/metrics | RECEIVED="$received" python3 -c "
import json,os,sys,statistics
d=json.load(sys.stdin)['data'][20:]
print(json.dumps({'clients': $1, 'interval_ms': $interval, 'steps': len(d), 'median_tokens_per_second': round(statistics.median(m['all_tokens_per_second'] for m in d)), 'received': json.loads(os.environ['RECEIVED'])}))"
}
for n in ${PATTERN:-0 $clients 0 $clients 0 $clients 0}; do run "$n"; done
