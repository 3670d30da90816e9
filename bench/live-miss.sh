#!/usr/bin/env bash
# Added INVITE→final latency when every call misses the caches and asks a
# live provider (fake DIDChecks), against the UAS directly.
#   bash bench/live-miss.sh [DELAY_MS|hang] [RATE] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-20}; rate=${2:-100}; secs=${3:-10}
cargo build --release -q --example fake_didchecks
cargo build --release -q
bin=target/release/sipsentry
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
if [ "$mode" = hang ]; then fake_args=(--hang); else fake_args=(--delay-ms "$mode"); fi
target/release/examples/fake_didchecks 127.0.0.1:8091 "${fake_args[@]}" &
$bin bench --uas 127.0.0.1:5080 &
cat > "$work/sipsentry.toml" <<TOML
[sip]
listen = "127.0.0.1:5070"
next_hop = "sip:127.0.0.1:5080"
[policy]
lookup_budget_ms = 300
[hiya_cache]
enabled = false
[providers.didchecks]
enabled = true
base_url = "http://127.0.0.1:8091/api"
token_env = "BENCH_DC_TOKEN"
max_requests_per_second = 100000
timeout_ms = 250
[admin]
listen = "127.0.0.1:0"
TOML
(cd "$work" && BENCH_DC_TOKEN=bench exec "$OLDPWD/$bin" serve) &
sleep 1.5
# Generated callers are distinct per call: every call is a live-cache miss.
$bin bench --target 127.0.0.1:5070 --compare 127.0.0.1:5080 --rate "$rate" --duration "$secs"
