#!/usr/bin/env bash
set -euo pipefail
# A throwaway PostgreSQL cluster from Debian's `postgresql` package, for tests and for
# scripts/sqlx-prepare.sh:
#   scripts/pg-scratch.sh start <dir> <port>   creates and starts it in <dir> on 127.0.0.1:<port>
#                                              and prints its URL (database "mlxtune")
#   scripts/pg-scratch.sh stop <dir>           stops it (the caller deletes <dir>)
# PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user,
# and <dir>'s parent directories must let that user through.
cmd=$1 dir=$2
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "pg-scratch: no PostgreSQL server: install Debian's postgresql (scripts/setup.sh does)" >&2; exit 2; }
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "$cmd" in
  start)
    port=$3
    mkdir -p "$dir/data" "$dir/run"
    [ "$(id -u)" -eq 0 ] && chown -R postgres "$dir"
    as_owner "$bin/initdb" -A trust --no-sync -U mlxtune -D "$dir/data" >/dev/null
    as_owner "$bin/pg_ctl" -s -w -D "$dir/data" -l "$dir/log" \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/run -c fsync=off -c max_connections=200" start >/dev/null
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U mlxtune mlxtune
    echo "postgres://mlxtune@127.0.0.1:$port/mlxtune"
    ;;
  stop)
    as_owner "$bin/pg_ctl" -s -D "$dir/data" -m immediate stop
    ;;
  *) echo "usage: $0 start <dir> <port> | stop <dir>" >&2; exit 2 ;;
esac
