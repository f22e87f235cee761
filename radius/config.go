// Package radius is vpnd's RADIUS client: authentication (RFC 2865, with
// Message-Authenticator, RFC 3579) with failover between servers, turning
// an Access-Accept into session settings, and accounting (RFC 2866) sent
// from a bounded queue that never blocks the data path. It uses
// layeh.com/radius for the packet format and does its own exchange, so
// that every reply it drops (wrong authenticator, malformed) is counted
// and logged.
package radius

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is vpnd's [radius] table (docs/configuration.md). The keys map to
// the radcli configuration ocserv reads (docs/authentication.md).
type Config struct {
	// Server lists the authentication servers, host or host:port (1812
	// by default), tried in order: a server that does not answer within
	// timeout x (retries+1) fails over to the next (radcli's authserver).
	Server []string `toml:"server"`
	// AcctServer lists the accounting servers (1813 by default); empty:
	// the hosts of server on port 1813 (radcli's acctserver).
	AcctServer []string `toml:"acct-server"`
	// SecretFile holds the shared secret, one line (radcli's servers file
	// has one per server; vpnd uses one for all).
	SecretFile string `toml:"secret-file"`
	// NASIdentifier is sent in every request (default: node-name, else
	// the host name).
	NASIdentifier string `toml:"nas-identifier"`
	// NASIPAddress, if set, is sent as NAS-IP-Address (or
	// NAS-IPv6-Address).
	NASIPAddress string `toml:"nas-ip-address"`
	// Timeout is how long to wait for an answer to one transmission, in
	// seconds (radcli's radius_timeout); Retries how often to resend to
	// the same server before the next one (radcli's radius_retries).
	Timeout int `toml:"timeout"`
	Retries int `toml:"retries"`
	// Accounting turns RADIUS accounting on (default) or off.
	Accounting *bool `toml:"accounting"`
	// InterimInterval is the Interim-Update interval in seconds (ocserv's
	// stats-report-time); 0 sends none. An Acct-Interim-Interval in the
	// Access-Accept overrides it for that session (at least 60 s).
	InterimInterval int `toml:"interim-interval"`
	// AcctQueue bounds the accounting records waiting to be sent;
	// beyond it records are dropped (counted, logged).
	AcctQueue int `toml:"acct-queue"`
	// RequireMessageAuthenticator refuses replies to an Access-Request
	// that carry no Message-Authenticator (one that carries a wrong one
	// is always refused).
	RequireMessageAuthenticator bool `toml:"require-message-authenticator"`
	// GroupFromClass takes the user's group from Class attributes of the
	// form "OU=name;" (ocserv's groupconfig); default true.
	GroupFromClass *bool `toml:"group-from-class"`
}

// Defaults.
const (
	DefaultAuthPort  = "1812"
	DefaultAcctPort  = "1813"
	DefaultTimeout   = 3 // seconds
	DefaultRetries   = 2
	DefaultAcctQueue = 4096
	// MinAttrInterim is the least Acct-Interim-Interval taken from an
	// Access-Accept (RFC 2869 5.16: not less than 60 s).
	MinAttrInterim = 60 * time.Second
)

// Parsed is a validated Config.
type Parsed struct {
	Auth, Acct     []string // host:port
	Secret         []byte
	NASIdentifier  string
	NASIP          netip.Addr
	Timeout        time.Duration
	Retries        int
	Accounting     bool
	Interim        time.Duration
	AcctQueue      int
	RequireMsgAuth bool
	GroupFromClass bool
}

// Parse checks c and reads the secret file. bad records an error for a
// key (named "radius.KEY"); the result is nil when any was recorded.
// nodeName is the default NAS-Identifier.
func (c *Config) Parse(nodeName string, bad func(key, format string, a ...any)) *Parsed {
	ok := true
	fail := func(key, format string, a ...any) {
		ok = false
		bad("radius."+key, format, a...)
	}
	p := &Parsed{
		NASIdentifier:  c.NASIdentifier,
		Timeout:        time.Duration(c.Timeout) * time.Second,
		Retries:        c.Retries,
		Accounting:     c.Accounting == nil || *c.Accounting,
		Interim:        time.Duration(c.InterimInterval) * time.Second,
		AcctQueue:      c.AcctQueue,
		RequireMsgAuth: c.RequireMessageAuthenticator,
		GroupFromClass: c.GroupFromClass == nil || *c.GroupFromClass,
	}
	if len(c.Server) == 0 {
		fail("server", "at least one RADIUS server is needed with auth = \"radius\"")
	}
	for _, s := range c.Server {
		a, err := hostPort(s, DefaultAuthPort)
		if err != nil {
			fail("server", "%v", err)
			continue
		}
		p.Auth = append(p.Auth, a)
	}
	for _, s := range c.AcctServer {
		a, err := hostPort(s, DefaultAcctPort)
		if err != nil {
			fail("acct-server", "%v", err)
			continue
		}
		p.Acct = append(p.Acct, a)
	}
	if len(c.AcctServer) == 0 {
		for _, a := range p.Auth {
			h, _, _ := net.SplitHostPort(a)
			p.Acct = append(p.Acct, net.JoinHostPort(h, DefaultAcctPort))
		}
	}
	if c.SecretFile == "" {
		fail("secret-file", "must be set: the file holding the shared secret")
	} else if b, err := os.ReadFile(c.SecretFile); err != nil {
		fail("secret-file", "%v", err)
	} else if s := strings.TrimRight(string(b), "\r\n"); s == "" {
		fail("secret-file", "%s is empty", c.SecretFile)
	} else if strings.Contains(s, "\n") {
		fail("secret-file", "%s has more than one line", c.SecretFile)
	} else {
		p.Secret = []byte(s)
	}
	if p.NASIdentifier == "" {
		p.NASIdentifier = nodeName
	}
	if p.NASIdentifier == "" {
		p.NASIdentifier, _ = os.Hostname()
	}
	if len(p.NASIdentifier) > 253 {
		fail("nas-identifier", "longer than 253 bytes")
	}
	if c.NASIPAddress != "" {
		a, err := netip.ParseAddr(c.NASIPAddress)
		if err != nil {
			fail("nas-ip-address", "%v", err)
		}
		p.NASIP = a.Unmap()
	}
	switch {
	case c.Timeout < 0 || c.Timeout > 60:
		fail("timeout", "%d is out of range 1..60 seconds", c.Timeout)
	case c.Timeout == 0:
		p.Timeout = DefaultTimeout * time.Second
	}
	if c.Retries < 0 || c.Retries > 10 {
		fail("retries", "%d is out of range 0..10", c.Retries)
	}
	if c.InterimInterval < 0 {
		fail("interim-interval", "must not be negative (0 sends no Interim-Update)")
	}
	if c.AcctQueue < 0 {
		fail("acct-queue", "must not be negative")
	} else if c.AcctQueue == 0 {
		p.AcctQueue = DefaultAcctQueue
	}
	if !ok {
		return nil
	}
	return p
}

// hostPort adds the default port to a host without one.
func hostPort(s, port string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("empty server address")
	}
	if h, p, err := net.SplitHostPort(s); err == nil {
		if h == "" {
			return "", fmt.Errorf("%q has no host", s)
		}
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%q: bad port", s)
		}
		return s, nil
	}
	if strings.Contains(s, ":") && !strings.HasPrefix(s, "[") {
		if _, err := netip.ParseAddr(s); err == nil {
			return net.JoinHostPort(s, port), nil // bare IPv6 address
		}
		return "", fmt.Errorf("%q is not host or host:port", s)
	}
	return net.JoinHostPort(s, port), nil
}
