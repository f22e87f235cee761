package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"kvpn/auth"
	"kvpn/cstp"
	"kvpn/netcfg"
	"kvpn/radius"
)

// RADIUS (auth = "radius", docs/authentication.md). The password of a
// login goes to the RADIUS servers of the [radius] table instead of the
// password file. An Access-Challenge (a one-time code, say) becomes a
// second login form, linked to the first by a webvpncontext cookie as
// ocserv links its login steps. An Access-Accept's attributes become the
// session's settings: Framed-IP-Address its tunnel address (refused when
// outside the pool or in use), Framed-Route and Framed-IPv6-Prefix its
// iroutes, Class echoed in accounting and read for a group,
// Session-Timeout and Idle-Timeout its limits. Accounting Start goes out
// when the tunnel is up, Interim-Updates at the configured interval, and
// Stop with the cause when the session ends.

// validateRadius checks the [radius] table against auth.
func (c *Config) validateRadius(bad func(string, string, ...any)) {
	c.radius = nil
	switch {
	case c.authRadius && c.authPlain:
		bad("auth", "%q and %q both check the password: use one", AuthPlain, AuthRadius)
	case c.authRadius && c.Radius == nil:
		bad("radius", "auth = %q needs a [radius] table with the servers and the secret-file", AuthRadius)
	case !c.authRadius && c.Radius != nil:
		bad("radius", "a [radius] table is used only with auth = %q", AuthRadius)
	case c.authRadius:
		c.radius = c.Radius.Parse(c.NodeName, bad)
	}
}

// radiusState is the server's RADIUS client, accounting sender and the
// challenges waiting for their answer.
type radiusState struct {
	client *radius.Client
	acct   *radius.Accounting // nil with accounting = false

	mu      sync.Mutex
	pending map[string]*radiusChallenge
	// routes are the RADIUS iroutes of live sessions, for overlap checks.
	routes map[netip.Prefix]*Session

	// Logins refused for an Access-Accept the server cannot apply:
	// Framed-IP-Address outside the pool or in use, a route that
	// overlaps another's or the pool.
	framedIPRefused, routeRefused atomic.Uint64
	challengeExpired              atomic.Uint64
	logRefused, logUnreachable    rateLog
}

// radiusChallenge is an Access-Challenge waiting for the user's answer.
type radiusChallenge struct {
	user    string
	state   []byte
	from    netip.Addr
	expires time.Time
}

// Challenge bounds: how long an answer may take, and how many may wait.
const (
	challengeTimeout = 3 * time.Minute
	maxChallenges    = 4096
	// radiusContextCookie links a challenge's form to its Access-Challenge
	// (ocserv's name for the cookie that links its login steps).
	radiusContextCookie = "webvpncontext"
	// ChallengeField is the challenge form's input (ocserv's name).
	ChallengeField = "secondary_password"
	// acctFlushTimeout bounds sending the Stop records at shutdown.
	acctFlushTimeout = 5 * time.Second
)

// newRadiusState starts the RADIUS client (nil without auth = "radius").
func newRadiusState(cfg *Config, log *slog.Logger) *radiusState {
	if cfg.radius == nil {
		return nil
	}
	r := &radiusState{
		client:  radius.NewClient(cfg.radius, log),
		pending: map[string]*radiusChallenge{},
		routes:  map[netip.Prefix]*Session{},
	}
	if cfg.radius.Accounting {
		r.acct = radius.NewAccounting(r.client)
	}
	return r
}

// sessRadius is what a RADIUS session keeps: its Access-Accept's settings
// (nil for a session resumed from a cookie on a node that did not log it
// in) and its accounting.
type sessRadius struct {
	set *radius.Settings

	mu       sync.Mutex
	acct     *radius.AcctSession
	kroutes  map[netip.Prefix]*netcfg.Changes // kernel routes for its iroutes
	active   time.Time                        // last time its counters moved
	lastPkts uint64
}

// radiusSettings is the session's Access-Accept settings, nil if none.
func (sess *Session) radiusSettings() *radius.Settings {
	if r := sess.rad.Load(); r != nil {
		return r.set
	}
	return nil
}

// RadiusGroups are the groups RADIUS gave the session (Class "OU=name;"),
// for the group settings.
func (sess *Session) RadiusGroups() []string {
	if set := sess.radiusSettings(); set != nil {
		return set.Groups
	}
	return nil
}

// radiusIP is the session's Framed-IP-Address, invalid if none.
func (sess *Session) radiusIP() netip.Addr {
	if set := sess.radiusSettings(); set != nil {
		return set.FramedIP
	}
	return netip.Addr{}
}

// policyIn is the session's policy under p: its user's settings in its
// group (groups.go), with the networks RADIUS gave it (radiusPolicy).
func (sess *Session) policyIn(p *policy) *userPolicy {
	return sess.radiusPolicy(p.userIn(sess.user, sess.group))
}

// radiusPolicy is u with the session's RADIUS iroutes in place of the
// configured ones (u itself for a session without any).
func (sess *Session) radiusPolicy(u *userPolicy) *userPolicy {
	set := sess.radiusSettings()
	if set == nil || len(set.Routes) == 0 || u == nil {
		return u
	}
	nu := *u
	nu.name = sess.user
	nu.iroutes = set.Routes
	nu.routes = nil
	for _, p := range u.routes {
		if _, in := insideAny(p, set.Routes); !in {
			nu.routes = append(nu.routes, p)
		}
	}
	if len(nu.routes) == 0 {
		nu.routes = u.routes // never turn a split tunnel into a full one
	}
	return &nu
}

// radiusAuth checks a login's password (or its answer to a challenge)
// with the RADIUS servers, with the throttle of a password login. ok
// reports an Access-Accept, with the user (from the challenge when this
// answers one) and the settings; otherwise the answer was written and
// cont says whether the connection may go on.
func (s *Server) radiusAuth(req *http.Request, msg *cstp.ClientMessage, user string, addr netip.Addr,
	form func(string) []byte, xml func([]byte, http.Header) bool, log *slog.Logger) (_ string, _ *radius.Settings, ok, cont bool) {
	r := s.rad
	password := msg.Password
	var state []byte
	if ck, err := req.Cookie(radiusContextCookie); err == nil {
		if ch := r.takeChallenge(ck.Value, addr); ch != nil {
			user, state, password = ch.user, ch.state, msg.Fields[ChallengeField]
			log = log.With("user", logUser(user))
		}
	}
	if state == nil && msg.Password == "" && msg.Fields[ChallengeField] != "" {
		r.challengeExpired.Add(1)
		log.Info("login refused: answer to a RADIUS challenge that expired or is unknown")
		return "", nil, false, xml(form("Login failed: the second step took too long; please log in again."), nil)
	}
	wctx, cancel := context.WithTimeout(context.Background(), loginWait)
	defer cancel()
	if why := s.throttleWait(wctx, user, addr, log); why != "" {
		return "", nil, false, xml(form(why), nil)
	}
	if auth.CredentialsTooLong(user, password) || user == "" {
		s.loginFailed(user, addr, log)
		if ok, n := s.logFailed.allow(); ok {
			log.Warn("login failed: username empty or credentials too long, not sent to RADIUS",
				"username-bytes", len(user), "password-bytes", len(password), "not-logged", n)
		}
		return "", nil, false, xml(form("Login failed."), nil)
	}
	res, err := r.client.Authenticate(wctx, radius.Request{User: user, Password: password, State: state,
		CallingStationID: radius.CallingStationID(addr)})
	var ae *radius.AttrError
	switch {
	case errors.As(err, &ae):
		// The server's configuration, not the client's fault.
		s.throttle.Abandon(user, addr)
		log.Error("login refused: the RADIUS answer cannot be applied", "err", err)
		return "", nil, false, xml(form("Login refused: the authentication server's answer cannot be applied."), nil)
	case err != nil:
		s.throttle.Abandon(user, addr)
		if ok, n := r.logUnreachable.allow(); ok {
			log.Error("login failed: no RADIUS server answered", "err", err, "not-logged", n)
		}
		return "", nil, false, xml(form("Login failed: the authentication server is unreachable; try again later."), nil)
	}
	switch res.Outcome {
	case radius.Challenge:
		s.throttle.Abandon(user, addr)
		token, err := r.addChallenge(user, res.State, addr)
		if err != nil {
			log.Error("RADIUS challenge not kept", "err", err)
			return "", nil, false, xml(form("Server busy, please try again."), nil)
		}
		log.Info("RADIUS challenge: asking the user", "server", res.Server)
		h := http.Header{}
		h.Set("Set-Cookie", radiusContextCookie+"="+token+"; Secure")
		msgText := res.Message
		if msgText == "" {
			msgText = "Please enter your response."
		}
		return "", nil, false, xml(cstp.ChallengeForm(msgText, "", ChallengeField, "Response:"), h)
	case radius.Reject:
		s.loginFailed(user, addr, log)
		if ok, n := s.logFailed.allow(); ok {
			log.Warn("login failed: RADIUS Access-Reject", "server", res.Server, "reply-message", res.Message, "not-logged", n)
		}
		return "", nil, false, xml(form("Login failed."), nil)
	}
	s.throttle.Succeed(user, addr)
	if len(res.Settings.Ignored) > 0 {
		log.Info("RADIUS attributes not applied", "attributes", res.Settings.Ignored)
	}
	return user, res.Settings, true, false
}

// addChallenge keeps a challenge and returns its cookie token.
func (r *radiusState) addChallenge(user string, state []byte, from netip.Addr) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	token := hex.EncodeToString(b[:])
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) >= maxChallenges {
		for k, c := range r.pending {
			if now.After(c.expires) {
				delete(r.pending, k)
			}
		}
		if len(r.pending) >= maxChallenges {
			return "", errors.New("too many challenges waiting for an answer")
		}
	}
	r.pending[token] = &radiusChallenge{user: user, state: state, from: from, expires: now.Add(challengeTimeout)}
	return token, nil
}

// takeChallenge returns and forgets the challenge of token, if it is
// live and was given to the same address.
func (r *radiusState) takeChallenge(token string, from netip.Addr) *radiusChallenge {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.pending[token]
	if c == nil {
		return nil
	}
	delete(r.pending, token)
	if time.Now().After(c.expires) || c.from != from {
		return nil
	}
	return c
}

// radiusAdmit applies an Access-Accept's settings to a new session: it
// refuses (and ends the session) when the Framed-IP-Address is outside the
// pool or in use, or an iroute cannot be routed to it. It reports whether
// the login goes on; if not, the answer was written and cont says whether
// the connection may go on.
func (s *Server) radiusAdmit(sess *Session, set *radius.Settings, xml func([]byte, http.Header) bool,
	form func(string) []byte, log *slog.Logger) (ok, cont bool) {
	r := s.rad
	rs := &sessRadius{set: set, active: time.Now()}
	sess.rad.Store(rs)
	refuse := func(counter *atomic.Uint64, why string, err error) (bool, bool) {
		counter.Add(1)
		if ok, n := r.logRefused.allow(); ok {
			log.Warn("login refused: "+why, "err", err, "not-logged", n)
		}
		sess.end("RADIUS settings refused")
		return false, xml(form("Login refused: "+why+"."), nil)
	}
	if err := s.bindRadiusRoutes(sess, rs); err != nil {
		return refuse(&r.routeRefused, "a RADIUS route cannot be given to this session", err)
	}
	if a := set.FramedIP; a.IsValid() {
		if err := s.checkFramedIP(sess, a); err != nil {
			return refuse(&r.framedIPRefused, "the RADIUS Framed-IP-Address cannot be used", err)
		}
		if len(set.Routes) == 0 {
			// Taken now, so the login cookie names it; a session with
			// iroutes takes it at CONNECT, after replaceOthers.
			sess.mu.Lock()
			err := sess.allocate(netip.Addr{}, netip.Prefix{})
			sess.mu.Unlock()
			if err != nil {
				return refuse(&r.framedIPRefused, "the RADIUS Framed-IP-Address cannot be used", err)
			}
		}
	}
	log.Info("RADIUS settings applied", "session", sess.id, "framed-ip", addrString(set.FramedIP),
		"iroutes", set.Routes, "group", set.Group(), "classes", len(set.Class),
		"session-timeout", set.SessionTimeout.String(), "idle-timeout", set.IdleTimeout.String())
	return true, false
}

// checkFramedIP refuses a Framed-IP-Address that is not a client address
// of the pool, is another user's fixed address, or is in use.
func (s *Server) checkFramedIP(sess *Session, a netip.Addr) error {
	if !a.Is4() || !s.pool.usable(a) {
		return fmt.Errorf("%s is not a client address of ipv4-network %s", a, s.pool.network)
	}
	if p := s.policy.Load(); p != nil {
		if owner := p.fixed[a]; owner != "" && owner != sess.user {
			return fmt.Errorf("%s is the fixed address of user %q", a, owner)
		}
	}
	s.pool.mu.Lock()
	used := s.pool.used[a]
	s.pool.mu.Unlock()
	if used {
		return fmt.Errorf("%s is in use by another session", a)
	}
	return nil
}

// bindRadiusRoutes checks the session's RADIUS iroutes against the pools,
// the configured iroutes and those of other RADIUS sessions, and routes
// them into the TUN device.
func (s *Server) bindRadiusRoutes(sess *Session, rs *sessRadius) error {
	if len(rs.set.Routes) == 0 {
		return nil
	}
	r := s.rad
	pol := s.policy.Load()
	for _, p := range rs.set.Routes {
		switch {
		case s.cfg.pool.IsValid() && p.Overlaps(s.cfg.pool):
			return fmt.Errorf("%s overlaps ipv4-network %s", p, s.cfg.pool)
		case s.cfg.pool6.IsValid() && p.Overlaps(s.cfg.pool6):
			return fmt.Errorf("%s overlaps ipv6-network %s", p, s.cfg.pool6)
		}
		if pol != nil {
			if who, q := overlapping(pol.owner, p); who != "" {
				return fmt.Errorf("%s overlaps %s, an iroute of user %q", p, q, who)
			}
		}
		if host, _, err := net.SplitHostPort(s.cfg.Listen); err == nil {
			if a, err := netip.ParseAddr(host); err == nil && p.Contains(a.Unmap()) {
				return fmt.Errorf("%s contains vpnd's listen address", p)
			}
		}
	}
	r.mu.Lock()
	for _, p := range rs.set.Routes {
		for q, o := range r.routes {
			if o != sess && o.user != sess.user && q.Overlaps(p) {
				r.mu.Unlock()
				return fmt.Errorf("%s overlaps %s of a session of user %q", p, q, o.user)
			}
		}
	}
	for _, p := range rs.set.Routes {
		r.routes[p] = sess
	}
	r.mu.Unlock()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.kroutes = map[netip.Prefix]*netcfg.Changes{}
	if s.dev == nil {
		return nil // a unit test's server
	}
	for _, p := range rs.set.Routes {
		c, err := s.addRoute(p)
		if err != nil {
			return fmt.Errorf("route %s into %s: %w", p, s.devName(), err)
		}
		rs.kroutes[p] = c
	}
	return nil
}
