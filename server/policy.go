package server

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
)

// UserConfig is one [users.NAME] table of vpnd's configuration: settings for
// one user, as ocserv's config-per-user files. A user with a table and an
// ipv4 or iroute is a site-to-site gateway (docs/site-to-site.md).
type UserConfig struct {
	// IPv4 is the user's fixed tunnel address. It must be a client address
	// of ipv4-network (not the network, vpnd's own or the broadcast
	// address); the pool never hands it to anyone else.
	IPv4 string `toml:"ipv4"`
	// IRoute lists the networks that live behind this client (ocserv's
	// iroute): vpnd routes them into the user's session and accepts them
	// as source addresses from that session only.
	IRoute []string `toml:"iroute"`
	// Route replaces the global route list for this user (split-include
	// routes pushed to the client). Empty: the global list.
	Route []string `toml:"route"`
	// IsolateClients overrides the global isolate-clients for this user
	// (isolate.go).
	IsolateClients *bool `toml:"isolate-clients"`
}

// userPolicy is one user's parsed settings. It is immutable once built;
// sessions hold a pointer to their user's and a reload swaps the pointer.
type userPolicy struct {
	name    string
	ipv4    netip.Addr     // fixed address; zero: from the pool
	iroutes []netip.Prefix // networks behind the client
	routes  []netip.Prefix // pushed to the client; empty = full tunnel
	// excludes are the split-exclude routes pushed to the client (the
	// global no-route), so a reload swaps them with the routes.
	excludes []netip.Prefix
	// allow is where the client may send to under restrict-user-to-routes
	// (its routes, vpnd's tunnel address, the DNS servers); nil = anywhere.
	allow []netip.Prefix
	// dns are the DNS servers pushed to the client when its group has its
	// own (groups.go); nil: the global dns.
	dns []netip.Addr
	// iso forbids traffic between this user and other clients (isolate.go).
	iso isolation
}

// exclusive reports whether the user may have only one session at a time:
// a fixed address or networks behind it cannot be in two places.
func (u *userPolicy) exclusive() bool { return u.ipv4.IsValid() || len(u.iroutes) > 0 }

// ownsSource reports whether src lies in one of the user's iroutes.
func (u *userPolicy) ownsSource(src netip.Addr) bool {
	for _, p := range u.iroutes {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// allows reports whether the client may send to dst.
func (u *userPolicy) allows(dst netip.Addr) bool {
	if u.allow == nil {
		return true
	}
	for _, p := range u.allow {
		if p.Contains(dst) {
			return true
		}
	}
	return false
}

// policy is the parsed users table with the global settings it depends on.
// Validate builds it; Server keeps the running one in an atomic pointer so
// that a reload (ApplyPolicy) swaps it as a whole.
type policy struct {
	users map[string]*userPolicy  // users with a [users.NAME] table
	def   *userPolicy             // everyone else
	fixed map[netip.Addr]string   // fixed address -> user
	owner map[netip.Prefix]string // iroute -> user
	// groups are the [groups.NAME] tables (groups.go): a group's settings
	// for users without a table, and each user's with one.
	groups map[string]*groupPolicy
}

// user returns name's settings.
func (p *policy) user(name string) *userPolicy {
	if u, ok := p.users[name]; ok {
		return u
	}
	return p.def
}

// buildPolicy parses and checks the [users.NAME] tables against the already
// parsed pool, routes and DNS servers. bad records an error for a key.
func (c *Config) buildPolicy(bad func(key, format string, a ...any)) *policy {
	pol := &policy{
		users: map[string]*userPolicy{},
		fixed: map[netip.Addr]string{},
		owner: map[netip.Prefix]string{},
	}
	pool := c.pool
	gateway := netip.Addr{}
	if pool.IsValid() {
		gateway = pool.Addr().Next()
	}
	allowList := func(routes []netip.Prefix) []netip.Prefix {
		return c.allowList(routes, c.dns, c.RestrictUserToRoutes)
	}
	pol.def = &userPolicy{routes: c.routes, excludes: c.noRoutes, allow: allowList(c.routes), iso: c.isolation(nil, nil)}

	var listen netip.Addr
	if host, _, err := net.SplitHostPort(c.Listen); err == nil {
		if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() {
			listen = a.Unmap()
		}
	}
	names := make([]string, 0, len(c.Users))
	for name := range c.Users {
		names = append(names, name)
	}
	sort.Strings(names) // stable error order
	for _, name := range names {
		uc := c.Users[name]
		key := func(k string) string { return fmt.Sprintf("users.%s.%s", tomlKey(name), k) }
		if name == "" {
			bad("users", "a user table needs a name")
			continue
		}
		u := &userPolicy{name: name, excludes: c.noRoutes}
		if uc == nil {
			uc = &UserConfig{}
		}
		if uc.IPv4 != "" {
			a, err := netip.ParseAddr(uc.IPv4)
			switch {
			case err != nil:
				bad(key("ipv4"), "%v", err)
			case !a.Is4():
				bad(key("ipv4"), "%q is not an IPv4 address", uc.IPv4)
			case pool.IsValid() && !pool.Contains(a):
				bad(key("ipv4"), "%s is outside ipv4-network %s", a, pool)
			case pool.IsValid() && a == pool.Addr():
				bad(key("ipv4"), "%s is the network address of %s", a, pool)
			case pool.IsValid() && a == gateway:
				bad(key("ipv4"), "%s is vpnd's own address in %s", a, pool)
			case pool.IsValid() && !pool.Contains(a.Next()):
				bad(key("ipv4"), "%s is the broadcast address of %s", a, pool)
			case pol.fixed[a] != "":
				bad(key("ipv4"), "%s is also the address of user %q", a, pol.fixed[a])
			default:
				u.ipv4 = a
				pol.fixed[a] = name
			}
		}
		for _, s := range uc.IRoute {
			p, ok := parseNet(key("iroute"), s, bad)
			if !ok {
				continue
			}
			switch {
			case p.Bits() == 0:
				bad(key("iroute"), "%s would route everything to one client", p)
				continue
			case pool.IsValid() && p.Overlaps(pool):
				bad(key("iroute"), "%s overlaps ipv4-network %s", p, pool)
				continue
			case c.pool6.IsValid() && p.Overlaps(c.pool6):
				bad(key("iroute"), "%s overlaps ipv6-network %s", p, c.pool6)
				continue
			case listen.IsValid() && p.Contains(listen):
				bad(key("iroute"), "%s contains vpnd's own listen address %s", p, listen)
				continue
			}
			if other, q := overlapping(pol.owner, p); other != "" {
				if other == name {
					bad(key("iroute"), "%s overlaps %s of the same user", p, q)
				} else {
					bad(key("iroute"), "%s overlaps %s of user %q", p, q, other)
				}
				continue
			}
			pol.owner[p] = name
			u.iroutes = append(u.iroutes, p)
		}
		// Routes pushed to this user: its own list, or the global one
		// without the networks that are behind the user itself (as ocserv
		// leaves a user's iroutes out of the routes it sends that user).
		if len(uc.Route) > 0 {
			// The same checks as the global route list: "default",
			// duplicates and overlaps, the server's own address.
			routes, _ := parseIncludes(key("route"), uc.Route, bad)
			checkServerReachable(key("route"), routes, c.noRoutes, c.listenAddrs(), bad)
			for _, p := range routes {
				if q, in := insideAny(p, u.iroutes); in {
					bad(key("route"), "%s lies inside the user's own iroute %s: the client would send its own network into the tunnel", p, q)
					continue
				}
				u.routes = append(u.routes, p)
			}
		} else {
			u.routes = inheritRoutes(c.routes, u.iroutes)
			if len(c.routes) > 0 && len(u.routes) == 0 {
				// No split-include at all means a full tunnel to the
				// client (and restrict-user-to-routes then restricts
				// nothing): a split tunnel must not turn into one.
				bad(key("iroute"), "every global route lies inside the user's iroutes, so the client would get a full tunnel: give the user a route list of its own")
			}
		}
		u.allow = allowList(u.routes)
		u.iso = c.isolation(nil, uc)
		pol.users[name] = u
	}
	c.buildGroupPolicies(pol, bad) // groups.go
	return pol
}

// allowList is what restrict-user-to-routes lets a client with routes and
// DNS servers dns reach: nil (anywhere) when restrict is off or for a full
// tunnel.
func (c *Config) allowList(routes []netip.Prefix, dns []netip.Addr, restrict bool) []netip.Prefix {
	if !restrict || len(routes) == 0 {
		return nil // full tunnel: everything is the user's route
	}
	allow := slices.Clone(routes)
	if c.pool.IsValid() {
		allow = append(allow, netip.PrefixFrom(c.pool.Addr().Next(), 32)) // vpnd's tunnel address
	}
	if c.pool6.IsValid() {
		// vpnd's IPv6 tunnel address (ipv6.go)
		allow = append(allow, netip.PrefixFrom(c.pool6.Addr().Next(), 128))
	}
	for _, d := range dns {
		allow = append(allow, netip.PrefixFrom(d, d.BitLen()))
	}
	return allow
}

// inheritRoutes is the route list a user without one of its own gets:
// routes without the networks behind the user (its iroutes).
func inheritRoutes(routes, iroutes []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range routes {
		if _, in := insideAny(p, iroutes); !in {
			out = append(out, p)
		}
	}
	return out
}

// parseNet parses a CIDR that must not have host bits set.
func parseNet(key, s string, bad func(key, format string, a ...any)) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		bad(key, "%v", err)
		return p, false
	}
	if p.Masked() != p {
		bad(key, "%q has host bits set (did you mean %s?)", s, p.Masked())
		return p, false
	}
	return p, true
}

// overlapping returns an entry of owners that overlaps p, and its owner.
func overlapping(owners map[netip.Prefix]string, p netip.Prefix) (string, netip.Prefix) {
	// Deterministic: the shortest, then lowest overlapping prefix.
	var best netip.Prefix
	who := ""
	for q, name := range owners {
		if !q.Overlaps(p) {
			continue
		}
		if who == "" || q.Bits() < best.Bits() || (q.Bits() == best.Bits() && q.Addr().Less(best.Addr())) {
			best, who = q, name
		}
	}
	return who, best
}

// insideAny reports whether p lies inside (or equals) one of nets.
func insideAny(p netip.Prefix, nets []netip.Prefix) (netip.Prefix, bool) {
	for _, q := range nets {
		if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			return q, true
		}
	}
	return netip.Prefix{}, false
}

// tomlKey quotes a user name the way it would have to be written in a
// TOML key, so an error names the table as the file spells it.
func tomlKey(name string) string {
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Sprintf("%q", name)
		}
	}
	if name == "" {
		return `""`
	}
	return name
}

// errPoolChange is ApplyPolicy's answer to a configuration with another
// ipv4-network: sessions hold addresses of the running pool.
var errPoolChange = errors.New("ipv4-network: changing the address pool needs a restart of vpnd")
