package server

import (
	"net"
	"net/netip"
	"strings"
	"unicode"
)

// MinMetricsToken is the shortest metrics-token accepted, in bytes.
const MinMetricsToken = 16

// validateAccess checks run-as-user, run-as-group, ctl-group and the
// metrics endpoint's protection: a metrics-listen address other than a
// loopback one needs a metrics-token. Private addresses get no exception:
// VPN clients may reach the server's own addresses through the tunnel.
func (c *Config) validateAccess(bad func(string, string, ...any)) {
	for _, k := range []struct{ key, v string }{
		{"run-as-user", c.RunAsUser}, {"run-as-group", c.RunAsGroup}, {"ctl-group", c.CtlGroup},
	} {
		if strings.ContainsFunc(k.v, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r == ':' }) {
			bad(k.key, "%q is not a user or group name", k.v)
		}
	}
	if c.RunAsGroup != "" && c.RunAsUser == "" {
		bad("run-as-group", "set only with run-as-user")
	}
	if c.RunAsUser == "root" || c.RunAsUser == "0" {
		bad("run-as-user", "%q is root: leave run-as-user unset to run as root", c.RunAsUser)
	}
	tok := c.MetricsToken
	switch {
	case tok == "":
	case len(tok) < MinMetricsToken:
		bad("metrics-token", "shorter than %d bytes (openssl rand -hex 32 makes one)", MinMetricsToken)
	case strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r >= 0x7f }):
		bad("metrics-token", "must be printable ASCII without spaces")
	}
	if c.MetricsListen == "" || tok != "" {
		return
	}
	host, _, err := net.SplitHostPort(c.MetricsListen)
	if err != nil {
		return // reported by Validate
	}
	if !LoopbackHost(host) {
		bad("metrics-listen", "%s is not a loopback address and metrics-token is not set: the metrics (user counts, traffic, "+
			"login failures) would be open to anyone who reaches it; listen on 127.0.0.1 or [::1], or set metrics-token", c.MetricsListen)
	}
}

// LoopbackHost reports whether host (of a host:port) names only loopback
// addresses: "localhost" or a loopback IP. An empty host (all addresses)
// is not.
func LoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// RevokedFileName is the revoked-sessions file's name, in
// cookie-key-file's directory.
const RevokedFileName = revokedFileName
