package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPingAndBulk brings up one tunnel, pings both ways and moves 64 MiB
// each way through it with a content hash check: over DTLS (the default,
// with an nft counter proving UDP carried the data) and over TLS, with
// both TUN backends.
func TestPingAndBulk(t *testing.T) {
	requireE2E(t)
	for _, tc := range []struct {
		name, backend, transport string
		flags                    []string
	}{
		{"offload-dtls", "offload", "dtls/", nil},
		{"offload-tls", "offload", "tls/", []string{"--no-dtls"}},
		{"plain-dtls", "plain", "dtls/", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := newTopology(t, fmt.Sprintf("tun-backend = %q", tc.backend))
			countUDP(t, tp.srvNS)
			before := routes(t, tp.cliNS)
			c := startClient(t, tp.cliNS, tp.srv, testPassword, true, append([]string{"--tun-backend", tc.backend}, tc.flags...)...)
			if !strings.Contains(c.proc.Out.String(), "transport "+tc.transport) {
				t.Errorf("up line does not name transport %s:\n%s", tc.transport, c.proc.Out.String())
			}
			ping(t, tp.cliNS, tunnelServer)
			ping(t, tp.srvNS, c.addr)
			udpBefore := udpBytes(t, tp.srvNS)
			size := bulkSize(64 << 20)
			d := bulkBothWays(t, tp.srvNS, tunnelServer, tp.cliNS, size)
			t.Logf("%s: %d MiB each way in %s (%.2f Gbit/s per direction)", tc.name, size>>20, d.Round(time.Millisecond),
				float64(size*8)/d.Seconds()/1e9)
			udp := udpBytes(t, tp.srvNS) - udpBefore
			if tc.transport == "dtls/" && udp < size {
				t.Errorf("only %d bytes arrived over UDP for a %d-byte upload: DTLS did not carry the data", udp, size)
			}
			if tc.transport == "tls/" && udp > 0 {
				t.Errorf("%d bytes went over UDP with --no-dtls", udp)
			}

			// A clean exit: DISCONNECT sent, interface and routes gone.
			c.proc.Cmd.Process.Signal(syscall.SIGINT)
			if code := c.proc.exitCode(t, 10*time.Second); code != 0 {
				t.Fatalf("vpnc exit code %d after SIGINT, want 0", code)
			}
			if after := routes(t, tp.cliNS); after != before {
				t.Fatalf("routes not restored:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if out, _ := tp.cliNS.try("ip", "link", "show", "kvpnc0"); !strings.Contains(out, "does not exist") {
				t.Fatalf("interface kvpnc0 left behind: %s", out)
			}
			tp.srv.proc.waitLog(t, "client disconnected", 5*time.Second)
			if tc.name == "offload-tls" {
				// Between kvpn peers TCP bursts cross TLS as whole
				// super-packets both ways (cstp-gso, cstp-gso-down):
				// the session counted them.
				tp.srv.proc.waitLog(t, "session ended", 5*time.Second)
				m := regexp.MustCompile(`gso-frames=(\d+) gso-frames-out=(\d+)`).FindStringSubmatch(tp.srv.proc.Out.String())
				if m == nil || m[1] == "0" {
					t.Errorf("no GSO-DATA frame reached the server over TLS (%v)", m)
				}
				if m == nil || m[2] == "0" {
					t.Errorf("no GSO-DATA frame went to the client over TLS (%v)", m)
				}
			}
		})
	}
}

// TestDTLSFallbackAndReturn blocks UDP with an nft rule: traffic must move
// to TLS within 2 x DPD without losing the session, and back to DTLS once
// UDP works again.
func TestDTLSFallbackAndReturn(t *testing.T) {
	requireE2E(t)
	tp := newTopology(t, "")
	countUDP(t, tp.srvNS)
	c := startClient(t, tp.cliNS, tp.srv, testPassword, true, "--dtls-attempt-period", "2")
	if !strings.Contains(c.proc.Out.String(), "transport dtls/") {
		t.Fatalf("DTLS is not the default transport:\n%s", c.proc.Out.String())
	}
	// Drop on the server's side, both ways: the client's sends still
	// succeed, so only its dead-peer detection can notice.
	blockUDP(t, tp.srvNS)
	blocked := time.Now()
	// The client's sends still succeed, so only dead-peer detection can
	// tell: the fallback must name it. (How long it took is logged, not
	// asserted: session's unit tests check the DPD timing itself.)
	c.proc.waitLog(t, `DTLS lost: traffic falls back to TLS" err="dead peer: no answer to DPD"`, 20*time.Second)
	t.Logf("client fell back to TLS %s after UDP was blocked (DPD 2s)", time.Since(blocked).Round(time.Millisecond))
	ping(t, tp.cliNS, tunnelServer)
	ping(t, tp.srvNS, c.addr)
	bulkBothWays(t, tp.srvNS, tunnelServer, tp.cliNS, bulkSize(4<<20))

	tp.srvNS.run(t, "nft", "delete table inet kvpn_block")
	eventually(t, 15*time.Second, "DTLS back up", func() error {
		if strings.Count(c.proc.Out.String(), "DTLS up: traffic moves to DTLS") < 2 {
			return fmt.Errorf("no second DTLS up in:\n%s", c.proc.Out.String())
		}
		return nil
	})
	before := udpBytes(t, tp.srvNS)
	size := bulkSize(4 << 20)
	bulkBothWays(t, tp.srvNS, tunnelServer, tp.cliNS, size)
	if got := udpBytes(t, tp.srvNS) - before; got < size {
		t.Fatalf("after UDP came back only %d bytes went over UDP", got)
	}
	if n := strings.Count(c.proc.Out.String(), "tunnel up"); n != 1 {
		t.Fatalf("session was re-established %d times; fallback must keep it", n)
	}
}

// blockUDP drops UDP to and from port 443 in ns (until the table
// kvpn_block is deleted; the namespace goes with the test anyway).
func blockUDP(t *testing.T, ns *netns) {
	t.Helper()
	ns.run(t, "nft", "add table inet kvpn_block")
	ns.run(t, "nft", "add chain inet kvpn_block in { type filter hook input priority -10 ; }")
	ns.run(t, "nft", "add chain inet kvpn_block out { type filter hook output priority -10 ; }")
	ns.run(t, "nft", "add rule inet kvpn_block in udp dport 443 drop")
	ns.run(t, "nft", "add rule inet kvpn_block out udp sport 443 drop")
}

// TestUDPBlockedFromStart: with UDP blocked before the client starts, its
// first DTLS handshake times out (5 s) while the server's DPD is 2 s. The
// client serves the TLS channel meanwhile, so the server never declares
// it dead: one session, no reconnect, traffic over TLS.
func TestUDPBlockedFromStart(t *testing.T) {
	requireE2E(t)
	tp := newTopology(t, "")
	blockUDP(t, tp.srvNS)
	c := startClient(t, tp.cliNS, tp.srv, testPassword, true)
	if !strings.Contains(c.proc.Out.String(), "transport tls/") {
		t.Fatalf("up line does not name TLS:\n%s", c.proc.Out.String())
	}
	ping(t, tp.cliNS, tunnelServer)
	time.Sleep(3 * 2 * time.Second) // three server DPD periods
	ping(t, tp.srvNS, c.addr)
	out := c.proc.Out.String()
	if strings.Contains(out, "reconnecting") || strings.Count(out, "tunnel up") != 1 {
		t.Fatalf("the session did not survive the first DTLS attempt:\n%s", out)
	}
	if strings.Contains(tp.srv.proc.Out.String(), "connection lost") {
		t.Fatalf("the server lost the connection:\n%s", tp.srv.proc.Out.String())
	}
}

// countUDP installs an nft counter of UDP bytes to port 443 in ns.
func countUDP(t *testing.T, ns *netns) {
	t.Helper()
	ns.run(t, "nft", "add table inet kvpn_count")
	ns.run(t, "nft", "add chain inet kvpn_count in { type filter hook input priority 0 ; }")
	ns.run(t, "nft", "add rule inet kvpn_count in udp dport 443 counter")
}

var nftBytes = regexp.MustCompile(`counter packets \d+ bytes (\d+)`)

// udpBytes reads the counter countUDP installed.
func udpBytes(t *testing.T, ns *netns) int64 {
	t.Helper()
	out := ns.run(t, "nft", "list table inet kvpn_count")
	m := nftBytes.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no counter in:\n%s", out)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

// TestTwoClients checks that two clients at once get different addresses
// and can both use the tunnel.
func TestTwoClients(t *testing.T) {
	requireE2E(t)
	srvNS, cli1, cli2 := newNS(t, "srv"), newNS(t, "cli1"), newNS(t, "cli2")
	link(t, srvNS, "192.168.77.1/24", cli1, "192.168.77.2/24")
	link(t, srvNS, "192.168.78.1/24", cli2, "192.168.78.2/24")
	srv := startServer(t, srvNS, "192.168.77.1", "")
	c1 := startClient(t, cli1, srv, testPassword, true)
	srv.ip = "192.168.78.1"
	c2 := startClient(t, cli2, srv, testPassword, true)
	if c1.addr == c2.addr {
		t.Fatalf("both clients got %s", c1.addr)
	}
	ping(t, cli1, tunnelServer)
	ping(t, cli2, tunnelServer)
	ping(t, srvNS, c1.addr)
	ping(t, srvNS, c2.addr)
}

// TestWrongPassword checks exit code 3, a clear message, and that nothing
// is left behind.
func TestWrongPassword(t *testing.T) {
	requireE2E(t)
	tp := newTopology(t, "")
	before := routes(t, tp.cliNS)
	c := startClient(t, tp.cliNS, tp.srv, "not the password", false)
	if code := c.proc.exitCode(t, 15*time.Second); code != 3 {
		t.Fatalf("exit code %d, want 3\n%s", code, c.proc.Out.String())
	}
	if out := c.proc.Out.String(); !strings.Contains(out, "authentication failed") {
		t.Fatalf("no clear message:\n%s", out)
	}
	if after := routes(t, tp.cliNS); after != before {
		t.Fatalf("routes changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if out, _ := tp.cliNS.try("ip", "link", "show", "kvpnc0"); !strings.Contains(out, "does not exist") {
		t.Fatalf("interface left behind: %s", out)
	}
	tp.srv.proc.waitLog(t, "login failed", 5*time.Second)
}

// TestSpoofedSourceDropped sends packets from an address the client does
// not own: the server must drop and count them, and the real address must
// keep working.
func TestSpoofedSourceDropped(t *testing.T) {
	requireE2E(t)
	tp := newTopology(t, "")
	c := startClient(t, tp.cliNS, tp.srv, testPassword, true)
	const spoofed = "10.77.0.200"
	tp.cliNS.run(t, "ip", "addr", "add", spoofed+"/32", "dev", "kvpnc0")
	if out, err := tp.cliNS.try("ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", spoofed, tunnelServer); err == nil {
		t.Fatalf("ping from a spoofed source got through:\n%s", out)
	}
	tp.srv.proc.waitLog(t, "dropped packets with a spoofed source address", 5*time.Second)
	if !regexp.MustCompile(`source=` + regexp.QuoteMeta(spoofed) + ` count=\d+`).MatchString(tp.srv.proc.Out.String()) {
		t.Fatalf("drop log does not name the source and count:\n%s", tp.srv.proc.Out.String())
	}
	ping(t, tp.cliNS, tunnelServer, "-I", c.addr)
}

// TestDeadServer: a server that goes silent is noticed within 2 x DPD; a
// server that is gone makes the client give up with exit code 5, routes and
// DNS restored.
func TestDeadServer(t *testing.T) {
	requireE2E(t)
	tp := newTopology(t, `dns = ["192.0.2.53"]`)
	before := routes(t, tp.cliNS)
	c := startClient(t, tp.cliNS, tp.srv, testPassword, true, "--reconnect-timeout", "3")
	resolv, err := os.ReadFile(tp.cliNS.ResolvConf())
	if err != nil || !strings.Contains(string(resolv), "192.0.2.53") {
		t.Fatalf("pushed DNS not applied (%v):\n%s", err, resolv)
	}
	// Freeze the server: its socket stays open, only DPD can tell.
	tp.srv.proc.Cmd.Process.Signal(syscall.SIGSTOP)
	frozen := time.Now()
	// Only dead-peer detection can notice a frozen server; the log line
	// must say so (the timing is logged, not asserted).
	c.proc.waitLog(t, `connection to server lost; reconnecting" err="dead peer: no answer to DPD"`, 20*time.Second)
	t.Logf("dead server noticed after %s (DPD 2s)", time.Since(frozen).Round(time.Millisecond))
	tp.srv.proc.Cmd.Process.Kill()
	if code := c.proc.exitCode(t, 20*time.Second); code != 5 {
		t.Fatalf("exit code %d, want 5\n%s", code, c.proc.Out.String())
	}
	if after := routes(t, tp.cliNS); after != before {
		t.Fatalf("routes not restored:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if got, _ := os.ReadFile(tp.cliNS.ResolvConf()); string(got) != origResolv {
		t.Fatalf("resolv.conf not restored:\n%s", got)
	}
}

// TestReconnectKeepsAddress kills the server's end of the TCP connection;
// the client must reconnect with its cookie and keep its address.
func TestReconnectKeepsAddress(t *testing.T) {
	requireE2E(t)
	tp := newTopology(t, "")
	c := startClient(t, tp.cliNS, tp.srv, testPassword, true)
	tp.srvNS.run(t, "ss", "-K", "state", "established", "sport", "=", ":443")
	c.proc.waitLog(t, "tunnel re-established", 15*time.Second)
	if n := strings.Count(c.proc.Out.String(), "tunnel up"); n != 1 {
		t.Fatalf("tunnel came up %d times, want once plus a re-establishment", n)
	}
	ping(t, tp.cliNS, tunnelServer, "-I", c.addr)
	ping(t, tp.srvNS, c.addr)
}

// TestBadInputKeepsServing throws garbage at the server while a client is
// connected: bytes that are not TLS, a TLS request that is not the
// protocol, a malformed CSTP header and an oversized frame after CONNECT.
// The server logs each and closes that connection; the connected client's
// tunnel keeps working.
func TestBadInputKeepsServing(t *testing.T) {
	requireE2E(t)
	tp := newTopology(t, "")
	c := startClient(t, tp.cliNS, tp.srv, testPassword, true)
	addr := net.JoinHostPort(serverVeth, "443")

	// The server may close (and reset) the connection after the first
	// bytes, before bash has written the rest: the write error is fine,
	// the server's log is what is checked.
	tp.cliNS.try("bash", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' > /dev/tcp/"+serverVeth+"/443")
	tp.srv.proc.waitLog(t, "TLS handshake failed", 5*time.Second)

	cases := []struct{ mode, want, log string }{
		{"not-protocol", "status 404", "request is not part of the protocol"},
		{"bad-frame", "closed", "bad frame magic"},
		{"oversized", "closed", "exceeds the tunnel MTU"},
	}
	for _, tc := range cases {
		out, err := tp.cliNS.try("env", helperEnv+"=bad", bins.self, addr, tc.mode, testUser, testPassword)
		if err != nil || !strings.Contains(out, tc.want) {
			t.Fatalf("%s: want %q, got (%v):\n%s", tc.mode, tc.want, err, out)
		}
		tp.srv.proc.waitLog(t, tc.log, 5*time.Second)
		ping(t, tp.cliNS, tunnelServer, "-I", c.addr)
	}
	if strings.Contains(tp.srv.proc.Out.String(), "panic") {
		t.Fatalf("server panicked:\n%s", tp.srv.proc.Out.String())
	}
}

// TestExitCodes: a certificate that does not match the pin and an
// unreachable server exit 4; bad flags exit 2. Nothing is left behind.
func TestExitCodes(t *testing.T) {
	requireE2E(t)
	tp := newTopology(t, "")
	before := routes(t, tp.cliNS)

	wrongPin := *tp.srv
	wrongPin.pin = "pin-sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	c := startClient(t, tp.cliNS, &wrongPin, testPassword, false)
	if code := c.proc.exitCode(t, 15*time.Second); code != 4 {
		t.Fatalf("pin mismatch: exit code %d, want 4\n%s", code, c.proc.Out.String())
	}
	if out := c.proc.Out.String(); !strings.Contains(out, "does not match --servercert") || !strings.Contains(out, tp.srv.pin) {
		t.Fatalf("pin mismatch message should name both pins:\n%s", out)
	}

	gone := *tp.srv
	gone.ip = "192.168.77.99" // nobody there
	c = startClient(t, tp.cliNS, &gone, testPassword, false)
	if code := c.proc.exitCode(t, 20*time.Second); code != 4 {
		t.Fatalf("unreachable: exit code %d, want 4\n%s", code, c.proc.Out.String())
	}

	out, err := tp.cliNS.try(bins.vpnc, "connect", "--no-such-flag", "https://x")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(out, "no-such-flag") {
		t.Fatalf("unknown flag: %v\n%s", err, out)
	}
	if after := routes(t, tp.cliNS); after != before {
		t.Fatalf("routes changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestDTLSChaChaExtension: between vpnc and vpnd the ChaCha20-Poly1305
// extension is negotiated when the client asks for it (as it does on CPUs
// without AES instructions; forced here), and data flows over it.
func TestDTLSChaChaExtension(t *testing.T) {
	requireE2E(t)
	tp := newTopology(t, "")
	c := startClientEnv(t, tp.cliNS, tp.srv, testPassword, true, []string{"KVPN_DTLS_CHACHA=1"})
	if !strings.Contains(c.proc.Out.String(), "transport dtls/TLS_PSK_WITH_CHACHA20_POLY1305_SHA256") {
		t.Fatalf("ChaCha20 not negotiated:\n%s", c.proc.Out.String())
	}
	ping(t, tp.cliNS, tunnelServer)
	bulkBothWays(t, tp.srvNS, tunnelServer, tp.cliNS, bulkSize(8<<20))

	// Without the request the stock suite is used.
	tp2 := newTopology(t, "")
	c2 := startClientEnv(t, tp2.cliNS, tp2.srv, testPassword, true, []string{"KVPN_DTLS_CHACHA=0"})
	if !strings.Contains(c2.proc.Out.String(), "transport dtls/TLS_PSK_WITH_AES_128_GCM_SHA256") {
		t.Fatalf("AES-GCM expected without the extension:\n%s", c2.proc.Out.String())
	}
}

// TestKTLSFallback runs on any kernel. Forced off (KVPN_DISABLE_KTLS=1 on
// the client) the record layer stays in userspace and the log says why,
// even where the kernel has kTLS. With ktls=auto each end uses the kernel
// where it has kTLS (the Debian kernel of e2e/ktlsvm) and otherwise (this
// machine) falls back to userspace naming the failed setsockopt; --ktls on
// either gets the kernel or fails with a clear error and exit code 6.
func TestKTLSFallback(t *testing.T) {
	requireE2E(t)
	tp := newTopology(t, `ktls = "auto"`)
	const (
		kernelBoth = "tx=kernel rx=kernel"
		fellBack   = "tx=userspace rx=userspace (kernel TLS unavailable: setsockopt TCP_ULP tls:"
	)
	// engines waits for p's record layer line and reports whether the
	// kernel took the connection, failing unless it is one of the two
	// outcomes above (or the kernel was expected and not used).
	engines := func(p *proc) bool {
		t.Helper()
		eventually(t, 5*time.Second, p.Name+"'s record layer line", func() error {
			if !strings.Contains(p.Out.String(), `msg="record layer"`) {
				return errors.New("not logged yet")
			}
			return nil
		})
		out := p.Out.String()
		switch {
		case strings.Contains(out, kernelBoth):
			return true
		case strings.Contains(out, fellBack) && !expectKTLS:
			return false
		}
		t.Fatalf("%s: record layer neither %q nor %q (KVPN_EXPECT_KTLS=%v):\n%s", p.Name, kernelBoth, fellBack, expectKTLS, out)
		return false
	}

	off := startClientEnv(t, tp.cliNS, tp.srv, testPassword, true, []string{"KVPN_DISABLE_KTLS=1"}, "--no-dtls", "--ktls", "auto")
	off.proc.waitLog(t, "tx=userspace rx=userspace (kernel TLS off: KVPN_DISABLE_KTLS=1)", 5*time.Second)
	if !strings.Contains(off.proc.Out.String(), "transport tls/userspace") {
		t.Fatalf("transport does not name the userspace record layer:\n%s", off.proc.Out.String())
	}
	kernel := engines(tp.srv.proc)
	t.Logf("kernel TLS on this kernel: %v", kernel)
	ping(t, tp.cliNS, tunnelServer)
	bulkBothWays(t, tp.srvNS, tunnelServer, tp.cliNS, bulkSize(8<<20))
	off.proc.stop(5 * time.Second)

	auto := startClient(t, tp.cliNS, tp.srv, testPassword, true, "--no-dtls", "--ktls", "auto", "-i", "kvpnc1")
	if got := engines(auto.proc); got != kernel {
		t.Fatalf("vpnc's kernel TLS (%v) differs from vpnd's (%v) on one kernel", got, kernel)
	}
	ping(t, tp.cliNS, tunnelServer)
	auto.proc.stop(5 * time.Second)

	on := startClient(t, tp.cliNS, tp.srv, testPassword, kernel, "--ktls", "on", "-i", "kvpnc2")
	if kernel {
		on.proc.waitLog(t, kernelBoth, 5*time.Second)
		ping(t, tp.cliNS, tunnelServer)
		return
	}
	if code := on.proc.exitCode(t, 15*time.Second); code != 6 {
		t.Fatalf("--ktls on without kernel TLS: exit code %d, want 6\n%s", code, on.proc.Out.String())
	}
	if !strings.Contains(on.proc.Out.String(), "ktls=on but the kernel cannot take this connection") {
		t.Fatalf("no clear error:\n%s", on.proc.Out.String())
	}
}
