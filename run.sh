#!/usr/bin/env bash
# Installs what is missing, builds mlxtune (release) and runs it; arguments go to mlxtune.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
./scripts/setup.sh
cargo build --release -q -p mlxtune-cli
if [ $# -eq 0 ]; then set -- info; fi
exec ./target/release/mlxtune "$@"
