package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"kvpn/auth"
	"kvpn/cstp"
	"kvpn/radius"
	"kvpn/record"
)

// The login exchange: the XML auth forms (password, one-time password,
// group choice, client certificate) and the password checks.

// handleAuth answers a login POST. It reports whether the connection may
// go on.
func (s *Server) handleAuth(ctx context.Context, conn record.Conn, req *http.Request, log *slog.Logger) bool {
	body, err := io.ReadAll(io.LimitReader(req.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		s.badRequest(conn, log)
		log.Info("closing connection: login body unreadable or too large", "err", err, "bytes", len(body))
		writeResponse(conn, http.StatusRequestEntityTooLarge, "", nil, nil)
		return false
	}
	msg, err := cstp.ParseClientMessage(req.Header.Get("Content-Type"), body)
	if err != nil {
		s.badRequest(conn, log)
		log.Info("closing connection: bad login message", "err", err)
		writeResponse(conn, http.StatusBadRequest, "", nil, nil)
		return false
	}
	xml := func(doc []byte, extra http.Header) bool {
		if cstp.IsKvpnAgent(req.UserAgent()) {
			if extra == nil {
				extra = http.Header{}
			}
			extra.Set(cstp.HeaderExtensions, cstp.ExtList)
		}
		return writeResponse(conn, http.StatusOK, "text/xml; charset=utf-8", doc, extra) == nil
	}
	const prompt = "Please enter your username and password."
	certUser, leaf := s.certUserOf(conn)
	switch msg.Type {
	case "init":
		if s.cfg.certAuth() {
			if certUser == "" {
				return s.refuseNoCert(xml, log)
			}
			if !s.cfg.askPassword() {
				break // certificate only: the certificate is the login
			}
			return xml(s.passwordForm(passwordPrompt(certUser), "", false, msg.GroupSelect), nil)
		}
		return xml(s.passwordForm(prompt, "", true, msg.GroupSelect), nil)
	case "logout":
		if t, sess, err := s.ticketOf(req, certUser); err == nil {
			if sess != nil {
				sess.end("logout")
			}
			// Also when another node holds the session: it cannot be
			// resumed here any more (other nodes learn nothing of it).
			s.revoked.Add(t.Session, t.Expires)
		}
		return xml(cstp.AuthComplete("Logged out."), nil)
	case "auth-reply":
	default:
		s.badRequest(conn, log)
		log.Info("closing connection: unexpected login message type", "type", msg.Type)
		writeResponse(conn, http.StatusBadRequest, "", nil, nil)
		return false
	}
	user := msg.Username
	form := func(errMsg string) []byte { return s.passwordForm(prompt, errMsg, true, msg.GroupSelect) }
	if s.cfg.certAuth() {
		if certUser == "" {
			return s.refuseNoCert(xml, log)
		}
		// The certificate names the user; a username in the form is
		// ignored.
		user = certUser
		pp := passwordPrompt(certUser)
		form = func(errMsg string) []byte { return s.passwordForm(pp, errMsg, false, msg.GroupSelect) }
	}
	addr := remoteAddr(conn)
	log = log.With("user", logUser(user))
	if banned, left := s.bans.Banned(addr); banned {
		// Also checked before the TLS handshake; this is a connection
		// opened before the ban.
		s.Counters.LoginBanned.Add(1)
		if ok, n := s.logBanned.allow(); ok {
			log.Warn("login refused: address banned (max-ban-score)", "retry-after", left.Round(time.Second).String(), "not-logged", n)
		}
		xml(form("Too many failed logins from your address; try again later."), nil)
		return false
	}
	// Second step: the one-time password (otp.go).
	pend, step2, cont := s.otpStep(req, msg, addr, form, xml, log)
	if step2 && pend == nil {
		return cont
	}
	group := ""
	if step2 {
		user, group, leaf = pend.user, pend.group, pend.leaf
		log = log.With("user", logUser(user))
	}
	if !step2 && s.cfg.passwordAuth() {
		if ok, cont := s.checkPassword(user, msg.Password, addr, form, xml, log); !ok {
			return cont
		}
	}
	var radSet *radius.Settings // RADIUS (radius.go)
	if !step2 && s.rad != nil {
		var ok, cont bool
		if user, radSet, ok, cont = s.radiusAuth(req, msg, user, addr, form, xml, log); !ok {
			return cont
		}
	}
	if !step2 {
		// Groups (groups.go), then the second factor if required.
		set := s.currentSettings()
		groups := s.userGroups(set, user, leaf)
		if radSet != nil {
			groups = append(groups, radSet.Groups...) // RADIUS Class OU=
		}
		g, err := loginGroup(set, msg.GroupSelect, groups)
		if err != nil {
			s.Counters.LoginFailures.Add(1)
			log.Warn("login refused: group not allowed", "err", err)
			return xml(form("Login failed: "+err.Error()+"."), nil)
		}
		group = g
		if s.otpRequired() {
			return s.askOTP(user, group, addr, leaf, form, xml, log)
		}
	}
	s.admitMu.Lock()
	if err := s.admitSession(user); err != nil {
		s.admitMu.Unlock()
		s.Counters.SessionLimit.Add(1)
		if ok, n := s.logSessionLimit.allow(); ok {
			log.Warn("login refused: session limit", "err", err, "not-logged", n)
		}
		return xml(form("Login refused: "+err.Error()+"."), nil)
	}
	s.Counters.Logins.Add(1)
	s.loggedIn(ctx)
	sess := s.newSessionIn(user, group, addr)
	s.admitMu.Unlock()
	if leaf != nil {
		sess.mu.Lock()
		sess.cert, sess.certLeaf = true, leaf
		sess.mu.Unlock()
	}
	cookie, err := s.cookies.Issue(sess, s.cfg.cookieTimeout()+s.cfg.authTimeout())
	if err != nil {
		log.Error("issuing cookie", "err", err)
		return false
	}
	sess.cookie = cookie
	if radSet != nil { // RADIUS (radius.go)
		if ok, cont := s.radiusAdmit(sess, radSet, xml, form, log); !ok {
			return cont
		}
	}
	s.reserveAddress(sess, log)
	ticket, err := s.sealTicket(sess)
	if err != nil {
		log.Error("sealing cookie", "err", err)
		sess.end("no cookie")
		return false
	}
	if leaf != nil {
		log.Info("login succeeded", "session", sess.id, "auth", strings.Join(s.cfg.authNames(), "+"),
			"cert-serial", leaf.SerialNumber.Text(16))
	} else {
		log.Info("login succeeded", "session", sess.id, "group", group)
	}
	h := http.Header{}
	h.Set("Set-Cookie", "webvpn="+ticket+"; Secure")
	return xml(cstp.AuthComplete("Success"), h)
}

// passwordPrompt is the login form's message when the certificate names
// the user and a password is also required.
func passwordPrompt(user string) string {
	return "Certificate accepted for " + user + ". Please enter your password."
}

// refuseNoCert answers a login without a valid client certificate where
// one is required, and closes the connection.
func (s *Server) refuseNoCert(xml func([]byte, http.Header) bool, log *slog.Logger) bool {
	s.Counters.CertMissing.Add(1)
	if ok, n := s.logCertRefused.allow(); ok {
		log.Warn("login refused: no client certificate (auth includes certificate)", "not-logged", n)
	}
	xml(cstp.AuthForm("A client certificate is required.", "Login failed: no client certificate.", false, false), nil)
	return false
}

// checkPassword runs the throttle and the password check of a login. ok
// reports a correct password; otherwise the answer was written and cont
// says whether the connection may go on.
func (s *Server) checkPassword(user, password string, addr netip.Addr, form func(string) []byte,
	xml func([]byte, http.Header) bool, log *slog.Logger) (ok, cont bool) {
	wctx, cancel := context.WithTimeout(context.Background(), loginWait)
	defer cancel()
	if why := s.throttleWait(wctx, user, addr, log); why != "" {
		return false, xml(form(why), nil)
	}
	// From here the attempt is in flight for the throttle until Fail,
	// Succeed or Abandon.
	if auth.CredentialsTooLong(user, password) {
		s.loginFailed(user, addr, log)
		s.Counters.CredentialsTooLong.Add(1)
		if ok, n := s.logFailed.allow(); ok {
			log.Warn("login failed: username or password too long, not checked",
				"username-bytes", len(user), "password-bytes", len(password),
				"max-username", auth.MaxUsernameLen, "max-password", auth.MaxPasswordLen, "not-logged", n)
		}
		return false, xml(form(fmt.Sprintf("Login failed: username or password too long (at most %d and %d bytes).",
			auth.MaxUsernameLen, auth.MaxPasswordLen)), nil)
	}
	var good bool
	if err := s.verifyPool.Do(wctx, func() { good = s.verify(user, password) }); err != nil {
		// The server's load, not the client's fault: no failure counted.
		s.throttle.Abandon(user, addr)
		s.Counters.LoginBusy.Add(1)
		if ok, n := s.logBusy.allow(); ok {
			log.Warn("login not checked: password verification queue full", "err", err,
				"workers", s.verifyPool.Size(), "not-logged", n)
		}
		return false, xml(form("Server busy, please try again."), nil)
	}
	if user == "" || !good {
		s.loginFailed(user, addr, log)
		if ok, n := s.logFailed.allow(); ok {
			log.Warn("login failed: wrong username or password", "not-logged", n)
		}
		return false, xml(form("Login failed."), nil)
	}
	if s.otpRequired() {
		// Only half a login: the code's step resolves the throttle.
		s.throttle.Abandon(user, addr)
	} else {
		s.throttle.Succeed(user, addr)
	}
	return true, false
}
