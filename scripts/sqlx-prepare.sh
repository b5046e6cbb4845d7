#!/usr/bin/env bash
set -euo pipefail
# Regenerates .sqlx/ (the offline data sqlx's query macros check against) from a scratch
# SQLite database with migrations/ applied. Needs sqlx-cli:
#   cargo install sqlx-cli --version 0.8.6 --no-default-features --features sqlite --locked
cd "$(dirname "${BASH_SOURCE[0]}")/.."
db=$(mktemp -d)/prepare.sqlite3
export DATABASE_URL="sqlite:$db" SQLX_OFFLINE=false
sqlx database create
sqlx migrate run --source migrations
cargo sqlx prepare --workspace
