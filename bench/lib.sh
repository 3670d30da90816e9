# Shared by the bench/ scripts (sourced, not run).

# `field TARGET`: p50 and p99 added to INVITE→final for TARGET, read from a
# `sipsentry bench --json` report on stdin.
field() { python3 -c "import json,sys; r=json.load(sys.stdin); a={x['target']:x for x in r['added_invite_to_final']}; t=a['$1']; print(t['p50'], t['p99'])"; }

# `start_kamailio LOG [LISTEN] [ALLOCATOR]`: Kamailio as the stateless
# forwarder of bench/kamailio-stateless.cfg (LISTEN, default
# 127.0.0.1:27060 → 127.0.0.1:25080) in the background; its pid in $! .
# ALLOCATOR is Kamailio's memory manager (`-x`): its default `qm` keeps
# debugging records for every block (Debian builds it with DBG_SR_MEMORY),
# `fm` and `tlsf` do not, and cost Kamailio far less CPU per message
# (docs/performance.md, "Kamailio's allocator"). Returns 1 when kamailio is
# not installed.
start_kamailio() {
  command -v kamailio >/dev/null 2>&1 || return 1
  kamailio -f bench/kamailio-stateless.cfg -DD -E -m 64 -M 8 -x "${3:-qm}" \
    -A "LISTEN=udp:${2:-127.0.0.1:27060}" \
    -L /usr/lib/x86_64-linux-gnu/kamailio/modules >"$1" 2>&1 &
}

# `relay_config FILE LISTEN NEXT_HOP POLL_US [SIP_LINES]`: a sipsentry config
# that passes every call (no Hiya cache, no history, admin on a free port),
# for measuring the relay alone; SIP_LINES are more `[sip]` keys.
# RELAY_HISTORY=true records every call in the history (in the config's
# directory), as a production proxy does; RELAY_HIYA=true serves the
# bundled demo Hiya cache (India), unpacked under `hiya/` at start;
# HISTORY_LINES are more `[history]` keys (e.g. 'batch_ms = 100').
relay_config() {
  local hiya='enabled = false'
  [ "${RELAY_HIYA:-false}" = true ] && hiya='enabled = true\ndir = "hiya"'
  printf '[sip]\nlisten = "%s"\nnext_hop = "sip:%s"\nbusy_poll_us = %s\n%b\n[hiya_cache]\n%b\n[history]\nenabled = %s\n%b\n[admin]\nlisten = "127.0.0.1:0"\n' \
    "$2" "$3" "$4" "${5:-}" "$hiya" "${RELAY_HISTORY:-false}" "${HISTORY_LINES:-}" >"$1"
}

# `start_proxy CONFIG`: `$B serve -c CONFIG` in $work (or $PROXY_BIN, an
# absolute path, when set), in the background (its pid in $proxy and $pids,
# its output in $work/s.log), once it listens.
start_proxy() {
  (cd "$work" && exec "${PROXY_BIN:-$OLDPWD/$B}" serve -c "$1") >"$work/s.log" 2>&1 & pids+=($!)
  proxy=$!
  for _ in $(seq 100); do grep -q listening "$work/s.log" 2>/dev/null && return; sleep 0.1; done
  echo "the proxy did not start; its output:" >&2; cat "$work/s.log" >&2; exit 1
}

# `with_workdir`: a temporary directory in $work; at exit every pid added
# to $pids is killed and the directory removed.
with_workdir() {
  work=$(mktemp -d); pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
}
