#!/usr/bin/env bash
# usage: run-vpnd.sh SESSIONS [kvpnload flags...]: vpnd and kvpnload in a namespace of
# their own, on its loopback (as root, under flock /tmp/kvpn-e2e.lock). One user "load"
# for every session (max-same-clients = 0); USERS=1 makes users user1..userN, PASSWD=FILE
# appends a prepared vpnd password file with them. RSS_AT=S prints vpnd RSS after S s.
set -euo pipefail
N=$1; shift
BIN=${BIN:-bin}
NS=kvlg-vpnd
ST=$(mktemp -d /tmp/kvpnload-vpnd.XXXXXX)
VP=""
cleanup() { set +e; [ -n "$VP" ] && kill "$VP" && wait "$VP"; ip netns del "$NS"; }
trap cleanup EXIT INT TERM
ip netns del "$NS" 2>/dev/null || true
ip netns add "$NS"
ip -n "$NS" link set lo up
cat > "$ST/vpnd.toml" <<EOC
listen = "127.0.0.1:4443"
udp-listen = "127.0.0.1:4443"
ipv4-network = "10.90.0.0/20"
max-clients = 4000
max-same-clients = 0
device = "kvlg0"
ctl-socket = ""
route = ["10.91.0.0/16"]
EOC
printf 'load-pass\n' | "$BIN/vpnd" passwd --file "$ST/passwd" load
if [ -n "${PASSWD:-}" ]; then cat "$PASSWD" >> "$ST/passwd"; USERS=1; fi
if [ -n "${USERS:-}" ] && [ -z "${PASSWD:-}" ]; then for i in $(seq "$N"); do printf 'load-pass\n' | "$BIN/vpnd" passwd --file "$ST/passwd" "user$i"; done; fi
ip netns exec "$NS" "$BIN/vpnd" serve --config "$ST/vpnd.toml" --state-dir "$ST" >"$ST/vpnd.log" 2>&1 &
VP=$!
for _ in $(seq 100); do grep -q "vpnd listening" "$ST/vpnd.log" && break; sleep 0.1; done
grep -q "vpnd listening" "$ST/vpnd.log" || { cat "$ST/vpnd.log"; exit 1; }
PIN=$("$BIN/vpnd" pin --cert "$ST/server-cert.pem")
echo "vpnd pid $VP rss before $(grep VmRSS /proc/$VP/status)"
( sleep "${RSS_AT:-20}"; echo "vpnd rss at ${RSS_AT:-20}s: $(grep VmRSS /proc/$VP/status)" ) &
UA=(-u load); [ -n "${USERS:-}" ] && UA=(--user-format 'user%d')
ip netns exec "$NS" "$BIN/kvpnload" --servercert "$PIN" "${UA[@]}" --password load-pass --sessions "$N" "$@" https://127.0.0.1:4443 || true
echo "vpnd log tail:"; tail -3 "$ST/vpnd.log"
