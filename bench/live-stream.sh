#!/usr/bin/env bash
# What a console open on Live costs the calls: sipsentry with the history on
# (as in production), measured at RATE INVITE/s in alternating rounds with
# no event client and with one streaming `GET /api/v1/events` (curl -N, as
# the Live page does), and, given a BASELINE binary, that binary in the same
# configuration as a third row. Prints the added INVITE→final p50/p99 (µs)
# and the proxy's CPU µs per call (user + system from /proc), medians over
# RUNS rounds, and how many decision events the client received.
#
#   bash bench/live-stream.sh [RATE] [SECONDS] [RUNS] [BASELINE_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
rate=${1:-2000}; secs=${2:-8}; runs=${3:-3}; baseline=${4:-}
cargo build --release -q --bin sipsentry
B=target/release/sipsentry
with_workdir
UAS=127.0.0.1:25080
ADMIN=127.0.0.1:25090
"$B" bench --uas "$UAS" >/dev/null 2>&1 & pids+=($!)
tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# `serve_with BINARY PORT DIR`: the proxy with the history on, in DIR.
serve_with() {
  mkdir -p "$3"
  RELAY_HISTORY=true relay_config "$3/s.toml" "127.0.0.1:$2" "$UAS" 0
  sed -i "s|listen = \"127.0.0.1:0\"|listen = \"$ADMIN\"|" "$3/s.toml"
  (cd "$3" && exec "$1" serve -c s.toml) >"$3/s.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do grep -q listening "$3/s.log" 2>/dev/null && return; sleep 0.1; done
  echo "the proxy did not start; its output:" >&2; cat "$3/s.log" >&2; exit 1
}

# `round NAME TARGET PID [stream]`: one measured round, appended to results.
round() {
  local curl_pid=
  if [ "${4:-}" = stream ]; then
    curl -sN "http://$ADMIN/api/v1/events" >"$work/events" & curl_pid=$!
    sleep 0.3
  fi
  local c0 c1 json p50 p99 events=-
  c0=$(cpu_ticks "$3")
  json=$("$B" bench --target "$2" --compare "$UAS" --rate $((rate * 2)) --duration "$secs" --json)
  sleep 0.2
  c1=$(cpu_ticks "$3")
  if [ -n "$curl_pid" ]; then
    kill "$curl_pid" 2>/dev/null || true
    wait "$curl_pid" 2>/dev/null || true
    events=$(grep -c '^event: decision' "$work/events" || true)
  fi
  read -r p50 p99 < <(echo "$json" | field "$2")
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$p50" "$p99" $(( (c1 - c0) * 1000000 / tck / (rate * secs) )) "$events" >>"$work/results"
}

: >"$work/results"
for run in $(seq "$runs"); do
  serve_with "$(realpath "$B")" 25061 "$work/new$run"
  new=$!
  sleep 0.5
  round "no event client" 127.0.0.1:25061 "$new"
  round "Live streaming (one SSE client)" 127.0.0.1:25061 "$new" stream
  kill "$new"; wait "$new" 2>/dev/null || true
  if [ -n "$baseline" ]; then
    serve_with "$(realpath "$baseline")" 25062 "$work/base$run"
    base=$!
    sleep 0.5
    round "baseline binary, no console" 127.0.0.1:25062 "$base"
    kill "$base"; wait "$base" 2>/dev/null || true
  fi
done
python3 - "$work/results" "$rate" "$secs" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, p50, p99, cpu, ev = line.rstrip("\n").split("\t")
    rows.setdefault(name, []).append((int(p50), int(p99), int(cpu), ev))
print(f"| sipsentry, history on ({sys.argv[2]} INVITE/s, rounds of {sys.argv[3]} s) | median p50 µs | median p99 µs | CPU µs per call | each round p50/p99/CPU | decision events received |")
print("|---|---|---|---|---|---|")
for name, r in rows.items():
    m50, m99, mcpu = (statistics.median(x[k] for x in r) for k in range(3))
    each = ", ".join(f"{a}/{b}/{c}" for a, b, c, _ in r)
    print(f"| {name} | {m50:g} | {m99:g} | {mcpu:g} | {each} | {', '.join(x[3] for x in r)} |")
PY
