#!/usr/bin/env bash
# What verifying STIR/SHAKEN adds to a call: sipsentry with `[stir]` on
# (trust anchors and an HTTPS certificate repository from
# examples/sti_fixture.rs, made at run time), at each RATE, in alternating
# rounds of unsigned calls and calls carrying a valid Identity header (the
# certificate cached after the first), one caller. Prints the added
# INVITE→final p50/p99 (µs) against the UAS reached directly and the proxy's
# CPU µs per call (user + system from /proc), medians over RUNS rounds.
# The header is signed once at start, so the PASSporT's `iat` ages during
# the run: `stir.max_age_s` is raised to an hour here.
#
#   bash bench/stir-latency.sh [SECONDS] [RUNS] [RATES...]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
secs=${1:-8}; runs=${2:-3}; shift 2 || true
rates=("$@"); [ ${#rates[@]} -gt 0 ] || rates=(500 2000)
cargo build --release -q --bin sipsentry --example sti_fixture
B=target/release/sipsentry
with_workdir
UAS=127.0.0.1:25080
CALLER=+15557654321
CALLED=+15551234567
target/release/examples/sti_fixture "$work" "$CALLER" "$CALLED" 2>"$work/fixture.log" & pids+=($!)
for _ in $(seq 100); do [ -s "$work/identity.txt" ] && break; sleep 0.1; done
[ -s "$work/identity.txt" ] || { echo "the STI fixture did not start:" >&2; cat "$work/fixture.log" >&2; exit 1; }
echo "$CALLER" >"$work/callers.txt"
"$B" bench --uas "$UAS" >/dev/null 2>&1 & pids+=($!)
relay_config "$work/s.toml" 127.0.0.1:25061 "$UAS" 0
printf '[stir]\ntrust_anchors = "sti-roots.pem"\nx5u_ca_file = "web-ca.pem"\nmax_age_s = 3600\n' >>"$work/s.toml"
start_proxy s.toml
identity="Identity: $(cat "$work/identity.txt")"
tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$proxy/stat"; }

# `round NAME RATE [HEADER]`: one measured round, appended to results.
round() {
  local c0 c1 json p50 p99 extra=()
  [ -n "${3:-}" ] && extra=(--header "$3")
  c0=$(cpu_ticks)
  json=$("$B" bench --target 127.0.0.1:25061 --compare "$UAS" --callers "$work/callers.txt" \
    --called "$CALLED" --rate $(($2 * 2)) --duration "$secs" "${extra[@]}" --json)
  c1=$(cpu_ticks)
  read -r p50 p99 < <(echo "$json" | field 127.0.0.1:25061)
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$p50" "$p99" $(( (c1 - c0) * 1000000 / tck / ($2 * secs) )) >>"$work/results"
}

: >"$work/results"
# One signed call first, so every measured one finds the certificate cached.
"$B" bench --target 127.0.0.1:25061 --callers "$work/callers.txt" --called "$CALLED" \
  --count 1 --header "$identity" --json >/dev/null
for rate in "${rates[@]}"; do
  for run in $(seq "$runs"); do
    round unsigned "$rate"
    round signed "$rate" "$identity"
  done
done
curl -s "http://$(grep -o 'admin http://[0-9.:]*' "$work/s.log" | cut -d/ -f3)/metrics" 2>/dev/null \
  | grep -E '^sipsentry_stir_(verifications|cert_fetches)_total' || true
python3 - "$work/results" "$secs" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rate, p50, p99, cpu = line.rstrip("\n").split("\t")
    rows.setdefault((int(rate), name), []).append((int(p50), int(p99), int(cpu)))
print(f"| INVITE/s | calls | added p50 µs | added p99 µs | CPU µs per call | each round p50/p99/CPU (rounds of {sys.argv[2]} s) |")
print("|---|---|---|---|---|---|")
for (rate, name), r in sorted(rows.items()):
    m50, m99, mcpu = (statistics.median(x[k] for x in r) for k in range(3))
    print(f"| {rate} | {name} | {m50:g} | {m99:g} | {mcpu:g} | {', '.join(f'{a}/{b}/{c}' for a, b, c in r)} |")
PY
