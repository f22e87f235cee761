package server

import (
	"context"
	"encoding/hex"
	"net/netip"
	"time"

	"kvpn/cstp"
	"kvpn/radius"
)

// RADIUS accounting (Start, Interim-Update, Stop) and the session limits a
// RADIUS server sets (idle and session timeouts).

// radiusTunnelUp starts the session's accounting the first time its
// tunnel is up (a resumed session's too, without Access-Accept
// settings).
func (s *Server) radiusTunnelUp(sess *Session, addr netip.Addr) {
	if s.rad == nil {
		return
	}
	rs := sess.rad.Load()
	if rs == nil {
		rs = &sessRadius{active: time.Now()}
		if !sess.rad.CompareAndSwap(nil, rs) {
			rs = sess.rad.Load()
		}
	}
	if s.rad.acct == nil {
		return
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.acct != nil {
		return
	}
	info := radius.SessionInfo{
		User: sess.user, FramedIP: addr, CallingStationID: radius.CallingStationID(sess.from),
		MultiSessionID: hex.EncodeToString(sess.cookie[:8]),
		Usage: func() radius.Usage {
			t := sess.totals()
			return radius.Usage{InOctets: t.InBytes, OutOctets: t.OutBytes, InPackets: t.InPackets, OutPackets: t.OutPackets}
		},
	}
	if rs.set != nil {
		info.Class, info.Interim = rs.set.Class, rs.set.Interim
	}
	rs.acct = s.rad.acct.Start(info)
	s.log.Info("RADIUS accounting started", "user", sess.user, "session", sess.id, "acct-session-id", rs.acct.ID())
}

// radiusEnded sends the session's accounting Stop and releases its
// RADIUS iroutes.
func (s *Server) radiusEnded(sess *Session, reason string) {
	if s.rad == nil {
		return
	}
	rs := sess.rad.Load()
	if rs == nil {
		return
	}
	rs.mu.Lock()
	acct, kr := rs.acct, rs.kroutes
	rs.kroutes = nil
	rs.mu.Unlock()
	if acct != nil {
		acct.Stop(terminateCause(reason))
	}
	for p, c := range kr {
		if err := c.Restore(); err != nil {
			s.log.Warn("removing RADIUS iroute", "route", p.String(), "err", err)
		}
	}
	s.rad.mu.Lock()
	for p, o := range s.rad.routes {
		if o == sess {
			delete(s.rad.routes, p)
		}
	}
	s.rad.mu.Unlock()
}

// terminateCause maps why a session ended to an Acct-Terminate-Cause.
func terminateCause(reason string) radius.TerminateCause {
	switch reason {
	case "client disconnected", "logout":
		return radius.CauseUserRequest
	case "cookie expired", "client stopped reading":
		// The connection was lost (DPD timeout, network) and the client
		// did not come back within cookie-timeout.
		return radius.CauseLostCarrier
	case reasonRadiusIdle:
		return radius.CauseIdleTimeout
	case reasonSessionTimout:
		return radius.CauseSessionTimeout
	case "disconnected by the operator", "client certificate revoked":
		return radius.CauseAdminReset
	case cstp.ReasonServerShutdown:
		return radius.CauseNASReboot
	case "replaced by a new session of the same user", "replaced by a newer session of the same site-to-site user":
		return radius.CausePortPreempted
	case "internal error", "protocol violation":
		return radius.CauseNASError
	}
	return radius.CauseNASRequest
}

// radiusSweep ends a session past its RADIUS Session-Timeout or idle for
// its Idle-Timeout, and reports whether it did.
func (s *Server) radiusSweep(sess *Session, now time.Time) bool {
	rs := sess.rad.Load()
	if rs == nil || rs.set == nil {
		return false
	}
	if st := rs.set.SessionTimeout; st > 0 && !now.Before(sess.login.Add(st)) {
		s.Counters.SessionTimeouts.Add(1)
		s.log.Info("ending session: RADIUS Session-Timeout reached", "user", sess.user, "session", sess.id,
			"session-timeout", st.String())
		sess.terminate(reasonSessionTimout)
		return true
	}
	if it := rs.set.IdleTimeout; it > 0 {
		t := sess.totals()
		pk := t.InPackets + t.OutPackets
		rs.mu.Lock()
		if pk != rs.lastPkts {
			rs.lastPkts, rs.active = pk, now
		}
		idle := now.Sub(rs.active)
		rs.mu.Unlock()
		if idle >= it {
			s.log.Info("ending session: RADIUS Idle-Timeout reached", "user", sess.user, "session", sess.id,
				"idle-timeout", it.String())
			sess.terminate(reasonRadiusIdle)
			return true
		}
	}
	return false
}

// radiusClose sends the queued accounting records (the sessions' Stops
// at shutdown), for at most acctFlushTimeout.
func (s *Server) radiusClose() {
	if s.rad == nil || s.rad.acct == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), acctFlushTimeout)
	defer cancel()
	s.rad.acct.Close(ctx)
}

// radiusDrops adds the RADIUS counters to a snapshot's drops.
func (s *Server) radiusDrops(d map[string]uint64) {
	if s.rad == nil {
		return
	}
	c := &s.rad.client.Counters
	for k, v := range map[string]uint64{
		"radius-no-answer":          c.NoAnswer.Load(),
		"radius-failover":           c.Failovers.Load(),
		"radius-unreachable":        c.Unreachable.Load(),
		"radius-bad-authenticator":  c.BadAuthenticator.Load(),
		"radius-bad-reply":          c.BadReply.Load(),
		"radius-bad-attributes":     c.BadAttributes.Load(),
		"radius-ignored-attributes": c.IgnoredAttributes.Load(),
		"radius-reject":             c.Rejects.Load(),
		"radius-framed-ip-refused":  s.rad.framedIPRefused.Load(),
		"radius-route-refused":      s.rad.routeRefused.Load(),
		"radius-challenge-expired":  s.rad.challengeExpired.Load(),
		"radius-acct-retried":       c.AcctRetried.Load(),
		"radius-acct-dropped":       c.AcctDropped.Load(),
		"radius-acct-queue-full":    c.AcctQueueFull.Load(),
	} {
		d[k] = v
	}
}

// Reasons a session ends for RADIUS limits.
const (
	reasonRadiusIdle    = "idle-timeout reached"
	reasonSessionTimout = "session-timeout reached"
)
