package server

import (
	"net/netip"
	"slices"
)

// routeTable maps the iroute networks of connected users to their
// sessions, for the downlink: a packet from the TUN device whose destination
// no session owns as its tunnel address goes to the session whose iroute
// contains it, the longest prefix winning. Lookups allocate nothing: one map
// probe per distinct prefix length in the table. Not safe for concurrent
// use; the Server guards it with its mu.
type routeTable struct {
	m     map[netip.Prefix]*Session
	lens4 []int // distinct IPv4 prefix lengths in m, longest first
	lens6 []int // the same for IPv6
}

// lookup returns the session whose network contains a, or nil.
func (t *routeTable) lookup(a netip.Addr) *Session {
	if len(t.m) == 0 {
		return nil
	}
	lens := t.lens4
	if a.Is6() {
		lens = t.lens6
	}
	for _, bits := range lens {
		p, _ := a.Prefix(bits)
		if s := t.m[p]; s != nil {
			return s
		}
	}
	return nil
}

// set routes p to sess.
func (t *routeTable) set(p netip.Prefix, sess *Session) {
	if t.m == nil {
		t.m = map[netip.Prefix]*Session{}
	}
	t.m[p] = sess
	t.index()
}

// removeSession drops every route to sess.
func (t *routeTable) removeSession(sess *Session) {
	n := len(t.m)
	for p, s := range t.m {
		if s == sess {
			delete(t.m, p)
		}
	}
	if len(t.m) != n {
		t.index()
	}
}

// reset empties the table.
func (t *routeTable) reset() {
	clear(t.m)
	t.index()
}

// index recomputes the prefix lengths to probe.
func (t *routeTable) index() {
	t.lens4, t.lens6 = t.lens4[:0], t.lens6[:0]
	for p := range t.m {
		if p.Addr().Is4() {
			if !slices.Contains(t.lens4, p.Bits()) {
				t.lens4 = append(t.lens4, p.Bits())
			}
		} else if !slices.Contains(t.lens6, p.Bits()) {
			t.lens6 = append(t.lens6, p.Bits())
		}
	}
	desc := func(a, b int) int { return b - a }
	slices.SortFunc(t.lens4, desc)
	slices.SortFunc(t.lens6, desc)
}
