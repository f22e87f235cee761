package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"kvpn/internal/harness"
	"kvpn/internal/testenv"
)

// The stock tools' settings used by the interop tests.
const (
	vpncScript = "/usr/share/vpnc-scripts/vpnc-script"

	// debianTLSPriorities is the tls-priorities line of Debian's
	// /etc/ocserv/ocserv.conf (ocserv 1.1.6): TLS 1.2 only, with %COMPAT
	// (which also turns off Extended Master Secret).
	debianTLSPriorities = harness.DebianTLSPriorities
	// tls13Priorities is the same without -VERS-TLS1.3.
	tls13Priorities = "NORMAL:%SERVER_PRECEDENCE:%COMPAT:-VERS-SSL3.0:-VERS-TLS1.0:-VERS-TLS1.1"

	ocservNetwork = "10.88.0.0/24"
	ocservRoute   = "10.98.0.0/16"
	// ocservTunnelIP is the address ocserv gives its own end of every
	// client's point-to-point tun device: the first host of ipv4-network.
	ocservTunnelIP = "10.88.0.1"
)

// requireOcserv checks what an ocserv test needs besides requireE2E.
func requireOcserv(t *testing.T) {
	t.Helper()
	requireE2E(t)
	testenv.RequireCommand(t, "ocserv")
	testenv.RequireCommand(t, "ocpasswd")
	testenv.RequireCommand(t, "occtl")
}

// requireOpenconnect checks what an openconnect test needs besides
// requireE2E, including the vpnc-script openconnect runs by default.
func requireOpenconnect(t *testing.T) {
	t.Helper()
	requireE2E(t)
	testenv.RequireCommand(t, "openconnect")
	testenv.RequireCommand(t, vpncScript) // a path: LookPath checks the file itself
}

// randHex returns n random bytes in hex, for unique names.
func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ocservOpts are the knobs the interop tests turn.
type ocservOpts struct {
	dtls          bool   // set udp-port (DTLS) as well as tcp-port
	tlsPriorities string // GnuTLS priority string; empty: Debian's default
	extra         string // more config lines (ipv6-network, say)
	// auth replaces the auth line (default: plain with the password file
	// written for testUser); certificate settings go in extra.
	auth string
}

// ocservServer is a running ocserv in its own namespace.
type ocservServer struct {
	ns     *netns
	ip     string
	pin    string
	device string // prefix of the per-client tun devices
	// occtlSocket is where `occtl -s` reaches this server.
	occtlSocket string
	proc        *proc
}

// startOcserv writes a certificate, a password file for testUser and a
// config into a temporary directory (the sockets and the pid file go there
// too), starts ocserv in the foreground in ns listening on ip:443, and waits
// until it accepts connections.
func startOcserv(t *testing.T, ns *netns, ip string, o ocservOpts) *ocservServer {
	t.Helper()
	s := &ocservServer{ns: ns, ip: ip, device: "ocs" + randHex(3)}
	oc, err := harness.StartOcserv(context.Background(), t, ns.NS, harness.OcservRun{
		Config: harness.OcservConfig{
			AuthLine: o.auth, ListenHost: ip, UDP: o.dtls, Dir: t.TempDir(),
			Device: s.device, Network: ocservNetwork, Route: ocservRoute,
			MaxClients: 8, MaxSameClients: 4, Timers: harness.TestTimers,
			TLSPriorities: o.tlsPriorities, Extra: o.extra,
		},
		Users: []string{testUser}, Password: testPassword,
		Args: []string{"--debug", "2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.pin, s.occtlSocket, s.proc = oc.Pin, oc.OcctlSocket, adopt(t, oc.Proc)
	return s
}
