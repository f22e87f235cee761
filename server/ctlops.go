package server

// Issue #15: occtl's views for `vpnd ctl` (show status, sessions, id,
// iroutes, events) and the ban commands.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"time"

	"kvpn/ctl"
)

// eventBuffer is how many events a `show events` subscriber may lag
// behind before it misses some.
const eventBuffer = 256

// handleOps answers issue #15's commands; ok is false for other commands.
func (s *Server) handleOps(req ctl.Request) (rep ctl.Reply, ok bool) {
	switch req.Command {
	case ctl.CmdShowStatus:
		return ctl.Reply{OK: true, Status: s.status()}, true
	case ctl.CmdShowSessions:
		return ctl.Reply{OK: true, Users: s.Users()}, true
	case ctl.CmdShowID:
		id, err := ctl.ParseID(req.Args[0])
		if err != nil {
			return ctl.Reply{Error: err.Error()}, true
		}
		for _, u := range s.Users() {
			if u.ID == id {
				return ctl.Reply{OK: true, Users: []ctl.User{u}}, true
			}
		}
		return ctl.Errorf("no session with id %d", id), true
	case ctl.CmdShowIRoutes:
		return ctl.Reply{OK: true, IRoutes: s.iroutesView()}, true
	case ctl.CmdShowIPBans, ctl.CmdShowIPBanPoints:
		var bans []ctl.Ban
		for _, b := range s.bans.List() {
			if b.Banned || req.Command == ctl.CmdShowIPBanPoints {
				bans = append(bans, ctl.Ban{Address: banAddr(b.Addr), Score: b.Score, Banned: b.Banned,
					Since: b.Since.UTC(), Expires: b.Expires.UTC()})
			}
		}
		return ctl.Reply{OK: true, Bans: bans}, true
	case ctl.CmdUnbanIP:
		a, err := netip.ParseAddr(req.Args[0])
		if err != nil {
			return ctl.Errorf("bad address %q", req.Args[0]), true
		}
		if !s.bans.Unban(a.Unmap()) {
			return ctl.Errorf("%s has no ban score", a), true
		}
		s.log.Info("operator removed a ban score", "address", a.String())
		return ctl.Reply{OK: true, Message: fmt.Sprintf("unbanned %s", a)}, true
	case ctl.CmdShowEvents:
		return ctl.Errorf("show events is a stream: use vpnd ctl show events"), true
	}
	return ctl.Reply{}, false
}

// banAddr is a ban key as the operator writes it: an IPv4 address, or an
// IPv6 /64.
func banAddr(p netip.Prefix) string {
	if p.Addr().Is4() {
		return p.Addr().String()
	}
	return p.String()
}

// status is `show status`.
func (s *Server) status() *ctl.Status {
	snap := s.Snapshot()
	st := &ctl.Status{
		NodeName: s.node, PID: os.Getpid(), Started: s.started.UTC(), UptimeSeconds: int64(snap.Uptime.Seconds()),
		BytesIn: snap.Traffic.InBytes, BytesOut: snap.Traffic.OutBytes,
		PacketsIn: snap.Traffic.InPackets, PacketsOut: snap.Traffic.OutPackets,
		Logins: snap.Logins, LoginFailures: snap.LoginFailures,
		LoginConnections: s.loginConns.count(),
	}
	for _, u := range s.Users() {
		st.Sessions++
		if !u.Connected {
			st.Resumable++
			continue
		}
		st.Connected++
		if u.Transport == TransportDTLS {
			st.DTLS++
		}
		if u.TLSTX == "kernel" {
			st.KTLSTX++
		}
		if u.TLSRX == "kernel" {
			st.KTLSRX++
		}
	}
	for _, b := range s.bans.List() {
		st.ScoredAddresses++
		if b.Banned {
			st.BannedAddresses++
		}
	}
	for _, r := range s.iroutesView() {
		if r.ID != 0 {
			st.IRoutes++
		}
	}
	return st
}

// count is the number of connections not logged in yet.
func (lc *loginConns) count() int {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.total
}

// iroutesView lists every configured iroute with the session that holds
// it, if any.
func (s *Server) iroutesView() []ctl.IRoute {
	p := s.policy.Load()
	if p == nil {
		return nil
	}
	var out []ctl.IRoute
	s.mu.RLock()
	for net, user := range p.owner {
		r := ctl.IRoute{Network: net.String(), User: user}
		if sess := s.iroutes.lookup(net.Addr()); sess != nil && sess.user == user {
			r.ID = sess.id
			r.Connected = sess.connected.Load()
		}
		out = append(out, r)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].User != out[j].User {
			return out[i].User < out[j].User
		}
		return out[i].Network < out[j].Network
	})
	return out
}

// StreamCtl answers streaming requests (ctl.Streamer): show events.
func (s *Server) StreamCtl(ctx context.Context, req ctl.Request, send func(ctl.Reply) error) {
	if req.Command != ctl.CmdShowEvents {
		send(ctl.Errorf("%s is not a stream", req.Command))
		return
	}
	ch := make(chan ctl.Event, eventBuffer)
	s.ops.evMu.Lock()
	if s.ops.subs == nil {
		s.ops.subs = map[chan ctl.Event]struct{}{}
	}
	s.ops.subs[ch] = struct{}{}
	s.ops.evMu.Unlock()
	defer func() {
		s.ops.evMu.Lock()
		delete(s.ops.subs, ch)
		s.ops.evMu.Unlock()
	}()
	if send(ctl.Reply{OK: true, Message: "streaming connects and disconnects; interrupt to stop"}) != nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-ch:
			if send(ctl.Reply{OK: true, Event: &ev}) != nil {
				return
			}
		}
	}
}

// publish hands ev to every `show events` stream without waiting: a
// subscriber that lags eventBuffer events behind misses the newer ones.
func (s *Server) publish(ev ctl.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	s.ops.evMu.Lock()
	defer s.ops.evMu.Unlock()
	for ch := range s.ops.subs {
		select {
		case ch <- ev:
		default:
			s.ops.eventsDropped.Add(1)
		}
	}
}

// connEvent publishes a connect or disconnect event of sess.
func (s *Server) connEvent(typ string, sess *Session, remote, transport, reason string) {
	sess.mu.Lock()
	addr, addr6 := sess.addr, sess.addr6
	sess.mu.Unlock()
	s.publish(ctl.Event{Type: typ, ID: sess.id, User: sess.user, Address: optAddr(addr), Address6: optAddr(addr6),
		Remote: remote, Transport: transport, Reason: reason})
}

// opsInfo adds issue #15's fields to a session's description: group,
// IPv6 address, iroutes.
func (sess *Session) opsInfo(u *ctl.User) {
	s := sess.srv
	if set := s.currentSettings(); set != nil && set.Passwd != nil {
		u.Group, _ = set.Passwd.Group(sess.user)
	}
	sess.mu.Lock()
	u.Address6 = optAddr(sess.addr6)
	sess.mu.Unlock()
	if p := sess.pol.Load(); p != nil {
		for _, r := range p.iroutes {
			u.IRoutes = append(u.IRoutes, r.String())
		}
	}
}

// errString is err's text, "" for nil.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
