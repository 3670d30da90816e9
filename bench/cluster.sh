#!/usr/bin/env bash
# What a cluster's shared state costs, against a real Redis and PostgreSQL
# started here on loopback (own ports and data directory, removed at exit):
#  1. a shared answer in Redis after a live-cache miss: p50/p99/p99.9 of the
#     fetch and decode (examples/cluster_bench.rs);
#  2. the PostgreSQL history writer's rate, 200,000 records;
#  3. the added INVITE→final latency at RATE calls/s with [cluster]
#     configured and every lookup local (no live provider), against the same
#     proxy without it, alternating ROUNDS times.
# Needs redis-server and PostgreSQL (Debian: redis-server, postgresql); as
# root, PostgreSQL runs as the postgres user.
#   bash bench/cluster.sh [RATE] [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-2000}; secs=${2:-10}; rounds=${3:-3}
command -v redis-server >/dev/null || { echo "needs redis-server" >&2; exit 2; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$pgbin/postgres" ] || { echo "needs PostgreSQL (Debian: postgresql)" >&2; exit 2; }
cargo build --release -q --bin sipsentry --example cluster_bench
bin=$PWD/target/release/sipsentry
work=$(mktemp -d); chmod 755 "$work"
as_pg=(); [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

redis-server --bind 127.0.0.1 --port 26379 --save "" --appendonly no --dir "$work" >/dev/null &
mkdir "$work/pg"; [ ${#as_pg[@]} = 0 ] || chown postgres "$work/pg"
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -U postgres --auth=trust --no-sync >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
  -o "-c listen_addresses=127.0.0.1 -c port=26432 -c unix_socket_directories=$work/pg" start >/dev/null
sleep 0.5

echo "== shared state"
target/release/examples/cluster_bench redis://127.0.0.1:26379/0 "postgres://postgres@127.0.0.1:26432/postgres"

echo "== added latency at $rate calls/s, every lookup local"
$bin bench --uas 127.0.0.1:25080 >/dev/null &
for round in $(seq "$rounds"); do
  for cluster in off on; do
    lines='[cluster]\nredis_url = ""'
    [ "$cluster" = on ] && lines='[cluster]\nredis_url = "redis://127.0.0.1:26379/0"'
    printf '[sip]\nlisten = "127.0.0.1:25070"\nnext_hop = "sip:127.0.0.1:25080"\n[hiya_cache]\nenabled = false\n[history]\nenabled = false\n[admin]\nlisten = "127.0.0.1:0"\n%b\n' \
      "$lines" >"$work/s.toml"
    (cd "$work" && exec "$bin" serve -c s.toml) 2>/dev/null &
    pid=$!
    sleep 1
    printf 'round %s, cluster %-3s ' "$round" "$cluster"
    $bin bench --target 127.0.0.1:25070 --compare 127.0.0.1:25080 --rate $((rate * 2)) --duration "$secs" | grep -E 'minus' | tr -s ' '
    kill -TERM $pid; wait $pid 2>/dev/null || true
  done
done
