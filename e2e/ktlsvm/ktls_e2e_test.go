package ktlsvm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"kvpn/certs"
)

// TestKTLSBridgeInVM runs ktlsbridge's own tests under a kernel with kTLS.
// KVPN_EXPECT_KTLS=1 turns every test there into an assertion that the
// kernel took the connection (TLS 1.2 AES-128/256-GCM and ChaCha20, TLS
// 1.3), against another kTLS end, a userspace end (ktls=off) and
// crypto/tls itself, plus the negative controls (wrong sequence number or
// key must fail).
func TestKTLSBridgeInVM(t *testing.T) {
	bin := BuildStatic(t, "kvpn/ktlsbridge", true)
	start := time.Now()
	out, ok := Run(t, Config{
		Binaries: map[string]string{"ktlsbridge.test": bin},
		// The VM has no openssl command: that interop test runs on the host.
		Script:  "ktlsbridge.test -test.v -test.count=1 -test.timeout=150s -test.skip TestDeriveKeysOpenSSL",
		Args:    "KVPN_EXPECT_KTLS=1",
		Timeout: 3 * time.Minute,
	})
	t.Logf("VM run took %s", time.Since(start).Round(time.Millisecond))
	if !ok {
		t.Fatalf("ktlsbridge tests failed in the kTLS VM:\n%s", out)
	}
	if !strings.Contains(out, "--- PASS: TestEngines") || !strings.Contains(out, "--- PASS: TestNegativeControls") {
		t.Fatalf("expected tests did not run:\n%s", out)
	}
	if strings.Contains(out, "--- SKIP") {
		t.Fatalf("tests skipped in the VM:\n%s", out)
	}
}

// TestTunnelKTLSInVM runs vpnd and vpnc in two namespaces of a kTLS kernel
// with ktls=on at both ends: the tunnel must come up with the kernel doing
// TX and RX on both sockets, carry pings and a hashed transfer both ways,
// and /proc/net/tls_stat must show the kernel sockets with no decryption
// errors.
func TestTunnelKTLSInVM(t *testing.T) {
	vpnd := BuildStatic(t, "kvpn/cmd/vpnd", false)
	vpnc := BuildStatic(t, "kvpn/cmd/vpnc", false)
	helper := BuildStatic(t, "kvpn/e2e", true)

	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c, _, err := certs.LoadOrCreate(cert, key, "vpn")
	if err != nil {
		t.Fatal(err)
	}
	pin := certs.Pin(c.Leaf)
	passwd := filepath.Join(dir, "passwd")
	cmd := exec.Command(vpnd, "passwd", "--file", passwd, "alice")
	cmd.Stdin = strings.NewReader("secret\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("vpnd passwd: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "vpnd.toml")
	if err := os.WriteFile(cfg, []byte(`listen = "0.0.0.0:443"
udp-listen = ""
ktls = "on"
passwd-file = "/etc/kvpn/passwd"
server-cert = "/etc/kvpn/cert.pem"
server-key = "/etc/kvpn/key.pem"
device = "kvpns0"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	const size = 1 << 20
	script := fmt.Sprintf(`
unshare -n sleep 600 & S=$!
unshare -n sleep 600 & C=$!
init=$(readlink /proc/1/ns/net)
for p in $S $C; do while [ "$(readlink /proc/$p/ns/net)" = "$init" ]; do sleep 0.05; done; done
ip link add vS type veth
ip link set veth0 name vC
ip link set vS netns $S
ip link set vC netns $C
nsenter -t $S -n sh -ec 'ip link set lo up; ip addr add 10.9.0.1/24 dev vS; ip link set vS up'
nsenter -t $C -n sh -ec 'ip link set lo up; ip addr add 10.9.0.2/24 dev vC; ip link set vC up'
mkdir -p /tmp/state /tmp/cstate
nsenter -t $S -n vpnd serve --config /etc/kvpn/vpnd.toml --state-dir /tmp/state >/tmp/vpnd.log 2>&1 &
for i in $(seq 300); do grep -q "vpnd listening" /tmp/vpnd.log && break; sleep 0.1; done
echo secret | nsenter -t $C -n vpnc connect -u alice --passwd-on-stdin --servercert %s --ktls on --no-dtls --state-dir /tmp/cstate https://10.9.0.1 >/tmp/vpnc.log 2>&1 &
for i in $(seq 600); do grep -q "tunnel up" /tmp/vpnc.log && break; sleep 0.1; done
nsenter -t $C -n ping -c 3 -W 5 10.77.0.1
nsenter -t $S -n env KVPN_E2E_HELPER=serve e2e.test 10.77.0.1:5201 %d >/tmp/srv.out 2>&1 &
H=$!
sleep 1
nsenter -t $C -n env KVPN_E2E_HELPER=dial e2e.test 10.77.0.1:5201 %d >/tmp/cli.out 2>&1
wait $H
echo "== vpnd log"; cat /tmp/vpnd.log
echo "== vpnc log"; cat /tmp/vpnc.log
echo "== client transfer"; cat /tmp/cli.out
echo "== server transfer"; cat /tmp/srv.out
echo "== server tls_stat"; nsenter -t $S -n cat /proc/net/tls_stat
echo "== client tls_stat"; nsenter -t $C -n cat /proc/net/tls_stat
echo "== end"
`, pin, size, size)
	start := time.Now()
	out, ok := Run(t, Config{
		Binaries: map[string]string{"vpnd": vpnd, "vpnc": vpnc, "e2e.test": helper},
		Files: map[string]string{"/etc/kvpn/vpnd.toml": cfg, "/etc/kvpn/passwd": passwd,
			"/etc/kvpn/cert.pem": cert, "/etc/kvpn/key.pem": key},
		Script:  script,
		Timeout: 4 * time.Minute,
	})
	t.Logf("VM run took %s", time.Since(start).Round(time.Millisecond))
	if !ok {
		t.Fatalf("tunnel script failed in the kTLS VM:\n%s", out)
	}
	section := func(name string) string {
		i := strings.Index(out, "== "+name)
		if i < 0 {
			t.Fatalf("no %q section:\n%s", name, out)
		}
		rest := out[i+len(name)+3:]
		if j := strings.Index(rest, "\n== "); j >= 0 {
			rest = rest[:j]
		}
		return rest
	}
	for _, name := range []string{"vpnd log", "vpnc log"} {
		if strings.Contains(section(name), "connection lost") || strings.Contains(section(name), "reconnect") {
			t.Fatalf("%s shows a lost connection:\n%s", name, section(name))
		}
		if !strings.Contains(section(name), "tx=kernel rx=kernel") {
			t.Fatalf("%s does not show kernel TLS both ways:\n%s", name, section(name))
		}
	}
	sums := regexp.MustCompile(`(sent|recv) (\d+) ([0-9a-f]{64})`)
	get := func(name string) map[string]string {
		m := map[string]string{}
		for _, f := range sums.FindAllStringSubmatch(section(name), -1) {
			if f[2] != fmt.Sprint(size) {
				t.Fatalf("%s: %s %s bytes, want %d", name, f[1], f[2], size)
			}
			m[f[1]] = f[3]
		}
		return m
	}
	cli, srv := get("client transfer"), get("server transfer")
	if cli["sent"] == "" || cli["sent"] != srv["recv"] || srv["sent"] != cli["recv"] {
		t.Fatalf("transfer hashes differ: client %v, server %v", cli, srv)
	}
	for _, name := range []string{"server tls_stat", "client tls_stat"} {
		st := ParseTLSStat(section(name))
		t.Logf("%s: %v", name, st)
		if st["TlsCurrTxSw"] < 1 || st["TlsCurrRxSw"] < 1 || st["TlsDecryptError"] != 0 {
			t.Fatalf("%s: want kernel TX and RX sockets open and no decrypt errors, got %v", name, st)
		}
		// One TLS connection per end: more configured sockets would mean
		// the tunnel kept reconnecting.
		if st["TlsTxSw"] != 1 || st["TlsRxSw"] != 1 {
			t.Fatalf("%s: %d TX / %d RX kernel TLS sockets were set up, want 1 (reconnects?)", name, st["TlsTxSw"], st["TlsRxSw"])
		}
	}
}
