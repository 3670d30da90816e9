#!/usr/bin/env bash
# Added INVITE→final latency with the history on and off: the same proxy
# config but `history.enabled`, each run against the UAS directly.
#   bash bench/history-onoff.sh [RATE_PER_TARGET] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-2000}; secs=${2:-10}
cargo build --release -q
bin=$PWD/target/release/sipsentry
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
$bin bench --uas 127.0.0.1:5080 &
for enabled in true false; do
  cat > "$work/sipsentry.toml" <<TOML
[sip]
listen = "127.0.0.1:5070"
next_hop = "sip:127.0.0.1:5080"
[hiya_cache]
enabled = false
[history]
enabled = $enabled
path = "$work/h.db"
[admin]
listen = "127.0.0.1:0"
TOML
  (cd "$work" && exec "$bin" serve) 2>/dev/null &
  pid=$!
  sleep 1
  echo "== history.enabled = $enabled"
  $bin bench --target 127.0.0.1:5070 --compare 127.0.0.1:5080 --rate $((rate * 2)) --duration "$secs" | grep -E 'minus|sent'
  kill -TERM $pid; wait $pid || true
done
