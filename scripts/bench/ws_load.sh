#!/usr/bin/env bash
set -euo pipefail
# Training tokens/s of one job on the tiny LFM2 fixture with 0, then 1,000, then 0 WebSocket
# clients on its stream (scripts/bench/ws_clients.py: Python websockets, on the same machine).
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
./scripts/setup.sh
cargo build --release -q -p mlxtune-cli
[ -d .native/pytools/ws ] || python3 -m pip install -q --target .native/pytools/ws websockets
dir=$(mktemp -d); port=18282
mkdir -p "$dir/config" "$dir/models" "$dir/datasets"
cp -r tests/fixtures/models/lfm2 "$dir/models/lfm2-tiny"
for i in $(seq 1 64); do echo '{"text": "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs."}'; done > "$dir/datasets/t.jsonl"
printf '[server]\nhost = "127.0.0.1"\nport = %s\nmax_body_bytes = 1048576\ncors_origins = []\n[storage]\ndata_dir = "%s/data"\ndatabase_path = ""\n[workers]\ncount = 1\n[paths]\nmodel_roots = ["%s/models"]\ndataset_roots = ["%s/datasets"]\n[auth]\napi_keys = []\n' $port "$dir" "$dir" "$dir" > "$dir/config/default.toml"
ulimit -n 8192
./target/release/mlxtune serve --config-dir "$dir/config" 2>"$dir/serve.log" &
pid=$!; trap 'kill $pid' EXIT; sleep 2
cfg='{"baseModel":"lfm2-tiny","dataset":{"trainingData":"t.jsonl","format":"text"},"parameters":{"learningRate":0.001,"batchSize":8,"epochs":1,"sequenceLength":64},"optimization":{"gradientCheckpointing":false,"mixedPrecision":"fp32","appleSiliconOptimized":false},"maxSteps":300}'
run() {
  id=$(curl -s -X POST localhost:$port/v1/fine_tuning/jobs -H 'Content-Type: application/json' -d "$cfg" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  if [ "$1" -gt 0 ]; then PYTHONPATH=.native/pytools/ws python3 scripts/bench/ws_clients.py "ws://127.0.0.1:$port/v1/fine_tuning/jobs/$id/stream" "$1" & cpid=$!; fi
  while [ "$(curl -s localhost:$port/v1/fine_tuning/jobs/$id | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')" != succeeded ]; do sleep 0.5; done
  [ "$1" -gt 0 ] && wait $cpid
  curl -s localhost:$port/v1/fine_tuning/jobs/$id/metrics | python3 -c "
import json,sys,statistics
d=json.load(sys.stdin)['data'][20:]
print(json.dumps({'clients': $1, 'steps': len(d), 'median_tokens_per_second': statistics.median(m['all_tokens_per_second'] for m in d)}))"
}
run 0; run 1000; run 0
