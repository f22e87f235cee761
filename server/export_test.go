package server

import "net/netip"

// newSession is newSessionIn without a group, for the tests.
func (s *Server) newSession(user string, from netip.Addr) *Session {
	return s.newSessionIn(user, "", from)
}
