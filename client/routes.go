package client

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"kvpn/netcfg"
)

// Routes and DNS pushed by the server: split-include routes (or the two
// halves of a full tunnel), split-exclude routes kept on the path they had
// before the tunnel, the host route that keeps the server itself outside
// the tunnel, and the DNS servers and search domain through resolv.conf or
// systemd-resolved. Everything is recorded in t.changes and undone by
// down(); the routes that outlive the TUN device (pin, excludes) are also
// journaled in the state directory, so the next start removes them if
// this run is killed.

// routeJournal is the file listing this run's routes outside the tunnel.
func (o *Options) routeJournal() string {
	return filepath.Join(o.instanceDir(), "routes.kvpn-undo")
}

// recoverCrashedRun undoes what a run that died without cleaning up left
// behind in the state directory: its resolv.conf edit and its routes
// outside the tunnel. (Routes into its TUN device, and a systemd-resolved
// link configuration, went away with the device.)
func (o *Options) recoverCrashedRun() {
	log := o.Log
	if o.ResolvConf != "" {
		if ok, err := netcfg.RecoverDNS(o.ResolvConf, o.dnsBackup()); err != nil {
			log.Warn("could not restore DNS left by an earlier run", "err", err)
		} else if ok {
			log.Info("restored DNS settings left behind by an earlier run", "file", o.ResolvConf)
		}
	}
	if n, err := netcfg.RecoverRoutes(o.routeJournal()); err != nil {
		log.Warn("could not remove routes left by an earlier run", "err", err)
	} else if n > 0 {
		log.Info("removed routes left behind by an earlier run", "routes", n)
	}
}

// remoteIP is the address the connection c actually reached (not a fresh
// lookup of the host name, which may give another address, or fail once
// the tunnel's DNS servers are in place).
func remoteIP(c *conn) netip.Addr {
	if ta, ok := c.rc.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// dialTarget is where dial connects: the server's URL, or once the tunnel
// is up the address the first connection reached, so reconnects go to the
// address whose host route is pinned outside the tunnel (and need no DNS
// lookup through a tunnel that is down), as openconnect does.
func (o *Options) dialTarget() string {
	if o.pinned.IsValid() {
		return o.pinned.String()
	}
	return o.addr()
}

// capturingRoute returns the tunnel route that would carry packets for
// server, if any: one that contains it, with no split-exclude route
// carving it out.
func capturingRoute(routes, excludes []netip.Prefix, server netip.Addr) (netip.Prefix, bool) {
	for _, x := range excludes {
		if x.Contains(server) {
			return netip.Prefix{}, false
		}
	}
	for _, r := range routes {
		if r.Contains(server) {
			return r, true
		}
	}
	return netip.Prefix{}, false
}

// applyRoutes installs, in this order, the host route to the server, the
// split-exclude routes, the tunnel routes through link and the IPv6 black
// hole of an IPv4-only full tunnel (planRoutes, under the user's
// RoutePolicy): the first two look up the path the kernel uses before the
// tunnel routes exist. A tunnel route that would contain the server's
// address while the host route to the server cannot be added is refused
// before any route is added: the tunnel would carry its own packets and
// the connection would die.
func (t *tunnel) applyRoutes(link string) error {
	p := t.params
	plan := planRoutes(p, t.o.Routes)
	t.plan = plan
	t.changes.SetJournal(t.o.routeJournal())
	routes := plan.tunnel
	if len(plan.refused) > 0 {
		why := "--route-filter"
		if t.o.Routes.NoRoutes {
			why = "--no-routes"
		}
		t.log.Info("pushed routes not installed ("+why+")", "routes", prefixList(plan.refused))
	}
	if server := t.server; server.IsValid() && len(routes) > 0 {
		if err := t.changes.PinHostRoute(server); err != nil {
			if r, ok := capturingRoute(routes, plan.excludes, server); ok {
				return withCode(ExitTunnelLost, fmt.Errorf("refusing the server's route %s: it contains the server's own address %s, "+
					"and the host route that would keep the server outside the tunnel could not be added (%v); no routes were added", r, server, err))
			}
			t.log.Warn("could not pin the route to the server (no tunnel route contains it)", "server", server.String(), "err", err)
		}
	}
	for _, x := range plan.excludes {
		if err := t.changes.ExcludeRoute(x); err != nil {
			if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) {
				// Nothing outside the tunnel reaches it either.
				t.log.Warn("split-exclude network has no route outside the tunnel; left to the tunnel routes", "network", x.String())
				continue
			}
			return withCode(ExitTunnelLost, fmt.Errorf("split-exclude route %s: %w", x, err))
		}
	}
	for _, r := range routes {
		if err := t.changes.AddRoute(r, link); err != nil {
			return withCode(ExitTunnelLost, fmt.Errorf("adding route %s: %w", r, err))
		}
	}
	for _, r := range plan.unreachable {
		if err := t.changes.UnreachableRoute(r); err != nil {
			if errors.Is(err, unix.EEXIST) {
				// Someone else's route of exactly this prefix (another
				// VPN, say) already decides where that IPv6 goes.
				t.log.Warn("IPv6 black hole: a route to "+r.String()+" exists already; left alone", "err", err)
				continue
			}
			return withCode(ExitTunnelLost, fmt.Errorf("IPv6 black hole %s: %w", r, err))
		}
	}
	if len(plan.unreachable) > 0 {
		t.log.Info("IPv6 blocked for the tunnel's lifetime: full IPv4 tunnel without IPv6 (--allow-ipv6-leak turns this off)",
			"routes", prefixList(plan.unreachable))
	}
	return nil
}

func prefixList(ps []netip.Prefix) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

// applyDNS hands the pushed DNS servers and search domain to the resolver
// chosen by --dns-backend (auto: systemd-resolved if it runs the
// machine's resolver, resolv.conf otherwise).
func (t *tunnel) applyDNS(link string) error {
	p := t.params
	if len(p.DNS) == 0 {
		return nil
	}
	if t.o.NoDNS {
		t.log.Info("pushed DNS not applied (--no-dns)", "servers", addrList(p.DNS), "domain", p.DefaultDomain)
		return nil
	}
	backend := t.o.DNSBackend
	if backend == "" || backend == netcfg.DNSAuto {
		backend = netcfg.DNSResolvConf
		if t.o.ResolvConf != "" {
			backend = netcfg.DetectDNSBackend(t.o.ResolvConf)
		}
	}
	var err error
	switch backend {
	case netcfg.DNSNone:
		t.log.Info("pushed DNS not applied (--dns-backend none)", "servers", addrList(p.DNS), "domain", p.DefaultDomain)
		return nil
	case netcfg.DNSResolved:
		// Every query into the tunnel ("~.") only when the installed
		// routes send all IPv4 there: with --no-routes, or a filter that
		// keeps the full tunnel out, other names stay with the host's own
		// resolvers.
		err = t.changes.SetResolved(link, p.DNS, p.DefaultDomain, t.plan.full4())
	default:
		if t.o.ResolvConf == "" {
			return nil
		}
		err = t.changes.SetDNS(t.o.ResolvConf, p.DNS, p.DefaultDomain, t.o.dnsBackup())
	}
	if err != nil {
		return withCode(ExitTunnelLost, fmt.Errorf("setting DNS (%s): %w", backend, err))
	}
	t.log.Info("DNS applied", "backend", string(backend), "servers", addrList(p.DNS), "domain", p.DefaultDomain)
	return nil
}
