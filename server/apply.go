package server

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"kvpn/netcfg"
)

// ApplyPolicy makes the users table, the route lists and
// restrict-user-to-routes of cfg the running ones, without dropping a
// session: it is the hook a configuration reload (SIGHUP) calls.
//
// An invalid cfg, or one with another ipv4-network, is refused with an
// error and nothing changes. Otherwise the new policy is swapped in as a
// whole: kernel routes for new iroutes are added to the TUN device and
// routes for iroutes no longer configured are removed, connected sessions
// are bound to their user's new iroutes and checked against the new rules
// from their next packet on, and the pool reserves the new fixed addresses.
// What could not be applied (a kernel route the kernel refused, a connected
// session whose address no longer matches its user's fixed address) is
// returned as an error after everything else was applied; such sessions
// get the new address when they next log in.
//
// Only those keys are applied; the others (listen, device, mtu, ...) need a
// restart. Routes and DNS servers are pushed to clients when they connect,
// so a connected client gets changed ones on its next connection.
func (s *Server) ApplyPolicy(cfg *Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.pool != s.cfg.pool {
		return errPoolChange
	}
	if cfg.pool6 != s.cfg.pool6 {
		return errPool6Change
	}
	s.polMu.Lock()
	defer s.polMu.Unlock()
	return s.applyPolicy(cfg.pol)
}

// applyPolicy installs pol. Callers hold polMu.
func (s *Server) applyPolicy(pol *policy) error {
	var errs []error
	// Kernel routes first, so packets for a new network reach the TUN
	// device by the time a session serves it. Networks are routed into
	// the TUN device whether or not their user is connected: packets for
	// an absent site are dropped (DropNoSession) instead of following the
	// default route out of the gateway in the clear.
	for p, user := range pol.owner {
		if s.kroutes[p] != nil {
			continue
		}
		c, err := s.addRoute(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("users.%s.iroute: route %s into %s: %w", tomlKey(user), p, s.devName(), err))
			continue
		}
		s.kroutes[p] = c
	}
	for p, c := range s.kroutes {
		if _, ok := pol.owner[p]; ok {
			continue
		}
		if err := c.Restore(); err != nil {
			errs = append(errs, fmt.Errorf("removing route %s: %w", p, err))
		}
		delete(s.kroutes, p)
	}
	s.pool.Reserve(pol.fixed)

	s.mu.Lock()
	s.policy.Store(pol)
	s.iroutes.reset()
	// byAddr holds every session that has an address; bind them in the
	// order they connected, so that where an exclusive user still has two
	// sessions (it was not exclusive before) the newest one serves.
	// byAddr has a session once per address it holds (IPv4 and IPv6):
	// list each once, with its IPv4 address (the one ipv4 fixes).
	list := make([]*Session, 0, len(s.byAddr))
	addrs := make(map[*Session]netip.Addr, len(s.byAddr))
	for a, sess := range s.byAddr {
		if _, seen := addrs[sess]; !seen {
			list = append(list, sess)
			addrs[sess] = netip.Addr{}
		}
		if a.Is4() {
			addrs[sess] = a
		}
	}
	slices.SortFunc(list, func(a, b *Session) int { return cmp.Compare(a.id, b.id) })
	for _, sess := range list {
		u := sess.policyIn(pol)
		sess.pol.Store(u)
		s.bindLocked(sess, u)
		a := addrs[sess]
		if owner := pol.fixed[a]; owner != "" && owner != sess.user {
			errs = append(errs, fmt.Errorf("users.%s.ipv4: %s is still used by session %d of user %q until it ends",
				tomlKey(owner), a, sess.id, sess.user))
		} else if u.ipv4.IsValid() && u.ipv4 != a {
			errs = append(errs, fmt.Errorf("users.%s.ipv4: session %d keeps %s until the user logs in again",
				tomlKey(sess.user), sess.id, a))
		}
	}
	s.mu.Unlock()
	return errors.Join(errs...)
}

// bindLocked routes u's iroutes to sess. Callers hold s.mu for writing.
func (s *Server) bindLocked(sess *Session, u *userPolicy) {
	for _, p := range u.iroutes {
		s.iroutes.set(p, sess)
	}
}

// installRoute routes p into the TUN device; the returned record removes it.
func (s *Server) installRoute(p netip.Prefix) (*netcfg.Changes, error) {
	c := netcfg.New()
	if err := c.AddRoute(p, s.dev.Name()); err != nil {
		return nil, err
	}
	return c, nil
}

// removeRoutes deletes every iroute kernel route vpnd installed.
func (s *Server) removeRoutes() {
	s.polMu.Lock()
	defer s.polMu.Unlock()
	for p, c := range s.kroutes {
		if err := c.Restore(); err != nil {
			s.log.Warn("removing iroute", "route", p.String(), "err", err)
		}
		delete(s.kroutes, p)
	}
}

func (s *Server) devName() string {
	if s.dev == nil {
		return "the TUN device"
	}
	return s.dev.Name()
}
