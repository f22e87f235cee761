package server

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"kvpn/auth"
	"kvpn/cstp"
	"kvpn/ctl"
	"kvpn/dtls"
	"kvpn/internal/contain"
	"kvpn/record"
	"kvpn/session"
)

// Session is one logged-in user. It outlives its TCP connection for
// cookie-timeout, so that a client reconnecting with its cookie gets the
// same address back (openconnect aborts otherwise).
type Session struct {
	srv     *Server
	id      uint64
	user    string
	from    netip.Addr
	cookie  auth.Cookie
	created time.Time

	mu    sync.Mutex
	addr  netip.Addr
	addr6 netip.Addr           // from the IPv6 pool; invalid without one (ipv6.go)
	ch    *session.CSTPChannel // nil while detached
	ended bool

	queue chan *batch // packets from the TUN device waiting for the channel

	// watchWake tells the connection's keepAlive that a DTLS peer came up,
	// so that it watches it from now, not from its next deadline.
	watchWake chan struct{}
	// connected is whether the session has a channel (attach to detach):
	// without one, packets for it are dropped, not queued, so a session
	// kept for a reconnect holds no batches (up to downlinkQueue of them,
	// 190 KiB each, until cookie-timeout before).
	connected atomic.Bool

	// DTLS: the App-ID and PSK of the current TLS connection, the peer
	// once its handshake completed, and whether downstream traffic goes
	// over DTLS (it does once the peer is up; a DATA frame on TLS means
	// the client moved back, as in ocserv).
	appID      [dtls.AppIDLen]byte
	psk        []byte
	chacha     bool         // kvpn extension: ChaCha20 first for DTLS
	cid        bool         // kvpn extension: DTLS connection IDs
	legacy     *dtls.Legacy // legacy AnyConnect DTLS offer (appID is its Session-ID), or nil
	peer       atomic.Pointer[dtls.Peer]
	preferDTLS atomic.Bool
	ctx        context.Context // of the current connection; ends with it
	peerStop   func() bool     // unregisters the last peer's close on ctx (PeerUp); guarded by mu

	// login is when the user logged in with a password, gen their
	// password-file generation then (auth.PasswdFile.Generation); both
	// travel in every ticket sealed for the session (resume.go).
	login time.Time
	gen   uint64
	// cert is whether the session logged in with a client certificate
	// (its cookies are bound to it: auth.Ticket.Cert), certLeaf the
	// certificate its connection presented last (guarded by mu), checked
	// against a reloaded CRL (clientcert.go).
	cert     bool
	certLeaf *x509.Certificate

	// ticketExpires is the latest expiry of a cookie handed out for this
	// session (guarded by mu): a revocation lasts until then.
	ticketExpires time.Time

	// rad is the session's RADIUS settings and accounting (radius.go);
	// nil without auth = "radius".
	rad atomic.Pointer[sessRadius]

	// pol is the user's policy (fixed address, iroutes, routes), set when
	// the session gets its address and swapped by ApplyPolicy.
	pol atomic.Pointer[userPolicy]
	// group is the group the user logged in to ("" for none), set when
	// the session is made (groups.go).
	group string

	spoofed         atomic.Uint64
	gsoFrames       atomic.Uint64 // GSO-DATA frames written to the TUN (cstp-gso)
	lastSpoofLog    atomic.Int64
	restricted      atomic.Uint64
	lastRestrictLog atomic.Int64

	// gsoDown is the tunnel MTU of the current connection when its client
	// takes GSO-DATA frames (cstp-gso-down), else 0 (gso.go).
	gsoDown atomic.Int32
	// gsoFramesOut counts GSO-DATA frames sent to the client.
	gsoFramesOut atomic.Uint64

	// Traffic (stats.go): what the TLS channel carried, counted per batch;
	// DTLS peers count their own, folded into dtlsDone when they go.
	traffic  session.Traffic
	statMu   sync.Mutex // orders retiring a peer against reading the counters
	dtlsDone Totals

	ops sessOps // issue #15: scripts and events (scripts.go)
}

// newSessionIn makes the session of a user logged in to group (none: "").
func (s *Server) newSessionIn(user, group string, from netip.Addr) *Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	now := time.Now()
	sess := &Session{
		srv: s, id: s.nextID, user: user, group: group, from: from, created: now,
		queue: make(chan *batch, downlinkQueue), watchWake: make(chan struct{}, 1),
		login: now.Truncate(time.Second), // as a ticket carries it
	}
	if set := s.currentSettings(); set != nil && set.Passwd != nil && s.cfg.passwordAuth() {
		// Read after the password was verified: a reload in between
		// gives the new entry's generation, or none (the session then
		// ends at that reload's check or its first resume).
		sess.gen, _ = set.Passwd.Generation(user)
	}
	s.sessions[sess] = struct{}{}
	return sess
}

// attach makes ch the session's channel, replacing (and closing) an older
// one, and returns the session's tunnel address, allocating it on first use:
// the user's fixed address if it has one, else one from the pool.
func (sess *Session) attach(ch *session.CSTPChannel, prev netip.Addr, prev6 netip.Prefix) (netip.Addr, error) {
	s := sess.srv
	if u := sess.policyIn(s.policy.Load()); u.exclusive() {
		// A fixed address and the networks behind a site cannot be in two
		// sessions: a new login of the user replaces the old session (a
		// gateway that restarted must not wait for cookie-timeout).
		if s.replaceOthers(sess) {
			sess.end("replaced by a newer session of the same user")
			return netip.Addr{}, errors.New("a newer session of the same site-to-site user exists")
		}
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.ended {
		return netip.Addr{}, errors.New("session has ended")
	}
	if old := sess.ch; old != nil {
		old.Close()
	}
	if err := sess.allocate(prev, prev6); err != nil {
		return netip.Addr{}, err
	}
	sess.ch = ch
	sess.gsoDown.Store(0) // until this connection's CONNECT asks for it
	sess.connected.Store(true)
	return sess.addr, nil
}

// allocate gives the session its tunnel addresses if it has none yet: the
// user's fixed address if it has one, else one from the pool (prev if it
// is free there). The caller holds sess.mu.
func (sess *Session) allocate(prev netip.Addr, prev6 netip.Prefix) error {
	if sess.addr.IsValid() {
		return nil
	}
	s := sess.srv
	// Allocate and publish under s.mu, so that a concurrent
	// ApplyPolicy sees either none or both of address and policy.
	s.mu.Lock()
	u := sess.policyIn(s.policy.Load())
	var a netip.Addr
	var err error
	if fip := sess.radiusIP(); fip.IsValid() { // RADIUS Framed-IP-Address
		a, err = fip, s.pool.GetFixed(fip)
	} else if u.ipv4.IsValid() {
		a, err = u.ipv4, s.pool.GetFixed(u.ipv4)
	} else {
		a, err = s.pool.Get(prev)
	}
	if err != nil {
		s.mu.Unlock()
		return err
	}
	sess.addr = a
	sess.pol.Store(u)
	s.byAddr[a] = sess
	s.bindLocked(sess, u)
	s.mu.Unlock()
	// Only with the first address: a reconnecting client must get the
	// same addresses back (openconnect aborts otherwise), and check
	// reads addr6 without the lock.
	sess.attach6(prev6)
	return nil
}

// reserveAddress gives a session its pool addresses at login, so that the
// login cookie names them: a client that knows only that cookie (stock
// openconnect) keeps its address when it resumes on a restarted node or on
// another one, although X-CSTP-Address alone no longer picks an address
// (resume.go, wantedAddrs). Users with a fixed address or iroutes get
// theirs at CONNECT, after replaceOthers. A pool that is full now is tried
// again at CONNECT.
func (s *Server) reserveAddress(sess *Session, log *slog.Logger) {
	if p := s.policy.Load(); p == nil || sess.policyIn(p).exclusive() {
		return // no policy: a unit test's server without routes
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if err := sess.allocate(netip.Addr{}, netip.Prefix{}); err != nil {
		log.Info("no address reserved at login; trying again at CONNECT", "err", err)
	}
}

// replaceOthers ends the older sessions of sess's user and reports
// whether a newer one exists, which then wins: whichever of two sessions
// attaches first (a gateway's old session reconnecting with its cookie
// while its new login connects), the newest stays. Serialised, so two
// attaches cannot end each other.
func (s *Server) replaceOthers(sess *Session) (newer bool) {
	s.exclusiveMu.Lock()
	defer s.exclusiveMu.Unlock()
	var old []*Session
	s.mu.RLock()
	for o := range s.sessions {
		switch {
		case o == sess || o.user != sess.user:
		case o.id > sess.id:
			newer = true
		default:
			old = append(old, o)
		}
	}
	s.mu.RUnlock()
	if newer {
		return true
	}
	for _, o := range old {
		s.log.Warn("new session of a site-to-site user replaces the old one", "user", sess.user,
			"session", sess.id, "replaced", o.id)
		o.terminate("replaced by a new session of the same user")
	}
	return false
}

// detach records that ch ended with err. A DISCONNECT from the client ends
// the session (user logout); anything else keeps it for a reconnect.
func (sess *Session) detach(ch *session.CSTPChannel, err error) {
	sess.mu.Lock()
	current := sess.ch == ch
	if current {
		sess.ch = nil
		sess.gsoDown.Store(0)
		sess.connected.Store(false)
	}
	sess.mu.Unlock()
	ch.Close()
	if current {
		sess.drainQueue()
	}
	if !current {
		return // replaced by a newer connection
	}
	sess.dropDTLS()
	sess.srv.connEvent(ctl.EventDisconnect, sess, ch.Conn().RemoteAddr().String(), "", errString(err))
	log := sess.srv.log.With("user", sess.user, "session", sess.id)
	var pe *contain.PanicError
	if errors.As(err, &pe) {
		// A bug, logged with its stack where it was recovered: the
		// session's state is not to be trusted, so it ends (its cookie no
		// longer resumes it) and nothing else does.
		log.Error("ending the session after a panic in its goroutines", "err", err, "address", sess.addr.String())
		sess.end("internal error")
		return
	}
	var pc *session.PeerClosedError
	if errors.As(err, &pc) {
		log.Info("client disconnected", "reason", pc.Reason)
		sess.end("client disconnected")
		return
	}
	if errors.Is(err, session.ErrWriteStalled) {
		// The client stopped reading: a reconnect gets a new connection,
		// and keeping the session would keep its address for nothing.
		sess.srv.Counters.WriteStalled.Add(1)
		log.Warn("closing connection and ending the session: client stopped reading (tunnel write timeout)",
			"err", err, "address", sess.addr.String())
		sess.end("client stopped reading")
		return
	}
	var perr *session.ProtocolError
	if errors.As(err, &perr) || errors.Is(err, record.ErrCorrupt) {
		// Forged, corrupt or malformed input: no reconnect with this
		// session; its address is freed at once.
		log.Warn("closing connection and ending the session: client broke the protocol", "err", err)
		sess.end("protocol violation")
		return
	}
	sess.mu.Lock()
	ended := sess.ended // a shutdown or an operator may have ended it meanwhile
	sess.mu.Unlock()
	if !ended {
		log.Info("connection lost; keeping session for reconnect",
			"err", err, "address", sess.addr.String(), "cookie-timeout", sess.srv.cfg.cookieTimeout().String())
		sess.srv.cookies.Extend(sess.cookie, sess.srv.cfg.cookieTimeout())
	}
}

// tunnelWriteTimeout bounds each write on a tunnel: max(2 x DPD, 30 s),
// longer than a live client's DPD exchange takes, so only a client that
// stopped reading meets it (writeTimeout overrides it in tests).
func (s *Server) tunnelWriteTimeout() time.Duration {
	if s.writeTimeout > 0 {
		return s.writeTimeout
	}
	return max(2*s.cfg.dpd(), 30*time.Second)
}

// end frees everything the session holds.
func (sess *Session) end(reason string) {
	s := sess.srv
	sess.mu.Lock()
	if sess.ended {
		sess.mu.Unlock()
		return
	}
	sess.ended = true
	ch := sess.ch
	sess.ch = nil
	sess.connected.Store(false)
	addr, addr6 := sess.addr, sess.addr6
	sess.mu.Unlock()
	if ch != nil {
		ch.Close()
	}
	s.cookies.Revoke(sess.cookie)
	if reason != cstp.ReasonServerShutdown {
		// Logged out, kicked, expired or broke the protocol: its cookie
		// must not bring it back on this node. A shutdown leaves it
		// resumable, on this node once restarted or on another.
		s.revokeSession(sess)
	}
	sess.dropDTLS()
	s.mu.Lock()
	if addr.IsValid() && s.byAddr[addr] == sess {
		delete(s.byAddr, addr)
	}
	if addr6.IsValid() && s.byAddr[addr6] == sess {
		delete(s.byAddr, addr6)
	}
	s.iroutes.removeSession(sess)
	delete(s.sessions, sess)
	s.retired.add(sess.totals()) // server totals stay monotonic
	s.mu.Unlock()
	// Unmapped now: routeFromTUN queues nothing more for it.
	sess.drainQueue()
	if addr.IsValid() {
		s.pool.Put(addr)
	}
	if addr6.IsValid() {
		s.pool6.Put(addr6)
	}
	s.log.Info("session ended", "user", sess.user, "session", sess.id, "reason", reason,
		"address", addr.String(), "address6", addrString(addr6), "spoofed-drops", sess.spoofed.Load(),
		"gso-frames", sess.gsoFrames.Load(), "gso-frames-out", sess.gsoFramesOut.Load())
	s.radiusEnded(sess, reason)                              // RADIUS accounting Stop (radius.go)
	s.sessionEnded(sess, reason, addr, addr6, sess.totals()) // events, disconnect-script (scripts.go)
}

// terminate kicks the client (TERMINATE) and ends the session.
func (sess *Session) terminate(reason string) {
	sess.mu.Lock()
	ch := sess.ch
	sess.mu.Unlock()
	if ch != nil {
		ch.Terminate(reason)
	}
	sess.end(reason)
}

// setConnContext records the context of the session's current TLS
// connection; a DTLS peer that comes up is watched until it ends.
func (sess *Session) setConnContext(ctx context.Context) {
	sess.mu.Lock()
	sess.ctx = ctx
	sess.mu.Unlock()
}

// sweep ends sessions whose cookie expired while they had no connection,
// or whose session-timeout passed, and keeps the cookies of connected
// sessions fresh.
func (s *Server) sweep(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.sweepOnce(time.Now())
	}
}

// sweepOnce is one round of sweep.
func (s *Server) sweepOnce(now time.Time) {
	// A copy of the list: attach takes sess.mu before s.mu, so holding
	// s.mu while taking sess.mu could deadlock with it.
	for _, sess := range s.list() {
		if s.radiusSweep(sess, now) { // RADIUS Session-Timeout, Idle-Timeout
			continue
		}
		if s.pastSessionTimeout(sess.login, now) {
			s.Counters.SessionTimeouts.Add(1)
			s.log.Info("ending session: session-timeout reached", "user", sess.user, "session", sess.id,
				"login", sess.login.UTC().Format(time.RFC3339), "session-timeout", s.cfg.sessionTimeout().String())
			sess.terminate("session-timeout reached")
			continue
		}
		sess.mu.Lock()
		if sess.ch != nil {
			s.cookies.Extend(sess.cookie, s.cfg.cookieTimeout()+s.cfg.authTimeout())
		}
		sess.mu.Unlock()
	}
	for _, sess := range s.cookies.Sweep() {
		sess.end("cookie expired")
	}
	if err := s.revoked.Sweep(now); err != nil {
		s.log.Error("saving revoked sessions", "file", s.revokedFile(), "err", err)
	}
}
