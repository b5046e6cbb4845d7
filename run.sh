#!/usr/bin/env bash
# Installs what is missing, builds mlxtune (release) and runs it: `mlxtune serve` by
# default (settings in config/), or the mlxtune subcommand given as arguments.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
./scripts/setup.sh
cargo build --release -q -p mlxtune-cli
if [ $# -eq 0 ]; then set -- serve; fi
exec ./target/release/mlxtune "$@"
