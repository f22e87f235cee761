package server

// Issue #15: isolation between clients (isolate-clients).

import "net/netip"

// isolation is one user's client-to-client policy: when on, packets from
// the user's sessions to another client's tunnel address, and packets
// from another client to the user's sessions, are dropped (drop reason
// client-to-client). The tunnel addresses are the pools (ipv4-network,
// ipv6-network) but vpnd's own addresses there, which stay reachable.
// Networks behind site-to-site clients (iroutes) are not client addresses:
// restrict-user-to-routes and the routes govern those.
type isolation struct {
	on       bool
	v4, v6   netip.Prefix // the pools; v6 invalid without ipv6-network
	gw4, gw6 netip.Addr   // vpnd's own tunnel addresses
}

// isolation is the policy of a user with table uc (nil: no table): its
// isolate-clients if set, else the global one.
func (c *Config) isolation(gc *GroupConfig, uc *UserConfig) isolation {
	on := c.IsolateClients
	if gc != nil && gc.IsolateClients != nil {
		on = *gc.IsolateClients
	}
	if uc != nil && uc.IsolateClients != nil {
		on = *uc.IsolateClients
	}
	if !on {
		return isolation{}
	}
	iso := isolation{on: true, v4: c.pool, v6: c.pool6}
	if c.pool.IsValid() {
		iso.gw4 = c.pool.Addr().Next()
	}
	if c.pool6.IsValid() {
		iso.gw6 = c.pool6.Addr().Next()
	}
	return iso
}

// client reports whether a is another client's tunnel address that the
// policy keeps the user from (always false when off).
func (i *isolation) client(a netip.Addr) bool {
	if !i.on {
		return false
	}
	if a.Is4() {
		return i.v4.Contains(a) && a != i.gw4
	}
	return i.v6.Contains(a) && a != i.gw6
}

// isolatedDrop counts a packet isolate-clients dropped, with a log line
// at most every 10 s.
func (s *Server) isolatedDrop(sess *Session, src, dst netip.Addr) {
	s.Counters.DropIsolated.Add(1)
	if ok, n := s.logIsolated.allow(); ok {
		s.log.Info("dropped packets between clients (isolate-clients)", "user", sess.user, "session", sess.id,
			"source", src.String(), "destination", dst.String(), "not-logged", n)
	}
}
