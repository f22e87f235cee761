#!/usr/bin/env bash
# kvpn demo: two network namespaces joined by a veth pair, vpnd on its
# built-in defaults in one, vpnc in the other, traffic through the tunnel,
# a summary, and everything removed again. Needs root; run `make demo` as root.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
SRV=kvpn-demo-srv
CLI=kvpn-demo-cli
STATE=$(mktemp -d /tmp/kvpn-demo.XXXXXX)
USER_NAME=demo
PASSWORD=demo-password
PIDS=()

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  ip netns del "$CLI" 2>/dev/null
  ip netns del "$SRV" 2>/dev/null
  rm -rf "/etc/netns/$CLI" "$STATE"
}
trap cleanup EXIT INT TERM

if [ "$(id -u)" -ne 0 ]; then echo "demo: run as root (make demo)" >&2; exit 1; fi
# A leftover from an interrupted run would make `ip netns add` fail.
ip netns del "$CLI" 2>/dev/null || true
ip netns del "$SRV" 2>/dev/null || true

echo "== namespaces $SRV (server, 192.168.100.1) and $CLI (client, 192.168.100.2)"
ip netns add "$SRV"
ip netns add "$CLI"
# The client edits resolv.conf when DNS is pushed: give its namespace its own.
mkdir -p "/etc/netns/$CLI"
echo "nameserver 192.0.2.1" > "/etc/netns/$CLI/resolv.conf"
ip link add kvpn-demo-a type veth peer name kvpn-demo-b
ip link set kvpn-demo-a netns "$SRV"
ip link set kvpn-demo-b netns "$CLI"
ip -n "$SRV" addr add 192.168.100.1/24 dev kvpn-demo-a
ip -n "$CLI" addr add 192.168.100.2/24 dev kvpn-demo-b
for ns in "$SRV" "$CLI"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set kvpn-demo-a up
ip -n "$CLI" link set kvpn-demo-b up

echo "== vpnd serve on built-in defaults (state in $STATE)"
printf '%s\n' "$PASSWORD" | "$BIN/vpnd" passwd --file "$STATE/passwd" "$USER_NAME"
ip netns exec "$SRV" "$BIN/vpnd" serve --state-dir "$STATE" >"$STATE/vpnd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q "vpnd listening" "$STATE/vpnd.log" && break; sleep 0.1; done
grep -q "vpnd listening" "$STATE/vpnd.log" || { cat "$STATE/vpnd.log"; exit 1; }
PIN=$("$BIN/vpnd" pin --cert "$STATE/server-cert.pem")
echo "   server certificate $PIN"

echo "== vpnc connect https://192.168.100.1"
printf '%s\n' "$PASSWORD" | ip netns exec "$CLI" "$BIN/vpnc" connect -u "$USER_NAME" --passwd-on-stdin \
  --servercert "$PIN" --state-dir "$STATE/client" https://192.168.100.1 >"$STATE/vpnc.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q "tunnel up" "$STATE/vpnc.log" && break; sleep 0.1; done
grep -q "tunnel up" "$STATE/vpnc.log" || { cat "$STATE/vpnc.log" "$STATE/vpnd.log"; exit 1; }
UPLINE=$(grep -o 'tunnel up: [^"]*' "$STATE/vpnc.log")
echo "   $UPLINE"
CLIENT_ADDR=$(sed -n 's/.*tunnel up: address \([0-9.]*\)\/.*/\1/p' "$STATE/vpnc.log")

echo "== ping through the tunnel"
PING_OUT=$(ip netns exec "$CLI" ping -c 5 -i 0.2 10.77.0.1)
RTT=$(echo "$PING_OUT" | sed -n 's/.*= [0-9.]*\/\([0-9.]*\)\/.*/\1/p')
LOSS=$(echo "$PING_OUT" | grep -o '[0-9.]*% packet loss')
echo "   client -> server 10.77.0.1: $LOSS, avg rtt ${RTT} ms"
ip netns exec "$SRV" ping -c 3 -i 0.2 "$CLIENT_ADDR" >/dev/null && echo "   server -> client $CLIENT_ADDR: ok"

echo "== iperf3 through the tunnel (5 s each way)"
ip netns exec "$SRV" iperf3 -s -B 10.77.0.1 -D --logfile "$STATE/iperf3.log"
sleep 0.5
throughput() { # args: extra iperf3 flags; prints Gbit/s at the receiver
  ip netns exec "$CLI" iperf3 -c 10.77.0.1 -t 5 -f g "$@" | awk '/receiver/ {print $(NF-2)}'
}
UP=$(throughput)
DOWN=$(throughput -R)
pkill -f "iperf3 -s -B 10.77.0.1" || true

TRANSPORT=$(echo "$UPLINE" | sed -n 's/.*transport \(.*\)$/\1/p')
echo
echo "================ kvpn demo summary ================"
echo " tunnel        : $CLIENT_ADDR (client) <-> 10.77.0.1 (server)"
echo " transport     : $TRANSPORT"
echo " ping          : $LOSS, avg rtt ${RTT} ms"
echo " throughput    : client->server ${UP} Gbit/s, server->client ${DOWN} Gbit/s (iperf3, 1 stream, 5 s)"
echo "==================================================="

echo "== disconnecting"
kill -INT "${PIDS[1]}"
wait "${PIDS[1]}" && echo "   vpnc exited cleanly (code 0)"
