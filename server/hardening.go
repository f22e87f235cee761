package server

// Issue #15: pre-authentication limits (auth-timeout, login-idle-timeout)
// and ocserv-style ban points for connections and malformed requests.

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"kvpn/auth"
	"kvpn/record"
)

// validateHardening checks the keys of issue #15.
func (c *Config) validateHardening(bad func(string, string, ...any)) {
	if c.AuthTimeout < 1 {
		bad("auth-timeout", "must be at least 1 second")
	}
	for _, k := range []struct {
		key string
		v   int
	}{
		{"login-idle-timeout", c.LoginIdleTimeout}, {"min-reauth-time", c.MinReauthTime},
		{"ban-points-connection", c.BanPointsConnection}, {"ban-points-malformed-request", c.BanPointsMalformedRequest},
	} {
		if k.v < 0 {
			bad(k.key, "must not be negative (0 disables)")
		}
	}
	if c.ScriptTimeout < 1 {
		bad("script-timeout", "must be at least 1 second")
	}
	for _, k := range []struct{ key, path string }{{"connect-script", c.ConnectScript}, {"disconnect-script", c.DisconnectScript}} {
		if k.path == "" {
			continue
		}
		if !filepath.IsAbs(k.path) {
			bad(k.key, "%q is not an absolute path", k.path)
			continue
		}
		fi, err := os.Stat(k.path)
		switch {
		case err != nil:
			bad(k.key, "%v", err)
		case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
			bad(k.key, "%s is not an executable file", k.path)
		}
	}
}

// authTimeout is auth-timeout: accept to CONNECT.
func (c *Config) authTimeout() time.Duration {
	if c.AuthTimeout <= 0 {
		return loginTimeout
	}
	return time.Duration(c.AuthTimeout) * time.Second
}

// loginIdle is login-idle-timeout, 0 when off.
func (c *Config) loginIdle() time.Duration { return time.Duration(c.LoginIdleTimeout) * time.Second }

// banConfig is what the ban table counts.
func (c *Config) banConfig() auth.BanConfig {
	return auth.BanConfig{
		MaxScore:         c.MaxBanScore,
		ResetTime:        time.Duration(c.BanResetTime) * time.Second,
		MinReauth:        time.Duration(c.MinReauthTime) * time.Second,
		WrongPassword:    c.BanPointsWrongPassword,
		Connection:       c.BanPointsConnection,
		MalformedRequest: c.BanPointsMalformedRequest,
	}
}

// preLogin is a connection's state before its tunnel is up: the
// auth-timeout deadline, and whether it logged in (or resumed a session).
type preLogin struct {
	deadline time.Time
	idle     time.Duration
	from     netip.Addr
	loggedIn atomic.Bool
}

type preLoginKey struct{}

func withPreLogin(ctx context.Context, pl *preLogin) context.Context {
	return context.WithValue(ctx, preLoginKey{}, pl)
}

func preLoginOf(ctx context.Context) *preLogin {
	pl, _ := ctx.Value(preLoginKey{}).(*preLogin)
	return pl
}

// startPreLogin sets conn's deadlines for the TLS handshake: auth-timeout
// in all, and login-idle-timeout until the handshake is done.
func (s *Server) startPreLogin(conn net.Conn, from netip.Addr) *preLogin {
	now := time.Now()
	pl := &preLogin{deadline: now.Add(s.cfg.authTimeout()), idle: s.cfg.loginIdle(), from: from}
	conn.SetWriteDeadline(pl.deadline)
	conn.SetReadDeadline(pl.readDeadline(now))
	return pl
}

// readDeadline is the deadline of the next read: the earlier of
// auth-timeout and login-idle-timeout from now.
func (pl *preLogin) readDeadline(now time.Time) time.Time {
	if pl.idle > 0 && now.Add(pl.idle).Before(pl.deadline) {
		return now.Add(pl.idle)
	}
	return pl.deadline
}

// nextRequest arms the read deadline for the next login request.
func (pl *preLogin) nextRequest(conn record.Conn) {
	if pl != nil {
		conn.SetReadDeadline(pl.readDeadline(time.Now()))
	}
}

// isTimeout reports whether err is a deadline that passed.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// preLoginTimedOut counts and logs a connection closed by auth-timeout or
// login-idle-timeout before it logged in; where is "TLS handshake" or
// "login".
func (s *Server) preLoginTimedOut(pl *preLogin, where string, log *slog.Logger) {
	if pl == nil {
		return
	}
	if !time.Now().Before(pl.deadline) {
		s.Counters.AuthTimeouts.Add(1)
		if ok, n := s.logAuthTimeout.allow(); ok {
			log.Warn("closing connection: auth-timeout reached before login", "during", where,
				"auth-timeout", s.cfg.authTimeout().String(), "not-logged", n)
		}
		return
	}
	s.Counters.LoginIdleTimeouts.Add(1)
	if ok, n := s.logIdleTimeout.allow(); ok {
		log.Warn("closing connection: idle before login (login-idle-timeout)", "during", where,
			"login-idle-timeout", s.cfg.loginIdle().String(), "not-logged", n)
	}
}

// connectionPoint adds the ban points of a connection that ended without
// logging in or resuming a session (ban-points-connection), logging the
// moment its address becomes banned. Charged at the end rather than at
// accept, so that many users logging in at once behind one NAT address
// cost nothing, while connections that never log in (scanners, floods of
// idle or half-open connections, evicted or timed out) add up.
func (s *Server) connectionPoint(pl *preLogin, log *slog.Logger) {
	if pl.loggedIn.Load() {
		return
	}
	if s.bans.Connection(pl.from) {
		log.Warn("address banned: ban score reached max-ban-score (connections)",
			"max-ban-score", s.cfg.MaxBanScore, "min-reauth-time", s.cfg.MinReauthTime)
	}
}

// loggedIn marks the connection of ctx as one that logged in or resumed
// a session: it costs no connection points.
func (s *Server) loggedIn(ctx context.Context) {
	if pl := preLoginOf(ctx); pl != nil {
		pl.loggedIn.Store(true)
	}
}

// badRequest counts a request that is not part of the protocol, with its
// ban points.
func (s *Server) badRequest(conn record.Conn, log *slog.Logger) {
	s.Counters.BadRequests.Add(1)
	s.malformedPoints(remoteAddr(conn), log)
}

// malformedPoints adds a malformed request's ban points to addr.
func (s *Server) malformedPoints(addr netip.Addr, log *slog.Logger) {
	if s.bans.Malformed(addr) {
		log.Warn("address banned: ban score reached max-ban-score (malformed requests)",
			"max-ban-score", s.cfg.MaxBanScore, "min-reauth-time", s.cfg.MinReauthTime)
	}
}
