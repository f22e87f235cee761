package server

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"kvpn/auth/otp"
	"kvpn/cstp"
)

// The one-time password second factor (otp-file; docs/authentication.md).
// As ocserv's plain auth with an otp file: once the password is right the
// server answers with a second form asking for the code in an input named
// secondary_password, which stock openconnect fills from its software
// token (--token-mode=totp --token-secret=...) without a prompt. The two
// steps are linked by a "webvpncontext" cookie (ocserv's name) naming the
// pending login, which is kept in memory for otpPendingTTL and may be
// answered once, from the same address; a wrong code starts the login
// over. A wrong code counts as a failed login for the throttle and the
// ban score, and the password step alone counts as neither.

const (
	otpContextCookie = "webvpncontext"
	otpPendingTTL    = 2 * time.Minute
	// otpPendingMax bounds the logins waiting for their code.
	otpPendingMax = 4096
	otpMessage    = "Please enter your one-time password."
	otpLabel      = "One-time password:"
)

// otpLogins is the server's second-factor state.
type otpLogins struct {
	once    sync.Once
	checker *otp.Checker // set by open, or a memory-only one on first use
	mu      sync.Mutex
	pending map[string]*pendingOTP
}

// pendingOTP is a login whose password was right, waiting for its code.
type pendingOTP struct {
	user, group string
	addr        netip.Addr
	leaf        *x509.Certificate
	expires     time.Time
}

// open reads the record of used codes from path ("" for memory only).
func (o *otpLogins) open(path string, log *slog.Logger) error {
	c, err := otp.NewChecker(path)
	if err != nil {
		return fmt.Errorf("otp-state-file: %w", err)
	}
	c.SaveError = func(err error) {
		log.Error("one-time password record not saved; a restart would forget the codes used since", "err", err)
	}
	o.once.Do(func() { o.checker = c })
	return nil
}

func (o *otpLogins) check() *otp.Checker {
	o.once.Do(func() { o.checker, _ = otp.NewChecker("") })
	return o.checker
}

// add records p and returns its context cookie value, or "" when too many
// logins are waiting.
func (o *otpLogins) add(p *pendingOTP) string {
	var b [16]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.pending == nil {
		o.pending = map[string]*pendingOTP{}
	}
	if len(o.pending) >= otpPendingMax {
		for k, q := range o.pending {
			if now.After(q.expires) {
				delete(o.pending, k)
			}
		}
		if len(o.pending) >= otpPendingMax {
			return ""
		}
	}
	o.pending[id] = p
	return id
}

// take removes and returns the pending login named id if it is still
// valid for a request from addr.
func (o *otpLogins) take(id string, addr netip.Addr) *pendingOTP {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.pending[id]
	if p == nil {
		return nil
	}
	delete(o.pending, id)
	if time.Now().After(p.expires) || p.addr != addr {
		return nil
	}
	return p
}

// otpRequired reports whether password logins need a one-time password.
func (s *Server) otpRequired() bool {
	set := s.currentSettings()
	return set != nil && set.OTP != nil && s.cfg.passwordAuth()
}

// askOTP answers a login whose password was right with the form asking
// for its code, and reports whether the connection may go on.
func (s *Server) askOTP(user, group string, addr netip.Addr, leaf *x509.Certificate, form func(string) []byte,
	xml func([]byte, http.Header) bool, log *slog.Logger) bool {
	if s.currentSettings().OTP.Token(user) == nil {
		// As ocserv (liboath: unknown user): no token, no login.
		s.Counters.LoginFailures.Add(1)
		log.Warn("login failed: user has no token in otp-file")
		return xml(form("Login failed."), nil)
	}
	id := s.otp.add(&pendingOTP{user: user, group: group, addr: addr, leaf: leaf, expires: time.Now().Add(otpPendingTTL)})
	if id == "" {
		s.Counters.LoginBusy.Add(1)
		log.Warn("login not finished: too many logins waiting for their one-time password", "max", otpPendingMax)
		return xml(form("Server busy, please try again."), nil)
	}
	log.Info("password accepted; asking for the one-time password")
	h := http.Header{}
	h.Set("Set-Cookie", otpContextCookie+"="+id+"; Secure")
	f := &cstp.LoginForm{ID: "otp", Message: otpMessage, Secondary: otpLabel}
	return xml(f.Render(), h)
}

// otpStep handles the answer to askOTP's form. step2 is false when msg is
// not one (the login goes on as a first step). Otherwise p is the login
// whose code was right, or nil when it was refused: the answer was then
// written and cont says whether the connection may go on.
func (s *Server) otpStep(req *http.Request, msg *cstp.ClientMessage, addr netip.Addr, form func(string) []byte,
	xml func([]byte, http.Header) bool, log *slog.Logger) (p *pendingOTP, step2, cont bool) {
	code, ok := msg.Fields[cstp.SecondaryPasswordField]
	if !ok || msg.Password != "" || !s.otpRequired() {
		return nil, false, false // not an OTP step (a RADIUS challenge's answer uses the same field)
	}
	if ck, err := req.Cookie(otpContextCookie); err == nil {
		p = s.otp.take(ck.Value, addr)
	}
	if p == nil {
		log.Info("login failed: one-time password for no pending login (expired, used, or from another address)")
		return nil, true, xml(form("Login failed: the login timed out; please log in again."), nil)
	}
	log = log.With("user", logUser(p.user))
	wctx, cancel := context.WithTimeout(context.Background(), loginWait)
	defer cancel()
	if why := s.throttleWait(wctx, p.user, addr, log); why != "" {
		return nil, true, xml(form(why), nil)
	}
	err := s.otp.check().Check(s.currentSettings().OTP.Token(p.user), code)
	if err != nil {
		s.loginFailed(p.user, addr, log)
		why := "wrong one-time password"
		if errors.Is(err, otp.ErrReplayed) {
			why = "one-time password already used (replay)"
		}
		if ok, n := s.logFailed.allow(); ok {
			log.Warn("login failed: "+why, "not-logged", n)
		}
		return nil, true, xml(form("Login failed."), nil)
	}
	s.throttle.Succeed(p.user, addr)
	return p, true, true
}
