package server

import (
	"errors"
	"net"
	"net/netip"
	"slices"
)

// IPv6 inside the tunnel (docs/ipv6.md): an optional pool, ipv6-network,
// from which every session gets one address, sent as X-CSTP-Address-IP6
// ADDR/128 (ocserv's default ipv6-subnet-prefix). The server's TUN device
// holds the pool's first host address with the pool's prefix, so the
// kernel routes the whole pool into it; routeFromTUN then finds the
// session by its address as for IPv4.

// maxIPv6PoolBits is the longest IPv6 pool prefix: a /126 holds the
// subnet-router anycast address (the network's first, never handed out),
// the server's address and two clients.
const maxIPv6PoolBits = 126

// minIPv6MTU is IPv6's minimum link MTU (RFC 8200); the kernel disables
// IPv6 on a link with a smaller one.
const minIPv6MTU = 1280

// errPool6Change refuses a reload with another ipv6-network: sessions hold
// addresses of the running pool, and the TUN device its first address.
var errPool6Change = errors.New("ipv6-network: changing the IPv6 address pool needs a restart of vpnd")

// validateIPv6 checks ipv6-network (empty: no IPv6 inside the tunnel) and
// fills c.pool6. It runs after route has been parsed.
func (c *Config) validateIPv6(bad func(key string, format string, a ...any)) {
	c.pool6 = netip.Prefix{}
	if c.IPv6Network == "" {
		return
	}
	p, err := netip.ParsePrefix(c.IPv6Network)
	switch {
	case err != nil:
		bad("ipv6-network", "%v", err)
		return
	case !p.Addr().Is6() || p.Addr().Is4In6():
		bad("ipv6-network", "%q is not an IPv6 network", c.IPv6Network)
		return
	case p.Bits() > maxIPv6PoolBits:
		bad("ipv6-network", "%q is too small: need at least a /%d", c.IPv6Network, maxIPv6PoolBits)
		return
	case p.Masked() != p:
		bad("ipv6-network", "%q has host bits set (did you mean %s?)", c.IPv6Network, p.Masked())
		return
	case !p.Addr().IsGlobalUnicast():
		// Link-local, multicast, loopback or the unspecified network:
		// none can be routed through a tunnel.
		bad("ipv6-network", "%q is not a unicast network (link-local, multicast and loopback cannot be pooled)", c.IPv6Network)
		return
	}
	if c.MTU < minIPv6MTU {
		bad("ipv6-network", "needs mtu %d or more (IPv6's minimum link MTU), mtu is %d", minIPv6MTU, c.MTU)
		return
	}
	ok := true
	for _, r := range c.routes {
		// A route inside the pool would send part of the clients' own
		// addresses back into the tunnel to the wrong place; a route that
		// covers the pool (::/0, say) is fine.
		if r.Addr().Is6() && r.Bits() > p.Bits() && p.Contains(r.Addr()) {
			bad("route", "%s lies inside ipv6-network %s (the pool is the clients' own addresses)", r, p)
			ok = false
		}
	}
	for _, x := range c.noRoutes {
		// Clients would send their own tunnel addresses around the tunnel.
		if x.Overlaps(p) {
			bad("no-route", "%s overlaps ipv6-network %s: clients would route their own tunnel addresses outside the tunnel", x, p)
			ok = false
		}
	}
	for _, l := range []struct{ key, addr string }{{"listen", c.Listen}, {"udp-listen", c.UDPListen}} {
		host, _, err := net.SplitHostPort(l.addr)
		if err != nil {
			continue // reported by Validate
		}
		if a, err := netip.ParseAddr(host); err == nil && p.Contains(a.Unmap()) {
			bad(l.key, "%s lies inside ipv6-network %s: clients would reach the server only through the tunnel", host, p)
			ok = false
		}
	}
	if ok {
		c.pool6 = p
	}
}

// Listen opens vpnd's TCP listener on addr. The socket's family follows
// the host, as udp.Listen's does for DTLS: an IPv4 host (0.0.0.0 included)
// listens on IPv4 only, an IPv6 host ([::] included) on IPv6 only. Go would
// make a dual-stack socket for either wildcard, and a client reaching the
// TCP port over the other family would then find no DTLS.
func Listen(addr string) (net.Listener, error) {
	network := "tcp6"
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.To4() != nil) {
		network = "tcp4"
	}
	return net.Listen(network, addr)
}

// linkBase is the client's link MTU (X-CSTP-Base-MTU) expressed as what an
// IPv4 link carries: an IPv6 header is 20 bytes longer than an IPv4 one, so
// over IPv6 the same link has room for 20 bytes less of tunnel. 0 (not
// sent) stays 0.
func linkBase(base int, remote netip.Addr) int {
	if base > 0 && remote.Is6() && !remote.Is4In6() {
		return base - 20
	}
	return base
}

// attach6 gives the session its IPv6 address, preferring prev
// (X-CSTP-Address-IP6 of a reconnecting client). An exhausted IPv6 pool is
// not fatal: the session goes on with IPv4 only. sess.mu is held.
func (sess *Session) attach6(prev netip.Prefix) {
	s := sess.srv
	if s.pool6 == nil || sess.addr6.IsValid() {
		return
	}
	a, err := s.pool6.Get(prev.Addr())
	if err != nil {
		s.log.Warn("no IPv6 address for the session", "user", sess.user, "session", sess.id, "err", err)
		return
	}
	sess.addr6 = a
	s.mu.Lock()
	s.byAddr[a] = sess
	s.mu.Unlock()
}

// ipv6 returns the session's IPv6 address, invalid if it has none.
func (sess *Session) ipv6() netip.Addr {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.addr6
}

// quietIPv6Drop decides about an IPv6 packet whose source is not the
// session's IPv6 address. The client's kernel sends router solicitations
// and MLD reports from its link-local (or the unspecified) address, and a
// client without an IPv6 address sends nothing else useful: those are
// counted quietly as DropNoIPv6 (true). Any other source from a session
// that has an IPv6 address is spoofed (false).
func (sess *Session) quietIPv6Drop(src netip.Addr) bool {
	if !sess.addr6.IsValid() {
		return true
	}
	return src.IsLinkLocalUnicast() || src.IsUnspecified()
}

// splitInclude is the route list sent to a client with IPv6 address addr6:
// in a split tunnel (routes configured) the IPv6 pool is added unless a
// route already covers it, so the client reaches the server's tunnel
// address and its IPv6 traffic stays split as its IPv4 traffic does.
// Without routes both families are full tunnels.
func (s *Server) splitInclude(routes []netip.Prefix, addr6 netip.Addr) []netip.Prefix {
	p := s.cfg.pool6
	if len(routes) == 0 || !addr6.IsValid() || !p.IsValid() {
		return routes
	}
	for _, r := range routes {
		if r.Addr().Is6() && r.Bits() <= p.Bits() && r.Contains(p.Addr()) {
			return routes
		}
	}
	return append(slices.Clip(routes), p)
}

// addrString is a.String(), or "none" for the invalid address (a session
// without IPv6), for logs.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "none"
	}
	return a.String()
}
