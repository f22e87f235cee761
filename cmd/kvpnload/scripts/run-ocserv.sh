#!/usr/bin/env bash
# usage: run-ocserv.sh SESSIONS [kvpnload flags...]: ocserv 1.1.6 and kvpnload in a namespace of their own, on its loopback.
# (as root, under flock /tmp/kvpn-e2e.lock). Users user1..userSESSIONS, password load-pass;
# rate-limit-ms = 0 and max-same-clients = 0 as the e2e tests configure it.
set -euo pipefail
N=$1; shift
BIN=${BIN:-bin}
NS=kvlg-ocs
ST=$(mktemp -d /tmp/kvpnload-ocserv.XXXXXX)
chmod 755 "$ST"
OP=""
cleanup() { set +e; [ -n "$OP" ] && kill "$OP" && wait "$OP"; ip netns del "$NS"; }
trap cleanup EXIT INT TERM
ip netns del "$NS" 2>/dev/null || true
ip netns add "$NS"
ip -n "$NS" link set lo up
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 \
  -keyout "$ST/key.pem" -out "$ST/cert.pem" 2>/dev/null
chmod 644 "$ST/key.pem"
for i in $(seq "$N"); do printf 'load-pass\nload-pass\n' | ocpasswd -c "$ST/passwd" "user$i"; done
cat > "$ST/ocserv.conf" <<EOC
auth = "plain[passwd=$ST/passwd]"
listen-host = 127.0.0.1
tcp-port = 4443
udp-port = 4443
server-cert = $ST/cert.pem
server-key = $ST/key.pem
socket-file = $ST/ocserv.sock
occtl-socket-file = $ST/occtl.sock
pid-file = $ST/ocserv.pid
use-occtl = true
isolate-workers = false
run-as-user = ocserv
run-as-group = ocserv
device = ocslg
ipv4-network = 10.92.0.0/20
route = 10.93.0.0/16
predictable-ips = true
ping-leases = false
max-clients = 4000
max-same-clients = 0
rate-limit-ms = 0
dpd = 60
mobile-dpd = 60
keepalive = 30
switch-to-tcp-timeout = 25
try-mtu-discovery = false
cookie-timeout = 300
auth-timeout = 240
deny-roaming = false
cisco-client-compat = true
tls-priorities = "NORMAL:%SERVER_PRECEDENCE:%COMPAT:-VERS-SSL3.0:-VERS-TLS1.0:-VERS-TLS1.1:-VERS-TLS1.3"
EOC
ip netns exec "$NS" ocserv --foreground --config "$ST/ocserv.conf" >"$ST/ocserv.log" 2>&1 &
OP=$!
for _ in $(seq 100); do ip netns exec "$NS" ss -ltn | grep -q 4443 && break; sleep 0.1; done
PIN=$("$BIN/vpnd" pin --cert "$ST/cert.pem")
ip netns exec "$NS" "$BIN/kvpnload" --servercert "$PIN" --user-format 'user%d' --password load-pass --sessions "$N" "$@" https://127.0.0.1:4443 || true
echo "ocserv processes at end: $(pgrep -c -P "$OP" || true) children"
tail -3 "$ST/ocserv.log"
