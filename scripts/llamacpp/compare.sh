#!/usr/bin/env bash
# llama.cpp itself against our GGUF files (run by hand, not in CI: building llama.cpp takes
# many minutes). Installs llama-cpp-python from PyPI, built from its sdist (CMake, a C++
# compiler), into .native/pytools/llamacpp-site; exports each fixture architecture with
# `mlxtune export` in several types; records `mlxtune eval` of each file; then
# scripts/llamacpp/compare.py loads every file in llama.cpp and compares.
#   scripts/llamacpp/compare.sh [OUT]      (default OUT: .native/llamacpp-compare)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out="${1:-.native/llamacpp-compare}"
site="$PWD/.native/pytools/llamacpp-site"
if [ ! -d "$site/llama_cpp" ]; then
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" python3 -m pip install -q --disable-pip-version-check \
    --no-binary llama-cpp-python --target "$site" 'llama-cpp-python==0.3.36'
fi
cargo build -q -p mlxtune-cli
bin=target/debug/mlxtune
mkdir -p "$out"
echo "{" > "$out/ours.json"
sep=""
for arch in lfm2 llama qwen2 qwen3; do
  model="tests/fixtures/models/$arch"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("".join(json.dumps({"text": t})+"\n" for t in r["eval_records"]), end="")' \
    "$model/reference.json" > "$out/$arch-records.jsonl"
  for quant in F32 F16 Q8_0 Q4_0 Q4_1 Q4_K_M; do
    file="$out/$arch-$quant.gguf"
    rm -f "$file"
    "$bin" export --model "$model" --format gguf --quant "$quant" --output "$file" > /dev/null
    loss=$(MLXTUNE_CACHE_DIR="$out/cache" "$bin" eval --model "$file" --data "$out/$arch-records.jsonl" --json)
    echo "$sep\"$arch-$quant\": $loss" >> "$out/ours.json"
    sep=","
  done
done
echo "}" >> "$out/ours.json"
PYTHONPATH="$site" python3 scripts/llamacpp/compare.py "$out" | tee "$out/report.txt"
