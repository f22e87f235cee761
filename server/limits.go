package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// rateLog lets an event that an attacker can trigger at will be logged at
// most once per interval; the line then says how many were not logged.
type rateLog struct {
	last       atomic.Int64 // unix nanoseconds of the latest logged event
	suppressed atomic.Uint64
}

// logInterval is how often a rateLog lets a line through.
const logInterval = 10 * time.Second

// allow reports whether to log this event, and how many events were not
// logged since the latest one that was.
func (r *rateLog) allow() (bool, uint64) {
	now := time.Now().UnixNano()
	last := r.last.Load()
	if now-last < int64(logInterval) || !r.last.CompareAndSwap(last, now) {
		r.suppressed.Add(1)
		return false, 0
	}
	return true, r.suppressed.Swap(0)
}

// logUser is a username as logs show it: bounded, since a client chooses it.
func logUser(user string) string {
	const max = 64
	if len(user) > max {
		return user[:max] + "..."
	}
	return user
}

// throttleWait waits (within ctx) until the throttle lets user try from
// addr, and returns "" then; otherwise it counts and logs the refusal and
// returns the message the login form shows. Held back only by other
// attempts in flight (several users behind one NAT), a login waits a
// little for them rather than failing.
func (s *Server) throttleWait(ctx context.Context, user string, addr netip.Addr, log *slog.Logger) string {
	allowed, wait := s.throttle.Wait(ctx, user, addr)
	if allowed {
		return ""
	}
	s.Counters.LoginThrottled.Add(1)
	if ok, n := s.logThrottled.allow(); ok {
		log.Warn("login throttled after repeated failures", "retry-after", wait.Round(time.Second).String(), "not-logged", n)
	}
	return fmt.Sprintf("Too many failed logins; try again in %s.", wait.Round(time.Second))
}

// loginFailed records a failed login of user from addr: the throttle's
// count, the counter and the address's ban points.
func (s *Server) loginFailed(user string, addr netip.Addr, log *slog.Logger) {
	s.throttle.Fail(user, addr)
	s.Counters.LoginFailures.Add(1)
	s.banPoints(addr, user, log)
}

// banPoints adds a wrong password's ban points to addr, logging the moment
// the address becomes banned.
func (s *Server) banPoints(addr netip.Addr, user string, log *slog.Logger) {
	if s.bans.WrongPasswordFor(addr, user) {
		log.Warn("address banned: ban score reached max-ban-score",
			"max-ban-score", s.cfg.MaxBanScore, "ban-reset-time", s.cfg.BanResetTime)
	}
}

// Session limits, as ocserv names them.
var (
	errMaxClients     = errors.New("server full (max-clients)")
	errMaxSameClients = errors.New("too many sessions for this user (max-same-clients)")
)

// admitSession reports whether one more session of user fits max-clients
// (all sessions) and max-same-clients (the user's); sessions waiting for
// their CONNECT or for a reconnect count, as they hold a cookie and an
// address. A user at max-same-clients whose oldest session has no
// connection (a client that crashed, or a login that never connected)
// gets a place by ending that session: a user whose laptop died twice is
// not locked out for cookie-timeout, and one account still holds at most
// max-same-clients addresses. The caller holds s.admitMu while it checks
// and creates the session, so parallel logins cannot both take the last
// place.
func (s *Server) admitSession(user string) error {
	maxAll, maxSame := s.cfg.MaxClients, s.cfg.MaxSameClients
	if maxAll == 0 && maxSame == 0 {
		return nil
	}
	s.mu.RLock()
	total := len(s.sessions)
	var mine []*Session
	for sess := range s.sessions {
		if sess.user == user {
			mine = append(mine, sess)
		}
	}
	s.mu.RUnlock()
	if maxSame > 0 && len(mine) >= maxSame {
		idle := oldestUnconnected(mine)
		if idle == nil {
			return errMaxSameClients
		}
		idle.end("replaced by a new login of the same user (max-same-clients)")
		total--
	}
	if maxAll > 0 && total >= maxAll {
		return errMaxClients
	}
	return nil
}

// oldestUnconnected is the oldest of sessions that has no connection now,
// nil if every one is connected.
func oldestUnconnected(sessions []*Session) *Session {
	var oldest *Session
	for _, sess := range sessions {
		sess.mu.Lock()
		idle := sess.ch == nil && !sess.ended
		sess.mu.Unlock()
		if idle && (oldest == nil || sess.id < oldest.id) {
			oldest = sess
		}
	}
	return oldest
}

// connKey is the address a connection counts against: itself for IPv4,
// its /64 for IPv6 (a host usually has a whole /64).
func connKey(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// addrOf is the IP address of a net.Addr, or the zero Addr.
func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// Accept backoff, as net/http's Server: a failing Accept (EMFILE, ENFILE,
// ENOBUFS...) is retried after 5 ms, doubling up to 1 s while it keeps
// failing, so that running out of file descriptors neither spins a core
// nor writes a log line per failure.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// acceptLoop accepts connections on ln and hands each to serve in its own
// goroutine (counted in wg) until ctx ends.
func (s *Server) acceptLoop(ctx context.Context, ln net.Listener, wg *sync.WaitGroup, serve func(net.Conn)) {
	var delay time.Duration
	var logged rateLog
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.Counters.AcceptErrors.Add(1)
			if delay == 0 {
				delay = acceptBackoffMin
			} else {
				delay = min(2*delay, acceptBackoffMax)
			}
			if ok, n := logged.allow(); ok {
				s.log.Error("accept failed; backing off", "err", err, "retry-in", delay.String(), "not-logged", n)
			}
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return
			}
			continue
		}
		delay = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			serve(c)
		}()
	}
}
