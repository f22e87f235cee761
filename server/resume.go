package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
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

// errUserChanged refuses a cookie whose user's password-file entry
// changed (new password, locked, deleted) since the login it carries.
var errUserChanged = errors.New("user's password-file entry changed, or the user was locked or deleted, since the login")

// errSessionTimeout refuses a cookie whose login is session-timeout ago.
var errSessionTimeout = errors.New("session-timeout since the login has passed; log in again")

// errRevoked refuses a cookie whose session was logged out or ended here.
var errRevoked = errors.New("session was logged out or ended on this node")

// revokedFileName is the file, beside the cookie key file, that keeps the
// sessions revoked on this node across restarts (auth.LoadRevoked).
const revokedFileName = "revoked-sessions"

// revokedFile is where the revoked sessions are kept.
func (s *Server) revokedFile() string {
	return filepath.Join(filepath.Dir(s.cfg.CookieKeyFile), revokedFileName)
}

// loadTickets reads (or creates) the cookie key file, loads the sessions
// revoked before a restart and sets the node's name.
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
	// A logout must outlive a restart: without the file, a restarted node
	// would resume a logged-out cookie until it expired.
	if s.revoked, err = auth.LoadRevoked(s.revokedFile(), time.Now()); err != nil {
		return err
	}
	if n := s.revoked.Len(); n > 0 {
		s.log.Info("loaded revoked sessions", "file", s.revokedFile(), "sessions", n)
	}
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
	return s.cfg.cookieTimeout() + 2*s.refreshInterval() + s.cfg.authTimeout()
}

// sealTicket issues a cookie for sess, carrying its current address.
func (s *Server) sealTicket(sess *Session) (string, error) {
	now := time.Now()
	sess.mu.Lock()
	t := &auth.Ticket{Session: sess.cookie, User: sess.user, Node: s.node,
		Issued: now, Expires: now.Add(s.ticketLifetime()), Addr4: sess.addr, Addr6: sess.addr6,
		Login: sess.login, Gen: sess.gen, Cert: sess.cert, Group: sess.group}
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

// openTicket opens cookie text and checks that its session may go on:
// within session-timeout of its login and the user's password-file entry
// unchanged (whichever node holds it), and, when this node does not hold
// the session, not expired and not revoked here. sess is the session
// held in memory, or nil. A held session that fails the session checks
// is ended here, as the sweep or a reload would end it. certUser is the
// user of the connection's verified client certificate ("" for none): a
// cookie of a certificate login needs that user's certificate.
func (s *Server) openTicket(text, certUser string) (t *auth.Ticket, sess *Session, err error) {
	t, err = s.tickets.OpenTicket(text)
	if err != nil {
		return nil, nil, err
	}
	if err := s.checkCertCookie(t.Cert, t.User, certUser); err != nil {
		return nil, nil, err
	}
	if sess, ok := s.cookies.Lookup(t.Session); ok {
		if sess.user != t.User {
			return nil, nil, fmt.Errorf("cookie names user %q, session belongs to %q", t.User, sess.user)
		}
		if err := s.checkLimits(t); err != nil {
			sess.terminate(err.Error())
			return nil, nil, err
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
	if err := s.checkLimits(t); err != nil {
		return nil, nil, err
	}
	return t, nil, nil
}

// checkLimits refuses a ticket past session-timeout from its login, or
// whose user is gone, locked or changed in the password file (each
// counted: a stolen cookie being replayed shows in the counters).
func (s *Server) checkLimits(t *auth.Ticket) error {
	if s.pastSessionTimeout(t.Login, time.Now()) {
		s.Counters.SessionTimeouts.Add(1)
		return fmt.Errorf("%w (login %s, session-timeout %s)", errSessionTimeout,
			t.Login.UTC().Format(time.RFC3339), s.cfg.sessionTimeout())
	}
	if !s.cfg.passwordAuth() {
		// Certificate only: the password file is not consulted; a
		// revoked certificate cannot reconnect (checkCertCookie, CRL).
		return nil
	}
	gen, ok := s.currentSettings().Passwd.Generation(t.User)
	if !ok {
		s.Counters.UserChanged.Add(1)
		return errUserGone
	}
	if gen != t.Gen {
		s.Counters.UserChanged.Add(1)
		return errUserChanged
	}
	return nil
}

// pastSessionTimeout reports whether a session that logged in at login
// has reached session-timeout by now (never when it is 0, unlimited).
func (s *Server) pastSessionTimeout(login, now time.Time) bool {
	st := s.cfg.sessionTimeout()
	return st > 0 && !now.Before(login.Add(st))
}

// sessionFor finds or resumes the session a CONNECT's cookie names, and
// returns the addresses to ask the pools for if the session has none yet:
// the ones its ticket says it held (the pool honours them only when they
// are inside this node's pool and free). The client's X-CSTP-Address and
// X-CSTP-Address-IP6 are honoured only when they are those same
// addresses: a first CONNECT must not let a client pick any free address
// (it could take the one another user's session is about to reconnect to,
// or one that some filter downstream trusts).
func (s *Server) sessionFor(creq *cstp.ConnectRequest, from netip.Addr, certUser string, log *slog.Logger) (*Session, netip.Addr, netip.Prefix, error) {
	t, sess, err := s.openTicket(creq.Cookie, certUser)
	if err != nil {
		return nil, netip.Addr{}, netip.Prefix{}, err
	}
	want, want6 := wantedAddrs(creq, t, log)
	if sess != nil {
		return sess, want, want6, nil
	}
	// Two CONNECTs with one cookie (a client retrying quickly) must not
	// both create the session.
	s.resumeMu.Lock()
	defer s.resumeMu.Unlock()
	if sess, ok := s.cookies.Lookup(t.Session); ok {
		return sess, want, want6, nil
	}
	s.admitMu.Lock()
	if err := s.admitSession(t.User); err != nil {
		s.admitMu.Unlock()
		return nil, netip.Addr{}, netip.Prefix{}, err
	}
	sess = s.newSessionIn(t.User, t.Group, from)
	s.admitMu.Unlock()
	sess.cookie = t.Session
	sess.ticketExpires = t.Expires
	sess.login, sess.gen, sess.cert = t.Login, t.Gen, t.Cert
	if !s.cookies.Insert(t.Session, sess, s.cfg.cookieTimeout()+s.cfg.authTimeout()) {
		sess.end("resume raced") // cannot happen under resumeMu
		return nil, netip.Addr{}, netip.Prefix{}, errors.New("session appeared twice")
	}
	log.Info("session resumed from cookie", "user", t.User, "session", sess.id, "issued-by", t.Node,
		"issued", t.Issued.UTC().Format(time.RFC3339), "cookie-address", t.Addr4.String(), "requested-address", creq.PrevAddress.String())
	return sess, want, want6, nil
}

// wantedAddrs are the addresses a CONNECT may keep: the ticket's own.
func wantedAddrs(creq *cstp.ConnectRequest, t *auth.Ticket, log *slog.Logger) (netip.Addr, netip.Prefix) {
	want := t.Addr4
	if creq.PrevAddress.IsValid() && creq.PrevAddress != t.Addr4 {
		log.Debug("ignoring X-CSTP-Address: not an address this session held",
			"requested-address", creq.PrevAddress.String(), "cookie-address", t.Addr4.String())
	}
	var want6 netip.Prefix
	if t.Addr6.IsValid() {
		want6 = netip.PrefixFrom(t.Addr6, 128)
	}
	if p := creq.PrevAddressIP6; p.IsValid() && p.Addr() != t.Addr6 {
		log.Debug("ignoring X-CSTP-Address-IP6: not an address this session held",
			"requested-address6", p.String(), "cookie-address6", t.Addr6.String())
	}
	return want, want6
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
	if err := s.revoked.Add(sess.cookie, until); err != nil {
		s.log.Error("saving revoked sessions; the revocation holds until this node restarts", "file", s.revokedFile(), "err", err)
	}
}

// ticketOf opens the webvpn cookie of a request (login or refresh), with
// the same checks as a CONNECT.
func (s *Server) ticketOf(req *http.Request, certUser string) (*auth.Ticket, *Session, error) {
	ck, err := req.Cookie("webvpn")
	if err != nil {
		return nil, nil, errors.New("no webvpn cookie")
	}
	return s.openTicket(ck.Value, certUser)
}

// handleRefresh answers POST CookieRefreshPath: a valid cookie gets a
// fresh one with a new expiry (and this node's name). Any node can answer,
// whichever one holds the tunnel. It reports whether the connection may
// go on.
func (s *Server) handleRefresh(conn record.Conn, req *http.Request, log *slog.Logger) bool {
	io.Copy(io.Discard, io.LimitReader(req.Body, maxBody))
	certUser, _ := s.certUserOf(conn)
	t, sess, err := s.ticketOf(req, certUser)
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
