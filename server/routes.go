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
	var explicit []string
	full := false
	for _, r := range routes {
		if isDefaultRoute(r) {
			full = true
			continue
		}
		explicit = append(explicit, r)
	}
	plan.include = parseRouteList("route", explicit, bad)
	if full && len(explicit) > 0 {
		bad("route", `"default" (a full tunnel) already covers %s; list either "default" or split routes`, strings.Join(explicit, ", "))
		plan.include = nil
	}

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

	seen := map[netip.Addr]bool{}
	for _, l := range listen {
		host, _, err := net.SplitHostPort(l.addr)
		if err != nil {
			continue // reported by the listen checks
		}
		a, err := netip.ParseAddr(host)
		if err != nil || a.IsUnspecified() || seen[a.Unmap()] {
			continue // a name or a wildcard: the address clients use is not known here
		}
		a = a.Unmap()
		seen[a] = true
		key := l.key
		if pool.IsValid() && pool.Contains(a) {
			bad("ipv4-network", "%s contains the server's own %s address %s", pool, key, a)
		}
		for _, r := range plan.include {
			if !r.Contains(a) || excluded(plan.exclude, a) {
				continue
			}
			bad("route", "%s contains the server's %s address %s: clients would route their connection to the server into the tunnel itself; narrow the route or add %q to no-route",
				r, key, a, netip.PrefixFrom(a, a.BitLen()).String())
		}
	}
	return plan
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
