package netcfg

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
)

// DNSBackend is how pushed DNS settings reach the resolver.
type DNSBackend string

const (
	// DNSAuto picks DNSResolved when systemd-resolved manages the
	// machine's resolver, DNSResolvConf otherwise (DetectDNSBackend).
	DNSAuto DNSBackend = "auto"
	// DNSResolvConf rewrites resolv.conf (SetDNS).
	DNSResolvConf DNSBackend = "resolvconf"
	// DNSResolved configures the tunnel link in systemd-resolved with
	// resolvectl (SetResolved).
	DNSResolved DNSBackend = "resolved"
	// DNSNone leaves DNS alone.
	DNSNone DNSBackend = "none"
)

// ParseDNSBackend parses vpnc's --dns-backend value.
func ParseDNSBackend(s string) (DNSBackend, error) {
	switch b := DNSBackend(s); b {
	case DNSAuto, DNSResolvConf, DNSResolved, DNSNone:
		return b, nil
	}
	return "", fmt.Errorf("unknown DNS backend %q (want auto, resolvconf, resolved or none)", s)
}

// resolvedStub is the address of systemd-resolved's stub resolver; a
// resolv.conf naming it (usually the symlink to
// /run/systemd/resolve/stub-resolv.conf) means resolved answers every query,
// and edits to the file would be overwritten or bypassed.
const resolvedStub = "127.0.0.53"

// DetectDNSBackend returns DNSResolved when resolvConf points at
// systemd-resolved's stub (a "nameserver 127.0.0.53" line) and resolvectl
// is on PATH, DNSResolvConf otherwise.
func DetectDNSBackend(resolvConf string) DNSBackend {
	data, err := os.ReadFile(resolvConf)
	if err != nil {
		return DNSResolvConf
	}
	stub := false
	for _, line := range bytes.Split(data, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) >= 2 && f[0] == "nameserver" && f[1] == resolvedStub {
			stub = true
			break
		}
	}
	if !stub {
		return DNSResolvConf
	}
	if _, err := exec.LookPath("resolvectl"); err != nil {
		return DNSResolvConf
	}
	return DNSResolved
}

// SetResolved gives the tunnel link its DNS servers and domains in
// systemd-resolved, as `resolvectl` does:
//
//	resolvectl dns LINK SERVER...
//	resolvectl domain LINK DOMAIN... [~.]
//	resolvectl default-route LINK true|false
//
// With fullTunnel, the routing domain "~." sends every query to the
// tunnel's servers (no DNS leaks around a full tunnel) and the link is a
// default route for DNS. In a split tunnel with a search domain, only names
// under that domain go to the tunnel's servers (default-route false); with
// no domain the tunnel's servers join the other links' as default servers.
// domain may hold several names separated by spaces or commas; each is
// checked as in SetDNS (ValidDomainName). Undo: `resolvectl revert LINK`. If a step fails,
// the link is reverted at once and nothing is recorded. No-op without
// servers.
//
// resolved forgets a link's settings when the link disappears, so a run
// that dies (taking its TUN device with it) leaves nothing behind here.
func (c *Changes) SetResolved(link string, servers []netip.Addr, domain string, fullTunnel bool) error {
	if len(servers) == 0 {
		return nil
	}
	domains, err := parseDomains(domain)
	if err != nil {
		return err
	}
	dns := []string{"dns", link}
	for _, s := range servers {
		if !s.IsValid() {
			return errors.New("netcfg: SetResolved: invalid nameserver address")
		}
		dns = append(dns, s.String())
	}
	calls := [][]string{dns}
	switch {
	case fullTunnel:
		calls = append(calls, append(append([]string{"domain", link}, domains...), "~."),
			[]string{"default-route", link, "true"})
	case len(domains) > 0:
		calls = append(calls, append([]string{"domain", link}, domains...),
			[]string{"default-route", link, "false"})
	default:
		calls = append(calls, []string{"default-route", link, "true"})
	}
	revert := func() error { return resolvectl("revert", link) }
	for _, args := range calls {
		if err := resolvectl(args...); err != nil {
			return errors.Join(err, revert())
		}
	}
	c.Undo("DNS of "+link+" in systemd-resolved", revert)
	return nil
}

// resolvectl runs `resolvectl -- ARGS...`. The "--" ends option parsing
// (resolvectl parses its command line with getopt_long, which permutes and
// would take any operand that starts with "-", such as a domain pushed by
// the server, for an option); every argument after it is an operand.
func resolvectl(args ...string) error {
	args = append([]string{"--"}, args...)
	out, err := exec.Command("resolvectl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("netcfg: resolvectl %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
