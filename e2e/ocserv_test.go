package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kvpn/certs"
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

// writeSelfSigned writes a fresh self-signed ECDSA P-256 certificate for
// host (an IP address) and its key to dir/cert.pem and dir/key.pem, and
// returns the paths and the certificate's pin-sha256 (base64 of the SHA-256
// of the SubjectPublicKeyInfo, as openconnect's --servercert takes it).
func writeSelfSigned(t *testing.T, dir, host string) (certPath, keyPath, pin string) {
	t.Helper()
	c, err := certs.SelfSigned(host, 24*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := certs.WritePEM(c, certPath, keyPath); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath, certs.Pin(c.Leaf)
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
	dir := t.TempDir()
	// ocserv's workers run as run-as-user and connect to sec-mod's socket
	// next to socket-file: without search permission on the directories
	// they fail with "error connecting to sec-mod socket ... Permission
	// denied". (The key stays 0600, read by the root processes.)
	runAs := harness.OcservUser()
	if runAs != "root" {
		for d := dir; d != os.TempDir() && d != "/" && d != "."; d = filepath.Dir(d) {
			os.Chmod(d, 0o711)
		}
	}
	s := &ocservServer{ns: ns, ip: ip, device: "ocs" + randHex(3)}
	certPath, keyPath, pin := writeSelfSigned(t, dir, ip)
	s.pin = pin
	s.occtlSocket = filepath.Join(dir, "occtl.sock") // harness.OcservConfig.OcctlSocket

	passwd := filepath.Join(dir, "passwd")
	cmd := exec.Command("ocpasswd", "-c", passwd, testUser)
	cmd.Stdin = strings.NewReader(testPassword + "\n" + testPassword + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ocpasswd: %v\n%s", err, out)
	}

	authLine := fmt.Sprintf(`auth = "plain[passwd=%s]"`, passwd)
	if o.auth != "" {
		authLine = o.auth
	}
	cfg := harness.OcservConfig{
		AuthLine: authLine, ListenHost: ip, UDP: o.dtls, Cert: certPath, Key: keyPath, Dir: dir,
		RunAs: runAs, Device: s.device, Network: ocservNetwork, Route: ocservRoute,
		MaxClients: 8, MaxSameClients: 4, Timers: harness.TestTimers,
		TLSPriorities: o.tlsPriorities, Extra: o.extra,
	}.String()
	cfgPath := filepath.Join(dir, "ocserv.conf")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	s.proc = ns.start(t, "ocserv", "", "ocserv", "--foreground", "--debug", "2", "--config", cfgPath)
	eventually(t, 10*time.Second, "ocserv listening on "+ip+":443", func() error {
		select {
		case <-s.proc.Done():
			t.Fatalf("ocserv exited (%v):\n%s", s.proc.Err(), s.proc.Out.String())
		default:
		}
		out, err := ns.try("ss", "-Hltn", "src", ip, "sport", "=", ":443")
		if err != nil {
			return fmt.Errorf("ss: %v: %s", err, out)
		}
		if !strings.Contains(out, "LISTEN") {
			return fmt.Errorf("not listening yet")
		}
		return nil
	})
	return s
}
