#!/usr/bin/env bash
set -euo pipefail
# Regenerates .sqlx/, the offline data sqlx's query macros check every query against at
# compile time, for both database backends of mlxtune-server: its `sqlite` feature's queries
# against a scratch SQLite file with migrations/sqlite applied, then its `postgres`
# feature's against a scratch PostgreSQL cluster (Debian's postgresql) with
# migrations/postgres applied. The two sets of SQL differ in text, so their files (named
# after a hash of the text, each naming its backend) sit side by side.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
scratch=$(mktemp -d)
chmod 755 "$scratch" # reachable by the cluster's owner (pg-scratch.sh)
trap 'scripts/pg-scratch.sh stop "$scratch/pg" >/dev/null 2>&1 || true; rm -rf "$scratch"' EXIT
rm -rf .sqlx && mkdir .sqlx
check() { # <feature> <database url>: compiles the backend's queries against the database
  touch crates/mlxtune-server/src/lib.rs
  SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$root/.sqlx" DATABASE_URL="$2" \
    cargo check -q -p mlxtune-server --no-default-features --features "$1"
}
# The macros need the schema only: the migrations are applied with each database's own
# client (Python's sqlite3; psql).
python3 - "$scratch/prepare.sqlite3" migrations/sqlite/*.sql <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for path in sys.argv[2:]:
    db.executescript(open(path).read())
db.commit()
PY
check sqlite "sqlite:$scratch/prepare.sqlite3"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=$(scripts/pg-scratch.sh start "$scratch/pg" "$port")
for f in migrations/postgres/*.sql; do psql -q -v ON_ERROR_STOP=1 "$url" -f "$f"; done
check postgres "$url"
ls .sqlx | wc -l | xargs printf 'sqlx-prepare: %s queries\n'
