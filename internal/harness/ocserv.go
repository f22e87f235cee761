package harness

import (
	"fmt"
	"os/user"
	"path/filepath"
	"strings"
)

// DebianTLSPriorities is the tls-priorities line of Debian's
// /etc/ocserv/ocserv.conf (ocserv 1.1.6): TLS 1.2 only, with %COMPAT
// (which also turns off Extended Master Secret).
const DebianTLSPriorities = "NORMAL:%SERVER_PRECEDENCE:%COMPAT:-VERS-SSL3.0:-VERS-TLS1.0:-VERS-TLS1.1:-VERS-TLS1.3"

// OcservTimers are ocserv's timer settings, in seconds.
type OcservTimers struct {
	Keepalive, DPD, MobileDPD, SwitchToTCP, Cookie, Auth int
}

var (
	// DebianTimers are the timers of Debian's ocserv.conf (the benchmark
	// runs ocserv as deployed).
	DebianTimers = OcservTimers{Keepalive: 32400, DPD: 90, MobileDPD: 1800, SwitchToTCP: 25, Cookie: 300, Auth: 240}
	// TestTimers are short ones, for tests that watch DPD and reconnects.
	TestTimers = OcservTimers{Keepalive: 10, DPD: 2, MobileDPD: 2, SwitchToTCP: 5, Cookie: 30, Auth: 30}
)

// OcservConfig is an ocserv.conf for a server listening on ListenHost:443,
// with its sockets and pid file in Dir.
type OcservConfig struct {
	// AuthLine is the whole auth line (or lines), e.g.
	// `auth = "plain[passwd=/dir/passwd]"`.
	AuthLine   string
	ListenHost string
	// UDP opens udp-port 443 (DTLS); without it ocserv offers none.
	UDP       bool
	Cert, Key string
	Dir       string
	// RunAs is run-as-user and run-as-group (OcservUser).
	RunAs   string
	Device  string
	Network string // ipv4-network
	Route   string
	// MaxClients and MaxSameClients (0: unlimited), RateLimitMS.
	MaxClients, MaxSameClients, RateLimitMS int
	Timers                                  OcservTimers
	// TLSPriorities defaults to DebianTLSPriorities.
	TLSPriorities string
	// Extra is appended as it is (more settings, one per line).
	Extra string
}

// OcctlSocket is where `occtl -s` reaches the server.
func (c OcservConfig) OcctlSocket() string { return filepath.Join(c.Dir, "occtl.sock") }

// String renders the file.
func (c OcservConfig) String() string {
	udp := "# no udp-port: DTLS off"
	if c.UDP {
		udp = "udp-port = 443"
	}
	prio := c.TLSPriorities
	if prio == "" {
		prio = DebianTLSPriorities
	}
	t := c.Timers
	var b strings.Builder
	fmt.Fprintf(&b, `%s
listen-host = %s
tcp-port = 443
%s
server-cert = %s
server-key = %s
socket-file = %s
occtl-socket-file = %s
pid-file = %s
use-occtl = true
isolate-workers = false
run-as-user = %s
run-as-group = %s
device = %s
ipv4-network = %s
route = %s
predictable-ips = true
ping-leases = false
max-clients = %d
max-same-clients = %d
rate-limit-ms = %d
keepalive = %d
dpd = %d
mobile-dpd = %d
switch-to-tcp-timeout = %d
try-mtu-discovery = false
cookie-timeout = %d
auth-timeout = %d
deny-roaming = false
cisco-client-compat = true
tls-priorities = "%s"
`, c.AuthLine, c.ListenHost, udp, c.Cert, c.Key,
		filepath.Join(c.Dir, "ocserv.sock"), c.OcctlSocket(), filepath.Join(c.Dir, "ocserv.pid"),
		c.RunAs, c.RunAs, c.Device, c.Network, c.Route,
		c.MaxClients, c.MaxSameClients, c.RateLimitMS,
		t.Keepalive, t.DPD, t.MobileDPD, t.SwitchToTCP, t.Cookie, t.Auth, prio)
	if c.Extra != "" {
		b.WriteString(c.Extra)
		b.WriteString("\n")
	}
	return b.String()
}

// OcservUser is the account ocserv's workers should run as: "ocserv" when
// Debian's package created that user and group, else root. With "ocserv",
// the directories down to the socket-file need search permission for it
// (workers connect to sec-mod's socket next to socket-file; without it
// they fail with "error connecting to sec-mod socket ... Permission
// denied"); the caller makes them 0711.
func OcservUser() string {
	if _, err := user.Lookup("ocserv"); err == nil {
		if _, err := user.LookupGroup("ocserv"); err == nil {
			return "ocserv"
		}
	}
	return "root"
}
