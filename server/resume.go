package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"time"

	"kvpn/auth"
	"kvpn/cstp"
	"kvpn/record"
)

// Session cookies are sealed tickets (auth.Ticket): the user, the session's
// identity, the issuing node, issue and expiry times and the tunnel address
// last held, encrypted and authenticated with the key in cookie-key-file.
// A node that holds the session in memory finds it by the identity, as
// before. A node that does not — it restarted, or another node issued the
// cookie — resumes the session from the ticket alone: the cookie is the
// state, and the state directory (or the shared key file) holds the key.
//
// A ticket is valid for ticketLifetime from its issue. vpnc exchanges its
// ticket for a fresh one every refreshInterval while its tunnel is up, so
// after the connection is lost its cookie stays valid for at least
// cookie-timeout, wherever the client reconnects. Clients that do not
// refresh (stock openconnect) can resume on another node only within
// ticketLifetime of their login or last CONNECT.

// errUserGone refuses a resume for an account that was deleted or locked
// since the cookie was issued.
var errUserGone = errors.New("user no longer exists or is locked")

// errRevoked refuses a cookie whose session was logged out or ended here.
var errRevoked = errors.New("session was logged out or ended on this node")

// loadTickets reads (or creates) the cookie key file and sets the node's
// name.
func (s *Server) loadTickets() error {
	keys, created, err := auth.LoadOrCreateTicketKeys(s.cfg.CookieKeyFile)
	if err != nil {
		return err
	}
	if created {
		s.log.Info("created cookie key; share this file with every node that should resume this node's sessions",
			"cookie-key-file", s.cfg.CookieKeyFile)
	}
	s.tickets = keys
	s.revoked = auth.NewRevoked()
	s.node = s.cfg.NodeName
	if s.node == "" {
		s.node, _ = os.Hostname()
		if len(s.node) > 255 {
			s.node = s.node[:255]
		}
	}
	return nil
}

// refreshInterval is how often vpnc fetches a fresh cookie.
func (s *Server) refreshInterval() time.Duration {
	return max(s.cfg.cookieTimeout()/2, 10*time.Second)
}

// ticketLifetime is how long a ticket is valid after its issue: the
// session's cookie-timeout, plus two refresh periods of slack so that one
// failed refresh does not cut the reconnect window short.
func (s *Server) ticketLifetime() time.Duration {
	return s.cfg.cookieTimeout() + 2*s.refreshInterval() + loginTimeout
}

// sealTicket issues a cookie for sess, carrying its current address.
func (s *Server) sealTicket(sess *Session) (string, error) {
	now := time.Now()
	sess.mu.Lock()
	t := &auth.Ticket{Session: sess.cookie, User: sess.user, Node: s.node,
		Issued: now, Expires: now.Add(s.ticketLifetime()), Addr4: sess.addr}
	sess.mu.Unlock()
	return s.seal(sess, t)
}

// seal seals t with fresh times and remembers, for sess (if any), the
// latest expiry handed out: a revocation must outlast every cookie.
func (s *Server) seal(sess *Session, t *auth.Ticket) (string, error) {
	now := time.Now()
	t.Node, t.Issued, t.Expires = s.node, now.Truncate(time.Second), now.Add(s.ticketLifetime()).Truncate(time.Second)
	text, err := s.tickets.Seal(t)
	if err != nil {
		return "", err
	}
	if sess != nil {
		sess.mu.Lock()
		if t.Expires.After(sess.ticketExpires) {
			sess.ticketExpires = t.Expires
		}
		sess.mu.Unlock()
	}
	return text, nil
}

// openTicket opens cookie text and, when this node does not hold the
// session, checks that it may be resumed: not expired, not revoked here,
// and the user still active. sess is the session held in memory, or nil.
func (s *Server) openTicket(text string) (t *auth.Ticket, sess *Session, err error) {
	t, err = s.tickets.OpenTicket(text)
	if err != nil {
		return nil, nil, err
	}
	if sess, ok := s.cookies.Lookup(t.Session); ok {
		if sess.user != t.User {
			return nil, nil, fmt.Errorf("cookie names user %q, session belongs to %q", t.User, sess.user)
		}
		return t, sess, nil
	}
	if old, ok := s.cookies.Expired(t.Session); ok {
		// cookie-timeout passed while the client was away and the sweep
		// has not come round yet: end it now, as the sweep would have
		// (which also refuses the cookie below), rather than leave it
		// holding its address beside a resumed copy.
		old.end("cookie expired")
	}
	if s.revoked.Has(t.Session) {
		return nil, nil, errRevoked
	}
	if err := t.Check(time.Now()); err != nil {
		return nil, nil, fmt.Errorf("%w (issued by node %q at %s, expired %s)", err, t.Node,
			t.Issued.UTC().Format(time.RFC3339), t.Expires.UTC().Format(time.RFC3339))
	}
	if !s.currentSettings().Passwd.Active(t.User) {
		return nil, nil, errUserGone
	}
	return t, nil, nil
}

// sessionFor finds or resumes the session a CONNECT's cookie names, and
// returns the address to ask the pool for if the session has none yet:
// the client's X-CSTP-Address, else the address in the cookie (the pool
// honours it only when it is inside this node's pool and free).
func (s *Server) sessionFor(creq *cstp.ConnectRequest, from netip.Addr, log *slog.Logger) (*Session, netip.Addr, error) {
	t, sess, err := s.openTicket(creq.Cookie)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	want := creq.PrevAddress
	if !want.IsValid() {
		want = t.Addr4
	}
	if sess != nil {
		return sess, want, nil
	}
	// Two CONNECTs with one cookie (a client retrying quickly) must not
	// both create the session.
	s.resumeMu.Lock()
	defer s.resumeMu.Unlock()
	if sess, ok := s.cookies.Lookup(t.Session); ok {
		return sess, want, nil
	}
	s.admitMu.Lock()
	if err := s.admitSession(t.User); err != nil {
		s.admitMu.Unlock()
		return nil, netip.Addr{}, err
	}
	sess = s.newSession(t.User, from)
	s.admitMu.Unlock()
	sess.cookie = t.Session
	sess.ticketExpires = t.Expires
	if !s.cookies.Insert(t.Session, sess, s.cfg.cookieTimeout()+loginTimeout) {
		sess.end("resume raced") // cannot happen under resumeMu
		return nil, netip.Addr{}, errors.New("session appeared twice")
	}
	log.Info("session resumed from cookie", "user", t.User, "session", sess.id, "issued-by", t.Node,
		"issued", t.Issued.UTC().Format(time.RFC3339), "cookie-address", t.Addr4.String(), "requested-address", creq.PrevAddress.String())
	return sess, want, nil
}

// revokeSession keeps sess's identity from being resumed on this node for
// as long as any cookie naming it is valid.
func (s *Server) revokeSession(sess *Session) {
	sess.mu.Lock()
	until := sess.ticketExpires
	sess.mu.Unlock()
	// Another node may have refreshed the cookie since this node last
	// sealed it; no cookie sealed before now, by any node, outlives now +
	// the ticket lifetime.
	if latest := time.Now().Add(s.ticketLifetime()); latest.After(until) {
		until = latest
	}
	s.revoked.Add(sess.cookie, until)
}

// ticketOf opens the webvpn cookie of a request (login or refresh), with
// the same checks as a CONNECT.
func (s *Server) ticketOf(req *http.Request) (*auth.Ticket, *Session, error) {
	ck, err := req.Cookie("webvpn")
	if err != nil {
		return nil, nil, errors.New("no webvpn cookie")
	}
	return s.openTicket(ck.Value)
}

// handleRefresh answers POST CookieRefreshPath: a valid cookie gets a
// fresh one with a new expiry (and this node's name). Any node can answer,
// whichever one holds the tunnel. It reports whether the connection may
// go on.
func (s *Server) handleRefresh(conn record.Conn, req *http.Request, log *slog.Logger) bool {
	io.Copy(io.Discard, io.LimitReader(req.Body, maxBody))
	t, sess, err := s.ticketOf(req)
	if err != nil {
		log.Info("cookie refresh refused", "err", err)
		writeResponse(conn, http.StatusUnauthorized, "", nil, nil)
		return false
	}
	var text string
	if sess != nil {
		text, err = s.sealTicket(sess)
	} else {
		text, err = s.seal(nil, t)
	}
	if err != nil {
		log.Error("sealing cookie", "err", err)
		writeResponse(conn, http.StatusInternalServerError, "", nil, nil)
		return false
	}
	log.Debug("cookie refreshed", "user", t.User, "held-here", sess != nil)
	h := http.Header{}
	h.Set("Set-Cookie", "webvpn="+text+"; Secure")
	h.Set(cstp.HeaderCookieRefresh, strconv.Itoa(int(s.refreshInterval()/time.Second)))
	return writeResponse(conn, http.StatusOK, "", nil, h) == nil
}
