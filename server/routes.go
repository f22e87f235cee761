package server

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Split tunnels: the `route` (split-include, X-CSTP-Split-Include) and
// `no-route` (split-exclude, X-CSTP-Split-Exclude) keys, named as ocserv
// names them. An empty `route`, or `route = ["default"]` as ocserv writes
// it, is a full tunnel: the client routes everything into the tunnel except
// the networks listed in `no-route`.

// routePlan is the validated form of route and no-route.
type routePlan struct {
	include []netip.Prefix // empty: full tunnel
	exclude []netip.Prefix
}

// isDefaultRoute reports whether s is ocserv's spelling of a full tunnel:
// "default", or a /0 of either family.
func isDefaultRoute(s string) bool {
	switch strings.TrimSpace(s) {
	case "default", "0.0.0.0/0", "::/0", "0.0.0.0/0.0.0.0":
		return true
	}
	return false
}

// parseRouteCIDR parses a route as ADDR/LEN, or ADDR/DOTTED-MASK for IPv4 as
// ocserv's configuration writes them. Host bits set are an error, not masked
// away: "10.0.0.1/8" is more likely a typo than a network.
func parseRouteCIDR(s string) (netip.Prefix, error) {
	addr, mask, ok := strings.Cut(s, "/")
	if !ok {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (want ADDR/LEN, e.g. 192.168.10.0/24)", s)
	}
	if strings.Contains(mask, ".") {
		m, err := netip.ParseAddr(mask)
		if err != nil || !m.Is4() {
			return netip.Prefix{}, fmt.Errorf("%q has a bad netmask", s)
		}
		ones, bits := net.IPMask(m.AsSlice()).Size()
		if bits == 0 {
			return netip.Prefix{}, fmt.Errorf("%q has a non-contiguous netmask", s)
		}
		s = fmt.Sprintf("%s/%d", addr, ones)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q: %v", s, err)
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q: zoned addresses are not routes", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}

// parseRouteList parses one key's list and rejects duplicates and
// overlaps: every address is covered by at most one entry, so what a client
// does with the list does not depend on its order or on longest-prefix rules.
func parseRouteList(key string, list []string, bad func(key, format string, a ...any)) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range list {
		p, err := parseRouteCIDR(s)
		if err != nil {
			bad(key, "%v", err)
			continue
		}
		clash := false
		for _, q := range out {
			switch {
			case p == q:
				bad(key, "%s is listed twice", p)
			case q.Overlaps(p):
				wide, narrow := q, p
				if p.Bits() < q.Bits() {
					wide, narrow = p, q
				}
				bad(key, "%s and %s overlap (%s lies inside %s)", q, p, narrow, wide)
			default:
				continue
			}
			clash = true
			break
		}
		if !clash {
			out = append(out, p)
		}
	}
	return out
}

// validateRoutes checks route and no-route against each other, against the
// address pool and against the addresses the server listens on, and returns
// what is pushed to clients. What vpnd can know about "a route that would
// cut the client off from its server" is its own listen addresses when they
// are not wildcards: a pool that contains one would hand the server's
// address to a client, and a split-include route that contains one would
// send the client's packets for the server into the tunnel itself (unless
// a no-route carves the address out). With a wildcard listen address
// (0.0.0.0, the default) the address clients dial is not known here (NAT,
// load balancers); there, and for full tunnels, the client protects itself
// with a host route to the server (vpnc's pin; openconnect's vpnc-script
// does the same).
func validateRoutes(routes, noRoutes []string, pool netip.Prefix, listen []listenAddr, bad func(key, format string, a ...any)) routePlan {
	var plan routePlan
	var full bool
	plan.include, full = parseIncludes("route", routes, bad)

	for _, r := range noRoutes {
		if isDefaultRoute(r) {
			bad("no-route", "%q would exclude everything from the tunnel", r)
		}
	}
	plan.exclude = parseRouteList("no-route", noRoutes, bad)
	for _, x := range plan.exclude {
		if len(plan.include) > 0 && !full {
			inside := false
			for _, r := range plan.include {
				if r == x {
					bad("no-route", "%s excludes all of route %s; drop both", x, r)
					inside = true // reported
					break
				}
				if r.Bits() < x.Bits() && r.Contains(x.Addr()) {
					inside = true
					break
				}
			}
			if !inside {
				// ocserv documents no-route as "subsets of the routes
				// above"; outside them it would change nothing.
				bad("no-route", "%s is not inside any route (no-route lists parts of the routes to leave out of the tunnel)", x)
			}
		}
		if pool.IsValid() && x.Overlaps(pool) {
			bad("no-route", "%s overlaps the address pool %s: clients would route their own tunnel addresses outside the tunnel", x, pool)
		}
	}
	for _, l := range listenHosts(listen) {
		if pool.IsValid() && pool.Contains(l.a) {
			bad("ipv4-network", "%s contains the server's own %s address %s", pool, l.key, l.a)
		}
	}
	checkServerReachable("route", plan.include, plan.exclude, listen, bad)
	return plan
}

// parseIncludes parses a split-include list (key route, global or a
// user's): "default" alone means a full tunnel (full, and no routes).
func parseIncludes(key string, routes []string, bad func(key, format string, a ...any)) (include []netip.Prefix, full bool) {
	var explicit []string
	for _, r := range routes {
		if isDefaultRoute(r) {
			full = true
			continue
		}
		explicit = append(explicit, r)
	}
	include = parseRouteList(key, explicit, bad)
	if full && len(explicit) > 0 {
		bad(key, `"default" (a full tunnel) already covers %s; list either "default" or split routes`, strings.Join(explicit, ", "))
		include = nil
	}
	return include, full
}

// checkServerReachable reports each split-include route (key's) that
// contains one of the server's own listen addresses and is not carved out
// by a no-route: clients would send their connection to the server into
// the tunnel itself.
func checkServerReachable(key string, include, exclude []netip.Prefix, listen []listenAddr, bad func(key, format string, a ...any)) {
	for _, l := range listenHosts(listen) {
		for _, r := range include {
			if !r.Contains(l.a) || excluded(exclude, l.a) {
				continue
			}
			bad(key, "%s contains the server's %s address %s: clients would route their connection to the server into the tunnel itself; narrow the route or add %q to no-route",
				r, l.key, l.a, netip.PrefixFrom(l.a, l.a.BitLen()).String())
		}
	}
}

// listenHost is a listen address that names one host address.
type listenHost struct {
	key string
	a   netip.Addr
}

// listenHosts returns the listen addresses that name a host, once each. A
// name or a wildcard (0.0.0.0, the default) is left out: the address
// clients use is not known here.
func listenHosts(listen []listenAddr) []listenHost {
	var out []listenHost
	seen := map[netip.Addr]bool{}
	for _, l := range listen {
		host, _, err := net.SplitHostPort(l.addr)
		if err != nil {
			continue // reported by the listen checks
		}
		a, err := netip.ParseAddr(host)
		if err != nil || a.IsUnspecified() || seen[a.Unmap()] {
			continue
		}
		a = a.Unmap()
		seen[a] = true
		out = append(out, listenHost{l.key, a})
	}
	return out
}

// listenAddr is a configured listen address and the key that set it.
type listenAddr struct{ key, addr string }

func excluded(list []netip.Prefix, a netip.Addr) bool {
	for _, x := range list {
		if x.Contains(a) {
			return true
		}
	}
	return false
}
