#!/usr/bin/env bash
# Produces the performance table of docs/performance.md: the latency sipsentry adds to
# INVITE→final (p50/p99, µs) for pass, tag and reject decisions at several
# rates, measured with `sipsentry bench --compare` against the UAS reached
# directly, with Kamailio (stateless forwarder) in the same run when installed.
#
#   cargo build --release && bash bench/perf-table.sh [SECONDS_PER_RUN]
#
# Every target gets the stated rate: a run with N targets sends N × rate.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SECS=${1:-10}
B=target/release/sipsentry
WORK=$(mktemp -d)
UAS=127.0.0.1:25080; PROXY=127.0.0.1:25060; KAM=127.0.0.1:27060
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

"$B" bench --uas "$UAS" >/dev/null 2>&1 & pids+=($!)
KAMAILIO=no
if start_kamailio "$WORK/kamailio.log"; then
  pids+=($!)
  KAMAILIO=yes
fi

# Decisions, all with the Hiya local cache loaded (the bundled demo cache):
# pass (generated callers, not in the cache), tag (a SPAM caller found in the
# cache: full label set), reject (callers on the deny list, 603+).
printf '[sip]\nlisten = "%s"\nnext_hop = "sip:%s"\n[hiya_cache]\ndir = "%s"\n' "$PROXY" "$UAS" "$WORK/hiya" >"$WORK/pass.toml"
cp "$WORK/pass.toml" "$WORK/tag.toml"
{ cat "$WORK/pass.toml"; printf '[policy]\ndeny = ["+1555*"]\n'; } >"$WORK/reject.toml"
"$B" cache import data/hiya-sample-IN.tsv.gz --country IN -c "$WORK/pass.toml" >/dev/null
echo "+919000000002" >"$WORK/spam-caller.txt"


echo "| decision | rate (INVITE/s) | sipsentry added p50 | p99 | Kamailio added p50 | p99 |"
echo "|---|---|---|---|---|---|"
for decision in pass tag reject; do
  "$B" serve -c "$WORK/$decision.toml" >"$WORK/serve.log" 2>&1 & serve=$!
  sleep 0.5
  callers=(); [ "$decision" = tag ] && callers=(--callers "$WORK/spam-caller.txt")
  for rate in 500 2000 5000; do
    targets=(--target "$PROXY"); n=2
    if [ "$KAMAILIO" = yes ] && [ "$decision" = pass ] && [ "$rate" -le 2000 ]; then
      targets+=(--compare "$KAM"); n=3
    fi
    json=$("$B" bench "${targets[@]}" --compare "$UAS" --rate $((rate * n)) --duration "$SECS" "${callers[@]}" --json)
    read -r sp50 sp99 < <(echo "$json" | field "$PROXY")
    if [ $n = 3 ]; then read -r kp50 kp99 < <(echo "$json" | field "$KAM"); else kp50=-; kp99=-; fi
    echo "| $decision | $rate | $sp50 | $sp99 | $kp50 | $kp99 |"
  done
  kill "$serve"; wait "$serve" 2>/dev/null || true
done
if [ "$KAMAILIO" = yes ]; then
  for rate in 5000; do
    json=$("$B" bench --target "$KAM" --compare "$UAS" --rate $((rate * 2)) --duration "$SECS" --json)
    read -r kp50 kp99 < <(echo "$json" | field "$KAM")
    echo "| kamailio only | $rate | - | - | $kp50 | $kp99 |"
  done
fi
